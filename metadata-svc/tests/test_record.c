/* test_record.c - unit tests for metadata records: validation of request
 * bodies in each mode, key and address rules, and the JSON form. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "../record.h"
#include "logpipe/buf.h"
#include "logpipe/json.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

/* Validates text; returns the result and leaves values/why filled. */
static int validate(const struct md_kind *k, const char *text, enum md_mode mode,
		    const char *path_key, struct md_values *v, struct md_invalid *why)
{
	json_t *body = lp_json_loads(text, JSON_DECODE_ANY, NULL);
	int ret;

	assert_non_null(body);
	memset(why, 0, sizeof(*why));
	ret = md_validate(k, body, mode, path_key, v, why);
	json_decref(body);
	return ret;
}

static void expect_invalid(const struct md_kind *k, const char *text, enum md_mode mode,
			   const char *path_key, const char *field)
{
	struct md_values v;
	struct md_invalid why;
	int ret = validate(k, text, mode, path_key, &v, &why);

	if (ret != -EINVAL)
		fail_msg("%s: accepted, want 400 on '%s'", text, field);
	if (strcmp(why.field, field) != 0)
		fail_msg("%s: names field '%s' (%s), want '%s'", text, why.field, why.message, field);
}

static void test_seed_example(void **state)
{
	struct md_values v;
	struct md_invalid why;

	/* Seed 002's curl body, as written. */
	assert_int_equal(validate(&md_host_kind,
				  "{\"hostname\": \"new-server\", \"ipAddress\": \"192.168.1.150\", "
				  "\"datacenter\": \"us-west-2\", \"environment\": \"production\", "
				  "\"costCenter\": \"engineering\"}",
				  MD_CREATE, NULL, &v, &why),
			 0);
	assert_string_equal(v.text[0], "new-server");
	assert_string_equal(v.text[1], "192.168.1.150");
	assert_string_equal(v.text[4], "engineering");
	assert_string_equal(v.text[5], "{}"); /* tags default */
	assert_true(v.present[2]);
	md_values_release(&v);
}

static void test_create_rules(void **state)
{
	expect_invalid(&md_host_kind, "[]", MD_CREATE, NULL, "");
	expect_invalid(&md_host_kind, "{\"datacenter\":\"x\"}", MD_CREATE, NULL, "hostname");
	expect_invalid(&md_host_kind, "{\"hostname\":\"a b\"}", MD_CREATE, NULL, "hostname");
	expect_invalid(&md_host_kind, "{\"hostname\":\"-x\"}", MD_CREATE, NULL, "hostname");
	expect_invalid(&md_host_kind, "{\"hostname\":7}", MD_CREATE, NULL, "hostname");
	expect_invalid(&md_host_kind, "{\"hostname\":\"h\",\"ipAddress\":\"10.0.0.256\"}",
		       MD_CREATE, NULL, "ipAddress");
	expect_invalid(&md_host_kind, "{\"hostname\":\"h\",\"ipAddress\":\"web-1\"}", MD_CREATE,
		       NULL, "ipAddress");
	expect_invalid(&md_host_kind, "{\"hostname\":\"h\",\"datacenter\":1}", MD_CREATE, NULL,
		       "datacenter");
	expect_invalid(&md_host_kind, "{\"hostname\":\"h\",\"costcenter\":\"x\"}", MD_CREATE,
		       NULL, "costcenter");
	expect_invalid(&md_host_kind, "{\"hostname\":\"h\",\"tags\":[1]}", MD_CREATE, NULL,
		       "tags");
	expect_invalid(&md_service_kind, "{\"name\":\"a/b\"}", MD_CREATE, NULL, "name");
	expect_invalid(&md_service_kind, "{\"name\":\"s\",\"tier\":true}", MD_CREATE, NULL,
		       "tier");
	expect_invalid(&md_service_kind, "{\"name\":\"s\",\"hostname\":\"x\"}", MD_CREATE, NULL,
		       "hostname");
}

static void test_long_text(void **state)
{
	struct lp_buf b = LP_BUF_INIT;
	size_t i;

	lp_buf_adds(&b, "{\"name\":\"s\",\"owner\":\"");
	for (i = 0; i < MD_MAX_TEXT + 1; i++)
		lp_buf_addch(&b, 'x');
	lp_buf_adds(&b, "\"}");
	expect_invalid(&md_service_kind, b.buf, MD_CREATE, NULL, "owner");
	lp_buf_release(&b);
}

