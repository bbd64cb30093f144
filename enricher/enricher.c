/* enricher.c - the enrichment pipeline.
 *
 * One pipeline thread runs the staged pipeline of seed 002 on batches:
 *
 *   gather   poll raw-logs until batch.max_events or batch.max_ms, or until
 *            nothing more is waiting; each record goes through the stages
 *            below as soon as it is polled, the batch is only the unit
 *            of acknowledgement and commit;
 *   filter   each record must parse and pass lp_event_check_normalized,
 *            else it goes to logs-dlq unchanged, with headers reason,
 *            origin_topic, origin_partition, origin_offset and stage;
 *            lp_event_scan answers for the common valid record in one pass
 *            without a JSON tree, and leaves every other to that full path;
 *   look up  host (by `host`, then `source_ip`) and service, through the
 *            tiers of lookup.c;
 *   merge    enrich_render() builds the "enrichment" object (merge.c),
 *            spliced into the record's own bytes (enrich_splice);
 *   branch   complete events to enriched-logs-complete, others to
 *            enriched-logs-partial, keyed by service;
 *   commit   after every delivery of the batch is acknowledged, the input
 *            offsets are stored for commit; never before.  The stored
 *            offsets are committed asynchronously, at most one commit in
 *            flight, every kafka.commit_interval_ms, and once more (for at
 *            most STOP_GRACE_MS) when stopping, so no broker round trip
 *            sits on the events' path and a stop during an outage is not
 *            held up.
 *
 * Up to batch.in_flight batches (and IN_FLIGHT_MAX records) are in
 * flight: while Kafka acknowledges some, the next records are gathered and
 * enriched as soon as they arrive; acknowledged batches are retired
 * (stored) in order.  The pipeline waits for an acknowledgement only when
 * the ring is full or it is stopping.
 *
 * When any delivery of a batch fails, nothing from it on is committed: the
 * consumer is rewound to the first offsets of the batches in flight and
 * they are tried again after an exponential backoff.  That is for errors
 * that may pass: an output Kafka refuses for good (lp_kafka_err_permanent:
 * too large once enriched, invalid) would be refused on every retry and
 * hold its partition for ever, so its input record is dead-lettered
 * instead, with the reason, when its batch is retired (cut to its first
 * LP_DLQ_TRUNCATED_BYTES when even the dead letter is too large).  A
 * rewind that fails would let a later batch store offsets past records
 * never delivered, so the consumer is made again instead (consumer_reset)
 * and resumes from the committed offsets.  What was already
 * delivered is delivered again (at-least-once; events keep their id, and
 * the consumer stores each id once).  A rebalance needs no special care for the same reason:
 * a partition taken away mid-batch is re-read by its new owner from the
 * last commit, which never passes an unacknowledged output. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "enricher.h"
#include "logpipe/breaker.h"
#include "logpipe/buf.h"
#include "logpipe/event.h"
#include "logpipe/http.h"
#include "logpipe/kafka.h"
#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/ratelimit.h"
#include "logpipe/util.h"
#include "lookup.h"
#include "merge.h"
#include "table.h"

#include "logpipe/banned.h"

#define OPT(key, type, def, field, help, lo, hi) \
	{ key, type, def, offsetof(struct enricher_settings, field), help, lo, hi }

const struct lp_cfg_opt enricher_options[] = {
	OPT("http.listen", LP_CFG_STR, "8083", http_listen, "address:port or port to serve HTTP on", 0, 0),
	OPT("http.threads", LP_CFG_INT, "16", http_threads, "HTTP worker threads", 1, 1024),
	OPT("http.front", LP_CFG_STR, "events", http_front, "events: an event loop front takes the connections (slow clients hold no thread) and passes requests to CivetWeb behind it; civetweb: CivetWeb threads serve everything", 0, 0),
	OPT("http.event_loops", LP_CFG_INT, "1", http_loops, "event loop threads of the events front; 0: one per CPU, at most 8", 0, 8),
	OPT("log.level", LP_CFG_STR, "info", log_level, "debug, info, warn or error", 0, 0),
	OPT("kafka.brokers", LP_CFG_STR, "127.0.0.1:9092", kafka_brokers, "Kafka bootstrap servers", 0, 0),
	OPT("kafka.group", LP_CFG_STR, "logpipe-enricher", kafka_group, "consumer group of the enrichers sharing raw-logs", 0, 0),
	OPT("kafka.timeout_ms", LP_CFG_INT, "5000", kafka_timeout_ms, "delivery timeout of one output message before the batch is retried", 100, 600000),
	OPT("kafka.session_timeout_ms", LP_CFG_INT, "10000", kafka_session_timeout_ms, "consumer group session timeout: how soon a dead enricher's partitions move", 6000, 300000),
	OPT("kafka.linger_ms", LP_CFG_INT, "5", kafka_linger_ms, "producer linger.ms (latency against batching); 5 (1 before 2026-12-07): with 1 a partition's next batch is due while its last one is unanswered, and librdkafka 2.0.2's idempotent sender, which sends nothing more for a partition with five or more messages in flight, spins until the answer comes (docs/benchmarks.md)", 0, 1000),
	OPT("kafka.fetch_wait_ms", LP_CFG_INT, "10", kafka_fetch_wait_ms, "consumer fetch.wait.max.ms: longest a fetch waits on the broker for new records", 1, 10000),
	OPT("kafka.commit_interval_ms", LP_CFG_INT, "200", kafka_commit_interval_ms, "how often acknowledged input offsets are committed (asynchronously, off the events' path)", 10, 60000),
	OPT("kafka.nodelay", LP_CFG_BOOL, "true", kafka_nodelay, "disable Nagle's algorithm on the broker connections (socket.nagle.disable)", 0, 0),
	OPT("topics.raw", LP_CFG_STR, "raw-logs", topic_raw, "input topic of normalised events", 0, 0),
	OPT("topics.complete", LP_CFG_STR, "enriched-logs-complete", topic_complete, "output topic of events with every lookup answered", 0, 0),
	OPT("topics.partial", LP_CFG_STR, "enriched-logs-partial", topic_partial, "output topic of events with a lookup unanswered", 0, 0),
	OPT("topics.dlq", LP_CFG_STR, "logs-dlq", topic_dlq, "dead-letter topic for invalid records", 0, 0),
	OPT("topics.metadata", LP_CFG_STR, "metadata-changes", topic_metadata, "compacted metadata change feed (tier 1)", 0, 0),
	OPT("redis.url", LP_CFG_STR, "redis://127.0.0.1:6379", redis_url, "Redis of the metadata cache (tier 2); empty disables the tier", 0, 0),
	OPT("redis.timeout_ms", LP_CFG_INT, "100", redis_timeout_ms, "Redis connect and command timeout", 1, 60000),
	OPT("metadata.url", LP_CFG_STR, "http://127.0.0.1:8082", metadata_url, "metadata service base URL (tier 3); empty disables the tier", 0, 0),
	OPT("metadata.timeout_ms", LP_CFG_INT, "300", metadata_timeout_ms, "metadata service request timeout", 1, 60000),
	OPT("table.enabled", LP_CFG_BOOL, "true", table_enabled, "keep the in-process table fed by topics.metadata (tier 1)", 0, 0),
	OPT("table.load_wait_ms", LP_CFG_INT, "5000", table_load_wait_ms, "how long start-up waits for tier 1 to load before consuming", 0, 600000),
	OPT("batch.max_events", LP_CFG_INT, "2000", batch_max_events, "most events per batch (gathered, enriched and acknowledged together)", 1, 100000),
	OPT("batch.max_ms", LP_CFG_INT, "20", batch_max_ms, "longest time spent gathering one batch", 0, 10000),
	OPT("batch.in_flight", LP_CFG_INT, "1024", batch_in_flight, "most batches enriched but not yet acknowledged", 1, 65536),
	OPT("cache.negative_ttl_ms", LP_CFG_INT, "5000", cache_negative_ttl_ms, "how long a \"not found\" from tier 2/3 is remembered", 0, 3600000),
	OPT("cache.positive_ttl_ms", LP_CFG_INT, "30000", cache_positive_ttl_ms, "how long a record from tier 2/3 is remembered", 0, 3600000),
	OPT("retry.max_ms", LP_CFG_INT, "5000", retry_max_ms, "longest backoff between retries of a failed batch", 10, 600000),
	LP_CFG_END,
};

#define COVERAGE_WINDOW 1024 /* events the coverage ratio is computed over */
#define STOP_GRACE_MS 3000   /* how long a stop waits for the batch in flight */
#define MONITOR_MS 2000      /* how often lag and table size are refreshed */
#define IDLE_POLL_MS 100     /* consumer poll timeout with nothing in flight */
#define BUSY_POLL_MS 5       /* ... and with batches waiting for acknowledgement */
#define FIRST_CAP 64         /* records a batch has room for before it grows */
/* Most records in flight (sent, not acknowledged) over all batches: half
 * of librdkafka's producer queue (queue.buffering.max.messages, 100,000),
 * so a send never waits for room in it. */
