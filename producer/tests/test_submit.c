/* test_submit.c - the producer's submission core (producer_submit) against
 * librdkafka's in-process mock cluster: done is called exactly once per
 * submission, with the reply the route gives, for an acknowledged event, a
 * refused one (at once, on the caller's thread), Kafka down (spooled, 202
 * after the fsync; 503 without a spool), a broker refusing the produce
 * requests of one partition in the middle of a batch (207), 1,000
 * submissions in flight from one thread at once, a stop with
 * submissions in flight (each answered before producer_stop returns), and
 * kafka.gate: events held while one awaits Kafka, with Kafka down, at a
 * stop, and batches kept on the lingering client. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "logpipe/buf.h"
#include "logpipe/config.h"
#include "logpipe/kafka.h"
#include "logpipe/log.h"
#include "logpipe/util.h"
#include "../producer.h"
#include "../spool.h"
#include "../../common/tests/testutil.h"

#include <librdkafka/rdkafka_mock.h> /* after rdkafka.h, which kafka.h includes */

#include "logpipe/banned.h"

#define TOPIC "raw-submit"
#define PRODUCE_API_KEY 0 /* Kafka protocol ApiKey of ProduceRequest */
#define WAIT_MS 20000     /* the longest any completion is waited for */

struct fixture {
	rd_kafka_t *owner;             /* handle the mock cluster hangs off */
	rd_kafka_mock_cluster_t *mc;   /* two brokers; TOPIC's partition 0 on 1, 1 on 2 */
	struct producer_settings s;    /* the producer's settings */
	char dir[64];                  /* spool directory */
	struct producer *p;            /* the producer under test, or NULL */
};

/* What done saw for one submission. */
struct answer {
	atomic_int calls;     /* times done was called */
	int status;           /* the reply's */
	char body[8192];      /* its body, cut to fit, NUL-terminated */
	char headers[256];    /* its extra header lines */
	pthread_t thread;     /* the thread done ran on */
	int64_t at_ms;        /* when done was called */
};

/* Counts the answers of many submissions and lets a test wait for them. */
struct tally {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;             /* submissions answered */
};

static struct tally tally = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };

static void on_done(void *ud, const struct producer_reply *r)
{
	struct answer *a = ud;
	size_t n = r->len < sizeof(a->body) - 1 ? r->len : sizeof(a->body) - 1;

	a->status = r->status;
	memcpy(a->body, r->body, n);
	a->body[n] = '\0';
	lp_strlcpy(a->headers, r->headers ? r->headers : "", sizeof(a->headers));
	a->thread = pthread_self();
	a->at_ms = lp_now_ms();
	pthread_mutex_lock(&tally.mu);
	atomic_fetch_add(&a->calls, 1);
	tally.done++;
	pthread_cond_broadcast(&tally.cv);
	pthread_mutex_unlock(&tally.mu);
}

/* Waits (bounded) until n submissions in all were answered; returns how many were. */
static int wait_done(int n)
{
	int64_t end = lp_now_ms() + WAIT_MS;
	struct timespec ts;
	int got;

	pthread_mutex_lock(&tally.mu);
	while (tally.done < n && lp_now_ms() < end) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&tally.cv, &tally.mu, &ts);
	}
	got = tally.done;
	pthread_mutex_unlock(&tally.mu);
	return got;
}

