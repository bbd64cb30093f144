/* consumer.c - the consume loop: enriched events from Kafka, stored in
 * PostgreSQL in batches, offsets committed only after the commit.
 *
 * Two threads share the work so that parsing the next batch overlaps with
 * storing the current one:
 *
 *   loop thread (owns the Kafka consumer: poll, pause, commit)
 *     gather   poll both enriched topics until batch.max_events records or
 *              batch.max_ms since the first one; each record becomes a COPY
 *              line (store_format_fast: one pass over its text, no JSON
 *              tree; whatever it is unsure of, store_format_row on the
 *              parsed event) or, when it is not a storable event, is set
 *              aside for the dead-letter topic at once;
 *     hand off the batch to the store thread once it is idle, then
 *              commit the offsets of the batch it finished before (the
 *              commit overlaps with storing);
 *   store thread (owns the PostgreSQL write path and the DLQ producer)
 *     store    the lines in one transaction (store_batch); see below;
 *     dlq      every set-aside record to topics.dlq with the reason and its
 *              origin in headers, waiting for the broker's acknowledgement;
 *              one the DLQ refuses for good (too large with the headers) is
 *              sent again cut to its first LP_DLQ_TRUNCATED_BYTES, header
 *              truncated, rather than retried for ever.
 *
 * Batches are stored and committed strictly in order (a hand-off slot of
 * one), and a batch's offsets are committed only when every record of it is
 * either in PostgreSQL or acknowledged on the DLQ.  A crash at any point
 * therefore replays whole batches, and the idempotent insert makes the
 * replay harmless.
 *
 * Failures while storing:
 *  - The database is unavailable (store.h's STORE_UNAVAILABLE): the
 *    postgres breaker records it and the store thread keeps the batch and
 *    retries it after lp_backoff_ms delays (while the breaker is open, not
 *    before it lets a trial call through).  The loop thread, waiting to hand
 *    off its next batch, sees the outage, pauses every assigned partition
 *    and keeps polling, which serves rebalances and keeps the group
 *    membership; a record that still arrives is kept for the next batch.
 *    /health/ready reports postgres down meanwhile.  When a try succeeds the
 *    partitions are resumed.  No record is dropped, none is stored twice,
 *    and nothing spins: every wait is a sleep or a bounded poll.
 *  - A row is refused (STORE_REJECTED): the range is split in halves and
 *    each half stored on its own, down to single rows, so the good rows go
 *    through in a few transactions.  A single refused row is tried
 *    retry.max_attempts times with exponential backoff, then dead-lettered
 *    with the server's message.
 *  - A transient error (deadlock, timeout): the same range is retried with
 *    backoff up to retry.max_attempts times before it is split.
 *
 * A third thread does housekeeping: the consumer lag gauge every 5 s, a
 * database ping every 2 s for readiness, and, at start and then every
 * partitions.interval_s (an hour; every 10 s until one succeeds),
 * logpipe_ensure_partitions and the retention drop of old partitions. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "logpipe/breaker.h"
#include "logpipe/http.h"
#include "logpipe/kafka.h"
#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/pg.h"
#include "logpipe/ratelimit.h"
#include "logpipe/util.h"
#include "consumer.h"
#include "query.h"
#include "store.h"
#include "tail.h"

#include "logpipe/banned.h"

#define OPT(key, type, def, field, help, lo, hi) \
	{ key, type, def, offsetof(struct consumer_settings, field), help, lo, hi }

const struct lp_cfg_opt consumer_options[] = {
	OPT("http.listen", LP_CFG_STR, "8084", http_listen, "address:port or port to serve HTTP on", 0, 0),
	OPT("http.threads", LP_CFG_INT, "16", http_threads, "HTTP worker threads", 1, 1024),
	OPT("http.front", LP_CFG_STR, "events", http_front, "events: an event loop front takes the connections (slow clients hold no thread) and passes requests to CivetWeb behind it; civetweb: CivetWeb threads serve everything", 0, 0),
	OPT("http.event_loops", LP_CFG_INT, "1", http_loops, "event loop threads of the events front; 0: one per CPU, at most 8", 0, 8),
	OPT("log.level", LP_CFG_STR, "info", log_level, "debug, info, warn or error", 0, 0),
	OPT("kafka.brokers", LP_CFG_STR, "127.0.0.1:9092", kafka_brokers, "Kafka bootstrap servers", 0, 0),
	OPT("kafka.group", LP_CFG_STR, "logpipe-consumer", kafka_group, "consumer group id", 0, 0),
	OPT("kafka.fetch_wait_ms", LP_CFG_INT, "100", kafka_fetch_wait_ms, "consumer fetch.wait.max.ms: longest a fetch waits on the broker for kafka.fetch_min_bytes", 1, 10000),
	OPT("kafka.fetch_min_bytes", LP_CFG_INT, "1", kafka_fetch_min_bytes, "consumer fetch.min.bytes: what a fetch waits for on the broker (up to kafka.fetch_wait_ms); more means fewer fetch requests", 1, 100000000),
	OPT("topics.complete", LP_CFG_STR, "enriched-logs-complete", topic_complete, "topic of fully enriched events", 0, 0),
	OPT("topics.partial", LP_CFG_STR, "enriched-logs-partial", topic_partial, "topic of partially enriched events", 0, 0),
	OPT("topics.dlq", LP_CFG_STR, "logs-dlq", topic_dlq, "dead-letter topic for events that cannot be stored", 0, 0),
	OPT("pg.dsn", LP_CFG_STR, "postgresql://postgres@127.0.0.1:5432/logpipe", pg_dsn, "PostgreSQL connection string", 0, 0),
	OPT("pg.pool_size", LP_CFG_INT, "20", pg_pool_size, "connections serving the query API", 1, 1000),
	OPT("query.timeout_ms", LP_CFG_INT, "10000", query_timeout_ms, "statement timeout of one query", 100, 600000),
	OPT("batch.max_events", LP_CFG_INT, "16000", batch_max_events, "most records stored in one transaction", 1, 100000),
	OPT("batch.max_ms", LP_CFG_INT, "100", batch_max_ms, "longest wait to fill a batch, in ms (most of a paced event's time from generation to storage)", 1, 60000),
	OPT("batch.fast_rate", LP_CFG_INT, "0", batch_fast_rate, "while the batch before arrived at this many events/s or more, a batch waits up to twice batch.max_ms: larger batches where each one's fixed costs in PostgreSQL add up, slower streams' latency unchanged; 0 (the default) never", 0, 100000000),
	OPT("retry.max_attempts", LP_CFG_INT, "3", retry_max_attempts, "attempts for a row the database refuses before it goes to the DLQ", 1, 100),
	OPT("retention.days", LP_CFG_INT, "7", retention_days, "drop daily partitions older than this many days; 0 keeps everything", 0, 36500),
	OPT("partitions.days_ahead", LP_CFG_INT, "7", partitions_ahead, "daily partitions created ahead of today", 1, 366),
	OPT("partitions.interval_s", LP_CFG_INT, "3600", partitions_interval_s, "seconds between passes that create partitions ahead and apply retention", 1, 86400),
	OPT("store.dedup_by_id", LP_CFG_BOOL, "true", dedup_by_id, "also skip an event whose id is stored under another timestamp", 0, 0),
	OPT("store.writers", LP_CFG_INT, "2", store_writers, "connections a fresh batch is copied with at once", 1, STORE_MAX_WRITERS),
	OPT("tail.buffer", LP_CFG_INT, "10000", tail_buffer, "stored events kept in memory for GET /api/logs/tail; 0 turns the live tail off", 0, 10000000),
	OPT("tail.max_clients", LP_CFG_INT, "8", tail_max_clients, "live tails served at once (each holds an HTTP worker thread); more get 503", 0, 1000),
	OPT("tail.heartbeat_ms", LP_CFG_INT, "15000", tail_heartbeat_ms, "a comment line goes to a quiet live tail this often", 100, 600000),
	LP_CFG_END,
};

/* Statement timeout of the write path: long enough for any sane batch. */
#define STORE_STATEMENT_TIMEOUT_MS 15000
/* Backoff between tries while the database is unavailable. */
#define OUTAGE_BACKOFF_BASE_MS 100
#define OUTAGE_BACKOFF_MAX_MS 5000
/* Backoff between tries of a refused row or a failed DLQ send. */
#define RETRY_BACKOFF_BASE_MS 100
#define RETRY_BACKOFF_MAX_MS 5000

