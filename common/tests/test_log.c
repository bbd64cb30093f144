/* test_log.c - unit tests for the JSON log lines. */
#include <errno.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "logpipe/json.h"
#include "logpipe/log.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

/* Runs fn with stderr sent to a temporary file; returns what it wrote. */
static char *capture_stderr(void (*fn)(void))
{
	FILE *tmp = tmpfile();
	int saved = dup(STDERR_FILENO);
	char *text = calloc(1, 8192);
	size_t n;

	assert_non_null(tmp);
	dup2(fileno(tmp), STDERR_FILENO);
	fn();
	dup2(saved, STDERR_FILENO);
	close(saved);
	rewind(tmp);
	n = fread(text, 1, 8191, tmp);
	text[n] = '\0';
	fclose(tmp);
	return text;
}

static json_t *parse_line(const char *line)
{
	json_error_t jerr;
	json_t *j = lp_json_loads(line, JSON_DISABLE_EOF_CHECK, &jerr);

	if (!j)
		fail_msg("not JSON (%s): %s", jerr.text, line);
	return j;
}

static const char *field(json_t *j, const char *key)
{
	const char *v = json_string_value(json_object_get(j, key));

	return v ? v : "(missing)";
}

static void log_basic(void)
{
	lp_log_init("svc", LP_LOG_INFO);
	lp_info("hello %d \"quoted\"\nnext", 42);
}

static void test_line_fields(void **state)
{
	char *text = capture_stderr(log_basic);
	json_t *j = parse_line(text);
	const char *ts = field(j, "ts");

	assert_int_equal(strlen(ts), 24); /* 2024-01-15T14:23:45.123Z */
	assert_int_equal(ts[10], 'T');
	assert_int_equal(ts[19], '.');
	assert_int_equal(ts[23], 'Z');
	assert_string_equal(field(j, "level"), "info");
	assert_string_equal(field(j, "service"), "svc");
	assert_string_equal(field(j, "msg"), "hello 42 \"quoted\"\nnext");
	assert_null(json_object_get(j, "trace_id"));
	/* One line, ending in a newline, in the documented key order. */
	assert_string_equal(strchr(text, '\n'), "\n");
	assert_true(strstr(text, "\"ts\"") < strstr(text, "\"level\""));
	assert_true(strstr(text, "\"service\"") < strstr(text, "\"msg\""));
	json_decref(j);
	free(text);
}

static void log_plain_and_percent(void)
{
	lp_log_init("svc", LP_LOG_INFO);
	lp_info("plain text");
	lp_info("100%% done");
	lp_info("%s", "");
}

/* A message without conversions is written as it is; with them, formatted,
 * even when the result is empty. */
static void test_message_forms(void **state)
{
	char *text = capture_stderr(log_plain_and_percent);
	char *l2 = strchr(text, '\n') + 1, *l3 = strchr(l2, '\n') + 1;
	json_t *a = parse_line(text), *b = parse_line(l2), *c = parse_line(l3);

	assert_string_equal(field(a, "msg"), "plain text");
	assert_string_equal(field(b, "msg"), "100% done");
	assert_string_equal(field(c, "msg"), "");
	json_decref(a);
	json_decref(b);
	json_decref(c);
	free(text);
}

static void log_many(void)
{
	lp_log_init("svc", LP_LOG_INFO);
	for (int i = 0; i < 40; i++) {
		lp_info("line %d", i);
		usleep(30 * 1000);
	}
}

/* The timestamp is cached per second and only its milliseconds rewritten:
 * over 1.2 s of lines every stamp must still be valid, never go back, and
 * match the clock around it. */
static void test_timestamps_follow_the_clock(void **state)
{
	int64_t before = lp_wall_ms(), prev = 0, t;
	char *text = capture_stderr(log_many);
	int64_t after = lp_wall_ms();
	char *line = text;
	int n = 0;

	while (line && *line) {
		json_t *j = parse_line(line);

		assert_int_equal(lp_parse_rfc3339(field(j, "ts"), &t), 0);
		assert_true(t >= before && t <= after);
		assert_true(t >= prev);
		prev = t;
		n++;
		json_decref(j);
		line = strchr(line, '\n');
		line = line ? line + 1 : NULL;
	}
	assert_int_equal(n, 40);
	free(text);
}

static off_t buffered_sizes[3];

static off_t stderr_size(void)
{
	struct stat st;

	return fstat(STDERR_FILENO, &st) == 0 ? st.st_size : -1;
}

static void log_buffered(void)
{
	lp_log_init("svc", LP_LOG_INFO);
	assert_int_equal(lp_log_buffer(10000), 0);
	lp_info("one");
	lp_info("two");
	buffered_sizes[0] = stderr_size();
	lp_warn("three");
	buffered_sizes[1] = stderr_size();
	lp_info("four");
	lp_log_flush();
	buffered_sizes[2] = stderr_size();
	assert_int_equal(lp_log_buffer(0), 0);
}

