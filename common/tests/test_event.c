/* test_event.c - the event model (event.c, uuid.c): every request shape the
 * seeds send, the aliases, and a table of inputs that must be refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "logpipe/event.h"
#include "logpipe/json.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

/* 2024-01-15T14:23:45.123Z, the "time received" of every test. */
#define NOW 1705328625123LL
#define NOW_TEXT "2024-01-15T14:23:45.123Z"

/* A minimal valid event with extra members. */
#define EV(extra) "{\"message\":\"m\",\"service\":\"s\"," extra "}"

/* Parses body with the default limits; fails the test if it is refused or
 * the result does not pass lp_event_check_normalized. */
static json_t *accept(const char *body, const char *tenant)
{
	struct lp_event_error err = {0};
	json_t *ev =
		lp_event_parse(body, strlen(body), &lp_event_default_limits, NOW, tenant, &err);
	if (!ev)
		print_error("refused %s: %d %s %s: %s\n", body, err.status, err.code, err.field,
			    err.message);
	assert_non_null(ev);
	char why[128] = "";
	int rc = lp_event_check_normalized(ev, why, sizeof(why));
	if (rc != 0)
		print_error("not normalised: %s\n", why);
	assert_int_equal(rc, 0);
	return ev;
}

static const char *str(json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

static json_t *attrs(json_t *ev)
{
	json_t *a = json_object_get(ev, "attributes");
	assert_true(json_is_object(a));
	return a;
}

/* ---- the seeds' shapes ------------------------------------------------------ */

static void test_seed_001_organization_source(void **state)
{
	json_t *ev = accept("{\n"
			    "    \"organizationId\": \"my-org\",\n"
			    "    \"level\": \"INFO\",\n"
			    "    \"message\": \"Application started successfully\",\n"
			    "    \"source\": \"my-service\"\n"
			    "  }",
			    NULL);
	assert_string_equal(str(ev, "tenant"), "my-org");
	assert_string_equal(str(ev, "level"), "INFO");
	assert_string_equal(str(ev, "message"), "Application started successfully");
	assert_string_equal(str(ev, "service"), "my-service");
	assert_string_equal(str(ev, "timestamp"), NOW_TEXT);
	assert_string_equal(str(ev, "received_at"), NOW_TEXT);
	assert_int_equal(json_integer_value(json_object_get(ev, "schema_version")),
			 LP_EVENT_SCHEMA_VERSION);
	const char *id = str(ev, "id");
	assert_true(lp_uuid_valid(id));
	assert_int_equal(id[14], '7');
	assert_int_equal(json_object_size(attrs(ev)), 0);
	assert_null(json_object_get(ev, "host"));
	assert_null(json_object_get(ev, "source_ip"));
	assert_null(json_object_get(ev, "correlation_id"));
	json_decref(ev);

	ev = accept("{\"organizationId\": \"test\", \"level\": \"ERROR\", \"message\": \"Test "
		    "error\", \"source\": \"manual-test\"}",
		    NULL);
	assert_string_equal(str(ev, "tenant"), "test");
	assert_string_equal(str(ev, "level"), "ERROR");
	assert_string_equal(str(ev, "service"), "manual-test");
	json_decref(ev);
}

static void test_seed_002_service_source_ip(void **state)
{
	json_t *ev = accept("{\n"
			    "    \"level\": \"ERROR\",\n"
			    "    \"message\": \"Payment processing failed\",\n"
			    "    \"service\": \"payment-service\",\n"
			    "    \"source_ip\": \"192.168.1.100\"\n"
			    "  }",
			    NULL);
	assert_string_equal(str(ev, "level"), "ERROR");
	assert_string_equal(str(ev, "message"), "Payment processing failed");
	assert_string_equal(str(ev, "service"), "payment-service");
	assert_string_equal(str(ev, "source_ip"), "192.168.1.100");
	assert_null(json_object_get(ev, "tenant"));
	assert_int_equal(json_object_size(attrs(ev)), 0);
	json_decref(ev);
}

static void test_seed_003_correlation_severity_epoch(void **state)
{
	json_t *ev = accept("{\"correlationId\":\"test-1\",\"severity\":\"INFO\",\"message\":"
			    "\"Test\",\"source\":\"cli\",\"timestamp\":1234567890000}",
			    NULL);
	assert_string_equal(str(ev, "correlation_id"), "test-1");
	assert_string_equal(str(ev, "level"), "INFO");
	assert_string_equal(str(ev, "message"), "Test");
	assert_string_equal(str(ev, "service"), "cli");
	assert_string_equal(str(ev, "timestamp"), "2009-02-13T23:31:30.000Z");
	assert_string_equal(str(ev, "received_at"), NOW_TEXT);
	assert_int_equal(json_object_size(attrs(ev)), 0);
	json_decref(ev);
}

/* ---- levels, timestamps, ids, aliases ----------------------------------------- */

static void test_levels(void **state)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{"TRACE", "TRACE"}, {"debug", "DEBUG"}, {"Info", "INFO"},   {"warn", "WARN"},
		{"WARNING", "WARN"}, {"warning", "WARN"}, {"error", "ERROR"}, {"fatal", "FATAL"},
	};
	for (size_t i = 0; i < LP_ARRAY_SIZE(cases); i++) {
		char body[128];
		snprintf(body, sizeof(body), EV("\"level\":\"%s\""), cases[i].in);
		json_t *ev = accept(body, NULL);
		assert_string_equal(str(ev, "level"), cases[i].want);
		json_decref(ev);
		assert_string_equal(lp_level_canonical(cases[i].in), cases[i].want);
	}
	json_t *ev = accept("{\"message\":\"m\",\"service\":\"s\"}", NULL);
	assert_string_equal(str(ev, "level"), "INFO"); /* the default */
	json_decref(ev);

	assert_null(lp_level_canonical("LOUD"));
	assert_null(lp_level_canonical(""));
	assert_null(lp_level_canonical(NULL));
	assert_int_equal(lp_level_rank("TRACE"), 0);
	assert_int_equal(lp_level_rank("WARN"), 3);
	assert_int_equal(lp_level_rank("FATAL"), 5);
	assert_int_equal(lp_level_rank("warn"), -1); /* canonical spellings only */
	assert_int_equal(lp_level_rank(NULL), -1);
}

