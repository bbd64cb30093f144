/* fuzz_batch.c - lp_batch_split and the normalising of each item, as
 * POST /api/logs/batch does with a JSON array or NDJSON body.
 *
 * Checks: the callback sees indexes 0, 1, 2, ... in order, each with
 * either an object or an error message; the count returned matches the
 * calls; an oversized batch (-E2BIG) is refused before any call; a failed
 * split leaves a message.  And lp_batch_split_raw, with the producer's
 * lp_event_scan_input as its raw callback, hands out the same items (an
 * item taken raw is the object jansson reads from its text), with the
 * same errors and the same result. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "logpipe/event.h"
#include "logpipe/json.h"
#include "logpipe/log.h"

#include "logpipe/banned.h"

#define MAX_ITEMS 20

struct ctx {
	size_t calls;    /* callbacks so far */
	size_t accepted; /* items that normalised */
	char *seen[MAX_ITEMS]; /* each item as dumped, or its error */
};

/* Notes item index: the object's serialisation or "!" and the error. */
static void note(struct ctx *c, size_t index, json_t *obj, const char *error)
{
	if (index >= MAX_ITEMS)
		return;
	if (obj) {
		c->seen[index] = json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY);
	} else {
		c->seen[index] = malloc(strlen(error) + 2);
		c->seen[index][0] = '!';
		memcpy(c->seen[index] + 1, error, strlen(error) + 1);
	}
}

static int raw_item(void *ud, size_t index, const char *text, size_t len)
{
	struct ctx *c = ud;
	struct lp_event_fast f;
	json_t *obj;

	if (lp_event_scan_input(text, len, NULL, 1700000000000LL, NULL, &f) != 0)
		return -ENOTSUP;
	free(f.text);
	FUZZ_CHECK(index == c->calls, "raw index %zu after %zu calls", index, c->calls);
	c->calls++;
	FUZZ_CHECK(c->calls <= MAX_ITEMS, "%zu items, more than %d", c->calls, MAX_ITEMS);
	obj = lp_json_loadb(text, len, 0, NULL);
	FUZZ_CHECK(obj != NULL, "raw item %zu is not JSON", index);
	note(c, index, obj, NULL);
	c->accepted++;
	json_decref(obj);
	return 0;
}

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
	note(c, index, obj, error);
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
	struct ctx c = { 0 }, r = { 0 };
	char err[200] = "", rerr[200] = "";
	long n, rn;

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
	rn = lp_batch_split_raw((const char *)data, size, MAX_ITEMS, raw_item, item, &r, rerr,
				sizeof(rerr));
	FUZZ_CHECK(rn == n && r.calls == c.calls && r.accepted == c.accepted,
		   "raw split: %ld items (%zu calls), plain: %ld (%zu)", rn, r.calls, n, c.calls);
	FUZZ_CHECK(strcmp(err, rerr) == 0, "raw split error \"%s\", plain \"%s\"", rerr, err);
	for (size_t i = 0; i < MAX_ITEMS; i++) {
		FUZZ_CHECK(!c.seen[i] == !r.seen[i] && (!c.seen[i] || strcmp(c.seen[i], r.seen[i]) == 0),
			   "item %zu: raw %s, plain %s", i, r.seen[i] ? r.seen[i] : "-",
			   c.seen[i] ? c.seen[i] : "-");
		free(c.seen[i]);
		free(r.seen[i]);
	}
	return 0;
}
