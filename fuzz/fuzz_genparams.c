/* fuzz_genparams.c - the generator's start request body
 * (POST /api/v1/generator/start, gen_params_parse).
 *
 * Checks: accepted parameters pass gen_params_check; a refusal has a code
 * and a message; a refused body leaves the defaults untouched. */
#include "fuzz.h"
#include "logpipe/log.h"
#include "../generator/params.h"

#include "logpipe/banned.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	lp_log_init("fuzz", LP_LOG_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct gen_params defaults = { 100, 256, 2, 10, 0 };
	struct gen_params p = defaults;
	struct gen_param_error e;

	memset(&e, 0, sizeof(e));
	if (gen_params_parse(&p, (const char *)data, size, &e) == 0) {
		struct gen_param_error e2;

		FUZZ_CHECK(gen_params_check(&p, &e2) == 0, "accepted but fails check: %s",
			   e2.message);
	} else {
		FUZZ_CHECK(e.code[0] && e.message[0], "refusal without code or message");
		FUZZ_CHECK(!memcmp(&p, &defaults, sizeof(p)), "a refused body changed the settings");
	}
	return 0;
}
