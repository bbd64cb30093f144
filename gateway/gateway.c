/* gateway.c - request handling of the gateway.
 *
 * Every public route is a row of the route table: method, pattern, the
 * scope it needs, whether it is ingest (limited by the adaptive limit) and
 * either the upstream it goes to or a local handler.  The HTTP server sees
 * one catch-all registration per distinct pattern (method "any"), so the
 * gateway itself answers 405 and writes one access line for every request
 * it routes.  A request goes through:
 *
 *   1. auth: X-API-Key or Authorization: Bearer, hashed and compared in
 *      constant time (auth.c); 401 without or with an unknown key, 403
 *      without the scope.  Off when no keys are configured.
 *   2. rate limit per client (key id, or address when anonymous) and class
 *      (ingest or api) through the Redis-shared windows (limiter.c).  The
 *      ingest class is limited by the current adaptive limit
 *      (backpressure.c), the api class by ratelimit.rate.  Every answer
 *      carries the RateLimit fields; a refusal is 429 with Retry-After.
 *   3. the upstream call (upstream.c): method, encoded path, query, body,
 *      Content-Type, Content-Encoding and Accept pass through; X-Request-ID, traceparent (a
 *      new span of the caller's trace, or a new trace), X-Forwarded-* and
 *      the key's tenant as X-Tenant-ID are set by the gateway, which drops
 *      any X-Tenant-ID the client sent.  The answer's status, body,
 *      Content-Type and the headers of gw_header_forwardable come back.
 *      A breaker per upstream: 503 (open), 502 (failed), 504 (timed out).
 *   4. one access-log line at info level.
 *
 * GET /api/logs/health is answered here from the lag reader; it is
 * registered before /api/logs/{id} so it never reaches the consumer. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <civetweb.h>

#include "logpipe/breaker.h"
#include "logpipe/http.h"
#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/util.h"
#include "auth.h"
#include "backpressure.h"
#include "dashboard.h"
#include "extra.h"
#include "logpipe/front.h"
#include "gateway.h"
#include "limiter.h"
#include "pipeline.h"
#include "route.h"
#include "stream.h"
#include "upstream.h"

#include "logpipe/banned.h"

#define OPT(key, type, def, field, help, lo, hi) \
	{ key, type, def, offsetof(struct gateway_settings, field), help, lo, hi }

const struct lp_cfg_opt gateway_options[] = {
	OPT("http.listen", LP_CFG_STR, "", http_listen, "address:port or port to serve HTTP on; empty: 8080 with auth, 127.0.0.1:8080 without", 0, 0),
	OPT("http.front", LP_CFG_STR, "events", http_front, "events: proxied routes served from event loops, the rest by CivetWeb behind them; civetweb: CivetWeb threads serve everything", 0, 0),
	OPT("http.event_loops", LP_CFG_INT, "0", http_loops, "event loop threads of the events front; 0: one per CPU, at most 8", 0, 8),
	OPT("http.threads", LP_CFG_INT, "64", http_threads, "CivetWeb worker threads (each holds one request, upstream call included)", 1, 1024),
	OPT("http.max_body", LP_CFG_INT, "1048576", http_max_body, "largest request body in bytes (413 above)", 1024, 67108864),
	OPT("http.request_timeout_ms", LP_CFG_INT, "10000", http_timeout_ms, "slow or idle client connections are closed after this", 100, 600000),
	OPT("log.level", LP_CFG_STR, "info", log_level, "debug, info, warn or error", 0, 0),
	OPT("log.buffer_ms", LP_CFG_INT, "50", log_buffer_ms, "write info lines (the access log) together, at most this late; 0: each at once", 0, 1000),
	OPT("upstream.producer", LP_CFG_STR, "http://127.0.0.1:8081", up_producer, "base URL of the producer", 0, 0),
	OPT("upstream.metadata", LP_CFG_STR, "http://127.0.0.1:8082", up_metadata, "base URL of the metadata service", 0, 0),
	OPT("upstream.enricher", LP_CFG_STR, "http://127.0.0.1:8083", up_enricher, "base URL of the enricher", 0, 0),
	OPT("upstream.consumer", LP_CFG_STR, "http://127.0.0.1:8084", up_consumer, "base URL of the consumer", 0, 0),
	OPT("upstream.generator", LP_CFG_STR, "http://127.0.0.1:8085", up_generator, "base URL of the generator", 0, 0),
	OPT("upstream.timeout_ms", LP_CFG_INT, "10000", up_timeout_ms, "whole-call timeout of an upstream request (504 after)", 10, 600000),
	OPT("upstream.producer_timeout_ms", LP_CFG_INT, "12000", up_producer_timeout_ms, "producer call timeout (above its Kafka delivery timeout); 0 = upstream.timeout_ms", 0, 600000),
	OPT("upstream.metadata_timeout_ms", LP_CFG_INT, "0", up_metadata_timeout_ms, "metadata call timeout; 0 = upstream.timeout_ms", 0, 600000),
	OPT("upstream.enricher_timeout_ms", LP_CFG_INT, "0", up_enricher_timeout_ms, "enricher call timeout; 0 = upstream.timeout_ms", 0, 600000),
	OPT("upstream.consumer_timeout_ms", LP_CFG_INT, "0", up_consumer_timeout_ms, "consumer call timeout; 0 = upstream.timeout_ms", 0, 600000),
	OPT("upstream.generator_timeout_ms", LP_CFG_INT, "0", up_generator_timeout_ms, "generator call timeout; 0 = upstream.timeout_ms", 0, 600000),
	OPT("upstream.connect_timeout_ms", LP_CFG_INT, "1000", up_connect_timeout_ms, "TCP connect timeout to an upstream", 10, 60000),
	OPT("upstream.health_timeout_ms", LP_CFG_INT, "1000", up_health_timeout_ms, "timeout of each upstream /health/ready probe in /health", 10, 60000),
	OPT("upstream.max_response", LP_CFG_INT, "16777216", up_max_response, "largest upstream response body in bytes (502 above)", 1024, 1073741824),
	OPT("redis.url", LP_CFG_STR, "redis://127.0.0.1:6379", redis_url, "Redis for the shared rate-limit windows; empty: local limits only", 0, 0),
	OPT("redis.timeout_ms", LP_CFG_INT, "100", redis_timeout_ms, "Redis connect and command timeout", 1, 60000),
	OPT("kafka.brokers", LP_CFG_STR, "127.0.0.1:9092", kafka_brokers, "Kafka bootstrap servers for the lag reader; empty: no backpressure", 0, 0),
	OPT("auth.keys", LP_CFG_STR, "", auth_keys, "API keys \"KEY:TENANT:SCOPES;...\" (scopes ingest,read,admin); empty: auth off", 0, 0),
	OPT("auth.allow_open", LP_CFG_BOOL, "false", auth_allow_open, "allow auth off on a non-loopback http.listen", 0, 0),
	OPT("ratelimit.enabled", LP_CFG_BOOL, "true", rl_enabled, "limit requests (and ingested events) per client", 0, 0),
	OPT("ratelimit.rate", LP_CFG_INT, "1000", rl_rate, "per client per second: requests (api), and the normal ingest limit in events (a batch costs its events)", 1, 100000000),
	OPT("ratelimit.burst", LP_CFG_INT, "0", rl_burst, "local fallback bucket capacity; 0 = one second of rate", 0, 100000000),
	OPT("ratelimit.instances", LP_CFG_INT, "1", rl_instances, "gateways sharing the limits; each enforces limit/instances while Redis is down", 1, 10000),
	OPT("ratelimit.lease_divisor", LP_CFG_INT, "20", rl_lease_divisor, "an instance leases limit/this tokens from Redis at a time", 1, 100000),
	OPT("ratelimit.retry_jitter_s", LP_CFG_INT, "1", rl_retry_jitter_s, "up to this many random seconds added to Retry-After of a 429", 0, 60),
	OPT("backpressure.lag_normal", LP_CFG_INT, "10000", bp_lag_normal, "consumer lag below which ingest runs at ratelimit.rate", 0, 1000000000000LL),
	OPT("backpressure.lag_critical", LP_CFG_INT, "50000", bp_lag_critical, "consumer lag above which ingest runs at backpressure.floor", 0, 1000000000000LL),
	OPT("backpressure.floor", LP_CFG_INT, "100", bp_floor, "lowest ingest limit in events per second per client", 1, 100000000),
	OPT("backpressure.interval_ms", LP_CFG_INT, "1000", bp_interval_ms, "between two readings of the consumer lag", 100, 1000),
	OPT("backpressure.groups", LP_CFG_STR, "logpipe-enricher=raw-logs,logpipe-consumer=enriched-logs-complete+enriched-logs-partial", bp_groups, "consumer groups whose lag is summed: GROUP=TOPIC+TOPIC,...", 0, 0),
	OPT("upstream.control", LP_CFG_STR, "http://127.0.0.1:8090", up_control, "the local runner's control endpoint, for the dashboard's stop/start/chaos buttons; empty: none", 0, 0),
	OPT("topics.raw", LP_CFG_STR, "raw-logs", topic_raw, "raw events topic (pipeline view)", 0, 0),
	OPT("topics.complete", LP_CFG_STR, "enriched-logs-complete", topic_complete, "completely enriched events topic (pipeline view)", 0, 0),
	OPT("topics.partial", LP_CFG_STR, "enriched-logs-partial", topic_partial, "partially enriched events topic (pipeline view)", 0, 0),
	OPT("topics.dlq", LP_CFG_STR, "logs-dlq", topic_dlq, "dead-letter topic (pipeline view)", 0, 0),
	OPT("pipeline.sample_ms", LP_CFG_INT, "2000", pl_sample_ms, "between two samples of the pipeline view (GET /api/v1/pipeline)", 200, 60000),
	OPT("pipeline.kafka_data_dir", LP_CFG_STR, "", pl_kafka_data_dir, "Kafka's log.dirs, whose size the pipeline view shows; empty: not shown", 0, 0),
	OPT("pipeline.pg_data_dir", LP_CFG_STR, "", pl_pg_data_dir, "PostgreSQL's data directory, whose size the pipeline view shows; empty: not shown", 0, 0),
	LP_CFG_END,
};

enum { UP_PRODUCER, UP_METADATA, UP_ENRICHER, UP_CONSUMER, UP_GENERATOR, NUPSTREAMS };

#define MAX_ROUTES 48
#define MAX_SLOTS 32

struct gateway;

/* What an upstream's health check needs. */
struct probe {
	struct gateway *g;     /* for the pool and the probe timeout */
	struct gw_upstream *u; /* the upstream probed */
};

