/* test_batch.c - splitting batch bodies (batch.c): arrays, NDJSON, errors
 * per item with their index, limits. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "logpipe/event.h"

#include "logpipe/banned.h"

/* What the callback saw. */
struct seen {
	size_t n;         /* callbacks so far */
	size_t stop_at;   /* return non-zero on this callback (1-based), 0 never */
	size_t index[16]; /* the index passed each time */
	char what[16][160]; /* the item's "message", or "!" and the error */
};

static int collect(void *ud, size_t index, json_t *item, const char *error)
{
	struct seen *s = ud;
	assert_true(s->n < 16);
	assert_true((item == NULL) != (error == NULL));
	s->index[s->n] = index;
	if (item)
		snprintf(s->what[s->n], sizeof(s->what[0]), "%s",
			 json_string_value(json_object_get(item, "message")));
	else
		snprintf(s->what[s->n], sizeof(s->what[0]), "!%s", error);
	s->n++;
	return s->stop_at && s->n == s->stop_at;
}

static long split(const char *body, size_t max, struct seen *s, char *err, size_t errlen)
{
	memset(s, 0, sizeof(*s));
	return lp_batch_split(body, strlen(body), max, collect, s, err, errlen);
}

static void test_array(void **state)
{
	struct seen s;
	char err[128] = "";
	const char *body = " [ {\"message\":\"a\"}, {\"message\":\"b\"},\n{\"message\":\"c\"} ] ";
	long n = split(body, 10, &s, err, sizeof(err));
	assert_int_equal(n, 3);
	assert_int_equal(s.n, 3);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(s.index[i], i);
	assert_string_equal(s.what[0], "a");
	assert_string_equal(s.what[1], "b");
	assert_string_equal(s.what[2], "c");
}

static void test_array_non_objects(void **state)
{
	struct seen s;
	char err[128] = "";
	const char *body = "[{\"message\":\"a\"}, 42, [1], \"x\", null, {\"message\":\"f\"}]";
	long n = split(body, 10, &s, err, sizeof(err));
	assert_int_equal(n, 6);
	assert_string_equal(s.what[0], "a");
	assert_string_equal(s.what[1], "!expected a JSON object, not a number");
	assert_string_equal(s.what[2], "!expected a JSON object, not an array");
	assert_string_equal(s.what[3], "!expected a JSON object, not a string");
	assert_string_equal(s.what[4], "!expected a JSON object, not null");
	assert_string_equal(s.what[5], "f");
	assert_int_equal(s.index[5], 5);
}

static void test_ndjson(void **state)
{
	struct seen s;
	char err[128] = "";
	/* CRLF line ends, blank lines, no newline at the end. */
	const char *body = "{\"message\":\"a\"}\r\n\r\n  \n"
			   "{\"message\":\"b\"}\n\t\n"
			   "{\"message\":\"c\"}";
	long n = split(body, 10, &s, err, sizeof(err));
	assert_int_equal(n, 3);
	assert_int_equal(s.n, 3);
	assert_string_equal(s.what[0], "a");
	assert_string_equal(s.what[1], "b");
	assert_string_equal(s.what[2], "c");
	assert_int_equal(s.index[2], 2); /* blank lines are not items */
}

static void test_ndjson_mixed_errors(void **state)
{
	struct seen s;
	char err[128] = "";
	long n = split("{\"message\":\"a\"}\n"
		       "\n"
		       "{\"message\": oops}\n"
		       "[1,2]\n"
		       "{\"message\":\"e\"}\n"
		       "{\"message\":\"\xff\"}\n",
		       10, &s, err, sizeof(err));
	assert_int_equal(n, 5);
	assert_string_equal(s.what[0], "a");
	assert_int_equal(s.index[1], 1);
	if (strncmp(s.what[1], "!line 3: invalid JSON at column", 31) != 0)
		print_error("got '%s'\n", s.what[1]);
	assert_int_equal(strncmp(s.what[1], "!line 3: invalid JSON at column", 31), 0);
	assert_int_equal(s.index[2], 2);
	assert_string_equal(s.what[2], "!line 4: expected a JSON object, not an array");
	assert_string_equal(s.what[3], "e");
	assert_int_equal(s.index[4], 4);
	assert_int_equal(strncmp(s.what[4], "!line 6: ", 9), 0);
}