#define IN_FLIGHT_MAX 50000

struct enricher {
	const struct enricher_settings *s; /* settings, owned by main */
	struct lp_kconsumer *kc;           /* raw-logs, group kafka.group */
	pthread_mutex_t kc_mu;             /* kc against its replacement (consumer_reset) */
	struct lp_kproducer *kp;           /* idempotent producer of every output */
	struct lp_breaker *kafka_br;       /* trips on failed output batches */
	struct lp_breaker *table_br;       /* the metadata-changes feed's health */
	struct mdtable *table;             /* tier 1, NULL when disabled */
	struct lookup *lookup;             /* the tiers */
	struct lp_http_server *http;       /* health and metrics */
	pthread_t thread;                  /* the pipeline thread */
	bool thread_started;               /* thread must be joined */
	pthread_t monitor;                 /* refreshes lag and table gauges */
	bool monitor_started;              /* monitor must be joined */
	atomic_bool stop;                  /* asks the pipeline thread to return */
	rd_kafka_queue_t *commit_q;        /* results of the asynchronous commits */
	bool commit_busy;                  /* a commit is in flight */
	bool stored_new;                   /* offsets stored since the last commit */
	int64_t commit_at;                 /* earliest time of the next commit (ms) */

	struct lp_buf en_buf;              /* the enrichment object of the event at hand */
	struct lp_buf out_buf;             /* the output record of the event at hand */
	unsigned char coverage[COVERAGE_WINDOW]; /* 1 per complete event, a ring */
	size_t cov_next, cov_n, cov_sum;   /* ring position, fill and sum */

	struct lp_series *attempts;        /* enrichment_attempts_total */
	struct lp_series *successes;       /* enrichment_successes_total (complete) */
	struct lp_series *partials;        /* enrichment_partial_total */
	struct lp_series *dead;            /* enrichment_dead_lettered_total */
	struct lp_series *refused;         /* enrichment_outputs_refused_total */
	struct lp_series *truncated;       /* enrichment_dead_letters_truncated_total */
	struct lp_series *dlq_dropped;     /* enrichment_dead_letters_dropped_total */
	struct lp_series *resets;          /* enrichment_consumer_resets_total */
	struct lp_series *latency;         /* enrichment_latency_seconds (lookup + merge) */
	struct lp_series *batch_seconds;   /* enrichment_batch_seconds (gather to acknowledged) */
	struct lp_series *retries;         /* enrichment_batch_retries_total */
	struct lp_series *coverage_ratio;  /* enrichment_coverage_ratio */
	struct lp_series *table_hosts;     /* enrichment_table_records{kind="host"} */
	struct lp_series *table_services;  /* enrichment_table_records{kind="service"} */
	struct lp_series *sent;            /* kafka_messages_sent_total */
	struct lp_series *lag;             /* kafka_consumer_lag (raw-logs, this group) */
	struct lp_series *lookups[2][5];   /* enrichment_lookups_total{lookup,result} */
};

/* Buckets for a step measured in microseconds when the cache is warm. */
static const double latency_buckets[] = {
	0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
	0.005,   0.01,     0.025,   0.05,   0.1,     0.25,   0.5,   1,
};

/* ---- one record ------------------------------------------------------------ */

/* Where one input record goes. */
struct output {
	const char *topic;            /* destination, NULL if none could be built */
	const void *key;              /* message key: the input's, or keybuf */
	size_t keylen;
	char *keybuf;                 /* owned key (the event's service) or NULL */
	const char *val;              /* value: the input's, or the enricher's out buffer */
	size_t vallen;
	rd_kafka_headers_t *headers;  /* DLQ headers or NULL (taken by a send) */
};

