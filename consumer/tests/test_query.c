/* test_query.c - query parameters, cursors and the SQL they turn into. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "logpipe/util.h"
#include "../query.h"
#include "fake_req.h"

#include "logpipe/banned.h"

/* 2024-01-15T14:23:45.123Z */
#define T0_MS 1705328625123LL


static char param[32], err[200];

static int parse(struct query_filter *f, const char *const *kv, bool stats)
{
	param[0] = err[0] = '\0';
	return query_parse_filter(f, fake_get, (void *)kv, stats, T0_MS, param, sizeof(param), err,
				  sizeof(err));
}

static void refused(const char *const *kv, const char *want_param)
{
	struct query_filter f;

	assert_int_equal(parse(&f, kv, false), -EINVAL);
	assert_string_equal(param, want_param);
	assert_true(err[0] != '\0');
}

static void test_cursor_roundtrip(void **state)
{
	const char *id = "0190f3a2-7c4e-7d2a-9b1c-0123456789ab";
	char cur[128], got[37];
	int64_t ts;

	(void)state;
	assert_int_equal(query_cursor_encode(T0_MS * 1000 + 456, id, cur, sizeof(cur)), 0);
	assert_null(strchr(cur, '='));
	assert_null(strchr(cur, '+'));
	assert_null(strchr(cur, '/'));
	assert_int_equal(query_cursor_decode(cur, &ts, got), 0);
	assert_int_equal(ts, T0_MS * 1000 + 456);
	assert_string_equal(got, id);

	/* Negative times (before 1970) survive too. */
	assert_int_equal(query_cursor_encode(-5, id, cur, sizeof(cur)), 0);
	assert_int_equal(query_cursor_decode(cur, &ts, got), 0);
	assert_int_equal(ts, -5);

	/* The plain form is accepted; the id comes back in lower case. */
	assert_int_equal(query_cursor_decode("1705328625123000:0190F3A2-7C4E-7D2A-9B1C-0123456789AB",
					     &ts, got),
			 0);
	assert_int_equal(ts, 1705328625123000LL);
	assert_string_equal(got, id);

	/* Too small an output buffer is refused, not truncated. */
	assert_int_equal(query_cursor_encode(1, id, cur, 10), -EINVAL);
}

static void test_cursor_garbage(void **state)
{
	int64_t ts;
	char id[37];

	(void)state;
	assert_int_equal(query_cursor_decode("", &ts, id), -EINVAL);
	assert_int_equal(query_cursor_decode("!!!!", &ts, id), -EINVAL);
	assert_int_equal(query_cursor_decode("abc", &ts, id), -EINVAL);
	assert_int_equal(query_cursor_decode("12:not-a-uuid", &ts, id), -EINVAL);
	assert_int_equal(query_cursor_decode(":0190f3a2-7c4e-7d2a-9b1c-0123456789ab", &ts, id),
			 -EINVAL);
	assert_int_equal(query_cursor_decode("12x:0190f3a2-7c4e-7d2a-9b1c-0123456789ab", &ts, id),
			 -EINVAL);
	/* base64url of "12:zz" */
	assert_int_equal(query_cursor_decode("MTI6eno", &ts, id), -EINVAL);
}

/* A cursor whose ts PostgreSQL cannot read (before 0001-01-01, which
 * query_format_ts would write as year 0 or a negative year) is no position
 * in the table: it is refused here rather than failing in the database as
 * a 500. */
