/* reqhead.c - the request head parser of the event front (see reqhead.h).
 *
 * One forward pass over at most LP_RQ_MAX_HEAD bytes, with no allocation
 * and no copy: every byte is classified through one 128-entry table, and
 * each field is recorded as a pointer and a length into the caller's
 * buffer.  Every rule is checked as soon as the bytes it depends on are
 * there, so the answer for a prefix is exact: LP_RQ_INCOMPLETE means that
 * some continuation would be accepted, LP_RQ_OTHER that none would.  This
 * is what lets the front decide while a request is still arriving, and
 * makes the answers monotonic: once a prefix is refused, every longer
 * input is refused too.  A header value is the one place that needs a
 * look back (the blanks before its end may be trailing ones), so the
 * values the parser checks itself (Content-Length, Connection, Expect) are checked
 * again, as a possible beginning, when the buffer ends inside them.
 *
 * The results are written to a local struct lp_rq and copied to the
 * caller's only on LP_RQ_OK (the headers in use, not the whole array), so
 * a refused or incomplete head leaves *rq as it was. */
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "logpipe/reqhead.h"

#include "logpipe/banned.h"

/* ---- byte classes ------------------------------------------------------ */

enum {
	C_PATH = 0x01,  /* pchar other than '%' (RFC 3986): in a path segment */
	C_QUERY = 0x02, /* 0x21-0x7E other than '#': in the query */
	C_TOKEN = 0x04, /* tchar (RFC 9110): in a header name */
	C_VALUE = 0x08, /* 0x20-0x7E and HTAB: in a header value */
	C_HEX = 0x10,   /* a hex digit: after '%' */
};

#define P C_PATH
#define Q C_QUERY
#define T C_TOKEN
#define V C_VALUE
#define PQTV (C_PATH | C_QUERY | C_TOKEN | C_VALUE)
#define PQTVH (PQTV | C_HEX)

/* Bytes from 0x80 up are in no class: the table stops at 0x7F and every
 * lookup goes through byte_class(). */
static const unsigned char byte_classes[128] = {
	0, 0, 0, 0, 0, 0, 0, 0,                                             /* 0x00 */
	0, V, 0, 0, 0, 0, 0, 0,                                             /* 0x08 HTAB */
	0, 0, 0, 0, 0, 0, 0, 0,                                             /* 0x10 */
	0, 0, 0, 0, 0, 0, 0, 0,                                             /* 0x18 */
	V, PQTV, Q | V, T | V, PQTV, Q | T | V, PQTV, PQTV,                 /* 0x20 SP!"#$%&' */
	P | Q | V, P | Q | V, PQTV, PQTV, P | Q | V, PQTV, PQTV, Q | V,     /* 0x28 ()*+,-./ */
	PQTVH, PQTVH, PQTVH, PQTVH, PQTVH, PQTVH, PQTVH, PQTVH,             /* 0x30 01234567 */
	PQTVH, PQTVH, P | Q | V, P | Q | V, Q | V, P | Q | V, Q | V, Q | V, /* 0x38 89:;<=>? */
	P | Q | V, PQTVH, PQTVH, PQTVH, PQTVH, PQTVH, PQTVH, PQTV,          /* 0x40 @ABCDEFG */
	PQTV, PQTV, PQTV, PQTV, PQTV, PQTV, PQTV, PQTV,                     /* 0x48 HIJKLMNO */
	PQTV, PQTV, PQTV, PQTV, PQTV, PQTV, PQTV, PQTV,                     /* 0x50 PQRSTUVW */
	PQTV, PQTV, PQTV, Q | V, Q | V, Q | V, Q | T | V, PQTV,             /* 0x58 XYZ[\]^_ */
	Q | T | V, PQTVH, PQTVH, PQTVH, PQTVH, PQTVH, PQTVH, PQTV,          /* 0x60 `abcdefg */
	PQTV, PQTV, PQTV, PQTV, PQTV, PQTV, PQTV, PQTV,                     /* 0x68 hijklmno */
	PQTV, PQTV, PQTV, PQTV, PQTV, PQTV, PQTV, PQTV,                     /* 0x70 pqrstuvw */
	PQTV, PQTV, PQTV, Q | V, Q | T | V, Q | V, PQTV, 0,                 /* 0x78 xyz{|}~DEL */
};

