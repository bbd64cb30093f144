/* fuzz_reqhead.c - the event front's request head parser (lp_rq_parse,
 * lp_rq_header).
 *
 * Input: the bytes a client sent, parsed from a heap copy of exactly their
 * size so that ASan sees any read past the end; prefixes are parsed from
 * the end of such a copy for the same reason.  Checks: an accepted head
 * ends with CRLF CRLF within the input and the limit, every pointer lies
 * inside it, the method is one of the five and the path starts with '/';
 * a refused or incomplete head leaves the result alone; every prefix
 * shorter than an accepted head is incomplete (all of them for short
 * heads, a sample for long ones) and every longer one is accepted the
 * same; a refused prefix means a refused input (monotonicity, checked on
 * the first half); lp_rq_header finds each header's name again. */
#include <stdbool.h>

#include "fuzz.h"
#include "logpipe/reqhead.h"

#include "logpipe/banned.h"

#define ALL_PREFIXES_UP_TO 512 /* shorter heads: every prefix is checked */
#define SAMPLED_PREFIXES 16    /* longer heads: this many spread over it */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	return 0;
}

/* Whether p[0, len) lies inside buf[0, n). */
static bool inside(const char *p, size_t len, const char *buf, size_t n)
{
	return p >= buf && p <= buf + n && len <= (size_t)(buf + n - p);
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static bool same_name(const char *a, const char *b, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		char x = a[i] >= 'A' && a[i] <= 'Z' ? (char)(a[i] | 0x20) : a[i];
		char y = b[i] >= 'A' && b[i] <= 'Z' ? (char)(b[i] | 0x20) : b[i];

		if (x != y)
			return false;
	}
	return true;
}

static void check_accepted(const struct lp_rq *rq, const char *buf, size_t n)
{
	static const char *const methods[] = { "GET", "POST", "PUT", "PATCH", "DELETE" };
	char name[LP_RQ_MAX_HEAD + 1];
	const char *v, *eol;
	size_t i, len, m, line_len;

	FUZZ_CHECK(rq->head_len >= 18 && rq->head_len <= n && rq->head_len <= LP_RQ_MAX_HEAD,
		   "head_len %zu of %zu", rq->head_len, n);
	FUZZ_CHECK(memcmp(buf + rq->head_len - 4, "\r\n\r\n", 4) == 0, "no CRLF CRLF at the end");
	FUZZ_CHECK(memmem(buf, rq->head_len - 2, "\r\n\r\n", 4) == NULL, "an earlier blank line");

	FUZZ_CHECK(rq->method == buf, "method at %td", rq->method - buf);
	for (m = 0; m < sizeof(methods) / sizeof(methods[0]); m++)
		if (rq->method_len == strlen(methods[m]) &&
		    memcmp(rq->method, methods[m], rq->method_len) == 0)
			break;
	FUZZ_CHECK(m < sizeof(methods) / sizeof(methods[0]), "method \"%.*s\"",
		   (int)rq->method_len, rq->method);

	FUZZ_CHECK(inside(rq->path, rq->path_len, buf, rq->head_len), "path outside the head");
	FUZZ_CHECK(rq->path == buf + rq->method_len + 1, "path not after the method");
	FUZZ_CHECK(rq->path_len >= 1 && rq->path[0] == '/', "path \"%.*s\"", (int)rq->path_len,
		   rq->path);
	FUZZ_CHECK(!memmem(rq->path, rq->path_len, "//", 2), "empty segment");
	if (rq->query) {
		FUZZ_CHECK(inside(rq->query, rq->query_len, buf, rq->head_len),
			   "query outside the head");
		FUZZ_CHECK(rq->query == rq->path + rq->path_len + 1 && rq->query[-1] == '?',
			   "query not after '?'");
		FUZZ_CHECK(!memchr(rq->query, '#', rq->query_len), "'#' in the query");
	} else {
		FUZZ_CHECK(rq->query_len == 0, "query_len %zu without a query", rq->query_len);
	}

	FUZZ_CHECK(rq->nheaders <= LP_RQ_MAX_HEADERS, "%zu headers", rq->nheaders);
	/* HTTP/1.0 is told by the request line's last eight bytes, and such
	 * a request is always closed after its reply. */
	eol = memchr(buf, '\n', rq->head_len);
	FUZZ_CHECK(eol != NULL, "no end of the request line");
	line_len = (size_t)(eol - buf);
	if (line_len > 0 && buf[line_len - 1] == '\r')
		line_len--;
	FUZZ_CHECK(line_len >= 8 && rq->http10 == !memcmp(buf + line_len - 8, "HTTP/1.0", 8),
		   "http10 %d with request line \"%.*s\"", rq->http10, (int)line_len, buf);
	v = lp_rq_header(rq, "Connection", &len);
	FUZZ_CHECK(rq->close == (rq->http10 || (v && len == 5 && same_name(v, "close", 5))),
		   "close %d with Connection \"%.*s\"", rq->close, v ? (int)len : 0, v ? v : "");
	FUZZ_CHECK(rq->content_length >= -1 && rq->content_length <= 999999999999999999LL,
		   "content_length %lld", rq->content_length);
	for (i = 0; i < rq->nheaders; i++) {
		const struct lp_rq_header *h = &rq->headers[i];

		FUZZ_CHECK(inside(h->name, h->name_len, buf, rq->head_len) && h->name_len > 0,
			   "header %zu's name outside the head", i);
		FUZZ_CHECK(inside(h->value, h->value_len, buf, rq->head_len),
			   "header %zu's value outside the head", i);
		FUZZ_CHECK(h->name[h->name_len] == ':', "header %zu: no colon after the name", i);
		FUZZ_CHECK(h->value_len == 0 || (!is_blank(h->value[0]) &&
						 !is_blank(h->value[h->value_len - 1])),
			   "header %zu's value keeps blanks", i);
		FUZZ_CHECK(!memchr(h->value, '\r', h->value_len) &&
				   !memchr(h->value, '\n', h->value_len),
			   "header %zu's value holds a line end", i);

		/* The lookup takes a NUL-terminated name. */
		memcpy(name, h->name, h->name_len);
		name[h->name_len] = '\0';
		len = (size_t)-1;
		v = lp_rq_header(rq, name, &len);
		FUZZ_CHECK(v != NULL, "header %zu not found by its name", i);
		for (m = 0; m <= i; m++)
			if (rq->headers[m].value == v)
				break;
		FUZZ_CHECK(m <= i && rq->headers[m].value_len == len &&
				   rq->headers[m].name_len == h->name_len &&
				   same_name(rq->headers[m].name, h->name, h->name_len),
			   "header %zu: the lookup found another", i);
	}
}