static void test_cursor_out_of_range(void **state)
{
	const char *id = "0190f3a2-7c4e-7d2a-9b1c-0123456789ab";
	char cur[128], got[37], out[40];
	int64_t ts;

	(void)state;
	assert_int_equal(
		query_cursor_decode("-9223372036854775808:0190f3a2-7c4e-7d2a-9b1c-0123456789ab",
				    &ts, got),
		-EINVAL);
	assert_int_equal(query_cursor_encode(QUERY_MIN_US - 1, id, cur, sizeof(cur)), 0);
	assert_int_equal(query_cursor_decode(cur, &ts, got), -EINVAL);
	refused((const char *[]){"cursor", cur, NULL}, "cursor");

	/* The first instant of year 1 and the largest ts are positions. */
	assert_int_equal(query_cursor_encode(QUERY_MIN_US, id, cur, sizeof(cur)), 0);
	assert_int_equal(query_cursor_decode(cur, &ts, got), 0);
	assert_int_equal(ts, QUERY_MIN_US);
	query_format_ts(ts, out);
	assert_string_equal(out, "0001-01-01 00:00:00.000000+00");
	assert_int_equal(query_cursor_encode(INT64_MAX, id, cur, sizeof(cur)), 0);
	assert_int_equal(query_cursor_decode(cur, &ts, got), 0);
	assert_int_equal(ts, INT64_MAX);
	query_format_ts(ts, out);
	assert_string_equal(out, "294247-01-10 04:00:54.775807+00");

	/* Bytes after a NUL inside the base64 are not ignored: base64url of
	 * "12:<id>\0x". */
	assert_int_equal(query_cursor_decode("MTI6MDE5MGYzYTItN2M0ZS03ZDJhLTliMWMtMDEyMzQ1Njc4OWFiAHg",
					     &ts, got),
			 -EINVAL);
}

static void test_times(void **state)
{
	char out[40];
	int64_t us;

	(void)state;
	assert_int_equal(query_parse_time("1705328625123", &us), 0);
	assert_int_equal(us, T0_MS * 1000);
	assert_int_equal(query_parse_time("2024-01-15T14:23:45.123Z", &us), 0);
	assert_int_equal(us, T0_MS * 1000);
	assert_int_equal(query_parse_time("2024-01-15T15:23:45.123+01:00", &us), 0);
	assert_int_equal(us, T0_MS * 1000);
	assert_int_equal(query_parse_time("0", &us), 0);
	assert_int_equal(us, 0);
	assert_int_equal(query_parse_time("", &us), -EINVAL);
	assert_int_equal(query_parse_time("yesterday", &us), -EINVAL);
	assert_int_equal(query_parse_time("12abc", &us), -EINVAL);
	assert_int_equal(query_parse_time("99999999999999999999", &us), -EINVAL);
	/* Before year 1 PostgreSQL cannot read what query_format_ts writes. */
	assert_int_equal(query_parse_time("-62135596800000", &us), 0);
	assert_int_equal(us, QUERY_MIN_US);
	assert_int_equal(query_parse_time("0001-01-01T00:00:00Z", &us), 0);
	assert_int_equal(us, QUERY_MIN_US);
	assert_int_equal(query_parse_time("-62135596800001", &us), -EINVAL);
	assert_int_equal(query_parse_time("-253402300799999", &us), -EINVAL);
	assert_int_equal(query_parse_time("0000-12-31T23:59:59Z", &us), -EINVAL);
	assert_int_equal(query_parse_time("0001-01-01T00:00:00+01:00", &us), -EINVAL);

	query_format_ts(T0_MS * 1000 + 456, out);
	assert_string_equal(out, "2024-01-15 14:23:45.123456+00");
	query_format_ts(0, out);
	assert_string_equal(out, "1970-01-01 00:00:00.000000+00");
	query_format_ts(-1, out);
	assert_string_equal(out, "1969-12-31 23:59:59.999999+00");
}

static void test_defaults(void **state)
{
	const char *kv[] = {NULL};
	struct query_filter f;
	struct query_sql q;

	(void)state;
	assert_int_equal(parse(&f, kv, false), 0);
	assert_int_equal(f.limit, QUERY_DEFAULT_LIMIT);
	assert_int_equal(f.level_rank, -1);
	assert_int_equal(f.min_rank, -1);
	assert_false(f.has_from);
	assert_false(f.has_to);
	assert_false(f.has_cursor);

	query_sql_init(&q);
	query_build_list(&f, &q);
	assert_non_null(strstr(q.sql.buf, " FROM log_events WHERE true ORDER BY log_events.ts "
					  "DESC, log_events.id DESC LIMIT $1"));
	assert_int_equal(q.nparams, 1);
	assert_string_equal(q.params[0], "51");
	query_sql_release(&q);
}