#undef P
#undef Q
#undef T
#undef V
#undef PQTV
#undef PQTVH

static inline unsigned byte_class(unsigned char c)
{
	return c < 0x80 ? byte_classes[c] : 0;
}

static inline bool is_blank(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static inline unsigned char ascii_lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c;
}

/* Whether a[0, n) equals the lowercase b[0, n) in any case. */
static bool ci_equal(const unsigned char *a, const char *b, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (ascii_lower(a[i]) != (unsigned char)b[i])
			return false;
	return true;
}

/* ---- the request line -------------------------------------------------- */

static const struct {
	const char *name;
	size_t len;
} methods[] = {
	{ "GET", 3 }, { "POST", 4 }, { "PUT", 3 }, { "PATCH", 5 }, { "DELETE", 6 },
};

#define METHOD_MAX 6 /* the longest of methods[] */

/* Whether m[0, len) is one of methods[] (whole) or the beginning of one. */
static bool method_ok(const unsigned char *m, size_t len, bool whole)
{
	size_t i;

	for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if ((whole ? len == methods[i].len : len <= methods[i].len) &&
		    memcmp(m, methods[i].name, len) == 0)
			return true;
	return false;
}

/* Whether the path segment s[0, len) is "." or "..", a dot also counting
 * when escaped as "%2E" or "%2e" (RFC 3986 6.2.2.2: the same segment, and
 * what a server that decodes before removing dot segments would see). */
static bool dot_segment(const unsigned char *s, size_t len)
{
	size_t i = 0, dots = 0;

	while (i < len) {
		if (s[i] == '.')
			i++;
		else if (s[i] == '%' && i + 2 < len && s[i + 1] == '2' &&
			 ascii_lower(s[i + 2]) == 'e')
			i += 3;
		else
			return false;
		dots++;
	}
	return dots == 1 || dots == 2;
}

/* ---- header names and values ------------------------------------------- */

/* What the parser does with a header beyond recording it. */
enum hdr_kind {
	HDR_PLAIN,   /* nothing */
	HDR_REFUSED, /* Transfer-Encoding, Upgrade: the head is refused */
	HDR_LENGTH,  /* Content-Length: 1-18 digits, once */
	HDR_CONN,    /* Connection: "keep-alive" or "close" in any case, once */
	HDR_EXPECT,  /* Expect: "100-continue" in any case */
};

static enum hdr_kind hdr_kind(const unsigned char *name, size_t len)
{
	switch (len) {
	case 6:
		return ci_equal(name, "expect", 6) ? HDR_EXPECT : HDR_PLAIN;
	case 7:
		return ci_equal(name, "upgrade", 7) ? HDR_REFUSED : HDR_PLAIN;
	case 10:
		return ci_equal(name, "connection", 10) ? HDR_CONN : HDR_PLAIN;
	case 14:
		return ci_equal(name, "content-length", 14) ? HDR_LENGTH : HDR_PLAIN;
	case 17:
		return ci_equal(name, "transfer-encoding", 17) ? HDR_REFUSED : HDR_PLAIN;
	default:
		return HDR_PLAIN;
	}
}

#define LENGTH_DIGITS_MAX 18 /* fits a long long */
#define KEEP_ALIVE "keep-alive"
#define KEEP_ALIVE_LEN 10
#define CLOSE "close"
#define CLOSE_LEN 5
#define CONTINUE "100-continue"
#define CONTINUE_LEN 12
#define VERSION_MINOR 7 /* "HTTP/1." then the minor version digit */

/* Checks the value v[0, len) of a header of kind k, leading blanks already
 * skipped.  whole: the value ended (a CR came); otherwise the buffer ended
 * inside it, and the question is whether some continuation is acceptable.
 * Stores a whole Content-Length in *length. */
