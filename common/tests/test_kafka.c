/* test_kafka.c - the Kafka helpers against librdkafka's in-process mock
 * cluster (a fresh one per test): acknowledged deliveries through lp_kwait,
 * consume, rewind, commit, lag and pause, delivery failures reported
 * through the done callback (injected errors, a broker that is down), a
 * fatal error replacing the handle, the full local queue, and the purge at
 * free. */
#include <errno.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "logpipe/kafka.h"
#include "logpipe/log.h"
#include "logpipe/util.h"

#include <librdkafka/rdkafka_mock.h> /* after rdkafka.h, which kafka.h includes */
#include "testutil.h"

#include "logpipe/banned.h"

#define TOPIC "t-logs"
#define NMSG 50
#define PRODUCE_API_KEY 0 /* Kafka protocol ApiKey of ProduceRequest */

struct fixture {
	rd_kafka_t *owner;           /* handle the mock cluster hangs off */
	rd_kafka_mock_cluster_t *mc; /* one broker, TOPIC with 2 partitions */
	const char *brokers;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char err[256];

	rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
	f->owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	assert_non_null(f->owner);
	f->mc = rd_kafka_mock_cluster_new(f->owner, 1);
	assert_non_null(f->mc);
	f->brokers = rd_kafka_mock_cluster_bootstraps(f->mc);
	assert_int_equal(rd_kafka_mock_topic_create(f->mc, TOPIC, 2, 1),
			 RD_KAFKA_RESP_ERR_NO_ERROR);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	rd_kafka_mock_cluster_destroy(f->mc);
	rd_kafka_destroy(f->owner);
	free(f);
	return 0;
}

static struct lp_kproducer *producer(struct fixture *f, const char *timeout_ms,
				     const char *extra)
{
	const char *props[] = { "message.timeout.ms", timeout_ms, "retry.backoff.ms=50",
				extra, NULL };
	char err[256] = "";
	struct lp_kproducer *p = lp_kproducer_new(f->brokers, props, err, sizeof(err));

	if (!p)
		print_error("producer: %s\n", err);
	assert_non_null(p);
	return p;
}

/* Sends n messages "prefix-i" keyed by i % 3 and waits for every report. */
static void send_and_wait(struct lp_kproducer *p, struct lp_kwait *w, int n, const char *prefix,
			  int wait_ms)
{
	char key[16], val[64];
	int i, rc;

	for (i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "svc-%d", i % 3);
		snprintf(val, sizeof(val), "%s-%d", prefix, i);
		lp_kwait_add(w);
		rc = lp_kproducer_send(p, TOPIC, key, strlen(key), val, strlen(val), NULL, 1000,
				       lp_kwait_done, lp_kwait_slot(w, (size_t)i));
		if (rc < 0)
			lp_kwait_cancel(w, (size_t)i, RD_KAFKA_RESP_ERR__FAIL);
		assert_int_equal(rc, 0);
	}
	assert_int_equal(lp_kwait_wait(w, wait_ms), 0);
}

static void produce_ok(struct fixture *f, int n, const char *prefix)
{
	rd_kafka_resp_err_t results[NMSG];
	struct lp_kproducer *p = producer(f, "5000", NULL);
	struct lp_kwait w;
	int i;

	assert_true(n <= NMSG);
	lp_kwait_init(&w, results);
	send_and_wait(p, &w, n, prefix, 8000);
	assert_int_equal(w.failed, 0);
	assert_int_equal(w.first_err, RD_KAFKA_RESP_ERR_NO_ERROR);
	for (i = 0; i < n; i++)
		assert_int_equal(results[i], RD_KAFKA_RESP_ERR_NO_ERROR);
	lp_kwait_release(&w);
	assert_int_equal(lp_kproducer_free(p, 2000), 0);
}

/* ---- producer ---------------------------------------------------------------- */

static void test_produce_acked(void **state)
{
	produce_ok(*state, NMSG, "ok");
}

