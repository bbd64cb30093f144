/* test_buf.c - unit tests for the growable byte buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "logpipe/buf.h"

#include "logpipe/banned.h"

static void test_init_is_empty_string(void **state)
{
	struct lp_buf b = LP_BUF_INIT;

	assert_string_equal(b.buf, "");
	assert_int_equal(b.len, 0);
	assert_int_equal(b.alloc, 0);
	lp_buf_reset(&b);
	lp_buf_release(&b);
	assert_string_equal(b.buf, "");

	lp_buf_init(&b, 100);
	assert_true(b.alloc >= 101);
	assert_string_equal(b.buf, "");
	lp_buf_release(&b);
	assert_int_equal(b.alloc, 0);
}

static void test_add_and_grow(void **state)
{
	struct lp_buf b = LP_BUF_INIT;
	char big[1000];

	lp_buf_adds(&b, "abc");
	lp_buf_addch(&b, '-');
	lp_buf_add(&b, "xyz!", 3);
	lp_buf_add(&b, NULL, 0);
	assert_string_equal(b.buf, "abc-xyz");
	assert_int_equal(b.len, 7);

	memset(big, 'q', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	lp_buf_adds(&b, big);
	assert_int_equal(b.len, 7 + 999);
	assert_int_equal(strlen(b.buf), b.len);
	assert_true(b.alloc > b.len);

	lp_buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.buf, "");
	lp_buf_release(&b);
}

static void test_addf(void **state)
{
	struct lp_buf b = LP_BUF_INIT;
	char big[300];

	lp_buf_addf(&b, "%d-%s", 42, "x");
	assert_string_equal(b.buf, "42-x");
	/* Longer than the space left: exercises the second vsnprintf. */
	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	lp_buf_addf(&b, "[%s]", big);
	assert_int_equal(b.len, 4 + 2 + 299);
	assert_int_equal(b.buf[4], '[');
	assert_int_equal(b.buf[b.len - 1], ']');
	assert_int_equal(strlen(b.buf), b.len);
	lp_buf_release(&b);
}

static void test_json_str(void **state)
{
	struct lp_buf b = LP_BUF_INIT;

	lp_buf_add_json_str(&b, "plain");
	assert_string_equal(b.buf, "\"plain\"");
	lp_buf_reset(&b);
	lp_buf_add_json_str(&b, "q\"b\\n\nr\rt\t\x01\x1f\xc3\xa9");
	assert_string_equal(b.buf, "\"q\\\"b\\\\n\\nr\\rt\\t\\u0001\\u001f\xc3\xa9\"");
	lp_buf_reset(&b);
	lp_buf_add_json_str(&b, NULL);
	assert_string_equal(b.buf, "\"\"");
	lp_buf_release(&b);
}

static void test_detach(void **state)
{
	struct lp_buf b = LP_BUF_INIT;
	size_t len = 99;
	char *s;

	s = lp_buf_detach(&b, &len);
	assert_string_equal(s, "");
	assert_int_equal(len, 0);
	free(s);

	lp_buf_adds(&b, "hello");
	s = lp_buf_detach(&b, &len);
	assert_string_equal(s, "hello");
	assert_int_equal(len, 5);
	assert_string_equal(b.buf, "");
	assert_int_equal(b.alloc, 0);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_is_empty_string),
		cmocka_unit_test(test_add_and_grow),
		cmocka_unit_test(test_addf),
		cmocka_unit_test(test_json_str),
		cmocka_unit_test(test_detach),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