static void output_release(struct output *o)
{
	free(o->keybuf);
	if (o->headers)
		rd_kafka_headers_destroy(o->headers);
	memset(o, 0, sizeof(*o));
}

static rd_kafka_headers_t *dlq_headers(const rd_kafka_message_t *m, const char *reason)
{
	rd_kafka_headers_t *h = rd_kafka_headers_new(5);
	char part[16], off[24];

	snprintf(part, sizeof(part), "%d", (int)m->partition);
	snprintf(off, sizeof(off), "%lld", (long long)m->offset);
	rd_kafka_header_add(h, "reason", -1, reason, -1);
	rd_kafka_header_add(h, "origin_topic", -1, rd_kafka_topic_name(m->rkt), -1);
	rd_kafka_header_add(h, "origin_partition", -1, part, -1);
	rd_kafka_header_add(h, "origin_offset", -1, off, -1);
	rd_kafka_header_add(h, "stage", -1, "enricher", -1);
	lp_kafka_pass_trace(m, &h);
	return h;
}

static void to_dlq(struct enricher *e, const rd_kafka_message_t *m, const char *reason,
		   struct output *o)
{
	char trace[33];

	lp_log_kv(LP_LOG_WARN,
		  (const char *[]){ "topic", rd_kafka_topic_name(m->rkt), "trace_id",
				    lp_kafka_trace_id(m, trace), NULL },
		  "dead-lettering partition %d offset %lld: %s", (int)m->partition,
		  (long long)m->offset, reason);
	o->topic = e->s->topic_dlq;
	o->key = m->key;
	o->keylen = m->key_len;
	o->val = m->payload;
	o->vallen = m->len;
	o->headers = dlq_headers(m, reason);
	lp_series_inc(e->dead);
}

static void note_coverage(struct enricher *e, bool complete)
{
	if (e->cov_n == COVERAGE_WINDOW)
		e->cov_sum -= e->coverage[e->cov_next];
	else
		e->cov_n++;
	e->coverage[e->cov_next] = complete;
	e->cov_sum += complete;
	e->cov_next = (e->cov_next + 1) % COVERAGE_WINDOW;
}

static void count_lookup(struct enricher *e, enum md_kind k, const struct lookup_answer *a)
{
	lp_series_inc(e->lookups[k][a->status]);
}

/* Runs filter, look-up, merge and branch for one record; fills o. */
static void enrich_one(struct enricher *e, const rd_kafka_message_t *m, struct output *o)
{
	struct lookup_answer host, svc;
	struct lp_event_view view;
	json_error_t je;
	char reason[300];
	json_t *ev = NULL;
	const char *service, *hostname, *source_ip;
	int64_t t0;
	bool complete;
	int rc;

	memset(o, 0, sizeof(*o));
	if (!m->payload || m->len == 0) {
		to_dlq(e, m, "invalid_event: empty record", o);
		return;
	}
	/* The common case, a valid event, is read in one pass without a JSON
	 * tree; anything else takes the full path, which words refusals. */
	if (lp_event_scan(m->payload, m->len, &view) == 0) {
		service = view.service;
		hostname = view.host;
		source_ip = view.source_ip;
	} else {
		ev = lp_json_loadb(m->payload, m->len, 0, &je);
		if (!ev) {
			snprintf(reason, sizeof(reason), "invalid_json: %s", je.text);
			to_dlq(e, m, reason, o);
			return;
		}
		if (lp_event_check_normalized(ev, reason + 15, sizeof(reason) - 15) < 0) {
			memcpy(reason, "invalid_event: ", 15);
			to_dlq(e, m, reason, o);
			json_decref(ev);
			return;
		}
		service = json_string_value(json_object_get(ev, "service"));
		hostname = json_string_value(json_object_get(ev, "host"));
		source_ip = json_string_value(json_object_get(ev, "source_ip"));
	}

	t0 = lp_now_us();
	lp_series_inc(e->attempts);
	lookup_host(e->lookup, hostname, source_ip, &host);
	lookup_service(e->lookup, service, &svc);
	lp_buf_reset(&e->en_buf);
	complete = enrich_render(&e->en_buf, &host, &svc, lp_wall_ms());
	lp_series_observe(e->latency, (double)(lp_now_us() - t0) / 1e6);
	count_lookup(e, MD_HOST, &host);
	count_lookup(e, MD_SERVICE, &svc);
	lookup_answer_release(&host);
	lookup_answer_release(&svc);
	note_coverage(e, complete);
	lp_series_inc(complete ? e->successes : e->partials);

	/* The input's own bytes with the enrichment spliced in; an input that
	 * already carries an "enrichment" (re-fed output) is re-serialised
	 * without it first. */
	lp_buf_reset(&e->out_buf);
	if (ev && json_object_get(ev, "enrichment")) {
		char *text;

		json_object_del(ev, "enrichment");
		text = json_dumps(ev, JSON_COMPACT);
		rc = text ? enrich_splice(&e->out_buf, text, strlen(text), e->en_buf.buf,
					  e->en_buf.len)
			  : -ENOMEM;
		free(text);
	} else {
		rc = enrich_splice(&e->out_buf, m->payload, m->len, e->en_buf.buf, e->en_buf.len);
	}
	if (rc == 0) {
		o->topic = complete ? e->s->topic_complete : e->s->topic_partial;
		o->keybuf = lp_xstrdup(service);
		o->key = o->keybuf;
		o->keylen = strlen(o->keybuf);
		o->val = e->out_buf.buf;
		o->vallen = e->out_buf.len;
	}
	json_decref(ev);
}

/* ---- one batch ----------------------------------------------------------------- */

/* A batch of input records and the deliveries of their outputs. */
struct batch {
	rd_kafka_message_t **msgs;     /* the input records (owned) */
	size_t n;                      /* records in msgs */
	size_t cap;                    /* room in msgs: grows up to batch.max_events */
	size_t sent;                   /* outputs given a delivery slot: handed to
					* the producer or refused at once */
	rd_kafka_resp_err_t *res;      /* per record, its output's result; as
					* long as msgs, written under w.mu */
	struct lp_kwait w;             /* counts the deliveries */
	int64_t t0_us;                 /* when its first record was gathered */
};

/* Starts an empty batch: its deliveries are counted from here on. */
static void batch_begin(struct batch *b)
{
	b->n = 0;
	b->sent = 0;
	lp_kwait_init(&b->w, b->res);
}

