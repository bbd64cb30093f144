/* h1.h - a small HTTP/1.1 client, blocking (a pool shared by threads) or in
 * steps for a caller with its own non-blocking sockets (the event front).
 *
 * libcurl cost the proxy about 40 us of CPU per request (option resets, a
 * multi handle under every easy call, four poll(2) calls, header parsing
 * with sscanf), so plain "http://" upstreams are called with this
 * instead: one sendmsg(2) for the request and a blocking recv(2) (bounded
 * by SO_RCVTIMEO) for the answer, on a connection kept alive in a pool
 * shared by all worker threads.  It knows Content-Length, chunked and
 * close-delimited bodies, skips 1xx answers, and times the whole call out
 * against one deadline.  Anything else (https) stays with libcurl.
 *
 * Thread-safe: the pool is a mutex-guarded stack of idle sockets per
 * host:port; a call owns its socket until it gives it back. */
#ifndef LOGPIPE_H1_H
#define LOGPIPE_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lp_buf;

struct lp_h1_pool;

/* Same shape as libcurl's write and header callbacks: return n to go on,
 * anything else to abort the call (LP_H1_ABORTED). */
typedef size_t (*lp_h1_sink)(char *data, size_t size, size_t n, void *ud);

/* Where "http://HOST[:PORT]" points; no path, user or fragment. */
struct lp_h1_target {
	char host[256];      /* name or address, brackets stripped */
	char port[8];        /* decimal, "80" by default */
	char authority[272]; /* HOST[:PORT] as written, for the Host header */
};

struct lp_h1_req {
	const char *method;         /* sent as is ("HEAD" goes as "GET") */
	const char *path;           /* starts with '/' */
	const char *query;          /* without '?', or NULL */
	const char *const *headers; /* "Name: value", NULL-terminated, or NULL;
				     * "Name:" with no value is not sent */
	const char *body;           /* or NULL */
	size_t body_len;
	int64_t deadline_ms;        /* lp_now_ms() clock: the whole call */
	long connect_timeout_ms;    /* of a new connection */
	lp_h1_sink on_header;          /* each header line with its CRLF, and the
				     * status line of each answer (after a 1xx) */
	lp_h1_sink on_body;            /* body bytes, de-chunked */
	void *ud;                   /* for both sinks */
};

enum lp_h1_result {
	LP_H1_OK,       /* a whole answer came back; *status is set */
	LP_H1_TIMEOUT,  /* the deadline (or the connect timeout) passed */
	LP_H1_FAILED,   /* connection or protocol error; err says which */
	LP_H1_ABORTED,  /* a sink refused the data */
	LP_H1_AGAIN,    /* lp_h1_parse_answer: the answer is not whole yet */
};

struct lp_h1_pool *lp_h1_pool_new(void);
/* Closes every idle connection.  NULL is a no-op. */
void lp_h1_pool_free(struct lp_h1_pool *p);

/* Fills t from a base URL and returns 0; -EINVAL when it is not a plain
 * http:// authority. */
int lp_h1_target_parse(const char *base, struct lp_h1_target *t);

/* Performs one request.  A kept-alive connection that turns out closed
 * before any byte of the answer arrived is replaced by a new one and the
 * request sent again, but only when that cannot make the upstream act
 * twice: no byte of the request had been written, or the method is
 * idempotent (lp_h1_idempotent).  Otherwise the call fails (LP_H1_FAILED). */
enum lp_h1_result lp_h1_perform(struct lp_h1_pool *p, const struct lp_h1_target *t, const struct lp_h1_req *rq,
			  int *status, char *err, size_t errlen);

/* GET, HEAD, PUT, DELETE, OPTIONS and TRACE (RFC 9110 9.2.2): a request
 * that may be sent again after the upstream may have received it. */
bool lp_h1_idempotent(const char *method);

/* ---- for a caller with its own sockets (the gateway's event front) ---- */

/* Appends the request head lp_h1_perform would send for rq to h: request
 * line, Host, rq's headers, Accept and Content-Length.  The body, when
 * the method sends one, follows it as is. */
void lp_h1_build_head(const struct lp_h1_target *t, const struct lp_h1_req *rq, struct lp_buf *h);
/* The head as lp_h1_build_head, then the body when the method sends one. */
void lp_h1_build_request(const struct lp_h1_target *t, const struct lp_h1_req *rq, struct lp_buf *out);
/* Parses an answer received into buf[0, n) (eof: the upstream closed the
 * connection after it), calling rq's sinks as lp_h1_perform does; only
 * on_header, on_body and ud of rq are used.  Returns LP_H1_AGAIN when the
 * answer needs more bytes (sinks may have been called: parse again from the
 * start once more came, or with NULL sinks to only find where it ends), or
 * as lp_h1_perform; on LP_H1_OK, *used is the answer's length and *keep tells
 * whether the connection may carry another request.  buf is not changed. */
enum lp_h1_result lp_h1_parse_answer(const struct lp_h1_req *rq, char *buf, size_t n, bool eof,
			       int *status, size_t *used, bool *keep, char *err, size_t errlen);

#endif