static void test_timestamps(void **state)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{"\"2024-01-15T14:23:45Z\"", "2024-01-15T14:23:45.000Z"},
		{"\"2024-01-15T14:23:45.5+02:00\"", "2024-01-15T12:23:45.500Z"},
		{"\"2024-01-15 14:23:45\"", "2024-01-15T14:23:45.000Z"},
		{"\"2024-01-15t14:23:45.123456z\"", "2024-01-15T14:23:45.123Z"},
		{"0", "1970-01-01T00:00:00.000Z"},
		{"1705328625123", "2024-01-15T14:23:45.123Z"},
		{"null", NOW_TEXT},
	};
	for (size_t i = 0; i < LP_ARRAY_SIZE(cases); i++) {
		char body[128];
		snprintf(body, sizeof(body), EV("\"timestamp\":%s"), cases[i].in);
		json_t *ev = accept(body, NULL);
		assert_string_equal(str(ev, "timestamp"), cases[i].want);
		json_decref(ev);
	}
	/* The aliases, in order of preference. */
	json_t *ev = accept(EV("\"@timestamp\":\"2020-01-01T00:00:00Z\""), NULL);
	assert_string_equal(str(ev, "timestamp"), "2020-01-01T00:00:00.000Z");
	json_decref(ev);
	ev = accept(EV("\"ts\":1000,\"@timestamp\":2000"), NULL);
	assert_string_equal(str(ev, "timestamp"), "1970-01-01T00:00:01.000Z");
	assert_int_equal(json_integer_value(json_object_get(attrs(ev), "@timestamp")), 2000);
	json_decref(ev);
}

static void test_client_id_kept(void **state)
{
	json_t *ev = accept("{\"id\":\"0190A0B2-4C5D-4E6F-8A9B-0C1D2E3F4A5B\",\"message\":\"m\","
			    "\"service\":\"s\"}",
			    NULL);
	assert_string_equal(str(ev, "id"), "0190a0b2-4c5d-4e6f-8a9b-0c1d2e3f4a5b");
	json_decref(ev);
}

static void test_unknown_fields_to_attributes(void **state)
{
	json_t *ev = accept("{\"message\":\"m\",\"service\":\"s\",\"user_id\":42,\"env\":\"prod\","
			    "\"tags\":[\"a\",\"b\"],\"extra\":null,\"received_at\":\"x\"}",
			    NULL);
	json_t *a = attrs(ev);
	assert_int_equal(json_integer_value(json_object_get(a, "user_id")), 42);
	assert_string_equal(str(a, "env"), "prod");
	assert_int_equal(json_array_size(json_object_get(a, "tags")), 2);
	assert_true(json_is_null(json_object_get(a, "extra")));
	/* Fields only normalising sets are not the client's to choose. */
	assert_null(json_object_get(a, "received_at"));
	assert_string_equal(str(ev, "received_at"), NOW_TEXT);
	assert_null(json_object_get(ev, "user_id"));
	json_decref(ev);
}

static void test_attributes_merged(void **state)
{
	json_t *ev = accept("{\"message\":\"m\",\"service\":\"s\",\"env\":\"top\","
			    "\"attributes\":{\"env\":\"inner\",\"k\":{\"n\":1}},\"b\":2}",
			    NULL);
	json_t *a = attrs(ev);
	assert_int_equal(json_object_size(a), 3);
	assert_string_equal(str(a, "env"), "inner"); /* the attribute wins */
	assert_int_equal(json_integer_value(json_object_get(json_object_get(a, "k"), "n")), 1);
	assert_int_equal(json_integer_value(json_object_get(a, "b")), 2);
	json_decref(ev);
}

static void test_tenant_override(void **state)
{
	json_t *ev = accept(EV("\"organizationId\":\"evil\",\"tenant_id\":\"worse\""), "acme");
	assert_string_equal(str(ev, "tenant"), "acme");
	assert_int_equal(json_object_size(attrs(ev)), 0);
	json_decref(ev);

	/* A tenant field of the wrong type does not matter when overridden. */
	ev = accept("{\"tenant\":42,\"message\":\"m\",\"service\":\"s\"}", "acme");
	assert_string_equal(str(ev, "tenant"), "acme");
	json_decref(ev);

	ev = accept("{\"tenant\":\"t1\",\"message\":\"m\",\"service\":\"s\"}", NULL);
	assert_string_equal(str(ev, "tenant"), "t1");
	json_decref(ev);

	/* An empty override removes the tenant; a broken one is refused. */
	ev = accept(EV("\"tenant\":\"t1\""), "");
	assert_null(json_object_get(ev, "tenant"));
	json_decref(ev);
	struct lp_event_error err = {0};
	const char *body = EV("\"x\":1");
	assert_null(lp_event_parse(body, strlen(body), NULL, NOW, "\xff", &err));
	assert_int_equal(err.status, 400);
	assert_string_equal(err.field, "tenant");
}

