/* http.c - HTTP server helpers over CivetWeb: routing, replies, health, metrics.
 *
 * CivetWeb owns sockets, parsing and the worker threads; logpipe registers a
 * single catch-all request handler ("/") and does everything else here, so
 * that every request, whatever its path, goes through the same steps:
 *
 *   1. take X-Request-ID from the request or make one (UUIDv7), set it as the
 *      thread's log trace id and echo it on the reply;
 *   2. refuse what cannot be framed or routed safely: 431 for as many
 *      header fields as CivetWeb keeps (it drops the rest silently), 400
 *      for conflicting Content-Lengths or Content-Length beside
 *      Transfer-Encoding (request smuggling), and 400 for a path or query
 *      whose percent-decoding holds a NUL or is not UTF-8 (handlers pass
 *      them on to JSON and PostgreSQL, which take neither), or a path with
 *      an encoded "." / ".." segment;
 *   3. read the body, refusing with 413 what is larger than max_body (the
 *      Content-Length is checked before anything is read), with 408 what
 *      is still arriving after the request timeout (a trickle that resets
 *      each read's timeout is cut off by a watchdog thread, see struct
 *      body_read), with 400 what ends early or is badly chunked,
 *      and with 400 a body nesting '[' and '{' deeper than
 *      LP_HTTP_MAX_JSON_DEPTH, whatever its Content-Type;
 *   4. find the first route whose pattern matches the path and method: 404
 *      when no pattern matches, 405 with Allow when only other methods do;
 *   5. call the handler, which replies through lp_http_reply*;
 *   6. count the request in http_requests_total{route,method,status}, time
 *      it in http_request_duration_seconds{route}, write the access line.
 *
 * CivetWeb runs handlers on worker threads with small fixed stacks (the
 * Debian build's USE_STACK_SIZE, 100 KiB); jansson parses recursively, so a
 * body of a few hundred '[' used to overflow a worker's stack and kill the
 * process.  The depth check in step 3 is what keeps that from happening
 * to any handler that parses its body, whichever parser it calls and
 * whatever the body's Content-Type (handlers parse untyped and form-typed
 * bodies as JSON too); lp_json_loadb (json.h) is the second line of
 * defence, in the parsers themselves.
 *
 * Requests CivetWeb itself refuses before they reach us (a request line it
 * cannot parse, headers beyond max_request_size, an unsupported HTTP
 * version, an invalid Content-Length) get the same JSON error body through
 * its http_error callback, and are counted under the route "unparsed".
 * CivetWeb listens before the catch-all handler can be registered; a
 * request in that window used to get CivetWeb's 404 (the chaos test's
 * clients, retrying against a restarting gateway, hit it) and now gets 503
 * with Retry-After.
 * CivetWeb is told not to decode the path (decode_url=no) so that step 2
 * can see an encoded NUL, which CivetWeb's decoding would silently cut the
 * path at.
 *
 * The built-in endpoints (/health/live, /health/ready, /health, /metrics and
 * the Spring Boot Actuator spellings the seeds use) are ordinary routes
 * registered first, so services cannot shadow them by accident.
 *
 * Routes and health checks are registered before lp_http_start and are
 * read-only afterwards, which is why the request path needs no lock.
 * Replies always carry Content-Length, so connections can be kept alive;
 * a reply that leaves the request body unread closes the connection. */
#include <arpa/inet.h>
#include <civetweb.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "logpipe/breaker.h"
#include "logpipe/buf.h"
#include "logpipe/event.h"
#include "logpipe/front.h"
#include "logpipe/http.h"
#include "logpipe/json.h"
#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/util.h"
#include "logpipe/version.h"

#include "logpipe/banned.h"

static atomic_uint_fast64_t server_ids; /* the last lp_http_server.id given */

#define DEFAULT_THREADS 16
#define DEFAULT_MAX_BODY (1024 * 1024)
#define DEFAULT_TIMEOUT_MS 10000
/* CivetWeb keeps MG_MAX_HEADERS header fields and ignores further ones. */
#define MAX_HEADERS MG_MAX_HEADERS
/* An async route's request with a body at least this large is handled on
 * an offload thread rather than on the loop that read it: parsing a batch
 * of a few thousand events takes milliseconds (seconds for 50,000 under
 * the sanitizers), which the loop's other connections would wait out.
 * Below it the handoff would cost more than it saves. */
#define OFFLOAD_BYTES (64 * 1024)
#define MAX_OFFLOAD_THREADS 4
#define READY_RETRY_AFTER "Retry-After: 5\r\n"
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4"

struct route {
	char *method;        /* "GET", ...; NULL matches any method */
	char *pattern;       /* as registered; also the metrics label */
	size_t prefix_len;   /* wildcard: length of the pattern before the '*' */
	bool wildcard;       /* the last segment is a lone '*' */
	lp_http_handler fn;  /* the handler */
	void *ud;            /* its user data */
	bool async;          /* lp_http_route_async: the front's loops serve it too */
};

struct check {
	char *name;             /* key in /health's "checks" */
	bool required;          /* decides readiness */
	lp_health_fn fn;        /* the probe */
	void *ud;               /* its user data */
	struct lp_breaker *br;  /* breaker shown beside it, may be NULL */
};

struct lp_http_server {
	char *listen;              /* CivetWeb listening_ports value */
	char *service;             /* name shown by /health */
	int threads;               /* CivetWeb num_threads */
	size_t max_body;           /* larger bodies get 413 */
	int request_timeout_ms;    /* CivetWeb request_timeout_ms */
	struct mg_context *ctx;    /* the running server, NULL before start */
	struct route *routes;      /* in registration order; first match wins */
	size_t nroutes;
	struct check *checks;      /* health checks in registration order */
	size_t nchecks;
	struct lp_metric *requests; /* http_requests_total{route,method,status} */
	struct lp_metric *duration; /* http_request_duration_seconds{route} */
	pthread_mutex_t reads_mu;   /* guards reads and stopping */
	pthread_cond_t reads_cv;    /* wakes the watchdog to stop */
	struct body_read *reads;    /* body reads in progress */
	bool stopping;              /* the watchdog should exit */
	bool watchdog_on;           /* the watchdog thread was started */
	atomic_bool serving;        /* on_request is registered with CivetWeb */
	pthread_t watchdog;         /* cuts off bodies past their deadline */
	char *public_listen;        /* the service's address (the front's, or CivetWeb's) */
	bool events;                /* http.front events: the front listens, CivetWeb behind */
	uint64_t id;                /* unique in the process: names it in series_memo */
	int front_loops;            /* its loop threads, 0: one per CPU */
	int stop_timeout_ms;        /* lp_http_server_free waits this long for answers */
	struct lp_front_handler outer; /* another handler of the front's requests (the gateway's) */
	size_t nasync;              /* routes registered with lp_http_route_async */
	struct lp_front *front;     /* the running front, NULL before start or with civetweb */
	/* Async requests with big bodies wait here for an offload thread
	 * (offload_main); the threads run while the front does. */
	pthread_mutex_t off_mu;
	pthread_cond_t off_cv;
	struct async_req *off_head, *off_tail;
	bool off_running;           /* under off_mu: the threads take requests */
	bool off_stop;              /* under off_mu: run what is queued, then exit */
	pthread_t off_threads[MAX_OFFLOAD_THREADS];
	int noff;                   /* threads started (offload_start and _stop only) */
};

/* An IP address in binary, an IPv4-mapped IPv6 address as IPv4, so that
 * the two spellings of one client compare equal and nothing else does. */
struct peer_addr {
	int family;                /* AF_INET, AF_INET6, or 0: unknown */
	unsigned char addr[16];    /* 4 or 16 bytes in network order */
};

/* One connection to cut off: who is at the other end of which of our ports. */
struct peer {
	struct peer_addr addr;  /* the client's address */
	int port;               /* the client's port */
	int local_port;         /* our listening port it came in on */
	char text[48];          /* the address as CivetWeb shows it, for the log */
};

/*
 * A request body being read, registered for the watchdog.  CivetWeb's
 * request timeout bounds each wait for data, and mg_read returns only once
 * it has all it was asked for, so a client sending a byte now and then
 * would hold the worker indefinitely; when the deadline passes, the
 * watchdog shuts the reading side of the connection's socket, the read
 * returns short, and the request gets 408.
 */
struct body_read {
	int64_t deadline_us;    /* when reading must have finished */
	struct peer peer;       /* the connection it arrives on */
	bool cut;               /* the watchdog shut its socket's reading side */
	struct body_read *next; /* the list in s->reads */
};

