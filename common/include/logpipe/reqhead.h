/* reqhead.h - the request head parser of the event front (front.h).
 *
 * The event front (front.c) serves the proxied routes itself and hands
 * every other request to the CivetWeb server behind it, unchanged.  This
 * parser decides which is which: it accepts only the plain, unambiguous
 * HTTP/1.1 and HTTP/1.0 requests that CivetWeb would read the same way, and
 * answers LP_RQ_OTHER for anything else (HTTP/2.0, obs-fold, a bare LF, chunked,
 * an Expect other than 100-continue, a duplicated Content-Length, a dot segment or "//" in the
 * path, ...), so that CivetWeb keeps refusing or serving those exactly as
 * it does now.  It never copies: every pointer points into the buffer.
 *
 * Accepted (LP_RQ_OK) means all of:
 *   - a request line "METHOD SP TARGET SP HTTP/1.1 CRLF" (or HTTP/1.0),
 *     METHOD one of GET, POST, PUT, PATCH, DELETE;
 *   - TARGET in origin form: '/' then path characters (RFC 3986 pchar and
 *     '/', '%' escapes included, checked to be two hex digits), with no
 *     empty segment ("//"), no "." or ".." segment, then optionally '?'
 *     and a query of bytes 0x21-0x7E other than '#';
 *   - header lines "NAME: VALUE CRLF", NAME a token (RFC 9110 tchar),
 *     no blank before the colon, VALUE of bytes 0x20-0x7E and HTAB
 *     (optional blanks around it are not part of it), at most
 *     LP_RQ_MAX_HEADERS lines, then a CRLF;
 *   - no Transfer-Encoding or Upgrade header; at most one
 *     Content-Length, of 1-18 decimal digits; at most one Connection
 *     header, equal to "keep-alive" or "close" (any case; close is told
 *     in lp_rq.close); an Expect header, if any, equal to "100-continue"
 *     (any case);
 *   - the head (request line to the blank line) within LP_RQ_MAX_HEAD
 *     bytes;
 *   - for HTTP/1.0, a Content-Length when the method is POST, PUT or
 *     PATCH (without one, CivetWeb reads the body up to the close).
 * An HTTP/1.0 request is told in lp_rq.http10 and always has lp_rq.close
 * set, "Connection: keep-alive" or not: the front answers it and closes,
 * as HTTP/1.0 allows, rather than keep the connection open on a header the
 * reply would have to echo.  Its Expect: 100-continue is ignored
 * (expect_continue false), as RFC 9110 10.1.1 requires.
 */
#ifndef LOGPIPE_REQHEAD_H
#define LOGPIPE_REQHEAD_H

#include <stdbool.h>
#include <stddef.h>

#define LP_RQ_MAX_HEADERS 48
#define LP_RQ_MAX_HEAD 8192

struct lp_rq_header {
	const char *name;   /* into the buffer, not NUL-terminated */
	size_t name_len;
	const char *value;  /* leading and trailing blanks excluded */
	size_t value_len;
};

struct lp_rq {
	const char *method;  /* into the buffer */
	size_t method_len;
	const char *path;    /* from the '/' to before '?' or the SP */
	size_t path_len;
	const char *query;   /* after the '?', NULL when there is no '?' */
	size_t query_len;
	struct lp_rq_header headers[LP_RQ_MAX_HEADERS];
	size_t nheaders;
	size_t head_len;           /* bytes of the head, the final CRLF CRLF included */
	long long content_length;  /* -1 when there is no Content-Length */
	bool expect_continue;      /* "Expect: 100-continue" was sent */
	bool close;                /* "Connection: close" was sent, or HTTP/1.0 */
	bool http10;               /* the request line said HTTP/1.0 */
};

enum lp_rq_result {
	LP_RQ_INCOMPLETE = 0, /* a valid beginning; more bytes needed */
	LP_RQ_OK = 1,         /* a whole head, accepted; rq is filled */
	LP_RQ_OTHER = -1,     /* not for the fast path: hand it to CivetWeb */
};

/* Parses the head at buf[0, n).  rq is filled only on LP_RQ_OK.  Returns
 * LP_RQ_INCOMPLETE when buf holds no blank line yet and nothing refused so
 * far (and n < LP_RQ_MAX_HEAD). */
enum lp_rq_result lp_rq_parse(const char *buf, size_t n, struct lp_rq *rq);

/* The value of the first header named name (any case), or NULL; *len
 * receives its length. */
const char *lp_rq_header(const struct lp_rq *rq, const char *name, size_t *len);

#endif