static void test_aliases(void **state)
{
	json_t *ev = accept("{\"message\":\"m\",\"source\":\"nginx\",\"hostname\":\"web-1\","
			    "\"trace_id\":\"abc\",\"tenant_id\":\"t\"}",
			    NULL);
	assert_string_equal(str(ev, "service"), "nginx");
	assert_string_equal(str(ev, "host"), "web-1");
	assert_string_equal(str(ev, "correlation_id"), "abc");
	assert_string_equal(str(ev, "tenant"), "t");
	assert_int_equal(json_object_size(attrs(ev)), 0);
	json_decref(ev);

	/* `service` wins over `source`, which is then kept as an attribute. */
	ev = accept("{\"message\":\"m\",\"service\":\"api\",\"source\":\"access-log\","
		    "\"traceId\":\"t2\",\"correlation_id\":\"c1\"}",
		    NULL);
	assert_string_equal(str(ev, "service"), "api");
	assert_string_equal(str(ev, "correlation_id"), "c1");
	assert_string_equal(str(attrs(ev), "source"), "access-log");
	assert_string_equal(str(attrs(ev), "traceId"), "t2");
	json_decref(ev);

	/* A null `service` counts as absent, so `source` is used. */
	ev = accept("{\"message\":\"m\",\"service\":null,\"source\":\"x\"}", NULL);
	assert_string_equal(str(ev, "service"), "x");
	assert_int_equal(json_object_size(attrs(ev)), 0);
	json_decref(ev);
}

static void test_empty_optional_strings_dropped(void **state)
{
	json_t *ev = accept("{\"message\":\"m\",\"service\":\"s\",\"host\":\"\",\"source_ip\":\"\","
			    "\"correlationId\":\"\",\"hostname\":null}",
			    NULL);
	assert_null(json_object_get(ev, "host"));
	assert_null(json_object_get(ev, "source_ip"));
	assert_null(json_object_get(ev, "correlation_id"));
	json_decref(ev);

	ev = accept("{\"message\":\"m\",\"service\":\"s\",\"source_ip\":\"2001:db8::1\"}", NULL);
	assert_string_equal(str(ev, "source_ip"), "2001:db8::1");
	json_decref(ev);
}

static void test_normalised_key_order(void **state)
{
	json_t *ev = accept("{\"attributes\":{\"a\":1},\"correlationId\":\"c\",\"organizationId\":"
			    "\"o\",\"source_ip\":\"10.0.0.1\",\"host\":\"h\",\"source\":\"s\","
			    "\"message\":\"m\",\"level\":\"debug\",\"timestamp\":0}",
			    NULL);
	static const char *const want[] = {"id",      "schema_version", "timestamp",
					   "received_at", "level",      "message",
					   "service",     "host",       "source_ip",
					   "tenant",      "correlation_id", "attributes"};
	size_t n = 0;
	const char *k;
	json_t *v;
	json_object_foreach (ev, k, v) {
		assert_true(n < LP_ARRAY_SIZE(want));
		assert_string_equal(k, want[n]);
		n++;
	}
	assert_int_equal(n, LP_ARRAY_SIZE(want));
	json_decref(ev);
}

static void test_normalize_is_idempotent(void **state)
{
	json_t *ev = accept(EV("\"timestamp\":1000,\"x\":1"), NULL);
	struct lp_event_error err;
	json_t *again = lp_event_normalize(ev, NULL, NOW + 5, NULL, &err);
	assert_non_null(again);
	assert_int_equal(json_object_size(again), json_object_size(ev));
	assert_int_equal(json_object_size(attrs(again)), 1);
	assert_string_equal(str(again, "id"), str(ev, "id"));
	assert_string_equal(str(again, "timestamp"), str(ev, "timestamp"));
	assert_int_equal(json_integer_value(json_object_get(attrs(again), "x")), 1);
	json_decref(again);
	json_decref(ev);
}

/* ---- refusals ------------------------------------------------------------------- */

/* Small limits so that every limit can be hit by a short body. */
static const struct lp_event_limits small = {
	.max_message = 32,
	.max_attributes = 4,
	.max_field = 16,
	.max_depth = 4,
};