/* A record that goes to the dead-letter topic. */
struct poison {
	size_t msg;         /* index in batch.msgs */
	const char *reason; /* "invalid_json", "invalid_event", "db_rejected" */
	char *error;        /* the detail (owned) */
	bool sent;          /* acknowledged on the DLQ (or given up, see below) */
	bool cut;           /* too large for the DLQ whole: send the first bytes */
};

/* The records of one batch and their COPY lines. */
struct batch {
	rd_kafka_message_t **msgs; /* every record polled, in order (owned) */
	size_t nmsgs, msgcap;
	struct lp_buf copy;        /* COPY lines of the storable records, back to back */
	size_t *line_off;          /* nrows + 1 offsets of the lines in copy */
	size_t *row_msg;           /* for each line, its record's index in msgs */
	struct tail_rec **tail;    /* for each line, its live-tail record or NULL */
	size_t nrows, rowcap;
	struct poison *bad;        /* records for the DLQ */
	size_t nbad, badcap;
	bool fresh;                /* store_probe(): may take the direct path */
	struct lp_buf scratch[3];  /* store_format_fast()'s and the tail's */
};

struct consumer {
	const struct consumer_settings *s; /* settings, owned by main */
	atomic_bool stopping;              /* set by consumer_stop */
	struct lp_kconsumer *kc;           /* both enriched topics */
	struct lp_kproducer *dlq;          /* dead-letter producer */
	struct lp_pgpool *wpool;           /* the store, the probe, housekeeping */
	struct lp_pgpool *qpool;           /* query API connections */
	struct store *store;               /* the write path (store thread only) */
	struct store *probe;               /* store_probe() (loop thread only) */
	struct query_api *qa;              /* GET /api/logs, /api/stats */
	struct tail_ring *ring;            /* stored events for the live tail, or NULL */
	struct tail_api *ta;               /* GET /api/logs/tail */
	struct lp_breaker *pg_breaker;     /* "postgres" */
	struct lp_http_server *http;       /* the HTTP front */
	const char *topics[3];             /* complete, partial, NULL */
	pthread_t loop_thread;             /* Kafka side: gather, hand off, commit */
	pthread_t store_thread;            /* PostgreSQL side: store, dead letters */
	pthread_t house_thread;            /* lag, ping, partitions */
	bool loop_started, store_started, house_started; /* threads to join */
	unsigned seed;                     /* backoff jitter (store thread) */

	/* Loop thread only. */
	rd_kafka_message_t **stash;        /* polled while waiting, for the next batch */
	size_t nstash, stashcap;
	bool paused;                       /* partitions paused by wait_store_idle */
	bool fast;                         /* the last batch came at batch.fast_rate */
	int64_t last_kafka_warn_ms;        /* rate limit for consumer error logs */

	/* The hand-off between the two threads. */
	pthread_mutex_t hmu;               /* guards the fields below */
	pthread_cond_t hcv;                /* signalled on every change */
	struct batch *handoff;                /* for the store thread; NULL when idle */
	struct batch *done;                /* finished by it, waiting for the commit */
	int done_rc;                       /* 0 all safe, -ECANCELED abandoned */
	bool store_quit;                   /* no more batches will come */

	/* Shared with the health checks (other threads). */
	pthread_mutex_t mu;                /* guards the fields below */
	bool pg_outage;                    /* the loop is waiting for the database */
	bool pg_ping_ok;                   /* the last housekeeping ping answered */
	char pg_error[256];                /* the last database failure */

	/* Metrics. */
	struct lp_series *processed;       /* log_events_processed_total */
	struct lp_series *duplicates;      /* log_events_duplicates_total */
	struct lp_series *consumed;        /* log_events_consumed_total */
	struct lp_series *store_time;      /* log_event_processing_time */
	struct lp_series *batch_size;      /* consumer_batch_size */
	struct lp_series *lag;             /* kafka_consumer_lag */
	struct lp_series *paused_gauge;    /* consumer_paused */
	struct lp_series *retries;         /* consumer_store_retries_total */
	struct lp_metric *errors;          /* log_events_errors_total{reason} */
	struct lp_series *dlq_truncated;   /* consumer_dead_letters_truncated_total */
	struct lp_series *dlq_dropped;     /* consumer_dead_letters_dropped_total */
};

