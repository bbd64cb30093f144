/* producer.c - request handling of the ingest service.
 *
 * POST /api/logs        one event  -> 202 {"status":"success","id":…}
 * POST /api/logs/batch  JSON array or NDJSON -> a result per item, in
 *                       request order; 202 all accepted, 207 some, 400 none.
 *
 * Every accepted event is normalised and serialised once: by the one-pass
 * scanner lp_event_scan_input when it is sure of the event (the common
 * case: it writes exactly the bytes of the full path, no JSON tree), else
 * by lp_event_normalize and json_dumps, which also word every refusal.  It is then made durable in one of two ways before the 202:
 *
 *   Kafka   produced to the raw topic keyed by its service; the request
 *           is answered from librdkafka's delivery-report thread once the
 *           last of its events is acknowledged (acks=all, idempotent
 *           producer).
 *   spool   appended to the disk spool (spool.c) and fdatasync'd by the
 *           spool writer thread, which appends what every request queued
 *           meanwhile with one sync.
 *
 * No thread waits for either: producer_submit (producer.h) validates a
 * request and hands its events on; the thread that decides the last
 * event's fate (the caller's for a 4xx, the delivery-report thread, the
 * spool writer) builds the reply and calls the submitter's done.  The
 * HTTP routes are async (lp_http_route_async): the handler defers the
 * request and submits, and done writes the reply into it and answers it,
 * which wakes the event front's loop that sends it (see "the HTTP routes"
 * below).
 *
 * The spool is used while Kafka is unreachable: when the "kafka" breaker
 * is open, for the events whose delivery failed or timed out (they may be
 * in Kafka after all: a duplicate, which the consumer absorbs by id), and
 * for everything while the spool still holds events ("spool mode"), so
 * that events reach Kafka in the order they were accepted.  A drain thread
 * produces the spooled events in order once the breaker lets calls
 * through, waits for their acknowledgements and commits the spool's
 * position; it leaves spool mode when a round finds the spool caught up.
 * Requests therefore never wait for a broker that is down (the breaker
 * and the drain probe it), and are refused with 503 + Retry-After only
 * when the spool cannot take them either (full, or an I/O error): never a
 * 202 that could be lost.  With spool.enabled = false an event Kafka does
 * not acknowledge is answered 503.
 *
 * Events Kafka refuses for good (larger than message.max.bytes) are
 * answered 413 before anything is written; if the drain still meets such
 * a refusal it sends the event to the DLQ topic with the reason.
 *
 * Shutdown (producer_stop): new requests get 503 and readiness goes down,
 * requests in flight finish and get their answers (spooling rather than
 * waiting for Kafka; a watchdog purges Kafka's queue if deliveries would
 * hold the process past its 10 s budget), then the HTTP server stops; the
 * drain goes on while Kafka takes events, until the spool is empty or the
 * budget is spent, then Kafka is flushed and the spool closed.  The server
 * is stopped only once nothing is in flight because CivetWeb stops writing
 * responses as soon as it is told to stop. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "logpipe/breaker.h"
#include "logpipe/buf.h"
#include "logpipe/event.h"
#include "logpipe/http.h"
#include "logpipe/kafka.h"
#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/util.h"
#include "otlp.h"
#include "producer.h"
#include "spool.h"
#include "syslog.h"

#include "logpipe/banned.h"

/* The drain reads at most this many bytes per round. */
#define DRAIN_MAX_BYTES (8u << 20)
/* Shutdown budget: purge Kafka's queue after this, flush until the end. */
/* Shutdown budget (SIGTERM to exit within 10 s): requests in flight get
 * until STOP_PURGE_MS, the spool's drain until STOP_DRAIN_MS as long as it
 * makes progress (Kafka's queue is purged at each deadline if something
 * still waits on it), the final flush until STOP_BUDGET_MS. */
#define STOP_PURGE_MS 4000
#define STOP_DRAIN_MS 8000
#define STOP_STALL_MS 1500 /* the drain gave up on if it moved nothing for this long */
#define STOP_BUDGET_MS 9000

#define OPT(key, type, def, field, help, lo, hi) \
	{ key, type, def, offsetof(struct producer_settings, field), help, lo, hi }

const struct lp_cfg_opt producer_options[] = {
	OPT("http.listen", LP_CFG_STR, "8081", http_listen, "address:port or port to serve HTTP on", 0, 0),
	OPT("http.threads", LP_CFG_INT, "32", http_threads, "HTTP worker threads", 1, 1024),
	OPT("http.front", LP_CFG_STR, "events", http_front, "events: an event loop front takes the connections (slow clients hold no thread) and passes requests to CivetWeb behind it; civetweb: CivetWeb threads serve everything", 0, 0),
	OPT("http.event_loops", LP_CFG_INT, "0", http_loops, "event loop threads of the events front; 0: one per CPU, at most 8", 0, 8),
	OPT("http.max_body", LP_CFG_INT, "1048576", http_max_body, "largest request body in bytes (413 above)", 1024, 67108864),
	OPT("log.level", LP_CFG_STR, "info", log_level, "debug, info, warn or error", 0, 0),
	OPT("kafka.brokers", LP_CFG_STR, "127.0.0.1:9092", kafka_brokers, "Kafka bootstrap servers", 0, 0),
	OPT("topics.raw", LP_CFG_STR, "raw-logs", topic_raw, "topic accepted events are written to", 0, 0),
	OPT("topics.dlq", LP_CFG_STR, "logs-dlq", topic_dlq, "where spooled events Kafka refuses for good, and syslog messages refused as malformed, go, with the reason in a header", 0, 0),
	OPT("kafka.timeout_ms", LP_CFG_INT, "5000", kafka_timeout_ms, "delivery timeout before an event is spooled (or answered 503)", 100, 600000),
	OPT("kafka.linger_ms", LP_CFG_DOUBLE, "1", kafka_linger_ms, "librdkafka linger.ms, 0..1000, fractions allowed (0.5): how long a batch waits for more events (latency against batching; measured in docs/benchmarks.md)", 0, 0),
	OPT("kafka.batch_size", LP_CFG_INT, "1000000", kafka_batch_size, "librdkafka batch.size: most bytes in one partition's batch", 1024, 100000000),
	OPT("kafka.max_in_flight", LP_CFG_INT, "5", kafka_max_in_flight, "librdkafka max.in.flight.requests.per.connection (the idempotent producer allows at most 5)", 1, 5),
	OPT("kafka.nodelay", LP_CFG_BOOL, "false", kafka_nodelay, "disable Nagle's algorithm on the broker connections (socket.nagle.disable)", 0, 0),
	OPT("kafka.gate", LP_CFG_BOOL, "true", kafka_gate, "single events: while some await Kafka's answer, hold new ones and hand them to Kafka together at the last answer, through a second Kafka client with linger.ms 0 (batches and the spool keep the first and kafka.linger_ms): lower latency at low concurrency, CPU per event measured both higher and lower (docs/benchmarks.md)", 0, 0),
	OPT("limits.max_message", LP_CFG_INT, "65536", max_message, "largest `message` in bytes (413 above)", 1, 16777216),
	OPT("limits.max_attributes", LP_CFG_INT, "64", max_attributes, "most keys under `attributes` (413 above)", 1, 10000),
	OPT("limits.batch_max_items", LP_CFG_INT, "1000", batch_max_items, "most events in one batch request (413 above)", 1, 100000),
	OPT("limits.otlp_max_records", LP_CFG_INT, "10000", otlp_max_records, "most log records in one OTLP export request to /v1/logs (413 above)", 1, 1000000),
	OPT("spool.enabled", LP_CFG_BOOL, "true", spool_enabled, "spool events to disk while Kafka is unreachable (false: answer 503)", 0, 0),
	OPT("spool.dir", LP_CFG_STR, "spool", spool_dir, "spool directory, relative to the working directory (containers: /var/lib/logpipe/spool)", 0, 0),
	OPT("spool.max_bytes", LP_CFG_INT, "1073741824", spool_max_bytes, "bound on the spool's files in bytes (503 with Retry-After above)", 65536, 1LL << 50),
	OPT("spool.segment_bytes", LP_CFG_INT, "67108864", spool_segment_bytes, "size of one spool segment file (at most spool.max_bytes)", 4096, 1LL << 32),
	OPT("spool.drain_batch", LP_CFG_INT, "2000", spool_drain_batch, "spooled events produced per drain round", 1, 100000),
	OPT("syslog.listen", LP_CFG_STR, "", syslog_listen, "address:port to receive syslog (RFC 5424 / 3164) on over TCP, empty: off (docs/syslog.md)", 0, 0),
	OPT("syslog.udp", LP_CFG_BOOL, "true", syslog_udp, "also receive syslog datagrams on the same address and port over UDP", 0, 0),
	OPT("syslog.max_message", LP_CFG_INT, "65536", syslog_max_message, "largest syslog message in bytes; larger ones are dead-lettered", 480, 16777216),
	OPT("syslog.max_connections", LP_CFG_INT, "256", syslog_max_connections, "syslog TCP connections at once; more are closed at accept", 1, 65536),
	OPT("syslog.idle_timeout_ms", LP_CFG_INT, "300000", syslog_idle_timeout_ms, "a syslog TCP connection silent this long is closed", 100, 86400000),
	OPT("syslog.message_timeout_ms", LP_CFG_INT, "10000", syslog_message_timeout_ms, "a syslog TCP connection inside one message this long is closed (the part dead-lettered)", 100, 86400000),
	LP_CFG_END,
};

struct delivery;

struct producer {
	const struct producer_settings *s; /* settings, owned by main */
	struct lp_event_limits limits;     /* event validation limits */
	struct lp_kproducer *kp;           /* idempotent Kafka producer */
	struct lp_kproducer *kp_gate;      /* kafka.gate: the gated events' own, linger.ms 0 */
	struct lp_breaker *breaker;        /* trips on failed deliveries */
	struct lp_http_server *http;       /* the HTTP front */
	struct spool *spool;               /* disk spool, NULL when disabled */
	struct syslog_rx *syslog;          /* syslog receiver, NULL when off */
	size_t max_msg;                    /* librdkafka's message.max.bytes */
	atomic_int spool_mode;             /* new events go to the spool */
	atomic_int stopping;               /* producer_stop has begun */
	atomic_int drain_stop;             /* the drain thread must end */
	atomic_int inflight;               /* requests being handled */
	pthread_t drainer;                 /* drains the spool into Kafka */
	bool drainer_started;              /* drainer was created (join it) */
	pthread_t spooler;                 /* writes deliveries to the spool */
	bool spooler_started;              /* spooler was created (join it) */
	pthread_mutex_t sq_mu;             /* guards the spooler's queue and sq_stop */
	pthread_cond_t sq_cv;              /* signalled when one is queued or sq_stop set */
	struct delivery *sq_head, *sq_tail; /* deliveries waiting for the spooler */
	bool sq_stop;                      /* the spooler ends once its queue is empty */
	struct lp_series *received;        /* log_events_received_total */
	struct lp_series *rejected;        /* events refused as invalid */
	struct lp_series *sent;            /* kafka_messages_sent_total */
	struct lp_series *errors;          /* log_events_errors_total (Kafka failures) */
	struct lp_series *latency;         /* log_event_processing_time */
	struct lp_series *dead;            /* logpipe_spool_dead_lettered_total */
	struct lp_series *dlq_failed;      /* syslog dead letters Kafka did not take */
	pthread_mutex_t gate_mu;           /* guards the gate's fields */
	long gate_out;                     /* events handed to Kafka, not reported yet */
	struct delivery *gate_head, *gate_tail; /* deliveries held by the gate */
};

