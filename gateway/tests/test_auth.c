/* test_auth.c - API key parsing (each key kept as its SHA-256),
 * constant-time lookup, scopes, the auth decision matrix and the
 * loopback rule for running without keys. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <string.h>

#include <cmocka.h>

#include "../auth.h"

#include "logpipe/banned.h"

static void test_parse_keys(void **state)
{
	struct gw_auth a;
	char err[200] = "", hex[2 * GW_SHA256_LEN + 1];

	assert_int_equal(gw_auth_parse(&a, " key-one:acme:ingest, read ;\nkey-two:ops:admin;", err,
				       sizeof(err)), 0);
	assert_int_equal(a.nkeys, 2);
	assert_string_equal(a.keys[0].tenant, "acme");
	assert_int_equal(a.keys[0].scopes, GW_SCOPE_INGEST | GW_SCOPE_READ);
	assert_string_equal(a.keys[1].tenant, "ops");
	assert_int_equal(a.keys[1].scopes, GW_SCOPE_ADMIN);
	/* Only the hash is kept (`printf key-one | sha256sum`); the id is
	 * its first 8 bytes in hex. */
	gw_hex(a.keys[0].hash, GW_SHA256_LEN, hex);
	assert_string_equal(hex, "9b346041bc9a49574eb2665b2ad2a0a3f9f9cce4e42f5d1f26deb8a256b5966a");
	assert_string_equal(a.keys[0].id, "9b346041bc9a4957");
	gw_auth_release(&a);

	assert_int_equal(gw_auth_parse(&a, NULL, err, sizeof(err)), 0);
	assert_int_equal(a.nkeys, 0);
	gw_auth_release(&a);
	assert_int_equal(gw_auth_parse(&a, " ; ", err, sizeof(err)), 0);
	assert_int_equal(a.nkeys, 0);
	gw_auth_release(&a);
}

/* The lookups reuse digest contexts from any thread: keys that differ in
 * length and in the last byte, looked up in turn by several threads, each
 * find their own entry every time (a context carrying state over from the
 * previous hash would make them miss). */
#define LOOKUPS 2000

static void *lookups(void *arg)
{
	const struct gw_auth *a = arg;
	static const char *const keys[] = { "key-one", "key-two", "key-one-longer", "key-onf" };
	size_t i;

	for (i = 0; i < LOOKUPS; i++) {
		const char *k = keys[i % 4];
		const struct gw_key *found = gw_auth_find(a, k, strlen(k));

		if (i % 4 == 3 ? found != NULL : found != &a->keys[i % 4 == 2 ? 2 : i % 4])
			return (void *)1;
	}
	return NULL;
}

static void test_lookups_reuse_contexts(void **state)
{
	struct gw_auth a;
	char err[200] = "";
	pthread_t th[4];
	void *bad;
	size_t i;

	(void)state;
	assert_int_equal(gw_auth_parse(&a, "key-one:a:ingest;key-two:b:read;key-one-longer:c:admin",
				       err, sizeof(err)), 0);
	assert_ptr_equal(lookups(&a), NULL);
	for (i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, lookups, &a), 0);
	for (i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(th[i], &bad), 0);
		assert_ptr_equal(bad, NULL);
	}
	gw_auth_release(&a);
}

static void test_parse_errors_never_show_the_key(void **state)
{
	static const char *const bad[] = {
		"sekrit-1",                     /* no tenant, no scopes */
		"sekrit-1:acme",                /* no scopes */
		"sekrit-1:acme:",               /* empty scopes */
		"sekrit-1:acme:write",          /* unknown scope */
		"sekrit-1:ac me:read",          /* bad tenant */
		":acme:read",                   /* empty key */
		"sekrit-1:acme:read;sekrit-1:other:admin", /* repeated key */
	};
	struct gw_auth a;
	char err[200];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(gw_auth_parse(&a, bad[i], err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "auth.keys"));
		if (strstr(err, "sekrit")) {
			print_error("error for \"%s\" shows the key: %s\n", bad[i], err);
			fail();
		}
		assert_int_equal(a.nkeys, 0);
		assert_null(a.keys);
	}
}

static void test_scopes(void **state)
{
	unsigned s = 0;

	assert_int_equal(gw_scopes_parse(" Ingest , READ", 14, &s), 0);
	assert_int_equal(s, GW_SCOPE_INGEST | GW_SCOPE_READ);
	assert_int_equal(gw_scopes_parse("read,,", 6, &s), 0);
	assert_int_equal(s, GW_SCOPE_READ);
	assert_int_equal(gw_scopes_parse("root", 4, &s), -EINVAL);
	assert_int_equal(gw_scopes_parse("", 0, &s), -EINVAL);
	assert_true(gw_scopes_allow(GW_SCOPE_ADMIN, GW_SCOPE_INGEST));
	assert_true(gw_scopes_allow(GW_SCOPE_ADMIN, GW_SCOPE_READ));
	assert_true(gw_scopes_allow(GW_SCOPE_READ, GW_SCOPE_READ));
	assert_false(gw_scopes_allow(GW_SCOPE_READ, GW_SCOPE_INGEST));
	assert_false(gw_scopes_allow(GW_SCOPE_INGEST | GW_SCOPE_READ, GW_SCOPE_ADMIN));
	assert_string_equal(gw_scope_name(GW_SCOPE_ADMIN), "admin");
}