/* ---- shared state --------------------------------------------------------- */

static void set_outage(struct consumer *c, bool on, const char *error)
{
	bool was;

	pthread_mutex_lock(&c->mu);
	was = c->pg_outage;
	c->pg_outage = on;
	if (error) {
		/* The first line says it; libpq's hints follow on the next ones. */
		lp_strlcpy(c->pg_error, error, sizeof(c->pg_error));
		c->pg_error[strcspn(c->pg_error, "\n")] = '\0';
	}
	pthread_mutex_unlock(&c->mu);
	if (on && !was)
		lp_warn("postgres unavailable, holding the batch: %s", c->pg_error);
	else if (!on && was)
		lp_info("postgres is back");
}

static bool in_outage(struct consumer *c)
{
	bool on;

	pthread_mutex_lock(&c->mu);
	on = c->pg_outage;
	pthread_mutex_unlock(&c->mu);
	return on;
}

/* ---- batches ------------------------------------------------------------ */

static void batch_init(struct batch *b)
{
	memset(b, 0, sizeof(*b));
	lp_buf_init(&b->copy, 64 * 1024);
	for (size_t i = 0; i < LP_ARRAY_SIZE(b->scratch); i++)
		lp_buf_init(&b->scratch[i], 1024);
	b->rowcap = 64;
	b->line_off = lp_xcalloc(b->rowcap + 1, sizeof(*b->line_off));
	b->row_msg = lp_xcalloc(b->rowcap, sizeof(*b->row_msg));
	b->tail = lp_xcalloc(b->rowcap, sizeof(*b->tail));
}

/* Destroys the records and empties the batch for reuse. */
static void batch_reset(struct batch *b)
{
	size_t i;

	for (i = 0; i < b->nmsgs; i++)
		rd_kafka_message_destroy(b->msgs[i]);
	for (i = 0; i < b->nbad; i++)
		free(b->bad[i].error);
	for (i = 0; i < b->nrows; i++) {
		free(b->tail[i]);
		b->tail[i] = NULL;
	}
	b->nmsgs = b->nrows = b->nbad = 0;
	b->line_off[0] = 0;
	b->fresh = false;
	lp_buf_reset(&b->copy);
}

static void batch_release(struct batch *b)
{
	batch_reset(b);
	lp_buf_release(&b->copy);
	for (size_t i = 0; i < LP_ARRAY_SIZE(b->scratch); i++)
		lp_buf_release(&b->scratch[i]);
	free(b->msgs);
	free(b->line_off);
	free(b->row_msg);
	free(b->tail);
	free(b->bad);
}

static void batch_poison(struct batch *b, size_t msg, const char *reason, const char *error)
{
	if (b->nbad == b->badcap) {
		b->badcap = b->badcap ? b->badcap * 2 : 16;
		b->bad = lp_xrealloc(b->bad, b->badcap * sizeof(*b->bad));
	}
	b->bad[b->nbad].msg = msg;
	b->bad[b->nbad].reason = reason;
	b->bad[b->nbad].error = lp_xstrdup(error ? error : "");
	b->bad[b->nbad].sent = false;
	b->bad[b->nbad].cut = false;
	b->nbad++;
}

/* Makes room for one more COPY line. */
static void batch_row_room(struct batch *b)
{
	if (b->nrows == b->rowcap) {
		b->rowcap *= 2;
		b->line_off = lp_xrealloc(b->line_off, (b->rowcap + 1) * sizeof(*b->line_off));
		b->row_msg = lp_xrealloc(b->row_msg, b->rowcap * sizeof(*b->row_msg));
		b->tail = lp_xrealloc(b->tail, b->rowcap * sizeof(*b->tail));
	}
}

/* The fast path of batch_add: the record's COPY line (and live-tail
 * record) without a JSON tree.  -ENOTSUP when the full path must decide. */
static int batch_add_fast(struct consumer *c, struct batch *b, size_t idx,
			  const rd_kafka_message_t *m, const struct store_origin *o)
{
	struct lp_event_stored v;
	size_t at = b->copy.len;
	bool as_stored;
	int rank;

	if (store_format_fast(m->payload, m->len, o, &b->copy, b->scratch, &v, &rank,
			      &as_stored) < 0)
		return -ENOTSUP;
	batch_row_room(b);
	b->tail[b->nrows] = NULL;
	if (c->ring) {
		b->tail[b->nrows] = tail_rec_scanned(m->payload, m->len, &v, rank, as_stored,
						     &b->scratch[2]);
		/* A text tail_rec_new would serialise again: the full path's. */
		if (!b->tail[b->nrows]) {
			b->copy.len = at;
			b->copy.buf[at] = '\0';
			return -ENOTSUP;
		}
	}
	b->row_msg[b->nrows] = idx;
	b->line_off[++b->nrows] = b->copy.len;
	return 0;
}

/* Takes m over: keeps it for the commit and turns it into a COPY line, or
 * sets it aside for the DLQ when it is not a storable event. */
static void batch_add(struct consumer *c, struct batch *b, rd_kafka_message_t *m)
{
	struct store_origin o;
	json_error_t je;
	json_t *ev = NULL;
	char err[256];
	size_t idx;

	if (b->nmsgs == b->msgcap) {
		b->msgcap = b->msgcap ? b->msgcap * 2 : 256;
		b->msgs = lp_xrealloc(b->msgs, b->msgcap * sizeof(*b->msgs));
	}
	idx = b->nmsgs++;
	b->msgs[idx] = m;
	lp_series_inc(c->consumed);

	if (!m->payload || m->len == 0) {
		batch_poison(b, idx, "invalid_json", "empty record");
		return;
	}
	o.topic = rd_kafka_topic_name(m->rkt);
	o.partition = m->partition;
	o.offset = m->offset;
	o.default_status = strcmp(o.topic, c->s->topic_partial) == 0 ? "partial" : "complete";
	/* Almost every record: one pass, no tree (store_format_fast). */
	if (batch_add_fast(c, b, idx, m, &o) == 0)
		return;
	ev = lp_json_loadb(m->payload, m->len, 0, &je);
	if (!ev) {
		snprintf(err, sizeof(err), "invalid JSON at line %d column %d: %s", je.line,
			 je.column, je.text);
		batch_poison(b, idx, "invalid_json", err);
		return;
	}
	if (store_format_row(ev, &o, &b->copy, err, sizeof(err)) < 0) {
		batch_poison(b, idx, "invalid_event", err);
	} else {
		batch_row_room(b);
		b->row_msg[b->nrows] = idx;
		/* Made here, on the loop thread, so the store thread only has to
		 * hand it to the ring once the row is committed. */
		b->tail[b->nrows] = c->ring ? tail_rec_new(ev, m->payload, m->len) : NULL;
		b->line_off[++b->nrows] = b->copy.len;
	}
	json_decref(ev);
}

