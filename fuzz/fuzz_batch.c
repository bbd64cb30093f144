/* fuzz_batch.c - lp_batch_split and the normalising of each item, as
 * POST /api/logs/batch does with a JSON array or NDJSON body.
 *
 * Checks: the callback sees indexes 0, 1, 2, ... in order, each with
 * either an object or an error message; the count returned matches the
 * calls; an oversized batch (-E2BIG) is refused before any call; a failed
 * split leaves a message. */
#include <errno.h>
#include <jansson.h>

#include "fuzz.h"
#include "logpipe/event.h"
#include "logpipe/log.h"

#include "logpipe/banned.h"

#define MAX_ITEMS 20

struct ctx {
	size_t calls;    /* callbacks so far */
	size_t accepted; /* items that normalised */
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	lp_log_init("fuzz", LP_LOG_ERROR);
	return 0;
}

static int item(void *ud, size_t index, json_t *obj, const char *error)
{
	struct ctx *c = ud;
	struct lp_event_error e;
	json_t *ev;

	FUZZ_CHECK(index == c->calls, "index %zu after %zu calls", index, c->calls);
	c->calls++;
	FUZZ_CHECK(c->calls <= MAX_ITEMS, "%zu items, more than %d", c->calls, MAX_ITEMS);
	if (!obj) {
		FUZZ_CHECK(error && *error, "an item with neither object nor error");
		return 0;
	}
	FUZZ_CHECK(json_is_object(obj), "item %zu is not an object", index);
	ev = lp_event_normalize(obj, NULL, 1700000000000LL, NULL, &e);
	if (ev) {
		c->accepted++;
		json_decref(ev);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctx c = { 0, 0 };
	char err[200] = "";
	long n;

	n = lp_batch_split((const char *)data, size, MAX_ITEMS, item, &c, err, sizeof(err));
	if (n == -E2BIG) {
		FUZZ_CHECK(c.calls == 0, "-E2BIG after %zu calls", c.calls);
	} else if (n < 0) {
		FUZZ_CHECK(n == -EINVAL, "unexpected error %ld", n);
		FUZZ_CHECK(c.calls == 0, "error after %zu calls", c.calls);
		FUZZ_CHECK(err[0] != '\0', "error without a message");
	} else {
		FUZZ_CHECK((size_t)n == c.calls, "returned %ld after %zu calls", n, c.calls);
		FUZZ_CHECK(n > 0, "an empty batch was not refused");
	}
	return 0;
}
