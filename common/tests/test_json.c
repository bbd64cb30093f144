/* test_json.c - parsing outside JSON without deep recursion (json.c): the
 * depth limit and its error, brackets in strings, and the parsers that
 * read request bodies (lp_json_loadb, lp_batch_split, lp_event_parse)
 * refusing deep text on a stack as small as a CivetWeb worker's. */
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
#include "logpipe/event.h"
#include "logpipe/json.h"

#include "logpipe/banned.h"

/* A CivetWeb worker's stack in Debian's build (USE_STACK_SIZE). */
#define WORKER_STACK (100 * 1024)
#define HUGE_DEPTH 100000

/* prefix (may be NULL), n copies of open, then n of close (may be NULL). */
static void nest_after(struct lp_buf *b, const char *prefix, int n, const char *open,
		       const char *close)
{
	int i;

	lp_buf_reset(b);
	if (prefix)
		lp_buf_adds(b, prefix);
	for (i = 0; i < n; i++)
		lp_buf_adds(b, open);
	for (i = 0; close && i < n; i++)
		lp_buf_adds(b, close);
}

static void nest(struct lp_buf *b, int n, const char *open, const char *close)
{
	nest_after(b, NULL, n, open, close);
}

static void test_limit(void **state)
{
	struct lp_buf b = LP_BUF_INIT;
	json_error_t je;
	json_t *j;

	nest(&b, LP_JSON_MAX_DEPTH, "[", "]");
	j = lp_json_loadb(b.buf, b.len, 0, &je);
	assert_non_null(j);
	json_decref(j);

	nest(&b, LP_JSON_MAX_DEPTH + 1, "[", "]");
	assert_null(lp_json_loadb(b.buf, b.len, 0, &je));
	assert_int_equal(json_error_code(&je), json_error_stack_overflow);
	assert_non_null(strstr(je.text, "maximum parsing depth reached"));
	assert_int_equal(je.line, 1);
	assert_int_equal(je.column, LP_JSON_MAX_DEPTH + 1);
	assert_null(lp_json_loads(b.buf, 0, NULL)); /* err may be NULL */

	/* Objects count as arrays do; the error says where, line by line. */
	lp_buf_reset(&b);
	lp_buf_adds(&b, "\n\n");
	for (int i = 0; i < 100; i++)
		lp_buf_adds(&b, "{\"a\":");
	assert_null(lp_json_loadb(b.buf, b.len, 0, &je));
	assert_int_equal(je.line, 3);
	assert_int_equal(je.column, 5 * LP_JSON_MAX_DEPTH + 1);
	lp_buf_release(&b);
}

static void test_strings_do_not_count(void **state)
{
	struct lp_buf b = LP_BUF_INIT;
	json_t *j;
	size_t where = 0;

	/* Brackets in a string, after an escaped quote, are text. */
	lp_buf_adds(&b, "{\"a\":\"\\\"");
	for (int i = 0; i < 1000; i++)
		lp_buf_adds(&b, "[{");
	lp_buf_adds(&b, "\"}");
	j = lp_json_loadb(b.buf, b.len, 0, NULL);
	assert_non_null(j);
	json_decref(j);
	assert_false(lp_json_too_deep(b.buf, b.len, 1, NULL));
	/* Closing brackets bring the depth down: 1,000 shallow arrays pass. */
	nest(&b, 1000, "[1],", NULL);
	assert_false(lp_json_too_deep(b.buf, b.len, 1, NULL));
	/* Unbalanced closers do not make room for more openers. */
	lp_buf_reset(&b);
	lp_buf_adds(&b, "]]]]]]]]]]");
	for (int i = 0; i < 3; i++)
		lp_buf_addch(&b, '[');
	assert_true(lp_json_too_deep(b.buf, b.len, 2, &where));
	assert_int_equal(where, 12);
	assert_false(lp_json_too_deep(NULL, 0, 0, NULL));
	lp_buf_release(&b);
}

/* lp_batch_split's callback: keeps the last item error. */
static int batch_item(void *ud, size_t index, json_t *item, const char *error)
{
	if (error)
		snprintf(ud, 200, "%s", error);
	return 0;
}

/* A body to parse on the small stack, and what came of it. */
struct deep_run {
	const struct lp_buf *body; /* the text */
	const char *why;           /* NULL, or the parser that failed to refuse it */
};

/* What runs on the small stack: each parser of request bodies, on text
 * nested HUGE_DEPTH deep. */
static void *parse_deep(void *arg)
{
	struct deep_run *run = arg;
	const struct lp_buf *b = run->body;
	struct lp_event_error e;
	char err[200] = "", item_err[200] = "";
	json_error_t je;
	long n;

	run->why = NULL;
	if (lp_json_loadb(b->buf, b->len, JSON_DECODE_ANY, &je) != NULL)
		run->why = "lp_json_loadb parsed it";
	else if (lp_event_parse(b->buf, b->len, NULL, 1700000000000LL, NULL, &e) != NULL ||
		 e.status != 400)
		run->why = "lp_event_parse did not refuse it with 400";
	/* A deep array is refused whole, a deep line as its item. */
	n = lp_batch_split(b->buf, b->len, 10, batch_item, item_err, err, sizeof(err));
	if (!run->why && !(n == -EINVAL && strstr(err, "depth")) &&
	    !(n > 0 && strstr(item_err, "depth")))
		run->why = "lp_batch_split did not refuse it";
	return NULL;
}

/* Runs parse_deep on b in a thread with a worker's stack; its verdict. */
static const char *on_worker_stack(const struct lp_buf *b)
{
	struct deep_run run = { b, "not run" };
	pthread_attr_t a;
	pthread_t t;

	assert_int_equal(pthread_attr_init(&a), 0);
	assert_int_equal(pthread_attr_setstacksize(&a, WORKER_STACK), 0);
	assert_int_equal(pthread_create(&t, &a, parse_deep, &run), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	pthread_attr_destroy(&a);
	return run.why;
}

static void test_deep_text_on_a_worker_stack(void **state)
{
	struct lp_buf b = LP_BUF_INIT;
	const char *why;

	/* Before json.c these overflowed the stack: jansson recurses down to
	 * its own limit of 2048 levels, more than 100 KiB hold. */
	nest(&b, HUGE_DEPTH, "[", NULL);
	why = on_worker_stack(&b);
	if (why)
		print_error("%s\n", why);
	assert_null(why);
	nest(&b, HUGE_DEPTH, "{\"a\":", NULL);
	why = on_worker_stack(&b);
	if (why)
		print_error("%s\n", why);
	assert_null(why);
	/* NDJSON: a deep second line. */
	nest_after(&b, "{\"message\":\"m\"}\n", HUGE_DEPTH, "[", NULL);
	why = on_worker_stack(&b);
	if (why)
		print_error("%s\n", why);
	assert_null(why);
	lp_buf_release(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_limit),
		cmocka_unit_test(test_strings_do_not_count),
		cmocka_unit_test(test_deep_text_on_a_worker_stack),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