static void test_single_pretty_object(void **state)
{
	struct seen s;
	char err[128] = "";
	long n = split("{\n  \"message\": \"one\",\n  \"level\": \"INFO\"\n}\n", 10, &s, err,
		       sizeof(err));
	assert_int_equal(n, 1);
	assert_string_equal(s.what[0], "one");
	assert_int_equal(split("{\"message\":\"one\"}", 0, &s, err, sizeof(err)), -E2BIG);
	assert_int_equal(s.n, 0);
}

static void test_too_many(void **state)
{
	struct seen s;
	char err[128] = "";
	assert_int_equal(split("[{},{},{}]", 2, &s, err, sizeof(err)), -E2BIG);
	assert_int_equal(s.n, 0); /* refused whole, before any callback */
	assert_string_equal(err, "batch holds more than 2 items");
	err[0] = '\0';
	assert_int_equal(split("{}\n{}\n\n{}\n", 2, &s, err, sizeof(err)), -E2BIG);
	assert_int_equal(s.n, 0);
	assert_string_equal(err, "batch holds more than 2 items");
	/* Exactly at the cap is fine; blank lines do not count. */
	assert_int_equal(split("{}\n\n\n{}\n", 2, &s, err, sizeof(err)), 2);
	assert_int_equal(split("[{},{}]", 2, &s, err, sizeof(err)), 2);
}

static void test_empty(void **state)
{
	static const char *const bodies[] = {"", "   ", "\n\n\r\n", "[]", " [ ] ", "\xef\xbb\xbf"};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		struct seen s;
		char err[128] = "";
		assert_int_equal(split(bodies[i], 10, &s, err, sizeof(err)), -EINVAL);
		assert_string_equal(err, "empty batch");
		assert_int_equal(s.n, 0);
	}
	char err[128] = "";
	assert_int_equal(lp_batch_split(NULL, 0, 10, collect, NULL, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "empty batch");
}

static void test_invalid_array(void **state)
{
	struct seen s;
	char err[128] = "";
	assert_int_equal(split("[{\"message\":\"a\"}, {bad}]", 10, &s, err, sizeof(err)), -EINVAL);
	assert_int_equal(s.n, 0);
	assert_int_equal(strncmp(err, "invalid JSON array at line 1", 28), 0);
	/* err is optional */
	assert_int_equal(split("[", 10, &s, NULL, 0), -EINVAL);
}

static void test_bom_and_whitespace(void **state)
{
	struct seen s;
	char err[128] = "";
	const char *arr = "\xef\xbb\xbf\n  [{\"message\":\"a\"}]\n\n";
	assert_int_equal(split(arr, 10, &s, err, sizeof(err)), 1);
	assert_string_equal(s.what[0], "a");
	const char *nd = "\xef\xbb\xbf{\"message\":\"a\"}\n{\"message\":\"b\"}\n";
	assert_int_equal(split(nd, 10, &s, err, sizeof(err)), 2);
	assert_string_equal(s.what[1], "b");
}

static void test_stop_early(void **state)
{
	struct seen s;
	memset(&s, 0, sizeof(s));
	s.stop_at = 2;
	const char *nd = "{\"message\":\"a\"}\n{\"message\":\"b\"}\n{\"message\":\"c\"}\n";
	assert_int_equal(lp_batch_split(nd, strlen(nd), 10, collect, &s, NULL, 0), 2);
	assert_int_equal(s.n, 2);

	memset(&s, 0, sizeof(s));
	s.stop_at = 1;
	const char *arr = "[{\"message\":\"a\"},{\"message\":\"b\"}]";
	assert_int_equal(lp_batch_split(arr, strlen(arr), 10, collect, &s, NULL, 0), 1);
	assert_int_equal(s.n, 1);
}

/* The body need not be NUL-terminated: only len bytes are read. */
static void test_length_bounded(void **state)
{
	struct seen s;
	memset(&s, 0, sizeof(s));
	const char body[] = "{\"message\":\"a\"}\n{\"message\":\"b\"}\nGARBAGE";
	assert_int_equal(lp_batch_split(body, sizeof(body) - 1 - 7, 10, collect, &s, NULL, 0), 2);
	assert_string_equal(s.what[1], "b");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_array),
		cmocka_unit_test(test_array_non_objects),
		cmocka_unit_test(test_ndjson),
		cmocka_unit_test(test_ndjson_mixed_errors),
		cmocka_unit_test(test_single_pretty_object),
		cmocka_unit_test(test_too_many),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_invalid_array),
		cmocka_unit_test(test_bom_and_whitespace),
		cmocka_unit_test(test_stop_early),
		cmocka_unit_test(test_length_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
