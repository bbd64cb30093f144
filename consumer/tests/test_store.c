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
#include "../tail.h"

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

/* ---- the fast path: byte for byte the full path's line ------------------- */

static unsigned tails_compared; /* records whose tail both paths made */

/* The live-tail record made from the scan is tail_rec_new's, when the
 * scan makes one. */
static void same_tail(const char *text, const struct lp_event_stored *v, int rank,
		      bool as_stored, struct lp_buf *tmp)
{
	struct tail_rec *fast = tail_rec_scanned(text, strlen(text), v, rank, as_stored, tmp);
	struct tail_rec *full;
	json_t *ev;

	if (!fast)
		return;
	ev = lp_json_loads(text, 0, NULL);
	assert_non_null(ev);
	full = tail_rec_new(ev, text, strlen(text));
	assert_non_null(full);
	assert_int_equal(fast->json_len, full->json_len);
	assert_string_equal(fast->json, full->json);
	assert_int_equal(fast->level_rank, full->level_rank);
	assert_string_equal(fast->service, full->service);
	assert_string_equal(fast->host, full->host);
	assert_string_equal(fast->tenant, full->tenant);
	assert_string_equal(fast->trace_id, full->trace_id);
	assert_string_equal(fast->message, full->message);
	tails_compared++;
	free(fast);
	free(full);
	json_decref(ev);
}

/* Runs both paths over text; when the fast one accepts, the full one must
 * too and write the same bytes; when it declines, out is untouched.
 * Returns the fast path's result. */
static int both_paths(const char *text, const struct store_origin *o)
{
	struct lp_buf full = LP_BUF_INIT, fast = LP_BUF_INIT, scratch[3];
	struct lp_event_stored v;
	json_error_t je;
	json_t *ev = lp_json_loadb(text, strlen(text), 0, &je);
	char err[256];
	int rf = -EINVAL, rc, rank = -1;
	bool as_stored;

	for (int i = 0; i < 3; i++)
		lp_buf_init(&scratch[i], 16);
	lp_buf_adds(&fast, "prefix\n");
	if (ev)
		rf = store_format_row(ev, o, &full, err, sizeof(err));
	rc = store_format_fast(text, strlen(text), o, &fast, scratch, &v, &rank, &as_stored);
	if (rc == 0) {
		if (rf != 0 || strcmp(fast.buf + 7, full.buf) != 0)
			fail_msg("fast path differs for %s\n full: %s\n fast: %s", text, full.buf,
				 fast.buf + 7);
		assert_in_range(rank, 0, 5);
		same_tail(text, &v, rank, as_stored, &scratch[2]);
	} else {
		assert_int_equal(rc, -ENOTSUP);
		assert_string_equal(fast.buf, "prefix\n");
	}
	json_decref(ev);
	lp_buf_release(&full);
	lp_buf_release(&fast);
	for (int i = 0; i < 3; i++)
		lp_buf_release(&scratch[i]);
	return rc;
}

#define FUUID "\"id\":\"0190f1e2-3c4d-7e5f-8a9b-0c1d2e3f4a5b\""
#define FTS "\"timestamp\":\"2026-12-07T05:00:00.123Z\""

