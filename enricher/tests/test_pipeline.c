/* test_pipeline.c - the enricher's pipeline in process, against librdkafka's
 * mock cluster (a fresh one per test), for the failures issue #18 found:
 *
 *   - an output the broker refuses for good (message too large) is
 *     dead-lettered with the reason, and the partition moves on;
 *   - a rewind that fails after a failed batch (the consumer's seek is
 *     wrapped: the link uses -Wl,--wrap=lp_kconsumer_rewind, see the
 *     Makefile) does not let the pipeline skip the batch's records.
 *
 * No Redis, metadata service or tier-1 table: every event is partial. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../enricher.h"
#include "logpipe/config.h"
#include "logpipe/kafka.h"
#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/util.h"

#include <librdkafka/rdkafka_mock.h> /* after rdkafka.h, which kafka.h includes */
#include "../../common/tests/testutil.h"

#include "logpipe/banned.h"

#define PRODUCE_API_KEY 0 /* Kafka protocol ApiKey of ProduceRequest */
#define MAX_SEEN 256

/* ---- the seam: lp_kconsumer_rewind, failing on demand -------------------- */

int __real_lp_kconsumer_rewind(struct lp_kconsumer *c, rd_kafka_message_t *const *msgs,
			       size_t n);
int __wrap_lp_kconsumer_rewind(struct lp_kconsumer *c, rd_kafka_message_t *const *msgs,
			       size_t n);

static atomic_int rewinds_to_fail; /* the next this many rewinds fail, without seeking */
static atomic_int rewinds_failed;

int __wrap_lp_kconsumer_rewind(struct lp_kconsumer *c, rd_kafka_message_t *const *msgs,
			       size_t n)
{
	if (atomic_load(&rewinds_to_fail) > 0) {
		atomic_fetch_sub(&rewinds_to_fail, 1);
		atomic_fetch_add(&rewinds_failed, 1);
		return -EIO;
	}
	return __real_lp_kconsumer_rewind(c, msgs, n);
}

/* ---- fixture ---------------------------------------------------------------- */

struct fixture {
	rd_kafka_t *owner;           /* handle the mock cluster hangs off */
	rd_kafka_mock_cluster_t *mc;
	const char *brokers;
	struct enricher_settings s;
	struct enricher *e;
};

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
	const char *topics[] = { "raw", "complete", "partial", "dlq" };
	size_t i;

	rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
	f->owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	assert_non_null(f->owner);
	f->mc = rd_kafka_mock_cluster_new(f->owner, 1);
	assert_non_null(f->mc);
	f->brokers = rd_kafka_mock_cluster_bootstraps(f->mc);
	for (i = 0; i < LP_ARRAY_SIZE(topics); i++)
		assert_int_equal(rd_kafka_mock_topic_create(f->mc, topics[i], i == 0 ? 2 : 1, 1),
				 RD_KAFKA_RESP_ERR_NO_ERROR);

	assert_int_equal(lp_config_load(enricher_options, &f->s, NULL, err, sizeof(err)), 0);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", test_free_port());
	set_str(&f->s.http_listen, listen);
	set_str(&f->s.kafka_brokers, f->brokers);
	set_str(&f->s.topic_raw, "raw");
	set_str(&f->s.topic_complete, "complete");
	set_str(&f->s.topic_partial, "partial");
	set_str(&f->s.topic_dlq, "dlq");
	set_str(&f->s.redis_url, "");
	set_str(&f->s.metadata_url, "");
	f->s.table_enabled = 0;
	f->s.kafka_session_timeout_ms = 6000;
	f->s.retry_max_ms = 200;
	atomic_store(&rewinds_to_fail, 0);
	atomic_store(&rewinds_failed, 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	enricher_stop(f->e);
	lp_config_release(enricher_options, &f->s);
	rd_kafka_mock_cluster_destroy(f->mc);
	rd_kafka_destroy(f->owner);
	free(f);
	return 0;
}

