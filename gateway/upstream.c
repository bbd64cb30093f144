/* upstream.c - calls to the services behind the gateway.
 *
 * A plain "http://host:port" upstream (every local one) is called with
 * the small client of h1.c: its pool keeps sockets alive between calls and
 * a call costs one sendmsg(2) and a recv(2) or two.  Any other base
 * URL (https, a path prefix) goes through libcurl: the curl pool is a stack
 * of easy handles under a mutex; a call pops one (or creates one when the
 * stack is empty), resets its options, performs, and pushes it back.
 * curl_easy_reset keeps the handle's connection cache, so those
 * connections stay open across calls too.  Both clients retry once on a
 * fresh connection when a kept-alive one turns out closed before any byte
 * of the answer came.  Breaker, error kinds and messages are shared.
 *
 * The response is buffered whole (bounded by max_response) because the
 * reply helpers send a Content-Length; the services' answers are small. */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "logpipe/breaker.h"
#include "logpipe/log.h"
#include "logpipe/util.h"
#include "auth.h"
#include "logpipe/h1.h"
#include "upstream.h"

#include "logpipe/banned.h"

#define MAX_CONNS 8

struct gw_pool {
	pthread_mutex_t mu; /* guards the stack */
	CURL **free;        /* idle handles */
	size_t nfree, cap;
	struct lp_h1_pool *h1; /* kept-alive sockets of plain http:// upstreams */
};

/* Per-call state the curl callbacks see. */
struct xfer {
	struct gw_call *c;
	size_t max;      /* max_response */
	bool too_large;  /* the body passed max */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct gw_pool *gw_pool_new(void)
{
	struct gw_pool *p = lp_xcalloc(1, sizeof(*p));

	pthread_once(&curl_once, curl_init_once);
	pthread_mutex_init(&p->mu, NULL);
	p->h1 = lp_h1_pool_new();
	return p;
}

void gw_pool_free(struct gw_pool *p)
{
	size_t i;

	if (!p)
		return;
	for (i = 0; i < p->nfree; i++)
		curl_easy_cleanup(p->free[i]);
	free(p->free);
	lp_h1_pool_free(p->h1);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

static CURL *pool_get(struct gw_pool *p)
{
	CURL *h = NULL;

	pthread_mutex_lock(&p->mu);
	if (p->nfree > 0)
		h = p->free[--p->nfree];
	pthread_mutex_unlock(&p->mu);
	return h ? h : curl_easy_init();
}

static void pool_put(struct gw_pool *p, CURL *h)
{
	pthread_mutex_lock(&p->mu);
	if (p->nfree == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 16;
		p->free = lp_xrealloc(p->free, p->cap * sizeof(*p->free));
	}
	p->free[p->nfree++] = h;
	pthread_mutex_unlock(&p->mu);
}

void gw_call_init(struct gw_call *c)
{
	lp_buf_init(&c->body_out, 0);
	lp_buf_init(&c->headers_out, 0);
	c->content_type[0] = '\0';
	c->error[0] = '\0';
	c->status = 0;
}

void gw_call_release(struct gw_call *c)
{
	lp_buf_release(&c->body_out);
	lp_buf_release(&c->headers_out);
}

bool gw_header_forwardable(const char *name, size_t len)
{
	static const char *const exact[] = {
		"Retry-After",	 "Location",  "Content-Location", "ETag",
		"Last-Modified", "Cache-Control", "Link",	  "Allow",
		"Content-Language", "X-Total-Count", "Deprecation", "Sunset",
		"RateLimit",	 "RateLimit-Policy",
	};
	static const char *const prefixes[] = { "RateLimit-", "X-RateLimit-" };
	size_t i, n;

	for (i = 0; i < LP_ARRAY_SIZE(exact); i++)
		if (strlen(exact[i]) == len && strncasecmp(name, exact[i], len) == 0)
			return true;
	for (i = 0; i < LP_ARRAY_SIZE(prefixes); i++) {
		n = strlen(prefixes[i]);
		if (len > n && strncasecmp(name, prefixes[i], n) == 0)
			return true;
	}
	return false;
}

void gw_path_encode(const char *path, struct lp_buf *out)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p;

	for (p = (const unsigned char *)path; *p; p++) {
		unsigned char c = *p;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    strchr("-._~!$&'()*+,;=:@/", c)) {
			lp_buf_addch(out, (char)c);
		} else {
			lp_buf_addch(out, '%');
			lp_buf_addch(out, hex[c >> 4]);
			lp_buf_addch(out, hex[c & 15]);
		}
	}
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
	struct xfer *x = ud;
	size_t n = size * nmemb;