static void set_str(char **field, const char *v)
{
	free(*field);
	*field = lp_xstrdup(v);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char err[256], listen[32];

	rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
	f->owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	assert_non_null(f->owner);
	f->mc = rd_kafka_mock_cluster_new(f->owner, 2);
	assert_non_null(f->mc);
	assert_int_equal(rd_kafka_mock_topic_create(f->mc, TOPIC, 2, 1),
			 RD_KAFKA_RESP_ERR_NO_ERROR);
	rd_kafka_mock_partition_set_leader(f->mc, TOPIC, 0, 1);
	rd_kafka_mock_partition_set_leader(f->mc, TOPIC, 1, 2);

	assert_int_equal(lp_config_load(producer_options, &f->s, NULL, err, sizeof(err)), 0);
	snprintf(f->dir, sizeof(f->dir), "/tmp/lp-submit-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", test_free_port());
	set_str(&f->s.http_listen, listen);
	set_str(&f->s.kafka_brokers, rd_kafka_mock_cluster_bootstraps(f->mc));
	set_str(&f->s.topic_raw, TOPIC);
	set_str(&f->s.spool_dir, f->dir);
	f->s.http_threads = 2;
	f->s.kafka_timeout_ms = 1500;
	pthread_mutex_lock(&tally.mu);
	tally.done = 0;
	pthread_mutex_unlock(&tally.mu);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	producer_stop(f->p);
	rd_kafka_mock_cluster_destroy(f->mc);
	rd_kafka_destroy(f->owner);
	lp_config_release(producer_options, &f->s);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void start(struct fixture *f)
{
	char err[256] = "";

	f->p = producer_start(&f->s, err, sizeof(err));
	if (!f->p)
		fail_msg("producer_start: %s", err);
}

/* An event of service svc (the Kafka key, so the partition). */
static void event(char *buf, size_t len, const char *svc, int i)
{
	snprintf(buf, len, "{\"message\":\"event %d\",\"service\":\"%s\",\"level\":\"INFO\"}", i,
		 svc);
}

/* Submits body from a buffer of exactly its length (no NUL after it, so a
 * sanitizer build catches a read past len), freed once submit returned. */
static void submit_bin(struct fixture *f, enum producer_route route, const char *body,
		       size_t len, const char *ctype, const char *traceparent, struct answer *a)
{
	char *copy = lp_xmalloc(len ? len : 1);
	struct producer_input in = {
		.route = route,
		.body = copy,
		.len = len,
		.content_type = ctype,
		.traceparent = traceparent,
		.request_id = "test-request",
	};

	memcpy(copy, body, len);
	assert_int_equal(producer_submit(f->p, &in, on_done, a), 0);
	free(copy);
}

static void submit_tp(struct fixture *f, enum producer_route route, const char *body,
		      const char *ctype, const char *traceparent, struct answer *a)
{
	submit_bin(f, route, body, strlen(body), ctype, traceparent, a);
}

static void submit(struct fixture *f, enum producer_route route, const char *body,
		   const char *ctype, struct answer *a)
{
	submit_tp(f, route, body, ctype, NULL, a);
}

/* Forgets the warm-up's answer a and the count of answers so far. */
static void forget_answers(struct answer *a)
{
	memset(a, 0, sizeof(*a));
	pthread_mutex_lock(&tally.mu);
	tally.done = 0;
	pthread_mutex_unlock(&tally.mu);
}

/* Submits one event and waits for its answer. */
static void submit_one_and_wait(struct fixture *f, struct answer *a)
{
	char body[128];
	int before;

	pthread_mutex_lock(&tally.mu);
	before = tally.done;
	pthread_mutex_unlock(&tally.mu);
	event(body, sizeof(body), "svc-a", 0);
	submit(f, PRODUCER_ONE, body, "application/json", a);
	assert_int_equal(wait_done(before + 1), before + 1);
	assert_int_equal(atomic_load(&a->calls), 1);
}

/* Acknowledged by Kafka: 202 with the id, from the delivery-report thread. */
static void test_acked(void **state)
{
	struct fixture *f = *state;
	struct answer *a = calloc(1, sizeof(*a));

	start(f);
	submit_one_and_wait(f, a);
	assert_int_equal(a->status, 202);
	assert_contains(a->body, "\"status\":\"success\"");
	assert_contains(a->body, "\"id\":\"");
	assert_false(pthread_equal(a->thread, pthread_self()));
	producer_stop(f->p);
	f->p = NULL;
	/* Nothing was spooled: Kafka took it. */
	assert_int_equal(atomic_load(&a->calls), 1);
	free(a);
}

/* Refusals are answered at once, on the caller's thread, before submit
 * returns: invalid JSON (400), a wrong Content-Type (415), a batch of
 * only invalid items (400, as an array and as NDJSON), an OTLP body that
 * does not decode (400). */
static void test_refused_at_once(void **state)
{
	struct fixture *f = *state;
	struct answer a[5] = { 0 };

	start(f);
	submit(f, PRODUCER_ONE, "{\"message\":", "application/json", &a[0]);
	assert_int_equal(atomic_load(&a[0].calls), 1);
	assert_int_equal(a[0].status, 400);
	assert_contains(a[0].body, "\"status\":\"error\"");
	assert_true(pthread_equal(a[0].thread, pthread_self()));

	submit(f, PRODUCER_ONE, "{}", "text/plain", &a[1]);
	assert_int_equal(atomic_load(&a[1].calls), 1);
	assert_int_equal(a[1].status, 415);
	assert_contains(a[1].body, "unsupported_media_type");

	submit(f, PRODUCER_BATCH, "[{\"level\":\"INFO\"}, 7]", "application/json", &a[2]);
	assert_int_equal(atomic_load(&a[2].calls), 1);
	assert_int_equal(a[2].status, 400);
	assert_contains(a[2].body, "\"rejected\":2");

	submit(f, PRODUCER_OTLP, "not json", "application/json", &a[3]);
	assert_int_equal(atomic_load(&a[3].calls), 1);
	assert_int_equal(a[3].status, 400);

	submit(f, PRODUCER_BATCH, "{\"level\":\"INFO\"}\n{\"message\":\"m\"}",
	       "application/x-ndjson", &a[4]);
	assert_int_equal(atomic_load(&a[4].calls), 1);
	assert_int_equal(a[4].status, 400);
	assert_contains(a[4].body, "\"rejected\":2");
	producer_stop(f->p);
	f->p = NULL;
	for (int i = 0; i < 5; i++)
		assert_int_equal(atomic_load(&a[i].calls), 1);
}

/* Kafka down: the delivery times out, the events go to the spool and the
 * answer (202) comes after the fsync, from the spool writer (which appends
 * the deliveries that failed together in one round); once the breaker is
 * open the next ones are spooled without waiting for Kafka.  They are in
 * the spool after the stop, each with the trace headers of its request. */
static void test_kafka_down_spooled(void **state)
{
	struct fixture *f = *state;
	struct answer *a = calloc(6, sizeof(*a));
	char body[128], err[256];
	struct spool_opts so = { .dir = f->dir, .max_bytes = 1 << 30, .segment_bytes = 1 << 20 };
	struct spool *sp;
	struct spool_batch b = { 0 };
	int i;

	start(f);
	submit_one_and_wait(f, &a[0]); /* metadata known, Kafka up */
	assert_int_equal(a[0].status, 202);
	rd_kafka_mock_broker_set_down(f->mc, 1);
	rd_kafka_mock_broker_set_down(f->mc, 2);
	for (i = 1; i < 6; i++) {
		char tp[56];

		snprintf(tp, sizeof(tp), "00-%032d-%016d-01", i, i);
		event(body, sizeof(body), "svc-down", i);
		submit_tp(f, PRODUCER_ONE, body, "application/json", tp, &a[i]);
	}
	assert_int_equal(wait_done(6), 6);
	for (i = 1; i < 6; i++) {
		assert_int_equal(atomic_load(&a[i].calls), 1);
		assert_int_equal(a[i].status, 202);
		assert_false(pthread_equal(a[i].thread, pthread_self()));
	}
	producer_stop(f->p);
	f->p = NULL;
	sp = spool_open(&so, err, sizeof(err));
	assert_non_null(sp);
	assert_int_equal(spool_pending(sp), 5);
	assert_int_equal(spool_read(sp, &b, 10, 1 << 20), 5);
	for (i = 0; i < 5; i++) {
		const struct spool_rec *r = &b.recs[i];
		char want[56];
		size_t j, found = 0;

		const char *num = memmem(r->val, r->vallen, "\"message\":\"event ", 17);

		/* The event's number is its trace id's. */
		assert_non_null(num);
		for (j = 0; j < r->nhdrs; j++) {
			const struct spool_hdr *h = &r->hdrs[j];

			if (h->namelen == 11 && memcmp(h->name, "traceparent", 11) == 0) {
				int n = atoi(num + 17); /* stops at the closing quote */

				snprintf(want, sizeof(want), "00-%032d-%016d-01", n, n);
				assert_int_equal(h->vallen, strlen(want));
				assert_memory_equal(h->val, want, h->vallen);
				found++;
			}
		}
		assert_int_equal(found, 1);
	}
	spool_batch_release(&b);
	spool_close(sp);
	free(a);
}

/* The Kafka header of name in r, or NULL; its length in *n. */
static const char *spool_header(const struct spool_rec *r, const char *name, size_t *n)
{
	for (size_t j = 0; j < r->nhdrs; j++)
		if (r->hdrs[j].namelen == strlen(name) &&
		    memcmp(r->hdrs[j].name, name, r->hdrs[j].namelen) == 0) {
			*n = r->hdrs[j].vallen;
			return r->hdrs[j].val;
		}
	return NULL;
}

static void assert_header(const struct spool_rec *r, const char *name, const char *want)
{
	size_t n = 0;
	const char *v = spool_header(r, name, &n);

	if (!want) {
		if (v)
			fail_msg("header %s: \"%.*s\", want none", name, (int)n, v);
		return;
	}
	if (!v)
		fail_msg("header %s missing, want \"%s\"", name, want);
	assert_int_equal(n, strlen(want));
	assert_memory_equal(v, want, n);
}

/* OTLP protobuf records (written as text by otlp_decode_fast, or through
 * the tree for a span id without a trace id) carry their own trace ids as
 * Kafka headers, else the request's traceparent's: spooled (Kafka down)
 * with the headers a direct produce gives. */
static void test_otlp_trace_headers(void **state)
{
	/* service.name svc-otlp; records "otlp 0" trace 11.. span 22..,
	 * "otlp 1" trace 33.., "otlp 2" no ids, "otlp 3" span 44.. alone. */
	static const char body[] =
		"\x0a\x88\x01\x0a\x1c\x0a\x1a\x0a\x0c\x73\x65\x72\x76\x69\x63\x65"
		"\x2e\x6e\x61\x6d\x65\x12\x0a\x0a\x08\x73\x76\x63\x2d\x6f\x74\x6c"
		"\x70\x12\x68\x12\x26\x2a\x08\x0a\x06\x6f\x74\x6c\x70\x20\x30\x4a"
		"\x10\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11"
		"\x11\x52\x08\x22\x22\x22\x22\x22\x22\x22\x22\x12\x1c\x2a\x08\x0a"
		"\x06\x6f\x74\x6c\x70\x20\x31\x4a\x10\x33\x33\x33\x33\x33\x33\x33"
		"\x33\x33\x33\x33\x33\x33\x33\x33\x33\x12\x0a\x2a\x08\x0a\x06\x6f"
		"\x74\x6c\x70\x20\x32\x12\x14\x2a\x08\x0a\x06\x6f\x74\x6c\x70\x20"
		"\x33\x52\x08\x44\x44\x44\x44\x44\x44\x44\x44";
	static const char tp[] = "00-55555555555555555555555555555555-6666666666666666-01";
	static const char *const want[4][3] = {
		/* trace_id, span_id, traceparent */
		{ "11111111111111111111111111111111", "2222222222222222",
		  "00-11111111111111111111111111111111-2222222222222222-01" },
		{ "33333333333333333333333333333333", NULL, NULL },
		{ "55555555555555555555555555555555", "6666666666666666", tp },
		{ "55555555555555555555555555555555", "4444444444444444",
		  "00-55555555555555555555555555555555-4444444444444444-01" },
	};
	struct fixture *f = *state;
	struct answer *a = calloc(2, sizeof(*a));
	struct spool_opts so = { .dir = f->dir, .max_bytes = 1 << 30, .segment_bytes = 1 << 20 };
	struct spool_batch b = { 0 };
	struct spool *sp;
	char err[256];

	start(f);
	submit_one_and_wait(f, &a[0]); /* metadata known, Kafka up */
	rd_kafka_mock_broker_set_down(f->mc, 1);
	rd_kafka_mock_broker_set_down(f->mc, 2);
	submit_bin(f, PRODUCER_OTLP, body, sizeof(body) - 1, "application/x-protobuf", tp, &a[1]);
	assert_int_equal(wait_done(2), 2);
	assert_int_equal(a[1].status, 200);
	producer_stop(f->p);
	f->p = NULL;
	sp = spool_open(&so, err, sizeof(err));
	assert_non_null(sp);
	assert_int_equal(spool_read(sp, &b, 10, 1 << 20), 4);
	for (int i = 0; i < 4; i++) {
		const struct spool_rec *r = &b.recs[i];
		char msg[32], trace[64];

		snprintf(msg, sizeof(msg), "\"message\":\"otlp %d\"", i);
		assert_non_null(memmem(r->val, r->vallen, msg, strlen(msg)));
		snprintf(trace, sizeof(trace), "\"trace_id\":\"%s\"", want[i][0]);
		assert_non_null(memmem(r->val, r->vallen, trace, strlen(trace)));
		assert_int_equal(r->keylen, 8);
		assert_memory_equal(r->key, "svc-otlp", 8);
		assert_header(r, "trace_id", want[i][0]);
		assert_header(r, "span_id", want[i][1]);
		assert_header(r, "traceparent", want[i][2]);
	}
	spool_batch_release(&b);
	spool_close(sp);
	free(a);
}

/* Starts f's producer without a spool, has one event acknowledged (so the
 * metadata is known), then takes both brokers down. */
static void start_without_kafka(struct fixture *f, struct answer *first)
{
	f->s.spool_enabled = 0;
	start(f);
	submit_one_and_wait(f, first);
	assert_int_equal(first->status, 202);
	rd_kafka_mock_broker_set_down(f->mc, 1);
	rd_kafka_mock_broker_set_down(f->mc, 2);
}

/* Kafka down and no spool: 503 with Retry-After, never 202. */
static void test_kafka_down_no_spool(void **state)
{
	struct fixture *f = *state;
	struct answer *a = calloc(2, sizeof(*a));

	start_without_kafka(f, &a[0]);
	submit_one_and_wait(f, &a[1]);
	assert_int_equal(a[1].status, 503);
	assert_contains(a[1].headers, "Retry-After: ");
	assert_contains(a[1].body, "kafka_unavailable");
	free(a);
}

/* The same outage on POST /v1/logs: the protocol's retryable 503 with
 * Retry-After and a google.rpc.Status (code 14, UNAVAILABLE) in the
 * request's encoding, never a 200 for records Kafka has not taken. */
static void test_otlp_kafka_down_no_spool(void **state)
{
	/* One record, body "otlp down", service.name svc-otlp. */
	static const char pb[] =
		"\x0a\x2f\x0a\x1c\x0a\x1a\x0a\x0c\x73\x65\x72\x76\x69\x63\x65"
		"\x2e\x6e\x61\x6d\x65\x12\x0a\x0a\x08\x73\x76\x63\x2d\x6f\x74\x6c"
		"\x70\x12\x0f\x12\x0d\x2a\x0b\x0a\x09otlp down";
	static const char js[] =
		"{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"body\":"
		"{\"stringValue\":\"otlp down\"}}]}]}]}";
	struct fixture *f = *state;
	struct answer *a = calloc(3, sizeof(*a));

	start_without_kafka(f, &a[0]);
	submit_bin(f, PRODUCER_OTLP, pb, sizeof(pb) - 1, "application/x-protobuf", NULL, &a[1]);
	submit(f, PRODUCER_OTLP, js, "application/json", &a[2]);
	assert_int_equal(wait_done(3), 3);
	for (int i = 1; i <= 2; i++) {
		assert_int_equal(a[i].status, 503);
		assert_contains(a[i].headers, "Retry-After: ");
	}
	/* Status.code is field 1, varint 14. */
	assert_true(a[1].body[0] == 0x08 && a[1].body[1] == 14);
	assert_contains(a[2].body, "\"code\":14");
	free(a);
}

/* A batch over both partitions while the leader of partition 1 refuses
 * produce requests for good (message too large): its events are rejected
 * (413 in their results), the others accepted, one 207 for the request. */
static void test_broker_error_mid_batch(void **state)
{
	struct fixture *f = *state;
	struct answer *a = calloc(2, sizeof(*a));
	struct lp_buf b = LP_BUF_INIT;
	char ev[128];
	int i;

	start(f);
	submit_one_and_wait(f, &a[0]);
	assert_int_equal(a[0].status, 202);
	rd_kafka_mock_broker_push_request_error_rtts(f->mc, 2, PRODUCE_API_KEY, 5,
						     RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, 0,
						     RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, 0,
						     RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, 0,
						     RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, 0,
						     RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, 0);
	lp_buf_addch(&b, '[');
	for (i = 0; i < 100; i++) {
		char svc[16];

		snprintf(svc, sizeof(svc), "svc-%d", i % 20);
		event(ev, sizeof(ev), svc, i);
		if (i > 0)
			lp_buf_addch(&b, ',');
		lp_buf_adds(&b, ev);
	}
	lp_buf_addch(&b, ']');
	submit(f, PRODUCER_BATCH, b.buf, "application/json", &a[1]);
	assert_int_equal(wait_done(2), 2);
	assert_int_equal(atomic_load(&a[1].calls), 1);
	assert_int_equal(a[1].status, 207);
	assert_contains(a[1].body, "\"status\":\"partial\"");
	assert_contains(a[1].body, "\"code\":\"too_large\"");
	assert_contains(a[1].body, "\"failed\":0");
	lp_buf_release(&b);
	free(a);
}

/* The body with every "id":"<36 characters>" masked to x's. */
static void mask_ids(char *body)
{
	char *at = body;

	while ((at = strstr(at, "\"id\":\"")) != NULL) {
		at += 6;
		for (int i = 0; i < 36 && at[i] && at[i] != '"'; i++)
			at[i] = 'x';
	}
}

/* The reply of a batch, byte for byte (its format is the API's): scanned
 * events, one through the full path (a trace_id in the body), items
 * refused as invalid JSON and as an invalid event, and an event larger than Kafka takes (refused after the scan,
 * so its result is rewritten); each result in request order. */
static void test_batch_reply_bytes(void **state)
{
	struct fixture *f = *state;
	struct answer *a = calloc(2, sizeof(*a));
	struct lp_buf b = LP_BUF_INIT;
	size_t i;
	static const char *const want =
		"{\"status\":\"partial\",\"accepted\":3,\"rejected\":3,\"failed\":0,\"results\":["
		"{\"index\":0,\"status\":\"accepted\",\"id\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"},"
		"{\"index\":1,\"status\":\"rejected\",\"error\":{\"code\":\"invalid_json\","
		"\"message\":\"expected a JSON object, not a number\"}},"
		"{\"index\":2,\"status\":\"accepted\",\"id\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"},"
		"{\"index\":3,\"status\":\"rejected\",\"error\":{\"code\":\"too_large\","
		"\"message\":\"the serialised event is larger than Kafka takes\"}},"
		"{\"index\":4,\"status\":\"rejected\",\"error\":{\"code\":\"invalid_field\","
		"\"message\":\"'level' must be one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL\"}},"
		"{\"index\":5,\"status\":\"accepted\",\"id\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}]}";

	f->s.max_message = 2 << 20;
	start(f);
	submit_one_and_wait(f, &a[0]);
	lp_buf_adds(&b, "[{\"message\":\"m0\",\"service\":\"s\"},7,"
			"{\"message\":\"m2\",\"service\":\"s\",\"trace_id\":"
			"\"0af7651916cd43dd8448eb211c80319c\"},{\"service\":\"s\",\"message\":\"");
	for (i = 0; i < (1100u << 10); i++)
		lp_buf_addch(&b, 'x');
	lp_buf_adds(&b, "\"},{\"message\":\"m4\",\"service\":\"s\",\"level\":\"LO\\\"UD\"},"
			"{\"message\":\"m5\",\"service\":\"s\"}]");
	submit(f, PRODUCER_BATCH, b.buf, "application/json", &a[1]);
	assert_int_equal(wait_done(2), 2);
	assert_int_equal(a[1].status, 207);
	mask_ids(a[1].body);
	assert_string_equal(a[1].body, want);
	lp_buf_release(&b);
	free(a);
}

