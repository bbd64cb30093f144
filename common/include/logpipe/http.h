/* http.h - HTTP server helpers over CivetWeb: routing, JSON replies and
 * errors, body-size limit, and the health and metrics endpoints every
 * service serves.
 *
 * A service creates a server, registers routes and health checks, then
 * starts it.  Handlers run on CivetWeb's worker threads (async routes on
 * the event front's loops too), so they must be thread-safe.  Every server answers, without registration:
 *   GET /health/live   200 {"status":"UP"} while the process serves (on the
 *                      event front's loop: CivetWeb's workers may all be busy);
 *   GET /health/ready  200, or 503 with the failing required checks;
 *   GET /health        both, with each check's state and breaker state;
 *   GET /metrics       the default registry in Prometheus text format.
 * Every request is counted in http_requests_total{route,method,status}
 * and timed in http_request_duration_seconds{route}, and logged at debug
 * level (one access-log line).  Before a handler runs the server refuses,
 * with a JSON error and a closed connection: 431 for 64 or more header
 * fields, 400 for ambiguous framing (conflicting Content-Lengths,
 * Content-Length with Transfer-Encoding, broken chunks, a body cut short),
 * 400 for a path or query that decodes to a NUL or to bytes that are not
 * UTF-8, or a path with an encoded dot segment, 413 for a body over
 * max_body, 408 for a body still arriving after request_timeout_ms; and
 * 400 for a body nested deeper than LP_HTTP_MAX_JSON_DEPTH, whatever its
 * Content-Type.  A request that
 * arrives while lp_http_start is still registering the handler gets 503
 * with Retry-After: 1. */
#ifndef LOGPIPE_HTTP_H
#define LOGPIPE_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "logpipe/json.h"

/* Request bodies nesting '[' and '{' (outside strings) deeper than this get
 * 400 "too_deep" before any handler runs, whatever their Content-Type
 * (handlers parse untyped and form-typed bodies as JSON too): handlers run
 * on CivetWeb worker threads whose stacks are small (100 KiB in Debian's
 * build), so they must not recurse deeply or keep large buffers on the
 * stack either.  The same bound as lp_json_loadb's. */
#define LP_HTTP_MAX_JSON_DEPTH LP_JSON_MAX_DEPTH

struct mg_connection;
struct lp_breaker;
struct lp_http_server;

struct lp_front_handler;
struct lp_front;

/* Who listens on the service's address (http.front):
 *   "events" (NULL too): the event front (front.h) takes every connection
 *     on epoll loops; it reads request heads itself (a client that sends
 *     half a head holds no thread and gets 408 after request_timeout_ms),
 *     serves the async routes (lp_http_route_async) on its loops and passes
 *     every other request, byte for byte, to CivetWeb on an ephemeral
 *     127.0.0.1 port behind it; the handlers see the real client address
 *     (lp_http_remote_addr);
 *   "civetweb": CivetWeb listens on the address itself, a worker thread per
 *     connection (the async routes then hold their worker until answered). */
struct lp_http_opts {
	const char *listen;      /* "8081", "127.0.0.1:8081" (CivetWeb syntax; with the
				  * event front PORT, HOST:PORT or [V6]:PORT) */
	int threads;             /* worker threads (default 16) */
	size_t max_body;         /* bytes; larger bodies get 413 (default 1 MiB) */
	int request_timeout_ms;  /* slow or idle clients are cut off (default 10000) */
	const char *service;     /* name shown by /health */
	const char *front;       /* "events" (default) or "civetweb", see above */
	int front_loops;         /* the event front's loop threads; 0: one per CPU, at most 8 */
	int stop_timeout_ms;     /* lp_http_server_free waits this long for the front's
				  * requests in flight, deferred ones too (default 10000) */
	/* The front's requests that no async route takes go to this handler
	 * first (the gateway's proxy), then to CivetWeb if it declines; NULL:
	 * straight to CivetWeb.  Copied; its finish and cancel must be set. */
	const struct lp_front_handler *handler;
};

struct lp_http_front;