	if (x->c->body_out.len + n > x->max) {
		x->too_large = true;
		return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
	}
	lp_buf_add(&x->c->body_out, data, n);
	return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
	struct xfer *x = ud;
	struct gw_call *c = x->c;
	size_t n = size * nmemb, nlen, vlen;
	const char *colon, *v;

	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		/* A new status line (after a 1xx): forget earlier headers. */
		lp_buf_reset(&c->headers_out);
		c->content_type[0] = '\0';
		return n;
	}
	colon = memchr(data, ':', n);
	if (!colon)
		return n;
	nlen = (size_t)(colon - data);
	v = colon + 1;
	vlen = n - nlen - 1;
	while (vlen > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		vlen--;
	}
	while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
		vlen--;
	if (nlen == 12 && strncasecmp(data, "Content-Type", 12) == 0) {
		if (vlen < sizeof(c->content_type)) {
			memcpy(c->content_type, v, vlen);
			c->content_type[vlen] = '\0';
		}
	} else if (gw_header_forwardable(data, nlen) && !memchr(v, '\r', vlen) &&
		   !memchr(v, '\n', vlen)) {
		lp_buf_add(&c->headers_out, data, nlen);
		lp_buf_adds(&c->headers_out, ": ");
		lp_buf_add(&c->headers_out, v, vlen);
		lp_buf_adds(&c->headers_out, "\r\n");
	}
	return n;
}

/* Sets the method and body of the request on h. */
static void set_method(CURL *h, const struct gw_call *c)
{
	bool has_body = c->body && c->body_len > 0;

	if (strcmp(c->method, "GET") == 0 || strcmp(c->method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
		return;
	}
	if (strcmp(c->method, "POST") != 0)
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method);
	if (strcmp(c->method, "POST") == 0 || strcmp(c->method, "PUT") == 0 ||
	    strcmp(c->method, "PATCH") == 0 || has_body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, has_body ? c->body : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)(has_body ? c->body_len : 0));
	} else {
		curl_easy_setopt(h, CURLOPT_NOBODY, 0L);
	}
}

/* How one transfer ended, before it is told apart for the caller. */
enum xfer_end {
	XFER_OK,
	XFER_TIMEOUT,
	XFER_FAILED,
	XFER_LOCAL, /* failed here, not the upstream's fault: not held against it */
};

/* The transfer on libcurl (https and anything h1 does not take). */
static enum xfer_end perform_curl(struct gw_pool *p, struct gw_upstream *u, struct gw_call *c,
				  struct xfer *x, long timeout_ms, char *err, size_t errlen)
{
	struct curl_slist *hdrs = NULL;
	struct lp_buf url = LP_BUF_INIT;
	char curl_err[CURL_ERROR_SIZE] = "";
	enum xfer_end end = XFER_OK;
	long status = 0;
	CURLcode cc;
	CURL *h;
	size_t i;

	h = pool_get(p);
	if (!h) {
		snprintf(err, errlen, "cannot create a curl handle");
		return XFER_LOCAL;
	}
	lp_buf_adds(&url, u->base);
	lp_buf_adds(&url, c->path);
	if (c->query && *c->query) {
		lp_buf_addch(&url, '?');
		lp_buf_adds(&url, c->query);
	}
	for (i = 0; c->headers && c->headers[i]; i++)
		hdrs = curl_slist_append(hdrs, c->headers[i]);
	/* No "Expect: 100-continue" round trip before a body. */
	hdrs = curl_slist_append(hdrs, "Expect:");

	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, url.buf);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_MAXCONNECTS, (long)MAX_CONNS);
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, u->connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
	set_method(h, c);

	cc = curl_easy_perform(h);
	if (cc == CURLE_OK) {
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		c->status = (int)status;
	} else if (cc == CURLE_OPERATION_TIMEDOUT) {
		end = XFER_TIMEOUT;
	} else {
		snprintf(err, errlen, "%s", curl_err[0] ? curl_err : curl_easy_strerror(cc));
		end = XFER_FAILED;
	}
	/* The handle must not keep pointers into this call. */
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
	pool_put(p, h);
	curl_slist_free_all(hdrs);
	lp_buf_release(&url);
	return end;
}

