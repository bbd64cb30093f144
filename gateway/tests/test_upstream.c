/* test_upstream.c - what the proxy passes on: response headers worth
 * forwarding, path encoding for the upstream URL, and W3C traceparent
 * propagation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "logpipe/buf.h"
#include "../upstream.h"

#include "logpipe/banned.h"

static bool fwd(const char *name)
{
	return gw_header_forwardable(name, strlen(name));
}

static void test_forwardable_headers(void **state)
{
	assert_true(fwd("Retry-After"));
	assert_true(fwd("retry-after"));
	assert_true(fwd("Location"));
	assert_true(fwd("RateLimit-Remaining"));
	assert_true(fwd("RateLimit"));
	assert_true(fwd("RateLimit-Policy"));
	assert_true(fwd("X-RateLimit-Limit"));
	assert_true(fwd("ETag"));
	assert_false(fwd("RateLimit-")); /* a prefix alone is no header */
	assert_false(fwd("Content-Length"));
	assert_false(fwd("Transfer-Encoding"));
	assert_false(fwd("Connection"));
	assert_false(fwd("X-Request-ID")); /* the gateway sets its own */
	assert_false(fwd("Set-Cookie"));
	assert_false(fwd("Server"));
}

static void test_path_encode(void **state)
{
	struct lp_buf b = LP_BUF_INIT;

	gw_path_encode("/api/metadata/hosts/web-1.eu_x~", &b);
	assert_string_equal(b.buf, "/api/metadata/hosts/web-1.eu_x~");
	lp_buf_reset(&b);
	gw_path_encode("/api/logs/a b?c#d%e", &b);
	assert_string_equal(b.buf, "/api/logs/a%20b%3Fc%23d%25e");
	lp_buf_reset(&b);
	gw_path_encode("/h/\xc3\xa9\r\n", &b);
	assert_string_equal(b.buf, "/h/%C3%A9%0D%0A");
	lp_buf_release(&b);
}

static void test_traceparent_continues_the_trace(void **state)
{
	static const char in[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
	char out[56], trace[33];

	gw_traceparent(in, out, trace);
	assert_string_equal(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
	assert_int_equal(strlen(out), 55);
	assert_memory_equal(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36);
	/* A new span id for the gateway's hop, flags kept. */
	assert_memory_not_equal(out + 36, "00f067aa0ba902b7", 16);
	assert_string_equal(out + 52, "-01");

	gw_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", out, trace);
	assert_string_equal(out + 52, "-00");
}

static void test_traceparent_new_when_invalid(void **state)
{
	static const char *const bad[] = {
		NULL,
		"",
		"garbage",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* version ff */
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero trace */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", /* zero span */
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* upper case */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* trailing junk */
	};
	char out[56], trace[33], first[33] = "";
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		gw_traceparent(bad[i], out, trace);
		assert_int_equal(strlen(out), 55);
		assert_memory_equal(out, "00-", 3);
		assert_memory_equal(out + 3, trace, 32);
		assert_string_equal(out + 52, "-01");
		assert_string_not_equal(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
		assert_string_not_equal(trace, first); /* fresh each time */
		memcpy(first, trace, sizeof(first));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_forwardable_headers),
		cmocka_unit_test(test_path_encode),
		cmocka_unit_test(test_traceparent_continues_the_trace),
		cmocka_unit_test(test_traceparent_new_when_invalid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
