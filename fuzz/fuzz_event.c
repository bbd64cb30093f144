/* fuzz_event.c - lp_event_parse: one event body as POST /api/logs gets it.
 *
 * Each input is parsed twice, with the default limits and with tight ones
 * (so the limit paths are reached with small inputs).  Checks: a refusal
 * has a 400/413 status and a code; an accepted event passes
 * lp_event_check_normalized; and normalising its serialisation again
 * gives the same event but for received_at (event.h's promise). */
#include <jansson.h>

#include "fuzz.h"
#include "logpipe/event.h"
#include "logpipe/log.h"

#include "logpipe/banned.h"

#define NOW_MS 1700000000000LL

static const struct lp_event_limits tight = {
	.max_message = 64,
	.max_attributes = 4,
	.max_field = 16,
	.max_depth = 3,
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	lp_log_init("fuzz", LP_LOG_ERROR);
	return 0;
}

static void one(const char *text, size_t len, const struct lp_event_limits *lim,
		const char *tenant)
{
	struct lp_event_error e;
	char why[200];
	json_t *ev, *again;
	char *out;

	memset(&e, 0, sizeof(e));
	ev = lp_event_parse(text, len, lim, NOW_MS, tenant, &e);
	if (!ev) {
		FUZZ_CHECK(e.status == 400 || e.status == 413, "status %d", e.status);
		FUZZ_CHECK(e.code[0] != '\0', "no code");
		FUZZ_CHECK(e.message[0] != '\0', "no message");
		return;
	}
	FUZZ_CHECK(lp_event_check_normalized(ev, why, sizeof(why)) == 0, "%s", why);
	out = json_dumps(ev, JSON_COMPACT);
	FUZZ_CHECK(out != NULL, "cannot serialise");
	memset(&e, 0, sizeof(e));
	again = lp_event_parse(out, strlen(out), lim, NOW_MS + 1000, tenant, &e);
	FUZZ_CHECK(again != NULL, "normalised event refused: %s (%s): %s", e.code, e.message, out);
	json_object_del(ev, "received_at");
	json_object_del(again, "received_at");
	if (!json_equal(ev, again)) {
		char *b = json_dumps(again, JSON_COMPACT);

		FUZZ_CHECK(0, "normalising is not idempotent:\n  %s\n  %s", out, b);
	}
	free(out);
	json_decref(again);
	json_decref(ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one((const char *)data, size, NULL, NULL);
	/* The gateway's tenant override, on every other input. */
	one((const char *)data, size, &tight, size % 2 ? "acme" : NULL);
	return 0;
}