/* Logs a consumer error event, at most every 10 s. */
static void note_kafka_error(struct consumer *c, const rd_kafka_message_t *m)
{
	int64_t now = lp_now_ms();

	if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
		return;
	if (now - c->last_kafka_warn_ms < 10000)
		return;
	c->last_kafka_warn_ms = now;
	lp_warn("kafka consumer: %s", rd_kafka_message_errstr(m));
}

/* Polls one record (or nothing) within timeout_ms; error events are
 * logged and dropped. */
static rd_kafka_message_t *poll_one(struct consumer *c, int timeout_ms)
{
	rd_kafka_message_t *m = lp_kconsumer_poll(c->kc, timeout_ms);

	if (m && m->err) {
		note_kafka_error(c, m);
		rd_kafka_message_destroy(m);
		return NULL;
	}
	return m;
}

/* Fills b: the stashed records first, then polls until the batch is full or
 * batch.max_ms passed since its first record (twice that while the stream
 * runs at batch.fast_rate or more, judged by the batch before).  Returns
 * with an empty batch after 200 ms without records, so the loop sees a
 * stop request. */
static void gather(struct consumer *c, struct batch *b)
{
	size_t max = (size_t)c->s->batch_max_events;
	int64_t wait = c->s->batch_max_ms * (c->fast ? 2 : 1);
	int64_t first = lp_now_ms(), deadline = first + wait;
	size_t i;

	for (i = 0; i < c->nstash; i++)
		batch_add(c, b, c->stash[i]);
	c->nstash = 0;
	while (b->nmsgs < max && !atomic_load(&c->stopping)) {
		int64_t left = deadline - lp_now_ms();
		rd_kafka_message_t *m;

		if (b->nmsgs > 0 && left <= 0)
			break;
		m = poll_one(c, b->nmsgs == 0 ? 200 : (int)left);
		if (!m) {
			if (b->nmsgs == 0)
				return;
			continue;
		}
		if (b->nmsgs == 0) {
			first = lp_now_ms();
			deadline = first + wait;
		}
		batch_add(c, b, m);
	}
	if (b->nmsgs > 0 && c->s->batch_fast_rate > 0) {
		int64_t ms = lp_now_ms() - first;

		c->fast = (long long)b->nmsgs * 1000 >= c->s->batch_fast_rate * (ms > 1 ? ms : 1);
	}
}

/* Polls for up to ms while the partitions are paused: serves rebalances
 * and keeps the group membership.  A record that still arrives (fetched
 * before the pause) is kept for the next batch. */
static void poll_paused(struct consumer *c, int ms)
{
	rd_kafka_message_t *m = poll_one(c, ms);

	if (!m)
		return;
	if (c->nstash == c->stashcap) {
		c->stashcap = c->stashcap ? c->stashcap * 2 : 64;
		c->stash = lp_xrealloc(c->stash, c->stashcap * sizeof(*c->stash));
	}
	c->stash[c->nstash++] = m;
}

static void set_paused(struct consumer *c, bool pause)
{
	if (c->paused == pause)
		return;
	if (lp_kconsumer_pause(c->kc, pause) == 0 || !pause) {
		c->paused = pause;
		lp_series_set(c->paused_gauge, pause ? 1 : 0);
		lp_info("%s consumption", pause ? "paused" : "resumed");
	}
}

/* Sleeps in the store thread; returns early when a stop is requested. */
static void store_sleep(struct consumer *c, int64_t ms)
{
	lp_sleep_ms(ms, &c->stopping);
}

/* ---- storing ------------------------------------------------------------- */

/* Stores rows [lo, hi), waiting out database outages.  Returns a
 * store_result other than STORE_UNAVAILABLE, or -ECANCELED when a stop was
 * requested while it had to wait (a stop request still lets the batch in
 * hand be stored and committed when the database takes it at once). */
static int store_available(struct consumer *c, struct batch *b, size_t lo, size_t hi,
			   char *err, size_t errlen)
{
	/* Only the whole batch was probed; the halves of a split one take the
	 * staging path. */
	bool fresh = b->fresh && lo == 0 && hi == b->nrows;
	const char *data = b->copy.buf + b->line_off[lo];
	size_t len = b->line_off[hi] - b->line_off[lo];
	int attempt = 0;

	for (;;) {
		enum store_result r;
		long long inserted;
		int64_t t0;

		if (!lp_breaker_allow(c->pg_breaker)) {
			int64_t wait = lp_breaker_retry_after_ms(c->pg_breaker);

			if (atomic_load(&c->stopping))
				return -ECANCELED;
			store_sleep(c, wait > 0 && wait < 1000 ? wait : 1000);
			continue;
		}
		t0 = lp_now_us();
		r = store_batch(c->store, data, len, hi - lo, fresh, &inserted, err, errlen);
		lp_breaker_record(c->pg_breaker, r != STORE_UNAVAILABLE, (lp_now_us() - t0) / 1000);
		if (r == STORE_OK) {
			/* Committed: the live tail may show the rows now.  A row
			 * the store found stored before (a replay) shows again. */
			if (c->ring) {
				tail_ring_append(c->ring, b->tail + lo, hi - lo);
				memset(b->tail + lo, 0, (hi - lo) * sizeof(*b->tail));
			}
			lp_series_observe(c->store_time, (double)(lp_now_us() - t0) / 1e6);
			lp_series_add(c->processed, (double)inserted);
			lp_series_add(c->duplicates, (double)((long long)(hi - lo) - inserted));
		}
		if (r != STORE_UNAVAILABLE) {
			set_outage(c, false, NULL);
			return r;
		}
		set_outage(c, true, err);
		if (atomic_load(&c->stopping))
			return -ECANCELED;
		lp_series_inc(c->retries);
		store_sleep(c, lp_backoff_ms(++attempt, OUTAGE_BACKOFF_BASE_MS, OUTAGE_BACKOFF_MAX_MS,
					   &c->seed));
	}
}

