/* upstream.h - the services behind the gateway.
 *
 * One struct gw_upstream per service: its base URL, its timeout and its
 * circuit breaker ("producer", "consumer", ...).  Plain http:// upstreams
 * are called with the gateway's own HTTP/1.1 client (h1.h), others with
 * libcurl; either way connections are kept alive in the pool between
 * calls, so in steady state a proxied request reuses a warm connection and
 * costs no TCP handshake.
 *
 * Thread-safe: any number of threads may call gw_upstream_call at once. */
#ifndef LOGPIPE_GATEWAY_UPSTREAM_H
#define LOGPIPE_GATEWAY_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "logpipe/buf.h"
#include "logpipe/h1.h"


struct lp_breaker;
struct gw_pool;

#define GW_ERROR_LEN 256

struct gw_upstream {
	const char *name;          /* "producer", ...: breaker and metric label */
	char *base;                /* "http://127.0.0.1:8081", no trailing '/' (owned) */
	long timeout_ms;           /* whole-call timeout */
	long connect_timeout_ms;   /* TCP connect timeout */
	size_t max_response;       /* larger upstream bodies give 502 */
	struct lp_breaker *breaker; /* one per upstream */
	struct lp_h1_target *target;  /* base parsed for the HTTP/1.1 client (owned),
				    * NULL: parsed on each call */
};

/* Parses u->base once for the HTTP/1.1 client (gw_upstream_call would
 * otherwise parse it on every call); gw_upstream_release frees it. */
void gw_upstream_prepare(struct gw_upstream *u);
void gw_upstream_release(struct gw_upstream *u);

/* Outcome of one call, beyond the HTTP status. */
enum gw_call_result {
	GW_CALL_OK,        /* an HTTP answer came back (any status) */
	GW_CALL_OPEN,      /* breaker open: not attempted (503) */
	GW_CALL_TIMEOUT,   /* timed out (504) */
	GW_CALL_FAILED,    /* connection or protocol error (502) */
	GW_CALL_TOO_LARGE, /* answer larger than max_response (502) */
};

struct gw_call {
	/* in */
	const char *method;        /* "GET", "POST", ... */
	const char *path;          /* already percent-encoded, starts with '/' */
	const char *query;         /* raw query string without '?', or NULL */
	const char *body;          /* request body or NULL */
	size_t body_len;
	const char *const *headers; /* "Name: value" strings, NULL-terminated, or NULL */
	long timeout_ms;           /* 0: the upstream's */
	bool record;               /* count the outcome in the breaker */
	/* out */
	int status;                /* HTTP status when GW_CALL_OK */
	struct lp_buf body_out;    /* response body (caller releases) */
	struct lp_buf headers_out; /* forwardable response headers, "Name: value\r\n" */
	char content_type[128];    /* response Content-Type, "" if none */
	char error[GW_ERROR_LEN];     /* what failed, for logs and error bodies */
};
struct gw_pool *gw_pool_new(void);
/* Frees every handle (closing their connections).  NULL is a no-op. */
void gw_pool_free(struct gw_pool *p);

/* Initialises c's output buffers; call before gw_upstream_call. */
void gw_call_init(struct gw_call *c);
void gw_call_release(struct gw_call *c);
/* Performs the call through the breaker of u (unless c->record is false,
 * when the breaker is neither consulted nor fed: health probes).  A 5xx
 * other than 503 counts as a failure; a 503 is a deliberate, fast refusal
 * by a live service and does not. */
enum gw_call_result gw_upstream_call(struct gw_pool *p, struct gw_upstream *u,
				     struct gw_call *c);

/* ---- the same call in steps, for a caller with its own sockets ----------
 * (the gateway's event front; only for an upstream whose target is set,
 * a plain http:// one).  gw_upstream_begin asks the breaker (GW_CALL_OPEN,
 * with c->error, when it refuses) and appends the whole request to out:
 * the head, then c->body when the method sends one.  The caller sends it, receives the whole answer (lp_h1_parse_answer with NULL sinks tells
 * where it ends), and hands it to gw_upstream_end with io LP_H1_OK, or tells
 * it the call failed (io LP_H1_TIMEOUT or LP_H1_FAILED, io_err the cause).
 * gw_upstream_end fills c as gw_upstream_call does and feeds the breaker;
 * t0_ms is lp_now_ms() when the call began. */
enum gw_call_result gw_upstream_begin(struct gw_upstream *u, struct gw_call *c,
				      struct lp_buf *out);
enum gw_call_result gw_upstream_end(struct gw_upstream *u, struct gw_call *c, char *answer,
				    size_t n, enum lp_h1_result io, const char *io_err, int64_t t0_ms);

/* True for response headers worth passing to the client (Retry-After,
 * Location, RateLimit*, ...); hop-by-hop and framing headers are not. */
bool gw_header_forwardable(const char *name, size_t len);
/* Percent-encodes a decoded path for an upstream URL: keeps unreserved
 * characters, sub-delims, ':', '@' and '/'. */
void gw_path_encode(const char *path, struct lp_buf *out);
/* The traceparent to send upstream (W3C Trace Context): the caller's
 * trace with a new span id for this hop, or a new sampled trace when `in`
 * is NULL or malformed.  trace_id receives the 32 hex digits of the trace. */
void gw_traceparent(const char *in, char out[56], char trace_id[33]);

#endif
