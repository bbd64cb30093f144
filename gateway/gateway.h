/* gateway.h - the public entry of logpipe: auth, rate limits, adaptive
 * backpressure and routing to the services behind it.
 *
 * gateway_start() parses the API keys, starts the lag reader, the Redis
 * rate limiter and the HTTP server; gateway_stop() stops accepting, waits
 * for the requests in flight and frees everything.  main.c is only
 * arguments and signals, so tests can run the gateway in-process.
 *
 * Extra routes (the dashboard at GET / and GET /api/v1/pipeline) are added
 * by gateway_register_extra_routes() in extra.c, through gateway_route(),
 * which gives them the same auth, rate limiting and access log as the
 * proxied routes. */
#ifndef LOGPIPE_GATEWAY_H
#define LOGPIPE_GATEWAY_H

#include <stddef.h>

#include "logpipe/buf.h"
#include "logpipe/config.h"
#include "logpipe/http.h"

struct gateway_settings {
	char *http_listen;             /* the public address; "" = derived from auth */
	char *http_front;              /* "events" or "civetweb" (see front.h) */
	long long http_loops;          /* event loops of the events front; 0 = one per CPU */
	long long http_threads;        /* HTTP worker threads */
	long long http_max_body;       /* request body cap in bytes (413 above) */
	long long http_timeout_ms;     /* slow or idle clients are cut off after this */
	char *log_level;               /* debug, info, warn, error */
	long long log_buffer_ms;       /* lp_log_buffer's flush_ms */
	char *up_producer;             /* base URLs of the services */
	char *up_metadata;
	char *up_enricher;
	char *up_consumer;
	char *up_generator;
	long long up_timeout_ms;       /* default whole-call timeout */
	long long up_producer_timeout_ms; /* per-upstream timeouts; 0 = up_timeout_ms */
	long long up_metadata_timeout_ms;
	long long up_enricher_timeout_ms;
	long long up_consumer_timeout_ms;
	long long up_generator_timeout_ms;
	long long up_connect_timeout_ms; /* TCP connect timeout */
	long long up_health_timeout_ms;  /* timeout of the /health/ready probes */
	long long up_max_response;     /* largest upstream body passed on */
	char *redis_url;               /* shared rate-limit windows; "" = local only */
	long long redis_timeout_ms;    /* Redis connect/command timeout */
	char *kafka_brokers;           /* for the lag reader; "" = no backpressure */
	char *auth_keys;               /* "KEY:TENANT:SCOPES;..." ("" = auth off) */
	int auth_allow_open;           /* allow auth off on a non-loopback address */
	int rl_enabled;                /* rate limiting on or off */
	long long rl_rate;             /* requests per second per client (normal ingest limit) */
	long long rl_burst;            /* local bucket capacity; 0 = rate */
	long long rl_instances;        /* gateways sharing the limit (local fallback share) */
	long long rl_lease_divisor;    /* lease limit / this many tokens at a time */
	long long rl_retry_jitter_s;   /* random seconds added to Retry-After of a 429 */
	long long bp_lag_normal;       /* lag below which ingest runs at rl_rate */
	long long bp_lag_critical;     /* lag above which ingest runs at bp_floor */
	long long bp_floor;            /* lowest ingest limit */
	long long bp_interval_ms;      /* between two lag readings */
	char *bp_groups;               /* "group=topic+topic,..." */
	char *up_control;              /* the local runner's control endpoint; "" = none */
	char *topic_raw;               /* topics shown by the pipeline view */
	char *topic_complete;
	char *topic_partial;
	char *topic_dlq;
	long long pl_sample_ms;        /* between two samples of the pipeline view */
	char *pl_kafka_data_dir;       /* disk use shown by the pipeline view; "" = none */
	char *pl_pg_data_dir;
};

extern const struct lp_cfg_opt gateway_options[];

struct gateway;

struct gateway *gateway_start(const struct gateway_settings *s, char *err, size_t errlen);
/* Safe on a half-built gateway and on NULL. */
void gateway_stop(struct gateway *g);
/* The address actually listened on (derived when http.listen is ""). */
const char *gateway_listen(const struct gateway *g);

/* ---- for extra routes (extra.c) ---------------------------------------- */

/* Scopes a route needs (see auth.h): 0 open, 1 ingest, 2 read, 4 admin. */
enum { GATEWAY_OPEN = 0, GATEWAY_INGEST = 1, GATEWAY_READ = 2, GATEWAY_ADMIN = 4 };

/* Registers a route served by the gateway itself, behind auth (scope) and
 * the per-client rate limit, with an access-log line.  Call only from
 * gateway_register_extra_routes.  The handler replies with lp_http_reply*
 * and should pass gateway_reply_headers() as extra headers so that the
 * RateLimit fields reach the client. */
int gateway_route(struct gateway *g, const char *method, const char *pattern, unsigned scope,
		  lp_http_handler fn, void *ud);
/* The RateLimit header lines of the request being handled on this thread
 * ("" when none). */
const char *gateway_reply_headers(void);
/* GETs path_and_query from upstream "producer", "metadata", "enricher",
 * "consumer" or "generator" (through its breaker).  Returns the HTTP status,
 * or -ENOENT for an unknown name, -EIO when the call failed; body receives
 * the answer (caller releases). */
int gateway_fetch(struct gateway *g, const char *upstream, const char *path_and_query,
		  struct lp_buf *body);

/* Adds GET / and GET /api/v1/pipeline (extra.c).  Returns 0 or -errno. */
int gateway_register_extra_routes(struct gateway *g);
/* Stops and frees what gateway_register_extra_routes made; called by
 * gateway_stop after the HTTP server stopped.  Safe when it never ran. */
void gateway_release_extra_routes(struct gateway *g);
/* The settings the gateway was started with. */
const struct gateway_settings *gateway_settings_of(const struct gateway *g);
struct gw_bp_snapshot;
/* The lag reader's last reading (backpressure.h). */
void gateway_lag(struct gateway *g, struct gw_bp_snapshot *out);

#endif