static void test_replace_and_patch(void **state)
{
	struct md_values v;
	struct md_invalid why;

	/* PUT: key from the path, absent fields become null, tags {}. */
	assert_int_equal(validate(&md_host_kind, "{\"datacenter\":\"eu-1\",\"createdAt\":\"x\"}",
				  MD_REPLACE, "web-1", &v, &why),
			 0);
	assert_string_equal(v.text[0], "web-1");
	assert_true(v.present[1]);
	assert_null(v.text[1]);
	assert_string_equal(v.text[2], "eu-1");
	assert_string_equal(v.text[5], "{}");
	md_values_release(&v);

	/* PATCH: only what is given; null clears. */
	assert_int_equal(validate(&md_host_kind, "{\"environment\":null,\"tags\":{\"a\":\"b\"}}",
				  MD_PATCH, "web-1", &v, &why),
			 0);
	assert_false(v.present[1]);
	assert_false(v.present[2]);
	assert_true(v.present[3]);
	assert_null(v.text[3]);
	assert_string_equal(v.text[5], "{\"a\":\"b\"}");
	md_values_release(&v);

	/* A key in the body must match the path. */
	assert_int_equal(validate(&md_host_kind, "{\"hostname\":\"web-1\"}", MD_PATCH, "web-1", &v,
				  &why),
			 0);
	md_values_release(&v);
	expect_invalid(&md_host_kind, "{\"hostname\":\"web-2\"}", MD_REPLACE, "web-1", "hostname");
	expect_invalid(&md_service_kind, "{}", MD_REPLACE, "bad name", "name");
}

static void test_keys_and_addresses(void **state)
{
	char ip[64];

	assert_true(md_key_valid(&md_host_kind, "web-1.prod_eu"));
	assert_false(md_key_valid(&md_host_kind, ""));
	assert_false(md_key_valid(&md_host_kind, "a/b"));
	assert_false(md_key_valid(&md_host_kind, NULL));
	assert_true(md_key_valid(&md_service_kind, "payment-service:v2"));
	assert_false(md_key_valid(&md_service_kind, "has space"));
	assert_false(md_key_valid(&md_service_kind, "by%2fpath"));

	assert_true(md_ip_canonical("192.168.1.100", ip, sizeof(ip)));
	assert_string_equal(ip, "192.168.1.100");
	assert_true(md_ip_canonical("2001:DB8:0:0:0:0:0:1", ip, sizeof(ip)));
	assert_string_equal(ip, "2001:db8::1");
	assert_false(md_ip_canonical("1.2.3", ip, sizeof(ip)));
	assert_false(md_ip_canonical(NULL, ip, sizeof(ip)));
}

static void test_record_json(void **state)
{
	const char *cols[] = { "web-1", NULL, "dc", NULL, "cc", "{\"rack\":\"r1\"}",
			       "1705328625123", "1705328626000" };
	struct lp_buf sql = LP_BUF_INIT;
	json_t *o = md_record_json(&md_host_kind, cols);
	char *text = json_dumps(o, JSON_COMPACT);

	assert_string_equal(text, "{\"hostname\":\"web-1\",\"ipAddress\":null,\"datacenter\":\"dc\","
				  "\"environment\":null,\"costCenter\":\"cc\",\"tags\":{\"rack\":"
				  "\"r1\"},\"createdAt\":\"2024-01-15T14:23:45.123Z\",\"updatedAt\":"
				  "\"2024-01-15T14:23:46.000Z\"}");
	free(text);
	json_decref(o);

	md_select_list(&md_service_kind, &sql);
	assert_true(lp_str_has_prefix(sql.buf, "name, team, owner, tier, tags::text, "));
	lp_buf_release(&sql);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seed_example),
		cmocka_unit_test(test_create_rules),
		cmocka_unit_test(test_long_text),
		cmocka_unit_test(test_replace_and_patch),
		cmocka_unit_test(test_keys_and_addresses),
		cmocka_unit_test(test_record_json),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