/* Enriches the batch's record i and hands its output to the producer.
 * Returns -EIO when it could not be handed over for a reason that may
 * pass: the batch fails then.  An output refused for good at once (larger
 * than message.max.bytes once enriched) is only noted in its slot: the
 * record is dead-lettered when the batch is retired (batch_refused). */
static int send_one(struct enricher *e, struct batch *b, size_t i)
{
	const rd_kafka_message_t *m = b->msgs[i];
	rd_kafka_resp_err_t err;
	struct output o;
	int rc;

	enrich_one(e, m, &o);
	if (!o.headers) /* the enriched event keeps its trace context */
		lp_kafka_pass_trace(m, &o.headers);
	lp_kwait_add(&b->w);
	b->sent++;
	if (!o.topic) {
		lp_kwait_cancel(&b->w, i, RD_KAFKA_RESP_ERR__FAIL);
		output_release(&o);
		return -EIO;
	}
	rc = lp_kproducer_send(e->kp, o.topic, o.key, o.keylen, o.val, o.vallen, o.headers, 1000,
			       lp_kwait_done, lp_kwait_slot(&b->w, i));
	if (rc == 0)
		o.headers = NULL; /* taken over by the send */
	output_release(&o);
	if (rc < 0) {
		err = lp_kafka_send_err(rc);
		lp_kwait_cancel(&b->w, i, err);
		return lp_kafka_err_permanent(err) ? 0 : -EIO;
	}
	return 0;
}

/* Gathers up to batch.max_events records into b, each enriched and sent
 * as soon as it is polled (a record never waits for the rest of its
 * batch).  Waits up to wait_ms for the first, then takes what is already
 * waiting, for at most batch.max_ms; stops at the first record that
 * cannot be sent, since the batch fails anyway.  Consumer errors are
 * logged and dropped. */
static void gather(struct enricher *e, struct batch *b, size_t max, int wait_ms)
{
	int64_t deadline = 0;

	batch_begin(b);
	while (b->n < max && !atomic_load(&e->stop)) {
		rd_kafka_message_t *m = lp_kconsumer_poll(e->kc, b->n == 0 ? wait_ms : 0);

		if (!m)
			break;
		if (m->err) {
			if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
				lp_warn("consumer: %s", rd_kafka_message_errstr(m));
			rd_kafka_message_destroy(m);
			if (b->n == 0)
				break;
			continue;
		}
		if (b->n == 0) {
			b->t0_us = lp_now_us();
			deadline = b->t0_us / 1000 + e->s->batch_max_ms;
		}
		if (b->n == b->cap) {
			/* Only this thread touches msgs: growing it is safe.  The
			 * delivery thread writes res under w.mu, so res grows
			 * (and moves) under that lock. */
			b->cap = b->cap * 2 < max ? b->cap * 2 : max;
			b->msgs = lp_xrealloc(b->msgs, b->cap * sizeof(*b->msgs));
			pthread_mutex_lock(&b->w.mu);
			b->res = lp_xrealloc(b->res, b->cap * sizeof(*b->res));
			b->w.results = b->res;
			pthread_mutex_unlock(&b->w.mu);
		}
		b->msgs[b->n++] = m;
		if (send_one(e, b, b->n - 1) < 0 || lp_now_ms() >= deadline)
			break;
	}
}

/* Waits for every delivery report of w.  Deliveries are bounded by
 * message.timeout.ms, so this ends; but when a stop is requested, the
 * batch gets STOP_GRACE_MS more and then its deliveries are purged (they
 * report at once with an error), so that SIGTERM is served in time.  A
 * purged batch is not committed and is read again by the next owner. */