static const struct {
	const char *name;
	const char *body;
	int status;
	const char *code;
	const char *field;
} refusals[] = {
	{"empty body", "", 400, "invalid_json", ""},
	{"invalid json", "{\"message\": \"x\",", 400, "invalid_json", ""},
	{"trailing garbage", "{\"message\":\"m\",\"service\":\"s\"} x", 400, "invalid_json", ""},
	{"invalid utf-8", "{\"message\":\"\xff\xfe\",\"service\":\"s\"}", 400, "invalid_json", ""},
	{"nul in string", "{\"message\":\"a\\u0000b\",\"service\":\"s\"}", 400, "invalid_json", ""},
	{"huge real", EV("\"n\":1e999"), 400, "invalid_json", ""},
	{"huge integer", EV("\"n\":123456789012345678901234567890"), 400, "invalid_json", ""},
	{"not an object", "\"just a string\"", 400, "invalid_json", ""},
	{"number", "42", 400, "invalid_json", ""},
	{"array", "[{\"message\":\"m\",\"service\":\"s\"}]", 400, "invalid_json", ""},
	{"missing message", "{\"service\":\"s\"}", 400, "missing_field", "message"},
	{"null message", "{\"message\":null,\"service\":\"s\"}", 400, "missing_field", "message"},
	{"empty message", "{\"message\":\"\",\"service\":\"s\"}", 400, "invalid_field", "message"},
	{"message not a string", "{\"message\":42,\"service\":\"s\"}", 400, "invalid_field",
	 "message"},
	{"message an object", "{\"message\":{},\"service\":\"s\"}", 400, "invalid_field",
	 "message"},
	{"message too long",
	 "{\"message\":\"0123456789012345678901234567890123\",\"service\":\"s\"}", 413,
	 "too_large", "message"},
	{"missing service and source", "{\"message\":\"m\",\"level\":\"INFO\"}", 400,
	 "missing_field", "service"},
	{"empty source", "{\"message\":\"m\",\"source\":\"\"}", 400, "invalid_field", "source"},
	{"service not a string", "{\"message\":\"m\",\"service\":[\"a\"]}", 400, "invalid_field",
	 "service"},
	{"service too long", "{\"message\":\"m\",\"service\":\"0123456789abcdefg\"}", 413,
	 "too_large", "service"},
	{"bad level", EV("\"level\":\"LOUD\""), 400, "invalid_field", "level"},
	{"empty level", EV("\"level\":\"\""), 400, "invalid_field", "level"},
	{"numeric severity", EV("\"severity\":3"), 400, "invalid_field", "severity"},
	{"bad timestamp string", EV("\"timestamp\":\"yesterday\""), 400, "invalid_field",
	 "timestamp"},
	{"impossible date", EV("\"timestamp\":\"2023-02-29T00:00:00Z\""), 400, "invalid_field",
	 "timestamp"},
	{"epoch as string", EV("\"timestamp\":\"1234567890000\""), 400, "invalid_field",
	 "timestamp"},
	{"negative timestamp", EV("\"timestamp\":-1"), 400, "invalid_field", "timestamp"},
	{"absurd timestamp", EV("\"timestamp\":100000000000000000"), 400, "invalid_field",
	 "timestamp"},
	{"timestamp before 1970", EV("\"timestamp\":\"1969-12-31T23:59:59Z\""), 400,
	 "invalid_field", "timestamp"},
	{"timestamp float", EV("\"timestamp\":1234567890000.5"), 400, "invalid_field",
	 "timestamp"},
	{"timestamp bool", EV("\"ts\":true"), 400, "invalid_field", "ts"},
	{"bad source_ip", EV("\"source_ip\":\"999.1.1.1\""), 400, "invalid_field", "source_ip"},
	{"hostname as source_ip", EV("\"source_ip\":\"localhost\""), 400, "invalid_field",
	 "source_ip"},
	{"source_ip number", EV("\"source_ip\":3232235876"), 400, "invalid_field", "source_ip"},
	{"bad id", EV("\"id\":\"not-a-uuid\""), 400, "invalid_field", "id"},
	{"id one char short", EV("\"id\":\"0190a0b2-4c5d-4e6f-8a9b-0c1d2e3f4a5\""), 400,
	 "invalid_field", "id"},
	{"empty id", EV("\"id\":\"\""), 400, "invalid_field", "id"},
	{"id number", EV("\"id\":42"), 400, "invalid_field", "id"},
	{"attributes an array", EV("\"attributes\":[1,2]"), 400, "invalid_field", "attributes"},
	{"attributes a string", EV("\"attributes\":\"a=b\""), 400, "invalid_field", "attributes"},
	{"too many attributes", EV("\"attributes\":{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5}"), 413,
	 "too_large", "attributes"},
	{"too many unknown fields", EV("\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5"), 413, "too_large",
	 "attributes"},
	{"nesting too deep", EV("\"attributes\":{\"a\":{\"b\":{\"c\":{}}}}"), 400, "invalid_field",
	 "attributes"},
	{"unknown field too deep", EV("\"x\":[[[[1]]]]"), 400, "invalid_field", "x"},
	/* Found by fuzz_event: under attributes it would sit one level deeper
	 * than the limit, and the normalised event would not normalise again. */
	{"unknown field too deep once under attributes", EV("\"x\":[[[1]]]"), 400,
	 "invalid_field", "x"},
	{"host too long", EV("\"host\":\"0123456789abcdefg\""), 413, "too_large", "host"},
	{"host not a string", EV("\"host\":12"), 400, "invalid_field", "host"},
	{"correlationId a number", EV("\"correlationId\":123"), 400, "invalid_field",
	 "correlationId"},
	{"organizationId an object", EV("\"organizationId\":{}"), 400, "invalid_field",
	 "organizationId"},
};

static void test_refusals(void **state)
{
	for (size_t i = 0; i < LP_ARRAY_SIZE(refusals); i++) {
		struct lp_event_error err = {0};
		const char *body = refusals[i].body;
		json_t *ev = lp_event_parse(body, strlen(body), &small, NOW, NULL, &err);
		if (ev || err.status != refusals[i].status ||
		    strcmp(err.code, refusals[i].code) != 0 ||
		    strcmp(err.field, refusals[i].field) != 0)
			print_error("case '%s': got %d %s field '%s' (%s)\n", refusals[i].name,
				    err.status, err.code, err.field, err.message);
		assert_null(ev);
		assert_int_equal(err.status, refusals[i].status);
		assert_string_equal(err.code, refusals[i].code);
		assert_string_equal(err.field, refusals[i].field);
		assert_true(strlen(err.message) > 0);
	}
}

/* Just inside the small limits: the table above tests one byte over. */
static void test_limits_inclusive(void **state)
{
	const char *body = "{\"message\":\"01234567890123456789012345678901\","
			   "\"service\":\"0123456789abcdef\",\"attributes\":{\"a\":{\"b\":{}}},"
			   "\"c\":1,\"d\":2,\"e\":3}";
	struct lp_event_error err = {0};
	json_t *ev = lp_event_parse(body, strlen(body), &small, NOW, NULL, &err);
	if (!ev)
		print_error("%s\n", err.message);
	assert_non_null(ev);
	assert_int_equal(json_object_size(attrs(ev)), 4);
	json_decref(ev);
}