/* The request of c for the small client, without deadline or sinks. */
static void lp_h1_req_of(const struct gw_call *c, struct lp_h1_req *rq)
{
	memset(rq, 0, sizeof(*rq));
	rq->method = c->method;
	rq->path = c->path;
	rq->query = c->query;
	rq->headers = c->headers;
	rq->body = c->body;
	rq->body_len = c->body_len;
}

/* The transfer on the small client (plain http:// upstreams). */
static enum xfer_end perform_h1(struct gw_pool *p, struct gw_upstream *u, struct gw_call *c,
				const struct lp_h1_target *t, struct xfer *x, long timeout_ms,
				char *err, size_t errlen)
{
	struct lp_h1_req rq;

	lp_h1_req_of(c, &rq);
	rq.deadline_ms = lp_now_ms() + timeout_ms;
	rq.connect_timeout_ms = u->connect_timeout_ms;
	rq.on_header = on_header;
	rq.on_body = on_body;
	rq.ud = x;
	switch (lp_h1_perform(p->h1, t, &rq, &c->status, err, errlen)) {
	case LP_H1_OK:
		return XFER_OK;
	case LP_H1_TIMEOUT:
		return XFER_TIMEOUT;
	default:
		return XFER_FAILED;
	}
}

void gw_upstream_prepare(struct gw_upstream *u)
{
	struct lp_h1_target t;

	if (!u->target && lp_h1_target_parse(u->base, &t) == 0) {
		u->target = lp_xmalloc(sizeof(*u->target));
		*u->target = t;
	}
}

void gw_upstream_release(struct gw_upstream *u)
{
	free(u->target);
	u->target = NULL;
}

/* Turns how the transfer ended into the call's result and error text, and
 * feeds the breaker (unless c->record is false). */
static enum gw_call_result conclude(struct gw_upstream *u, struct gw_call *c, enum xfer_end end,
				    const struct xfer *x, long timeout_ms, const char *err,
				    int64_t t0_ms)
{
	enum gw_call_result res;

	if (end == XFER_OK) {
		res = GW_CALL_OK;
	} else if (x->too_large) {
		snprintf(c->error, sizeof(c->error), "%s answered more than %zu bytes", u->name,
			 x->max);
		res = GW_CALL_TOO_LARGE;
	} else if (end == XFER_TIMEOUT) {
		snprintf(c->error, sizeof(c->error), "%s did not answer within %ld ms", u->name,
			 timeout_ms);
		res = GW_CALL_TIMEOUT;
	} else {
		snprintf(c->error, sizeof(c->error), "%s: %s", u->name, err);
		res = GW_CALL_FAILED;
	}
	if (c->record) {
		bool ok = res == GW_CALL_TOO_LARGE || end == XFER_LOCAL ||
			  (res == GW_CALL_OK && (c->status < 500 || c->status == 503 ||
						 c->status == 501));

		lp_breaker_record(u->breaker, ok, lp_now_ms() - t0_ms);
	}
	return res;
}

static size_t max_response(const struct gw_upstream *u)
{
	return u->max_response ? u->max_response : 16u << 20;
}

static long call_timeout(const struct gw_upstream *u, const struct gw_call *c)
{
	return c->timeout_ms > 0 ? c->timeout_ms : u->timeout_ms;
}

enum gw_call_result gw_upstream_call(struct gw_pool *p, struct gw_upstream *u,
				     struct gw_call *c)
{
	struct xfer x = { c, max_response(u), false };
	long timeout_ms = call_timeout(u, c);
	char err[GW_ERROR_LEN - 40] = "";
	struct lp_h1_target t;
	enum xfer_end end;
	int64_t t0;

	if (c->record && !lp_breaker_allow(u->breaker)) {
		snprintf(c->error, sizeof(c->error), "circuit breaker of %s is open", u->name);
		return GW_CALL_OPEN;
	}
	t0 = lp_now_ms();
	if (u->target)
		end = perform_h1(p, u, c, u->target, &x, timeout_ms, err, sizeof(err));
	else if (lp_h1_target_parse(u->base, &t) == 0)
		end = perform_h1(p, u, c, &t, &x, timeout_ms, err, sizeof(err));
	else
		end = perform_curl(p, u, c, &x, timeout_ms, err, sizeof(err));
	return conclude(u, c, end, &x, timeout_ms, err, t0);
}

