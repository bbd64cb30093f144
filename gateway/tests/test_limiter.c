/* test_limiter.c - the rate limiter's pure parts (lease size, RateLimit
 * headers, Retry-After jitter) and its local fallback: without Redis, and
 * with a Redis that does not answer. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "logpipe/breaker.h"
#include "logpipe/util.h"
#include "../limiter.h"

#include "logpipe/banned.h"

static void test_lease_size(void **state)
{
	assert_int_equal(gw_lease_size(1000, 20), 50);
	assert_int_equal(gw_lease_size(100, 20), 5);
	assert_int_equal(gw_lease_size(10, 20), 1);
	assert_int_equal(gw_lease_size(0, 20), 1);
	assert_int_equal(gw_lease_size(7, 0), 7);
}

static void test_headers(void **state)
{
	struct gw_limit d = { .allowed = true, .limit = 1000, .remaining = 998, .reset_s = 1 };
	char out[512], tiny[40];
	size_t n;

	n = gw_ratelimit_headers(&d, NULL, out, sizeof(out));
	assert_int_equal(n, strlen(out));
	assert_string_equal(out, "RateLimit-Limit: 1000\r\n"
				 "RateLimit-Remaining: 998\r\n"
				 "RateLimit-Reset: 1\r\n"
				 "RateLimit-Policy: 1000;w=1\r\n"
				 "RateLimit: limit=1000, remaining=998, reset=1\r\n");
	/* A negative estimate never shows. */
	d.remaining = -3;
	gw_ratelimit_headers(&d, NULL, out, sizeof(out));
	assert_non_null(strstr(out, "RateLimit-Remaining: 0\r\n"));
	/* The unit of the limit, in the policy (issue #17 item 5). */
	d.remaining = 998;
	gw_ratelimit_headers(&d, "events", out, sizeof(out));
	assert_string_equal(out, "RateLimit-Limit: 1000\r\n"
				 "RateLimit-Remaining: 998\r\n"
				 "RateLimit-Reset: 1\r\n"
				 "RateLimit-Policy: 1000;w=1;qu=\"events\"\r\n"
				 "RateLimit: limit=1000, remaining=998, reset=1\r\n");
	d.remaining = -3;
	/* Too small a buffer gives nothing rather than a cut header. */
	assert_int_equal(gw_ratelimit_headers(&d, NULL, tiny, sizeof(tiny)), 0);
	assert_string_equal(tiny, "");
}

static void test_retry_after_jitter(void **state)
{
	unsigned seed = 42;
	int i, v, seen_low = 0, seen_high = 0;

	for (i = 0; i < 1000; i++) {
		v = gw_retry_after_s(2, 3, &seed);
		assert_in_range(v, 2, 5);
		seen_low |= v == 2;
		seen_high |= v == 5;
	}
	assert_true(seen_low && seen_high);
	assert_int_equal(gw_retry_after_s(0, 0, &seed), 1);
	assert_int_equal(gw_retry_after_s(3, 0, &seed), 3);
}

static int take_n(struct gw_limiter *l, const char *key, long limit, int n, struct gw_limit *last)
{
	int ok = 0, i;

	for (i = 0; i < n; i++) {
		gw_limiter_take_wait(l, key, limit, 1, last);
		ok += last->allowed;
	}
	return ok;
}

static void test_local_only(void **state)
{
	struct gw_limiter_opts o = { 0 };
	struct gw_limiter *l = gw_limiter_new(&o);
	struct gw_limit d;

	assert_null(gw_limiter_breaker(l));
	assert_int_equal(gw_limiter_ping(l), -ENOENT);
	/* A burst of one second's worth, then refusals. */
	assert_int_equal(take_n(l, "api:ip:10.0.0.1", 20, 20, &d), 20);
	assert_true(d.local);
	assert_int_equal(d.limit, 20);
	assert_int_equal(take_n(l, "api:ip:10.0.0.1", 20, 5, &d), 0);
	assert_false(d.allowed);
	assert_int_equal(d.remaining, 0);
	assert_in_range(d.reset_s, 1, 1);
	/* Clients do not share budgets. */
	assert_int_equal(take_n(l, "api:ip:10.0.0.2", 20, 20, &d), 20);
	gw_limiter_free(l);
}

/* Issue #17 item 5: a request takes as many tokens as it costs (a batch
 * its events), all or none; one costing more than the whole window is
 * refused as too large rather than left to wait for ever. */