static void test_default_message_limit(void **state)
{
	size_t n = lp_event_default_limits.max_message;
	json_t *in = json_object();
	char *msg = malloc(n + 2);
	assert_non_null(msg);
	memset(msg, 'x', n + 1);
	msg[n] = '\0';
	json_object_set_new(in, "message", json_string(msg));
	json_object_set_new(in, "service", json_string("s"));
	struct lp_event_error err = {0};
	json_t *ev = lp_event_normalize(in, NULL, NOW, NULL, &err);
	assert_non_null(ev); /* exactly at the limit */
	json_decref(ev);

	msg[n] = 'x';
	msg[n + 1] = '\0';
	json_object_set_new(in, "message", json_string(msg));
	ev = lp_event_normalize(in, NULL, NOW, NULL, &err);
	assert_null(ev);
	assert_int_equal(err.status, 413);
	assert_string_equal(err.code, "too_large");
	assert_string_equal(err.field, "message");
	free(msg);
	json_decref(in);
}

static void test_normalize_not_object(void **state)
{
	struct lp_event_error err = {0};
	assert_null(lp_event_normalize(NULL, NULL, NOW, NULL, &err));
	assert_int_equal(err.status, 400);
	json_t *arr = json_array();
	assert_null(lp_event_normalize(arr, NULL, NOW, NULL, NULL)); /* err is optional */
	json_decref(arr);
}

/* ---- the enricher's check ---------------------------------------------------------- */

static void test_check_normalized(void **state)
{
	json_t *ev = accept("{\"message\":\"m\",\"service\":\"s\",\"host\":\"h\"}", NULL);
	char why[128];
	assert_int_equal(lp_event_check_normalized(ev, why, sizeof(why)), 0);

	static const struct {
		const char *key;
		json_t *(*make)(void);
	} breaks[] = {
		{"id", NULL},       {"message", NULL},   {"service", NULL},
		{"level", NULL},    {"timestamp", NULL}, {"host", json_true},
		{"attributes", json_array},
	};
	for (size_t i = 0; i < LP_ARRAY_SIZE(breaks); i++) {
		json_t *bad = json_deep_copy(ev);
		if (breaks[i].make)
			json_object_set_new(bad, breaks[i].key, breaks[i].make());
		else
			json_object_del(bad, breaks[i].key);
		why[0] = '\0';
		assert_int_equal(lp_event_check_normalized(bad, why, sizeof(why)), -EINVAL);
		if (!strstr(why, breaks[i].key))
			print_error("reason '%s' does not name '%s'\n", why, breaks[i].key);
		assert_non_null(strstr(why, breaks[i].key));
		json_decref(bad);
	}

	static const struct {
		const char *key, *val;
	} wrong[] = {
		{"id", "nope"},      {"level", "warning"}, {"level", "NOTICE"},
		{"message", ""},     {"timestamp", "now"}, {"service", ""},
	};
	for (size_t i = 0; i < LP_ARRAY_SIZE(wrong); i++) {
		json_t *bad = json_deep_copy(ev);
		json_object_set_new(bad, wrong[i].key, json_string(wrong[i].val));
		assert_int_equal(lp_event_check_normalized(bad, NULL, 0), -EINVAL);
		json_decref(bad);
	}
	json_t *arr = json_array();
	assert_int_equal(lp_event_check_normalized(arr, why, sizeof(why)), -EINVAL);
	json_decref(arr);
	json_decref(ev);
}

/* ---- uuid and ip --------------------------------------------------------------- */

static void test_uuid7(void **state)
{
	char prev[37] = "";
	for (int i = 0; i < 20000; i++) {
		char id[37];
		lp_uuid7(id);
		assert_true(lp_uuid_valid(id));
		assert_int_equal(id[14], '7');                    /* version */
		assert_non_null(strchr("89ab", id[19]));          /* variant 10 */
		for (const char *p = id; *p; p++)
			assert_non_null(strchr("-0123456789abcdef", *p));
		if (strcmp(prev, id) >= 0)
			print_error("%s after %s\n", id, prev);
		assert_true(strcmp(prev, id) < 0); /* strictly increasing */
		memcpy(prev, id, sizeof(id));
	}
	/* The first 48 bits are the wall clock in milliseconds. */
	char id[37];
	lp_uuid7(id);
	char hex[13];
	memcpy(hex, id, 8);
	memcpy(hex + 8, id + 9, 4);
	hex[12] = '\0';
	int64_t ms = (int64_t)strtoll(hex, NULL, 16);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	assert_true(ms <= now + 1000 && ms >= now - 60000);
}

static void test_uuid_valid(void **state)
{
	assert_true(lp_uuid_valid("123e4567-e89b-12d3-a456-426614174000"));
	assert_true(lp_uuid_valid("123E4567-E89B-12D3-A456-426614174000"));
	assert_true(lp_uuid_valid("00000000-0000-0000-0000-000000000000"));
	assert_false(lp_uuid_valid(NULL));
	assert_false(lp_uuid_valid(""));
	assert_false(lp_uuid_valid("123e4567e89b12d3a456426614174000"));
	assert_false(lp_uuid_valid("123e4567-e89b-12d3-a456-4266141740001"));
	assert_false(lp_uuid_valid("123e4567-e89b-12d3-a456-42661417400"));
	assert_false(lp_uuid_valid("123e4567-e89b-12d3-a456_426614174000"));
	assert_false(lp_uuid_valid("g23e4567-e89b-12d3-a456-426614174000"));
	assert_false(lp_uuid_valid("{123e4567-e89b-12d3-a456-426614174000}"));
}

