/* test_tail.c - the live tail's ring: order, sequence numbers, filters,
 * resuming, falling behind, waiting and closing. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "logpipe/buf.h"
#include "logpipe/json.h"
#include "logpipe/util.h"
#include "../query.h"
#include "fake_req.h"
#include "../tail.h"

#include "logpipe/banned.h"

static struct tail_rec *rec(const char *service, const char *level, const char *message)
{
	json_t *ev = json_pack("{s:s, s:s, s:s, s:s}", "service", service, "level", level,
			       "message", message, "host", "web-1");
	struct tail_rec *r = tail_rec_new(ev, NULL, 0);

	json_decref(ev);
	assert_non_null(r);
	return r;
}

/* The record keeps the received text when it says what the row says, and
 * serialises the event when the level must change or a line break would
 * split the SSE frame. */
static void test_rec_text(void **state)
{
	static const char canon[] = "{\"level\":\"WARN\",\"message\":\"m\",\"service\":\"s\"}";
	static const char loose[] = "{\"level\":\"warning\",\"message\":\"m\",\"service\":\"s\"}";
	static const char broken[] = "{\"level\":\"WARN\",\n\"message\":\"m\",\"service\":\"s\"}";
	json_error_t je;
	json_t *ev;
	struct tail_rec *r;

	(void)state;
	ev = lp_json_loads(canon, 0, &je);
	/* A text that differs from ev's serialisation shows which was kept. */
	r = tail_rec_new(ev, "{\"level\":\"WARN\", \"x\":1}", 23);
	assert_string_equal(r->json, "{\"level\":\"WARN\", \"x\":1}");
	assert_int_equal(r->json_len, 23);
	assert_string_equal(r->service, "s");
	free(r);
	json_decref(ev);

	ev = lp_json_loads(loose, 0, &je);
	r = tail_rec_new(ev, loose, strlen(loose));
	assert_string_equal(r->json, canon);
	assert_int_equal(r->level_rank, 3);
	free(r);
	json_decref(ev);

	ev = lp_json_loads(broken, 0, &je);
	r = tail_rec_new(ev, broken, strlen(broken));
	assert_string_equal(r->json, canon);
	free(r);
	json_decref(ev);
}

static void push(struct tail_ring *t, struct tail_rec *r)
{
	tail_ring_append(t, &r, 1);
}


static void filter(struct query_filter *f, const char *const *kv)
{
	char param[32], err[200];

	assert_int_equal(query_parse_filter(f, fake_get, (void *)kv, true, 0, param,
					    sizeof(param), err, sizeof(err)),
			 0);
}

/* Counts the occurrences of needle in hay. */
static int count(const char *hay, const char *needle)
{
	int n = 0;

	while (hay && (hay = strstr(hay, needle))) {
		n++;
		hay += strlen(needle);
	}
	return n;
}

static void test_order_and_ids(void **state)
{
	struct tail_ring *t = tail_ring_new(8);
	struct lp_buf out = LP_BUF_INIT;
	uint64_t next = 1, dropped = 9;

	(void)state;
	assert_int_equal(tail_ring_head(t), 0);
	push(t, rec("api", "INFO", "one"));
	push(t, rec("api", "warning", "two"));
	assert_int_equal(tail_ring_head(t), 2);
	assert_int_equal(tail_ring_read(t, &next, NULL, &out, 1 << 20, &dropped, 0), 2);
	assert_int_equal(dropped, 0);
	assert_int_equal(next, 3);
	lp_buf_addch(&out, '\0');
	assert_non_null(strstr(out.buf, "id: 1\ndata: {"));
	assert_non_null(strstr(out.buf, "id: 2\ndata: {"));
	assert_true(strstr(out.buf, "id: 1\n") < strstr(out.buf, "id: 2\n"));
	/* The level as stored. */
	assert_non_null(strstr(out.buf, "\"level\":\"WARN\""));
	assert_int_equal(count(out.buf, "\n\n"), 2);
	/* Nothing new: a timed-out wait, nothing appended. */
	lp_buf_reset(&out);
	assert_int_equal(tail_ring_read(t, &next, NULL, &out, 1 << 20, &dropped, 10), 0);
	assert_int_equal(out.len, 0);
	lp_buf_release(&out);
	tail_ring_free(t);
}

static void test_filters(void **state)
{
	static const char *const by_service[] = { "service", "api", NULL };
	static const char *const by_min[] = { "min_level", "ERROR", NULL };
	static const char *const by_text[] = { "text", "Disk FULL", NULL };
	static const char *const by_host[] = { "host", "web-2", NULL };
	struct query_filter f;
	struct tail_rec *a = rec("api", "ERROR", "disk is full on /var"),
			*b = rec("db", "INFO", "fullness of disks");

	(void)state;
	filter(&f, by_service);
	assert_true(tail_match(&f, a));
	assert_false(tail_match(&f, b));
	filter(&f, by_min);
	assert_true(tail_match(&f, a));
	assert_false(tail_match(&f, b));
	/* Whole words, any case, all of them. */
	filter(&f, by_text);
	assert_true(tail_match(&f, a));
	assert_false(tail_match(&f, b));
	filter(&f, by_host);
	assert_false(tail_match(&f, a));
	free(a);
	free(b);
}