static void wait_acks(struct enricher *e, struct lp_kwait *w)
{
	int64_t stop_at = 0;

	while (lp_kwait_wait(w, 100) < 0) {
		if (!atomic_load(&e->stop))
			continue;
		if (!stop_at)
			stop_at = lp_now_ms() + STOP_GRACE_MS;
		if (lp_now_ms() >= stop_at) {
			lp_warn("stopping: abandoning the batch in flight (not committed)");
			rd_kafka_purge(lp_kproducer_handle(e->kp),
				       RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
			lp_kwait_wait(w, -1);
			return;
		}
	}
}

/* Waits for the batch's deliveries.  Returns 0 when each was acknowledged
 * or refused for good (batch_refused dead-letters those), -EIO when any
 * failed for a reason that may pass: the batch is retried then. */
static int batch_finish(struct enricher *e, struct batch *b)
{
	rd_kafka_resp_err_t first = RD_KAFKA_RESP_ERR_NO_ERROR;
	int64_t t0 = lp_now_us();
	size_t i, transient = b->n - b->sent;
	int ret;

	wait_acks(e, &b->w);
	for (i = 0; i < b->sent; i++) {
		if (b->res[i] == RD_KAFKA_RESP_ERR_NO_ERROR || lp_kafka_err_permanent(b->res[i]))
			continue;
		if (!transient++)
			first = b->res[i];
	}
	ret = transient == 0 ? 0 : -EIO;
	lp_debug("batch of %zu acknowledged after %.1f ms more", b->n,
		 (double)(lp_now_us() - t0) / 1000);
	if (ret < 0)
		lp_warn("%zu of %zu outputs not acknowledged (%s); the batch will be retried",
			transient, b->n, rd_kafka_err2str(first));
	lp_series_add(e->sent, (double)(b->sent - (size_t)b->w.failed));
	lp_kwait_release(&b->w);
	return ret;
}

/* Sends one dead letter for input m, value its first len bytes (cut is
 * true when that is not all of it: header "truncated" gives the original
 * size), and waits for the broker.  Returns the delivery result. */
static rd_kafka_resp_err_t dead_letter_wait(struct enricher *e, const rd_kafka_message_t *m,
					    const char *reason, size_t len, bool cut)
{
	rd_kafka_headers_t *h = dlq_headers(m, reason);
	rd_kafka_resp_err_t res = RD_KAFKA_RESP_ERR__FAIL;
	struct lp_kwait w;
	char size[24];
	int rc;

	if (cut) {
		snprintf(size, sizeof(size), "%zu", m->len);
		rd_kafka_header_add(h, "truncated", -1, size, -1);
	}
	lp_kwait_init(&w, &res);
	lp_kwait_add(&w);
	rc = lp_kproducer_send(e->kp, e->s->topic_dlq, m->key, m->key_len, m->payload, len, h,
			       1000, lp_kwait_done, lp_kwait_slot(&w, 0));
	if (rc < 0) {
		rd_kafka_headers_destroy(h);
		lp_kwait_cancel(&w, 0, lp_kafka_send_err(rc));
	}
	wait_acks(e, &w);
	lp_kwait_release(&w);
	return res;
}

/* Input m's output was refused for good (why): the record goes to the
 * dead-letter topic as it came, with the reason, or cut to
 * LP_DLQ_TRUNCATED_BYTES when even that is too large, so that one record
 * cannot hold its partition.  Returns 0, or -EIO when the dead-letter
 * topic could not take it for a reason that may pass. */
static int dead_letter_refused(struct enricher *e, const rd_kafka_message_t *m,
			       rd_kafka_resp_err_t why)
{
	char reason[200], trace[33];
	const char *const kv[] = { "topic", rd_kafka_topic_name(m->rkt), "trace_id",
				   lp_kafka_trace_id(m, trace), NULL };
	rd_kafka_resp_err_t res;
	bool cut = false;

	snprintf(reason, sizeof(reason), "kafka_refused: %s", rd_kafka_err2str(why));
	lp_log_kv(LP_LOG_WARN, kv,
		  "output of partition %d offset %lld (%zu bytes in) refused for good (%s); "
		  "dead-lettering the record", (int)m->partition, (long long)m->offset, m->len,
		  rd_kafka_err2str(why));
	res = dead_letter_wait(e, m, reason, m->len, false);
	if (lp_kafka_err_permanent(res) && m->len > 0) {
		cut = true;
		/* The first bytes, or none when the record is short: its
		 * headers still say what and where it is. */
		res = dead_letter_wait(e, m, reason, m->len > LP_DLQ_TRUNCATED_BYTES
					      ? LP_DLQ_TRUNCATED_BYTES : 0, true);
	}
	if (res == RD_KAFKA_RESP_ERR_NO_ERROR) {
		lp_series_inc(e->refused);
		lp_series_inc(e->dead);
		if (cut)
			lp_series_inc(e->truncated);
		return 0;
	}
	if (!lp_kafka_err_permanent(res)) {
		lp_log_kv(LP_LOG_WARN, kv,
			  "dead-lettering partition %d offset %lld failed (%s); the batch will be "
			  "retried", (int)m->partition, (long long)m->offset, rd_kafka_err2str(res));
		return -EIO;
	}
	/* Not even a cut copy is taken: a dead-letter topic with a tiny
	 * max.message.bytes.  Holding the partition for ever would not help. */
	lp_log_kv(LP_LOG_ERROR, kv,
		  "partition %d offset %lld: output refused (%s) and so is its dead letter (%s); "
		  "the record is skipped, it stays in %s", (int)m->partition, (long long)m->offset,
		  rd_kafka_err2str(why), rd_kafka_err2str(res), rd_kafka_topic_name(m->rkt));
	lp_series_inc(e->refused);
	lp_series_inc(e->dlq_dropped);
	return 0;
}

/* Dead-letters every record of an acknowledged batch whose output Kafka
 * refused for good.  Returns 0, or -EIO: the batch is retried. */
static int batch_refused(struct enricher *e, struct batch *b)
{
	size_t i;

	for (i = 0; i < b->sent; i++)
		if (b->res[i] != RD_KAFKA_RESP_ERR_NO_ERROR &&
		    dead_letter_refused(e, b->msgs[i], b->res[i]) < 0)
			return -EIO;
	return 0;
}

static void batch_drop(struct batch *b)
{
	size_t i;

	for (i = 0; i < b->n; i++)
		rd_kafka_message_destroy(b->msgs[i]);
	b->n = 0;
}

static void publish_coverage(struct enricher *e)
{
	if (e->cov_n)
		lp_series_set(e->coverage_ratio, (double)e->cov_sum / (double)e->cov_n);
}

/* Called from the monitor thread: kc may be being replaced. */
static bool assigned(struct enricher *e)
{
	rd_kafka_topic_partition_list_t *l = NULL;
	bool yes = false;

	pthread_mutex_lock(&e->kc_mu);
	if (e->kc &&
	    rd_kafka_assignment(lp_kconsumer_handle(e->kc), &l) == RD_KAFKA_RESP_ERR_NO_ERROR) {
		yes = l->cnt > 0;
		rd_kafka_topic_partition_list_destroy(l);
	}
	pthread_mutex_unlock(&e->kc_mu);
	return yes;
}

/* Every few seconds: the group's lag on raw-logs and the size of tier 1,
 * off the pipeline thread because asking the broker may block. */
static void *monitor_main(void *arg)
{
	struct enricher *e = arg;
	const char *topics[] = { e->s->topic_raw, NULL };
	size_t h = 0, s = 0;
	long long lag;

	while (!atomic_load(&e->stop)) {
		/* Only once the group has handed out partitions: on a fresh broker an
		 * offset query racing the group's first join was seen to stall it. */
		if (assigned(e) &&
		    lp_kafka_group_lag(lp_kproducer_handle(e->kp), e->s->kafka_group, topics, 2000,
				       &lag) == 0)
			lp_series_set(e->lag, (double)lag);
		if (e->table) {
			mdtable_counts(e->table, &h, &s);
			lp_series_set(e->table_hosts, (double)h);
			lp_series_set(e->table_services, (double)s);
		}
		lp_sleep_ms(MONITOR_MS, &e->stop);
	}
	return NULL;
}

/* Has every delivery of b reported?  Does not block. */
static bool batch_acked(struct batch *b)
{
	return lp_kwait_wait(&b->w, 0) == 0;
}

/* Marks the batch's input offsets (highest + 1 per partition) as safe to
 * commit; commit_maybe() commits them.  A partition revoked
 * since is refused, which is harmless: its new owner re-reads it. */
static void batch_store(struct enricher *e, struct batch *b)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
	rd_kafka_topic_partition_t *tp;
	rd_kafka_resp_err_t err;
	size_t i;

	for (i = 0; i < b->n; i++) {
		const rd_kafka_message_t *m = b->msgs[i];

		tp = rd_kafka_topic_partition_list_find(l, rd_kafka_topic_name(m->rkt),
							m->partition);
		if (!tp)
			tp = rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(m->rkt),
							       m->partition);
		if (m->offset + 1 > tp->offset)
			tp->offset = m->offset + 1;
	}
	err = rd_kafka_offsets_store(lp_kconsumer_handle(e->kc), l);
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		e->stored_new = true;
	else
		lp_debug("offsets of %zu records not stored (%s); they may be enriched again",
			 b->n, rd_kafka_err2str(err));
	rd_kafka_topic_partition_list_destroy(l);
}

