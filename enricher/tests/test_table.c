/* test_table.c - unit tests for the tier-1 table (changes applied by hand,
 * no Kafka) and the string map under it. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../strmap.h"
#include "../table.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

/* ---- strmap ----------------------------------------------------------------------- */

static int drop_odd(void *ud, const char *key, void *value)
{
	(void)key;
	(*(int *)ud)++;
	return (int)(intptr_t)value % 2;
}

static void test_strmap(void **state)
{
	struct strmap m = STRMAP_INIT;
	char key[32];
	int i, visited = 0;

	assert_null(strmap_get(&m, "absent"));
	assert_null(strmap_del(&m, "absent"));
	for (i = 1; i <= 1000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_null(strmap_put(&m, key, (void *)(intptr_t)i));
	}
	assert_int_equal(m.count, 1000);
	assert_ptr_equal(strmap_put(&m, "k7", (void *)(intptr_t)7007), (void *)(intptr_t)7);
	assert_ptr_equal(strmap_get(&m, "k7"), (void *)(intptr_t)7007);
	assert_ptr_equal(strmap_del(&m, "k7"), (void *)(intptr_t)7007);
	assert_null(strmap_get(&m, "k7"));
	assert_int_equal(m.count, 999);
	strmap_filter(&m, drop_odd, &visited);
	assert_int_equal(visited, 999);
	assert_int_equal(m.count, 500);
	assert_ptr_equal(strmap_get(&m, "k8"), (void *)(intptr_t)8);
	assert_null(strmap_get(&m, "k9"));
	strmap_clear(&m, NULL);
	assert_int_equal(m.count, 0);
	assert_null(strmap_get(&m, "k8"));
}

/* ---- the table ---------------------------------------------------------------------- */

/* Keys the change callback was told about, joined by spaces. */
static char changed[1024];

static void on_change(void *ud, const char *key)
{
	size_t n = strlen(changed);

	(void)ud;
	snprintf(changed + n, sizeof(changed) - n, "%s%s", n ? " " : "", key);
}

static int apply(struct mdtable *t, const char *key, const char *val)
{
	changed[0] = '\0';
	return mdtable_apply(t, key, strlen(key), val, val ? strlen(val) : 0);
}

/* The datacenter of the record under key, "-" if none. */
static const char *dc(struct mdtable *t, const char *key)
{
	static char buf[64];
	struct md_record *r = mdtable_get(t, key);

	lp_strlcpy(buf, r && r->attr[0] ? r->attr[0] : "-", sizeof(buf));
	md_record_unref(r);
	return buf;
}

static void assert_counts(struct mdtable *t, size_t hosts, size_t services)
{
	size_t h, s;

	mdtable_counts(t, &h, &s);
	assert_int_equal(h, hosts);
	assert_int_equal(s, services);
}

static void test_host_lifecycle(void **state)
{
	struct mdtable *t = mdtable_new(on_change, NULL);

	assert_int_equal(apply(t, "host:web-1",
			       "{\"hostname\":\"web-1\",\"ipAddress\":\"10.0.0.1\",\"datacenter\":\"dc1\"}"),
			 0);
	assert_string_equal(changed, "host:web-1 hostip:10.0.0.1");
	assert_string_equal(dc(t, "host:web-1"), "dc1");
	assert_string_equal(dc(t, "hostip:10.0.0.1"), "dc1");
	assert_counts(t, 1, 0);

	/* A new address: the old one no longer finds the host. */
	assert_int_equal(apply(t, "host:web-1",
			       "{\"hostname\":\"web-1\",\"ipAddress\":\"10.0.0.2\",\"datacenter\":\"dc2\"}"),
			 0);
	assert_string_equal(changed, "host:web-1 hostip:10.0.0.1 hostip:10.0.0.2");
	assert_string_equal(dc(t, "hostip:10.0.0.1"), "-");
	assert_string_equal(dc(t, "hostip:10.0.0.2"), "dc2");
	assert_counts(t, 1, 0);

	/* Tombstone. */
	assert_int_equal(apply(t, "host:web-1", NULL), 0);
	assert_string_equal(changed, "host:web-1 hostip:10.0.0.2");
	assert_string_equal(dc(t, "host:web-1"), "-");
	assert_string_equal(dc(t, "hostip:10.0.0.2"), "-");
	assert_counts(t, 0, 0);
	/* A tombstone for an unknown key is harmless. */
	assert_int_equal(apply(t, "host:ghost", NULL), 0);
	assert_counts(t, 0, 0);
	mdtable_free(t);
}

static void test_address_moves_between_hosts(void **state)
{
	struct mdtable *t = mdtable_new(NULL, NULL);

	apply(t, "host:a", "{\"hostname\":\"a\",\"ipAddress\":\"10.0.0.9\",\"datacenter\":\"A\"}");
	/* b takes the address before a's change (from another partition) lands. */
	apply(t, "host:b", "{\"hostname\":\"b\",\"ipAddress\":\"10.0.0.9\",\"datacenter\":\"B\"}");
	assert_string_equal(dc(t, "hostip:10.0.0.9"), "B");
	apply(t, "host:a", "{\"hostname\":\"a\",\"datacenter\":\"A\"}");
	/* a gave up the address: b keeps it. */
	assert_string_equal(dc(t, "hostip:10.0.0.9"), "B");
	apply(t, "host:a", NULL);
	assert_string_equal(dc(t, "hostip:10.0.0.9"), "B");
	assert_counts(t, 1, 0);
	mdtable_free(t);
}

static void test_services_and_bad_input(void **state)
{
	struct mdtable *t = mdtable_new(NULL, NULL);
	struct md_record *r;

	assert_int_equal(apply(t, "service:api", "{\"name\":\"api\",\"team\":\"core\"}"), 0);
	r = mdtable_get(t, "service:api");
	assert_non_null(r);
	assert_string_equal(r->attr[0], "core");
	/* The reader's reference survives a replacement and a delete. */
	apply(t, "service:api", "{\"name\":\"api\",\"team\":\"edge\"}");
	apply(t, "service:api", NULL);
	assert_string_equal(r->attr[0], "core");
	md_record_unref(r);

	assert_int_equal(apply(t, "user:x", "{}"), -EINVAL);
	assert_int_equal(apply(t, "host:", "{\"hostname\":\"x\"}"), -EINVAL);
	assert_int_equal(apply(t, "service:x", "not json"), -EINVAL);
	assert_int_equal(apply(t, "service:x", "{\"name\":5}"), -EINVAL);
	assert_int_equal(mdtable_apply(t, NULL, 0, NULL, 0), -EINVAL);
	assert_counts(t, 0, 0);
	assert_false(mdtable_loaded(t));
	mdtable_free(t);
	mdtable_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strmap),
		cmocka_unit_test(test_host_lifecycle),
		cmocka_unit_test(test_address_moves_between_hosts),
		cmocka_unit_test(test_services_and_bad_input),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