/* What the server knows about a request beyond the public struct. */
struct req_state {
	struct lp_http_req pub;   /* what handlers see; must stay first */
	struct lp_http_server *s; /* the server */
	bool head;                /* HEAD: reply without a body */
	bool close;               /* close the connection after the reply */
	char peer[48];            /* the real client of a tunnelled request */
	/* lp_http_defer on a request CivetWeb read: the reply is built into
	 * capture by whichever thread answers, and the worker, waiting on cv
	 * until answered, writes it. */
	bool deferred;
	bool answered;            /* under mu */
	struct lp_buf capture;
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

/* A request of an async route read by the front (see lp_http_route_async). */
struct async_req {
	struct lp_http_req r;        /* what the handler sees; must stay first */
	struct lp_http_front fr;     /* r's view of the front's connection */
	struct lp_http_server *s;
	const struct lp_rq *head;    /* the header fields, NULL once deferred */
	struct lp_front_req *q;      /* the front's request, until the handler returned */
	struct lp_front_later *later; /* lp_http_defer's handle */
	/* Deferred: the handler's return and lp_http_answer, in either order
	 * and on different threads (the answer may come before the handler
	 * returned): the second of the two sends the reply and frees. */
	atomic_int parts;
	struct lp_buf out;           /* the reply, built by lp_http_reply* */
	char addr[48];               /* the client's address */
	int64_t t0;                  /* lp_now_us() when it began */
	/* Copies, so that an answer after lp_http_server_free (it gave up
	 * waiting) touches nothing of the server: the route, the method and
	 * the metrics (the registry's, which outlive it). */
	char route[128];
	char method[16];
	struct lp_metric *requests, *duration;
	/* Offloaded (see OFFLOAD_BYTES): the front's request was deferred by
	 * front_start, and the handler runs on an offload thread with copies
	 * of the header fields, query and body (freed when it returns). */
	bool offloaded;
	bool handler_deferred;       /* the offloaded handler called lp_http_defer */
	lp_http_handler fn;          /* the route's handler and its data */
	void *ud;
	struct lp_rq own_head;       /* the header fields, pointing into own_text */
	char *own_text;              /* header names and values, the query */
	char *own_body;
	struct async_req *next;      /* in the server's offload queue */
};

static struct req_state *state_of(struct lp_http_req *r)
{
	return (struct req_state *)r;
}

static void wait_answer(struct req_state *st);
static int inner_port_of(struct lp_http_server *s);

/* ---- replies ------------------------------------------------------------ */

/* Whether the client wants the connection kept open after this reply. */
static bool client_keeps_alive(struct mg_connection *conn)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	const char *h = mg_get_header(conn, "Connection");

	if (h)
		return strcasestr(h, "keep-alive") != NULL;
	return ri->http_version && strcmp(ri->http_version, "1.1") == 0;
}

/* Appends v in decimal. */
static void add_uint(struct lp_buf *b, uint64_t v)
{
	char d[24];

	lp_buf_add(b, d, lp_fmt_u64(d, v));
}

void lp_http_reply(struct lp_http_req *r, int status, const char *content_type,
		   const char *body, size_t len, const char *extra_headers)
{
	/* A request of another front is never HEAD and has no req_state. */
	struct req_state *st = r->front ? NULL : state_of(r);
	bool buffered = r->front || st->deferred;
	struct lp_buf h = LP_BUF_INIT, *out = r->front ? r->front->out : st->deferred ? &st->capture : &h;
	bool send_body = !st || !st->head, keep;
	const char *text;

	if (r->status != 0) {
		lp_warn("second reply (%d) to %s %s ignored; %d was sent", status, r->method,
			r->path, r->status);
		return;
	}
	r->status = status;
	if (st && st->close)
		mg_disable_connection_keep_alive(r->conn);
	keep = st ? !st->close && client_keeps_alive(r->conn) : r->front->keep_alive;
	text = mg_get_response_code_text(r->conn, status);
	/* Sized for the header and a small body at once, and built without
	 * printf: this runs for every request of every service. */
	if (!buffered)
		lp_buf_init(&h, 384 + (send_body && len <= 64 * 1024 ? len : 0));
	else /* at once, not by half again five times over */
		lp_buf_grow(out, 256 + strlen(r->request_id) + (extra_headers ? strlen(extra_headers) : 0) +
				 (send_body ? len : 0));
	lp_buf_adds(out, "HTTP/1.1 ");
	add_uint(out, (uint64_t)status);
	lp_buf_addch(out, ' ');
	lp_buf_adds(out, text ? text : "");
	lp_buf_adds(out, "\r\n");
	/* 1xx, 204 and 304 replies have no body and no Content-Length. */
	if (status < 200 || status == 204 || status == 304) {
		send_body = false;
		len = 0;
	} else {
		if (content_type) {
			lp_buf_adds(out, "Content-Type: ");
			lp_buf_adds(out, content_type);
			lp_buf_adds(out, "\r\n");
		}
		lp_buf_adds(out, "Content-Length: ");
		add_uint(out, len);
		lp_buf_adds(out, "\r\n");
	}
	lp_buf_adds(out, "X-Request-ID: ");
	lp_buf_adds(out, r->request_id);
	lp_buf_adds(out, keep ? "\r\nConnection: keep-alive\r\n" : "\r\nConnection: close\r\n");
	if (extra_headers)
		lp_buf_adds(out, extra_headers);
	lp_buf_adds(out, "\r\n");
	if (send_body && len > 0 && (buffered || len <= 64 * 1024)) {
		/* One write for small replies: fewer packets, no Nagle delay. */
		lp_buf_add(out, body, len);
		len = 0;
	}
	if (buffered)
		return;
	mg_write(r->conn, h.buf, h.len);
	if (send_body && len > 0)
		mg_write(r->conn, body, len);
	lp_buf_release(&h);
}

int lp_http_stream_begin(struct lp_http_req *r, int status, const char *content_type,
			 const char *extra_headers)
{
	struct lp_buf h = LP_BUF_INIT;
	const char *text;

	if (r->front || !r->conn || r->status != 0)
		return -EINVAL;
	r->status = status;
	/* The body is delimited by the close. */
	mg_disable_connection_keep_alive(r->conn);
	text = mg_get_response_code_text(r->conn, status);
	lp_buf_addf(&h, "HTTP/1.1 %d %s\r\n", status, text ? text : "");
	if (content_type)
		lp_buf_addf(&h, "Content-Type: %s\r\n", content_type);
	lp_buf_addf(&h, "X-Request-ID: %s\r\nConnection: close\r\n%s\r\n", r->request_id,
		    extra_headers ? extra_headers : "");
	/* A failed write shows in the next lp_http_stream_write. */
	(void)mg_write(r->conn, h.buf, h.len);
	lp_buf_release(&h);
	return 0;
}

int lp_http_stream_write(struct lp_http_req *r, const void *data, size_t len)
{
	if (len == 0)
		return 0;
	return mg_write(r->conn, data, len) == (int)len ? 0 : -EPIPE;
}

void lp_http_reply_json(struct lp_http_req *r, int status, json_t *body,
			const char *extra_headers)
{
	char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

	json_decref(body);
	if (!text) {
		lp_error("cannot serialise the JSON reply to %s %s", r->method, r->path);
		lp_http_reply_error(r, 500, "internal", NULL, "the reply could not be serialised");
		return;
	}
	lp_http_reply(r, status, "application/json", text, strlen(text), extra_headers);
	free(text);
}

/* A JSON string of s, or of a fixed text when s is not valid UTF-8. */
static json_t *json_text(const char *s)
{
	json_t *j = json_string(s);

	return j ? j : json_string("(message not valid UTF-8)");
}

void lp_http_reply_error(struct lp_http_req *r, int status, const char *code,
			 const char *extra_headers, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	json_t *body;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	body = json_pack("{s:s, s:{s:o, s:o}}", "status", "error", "error", "code",
			 json_text(code), "message", json_text(msg));
	lp_http_reply_json(r, status, body, extra_headers);
}

/* ---- request helpers ---------------------------------------------------- */

const char *lp_http_header(struct lp_http_req *r, const char *name)
{
	if (r->front)
		return r->front->header(r->front->ud, name);
	return mg_get_header(r->conn, name);
}

const char *lp_http_remote_addr(struct lp_http_req *r)
{
	const struct mg_request_info *ri;
	struct req_state *st;

	if (r->front)
		return r->front->remote_addr;
	ri = mg_get_request_info(r->conn);
	st = state_of(r);
	/* Through the front's tunnel: the real client, known by the port. */
	if (st->s && st->s->events && strcmp(ri->remote_addr, "127.0.0.1") == 0) {
		if (st->peer[0] || lp_front_peer_addr(ri->remote_port, st->peer))
			return st->peer;
	}
	return ri->remote_addr;
}

int lp_http_query(struct lp_http_req *r, const char *name, char *out, size_t outlen)
{
	int n;

	if (outlen == 0)
		return -EINVAL;
	out[0] = '\0';
	if (!r->query)
		return -ENOENT;
	/* CivetWeb says -1 when absent, -2 when out is too small. */
	n = mg_get_var2(r->query, strlen(r->query), name, out, outlen, 0);
	if (n == -1)
		return -ENOENT;
	return n < 0 ? -ERANGE : n;
}

/* The media type of Content-Type ct without parameters and blanks: sets
 * *len and returns where it starts. */
static const char *media_type(const char *ct, size_t *len)
{
	size_t n = strcspn(ct, ";");

	while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
		n--;
	while (n > 0 && (*ct == ' ' || *ct == '\t')) {
		ct++;
		n--;
	}
	*len = n;
	return ct;
}

bool lp_http_media_type_is(const char *ct, const char *type)
{
	size_t n;

	if (!ct)
		return false;
	ct = media_type(ct, &n);
	return n == strlen(type) && strncasecmp(ct, type, n) == 0;
}

bool lp_http_is_json_type(const char *ct)
{
	size_t n;

	if (!ct)
		return false;
	ct = media_type(ct, &n);
	if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
		return true;
	return n > 17 && strncasecmp(ct, "application/", 12) == 0 &&
	       strncasecmp(ct + n - 5, "+json", 5) == 0;
}