/* Stores rows [lo, hi), splitting the range around refused rows and
 * setting single refused rows aside for the DLQ.  Returns 0 or -ECANCELED. */
static int store_rows(struct consumer *c, struct batch *b, size_t lo, size_t hi)
{
	int max = (int)c->s->retry_max_attempts;
	char err[512];
	int attempt, r;

	for (attempt = 1;; attempt++) {
		r = store_available(c, b, lo, hi, err, sizeof(err));
		if (r == STORE_OK || r == -ECANCELED)
			return r == STORE_OK ? 0 : r;
		if (hi - lo > 1 && (r == STORE_REJECTED || attempt >= max)) {
			size_t mid = lo + (hi - lo) / 2;

			lp_warn("a batch of %zu rows failed, storing it in halves: %s", hi - lo, err);
			r = store_rows(c, b, lo, mid);
			return r < 0 ? r : store_rows(c, b, mid, hi);
		}
		if (attempt >= max) {
			const rd_kafka_message_t *m = b->msgs[b->row_msg[lo]];
			char trace[33];

			lp_log_kv(LP_LOG_WARN,
				  (const char *[]){ "trace_id", lp_kafka_trace_id(m, trace), NULL },
				  "record %s[%d]@%lld refused %d times, sending it to %s: %s",
				  rd_kafka_topic_name(m->rkt), (int)m->partition,
				  (long long)m->offset, attempt, c->s->topic_dlq, err);
			batch_poison(b, b->row_msg[lo], "db_rejected", err);
			return 0;
		}
		if (atomic_load(&c->stopping))
			return -ECANCELED;
		lp_series_inc(c->retries);
		store_sleep(c, lp_backoff_ms(attempt, RETRY_BACKOFF_BASE_MS, RETRY_BACKOFF_MAX_MS,
					   &c->seed));
	}
}

/* ---- dead letters -------------------------------------------------------- */

static void add_header(rd_kafka_headers_t *h, const char *name, const char *value)
{
	rd_kafka_header_add(h, name, -1, value, -1);
}

static rd_kafka_headers_t *dlq_headers(const struct poison *p, const rd_kafka_message_t *m)
{
	rd_kafka_headers_t *h = rd_kafka_headers_new(7);
	char part[16], off[24], size[24];

	snprintf(part, sizeof(part), "%d", (int)m->partition);
	snprintf(off, sizeof(off), "%lld", (long long)m->offset);
	add_header(h, "reason", p->reason);
	add_header(h, "error", p->error);
	add_header(h, "origin_topic", rd_kafka_topic_name(m->rkt));
	add_header(h, "origin_partition", part);
	add_header(h, "origin_offset", off);
	add_header(h, "stage", "consumer");
	if (p->cut) {
		snprintf(size, sizeof(size), "%zu", m->len);
		add_header(h, "truncated", size);
	}
	lp_kafka_pass_trace(m, &h);
	return h;
}

/* How much of m a dead letter carries: all of it, or when that was refused
 * as too large, its first LP_DLQ_TRUNCATED_BYTES (none when it is shorter:
 * the headers still say what and where it is). */
static size_t dlq_len(const struct poison *p, const rd_kafka_message_t *m)
{
	if (!p->cut)
		return m->len;
	return m->len > LP_DLQ_TRUNCATED_BYTES ? LP_DLQ_TRUNCATED_BYTES : 0;
}

/* The DLQ's answer for one set-aside record that was not acknowledged.
 * Returns true when it is to be sent again after a backoff (the error may
 * pass), false when it is settled or to be sent again at once, cut. */
static bool dead_letter_refused(struct consumer *c, struct poison *p,
				const rd_kafka_message_t *m, rd_kafka_resp_err_t err)
{
	char trace[33];
	const char *const kv[] = { "trace_id", lp_kafka_trace_id(m, trace), NULL };

	if (!lp_kafka_err_permanent(err))
		return true;
	if (!p->cut) {
		lp_log_kv(LP_LOG_WARN, kv,
			  "dead letter of %s[%d]@%lld (%zu bytes) refused by %s (%s); sending its "
			  "first %d bytes", rd_kafka_topic_name(m->rkt), (int)m->partition,
			  (long long)m->offset, m->len, c->s->topic_dlq, rd_kafka_err2str(err),
			  LP_DLQ_TRUNCATED_BYTES);
		p->cut = true;
		return false;
	}
	/* Not even the cut copy is taken (a DLQ topic with a tiny
	 * max.message.bytes): holding every later batch would not help. */
	lp_log_kv(LP_LOG_ERROR, kv,
		  "dead letter of %s[%d]@%lld refused by %s even cut (%s); the record is "
		  "skipped, it stays in %s", rd_kafka_topic_name(m->rkt), (int)m->partition,
		  (long long)m->offset, c->s->topic_dlq, rd_kafka_err2str(err),
		  rd_kafka_topic_name(m->rkt));
	p->sent = true;
	lp_series_inc(c->dlq_dropped);
	return false;
}

/* Sends every set-aside record of b to the DLQ and waits for the broker;
 * retries what failed until it is acknowledged.  A record the DLQ refuses
 * for good (too large with the headers) is sent again at once cut to its
 * first bytes, so that it cannot hold the batch, and every later one, for
 * ever.  Returns 0 or -ECANCELED. */
