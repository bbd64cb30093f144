/* test_store.c - COPY escaping, event to COPY row, batch ids, and error kinds. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "../store.h"

#include "logpipe/banned.h"
#include "logpipe/json.h"

static const struct store_origin origin = {
	.topic = "enriched-logs-complete", .partition = 3, .offset = 42,
	.default_status = "complete",
};

static void escaped_is(const char *in, const char *want)
{
	struct lp_buf b = LP_BUF_INIT;

	store_copy_escape(&b, in, in ? strlen(in) : 0);
	assert_string_equal(b.buf, want);
	lp_buf_release(&b);
}

static void test_escape(void **state)
{
	(void)state;
	escaped_is("plain text", "plain text");
	escaped_is("", "");
	escaped_is(NULL, "\\N");
	escaped_is("a\\b", "a\\\\b");
	escaped_is("line1\nline2", "line1\\nline2");
	escaped_is("cr\rhere", "cr\\rhere");
	escaped_is("tab\there", "tab\\there");
	escaped_is("\\N", "\\\\N");
	escaped_is("\\.", "\\\\.");
	escaped_is("\t\n\r\\", "\\t\\n\\r\\\\");
	escaped_is("ünïcödé ✓", "ünïcödé ✓");
}

/* Formats text as a row; returns the line (static) or NULL with err. */
static char line[8192];
static char rowerr[256];

static const char *row_of(const char *text, const struct store_origin *o)
{
	struct lp_buf b = LP_BUF_INIT;
	json_t *ev = lp_json_loads(text, JSON_DECODE_ANY, NULL);
	int rc;

	assert_non_null(ev);
	lp_buf_adds(&b, "before|");
	rowerr[0] = '\0';
	rc = store_format_row(ev, o, &b, rowerr, sizeof(rowerr));
	json_decref(ev);
	if (rc < 0) {
		assert_int_equal(rc, -EINVAL);
		/* A refused event leaves the buffer as it was. */
		assert_string_equal(b.buf, "before|");
		lp_buf_release(&b);
		return NULL;
	}
	assert_true(strlen(b.buf) < sizeof(line));
	memcpy(line, b.buf + 7, b.len - 7 + 1);
	lp_buf_release(&b);
	return line;
}

static void test_row_full(void **state)
{
	const char *row;

	(void)state;
	row = row_of("{\"id\":\"0190f3a2-7c4e-7d2a-9b1c-0123456789ab\",\"schema_version\":1,"
		     "\"timestamp\":\"2024-01-15T14:23:45.123Z\","
		     "\"received_at\":\"2024-01-15T14:23:46.000+00:00\",\"level\":\"WARN\","
		     "\"message\":\"disk\\tfull\\non /var\\\\log\",\"service\":\"api\","
		     "\"host\":\"web-1\",\"source_ip\":\"10.0.0.1\",\"tenant\":\"acme\","
		     "\"correlation_id\":\"c-1\",\"attributes\":{\"k\":\"v\"},"
		     "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"span_id\":\"00f067aa0ba902b7\","
		     "\"enrichment\":{\"status\":\"partial\",\"team\":\"core\"}}",
		     &origin);
	assert_non_null(row);
	assert_string_equal(row,
			    "0190f3a2-7c4e-7d2a-9b1c-0123456789ab\t2024-01-15T14:23:45.123Z\t"
			    "2024-01-15T14:23:46.000Z\tWARN\t3\tapi\tweb-1\t10.0.0.1\tacme\tc-1\t"
			    "disk\\tfull\\non /var\\\\log\t{\"k\":\"v\"}\t"
			    "{\"status\":\"partial\",\"team\":\"core\"}\tpartial\t"
			    "enriched-logs-complete\t3\t42\t4bf92f3577b34da6a3ce929d0e0e4736\t"
			    "00f067aa0ba902b7\n");
}

static void test_row_minimal(void **state)
{
	const char *row;

	(void)state;
	/* No level means INFO; optional fields are NULL; the status comes from
	 * the topic; an offset time is rewritten in UTC. */
	row = row_of("{\"id\":\"0190F3A2-7C4E-7D2A-9B1C-0123456789AB\","
		     "\"timestamp\":\"2024-01-15T16:23:45+02:00\",\"message\":\"\","
		     "\"service\":\"s\"}",
		     &origin);
	assert_non_null(row);
	assert_string_equal(row, "0190F3A2-7C4E-7D2A-9B1C-0123456789AB\t2024-01-15T14:23:45.000Z\t"
				 "\\N\tINFO\t2\ts\t\\N\t\\N\t\\N\t\\N\t\t{}\t\\N\tcomplete\t"
				 "enriched-logs-complete\t3\t42\t\\N\t\\N\n");
}