/* A done callback that records what it was told. */
struct seen {
	int calls;
	rd_kafka_resp_err_t err;
	int32_t partition;
	int64_t offset;
};

static void record_done(void *opaque, rd_kafka_resp_err_t err, int32_t partition, int64_t offset)
{
	struct seen *s = opaque;

	s->calls++;
	s->err = err;
	s->partition = partition;
	s->offset = offset;
}

static void test_custom_done_and_headers(void **state)
{
	struct fixture *f = *state;
	struct lp_kproducer *p = producer(f, "5000", NULL);
	rd_kafka_headers_t *h = rd_kafka_headers_new(1);
	struct seen s = { 0 };

	rd_kafka_header_add(h, "reason", -1, "test", -1);
	assert_int_equal(lp_kproducer_send(p, TOPIC, NULL, 0, "v", 1, h, 0, record_done, &s), 0);
	assert_int_equal(lp_kproducer_free(p, 5000), 0);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.err, RD_KAFKA_RESP_ERR_NO_ERROR);
	assert_true(s.partition >= 0 && s.partition < 2);
	assert_true(s.offset >= 0);
}

static void test_injected_error_reported(void **state)
{
	struct fixture *f = *state;
	struct lp_kproducer *p = producer(f, "3000", NULL);
	rd_kafka_resp_err_t denied[20];
	struct lp_kwait w;
	size_t i;

	/* A permanent error: not retried, reported through done. */
	for (i = 0; i < LP_ARRAY_SIZE(denied); i++)
		denied[i] = RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED;
	rd_kafka_mock_push_request_errors_array(f->mc, PRODUCE_API_KEY, LP_ARRAY_SIZE(denied),
						denied);
	lp_kwait_init(&w, NULL);
	send_and_wait(p, &w, 4, "denied", 8000);
	assert_int_equal(w.failed, 4);
	assert_int_equal(w.first_err, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
	lp_kwait_release(&w);
	rd_kafka_mock_clear_request_errors(f->mc, PRODUCE_API_KEY);
	assert_int_equal(lp_kproducer_free(p, 1000), 0);
}

/* Which errors refuse the record itself (dead-letter it) and which pass
 * (retry it): issue #18, a permanent refusal retried for ever held a
 * partition. */
static void test_err_permanent(void **state)
{
	static const rd_kafka_resp_err_t permanent[] = {
		RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,  RD_KAFKA_RESP_ERR_INVALID_MSG,
		RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE,    RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE,
		RD_KAFKA_RESP_ERR_INVALID_RECORD,      RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP,
		RD_KAFKA_RESP_ERR__INVALID_ARG,
	};
	static const rd_kafka_resp_err_t transient[] = {
		RD_KAFKA_RESP_ERR_NO_ERROR,
		RD_KAFKA_RESP_ERR__QUEUE_FULL,
		RD_KAFKA_RESP_ERR__MSG_TIMED_OUT,
		RD_KAFKA_RESP_ERR__TRANSPORT,
		RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN,
		RD_KAFKA_RESP_ERR__PURGE_QUEUE,
		RD_KAFKA_RESP_ERR__PURGE_INFLIGHT,
		RD_KAFKA_RESP_ERR__FATAL,
		RD_KAFKA_RESP_ERR__FAIL,
		RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC,
		RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
		RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
		RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
		RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
	};
	size_t i;

	(void)state;
	for (i = 0; i < LP_ARRAY_SIZE(permanent); i++)
		assert_true(lp_kafka_err_permanent(permanent[i]));
	for (i = 0; i < LP_ARRAY_SIZE(transient); i++)
		assert_false(lp_kafka_err_permanent(transient[i]));
	/* What a refused send returns maps back to an error of the right kind. */
	assert_int_equal(lp_kafka_send_err(-EMSGSIZE), RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
	assert_int_equal(lp_kafka_send_err(-EINVAL), RD_KAFKA_RESP_ERR__INVALID_ARG);
	assert_int_equal(lp_kafka_send_err(-ENOBUFS), RD_KAFKA_RESP_ERR__QUEUE_FULL);
	assert_false(lp_kafka_err_permanent(lp_kafka_send_err(-ENOENT)));
	assert_false(lp_kafka_err_permanent(lp_kafka_send_err(-EIO)));
	assert_int_equal(lp_kafka_send_err(0), RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* A record over message.max.bytes is refused at once, locally, with an
 * error that says so; one the broker refuses as too large is reported
 * through done with a permanent error too. */
static void test_too_large_is_permanent(void **state)
{
	struct fixture *f = *state;
	struct lp_kproducer *p = producer(f, "3000", "message.max.bytes=1000");
	rd_kafka_resp_err_t big[20];
	rd_kafka_resp_err_t results[2];
	char val[2000];
	struct lp_kwait w;
	size_t i;
	int rc;

	memset(val, 'x', sizeof(val));
	rc = lp_kproducer_send(p, TOPIC, NULL, 0, val, sizeof(val), NULL, 0, NULL, NULL);
	assert_int_equal(rc, -EMSGSIZE);
	assert_true(lp_kafka_err_permanent(lp_kafka_send_err(rc)));

	for (i = 0; i < LP_ARRAY_SIZE(big); i++)
		big[i] = RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
	rd_kafka_mock_push_request_errors_array(f->mc, PRODUCE_API_KEY, LP_ARRAY_SIZE(big), big);
	lp_kwait_init(&w, results);
	send_and_wait(p, &w, 2, "big", 8000);
	assert_int_equal(w.failed, 2);
	assert_true(lp_kafka_err_permanent(results[0]));
	assert_true(lp_kafka_err_permanent(results[1]));
	lp_kwait_release(&w);
	rd_kafka_mock_clear_request_errors(f->mc, PRODUCE_API_KEY);
	assert_int_equal(lp_kproducer_free(p, 1000), 0);
}

static void test_broker_down_times_out(void **state)
{
	struct fixture *f = *state;
	struct lp_kproducer *p = producer(f, "800", NULL);
	rd_kafka_resp_err_t results[3];
	struct lp_kwait w;
	int64_t t0;

	assert_int_equal(rd_kafka_mock_broker_set_down(f->mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
	lp_kwait_init(&w, results);
	t0 = lp_now_ms();
	send_and_wait(p, &w, 3, "lost", 5000);
	assert_true(lp_now_ms() - t0 < 4000);
	assert_int_equal(w.failed, 3);
	assert_int_equal(results[0], RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
	assert_int_equal(results[2], RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
	lp_kwait_release(&w);
	assert_int_equal(lp_kproducer_free(p, 100), 0);
}

static void test_fatal_error_renews_the_handle(void **state)
{
	struct fixture *f = *state;
	struct lp_kproducer *p = producer(f, "5000", NULL);
	rd_kafka_resp_err_t results[3];
	rd_kafka_t *before = lp_kproducer_handle(p);
	struct lp_kwait w;
	int64_t end;

	lp_kwait_init(&w, results);
	send_and_wait(p, &w, 3, "before", 8000);
	assert_int_equal(w.failed, 0);
	lp_kwait_release(&w);

	/* What a broker that lost the producer's sequence state causes. */
	assert_int_equal(rd_kafka_test_fatal_error(before,
						   RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
						   "test: sequence desynchronization"),
			 RD_KAFKA_RESP_ERR_NO_ERROR);
	end = lp_now_ms() + 5000;
	while (lp_kproducer_renewals(p) == 0 && lp_now_ms() < end)
		usleep(20 * 1000);
	assert_int_equal(lp_kproducer_renewals(p), 1);
	assert_ptr_not_equal(lp_kproducer_handle(p), before);
	/* Kept for borrowers of the old pointer during the grace period. */
	assert_int_equal(lp_kproducer_retired(p), 1);

	/* The service goes on producing on the new handle. */
	lp_kwait_init(&w, results);
	send_and_wait(p, &w, 3, "after", 8000);
	assert_int_equal(w.failed, 0);
	assert_int_equal(results[2], RD_KAFKA_RESP_ERR_NO_ERROR);
	lp_kwait_release(&w);
	assert_int_equal(lp_kproducer_free(p, 2000), 0);
}

/* Deliveries of an lp_kbatch: one shared (done, opaque) for all. */
struct bseen {
	_Atomic int calls; /* reports */
	_Atomic int ok;    /* successful ones */
};

static void batch_done(void *opaque, rd_kafka_resp_err_t err, int32_t partition, int64_t offset)
{
	struct bseen *s = opaque;

	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		atomic_fetch_add(&s->ok, 1);
	atomic_fetch_add(&s->calls, 1);
}

static void wait_calls(struct bseen *s, int n, int ms)
{
	int64_t end = lp_now_ms() + ms;

	while (atomic_load(&s->calls) < n && lp_now_ms() < end)
		usleep(10 * 1000);
	assert_int_equal(atomic_load(&s->calls), n);
}

/* Every message of a batch is reported once through the shared record,
 * also those acknowledged after lp_kbatch_end, and the record is freed
 * once (ASan checks the leak and the double free). */
static void test_kbatch_acked(void **state)
{
	struct fixture *f = *state;
	struct lp_kproducer *p = producer(f, "5000", NULL);
	struct lp_kbatch b;
	struct bseen s = { 0 };
	char key[16], val[64];
	int i;

	assert_int_equal(lp_kbatch_begin(&b, p, TOPIC, batch_done, &s), 0);
	for (i = 0; i < NMSG; i++) {
		snprintf(key, sizeof(key), "svc-%d", i % 3);
		snprintf(val, sizeof(val), "batch-%d", i);
		assert_int_equal(lp_kbatch_send(&b, key, strlen(key), val, strlen(val), 1000), 0);
	}
	lp_kbatch_end(&b);
	wait_calls(&s, NMSG, 8000);
	assert_int_equal(atomic_load(&s.ok), NMSG);
	/* An empty batch frees its record at once. */
	assert_int_equal(lp_kbatch_begin(&b, p, TOPIC, batch_done, &s), 0);
	lp_kbatch_end(&b);
	assert_int_equal(lp_kproducer_free(p, 2000), 0);
	assert_int_equal(atomic_load(&s.calls), NMSG);
}

/* A batch holds its handle across sends: when a fatal error replaces the
 * handle in the middle of a batch, the next send moves to the new one. */
static void test_kbatch_survives_renewal(void **state)
{
	struct fixture *f = *state;
	struct lp_kproducer *p = producer(f, "5000", NULL);
	rd_kafka_t *before = lp_kproducer_handle(p);
	struct lp_kbatch b;
	struct bseen s = { 0 };
	int64_t end;
	int i;

	assert_int_equal(lp_kbatch_begin(&b, p, TOPIC, batch_done, &s), 0);
	for (i = 0; i < 3; i++)
		assert_int_equal(lp_kbatch_send(&b, "k", 1, "before", 6, 1000), 0);
	wait_calls(&s, 3, 8000);
	assert_int_equal(rd_kafka_test_fatal_error(before,
						   RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
						   "test: sequence desynchronization"),
			 RD_KAFKA_RESP_ERR_NO_ERROR);
	end = lp_now_ms() + 5000;
	while (lp_kproducer_renewals(p) == 0 && lp_now_ms() < end)
		usleep(20 * 1000);
	assert_int_equal(lp_kproducer_renewals(p), 1);
	for (i = 0; i < 3; i++)
		assert_int_equal(lp_kbatch_send(&b, "k", 1, "after", 5, 1000), 0);
	lp_kbatch_end(&b);
	wait_calls(&s, 6, 8000);
	assert_int_equal(atomic_load(&s.ok), 6);
	assert_int_equal(lp_kproducer_free(p, 2000), 0);
}

/* A long-running service may meet many broker restarts: replacements are
 * not capped, each new handle produces, and the replaced ones are destroyed
 * once nothing references them (the grace period for borrowed pointers is
 * shortened here). */
static void test_handle_renewed_many_times(void **state)
{
	struct fixture *f = *state;
	int grace = lp__kproducer_grace_ms;
	struct lp_kproducer *p;
	rd_kafka_resp_err_t results[1];
	struct lp_kwait w;
	int64_t end;
	int i;

	lp__kproducer_grace_ms = 0; /* before the poll thread starts */
	p = producer(f, "5000", NULL);
	for (i = 1; i <= 20; i++) {
		rd_kafka_t *before = lp_kproducer_handle(p);

		assert_int_equal(rd_kafka_test_fatal_error(
					 before, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
					 "test: sequence desynchronization"),
				 RD_KAFKA_RESP_ERR_NO_ERROR);
		end = lp_now_ms() + 5000;
		while (lp_kproducer_renewals(p) < i && lp_now_ms() < end)
			usleep(10 * 1000);
		assert_int_equal(lp_kproducer_renewals(p), i);
		lp_kwait_init(&w, results);
		send_and_wait(p, &w, 1, "renewed", 8000);
		assert_int_equal(w.failed, 0);
		lp_kwait_release(&w);
	}
	end = lp_now_ms() + 5000;
	while (lp_kproducer_retired(p) > 0 && lp_now_ms() < end)
		usleep(10 * 1000);
	assert_int_equal(lp_kproducer_retired(p), 0);
	assert_int_equal(lp_kproducer_free(p, 2000), 0);
	lp__kproducer_grace_ms = grace;
}

static void test_queue_full(void **state)
{
	struct fixture *f = *state;
	struct lp_kproducer *p = producer(f, "30000", "queue.buffering.max.messages=2");
	struct lp_kwait w;
	int64_t t0;
	int rc;

	rd_kafka_mock_broker_set_down(f->mc, 1);
	lp_kwait_init(&w, NULL);
	lp_kwait_add(&w);
	assert_int_equal(lp_kproducer_send(p, TOPIC, NULL, 0, "a", 1, NULL, 0, lp_kwait_done,
					   lp_kwait_slot(&w, 0)),
			 0);
	lp_kwait_add(&w);
	assert_int_equal(lp_kproducer_send(p, TOPIC, NULL, 0, "b", 1, NULL, 0, lp_kwait_done,
					   lp_kwait_slot(&w, 1)),
			 0);
	/* The third waits block_ms, then gives up; its slot must not leak. */
	lp_kwait_add(&w);
	t0 = lp_now_ms();
	rc = lp_kproducer_send(p, TOPIC, NULL, 0, "c", 1, NULL, 200, lp_kwait_done,
			       lp_kwait_slot(&w, 2));
	assert_int_equal(rc, -ENOBUFS);
	assert_true(lp_now_ms() - t0 >= 190);
	lp_kwait_cancel(&w, 2, RD_KAFKA_RESP_ERR__QUEUE_FULL);
	/* The out queue also counts events the poller has yet to serve (the
	 * broker-down error): wait for it to hold the two messages alone. */
	for (int i = 0; i < 300 && lp_kproducer_outq(p) != 2; i++)
		usleep(10000);
	assert_int_equal(lp_kproducer_outq(p), 2);

	/* Free cannot deliver them: it reports them, purged, through done. */
	assert_int_equal(lp_kproducer_free(p, 300), 2);
	assert_int_equal(lp_kwait_wait(&w, 0), 0);
	assert_int_equal(w.pending, 0);
	assert_int_equal(w.failed, 3);
	assert_int_equal(w.first_err, RD_KAFKA_RESP_ERR__QUEUE_FULL);
	lp_kwait_release(&w);
}

static void test_kwait_timeout(void **state)
{
	struct lp_kwait w;
	rd_kafka_resp_err_t results[2] = { 0 };
	int64_t t0 = lp_now_ms();

	lp_kwait_init(&w, results);
	lp_kwait_add(&w);
	lp_kwait_add(&w);
	lp_kwait_done(lp_kwait_slot(&w, 1), RD_KAFKA_RESP_ERR_NO_ERROR, 0, 7);
	assert_int_equal(lp_kwait_wait(&w, 100), -ETIMEDOUT);
	assert_true(lp_now_ms() - t0 >= 95);
	lp_kwait_cancel(&w, 0, RD_KAFKA_RESP_ERR_NO_ERROR);
	assert_int_equal(lp_kwait_wait(&w, -1), 0);
	assert_int_equal(w.failed, 1);
	assert_int_equal(results[0], RD_KAFKA_RESP_ERR__FAIL);
	assert_int_equal(results[1], RD_KAFKA_RESP_ERR_NO_ERROR);
	lp_kwait_release(&w);
}

static void test_bad_property(void **state)
{
	struct fixture *f = *state;
	const char *props[] = { "no.such.property=1", NULL };
	const char *dangling[] = { "linger.ms", NULL };
	char err[256] = "";

	assert_null(lp_kproducer_new(f->brokers, props, err, sizeof(err)));
	assert_contains(err, "no.such.property");
	assert_null(lp_kproducer_new(f->brokers, dangling, err, sizeof(err)));
	assert_contains(err, "linger.ms");
	assert_null(lp_kconsumer_new(f->brokers, "g", (const char *const[]){ TOPIC, NULL }, props,
				     err, sizeof(err)));
	assert_null(lp_kconsumer_new(f->brokers, "g", (const char *const[]){ NULL }, NULL, err,
				     sizeof(err)));
}

/* ---- consumer ---------------------------------------------------------------- */

static struct lp_kconsumer *consumer(struct fixture *f, const char *group)
{
	static const char *const topics[] = { TOPIC, NULL };
	static const char *const props[] = { "session.timeout.ms=6000",
					     "heartbeat.interval.ms=500", NULL };
	char err[256] = "";
	struct lp_kconsumer *c = lp_kconsumer_new(f->brokers, group, topics, props, err,
						  sizeof(err));

	if (!c)
		print_error("consumer: %s\n", err);
	assert_non_null(c);
	return c;
}

/* Polls until n data messages arrived (error events are dropped). */
static size_t consume(struct lp_kconsumer *c, rd_kafka_message_t **out, size_t n, int timeout_ms)
{
	int64_t deadline = lp_now_ms() + timeout_ms;
	size_t got = 0;

	while (got < n && lp_now_ms() < deadline) {
		rd_kafka_message_t *m = lp_kconsumer_poll(c, 100);

		if (!m)
			continue;
		if (m->err) {
			rd_kafka_message_destroy(m);
			continue;
		}
		out[got++] = m;
	}
	return got;
}

static void destroy_all(rd_kafka_message_t **m, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		rd_kafka_message_destroy(m[i]);
}

/* Messages of a batch with their own completions (lp_kbatch_send_ref):
 * each reported once to its own opaque, through a lp_kref that lives in
 * the caller's record; the values (not copied up to 4 KiB, one larger one
 * copied) and a header arrive as sent.  The records stay until the last
 * report and are then freed by the test, as the producer frees its
 * request. */
struct refmsg {
	struct lp_kref ref;   /* the completion record, inside the message's own */
	char val[64];         /* its value, handed over without a copy */
	_Atomic int calls;    /* reports for it */
	rd_kafka_resp_err_t err; /* the last one's result */
};

static _Atomic int ref_reports;

static void ref_done(void *opaque, rd_kafka_resp_err_t err, int32_t partition, int64_t offset)
{
	struct refmsg *m = opaque;

	m->err = err;
	atomic_fetch_add(&m->calls, 1);
	atomic_fetch_add(&ref_reports, 1);
}

static void test_kbatch_send_ref(void **state)
{
	struct fixture *f = *state;
	struct lp_kproducer *p = producer(f, "5000", NULL);
	struct refmsg *msgs = calloc(NMSG + 1, sizeof(*msgs));
	rd_kafka_message_t *got[NMSG + 1];
	size_t big_len = 10000, n, i;
	char *big = malloc(big_len);
	struct lp_kconsumer *c;
	struct lp_kbatch b;
	int64_t end;
	int seen_header = 0, seen_big = 0;

	atomic_store(&ref_reports, 0);
	memset(big, 'b', big_len);
	assert_int_equal(lp_kbatch_begin(&b, p, TOPIC, ref_done, NULL), 0);
	for (i = 0; i < NMSG; i++) {
		rd_kafka_headers_t *h = NULL;

		snprintf(msgs[i].val, sizeof(msgs[i].val), "ref-%zu", i);
		if (i == 7) {
			h = rd_kafka_headers_new(1);
			rd_kafka_header_add(h, "trace_id", -1, "t7", -1);
		}
		assert_int_equal(lp_kbatch_send_ref(&b, "k", 1, msgs[i].val, strlen(msgs[i].val),
						    h, &msgs[i].ref, &msgs[i], 1000),
				 0);
	}
	assert_int_equal(lp_kbatch_send_ref(&b, "k", 1, big, big_len, NULL, &msgs[NMSG].ref,
					    &msgs[NMSG], 1000),
			 0);
	/* Copied: the caller may reuse a large value at once. */
	memset(big, 'x', big_len);
	lp_kbatch_end(&b);
	end = lp_now_ms() + 8000;
	while (atomic_load(&ref_reports) < NMSG + 1 && lp_now_ms() < end)
		usleep(10 * 1000);
	for (i = 0; i <= NMSG; i++) {
		assert_int_equal(atomic_load(&msgs[i].calls), 1);
		assert_int_equal(msgs[i].err, RD_KAFKA_RESP_ERR_NO_ERROR);
	}

	c = consumer(f, "g-ref");
	n = consume(c, got, NMSG + 1, 8000);
	assert_int_equal(n, NMSG + 1);
	for (i = 0; i < n; i++) {
		rd_kafka_headers_t *h = NULL;
		const void *v;
		size_t vlen;

		if (got[i]->len == big_len) {
			assert_int_equal(((char *)got[i]->payload)[0], 'b');
			seen_big++;
			continue;
		}
		assert_true(got[i]->len > 4 && strncmp(got[i]->payload, "ref-", 4) == 0);
		if (rd_kafka_message_headers(got[i], &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
		    rd_kafka_header_get_last(h, "trace_id", &v, &vlen) ==
			    RD_KAFKA_RESP_ERR_NO_ERROR) {
			assert_int_equal(got[i]->len, 5);
			assert_memory_equal(got[i]->payload, "ref-7", 5);
			assert_memory_equal(v, "t7", 2);
			seen_header++;
		}
	}
	assert_int_equal(seen_header, 1);
	assert_int_equal(seen_big, 1);
	destroy_all(got, n);
	lp_kconsumer_free(c);
	assert_int_equal(lp_kproducer_free(p, 2000), 0);
	free(msgs);
	free(big);
}

/* Lag through a handle that is not consuming: a consumer's own handle
 * answers only between its fetch long-polls (fetch.wait.max.ms). */
static long long lag_of(rd_kafka_t *rk, const char *group)
{
	static const char *const topics[] = { TOPIC, "no-such-topic", NULL };
	long long lag = -1;

	assert_int_equal(lp_kafka_group_lag(rk, group, topics, 3000, &lag), 0);
	return lag;
}

/* One consumer through its life: lag before anything is committed, consume,
 * rewind and see the same messages again, commit part then all (the lag
 * follows), pause (nothing arrives), resume (the rest arrives). */
static void test_consumer(void **state)
{
	struct fixture *f = *state;
	rd_kafka_message_t *msgs[NMSG], *again[NMSG];
	struct lp_kproducer *admin = producer(f, "5000", NULL);
	rd_kafka_t *rk = lp_kproducer_handle(admin);
	struct lp_kconsumer *c;
	size_t got, i;

	produce_ok(f, 20, "c");
	c = consumer(f, "g-commit");
	assert_int_equal(lag_of(rk, "g-commit"), 20);

	got = consume(c, msgs, 20, 8000);
	assert_int_equal(got, 20);
	for (i = 0; i < got; i++)
		assert_true(msgs[i]->len > 2 && strncmp(msgs[i]->payload, "c-", 2) == 0);

	assert_int_equal(lp_kconsumer_rewind(c, msgs, got), 0);
	assert_int_equal(consume(c, again, got, 5000), got);
	for (i = 0; i < got; i++)
		assert_true(strncmp(again[i]->payload, "c-", 2) == 0);
	destroy_all(again, got);

	assert_int_equal(lp_kconsumer_commit(c, msgs, got / 2), 0);
	assert_in_range(lag_of(rk, "g-commit"), 1, 19);
	assert_int_equal(lp_kconsumer_commit(c, msgs, got), 0);
	assert_int_equal(lag_of(rk, "g-commit"), 0);
	assert_int_equal(lag_of(rk, "g-never-committed"), 20);
	assert_int_equal(lp_kconsumer_commit(c, msgs, 0), 0);
	destroy_all(msgs, got);

	assert_int_equal(lp_kconsumer_pause(c, true), 0);
	produce_ok(f, 4, "p");
	assert_int_equal(consume(c, msgs, 1, 700), 0);
	assert_int_equal(lp_kconsumer_pause(c, false), 0);
	assert_int_equal(consume(c, msgs, 4, 5000), 4);
	assert_true(strncmp(msgs[0]->payload, "p-", 2) == 0);
	destroy_all(msgs, 4);

	lp_kconsumer_free(c);
	assert_int_equal(lp_kproducer_free(admin, 1000), 0);
}

/* A consumer closed while records it fetched still wait in its queue (the
 * enricher makes its consumer again mid-run when a rewind fails): the
 * close must not abort on them. */
static void test_consumer_free_with_records_waiting(void **state)
{
	struct fixture *f = *state;
	rd_kafka_message_t *msgs[1];
	struct lp_kconsumer *c;
	int64_t t0;

	produce_ok(f, NMSG, "w");
	c = consumer(f, "g-free");
	assert_int_equal(consume(c, msgs, 1, 8000), 1);
	destroy_all(msgs, 1);
	/* Let the rest be fetched into the local queue. */
	usleep(300 * 1000);
	t0 = lp_now_ms();
	lp_kconsumer_free(c);
	/* Closed, not abandoned after CONSUMER_CLOSE_MS (4 s). */
	assert_true(lp_now_ms() - t0 < 3000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_produce_acked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_custom_done_and_headers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_injected_error_reported, setup, teardown),
		cmocka_unit_test(test_err_permanent),
		cmocka_unit_test_setup_teardown(test_too_large_is_permanent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_broker_down_times_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fatal_error_renews_the_handle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_handle_renewed_many_times, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kbatch_acked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kbatch_survives_renewal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kbatch_send_ref, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_full, setup, teardown),
		cmocka_unit_test(test_kwait_timeout),
		cmocka_unit_test_setup_teardown(test_bad_property, setup, teardown),
		cmocka_unit_test_setup_teardown(test_consumer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_consumer_free_with_records_waiting, setup,
						teardown),
	};

	lp_log_init("test_kafka", LP_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