json_t *lp_http_body_json(struct lp_http_req *r)
{
	const char *ct = lp_http_header(r, "Content-Type");
	json_error_t je;
	json_t *j;

	if (ct && !lp_http_is_json_type(ct)) {
		lp_http_reply_error(r, 415, "unsupported_media_type", NULL,
				    "expected Content-Type application/json, got \"%s\"", ct);
		return NULL;
	}
	j = lp_json_loadb(r->body, r->body_len, JSON_DECODE_ANY, &je);
	if (!j) {
		lp_http_reply_error(r, 400, "invalid_json", NULL,
				    "invalid JSON at line %d column %d: %s", je.line, je.column,
				    je.text);
		return NULL;
	}
	return j;
}

/* ---- built-in endpoints --------------------------------------------------- */

static void handle_live(struct lp_http_req *r, void *ud)
{
	lp_http_reply_json(r, 200, json_pack("{s:s}", "status", "UP"), NULL);
}

/*
 * Runs the checks (only the required ones when required_only) and returns
 * {"name": {...}, ...}; *all_required_up tells readiness.
 */
static json_t *run_checks(struct lp_http_server *s, bool required_only, bool *all_required_up)
{
	json_t *checks = json_object();
	size_t i;

	*all_required_up = true;
	for (i = 0; i < s->nchecks; i++) {
		struct check *c = &s->checks[i];
		char detail[256] = "";
		bool up;
		json_t *o;

		if (required_only && !c->required)
			continue;
		up = c->fn(c->ud, detail, sizeof(detail));
		if (!up && c->required)
			*all_required_up = false;
		o = json_pack("{s:s, s:b, s:o}", "status", up ? "UP" : "DOWN", "required",
			      c->required, "detail", json_text(detail));
		if (c->br) {
			enum lp_breaker_state bs = lp_breaker_state(c->br);

			json_object_set_new(o, "circuit_breaker",
					    json_string(lp_breaker_state_name(bs)));
		}
		json_object_set_new(checks, c->name, o);
	}
	return checks;
}

static void handle_ready(struct lp_http_req *r, void *ud)
{
	struct lp_http_server *s = ud;
	bool up;
	json_t *checks = run_checks(s, true, &up);

	lp_http_reply_json(r, up ? 200 : 503,
			   json_pack("{s:s, s:o}", "status", up ? "UP" : "DOWN", "checks", checks),
			   up ? NULL : READY_RETRY_AFTER);
}

static void handle_health(struct lp_http_req *r, void *ud)
{
	struct lp_http_server *s = ud;
	bool up;
	json_t *checks = run_checks(s, false, &up);

	lp_http_reply_json(r, up ? 200 : 503,
			   json_pack("{s:s, s:s, s:s, s:o}", "status", up ? "UP" : "DOWN",
				     "service", s->service, "version", LOGPIPE_VERSION, "checks",
				     checks),
			   up ? NULL : READY_RETRY_AFTER);
}

static void handle_metrics(struct lp_http_req *r, void *ud)
{
	struct lp_buf out = LP_BUF_INIT;

	lp_registry_render(lp_registry_default(), &out);
	lp_http_reply(r, 200, METRICS_CONTENT_TYPE, out.buf, out.len, NULL);
	lp_buf_release(&out);
}

static const struct {
	const char *pattern;
	lp_http_handler fn;
} builtins[] = {
	{ "/health/live", handle_live },
	{ "/health/ready", handle_ready },
	{ "/health", handle_health },
	{ "/metrics", handle_metrics },
	/* The Spring Boot Actuator paths the seeds' READMEs use. */
	{ "/actuator/health/liveness", handle_live },
	{ "/actuator/health/readiness", handle_ready },
	{ "/actuator/health", handle_health },
	{ "/actuator/prometheus", handle_metrics },
};

/* ---- routing ------------------------------------------------------------ */

static bool route_matches_path(const struct route *rt, const char *path, const char **param)
{
	if (!rt->wildcard) {
		*param = NULL;
		return strcmp(rt->pattern, path) == 0;
	}
	/* "/a/b/" + '*': one or more further segments, never "/a/b/" itself. */
	if (strncmp(rt->pattern, path, rt->prefix_len) != 0 || path[rt->prefix_len] == '\0' ||
	    path[rt->prefix_len] == '/')
		return false;
	*param = path + rt->prefix_len;
	return true;
}

static bool method_matches(const struct route *rt, const char *method)
{
	return !rt->method || strcmp(rt->method, method) == 0;
}

/*
 * The first route for path and method, or NULL.  When none matches but
 * routes for other methods match the path, *allow lists those methods
 * ("GET, POST") and *any_path the first such route.
 */
static const struct route *find_route(struct lp_http_server *s, const char *method,
				      const char *path, const char **param, struct lp_buf *allow,
				      const struct route **any_path)
{
	size_t i;

	*any_path = NULL;
	for (i = 0; i < s->nroutes; i++) {
		const struct route *rt = &s->routes[i];

		if (!route_matches_path(rt, path, param))
			continue;
		/* A catch-all (any method, wildcard) does not take a path that
		 * an earlier route serves for other methods: that is a 405. */
		if (!rt->method && rt->wildcard && allow->len)
			break;
		if (method_matches(rt, method))
			return rt;
		if (!*any_path)
			*any_path = rt;
		/* rt->method is not NULL here: a NULL method always matches. */
		if (!strstr(allow->buf, rt->method)) {
			if (allow->len)
				lp_buf_adds(allow, ", ");
			lp_buf_adds(allow, rt->method);
		}
	}
	*param = NULL;
	return NULL;
}

int lp_http_route(struct lp_http_server *s, const char *method, const char *pattern,
		  lp_http_handler fn, void *ud)
{
	struct route *rt;
	size_t n;

	if (!s || !pattern || pattern[0] != '/' || !fn)
		return -EINVAL;
	if (s->ctx)
		return -EBUSY;
	s->routes = lp_xrealloc(s->routes, (s->nroutes + 1) * sizeof(*s->routes));
	rt = &s->routes[s->nroutes++];
	memset(rt, 0, sizeof(*rt));
	rt->method = method ? lp_xstrdup(method) : NULL;
	rt->pattern = lp_xstrdup(pattern);
	n = strlen(pattern);
	rt->wildcard = n >= 2 && strcmp(pattern + n - 2, "/*") == 0;
	rt->prefix_len = rt->wildcard ? n - 1 : n;
	rt->fn = fn;
	rt->ud = ud;
	return 0;
}

int lp_http_health(struct lp_http_server *s, const char *name, bool required, lp_health_fn fn,
		   void *ud, struct lp_breaker *br)
{
	struct check *c;

	if (!s || !name || !fn)
		return -EINVAL;
	if (s->ctx)
		return -EBUSY;
	s->checks = lp_xrealloc(s->checks, (s->nchecks + 1) * sizeof(*s->checks));
	c = &s->checks[s->nchecks++];
	c->name = lp_xstrdup(name);
	c->required = required;
	c->fn = fn;
	c->ud = ud;
	c->br = br;
	return 0;
}

/* ---- the request path ----------------------------------------------------- */

/* A request id we are willing to echo: short, printable, no separators. */
static bool request_id_ok(const char *id)
{
	size_t n = 0;

	if (!id || !*id)
		return false;
	for (; id[n]; n++) {
		char c = id[n];

		if (n >= 63)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.' || c == ':'))
			return false;
	}
	return true;
}

/* The request id of r: X-Request-ID when it is one we echo, else a new one;
 * with the trace id of a valid traceparent, on this thread's log lines. */
static void take_request_id(struct lp_http_req *r, const char *id, const char *traceparent)
{
	char trace[33];

	if (request_id_ok(id))
		lp_strlcpy(r->request_id, id, sizeof(r->request_id));
	else
		lp_uuid7(r->request_id);
	lp_log_set_request(r->request_id, lp_traceparent_ok(traceparent, trace) ? trace : NULL);
}

/* ---- slow bodies ---------------------------------------------------------- */

/* Parses text (CivetWeb's remote_addr: "10.0.0.1", "::1", maybe in
 * brackets) into *a; family 0 when it is not an address. */
static void peer_addr_parse(const char *text, struct peer_addr *a)
{
	char buf[INET6_ADDRSTRLEN + 2];
	size_t n;

	memset(a, 0, sizeof(*a));
	lp_strlcpy(buf, text + (text[0] == '['), sizeof(buf));
	n = strlen(buf);
	if (n > 0 && buf[n - 1] == ']')
		buf[n - 1] = '\0';
	if (inet_pton(AF_INET, buf, a->addr) == 1) {
		a->family = AF_INET;
	} else if (inet_pton(AF_INET6, buf, a->addr) == 1) {
		a->family = AF_INET6;
		if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)a->addr)) {
			memmove(a->addr, a->addr + 12, 4);
			memset(a->addr + 4, 0, 12);
			a->family = AF_INET;
		}
	}
}

/* The address and port of sa into *a and *port; false for other families. */
static bool peer_addr_of(const struct sockaddr_storage *sa, struct peer_addr *a, int *port)
{
	char text[INET6_ADDRSTRLEN];
	const void *bin;

	if (sa->ss_family == AF_INET) {
		*port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
		bin = &((const struct sockaddr_in *)sa)->sin_addr;
	} else if (sa->ss_family == AF_INET6) {
		*port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
		bin = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	} else {
		return false;
	}
	/* Through text, so that mapped addresses get the same treatment. */
	if (!inet_ntop(sa->ss_family, bin, text, sizeof(text)))
		return false;
	peer_addr_parse(text, a);
	return a->family != 0;
}