/* One pattern registered with the HTTP server. */
struct slot {
	struct gateway *g;   /* back pointer for the handler */
	char pattern[64];    /* as registered */
};

/* One row of the route table. */
struct route {
	char *method;            /* "GET", "POST", ... (HEAD is served by GET) */
	char *pattern;           /* as registered (metrics label too) */
	struct slot *slot;       /* its HTTP registration */
	unsigned scope;          /* GW_SCOPE_* needed */
	bool ingest;             /* limited by the adaptive ingest limit */
	enum gw_ingest_form form; /* how an ingest route carries its events (its cost) */
	struct gw_upstream *up;  /* proxied to, or NULL for a local handler */
	bool stream;             /* up's answer is passed on as it arrives (stream.h) */
	lp_http_handler fn;      /* local handler */
	void *ud;                /* its user data */
};

struct gateway {
	const struct gateway_settings *s; /* settings, owned by main */
	char *listen;                     /* the effective listen address (owned) */
	struct gw_auth auth;              /* API keys (none: auth off) */
	atomic_bool stop_streams;         /* set by gateway_stop: streams end */
	struct gw_pool *pool;             /* curl handles */
	struct gw_upstream ups[NUPSTREAMS]; /* the services */
	struct probe probes[NUPSTREAMS];  /* their health checks */
	struct gw_limiter *limiter;       /* per-client limits, NULL when disabled */
	struct gw_backpressure *bp;       /* lag reader and ingest limit */
	struct lp_http_server *http;      /* CivetWeb: every route, or those the front declines */
	struct lp_front *front;           /* the event front, NULL with http.front civetweb */
	struct gw_pipeline *pl;           /* the pipeline view (extra.c's routes) */
	struct gw_dashboard *dash;        /* the dashboard's control bridge */
	struct route routes[MAX_ROUTES];  /* the route table */
	size_t nroutes;
	struct slot slots[MAX_SLOTS];     /* distinct patterns */
	size_t nslots;
	struct lp_metric *limited;        /* log_events_rate_limited_total{class} */
	struct lp_metric *permits;        /* rate_limiter_available_permissions{class} */
	struct lp_metric *up_errors;      /* gateway_upstream_errors_total{upstream,kind} */
	struct lp_metric *up_latency;     /* gateway_upstream_duration_seconds{upstream} */
	/* Series of the hot path, looked up on first use (a lookup takes the
	 * registry's lock): permits by class (0 api, 1 ingest), latency by
	 * upstream. */
	struct lp_series *_Atomic permits_s[2];
	struct lp_series *_Atomic latency_s[NUPSTREAMS];
};

static const char *const upstream_names[NUPSTREAMS] = { "producer", "metadata", "enricher",
							"consumer", "generator" };

/* The RateLimit header lines of this thread's current request live in
 * route.c (gw_reply_headers), where the gateway's own routes read them. */
static __thread unsigned tl_seed; /* rand_r state for Retry-After jitter */

const char *gateway_listen(const struct gateway *g)
{
	return g->listen;
}

/* ---- small helpers ------------------------------------------------------ */

/* The series of m for one label value, cached in *slot. */
static struct lp_series *cached_series(struct lp_series *_Atomic *slot, struct lp_metric *m,
				       const char *value)
{
	struct lp_series *s = atomic_load_explicit(slot, memory_order_acquire);

	if (!s) {
		s = lp_metric_series(m, value);
		atomic_store_explicit(slot, s, memory_order_release);
	}
	return s;
}

/* The client's address, the real one for a request tunnelled by the front. */
static const char *client_addr(struct lp_http_req *r)
{
	return lp_http_remote_addr(r);
}

/* a, b and c into dst, cut to fit. */
static void join3(char *dst, size_t len, const char *a, const char *b, const char *c)
{
	size_t n = lp_strlcpy(dst, a, len);

	if (n < len)
		n += lp_strlcpy(dst + n, b, len - n);
	if (n < len)
		lp_strlcpy(dst + n, c, len - n);
}

