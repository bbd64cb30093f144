/* test_redis.c - the Redis client: URL forms, then against a real
 * redis-server started on a free loopback port for this test (skipped when
 * redis-server is not installed): AUTH and SELECT from the URL, commands,
 * reconnect after the server drops the connection, and the breaker
 * failing calls fast while Redis is unreachable. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "logpipe/breaker.h"
#include "logpipe/log.h"
#include "logpipe/redis.h"
#include "logpipe/util.h"
#include "testutil.h"

#include "logpipe/banned.h"

#define PASSWORD "s3cr@t"
#define PASSWORD_IN_URL "s3cr%40t"

struct server {
	pid_t pid;     /* redis-server, or 0 when not available */
	int port;
	char url[128]; /* with password and database 2 */
};

static int start_server(void **state)
{
	struct server *s = calloc(1, sizeof(*s));
	char port[16];
	struct lp_redis *probe;
	int64_t deadline;

	*state = s;
	if (access("/usr/bin/redis-server", X_OK) != 0)
		return 0;
	s->port = test_free_port();
	snprintf(port, sizeof(port), "%d", s->port);
	snprintf(s->url, sizeof(s->url), "redis://:%s@127.0.0.1:%d/2", PASSWORD_IN_URL, s->port);
	s->pid = fork();
	if (s->pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);

		dup2(devnull, 1);
		execl("/usr/bin/redis-server", "redis-server", "--port", port, "--bind",
		      "127.0.0.1", "--save", "", "--appendonly", "no", "--requirepass", PASSWORD,
		      (char *)NULL);
		_exit(127);
	}
	/* Wait for readiness, not for a fixed time. */
	probe = lp_redis_new(s->url, 200, NULL);
	deadline = lp_now_ms() + 5000;
	while (lp_redis_ping(probe) != 0 && lp_now_ms() < deadline)
		lp_sleep_ms(20, NULL);
	assert_int_equal(lp_redis_ping(probe), 0);
	lp_redis_free(probe);
	return 0;
}

static int stop_server(void **state)
{
	struct server *s = *state;

	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		waitpid(s->pid, NULL, 0);
	}
	free(s);
	return 0;
}

#define NEED_SERVER(s)                                                    \
	do {                                                              \
		if ((s)->pid <= 0) {                                      \
			print_message("redis-server not installed\n");   \
			skip();                                           \
		}                                                         \
	} while (0)

static void test_url_forms(void **state)
{
	static const char *const good[] = {
		"localhost", "127.0.0.1:6379", "redis://h", "redis://h:1/3", "REDIS://h:65535",
		"[::1]:6379", "redis://[::1]/1", "redis://user:p%40ss@h:1/0", "redis://:pw@h",
		"redis://h:6379/", "redis://h:6379/4?timeout=1",
	};
	static const char *const bad[] = {
		"", "rediss://h", "http://h", "redis://", "redis://:pw@", "h:0", "h:65536", "h:abc",
		"h:", "[::1", "redis://h/x", "redis://h:1x",
	};
	size_t i;

	for (i = 0; i < LP_ARRAY_SIZE(good); i++) {
		struct lp_redis *r = lp_redis_new(good[i], 100, NULL);

		if (!r)
			print_error("refused \"%s\"\n", good[i]);
		assert_non_null(r);
		lp_redis_free(r);
	}
	for (i = 0; i < LP_ARRAY_SIZE(bad); i++) {
		struct lp_redis *r = lp_redis_new(bad[i], 100, NULL);

		if (r)
			print_error("accepted \"%s\"\n", bad[i]);
		assert_null(r);
	}
	assert_null(lp_redis_new(NULL, 100, NULL));
	lp_redis_free(NULL);
}