static void test_row_level_and_extras(void **state)
{
	const char *row;
	size_t tabs = 0;

	(void)state;
	/* Unknown top-level keys move under attributes; an attribute of the
	 * same name wins; JSON with backslashes is escaped for COPY. */
	row = row_of("{\"id\":\"0190f3a2-7c4e-7d2a-9b1c-0123456789ab\","
		     "\"timestamp\":\"2024-01-15T14:23:45.123Z\",\"level\":\"warning\","
		     "\"message\":\"m\",\"service\":\"s\",\"extra\":\"x\",\"dup\":1,"
		     "\"attributes\":{\"dup\":2,\"path\":\"C:\\\\tmp\"},\"host\":null}",
		     &origin);
	assert_non_null(row);
	for (const char *p = row; *p; p++)
		tabs += *p == '\t';
	assert_int_equal(tabs, STORE_NCOLUMNS - 1);
	assert_non_null(strstr(row, "\tWARN\t3\t"));
	assert_non_null(strstr(row, "\t{\"dup\":2,\"path\":\"C:\\\\\\\\tmp\",\"extra\":\"x\"}\t"));
}

static void refused(const char *text, const char *want_err_part)
{
	assert_null(row_of(text, &origin));
	if (!strstr(rowerr, want_err_part))
		fail_msg("error '%s' does not mention '%s'", rowerr, want_err_part);
}

#define ID "\"id\":\"0190f3a2-7c4e-7d2a-9b1c-0123456789ab\""
#define TS "\"timestamp\":\"2024-01-15T14:23:45.123Z\""

static void test_row_refused(void **state)
{
	(void)state;
	refused("[1,2]", "event");
	refused("{" TS ",\"message\":\"m\",\"service\":\"s\"}", "id");
	refused("{\"id\":\"not-a-uuid\"," TS ",\"message\":\"m\",\"service\":\"s\"}", "id");
	refused("{" ID ",\"message\":\"m\",\"service\":\"s\"}", "timestamp");
	refused("{" ID ",\"timestamp\":\"yesterday\",\"message\":\"m\",\"service\":\"s\"}",
		"timestamp");
	refused("{" ID ",\"timestamp\":1705328625123,\"message\":\"m\",\"service\":\"s\"}",
		"timestamp");
	refused("{" ID "," TS ",\"level\":\"LOUD\",\"message\":\"m\",\"service\":\"s\"}", "level");
	refused("{" ID "," TS ",\"service\":\"s\"}", "message");
	refused("{" ID "," TS ",\"message\":\"m\"}", "service");
	refused("{" ID "," TS ",\"message\":\"m\",\"service\":\"\"}", "service");
	refused("{" ID "," TS ",\"message\":7,\"service\":\"s\"}", "message");
	refused("{" ID "," TS ",\"message\":\"m\",\"service\":\"s\",\"host\":5}", "host");
	refused("{" ID "," TS ",\"message\":\"m\",\"service\":\"s\",\"attributes\":[1]}",
		"attributes");
	refused("{" ID "," TS ",\"message\":\"m\",\"service\":\"s\",\"enrichment\":\"x\"}",
		"enrichment");
}

/* Two COPY lines (or more) as the consumer lays them out. */
static void payload_of(struct lp_buf *b, const char *const *texts)
{
	for (; *texts; texts++) {
		json_t *ev = lp_json_loads(*texts, 0, NULL);
		char err[128];

		assert_non_null(ev);
		assert_int_equal(store_format_row(ev, &origin, b, err, sizeof(err)), 0);
		json_decref(ev);
	}
}

