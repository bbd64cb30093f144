/* fuzz_event_scan.c - lp_event_scan, the enricher's fast filter path,
 * against the full path it stands in for.
 *
 * The property: whenever lp_event_scan accepts a record, json_loadb parses
 * it, lp_event_check_normalized accepts it, it has no "enrichment" member,
 * and the service, host and source_ip the scan hands to the look-ups are
 * the strings jansson reads.  (The scan may leave any record to the full
 * path; it must never accept one the full path refuses.) */
#include <jansson.h>

#include "fuzz.h"
#include "logpipe/event.h"
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

static void same(const char *field, const char *fast, json_t *ev)
{
	const char *full = json_string_value(json_object_get(ev, field));

	if (!fast || !full) {
		FUZZ_CHECK(!fast && !full, "%s: scan %s, jansson %s", field, fast ? fast : "(none)",
			   full ? full : "(none)");
		return;
	}
	FUZZ_CHECK(strcmp(fast, full) == 0, "%s: scan \"%s\", jansson \"%s\"", field, fast, full);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lp_event_view v;
	json_error_t je;
	char why[200];
	json_t *ev;

	if (lp_event_scan((const char *)data, size, &v) != 0)
		return 0;
	ev = lp_json_loadb((const char *)data, size, 0, &je);
	FUZZ_CHECK(ev != NULL, "scan accepted what jansson refuses: %s", je.text);
	FUZZ_CHECK(lp_event_check_normalized(ev, why, sizeof(why)) == 0,
		   "scan accepted an invalid event: %s", why);
	FUZZ_CHECK(json_object_get(ev, "enrichment") == NULL, "scan accepted an enriched event");
	same("service", v.service, ev);
	same("host", v.host, ev);
	same("source_ip", v.source_ip, ev);
	json_decref(ev);
	return 0;
}
