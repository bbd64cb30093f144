/* test_reqhead.c - the event front's request head parser: every field of
 * accepted heads, header lookup, every prefix of an accepted head being
 * incomplete, each rule that refuses a head (whole and as soon as it is
 * seen), the size and header count limits, percent escapes, blanks around
 * values and bytes after the head. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "logpipe/reqhead.h"

#include "logpipe/banned.h"

/* Parses s[0, n) from a heap copy of exactly n bytes, so that a sanitizer
 * build sees any read past the end, and checks that a head that is not
 * accepted leaves rq alone. */
static enum lp_rq_result parse_n(const char *s, size_t n)
{
	struct lp_rq rq, before;
	enum lp_rq_result res;
	char *copy = malloc(n ? n : 1);

	assert_non_null(copy);
	memcpy(copy, s, n);
	memset(&rq, 0xa5, sizeof(rq));
	before = rq;
	res = lp_rq_parse(copy, n, &rq);
	if (res != LP_RQ_OK)
		assert_memory_equal(&rq, &before, sizeof(rq));
	free(copy);
	return res;
}

static enum lp_rq_result parse_s(const char *s)
{
	return parse_n(s, strlen(s));
}

/* Fails unless the field f[0, len) is the string want; f is evaluated
 * before len, so f may be a call that sets len. */
#define assert_field(f, len, want)                                                      \
	do {                                                                             \
		const char *f_ = (f);                                                    \
		size_t l_ = (len);                                                       \
		const char *w_ = (want);                                                 \
		if (!f_ || l_ != strlen(w_) || memcmp(f_, w_, l_) != 0) {                \
			print_error("field \"%.*s\" is not \"%s\"\n", f_ ? (int)l_ : 6, \
				    f_ ? f_ : "(null)", w_);                             \
			fail();                                                          \
		}                                                                        \
	} while (0)

static void test_post_every_field(void **state)
{
	static const char req[] = "POST /api/v1/events?tenant=acme&x=1 HTTP/1.1\r\n"
				  "Host: 127.0.0.1:8080\r\n"
				  "Content-Type: application/json\r\n"
				  "Content-Length: 17\r\n"
				  "X-API-Key:  k-1 \r\n"
				  "Connection: Keep-Alive\r\n"
				  "\r\n"
				  "{\"message\":\"hi!\"}";
	size_t head = strlen(req) - 17, len = 99;
	struct lp_rq rq;

	assert_int_equal(lp_rq_parse(req, sizeof(req) - 1, &rq), LP_RQ_OK);
	assert_ptr_equal(rq.method, req);
	assert_field(rq.method, rq.method_len, "POST");
	assert_ptr_equal(rq.path, req + 5);
	assert_field(rq.path, rq.path_len, "/api/v1/events");
	assert_ptr_equal(rq.query, req + 20);
	assert_field(rq.query, rq.query_len, "tenant=acme&x=1");
	assert_int_equal(rq.nheaders, 5);
	assert_field(rq.headers[0].name, rq.headers[0].name_len, "Host");
	assert_field(rq.headers[0].value, rq.headers[0].value_len, "127.0.0.1:8080");
	assert_field(rq.headers[1].name, rq.headers[1].name_len, "Content-Type");
	assert_field(rq.headers[1].value, rq.headers[1].value_len, "application/json");
	assert_field(rq.headers[2].name, rq.headers[2].name_len, "Content-Length");
	assert_field(rq.headers[2].value, rq.headers[2].value_len, "17");
	assert_field(rq.headers[3].name, rq.headers[3].name_len, "X-API-Key");
	assert_field(rq.headers[3].value, rq.headers[3].value_len, "k-1");
	assert_field(rq.headers[4].name, rq.headers[4].name_len, "Connection");
	assert_field(rq.headers[4].value, rq.headers[4].value_len, "Keep-Alive");
	assert_int_equal(rq.head_len, head);
	assert_memory_equal(req + head - 4, "\r\n\r\n", 4);
	assert_int_equal(rq.content_length, 17);

	/* Lookup: any case, same length, the first of its name. */
	assert_field(lp_rq_header(&rq, "x-api-key", &len), len, "k-1");
	assert_field(lp_rq_header(&rq, "CONTENT-TYPE", &len), len, "application/json");
	assert_ptr_equal(lp_rq_header(&rq, "Host", NULL), rq.headers[0].value);
	assert_null(lp_rq_header(&rq, "X-API-Ke", &len));
	assert_int_equal(len, 0);
	assert_null(lp_rq_header(&rq, "X-API-Keys", &len));
	assert_null(lp_rq_header(&rq, "", &len));
}