/* Where an event ended up. */
enum outcome {
	OUT_PENDING = 0, /* not decided yet */
	OUT_KAFKA,       /* acknowledged by Kafka */
	OUT_SPOOLED,     /* durable in the spool */
	OUT_FAILED,      /* refused: status, code and why say how */
};

/* One event on its way to durability. */
struct outgoing {
	json_t *ev;               /* normalised event (owned), NULL when scanned */
	char *text;               /* its serialisation (owned) */
	char id[37];              /* its id */
	size_t len;               /* bytes of text */
	const char *key;          /* the service, borrowed from ev */
	size_t keylen;            /* bytes of key */
	rd_kafka_resp_err_t res;  /* Kafka delivery result, if produced */
	enum outcome outcome;     /* where it ended up */
	int status;               /* OUT_FAILED: 413 or 503 */
	const char *code;         /* OUT_FAILED: error code */
	const char *why;          /* OUT_FAILED: message */
	char trace[33], span[17]; /* a scanned event's trace context, "" if none */
	size_t item;              /* its index in the request (batch, OTLP) */
	struct lp_kref kref;      /* its Kafka completion (lp_kbatch_send_ref) */
	struct delivery *d;       /* the delivery it is part of, once produced */
};

static void outgoing_release(struct outgoing *o)
{
	json_decref(o->ev);
	free(o->text);
	o->ev = NULL;
	o->text = NULL;
}

static void fail(struct outgoing *o, int status, const char *code, const char *why)
{
	o->outcome = OUT_FAILED;
	o->status = status;
	o->code = code;
	o->why = why;
}

/* Errors no retry can cure: the message itself is refused. */
static bool kafka_err_permanent(rd_kafka_resp_err_t e)
{
	switch (e) {
	case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_INVALID_MSG:
	case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
	case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_INVALID_RECORD:
		return true;
	default:
		return false;
	}
}

static long retry_after_secs(struct producer *p)
{
	int64_t ms = lp_breaker_retry_after_ms(p->breaker);
	long secs = (long)(ms / 1000) + 1;

	return secs < 1 ? 1 : secs;
}

static const char *retry_after_header(struct producer *p, char *buf, size_t len)
{
	snprintf(buf, len, "Retry-After: %ld\r\n", retry_after_secs(p));
	return buf;
}

/* ---- trace context ------------------------------------------------------------
 *
 * A W3C traceparent header (the gateway always sends one: the caller's
 * trace, or a new one) gives an event without trace context of its own its
 * trace_id and span_id; and every event with a trace_id carries it to Kafka
 * as record headers (trace_id, span_id, and traceparent when both are
 * known), which the enricher and the consumer's DLQ pass on. */

/* Sets ev's trace_id and span_id from tp, a traceparent that passed
 * lp_traceparent_ok (checked once per request, not per event) or NULL, when
 * ev has no trace_id of its own. */
static void trace_from_header(json_t *ev, const char *tp)
{
	if (!ev || !tp || json_object_get(ev, "trace_id"))
		return;
	json_object_set_new(ev, "trace_id", json_stringn(tp + 3, 32));
	if (!json_object_get(ev, "span_id"))
		json_object_set_new(ev, "span_id", json_stringn(tp + 36, 16));
}

/*
 * trace_from_header for a scanned event: the scanner leaves every event
 * with trace fields of its own to the tree, so both ids are added, after
 * the last member as json_object_set_new would put them: the text stays
 * byte for byte what the tree path writes.
 */
static void trace_from_header_text(struct outgoing *o, const char *tp)
{
	static const char a[] = ",\"trace_id\":\"", b[] = "\",\"span_id\":\"", c[] = "\"}";
	size_t add = sizeof(a) - 1 + 32 + sizeof(b) - 1 + 16 + sizeof(c) - 1;
	char *w;

	if (!tp || o->len < 2 || o->text[o->len - 1] != '}')
		return;
	memcpy(o->trace, tp + 3, 32);
	o->trace[32] = '\0';
	memcpy(o->span, tp + 36, 16);
	o->span[16] = '\0';
	/* The Kafka key points into the text (the service's value): keep it
	 * pointing there when the text moves. */
	uintptr_t k = (uintptr_t)o->key, t = (uintptr_t)o->text;
	bool key_in = k >= t && k < t + o->len;
	size_t koff = key_in ? (size_t)(k - t) : 0;

	o->text = lp_xrealloc(o->text, o->len + add);
	if (key_in)
		o->key = o->text + koff;
	/* Over the closing brace; pieces, not snprintf (per event). */
	w = o->text + o->len - 1;
	memcpy(w, a, sizeof(a) - 1);
	w += sizeof(a) - 1;
	memcpy(w, o->trace, 32);
	w += 32;
	memcpy(w, b, sizeof(b) - 1);
	w += sizeof(b) - 1;
	memcpy(w, o->span, 16);
	w += 16;
	memcpy(w, c, sizeof(c)); /* with the NUL */
	o->len += add - 1;
}

/* The Kafka headers of a trace context, or NULL when there is none. */
static rd_kafka_headers_t *trace_headers(const char *trace, const char *span)
{
	rd_kafka_headers_t *h;
	char tp[56];

	if (!trace)
		return NULL;
	h = rd_kafka_headers_new(3);
	rd_kafka_header_add(h, "trace_id", 8, trace, -1);
	if (span) {
		size_t tn = strlen(trace), sn = strlen(span);

		rd_kafka_header_add(h, "span_id", 7, span, (ssize_t)sn);
		/* "00-<trace>-<span>-01", without snprintf (per event). */
		if (tn + sn + 7 <= sizeof(tp)) {
			memcpy(tp, "00-", 3);
			memcpy(tp + 3, trace, tn);
			tp[3 + tn] = '-';
			memcpy(tp + 4 + tn, span, sn);
			memcpy(tp + 4 + tn + sn, "-01", 3);
			rd_kafka_header_add(h, "traceparent", 11, tp, (ssize_t)(tn + sn + 7));
		} else { /* ids of unusual length (the tree path's): cut as before */
			snprintf(tp, sizeof(tp), "00-%s-%s-01", trace, span);
			rd_kafka_header_add(h, "traceparent", 11, tp, -1);
		}
	}
	return h;
}

/* The most headers an event's Kafka record carries (trace_headers). */
#define SPOOL_MAX_HDRS 3

/* Fills rec with o's key, value and the Kafka headers a direct produce
 * would give it (in hdrs, SPOOL_MAX_HDRS entries, pointing into *kh, which
 * the caller destroys after the append), so the drain sends the same
 * record. */
static void spool_rec_fill(const struct outgoing *o, struct spool_rec *rec,
			   struct spool_hdr *hdrs, rd_kafka_headers_t **kh)
{
	const char *name;
	const void *val;
	size_t size, j;

	rec->key = o->key;
	rec->keylen = o->keylen;
	rec->val = o->text;
	rec->vallen = o->len;
	*kh = o->ev ? trace_headers(json_string_value(json_object_get(o->ev, "trace_id")),
				    json_string_value(json_object_get(o->ev, "span_id")))
		: o->trace[0] ? trace_headers(o->trace, o->span[0] ? o->span : NULL)
			      : NULL;
	rec->hdrs = hdrs;
	for (j = 0; *kh && j < SPOOL_MAX_HDRS &&
		    rd_kafka_header_get_all(*kh, j, &name, &val, &size) == 0;
	     j++)
		hdrs[j] = (struct spool_hdr){
			.name = name, .namelen = strlen(name), .val = val, .vallen = size
		};
	rec->nhdrs = j;
}

static void spool_kh_free(rd_kafka_headers_t **kh, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (kh[i])
			rd_kafka_headers_destroy(kh[i]);
	free(kh);
}

/* Appends the given events to the spool (spool_rec_fill); marks each
 * spooled or failed. */
static void spool_events(struct producer *p, struct outgoing *out, const size_t *idx, size_t n)
{
	struct spool_rec *recs;
	struct spool_hdr *hdrs;
	rd_kafka_headers_t **kh;
	size_t i;
	int rc;

	if (n == 0)
		return;
	recs = lp_xcalloc(n, sizeof(*recs));
	hdrs = lp_xcalloc(n * SPOOL_MAX_HDRS, sizeof(*hdrs));
	kh = lp_xcalloc(n, sizeof(*kh));
	for (i = 0; i < n; i++)
		spool_rec_fill(&out[idx[i]], &recs[i], hdrs + i * SPOOL_MAX_HDRS, &kh[i]);
	/* Before the append: from now on the spool's order is the order. */
	atomic_store(&p->spool_mode, 1);
	rc = spool_append(p->spool, recs, n);
	spool_kh_free(kh, n);
	free(hdrs);
	free(recs);
	for (i = 0; i < n; i++) {
		struct outgoing *o = &out[idx[i]];

		if (rc == 0)
			o->outcome = OUT_SPOOLED;
		else if (rc == -ENOSPC)
			fail(o, 503, "spool_full",
			     "kafka is unreachable and the spool is full; retry later");
		else if (rc == -EMSGSIZE)
			fail(o, 413, "too_large", "the event is too large to spool");
		else
			fail(o, 503, "spool_unavailable",
			     "kafka is unreachable and the spool cannot be written; retry later");
	}
}

/* ---- delivery ----------------------------------------------------------------
 *
 * A delivery is one group of events (a request's, or a syslog batch's) on
 * its way to durability, decided without a thread waiting for it:
 *
 *   deliver_start      serialises, refuses what Kafka would refuse (413),
 *                      then produces the rest (each message's completion is
 *                      on_delivered) or, in spool mode, hands them to the
 *                      spool writer;
 *   on_delivered       librdkafka's delivery-report thread; the last report
 *                      of the group runs delivery_reported;
 *   delivery_reported  records the outcome (breaker, counters) and hands the
 *                      events Kafka did not take (retriably) to the spool
 *                      writer, or finishes;
 *   spooler_main       the spool writer thread: appends and fsyncs, then
 *                      finishes.
 *
 * Why a spool writer thread of its own: an fdatasync takes milliseconds and
 * the delivery-report thread serves every message of the process (the
 * spool drain's, syslog's, every request's), so syncing there would hold
 * all of them back; the drain thread waits on Kafka for seconds while
 * Kafka is down, just when the spool is written.  The writer takes every
 * delivery queued since its last round and appends them with one
 * spool_append (one fdatasync for all: the group commit that concurrent
 * appends from request threads used to share), falling back to one append
 * per delivery when the whole does not fit (each stays all or nothing, as
 * before).  Its queue holds deliveries whose events are already in memory,
 * so it is bounded by the requests in flight.
 *
 * d->finish runs exactly once, when every event has its outcome, on the
 * thread that decided the last of them. */