static void test_take_costs_tokens(void **state)
{
	struct gw_limiter_opts o = { 0 };
	struct gw_limiter *l = gw_limiter_new(&o);
	struct gw_limit d;
	int ok = 0, i;

	(void)state;
	for (i = 0; i < 20; i++) {
		gw_limiter_take_wait(l, "ingest:k:batch", 1000, 100, &d);
		ok += d.allowed;
		assert_false(d.too_large);
	}
	/* 1000 tokens a second: ten batches of 100, not 1000 of them. */
	assert_int_equal(ok, 10);
	assert_int_equal(d.remaining, 0);
	assert_false(d.allowed);
	/* All or none: a partial take leaves the rest for a smaller request. */
	gw_limiter_take_wait(l, "ingest:k:part", 100, 60, &d);
	assert_true(d.allowed);
	assert_int_equal(d.remaining, 40);
	gw_limiter_take_wait(l, "ingest:k:part", 100, 60, &d);
	assert_false(d.allowed);
	assert_false(d.too_large);
	assert_int_equal(d.remaining, 40);
	gw_limiter_take_wait(l, "ingest:k:part", 100, 40, &d);
	assert_true(d.allowed);
	assert_int_equal(d.remaining, 0);
	/* More than a window holds: too large, and nothing spent. */
	gw_limiter_take_wait(l, "ingest:k:big", 100, 101, &d);
	assert_false(d.allowed);
	assert_true(d.too_large);
	gw_limiter_take(l, "ingest:k:big", 100, 100, &d);
	assert_true(d.allowed);
	assert_false(d.too_large);
	/* A cost below one is one. */
	gw_limiter_take(l, "ingest:k:zero", 2, 0, &d);
	gw_limiter_take(l, "ingest:k:zero", 2, -5, &d);
	assert_true(d.allowed);
	gw_limiter_take(l, "ingest:k:zero", 2, 0, &d);
	assert_false(d.allowed);
	gw_limiter_free(l);

	/* The local share of 4 instances holds 25 of 100: 26 is too large. */
	o.instances = 4;
	l = gw_limiter_new(&o);
	gw_limiter_take_wait(l, "ingest:k:share", 100, 26, &d);
	assert_true(d.too_large);
	gw_limiter_take_wait(l, "ingest:k:share", 100, 25, &d);
	assert_true(d.allowed);
	gw_limiter_free(l);
}

static void test_local_share_of_instances(void **state)
{
	struct gw_limiter_opts o = { .instances = 4 };
	struct gw_limiter *l = gw_limiter_new(&o);
	struct gw_limit d;

	/* Each of 4 gateways enforces a quarter while deciding alone. */
	assert_int_equal(take_n(l, "ingest:k:abc", 100, 40, &d), 25);
	assert_int_equal(d.limit, 25);
	gw_limiter_free(l);
}

static void test_redis_down_falls_back(void **state)
{
	/* Port 9 (discard) on loopback: nothing listens, connect is refused. */
	struct gw_limiter_opts o = { .redis_url = "redis://127.0.0.1:9", .redis_timeout_ms = 50 };
	struct gw_limiter *l = gw_limiter_new(&o);
	struct gw_limit d;

	assert_non_null(gw_limiter_breaker(l));
	assert_int_equal(take_n(l, "api:k:1", 10, 30, &d), 10);
	assert_true(d.local);
	assert_int_not_equal(gw_limiter_ping(l), 0);
	gw_limiter_free(l);
}

/* A "Redis" on 127.0.0.1 that takes connections (the kernel's backlog)
 * and never answers: every command waits for redis_timeout_ms. */
static int stalled_redis(int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 64), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

static atomic_int leases_ended;

static void lease_ended(void *ud)
{
	(void)ud;
	atomic_fetch_add(&leases_ended, 1);
}

/* Issue #18: the event loops call gw_limiter_take; a lease waiting on a
 * stalled Redis must not hold them.  take returns at once while the lease
 * is in flight, and the client is decided locally once it failed. */
static void test_take_never_waits_for_redis(void **state)
{
	struct gw_limiter_opts o = { .redis_timeout_ms = 1500 };
	struct gw_limiter *l;
	struct gw_limit d;
	char url[64];
	int64_t t0, end;
	int port, lfd = stalled_redis(&port), i;

	(void)state;
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
	o.redis_url = url;
	l = gw_limiter_new(&o);
	gw_limiter_on_lease(l, lease_ended, NULL);
	for (i = 0; i < 50; i++) {
		t0 = lp_now_ms();
		gw_limiter_take(l, "ingest:k:slow", 100, 1, &d);
		assert_true(lp_now_ms() - t0 < 100); /* a Redis call would take 1500 ms */
		assert_false(d.allowed);
		assert_true(d.pending);
	}
	/* The lease fails at its timeout and says so; the client is then
	 * decided locally. */
	end = lp_now_ms() + 5000;
	while (atomic_load(&leases_ended) == 0 && lp_now_ms() < end)
		usleep(10 * 1000);
	assert_int_equal(atomic_load(&leases_ended), 1);
	gw_limiter_take(l, "ingest:k:slow", 100, 1, &d);
	assert_true(d.local);
	assert_true(d.allowed);
	assert_false(d.pending);
	gw_limiter_free(l);
	close(lfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lease_size),
		cmocka_unit_test(test_headers),
		cmocka_unit_test(test_retry_after_jitter),
		cmocka_unit_test(test_local_only),
		cmocka_unit_test(test_take_costs_tokens),
		cmocka_unit_test(test_local_share_of_instances),
		cmocka_unit_test(test_redis_down_falls_back),
		cmocka_unit_test(test_take_never_waits_for_redis),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