static void test_every_filter(void **state)
{
	const char *kv[] = {"service", "api",       "host",  "web-1",
			    "tenant",  "acme",      "level", "warning",
			    "min_level", "info",    "q",     "disk full",
			    "from",    "1705328625123", "to", "2024-01-16T00:00:00Z",
			    "limit",   "10",
			    "cursor",  "1705328625123000:0190f3a2-7c4e-7d2a-9b1c-0123456789ab",
			    NULL};
	const char *where;
	struct query_filter f;
	struct query_sql q;

	(void)state;
	assert_int_equal(parse(&f, kv, false), 0);
	assert_int_equal(f.level_rank, 3);
	assert_int_equal(f.min_rank, 2);
	assert_string_equal(f.text, "disk full");
	assert_int_equal(f.limit, 10);
	assert_true(f.has_cursor);

	query_sql_init(&q);
	query_build_list(&f, &q);
	where = strstr(q.sql.buf, " WHERE ");
	assert_non_null(where);
	assert_string_equal(where,
			    " WHERE true AND service = $1 AND host = $2 AND tenant = $3"
			    " AND level_rank = $4::smallint AND level_rank >= $5::smallint"
			    " AND to_tsvector('simple', message) @@ plainto_tsquery('simple', $6)"
			    " AND ts >= $7::timestamptz AND ts < $8::timestamptz"
			    " AND ts <= $9::timestamptz AND (ts < $9::timestamptz OR id < $10::uuid)"
			    " ORDER BY log_events.ts DESC, log_events.id DESC LIMIT $11");
	assert_int_equal(q.nparams, 11);
	assert_string_equal(q.params[0], "api");
	assert_string_equal(q.params[1], "web-1");
	assert_string_equal(q.params[2], "acme");
	assert_string_equal(q.params[3], "3");
	assert_string_equal(q.params[4], "2");
	assert_string_equal(q.params[5], "disk full");
	assert_string_equal(q.params[6], "2024-01-15 14:23:45.123000+00");
	assert_string_equal(q.params[7], "2024-01-16 00:00:00.000000+00");
	assert_string_equal(q.params[8], "2024-01-15 14:23:45.123000+00");
	assert_string_equal(q.params[9], "0190f3a2-7c4e-7d2a-9b1c-0123456789ab");
	assert_string_equal(q.params[10], "11");
	query_sql_release(&q);
}

static void test_values_never_reach_sql(void **state)
{
	const char *kv[] = {"service", "x' OR '1'='1", "text", "$1; DROP TABLE log_events", NULL};
	struct query_filter f;
	struct query_sql q;

	(void)state;
	assert_int_equal(parse(&f, kv, false), 0);
	query_sql_init(&q);
	query_build_list(&f, &q);
	assert_null(strstr(q.sql.buf, "OR '1'"));
	assert_null(strstr(q.sql.buf, "DROP"));
	assert_string_equal(q.params[0], "x' OR '1'='1");
	assert_string_equal(q.params[1], "$1; DROP TABLE log_events");
	query_sql_release(&q);
}

static void test_text_alias_and_empty(void **state)
{
	const char *both[] = {"text", "a", "q", "b", NULL};
	const char *empty[] = {"service", "", "level", "", "from", "", NULL};
	struct query_filter f;

	(void)state;
	assert_int_equal(parse(&f, both, false), 0);
	assert_string_equal(f.text, "a");
	/* Empty values mean "no filter", as an HTML form sends them. */
	assert_int_equal(parse(&f, empty, false), 0);
	assert_string_equal(f.service, "");
	assert_int_equal(f.level_rank, -1);
	assert_false(f.has_from);
}

static void test_bad_parameters(void **state)
{
	char longval[QUERY_MAX_FIELD + 2];
	const char *lv[] = {"host", longval, NULL};

	(void)state;
	refused((const char *[]){"level", "LOUD", NULL}, "level");
	refused((const char *[]){"min_level", "7", NULL}, "min_level");
	refused((const char *[]){"limit", "0", NULL}, "limit");
	refused((const char *[]){"limit", "1001", NULL}, "limit");
	refused((const char *[]){"limit", "ten", NULL}, "limit");
	refused((const char *[]){"limit", "5x", NULL}, "limit");
	refused((const char *[]){"from", "yesterday", NULL}, "from");
	refused((const char *[]){"to", "2024-13-01T00:00:00Z", NULL}, "to");
	refused((const char *[]){"from", "2000", "to", "1000", NULL}, "from");
	refused((const char *[]){"cursor", "garbage", NULL}, "cursor");
	memset(longval, 'h', sizeof(longval) - 1);
	longval[sizeof(longval) - 1] = '\0';
	refused(lv, "host");
}

