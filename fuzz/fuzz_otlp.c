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
 * with a reason; the replies encode. */
#include <errno.h>
#include <jansson.h>

#include "../producer/otlp.h"
#include "fuzz.h"
#include "logpipe/log.h"

#include "logpipe/banned.h"

#define MAX_RECORDS 50

struct ctx {
	size_t calls; /* callbacks so far */
};

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
		FUZZ_CHECK(error && *error, "a record with neither object nor error");
		return 0;
	}
	FUZZ_CHECK(json_is_object(in), "record %zu is not an object", index);
	ev = lp_event_normalize(in, NULL, 1700000000000LL, NULL, &e);
	if (ev)
		json_decref(ev);
	else
		FUZZ_CHECK(e.message[0], "record %zu refused without a reason", index);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctx c = { 0 };
	char err[200] = "", *inflated = NULL, *reply;
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
	n = otlp_decode(body, len, enc, MAX_RECORDS, record, &c, err, sizeof(err));
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
	return 0;
}