/* A commit's result: the next may go. */
static void commit_done(struct enricher *e, rd_kafka_resp_err_t err)
{
	e->commit_busy = false;
	lp_debug("offset commit: %s", rd_kafka_err2str(err));
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
		lp_warn("offset commit failed (%s); records may be enriched again",
			rd_kafka_err2str(err));
}

static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
		      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
	(void)rk;
	(void)offsets;
	commit_done(opaque, err);
}

/* Serves the commit queue, waiting up to timeout_ms for a result. */
static void commit_poll(struct enricher *e, int timeout_ms)
{
	rd_kafka_event_t *ev;

	while (e->commit_busy && (ev = rd_kafka_queue_poll(e->commit_q, timeout_ms))) {
		if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_OFFSET_COMMIT)
			commit_done(e, rd_kafka_event_error(ev));
		rd_kafka_event_destroy(ev);
	}
}

/* Commits the stored offsets, asynchronously, when some were stored since
 * the last commit, none is in flight and the interval has passed (or now
 * is true). */
static void commit_maybe(struct enricher *e, bool now)
{
	rd_kafka_resp_err_t err;

	commit_poll(e, 0);
	if (e->commit_busy || !e->stored_new || (!now && lp_now_ms() < e->commit_at))
		return;
	e->stored_new = false;
	e->commit_at = lp_now_ms() + e->s->kafka_commit_interval_ms;
	err = rd_kafka_commit_queue(lp_kconsumer_handle(e->kc), NULL, e->commit_q, on_commit, e);
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		e->commit_busy = true;
	else if (err != RD_KAFKA_RESP_ERR__NO_OFFSET)
		lp_warn("offset commit not sent (%s)", rd_kafka_err2str(err));
}

/* The last act of a stopping pipeline: commits what was stored, waiting
 * at most STOP_GRACE_MS in all (Kafka may be down). */
static void commit_final(struct enricher *e)
{
	int64_t until = lp_now_ms() + STOP_GRACE_MS;

	while (e->commit_busy && lp_now_ms() < until)
		commit_poll(e, 100);
	commit_maybe(e, true);
	while (e->commit_busy && lp_now_ms() < until)
		commit_poll(e, 100);
	if (e->commit_busy)
		lp_warn("final offset commit not confirmed; records may be enriched again");
}

/* The consumer of raw-logs in group kafka.group.  Offsets are stored by
 * the pipeline once acknowledged and committed by it asynchronously
 * (automatic store and commit stay off). */
static struct lp_kconsumer *enricher_consumer(const struct enricher_settings *s, char *err,
					      size_t errlen)
{
	char session[32], fetch_wait[32];
	const char *nodelay = s->kafka_nodelay ? "true" : "false";
	const char *cprops[] = { "auto.offset.reset", "earliest", "fetch.wait.max.ms", fetch_wait,
				 "session.timeout.ms", session, "socket.nagle.disable", nodelay,
				 NULL };
	const char *topics[] = { s->topic_raw, NULL };

	snprintf(session, sizeof(session), "%lld", s->kafka_session_timeout_ms);
	snprintf(fetch_wait, sizeof(fetch_wait), "%lld", s->kafka_fetch_wait_ms);
	return lp_kconsumer_new(s->kafka_brokers, s->kafka_group, topics, cprops, err, errlen);
}

/* A rewind failed: the consumer's position may be past records whose
 * outputs were never acknowledged, and the next acknowledged batch would
 * store offsets beyond them (lost for good).  So the consumer is closed,
 * after a last commit of what was stored (all of it acknowledged), and
 * made again: it joins the group afresh and resumes every partition it
 * gets from the committed offset, which never passes an unacknowledged
 * output.  Uncommitted work is done again: duplicates, never losses. */
static void consumer_reset(struct enricher *e)
{
	struct lp_kconsumer *kc = NULL;
	char err[256];
	unsigned seed = (unsigned)lp_now_us();
	int attempt = 0;

	lp_error("cannot rewind the consumer; leaving the group and resuming from the committed "
		 "offsets");
	lp_series_inc(e->resets);
	commit_final(e);
	pthread_mutex_lock(&e->kc_mu);
	rd_kafka_queue_destroy(e->commit_q);
	e->commit_q = NULL;
	lp_kconsumer_free(e->kc);
	e->kc = NULL;
	pthread_mutex_unlock(&e->kc_mu);
	e->commit_busy = false;
	e->stored_new = false;
	/* The settings were good a moment ago; keep trying (a stop ends it,
	 * and the pipeline then has no consumer to read from). */
	while (!(kc = enricher_consumer(e->s, err, sizeof(err))) && !e->stop) {
		lp_error("cannot make the consumer again: %s", err);
		lp_sleep_ms(lp_backoff_ms(++attempt, 100, e->s->retry_max_ms, &seed), &e->stop);
	}
	pthread_mutex_lock(&e->kc_mu);
	e->kc = kc;
	if (kc)
		e->commit_q = rd_kafka_queue_new(lp_kconsumer_handle(kc));
	pthread_mutex_unlock(&e->kc_mu);
}

/* A batch failed: nothing from it on may be stored.  The batches after it
 * are waited for (their deliveries must report before their memory goes)
 * and the consumer is rewound to the lowest offset of each partition among
 * all of them; if any seek fails, the consumer is made again instead. */
static void ring_fail(struct enricher *e, struct batch *ring, size_t depth, size_t head,
		      size_t count)
{
	bool rewound = true;
	size_t k;

	lp_breaker_record(e->kafka_br, false, 0);
	lp_series_inc(e->retries);
	for (k = 1; k < count; k++)
		batch_finish(e, &ring[(head + k) % depth]);
	/* Newest first, so that for a partition in several batches the
	 * oldest batch's (lowest) offset is the last seek and wins. */
	for (k = count; k-- > 0;) {
		struct batch *r = &ring[(head + k) % depth];

		if (lp_kconsumer_rewind(e->kc, r->msgs, r->n) < 0)
			rewound = false;
	}
	for (k = 0; k < count; k++)
		batch_drop(&ring[(head + k) % depth]);
	if (!rewound)
		consumer_reset(e);
}

