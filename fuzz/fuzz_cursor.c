/* fuzz_cursor.c - the consumer's page cursor (query_cursor_decode), the
 * time parameters of GET /api/logs (query_parse_time) and
 * query_format_ts.
 *
 * Checks: a decoded cursor has a lower-case UUID and encodes to a cursor
 * that decodes to the same pair; a decoded cursor's ts and a parsed time
 * format as a literal PostgreSQL reads (a year from 0001, not 0000 or
 * negative), so no accepted value can fail in the database. */
#include <ctype.h>

#include "fuzz.h"
#include "logpipe/event.h"
#include "logpipe/log.h"
#include "../consumer/query.h"

#include "logpipe/banned.h"

/* Whether query_format_ts wrote a year PostgreSQL reads: at least 0001
 * and at most 294276, its last. */
static int pg_year_ok(const char *ts)
{
	long year = 0;
	int n = 0;

	for (; ts[n] >= '0' && ts[n] <= '9'; n++)
		year = year * 10 + (ts[n] - '0');
	return n >= 4 && n <= 6 && ts[n] == '-' && year >= 1 && year <= 294276;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	lp_log_init("fuzz", LP_LOG_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size);
	char id[37], id2[37], enc[128], ts[40];
	int64_t us, us2;

	memset(id, 'x', sizeof(id));
	if (query_cursor_decode(s, &us, id) == 0) {
		FUZZ_CHECK(id[36] == '\0' && lp_uuid_valid(id), "bad id from \"%s\"", s);
		for (int i = 0; i < 36; i++)
			FUZZ_CHECK(!isupper((unsigned char)id[i]), "upper case in %s", id);
		FUZZ_CHECK(query_cursor_encode(us, id, enc, sizeof(enc)) == 0, "cannot encode");
		FUZZ_CHECK(query_cursor_decode(enc, &us2, id2) == 0, "\"%s\" does not decode", enc);
		FUZZ_CHECK(us2 == us && !strcmp(id, id2), "round trip %lld:%s -> %lld:%s",
			   (long long)us, id, (long long)us2, id2);
		query_format_ts(us, ts);
		FUZZ_CHECK(pg_year_ok(ts), "cursor ts %lld formats as \"%s\"", (long long)us, ts);
	}
	if (query_parse_time(s, &us) == 0) {
		query_format_ts(us, ts);
		FUZZ_CHECK(pg_year_ok(ts), "time \"%s\" formats as \"%s\"", s, ts);
	}
	free(s);
	return 0;
}