static void test_get_with_query(void **state)
{
	static const char req[] = "GET /api/v1/logs?service=web&q=a%20b&from=2024-01-01T00:00:00Z"
				  " HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n";
	struct lp_rq rq;
	size_t len;

	assert_int_equal(lp_rq_parse(req, sizeof(req) - 1, &rq), LP_RQ_OK);
	assert_field(rq.method, rq.method_len, "GET");
	assert_field(rq.path, rq.path_len, "/api/v1/logs");
	assert_field(rq.query, rq.query_len, "service=web&q=a%20b&from=2024-01-01T00:00:00Z");
	assert_int_equal(rq.content_length, -1);
	assert_int_equal(rq.head_len, sizeof(req) - 1);
	assert_int_equal(rq.nheaders, 2);
	assert_field(lp_rq_header(&rq, "HOST", &len), len, "x");
}

static void test_empty_query_and_no_query(void **state)
{
	static const char q[] = "GET /x? HTTP/1.1\r\n\r\n";
	static const char none[] = "DELETE / HTTP/1.1\r\n\r\n";
	struct lp_rq rq;

	assert_int_equal(lp_rq_parse(q, sizeof(q) - 1, &rq), LP_RQ_OK);
	assert_field(rq.path, rq.path_len, "/x");
	assert_ptr_equal(rq.query, q + 7);
	assert_int_equal(rq.query_len, 0);
	assert_int_equal(rq.nheaders, 0);
	assert_int_equal(rq.head_len, sizeof(q) - 1);

	assert_int_equal(lp_rq_parse(none, sizeof(none) - 1, &rq), LP_RQ_OK);
	assert_field(rq.method, rq.method_len, "DELETE");
	assert_field(rq.path, rq.path_len, "/");
	assert_null(rq.query);
	assert_int_equal(rq.query_len, 0);
}

static void test_every_prefix_is_incomplete(void **state)
{
	static const char *const heads[] = {
		"GET / HTTP/1.1\r\n\r\n",
		"PUT /a/b/ HTTP/1.1\r\nA:\r\n\r\n",
		"PATCH /a.b/..a/.a./...%2Fx?a=%25&b=/..//c HTTP/1.1\r\nx: \t\r\n\r\n",
		"DELETE /%7e/:@!$&'()*+,;=-._~ HTTP/1.1\r\n"
		"!#$%&'*+-.^_`|~09azAZ: v\ta l \"{}\" \r\n\r\n",
		"POST /e HTTP/1.1\r\nContent-Length:  007 \r\nConnection:\tKEEP-alive\t\r\n"
		"Host: h\r\n\r\n",
		"GET /a?b HTTP/1.0\r\n\r\n",
		"POST /e HTTP/1.0\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
	};
	size_t i, k, len;

	for (i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
		len = strlen(heads[i]);
		for (k = 0; k < len; k++) {
			if (parse_n(heads[i], k) != LP_RQ_INCOMPLETE) {
				print_error("prefix %zu of \"%s\" is not incomplete\n", k,
					    heads[i]);
				fail();
			}
		}
		if (parse_n(heads[i], len) != LP_RQ_OK) {
			print_error("\"%s\" is not accepted\n", heads[i]);
			fail();
		}
	}
}