static const char *scope_label(unsigned scope)
{
	return scope == GW_SCOPE_NONE ? "open" : gw_scope_name(scope);
}

/* ---- the access log ----------------------------------------------------- */

static void access_log(struct lp_http_req *r, const char *upstream, const char *tenant,
		       const char *trace_id, int64_t t0)
{
	char status[24], ms[32];
	int64_t us;
	size_t n;

	/* Nothing to format (nor a clock to read) below the log's level. */
	if (!lp_log_enabled(LP_LOG_INFO))
		return;
	us = lp_now_us() - t0;
	lp_fmt_u64(status, (uint64_t)(r->status > 0 ? r->status : 0));
	/* The same text as "%.3f" of the milliseconds, without printf. */
	if (us < 0)
		us = 0;
	n = lp_fmt_u64(ms, (uint64_t)us / 1000);
	ms[n] = '.';
	ms[n + 1] = (char)('0' + us / 100 % 10);
	ms[n + 2] = (char)('0' + us / 10 % 10);
	ms[n + 3] = (char)('0' + us % 10);
	ms[n + 4] = '\0';
	lp_log_kv(LP_LOG_INFO,
		  (const char *[]){ "method", r->method, "path", r->path, "status", status,
				    "duration_ms", ms, "request_id", r->request_id, "trace_id",
				    trace_id && *trace_id ? trace_id : "-", "client", client_addr(r),
				    "upstream", upstream ? upstream : "-", "tenant",
				    tenant ? tenant : "-", NULL },
		  "access");
}

/* ---- proxying ----------------------------------------------------------- */

/* "Name: value" into dst (320 bytes, the value cut to fit), without
 * snprintf: this runs up to ten times per proxied request. */
static const char *header_line(char *dst, const char *name, const char *value)
{
	size_t n = strlen(name), v = strlen(value);

	if (n + 2 + v >= 320)
		v = 320 - n - 3;
	memcpy(dst, name, n);
	memcpy(dst + n, ": ", 2);
	memcpy(dst + n + 2, value, v);
	dst[n + 2 + v] = '\0';
	return dst;
}

/* Appends the upstream's forwardable headers, minus RateLimit fields when
 * the gateway sets its own. */
static void add_forwarded(struct lp_buf *h, const struct lp_buf *from, bool ours)
{
	const char *p = from->buf;

	while (*p) {
		const char *e = strstr(p, "\r\n");
		size_t n = e ? (size_t)(e - p) + 2 : strlen(p);

		if (!(ours && strncasecmp(p, "RateLimit", 9) == 0))
			lp_buf_add(h, p, n);
		p += n;
	}
}

static void reply_upstream_failure(struct gateway *g, struct lp_http_req *r,
				   struct gw_upstream *u, enum gw_call_result res,
				   const struct gw_call *c)
{
	struct lp_buf h = LP_BUF_INIT;
	const char *kind = "failed";

	lp_buf_adds(&h, gw_reply_headers());
	switch (res) {
	case GW_CALL_OPEN: {
		int64_t ms = lp_breaker_retry_after_ms(u->breaker);

		kind = "breaker_open";
		lp_buf_addf(&h, "Retry-After: %lld\r\n", (long long)(ms + 999) / 1000 > 0 ? (long long)(ms + 999) / 1000 : 1LL);
		lp_http_reply_error(r, 503, "upstream_unavailable", h.buf,
				    "the %s service is unavailable (circuit breaker open); retry later",
				    u->name);
		break;
	}
	case GW_CALL_TIMEOUT:
		kind = "timeout";
		lp_http_reply_error(r, 504, "upstream_timeout", h.buf, "%s", c->error);
		break;
	case GW_CALL_TOO_LARGE:
		kind = "too_large";
		lp_http_reply_error(r, 502, "upstream_response_too_large", h.buf, "%s", c->error);
		break;
	default:
		lp_http_reply_error(r, 502, "bad_gateway", h.buf, "%s", c->error);
		break;
	}
	lp_series_inc(lp_metric_series(g->up_errors, u->name, kind));
	lp_warn("%s %s: %s", r->method, r->path, c->error[0] ? c->error : kind);
	lp_buf_release(&h);
}

/* A proxied request on its way: the call and the header lines it sends. */
struct hop {
	struct gw_call c;
	struct lp_buf path;    /* the percent-encoded path */
	const char *hdrs[16];  /* NULL-terminated, pointing into b or at constants */
	char b[11][320];
	int64_t t0;            /* lp_now_us() when the call began */
};

static void hop_prepare(struct hop *h, struct lp_http_req *r, const struct gw_key *key,
			const char *traceparent)
{
	const char *v, *xff;
	size_t n = 0;

	memset(&h->c, 0, sizeof(h->c));
	gw_call_init(&h->c);
	lp_buf_init(&h->path, 0);
	gw_path_encode(r->path, &h->path);

	h->hdrs[n] = header_line(h->b[n], "X-Request-ID", r->request_id), n++;
	h->hdrs[n] = header_line(h->b[n], "traceparent", traceparent), n++;
	if ((v = lp_http_header(r, "tracestate")) && strlen(v) < 256)
		h->hdrs[n] = header_line(h->b[n], "tracestate", v), n++;
	if ((v = lp_http_header(r, "Content-Type")) && strlen(v) < 256)
		h->hdrs[n] = header_line(h->b[n], "Content-Type", v), n++;
	else if (r->body_len > 0)
		h->hdrs[n++] = "Content-Type:"; /* keeps curl from claiming a form body */
	if ((v = lp_http_header(r, "Accept")) && strlen(v) < 256)
		h->hdrs[n] = header_line(h->b[n], "Accept", v), n++;
	/* OTLP exporters gzip their bodies; the producer inflates them. */
	if ((v = lp_http_header(r, "Content-Encoding")) && strlen(v) < 256)
		h->hdrs[n] = header_line(h->b[n], "Content-Encoding", v), n++;
	if ((v = lp_http_header(r, "Idempotency-Key")) && strlen(v) < 256)
		h->hdrs[n] = header_line(h->b[n], "Idempotency-Key", v), n++;
	if (key)
		h->hdrs[n] = header_line(h->b[n], "X-Tenant-ID", key->tenant), n++;
	xff = lp_http_header(r, "X-Forwarded-For");
	if (xff && strlen(xff) < 200)
		snprintf(h->b[n], sizeof(h->b[n]), "X-Forwarded-For: %s, %s", xff, client_addr(r));
	else
		header_line(h->b[n], "X-Forwarded-For", client_addr(r));
	h->hdrs[n] = h->b[n], n++;
	h->hdrs[n++] = "X-Forwarded-Proto: http";
	if ((v = lp_http_header(r, "Host")) && strlen(v) < 256)
		h->hdrs[n] = header_line(h->b[n], "X-Forwarded-Host", v), n++;
	h->hdrs[n] = NULL;

	/* HEAD goes up as GET; lp_http_reply leaves the body out. */
	h->c.method = strcmp(r->method, "HEAD") == 0 ? "GET" : r->method;
	h->c.path = h->path.buf;
	h->c.query = r->query;
	h->c.body = r->body;
	h->c.body_len = r->body_len;
	h->c.headers = h->hdrs;
	h->c.record = true;
	h->t0 = lp_now_us();
}