static void start(struct fixture *f)
{
	char err[256] = "";

	f->e = enricher_start(&f->s, err, sizeof(err));
	if (!f->e)
		print_error("enricher_start: %s\n", err);
	assert_non_null(f->e);
}

/* ---- helpers -------------------------------------------------------------- */

/* A normalised event with id number i, as the producer writes it. */
static void event_json(char *out, size_t len, int i)
{
	snprintf(out, len,
		 "{\"id\":\"0190a3b4-0000-7000-8000-%012d\",\"schema_version\":1,"
		 "\"timestamp\":\"2026-01-01T00:00:00.000Z\","
		 "\"received_at\":\"2026-01-01T00:00:00.000Z\",\"level\":\"INFO\","
		 "\"message\":\"event %d\",\"service\":\"svc-%d\",\"attributes\":{}}",
		 i, i, i % 4);
}

/* Writes events from .. to-1 to raw and waits for the acknowledgements. */
static void produce_events(struct fixture *f, int from, int to)
{
	const char *props[] = { "message.timeout.ms", "5000", NULL };
	char err[256] = "", val[512], key[16];
	struct lp_kproducer *p = lp_kproducer_new(f->brokers, props, err, sizeof(err));
	struct lp_kwait w;
	int i;

	assert_non_null(p);
	lp_kwait_init(&w, NULL);
	for (i = from; i < to; i++) {
		event_json(val, sizeof(val), i);
		snprintf(key, sizeof(key), "svc-%d", i % 4);
		lp_kwait_add(&w);
		assert_int_equal(lp_kproducer_send(p, "raw", key, strlen(key), val, strlen(val),
						   NULL, 1000, lp_kwait_done,
						   lp_kwait_slot(&w, (size_t)(i - from))),
				 0);
	}
	assert_int_equal(lp_kwait_wait(&w, 10000), 0);
	assert_int_equal(w.failed, 0);
	lp_kwait_release(&w);
	assert_int_equal(lp_kproducer_free(p, 1000), 0);
}

/* What a topic holds: each record's value, and a header of it. */
struct seen {
	int n;
	char *val[MAX_SEEN];
	char *hdr[MAX_SEEN];
};

static char *copy(const void *p, size_t len)
{
	char *s = lp_xmalloc(len + 1);

	if (len)
		memcpy(s, p, len);
	s[len] = '\0';
	return s;
}

static void seen_free(struct seen *s)
{
	for (int i = 0; i < s->n; i++) {
		free(s->val[i]);
		free(s->hdr[i]);
	}
	s->n = 0;
}

/* Reads every record of topic (nparts partitions) from the start, keeping
 * the value and header hname of each. */
static void read_topic(struct fixture *f, const char *topic, int nparts, const char *hname,
		       struct seen *out)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(nparts);
	int64_t deadline = lp_now_ms() + 5000;
	int eof = 0, p;
	char err[256];
	rd_kafka_t *rk;

	seen_free(out);
	rd_kafka_conf_set(conf, "bootstrap.servers", f->brokers, err, sizeof(err));
	rd_kafka_conf_set(conf, "group.id", "test-reader", err, sizeof(err));
	rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err));
	rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
	assert_non_null(rk);
	for (p = 0; p < nparts; p++)
		rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
	assert_int_equal(rd_kafka_assign(rk, l), RD_KAFKA_RESP_ERR_NO_ERROR);
	rd_kafka_topic_partition_list_destroy(l);
	while (eof < nparts && lp_now_ms() < deadline) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		rd_kafka_headers_t *h = NULL;
		const void *hv = NULL;
		size_t hlen = 0;

		if (!m)
			continue;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			eof++;
		} else if (!m->err && out->n < MAX_SEEN) {
			out->val[out->n] = copy(m->payload, m->len);
			if (hname && rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
			    rd_kafka_header_get_last(h, hname, &hv, &hlen) ==
				    RD_KAFKA_RESP_ERR_NO_ERROR)
				out->hdr[out->n] = copy(hv, hlen);
			out->n++;
		}
		rd_kafka_message_destroy(m);
	}
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
}