/* 1,000 submissions from one thread, none waited for: with every produce
 * request answered 1 s late, none can be answered before the loop ends
 * unless the loop itself took that long; all are answered, once each. */
static void test_many_in_flight(void **state)
{
	struct fixture *f = *state;
	enum { N = 1000 };
	struct answer *a = calloc(N, sizeof(*a));
	char body[128];
	int64_t t0, loop_ms;
	int i, at_end;

	start(f);
	submit_one_and_wait(f, &a[0]);
	rd_kafka_mock_broker_set_rtt(f->mc, 1, 1000);
	rd_kafka_mock_broker_set_rtt(f->mc, 2, 1000);
	forget_answers(&a[0]);
	t0 = lp_now_ms();
	for (i = 0; i < N; i++) {
		char svc[16];

		snprintf(svc, sizeof(svc), "svc-%d", i % 7);
		event(body, sizeof(body), svc, i);
		submit(f, PRODUCER_ONE, body, "application/json", &a[i]);
	}
	loop_ms = lp_now_ms() - t0;
	pthread_mutex_lock(&tally.mu);
	at_end = tally.done;
	pthread_mutex_unlock(&tally.mu);
	if (loop_ms < 900 && at_end != 0)
		fail_msg("%d of %d answered %lld ms after the first submission", at_end, N,
			 (long long)loop_ms);
	assert_int_equal(wait_done(N), N);
	for (i = 0; i < N; i++) {
		if (atomic_load(&a[i].calls) != 1 || a[i].status != 202)
			fail_msg("submission %d: %d calls, status %d", i,
				 atomic_load(&a[i].calls), a[i].status);
	}
	print_message("1000 submissions issued in %lld ms, %d answered by then\n",
		      (long long)loop_ms, at_end);
	free(a);
}