static void test_ip_valid(void **state)
{
	static const char *const good[] = {"192.168.1.100", "0.0.0.0", "255.255.255.255",
					    "::1", "2001:db8::1", "::ffff:10.0.0.1",
					    "fe80::1ff:fe23:4567:890a"};
	static const char *const bad[] = {"", "localhost", "999.1.1.1", "1.2.3", "1.2.3.4.5",
					   "1.2.3.4 ", "2001:db8:::1", "fe80::1%eth0", "gggg::1"};
	for (size_t i = 0; i < LP_ARRAY_SIZE(good); i++)
		assert_true(lp_ip_valid(good[i]));
	for (size_t i = 0; i < LP_ARRAY_SIZE(bad); i++) {
		if (lp_ip_valid(bad[i]))
			print_error("'%s' was accepted\n", bad[i]);
		assert_false(lp_ip_valid(bad[i]));
	}
	assert_false(lp_ip_valid(NULL));
}

#define SCAN_ID "\"id\":\"0190a5c4-1b2c-7d3e-8f40-123456789abc\","
#define SCAN_BASE SCAN_ID "\"timestamp\":\"2026-12-03T14:00:00.123Z\",\"level\":\"INFO\","

static int scan(const char *text, struct lp_event_view *v)
{
	return lp_event_scan(text, strlen(text), v);
}

/* The fast filter path accepts plain valid events and hands out the
 * fields the look-ups read. */
static void test_scan_accepts(void **state)
{
	struct lp_event_view v;

	(void)state;
	assert_int_equal(scan(" {" SCAN_BASE "\"message\":\"a\\nb \\\"q\\\"\",\"service\":\"api\","
			      "\"host\":\"web-1\",\"source_ip\":\"10.0.0.5\",\"tenant\":\"t\","
			      "\"attributes\":{\"n\":-1.25,\"ok\":[true,false,null,{}],\"s\":\"\"}}\n",
			      &v),
			 0);
	assert_string_equal(v.service, "api");
	assert_string_equal(v.host, "web-1");
	assert_string_equal(v.source_ip, "10.0.0.5");
	assert_int_equal(scan("{" SCAN_BASE "\"message\":\"caf\xc3\xa9\",\"service\":\"s\"}", &v), 0);
	assert_null(v.host);
	assert_null(v.source_ip);
}

/* Everything else is left to the full path: invalid JSON or events, and
 * what the scan does not decide itself. */
static void test_scan_leaves_to_full_path(void **state)
{
	static const char *const cases[] = {
		"",
		"[]",
		"{" SCAN_BASE "\"message\":\"m\",\"service\":\"s\"",       /* unterminated */
		"{" SCAN_BASE "\"message\":\"m\",\"service\":\"s\"} x",    /* trailing text */
		"{" SCAN_BASE "\"message\":\"m\",\"service\":\"s\",}",     /* trailing comma */
		"{" SCAN_BASE "\"message\":\"\",\"service\":\"s\"}",       /* empty message */
		"{" SCAN_BASE "\"message\":\"m\"}",                        /* no service */
		"{" SCAN_BASE "\"message\":\"m\",\"service\":\"s\",\"service\":\"t\"}", /* duplicate */
		"{" SCAN_BASE "\"message\":\"m\",\"service\":\"s\\u00e9\"}", /* \u escape */
		"{" SCAN_BASE "\"message\":\"m\",\"serv\\u0069ce\":\"s\",\"service\":\"t\"}",
		"{" SCAN_BASE "\"message\":\"m\",\"service\":\"s\",\"enrichment\":{}}",
		"{" SCAN_BASE "\"message\":\"m\",\"service\":\"s\",\"host\":7}",
		"{" SCAN_BASE "\"message\":\"m\",\"service\":\"s\",\"trace_id\":7}",
		"{" SCAN_BASE "\"message\":\"m\",\"service\":\"s\",\"span_id\":[]}",
		"{" SCAN_BASE "\"message\":\"m\",\"service\":\"s\",\"attributes\":[]}",
		"{" SCAN_BASE "\"message\":\"m\",\"service\":\"s\",\"attributes\":{\"n\":1e3}}",
		"{" SCAN_BASE "\"message\":\"m\",\"service\":\"s\",\"attributes\":{\"n\":12345678901234567890}}",
		"{" SCAN_BASE "\"message\":\"m\",\"service\":\"s\",\"attributes\":{\"n\":01}}",
		"{" SCAN_BASE "\"message\":\"bad \xc0\xaf\",\"service\":\"s\"}",  /* overlong UTF-8 */
		"{" SCAN_BASE "\"message\":\"tab\there\",\"service\":\"s\"}",    /* raw control char */
		"{" SCAN_ID "\"timestamp\":\"yesterday\",\"level\":\"INFO\",\"message\":\"m\",\"service\":\"s\"}",
		"{" SCAN_ID "\"timestamp\":\"2026-12-03T14:00:00Z\",\"level\":\"info\",\"message\":\"m\",\"service\":\"s\"}",
		"{\"id\":\"nope\",\"timestamp\":\"2026-12-03T14:00:00Z\",\"level\":\"INFO\",\"message\":\"m\",\"service\":\"s\"}",
	};
	struct lp_event_view v;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (scan(cases[i], &v) != -ENOTSUP)
			fail_msg("accepted: %s", cases[i]);
	/* Nesting beyond the scan's depth is legal JSON, but not its to judge. */
	char deep[256] = "{" SCAN_BASE "\"message\":\"m\",\"service\":\"s\",\"attributes\":{\"a\":";
	size_t n = strlen(deep);
	for (int i = 0; i < 40; i++)
		deep[n++] = '[';
	for (int i = 0; i < 40; i++)
		deep[n++] = ']';
	deep[n++] = '}';
	deep[n++] = '}';
	deep[n] = '\0';
	assert_int_equal(scan(deep, &v), -ENOTSUP);
}

/* ---- the producer's fast path -------------------------------------------------- */

/* json_dumps of what the full path makes of body, with the id of fast put
 * in when the input had none (the fast path draws its own UUIDv7). */