/* Heads refused whole, one rule broken in each. */
static const char *const refused[] = {
	/* The method. */
	"HEAD / HTTP/1.1\r\n\r\n",
	"OPTIONS / HTTP/1.1\r\n\r\n",
	"get / HTTP/1.1\r\n\r\n",
	"Post / HTTP/1.1\r\n\r\n",
	"GETX / HTTP/1.1\r\n\r\n",
	"POS / HTTP/1.1\r\n\r\n",
	"DELETES / HTTP/1.1\r\n\r\n",
	" / HTTP/1.1\r\n\r\n",
	/* The blanks of the request line. */
	"GET  / HTTP/1.1\r\n\r\n",
	"GET /  HTTP/1.1\r\n\r\n",
	"GET\t/ HTTP/1.1\r\n\r\n",
	"GET /\tHTTP/1.1\r\n\r\n",
	"GET / HTTP/1.1 \r\n\r\n",
	" GET / HTTP/1.1\r\n\r\n",
	"\r\nGET / HTTP/1.1\r\n\r\n",
	/* The version. */
	"GET / HTTP/2.0\r\n\r\n",
	"GET / HTTP/1.2\r\n\r\n",
	"GET / HTTP/0.9\r\n\r\n",
	"GET / HTTP/1.00\r\n\r\n",
	"GET / http/1.1\r\n\r\n",
	"GET / HTTP/1.10\r\n\r\n",
	"GET /\r\n\r\n",
	/* The target: origin form only. */
	"GET * HTTP/1.1\r\n\r\n",
	"GET http://x/ HTTP/1.1\r\n\r\n",
	"GET a HTTP/1.1\r\n\r\n",
	"GET ?a HTTP/1.1\r\n\r\n",
	/* Empty and dot segments, escaped dots included. */
	"GET // HTTP/1.1\r\n\r\n",
	"GET /a//b HTTP/1.1\r\n\r\n",
	"GET /a// HTTP/1.1\r\n\r\n",
	"GET /. HTTP/1.1\r\n\r\n",
	"GET /.. HTTP/1.1\r\n\r\n",
	"GET /./ HTTP/1.1\r\n\r\n",
	"GET /a/./b HTTP/1.1\r\n\r\n",
	"GET /a/.. HTTP/1.1\r\n\r\n",
	"GET /a/../b HTTP/1.1\r\n\r\n",
	"GET /a/.?x HTTP/1.1\r\n\r\n",
	"GET /%2e HTTP/1.1\r\n\r\n",
	"GET /a/%2E%2e/b HTTP/1.1\r\n\r\n",
	"GET /.%2E?a HTTP/1.1\r\n\r\n",
	/* Bytes that are no pchar. */
	"GET /a\"b HTTP/1.1\r\n\r\n",
	"GET /a<b HTTP/1.1\r\n\r\n",
	"GET /a#b HTTP/1.1\r\n\r\n",
	"GET /a\\b HTTP/1.1\r\n\r\n",
	"GET /a[b HTTP/1.1\r\n\r\n",
	"GET /a^b HTTP/1.1\r\n\r\n",
	"GET /a{b HTTP/1.1\r\n\r\n",
	"GET /\x7f HTTP/1.1\r\n\r\n",
	"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
	/* Percent escapes. */
	"GET /% HTTP/1.1\r\n\r\n",
	"GET /%4 HTTP/1.1\r\n\r\n",
	"GET /%G0 HTTP/1.1\r\n\r\n",
	"GET /%0g HTTP/1.1\r\n\r\n",
	"GET /%%41 HTTP/1.1\r\n\r\n",
	"GET /%+1 HTTP/1.1\r\n\r\n",
	/* The query. */
	"GET /?a#b HTTP/1.1\r\n\r\n",
	"GET /?a\tb HTTP/1.1\r\n\r\n",
	"GET /?a\x7f HTTP/1.1\r\n\r\n",
	"GET /?\x80 HTTP/1.1\r\n\r\n",
	/* Bare LF, bare CR. */
	"GET / HTTP/1.1\n\r\n",
	"GET / HTTP/1.1\n\n",
	"GET / HTTP/1.1\r\nA: b\n\r\n",
	"GET / HTTP/1.1\r\nA: b\r\n\n",
	"GET / HTTP/1.1\r\n\n",
	"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
	"GET / HTTP/1.1\r\r\n\r\n",
	"GET / HTTP/1.1\r\nA: b\r\r\n\r\n",
	"GET / HTTP/1.1\r\n\rX\r\n",
	/* Obs-fold. */
	"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
	"GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n",
	"GET / HTTP/1.1\r\n A: b\r\n\r\n",
	/* Header names. */
	"GET / HTTP/1.1\r\n: v\r\n\r\n",
	"GET / HTTP/1.1\r\nA b: v\r\n\r\n",
	"GET / HTTP/1.1\r\nA : v\r\n\r\n",
	"GET / HTTP/1.1\r\nA\t: v\r\n\r\n",
	"GET / HTTP/1.1\r\nA(b): v\r\n\r\n",
	"GET / HTTP/1.1\r\nA@b: v\r\n\r\n",
	"GET / HTTP/1.1\r\n\xc3\x84: v\r\n\r\n",
	"GET / HTTP/1.1\r\nA\r\n\r\n",
	/* Header values. */
	"GET / HTTP/1.1\r\nA: b\x01\r\n\r\n",
	"GET / HTTP/1.1\r\nA: \x7f\r\n\r\n",
	"GET / HTTP/1.1\r\nA: caf\xc3\xa9\r\n\r\n",
	/* Framing and protocol switches. */
	"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
	"POST / HTTP/1.1\r\ntransfer-encoding: identity\r\n\r\n",
	"POST / HTTP/1.1\r\nTRANSFER-ENCODING:\r\n\r\n",
	"POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n",
	"POST / HTTP/1.1\r\nExpect: 100-continue, x\r\n\r\n",
	"POST / HTTP/1.1\r\nexpect:\r\n\r\n",
	"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
	"GET / HTTP/1.1\r\nuPgRaDe: h2c\r\n\r\n",
	/* Content-Length. */
	"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
	"POST / HTTP/1.1\r\nContent-Length:  \t \r\n\r\n",
	"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
	"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
	"POST / HTTP/1.1\r\nContent-Length: 1,1\r\n\r\n",
	"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
	"POST / HTTP/1.1\r\nContent-Length: 1 1\r\n\r\n",
	"POST / HTTP/1.1\r\nContent-Length: 1.0\r\n\r\n",
	"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
	"POST / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n",
	"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
	"POST / HTTP/1.1\r\ncontent-length: 5\r\nX: y\r\nCONTENT-LENGTH: 6\r\n\r\n",
	/* Connection. */
	"GET / HTTP/1.1\r\nConnection: close, keep-alive\r\n\r\n",
	"GET / HTTP/1.1\r\nConnection: closed\r\n\r\n",
	"GET / HTTP/1.1\r\nConnection: close\r\nConnection: close\r\n\r\n",
	"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: keep-alive\r\n\r\n",
	"GET / HTTP/1.1\r\nConnection:\r\n\r\n",
	"GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n",
	"GET / HTTP/1.1\r\nConnection: keep-alive,\r\n\r\n",
	"GET / HTTP/1.1\r\nConnection: keep alive\r\n\r\n",
	"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
	"GET / HTTP/1.1\r\nConnection: keep-alivee\r\n\r\n",
};