/* How many of the events from .. to-1 are among the values in s. */
static int events_in(const struct seen *s, int from, int to)
{
	char id[64];
	int i, k, found = 0;

	for (i = from; i < to; i++) {
		snprintf(id, sizeof(id), "\"id\":\"0190a3b4-0000-7000-8000-%012d\"", i);
		for (k = 0; k < s->n; k++)
			if (strstr(s->val[k], id)) {
				found++;
				break;
			}
	}
	return found;
}

/* Waits (bounded) until every event from .. to-1 is on the output topic. */
static bool wait_outputs(struct fixture *f, int from, int to, int timeout_ms)
{
	int64_t deadline = lp_now_ms() + timeout_ms;
	struct seen s = { 0 };
	bool ok = false;

	while (!ok && lp_now_ms() < deadline) {
		read_topic(f, "partial", 1, NULL, &s);
		ok = events_in(&s, from, to) == to - from;
		if (!ok)
			usleep(200 * 1000);
	}
	seen_free(&s);
	return ok;
}

static double counter(const char *name)
{
	return lp_series_value(lp_counter(lp_registry_default(), name, NULL));
}

/* ---- tests -------------------------------------------------------------- */

/* The broker refuses the first output as too large (its limit lower than
 * the enricher's): the record goes to the DLQ, whole, with the reason and
 * its origin; the next event of the same partition is enriched. */
static void test_refused_output_is_dead_lettered(void **state)
{
	struct fixture *f = *state;
	rd_kafka_resp_err_t big = RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
	double refused0 = counter("enrichment_outputs_refused_total");
	char want[512];
	struct seen dlq = { 0 };
	int64_t deadline;

	produce_events(f, 0, 1);
	rd_kafka_mock_push_request_errors_array(f->mc, PRODUCE_API_KEY, 1, &big);
	start(f);
	deadline = lp_now_ms() + 20000;
	while (dlq.n == 0 && lp_now_ms() < deadline) {
		read_topic(f, "dlq", 1, "reason", &dlq);
		if (dlq.n == 0)
			usleep(200 * 1000);
	}
	assert_int_equal(dlq.n, 1);
	event_json(want, sizeof(want), 0);
	assert_string_equal(dlq.val[0], want);
	assert_non_null(dlq.hdr[0]);
	assert_string_equal(dlq.hdr[0], "kafka_refused: Broker: Message size too large");
	seen_free(&dlq);
	assert_true(counter("enrichment_outputs_refused_total") == refused0 + 1);

	produce_events(f, 1, 9);
	assert_true(wait_outputs(f, 1, 9, 20000));
}

/* A batch fails (the broker refuses its outputs for a reason that may
 * pass), and the rewind that should re-read it fails too.  Before issue
 * #18 the failure was ignored: the consumer went on from after the batch,
 * and its records were never enriched.  Now the consumer is made again
 * and resumes from the committed offsets. */
static void test_failed_rewind_loses_nothing(void **state)
{
	struct fixture *f = *state;
	rd_kafka_resp_err_t denied[2] = { RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
					  RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED };
	double resets0 = counter("enrichment_consumer_resets_total");

	produce_events(f, 0, 20);
	rd_kafka_mock_push_request_errors_array(f->mc, PRODUCE_API_KEY, 2, denied);
	atomic_store(&rewinds_to_fail, 1);
	start(f);
	assert_true(wait_outputs(f, 0, 20, 30000));
	assert_int_equal(atomic_load(&rewinds_failed), 1);
	/* At least the one reset; a loaded machine can see a second, real one:
	 * the second refused produce may land while the consumer made again
	 * has no partitions yet, whose rewind then fails too (and is reset,
	 * the safe way, again). */
	assert_true(counter("enrichment_consumer_resets_total") >= resets0 + 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_refused_output_is_dead_lettered, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_failed_rewind_loses_nothing, setup, teardown),
	};

	lp_log_init("test_pipeline", LP_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
