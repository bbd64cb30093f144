/* pipeline.h - the pipeline view (GET /api/v1/pipeline): counts, rates,
 * lag, breaker states and disk use at each stage of logpipe.
 *
 * Three background threads keep a snapshot that the handler serves from
 * memory, so the endpoint costs a string copy however slow or dead the
 * sources are:
 *
 *   sampler  every sample_ms: GET /metrics and /health of each service and
 *            the generator's status, all at once (curl multi, short
 *            timeouts); then it takes the latest topic offsets, stored row
 *            count, disk use and consumer lag, appends one sample to a ring
 *            (five minutes) and publishes the JSON snapshot;
 *   kafka    the end offsets (sum of high watermarks) of the four topics;
 *   slow     the stored row count (consumer GET /api/stats over all time,
 *            which may take a while on a big table, so it is asked at most
 *            a fifth of the time) and the size of Kafka's and PostgreSQL's
 *            data directories (a du-like walk, every 10 s).
 *
 * A source that cannot be read leaves its fields null and adds an entry to
 * "errors"; the endpoint never fails because a source did.  Rates are
 * events per second over the samples of the last minute ("rates") and of
 * the last 10 s ("rates_10s"), rounded to 0.1; a counter that went down (a
 * service restarted) contributes nothing for that step.  The stage counts
 * are in pipeline order (gw_pl_order) and "read_at" says when each group of
 * figures was read.  The snapshot's fields are
 * described in docs/operations.md ("The pipeline view").
 *
 * Thread-safe: gw_pipeline_json may be called from any thread. */
#ifndef LOGPIPE_GATEWAY_PIPELINE_H
#define LOGPIPE_GATEWAY_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_bp_snapshot;

/* The services the view reads, in this order. */
enum gw_pl_service { GW_PL_PRODUCER, GW_PL_METADATA, GW_PL_ENRICHER, GW_PL_CONSUMER,
		     GW_PL_GENERATOR, GW_PL_NSERVICES };

/* The topics it reads, in this order. */
enum gw_pl_topic { GW_PL_RAW, GW_PL_COMPLETE, GW_PL_PARTIAL, GW_PL_DLQ, GW_PL_NTOPICS };

struct gw_pipeline_opts {
	const char *urls[GW_PL_NSERVICES];   /* base URLs, no trailing '/' */
	const char *brokers;                 /* Kafka bootstrap servers; "" = no offsets */
	const char *topics[GW_PL_NTOPICS];   /* topic names */
	const char *groups;                  /* "group=topic+topic,..." as backpressure.groups */
	const char *kafka_data_dir;          /* "" or NULL: disk use not shown */
	const char *pg_data_dir;
	int sample_ms;                       /* between two samples */
	/* Where the consumer lag comes from (the gateway's lag reader); NULL:
	 * lag not shown. */
	void (*lag)(void *ud, struct gw_bp_snapshot *out);
	void *lag_ud;
};

struct gw_pipeline;

/* Starts the threads.  Returns NULL with err when a thread or the Kafka
 * handle cannot be made, or the group spec is bad. */
struct gw_pipeline *gw_pipeline_start(const struct gw_pipeline_opts *o, char *err, size_t errlen);
/* Stops the threads (within about a second) and frees.  NULL is a no-op. */
void gw_pipeline_stop(struct gw_pipeline *p);
/* The current snapshot as JSON text, malloc'd (*len its length), with the
 * per-sample rate history when history is true.  Waits up to wait_ms for
 * the first sample; before it, the snapshot has "ready": false. */
char *gw_pipeline_json(struct gw_pipeline *p, bool history, int wait_ms, size_t *len);

/* ---- pure helpers, exposed for the unit tests ---------------------------- */

/* Sum of every sample of metric `name` in Prometheus text exposition.
 * Returns the number of samples found (0: the metric is absent). */
int gw_prom_sum(const char *text, const char *name, double *sum);

/* Bytes of disk used by the files under dir (st_blocks, like du; links not
 * followed).  Returns 0 and sets *bytes, or a negative errno with err when
 * dir itself cannot be read; unreadable entries below it are skipped. */
int gw_disk_usage(const char *dir, long long *bytes, char *err, size_t errlen);

/* Counters a sample holds. */
enum gw_pl_counter {
	GW_PLC_GENERATED,   /* generator: log_events_generated_total */
	GW_PLC_ACCEPTED,    /* producer: acknowledged by Kafka + waiting in its spool */
	GW_PLC_RAW,         /* raw topic end offsets */
	GW_PLC_ENRICHED,    /* complete + partial topic end offsets */
	GW_PLC_STORED,      /* rows in PostgreSQL */
	GW_PLC_PROCESSED,   /* consumer: log_events_processed_total */
	GW_PLC_DLQ,         /* dead-letter topic end offsets */
	GW_PLC_N
};

struct gw_pl_sample {
	int64_t t_ms;                /* monotonic clock */
	int64_t wall_ms;             /* wall clock */
	long long v[GW_PLC_N];       /* -1: unknown at that time */
};

/* Events per second of counter k over the samples s[0..n) (oldest first)
 * that lie within window_ms of the newest one: the sum of the increases
 * between consecutive known values over the time those steps span.
 * Returns false when fewer than two known values lie in the window. */
bool gw_pl_rate(const struct gw_pl_sample *s, size_t n, int k, int64_t window_ms, double *rate);

/* The stages a snapshot puts in order, upstream first: what entered the
 * raw topic (generated + accepted: seed 004's producer_count), the raw
 * topic's end offsets, the enricher's complete + partial counters, the
 * enriched topics' end offsets, the consumer's processed counter, the
 * stored rows. */
enum gw_pl_stage { GW_PLS_PRODUCED, GW_PLS_RAW, GW_PLS_ENRICHER, GW_PLS_ENRICHED,
		   GW_PLS_CONSUMER, GW_PLS_STORED, GW_PLS_N };

/* Puts v (-1: unknown) in pipeline order: each known count is raised to the
 * largest known count after it, so that no stage shows fewer events than a
 * later one.  Every reading is a lower bound of what passed its stage (it
 * may be older than a later stage's, or a counter reset by a restart), so
 * the larger later count is the better bound.  Unknown counts stay
 * unknown.  Returns the stages raised, bit (1 << stage). */
unsigned gw_pl_order(long long v[GW_PLS_N]);

#endif