static bool peer_addr_equal(const struct peer_addr *x, const struct peer_addr *y)
{
	return x->family != 0 && x->family == y->family &&
	       memcmp(x->addr, y->addr, x->family == AF_INET ? 4 : 16) == 0;
}

/*
 * Shuts the reading side of the sockets connecting each of the n peers with
 * its local port, found among our file descriptors in one pass over
 * /proc/self/fd; returns how many were found.  A peer matches on address
 * (exactly, in binary), port and local port.  Runs without reads_mu held:
 * a body read does not wait for the scan.  The peers' reads may have ended
 * meanwhile; their requests then get 408 and close the connection anyway.
 */
static size_t cut_connections(const struct peer *peers, size_t n)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	size_t found = 0, i;

	if (!d)
		return 0;
	while (found < n && (e = readdir(d)) != NULL) {
		struct sockaddr_storage la, pa;
		socklen_t ll = sizeof(la), pl = sizeof(pa);
		struct peer_addr local, addr;
		int fd, lport, pport;

		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		fd = atoi(e->d_name);
		if (getsockname(fd, (struct sockaddr *)&la, &ll) != 0 ||
		    getpeername(fd, (struct sockaddr *)&pa, &pl) != 0 ||
		    !peer_addr_of(&la, &local, &lport) || !peer_addr_of(&pa, &addr, &pport))
			continue;
		for (i = 0; i < n; i++) {
			if (peers[i].local_port != lport || peers[i].port != pport ||
			    !peer_addr_equal(&peers[i].addr, &addr))
				continue;
			shutdown(fd, SHUT_RD);
			lp_debug("request body from %s:%d still arriving after its deadline: cut off",
				 peers[i].text, peers[i].port);
			found++;
			break;
		}
	}
	closedir(d);
	return found;
}

/* Peers cut off per round; more wait for the next round, 200 ms later. */
#define CUTS_PER_ROUND 16

/* The watchdog: every 200 ms, cuts the body reads past their deadline. */
static void *watchdog_main(void *arg)
{
	struct lp_http_server *s = arg;
	struct peer peers[CUTS_PER_ROUND];
	struct timespec ts;
	struct body_read *br;
	size_t n;

	pthread_mutex_lock(&s->reads_mu);
	while (!s->stopping) {
		int64_t now = lp_now_us();

		n = 0;
		for (br = s->reads; br && n < CUTS_PER_ROUND; br = br->next) {
			if (br->cut || now < br->deadline_us)
				continue;
			br->cut = true;
			peers[n++] = br->peer;
		}
		if (n > 0) {
			pthread_mutex_unlock(&s->reads_mu);
			cut_connections(peers, n);
			pthread_mutex_lock(&s->reads_mu);
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (!s->stopping)
			pthread_cond_timedwait(&s->reads_cv, &s->reads_mu, &ts);
	}
	pthread_mutex_unlock(&s->reads_mu);
	return NULL;
}

/* Stops and joins the watchdog, if it runs. */
static void stop_watchdog(struct lp_http_server *s)
{
	if (!s->watchdog_on)
		return;
	pthread_mutex_lock(&s->reads_mu);
	s->stopping = true;
	pthread_cond_signal(&s->reads_cv);
	pthread_mutex_unlock(&s->reads_mu);
	pthread_join(s->watchdog, NULL);
	s->watchdog_on = false;
}

static void reads_add(struct lp_http_server *s, struct body_read *br)
{
	pthread_mutex_lock(&s->reads_mu);
	br->next = s->reads;
	s->reads = br;
	pthread_mutex_unlock(&s->reads_mu);
}

/* Unlinks br; after this the watchdog no longer touches its connection. */
static void reads_remove(struct lp_http_server *s, struct body_read *br)
{
	struct body_read **p;

	pthread_mutex_lock(&s->reads_mu);
	for (p = &s->reads; *p; p = &(*p)->next) {
		if (*p == br) {
			*p = br->next;
			break;
		}
	}
	pthread_mutex_unlock(&s->reads_mu);
}

/*
 * Reads the body into a NUL-terminated heap buffer.  Returns 0, or 413 when
 * it exceeds max, 408 when it is still incomplete timeout_ms after t0_us
 * (the watchdog cuts off a client that trickles it), or 400 when the client
 * stopped sending early or the chunked encoding is broken.
 */
static int read_body(struct lp_http_server *s, struct mg_connection *conn, int64_t t0_us,
		     char **out, size_t *outlen)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	long long cl = ri->content_length;
	size_t max = s->max_body;
	int64_t deadline = t0_us + (int64_t)s->request_timeout_ms * 1000;
	struct body_read br = { .deadline_us = deadline };
	bool broken = false, late = false;
	size_t cap, len = 0;
	char *b;
	int n;

	*out = NULL;
	*outlen = 0;
	if (cl > (long long)max)
		return 413;
	/* From here on, one way out: br must leave the list before it dies. */
	lp_strlcpy(br.peer.text, ri->remote_addr, sizeof(br.peer.text));
	peer_addr_parse(ri->remote_addr, &br.peer.addr);
	br.peer.port = ri->remote_port;
	br.peer.local_port = ri->server_port;
	if (s->watchdog_on)
		reads_add(s, &br);
	cap = cl >= 0 ? (size_t)cl : (max < 4096 ? max + 1 : 4096);
	b = lp_xmalloc(cap + 1);
	for (;;) {
		if (len == cap) {
			if (cl >= 0 || cap > max)
				break;
			cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
			b = lp_xrealloc(b, cap + 1);
		}
		n = mg_read(conn, b + len, cap - len);
		if (n < 0)
			broken = true; /* a read error or a bad chunk */
		if (n <= 0)
			break;
		len += (size_t)n;
		if (lp_now_us() > deadline && (cl < 0 || len < (size_t)cl)) {
			late = true;
			break;
		}
	}
	if (s->watchdog_on)
		reads_remove(s, &br);
	b[len] = '\0';
	*out = b;
	*outlen = len;
	if (len > max)
		return 413;
	if ((cl >= 0 && len < (size_t)cl) || broken || late || br.cut)
		return late || br.cut || lp_now_us() >= deadline ? 408 : 400;
	return 0;
}

/*
 * Header fields that make the request unsafe to frame or route: returns 0,
 * or the status with *code and *why set.
 */
static int check_headers(const struct mg_request_info *ri, const char **code, const char **why)
{
	const char *cl = NULL;
	bool te = false;
	int i;

	if (ri->num_headers >= MAX_HEADERS) {
		*code = "too_many_headers";
		*why = "too many header fields";
		return 431;
	}
	for (i = 0; i < ri->num_headers; i++) {
		const char *name = ri->http_headers[i].name, *value = ri->http_headers[i].value;

		if (strcasecmp(name, "Transfer-Encoding") == 0) {
			te = true;
		} else if (strcasecmp(name, "Content-Length") == 0) {
			if (cl && strcmp(cl, value) != 0) {
				*code = "bad_framing";
				*why = "conflicting Content-Length header fields";
				return 400;
			}
			cl = value;
		}
	}
	if (te && cl) {
		*code = "bad_framing";
		*why = "both Transfer-Encoding and Content-Length";
		return 400;
	}
	return 0;
}

/* True when the query string, form-decoded as a whole, holds no NUL and is
 * UTF-8: what handlers read from it ends up in JSON and PostgreSQL, which
 * take neither. */
static bool query_ok(const char *q)
{
	size_t n = strlen(q);
	char *d = lp_xmalloc(n + 1);
	int len = mg_url_decode(q, (int)n, d, (int)n + 1, 1);
	bool ok = len >= 0 && strlen(d) == (size_t)len &&
		  lp_utf8_valid((const unsigned char *)d, (size_t)len);

	free(d);
	return ok;
}

/*
 * Percent-decodes the raw path into a new string in *out.  Returns 0, or
 * 400 (*out NULL) when the decoded path holds a NUL, is not UTF-8, or has
 * a "." or ".." segment: CivetWeb removed the literal ones, so these came
 * encoded.
 */
static int decode_path(const char *raw, char **out)
{
	size_t n = strlen(raw);
	char *d = lp_xmalloc(n + 1);
	const char *seg;
	int len = mg_url_decode(raw, (int)n, d, (int)n + 1, 0);

	*out = NULL;
	if (len < 0 || strlen(d) != (size_t)len || !lp_utf8_valid((unsigned char *)d, (size_t)len))
		goto bad;
	for (seg = d; seg; seg = strchr(seg + 1, '/')) {
		const char *p = *seg == '/' ? seg + 1 : seg;
		size_t sl = strcspn(p, "/");

		if ((sl == 1 && p[0] == '.') || (sl == 2 && p[0] == '.' && p[1] == '.'))
			goto bad;
	}
	*out = d;
	return 0;
bad:
	free(d);
	return 400;
}