static int send_dead_letters(struct consumer *c, struct batch *b)
{
	rd_kafka_resp_err_t *results;
	int attempt;
	size_t i;

	if (b->nbad == 0)
		return 0;
	results = lp_xcalloc(b->nbad, sizeof(*results));
	for (attempt = 1;; attempt++) {
		struct lp_kwait w;
		size_t failed = 0, again = 0;
		int rc;

		lp_kwait_init(&w, results);
		for (i = 0; i < b->nbad; i++) {
			const rd_kafka_message_t *m = b->msgs[b->bad[i].msg];
			rd_kafka_headers_t *h;

			if (b->bad[i].sent)
				continue;
			h = dlq_headers(&b->bad[i], m);
			lp_kwait_add(&w);
			rc = lp_kproducer_send(c->dlq, c->s->topic_dlq, m->key, m->key_len, m->payload,
					       dlq_len(&b->bad[i], m), h, 1000, lp_kwait_done,
					       lp_kwait_slot(&w, i));
			if (rc < 0) {
				rd_kafka_headers_destroy(h);
				lp_kwait_cancel(&w, i, lp_kafka_send_err(rc));
			}
		}
		/* Deliveries end within message.timeout.ms, so this wait ends. */
		if (lp_kwait_wait(&w, 30000) < 0)
			lp_kwait_wait(&w, -1);
		lp_kwait_release(&w);
		for (i = 0; i < b->nbad; i++) {
			if (b->bad[i].sent)
				continue;
			if (results[i] == RD_KAFKA_RESP_ERR_NO_ERROR) {
				b->bad[i].sent = true;
				lp_series_inc(lp_metric_series(c->errors, b->bad[i].reason));
				if (b->bad[i].cut)
					lp_series_inc(c->dlq_truncated);
			} else if (dead_letter_refused(c, &b->bad[i], b->msgs[b->bad[i].msg],
						       results[i])) {
				failed++;
			} else if (!b->bad[i].sent) {
				again++;
			}
		}
		if (failed == 0 && again == 0)
			break;
		if (failed == 0) {
			attempt--; /* the cut copies go at once, not after a backoff */
			continue;
		}
		lp_warn("%zu records could not be sent to %s, retrying", failed, c->s->topic_dlq);
		store_sleep(c, lp_backoff_ms(attempt, RETRY_BACKOFF_BASE_MS, RETRY_BACKOFF_MAX_MS,
					   &c->seed));
		if (atomic_load(&c->stopping)) {
			free(results);
			return -ECANCELED;
		}
	}
	free(results);
	return 0;
}

/* ---- the two threads ----------------------------------------------------- */

static void *store_main(void *arg)
{
	struct consumer *c = arg;
	struct batch *b;
	int rc;

	pthread_mutex_lock(&c->hmu);
	for (;;) {
		while (!c->handoff && !c->store_quit)
			pthread_cond_wait(&c->hcv, &c->hmu);
		if (!c->handoff)
			break;
		b = c->handoff;
		pthread_mutex_unlock(&c->hmu);

		rc = store_rows(c, b, 0, b->nrows);
		if (rc == 0)
			rc = send_dead_letters(c, b);

		pthread_mutex_lock(&c->hmu);
		c->handoff = NULL;
		c->done = b;
		c->done_rc = rc;
		pthread_cond_broadcast(&c->hcv);
	}
	pthread_mutex_unlock(&c->hmu);
	return NULL;
}

/* Commits the offsets of b, which the store thread finished with result
 * rc, and empties it.  NULL is a no-op. */
static void commit_batch(struct consumer *c, struct batch *b, int rc)
{
	if (!b)
		return;
	if (rc == 0) {
		if (lp_kconsumer_commit(c->kc, b->msgs, b->nmsgs) < 0)
			lp_warn("offset commit failed; the batch may be delivered again "
				"(storing it again is harmless)");
	} else {
		lp_info("stopping with %zu records uncommitted; they will be delivered again",
			b->nmsgs);
	}
	batch_reset(b);
}

/* Commits the batch the store thread finished, if any, and empties it. */
static void finish_done(struct consumer *c)
{
	struct batch *b;
	int rc;

	pthread_mutex_lock(&c->hmu);
	b = c->done;
	rc = c->done_rc;
	c->done = NULL;
	pthread_mutex_unlock(&c->hmu);
	commit_batch(c, b, rc);
}

/* Hands b to the idle store thread, then commits the batch it finished
 * before: the Kafka commit's round trip overlaps with storing b instead of
 * holding the store thread up.  The finished batch is taken in the same
 * critical section, before the store thread can finish b and take its
 * place. */
static void hand_off(struct consumer *c, struct batch *b)
{
	struct batch *prev;
	int rc;

	pthread_mutex_lock(&c->hmu);
	prev = c->done;
	rc = c->done_rc;
	c->done = NULL;
	c->handoff = b;
	pthread_cond_broadcast(&c->hcv);
	pthread_mutex_unlock(&c->hmu);
	commit_batch(c, prev, rc);
}

/* Sets b->fresh (store_probe) while the store thread may still be writing
 * the batch before, prev, whose ids are therefore checked in memory.  The
 * store thread only reads prev's lines, and only this thread resets it.
 * While the database is in trouble the probe is skipped: the careful path
 * is right for any batch, and this thread must not wait on a connection. */
static void probe_batch(struct consumer *c, struct batch *b, const struct batch *prev)
{
	char err[256];
	enum store_result r;

	b->fresh = false;
	if (b->nrows == 0 || in_outage(c) || lp_breaker_state(c->pg_breaker) != LP_BREAKER_CLOSED)
		return;
	r = store_probe(c->probe, b->copy.buf, b->copy.len, b->nrows, prev->copy.buf,
			prev->copy.len, prev->nrows, &b->fresh, err, sizeof(err));
	if (r != STORE_OK)
		lp_debug("probe failed, the batch takes the staging path: %s", err);
}

/* Waits until the store thread is idle.  A short wait (a batch being
 * stored) just blocks; during an outage, or once the wait passes a second,
 * the partitions are paused and polled so the group keeps us. */
static void wait_store_idle(struct consumer *c)
{
	int64_t t0 = lp_now_ms();
	bool busy;

	for (;;) {
		pthread_mutex_lock(&c->hmu);
		busy = c->handoff != NULL;
		if (busy && !c->paused) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 50 * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&c->hcv, &c->hmu, &ts);
			busy = c->handoff != NULL;
		}
		pthread_mutex_unlock(&c->hmu);
		if (!busy)
			break;
		if (in_outage(c) || lp_now_ms() - t0 > 1000) {
			set_paused(c, true);
			poll_paused(c, 100);
		}
	}
	set_paused(c, false);
}

