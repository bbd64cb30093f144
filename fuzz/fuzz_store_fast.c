/* fuzz_store_fast.c - store_format_fast, the consumer's fast path, against
 * the full path it stands in for.
 *
 * The property: whenever store_format_fast accepts a record, json_loadb
 * parses it, store_format_row accepts the event, and the two COPY lines are
 * byte for byte the same (for both default statuses).  When it declines,
 * the buffer it was given is as it was.  (The fast path may leave any
 * record to the full path; it must never write a line the full path
 * would not.) */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../consumer/store.h"
#include "fuzz.h"
#include "logpipe/json.h"
#include "logpipe/log.h"

#include "logpipe/banned.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	lp_log_init("fuzz", LP_LOG_ERROR);
	return 0;
}

static void same_line(const char *text, size_t size, const struct store_origin *o)
{
	struct lp_buf fast = LP_BUF_INIT, full = LP_BUF_INIT, scratch[3];
	struct lp_event_stored v;
	bool as_stored;
	char err[256];
	json_t *ev;
	int rank, rc;

	for (int i = 0; i < 3; i++)
		lp_buf_init(&scratch[i], 16);
	lp_buf_adds(&fast, "x");
	rc = store_format_fast(text, size, o, &fast, scratch, &v, &rank, &as_stored);
	if (rc != 0) {
		FUZZ_CHECK(rc == -ENOTSUP && fast.len == 1, "declined but wrote");
	} else {
		ev = lp_json_loadb(text, size, 0, NULL);
		FUZZ_CHECK(ev != NULL, "fast path accepted what jansson refuses");
		FUZZ_CHECK(store_format_row(ev, o, &full, err, sizeof(err)) == 0,
			   "fast path accepted what the full path refuses: %s", err);
		FUZZ_CHECK(full.len + 1 == fast.len && memcmp(full.buf, fast.buf + 1, full.len) == 0,
			   "fast path wrote\n%s\nthe full path\n%s", fast.buf + 1, full.buf);
		json_decref(ev);
	}
	lp_buf_release(&fast);
	lp_buf_release(&full);
	for (int i = 0; i < 3; i++)
		lp_buf_release(&scratch[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct store_origin complete = {
		.topic = "enriched-logs-complete", .partition = 1, .offset = 7,
		.default_status = "complete",
	};
	static const struct store_origin partial = {
		.topic = "enriched-logs-partial", .partition = 0, .offset = 0,
		.default_status = "partial",
	};

	same_line((const char *)data, size, &complete);
	same_line((const char *)data, size, &partial);
	return 0;
}
