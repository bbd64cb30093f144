/* test_config.c - unit tests for the settings table: defaults, file and
 * environment precedence, type and bound errors, printing, command line. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "logpipe/config.h"

#include "logpipe/banned.h"

struct settings {
	long long port;
	double ratio;
	int debug;
	char *brokers;
	char *password;
	long long big;
};

static const struct lp_cfg_opt opts[] = {
	{ "http.port", LP_CFG_INT, "8080", offsetof(struct settings, port), "Listen port.", 1,
	  65535 },
	{ "ratio", LP_CFG_DOUBLE, "0.5", offsetof(struct settings, ratio), "A ratio.", 0, 0 },
	{ "debug", LP_CFG_BOOL, "false", offsetof(struct settings, debug), "Debug mode.", 0, 0 },
	{ "kafka.brokers", LP_CFG_STR, "localhost:9092", offsetof(struct settings, brokers),
	  "Kafka bootstrap servers.", 0, 0 },
	{ "pg.password", LP_CFG_STR, NULL, offsetof(struct settings, password), "Secret.", 0, 0 },
	{ "big", LP_CFG_INT, "0", offsetof(struct settings, big), "A 64-bit number.", 0, 0 },
	LP_CFG_END,
};

static const char *const envs[] = {
	"LOGPIPE_HTTP_PORT", "LOGPIPE_RATIO",	    "LOGPIPE_DEBUG", "LOGPIPE_KAFKA_BROKERS",
	"LOGPIPE_PG_PASSWORD", "LOGPIPE_BIG", "LOGPIPE_CONFIG",
};

/* The path of the config file the current test wrote. */
static char cfg_path[64];

static int setup(void **state)
{
	for (size_t i = 0; i < sizeof(envs) / sizeof(envs[0]); i++)
		unsetenv(envs[i]);
	cfg_path[0] = '\0';
	return 0;
}

static int teardown(void **state)
{
	if (cfg_path[0])
		unlink(cfg_path);
	return setup(state);
}