static void test_commands(void **state)
{
	struct server *s = *state;
	struct lp_redis *r, *db0;
	redisReply *rep;
	const char *argv[] = { "SET", "bin", "a\0b" };
	const size_t argvlen[] = { 3, 3, 3 };
	char url0[128];

	NEED_SERVER(s);
	r = lp_redis_new(s->url, 1000, NULL);
	assert_int_equal(lp_redis_ping(r), 0);

	rep = lp_redis_cmd(r, "SET %s %s", "k", "v");
	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_STATUS);
	freeReplyObject(rep);
	rep = lp_redis_cmd(r, "GET k");
	assert_int_equal(rep->type, REDIS_REPLY_STRING);
	assert_string_equal(rep->str, "v");
	freeReplyObject(rep);

	rep = lp_redis_cmdargv(r, 3, argv, argvlen);
	assert_int_equal(rep->type, REDIS_REPLY_STATUS);
	freeReplyObject(rep);
	rep = lp_redis_cmd(r, "STRLEN bin");
	assert_int_equal(rep->integer, 3);
	freeReplyObject(rep);

	/* An error reply comes back as such. */
	rep = lp_redis_cmd(r, "NOSUCHCOMMAND");
	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_ERROR);
	freeReplyObject(rep);

	/* The URL's /2 selected database 2: database 0 has no "k". */
	snprintf(url0, sizeof(url0), "redis://:%s@127.0.0.1:%d", PASSWORD_IN_URL, s->port);
	db0 = lp_redis_new(url0, 1000, NULL);
	rep = lp_redis_cmd(db0, "GET k");
	assert_int_equal(rep->type, REDIS_REPLY_NIL);
	freeReplyObject(rep);
	lp_redis_free(db0);
	lp_redis_free(r);
}

static void test_wrong_password(void **state)
{
	struct server *s = *state;
	struct lp_redis *r;
	char url[128];

	NEED_SERVER(s);
	snprintf(url, sizeof(url), "redis://:nope@127.0.0.1:%d", s->port);
	r = lp_redis_new(url, 1000, NULL);
	assert_int_equal(lp_redis_ping(r), -EIO);
	lp_redis_free(r);
}

static void test_reconnect(void **state)
{
	struct server *s = *state;
	struct lp_redis *r, *killer;
	redisReply *rep;
	long long id;

	NEED_SERVER(s);
	r = lp_redis_new(s->url, 1000, NULL);
	killer = lp_redis_new(s->url, 1000, NULL);
	rep = lp_redis_cmd(r, "CLIENT ID");
	assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
	id = rep->integer;
	freeReplyObject(rep);

	rep = lp_redis_cmd(killer, "CLIENT KILL ID %lld", id);
	assert_int_equal(rep->integer, 1);
	freeReplyObject(rep);

	/* The dropped connection fails once, then the client reconnects. */
	assert_int_equal(lp_redis_ping(r), -EIO);
	assert_int_equal(lp_redis_ping(r), 0);
	rep = lp_redis_cmd(r, "CLIENT ID");
	assert_true(rep->integer != id);
	freeReplyObject(rep);
	lp_redis_free(killer);
	lp_redis_free(r);
}

static void test_breaker_fails_fast(void **state)
{
	struct lp_breaker_opts o = { .window = 4, .min_calls = 2, .open_ms = 60000 };
	struct lp_breaker *br = lp_breaker_new("redis_test", &o);
	char url[64];
	struct lp_redis *r;
	int64_t t0;

	snprintf(url, sizeof(url), "127.0.0.1:%d", test_free_port()); /* nobody listens */
	r = lp_redis_new(url, 200, br);
	assert_ptr_equal(lp_redis_breaker(r), br);
	assert_int_equal(lp_redis_ping(r), -EIO);
	assert_int_equal(lp_redis_ping(r), -EIO);
	assert_int_equal(lp_breaker_state(br), LP_BREAKER_OPEN);
	t0 = lp_now_us();
	assert_null(lp_redis_cmd(r, "GET k"));
	assert_true(lp_now_us() - t0 < 1000);
	lp_redis_free(r);
	lp_breaker_free(br);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url_forms),
		cmocka_unit_test(test_commands),
		cmocka_unit_test(test_wrong_password),
		cmocka_unit_test(test_reconnect),
		cmocka_unit_test(test_breaker_fails_fast),
	};

	signal(SIGPIPE, SIG_IGN); /* hiredis writes with send(2) */
	lp_log_init("test_redis", LP_LOG_ERROR);
	return cmocka_run_group_tests(tests, start_server, stop_server);
}