/* Answers r from the call's outcome. */
static void hop_reply(struct gateway *g, struct lp_http_req *r, struct gw_upstream *u,
		      struct hop *h, enum gw_call_result res, bool limited)
{
	struct lp_buf hdr = LP_BUF_INIT;

	lp_series_observe(cached_series(&g->latency_s[u - g->ups], g->up_latency, u->name),
			  (double)(lp_now_us() - h->t0) / 1e6);
	if (res != GW_CALL_OK) {
		reply_upstream_failure(g, r, u, res, &h->c);
		return;
	}
	lp_buf_adds(&hdr, gw_reply_headers());
	add_forwarded(&hdr, &h->c.headers_out, limited);
	lp_http_reply(r, h->c.status, h->c.content_type[0] ? h->c.content_type : NULL,
		      h->c.body_out.buf, h->c.body_out.len, hdr.buf);
	lp_buf_release(&hdr);
}

static void hop_release(struct hop *h)
{
	gw_call_release(&h->c);
	lp_buf_release(&h->path);
}

static void proxy(struct gateway *g, struct lp_http_req *r, struct gw_upstream *u,
		  const struct gw_key *key, const char *traceparent, bool limited)
{
	struct hop *h = lp_xmalloc(sizeof(*h));

	hop_prepare(h, r, key, traceparent);
	hop_reply(g, r, u, h, gw_upstream_call(g->pool, u, &h->c), limited);
	hop_release(h);
	free(h);
}

/* ---- the request path ----------------------------------------------------- */

/* Auth and rate limit.  Returns 1 when the request may go on, 0 when it
 * has been answered, -EAGAIN (only with nowait) when the rate limit waits
 * for a lease: nothing was answered or counted, ask again after the
 * limiter's on_lease.  Fills gw_reply_headers() with the RateLimit fields. */
static int admit(struct gateway *g, struct lp_http_req *r, const struct route *rt,
		 const struct gw_key **key, bool nowait)
{
	enum gw_auth_result ar;
	struct gw_limit d;
	const char *cls = rt->ingest ? "ingest" : "api";
	char id[96], hdr[640], *rl;
	size_t rl_len;
	long limit, cost;

	gw_reply_headers_set(NULL);
	ar = gw_auth_check(&g->auth, lp_http_header(r, "X-API-Key"),
			   lp_http_header(r, "Authorization"), rt->scope, key);
	switch (ar) {
	case GW_AUTH_OK:
		break;
	case GW_AUTH_MISSING:
		lp_http_reply_error(r, 401, "unauthorized",
				    "WWW-Authenticate: Bearer realm=\"logpipe\"\r\n",
				    "an API key is required (X-API-Key or Authorization: Bearer)");
		return 0;
	case GW_AUTH_UNKNOWN:
		lp_http_reply_error(r, 401, "invalid_api_key",
				    "WWW-Authenticate: Bearer realm=\"logpipe\", error=\"invalid_token\"\r\n",
				    "the API key is not valid");
		return 0;
	case GW_AUTH_FORBIDDEN:
		lp_http_reply_error(r, 403, "forbidden", NULL,
				    "this API key lacks the \"%s\" scope needed for %s %s",
				    scope_label(rt->scope), r->method, rt->pattern);
		return 0;
	}
	if (!g->limiter || rt->scope == GW_SCOPE_NONE)
		return 1;

	join3(id, sizeof(id), cls, *key ? ":k:" : ":ip:", *key ? (*key)->id : client_addr(r));
	/* Ingest counts events (a request costs those it carries, told from
	 * its body: gw_ingest_cost), the api class requests. */
	limit = rt->ingest ? (long)gw_bp_current_limit(g->bp) : (long)g->s->rl_rate;
	cost = rt->ingest ? gw_ingest_cost(rt->form, r->body, r->body_len) : 1;
	if (nowait)
		gw_limiter_take(g->limiter, id, limit, cost, &d);
	else
		gw_limiter_take_wait(g->limiter, id, limit, cost, &d);
	if (d.pending)
		return -EAGAIN;
	rl = gw_reply_headers_buf(&rl_len);
	gw_ratelimit_headers(&d, rt->ingest ? "events" : "requests", rl, rl_len);
	lp_series_set(cached_series(&g->permits_s[rt->ingest], g->permits, cls),
		      (double)d.remaining);
	if (d.allowed)
		return 1;

	if (!tl_seed)
		tl_seed = (unsigned)lp_now_us() ^ (unsigned)(uintptr_t)&tl_seed;
	lp_series_inc(lp_metric_series(g->limited, cls));
	snprintf(hdr, sizeof(hdr), "%sRetry-After: %d\r\n", gw_reply_headers(),
		 gw_retry_after_s(d.reset_s, (int)g->s->rl_retry_jitter_s, &tl_seed));
	if (d.too_large) {
		/* Retrying cannot help until the limit rises (the lag falls):
		 * a 413 with Retry-After, not a 429 to retry every second. */
		lp_http_reply_error(r, 413, "batch_over_rate_limit", hdr,
				    "this request carries %ld events, more than the ingest limit "
				    "of %ld events per second admits at once%s; send smaller "
				    "batches",
				    cost, d.limit,
				    d.limit < g->s->rl_rate
					    ? " (reduced by backpressure; see GET /api/logs/health)"
					    : "");
		return 0;
	}
	if (rt->ingest)
		lp_http_reply_error(r, 429, "rate_limited", hdr,
				    "rate limit of %ld events per second exceeded (this request "
				    "carries %ld)%s",
				    d.limit, cost,
				    d.limit < g->s->rl_rate
					    ? " (ingest reduced by backpressure; see GET "
					      "/api/logs/health)"
					    : "");
	else
		lp_http_reply_error(r, 429, "rate_limited", hdr,
				    "rate limit of %ld requests per second exceeded", d.limit);
	return 0;
}

/* The route of slot sl for method m, or NULL; allow (when not NULL)
 * receives the methods of the routes looked at before. */
static const struct route *route_for(struct gateway *g, const struct slot *sl, const char *m,
				     struct lp_buf *allow)
{
	size_t i;

	for (i = 0; i < g->nroutes; i++) {
		if (g->routes[i].slot != sl)
			continue;
		if (strcmp(g->routes[i].method, m) == 0)
			return &g->routes[i];
		if (allow && !strstr(allow->buf, g->routes[i].method)) {
			if (allow->len)
				lp_buf_adds(allow, ", ");
			lp_buf_adds(allow, g->routes[i].method);
		}
	}
	return NULL;
}

/* A route whose answer streams (GET /api/logs/tail): the same headers as
 * proxy, Last-Event-ID too, on a connection of its own (stream.h).  The
 * breaker is asked first and fed with whether the answer's head came. */
