/* fuzz_metadata.c - request bodies of the metadata service
 * (POST/PUT/PATCH /api/metadata/hosts|services, md_validate).
 *
 * The first byte picks the kind and the mode; the rest is the JSON body.
 * Checks: an accepted body yields text values that are valid UTF-8 JSON
 * strings within the size limits, and a key (when present) that
 * md_key_valid accepts; a refusal names a field or explains itself. */
#include <jansson.h>

#include "fuzz.h"
#include "logpipe/json.h"
#include "logpipe/log.h"
#include "../metadata-svc/record.h"

#include "logpipe/banned.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	lp_log_init("fuzz", LP_LOG_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct md_kind *k;
	enum md_mode mode;
	struct md_values v;
	struct md_invalid why;
	json_error_t je;
	json_t *body;
	size_t i;

	if (size < 1)
		return 0;
	k = data[0] & 1 ? &md_service_kind : &md_host_kind;
	mode = (enum md_mode)((data[0] >> 1) % 3);
	body = lp_json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, &je);
	if (!body)
		return 0;
	memset(&v, 0, sizeof(v));
	memset(&why, 0, sizeof(why));
	if (md_validate(k, body, mode, mode == MD_CREATE ? NULL : "web-01", &v, &why) == 0) {
		for (i = 0; i < k->nfields; i++) {
			json_t *j;

			if (!v.text[i])
				continue;
			j = json_string(v.text[i]);
			FUZZ_CHECK(j != NULL, "field %s is not valid UTF-8", k->fields[i].json);
			json_decref(j);
			if (k->fields[i].type == MD_F_KEY)
				FUZZ_CHECK(md_key_valid(k, v.text[i]), "invalid key \"%s\" accepted",
					   v.text[i]);
			if (k->fields[i].type == MD_F_TEXT)
				FUZZ_CHECK(strlen(v.text[i]) <= MD_MAX_TEXT, "text too long");
		}
		md_values_release(&v);
	} else {
		FUZZ_CHECK(why.message[0] != '\0', "refusal without a message");
	}
	json_decref(body);
	return 0;
}