static void test_fast_same_line(void **state)
{
	static const char *const accepted[] = {
		/* Every field, as the enricher writes it. */
		"{" FUUID ",\"schema_version\":1," FTS ",\"received_at\":\"2026-12-07T05:00:01Z\","
		"\"level\":\"WARN\",\"message\":\"user login failed\",\"service\":\"auth\","
		"\"host\":\"h1\",\"source_ip\":\"10.0.0.1\",\"tenant\":\"acme\","
		"\"correlation_id\":\"c-1\",\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\","
		"\"span_id\":\"00f067aa0ba902b7\",\"attributes\":{\"user\":\"bob\",\"n\":42,"
		"\"ok\":true,\"nested\":{\"a\":[1,2,{\"b\":null}],\"e\":{}}},\"enrichment\":"
		"{\"status\":\"complete\",\"geo\":{\"country\":\"DE\"},\"owner\":\"team-a\"}}",
		/* The least. */
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\"}",
		"{" FUUID "," FTS ",\"message\":\"\",\"service\":\"s\"}",
		/* Members without a column go under attributes, after its own;
		 * an attribute of the same name wins. */
		"{\"extra\":1," FUUID "," FTS ",\"user\":\"top\",\"message\":\"m\",\"service\":\"s\","
		"\"attributes\":{\"user\":\"attr\",\"z\":[]},\"list\":[1,\"x\",null],\"f\":false,"
		"\"schema_version\":1,\"o\":{\"k\":{\"k\":\"v\"}}}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"only\":\"top\"}",
		/* Unicode. */
		"{" FUUID "," FTS ",\"message\":\"h\xc3\xa9llo w\xc3\xb6rld \xe6\x97\xa5\xe6\x9c\xac "
		"\xf0\x9f\x98\x80\",\"service\":\"svc-\xc3\xbc\",\"attributes\":{\"\xc3\xa9\":"
		"\"\xe2\x82\xac\"}}",
		/* Escapes, in columns and in JSON. */
		"{" FUUID "," FTS ",\"message\":\"tab\\there\\nnewline \\\\ back \\\"q\\\" \\/sl "
		"\\b\\f\\r end\",\"service\":\"s\\\\x\",\"host\":\"h\\tx\",\"tenant\":\"t\\\"\","
		"\"attributes\":{\"k\":\"a\\tb\\\\c\\/d\\n\\b\\f\\r\\\"\"},\"top\":\"\\/\\n\","
		"\"enrichment\":{\"status\":\"par\\ttial\",\"x\":\"\\\\\"}}",
		"{" FUUID "," FTS ",\"message\":\"\\\\N\",\"service\":\"s\",\"span_id\":\"\\\\\"}",
		/* Raw bytes COPY leaves alone. */
		"{" FUUID "," FTS ",\"message\":\"del\x7f ~\",\"service\":\"s\"}",
		/* White space anywhere JSON allows it. */
		" \n{ \"id\" : \"0190f1e2-3c4d-7e5f-8a9b-0c1d2e3f4a5b\" ,\r\n\t" FTS " , "
		"\"message\" :\"m  x\", \"service\":\"s\" ,\"attributes\" : { \"a\" : [ 1 , 2 ] ,"
		" \"b\" : { } } , \"enrichment\" : { \"status\" : \"complete\" } } \n",
		/* Levels as spelled, nulls, the enrichment's status. */
		"{" FUUID "," FTS ",\"level\":\"warning\",\"message\":\"m\",\"service\":\"s\"}",
		"{" FUUID "," FTS ",\"level\":\"error\",\"message\":\"m\",\"service\":\"s\"}",
		"{" FUUID "," FTS ",\"level\":\"Fatal\",\"message\":\"m\",\"service\":\"s\"}",
		"{" FUUID "," FTS ",\"level\":null,\"host\":null,\"received_at\":null,"
		"\"attributes\":null,\"enrichment\":null,\"trace_id\":null,\"message\":\"m\","
		"\"service\":\"s\",\"n\":null}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"enrichment\":{}}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"enrichment\":{\"status\":5}}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"enrichment\":"
		"{\"status\":null,\"geo\":[{\"a\":1}]}}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"enrichment\":"
		"{\"status\":\"partial\"}}",
		/* Times: edges, offsets, fractions, upper-case id. */
		"{\"id\":\"0190F1E2-3C4D-7E5F-8A9B-0C1D2E3F4A5B\",\"timestamp\":"
		"\"1970-01-01T00:00:00Z\",\"message\":\"m\",\"service\":\"s\"}",
		"{" FUUID ",\"timestamp\":\"9999-12-31T23:59:59.999Z\",\"message\":\"m\","
		"\"service\":\"s\"}",
		"{" FUUID ",\"timestamp\":\"2026-12-07T10:30:00.123456789+05:30\",\"received_at\":"
		"\"2026-12-07T05:00:00.5-01:00\",\"message\":\"m\",\"service\":\"s\"}",
		/* Integers jansson writes back the same. */
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"attributes\":"
		"{\"big\":123456789012345678,\"neg\":-42,\"zero\":0,\"t\":true}}",
	};
	static const char *const declined[] = {
		/* Valid, but not certainly the same: the full path stores them. */
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"attributes\":{\"r\":1.5}}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"attributes\":{\"e\":1e5}}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"attributes\":{\"z\":-0}}",
		"{" FUUID "," FTS ",\"message\":\"\\u00e9\",\"service\":\"s\"}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"a\\u0062\":1}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"attributes\":"
		"{\"k\":1,\"k\":2}}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"message\":\"n\",\"service\":\"s\"}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"enrichment\":"
		"{\"status\":\"a\",\"status\":\"b\"}}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"attributes\":"
		"{\"big\":1234567890123456789}}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"deep\":"
		"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
		/* Not storable: the full path words why. */
		"{" FTS ",\"message\":\"m\",\"service\":\"s\"}",
		"{\"id\":\"nope\"," FTS ",\"message\":\"m\",\"service\":\"s\"}",
		"{\"id\":7," FTS ",\"message\":\"m\",\"service\":\"s\"}",
		"{" FUUID ",\"message\":\"m\",\"service\":\"s\"}",
		"{" FUUID ",\"timestamp\":\"yesterday\",\"message\":\"m\",\"service\":\"s\"}",
		"{" FUUID ",\"timestamp\":12345,\"message\":\"m\",\"service\":\"s\"}",
		"{" FUUID "," FTS ",\"received_at\":\"later\",\"message\":\"m\",\"service\":\"s\"}",
		"{" FUUID "," FTS ",\"level\":\"LOUD\",\"message\":\"m\",\"service\":\"s\"}",
		"{" FUUID "," FTS ",\"level\":\"\",\"message\":\"m\",\"service\":\"s\"}",
		"{" FUUID "," FTS ",\"service\":\"s\"}",
		"{" FUUID "," FTS ",\"message\":null,\"service\":\"s\"}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"\"}",
		"{" FUUID "," FTS ",\"message\":\"m\"}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"host\":5}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"span_id\":{}}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"attributes\":[1]}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"attributes\":\"x\"}",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\",\"enrichment\":\"x\"}",
		/* Not JSON, or not an object. */
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\"} x",
		"{" FUUID "," FTS ",\"message\":\"m\",\"service\":\"s\"",
		"{" FUUID "," FTS ",\"message\":\"a\tb\",\"service\":\"s\"}",
		"{" FUUID "," FTS ",\"message\":\"\xff\",\"service\":\"s\"}",
		"[1,2]",
		"\"x\"",
		"",
	};
	static const struct store_origin partial = {
		.topic = "enriched-logs-partial", .partition = 0, .offset = 9223372036854775807LL,
		.default_status = "partial",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
		if (both_paths(accepted[i], &origin) != 0)
			fail_msg("fast path declined %s", accepted[i]);
		assert_int_equal(both_paths(accepted[i], &partial), 0);
	}
	for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++)
		if (both_paths(declined[i], &origin) != -ENOTSUP)
			fail_msg("fast path accepted %s", declined[i]);
	/* All but the levels spelled "warning", "error", "Fatal" and the text
	 * with line breaks, twice each. */
	assert_int_equal(tails_compared, 2 * (sizeof(accepted) / sizeof(accepted[0]) - 4));
}

