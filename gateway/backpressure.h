/* backpressure.h - the ingest limit set by the pipeline's consumer lag.
 *
 * A thread reads, at a fixed interval (at least once a second), the lag of
 * each configured consumer group over its topics and
 * turns the total into the ingest limit (events per second; a request
 * costs the events it carries, gw_ingest_cost):
 *
 *   lag <  lag_normal                 NORMAL    limit = rate
 *   lag_normal <= lag <= lag_critical DEGRADED  limit falls linearly from
 *                                               rate to floor
 *   lag >  lag_critical               CRITICAL  limit = floor
 *
 * The total is the sum over the groups: an event waiting for the enricher
 * and one waiting for the consumer are both events not yet stored.  While
 * the lag cannot be read (Kafka down), the last limit stays and the error
 * is reported.  gw_bp_current_limit() is a lock-free read for the request
 * path; everything else is thread-safe under one mutex. */
#ifndef LOGPIPE_GATEWAY_BACKPRESSURE_H
#define LOGPIPE_GATEWAY_BACKPRESSURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gw_bp_state { GW_BP_NORMAL = 0, GW_BP_DEGRADED = 1, GW_BP_CRITICAL = 2 };

struct gw_bp_policy {
	long long rate;         /* limit while the lag is below lag_normal */
	long long lag_normal;   /* lag where the limit starts to fall */
	long long lag_critical; /* lag above which the limit is the floor */
	long long floor;        /* the lowest limit */
};

/* The limit for lag under policy p; sets *state.  Pure. */
long long gw_bp_limit(const struct gw_bp_policy *p, long long lag, enum gw_bp_state *state);
/* "NORMAL", "DEGRADED", "CRITICAL". */
const char *gw_bp_state_name(enum gw_bp_state s);

/* A consumer group and the topics it reads. */
struct gw_bp_group {
	char *name;      /* group id (owned) */
	char **topics;   /* NULL-terminated (owned) */
};

/* Parses "group=topic+topic,group=topic" into a NULL-name-terminated array
 * (free with gw_bp_groups_free).  Returns NULL with err on a bad spec. */
struct gw_bp_group *gw_bp_groups_parse(const char *spec, char *err, size_t errlen);
void gw_bp_groups_free(struct gw_bp_group *g);

struct gw_bp_opts {
	const char *brokers;      /* Kafka bootstrap servers; NULL or "": no lag reading */
	const char *groups;       /* see gw_bp_groups_parse */
	int interval_ms;          /* between two readings (<= 1000) */
	struct gw_bp_policy policy;
};

#define GW_BP_MAX_GROUPS 8

/* What GET /api/logs/health shows. */
struct gw_bp_snapshot {
	enum gw_bp_state state;
	long long lag;            /* total lag at the last good reading (-1: never read) */
	long long limit;          /* current ingest limit */
	bool enabled;             /* false when no brokers are configured */
	int64_t updated_ms;       /* wall clock of the last good reading, 0 if none */
	int64_t age_ms;           /* how old that reading is, -1 if none */
	char error[160];          /* why the last reading failed, "" when it did not */
	size_t ngroups;
	struct {
		char name[96];
		long long lag;    /* -1 when unknown */
	} groups[GW_BP_MAX_GROUPS];
	struct gw_bp_policy policy;
};

/* How an ingest route carries its events. */
enum gw_ingest_form {
	GW_INGEST_ONE,   /* POST /api/logs: one event */
	GW_INGEST_BATCH, /* POST /api/logs/batch: a JSON array or NDJSON */
	GW_INGEST_OTLP,  /* POST /v1/logs: OTLP protobuf or JSON, maybe gzip'd */
};

/* What an ingest request costs, in tokens of the ingest limit (events),
 * told from its body by a scan that parses nothing, at least 1:
 *   ONE    1;
 *   BATCH  the elements of a top-level JSON array (commas at depth 1),
 *          else the top-level objects (NDJSON lines, or one object over
 *          several lines, as the producer reads them);
 *   OTLP   one per started KiB of the body as sent (its records are not
 *          counted: that needs protobuf or inflating).
 * Pure. */
long gw_ingest_cost(enum gw_ingest_form form, const char *body, size_t len);

struct gw_backpressure;

/* Starts the reader thread (unless no brokers are configured).  Returns
 * NULL with err on a bad group spec or when Kafka cannot be set up. */
struct gw_backpressure *gw_bp_start(const struct gw_bp_opts *o, char *err, size_t errlen);
/* Stops the thread and frees.  NULL is a no-op. */
void gw_bp_stop(struct gw_backpressure *b);
long long gw_bp_current_limit(struct gw_backpressure *b);
void gw_bp_snapshot(struct gw_backpressure *b, struct gw_bp_snapshot *out);

#endif