/* Bounded set of method labels, so that junk methods cannot blow up series. */
static const char *method_label(const char *m)
{
	static const char *const known[] = { "GET",    "HEAD",  "POST",   "PUT",
					     "DELETE", "PATCH", "OPTIONS" };
	size_t i;

	for (i = 0; i < LP_ARRAY_SIZE(known); i++)
		if (strcmp(m, known[i]) == 0)
			return known[i];
	return "OTHER";
}

/*
 * Whether a body nests brackets deeper than LP_HTTP_MAX_JSON_DEPTH, checked
 * whatever its Content-Type, except for bodies that are binary on the wire:
 * compressed ones (Content-Encoding) and protobuf.  Their random bytes hold
 * '[' and '{' by chance, and their handlers bound the depth after decoding
 * (lp_json_loadb after inflating, a framing pre-scan before protobuf-c).
 */
static bool body_too_deep(const char *ct, const char *ce, const char *b, size_t n)
{
	if (ce && *ce && strcasecmp(ce, "identity") != 0)
		return false;
	if (ct && (lp_http_media_type_is(ct, "application/x-protobuf") ||
		   lp_http_media_type_is(ct, "application/protobuf")))
		return false;
	return lp_json_too_deep(b, n, LP_HTTP_MAX_JSON_DEPTH, NULL);
}

static int on_request(struct mg_connection *conn, void *cbdata)
{
	struct lp_http_server *s = cbdata;
	const struct mg_request_info *ri = mg_get_request_info(conn);
	struct lp_buf allow = LP_BUF_INIT;
	struct req_state st;
	struct lp_http_req *r = &st.pub;
	const struct route *rt = NULL, *other = NULL;
	const char *param = NULL, *route_label, *code = NULL, *why = NULL, *raw_path;
	char status_label[24], allow_hdr[128], *path = NULL;
	int64_t t0 = lp_now_us();
	double secs;
	int rc;

	memset(&st, 0, sizeof(st));
	st.s = s;
	r->conn = conn;
	r->method = ri->request_method ? ri->request_method : "GET";
	raw_path = ri->local_uri ? ri->local_uri : (ri->request_uri ? ri->request_uri : "/");
	rc = check_headers(ri, &code, &why);
	if (rc == 0 && decode_path(raw_path, &path) != 0) {
		rc = 400;
		code = "invalid_path";
		why = "the decoded path holds a NUL, an encoded \".\" or \"..\" segment, or is "
		      "not UTF-8";
	} else if (rc == 0 && ri->query_string && !query_ok(ri->query_string)) {
		rc = 400;
		code = "invalid_query";
		why = "the decoded query string holds a NUL or is not UTF-8";
	}
	r->path = path ? path : raw_path;
	r->query = ri->query_string;
	st.head = strcmp(r->method, "HEAD") == 0;

	take_request_id(r, mg_get_header(conn, "X-Request-ID"), mg_get_header(conn, "traceparent"));

	/* HEAD is served by the GET route, without the body. */
	if (rc == 0)
		rt = find_route(s, st.head ? "GET" : r->method, r->path, &param, &allow, &other);
	route_label = rt ? rt->pattern : (other ? other->pattern : "unmatched");
	r->route = route_label;
	r->param = param;

	if (rc == 0) {
		rc = read_body(s, conn, t0, &r->body, &r->body_len);
		/* Whatever its Content-Type: handlers parse form-typed and
		 * untyped bodies as JSON too, and a parser need not be
		 * jansson to recurse. */
		if (rc == 0 &&
		    body_too_deep(mg_get_header(conn, "Content-Type"),
				  mg_get_header(conn, "Content-Encoding"), r->body, r->body_len))
			rc = -400; /* the body was read: the connection may go on */
	} else {
		st.close = true; /* the body, if any, is unread */
	}
	if (code) {
		lp_http_reply_error(r, rc, code, NULL, "%s", why);
	} else if (rc == 413) {
		st.close = true; /* the rest of the body is unread */
		lp_http_reply_error(r, 413, "payload_too_large", NULL,
				    "request body exceeds %zu bytes", s->max_body);
	} else if (rc == 408) {
		st.close = true;
		lp_http_reply_error(r, 408, "request_timeout", NULL,
				    "the request body did not arrive within %d ms",
				    s->request_timeout_ms);
	} else if (rc == 400) {
		st.close = true;
		lp_http_reply_error(r, 400, "incomplete_body", NULL,
				    "the request body ended before its Content-Length or its "
				    "chunked encoding is broken");
	} else if (rc == -400) {
		lp_http_reply_error(r, 400, "too_deep", NULL,
				    "JSON nested deeper than %d levels", LP_HTTP_MAX_JSON_DEPTH);
	} else if (!rt && other) {
		snprintf(allow_hdr, sizeof(allow_hdr), "Allow: %s\r\n", allow.buf);
		lp_http_reply_error(r, 405, "method_not_allowed", allow_hdr,
				    "%s is not allowed on %s; allowed: %s", r->method, r->path,
				    allow.buf);
	} else if (!rt) {
		lp_http_reply_error(r, 404, "not_found", NULL, "no resource at %s", r->path);
	} else {
		rt->fn(r, rt->ud);
		if (st.deferred)
			wait_answer(&st);
		if (r->status == 0) {
			lp_error("handler for %s %s did not reply", r->method, rt->pattern);
			lp_http_reply_error(r, 500, "internal", NULL, "the handler did not reply");
		}
	}

	secs = (double)(lp_now_us() - t0) / 1e6;
	lp_fmt_u64(status_label, (uint64_t)(r->status > 0 ? r->status : 0));
	lp_series_inc(lp_metric_series(s->requests, route_label, method_label(r->method),
				       status_label));
	lp_series_observe(lp_metric_series(s->duration, route_label), secs);
	if (lp_log_enabled(LP_LOG_DEBUG)) {
		char ms[32];

		snprintf(ms, sizeof(ms), "%.3f", secs * 1000.0);
		lp_log_kv(LP_LOG_DEBUG,
			  (const char *[]){ "method", r->method, "path", r->path, "route",
					    route_label, "status", status_label, "duration_ms", ms,
					    "remote", lp_http_remote_addr(r), NULL },
			  "request");
	}
	lp_log_set_request(NULL, NULL);
	lp_buf_release(&allow);
	free(r->body);
	free(path);
	return r->status;
}

/* ---- answers given later ------------------------------------------------------ */

/* The worker of a deferred request CivetWeb read: waits for lp_http_answer,
 * then writes what was built. */
static void wait_answer(struct req_state *st)
{
	struct lp_http_req *r = &st->pub;

	pthread_mutex_lock(&st->mu);
	while (!st->answered)
		pthread_cond_wait(&st->cv, &st->mu);
	pthread_mutex_unlock(&st->mu);
	pthread_mutex_destroy(&st->mu);
	pthread_cond_destroy(&st->cv);
	st->deferred = false;
	if (st->capture.len)
		mg_write(r->conn, st->capture.buf, st->capture.len);
	lp_buf_release(&st->capture);
}

static const char *async_header(void *ud, const char *name)
{
	struct async_req *a = ud;
	size_t len;

	return a->head ? lp_rq_header(a->head, name, &len) : NULL;
}

/* Hands a deferred request's reply to the front, counts it, frees it. */
static void async_send(struct async_req *a)
{
	char status[24];

	lp_front_answer(a->later, &a->out);
	lp_fmt_u64(status, (uint64_t)a->r.status);
	lp_series_inc(lp_metric_series(a->requests, a->route, method_label(a->method), status));
	lp_series_observe(lp_metric_series(a->duration, a->route),
			  (double)(lp_now_us() - a->t0) / 1e6);
	lp_http_front_end(NULL, &a->r, NULL, 0); /* frees the path */
	lp_buf_release(&a->out);
	free(a);
}

int lp_http_defer(struct lp_http_req *r)
{
	if (r->front) {
		struct async_req *a = (struct async_req *)r;

		if (r->front->header != async_header)
			return -EINVAL;
		if (a->offloaded) { /* deferred already; the handler's parts count */
			if (a->handler_deferred)
				return -EINVAL;
			a->handler_deferred = true;
			return 0;
		}
		if (!a->q || a->later)
			return -EINVAL;
		a->later = lp_front_defer(a->q);
		atomic_store(&a->parts, 2);
		return 0;
	} else {
		struct req_state *st = state_of(r);

		if (!r->conn || st->deferred || r->status != 0)
			return -EINVAL;
		pthread_mutex_init(&st->mu, NULL);
		pthread_cond_init(&st->cv, NULL);
		lp_buf_init(&st->capture, 0);
		st->answered = false;
		st->deferred = true;
		return 0;
	}
}

void lp_http_answer(struct lp_http_req *r)
{
	if (r->status == 0) {
		lp_error("deferred %s %s answered without a reply", r->method, r->path);
		lp_http_reply_error(r, 500, "internal", NULL, "the handler did not reply");
	}
	if (r->front) {
		struct async_req *a = (struct async_req *)r;

		if (atomic_fetch_sub(&a->parts, 1) == 1)
			async_send(a);
	} else {
		struct req_state *st = state_of(r);

		pthread_mutex_lock(&st->mu);
		st->answered = true;
		pthread_cond_signal(&st->cv);
		pthread_mutex_unlock(&st->mu);
	}
}