static char *full_text(const char *body, const char *tenant, const struct lp_event_fast *fast)
{
	json_t *ev = accept(body, tenant);
	char *text;

	json_object_set_new(ev, "id", json_string(fast->id));
	text = json_dumps(ev, JSON_COMPACT);
	json_decref(ev);
	return text;
}

#define FID "\"id\":\"0190A5C4-1b2c-7d3e-8f40-123456789abc\""

/* The fast path writes byte for byte what the full path serialises. */
static void test_scan_input_same_bytes(void **state)
{
	static const struct {
		const char *body, *tenant;
	} cases[] = {
		{ "{\"level\":\"INFO\",\"message\":\"benchmark event\",\"service\":\"bench\",\"host\":\"web-1\"}", NULL },
		{ " {\n\t" FID ", \"message\" : \"a\\nb \\\"q\\\" \\/ \\\\ \\b\\f\\r\\t caf\xc3\xa9\", \"source\":\"api\"} \r\n", NULL },
		{ "{\"message\":\"m\",\"service\":\"s\",\"source\":\"lost alias\",\"severity\":\"warning\","
		  "\"ts\":1705328625000,\"hostname\":\"h\",\"source_ip\":\"::1\",\"organizationId\":\"org\","
		  "\"correlationId\":\"abc\",\"extra\":{\"a\": [1, -2, true, false, null, {}, []], \"b\":\"x\\/y\"},"
		  "\"schema_version\":7,\"received_at\":\"x\",\"tenant_id\":null}", NULL },
		{ "{\"message\":\"m\",\"service\":\"s\",\"tenant\":\"mine\",\"organizationId\":\"also\","
		  "\"correlation_id\":\"\",\"host\":\"\",\"source_ip\":\"\",\"timestamp\":\"2024-01-15T16:23:45+02:00\"}",
		  "from-key" },
		{ "{\"message\":\"m\",\"service\":\"s\",\"attributes\":{\"k\":1,\"dup\":\"attr wins\"},\"dup\":\"top\","
		  "\"z\":0,\"level\":null,\"id\":null,\"@timestamp\":\"2024-01-15T14:23:45Z\"}", NULL },
		{ "{\"message\":\"m\",\"service\":\"s\",\"attributes\":{},\"level\":\"fatal\"," FID "}", "t\xc3\xa9" },
		{ "{\"message\":\"m\",\"service\":\"s\",\"attributes\":null,\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":[]}}}}}}", NULL },
	};
	struct lp_event_fast f;

	(void)state;
	for (size_t i = 0; i < LP_ARRAY_SIZE(cases); i++) {
		const char *body = cases[i].body;
		int rc = lp_event_scan_input(body, strlen(body), &lp_event_default_limits, NOW,
					     cases[i].tenant, &f);
		char *full;

		if (rc != 0)
			fail_msg("left to the full path: %s", body);
		full = full_text(body, cases[i].tenant, &f);
		if (strcmp(full, f.text) != 0 || f.len != strlen(full))
			fail_msg("differs for %s:\n fast %s\n full %s", body, f.text, full);
		json_t *ev = lp_json_loads(full, 0, NULL);

		assert_int_equal(f.service_len, strlen(str(ev, "service")));
		assert_memory_equal(f.service, str(ev, "service"), f.service_len);
		json_decref(ev);
		free(full);
		free(f.text);
	}
	/* A generated id is a fresh UUIDv7. */
#define MIN_EV "{\"message\":\"m\",\"service\":\"s\"}"
	assert_int_equal(lp_event_scan_input(MIN_EV, strlen(MIN_EV), NULL, NOW, NULL, &f), 0);
	assert_true(lp_uuid_valid(f.id));
	assert_int_equal(f.id[14], '7');
	assert_memory_equal(f.service, "s", 1);
	free(f.text);
}

/* What the fast path does not decide, refusals included, is left to the
 * full path. */