struct lp_http_req {
	struct mg_connection *conn; /* NULL when another front read the request */
	const struct lp_http_front *front; /* that front, or NULL */
	const char *method;     /* "GET", ... */
	const char *path;       /* decoded path, no query */
	const char *query;      /* raw query string or NULL */
	const char *route;      /* the matched route pattern (metrics label) */
	const char *param;      /* the part of the path matched by a trailing '*' */
	char *body;             /* request body, NUL-terminated (owned by the server) */
	size_t body_len;
	char request_id[64];    /* X-Request-ID received or generated */
	int status;             /* set by the reply functions */
};

/* Returns nothing: the handler must reply with one of lp_http_reply*. */
typedef void (*lp_http_handler)(struct lp_http_req *req, void *ud);

/* A health check: return true when healthy; may write a detail sentence. */
typedef bool (*lp_health_fn)(void *ud, char *detail, size_t detaillen);

struct lp_http_server *lp_http_server_new(const struct lp_http_opts *opts, char *err,
					  size_t errlen);
/* Registers a handler for method (NULL = any) and pattern.  A pattern whose
 * last segment is a lone '*' matches one or more further segments:
 * "/api/metadata/hosts/" followed by '*' matches "/api/metadata/hosts/web-1"
 * with param "web-1".  The first
 * registered match wins; a path matching only with another method gets 405. */
int lp_http_route(struct lp_http_server *s, const char *method, const char *pattern,
		  lp_http_handler fn, void *ud);
/* Adds a health check; required checks decide readiness.  br may be NULL. */
int lp_http_health(struct lp_http_server *s, const char *name, bool required,
		   lp_health_fn fn, void *ud, struct lp_breaker *br);
/* Starts listening.  Returns 0 or -EADDRINUSE / -EINVAL with err. */
int lp_http_start(struct lp_http_server *s, char *err, size_t errlen);
/* The port of the first listening address (the one chosen for port 0), or
 * -ENOTCONN before lp_http_start. */
int lp_http_port(struct lp_http_server *s);
/* The event front, or NULL (http.front civetweb, or before lp_http_start):
 * for lp_front_kick. */
struct lp_front *lp_http_event_front(struct lp_http_server *s);
/* Stops accepting, waits for handlers in flight (the front's deferred
 * requests for at most stop_timeout_ms), frees the server. */
void lp_http_server_free(struct lp_http_server *s);

/* ---- routes answered later ------------------------------------------------
 *
 * lp_http_route_async registers a route (one method, a pattern as
 * lp_http_route's) whose handler may answer later, from another thread,
 * without holding one meanwhile.  With the event front, the handler runs
 * on a loop thread for the requests the front reads (plain HTTP/1.1 or
 * HTTP/1.0 with a Content-Length body; one with a body of 64 KiB or more
 * on one of the server's offload threads, so that its loop's other
 * connections need not wait for it), and on a CivetWeb worker for the
 * others (chunked, ...), which then waits for the answer; with http.front
 * civetweb always on a worker.  It must not block either way.
 *
 * The handler sees a normal request (lp_http_header, lp_http_query,
 * lp_http_remote_addr, r->body, r->request_id) and either replies at once
 * with lp_http_reply* and returns, or calls lp_http_defer(r) and returns;
 * then, once, from any thread: lp_http_reply* on r (lp_http_reply_json
 * with "Retry-After: 1\r\n" as extra_headers, say), and lp_http_answer(r),
 * which sends the reply and frees r (this may happen before the handler
 * returned, on its own thread or another: done callbacks that complete at
 * once are fine; the handler must not touch r after lp_http_answer).
 * After the handler returns, a deferred
 * r keeps only method, path, route, request_id and the reply functions:
 * the body, query, param, headers and remote address must be used or
 * copied before.  If the client went meanwhile the reply is dropped.
 * Requests pipelined on the connection wait for the answer, in order.
 * lp_http_server_free waits (stop_timeout_ms) for deferred requests: the
 * service must answer them, and must not free what its answers use
 * before lp_http_server_free returns. */
int lp_http_route_async(struct lp_http_server *s, const char *method, const char *pattern,
			lp_http_handler fn, void *ud);
/* In the handler: the reply comes later (lp_http_answer).  0, or -EINVAL
 * (a reply was sent, deferred already, or a request of the gateway's own
 * front). */
int lp_http_defer(struct lp_http_req *r);
/* Any thread, once after lp_http_defer, after a reply function (without
 * one: 500).  r is freed (or handed back to its worker). */
void lp_http_answer(struct lp_http_req *r);