/* Buffered lines wait for a warning, a flush or the interval, and come
 * out whole and in order. */
static void test_buffered(void **state)
{
	char *text = capture_stderr(log_buffered);
	const char *want[] = { "one", "two", "three", "four" };
	char *line = text;

	(void)state;
	assert_int_equal(buffered_sizes[0], 0);
	assert_true(buffered_sizes[1] > 0);
	assert_true(buffered_sizes[2] > buffered_sizes[1]);
	for (size_t i = 0; i < 4; i++) {
		json_t *j = parse_line(line);

		assert_string_equal(field(j, "msg"), want[i]);
		json_decref(j);
		line = strchr(line, '\n') + 1;
	}
	assert_string_equal(line, "");
	free(text);
}

#define TRACE_A "0af7651916cd43dd8448eb211c80319c"
#define TRACE_B "4bf92f3577b34da6a3ce929d0e0e4736"

static void log_kv_trace(void)
{
	lp_log_init("svc", LP_LOG_DEBUG);
	lp_log_set_request("req-1", TRACE_A);
	lp_log_kv(LP_LOG_WARN, (const char *const[]){ "topic", "raw-logs", "k\"", "v\\", NULL },
		  "created");
	/* A record's own trace wins over the thread's; a NULL value is left out. */
	lp_log_kv(LP_LOG_INFO, (const char *const[]){ "gone", NULL, "trace_id", TRACE_B, NULL },
		  "about a record");
	lp_log_set_request(NULL, NULL);
	lp_debug("after");
}

static void test_kv_and_trace(void **state)
{
	char *text = capture_stderr(log_kv_trace);
	char *second = strchr(text, '\n') + 1;
	char *third = strchr(second, '\n') + 1;
	json_t *j = parse_line(text);
	json_t *r = parse_line(second);
	json_t *k = parse_line(third);

	assert_string_equal(field(j, "level"), "warn");
	assert_string_equal(field(j, "msg"), "created");
	assert_string_equal(field(j, "topic"), "raw-logs");
	assert_string_equal(field(j, "k\""), "v\\");
	assert_string_equal(field(j, "request_id"), "req-1");
	assert_string_equal(field(j, "trace_id"), TRACE_A);
	assert_true(strstr(text, "\"topic\"") < strstr(text, "\"request_id\""));
	assert_true(strstr(text, "\"request_id\"") < strstr(text, "\"trace_id\""));
	assert_string_equal(field(r, "trace_id"), TRACE_B);
	assert_string_equal(field(r, "request_id"), "req-1");
	assert_null(json_object_get(r, "gone"));
	assert_int_equal(json_object_size(r), 6); /* ts level service msg trace_id request_id */
	assert_string_equal(field(k, "level"), "debug");
	assert_null(json_object_get(k, "trace_id"));
	assert_null(json_object_get(k, "request_id"));
	json_decref(j);
	json_decref(r);
	json_decref(k);
	free(text);
}

/* errno as lp_error left it. */
static int errno_after;

static void log_filtered(void)
{
	lp_log_init("svc", LP_LOG_WARN);
	errno = ENOENT;
	lp_debug("dropped");
	lp_info("dropped");
	lp_error("kept: %s", strerror(errno));
	errno_after = errno;
}

static void test_level_filter_keeps_errno(void **state)
{
	char *text = capture_stderr(log_filtered);
	json_t *j = parse_line(text);

	assert_int_equal(errno_after, ENOENT);
	assert_string_equal(field(j, "msg"), "kept: No such file or directory");
	assert_string_equal(field(j, "level"), "error");
	assert_null(strchr(strchr(text, '\n') + 1, '\n')); /* only one line */
	json_decref(j);
	free(text);
}

static void test_level_parse(void **state)
{
	enum lp_log_level l = LP_LOG_INFO;

	assert_int_equal(lp_log_level_parse("debug", &l), 0);
	assert_int_equal(l, LP_LOG_DEBUG);
	assert_int_equal(lp_log_level_parse("WARN", &l), 0);
	assert_int_equal(l, LP_LOG_WARN);
	assert_int_equal(lp_log_level_parse("warning", &l), 0);
	assert_int_equal(l, LP_LOG_WARN);
	assert_int_equal(lp_log_level_parse("error", &l), 0);
	assert_int_equal(l, LP_LOG_ERROR);
	assert_int_equal(lp_log_level_parse("loud", &l), -EINVAL);
	assert_int_equal(l, LP_LOG_ERROR);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_line_fields),
		cmocka_unit_test(test_kv_and_trace),
		cmocka_unit_test(test_message_forms),
		cmocka_unit_test(test_buffered),
		cmocka_unit_test(test_timestamps_follow_the_clock),
		cmocka_unit_test(test_level_filter_keeps_errno),
		cmocka_unit_test(test_level_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
