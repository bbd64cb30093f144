/* fuzz_rfc3339.c - lp_parse_rfc3339 (timestamps in events, query ranges)
 * and lp_rfc3339.
 *
 * Checks: whatever parses formats to a string that parses back to the
 * same instant (inside the years 0000..9999 RFC 3339 can write); and the
 * first 8 bytes read as epoch milliseconds format to a string that parses
 * back to them (clamped to that range). */
#include "fuzz.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

#define MIN_MS (-62167219200000LL)
#define MAX_MS 253402300799999LL

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size);
	char out[32];
	int64_t ms, back;

	if (lp_parse_rfc3339(s, &ms) == 0 && ms >= MIN_MS && ms <= MAX_MS) {
		lp_rfc3339(ms, out);
		FUZZ_CHECK(lp_parse_rfc3339(out, &back) == 0, "\"%s\" (from \"%s\") does not parse",
			   out, s);
		FUZZ_CHECK(back == ms, "\"%s\" -> %lld -> \"%s\" -> %lld", s, (long long)ms, out,
			   (long long)back);
	}
	if (size >= 8) {
		memcpy(&ms, data, 8);
		lp_rfc3339(ms, out);
		FUZZ_CHECK(lp_parse_rfc3339(out, &back) == 0, "\"%s\" does not parse", out);
		if (ms < MIN_MS)
			ms = MIN_MS;
		if (ms > MAX_MS)
			ms = MAX_MS;
		FUZZ_CHECK(back == ms, "%lld -> \"%s\" -> %lld", (long long)ms, out,
			   (long long)back);
	}
	free(s);
	return 0;
}