static void stream_proxy(struct gateway *g, struct lp_http_req *r, struct gw_upstream *u,
			 const struct gw_key *key, const char *traceparent)
{
	struct hop *h = lp_xmalloc(sizeof(*h));
	struct gw_stream_call sc = { 0 };
	const char *hdrs[20], *v;
	char last[96];
	enum gw_call_result res;
	size_t n = 0;

	hop_prepare(h, r, key, traceparent);
	if (!u->target || !lp_breaker_allow(u->breaker)) {
		snprintf(h->c.error, sizeof(h->c.error), "%s", "not attempted");
		reply_upstream_failure(g, r, u, u->target ? GW_CALL_OPEN : GW_CALL_FAILED,
				       &h->c);
		hop_release(h);
		free(h);
		return;
	}
	for (; h->hdrs[n] && n < LP_ARRAY_SIZE(hdrs) - 2; n++)
		hdrs[n] = h->hdrs[n];
	if ((v = lp_http_header(r, "Last-Event-ID")) && strlen(v) < 64) {
		snprintf(last, sizeof(last), "Last-Event-ID: %s", v);
		hdrs[n++] = last;
	}
	hdrs[n] = NULL;
	sc.target = u->target;
	sc.method = r->method;
	sc.path = h->c.path;
	sc.query = r->query;
	sc.headers = hdrs;
	sc.reply_headers = gw_reply_headers();
	sc.connect_timeout_ms = u->connect_timeout_ms;
	sc.head_timeout_ms = u->timeout_ms;
	sc.stop = &g->stop_streams;
	res = gw_stream_proxy(r, &sc, h->c.error, sizeof(h->c.error));
	lp_breaker_record(u->breaker, res == GW_CALL_OK,
			  res == GW_CALL_OK ? sc.head_ms : (lp_now_us() - h->t0) / 1000);
	if (res != GW_CALL_OK)
		reply_upstream_failure(g, r, u, res, &h->c);
	hop_release(h);
	free(h);
}

static void dispatch(struct lp_http_req *r, void *ud)
{
	struct slot *sl = ud;
	struct gateway *g = sl->g;
	const char *m = strcmp(r->method, "HEAD") == 0 ? "GET" : r->method;
	const struct route *rt;
	const struct gw_key *key = NULL;
	struct lp_buf allow = LP_BUF_INIT;
	char traceparent[56], trace_id[33];
	int64_t t0 = lp_now_us();

	gw_traceparent(lp_http_header(r, "traceparent"), traceparent, trace_id);
	rt = route_for(g, sl, m, &allow);
	if (!rt && allow.len == 0) {
		lp_http_reply_error(r, 404, "not_found", NULL, "no resource at %s", r->path);
	} else if (!rt) {
		char hdr[160];

		snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow.buf);
		lp_http_reply_error(r, 405, "method_not_allowed", hdr,
				    "%s is not allowed on %s; allowed: %s", r->method, r->path,
				    allow.buf);
	} else if (admit(g, r, rt, &key, false) > 0) {
		if (rt->up && rt->stream)
			stream_proxy(g, r, rt->up, key, traceparent);
		else if (rt->up)
			proxy(g, r, rt->up, key, traceparent, g->limiter != NULL);
		else
			rt->fn(r, rt->ud);
	}
	access_log(r, rt && rt->up ? rt->up->name : NULL, key ? key->tenant : NULL, trace_id, t0);
	gw_reply_headers_set(NULL);
	lp_buf_release(&allow);
}

/* ---- the event front's fast path ---------------------------------------------
 * The same steps as dispatch and proxy for a request the front read, split
 * at the upstream call: fast_start admits the request and builds the call,
 * fast_finish answers from its outcome.  Everything else (local routes, 404,
 * 405, an upstream libcurl calls) is declined and served by dispatch. */

/* A request between fast_start and fast_finish. */
struct fast {
	struct lp_http_req r;
	struct lp_http_front fr;   /* r's view of the front's connection */
	const struct route *rt;
	const char *label;         /* its pattern, the metrics label */
	const struct gw_key *key;
	char trace_id[33];
	char limit_headers[512];   /* gw_reply_headers() after admit */
	int64_t t0;                /* lp_now_us() when the request began */
	int64_t call_t0_ms;        /* lp_now_ms() when the call began */
	struct hop hop;
};

/* A struct fast is about 4.5 kB, too large for malloc's per-thread cache:
 * malloc and free of one per request went through the shared arena's bins
 * (with their consolidation).  Each loop thread keeps up to FAST_KEEP freed
 * ones instead, in a list that a thread-specific key owns and frees when
 * the thread ends.  FAST_KEEP is about the requests a loop has in flight
 * at a few hundred connections (with 64, a third of them still went to
 * malloc at 256 connections on two loops); the list only grows to the
 * largest number in flight at once, 1.1 MB per loop at most. */
#define FAST_KEEP 256

struct fast_cache {
	struct fast *top;  /* freed requests, linked through their first bytes */
	unsigned n;
};

static pthread_key_t fast_key;
static pthread_once_t fast_once = PTHREAD_ONCE_INIT;

static void fast_cache_free(void *p)
{
	struct fast_cache *fc = p;

	while (fc->top) {
		struct fast *f = fc->top;

		memcpy(&fc->top, f, sizeof(fc->top));
		free(f);
	}
	free(fc);
}

static void fast_key_make(void)
{
	if (pthread_key_create(&fast_key, fast_cache_free) != 0)
		abort();
}

static struct fast *fast_alloc(void)
{
	struct fast_cache *fc;
	struct fast *f;

	pthread_once(&fast_once, fast_key_make);
	fc = pthread_getspecific(fast_key);
	if (!fc || !fc->top)
		return lp_xmalloc(sizeof(struct fast));
	f = fc->top;
	memcpy(&fc->top, f, sizeof(fc->top));
	fc->n--;
	return f;
}

/* Frees f, or keeps it for this thread's next request. */
static void fast_free(struct fast *f)
{
	struct fast_cache *fc = pthread_getspecific(fast_key);

	if (!fc) {
		fc = lp_xcalloc(1, sizeof(*fc));
		if (pthread_setspecific(fast_key, fc) != 0) {
			free(fc);
			free(f);
			return;
		}
	}
	if (fc->n >= FAST_KEEP) {
		free(f);
		return;
	}
	memcpy(f, &fc->top, sizeof(fc->top));
	fc->top = f;
	fc->n++;
}

static const char *fast_header(void *ud, const char *name)
{
	size_t len;

	return lp_rq_header(ud, name, &len);
}

/* Logs and counts f's request and frees f. */
static void fast_end(struct gateway *g, struct fast *f)
{
	access_log(&f->r, f->rt->up ? f->rt->up->name : NULL, f->key ? f->key->tenant : NULL,
		   f->trace_id, f->t0);
	lp_http_front_end(g->http, &f->r, f->label, f->t0);
	gw_reply_headers_set(NULL);
	fast_free(f);
}

static enum lp_front_verdict fast_start(void *ud, struct lp_front_req *q)
{
	struct gateway *g = ud;
	struct fast *f = fast_alloc();
	struct gw_upstream *u;
	enum gw_call_result res;
	lp_http_handler fn = NULL;
	void *hud = NULL;
	char traceparent[56];