/* Parses data[0, k) from the end of tail (size bytes), so that reading past
 * k is reading past the allocation. */
static enum lp_rq_result parse_prefix(const uint8_t *data, size_t size, size_t k, char *tail,
				      struct lp_rq *rq)
{
	memcpy(tail + size - k, data, k);
	return lp_rq_parse(tail + size - k, k, rq);
}

static void check_prefix_incomplete(const uint8_t *data, size_t size, size_t k, char *tail)
{
	struct lp_rq rq;
	enum lp_rq_result res = parse_prefix(data, size, k, tail, &rq);

	FUZZ_CHECK(res == LP_RQ_INCOMPLETE, "prefix %zu of an accepted head: %d", k, res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size ? size : 1), *tail = malloc(size ? size : 1);
	struct lp_rq rq, before, half;
	enum lp_rq_result res, hres;
	size_t k, step;

	if (!buf || !tail)
		abort();
	if (size)
		memcpy(buf, data, size);
	memset(&rq, 0x5a, sizeof(rq));
	before = rq;
	res = lp_rq_parse(buf, size, &rq);
	FUZZ_CHECK(res == LP_RQ_OK || res == LP_RQ_INCOMPLETE || res == LP_RQ_OTHER, "result %d",
		   res);

	if (res == LP_RQ_OK) {
		check_accepted(&rq, buf, size);
		if (rq.head_len <= ALL_PREFIXES_UP_TO) {
			for (k = 0; k < rq.head_len; k++)
				check_prefix_incomplete(data, size, k, tail);
		} else {
			step = rq.head_len / SAMPLED_PREFIXES;
			for (k = 0; k < rq.head_len; k += step)
				check_prefix_incomplete(data, size, k, tail);
			check_prefix_incomplete(data, size, rq.head_len - 1, tail);
		}
		/* A longer prefix holds the same head. */
		k = rq.head_len + (size - rq.head_len) / 2;
		FUZZ_CHECK(parse_prefix(data, size, k, tail, &half) == LP_RQ_OK &&
				   half.head_len == rq.head_len && half.nheaders == rq.nheaders,
			   "prefix %zu of an input accepted with head_len %zu", k, rq.head_len);
	} else {
		FUZZ_CHECK(memcmp(&rq, &before, sizeof(rq)) == 0, "result written on %d", res);
		if (res == LP_RQ_INCOMPLETE)
			FUZZ_CHECK(size < LP_RQ_MAX_HEAD, "incomplete at %zu bytes", size);
	}

	/* Monotonicity: once refused, refused whatever follows. */
	hres = parse_prefix(data, size, size / 2, tail, &half);
	if (hres == LP_RQ_OTHER)
		FUZZ_CHECK(res == LP_RQ_OTHER, "first half refused, the whole %d", res);
	else if (hres == LP_RQ_OK)
		FUZZ_CHECK(res == LP_RQ_OK, "first half accepted, the whole %d", res);

	free(tail);
	free(buf);
	return 0;
}