/*
 * The pipeline keeps up to batch.in_flight batches in a ring.  New records
 * are gathered and sent whenever there is room, so an event never waits
 * for an earlier batch's acknowledgement; the oldest batch is retired as
 * soon as it is acknowledged (and waited for only when the ring is full or
 * the pipeline stops).  Batches are retired in order, and a batch's offsets
 * are stored only when it and every batch before it were acknowledged.
 */
static void *pipeline_main(void *arg)
{
	struct enricher *e = arg;
	size_t max = (size_t)e->s->batch_max_events, depth = (size_t)e->s->batch_in_flight;
	size_t head = 0, count = 0, pending = 0, i;
	struct batch *ring = lp_xcalloc(depth, sizeof(*ring));
	unsigned seed = (unsigned)lp_now_us();
	double dt;
	int attempt = 0;

	/* Each batch's array starts small and grows with the batches it
	 * holds, so a deep ring costs memory only when it is used. */
	for (i = 0; i < depth; i++) {
		ring[i].cap = max < FIRST_CAP ? max : FIRST_CAP;
		ring[i].msgs = lp_xcalloc(ring[i].cap, sizeof(*ring[i].msgs));
		ring[i].res = lp_xcalloc(ring[i].cap, sizeof(*ring[i].res));
	}
	if (e->table && e->s->table_load_wait_ms > 0 &&
	    !mdtable_wait_loaded(e->table, (int)e->s->table_load_wait_ms, &e->stop))
		lp_warn("tier 1 not loaded after %lld ms; enriching from tiers 2 and 3 meanwhile",
			e->s->table_load_wait_ms);

	while (!atomic_load(&e->stop) || count > 0) {
		struct batch *b;

		/* Retire the oldest batch once acknowledged; wait for it only
		 * when there is no room for another or when stopping. */
		if (count > 0 && (count == depth || pending >= IN_FLIGHT_MAX ||
				  atomic_load(&e->stop) || batch_acked(&ring[head]))) {
			b = &ring[head];
			if (batch_finish(e, b) < 0 || batch_refused(e, b) < 0) {
				ring_fail(e, ring, depth, head, count);
				count = 0;
				pending = 0;
				attempt++;
				lp_sleep_ms(lp_backoff_ms(attempt, 100, e->s->retry_max_ms, &seed),
					    &e->stop);
				continue;
			}
			lp_breaker_record(e->kafka_br, true, 0);
			batch_store(e, b);
			dt = (double)(lp_now_us() - b->t0_us) / 1e6;
			for (i = 0; i < b->n; i++)
				lp_series_observe(e->batch_seconds, dt);
			pending -= b->n;
			batch_drop(b);
			head = (head + 1) % depth;
			count--;
			attempt = 0;
			continue;
		}
		commit_maybe(e, false);
		b = &ring[(head + count) % depth];
		gather(e, b, max < IN_FLIGHT_MAX - pending ? max : IN_FLIGHT_MAX - pending,
		       count ? BUSY_POLL_MS : IDLE_POLL_MS);
		publish_coverage(e);
		if (b->n > 0) {
			count++;
			pending += b->n;
		} else {
			lp_kwait_release(&b->w);
		}
	}
	commit_final(e);
	for (i = 0; i < depth; i++) {
		free(ring[i].msgs);
		free(ring[i].res);
	}
	free(ring);
	return NULL;
}

/* ---- health ---------------------------------------------------------------------- */

/* Ready while the broker answers metadata and output batches succeed. */
static bool kafka_healthy(void *ud, char *detail, size_t len)
{
	struct enricher *e = ud;
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t err;

	err = rd_kafka_metadata(lp_kproducer_handle(e->kp), 0, NULL, &md, 1000);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(detail, len, "metadata request failed: %s", rd_kafka_err2str(err));
		return false;
	}
	rd_kafka_metadata_destroy(md);
	snprintf(detail, len, "%d messages in flight", lp_kproducer_outq(e->kp));
	return lp_breaker_state(e->kafka_br) != LP_BREAKER_OPEN;
}

static bool table_healthy(void *ud, char *detail, size_t len)
{
	struct enricher *e = ud;

	return mdtable_feed_healthy(e->table, detail, len);
}

static bool redis_healthy(void *ud, char *detail, size_t len)
{
	struct enricher *e = ud;

	return lookup_probe(e->lookup, TIER_REDIS, detail, len) == 0;
}

static bool metadata_healthy(void *ud, char *detail, size_t len)
{
	struct enricher *e = ud;

	return lookup_probe(e->lookup, TIER_METADATA, detail, len) == 0;
}

/* ---- start and stop -------------------------------------------------------------- */

static void on_table_change(void *ud, const char *key)
{
	struct enricher *e = ud;

	if (e->lookup)
		lookup_invalidate(e->lookup, key);
}