int lp_http_route_async(struct lp_http_server *s, const char *method, const char *pattern,
			lp_http_handler fn, void *ud)
{
	int rc;

	if (!method)
		return -EINVAL; /* the front matches one method */
	rc = lp_http_route(s, method, pattern, fn, ud);
	if (rc == 0) {
		s->routes[s->nroutes - 1].async = true;
		s->nasync++;
	}
	return rc;
}

/* Whether the raw path may be an async route's (a cheap look before the
 * path is decoded: a path with escapes that decodes to one goes to CivetWeb,
 * which serves it the same). */
static bool async_candidate(struct lp_http_server *s, const char *raw_path)
{
	size_t i;

	if (s->nasync == 0)
		return false;
	for (i = 0; i < s->nroutes; i++) {
		const struct route *rt = &s->routes[i];

		if (!rt->async)
			continue;
		if (rt->wildcard ? strncmp(rt->pattern, raw_path, rt->prefix_len) == 0
				 : strcmp(rt->pattern, raw_path) == 0)
			return true;
	}
	return false;
}

/* Copies what the handler may read of q (the header fields, the query,
 * the body) into a, which the connection's buffers will not outlive. */
static void copy_request(struct async_req *a, const struct lp_front_req *q)
{
	const struct lp_rq *rq = q->head;
	size_t i, qlen = q->query ? strlen(q->query) : 0, need = qlen + 1;
	char *p;

	for (i = 0; i < rq->nheaders; i++)
		need += rq->headers[i].name_len + rq->headers[i].value_len + 2;
	p = a->own_text = lp_xmalloc(need);
	a->own_head = *rq;
	for (i = 0; i < rq->nheaders; i++) {
		struct lp_rq_header *h = &a->own_head.headers[i];

		memcpy(p, rq->headers[i].name, h->name_len);
		p[h->name_len] = '\0';
		h->name = p;
		p += h->name_len + 1;
		memcpy(p, rq->headers[i].value, h->value_len);
		p[h->value_len] = '\0';
		h->value = p;
		p += h->value_len + 1;
	}
	a->own_head.method = a->own_head.path = NULL;
	a->own_head.query = NULL;
	if (q->query) {
		memcpy(p, q->query, qlen + 1);
		a->r.query = p;
	}
	a->head = &a->own_head;
	a->own_body = lp_xmalloc(q->body_len + 1);
	memcpy(a->own_body, q->body, q->body_len);
	a->own_body[q->body_len] = '\0';
	a->r.body = a->own_body;
}

/* Queues a for an offload thread, deferred; false when none takes it
 * (none started, or stopping): the caller then serves it on the loop. */
static bool offload(struct lp_http_server *s, struct async_req *a, struct lp_front_req *q,
		    const struct route *rt)
{
	bool queued = false;

	a->fn = rt->fn;
	a->ud = rt->ud;
	copy_request(a, q);
	a->offloaded = true;
	atomic_store(&a->parts, 2);
	pthread_mutex_lock(&s->off_mu);
	if (s->off_running) {
		a->later = lp_front_defer(q);
		if (s->off_tail)
			s->off_tail->next = a;
		else
			s->off_head = a;
		s->off_tail = a;
		pthread_cond_signal(&s->off_cv);
		queued = true;
	}
	pthread_mutex_unlock(&s->off_mu);
	if (!queued) {
		a->offloaded = false;
		a->head = q->head;
		a->r.body = q->body;
		a->r.query = q->query;
		free(a->own_text);
		free(a->own_body);
		a->own_text = a->own_body = NULL;
	}
	return queued;
}

/* Calls an offloaded request's handler; sends its reply when it gave one
 * at once, or when it deferred and its answer came already. */
static void offload_run(struct async_req *a)
{
	a->fn(&a->r, a->ud);
	a->head = NULL;
	a->r.body = NULL;
	a->r.body_len = 0;
	a->r.query = NULL;
	a->r.param = NULL;
	free(a->own_text);
	free(a->own_body);
	a->own_text = a->own_body = NULL;
	if (!a->handler_deferred) {
		if (a->r.status == 0) {
			lp_error("handler for %s %s did not reply", a->r.method, a->route);
			lp_http_reply_error(&a->r, 500, "internal", NULL, "the handler did not reply");
		}
		async_send(a);
	} else if (atomic_fetch_sub(&a->parts, 1) == 1) {
		async_send(a);
	}
}

static void *offload_main(void *arg)
{
	struct lp_http_server *s = arg;

	pthread_mutex_lock(&s->off_mu);
	for (;;) {
		struct async_req *a;

		while (!s->off_head && !s->off_stop)
			pthread_cond_wait(&s->off_cv, &s->off_mu);
		a = s->off_head;
		if (!a)
			break; /* stopping, and nothing left */
		s->off_head = a->next;
		if (!s->off_head)
			s->off_tail = NULL;
		pthread_mutex_unlock(&s->off_mu);
		offload_run(a);
		pthread_mutex_lock(&s->off_mu);
	}
	pthread_mutex_unlock(&s->off_mu);
	return NULL;
}

static void offload_start(struct lp_http_server *s)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int n = cpus < 2 ? 2 : cpus > MAX_OFFLOAD_THREADS ? MAX_OFFLOAD_THREADS : (int)cpus;

	s->off_stop = false;
	for (s->noff = 0; s->noff < n; s->noff++)
		if (pthread_create(&s->off_threads[s->noff], NULL, offload_main, s) != 0)
			break;
	if (s->noff < n)
		lp_warn("http: %d of %d offload threads started", s->noff, n);
	pthread_mutex_lock(&s->off_mu);
	s->off_running = s->noff > 0;
	pthread_mutex_unlock(&s->off_mu);
}

/* Runs what is queued, then joins the threads; later requests are served
 * on the loops. */
static void offload_stop(struct lp_http_server *s)
{
	int i;

	pthread_mutex_lock(&s->off_mu);
	s->off_running = false;
	s->off_stop = true;
	pthread_cond_broadcast(&s->off_cv);
	pthread_mutex_unlock(&s->off_mu);
	for (i = 0; i < s->noff; i++)
		pthread_join(s->off_threads[i], NULL);
	s->noff = 0;
}

/* The front's handler: an async route's request is served here, on the
 * loop (a big one on an offload thread); anything else goes to the outer
 * handler (the gateway's), or to CivetWeb behind. */
static enum lp_front_verdict front_start(void *ud, struct lp_front_req *q)
{
	struct lp_http_server *s = ud;
	struct async_req *a;
	struct lp_buf allow = LP_BUF_INIT;
	const struct route *rt = NULL, *other;
	const char *param;

	if (!async_candidate(s, q->path))
		goto outer;
	a = lp_xcalloc(1, sizeof(*a));
	a->t0 = lp_now_us();
	a->s = s;
	a->head = q->head;
	a->q = q;
	lp_strlcpy(a->addr, q->remote_addr, sizeof(a->addr));
	lp_buf_init(&a->out, 0);
	a->fr.header = async_header;
	a->fr.ud = a;
	a->fr.remote_addr = a->addr;
	a->fr.keep_alive = !q->close;
	a->fr.out = &a->out;
	if (lp_http_front_begin(&a->r, &a->fr, q->method, q->path, q->query, q->body,
				q->body_len) == 0)
		rt = find_route(s, q->method, a->r.path, &param, &allow, &other);
	lp_buf_release(&allow);
	if (!rt || !rt->async) {
		if (a->r.path)
			lp_http_front_end(s, &a->r, NULL, 0);
		lp_buf_release(&a->out);
		free(a);
		goto outer;
	}
	lp_strlcpy(a->route, rt->pattern, sizeof(a->route));
	lp_strlcpy(a->method, rt->method, sizeof(a->method));
	a->requests = s->requests;
	a->duration = s->duration;
	a->r.route = a->route;
	a->r.param = param;
	a->r.method = a->method; /* outlives the connection's buffer */
	if (q->body_len >= OFFLOAD_BYTES && offload(s, a, q, rt))
		return LP_FRONT_DEFER;
	rt->fn(&a->r, rt->ud);
	a->q = NULL;
	if (a->later) {
		/* What pointed into the connection's buffers is gone with it
		 * (the answer, if it came already, used none of it). */
		a->head = NULL;
		a->r.body = NULL;
		a->r.body_len = 0;
		a->r.query = NULL;
		a->r.param = NULL;
		if (atomic_fetch_sub(&a->parts, 1) == 1)
			async_send(a); /* answered during the handler: sent on the next wake */
		return LP_FRONT_DEFER;
	}
	if (a->r.status == 0) {
		lp_error("handler for %s %s did not reply", a->r.method, rt->pattern);
		lp_http_reply_error(&a->r, 500, "internal", NULL, "the handler did not reply");
	}
	lp_buf_release(q->reply);
	*q->reply = a->out;
	lp_http_front_end(s, &a->r, rt->pattern, a->t0);
	free(a);
	return LP_FRONT_REPLY;
outer:
	return s->outer.start ? s->outer.start(s->outer.ud, q) : LP_FRONT_DECLINE;
}

static void front_finish(void *ud, struct lp_front_req *q, char *answer, size_t n,
			 enum lp_h1_result io, const char *err)
{
	struct lp_http_server *s = ud;

	s->outer.finish(s->outer.ud, q, answer, n, io, err);
}

static void front_cancel(void *ud, struct lp_front_req *q)
{
	struct lp_http_server *s = ud;

	s->outer.cancel(s->outer.ud, q);
}

/* ---- requests read by another front --------------------------------------- */