/* ---- the same call in steps (the event front) ------------------------------ */

enum gw_call_result gw_upstream_begin(struct gw_upstream *u, struct gw_call *c,
				      struct lp_buf *out)
{
	struct lp_h1_req rq;

	if (c->record && !lp_breaker_allow(u->breaker)) {
		snprintf(c->error, sizeof(c->error), "circuit breaker of %s is open", u->name);
		return GW_CALL_OPEN;
	}
	lp_h1_req_of(c, &rq);
	lp_h1_build_request(u->target, &rq, out);
	return GW_CALL_OK;
}

enum gw_call_result gw_upstream_end(struct gw_upstream *u, struct gw_call *c, char *answer,
				    size_t n, enum lp_h1_result io, const char *io_err, int64_t t0_ms)
{
	struct xfer x = { c, max_response(u), false };
	char err[GW_ERROR_LEN - 40] = "";
	enum xfer_end end = io == LP_H1_TIMEOUT ? XFER_TIMEOUT : XFER_FAILED;
	struct lp_h1_req rq;
	size_t used;
	bool keep;

	if (io == LP_H1_OK) {
		memset(&rq, 0, sizeof(rq));
		rq.on_header = on_header;
		rq.on_body = on_body;
		rq.ud = &x;
		io = lp_h1_parse_answer(&rq, answer, n, true, &c->status, &used, &keep, err,
				     sizeof(err));
		end = io == LP_H1_OK ? XFER_OK : XFER_FAILED;
	} else {
		lp_strlcpy(err, io_err ? io_err : "failed", sizeof(err));
	}
	return conclude(u, c, end, &x, call_timeout(u, c), err, t0_ms);
}

/* ---- trace context ------------------------------------------------------- */

/*
 * Random bytes for trace and span ids: splitmix64 per thread, seeded once
 * from getrandom.  Ids must be unique, not secret, and a system call per
 * request showed in profiles.
 */
static void random_bytes(unsigned char *b, size_t n)
{
	static __thread uint64_t state;
	uint64_t z = 0;
	size_t i;

	if (!state && getrandom(&state, sizeof(state), GRND_NONBLOCK) != (ssize_t)sizeof(state))
		state = (uint64_t)lp_now_us() ^ (uint64_t)(uintptr_t)&state;
	for (i = 0; i < n; i++) {
		if (i % 8 == 0) {
			z = (state += 0x9e3779b97f4a7c15ULL);
			z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
			z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
			z ^= z >> 31;
		}
		b[i] = (unsigned char)(z >> (8 * (i % 8)));
	}
}

static bool all_hex(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static bool all_zero(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (s[i] != '0')
			return false;
	return true;
}

/* "00-TRACE-SPAN-FF": 2 + 1 + 32 + 1 + 16 + 1 + 2 characters and a NUL. */
static void traceparent_of(char out[56], const char *trace_id, const char *span_hex,
			   const char *flags)
{
	memcpy(out, "00-", 3);
	memcpy(out + 3, trace_id, 32);
	out[35] = '-';
	memcpy(out + 36, span_hex, 16);
	out[52] = '-';
	out[53] = flags[0];
	out[54] = flags[1];
	out[55] = '\0';
}

void gw_traceparent(const char *in, char out[56], char trace_id[33])
{
	unsigned char span[8], trace[16];
	char span_hex[17];

	random_bytes(span, sizeof(span));
	gw_hex(span, sizeof(span), span_hex);
	if (in && strlen(in) >= 55 && in[2] == '-' && in[35] == '-' && in[52] == '-' &&
	    all_hex(in, 2) && strncmp(in, "ff", 2) != 0 && all_hex(in + 3, 32) &&
	    !all_zero(in + 3, 32) && all_hex(in + 36, 16) && !all_zero(in + 36, 16) &&
	    all_hex(in + 53, 2) && (in[55] == '\0' || in[55] == '-')) {
		memcpy(trace_id, in + 3, 32);
		trace_id[32] = '\0';
		traceparent_of(out, trace_id, span_hex, in + 53);
		return;
	}
	random_bytes(trace, sizeof(trace));
	gw_hex(trace, sizeof(trace), trace_id);
	traceparent_of(out, trace_id, span_hex, "01");
}
