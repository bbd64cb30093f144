/* test_lookup.c - unit tests for the tiered lookups: the tier-1 table
 * alone, and tier 3 against an in-process HTTP server standing in for the
 * metadata service (answers, 404s remembered, failures not remembered, the
 * breaker opening and the table's changes invalidating the memo). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "../lookup.h"
#include "../table.h"
#include "logpipe/breaker.h"
#include "logpipe/http.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

static struct mdtable *table_with_data(mdtable_change_fn fn, void *ud)
{
	static const char *const changes[][2] = {
		{ "host:web-1", "{\"hostname\":\"web-1\",\"ipAddress\":\"10.0.0.1\",\"datacenter\":\"dc1\"}" },
		{ "host:web-6", "{\"hostname\":\"web-6\",\"ipAddress\":\"2001:db8::6\",\"datacenter\":\"dc6\"}" },
		{ "service:api", "{\"name\":\"api\",\"team\":\"core\"}" },
	};
	struct mdtable *t = mdtable_new(fn, ud);
	size_t i;

	for (i = 0; i < LP_ARRAY_SIZE(changes); i++)
		assert_int_equal(mdtable_apply(t, changes[i][0], strlen(changes[i][0]), changes[i][1],
					       strlen(changes[i][1])),
				 0);
	return t;
}

static void expect(const struct lookup_answer *a, enum lookup_status st, const char *by,
		   const char *name)
{
	if (a->status != st)
		fail_msg("status %s, want %s", lookup_reason(a->status), lookup_reason(st));
	if (by)
		assert_string_equal(a->by, by);
	if (name) {
		assert_non_null(a->rec);
		assert_string_equal(a->rec->name, name);
	} else {
		assert_null(a->rec);
	}
}

static void test_table_only(void **state)
{
	struct lookup_opts o = { 0 };
	struct lookup_answer a;
	struct lookup *l;
	char err[128];

	o.table = table_with_data(NULL, NULL);
	l = lookup_new(&o, err, sizeof(err));
	assert_non_null(l);

	lookup_host(l, "web-1", NULL, &a);
	expect(&a, LOOKUP_FOUND, "host", "web-1");
	assert_int_equal(a.tier, TIER_LOCAL);
	lookup_answer_release(&a);
	/* Not found by name: the address finds it. */
	lookup_host(l, "unknown", "10.0.0.1", &a);
	expect(&a, LOOKUP_FOUND, "source_ip", "web-1");
	lookup_answer_release(&a);
	/* Addresses are compared in canonical form. */
	lookup_host(l, NULL, "2001:DB8:0:0::6", &a);
	expect(&a, LOOKUP_FOUND, "source_ip", "web-6");
	assert_string_equal(a.value, "2001:DB8:0:0::6"); /* the event's own text */
	lookup_answer_release(&a);
	/* With no other tier, the table is the truth. */
	lookup_host(l, "unknown", "10.9.9.9", &a);
	expect(&a, LOOKUP_NOT_FOUND, "host", NULL);
	assert_int_equal(a.failed_tiers, 0);
	lookup_host(l, NULL, "", &a);
	expect(&a, LOOKUP_NO_FIELD, NULL, NULL);
	lookup_service(l, "api", &a);
	expect(&a, LOOKUP_FOUND, "service", "api");
	lookup_answer_release(&a);
	lookup_service(l, "nope", &a);
	expect(&a, LOOKUP_NOT_FOUND, "service", NULL);

	lookup_free(l);
	mdtable_free(o.table);
}

/* ---- tier 3 against a stand-in metadata service ------------------------------------- */

struct fake {
	int calls;        /* requests served */
	int fail;         /* answer 500 while set */
};

static void fake_host(struct lp_http_req *r, void *ud)
{
	struct fake *f = ud;

	f->calls++;
	if (f->fail) {
		lp_http_reply_error(r, 500, "boom", NULL, "failing on purpose");
		return;
	}
	if (!strcmp(r->param, "db-1")) {
		lp_http_reply_json(r, 200,
				   json_pack("{s:s, s:s, s:s}", "hostname", "db-1", "datacenter",
					     "dc-rest", "ipAddress", "10.1.1.1"),
				   NULL);
		return;
	}
	lp_http_reply_error(r, 404, "not_found", NULL, "no host '%s'", r->param);
}