static void test_refused_whole(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		if (parse_s(refused[i]) != LP_RQ_OTHER) {
			print_error("refused[%zu] \"%s\" is not refused\n", i, refused[i]);
			fail();
		}
	}
	/* A NUL byte is no method character. */
	assert_int_equal(parse_n("G\0T / HTTP/1.1\r\n\r\n", 18), LP_RQ_OTHER);
	assert_int_equal(parse_n("GET / HTTP/1.1\r\nA: \0\r\n\r\n", 24), LP_RQ_OTHER);
}

/* Beginnings that no continuation can make acceptable: refused at once. */
static const char *const refused_early[] = {
	"X",
	"g",
	"GETT",
	"DELETEX",
	"GET x",
	"GET //",
	"GET /a/./",
	"GET /..?",
	"GET /%x",
	"GET /%2e/",
	"GET /? #",
	"GET / HTTP/1.2",
	"GET / HTTP/2",
	"GET / HTTP/1.0 ",
	"GET / HTTP/1.1\n",
	"GET / HTTP/1.1\r\r",
	"GET / HTTP/1.1\r\n ",
	"GET / HTTP/1.1\r\nA ",
	"GET / HTTP/1.1\r\nA: b\rc",
	"GET / HTTP/1.1\r\nTransfer-Encoding:",
	"GET / HTTP/1.1\r\nExpect: 2",
	"GET / HTTP/1.1\r\nExpect: 100-continue ,",
	"GET / HTTP/1.1\r\nupgrade:",
	"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length:",
	"GET / HTTP/1.1\r\nContent-Length: x",
	"GET / HTTP/1.1\r\nContent-Length: 1 2",
	"GET / HTTP/1.1\r\nContent-Length: 1234567890123456789",
	"GET / HTTP/1.1\r\nContent-Length: \r",
	"GET / HTTP/1.1\r\nConnection: x",
	"GET / HTTP/1.1\r\nConnection: clo ",
	"GET / HTTP/1.1\r\nConnection: close,",
	"GET / HTTP/1.1\r\nConnection: close\r\nConnection:",
	"GET / HTTP/1.1\r\nConnection: keep ",
	"GET / HTTP/1.1\r\nConnection: keep-alive ,",
	"GET / HTTP/1.1\r\nConnection: \r",
};