struct delivery {
	struct producer *p;          /* whose Kafka and spool */
	struct outgoing *out;        /* the events (owned by the delivery's owner) */
	size_t n;                    /* events in out */
	size_t *idx;                 /* events produced, then those for the spool */
	size_t m;                    /* entries of idx in use */
	atomic_size_t pending;       /* delivery reports due, +1 while still sending */
	int64_t t0_ms;               /* when produced (the breaker's call duration) */
	void (*finish)(struct delivery *d); /* every outcome decided */
	struct delivery *next;       /* the spool writer's or the gate's queue */
	bool gated;                  /* counted by the gate (kafka.gate, one event) */
};

static void delivery_finish(struct delivery *d)
{
	free(d->idx);
	d->idx = NULL;
	d->finish(d);
}

/* Appends d to the queue from *head to *tail (linked by next). */
static void queue_append(struct delivery **head, struct delivery **tail, struct delivery *d)
{
	d->next = NULL;
	if (*tail)
		(*tail)->next = d;
	else
		*head = d;
	*tail = d;
}

/* Events of d->idx[0..m) could not go to Kafka: spool them, or refuse them
 * without a spool. */
static void spool_or_fail(struct delivery *d)
{
	struct producer *p = d->p;
	size_t i;

	if (!p->spool) {
		for (i = 0; i < d->m; i++)
			fail(&d->out[d->idx[i]], 503, "kafka_unavailable",
			     "the event could not be made durable; retry later");
		delivery_finish(d);
		return;
	}
	/* From now on the spool's order is the order (set before the append,
	 * as spool_events does). */
	atomic_store(&p->spool_mode, 1);
	pthread_mutex_lock(&p->sq_mu);
	queue_append(&p->sq_head, &p->sq_tail, d);
	pthread_cond_signal(&p->sq_cv);
	pthread_mutex_unlock(&p->sq_mu);
}

/* Every delivery report of d is in: decide each event's outcome. */
static void delivery_reported(struct delivery *d)
{
	struct producer *p = d->p;
	size_t i, ok = 0, nspool = 0;
	bool retriable = false;

	for (i = 0; i < d->m; i++) {
		struct outgoing *o = &d->out[d->idx[i]];

		if (o->res == RD_KAFKA_RESP_ERR_NO_ERROR) {
			o->outcome = OUT_KAFKA;
			ok++;
		} else if (kafka_err_permanent(o->res)) {
			fail(o, o->res == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? 413 : 503,
			     o->res == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? "too_large"
									    : "kafka_refused",
			     rd_kafka_err2str(o->res));
		} else {
			retriable = true;
			d->idx[nspool++] = d->idx[i]; /* kept in order for the spool */
		}
	}
	/* Refusals of one message say nothing about the broker's health. */
	lp_breaker_record(p->breaker, !retriable, lp_now_ms() - d->t0_ms);
	lp_series_add(p->sent, (double)ok);
	lp_series_add(p->errors, (double)(d->m - ok));
	d->m = nspool;
	if (nspool == 0)
		delivery_finish(d);
	else
		spool_or_fail(d);
}

static void gate_done(struct producer *p, long n);

/* lp_kbatch_send_ref's completion: opaque is the event. */
static void on_delivered(void *opaque, rd_kafka_resp_err_t err, int32_t partition, int64_t offset)
{
	struct outgoing *o = opaque;
	struct delivery *d = o->d;
	struct producer *p = d->p;
	bool gated = d->gated;

	(void)partition;
	(void)offset;
	o->res = err;
	if (gated)
		gate_done(p, 1);
	if (atomic_fetch_sub(&d->pending, 1) == 1)
		delivery_reported(d);
}

static void deliver_kafka(struct delivery *d, int block_ms);
static void deliver_enqueue(struct lp_kbatch *kb, struct delivery *d, int block_ms);
static void deliver_close(struct delivery *d);
static bool deliver_direct(struct producer *p);

/*
 * Makes d's events durable: Kafka when it is up, the spool when not.  Sets
 * each event's outcome (events already failed are skipped), then calls
 * d->finish, from this thread or a later one.  d must stay put until then.
 */
static void deliver_start(struct delivery *d)
{
	struct producer *p = d->p;
	struct outgoing *out = d->out;
	size_t i, m = 0;

	d->idx = lp_xcalloc(d->n ? d->n : 1, sizeof(*d->idx));
	for (i = 0; i < d->n; i++) {
		struct outgoing *o = &out[i];

		if (o->outcome != OUT_PENDING)
			continue;
		if (!o->text) { /* the full path's tree; the scanner wrote its text */
			const char *svc = json_string_value(json_object_get(o->ev, "service"));

			o->key = svc;
			o->keylen = svc ? strlen(svc) : 0;
			o->text = json_dumps(o->ev, JSON_COMPACT);
			if (!o->text) {
				fail(o, 500, "internal", "the event could not be serialised");
				continue;
			}
			o->len = strlen(o->text);
		}
		if (o->len + o->keylen > p->max_msg) {
			fail(o, 413, "too_large", "the serialised event is larger than Kafka takes");
			continue;
		}
		d->idx[m++] = i;
	}
	d->m = m;
	if (m == 0) {
		delivery_finish(d);
		return;
	}

	/* kafka.gate: one event while others await Kafka's answer waits for
	 * them, and goes with whatever else waited, in one go. */
	d->gated = p->s->kafka_gate && m == 1;
	if (d->gated) {
		pthread_mutex_lock(&p->gate_mu);
		if (p->gate_out > 0) {
			queue_append(&p->gate_head, &p->gate_tail, d);
			pthread_mutex_unlock(&p->gate_mu);
			return;
		}
		p->gate_out++;
		pthread_mutex_unlock(&p->gate_mu);
	}
	if (!deliver_direct(p)) {
		if (d->gated) {
			d->gated = false;
			gate_done(p, 1);
		}
		spool_or_fail(d);
		return;
	}
	deliver_kafka(d, 1000);
}

/* Does Kafka take the next delivery, or the spool (or a refusal)? */
static bool deliver_direct(struct producer *p)
{
	if (p->spool && (atomic_load(&p->spool_mode) || atomic_load(&p->stopping)))
		return false;
	return lp_breaker_allow(p->breaker);
}

/* kafka.gate: hands the deliveries of list (linked by next) that the gate
 * let through to Kafka, the others to the spool.  One batch for them all,
 * so that the events reach librdkafka's queue one right after the other
 * (its broker thread wakes at the first and sends what is there by then):
 * no handle, topic or completion record is taken per event. */
static void gate_release(struct producer *p, struct delivery *list)
{
	struct delivery *d, *next;
	struct lp_kbatch kb;
	bool open = false;

	for (d = list; d; d = d->next) {
		if (!d->gated)
			continue;
		if (!open)
			(void)lp_kbatch_begin(&kb, p->kp_gate, p->s->topic_raw, on_delivered,
					      NULL);
		open = true;
		deliver_enqueue(&kb, d, 0);
	}
	if (open)
		lp_kbatch_end(&kb);
	for (d = list; d; d = next) {
		next = d->next;
		if (d->gated)
			deliver_close(d);
		else
			spool_or_fail(d);
	}
}

/* kafka.gate: n of the events it let through are reported (or were
 * refused at once).  When none is left waiting for Kafka, the deliveries it
 * held go, the ones for Kafka one after the other in one go, so that they
 * reach librdkafka together.  Runs on the delivery-report thread (or a
 * sender's), so it never waits for room in librdkafka's queue: a full
 * queue sends an event to the spool, as any refusal does. */
static void gate_done(struct producer *p, long n)
{
	struct delivery *d, *held;

	pthread_mutex_lock(&p->gate_mu);
	p->gate_out -= n;
	while (p->gate_out == 0 && p->gate_head) {
		held = p->gate_head;
		p->gate_head = p->gate_tail = NULL;
		/* Counted before the first is sent (its report may come at once),
		 * and under the lock, so no newcomer slips past meanwhile. */
		for (d = held; d; d = d->next) {
			d->gated = deliver_direct(p);
			p->gate_out += d->gated;
		}
		pthread_mutex_unlock(&p->gate_mu);
		gate_release(p, held);
		pthread_mutex_lock(&p->gate_mu);
	}
	pthread_mutex_unlock(&p->gate_mu);
}

/* Enqueues d's events in kb (a batch of the raw topic), waiting up to
 * block_ms for room in librdkafka's queue.  d stays open (one more than
 * its reports due) until deliver_close(). */
static void deliver_enqueue(struct lp_kbatch *kb, struct delivery *d, int block_ms)
{
	struct producer *p = d->p;
	struct outgoing *out = d->out;
	size_t i, m = d->m;
	long refused = 0;

	d->t0_ms = lp_now_ms();
	/* One more than the reports due: no report can finish d while the
	 * loop still reads it. */
	atomic_store(&d->pending, m + 1);
	for (i = 0; i < m; i++) {
		struct outgoing *o = &out[d->idx[i]];
		rd_kafka_headers_t *h =
			o->ev ? trace_headers(json_string_value(json_object_get(o->ev, "trace_id")),
					      json_string_value(json_object_get(o->ev, "span_id")))
			: o->trace[0] ? trace_headers(o->trace, o->span[0] ? o->span : NULL)
				      : NULL;
		int rc;

		o->d = d;
		rc = lp_kbatch_send_ref(kb, o->key, o->keylen, o->text, o->len, h, &o->kref, o,
					block_ms);
		if (rc < 0) {
			if (h)
				rd_kafka_headers_destroy(h);
			o->res = rc == -EMSGSIZE ? RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE
				 : rc == -ENOENT ? RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC
						 : RD_KAFKA_RESP_ERR__QUEUE_FULL;
			atomic_fetch_sub(&d->pending, 1); /* never the last: the +1 holds */
			refused++;
		}
	}
	if (d->gated && refused)
		gate_done(p, refused);
}

/* Drops deliver_enqueue's extra count of d.  d may be finished (and gone)
 * by another thread as soon as this drops it: nothing of it is touched
 * afterwards. */
static void deliver_close(struct delivery *d)
{
	if (atomic_fetch_sub(&d->pending, 1) == 1)
		delivery_reported(d);
}

/* Hands d's events to Kafka, waiting up to block_ms for room in
 * librdkafka's queue. */
static void deliver_kafka(struct delivery *d, int block_ms)
{
	struct lp_kbatch kb;

	/* One batch for the group: the handle and topic taken once, and each
	 * event's text handed over without a copy (it stays in out until the
	 * last report) with its completion inside the event (o->kref). */
	(void)lp_kbatch_begin(&kb, d->gated ? d->p->kp_gate : d->p->kp, d->p->s->topic_raw,
			      on_delivered, NULL);
	deliver_enqueue(&kb, d, block_ms);
	lp_kbatch_end(&kb);
	deliver_close(d);
}

/* The spool writer's round: appends the events of every delivery in list
 * (linked by next) with one fdatasync when they fit together, else one
 * delivery at a time; then finishes them in order. */