static struct lp_http_server *start_fake(struct fake *f, int *port)
{
	struct lp_http_opts ho = { 0 };
	char listen[32], err[256];
	int attempt;

	for (attempt = 0; attempt < 20; attempt++) {
		struct lp_http_server *s;

		*port = 20000 + (int)(lp_now_us() % 20000);
		snprintf(listen, sizeof(listen), "127.0.0.1:%d", *port);
		ho.listen = listen;
		ho.threads = 2;
		ho.service = "fake-metadata";
		s = lp_http_server_new(&ho, err, sizeof(err));
		assert_non_null(s);
		lp_http_route(s, "GET", "/api/metadata/hosts/*", fake_host, f);
		if (lp_http_start(s, err, sizeof(err)) == 0)
			return s;
		lp_http_server_free(s);
	}
	fail_msg("no free port for the fake metadata service");
	return NULL;
}

static void on_change(void *ud, const char *key)
{
	lookup_invalidate(*(struct lookup **)ud, key);
}

static void test_metadata_tier(void **state)
{
	struct fake f = { 0 };
	struct lookup_opts o = { 0 };
	struct lookup_answer a;
	struct lookup *l = NULL;
	struct lp_http_server *srv;
	char url[64], err[128];
	int port, i;

	srv = start_fake(&f, &port);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
	o.table = mdtable_new(on_change, &l);
	o.metadata_url = url;
	o.metadata_timeout_ms = 1000;
	o.negative_ttl_ms = 60000;
	o.positive_ttl_ms = 60000;
	l = lookup_new(&o, err, sizeof(err));
	assert_non_null(l);

	/* Found over REST, then remembered. */
	lookup_host(l, "db-1", NULL, &a);
	expect(&a, LOOKUP_FOUND, "host", "db-1");
	assert_int_equal(a.tier, TIER_METADATA);
	assert_string_equal(a.rec->attr[0], "dc-rest");
	lookup_answer_release(&a);
	lookup_host(l, "db-1", NULL, &a);
	expect(&a, LOOKUP_FOUND, "host", "db-1");
	lookup_answer_release(&a);
	assert_int_equal(f.calls, 1);

	/* 404 is an answer, remembered too. */
	lookup_host(l, "ghost", NULL, &a);
	expect(&a, LOOKUP_NOT_FOUND, "host", NULL);
	lookup_host(l, "ghost", NULL, &a);
	expect(&a, LOOKUP_NOT_FOUND, "host", NULL);
	assert_int_equal(f.calls, 2);

	/* A change from the feed invalidates the remembered "not found", and
	 * the table answers. */
	assert_int_equal(mdtable_apply(o.table, "host:ghost", 10,
				       "{\"hostname\":\"ghost\",\"datacenter\":\"dc-new\"}", 42),
			 0);
	lookup_host(l, "ghost", NULL, &a);
	expect(&a, LOOKUP_FOUND, "host", "ghost");
	assert_int_equal(a.tier, TIER_LOCAL);
	lookup_answer_release(&a);

	/* Failures are not remembered; enough of them open the breaker, and
	 * then the service is not called at all. */
	f.fail = 1;
	for (i = 0; i < 5; i++) {
		lookup_host(l, "other", NULL, &a);
		expect(&a, LOOKUP_METADATA_UNAVAILABLE, "host", NULL);
		assert_int_equal(a.failed_tiers, 1u << TIER_METADATA);
	}
	/* Window: 2 successes, then 3 failures reach 60 % of 5 calls. */
	assert_int_equal(f.calls, 5);
	assert_int_equal(lp_breaker_state(lookup_breaker(l, TIER_METADATA)), LP_BREAKER_OPEN);

	lookup_free(l);
	mdtable_free(o.table);
	lp_http_server_free(srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_only),
		cmocka_unit_test(test_metadata_tier),
	};
	int rc;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