static void register_metrics(struct enricher *e)
{
	struct lp_registry *reg = lp_registry_default();
	struct lp_metric *lk, *tr;
	int k, st;

	e->attempts = lp_counter(reg, "enrichment_attempts_total", "Valid events the enricher tried to enrich");
	e->successes = lp_counter(reg, "enrichment_successes_total", "Events enriched completely (every lookup answered)");
	e->partials = lp_counter(reg, "enrichment_partial_total", "Events enriched partially (a lookup unanswered)");
	e->dead = lp_counter(reg, "enrichment_dead_lettered_total", "Records sent to the dead-letter topic: invalid, or their output refused for good");
	e->refused = lp_counter(reg, "enrichment_outputs_refused_total", "Outputs Kafka refused for good (too large once enriched); their records were dead-lettered");
	e->truncated = lp_counter(reg, "enrichment_dead_letters_truncated_total", "Dead letters sent cut to their first 64 KiB because the whole record was too large for the dead-letter topic");
	e->dlq_dropped = lp_counter(reg, "enrichment_dead_letters_dropped_total", "Records skipped because the dead-letter topic refused even their cut copy");
	e->resets = lp_counter(reg, "enrichment_consumer_resets_total", "Times the consumer was made again because a rewind after a failed batch failed");
	e->retries = lp_counter(reg, "enrichment_batch_retries_total", "Batches retried after an output was not acknowledged");
	e->sent = lp_counter(reg, "kafka_messages_sent_total", "Messages acknowledged by Kafka");
	e->lag = lp_gauge(reg, "kafka_consumer_lag", "Records of raw-logs not yet committed by the enricher group");
	e->latency = lp_histogram(reg, "enrichment_latency_seconds", "Seconds spent looking up and merging metadata, per event",
				  latency_buckets, LP_ARRAY_SIZE(latency_buckets));
	e->batch_seconds = lp_histogram(reg, "enrichment_batch_seconds",
					"Seconds from gathering a batch to its outputs being acknowledged, per event",
					latency_buckets, LP_ARRAY_SIZE(latency_buckets));
	e->coverage_ratio = lp_gauge(reg, "enrichment_coverage_ratio", "Share of the last 1024 events enriched completely");
	tr = lp_metric_new(reg, LP_GAUGE, "enrichment_table_records", "Records held by the tier-1 table", "kind", NULL, 0);
	e->table_hosts = lp_metric_series(tr, "host");
	e->table_services = lp_metric_series(tr, "service");
	lk = lp_metric_new(reg, LP_COUNTER, "enrichment_lookups_total", "Metadata lookups by verdict", "lookup,result", NULL, 0);
	for (k = MD_HOST; k <= MD_SERVICE; k++)
		for (st = LOOKUP_FOUND; st <= LOOKUP_METADATA_UNAVAILABLE; st++)
			e->lookups[k][st] = lp_metric_series(lk, k == MD_HOST ? "host" : "service",
							     lookup_reason(st));
}

struct enricher *enricher_start(const struct enricher_settings *s, char *err, size_t errlen)
{
	struct enricher *e = lp_xcalloc(1, sizeof(*e));
	struct lookup_opts lo = { 0 };
	struct lp_http_opts ho = { 0 };
	char timeout[32], linger[32];
	const char *nodelay = s->kafka_nodelay ? "true" : "false";
	const char *pprops[] = { "message.timeout.ms", timeout, "linger.ms", linger,
				 "socket.nagle.disable", nodelay, NULL };
	int rc;

	e->s = s;
	pthread_mutex_init(&e->kc_mu, NULL);
	lp_buf_init(&e->en_buf, 1024);
	lp_buf_init(&e->out_buf, 4096);
	register_metrics(e);
	e->kafka_br = lp_breaker_new("kafka", NULL);

	if (s->table_enabled) {
		e->table_br = lp_breaker_new("metadata-changes", NULL);
		e->table = mdtable_new(on_table_change, e);
	}
	lo.table = e->table;
	lo.redis_url = s->redis_url;
	lo.redis_timeout_ms = (int)s->redis_timeout_ms;
	lo.metadata_url = s->metadata_url;
	lo.metadata_timeout_ms = (int)s->metadata_timeout_ms;
	lo.negative_ttl_ms = s->cache_negative_ttl_ms;
	lo.positive_ttl_ms = s->cache_positive_ttl_ms;
	e->lookup = lookup_new(&lo, err, errlen);
	if (!e->lookup)
		goto fail;
	if (e->table &&
	    mdtable_start_feed(e->table, s->kafka_brokers, s->topic_metadata, e->table_br, err,
			       errlen) < 0)
		goto fail;

	snprintf(timeout, sizeof(timeout), "%lld", s->kafka_timeout_ms);
	snprintf(linger, sizeof(linger), "%lld", s->kafka_linger_ms);
	e->kp = lp_kproducer_new(s->kafka_brokers, pprops, err, errlen);
	if (!e->kp)
		goto fail;
	e->kc = enricher_consumer(s, err, errlen);
	if (!e->kc)
		goto fail;
	e->commit_q = rd_kafka_queue_new(lp_kconsumer_handle(e->kc));

	ho.listen = s->http_listen;
	ho.threads = (int)s->http_threads;
	ho.front = s->http_front;
	ho.front_loops = (int)s->http_loops;
	ho.service = "enricher";
	e->http = lp_http_server_new(&ho, err, errlen);
	if (!e->http)
		goto fail;
	lp_http_health(e->http, "kafka", true, kafka_healthy, e, e->kafka_br);
	if (e->table)
		lp_http_health(e->http, "metadata-changes", false, table_healthy, e, e->table_br);
	if (s->redis_url && *s->redis_url)
		lp_http_health(e->http, "redis", false, redis_healthy, e,
			       lookup_breaker(e->lookup, TIER_REDIS));
	if (s->metadata_url && *s->metadata_url)
		lp_http_health(e->http, "metadata-svc", false, metadata_healthy, e,
			       lookup_breaker(e->lookup, TIER_METADATA));
	if (lp_http_start(e->http, err, errlen) < 0)
		goto fail;

	rc = pthread_create(&e->thread, NULL, pipeline_main, e);
	if (rc != 0) {
		snprintf(err, errlen, "cannot start the pipeline thread: %s", strerror(rc));
		goto fail;
	}
	e->thread_started = true;
	rc = pthread_create(&e->monitor, NULL, monitor_main, e);
	if (rc != 0) {
		snprintf(err, errlen, "cannot start the monitor thread: %s", strerror(rc));
		goto fail;
	}
	e->monitor_started = true;
	return e;
fail:
	enricher_stop(e);
	return NULL;
}

void enricher_stop(struct enricher *e)
{
	int left;

	if (!e)
		return;
	atomic_store(&e->stop, true);
	if (e->thread_started)
		pthread_join(e->thread, NULL);
	if (e->monitor_started)
		pthread_join(e->monitor, NULL);
	lp_http_server_free(e->http);
	if (e->commit_q)
		rd_kafka_queue_destroy(e->commit_q);
	/* The pipeline committed what was acknowledged; leave the group now so
	 * that the partitions move to the other enrichers at once. */
	lp_kconsumer_free(e->kc);
	if (e->kp) {
		left = lp_kproducer_free(e->kp, 5000);
		if (left > 0)
			lp_error("%d messages were not delivered at shutdown", left);
	}
	mdtable_free(e->table);
	lookup_free(e->lookup);
	lp_breaker_free(e->table_br);
	lp_breaker_free(e->kafka_br);
	lp_buf_release(&e->en_buf);
	lp_buf_release(&e->out_buf);
	pthread_mutex_destroy(&e->kc_mu);
	free(e);
}