	memset(f, 0, offsetof(struct fast, hop));
	f->t0 = lp_now_us();
	f->fr.header = fast_header;
	f->fr.ud = (void *)(uintptr_t)q->head;
	f->fr.remote_addr = q->remote_addr;
	f->fr.keep_alive = !q->close;
	f->fr.out = q->reply;
	if (lp_http_front_begin(&f->r, &f->fr, q->method, q->path, q->query, q->body,
				q->body_len) < 0) {
		fast_free(f);
		return LP_FRONT_DECLINE;
	}
	f->label = lp_http_find(g->http, q->method, f->r.path, &fn, &hud);
	if (f->label && fn == dispatch)
		f->rt = route_for(g, hud, q->method, NULL);
	/* Streams are CivetWeb's: the front answers only whole answers. */
	if (!f->rt || !f->rt->up || !f->rt->up->target || f->rt->stream) {
		lp_http_front_end(g->http, &f->r, NULL, 0);
		fast_free(f);
		return LP_FRONT_DECLINE;
	}
	u = f->rt->up;
	gw_traceparent(lp_http_header(&f->r, "traceparent"), traceparent, f->trace_id);
	switch (admit(g, &f->r, f->rt, &f->key, true)) {
	case 1:
		break;
	case 0:
		fast_end(g, f);
		return LP_FRONT_REPLY;
	default: /* a rate-limit lease in flight: the loop must not wait for it */
		lp_http_front_end(g->http, &f->r, NULL, 0);
		gw_reply_headers_set(NULL);
		fast_free(f);
		return LP_FRONT_LATER;
	}
	hop_prepare(&f->hop, &f->r, f->key, traceparent);
	res = gw_upstream_begin(u, &f->hop.c, q->call);
	if (res != GW_CALL_OK) {
		hop_reply(g, &f->r, u, &f->hop, res, g->limiter != NULL);
		hop_release(&f->hop);
		fast_end(g, f);
		return LP_FRONT_REPLY;
	}
	lp_strlcpy(f->limit_headers, gw_reply_headers(), sizeof(f->limit_headers));
	gw_reply_headers_set(NULL);
	lp_log_set_request(NULL, NULL);
	f->call_t0_ms = lp_now_ms();
	q->target = u->target;
	q->timeout_ms = u->timeout_ms;
	q->connect_timeout_ms = u->connect_timeout_ms;
	q->state = f;
	return LP_FRONT_CALL;
}

static void fast_finish(void *ud, struct lp_front_req *q, char *answer, size_t n,
			enum lp_h1_result io, const char *err)
{
	struct gateway *g = ud;
	struct fast *f = q->state;
	struct gw_upstream *u = f->rt->up;
	enum gw_call_result res;

	lp_log_set_request(f->r.request_id, f->trace_id[0] ? f->trace_id : NULL);
	gw_reply_headers_set(f->limit_headers);
	res = gw_upstream_end(u, &f->hop.c, answer, n, io, err, f->call_t0_ms);
	hop_reply(g, &f->r, u, &f->hop, res, g->limiter != NULL);
	hop_release(&f->hop);
	fast_end(g, f);
}

/* A rate-limit lease ended: the requests waiting for one are offered again. */
static void lease_ended(void *ud)
{
	lp_front_kick(ud);
}

static void fast_cancel(void *ud, struct lp_front_req *q)
{
	struct fast *f = q->state;

	(void)ud;
	hop_release(&f->hop);
	lp_http_front_end(NULL, &f->r, NULL, 0); /* frees, counts nothing */
	free(f); /* maybe on the thread that stops the front: not kept */
}

/* Registers pattern with the HTTP server once; returns its slot or NULL. */
static struct slot *add_slot(struct gateway *g, const char *pattern)
{
	struct slot *sl;
	size_t i;

	for (i = 0; i < g->nslots; i++)
		if (strcmp(g->slots[i].pattern, pattern) == 0)
			return &g->slots[i];
	if (g->nslots == MAX_SLOTS)
		return NULL;
	sl = &g->slots[g->nslots];
	sl->g = g;
	lp_strlcpy(sl->pattern, pattern, sizeof(sl->pattern));
	if (lp_http_route(g->http, NULL, sl->pattern, dispatch, sl) < 0)
		return NULL;
	g->nslots++;
	return sl;
}

/* Adds a row to the route table, registering its pattern once. */
static int add_route(struct gateway *g, const char *method, const char *pattern, unsigned scope,
		     bool ingest, struct gw_upstream *up, lp_http_handler fn, void *ud)
{
	struct route *rt;
	struct slot *sl;

	if (g->nroutes == MAX_ROUTES || strlen(pattern) >= sizeof(sl->pattern))
		return -ENOSPC;
	sl = add_slot(g, pattern);
	if (!sl)
		return -ENOSPC;
	rt = &g->routes[g->nroutes];
	memset(rt, 0, sizeof(*rt));
	rt->method = lp_xstrdup(method);
	rt->pattern = lp_xstrdup(pattern);
	rt->slot = sl;
	rt->scope = scope;
	rt->ingest = ingest;
	rt->form = strcmp(pattern, "/api/logs/batch") == 0 ? GW_INGEST_BATCH
		   : strcmp(pattern, "/v1/logs") == 0     ? GW_INGEST_OTLP
							  : GW_INGEST_ONE;
	rt->up = up;
	rt->fn = fn;
	rt->ud = ud;
	g->nroutes++;
	return 0;
}

/* struct gw_routes' add (route.h): a route of a module below, served by
 * its own handler. */
static int route_add(void *ctx, const char *method, const char *pattern, unsigned scope,
		     lp_http_handler fn, void *ud)
{
	struct gateway *g = ctx;

	if (!method || !pattern || !fn)
		return -EINVAL;
	return add_route(g, method, pattern, scope, false, NULL, fn, ud);
}

/* The pipeline view's source of the consumer lag: the lag reader. */
static void lag_of(void *ud, struct gw_bp_snapshot *out)
{
	gw_bp_snapshot(ud, out);
}

/* The routes of the modules below (dashboard.c, extra.c): registered
 * before the proxied routes, so that their patterns take precedence. */
static int add_local_routes(struct gateway *g, char *err, size_t errlen)
{
	const struct gateway_settings *s = g->s;
	struct gw_routes reg = { route_add, g };
	struct gw_pipeline_opts o = { 0 };

	o.urls[GW_PL_PRODUCER] = s->up_producer;
	o.urls[GW_PL_METADATA] = s->up_metadata;
	o.urls[GW_PL_ENRICHER] = s->up_enricher;
	o.urls[GW_PL_CONSUMER] = s->up_consumer;
	o.urls[GW_PL_GENERATOR] = s->up_generator;
	o.brokers = s->kafka_brokers;
	o.topics[GW_PL_RAW] = s->topic_raw;
	o.topics[GW_PL_COMPLETE] = s->topic_complete;
	o.topics[GW_PL_PARTIAL] = s->topic_partial;
	o.topics[GW_PL_DLQ] = s->topic_dlq;
	o.groups = s->bp_groups;
	o.kafka_data_dir = s->pl_kafka_data_dir;
	o.pg_data_dir = s->pl_pg_data_dir;
	o.sample_ms = (int)s->pl_sample_ms;
	o.lag = lag_of;
	o.lag_ud = g->bp;
	g->pl = gw_pipeline_start(&o, err, errlen);
	if (!g->pl)
		return -EINVAL;
	g->dash = gw_dashboard_new(s->up_control, g->auth.nkeys > 0);
	if (gw_dashboard_routes(&reg, g->dash) < 0 || gw_extra_routes(&reg, g->pl) < 0) {
		snprintf(err, errlen, "cannot register the routes");
		return -ENOSPC;
	}
	return 0;
}

/* ---- GET /api/logs/health ----------------------------------------------- */