static void spool_deliveries(struct producer *p, struct delivery *list)
{
	struct delivery *d, *next;
	struct spool_rec *recs;
	struct spool_hdr *hdrs;
	rd_kafka_headers_t **kh;
	size_t i, n = 0, k = 0;
	int rc;

	for (d = list; d; d = d->next)
		n += d->m;
	if (list && list->next) {
		recs = lp_xcalloc(n, sizeof(*recs));
		hdrs = lp_xcalloc(n * SPOOL_MAX_HDRS, sizeof(*hdrs));
		kh = lp_xcalloc(n, sizeof(*kh));
		for (d = list; d; d = d->next)
			for (i = 0; i < d->m; i++, k++)
				spool_rec_fill(&d->out[d->idx[i]], &recs[k],
					       hdrs + k * SPOOL_MAX_HDRS, &kh[k]);
		rc = spool_append(p->spool, recs, n);
		spool_kh_free(kh, n);
		free(hdrs);
		free(recs);
		if (rc == 0) {
			for (d = list; d; d = d->next)
				for (i = 0; i < d->m; i++)
					d->out[d->idx[i]].outcome = OUT_SPOOLED;
		}
	} else {
		rc = -1; /* one delivery: appended on its own below */
	}
	for (d = list; d; d = next) {
		next = d->next;
		if (rc != 0)
			spool_events(p, d->out, d->idx, d->m);
		delivery_finish(d);
	}
}

static void *spooler_main(void *arg)
{
	struct producer *p = arg;
	struct delivery *list;

	pthread_mutex_lock(&p->sq_mu);
	for (;;) {
		while (!p->sq_head && !p->sq_stop)
			pthread_cond_wait(&p->sq_cv, &p->sq_mu);
		if (!p->sq_head)
			break; /* stopping, and nothing left */
		list = p->sq_head;
		p->sq_head = p->sq_tail = NULL;
		pthread_mutex_unlock(&p->sq_mu);
		spool_deliveries(p, list);
		pthread_mutex_lock(&p->sq_mu);
	}
	pthread_mutex_unlock(&p->sq_mu);
	return NULL;
}

/* A delivery a thread waits for (syslog's batches). */
struct delivery_wait {
	struct delivery d;   /* first: finish gets &d */
	pthread_mutex_t mu;  /* guards done */
	pthread_cond_t cv;   /* signalled when done is set */
	bool done;           /* finish ran */
};