static void test_stats(void **state)
{
	const char *none[] = {NULL};
	const char *svc[] = {"service", "api", "to", "1705328625123", "limit", "nonsense", NULL};
	struct query_filter f;
	struct query_sql q;

	(void)state;
	/* Without from, the last 24 hours; limit and cursor are not read. */
	assert_int_equal(parse(&f, none, true), 0);
	assert_true(f.has_from);
	assert_int_equal(f.from_us, (T0_MS - 24LL * 3600 * 1000) * 1000);
	assert_false(f.has_to);
	assert_int_equal(parse(&f, svc, true), 0);
	assert_int_equal(f.from_us, (T0_MS - 24LL * 3600 * 1000) * 1000);

	/* From the counts: the rows of the partial minutes at either end, the
	 * minutes up to the first whole hour and after the last, the hours. */
	query_sql_init(&q);
	query_build_stats(&f, &q);
	assert_string_equal(
		q.sql.buf,
		"SELECT level, service, coalesce(sum(n), 0)::bigint, grouping(level, service) FROM ("
		"SELECT level, service, count(*) AS n FROM log_events WHERE ts >= $2::timestamptz "
		"AND ts < $4::timestamptz AND service = $1 GROUP BY level, service UNION ALL "
		"SELECT level, service, n FROM log_events_minute WHERE minute >= $4::timestamptz "
		"AND minute < $5::timestamptz AND service = $1 UNION ALL "
		"SELECT level, service, n FROM log_events_hour WHERE hour >= $5::timestamptz "
		"AND hour < $6::timestamptz AND service = $1 UNION ALL "
		"SELECT level, service, n FROM log_events_minute WHERE minute >= $6::timestamptz "
		"AND minute < $7::timestamptz AND service = $1 UNION ALL "
		"SELECT level, service, count(*) AS n FROM log_events WHERE ts >= $7::timestamptz "
		"AND ts < $3::timestamptz AND service = $1 GROUP BY level, service"
		") AS c GROUP BY GROUPING SETS ((level), (service), ()) ORDER BY 4, 3 DESC");
	assert_int_equal(q.nparams, 7);
	assert_string_equal(q.params[0], "api");
	assert_string_equal(q.params[1], "2024-01-14 14:23:45.123000+00");
	assert_string_equal(q.params[2], "2024-01-15 14:23:45.123000+00");
	assert_string_equal(q.params[3], "2024-01-14 14:24:00.000000+00");
	assert_string_equal(q.params[4], "2024-01-14 15:00:00.000000+00");
	assert_string_equal(q.params[5], "2024-01-15 14:00:00.000000+00");
	assert_string_equal(q.params[6], "2024-01-15 14:23:00.000000+00");
	query_sql_release(&q);

	/* The default day: no upper bound; every field filter the counts have. */
	assert_int_equal(parse(&f, (const char *[]){"tenant", "acme", "level", "warn",
						    "min_level", "info", NULL}, true), 0);
	query_sql_init(&q);
	query_build_stats(&f, &q);
	assert_string_equal(
		q.sql.buf,
		"SELECT level, service, coalesce(sum(n), 0)::bigint, grouping(level, service) FROM ("
		"SELECT level, service, count(*) AS n FROM log_events WHERE ts >= $4::timestamptz "
		"AND ts < $5::timestamptz AND tenant = $1 AND level_rank = $2::smallint AND "
		"level_rank >= $3::smallint GROUP BY level, service UNION ALL "
		"SELECT level, service, n FROM log_events_minute WHERE minute >= $5::timestamptz "
		"AND minute < $6::timestamptz AND tenant = $1 AND level_rank = $2::smallint AND "
		"level_rank >= $3::smallint UNION ALL "
		"SELECT level, service, n FROM log_events_hour WHERE hour >= $6::timestamptz AND "
		"tenant = $1 AND level_rank = $2::smallint AND level_rank >= $3::smallint"
		") AS c GROUP BY GROUPING SETS ((level), (service), ()) ORDER BY 4, 3 DESC");
	assert_int_equal(q.nparams, 6);
	query_sql_release(&q);

	/* Whole hours: only hours. */
	assert_int_equal(parse(&f, (const char *[]){"from", "2024-01-15T10:00:00Z", "to",
						    "2024-01-15T12:00:00Z", NULL}, true), 0);
	query_sql_init(&q);
	query_build_stats(&f, &q);
	assert_non_null(strstr(q.sql.buf, "FROM (SELECT level, service, n FROM log_events_hour "
					  "WHERE hour >= $1::timestamptz AND hour < $2::timestamptz) AS c"));
	assert_int_equal(q.nparams, 2);
	query_sql_release(&q);

	/* Less than an hour: minutes and the rows of the partial ones. */
	assert_int_equal(parse(&f, (const char *[]){"from", "2024-01-15T10:00:30Z", "to",
						    "2024-01-15T10:30:00Z", NULL}, true), 0);
	query_sql_init(&q);
	query_build_stats(&f, &q);
	assert_non_null(strstr(q.sql.buf, "FROM (SELECT level, service, count(*) AS n FROM "
					  "log_events WHERE ts >= $1::timestamptz AND ts < "
					  "$3::timestamptz GROUP BY level, service UNION ALL SELECT "
					  "level, service, n FROM log_events_minute WHERE minute >= "
					  "$3::timestamptz AND minute < $2::timestamptz) AS c"));
	query_sql_release(&q);

	/* Within one minute: the rows. */
	assert_int_equal(parse(&f, (const char *[]){"from", "2024-01-15T10:00:10Z", "to",
						    "2024-01-15T10:01:10Z", NULL}, true), 0);
	query_sql_init(&q);
	query_build_stats(&f, &q);
	assert_non_null(strstr(q.sql.buf, "FROM (SELECT level, service, count(*) AS n FROM "
					  "log_events WHERE ts >= $1::timestamptz AND ts < "
					  "$2::timestamptz GROUP BY level, service) AS c"));
	query_sql_release(&q);

	/* host and text are not in the counts: the rows, as before. */
	assert_int_equal(parse(&f, (const char *[]){"host", "h1", NULL}, true), 0);
	assert_false(query_stats_from_counts(&f));
	query_sql_init(&q);
	query_build_stats(&f, &q);
	assert_string_equal(q.sql.buf,
			    "SELECT level, service, count(*)::bigint, grouping(level, service) FROM "
			    "log_events WHERE true AND host = $1 AND ts >= $2::timestamptz GROUP BY "
			    "GROUPING SETS ((level), (service), ()) ORDER BY 4, 3 DESC");
	query_sql_release(&q);
	assert_int_equal(parse(&f, (const char *[]){"text", "disk", NULL}, true), 0);
	assert_false(query_stats_from_counts(&f));

	/* The default day before an early 'to' stops at year 1. */
	assert_int_equal(parse(&f, (const char *[]){"to", "0001-01-01T12:00:00Z", NULL}, true), 0);
	assert_int_equal(f.from_us, QUERY_MIN_US);
}