static void handle_ingest_health(struct lp_http_req *r, void *ud)
{
	struct gateway *g = ud;
	struct gw_bp_snapshot s;
	json_t *groups = json_object(), *o;
	char when[32];
	size_t i;

	gw_bp_snapshot(g->bp, &s);
	for (i = 0; i < s.ngroups; i++)
		json_object_set_new(groups, s.groups[i].name,
				    s.groups[i].lag >= 0 ? json_integer(s.groups[i].lag) : json_null());
	o = json_pack("{s:s, s:o, s:I, s:I, s:I, s:{s:I, s:I}, s:o, s:b, s:b}", "status",
		      gw_bp_state_name(s.state), "consumer_lag",
		      s.lag >= 0 ? json_integer(s.lag) : json_null(), "current_limit",
		      (json_int_t)s.limit, "normal_limit", (json_int_t)s.policy.rate, "floor",
		      (json_int_t)s.policy.floor, "thresholds", "lag_normal",
		      (json_int_t)s.policy.lag_normal, "lag_critical",
		      (json_int_t)s.policy.lag_critical, "groups", groups, "lag_monitoring",
		      s.enabled, "rate_limit_shared", gw_limiter_shared(g->limiter));
	if (s.updated_ms) {
		lp_rfc3339(s.updated_ms, when);
		json_object_set_new(o, "lag_read_at", json_string(when));
		json_object_set_new(o, "lag_age_ms", json_integer(s.age_ms));
	}
	json_object_set_new(o, "error", s.error[0] ? json_string(s.error) : json_null());
	lp_http_reply_json(r, 200, o, gw_reply_headers());
}

/* ---- health checks ------------------------------------------------------- */

static bool upstream_healthy(void *ud, char *detail, size_t len)
{
	struct probe *pr = ud;
	struct gateway *g = pr->g;
	struct gw_upstream *u = pr->u;
	struct gw_call c;
	bool up;

	memset(&c, 0, sizeof(c));
	gw_call_init(&c);
	c.method = "GET";
	c.path = "/health/ready";
	c.timeout_ms = (long)g->s->up_health_timeout_ms;
	c.record = false;
	if (gw_upstream_call(g->pool, u, &c) != GW_CALL_OK) {
		snprintf(detail, len, "%s", c.error);
		up = false;
	} else {
		up = c.status == 200;
		if (up)
			snprintf(detail, len, "%s ready", u->base);
		else
			snprintf(detail, len, "%s/health/ready answered %d: %.120s", u->base,
				 c.status, c.body_out.buf);
	}
	gw_call_release(&c);
	return up;
}

static bool redis_healthy(void *ud, char *detail, size_t len)
{
	struct gateway *g = ud;

	if (gw_limiter_ping(g->limiter) == 0) {
		snprintf(detail, len, "rate limits shared through %s", g->s->redis_url);
		return true;
	}
	snprintf(detail, len, "unreachable: each instance enforces limit/%lld locally",
		 g->s->rl_instances);
	return false;
}

/* UP while the last good lag reading is recent; a failed reading or two
 * (a coordinator moving) only shows in the detail. */
static bool lag_healthy(void *ud, char *detail, size_t len)
{
	struct gateway *g = ud;
	struct gw_bp_snapshot s;
	int64_t stale_ms = 5 * g->s->bp_interval_ms > 5000 ? 5 * g->s->bp_interval_ms : 5000;

	gw_bp_snapshot(g->bp, &s);
	if (s.lag < 0) {
		snprintf(detail, len, "%s", s.error[0] ? s.error : "no reading yet");
		return false;
	}
	snprintf(detail, len, "%s: lag %lld, ingest limit %lld events/s, read %lld ms ago%s%.100s",
		 gw_bp_state_name(s.state), s.lag, s.limit, (long long)s.age_ms,
		 s.error[0] ? "; last try: " : "", s.error);
	return s.age_ms <= stale_ms;
}

/* ---- lifecycle ---------------------------------------------------------- */

static int add_routes(struct gateway *g)
{
	struct gw_upstream *prod = &g->ups[UP_PRODUCER], *meta = &g->ups[UP_METADATA],
			   *cons = &g->ups[UP_CONSUMER], *gen = &g->ups[UP_GENERATOR];
	static const char *const writes[] = { "POST", "PUT", "PATCH", "DELETE" };
	static const char *const meta_patterns[] = { "/api/metadata/hosts", "/api/metadata/hosts/*",
						     "/api/metadata/services",
						     "/api/metadata/services/*" };
	size_t i, j;
	int rc = 0;

	/* The gateway's own, before the consumer's /api/logs/{id}. */
	rc |= add_route(g, "GET", "/api/logs/health", GW_SCOPE_READ, false, NULL,
			handle_ingest_health, g);
	rc |= add_route(g, "POST", "/api/logs", GW_SCOPE_INGEST, true, prod, NULL, NULL);
	rc |= add_route(g, "GET", "/api/logs", GW_SCOPE_READ, false, cons, NULL, NULL);
	rc |= add_route(g, "POST", "/api/logs/batch", GW_SCOPE_INGEST, true, prod, NULL, NULL);
	/* OpenTelemetry's OTLP/HTTP logs export: ingest like the two above. */
	rc |= add_route(g, "POST", "/v1/logs", GW_SCOPE_INGEST, true, prod, NULL, NULL);
	/* The live tail, streamed (stream.h), before /api/logs/{id}. */
	rc |= add_route(g, "GET", "/api/logs/tail", GW_SCOPE_READ, false, cons, NULL, NULL);
	if (rc == 0)
		g->routes[g->nroutes - 1].stream = true;
	rc |= add_route(g, "GET", "/api/logs/*", GW_SCOPE_READ, false, cons, NULL, NULL);
	rc |= add_route(g, "GET", "/api/stats", GW_SCOPE_READ, false, cons, NULL, NULL);
	for (i = 0; i < LP_ARRAY_SIZE(meta_patterns); i++) {
		rc |= add_route(g, "GET", meta_patterns[i], GW_SCOPE_READ, false, meta, NULL, NULL);
		for (j = 0; j < LP_ARRAY_SIZE(writes); j++)
			rc |= add_route(g, writes[j], meta_patterns[i], GW_SCOPE_ADMIN, false, meta,
					NULL, NULL);
	}
	/* start, stop, status, catalog: reading is read, any change is admin. */
	rc |= add_route(g, "GET", "/api/v1/generator/*", GW_SCOPE_READ, false, gen, NULL, NULL);
	for (j = 0; j < LP_ARRAY_SIZE(writes); j++)
		rc |= add_route(g, writes[j], "/api/v1/generator/*", GW_SCOPE_ADMIN, false, gen,
				NULL, NULL);
	/* Seed 004's names for start and stop, which the generator serves too. */
	rc |= add_route(g, "POST", "/start", GW_SCOPE_ADMIN, false, gen, NULL, NULL);
	rc |= add_route(g, "POST", "/stop", GW_SCOPE_ADMIN, false, gen, NULL, NULL);
	/* Last: every other path gets a JSON 404 and an access line. */
	rc |= add_slot(g, "/*") ? 0 : -1;
	return rc ? -ENOSPC : 0;
}

static void init_upstream(struct gateway *g, int i, const char *base, long long timeout)
{
	struct gw_upstream *u = &g->ups[i];
	size_t n = strlen(base);

	while (n > 0 && base[n - 1] == '/')
		n--;
	u->name = upstream_names[i];
	u->base = lp_xmalloc(n + 1);
	memcpy(u->base, base, n);
	u->base[n] = '\0';
	u->timeout_ms = (long)(timeout > 0 ? timeout : g->s->up_timeout_ms);
	u->connect_timeout_ms = (long)g->s->up_connect_timeout_ms;
	u->max_response = (size_t)g->s->up_max_response;
	u->breaker = lp_breaker_new(u->name, NULL);
	gw_upstream_prepare(u);
}