/* Records made of random pieces: whatever the fast path accepts, it
 * writes as the full path does; and it accepts most of them. */
static uint64_t rnd_state = 0x9e3779b97f4a7c15ULL;

static unsigned rnd(unsigned n)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return (unsigned)(rnd_state % n);
}

static void rnd_string(struct lp_buf *b)
{
	static const char *const bits[] = {
		"a", "Z", " ", "\\t", "\\n", "\\r", "\\\\", "\\\"", "\\/", "\\b", "\\f",
		"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "N", "\\\\N", "\x7f", "{", "}",
		":", ",", "[", "'",
	};
	unsigned n = rnd(8);

	lp_buf_addch(b, '"');
	for (unsigned i = 0; i < n; i++)
		lp_buf_adds(b, bits[rnd(sizeof(bits) / sizeof(bits[0]))]);
	lp_buf_addch(b, '"');
}

static void rnd_value(struct lp_buf *b, int depth)
{
	static const char *const scalars[] = { "0", "-7", "42", "true", "false", "null",
					       "123456789012345678" };
	unsigned k = rnd(depth > 3 ? 3 : 5);

	if (k == 0) {
		lp_buf_adds(b, scalars[rnd(sizeof(scalars) / sizeof(scalars[0]))]);
	} else if (k <= 2) {
		rnd_string(b);
	} else if (k == 3) {
		unsigned n = rnd(4);

		lp_buf_addch(b, '[');
		for (unsigned i = 0; i < n; i++) {
			if (i)
				lp_buf_adds(b, rnd(2) ? "," : " , ");
			rnd_value(b, depth + 1);
		}
		lp_buf_addch(b, ']');
	} else {
		unsigned n = rnd(4);

		lp_buf_adds(b, rnd(2) ? "{" : "{ ");
		for (unsigned i = 0; i < n; i++) {
			if (i)
				lp_buf_addch(b, ',');
			lp_buf_addf(b, "\"k%u\":", i);
			rnd_value(b, depth + 1);
		}
		lp_buf_addch(b, '}');
	}
}