/* producer_stop with submissions in flight (Kafka slow) answers every one
 * of them before it returns: acknowledged, or spooled. */
static void stop_answers_in_flight(struct fixture *f)
{
	enum { N = 200 };
	struct answer *a = calloc(N, sizeof(*a));
	char body[128];
	int i;

	start(f);
	submit_one_and_wait(f, &a[0]);
	forget_answers(&a[0]);
	rd_kafka_mock_broker_set_rtt(f->mc, 1, 800);
	rd_kafka_mock_broker_set_rtt(f->mc, 2, 800);
	for (i = 0; i < N; i++) {
		event(body, sizeof(body), "svc-stop", i);
		submit(f, PRODUCER_ONE, body, "application/json", &a[i]);
	}
	producer_stop(f->p);
	f->p = NULL;
	for (i = 0; i < N; i++) {
		if (atomic_load(&a[i].calls) != 1 || a[i].status != 202)
			fail_msg("submission %d: %d calls, status %d", i,
				 atomic_load(&a[i].calls), a[i].status);
	}
	/* A submission after the stop began is refused: covered by the
	 * HTTP tests (the producer is gone here). */
	free(a);
}

static void test_stop_answers_in_flight(void **state)
{
	stop_answers_in_flight(*state);
}

/* The same with kafka.gate: what the gate holds at the stop is answered
 * too. */
