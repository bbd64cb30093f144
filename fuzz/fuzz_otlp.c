/* fuzz_otlp.c - otlp_decode (and otlp_gunzip), as POST /v1/logs does with
 * an OTLP/HTTP logs body.
 *
 * The first byte chooses how the rest is read: bit 0 set is OTLP JSON,
 * clear is protobuf; bit 1 set inflates it as gzip first (bounded to
 * 64 KiB).  Checks, besides no crash and no stack overflow on deep
 * nesting: the callback sees indexes 0, 1, 2, ... in order, each with
 * either an input object or an error message; the count returned matches
 * the calls; a refused body (-EINVAL, -ELOOP, -E2BIG) leaves a message and
 * made no call for -E2BIG; every mapped record normalises or is refused
 * with a reason; the replies encode.  And for protobuf, otlp_decode_fast
 * gives the same: the same return and error, and per record either the
 * same event text (ids aside) or the same record handed to the tree path;
 * bit 2 of the first byte picks tight limits for both. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../producer/otlp.h"
#include "fuzz.h"
#include "logpipe/log.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

#define MAX_RECORDS 50

#define NOW_MS 1700000000000LL

struct ctx {
	size_t calls;                   /* callbacks so far */
	const struct lp_event_limits *lim; /* the limits normalising uses */
	char *out[MAX_RECORDS + 1];     /* per record: the event (id masked) or the refusal */
};

static const struct lp_event_limits tight = {
	.max_message = 16, .max_attributes = 3, .max_field = 8, .max_depth = 4,
};

/* "ok <text>" with the id zeroed. */
static char *masked(const char *text, size_t len)
{
	char *s = lp_xmalloc(len + 4);

	memcpy(s, "ok ", 3);
	memcpy(s + 3, text, len);
	s[len + 3] = '\0';
	if (len > 44 && strncmp(text, "{\"id\":\"", 7) == 0)
		memset(s + 10, '0', 36);
	return s;
}

static void ctx_release(struct ctx *c)
{
	for (size_t i = 0; i <= MAX_RECORDS; i++)
		free(c->out[i]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	lp_log_init("fuzz", LP_LOG_ERROR);
	return 0;
}

static int record(void *ud, size_t index, json_t *in, const char *error)
{
	struct ctx *c = ud;
	struct lp_event_error e = { 0 };
	json_t *ev;

	FUZZ_CHECK(index == c->calls, "index %zu after %zu calls", index, c->calls);
	c->calls++;
	FUZZ_CHECK(c->calls <= MAX_RECORDS, "%zu records, more than %d", c->calls, MAX_RECORDS);
	if (!in) {
		char buf[300];

		FUZZ_CHECK(error && *error, "a record with neither object nor error");
		snprintf(buf, sizeof(buf), "unmapped %s", error);
		c->out[index] = lp_xstrdup(buf);
		return 0;
	}
	FUZZ_CHECK(json_is_object(in), "record %zu is not an object", index);
	ev = lp_event_normalize(in, c->lim, NOW_MS, NULL, &e);
	if (ev) {
		char *text = json_dumps(ev, JSON_COMPACT);

		FUZZ_CHECK(text, "record %zu does not serialise", index);
		c->out[index] = masked(text, strlen(text));
		free(text);
		json_decref(ev);
	} else {
		char buf[300];

		FUZZ_CHECK(e.message[0], "record %zu refused without a reason", index);
		snprintf(buf, sizeof(buf), "refused %s %s", e.code, e.message);
		c->out[index] = lp_xstrdup(buf);
	}
	return 0;
}

static int fast_event(void *ud, size_t index, struct otlp_event *ev)
{
	struct ctx *c = ud;

	FUZZ_CHECK(index == c->calls, "index %zu after %zu calls", index, c->calls);
	c->calls++;
	FUZZ_CHECK(c->calls <= MAX_RECORDS, "%zu records, more than %d", c->calls, MAX_RECORDS);
	FUZZ_CHECK(ev->ev.len == strlen(ev->ev.text), "event %zu: length", index);
	FUZZ_CHECK(ev->ev.service >= ev->ev.text &&
			   ev->ev.service + ev->ev.service_len <= ev->ev.text + ev->ev.len,
		   "event %zu: the service is not inside the text", index);
	c->out[index] = masked(ev->ev.text, ev->ev.len);
	free(ev->ev.text);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctx c = { 0 }, f = { 0 };
	char err[200] = "", ferr[200] = "", *inflated = NULL, *reply;
	const char *body;
	size_t len, rlen;
	enum otlp_encoding enc;
	long n;

	if (size < 1)
		return 0;
	enc = (data[0] & 1) ? OTLP_JSON : OTLP_PROTOBUF;
	body = (const char *)data + 1;
	len = size - 1;
	if (data[0] & 2) {
		if (otlp_gunzip(body, len, 65536, &inflated, &len) < 0)
			return 0;
		body = inflated;
	}
	c.lim = f.lim = (data[0] & 4) ? &tight : &lp_event_default_limits;
	n = otlp_decode(body, len, enc, MAX_RECORDS, record, &c, err, sizeof(err));
	if (enc == OTLP_PROTOBUF) {
		struct otlp_fast fast = { f.lim, NOW_MS, NULL, fast_event };
		long m = otlp_decode_fast(body, len, enc, MAX_RECORDS, &fast, record, &f, ferr,
					  sizeof(ferr));

		FUZZ_CHECK(m == n, "otlp_decode_fast returned %ld, otlp_decode %ld", m, n);
		FUZZ_CHECK(n >= 0 || strcmp(err, ferr) == 0, "errors differ: \"%s\", \"%s\"", err,
			   ferr);
		for (long i = 0; i < n; i++)
			FUZZ_CHECK(c.out[i] && f.out[i] && strcmp(c.out[i], f.out[i]) == 0,
				   "record %ld differs:\n  tree: %s\n  fast: %s", i,
				   c.out[i] ? c.out[i] : "(none)", f.out[i] ? f.out[i] : "(none)");
	}
	if (n < 0) {
		FUZZ_CHECK(n == -EINVAL || n == -ELOOP || n == -E2BIG, "unexpected error %ld", n);
		FUZZ_CHECK(err[0], "refused without a message (%ld)", n);
		FUZZ_CHECK(n != -E2BIG || c.calls == 0, "-E2BIG after %zu calls", c.calls);
	} else {
		FUZZ_CHECK((size_t)n == c.calls, "returned %ld after %zu calls", n, c.calls);
	}
	otlp_response(enc, n > 0 ? n : 0, err, &reply, &rlen);
	free(reply);
	otlp_status(enc, 3, err, &reply, &rlen);
	free(reply);
	free(inflated);
	ctx_release(&c);
	ctx_release(&f);
	return 0;
}