static void delivery_wait_finish(struct delivery *d)
{
	struct delivery_wait *w = (struct delivery_wait *)d;

	pthread_mutex_lock(&w->mu);
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

/* Makes the events durable and returns once each has its outcome. */
static void deliver(struct producer *p, struct outgoing *out, size_t n)
{
	struct delivery_wait w = { .d = { .p = p, .out = out, .n = n,
					  .finish = delivery_wait_finish } };

	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	deliver_start(&w.d);
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	pthread_mutex_destroy(&w.mu);
	pthread_cond_destroy(&w.cv);
}

/* ---- requests ----------------------------------------------------------------
 *
 * producer_submit (producer.h) parses and validates a request into a
 * struct preq: its events and, for batches and OTLP, a result per item.
 * The events go out as one delivery; the delivery's finish builds the
 * route's reply and passes it to done. */

/*
 * Whether a body of Content-Type ct is one the handler parses: none given
 * (trusted), application/json or a +json type (parameters such as charset
 * allowed), and for batches also the NDJSON / JSON Lines types.  The media
 * type is compared whole: "application/jsonl" is not JSON to /api/logs,
 * and "application/jsonfoo" is nothing.
 */
static bool is_json_type(const char *ct, bool allow_ndjson)
{
	if (!ct)
		return true;
	if (lp_http_is_json_type(ct))
		return true;
	return allow_ndjson && (lp_http_media_type_is(ct, "application/x-ndjson") ||
				lp_http_media_type_is(ct, "application/ndjson") ||
				lp_http_media_type_is(ct, "application/jsonl"));
}

/* An event the scanner is sure of, into o; false to take the full path. */
static bool scan_event(struct producer *p, const char *text, size_t len, int64_t now_ms,
		       const char *tenant, struct outgoing *o)
{
	struct lp_event_fast f;

	if (lp_event_scan_input(text, len, &p->limits, now_ms, tenant, &f) != 0)
		return false;
	o->text = f.text;
	o->len = f.len;
	o->key = f.service;
	o->keylen = f.service_len;
	memcpy(o->id, f.id, sizeof(o->id));
	return true;
}

/* The full path's event into o. */
static void tree_event(json_t *ev, struct outgoing *o)
{
	o->ev = ev;
	lp_strlcpy(o->id, json_string_value(json_object_get(ev, "id")), sizeof(o->id));
}

/* State threaded through lp_batch_split's callback. */
struct batch_ctx {
	struct producer *p;
	const char *tenant;
	const char *traceparent;  /* the request's header when valid (lp_traceparent_ok),
	                           * or NULL; borrowed while parsing */
	int64_t now_ms;
	/* The items' results, in request order, are those of out (accepted;
	 * the reply adds the id, or the error of a later refusal) merged with
	 * rejects by position: out_pos says where each accepted one stands. */
	json_t *rejects;          /* array of the rejected items' results, in order */
	size_t nitems;            /* items so far, accepted and rejected */
	struct outgoing *out;     /* accepted events */
	size_t *out_pos;          /* their positions among the items */
	size_t nout, cap;
	size_t first_cap;         /* room the first batch_add makes (0: 64) */
};

/* Room for one more accepted event; returns it, zeroed. */
static struct outgoing *batch_add(struct batch_ctx *b)
{
	if (b->nout == b->cap) {
		b->cap = b->cap ? b->cap * 2 : b->first_cap ? b->first_cap : 64;
		b->out = lp_xrealloc(b->out, b->cap * sizeof(*b->out));
		b->out_pos = lp_xrealloc(b->out_pos, b->cap * sizeof(*b->out_pos));
	}
	memset(&b->out[b->nout], 0, sizeof(b->out[b->nout]));
	b->out_pos[b->nout] = b->nitems++;
	return &b->out[b->nout++];
}

/* A rejected item's result: {"index":…,"status":"rejected","error":{…}}. */
static void batch_reject(struct batch_ctx *b, size_t index, const char *code, const char *msg)
{
	json_array_append_new(b->rejects,
			      json_pack("{s:I, s:s, s:{s:s, s:s}}", "index", (json_int_t)index,
					"status", "rejected", "error", "code", code, "message", msg));
	b->nitems++;
}

/* An item's text, offered before it is parsed: the scanner takes what it
 * is sure of, the rest goes to batch_item. */
static int batch_raw(void *ud, size_t index, const char *text, size_t len)
{
	struct batch_ctx *b = ud;
	struct outgoing o = { 0 };

	if (!scan_event(b->p, text, len, b->now_ms, b->tenant, &o))
		return -ENOTSUP;
	lp_series_inc(b->p->received);
	trace_from_header_text(&o, b->traceparent);
	o.item = index;
	*batch_add(b) = o;
	return 0;
}

/* An OTLP record's event, written by otlp_decode_fast: as a scanned item. */
static int otlp_event(void *ud, size_t index, struct otlp_event *e)
{
	struct batch_ctx *b = ud;
	struct outgoing *o;

	lp_series_inc(b->p->received);
	o = batch_add(b);
	o->text = e->ev.text;
	o->len = e->ev.len;
	o->key = e->ev.service;
	o->keylen = e->ev.service_len;
	memcpy(o->id, e->ev.id, sizeof(o->id));
	if (e->trace[0]) {
		memcpy(o->trace, e->trace, sizeof(o->trace));
		memcpy(o->span, e->span, sizeof(o->span));
	} else {
		/* otlp_decode_fast leaves a span_id without a trace_id to the tree. */
		trace_from_header_text(o, b->traceparent);
	}
	o->item = index;
	return 0;
}

static int batch_item(void *ud, size_t index, json_t *item, const char *error)
{
	struct batch_ctx *b = ud;
	struct lp_event_error e;
	json_t *ev;

	lp_series_inc(b->p->received);
	struct outgoing *o;

	if (!item) {
		lp_series_inc(b->p->rejected);
		batch_reject(b, index, "invalid_json", error ? error : "invalid item");
		return 0;
	}
	ev = lp_event_normalize(item, &b->p->limits, b->now_ms, b->tenant, &e);
	if (!ev) {
		lp_series_inc(b->p->rejected);
		batch_reject(b, index, e.code, e.message);
		return 0;
	}
	trace_from_header(ev, b->traceparent);
	o = batch_add(b);
	tree_event(ev, o);
	o->item = index;
	return 0;
}

/* One submission between producer_submit and its done. */
struct preq {
	struct delivery d;          /* its events' way to durability (first: finish
	                             * gets &d) */
	enum producer_route route;  /* which reply to build */
	enum otlp_encoding enc;     /* OTLP: the request's encoding */
	producer_done_fn done;      /* the caller's completion */
	void *ud;                   /* its argument */
	int64_t t0_us;              /* when submitted (log_event_processing_time) */
	pthread_t submitter;        /* the thread in producer_submit */
	char request_id[64];        /* for log lines on the completing thread */
	char trace_id[33];          /* the traceparent's trace id, or "" */
	struct batch_ctx b;         /* the events and per-item results */
};

/* Passes a reply to done. */
static void answer(producer_done_fn done, void *ud, int status, const char *content_type,
		   const char *body, size_t len, const char *headers)
{
	struct producer_reply r = {
		.status = status,
		.content_type = content_type,
		.body = body,
		.len = len,
		.headers = headers,
	};

	done(ud, &r);
}

/* Serialises and json_decref's body (as lp_http_reply_json does). */
static void answer_json(producer_done_fn done, void *ud, int status, json_t *body,
			const char *headers);

/* {"status":"error","error":{"code":code,"message":...}}, as
 * lp_http_reply_error words it. */
static void __attribute__((format(printf, 6, 7)))
answer_error(producer_done_fn done, void *ud, int status, const char *code, const char *headers,
	     const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	json_t *c, *m;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	c = json_string(code);
	m = json_string(msg);
	answer_json(done, ud, status,
		    json_pack("{s:s, s:{s:o, s:o}}", "status", "error", "error", "code",
			      c ? c : json_string("(message not valid UTF-8)"), "message",
			      m ? m : json_string("(message not valid UTF-8)")),
		    headers);
}

static void answer_json(producer_done_fn done, void *ud, int status, json_t *body,
			const char *headers)
{
	char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

	json_decref(body);
	if (!text) {
		answer_error(done, ud, 500, "internal", NULL, "the reply could not be serialised");
		return;
	}
	answer(done, ud, status, "application/json", text, strlen(text), headers);
	free(text);
}

/* gRPC status codes the OTLP Status bodies carry. */
#define GRPC_INVALID_ARGUMENT 3
#define GRPC_RESOURCE_EXHAUSTED 8
#define GRPC_UNAVAILABLE 14

static void answer_otlp_status(producer_done_fn done, void *ud, enum otlp_encoding enc,
			       int status, int code, const char *headers, const char *msg)
{
	char *body;
	size_t len;

	otlp_status(enc, code, msg, &body, &len);
	answer(done, ud, status, otlp_content_type(enc), body, len, headers);
	free(body);
}

/* POST /api/logs's reply. */
static void reply_one(struct producer *p, struct preq *q)
{
	struct outgoing *o = &q->b.out[0];
	char hdr[64];

	if (o->outcome == OUT_FAILED) {
		answer_error(q->done, q->ud, o->status, o->code,
			     o->status == 503 ? retry_after_header(p, hdr, sizeof(hdr)) : NULL,
			     "%s", o->why);
		return;
	}
	lp_series_observe(p->latency, (double)(lp_now_us() - q->t0_us) / 1e6);
	if (strspn(o->id, "0123456789abcdefABCDEF-") == strlen(o->id)) {
		/* The common case, built without jansson: the id is a UUID (the
		 * validation makes it one), which needs no escaping. */
		char body[160];
		int n = snprintf(body, sizeof(body),
				 "{\"status\":\"success\",\"id\":\"%s\","
				 "\"message\":\"Log event queued for processing\"}", o->id);

		answer(q->done, q->ud, 202, "application/json", body, (size_t)n, NULL);
		return;
	}
	answer_json(q->done, q->ud, 202,
		    json_pack("{s:s, s:s, s:s}", "status", "success", "id", o->id, "message",
			      "Log event queued for processing"),
		    NULL);
}

/* s (valid UTF-8) as a JSON string, as json_dumps writes it. */
static void put_json_string(struct lp_buf *buf, const char *s)
{
	lp_buf_add_json_strn(buf, s, strlen(s));
}

/* n in decimal. */
static void put_uint(struct lp_buf *buf, size_t n)
{
	char t[24];
	size_t i = sizeof(t);

	do {
		t[--i] = (char)('0' + n % 10);
		n /= 10;
	} while (n);
	lp_buf_add(buf, t + i, sizeof(t) - i);
}

/* One accepted item's result: its id, or why it was refused after all. */
static void put_outgoing_result(struct lp_buf *buf, const struct outgoing *o)
{
	lp_buf_adds(buf, "{\"index\":");
	put_uint(buf, o->item);
	if (o->outcome != OUT_FAILED) {
		lp_buf_adds(buf, ",\"status\":\"accepted\",\"id\":");
		put_json_string(buf, o->id);
		lp_buf_addch(buf, '}');
		return;
	}
	lp_buf_adds(buf, o->status == 503 ? ",\"status\":\"failed\",\"error\":{\"code\":"
					  : ",\"status\":\"rejected\",\"error\":{\"code\":");
	put_json_string(buf, o->code);
	lp_buf_adds(buf, ",\"message\":");
	put_json_string(buf, o->why);
	lp_buf_adds(buf, "}}");
}

/* POST /api/logs/batch's reply: 202 all accepted, 207 some, 503 none for
 * want of Kafka and spool, 400 none valid.  Written here rather than built
 * as a jansson tree (a tree of 100 results cost more than the events' own
 * validation); the bytes are those json_dumps gave (test_submit pins them). */
static void reply_batch(struct producer *p, struct preq *q)
{
	struct batch_ctx *b = &q->b;
	size_t i, j, r, accepted = 0, rejected, unavailable = 0;
	struct lp_buf buf;
	const char *st;
	char hdr[64];
	int status;

	for (i = 0; i < b->nout; i++) {
		if (b->out[i].outcome != OUT_FAILED)
			accepted++;
		else if (b->out[i].status == 503)
			unavailable++;
	}
	rejected = b->nitems - accepted - unavailable;
	if (accepted == b->nitems && b->nitems > 0) {
		status = 202;
		st = "success";
	} else if (accepted > 0) {
		status = 207;
		st = "partial";
	} else if (unavailable > 0) {
		/* Nothing made durable for want of Kafka and spool: retry all. */
		status = 503;
		st = "error";
	} else {
		status = 400;
		st = "error";
	}
	if (accepted > 0)
		lp_series_observe(p->latency, (double)(lp_now_us() - q->t0_us) / 1e6);
	lp_buf_init(&buf, 96 + b->nitems * 80);
	lp_buf_adds(&buf, "{\"status\":\"");
	lp_buf_adds(&buf, st);
	lp_buf_adds(&buf, "\",\"accepted\":");
	put_uint(&buf, accepted);
	lp_buf_adds(&buf, ",\"rejected\":");
	put_uint(&buf, rejected);
	lp_buf_adds(&buf, ",\"failed\":");
	put_uint(&buf, unavailable);
	lp_buf_adds(&buf, ",\"results\":[");
	for (i = 0, j = 0, r = 0; i < b->nitems; i++) {
		if (i > 0)
			lp_buf_addch(&buf, ',');
		if (j < b->nout && b->out_pos[j] == i) {
			put_outgoing_result(&buf, &b->out[j++]);
		} else {
			char *t = json_dumps(json_array_get(b->rejects, r++), JSON_COMPACT);

			lp_buf_adds(&buf, t ? t : "null");
			free(t);
		}
	}
	lp_buf_adds(&buf, "]}");
	answer(q->done, q->ud, status, "application/json", buf.buf, buf.len,
	       status == 503 ? retry_after_header(p, hdr, sizeof(hdr)) : NULL);
	lp_buf_release(&buf);
}

/* POST /v1/logs's reply: 200 with partialSuccess for records refused,
 * 503 when a record could not be made durable. */
static void reply_otlp(struct producer *p, struct preq *q)
{
	struct batch_ctx *b = &q->b;
	size_t i, j, r, accepted = 0, unavailable = 0, total = b->nitems;
	const char *first_error = NULL;
	char hdr[64], msg[400], *reply;
	size_t reply_len;

	for (i = 0; i < b->nout; i++) {
		if (b->out[i].outcome != OUT_FAILED)
			accepted++;
		else if (b->out[i].status == 503)
			unavailable++;
	}
	if (unavailable > 0) {
		snprintf(msg, sizeof(msg), "%zu of %zu log records could not be made durable; "
					   "retry the request", unavailable, total);
		answer_otlp_status(q->done, q->ud, q->enc, 503, GRPC_UNAVAILABLE,
				   retry_after_header(p, hdr, sizeof(hdr)), msg);
		return;
	}
	/* The first record refused, in request order: rejected as invalid, or
	 * refused for good after the decoding (too large for Kafka). */
	for (i = 0, j = 0, r = 0; i < total && !first_error; i++) {
		if (j < b->nout && b->out_pos[j] == i) {
			struct outgoing *o = &b->out[j++];

			if (o->outcome != OUT_FAILED)
				continue;
			first_error = o->why;
		} else {
			json_t *e = json_object_get(json_array_get(b->rejects, r++), "error");

			first_error = json_string_value(json_object_get(e, "message"));
			if (!first_error)
				first_error = "invalid";
		}
		snprintf(msg, sizeof(msg), "%zu of %zu log records rejected; the first, "
					   "record %zu: %s", total - accepted, total, i, first_error);
	}
	if (accepted > 0)
		lp_series_observe(p->latency, (double)(lp_now_us() - q->t0_us) / 1e6);
	otlp_response(q->enc, (long long)(total - accepted), total > accepted ? msg : NULL, &reply,
		      &reply_len);
	answer(q->done, q->ud, 200, otlp_content_type(q->enc), reply, reply_len, NULL);
	free(reply);
}

static void preq_free(struct preq *q)
{
	size_t i;

	for (i = 0; i < q->b.nout; i++)
		outgoing_release(&q->b.out[i]);
	free(q->b.out);
	free(q->b.out_pos);
	json_decref(q->b.rejects);
	free(q);
}

/* The delivery's finish: the reply, then the request is over. */
static void preq_finish(struct delivery *d)
{
	struct preq *q = (struct preq *)d;
	struct producer *p = d->p;
	/* Another thread's log lines name the request and its trace; the
	 * submitter's own already do (the HTTP server set them). */
	bool other = !pthread_equal(pthread_self(), q->submitter);

	if (other && q->request_id[0])
		lp_log_set_request(q->request_id, q->trace_id[0] ? q->trace_id : NULL);
	switch (q->route) {
	case PRODUCER_ONE:
		reply_one(p, q);
		break;
	case PRODUCER_BATCH:
		reply_batch(p, q);
		break;
	case PRODUCER_OTLP:
		reply_otlp(p, q);
		break;
	}
	if (other && q->request_id[0])
		lp_log_set_request(NULL, NULL);
	preq_free(q);
	atomic_fetch_sub(&p->inflight, 1);
}

/* POST /api/logs: validates; true when q holds an event to deliver. */
static bool submit_one(struct producer *p, const struct producer_input *in, struct preq *q)
{
	struct lp_event_error e;
	struct outgoing *o;
	int64_t now_ms;
	json_t *ev;

	if (!is_json_type(in->content_type, false)) {
		answer_error(q->done, q->ud, 415, "unsupported_media_type", NULL,
			     "expected Content-Type application/json, got \"%.100s\"",
			     in->content_type);
		return false;
	}
	lp_series_inc(p->received);
	now_ms = lp_wall_ms();
	q->b.first_cap = 1; /* not 64 outgoings (10 kB) for one event */
	o = batch_add(&q->b);
	if (!scan_event(p, in->body, in->len, now_ms, q->b.tenant, o)) {
		ev = lp_event_parse(in->body, in->len, &p->limits, now_ms, q->b.tenant, &e);
		if (!ev) {
			lp_series_inc(p->rejected);
			answer_error(q->done, q->ud, e.status, e.code, NULL, "%s", e.message);
			return false;
		}
		tree_event(ev, o);
		trace_from_header(o->ev, q->b.traceparent);
	} else {
		trace_from_header_text(o, q->b.traceparent);
	}
	return true;
}

/* POST /api/logs/batch: splits and validates; true when q holds items to
 * answer (accepted events to deliver, or none: a 400 of rejections). */
static bool submit_batch(struct producer *p, const struct producer_input *in, struct preq *q)
{
	char err[200];
	long n;

	if (!is_json_type(in->content_type, true)) {
		answer_error(q->done, q->ud, 415, "unsupported_media_type", NULL,
			     "expected Content-Type application/json, application/x-ndjson, "
			     "application/ndjson or application/jsonl, got \"%.100s\"",
			     in->content_type);
		return false;
	}
	q->b.now_ms = lp_wall_ms();
	q->b.rejects = json_array();
	n = lp_batch_split_raw(in->body, in->len, (size_t)p->s->batch_max_items, batch_raw,
			       batch_item, &q->b, err, sizeof(err));
	if (n == -E2BIG) {
		answer_error(q->done, q->ud, 413, "too_many_items", NULL,
			     "a batch holds at most %lld events", p->s->batch_max_items);
		return false;
	}
	if (n < 0) {
		answer_error(q->done, q->ud, 400, "invalid_batch", NULL, "%s", err);
		return false;
	}
	return true;
}

/*
 * POST /v1/logs: each log record of the export request (otlp.c maps them)
 * goes the way of a batch item, through the delivery, so it is durable as
 * one is before the answer: as text when otlp_decode_fast wrote its event
 * (otlp_event, as batch_raw takes a scanned item), else as the input
 * object through batch_item.  The answers are the protocol's:
 * 200 with an ExportLogsServiceResponse (partialSuccess counting the
 * records refused as invalid), 400 for a body that does not decode, 413
 * for too many records or a body inflating past http.max_body, 415 for
 * another Content-Type or Content-Encoding, 503 with Retry-After when a
 * record could not be made durable; errors carry a google.rpc.Status.  A
 * 503 asks the client to send the whole request again, so records of it
 * already durable arrive twice (OTLP records carry no id to dedupe on).
 */
static bool submit_otlp(struct producer *p, const struct producer_input *in, struct preq *q)
{
	const char *ce = in->content_encoding;
	int enc = otlp_encoding_of(in->content_type);
	struct otlp_fast fast = { .lim = &p->limits, .fn = otlp_event };
	char err[200], msg[400], *inflated = NULL;
	const char *body = in->body;
	size_t len = in->len;
	bool ret = false;
	long n;

	if (enc < 0) {
		answer_otlp_status(q->done, q->ud, OTLP_JSON, 415, GRPC_INVALID_ARGUMENT, NULL,
				   "expected Content-Type application/x-protobuf or application/json");
		return false;
	}
	q->enc = (enum otlp_encoding)enc;
	if (ce && *ce && strcasecmp(ce, "identity") != 0) {
		int rc;

		if (strcasecmp(ce, "gzip") != 0) {
			answer_otlp_status(q->done, q->ud, q->enc, 415, GRPC_INVALID_ARGUMENT, NULL,
					   "expected Content-Encoding gzip or none");
			return false;
		}
		rc = otlp_gunzip(in->body, in->len, (size_t)p->s->http_max_body, &inflated, &len);
		if (rc == -E2BIG) {
			snprintf(msg, sizeof(msg), "the body inflates to more than %lld bytes",
				 p->s->http_max_body);
			answer_otlp_status(q->done, q->ud, q->enc, 413, GRPC_RESOURCE_EXHAUSTED,
					   NULL, msg);
			return false;
		}
		if (rc < 0) {
			answer_otlp_status(q->done, q->ud, q->enc, 400, GRPC_INVALID_ARGUMENT, NULL,
					   "the body is not valid gzip");
			return false;
		}
		body = inflated;
	}
	q->b.now_ms = lp_wall_ms();
	q->b.rejects = json_array();
	fast.now_ms = q->b.now_ms;
	fast.tenant = q->b.tenant;
	n = otlp_decode_fast(body, len, q->enc, (size_t)p->s->otlp_max_records, &fast, batch_item,
			     &q->b, err, sizeof(err));
	if (n == -E2BIG) {
		answer_otlp_status(q->done, q->ud, q->enc, 413, GRPC_RESOURCE_EXHAUSTED, NULL, err);
		goto out;
	}
	if (n < 0) {
		answer_otlp_status(q->done, q->ud, q->enc, 400, GRPC_INVALID_ARGUMENT, NULL, err);
		goto out;
	}
	ret = true;
out:
	free(inflated);
	return ret;
}

int producer_submit(struct producer *p, const struct producer_input *in, producer_done_fn done,
		    void *ud)
{
	struct preq *q;
	bool go = false;

	atomic_fetch_add(&p->inflight, 1);
	if (atomic_load(&p->stopping)) {
		answer_error(done, ud, 503, "shutting_down", "Retry-After: 1\r\nConnection: close\r\n",
			     "the producer is shutting down; retry on another instance");
		atomic_fetch_sub(&p->inflight, 1);
		return 0;
	}
	q = lp_xcalloc(1, sizeof(*q));
	q->d.p = p;
	q->d.finish = preq_finish;
	q->route = in->route;
	q->done = done;
	q->ud = ud;
	q->t0_us = lp_now_us();
	q->submitter = pthread_self();
	lp_strlcpy(q->request_id, in->request_id ? in->request_id : "", sizeof(q->request_id));
	q->b.p = p;
	q->b.tenant = in->tenant && *in->tenant ? in->tenant : NULL;
	/* Checked once here: every event of the request takes it. */
	q->b.traceparent = lp_traceparent_ok(in->traceparent, q->trace_id) ? in->traceparent : NULL;
	switch (in->route) {
	case PRODUCER_ONE:
		go = submit_one(p, in, q);
		break;
	case PRODUCER_BATCH:
		go = submit_batch(p, in, q);
		break;
	case PRODUCER_OTLP:
		go = submit_otlp(p, in, q);
		break;
	}
	/* Borrowed from the caller, which may free it once this returns. */
	q->b.tenant = NULL;
	q->b.traceparent = NULL;
	if (!go) {
		preq_free(q);
		atomic_fetch_sub(&p->inflight, 1);
		return 0;
	}
	q->d.out = q->b.out;
	q->d.n = q->b.nout;
	deliver_start(&q->d); /* q belongs to the delivery from here on */
	return 0;
}

/* ---- the HTTP routes -----------------------------------------------------------
 *
 * The three routes are async (lp_http_route_async): with the event front
 * the handler runs on a front loop, copies what producer_submit needs
 * from the request, defers it and submits; whichever thread finishes the
 * submission (the handler's own for a 4xx, librdkafka's delivery-report
 * thread, the spool writer after its fdatasync) writes the reply into the
 * deferred request and answers it, which wakes the loop that sends it.  No
 * thread waits per request in flight.  lp_http_server_free waits for the
 * deferred requests, and producer_stop frees the server before Kafka and
 * the spool, so their done() can still run during the wait.
 *
 * A request CivetWeb read (http.front civetweb, or one the front passes on:
 * chunked, an HTTP/1.0 POST without Content-Length) is answered on its
 * worker as before: submit, wait for done on a condition variable, reply.
 * The worker is held either way (a deferred one waits inside the server),
 * and replying from the handler keeps the reply written before the request
 * leaves the in-flight count: producer_stop stops the server only then,
 * because CivetWeb stops writing responses as soon as it is told to stop. */

/* done of a deferred request: the reply goes straight into it. */
static void http_answer_done(void *ud, const struct producer_reply *rep)
{
	struct lp_http_req *r = ud;

	lp_http_reply(r, rep->status, rep->content_type, rep->body, rep->len, rep->headers);
	lp_http_answer(r); /* r is gone from here on */
}

/* One worker's wait for its answer, and the answer copied. */
struct http_wait {
	pthread_mutex_t mu;   /* guards done */
	pthread_cond_t cv;    /* signalled when done is set */
	bool done;            /* the answer is in */
	int status;           /* the answer */
	char ctype[64];       /* its Content-Type */
	char *body;           /* its body (malloc'd) */
	size_t len;           /* bytes of body */
	char *headers;        /* its extra header lines (malloc'd), or NULL */
};

static void http_done(void *ud, const struct producer_reply *r)
{
	struct http_wait *w = ud;

	w->status = r->status;
	lp_strlcpy(w->ctype, r->content_type ? r->content_type : "", sizeof(w->ctype));
	w->body = lp_xmalloc(r->len + 1);
	memcpy(w->body, r->body, r->len);
	w->body[r->len] = '\0';
	w->len = r->len;
	w->headers = r->headers ? lp_xstrdup(r->headers) : NULL;
	pthread_mutex_lock(&w->mu);
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

/* A request CivetWeb read: submit, wait for the answer, reply. */
static void submit_and_wait(struct producer *p, struct lp_http_req *r,
			    const struct producer_input *in)
{
	struct http_wait w = { .done = false };

	atomic_fetch_add(&p->inflight, 1);
	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	producer_submit(p, in, http_done, &w);
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	lp_http_reply(r, w.status, w.ctype[0] ? w.ctype : NULL, w.body, w.len, w.headers);
	free(w.body);
	free(w.headers);
	pthread_mutex_destroy(&w.mu);
	pthread_cond_destroy(&w.cv);
	atomic_fetch_sub(&p->inflight, 1);
}

static void handle_route(struct producer *p, struct lp_http_req *r, enum producer_route route)
{
	/* The header values and the body stay valid until the handler
	 * returns, even once answered: producer_submit copies what it keeps. */
	struct producer_input in = {
		.route = route,
		.body = r->body,
		.len = r->body_len,
		.content_type = lp_http_header(r, "Content-Type"),
		.content_encoding = lp_http_header(r, "Content-Encoding"),
		.traceparent = lp_http_header(r, "traceparent"),
		.tenant = lp_http_header(r, "X-Tenant-ID"),
		.request_id = r->request_id,
	};

	/* Deferred before the submission: done may run before it returns. */
	if (r->conn || lp_http_defer(r) < 0) {
		submit_and_wait(p, r, &in);
		return;
	}
	producer_submit(p, &in, http_answer_done, r);
}

static void handle_one(struct lp_http_req *r, void *ud)
{
	handle_route(ud, r, PRODUCER_ONE);
}

static void handle_batch(struct lp_http_req *r, void *ud)
{
	handle_route(ud, r, PRODUCER_BATCH);
}

static void handle_otlp(struct lp_http_req *r, void *ud)
{
	handle_route(ud, r, PRODUCER_OTLP);
}

/* ---- the drain -------------------------------------------------------------- */

/* Sleeps up to ms, returning early when the drain must end. */
static void nap(struct producer *p, int64_t ms)
{
	int64_t end = lp_now_ms() + ms;
	struct timespec ts = { 0, 20 * 1000 * 1000 };

	while (!atomic_load(&p->drain_stop) && lp_now_ms() < end)
		nanosleep(&ts, NULL);
}

/* A spooled record's Kafka headers (its trace context), with room for
 * `extra` more; NULL when it has none and extra is 0. */
static rd_kafka_headers_t *spooled_headers(const struct spool_rec *rec, size_t extra)
{
	rd_kafka_headers_t *h;

	if (rec->nhdrs == 0 && extra == 0)
		return NULL;
	h = rd_kafka_headers_new(rec->nhdrs + extra);
	for (size_t i = 0; i < rec->nhdrs; i++)
		rd_kafka_header_add(h, rec->hdrs[i].name, (ssize_t)rec->hdrs[i].namelen,
				    rec->hdrs[i].val, (ssize_t)rec->hdrs[i].vallen);
	return h;
}

/* Sends one spooled event Kafka refuses for good to the DLQ, with its own
 * headers and the reason; true once acked. */
static bool dead_letter(struct producer *p, const struct spool_rec *rec, rd_kafka_resp_err_t why)
{
	rd_kafka_headers_t *h = spooled_headers(rec, 3);
	rd_kafka_resp_err_t res = RD_KAFKA_RESP_ERR__FAIL;
	const char *reason = rd_kafka_err2str(why);
	char trace[33];
	/* Read before the send: h belongs to librdkafka once it is taken. */
	const char *const kv[] = { "trace_id", lp_kafka_headers_trace(h, trace), NULL };
	struct lp_kwait w;
	int rc;

	rd_kafka_header_add(h, "reason", -1, reason, -1);
	rd_kafka_header_add(h, "stage", -1, "producer", -1);
	rd_kafka_header_add(h, "topic", -1, p->s->topic_raw, -1);
	lp_kwait_init(&w, &res);
	lp_kwait_add(&w);
	rc = lp_kproducer_send(p->kp, p->s->topic_dlq, rec->key, rec->keylen, rec->val, rec->vallen,
			       h, 1000, lp_kwait_done, lp_kwait_slot(&w, 0));
	if (rc < 0) {
		rd_kafka_headers_destroy(h);
		lp_kwait_cancel(&w, 0, RD_KAFKA_RESP_ERR__FAIL);
	}
	lp_kwait_wait(&w, -1);
	lp_kwait_release(&w);
	if (res != RD_KAFKA_RESP_ERR_NO_ERROR) {
		lp_log_kv(LP_LOG_ERROR, kv,
			  "spool: kafka refuses a spooled event (%s) and the DLQ \"%s\" too (%s)",
			  reason, p->s->topic_dlq, rd_kafka_err2str(res));
		return false;
	}
	lp_log_kv(LP_LOG_WARN, kv, "spool: kafka refuses a spooled event (%s); sent it to \"%s\"",
		  reason, p->s->topic_dlq);
	lp_series_inc(p->dead);
	return true;
}

/*
 * Produces the spooled records b->recs[idx[0..m)] to the raw topic with
 * their spooled headers and waits for every delivery report (res[i] for
 * idx[i]).  Returns the number acknowledged.
 */
static size_t drain_produce(struct producer *p, const struct spool_batch *b, const size_t *idx,
			    size_t m, rd_kafka_resp_err_t *res)
{
	struct lp_kwait w;
	size_t i, ok = 0;
	int rc;

	lp_kwait_init(&w, res);
	for (i = 0; i < m; i++) {
		const struct spool_rec *rec = &b->recs[idx[i]];
		rd_kafka_headers_t *h = spooled_headers(rec, 0);

		lp_kwait_add(&w);
		rc = lp_kproducer_send(p->kp, p->s->topic_raw, rec->key, rec->keylen, rec->val,
				       rec->vallen, h, 1000, lp_kwait_done, lp_kwait_slot(&w, i));
		if (rc < 0 && h)
			rd_kafka_headers_destroy(h);
		if (rc < 0)
			lp_kwait_cancel(&w, i,
					rc == -EMSGSIZE ? RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE
					: rc == -ENOENT ? RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC
							: RD_KAFKA_RESP_ERR__QUEUE_FULL);
	}
	/* Deliveries are bounded by message.timeout.ms (and the shutdown
	 * purge), so this wait ends. */
	if (lp_kwait_wait(&w, (int)p->s->kafka_timeout_ms + 5000) < 0)
		lp_kwait_wait(&w, -1);
	for (i = 0; i < m; i++)
		ok += res[i] == RD_KAFKA_RESP_ERR_NO_ERROR;
	lp_kwait_release(&w);
	return ok;
}

/*
 * One round: produces the records of b not yet acknowledged (from *done_to
 * on, skipping acked[i]), waits, and commits the acknowledged prefix.
 * Returns true when the whole batch is drained.
 */
static bool drain_round(struct producer *p, struct spool_batch *b, bool *acked, size_t *done_to)
{
	rd_kafka_resp_err_t *res = lp_xcalloc(b->n, sizeof(*res));
	size_t *idx = lp_xcalloc(b->n, sizeof(*idx));
	size_t i, m = 0, k, ok;
	bool retriable = false;
	int64_t t0 = lp_now_ms();

	for (i = *done_to; i < b->n; i++)
		if (!acked[i])
			idx[m++] = i;
	ok = drain_produce(p, b, idx, m, res);
	for (i = 0; i < m; i++) {
		size_t j = idx[i];

		if (res[i] == RD_KAFKA_RESP_ERR_NO_ERROR)
			acked[j] = true;
		else if (!kafka_err_permanent(res[i]))
			retriable = true;
	}
	lp_breaker_record(p->breaker, !retriable, lp_now_ms() - t0);
	lp_series_add(p->sent, (double)ok);
	/* Refused for good: to the DLQ, in order, so the spool can move on. */
	for (i = 0; i < m && !retriable; i++) {
		size_t j = idx[i];

		if (!acked[j] && kafka_err_permanent(res[i]))
			acked[j] = dead_letter(p, &b->recs[j], res[i]);
	}
	for (k = *done_to; k < b->n && acked[k]; k++)
		;
	if (k > *done_to) {
		spool_commit(p->spool, &b->ends[k - 1], k - *done_to);
		*done_to = k;
	}
	free(res);
	free(idx);
	return *done_to == b->n;
}

static void *drain_main(void *arg)
{
	struct producer *p = arg;
	struct spool_batch b = { 0 };
	bool *acked = NULL;
	size_t done_to = 0, max = (size_t)p->s->spool_drain_batch;
	bool have = false;
	int n;

	/* Only producer_stop ends the drain, once the HTTP server is stopped:
	 * until then requests in flight may still spool events (all of them do
	 * once stopping is set), however empty the spool looks now. */
	while (!atomic_load(&p->drain_stop)) {
		if (!have) {
			if (!spool_wait(p->spool, atomic_load(&p->stopping) ? 50 : 1000))
				continue;
			n = spool_read(p->spool, &b, max, DRAIN_MAX_BYTES);
			if (n == -EBADMSG) {
				spool_commit(p->spool, &b.end, 0);
				continue;
			}
			if (n <= 0) {
				if (n < 0)
					nap(p, 1000);
				continue;
			}
			acked = lp_xrealloc(acked, (size_t)n * sizeof(*acked));
			memset(acked, 0, (size_t)n * sizeof(*acked));
			done_to = 0;
			have = true;
		}
		/* The breaker paces the retries while Kafka is down. */
		if (!lp_breaker_allow(p->breaker)) {
			int64_t wait = lp_breaker_retry_after_ms(p->breaker);

			nap(p, wait < 50 ? 50 : wait > 1000 ? 1000 : wait);
			continue;
		}
		if (!drain_round(p, &b, acked, &done_to)) {
			nap(p, 200);
			continue;
		}
		have = false;
		/* A round that found less than it could take has caught up:
		 * new events may go straight to Kafka again. */
		if (b.n < max && atomic_load(&p->spool_mode)) {
			atomic_store(&p->spool_mode, 0);
			lp_info("spool: caught up, %llu events left to drain; producing directly",
				(unsigned long long)spool_pending(p->spool));
		}
	}
	spool_batch_release(&b);
	free(acked);
	return NULL;
}

/* ---- syslog ------------------------------------------------------------------
 *
 * syslog.c's sink: its events go the way of a batch's (deliver), and what
 * it refuses to the DLQ topic with the reason, without waiting for Kafka. */

static size_t syslog_deliver(void *ud, const struct syslog_event *events, size_t n)
{
	struct producer *p = ud;
	struct outgoing *out = lp_xcalloc(n, sizeof(*out));
	size_t i, ok = 0;
	int64_t t0 = lp_now_us();

	lp_series_add(p->received, (double)n);
	for (i = 0; i < n; i++) {
		out[i].text = events[i].text; /* borrowed: not released here */
		out[i].len = events[i].len;
		out[i].key = events[i].key;
		out[i].keylen = events[i].keylen;
		memcpy(out[i].id, events[i].id, sizeof(out[i].id));
	}
	deliver(p, out, n);
	for (i = 0; i < n; i++) {
		if (out[i].outcome != OUT_FAILED)
			ok++;
		else
			lp_debug("syslog: event %s: %s", out[i].id, out[i].why);
	}
	if (ok > 0)
		lp_series_observe(p->latency, (double)(lp_now_us() - t0) / 1e6);
	free(out);
	return ok;
}

static void syslog_dlq_done(void *opaque, rd_kafka_resp_err_t err, int32_t partition,
			    int64_t offset)
{
	struct producer *p = opaque;

	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		lp_series_inc(p->dlq_failed);
		lp_warn("syslog: a dead letter was not taken by \"%s\": %s", p->s->topic_dlq,
			rd_kafka_err2str(err));
	}
}

static void syslog_dead_letter(void *ud, const char *raw, size_t len, const char *reason)
{
	struct producer *p = ud;
	rd_kafka_headers_t *h = rd_kafka_headers_new(4);

	rd_kafka_header_add(h, "reason", -1, reason, -1);
	rd_kafka_header_add(h, "stage", -1, "producer", -1);
	rd_kafka_header_add(h, "topic", -1, p->s->topic_raw, -1);
	rd_kafka_header_add(h, "source", -1, "syslog", -1);
	if (lp_kproducer_send(p->kp, p->s->topic_dlq, "syslog", 6, raw, len, h, 0, syslog_dlq_done,
			      p) < 0) {
		rd_kafka_headers_destroy(h);
		lp_series_inc(p->dlq_failed);
	}
}

static int syslog_start(struct producer *p, struct lp_registry *reg, char *err, size_t errlen)
{
	const struct producer_settings *s = p->s;
	struct syslog_opts o = {
		.listen = s->syslog_listen,
		.udp = s->syslog_udp,
		.max_message = (size_t)s->syslog_max_message,
		.max_conns = (int)s->syslog_max_connections,
		.idle_timeout_ms = (int)s->syslog_idle_timeout_ms,
		.message_timeout_ms = (int)s->syslog_message_timeout_ms,
		.limits = &p->limits,
		.metrics = reg,
		.sink = { .ud = p, .deliver = syslog_deliver, .dead_letter = syslog_dead_letter },
	};

	if (!s->syslog_listen || !*s->syslog_listen)
		return 0;
	p->syslog = syslog_rx_start(&o, err, errlen);
	if (!p->syslog)
		return -EINVAL;
	lp_info("syslog: receiving on %s (TCP%s, port %d)", s->syslog_listen,
		s->syslog_udp ? " and UDP" : "", syslog_rx_port(p->syslog));
	return 0;
}

/* ---- health ---------------------------------------------------------------- */

/* The broker answers metadata and the breaker is not open. */
static bool kafka_healthy(void *ud, char *detail, size_t len)
{
	struct producer *p = ud;
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t e;

	if (atomic_load(&p->stopping)) {
		snprintf(detail, len, "shutting down");
		return false;
	}
	e = rd_kafka_metadata(lp_kproducer_handle(p->kp), 0, NULL, &md, 1000);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(detail, len, "metadata request failed: %s%s", rd_kafka_err2str(e),
			 p->spool ? " (events go to the spool)" : "");
		return false;
	}
	rd_kafka_metadata_destroy(md);
	snprintf(detail, len, "%d messages in flight",
		 lp_kproducer_outq(p->kp) + (p->kp_gate ? lp_kproducer_outq(p->kp_gate) : 0));
	return lp_breaker_state(p->breaker) != LP_BREAKER_OPEN;
}