static void test_gate_stop_answers_held(void **state)
{
	struct fixture *f = *state;

	f->s.kafka_gate = 1;
	stop_answers_in_flight(f);
}

/* kafka.gate on, the producer started and Kafka known (one event answered);
 * then down (up == false) or slow: each produce request answered 600 ms
 * late.  Then n single events of one service, all answered 202 once. */
static struct answer *gate_burst(struct fixture *f, int n, bool up)
{
	struct answer *a = calloc((size_t)n, sizeof(*a));
	char body[128];
	int i;

	f->s.kafka_gate = 1;
	start(f);
	submit_one_and_wait(f, &a[0]);
	forget_answers(&a[0]);
	for (int b = 1; b <= 2; b++) {
		if (up)
			rd_kafka_mock_broker_set_rtt(f->mc, b, 600);
		else
			rd_kafka_mock_broker_set_down(f->mc, b);
	}
	for (i = 0; i < n; i++) {
		event(body, sizeof(body), "svc-gate", i);
		submit(f, PRODUCER_ONE, body, "application/json", &a[i]);
	}
	assert_int_equal(wait_done(n), n);
	for (i = 0; i < n; i++)
		if (atomic_load(&a[i].calls) != 1 || a[i].status != 202)
			fail_msg("submission %d: %d calls, status %d", i,
				 atomic_load(&a[i].calls), a[i].status);
	return a;
}