static const char *write_cfg(const char *text)
{
	int fd;

	if (cfg_path[0])
		unlink(cfg_path);
	snprintf(cfg_path, sizeof(cfg_path), "/tmp/test_config.XXXXXX");
	fd = mkstemp(cfg_path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return cfg_path;
}

/* Loads and expects an error whose message contains want. */
static void assert_load_fails(const char *path, const char *want)
{
	struct settings s;
	char err[256] = "";

	assert_int_equal(lp_config_load(opts, &s, path, err, sizeof(err)), -EINVAL);
	if (!strstr(err, want))
		fail_msg("error \"%s\" does not contain \"%s\"", err, want);
	assert_null(s.brokers);
}

static void test_defaults(void **state)
{
	struct settings s;
	char err[256] = "";

	assert_int_equal(lp_config_load(opts, &s, NULL, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_int_equal(s.port, 8080);
	assert_float_equal(s.ratio, 0.5, 0);
	assert_int_equal(s.debug, 0);
	assert_string_equal(s.brokers, "localhost:9092");
	assert_string_equal(s.password, "");
	lp_config_release(opts, &s);
	assert_null(s.brokers);
	lp_config_release(opts, &s); /* twice is harmless */
}

static void test_file_then_env(void **state)
{
	const char *path = write_cfg("http = { port = 9000; };\n"
				     "ratio = 1;\n"
				     "debug = true;\n"
				     "kafka: { brokers = \"k1:9092,k2:9092\"; };\n"
				     "big = 5000000000L;\n");
	struct settings s;
	char err[256];

	assert_int_equal(lp_config_load(opts, &s, path, err, sizeof(err)), 0);
	assert_int_equal(s.port, 9000);
	assert_float_equal(s.ratio, 1, 0); /* an int is a good double */
	assert_int_equal(s.debug, 1);
	assert_string_equal(s.brokers, "k1:9092,k2:9092");
	assert_int_equal(s.big, 5000000000LL);
	lp_config_release(opts, &s);

	/* The environment wins over the file. */
	setenv("LOGPIPE_HTTP_PORT", "9100", 1);
	setenv("LOGPIPE_KAFKA_BROKERS", "env:9092", 1);
	setenv("LOGPIPE_DEBUG", "no", 1);
	setenv("LOGPIPE_RATIO", "0.125", 1);
	assert_int_equal(lp_config_load(opts, &s, path, err, sizeof(err)), 0);
	assert_int_equal(s.port, 9100);
	assert_string_equal(s.brokers, "env:9092");
	assert_int_equal(s.debug, 0);
	assert_float_equal(s.ratio, 0.125, 0);
	assert_int_equal(s.big, 5000000000LL); /* not overridden: from the file */
	lp_config_release(opts, &s);
}

static void test_bool_words(void **state)
{
	static const char *const yes[] = { "true", "YES", "on", "1" };
	static const char *const no[] = { "False", "no", "OFF", "0" };
	struct settings s;
	char err[256];

	for (size_t i = 0; i < 4; i++) {
		setenv("LOGPIPE_DEBUG", yes[i], 1);
		assert_int_equal(lp_config_load(opts, &s, NULL, err, sizeof(err)), 0);
		assert_int_equal(s.debug, 1);
		lp_config_release(opts, &s);
		setenv("LOGPIPE_DEBUG", no[i], 1);
		assert_int_equal(lp_config_load(opts, &s, NULL, err, sizeof(err)), 0);
		assert_int_equal(s.debug, 0);
		lp_config_release(opts, &s);
	}
	setenv("LOGPIPE_DEBUG", "maybe", 1);
	assert_load_fails(NULL, "LOGPIPE_DEBUG: key \"debug\": \"maybe\" is not a valid bool");
}

static void test_bad_types_in_file(void **state)
{
	assert_load_fails(write_cfg("http = { port = \"abc\"; };\n"),
			  ":1: key \"http.port\": expected int, got a string");
	assert_load_fails(write_cfg("\nratio = \"x\";\n"),
			  ":2: key \"ratio\": expected double, got a string");
	assert_load_fails(write_cfg("kafka = { brokers = 5; };\n"),
			  "key \"kafka.brokers\": expected string, got an int");
	assert_load_fails(write_cfg("debug = 2;\n"), "key \"debug\": expected bool, got an int");
	assert_load_fails(write_cfg("http = 1;\n"), "unknown key \"http\"");
}

static void test_bad_env(void **state)
{
	setenv("LOGPIPE_HTTP_PORT", "80x", 1);
	assert_load_fails(NULL, "environment LOGPIPE_HTTP_PORT: key \"http.port\": \"80x\" is not "
				"a valid int");
	setenv("LOGPIPE_HTTP_PORT", "", 1);
	assert_load_fails(NULL, "key \"http.port\"");
	unsetenv("LOGPIPE_HTTP_PORT");
	setenv("LOGPIPE_RATIO", "inf", 1);
	assert_load_fails(NULL, "key \"ratio\": inf is not a finite number");
}

static void test_bounds(void **state)
{
	assert_load_fails(write_cfg("http = { port = 70000; };\n"),
			  "key \"http.port\": 70000 is out of range 1..65535");
	setenv("LOGPIPE_HTTP_PORT", "0", 1);
	assert_load_fails(NULL, "LOGPIPE_HTTP_PORT: key \"http.port\": 0 is out of range 1..65535");
	unsetenv("LOGPIPE_HTTP_PORT");
	assert_load_fails(write_cfg("debug = maybe;\n"), ":1: syntax error");
}

static void test_unknown_key_and_file(void **state)
{
	assert_load_fails(write_cfg("http = { port = 1; prot = 2; };\n"),
			  ":1: unknown key \"http.prot\"");
	assert_load_fails(write_cfg("kafak = { brokers = \"x\"; };\n"),
			  "unknown key \"kafak.brokers\"");
	assert_load_fails("/nonexistent/logpipe.cfg",
			  "cannot read config file \"/nonexistent/logpipe.cfg\": No such file");
}

static void test_env_name(void **state)
{
	char name[64];

	lp_config_env_name("kafka.brokers", name, sizeof(name));
	assert_string_equal(name, "LOGPIPE_KAFKA_BROKERS");
	lp_config_env_name("a-b.c9", name, sizeof(name));
	assert_string_equal(name, "LOGPIPE_A_B_C9");
	lp_config_env_name("truncated.key", name, 12);
	assert_string_equal(name, "LOGPIPE_TRU");
}

/* Runs fn's output into a string (free() it). */
static char *capture(void (*fn)(FILE *, const void *), const void *arg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	fn(f, arg);
	fclose(f);
	return text;
}

static void print_values(FILE *f, const void *s)
{
	lp_config_print(f, opts, s);
}

static void print_help(FILE *f, const void *unused)
{
	lp_config_print_help(f, opts);
}

static void test_print(void **state)
{
	struct settings s;
	char err[256];
	char *text;

	setenv("LOGPIPE_PG_PASSWORD", "hunter2", 1);
	setenv("LOGPIPE_KAFKA_BROKERS", "a\"b", 1);
	setenv("LOGPIPE_RATIO", "0.1", 1);
	assert_int_equal(lp_config_load(opts, &s, NULL, err, sizeof(err)), 0);
	text = capture(print_values, &s);
	assert_string_equal(text, "http.port = 8080\n"
				  "ratio = 0.1\n"
				  "debug = false\n"
				  "kafka.brokers = \"a\\\"b\"\n"
				  "pg.password = \"***\"\n"
				  "big = 0\n");
	free(text);
	lp_config_release(opts, &s);

	text = capture(print_help, NULL);
	assert_non_null(strstr(text, "LOGPIPE_KAFKA_BROKERS"));
	assert_non_null(strstr(text, "localhost:9092"));
	assert_non_null(strstr(text, "Listen port. (1..65535)\n"));
	free(text);
}

/* Runs lp_cli_main with its stdout and stderr sent to /dev/null. */
static int cli(struct settings *s, int argc, const char **argv)
{
	int out = dup(STDOUT_FILENO), errfd = dup(STDERR_FILENO);
	int null = open("/dev/null", O_WRONLY);
	int ret;

	fflush(stdout);
	dup2(null, STDOUT_FILENO);
	dup2(null, STDERR_FILENO);
	ret = lp_cli_main(argc, (char **)argv, "logpipe-test", "A test.", opts, s);
	fflush(stdout);
	dup2(out, STDOUT_FILENO);
	dup2(errfd, STDERR_FILENO);
	close(out);
	close(errfd);
	close(null);
	return ret;
}

static void test_cli(void **state)
{
	const char *path = write_cfg("http = { port = 9000; };\n");
	struct settings s = { 0 };

	assert_int_equal(cli(&s, 2, (const char *[]){ "p", "--version", NULL }), 1);
	assert_int_equal(cli(&s, 2, (const char *[]){ "p", "-h", NULL }), 1);
	assert_int_equal(cli(&s, 2, (const char *[]){ "p", "--bogus", NULL }), -1);
	assert_int_equal(cli(&s, 2, (const char *[]){ "p", "-c", NULL }), -1);
	assert_int_equal(cli(&s, 3, (const char *[]){ "p", "-c", "/nonexistent", NULL }), -1);

	assert_int_equal(cli(&s, 3, (const char *[]){ "p", "--config", path, NULL }), 0);
	assert_int_equal(s.port, 9000);
	lp_config_release(opts, &s);

	/* A good --check-config leaves nothing to release. */
	assert_int_equal(cli(&s, 4, (const char *[]){ "p", "--check-config", "-c", path, NULL }),
			 1);
	assert_null(s.brokers);
	setenv("LOGPIPE_HTTP_PORT", "99999", 1);
	assert_int_equal(cli(&s, 2, (const char *[]){ "p", "--check-config", NULL }), -1);
	unsetenv("LOGPIPE_HTTP_PORT");

	/* Without --config, LOGPIPE_CONFIG names the file. */
	setenv("LOGPIPE_CONFIG", path, 1);
	assert_int_equal(cli(&s, 1, (const char *[]){ "p", NULL }), 0);
	assert_int_equal(s.port, 9000);
	lp_config_release(opts, &s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_then_env, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bool_words, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_types_in_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_env, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bounds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_key_and_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_env_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_print, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cli, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