/* Ready while the spool can take at least one more event of the largest size. */
static bool spool_healthy(void *ud, char *detail, size_t len)
{
	struct producer *p = ud;
	struct spool_stats st;
	bool room = spool_has_room(p->spool, p->max_msg + 64);
	const char *state;

	spool_stats(p->spool, &st);
	if (atomic_load(&p->stopping))
		state = "shutting down";
	else if (st.broken)
		state = "broken (I/O error)";
	else if (!room && st.seg_errno != 0)
		state = "no new segment (cannot create one; retried)";
	else if (!room)
		state = "full";
	else if (st.events == 0)
		state = "empty";
	else if (lp_breaker_state(p->breaker) == LP_BREAKER_OPEN)
		state = "holding (kafka unreachable)";
	else
		state = "draining";
	snprintf(detail, len,
		 "%s: %llu events, %llu of %llu bytes in %llu segments under \"%s\"; "
		 "%llu written, %llu drained",
		 state, (unsigned long long)st.events, (unsigned long long)st.bytes,
		 (unsigned long long)st.max_bytes, (unsigned long long)st.segments,
		 p->s->spool_dir, (unsigned long long)st.written_total,
		 (unsigned long long)st.drained_total);
	return !st.broken && room && !atomic_load(&p->stopping);
}