static void test_plan_race(void **state)
{
	struct query_filter f;

	(void)state;
	assert_int_equal(parse(&f, (const char *[]){NULL}, false), 0);
	assert_false(query_needs_plan_race(&f));
	assert_int_equal(parse(&f, (const char *[]){"service", "a", "from", "0", NULL}, false), 0);
	assert_false(query_needs_plan_race(&f));
	assert_int_equal(parse(&f, (const char *[]){"q", "word", NULL}, false), 0);
	assert_true(query_needs_plan_race(&f));
	assert_int_equal(parse(&f, (const char *[]){"service", "a", "host", "b", NULL}, false), 0);
	assert_true(query_needs_plan_race(&f));
	assert_int_equal(parse(&f, (const char *[]){"tenant", "a", "min_level", "warn", NULL},
			       false),
			 0);
	assert_true(query_needs_plan_race(&f));
}

static void test_probe(void **state)
{
	const char *kv[] = {"text", "disk", "limit", "10",
			    "cursor", "1705328625123000:0190f3a2-7c4e-7d2a-9b1c-0123456789ab", NULL};
	struct query_filter f;
	struct query_sql q;

	(void)state;
	assert_int_equal(parse(&f, kv, false), 0);
	assert_int_equal(query_probe_cap(&f), 2000);
	query_sql_init(&q);
	query_build_probe(&f, &q);
	assert_string_equal(q.sql.buf,
			    "SELECT count(*) FROM (SELECT 1 FROM log_events WHERE true"
			    " AND to_tsvector('simple', message) @@ plainto_tsquery('simple', $1)"
			    " AND ts <= $2::timestamptz AND (ts < $2::timestamptz OR id < $3::uuid)"
			    " LIMIT $4) AS m");
	assert_string_equal(q.params[3], "2000");
	query_sql_release(&q);
	f.limit = 1000;
	assert_int_equal(query_probe_cap(&f), 2002);
}