static void test_presented_key(void **state)
{
	size_t n;
	const char *k;

	k = gw_auth_presented(" abc ", "Bearer other", &n);
	assert_int_equal(n, 3);
	assert_memory_equal(k, "abc", 3);
	k = gw_auth_presented(NULL, "bearer   tok-1  ", &n);
	assert_int_equal(n, 5);
	assert_memory_equal(k, "tok-1", 5);
	k = gw_auth_presented("", "Bearer tok-2", &n);
	assert_int_equal(n, 5);
	assert_memory_equal(k, "tok-2", 5);
	assert_null(gw_auth_presented(NULL, "Basic dXNlcjpwYXNz", &n));
	assert_null(gw_auth_presented(NULL, "Bearer", &n));
	assert_null(gw_auth_presented(NULL, "Bearertok", &n));
	assert_null(gw_auth_presented(NULL, NULL, &n));
	assert_int_equal(n, 0);
}

static void test_decision_matrix(void **state)
{
	struct gw_auth a, off = { 0 };
	const struct gw_key *k;
	char err[200];

	assert_int_equal(gw_auth_parse(&a, "ing:t1:ingest;rd:t2:read;adm:t3:admin", err,
				       sizeof(err)), 0);
	/* Auth off: everything passes, anonymously. */
	assert_int_equal(gw_auth_check(&off, NULL, NULL, GW_SCOPE_ADMIN, &k), GW_AUTH_OK);
	assert_null(k);
	/* Open routes need no key. */
	assert_int_equal(gw_auth_check(&a, NULL, NULL, GW_SCOPE_NONE, &k), GW_AUTH_OK);

	assert_int_equal(gw_auth_check(&a, NULL, NULL, GW_SCOPE_READ, &k), GW_AUTH_MISSING);
	assert_int_equal(gw_auth_check(&a, "nope", NULL, GW_SCOPE_READ, &k), GW_AUTH_UNKNOWN);
	assert_int_equal(gw_auth_check(&a, NULL, "Bearer in", GW_SCOPE_READ, &k),
			 GW_AUTH_UNKNOWN); /* a prefix of a key is not the key */
	assert_int_equal(gw_auth_check(&a, "ing", NULL, GW_SCOPE_READ, &k), GW_AUTH_FORBIDDEN);
	assert_non_null(k);
	assert_string_equal(k->tenant, "t1");
	assert_int_equal(gw_auth_check(&a, "ing", NULL, GW_SCOPE_INGEST, &k), GW_AUTH_OK);
	assert_int_equal(gw_auth_check(&a, NULL, "Bearer rd", GW_SCOPE_INGEST, &k),
			 GW_AUTH_FORBIDDEN);
	assert_int_equal(gw_auth_check(&a, NULL, "Bearer rd", GW_SCOPE_READ, &k), GW_AUTH_OK);
	assert_string_equal(k->tenant, "t2");
	assert_int_equal(gw_auth_check(&a, "rd", NULL, GW_SCOPE_ADMIN, &k), GW_AUTH_FORBIDDEN);
	assert_int_equal(gw_auth_check(&a, "adm", NULL, GW_SCOPE_ADMIN, &k), GW_AUTH_OK);
	assert_int_equal(gw_auth_check(&a, "adm", NULL, GW_SCOPE_INGEST, &k), GW_AUTH_OK);
	assert_string_equal(k->tenant, "t3");
	gw_auth_release(&a);
}

static void test_tenant_and_loopback(void **state)
{
	assert_true(gw_tenant_valid("acme-prod_1.eu:x@y", 18));
	assert_false(gw_tenant_valid("a b", 3));
	assert_false(gw_tenant_valid("a\r\nX-Evil: 1", 13));
	assert_false(gw_tenant_valid("", 0));

	assert_true(gw_listen_is_loopback("127.0.0.1:8080"));
	assert_true(gw_listen_is_loopback("[::1]:8080"));
	assert_true(gw_listen_is_loopback("127.0.0.1:8080,[::1]:8080"));
	assert_true(gw_listen_is_loopback("localhost:8080"));
	assert_false(gw_listen_is_loopback("8080"));
	assert_false(gw_listen_is_loopback("0.0.0.0:8080"));
	assert_false(gw_listen_is_loopback("127.0.0.1:8080,8443"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_keys),
		cmocka_unit_test(test_lookups_reuse_contexts),
		cmocka_unit_test(test_parse_errors_never_show_the_key),
		cmocka_unit_test(test_scopes),
		cmocka_unit_test(test_presented_key),
		cmocka_unit_test(test_decision_matrix),
		cmocka_unit_test(test_tenant_and_loopback),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