static bool value_ok(enum hdr_kind k, const unsigned char *v, size_t len, bool whole,
		     long long *length)
{
	size_t t = len, i;
	long long x = 0;

	while (t > 0 && is_blank(v[t - 1]))
		t--;
	switch (k) {
	case HDR_LENGTH:
		if (t > LENGTH_DIGITS_MAX || (whole && t == 0))
			return false;
		for (i = 0; i < t; i++) {
			if (v[i] < '0' || v[i] > '9')
				return false;
			x = x * 10 + (v[i] - '0');
		}
		*length = x;
		return true;
	case HDR_CONN:
		/* After a trailing blank only blanks may follow, so the value
		 * is then as whole as it will get. */
		if (whole || t < len)
			return (t == KEEP_ALIVE_LEN && ci_equal(v, KEEP_ALIVE, t)) ||
			       (t == CLOSE_LEN && ci_equal(v, CLOSE, t));
		return (t <= KEEP_ALIVE_LEN && ci_equal(v, KEEP_ALIVE, t)) ||
		       (t <= CLOSE_LEN && ci_equal(v, CLOSE, t));
	case HDR_EXPECT:
		if (whole || t < len)
			return t == CONTINUE_LEN && ci_equal(v, CONTINUE, t);
		return t <= CONTINUE_LEN && ci_equal(v, CONTINUE, t);
	default:
		return true;
	}
}

/* ---- the parser -------------------------------------------------------- */

enum lp_rq_result lp_rq_parse(const char *buf, size_t n, struct lp_rq *rq)
{
	const unsigned char *s = (const unsigned char *)buf;
	/* Nothing past the limit can belong to an accepted head. */
	size_t end = n < LP_RQ_MAX_HEAD ? n : LP_RQ_MAX_HEAD;
	size_t i = 0, seg, name, name_len, val, vend;
	struct lp_rq r;
	enum hdr_kind kind;
	long long length;
	bool have_length = false, have_conn = false;

	/* The method, then one SP. */
	while (i < end && i <= METHOD_MAX && s[i] != ' ')
		i++;
	if (i == end)
		return method_ok(s, i, false) ? LP_RQ_INCOMPLETE : LP_RQ_OTHER;
	if (s[i] != ' ' || !method_ok(s, i, true))
		return LP_RQ_OTHER;
	r.method = buf;
	r.method_len = i++;

	/* The path: '/' and segments of pchar, none empty, "." or "..". */
	if (i == end)
		goto more;
	if (s[i] != '/')
		return LP_RQ_OTHER;
	r.path = buf + i;
	seg = ++i;
	for (;; i++) {
		if (i == end)
			goto more;
		if (byte_class(s[i]) & C_PATH)
			continue;
		if (s[i] == '/') {
			if (i == seg || dot_segment(s + seg, i - seg))
				return LP_RQ_OTHER;
			seg = i + 1;
		} else if (s[i] == '%') {
			if (i + 1 == end)
				goto more;
			if (!(byte_class(s[i + 1]) & C_HEX))
				return LP_RQ_OTHER;
			if (i + 2 == end)
				goto more;
			if (!(byte_class(s[i + 2]) & C_HEX))
				return LP_RQ_OTHER;
			i += 2;
		} else if (s[i] == '?' || s[i] == ' ') {
			break;
		} else {
			return LP_RQ_OTHER;
		}
	}
	/* The last segment may be empty ("/", "/a/") but not a dot one. */
	if (dot_segment(s + seg, i - seg))
		return LP_RQ_OTHER;
	r.path_len = (size_t)(buf + i - r.path);

	/* The query, possibly empty, then one SP. */
	r.query = NULL;
	r.query_len = 0;
	if (s[i] == '?') {
		r.query = buf + ++i;
		while (i < end && (byte_class(s[i]) & C_QUERY))
			i++;
		if (i == end)
			goto more;
		if (s[i] != ' ')
			return LP_RQ_OTHER;
		r.query_len = (size_t)(buf + i - r.query);
	}
	i++;

	/* The version, HTTP/1.1 or HTTP/1.0, and the end of the line. */
	{
		static const char version[] = "HTTP/1.1\r\n";
		size_t want = sizeof(version) - 1, have = end - i < want ? end - i : want, k;

		for (k = 0; k < have; k++)
			if (s[i + k] != version[k] && !(k == VERSION_MINOR && s[i + k] == '0'))
				return LP_RQ_OTHER;
		if (have < want)
			goto more;
		r.http10 = s[i + VERSION_MINOR] == '0';
		i += want;
	}