static void test_walk(void **state)
{
	const char *kv[] = {"text", "disk", "level", "warn", "service", "api", "limit", "10",
			    "from", "1705328625000",
			    "cursor", "1705328625123000:0190f3a2-7c4e-7d2a-9b1c-0123456789ab", NULL};
	struct query_filter f;
	struct query_sql q;

	(void)state;
	assert_int_equal(parse(&f, kv, false), 0);
	assert_int_equal(query_walk_rows(&f), 1100);
	query_sql_init(&q);
	query_build_walk(&f, &q);
	/* The service drives the inner walk (with the time range and the
	 * cursor); level and text filter the rows it read. */
	assert_string_equal(q.sql.buf,
			    "SELECT id::text, (extract(epoch FROM ts) * 1000000)::bigint, "
			    "(extract(epoch FROM received_at) * 1000000)::bigint, "
			    "(extract(epoch FROM stored_at) * 1000000)::bigint, level, service, host, "
			    "source_ip, tenant, correlation_id, message, attributes::text, "
			    "enrichment::text, enrichment_status, trace_id, span_id"
			    " FROM (SELECT * FROM log_events WHERE true AND service = $1"
			    " AND ts >= $2::timestamptz"
			    " AND ts <= $3::timestamptz AND (ts < $3::timestamptz OR id < $4::uuid)"
			    " ORDER BY log_events.ts DESC, log_events.id DESC LIMIT $5) AS log_events"
			    " WHERE true AND level_rank = $6::smallint"
			    " AND to_tsvector('simple', message) @@ plainto_tsquery('simple', $7)"
			    " AND message ILIKE ALL ($8::text[])"
			    " ORDER BY log_events.ts DESC, log_events.id DESC LIMIT $9");
	assert_int_equal(q.nparams, 9);
	assert_string_equal(q.params[0], "api");
	assert_string_equal(q.params[4], "1100");
	assert_string_equal(q.params[5], "3");
	assert_string_equal(q.params[6], "disk");
	assert_string_equal(q.params[7], "{%disk%}");
	assert_string_equal(q.params[8], "11");
	query_sql_release(&q);

	/* The runs of ASCII letters and digits of the text, as they are. */
	assert_int_equal(parse(&f, (const char *[]){"text", "Disk-full, \xc3\x9c" "ber_x 50%", NULL},
			       false),
			 0);
	query_sql_init(&q);
	query_build_walk(&f, &q);
	assert_string_equal(q.params[q.nparams - 2], "{%Disk%,%full%,%ber%,%x%,%50%}");
	query_sql_release(&q);
	/* None: no such test. */
	assert_int_equal(parse(&f, (const char *[]){"text", "\xc3\x9c--", NULL}, false), 0);
	query_sql_init(&q);
	query_build_walk(&f, &q);
	assert_null(strstr(q.sql.buf, "ILIKE"));
	query_sql_release(&q);

	/* Text alone walks the newest rows; the budget has a ceiling. */
	assert_int_equal(parse(&f, (const char *[]){"q", "disk", "limit", "1000", NULL}, false), 0);
	assert_int_equal(query_walk_rows(&f), QUERY_WALK_MAX);
	query_sql_init(&q);
	query_build_walk(&f, &q);
	assert_non_null(strstr(q.sql.buf, "FROM (SELECT * FROM log_events WHERE true ORDER BY"));
	query_sql_release(&q);

	/* A trace id drives before a service, a host before a level or a tenant. */
	assert_int_equal(parse(&f, (const char *[]){"tenant", "t", "level", "error", "host", "h",
						  "trace_id", "0123456789abcdef0123456789abcdef",
						  "service", "s", NULL},
			       false),
			 0);
	query_sql_init(&q);
	query_build_walk(&f, &q);
	assert_non_null(strstr(q.sql.buf, "FROM (SELECT * FROM log_events WHERE true AND "
					  "trace_id = $1 ORDER BY"));
	query_sql_release(&q);
	f.trace_id[0] = '\0';
	f.service[0] = '\0';
	query_sql_init(&q);
	query_build_walk(&f, &q);
	assert_non_null(strstr(q.sql.buf, "WHERE true AND host = $1 ORDER BY"));
	query_sql_release(&q);
	f.host[0] = '\0';
	query_sql_init(&q);
	query_build_walk(&f, &q);
	assert_non_null(strstr(q.sql.buf, "WHERE true AND level_rank = $1::smallint ORDER BY"));
	assert_non_null(strstr(q.sql.buf, "AS log_events WHERE true AND tenant = $3 ORDER BY"));
	query_sql_release(&q);
}