int lp_http_front_begin(struct lp_http_req *r, const struct lp_http_front *f, const char *method,
			const char *raw_path, const char *query, char *body, size_t len)
{
	char *path = NULL;

	memset(r, 0, sizeof(*r));
	if (decode_path(raw_path, &path) != 0 || (query && !query_ok(query)))
		goto other;
	if (body_too_deep(f->header(f->ud, "Content-Type"), f->header(f->ud, "Content-Encoding"),
			  body, len))
		goto other; /* as in on_request */
	r->front = f;
	r->method = method;
	r->path = path;
	r->query = query;
	r->body = body;
	r->body_len = len;
	take_request_id(r, f->header(f->ud, "X-Request-ID"), f->header(f->ud, "traceparent"));
	return 0;
other:
	free(path);
	return -EINVAL;
}

/* The series a front's request is counted in, remembered per thread for
 * the last few (server, route, method, status): a lookup in the registry
 * hashes the labels and takes its lock, shared by every thread.  The
 * server is named by its id, never reused, so a memo cannot outlive the
 * series it points at while that server serves. */
struct series_memo {
	uint64_t server;            /* lp_http_server.id; 0: empty */
	const char *route;          /* the route's pattern (the server's) */
	const char *method;         /* method_label's */
	int status;
	struct lp_series *requests; /* http_requests_total{route,method,status} */
	struct lp_series *duration; /* http_request_duration_seconds{route} */
};

#define SERIES_MEMOS 8

static __thread struct series_memo memos[SERIES_MEMOS];
static __thread unsigned memo_next;

static const struct series_memo *series_for(struct lp_http_server *s, const char *route,
					    const char *method, int status)
{
	struct series_memo *m;
	char text[24];
	size_t i;

	for (i = 0; i < SERIES_MEMOS; i++) {
		m = &memos[i];
		if (m->server == s->id && m->route == route && m->method == method &&
		    m->status == status)
			return m;
	}
	m = &memos[memo_next++ % SERIES_MEMOS];
	lp_fmt_u64(text, (uint64_t)status);
	m->requests = lp_metric_series(s->requests, route, method, text);
	m->duration = lp_metric_series(s->duration, route);
	m->server = s->id;
	m->route = route;
	m->method = method;
	m->status = status;
	return m;
}

void lp_http_front_end(struct lp_http_server *s, struct lp_http_req *r, const char *route,
		       int64_t t0_us)
{
	if (route) {
		const struct series_memo *m =
			series_for(s, route, method_label(r->method), r->status > 0 ? r->status : 0);

		lp_series_inc(m->requests);
		lp_series_observe(m->duration, (double)(lp_now_us() - t0_us) / 1e6);
	}
	lp_log_set_request(NULL, NULL);
	free((char *)(uintptr_t)r->path);
	r->path = NULL;
}

const char *lp_http_find(struct lp_http_server *s, const char *method, const char *path,
			 lp_http_handler *fn, void **ud)
{
	const char *param;
	size_t i;

	for (i = 0; i < s->nroutes; i++) {
		const struct route *rt = &s->routes[i];

		if (!route_matches_path(rt, path, &param))
			continue;
		if (!method_matches(rt, method))
			return NULL; /* CivetWeb's path answers 405 or the next route */
		*fn = rt->fn;
		*ud = rt->ud;
		return rt->pattern;
	}
	return NULL;
}

/*
 * CivetWeb's own refusals (before on_request): the same JSON error body as
 * ours, counted under route "unparsed".  An invalid Content-Length is a
 * framing error (RFC 9112, 6.3): 400, where CivetWeb says 411.
 */
static int on_http_error(struct mg_connection *conn, int status, const char *msg)
{
	struct lp_http_server *s = mg_get_user_data(mg_get_context(conn));
	const struct mg_request_info *ri = mg_get_request_info(conn);
	const char *code, *text;
	json_t *body;
	char *json, label[8];
	size_t len;

	if (status == 411 && mg_get_header(conn, "Content-Length"))
		status = 400;
	/* CivetWeb listens before on_request can be registered; what arrives in
	 * between finds no handler.  The service is starting, not missing the
	 * resource: 503, come back in a second. */
	if (status == 404 && s && !atomic_load(&s->serving)) {
		status = 503;
		msg = "the service is starting";
	}
	switch (status) {
	case 400: code = "bad_request"; break;
	case 408: code = "request_timeout"; break;
	case 411: code = "length_required"; break;
	case 413: code = "payload_too_large"; break;
	case 414: code = "uri_too_long"; break;
	case 431: code = "headers_too_large"; break;
	case 503: code = "starting"; break;
	case 505: code = "http_version_not_supported"; break;
	default: code = "protocol_error"; break;
	}
	body = json_pack("{s:s, s:{s:s, s:o}}", "status", "error", "error", "code", code,
			 "message", json_text(msg && *msg ? msg : "malformed request"));
	json = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	len = json ? strlen(json) : 0;
	text = mg_get_response_code_text(conn, status);
	mg_disable_connection_keep_alive(conn);
	mg_printf(conn,
		  "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
		  "Content-Length: %zu\r\nConnection: close\r\n%s\r\n",
		  status, text ? text : "", len, status == 503 ? "Retry-After: 1\r\n" : "");
	if (len)
		mg_write(conn, json, len);
	free(json);
	if (s) {
		snprintf(label, sizeof(label), "%d", status);
		lp_series_inc(lp_metric_series(s->requests, "unparsed",
					       method_label(ri && ri->request_method
								    ? ri->request_method
								    : "OTHER"),
					       label));
	}
	lp_debug("refused before routing: %d %s", status, msg ? msg : "");
	return 0;
}

/* CivetWeb's own complaints go to the JSON log. */
static int on_log_message(const struct mg_connection *conn, const char *message)
{
	lp_warn("civetweb: %s", message);
	return 1;
}

/* ---- lifecycle ---------------------------------------------------------- */

static pthread_once_t civetweb_once = PTHREAD_ONCE_INIT;

static void civetweb_init(void)
{
	mg_init_library(0);
}

struct lp_http_server *lp_http_server_new(const struct lp_http_opts *opts, char *err,
					  size_t errlen)
{
	struct lp_http_server *s;
	struct lp_registry *reg = lp_registry_default();
	size_t i;

	if (!opts || !opts->listen || !*opts->listen) {
		snprintf(err, errlen, "no listen address");
		return NULL;
	}
	if (opts->threads < 0 || opts->request_timeout_ms < 0) {
		snprintf(err, errlen, "negative thread count or timeout");
		return NULL;
	}
	if (opts->front && strcmp(opts->front, "events") != 0 &&
	    strcmp(opts->front, "civetweb") != 0) {
		snprintf(err, errlen, "http.front \"%s\" is neither events nor civetweb", opts->front);
		return NULL;
	}
	s = lp_xcalloc(1, sizeof(*s));
	s->id = atomic_fetch_add(&server_ids, 1) + 1;
	pthread_mutex_init(&s->reads_mu, NULL);
	pthread_cond_init(&s->reads_cv, NULL);
	pthread_mutex_init(&s->off_mu, NULL);
	pthread_cond_init(&s->off_cv, NULL);
	s->events = !opts->front || strcmp(opts->front, "events") == 0;
	s->front_loops = opts->front_loops;
	s->stop_timeout_ms = opts->stop_timeout_ms > 0 ? opts->stop_timeout_ms : 10000;
	if (opts->handler)
		s->outer = *opts->handler;
	s->public_listen = lp_xstrdup(opts->listen);
	/* Behind the front, CivetWeb takes only the front's tunnels. */
	s->listen = lp_xstrdup(s->events ? "127.0.0.1:0" : opts->listen);
	s->service = lp_xstrdup(opts->service ? opts->service : "logpipe");
	s->threads = opts->threads ? opts->threads : DEFAULT_THREADS;
	s->max_body = opts->max_body ? opts->max_body : DEFAULT_MAX_BODY;
	s->request_timeout_ms = opts->request_timeout_ms ? opts->request_timeout_ms
							 : DEFAULT_TIMEOUT_MS;
	s->requests = lp_metric_new(reg, LP_COUNTER, "http_requests_total",
				    "HTTP requests by route, method and status",
				    "route,method,status", NULL, 0);
	s->duration = lp_metric_new(reg, LP_HISTOGRAM, "http_request_duration_seconds",
				    "HTTP request duration in seconds by route", "route", NULL, 0);
	if (!s->requests || !s->duration) {
		snprintf(err, errlen, "http metrics already registered with another type");
		lp_http_server_free(s);
		return NULL;
	}
	for (i = 0; i < LP_ARRAY_SIZE(builtins); i++) {
		lp_http_route(s, "GET", builtins[i].pattern, builtins[i].fn, s);
		/* Liveness is answered on the front's loop: it says the process
		 * serves, whatever CivetWeb's workers are held by. */
		if (builtins[i].fn == handle_live) {
			s->routes[s->nroutes - 1].async = true;
			s->nasync++;
		}
	}
	return s;
}

static int allow_all(struct mg_connection *conn, void *cbdata)
{
	(void)conn;
	(void)cbdata;
	return 1;
}