static void *consume_main(void *arg)
{
	struct consumer *c = arg;
	struct batch bufs[2];
	int next = 0;

	batch_init(&bufs[0]);
	batch_init(&bufs[1]);
	for (;;) {
		struct batch *b = &bufs[next];

		if (!atomic_load(&c->stopping))
			gather(c, b);
		finish_done(c);
		if (b->nmsgs == 0) {
			if (atomic_load(&c->stopping))
				break;
			continue;
		}
		lp_series_observe(c->batch_size, (double)b->nmsgs);
		probe_batch(c, b, &bufs[next ^ 1]);
		/* The other buffer is free once its batch is committed, which
		 * hand_off() does before this loop gathers into it. */
		wait_store_idle(c);
		hand_off(c, b);
		next ^= 1;
	}
	/* Drain: the batch in the store thread finishes (or gives up when it
	 * would have to wait for the database) and is committed. */
	wait_store_idle(c);
	finish_done(c);
	pthread_mutex_lock(&c->hmu);
	c->store_quit = true;
	pthread_cond_broadcast(&c->hcv);
	pthread_mutex_unlock(&c->hmu);
	batch_release(&bufs[0]);
	batch_release(&bufs[1]);
	return NULL;
}

/* ---- housekeeping --------------------------------------------------------- */

/* Creates the partitions ahead and applies retention.  Returns 0 or -EIO. */
static int maintain_partitions(struct consumer *c)
{
	int back = c->s->retention_days > 0 ? (int)c->s->retention_days : 1;
	int created = 0, dropped = 0;
	char err[256];

	if (store_ensure_partitions(c->wpool, back, (int)c->s->partitions_ahead, &created, err,
				    sizeof(err)) < 0 ||
	    store_apply_retention(c->wpool, (int)c->s->retention_days, &dropped, err,
				  sizeof(err)) < 0) {
		lp_warn("partition maintenance failed, will retry: %s", err);
		return -EIO;
	}
	lp_info("partitions: %d created, %d dropped (retention %lld days)", created, dropped,
		c->s->retention_days);
	return 0;
}

static void *house_main(void *arg)
{
	struct consumer *c = arg;
	int64_t next_ping = 0, next_lag = 0, next_maint = 0;

	while (!atomic_load(&c->stopping)) {
		int64_t now = lp_now_ms();

		if (now >= next_ping) {
			bool ok = lp_pgpool_ping(c->wpool, 2000) == 0;

			pthread_mutex_lock(&c->mu);
			c->pg_ping_ok = ok;
			pthread_mutex_unlock(&c->mu);
			next_ping = lp_now_ms() + 2000;
		}
		if (now >= next_lag) {
			long long lag;

			if (lp_kafka_group_lag(lp_kconsumer_handle(c->kc), c->s->kafka_group, c->topics,
					       2000, &lag) == 0)
				lp_series_set(c->lag, (double)lag);
			next_lag = lp_now_ms() + 5000;
		}
		if (now >= next_maint)
			next_maint = lp_now_ms() + (maintain_partitions(c) == 0
							     ? c->s->partitions_interval_s * 1000
							     : 10000);
		lp_sleep_ms(250, &c->stopping);
	}
	return NULL;
}

/* ---- health ---------------------------------------------------------------- */

static bool postgres_healthy(void *ud, char *detail, size_t len)
{
	struct consumer *c = ud;
	bool outage, ping;
	char error[256];

	pthread_mutex_lock(&c->mu);
	outage = c->pg_outage;
	ping = c->pg_ping_ok;
	lp_strlcpy(error, c->pg_error, sizeof(error));
	pthread_mutex_unlock(&c->mu);
	if (outage) {
		snprintf(detail, len, "writes paused, waiting for the database: %s", error);
		return false;
	}
	if (!ping) {
		snprintf(detail, len, "the database does not answer");
		return false;
	}
	if (lp_breaker_state(c->pg_breaker) == LP_BREAKER_OPEN) {
		snprintf(detail, len, "circuit open after failed calls");
		return false;
	}
	snprintf(detail, len, "%.0f events stored", lp_series_value(c->processed));
	return true;
}

static bool kafka_healthy(void *ud, char *detail, size_t len)
{
	struct consumer *c = ud;
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t e;

	e = rd_kafka_metadata(lp_kconsumer_handle(c->kc), 0, NULL, &md, 1000);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(detail, len, "metadata request failed: %s", rd_kafka_err2str(e));
		return false;
	}
	rd_kafka_metadata_destroy(md);
	snprintf(detail, len, "lag %.0f", lp_series_value(c->lag));
	return true;
}

/* ---- start and stop ---------------------------------------------------------- */

static const double batch_buckets[] = {1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000,
					50000};

static void init_metrics(struct consumer *c)
{
	struct lp_registry *reg = lp_registry_default();
	static const char *const reasons[] = {"invalid_json", "invalid_event", "db_rejected"};

	c->processed = lp_counter(reg, "log_events_processed_total",
				  "Log events stored in PostgreSQL (new rows)");
	c->duplicates = lp_counter(reg, "log_events_duplicates_total",
				   "Log events received again and skipped as already stored");
	c->consumed = lp_counter(reg, "log_events_consumed_total",
				 "Records read from the enriched topics");
	c->store_time = lp_histogram(reg, "log_event_processing_time",
				     "Seconds to store one batch in PostgreSQL", NULL, 0);
	c->batch_size = lp_histogram(reg, "consumer_batch_size", "Records per stored batch",
				     batch_buckets, LP_ARRAY_SIZE(batch_buckets));
	c->lag = lp_gauge(reg, "kafka_consumer_lag",
			  "Records on the enriched topics not yet committed by the group");
	c->paused_gauge = lp_gauge(reg, "consumer_paused",
			     "1 while consumption is paused because PostgreSQL is unavailable");
	c->retries = lp_counter(reg, "consumer_store_retries_total",
				"Batches tried again after a failed store");
	c->errors = lp_metric_new(reg, LP_COUNTER, "log_events_errors_total",
				  "Records sent to the dead-letter topic, by reason", "reason", NULL,
				  0);
	for (size_t i = 0; i < LP_ARRAY_SIZE(reasons); i++)
		lp_metric_series(c->errors, reasons[i]);
	c->dlq_truncated = lp_counter(reg, "consumer_dead_letters_truncated_total",
				      "Dead letters sent cut to their first 64 KiB because the whole "
				      "record was too large for the dead-letter topic");
	c->dlq_dropped = lp_counter(reg, "consumer_dead_letters_dropped_total",
				    "Records skipped because the dead-letter topic refused even their "
				    "cut copy");
}