static void test_refused_as_soon_as_seen(void **state)
{
	char longer[256];
	size_t i, n;

	for (i = 0; i < sizeof(refused_early) / sizeof(refused_early[0]); i++) {
		n = strlen(refused_early[i]);
		if (parse_s(refused_early[i]) != LP_RQ_OTHER) {
			print_error("\"%s\" is not refused at once\n", refused_early[i]);
			fail();
		}
		/* One byte less is still a possible beginning. */
		if (parse_n(refused_early[i], n - 1) != LP_RQ_INCOMPLETE) {
			print_error("\"%.*s\" is not incomplete\n", (int)(n - 1), refused_early[i]);
			fail();
		}
		/* And what follows changes nothing. */
		snprintf(longer, sizeof(longer), "%s\r\n\r\n", refused_early[i]);
		assert_int_equal(parse_s(longer), LP_RQ_OTHER);
	}
}

static void test_content_length(void **state)
{
	static const struct {
		const char *req;
		long long want;
	} cases[] = {
		{ "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 0 },
		{ "POST / HTTP/1.1\r\ncontent-length:42\r\n\r\n", 42 },
		{ "POST / HTTP/1.1\r\nCONTENT-LENGTH: \t 0007 \t\r\n\r\n", 7 },
		{ "POST / HTTP/1.1\r\nContent-Length: 999999999999999999\r\n\r\n",
		  999999999999999999LL },
		{ "GET / HTTP/1.1\r\nX-Content-Length: 5\r\nContent-Lengths: 6\r\n\r\n", -1 },
	};
	struct lp_rq rq;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(lp_rq_parse(cases[i].req, strlen(cases[i].req), &rq), LP_RQ_OK);
		assert_int_equal(rq.content_length, cases[i].want);
	}
}

static void test_percent_escapes(void **state)
{
	static const char ok[] = "GET /a%20b/%7e%7E/%41%2F/a%2eb/%2e%2e%2e HTTP/1.1\r\n\r\n";
	struct lp_rq rq;

	assert_int_equal(lp_rq_parse(ok, sizeof(ok) - 1, &rq), LP_RQ_OK);
	assert_field(rq.path, rq.path_len, "/a%20b/%7e%7E/%41%2F/a%2eb/%2e%2e%2e");
	assert_int_equal(parse_s("GET /%aF%Af%09 HTTP/1.1\r\n\r\n"), LP_RQ_OK);
	/* Escapes cut by the end of the buffer wait for their digits. */
	assert_int_equal(parse_s("GET /%"), LP_RQ_INCOMPLETE);
	assert_int_equal(parse_s("GET /%a"), LP_RQ_INCOMPLETE);
	assert_int_equal(parse_s("GET /%g"), LP_RQ_OTHER);
	assert_int_equal(parse_s("GET /%ag"), LP_RQ_OTHER);
	/* A query is not checked for escapes. */
	assert_int_equal(parse_s("GET /?%zz%%=/./ HTTP/1.1\r\n\r\n"), LP_RQ_OK);
}