/* kafka.gate: while one event awaits Kafka's answer, the single events
 * that come meanwhile are held; they go, together, only once that answer
 * is in, so each is answered at least one more round trip after the
 * first.  Without the gate (linger.ms 0) they would go at once and be
 * answered with the first. */
static void test_gate_holds_until_answered(void **state)
{
	enum { N = 21 };
	struct answer *a = gate_burst(*state, N, true);

	for (int i = 1; i < N; i++)
		if (a[i].at_ms - a[0].at_ms < 400)
			fail_msg("submission %d answered %lld ms after the first: not held", i,
				 (long long)(a[i].at_ms - a[0].at_ms));
	free(a);
}

/* kafka.gate with Kafka down: the first event times out and is spooled,
 * the ones held meanwhile go to Kafka or, once the breaker is open,
 * straight to the spool; each is answered 202 once (gate_burst checks). */
static void test_gate_kafka_down(void **state)
{
	free(gate_burst(*state, 10, false));
}

/* kafka.gate: the gated single events go through a client of their own
 * with linger.ms 0; batches keep kafka.linger_ms on the other.  With a
 * linger of a second, a single event is answered well within it and a
 * batch (three events) only after it. */
static void test_gate_batch_keeps_linger(void **state)
{
	struct fixture *f = *state;
	const char batch[] = "[{\"message\":\"b1\",\"service\":\"svc-gate\"},"
			     "{\"message\":\"b2\",\"service\":\"svc-gate\"},"
			     "{\"message\":\"b3\",\"service\":\"svc-gate\"}]";
	struct answer a[2] = { 0 };
	char body[128];
	int64_t t0;

	f->s.kafka_gate = 1;
	f->s.kafka_linger_ms = 1000;
	start(f);
	event(body, sizeof(body), "svc-gate", 1);
	t0 = lp_now_ms();
	submit(f, PRODUCER_ONE, body, "application/json", &a[0]);
	assert_int_equal(wait_done(1), 1);
	assert_int_equal(a[0].status, 202);
	if (a[0].at_ms - t0 >= 800)
		fail_msg("the single event waited %lld ms: lingered", (long long)(a[0].at_ms - t0));
	t0 = lp_now_ms();
	submit(f, PRODUCER_BATCH, batch, "application/json", &a[1]);
	assert_int_equal(wait_done(2), 2);
	assert_int_equal(a[1].status, 202);
	if (a[1].at_ms - t0 < 950)
		fail_msg("the batch was answered after %lld ms: no linger",
			 (long long)(a[1].at_ms - t0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_acked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kafka_down_spooled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_otlp_trace_headers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kafka_down_no_spool, setup, teardown),
		cmocka_unit_test_setup_teardown(test_otlp_kafka_down_no_spool, setup, teardown),
		cmocka_unit_test_setup_teardown(test_broker_error_mid_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_reply_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop_answers_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gate_holds_until_answered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gate_kafka_down, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gate_stop_answers_held, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gate_batch_keeps_linger, setup, teardown),
	};

	lp_log_init("producer-test", LP_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