/* ---- lifecycle ------------------------------------------------------------- */

static size_t kafka_max_message(struct lp_kproducer *kp)
{
	char buf[64];
	size_t sz = sizeof(buf);
	const rd_kafka_conf_t *conf = rd_kafka_conf(lp_kproducer_handle(kp));
	long long v;

	if (rd_kafka_conf_get(conf, "message.max.bytes", buf, &sz) != RD_KAFKA_CONF_OK)
		return 1000000;
	v = atoll(buf);
	return v > 0 ? (size_t)v : 1000000;
}

struct producer *producer_start(const struct producer_settings *s, char *err, size_t errlen)
{
	struct producer *p = lp_xcalloc(1, sizeof(*p));
	struct lp_registry *reg = lp_registry_default();
	struct lp_http_opts ho = { 0 };
	char timeout[32], linger[32], batch[32], inflight[32];
	const char *props[] = { "message.timeout.ms", timeout, "linger.ms", linger,
				"batch.size", batch, "max.in.flight.requests.per.connection", inflight,
				"socket.nagle.disable", s->kafka_nodelay ? "true" : "false", NULL };

	p->s = s;
	pthread_mutex_init(&p->sq_mu, NULL);
	pthread_mutex_init(&p->gate_mu, NULL);
	pthread_cond_init(&p->sq_cv, NULL);
	p->limits = lp_event_default_limits;
	p->limits.max_message = (size_t)s->max_message;
	p->limits.max_attributes = (size_t)s->max_attributes;
	p->received = lp_counter(reg, "log_events_received_total", "Log events received over HTTP");
	p->rejected = lp_counter(reg, "log_events_rejected_total", "Log events refused as invalid");
	p->sent = lp_counter(reg, "kafka_messages_sent_total", "Messages acknowledged by Kafka");
	p->errors = lp_counter(reg, "log_events_errors_total", "Events that Kafka did not acknowledge");
	p->latency = lp_histogram(reg, "log_event_processing_time",
				  "Seconds from request to Kafka acknowledgement or spool fsync",
				  NULL, 0);
	p->dead = lp_counter(reg, "logpipe_spool_dead_lettered_total",
			     "Spooled events Kafka refused for good, sent to the DLQ topic");
	p->dlq_failed = lp_counter(reg, "syslog_dead_letters_failed_total",
				   "Refused syslog messages the DLQ topic did not take (lost)");
	p->breaker = lp_breaker_new("kafka", NULL);