static void test_scan_input_leaves_to_full_path(void **state)
{
	static const char *const cases[] = {
		"",
		"[]",
		"{\"message\":\"m\"}",                                  /* no service */
		"{\"message\":\"\",\"service\":\"s\"}",                 /* empty message */
		"{\"message\":7,\"service\":\"s\"}",
		"{\"message\":\"m\",\"service\":\"s\",\"level\":\"loud\"}",
		"{\"message\":\"m\",\"service\":\"s\",\"level\":\"IN\\u0046O\"}",
		"{\"message\":\"m\",\"service\":\"s\",\"ts\":-1}",
		"{\"message\":\"m\",\"service\":\"s\",\"ts\":\"yesterday\"}",
		"{\"message\":\"m\",\"service\":\"s\",\"id\":\"nope\"}",
		"{\"message\":\"m\",\"service\":\"s\",\"source_ip\":\"300.1.1.1\"}",
		"{\"message\":\"m\",\"service\":\"s\",\"host\":7}",
		"{\"message\":\"m\",\"service\":\"s\",\"attributes\":[]}",
		"{\"message\":\"m\",\"service\":\"s\",\"n\":1.5}",      /* jansson rewrites reals */
		"{\"message\":\"m\",\"service\":\"s\",\"n\":-0}",       /* and -0 */
		"{\"message\":\"m\",\"service\":\"s\",\"a\":{\"k\":1,\"k\":2}}", /* duplicate keys */
		"{\"message\":\"m\",\"service\":\"s\",\"a\":{\"k\\/\":1}}",      /* escaped key */
		"{\"message\":\"m\",\"service\":\"s\",\"message\":\"n\"}",
		"{\"message\":\"m\",\"service\":\"s\\tt\"}",            /* escaped Kafka key */
		"{\"message\":\"m\",\"service\":\"s\",\"a\":\"\\u00e9\"}",
		"{\"message\":\"m\",\"service\":\"s\"} x",
		"{\"message\":\"m\",\"service\":\"s\",\"traceId\":\"abc\"}",   /* trace context */
		"{\"message\":\"m\",\"service\":\"s\",\"span_id\":\"00f067aa0ba902b7\"}",
		"{\"message\":\"m\",\"service\":\"s\",\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":[]}}}}}}}",
		/* Not UTF-8: in a value, after an escape, in a key, a lone
		 * continuation byte, a surrogate's encoding. */
		"{\"message\":\"ab\xff\",\"service\":\"s\"}",
		"{\"message\":\"a\\n\xc3\",\"service\":\"s\"}",
		"{\"message\":\"m\",\"service\":\"s\",\"k\x80\":1}",
		"{\"message\":\"m\",\"service\":\"s\x80\"}",
		"{\"message\":\"\xed\xa0\x80\",\"service\":\"s\"}",
	};
	struct lp_event_fast f;

	(void)state;
	for (size_t i = 0; i < LP_ARRAY_SIZE(cases); i++)
		if (lp_event_scan_input(cases[i], strlen(cases[i]), NULL, NOW, NULL, &f) != -ENOTSUP)
			fail_msg("accepted: %s", cases[i]);
	/* A tenant that needs escaping or is not UTF-8. */
	assert_int_equal(lp_event_scan_input(MIN_EV, strlen(MIN_EV), NULL, NOW, "a\"b", &f), -ENOTSUP);
	assert_int_equal(lp_event_scan_input(MIN_EV, strlen(MIN_EV), NULL, NOW, "\xff", &f), -ENOTSUP);
	/* Limits: one over each is the full path's to word. */
	struct lp_event_limits lim = lp_event_default_limits;
	lim.max_message = 1;
	assert_int_equal(lp_event_scan_input(EV("\"x\":1"), strlen(EV("\"x\":1")), &lim, NOW, NULL,
					     &f), 0);
	free(f.text);
	assert_int_equal(lp_event_scan_input("{\"message\":\"mm\",\"service\":\"s\"}", 30, &lim, NOW,
					     NULL, &f), -ENOTSUP);
	lim = lp_event_default_limits;
	lim.max_attributes = 1;
	assert_int_equal(lp_event_scan_input(EV("\"a\":1,\"b\":2"), strlen(EV("\"a\":1,\"b\":2")),
					     &lim, NOW, NULL, &f), -ENOTSUP);
}

/* ---- trace context -------------------------------------------------------- */

static void test_trace_context_kept(void **state)
{
	(void)state;
	json_t *ev = accept(EV("\"trace_id\":\"4BF92F3577B34DA6A3CE929D0E0E4736\","
			       "\"spanId\":\"00f067aa0ba902b7\""), NULL);
	assert_string_equal(str(ev, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
	assert_string_equal(str(ev, "span_id"), "00f067aa0ba902b7");
	/* Still the correlation id when none other was sent. */
	assert_string_equal(str(ev, "correlation_id"), "4BF92F3577B34DA6A3CE929D0E0E4736");
	assert_null(json_object_get(attrs(ev), "trace_id"));
	assert_null(json_object_get(attrs(ev), "spanId"));

	/* Normalising again changes nothing but received_at. */
	char *text = json_dumps(ev, JSON_COMPACT);
	json_t *again = accept(text, NULL);
	json_object_del(ev, "received_at");
	json_object_del(again, "received_at");
	assert_true(json_equal(ev, again));
	free(text);
	json_decref(again);
	json_decref(ev);

	/* With a correlation id of its own, the trace id is still kept. */
	ev = accept(EV("\"correlationId\":\"c-1\","
		       "\"traceId\":\"4bf92f3577b34da6a3ce929d0e0e4736\""), NULL);
	assert_string_equal(str(ev, "correlation_id"), "c-1");
	assert_string_equal(str(ev, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
	assert_null(json_object_get(attrs(ev), "traceId"));
	json_decref(ev);

	/* Not an id of that shape: no trace context, nothing lost. */
	ev = accept(EV("\"trace_id\":\"abc\",\"span_id\":\"0000000000000000\""), NULL);
	assert_null(json_object_get(ev, "trace_id"));
	assert_null(json_object_get(ev, "span_id"));
	assert_string_equal(str(ev, "correlation_id"), "abc");
	assert_string_equal(str(attrs(ev), "span_id"), "0000000000000000");
	json_decref(ev);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seed_001_organization_source),
		cmocka_unit_test(test_trace_context_kept),
		cmocka_unit_test(test_seed_002_service_source_ip),
		cmocka_unit_test(test_seed_003_correlation_severity_epoch),
		cmocka_unit_test(test_levels),
		cmocka_unit_test(test_timestamps),
		cmocka_unit_test(test_client_id_kept),
		cmocka_unit_test(test_unknown_fields_to_attributes),
		cmocka_unit_test(test_attributes_merged),
		cmocka_unit_test(test_tenant_override),
		cmocka_unit_test(test_aliases),
		cmocka_unit_test(test_empty_optional_strings_dropped),
		cmocka_unit_test(test_normalised_key_order),
		cmocka_unit_test(test_normalize_is_idempotent),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_limits_inclusive),
		cmocka_unit_test(test_default_message_limit),
		cmocka_unit_test(test_normalize_not_object),
		cmocka_unit_test(test_check_normalized),
		cmocka_unit_test(test_scan_accepts),
		cmocka_unit_test(test_scan_leaves_to_full_path),
		cmocka_unit_test(test_scan_input_same_bytes),
		cmocka_unit_test(test_scan_input_leaves_to_full_path),
		cmocka_unit_test(test_uuid7),
		cmocka_unit_test(test_uuid_valid),
		cmocka_unit_test(test_ip_valid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