/* Replies.  extra_headers is NULL or "Name: value\r\n" lines. */
void lp_http_reply(struct lp_http_req *r, int status, const char *content_type,
		   const char *body, size_t len, const char *extra_headers);
/* Serialises and json_decref's body. */
void lp_http_reply_json(struct lp_http_req *r, int status, json_t *body,
			const char *extra_headers);
/* {"status":"error","error":{"code":code,"message":...}} */
void lp_http_reply_error(struct lp_http_req *r, int status, const char *code,
			 const char *extra_headers, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* Streamed replies (Server-Sent Events): the head goes out without a
 * Content-Length and the body ends when the connection closes, after the
 * handler returns.  Only for requests CivetWeb read (r->conn).  begin
 * returns 0 or -EINVAL (another front's request, or a reply was sent);
 * write returns 0, or -EPIPE when the client is gone or took no byte for
 * the server's request_timeout_ms. */
int lp_http_stream_begin(struct lp_http_req *r, int status, const char *content_type,
			 const char *extra_headers);
int lp_http_stream_write(struct lp_http_req *r, const void *data, size_t len);

/* Request helpers. */
const char *lp_http_header(struct lp_http_req *r, const char *name);
/* The client's address as text ("127.0.0.1", "::1"): the real client's for
 * a request the event front passed to CivetWeb through its tunnel. */
const char *lp_http_remote_addr(struct lp_http_req *r);
/* Copies the decoded value of query parameter name into out (always
 * NUL-terminated); returns its length, -ENOENT when absent, -ERANGE when
 * out is too small for it, -EINVAL when outlen is 0. */
int lp_http_query(struct lp_http_req *r, const char *name, char *out, size_t outlen);
/* Parses the body as JSON (lp_json_loadb); on failure replies 400 (or 415
 * if the content type is not JSON) and returns NULL. */
json_t *lp_http_body_json(struct lp_http_req *r);
/* True when the media type of Content-Type ct (parameters such as charset
 * and blanks aside, any case) is type: "application/json; charset=utf-8"
 * is "application/json", "application/jsonl" is not.  False for NULL. */
bool lp_http_media_type_is(const char *ct, const char *type);
/* True when ct names JSON: application/json or an application/...+json
 * type, with or without parameters.  False for NULL. */
bool lp_http_is_json_type(const char *ct);


/* ---- requests read by another front ---------------------------------------
 *
 * The event front (front.h) serves the async routes, and the gateway's
 * proxied routes, from its loops and hands everything else to CivetWeb.  A
 * request a loop
 * read goes through the same helpers as a CivetWeb one: it describes itself
 * with a struct lp_http_front, and the reply functions append the whole
 * reply (head and body) to out instead of writing to a connection. */
struct lp_buf;

struct lp_http_front {
	/* The value of header name (any case), NUL-terminated, or NULL. */
	const char *(*header)(void *ud, const char *name);
	void *ud;                /* for header */
	const char *remote_addr; /* the client's address */
	bool keep_alive;         /* the connection stays open after the reply */
	struct lp_buf *out;      /* receives the reply */
};

/* Sets r up for a request read by front f, with the same checks and the
 * same request id handling as on_request: method, raw (percent-encoded)
 * path, query (or NULL) and body (NUL-terminated, len bytes) as given.
 * Returns 0, or -EINVAL when CivetWeb's path should serve it: the path or
 * query fails the decoding checks, or the body nests deeper than
 * LP_HTTP_MAX_JSON_DEPTH (nothing has been replied then).  After 0, finish with lp_http_front_end. */
int lp_http_front_begin(struct lp_http_req *r, const struct lp_http_front *f, const char *method,
			const char *raw_path, const char *query, char *body, size_t len);
/* Counts r in http_requests_total and http_request_duration_seconds of s
 * under route (t0_us: lp_now_us() when the request began; route NULL: not
 * counted, and s may be NULL), clears the log trace id and frees what
 * lp_http_front_begin made. */
void lp_http_front_end(struct lp_http_server *s, struct lp_http_req *r, const char *route,
		       int64_t t0_us);
/* The first route of s matching path and method (exactly, HEAD is not
 * mapped to GET here): returns its pattern and sets *fn and *ud, or NULL. */
const char *lp_http_find(struct lp_http_server *s, const char *method, const char *path,
			 lp_http_handler *fn, void **ud);

#endif