static void test_scan_batch(void **state)
{
	const char *fresh[] = {
		"{" ID "," TS ",\"message\":\"a\",\"service\":\"s\"}",
		"{\"id\":\"0190F3A2-7C4E-7D2A-9B1C-0123456789AC\","
		"\"timestamp\":\"2024-01-16T10:00:00Z\",\"message\":\"b\",\"service\":\"s\"}",
		NULL,
	};
	const char *twice[] = {
		"{" ID "," TS ",\"message\":\"a\",\"service\":\"s\"}",
		/* the same id in upper case, at another time */
		"{\"id\":\"0190F3A2-7C4E-7D2A-9B1C-0123456789AB\","
		"\"timestamp\":\"2024-01-16T10:00:00Z\",\"message\":\"b\",\"service\":\"s\"}",
		NULL,
	};
	struct lp_buf b = LP_BUF_INIT, ids = LP_BUF_INIT;
	char from[32], to[32];

	(void)state;
	payload_of(&b, fresh);
	assert_true(store_scan_batch(b.buf, b.len, 2, &ids, from, to));
	assert_string_equal(ids.buf, "{0190f3a2-7c4e-7d2a-9b1c-0123456789ab,"
				     "0190f3a2-7c4e-7d2a-9b1c-0123456789ac}");
	assert_string_equal(from, "2024-01-14T14:23:45.123Z");
	assert_string_equal(to, "2024-01-17T10:00:00.000Z");
	lp_buf_reset(&ids);
	/* Fewer lines than announced: not ours to trust. */
	assert_false(store_scan_batch(b.buf, b.len, 3, &ids, from, to));
	lp_buf_reset(&ids);
	assert_false(store_scan_batch("garbage\n", 8, 1, &ids, from, to));
	lp_buf_reset(&ids);
	lp_buf_reset(&b);
	payload_of(&b, twice);
	assert_false(store_scan_batch(b.buf, b.len, 2, &ids, from, to));
	lp_buf_release(&ids);
	lp_buf_release(&b);
}

static void test_count_keys(void **state)
{
	const char *evs[] = {
		"{" ID "," TS ",\"message\":\"a\",\"service\":\"s\\tx\",\"level\":\"warning\","
		"\"tenant\":\"acme\",\"host\":\"h\"}",
		/* no tenant: \N, as COPY reads back NULL */
		"{\"id\":\"0190F3A2-7C4E-7D2A-9B1C-0123456789AC\","
		"\"timestamp\":\"2024-01-16T10:00:00Z\",\"message\":\"b\",\"service\":\"s\"}",
		/* the same minute and key as the first, another host */
		"{\"id\":\"0190F3A2-7C4E-7D2A-9B1C-0123456789AD\","
		"\"timestamp\":\"2024-01-15T14:23:59.999Z\",\"message\":\"c\",\"service\":\"s\\tx\","
		"\"level\":\"WARN\",\"tenant\":\"acme\",\"host\":\"other\"}",
		/* the minute before, and before 1970 (minutes round down) */
		"{\"id\":\"0190F3A2-7C4E-7D2A-9B1C-0123456789AE\","
		"\"timestamp\":\"2024-01-15T14:22:59.999Z\",\"message\":\"d\",\"service\":\"s\"}",
		"{\"id\":\"0190F3A2-7C4E-7D2A-9B1C-0123456789AF\","
		"\"timestamp\":\"1969-12-31T23:59:30.5Z\",\"message\":\"e\",\"service\":\"s\"}",
		NULL,
	};
	struct lp_buf b = LP_BUF_INIT, keys = LP_BUF_INIT;
	const char *second;

	(void)state;
	payload_of(&b, evs);
	assert_int_equal(store_count_keys(b.buf, b.len, 5, &keys), 0);
	assert_string_equal(keys.buf, "1969-12-31T23:59:00.000Z\t\\N\ts\tINFO\t2\t1\n"
				      "2024-01-15T14:22:00.000Z\t\\N\ts\tINFO\t2\t1\n"
				      "2024-01-15T14:23:00.000Z\tacme\ts\\tx\tWARN\t3\t2\n"
				      "2024-01-16T10:00:00.000Z\t\\N\ts\tINFO\t2\t1\n");
	/* A sub-range of a batch is counted on its own. */
	lp_buf_reset(&keys);
	second = strchr(b.buf, '\n') + 1;
	assert_int_equal(store_count_keys(second, b.len - (size_t)(second - b.buf), 1, &keys), 0);
	assert_string_equal(keys.buf, "2024-01-16T10:00:00.000Z\t\\N\ts\tINFO\t2\t1\n");
	/* Not our format, or fewer lines than announced. */
	lp_buf_reset(&keys);
	assert_int_equal(store_count_keys("a\tb\tc\n", 6, 1, &keys), -EINVAL);
	assert_int_equal(store_count_keys(b.buf, b.len, 6, &keys), -EINVAL);
	assert_int_equal(keys.len, 0);
	lp_buf_release(&keys);
	lp_buf_release(&b);
}