static void test_values_without_blanks(void **state)
{
	static const char req[] = "PUT /v HTTP/1.1\r\n"
				  "X-A: \t v a\tl \t \r\n"
				  "X-B:\r\n"
				  "X-C:  \t \r\n"
				  "X-D:v\r\n"
				  "X-E: \"q\" (c) {} \r\n"
				  "\r\n";
	struct lp_rq rq;
	size_t len = 99;

	assert_int_equal(lp_rq_parse(req, sizeof(req) - 1, &rq), LP_RQ_OK);
	assert_int_equal(rq.nheaders, 5);
	assert_field(rq.headers[0].value, rq.headers[0].value_len, "v a\tl");
	assert_field(rq.headers[1].value, rq.headers[1].value_len, "");
	assert_field(rq.headers[2].value, rq.headers[2].value_len, "");
	assert_field(rq.headers[3].value, rq.headers[3].value_len, "v");
	assert_field(rq.headers[4].value, rq.headers[4].value_len, "\"q\" (c) {}");
	assert_non_null(lp_rq_header(&rq, "x-b", &len));
	assert_int_equal(len, 0);
}

/* A head of exactly size bytes: the request line, one header whose value
 * fills the rest, the blank line; followed by extra bytes of "x". */
static char *head_of_size(size_t size, size_t extra)
{
	static const char line[] = "GET / HTTP/1.1\r\nX: ";
	char *h = malloc(size + extra);
	size_t fixed = sizeof(line) - 1 + 4;

	assert_non_null(h);
	assert_true(size > fixed);
	memcpy(h, line, sizeof(line) - 1);
	memset(h + sizeof(line) - 1, 'v', size - fixed);
	memcpy(h + size - 4, "\r\n\r\n", 4);
	memset(h + size, 'x', extra);
	return h;
}

static void test_max_head(void **state)
{
	struct lp_rq rq;
	char *h;

	/* Exactly LP_RQ_MAX_HEAD bytes: accepted, with or without more after. */
	h = head_of_size(LP_RQ_MAX_HEAD, 100);
	assert_int_equal(parse_n(h, LP_RQ_MAX_HEAD), LP_RQ_OK);
	assert_int_equal(lp_rq_parse(h, LP_RQ_MAX_HEAD + 100, &rq), LP_RQ_OK);
	assert_int_equal(rq.head_len, LP_RQ_MAX_HEAD);
	assert_int_equal(rq.headers[0].value_len, LP_RQ_MAX_HEAD - 23);
	assert_int_equal(parse_n(h, LP_RQ_MAX_HEAD - 1), LP_RQ_INCOMPLETE);
	free(h);

	/* One byte more: refused once the limit is reached, whatever follows. */
	h = head_of_size(LP_RQ_MAX_HEAD + 1, 100);
	assert_int_equal(parse_n(h, LP_RQ_MAX_HEAD - 1), LP_RQ_INCOMPLETE);
	assert_int_equal(parse_n(h, LP_RQ_MAX_HEAD), LP_RQ_OTHER);
	assert_int_equal(parse_n(h, LP_RQ_MAX_HEAD + 1), LP_RQ_OTHER);
	assert_int_equal(parse_n(h, LP_RQ_MAX_HEAD + 100), LP_RQ_OTHER);
	free(h);

	/* A long path counts the same. */
	h = malloc(LP_RQ_MAX_HEAD + 1);
	assert_non_null(h);
	memcpy(h, "GET /", 5);
	memset(h + 5, 'a', LP_RQ_MAX_HEAD - 4);
	assert_int_equal(parse_n(h, LP_RQ_MAX_HEAD - 1), LP_RQ_INCOMPLETE);
	assert_int_equal(parse_n(h, LP_RQ_MAX_HEAD), LP_RQ_OTHER);
	assert_int_equal(parse_n(h, LP_RQ_MAX_HEAD + 1), LP_RQ_OTHER);
	free(h);
}