	/* Header lines up to the empty one. */
	r.nheaders = 0;
	r.content_length = -1;
	r.expect_continue = false;
	r.close = false;
	for (;;) {
		if (i == end)
			goto more;
		if (s[i] == '\r')
			break;
		/* A blank here would be obs-fold; a bare LF is no line end. */
		if (!(byte_class(s[i]) & C_TOKEN) || r.nheaders == LP_RQ_MAX_HEADERS)
			return LP_RQ_OTHER;

		name = i;
		while (i < end && (byte_class(s[i]) & C_TOKEN))
			i++;
		if (i == end)
			goto more;
		if (s[i] != ':')
			return LP_RQ_OTHER;
		name_len = i - name;
		kind = hdr_kind(s + name, name_len);
		if (kind == HDR_REFUSED || (kind == HDR_LENGTH && have_length) ||
		    (kind == HDR_CONN && have_conn))
			return LP_RQ_OTHER;
		i++;

		while (i < end && is_blank(s[i]))
			i++;
		val = i;
		while (i < end && (byte_class(s[i]) & C_VALUE))
			i++;
		if (i == end) {
			if (!value_ok(kind, s + val, i - val, false, &length))
				return LP_RQ_OTHER;
			goto more;
		}
		if (s[i] != '\r' || !value_ok(kind, s + val, i - val, true, &length))
			return LP_RQ_OTHER;
		if (i + 1 == end)
			goto more;
		if (s[i + 1] != '\n')
			return LP_RQ_OTHER;

		vend = i;
		while (vend > val && is_blank(s[vend - 1]))
			vend--;
		r.headers[r.nheaders].name = buf + name;
		r.headers[r.nheaders].name_len = name_len;
		r.headers[r.nheaders].value = buf + val;
		r.headers[r.nheaders].value_len = vend - val;
		r.nheaders++;
		if (kind == HDR_LENGTH) {
			r.content_length = length;
			have_length = true;
		}
		r.expect_continue = r.expect_continue || kind == HDR_EXPECT;
		if (kind == HDR_CONN) {
			have_conn = true;
			r.close = vend - val == CLOSE_LEN; /* value_ok allowed two */
		}
		i += 2;
	}

	/* The empty line: CR (seen) then LF. */
	if (i + 1 == end)
		goto more;
	if (s[i + 1] != '\n')
		return LP_RQ_OTHER;
	r.head_len = i + 2;

	/* HTTP/1.0 has no persistent connections unless both sides say
	 * keep-alive; the reply says "Connection: close" instead.  An
	 * Expect there must be ignored (RFC 9110 10.1.1).  A POST, PUT or
	 * PATCH without Content-Length is left to CivetWeb, which may read
	 * its body up to the end of the connection. */
	if (r.http10) {
		if (r.content_length < 0 && r.method[0] == 'P')
			return LP_RQ_OTHER; /* POST, PUT, PATCH */
		r.close = true;
		r.expect_continue = false;
	}

	rq->method = r.method;
	rq->method_len = r.method_len;
	rq->path = r.path;
	rq->path_len = r.path_len;
	rq->query = r.query;
	rq->query_len = r.query_len;
	memcpy(rq->headers, r.headers, r.nheaders * sizeof(r.headers[0]));
	rq->nheaders = r.nheaders;
	rq->head_len = r.head_len;
	rq->content_length = r.content_length;
	rq->expect_continue = r.expect_continue;
	rq->close = r.close;
	rq->http10 = r.http10;
	return LP_RQ_OK;

more:
	/* The bytes so far could begin an accepted head, unless the limit
	 * cut them off. */
	return n >= LP_RQ_MAX_HEAD ? LP_RQ_OTHER : LP_RQ_INCOMPLETE;
}

const char *lp_rq_header(const struct lp_rq *rq, const char *name, size_t *len)
{
	size_t nlen = strlen(name), i, j;

	for (i = 0; i < rq->nheaders; i++) {
		const struct lp_rq_header *h = &rq->headers[i];

		if (h->name_len != nlen)
			continue;
		for (j = 0; j < nlen; j++)
			if (ascii_lower((unsigned char)h->name[j]) !=
			    ascii_lower((unsigned char)name[j]))
				break;
		if (j == nlen) {
			if (len)
				*len = h->value_len;
			return h->value;
		}
	}
	if (len)
		*len = 0;
	return NULL;
}