static void test_filtered_read_skips(void **state)
{
	static const char *const kv[] = { "level", "ERROR", NULL };
	struct tail_ring *t = tail_ring_new(8);
	struct lp_buf out = LP_BUF_INIT;
	struct query_filter f;
	uint64_t next = 1, dropped;

	(void)state;
	filter(&f, kv);
	push(t, rec("api", "INFO", "a"));
	push(t, rec("api", "ERROR", "b"));
	push(t, rec("api", "INFO", "c"));
	assert_int_equal(tail_ring_read(t, &next, &f, &out, 1 << 20, &dropped, 0), 1);
	assert_int_equal(next, 4); /* past the events that did not match too */
	lp_buf_addch(&out, '\0');
	assert_non_null(strstr(out.buf, "id: 2\n"));
	assert_null(strstr(out.buf, "id: 1\n"));
	lp_buf_release(&out);
	tail_ring_free(t);
}

static void test_fell_behind(void **state)
{
	struct tail_ring *t = tail_ring_new(4);
	struct lp_buf out = LP_BUF_INIT;
	uint64_t next = 1, dropped;
	int i;

	(void)state;
	for (i = 0; i < 10; i++)
		push(t, rec("api", "INFO", "x"));
	/* 1..6 were overwritten; 7..10 are kept. */
	assert_int_equal(tail_ring_read(t, &next, NULL, &out, 1 << 20, &dropped, 0), 4);
	assert_int_equal(dropped, 6);
	assert_int_equal(next, 11);
	lp_buf_addch(&out, '\0');
	assert_non_null(strstr(out.buf, "id: 7\n"));
	assert_non_null(strstr(out.buf, "id: 10\n"));
	lp_buf_release(&out);
	tail_ring_free(t);
}

static void test_resume_and_bounds(void **state)
{
	struct tail_ring *t = tail_ring_new(16);
	struct lp_buf out = LP_BUF_INIT;
	uint64_t next, dropped;
	int i;

	(void)state;
	for (i = 0; i < 5; i++)
		push(t, rec("api", "INFO", "x"));
	/* Last-Event-ID 3: 4 and 5, no gap. */
	next = 4;
	assert_int_equal(tail_ring_read(t, &next, NULL, &out, 1 << 20, &dropped, 0), 2);
	assert_int_equal(dropped, 0);
	/* An id from another process, beyond the newest: from now on. */
	next = 1000;
	lp_buf_reset(&out);
	assert_int_equal(tail_ring_read(t, &next, NULL, &out, 1 << 20, &dropped, 0), 0);
	assert_int_equal(next, 6);
	/* max_bytes: stops after the frame that reaches it, the rest follows. */
	next = 1;
	lp_buf_reset(&out);
	assert_int_equal(tail_ring_read(t, &next, NULL, &out, 1, &dropped, 0), 1);
	assert_int_equal(next, 2);
	lp_buf_release(&out);
	tail_ring_free(t);
}

struct waiter {
	struct tail_ring *t;
	uint64_t next;
	int rc;
};

static void *wait_main(void *arg)
{
	struct waiter *w = arg;
	struct lp_buf out = LP_BUF_INIT;
	uint64_t dropped;

	w->rc = tail_ring_read(w->t, &w->next, NULL, &out, 1 << 20, &dropped, 60000);
	lp_buf_release(&out);
	return NULL;
}

static void test_wakes_on_append_and_close(void **state)
{
	struct waiter w = { .next = 1 };
	pthread_t th;

	(void)state;
	w.t = tail_ring_new(4);
	assert_int_equal(pthread_create(&th, NULL, wait_main, &w), 0);
	push(w.t, rec("api", "INFO", "x"));
	pthread_join(th, NULL);
	assert_int_equal(w.rc, 1);
	assert_int_equal(w.next, 2);

	assert_int_equal(pthread_create(&th, NULL, wait_main, &w), 0);
	tail_ring_close(w.t);
	pthread_join(th, NULL);
	assert_int_equal(w.rc, -ECANCELED);
	tail_ring_free(w.t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rec_text),
		cmocka_unit_test(test_order_and_ids),
		cmocka_unit_test(test_filters),
		cmocka_unit_test(test_filtered_read_skips),
		cmocka_unit_test(test_fell_behind),
		cmocka_unit_test(test_resume_and_bounds),
		cmocka_unit_test(test_wakes_on_append_and_close),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