static int start_thread(pthread_t *t, void *(*fn)(void *), void *arg, bool *started, char *err,
			size_t errlen)
{
	int rc = pthread_create(t, NULL, fn, arg);

	if (rc != 0) {
		snprintf(err, errlen, "cannot start a thread: %s", strerror(rc));
		return -rc;
	}
	*started = true;
	return 0;
}

struct consumer *consumer_start(const struct consumer_settings *s, char *err, size_t errlen)
{
	struct consumer *c = lp_xcalloc(1, sizeof(*c));
	struct lp_http_opts ho = { 0 };
	static const char *const dlq_props[] = { "message.timeout.ms", "10000", NULL };
	/* A consumer that died (kill -9) keeps its partitions until its session
	 * times out; 10 s instead of librdkafka's 45 s lets a restarted one (or
	 * another member) take over sooner.  Heartbeats come from librdkafka's
	 * own thread every 3 s, also while the loop waits for the database. */
	char fetch_wait[32], fetch_min[32];
	const char *consumer_props[] = { "auto.offset.reset", "earliest",
					 "session.timeout.ms", "10000",
					 "fetch.wait.max.ms", fetch_wait,
					 "fetch.min.bytes", fetch_min, NULL };

	c->s = s;
	c->seed = (unsigned)lp_now_us();
	c->topics[0] = s->topic_complete;
	c->topics[1] = s->topic_partial;
	c->topics[2] = NULL;
	c->pg_ping_ok = true;
	pthread_mutex_init(&c->mu, NULL);
	pthread_mutex_init(&c->hmu, NULL);
	pthread_cond_init(&c->hcv, NULL);
	init_metrics(c);
	c->pg_breaker = lp_breaker_new("postgres", NULL);

	/* The write path keeps its own connections (store.writers) so queries
	 * never hold it up; one more is the loop thread's for store_probe(),
	 * the last serves pings and partition maintenance. */
	c->wpool = lp_pgpool_new(s->pg_dsn, 2 + (int)s->store_writers, 5);
	c->qpool = lp_pgpool_new(s->pg_dsn, (int)s->pg_pool_size, 5);
	if (!c->wpool || !c->qpool) {
		snprintf(err, errlen, "cannot create the PostgreSQL pools");
		goto fail;
	}
	c->store = store_new(c->wpool, s->dedup_by_id != 0, STORE_STATEMENT_TIMEOUT_MS,
			     (int)s->store_writers);
	c->probe = store_new(c->wpool, s->dedup_by_id != 0, STORE_STATEMENT_TIMEOUT_MS, 1);
	c->qa = query_api_new(c->qpool, c->pg_breaker, (int)s->query_timeout_ms);
	if (s->tail_buffer > 0) {
		c->ring = tail_ring_new((size_t)s->tail_buffer);
		c->ta = tail_api_new(c->ring, (int)s->tail_max_clients, (int)s->tail_heartbeat_ms);
	}

	c->dlq = lp_kproducer_new(s->kafka_brokers, dlq_props, err, errlen);
	if (!c->dlq)
		goto fail;
	snprintf(fetch_wait, sizeof(fetch_wait), "%lld", s->kafka_fetch_wait_ms);
	snprintf(fetch_min, sizeof(fetch_min), "%lld", s->kafka_fetch_min_bytes);
	c->kc = lp_kconsumer_new(s->kafka_brokers, s->kafka_group, c->topics, consumer_props, err,
				 errlen);
	if (!c->kc)
		goto fail;

	ho.listen = s->http_listen;
	ho.threads = (int)s->http_threads;
	ho.front = s->http_front;
	ho.front_loops = (int)s->http_loops;
	ho.service = "consumer";
	c->http = lp_http_server_new(&ho, err, errlen);
	if (!c->http)
		goto fail;
	/* Before the query API's /api/logs/{id}. */
	if ((c->ta && tail_api_routes(c->ta, c->http) < 0) ||
	    query_api_routes(c->qa, c->http) < 0) {
		snprintf(err, errlen, "cannot register the query routes");
		goto fail;
	}
	lp_http_health(c->http, "postgres", true, postgres_healthy, c, c->pg_breaker);
	lp_http_health(c->http, "kafka", true, kafka_healthy, c, NULL);
	if (lp_http_start(c->http, err, errlen) < 0)
		goto fail;

	if (start_thread(&c->house_thread, house_main, c, &c->house_started, err, errlen) < 0 ||
	    start_thread(&c->store_thread, store_main, c, &c->store_started, err, errlen) < 0 ||
	    start_thread(&c->loop_thread, consume_main, c, &c->loop_started, err, errlen) < 0)
		goto fail;
	return c;
fail:
	consumer_stop(c);
	return NULL;
}

void consumer_stop(struct consumer *c)
{
	size_t i;

	if (!c)
		return;
	atomic_store(&c->stopping, true);
	tail_api_stop(c->ta); /* live tails end, or the server would wait for them */
	lp_http_server_free(c->http);
	if (c->loop_started) {
		pthread_join(c->loop_thread, NULL);
	} else {
		/* The loop never ran: release the store thread ourselves. */
		pthread_mutex_lock(&c->hmu);
		c->store_quit = true;
		pthread_cond_broadcast(&c->hcv);
		pthread_mutex_unlock(&c->hmu);
	}
	if (c->store_started)
		pthread_join(c->store_thread, NULL);
	if (c->house_started)
		pthread_join(c->house_thread, NULL);
	for (i = 0; i < c->nstash; i++)
		rd_kafka_message_destroy(c->stash[i]);
	free(c->stash);
	lp_kconsumer_free(c->kc);
	if (c->dlq) {
		int left = lp_kproducer_free(c->dlq, 5000);

		if (left > 0)
			lp_error("%d dead letters were not delivered at shutdown", left);
	}
	store_free(c->store);
	store_free(c->probe);
	query_api_free(c->qa);
	tail_api_free(c->ta);
	tail_ring_free(c->ring);
	lp_pgpool_free(c->qpool);
	lp_pgpool_free(c->wpool);
	lp_breaker_free(c->pg_breaker);
	pthread_mutex_destroy(&c->mu);
	pthread_mutex_destroy(&c->hmu);
	pthread_cond_destroy(&c->hcv);
	free(c);
}