struct gateway *gateway_start(const struct gateway_settings *s, char *err, size_t errlen)
{
	struct gateway *g = lp_xcalloc(1, sizeof(*g));
	struct lp_registry *reg = lp_registry_default();
	struct lp_http_opts ho = { 0 };
	struct lp_front_handler fh = { 0 };
	struct gw_bp_opts bo = { 0 };
	int i;

	g->s = s;
	if (gw_auth_parse(&g->auth, s->auth_keys, err, errlen) < 0)
		goto fail;
	g->listen = lp_xstrdup(s->http_listen && *s->http_listen
				       ? s->http_listen
				       : (g->auth.nkeys ? "8080" : "127.0.0.1:8080"));
	if (g->auth.nkeys == 0) {
		if (!gw_listen_is_loopback(g->listen) && !s->auth_allow_open) {
			snprintf(err, errlen,
				 "auth is off (auth.keys is empty) and http.listen \"%s\" is not "
				 "loopback; configure keys or set auth.allow_open",
				 g->listen);
			goto fail;
		}
		lp_warn("authentication is OFF: no API keys configured (auth.keys); "
			"every client is anonymous%s",
			gw_listen_is_loopback(g->listen) ? ", so listening on loopback only"
						      : " and auth.allow_open exposes it");
	} else {
		lp_info("authentication on: %zu API keys", g->auth.nkeys);
	}
	if (s->bp_lag_critical < s->bp_lag_normal) {
		snprintf(err, errlen, "backpressure.lag_critical (%lld) is below lag_normal (%lld)",
			 s->bp_lag_critical, s->bp_lag_normal);
		goto fail;
	}

	g->limited = lp_metric_new(reg, LP_COUNTER, "log_events_rate_limited_total",
				   "Requests refused with 429, by class (ingest or api)", "class",
				   NULL, 0);
	g->permits = lp_metric_new(reg, LP_GAUGE, "rate_limiter_available_permissions",
				   "Requests left in the window of the last client served, by class",
				   "class", NULL, 0);
	g->up_errors = lp_metric_new(reg, LP_COUNTER, "gateway_upstream_errors_total",
				     "Upstream calls that failed, by upstream and kind",
				     "upstream,kind", NULL, 0);
	g->up_latency = lp_metric_new(reg, LP_HISTOGRAM, "gateway_upstream_duration_seconds",
				      "Upstream call duration in seconds", "upstream", NULL, 0);

	g->pool = gw_pool_new();
	init_upstream(g, UP_PRODUCER, s->up_producer, s->up_producer_timeout_ms);
	init_upstream(g, UP_METADATA, s->up_metadata, s->up_metadata_timeout_ms);
	init_upstream(g, UP_ENRICHER, s->up_enricher, s->up_enricher_timeout_ms);
	init_upstream(g, UP_CONSUMER, s->up_consumer, s->up_consumer_timeout_ms);
	init_upstream(g, UP_GENERATOR, s->up_generator, s->up_generator_timeout_ms);

	bo.brokers = s->kafka_brokers;
	bo.groups = s->bp_groups;
	bo.interval_ms = (int)s->bp_interval_ms;
	bo.policy.rate = s->rl_rate;
	bo.policy.lag_normal = s->bp_lag_normal;
	bo.policy.lag_critical = s->bp_lag_critical;
	bo.policy.floor = s->bp_floor;
	g->bp = gw_bp_start(&bo, err, errlen);
	if (!g->bp)
		goto fail;

	if (s->rl_enabled) {
		struct gw_limiter_opts lo = { 0 };

		lo.redis_url = s->redis_url;
		lo.redis_timeout_ms = (int)s->redis_timeout_ms;
		lo.lease_divisor = (int)s->rl_lease_divisor;
		lo.burst_ratio = s->rl_burst > 0 ? (double)s->rl_burst / (double)s->rl_rate : 1.0;
		lo.instances = (int)s->rl_instances;
		g->limiter = gw_limiter_new(&lo);
	}

	/* The server's event front (http.front events) offers the proxied
	 * routes to fast_start before it passes a request to CivetWeb. */
	ho.listen = g->listen;
	ho.front = s->http_front;
	ho.front_loops = (int)s->http_loops;
	fh.start = fast_start;
	fh.finish = fast_finish;
	fh.cancel = fast_cancel;
	fh.ud = g;
	ho.handler = &fh;
	ho.threads = (int)s->http_threads;
	ho.max_body = (size_t)s->http_max_body;
	ho.request_timeout_ms = (int)s->http_timeout_ms;
	ho.service = "gateway";
	g->http = lp_http_server_new(&ho, err, errlen);
	if (!g->http)
		goto fail;
	if (add_local_routes(g, err, errlen) < 0)
		goto fail;
	if (add_routes(g) < 0) {
		snprintf(err, errlen, "cannot register the routes");
		goto fail;
	}
	for (i = 0; i < NUPSTREAMS; i++) {
		g->probes[i].g = g;
		g->probes[i].u = &g->ups[i];
		lp_http_health(g->http, g->ups[i].name, false, upstream_healthy, &g->probes[i],
			       g->ups[i].breaker);
	}
	if (g->limiter && gw_limiter_breaker(g->limiter))
		lp_http_health(g->http, "redis", false, redis_healthy, g,
			       gw_limiter_breaker(g->limiter));
	if (s->kafka_brokers && *s->kafka_brokers)
		lp_http_health(g->http, "kafka_lag", false, lag_healthy, g, NULL);
	if (lp_http_start(g->http, err, errlen) < 0)
		goto fail;
	g->front = lp_http_event_front(g->http);
	if (g->front && g->limiter)
		gw_limiter_on_lease(g->limiter, lease_ended, g->front);
	return g;
fail:
	gateway_stop(g);
	return NULL;
}

void gateway_stop(struct gateway *g)
{
	size_t i;

	if (!g)
		return;
	/* lp_http_server_free stops in order: the front's requests first;
	 * then the front lets go of the handler (fast_start reads CivetWeb's
	 * route table, fast_finish counts in it), cancelling what a quiesce
	 * that timed out left; then CivetWeb's requests (whose answers still
	 * flow through the front's tunnels); then the front itself.  No lease
	 * kicks the front from here on: the sweep offers waiting requests
	 * again by itself. */
	atomic_store(&g->stop_streams, true); /* live tails would hold the server */
	if (g->limiter)
		gw_limiter_on_lease(g->limiter, NULL, NULL);
	lp_http_server_free(g->http);
	g->front = NULL;
	gw_pipeline_stop(g->pl);
	gw_dashboard_free(g->dash);
	gw_bp_stop(g->bp);
	gw_limiter_free(g->limiter);
	for (i = 0; i < NUPSTREAMS; i++) {
		gw_upstream_release(&g->ups[i]);
		free(g->ups[i].base);
		lp_breaker_free(g->ups[i].breaker);
	}
	gw_pool_free(g->pool);
	for (i = 0; i < g->nroutes; i++) {
		free(g->routes[i].method);
		free(g->routes[i].pattern);
	}
	gw_auth_release(&g->auth);
	free(g->listen);
	free(g);
}