static void test_ids_overlap(void **state)
{
	const char *first[] = {
		"{" ID "," TS ",\"message\":\"a\",\"service\":\"s\"}",
		"{\"id\":\"0190F3A2-7C4E-7D2A-9B1C-0123456789AC\","
		"\"timestamp\":\"2024-01-16T10:00:00Z\",\"message\":\"b\",\"service\":\"s\"}",
		NULL,
	};
	const char *other[] = {
		"{\"id\":\"0190f3a2-7c4e-7d2a-9b1c-0123456789ad\","
		"\"timestamp\":\"2024-01-16T10:00:00Z\",\"message\":\"c\",\"service\":\"s\"}",
		NULL,
	};
	const char *again[] = {
		"{\"id\":\"0190f3a2-7c4e-7d2a-9b1c-0123456789ae\","
		"\"timestamp\":\"2024-01-16T10:00:00Z\",\"message\":\"d\",\"service\":\"s\"}",
		/* the second id of first, in lower case, at another time */
		"{\"id\":\"0190f3a2-7c4e-7d2a-9b1c-0123456789ac\","
		"\"timestamp\":\"2024-01-17T10:00:00Z\",\"message\":\"e\",\"service\":\"s\"}",
		NULL,
	};
	struct lp_buf a = LP_BUF_INIT, b = LP_BUF_INIT, c = LP_BUF_INIT;

	(void)state;
	payload_of(&a, first);
	payload_of(&b, other);
	payload_of(&c, again);
	assert_false(store_ids_overlap(a.buf, a.len, 2, b.buf, b.len, 1));
	assert_true(store_ids_overlap(a.buf, a.len, 2, c.buf, c.len, 2));
	assert_true(store_ids_overlap(c.buf, c.len, 2, a.buf, a.len, 2));
	/* Nothing before: no overlap; an unreadable payload: assume one. */
	assert_false(store_ids_overlap(a.buf, 0, 0, b.buf, b.len, 1));
	assert_true(store_ids_overlap("garbage\n", 8, 1, b.buf, b.len, 1));
	lp_buf_release(&a);
	lp_buf_release(&b);
	lp_buf_release(&c);
}

static void test_classify(void **state)
{
	(void)state;
	assert_int_equal(store_classify(NULL, true), STORE_UNAVAILABLE);
	assert_int_equal(store_classify("22P02", false), STORE_UNAVAILABLE);
	assert_int_equal(store_classify("08006", true), STORE_UNAVAILABLE);
	assert_int_equal(store_classify("57P01", true), STORE_UNAVAILABLE);
	assert_int_equal(store_classify("53300", true), STORE_UNAVAILABLE);
	assert_int_equal(store_classify("42P01", true), STORE_UNAVAILABLE);
	assert_int_equal(store_classify("3D000", true), STORE_UNAVAILABLE);
	assert_int_equal(store_classify("28P01", true), STORE_UNAVAILABLE);
	assert_int_equal(store_classify("25006", true), STORE_UNAVAILABLE);
	assert_int_equal(store_classify("40001", true), STORE_TRANSIENT);
	assert_int_equal(store_classify("40P01", true), STORE_TRANSIENT);
	assert_int_equal(store_classify("55P03", true), STORE_TRANSIENT);
	assert_int_equal(store_classify("57014", true), STORE_TRANSIENT);
	assert_int_equal(store_classify("22P02", true), STORE_REJECTED);
	assert_int_equal(store_classify("22021", true), STORE_REJECTED);
	assert_int_equal(store_classify("23514", true), STORE_REJECTED);
	assert_int_equal(store_classify("54000", true), STORE_REJECTED);
	assert_int_equal(store_classify("XX000", true), STORE_REJECTED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape),
		cmocka_unit_test(test_row_full),
		cmocka_unit_test(test_row_minimal),
		cmocka_unit_test(test_row_level_and_extras),
		cmocka_unit_test(test_row_refused),
		cmocka_unit_test(test_scan_batch),
		cmocka_unit_test(test_count_keys),
		cmocka_unit_test(test_ids_overlap),
		cmocka_unit_test(test_classify),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