/* "GET / HTTP/1.1" and n lines "H<i>: v", then the blank line. */
static size_t many_headers(char *out, size_t cap, size_t n)
{
	size_t len, i;

	len = (size_t)snprintf(out, cap, "GET / HTTP/1.1\r\n");
	for (i = 0; i < n; i++)
		len += (size_t)snprintf(out + len, cap - len, "H%zu: v%zu\r\n", i, i);
	len += (size_t)snprintf(out + len, cap - len, "\r\n");
	assert_true(len < cap);
	return len;
}

static void test_max_headers(void **state)
{
	char req[2048];
	struct lp_rq rq;
	size_t len;

	len = many_headers(req, sizeof(req), LP_RQ_MAX_HEADERS);
	assert_int_equal(lp_rq_parse(req, len, &rq), LP_RQ_OK);
	assert_int_equal(rq.nheaders, LP_RQ_MAX_HEADERS);
	assert_field(rq.headers[LP_RQ_MAX_HEADERS - 1].name,
		     rq.headers[LP_RQ_MAX_HEADERS - 1].name_len, "H47");
	assert_field(lp_rq_header(&rq, "h47", &len), len, "v47");

	len = many_headers(req, sizeof(req), LP_RQ_MAX_HEADERS + 1);
	assert_int_equal(parse_n(req, len), LP_RQ_OTHER);
	/* Refused from the first byte of the line one too many. */
	len = many_headers(req, sizeof(req), LP_RQ_MAX_HEADERS);
	assert_int_equal(parse_n(req, len - 2), LP_RQ_INCOMPLETE);
	req[len - 2] = 'H';
	assert_int_equal(parse_n(req, len - 1), LP_RQ_OTHER);
}

static void test_pipelined_bytes_after_the_head(void **state)
{
	static const char two[] = "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
	static const char junk[] = "POST /e HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\r\n\r\n\n\xff";
	struct lp_rq rq;

	assert_int_equal(lp_rq_parse(two, sizeof(two) - 1, &rq), LP_RQ_OK);
	assert_int_equal(rq.head_len, 28);
	assert_field(rq.path, rq.path_len, "/a");
	assert_int_equal(rq.nheaders, 1);
	assert_int_equal(lp_rq_parse(two + 28, sizeof(two) - 1 - 28, &rq), LP_RQ_OK);
	assert_field(rq.path, rq.path_len, "/b");
	assert_int_equal(rq.head_len, sizeof(two) - 1 - 28);

	assert_int_equal(lp_rq_parse(junk, sizeof(junk) - 1, &rq), LP_RQ_OK);
	assert_int_equal(rq.head_len, 39);
	assert_int_equal(rq.content_length, 3);
	assert_memory_equal(junk + rq.head_len, "abc", 3);
}

static void test_expect_continue(void **state)
{
	static const char yes[] = "POST /api/logs/batch HTTP/1.1\r\nContent-Length: 5000\r\n"
				  "Expect: 100-Continue \r\n\r\n";
	static const char no[] = "POST /api/logs HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
	struct lp_rq rq;

	assert_int_equal(lp_rq_parse(yes, sizeof(yes) - 1, &rq), LP_RQ_OK);
	assert_true(rq.expect_continue);
	assert_int_equal(rq.content_length, 5000);
	assert_int_equal(lp_rq_parse(no, sizeof(no) - 1, &rq), LP_RQ_OK);
	assert_false(rq.expect_continue);
	assert_int_equal(parse_s("POST / HTTP/1.1\r\nExpect: 100-continue"), LP_RQ_INCOMPLETE);
	assert_int_equal(parse_s("POST / HTTP/1.1\r\nExpect: 100-con"), LP_RQ_INCOMPLETE);
	assert_int_equal(parse_s("POST / HTTP/1.1\r\nExpect: 100-cont1"), LP_RQ_OTHER);
}

