/* fuzz_event_scan.c - lp_event_scan, the enricher's fast filter path,
 * against the full path it stands in for.
 *
 * The property: whenever lp_event_scan accepts a record, json_loadb parses
 * it, lp_event_check_normalized accepts it, it has no "enrichment" member,
 * and the service, host and source_ip the scan hands to the look-ups are
 * the strings jansson reads.  (The scan may leave any record to the full
 * path; it must never accept one the full path refuses.)
 *
 * And lp_event_scan_input, the producer's fast path: whenever it accepts
 * an input, lp_event_parse accepts it too (with the same tenant, none and
 * one), and json_dumps of its event is byte for byte the fast path's text
 * (with the fast path's id put in when the input has none), its service
 * the Kafka key the fast path hands out. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

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

/* A fixed clock, so that timestamps and received_at compare. */
#define NOW 1705328625123LL

static void same_input(const char *text, size_t size, const char *tenant)
{
	struct lp_event_fast f;
	struct lp_event_error e;
	json_t *in, *ev, *id;
	char *full;

	if (lp_event_scan_input(text, size, NULL, NOW, tenant, &f) != 0)
		return;
	in = lp_json_loadb(text, size, 0, NULL);
	FUZZ_CHECK(in != NULL, "input scan accepted what jansson refuses");
	ev = lp_event_normalize(in, NULL, NOW, tenant, &e);
	FUZZ_CHECK(ev != NULL, "input scan accepted what the full path refuses: %s", e.message);
	id = json_object_get(in, "id");
	if (!id || json_is_null(id))
		json_object_set_new(ev, "id", json_string(f.id));
	full = json_dumps(ev, JSON_COMPACT);
	FUZZ_CHECK(full && strlen(full) == f.len && memcmp(full, f.text, f.len) == 0,
		   "input scan wrote\n%s\nthe full path\n%s", f.text, full ? full : "(null)");
	FUZZ_CHECK(strlen(json_string_value(json_object_get(ev, "service"))) == f.service_len &&
			   memcmp(json_string_value(json_object_get(ev, "service")), f.service,
				  f.service_len) == 0,
		   "input scan's Kafka key differs");
	free(full);
	free(f.text);
	json_decref(ev);
	json_decref(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lp_event_view v;
	json_error_t je;
	char why[200];
	json_t *ev;

	same_input((const char *)data, size, NULL);
	same_input((const char *)data, size, "tenant-from-key");
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