static void test_estimate(void **state)
{
	struct query_filter f;
	struct query_sql q;

	(void)state;
	assert_int_equal(parse(&f, (const char *[]){"text", "disk", "service", "api", NULL}, false),
			 0);
	query_sql_init(&q);
	query_build_estimate(&f, &q);
	assert_string_equal(q.sql.buf,
			    "EXPLAIN SELECT 1 FROM log_events WHERE true AND service = $1"
			    " AND to_tsvector('simple', message) @@ plainto_tsquery('simple', $2)");
	query_sql_release(&q);
	query_sql_init(&q);
	query_build_estimate_walked(&f, &q);
	assert_string_equal(q.sql.buf, "EXPLAIN SELECT 1 FROM log_events WHERE true AND service = $1");
	query_sql_release(&q);
	assert_true(query_estimate_rows("Gather  (cost=1000.00..759751.24 rows=414574 width=4)") ==
		    414574.0);
	assert_true(query_estimate_rows("Append  (cost=0.00..5860.43 rows=1392 width=4)") == 1392.0);
	assert_true(query_estimate_rows("Result  (cost=0.00..0.00 rows=0 width=0)") == 0.0);
	assert_true(query_estimate_rows("no plan") < 0);
	assert_true(query_estimate_rows(NULL) < 0);

	/* Walk first: many matches, dense enough for a page in 5,100 rows. */
	assert_true(query_walk_worth(414574, 1e7, 50));    /* a common word, 4 % */
	assert_true(query_walk_worth(150987, 1e7, 50));    /* a service and a level, 1.5 % */
	assert_false(query_walk_worth(50009, 1e7, 50));    /* the 0.5 % default */
	assert_false(query_walk_worth(1392, 1e7, 50));     /* rare */
	assert_true(query_walk_worth(150, 450, 1));        /* a third of a small table */
	assert_false(query_walk_worth(4, 450, 1));         /* 4 of them: 1.8 in 200 */
	assert_true(query_walk_worth(-1, 1e7, 50));        /* no estimate */
	assert_true(query_walk_worth(5000, -1, 50));       /* no total */
	assert_false(query_walk_worth(414574, 1e7, 1000)); /* 4 % of 20,000 < 1001 */
}

static void test_get(void **state)
{
	struct query_sql q;

	(void)state;
	query_sql_init(&q);
	query_build_get("0190f3a2-7c4e-7d2a-9b1c-0123456789ab", NULL, &q);
	assert_non_null(strstr(q.sql.buf, "WHERE id = $1::uuid ORDER BY"));
	assert_int_equal(q.nparams, 1);
	query_sql_release(&q);

	query_sql_init(&q);
	query_build_get("0190f3a2-7c4e-7d2a-9b1c-0123456789ab", "acme", &q);
	assert_non_null(strstr(q.sql.buf, "WHERE id = $1::uuid AND tenant = $2 ORDER BY"));
	assert_int_equal(q.nparams, 2);
	assert_string_equal(q.params[1], "acme");
	query_sql_release(&q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cursor_roundtrip),
		cmocka_unit_test(test_cursor_garbage),
		cmocka_unit_test(test_cursor_out_of_range),
		cmocka_unit_test(test_times),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_every_filter),
		cmocka_unit_test(test_values_never_reach_sql),
		cmocka_unit_test(test_text_alias_and_empty),
		cmocka_unit_test(test_bad_parameters),
		cmocka_unit_test(test_stats),
		cmocka_unit_test(test_plan_race),
		cmocka_unit_test(test_probe),
		cmocka_unit_test(test_walk),
		cmocka_unit_test(test_estimate),
		cmocka_unit_test(test_get),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