static void test_fast_random(void **state)
{
	static const char *const optional[] = {
		"received_at", "level", "host", "source_ip", "tenant", "correlation_id", "trace_id",
		"span_id", "attributes", "enrichment", "x", "y", "schema_version",
	};
	static const char *const levels[] = { "\"INFO\"", "\"warn\"", "\"DEBUG\"", "null",
					      "\"Trace\"", "\"warning\"" };
	unsigned accepted = 0, runs = 3000;

	(void)state;
	for (unsigned r = 0; r < runs; r++) {
		struct lp_buf b = LP_BUF_INIT;

		lp_buf_adds(&b, "{" FUUID "," FTS ",\"message\":");
		rnd_string(&b);
		lp_buf_adds(&b, ",\"service\":\"s");
		lp_buf_adds(&b, rnd(2) ? "\\\\" : "x");
		lp_buf_adds(&b, "\"");
		for (size_t i = 0; i < sizeof(optional) / sizeof(optional[0]); i++) {
			if (rnd(2))
				continue;
			lp_buf_addf(&b, ",\"%s\":", optional[i]);
			if (strcmp(optional[i], "received_at") == 0) {
				lp_buf_adds(&b, rnd(4) ? "\"2026-01-02T03:04:05.678+01:00\""
							 : "null");
			} else if (strcmp(optional[i], "level") == 0) {
				lp_buf_adds(&b, levels[rnd(sizeof(levels) / sizeof(levels[0]))]);
			} else if (strcmp(optional[i], "attributes") == 0 ||
				   strcmp(optional[i], "enrichment") == 0) {
				unsigned n = rnd(5);

				lp_buf_addch(&b, '{');
				for (unsigned j = 0; j < n; j++) {
					lp_buf_addf(&b, "%s\"%s\":", j ? "," : "",
						    rnd(3) ? (rnd(2) ? "x" : "status") : "k0");
					rnd_value(&b, 1);
				}
				lp_buf_addch(&b, '}');
			} else if (optional[i][1] == '\0' ||
				   strcmp(optional[i], "schema_version") == 0) {
				rnd_value(&b, 1);
			} else {
				rnd_string(&b);
			}
		}
		lp_buf_addch(&b, '}');
		if (both_paths(b.buf, &origin) == 0)
			accepted++;
		lp_buf_release(&b);
	}
	/* Declined: duplicate keys the pieces may make, and nothing else. */
	assert_true(accepted > runs / 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape),
		cmocka_unit_test(test_row_full),
		cmocka_unit_test(test_row_minimal),
		cmocka_unit_test(test_row_level_and_extras),
		cmocka_unit_test(test_row_refused),
		cmocka_unit_test(test_fast_same_line),
		cmocka_unit_test(test_fast_random),
		cmocka_unit_test(test_scan_batch),
		cmocka_unit_test(test_count_keys),
		cmocka_unit_test(test_ids_overlap),
		cmocka_unit_test(test_classify),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