int lp_http_start(struct lp_http_server *s, char *err, size_t errlen)
{
	struct mg_callbacks cb;
	struct mg_init_data init;
	struct mg_error_data ed;
	char threads[16], timeout[16], text[256] = "";
	unsigned code = 0;
	const char *options[] = {
		"listening_ports",    s->listen, "num_threads",	      threads,
		"request_timeout_ms", timeout,	 "enable_keep_alive", "yes",
		"decode_url",	      "no",	 NULL,
	};

	if (s->ctx) {
		snprintf(err, errlen, "server already started");
		return -EINVAL;
	}
	pthread_once(&civetweb_once, civetweb_init);
	snprintf(threads, sizeof(threads), "%d", s->threads);
	snprintf(timeout, sizeof(timeout), "%d", s->request_timeout_ms);
	memset(&cb, 0, sizeof(cb));
	cb.log_message = on_log_message;
	cb.http_error = on_http_error;
	init.callbacks = &cb;
	init.user_data = s;
	init.configuration_options = options;
	ed.code = &code;
	ed.text = text;
	ed.text_buffer_size = sizeof(text);

	/* Before the workers exist, so that they read watchdog_on unraced. */
	s->stopping = false;
	if (pthread_create(&s->watchdog, NULL, watchdog_main, s) == 0)
		s->watchdog_on = true;
	else
		lp_warn("http: no watchdog thread; slow request bodies are not cut off");
	s->ctx = mg_start2(&init, &ed);
	if (!s->ctx) {
		stop_watchdog(s);
		snprintf(err, errlen, "cannot listen on \"%s\": %s", s->listen,
			 text[0] ? text : "civetweb failed to start");
		/* CivetWeb reports a busy port only in its text. */
		if (strcasestr(text, "bind") || strcasestr(text, "in use") ||
		    strcasestr(text, "port"))
			return -EADDRINUSE;
		return -EINVAL;
	}
	mg_set_request_handler(s->ctx, "/", on_request, s);
	/* Access control is the handlers' own.  Without a handler here
	 * CivetWeb looks for a .htpasswd file (a failing stat) on every
	 * request. */
	mg_set_auth_handler(s->ctx, "/", allow_all, NULL);
	atomic_store(&s->serving, true);
	if (s->events) {
		struct lp_front_opts fo = { 0 };

		fo.listen = s->public_listen;
		fo.loops = s->front_loops;
		fo.max_body = s->max_body;
		fo.request_timeout_ms = s->request_timeout_ms;
		fo.inner_port = inner_port_of(s);
		fo.handler.start = front_start;
		fo.handler.finish = front_finish;
		fo.handler.cancel = front_cancel;
		fo.handler.ud = s;
		if (s->nasync > 0)
			offload_start(s); /* before the loops can offer a request */
		s->front = lp_front_start(&fo, text, sizeof(text));
		if (!s->front) {
			offload_stop(s);
			snprintf(err, errlen, "cannot listen on \"%s\": %s", s->public_listen, text);
			atomic_store(&s->serving, false);
			mg_stop(s->ctx);
			s->ctx = NULL;
			stop_watchdog(s);
			return strstr(err, "in use") ? -EADDRINUSE : -EINVAL;
		}
	}
	return 0;
}

/* The port CivetWeb listens on (behind the front, with events). */
static int inner_port_of(struct lp_http_server *s)
{
	struct mg_server_port p;

	if (!s || !s->ctx || mg_get_server_ports(s->ctx, 1, &p) < 1)
		return -ENOTCONN;
	return p.port;
}

int lp_http_port(struct lp_http_server *s)
{
	if (s && s->front)
		return lp_front_port(s->front);
	return inner_port_of(s);
}

struct lp_front *lp_http_event_front(struct lp_http_server *s)
{
	return s ? s->front : NULL;
}

/* ---- a quick mg_stop -------------------------------------------------------
 *
 * CivetWeb 1.15's master thread polls its listening sockets in 2 s quanta
 * and looks at the stop flag only between polls, so mg_stop waits up to 2 s
 * before it even starts to stop (about 2 s measured: eight idle servers took
 * 15.6 s, 0.3 s with this), in every service's SIGTERM and every test that
 * stops a server.  A connection to a listening port ends
 * that poll at once: beside mg_stop, a thread dials each of CivetWeb's ports
 * every 10 ms until mg_stop returned or the port refused (CivetWeb closed
 * it; it might go to another server next), and closes each connection at once.
 * One CivetWeb accepted before it saw the flag is read by a worker, which
 * finds it closed; one still queued goes with the listening socket.  Without
 * an IPv4 port (or when a dial fails) mg_stop just takes its usual time.
 */

#define STOP_WAKER_PORTS 4

struct stop_waker {
	pthread_mutex_t mu;                        /* guards done */
	pthread_cond_t cv;                         /* signalled when mg_stop returned */
	bool done;                                 /* mg_stop returned: stop dialling */
	struct sockaddr_in addr[STOP_WAKER_PORTS]; /* CivetWeb's IPv4 listening ports */
	bool refused[STOP_WAKER_PORTS];            /* closed: not dialled again (the port
						    * may go to another server) */
	int naddr;
};

static void *stop_waker_run(void *arg)
{
	struct stop_waker *w = arg;
	struct timespec until;
	int i, fd;

	pthread_mutex_lock(&w->mu);
	while (!w->done) {
		pthread_mutex_unlock(&w->mu);
		for (i = 0; i < w->naddr; i++) {
			if (w->refused[i])
				continue;
			/* Non-blocking: a full backlog must not hold this thread. */
			fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (fd < 0)
				continue;
			if (connect(fd, (struct sockaddr *)&w->addr[i], sizeof(w->addr[i])) != 0 &&
			    errno == ECONNREFUSED)
				w->refused[i] = true;
			close(fd);
		}
		pthread_mutex_lock(&w->mu);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 10 * 1000 * 1000;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		if (!w->done)
			pthread_cond_timedwait(&w->cv, &w->mu, &until);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* The IPv4 address CivetWeb's "listening_ports" value binds to, as a place
 * to dial: its host if it names one, else the loopback address. */
static struct in_addr listen_host(const char *listen)
{
	struct in_addr a = { .s_addr = htonl(INADDR_LOOPBACK) }, h;
	const char *colon = listen ? strrchr(listen, ':') : NULL;
	char host[64];
	size_t n;

	if (!colon || strchr(listen, ',') || listen[0] == '[')
		return a;
	n = (size_t)(colon - listen);
	if (n == 0 || n >= sizeof(host))
		return a;
	memcpy(host, listen, n);
	host[n] = '\0';
	if (inet_pton(AF_INET, host, &h) == 1 && h.s_addr != htonl(INADDR_ANY))
		a = h;
	return a;
}

/* mg_stop, without its wait for the master thread's poll to time out. */
static void quick_mg_stop(struct lp_http_server *s)
{
	struct mg_server_port ports[STOP_WAKER_PORTS];
	struct stop_waker w = { .naddr = 0 };
	pthread_t th;
	bool waker = false;
	int i, n = mg_get_server_ports(s->ctx, STOP_WAKER_PORTS, ports);

	for (i = 0; i < n; i++) {
		if (ports[i].protocol != 1 && ports[i].protocol != 3)
			continue; /* IPv6 only */
		w.addr[w.naddr].sin_family = AF_INET;
		w.addr[w.naddr].sin_port = htons((uint16_t)ports[i].port);
		w.addr[w.naddr].sin_addr = listen_host(s->listen);
		w.naddr++;
	}
	if (w.naddr > 0) {
		pthread_mutex_init(&w.mu, NULL);
		pthread_cond_init(&w.cv, NULL);
		waker = pthread_create(&th, NULL, stop_waker_run, &w) == 0;
		if (!waker) {
			pthread_cond_destroy(&w.cv);
			pthread_mutex_destroy(&w.mu);
		}
	}
	mg_stop(s->ctx); /* waits for the handlers in flight */
	if (waker) {
		pthread_mutex_lock(&w.mu);
		w.done = true;
		pthread_cond_signal(&w.cv);
		pthread_mutex_unlock(&w.mu);
		pthread_join(th, NULL);
		pthread_cond_destroy(&w.cv);
		pthread_mutex_destroy(&w.mu);
	}
}

void lp_http_server_free(struct lp_http_server *s)
{
	size_t i;

	if (!s)
		return;
	/* The front's requests first (deferred ones included: answered by
	 * other threads, for at most stop_timeout_ms); then the front lets go
	 * of the handler, which reads the route table; then CivetWeb's
	 * requests, whose answers still flow through the front's tunnels;
	 * then the front itself.  The offload threads call handlers too: they
	 * finish what is queued before the detach. */
	lp_front_quiesce(s->front, s->stop_timeout_ms);
	offload_stop(s);
	lp_front_detach(s->front);
	if (s->ctx)
		quick_mg_stop(s);
	lp_front_stop(s->front);
	s->front = NULL;
	stop_watchdog(s);
	pthread_mutex_destroy(&s->reads_mu);
	pthread_cond_destroy(&s->reads_cv);
	pthread_mutex_destroy(&s->off_mu);
	pthread_cond_destroy(&s->off_cv);
	for (i = 0; i < s->nroutes; i++) {
		free(s->routes[i].method);
		free(s->routes[i].pattern);
	}
	free(s->routes);
	for (i = 0; i < s->nchecks; i++)
		free(s->checks[i].name);
	free(s->checks);
	free(s->listen);
	free(s->public_listen);
	free(s->service);
	free(s);
}
