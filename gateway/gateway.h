/* gateway.h - the public entry of logpipe: auth, rate limits, adaptive
 * backpressure and routing to the services behind it.
 *
 * gateway_start() parses the API keys, starts the lag reader, the Redis
 * rate limiter and the HTTP server; gateway_stop() stops accepting, waits
 * for the requests in flight and frees everything.  main.c is only
 * arguments and signals, so tests can run the gateway in-process.
 *
 * The gateway object is the top of the gateway's modules: the routes it
 * serves itself beyond the proxied API (the dashboard at GET / and its
 * control bridge, dashboard.c; the pipeline view at GET /api/v1/pipeline,
 * extra.c) are modules below it, which gateway_start() makes and whose
 * registration functions it calls with a struct gw_routes (route.h), so
 * that they get the same auth, rate limiting and access log as the proxied
 * routes without ever calling back into this file. */
#ifndef LOGPIPE_GATEWAY_H
#define LOGPIPE_GATEWAY_H

#include <stddef.h>

#include "logpipe/config.h"

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
	long long rl_rate;             /* per client per second: requests, and the normal ingest limit in events */
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

#endif