/* "Connection: close" (any case) is accepted and told; keep-alive and no
 * Connection header keep the connection. */
static void test_connection_close(void **state)
{
	static const char *const closing[] = {
		"POST /api/logs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
		"Content-Length: 2\r\n\r\n{}",
		"GET / HTTP/1.1\r\nConnection:CLOSE \r\n\r\n",
		"GET / HTTP/1.1\r\nconnection:  Close\r\n\r\n",
	};
	static const char *const keeping[] = {
		"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
	};
	struct lp_rq rq;
	size_t i;

	for (i = 0; i < sizeof(closing) / sizeof(closing[0]); i++) {
		memset(&rq, 0, sizeof(rq));
		assert_int_equal(lp_rq_parse(closing[i], strlen(closing[i]), &rq), LP_RQ_OK);
		assert_true(rq.close);
	}
	for (i = 0; i < sizeof(keeping) / sizeof(keeping[0]); i++) {
		memset(&rq, 0xff, sizeof(rq));
		assert_int_equal(lp_rq_parse(keeping[i], strlen(keeping[i]), &rq), LP_RQ_OK);
		assert_false(rq.close);
	}
}

/* HTTP/1.0: accepted and told, always closing (keep-alive or not), an
 * Expect ignored; a POST, PUT or PATCH needs a Content-Length, which GET
 * and DELETE do not. */
static void test_http10(void **state)
{
	static const char *const accepted[] = {
		"GET /api/stats HTTP/1.0\r\n\r\n",
		"DELETE /x HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
		"POST /api/logs HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}",
		"PUT /x HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
		"PATCH /x HTTP/1.0\r\nConnection: close\r\nContent-Length: 9\r\n"
		"Expect: 100-continue\r\n\r\n",
	};
	static const char *const refused[] = {
		"POST /api/logs HTTP/1.0\r\n\r\n",
		"PUT /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"PATCH /x HTTP/1.0\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
	};
	struct lp_rq rq;
	size_t i;

	for (i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
		memset(&rq, 0, sizeof(rq));
		if (lp_rq_parse(accepted[i], strlen(accepted[i]), &rq) != LP_RQ_OK) {
			print_error("\"%s\" is not accepted\n", accepted[i]);
			fail();
		}
		assert_true(rq.http10);
		assert_true(rq.close);
		assert_false(rq.expect_continue);
	}
	for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		if (parse_s(refused[i]) != LP_RQ_OTHER) {
			print_error("\"%s\" is not refused\n", refused[i]);
			fail();
		}
	}
	/* A head without its blank line yet is still incomplete. */
	assert_int_equal(parse_s("POST /api/logs HTTP/1.0\r\nHost: x\r\n"), LP_RQ_INCOMPLETE);
	/* HTTP/1.1 is told apart. */
	memset(&rq, 0xff, sizeof(rq));
	assert_int_equal(parse_s("GET / HTTP/1.1\r\n\r\n"), LP_RQ_OK);
	assert_int_equal(lp_rq_parse("GET / HTTP/1.1\r\n\r\n", 18, &rq), LP_RQ_OK);
	assert_false(rq.http10);
	assert_false(rq.close);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_post_every_field),
		cmocka_unit_test(test_get_with_query),
		cmocka_unit_test(test_empty_query_and_no_query),
		cmocka_unit_test(test_every_prefix_is_incomplete),
		cmocka_unit_test(test_refused_whole),
		cmocka_unit_test(test_refused_as_soon_as_seen),
		cmocka_unit_test(test_content_length),
		cmocka_unit_test(test_percent_escapes),
		cmocka_unit_test(test_values_without_blanks),
		cmocka_unit_test(test_max_head),
		cmocka_unit_test(test_max_headers),
		cmocka_unit_test(test_pipelined_bytes_after_the_head),
		cmocka_unit_test(test_expect_continue),
		cmocka_unit_test(test_connection_close),
		cmocka_unit_test(test_http10),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