	if (s->spool_enabled) {
		struct spool_opts so = {
			.dir = s->spool_dir,
			.max_bytes = (uint64_t)s->spool_max_bytes,
			.segment_bytes = (uint64_t)s->spool_segment_bytes,
			.metrics = reg,
		};

		p->spool = spool_open(&so, err, errlen);
		if (!p->spool)
			goto fail;
		/* Recovered events keep their place ahead of new ones. */
		if (spool_pending(p->spool) > 0)
			atomic_store(&p->spool_mode, 1);
	}

	/* A double has no bounds in the table: the old int key's, checked here. */
	if (!(s->kafka_linger_ms >= 0 && s->kafka_linger_ms <= 1000)) {
		snprintf(err, errlen, "kafka.linger_ms %g is not within 0..1000", s->kafka_linger_ms);
		goto fail;
	}
	snprintf(timeout, sizeof(timeout), "%lld", s->kafka_timeout_ms);
	snprintf(linger, sizeof(linger), "%g", s->kafka_linger_ms);
	snprintf(batch, sizeof(batch), "%lld", s->kafka_batch_size);
	snprintf(inflight, sizeof(inflight), "%lld", s->kafka_max_in_flight);
	p->kp = lp_kproducer_new(s->kafka_brokers, props, err, errlen);
	if (!p->kp)
		goto fail;
	if (s->kafka_gate) {
		/* The gate makes the bursts: this client sends each as it comes.
		 * Batches and the spool keep the other one and its linger. */
		snprintf(linger, sizeof(linger), "0");
		p->kp_gate = lp_kproducer_new(s->kafka_brokers, props, err, errlen);
		if (!p->kp_gate)
			goto fail;
	}
	p->max_msg = kafka_max_message(p->kp);

	if (p->spool) {
		if (pthread_create(&p->spooler, NULL, spooler_main, p) != 0) {
			snprintf(err, errlen, "cannot start the spool writer thread");
			goto fail;
		}
		p->spooler_started = true;
		if (pthread_create(&p->drainer, NULL, drain_main, p) != 0) {
			snprintf(err, errlen, "cannot start the spool drain thread");
			goto fail;
		}
		p->drainer_started = true;
	}

	ho.listen = s->http_listen;
	ho.threads = (int)s->http_threads;
	ho.front = s->http_front;
	ho.front_loops = (int)s->http_loops;
	ho.max_body = (size_t)s->http_max_body;
	ho.service = "producer";
	p->http = lp_http_server_new(&ho, err, errlen);
	if (!p->http)
		goto fail;
	lp_http_route_async(p->http, "POST", "/api/logs", handle_one, p);
	lp_http_route_async(p->http, "POST", "/api/logs/batch", handle_batch, p);
	lp_http_route_async(p->http, "POST", "/v1/logs", handle_otlp, p);
	/* With a spool, Kafka being down does not stop ingest: the spool's
	 * room decides readiness. */
	lp_http_health(p->http, "kafka", p->spool == NULL, kafka_healthy, p, p->breaker);
	if (p->spool)
		lp_http_health(p->http, "spool", true, spool_healthy, p, NULL);
	if (lp_http_start(p->http, err, errlen) < 0)
		goto fail;
	if (syslog_start(p, reg, err, errlen) < 0)
		goto fail;
	return p;
fail:
	producer_stop(p);
	return NULL;
}

/* Purges Kafka's queue if the shutdown is still waiting at the deadline. */
struct stop_watch {
	struct producer *p;    /* whose Kafka queue */
	pthread_mutex_t mu;    /* guards done */
	pthread_cond_t cv;     /* signalled when done is set */
	bool done;             /* the phase ended in time */
	int64_t deadline_ms;   /* when to purge (monotonic) */
	const char *what;      /* the phase, for the log */
	pthread_t thread;      /* runs stop_watch_main */
	bool started;          /* thread was created */
};

static void *stop_watch_main(void *arg)
{
	struct stop_watch *w = arg;
	struct timespec ts;
	bool purge = false;

	pthread_mutex_lock(&w->mu);
	while (!w->done) {
		int64_t left = w->deadline_ms - lp_now_ms();

		if (left <= 0) {
			purge = true;
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += left / 1000;
		ts.tv_nsec += (long)(left % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&w->cv, &w->mu, &ts);
	}
	pthread_mutex_unlock(&w->mu);
	if (purge && w->p->kp) {
		lp_warn("shutdown: %s still waits for Kafka at the deadline; purging its queue%s",
			w->what, w->p->spool ? " (the events stay in the spool)" : "");
		struct lp_kproducer *clients[] = { w->p->kp, w->p->kp_gate };

		for (size_t i = 0; i < LP_ARRAY_SIZE(clients); i++)
			if (clients[i])
				rd_kafka_purge(lp_kproducer_handle(clients[i]),
					       RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
	}
	return NULL;
}

/* Starts a watch that purges Kafka's queue at deadline_ms unless
 * stop_watch_end() comes first. */
static void stop_watch_begin(struct stop_watch *w, struct producer *p, int64_t deadline_ms,
			     const char *what)
{
	pthread_condattr_t ca;

	memset(w, 0, sizeof(*w));
	w->p = p;
	w->deadline_ms = deadline_ms;
	w->what = what;
	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cv, &ca);
	pthread_condattr_destroy(&ca);
	w->started = pthread_create(&w->thread, NULL, stop_watch_main, w) == 0;
}

static void stop_watch_end(struct stop_watch *w)
{
	pthread_mutex_lock(&w->mu);
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	if (w->started)
		pthread_join(w->thread, NULL);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

void producer_stop(struct producer *p)
{
	struct stop_watch w;
	int64_t t0 = lp_now_ms(), left_ms;
	uint64_t pending;
	int left;

	if (!p)
		return;
	atomic_store(&p->stopping, 1);

	/* 1. Let the requests in flight finish and send their answers (new
	 * ones are refused), then stop the server. */
	stop_watch_begin(&w, p, t0 + STOP_PURGE_MS, "a request");
	/* The syslog receiver delivers the batch in hand (to the spool now)
	 * and closes its sockets: what senders still have is theirs. */
	syslog_rx_stop(p->syslog);
	p->syslog = NULL;
	while (atomic_load(&p->inflight) > 0 && lp_now_ms() - t0 < STOP_DRAIN_MS)
		sleep_ms(5);
	lp_http_server_free(p->http);
	p->http = NULL;
	stop_watch_end(&w);

	/* 2. Drain what the spool holds while Kafka takes it, including what
	 * the requests of step 1 spooled (nothing can be added any more): a
	 * spool on a container's scratch volume does not outlive the
	 * container.  The drain thread ends only here; what is left stays on
	 * disk for the next start. */
	if (p->drainer_started) {
		uint64_t last = spool_pending(p->spool);
		int64_t moved = lp_now_ms();

		stop_watch_begin(&w, p, t0 + STOP_DRAIN_MS, "the spool's drain");
		spool_wake(p->spool);
		/* Wait while it makes progress: a broker that does not answer
		 * would only run out the budget. */
		while ((pending = spool_pending(p->spool)) > 0 && lp_now_ms() - t0 < STOP_DRAIN_MS &&
		       lp_breaker_state(p->breaker) != LP_BREAKER_OPEN &&
		       lp_now_ms() - moved < STOP_STALL_MS) {
			if (pending != last) {
				last = pending;
				moved = lp_now_ms();
			}
			sleep_ms(10);
		}
		atomic_store(&p->drain_stop, 1);
		spool_wake(p->spool);
		pthread_join(p->drainer, NULL);
		stop_watch_end(&w);
		pending = spool_pending(p->spool);
		if (pending > 0)
			lp_warn("shutdown: %llu events stay in the spool \"%s\" for the next start",
				(unsigned long long)pending, p->s->spool_dir);
	}

	/* The gated client first: a report of it may still hand held events
	 * to it, never to the other. */
	struct lp_kproducer *clients[] = { p->kp_gate, p->kp };

	for (size_t i = 0; i < LP_ARRAY_SIZE(clients); i++) {
		if (!clients[i])
			continue;
		left_ms = STOP_BUDGET_MS - (lp_now_ms() - t0);
		left = lp_kproducer_free(clients[i], left_ms < 500 ? 500 : (int)left_ms);
		if (left > 0)
			lp_error("%d messages were not delivered at shutdown", left);
	}
	/* Every delivery report has run (the free purges what is left), so
	 * nothing can be queued for the spool writer any more: it writes what
	 * is queued, finishing the last submissions, and ends. */
	if (p->spooler_started) {
		pthread_mutex_lock(&p->sq_mu);
		p->sq_stop = true;
		pthread_cond_signal(&p->sq_cv);
		pthread_mutex_unlock(&p->sq_mu);
		pthread_join(p->spooler, NULL);
	}
	spool_close(p->spool);
	lp_breaker_free(p->breaker);
	pthread_mutex_destroy(&p->sq_mu);
	pthread_mutex_destroy(&p->gate_mu);
	pthread_cond_destroy(&p->sq_cv);
	free(p);
}
