/* test_h1.c - the gateway's small HTTP/1.1 client against a scripted
 * server on 127.0.0.1: framing (Content-Length, chunked, close-delimited,
 * 1xx, 204), connection reuse, a reused connection the server had closed,
 * timeouts, refused connections, sinks that abort, the request it sends,
 * and base URL parsing. */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "logpipe/buf.h"
#include "logpipe/util.h"
#include "logpipe/h1.h"

#include "logpipe/banned.h"

/* One scripted answer: written in parts (a short pause between them). */
struct answer {
	const char *parts[4];
	bool close_after; /* close the connection once written */
	bool silent;      /* never answer; wait for the client to go */
	bool drop;        /* read the request, close without answering */
	bool reset_after; /* once written, close with a reset (SO_LINGER 0) */
};

struct server {
	int lfd, port;
	pthread_t th;
	const struct answer *script; /* answers to successive requests */
	size_t nscript;
	size_t served;               /* requests read */
	int accepts;                 /* connections accepted */
	char last[4096];             /* the last request, head and body */
};

/* Reads one request (head and Content-Length body) into s->last; false at EOF. */
static bool read_request(struct server *s, int fd)
{
	size_t len = 0, need = 0;
	char *end;
	ssize_t n;

	for (;;) {
		n = recv(fd, s->last + len, sizeof(s->last) - 1 - len, 0);
		if (n <= 0)
			return false;
		len += (size_t)n;
		s->last[len] = '\0';
		end = strstr(s->last, "\r\n\r\n");
		if (!end)
			continue;
		if (!need) {
			const char *cl = strstr(s->last, "Content-Length: ");

			need = (size_t)(end + 4 - s->last) + (cl && cl < end ? strtoul(cl + 16, NULL, 10) : 0);
		}
		if (len >= need)
			return true;
	}
}

static void *serve(void *arg)
{
	struct server *s = arg;
	int fd;

	while ((fd = accept(s->lfd, NULL, NULL)) >= 0) {
		s->accepts++;
		while (s->served < s->nscript && read_request(s, fd)) {
			const struct answer *a = &s->script[s->served++];
			size_t i;

			if (a->silent) {
				char c;

				while (recv(fd, &c, 1, 0) > 0)
					;
				break;
			}
			if (a->drop)
				break;
			for (i = 0; i < 4 && a->parts[i]; i++) {
				if (i > 0)
					usleep(20000);
				assert_true(send(fd, a->parts[i], strlen(a->parts[i]), MSG_NOSIGNAL) >= 0);
			}
			if (a->reset_after) {
				struct linger lg = { .l_onoff = 1, .l_linger = 0 };

				setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
				break;
			}
			if (a->close_after)
				break;
		}
		close(fd);
		if (s->served >= s->nscript)
			break;
	}
	return NULL;
}

static void server_start(struct server *s, const struct answer *script, size_t n)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int one = 1;

	memset(s, 0, sizeof(*s));
	s->script = script;
	s->nscript = n;
	s->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s->lfd >= 0);
	setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(s->lfd, 8), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sa, &sl), 0);
	s->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&s->th, NULL, serve, s), 0);
}

static void server_stop(struct server *s)
{
	shutdown(s->lfd, SHUT_RDWR);
	pthread_join(s->th, NULL);
	close(s->lfd);
}

/* What the sinks saw. */
struct got {
	struct lp_buf head, body;
	size_t body_limit; /* 0: none */
};

static size_t on_head(char *d, size_t size, size_t n, void *ud)
{
	struct got *g = ud;

	lp_buf_add(&g->head, d, size * n);
	return size * n;
}

static size_t on_body(char *d, size_t size, size_t n, void *ud)
{
	struct got *g = ud;

	if (g->body_limit && g->body.len + size * n > g->body_limit)
		return 0;
	lp_buf_add(&g->body, d, size * n);
	return size * n;
}

/* One call to the test server. */
static enum lp_h1_result call(struct lp_h1_pool *p, const struct server *s, const char *method,
			   const char *body, long timeout_ms, struct got *g, int *status, char *err)
{
	static const char *const hdrs[] = { "X-Request-ID: abc", "Content-Type:", NULL };
	struct lp_h1_target t;
	struct lp_h1_req rq;
	char base[64];

	snprintf(base, sizeof(base), "http://127.0.0.1:%d", s->port);
	assert_int_equal(lp_h1_target_parse(base, &t), 0);
	memset(&rq, 0, sizeof(rq));
	rq.method = method;
	rq.path = "/api/logs";
	rq.query = "a=1";
	rq.headers = hdrs;
	rq.body = body;
	rq.body_len = body ? strlen(body) : 0;
	rq.deadline_ms = lp_now_ms() + timeout_ms;
	rq.connect_timeout_ms = 1000;
	rq.on_header = on_head;
	rq.on_body = on_body;
	rq.ud = g;
	lp_buf_reset(&g->head);
	lp_buf_reset(&g->body);
	return lp_h1_perform(p, &t, &rq, status, err, 256);
}

static void got_release(struct got *g)
{
	lp_buf_release(&g->head);
	lp_buf_release(&g->body);
}

static void test_length_and_reuse(void **state)
{
	static const struct answer script[] = {
		{ .parts = { "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
		    "Retry-After: 3\r\nContent-Length: 11\r\n\r\n{\"ok\":true}" } },
		{ .parts = { "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe", "llo" } },
	};
	struct lp_h1_pool *p = lp_h1_pool_new();
	struct got g = { LP_BUF_INIT, LP_BUF_INIT, 0 };
	struct server s;
	char err[256];
	int status;

	(void)state;
	server_start(&s, script, 2);
	assert_int_equal(call(p, &s, "POST", "hello", 2000, &g, &status, err), LP_H1_OK);
	assert_int_equal(status, 202);
	assert_string_equal(g.body.buf, "{\"ok\":true}");
	assert_non_null(strstr(g.head.buf, "HTTP/1.1 202 Accepted\r\n"));
	assert_non_null(strstr(g.head.buf, "Retry-After: 3\r\n"));
	/* The request as sent: Host, the headers, Content-Length, the body;
	 * an empty "Name:" header is not sent. */
	assert_non_null(strstr(s.last, "POST /api/logs?a=1 HTTP/1.1\r\nHost: 127.0.0.1:"));
	assert_non_null(strstr(s.last, "\r\nX-Request-ID: abc\r\n"));
	assert_non_null(strstr(s.last, "\r\nContent-Length: 5\r\n\r\nhello"));
	assert_null(strstr(s.last, "Content-Type"));
	assert_null(strstr(s.last, "Expect"));

	assert_int_equal(call(p, &s, "GET", NULL, 2000, &g, &status, err), LP_H1_OK);
	assert_int_equal(status, 200);
	assert_string_equal(g.body.buf, "hello");
	assert_non_null(strstr(s.last, "GET /api/logs?a=1 HTTP/1.1\r\n"));
	assert_null(strstr(s.last, "Content-Length"));
	lp_h1_pool_free(p);
	server_stop(&s);
	assert_int_equal(s.accepts, 1); /* one connection, kept alive */
	got_release(&g);
}

static void test_chunked_1xx_and_close_delimited(void **state)
{
	static const struct answer script[] = {
		{ .parts = { "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
		    "X-Total-Count: 2\r\n\r\n5;ext=1\r\nhel",
		    "lo\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n" } },
		{ .parts = { "HTTP/1.1 204 No Content\r\n\r\n" } },
		{ .parts = { "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ", "the end" },
		  .close_after = true },
	};
	struct lp_h1_pool *p = lp_h1_pool_new();
	struct got g = { LP_BUF_INIT, LP_BUF_INIT, 0 };
	struct server s;
	char err[256];
	int status;

	(void)state;
	server_start(&s, script, 3);
	assert_int_equal(call(p, &s, "GET", NULL, 2000, &g, &status, err), LP_H1_OK);
	assert_int_equal(status, 200);
	assert_string_equal(g.body.buf, "hello world");
	/* The header sink starts again at the final status line. */
	assert_non_null(strstr(g.head.buf, "X-Total-Count: 2\r\n"));
	assert_int_equal(call(p, &s, "DELETE", NULL, 2000, &g, &status, err), LP_H1_OK);
	assert_int_equal(status, 204);
	assert_int_equal(g.body.len, 0);
	assert_int_equal(call(p, &s, "GET", NULL, 2000, &g, &status, err), LP_H1_OK);
	assert_string_equal(g.body.buf, "until the end");
	lp_h1_pool_free(p);
	server_stop(&s);
	assert_int_equal(s.accepts, 1);
	got_release(&g);
}

static void test_closed_idle_connection_is_replaced(void **state)
{
	/* The server answers keep-alive but closes anyway: the next call finds
	 * the pooled socket dead and sends again on a new one. */
	static const struct answer script[] = {
		{ .parts = { "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na" }, .close_after = true },
		{ .parts = { "HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nb" } },
	};
	struct lp_h1_pool *p = lp_h1_pool_new();
	struct got g = { LP_BUF_INIT, LP_BUF_INIT, 0 };
	struct server s;
	char err[256];
	int status;

	(void)state;
	server_start(&s, script, 2);
	assert_int_equal(call(p, &s, "POST", "x", 2000, &g, &status, err), LP_H1_OK);
	usleep(20000);
	assert_int_equal(call(p, &s, "POST", "y", 2000, &g, &status, err), LP_H1_OK);
	assert_int_equal(status, 201);
	assert_string_equal(g.body.buf, "b");
	assert_non_null(strstr(s.last, "\r\n\r\ny"));
	lp_h1_pool_free(p);
	server_stop(&s);
	assert_int_equal(s.accepts, 2);
	got_release(&g);
}

/* Issue #18: a kept-alive connection the upstream closes after reading a
 * POST whole, without answering.  The upstream may have acted on it (a
 * producer whose events Kafka acknowledged, then died): sending it again
 * would store them twice, so the call fails and the POST arrived once.  A
 * GET in the same spot is sent again. */
static void test_written_post_is_not_sent_twice(void **state)
{
	static const struct answer script[] = {
		{ .parts = { "HTTP/1.1 202 Accepted\r\nContent-Length: 1\r\n\r\na" } },
		{ .drop = true },
		{ .parts = { "HTTP/1.1 202 Accepted\r\nContent-Length: 1\r\n\r\nb" } },
		{ .drop = true },
		{ .parts = { "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc" } },
	};
	struct lp_h1_pool *p = lp_h1_pool_new();
	struct got g = { LP_BUF_INIT, LP_BUF_INIT, 0 };
	struct server s;
	char err[256];
	int status;

	(void)state;
	server_start(&s, script, 5);
	assert_int_equal(call(p, &s, "POST", "x", 2000, &g, &status, err), LP_H1_OK);
	assert_int_equal(call(p, &s, "POST", "y", 2000, &g, &status, err), LP_H1_FAILED);
	assert_non_null(strstr(err, "closed"));
	assert_int_equal(s.served, 2); /* "y" arrived once */
	/* A new connection for the next call; its GET meets the same end
	 * and is sent again. */
	assert_int_equal(call(p, &s, "POST", "z", 2000, &g, &status, err), LP_H1_OK);
	assert_string_equal(g.body.buf, "b");
	assert_int_equal(call(p, &s, "GET", NULL, 2000, &g, &status, err), LP_H1_OK);
	assert_int_equal(status, 200);
	assert_string_equal(g.body.buf, "c");
	lp_h1_pool_free(p);
	server_stop(&s);
	assert_int_equal(s.served, 5);
	assert_int_equal(s.accepts, 3);
	got_release(&g);
}

/* The upstream resets a kept-alive connection while it is idle: a POST
 * taken from the pool then has not reached anyone, and goes on a new
 * connection, once. */
static void test_reset_idle_connection_still_retried(void **state)
{
	static const struct answer script[] = {
		{ .parts = { "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na" }, .reset_after = true },
		{ .parts = { "HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nb" },
		  .reset_after = true },
		{ .parts = { "HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nc" } },
	};
	struct lp_h1_pool *p = lp_h1_pool_new();
	struct got g = { LP_BUF_INIT, LP_BUF_INIT, 0 };
	struct server s;
	char err[256];
	int status;

	(void)state;
	server_start(&s, script, 3);
	assert_int_equal(call(p, &s, "POST", "x", 2000, &g, &status, err), LP_H1_OK);
	usleep(20000);
	assert_int_equal(call(p, &s, "POST", "y", 2000, &g, &status, err), LP_H1_OK);
	assert_int_equal(status, 201);
	assert_non_null(strstr(s.last, "\r\n\r\ny"));
	usleep(20000);
	/* A GET idle for less than the peek threshold: its write fails. */
	assert_int_equal(call(p, &s, "GET", NULL, 2000, &g, &status, err), LP_H1_OK);
	assert_string_equal(g.body.buf, "c");
	lp_h1_pool_free(p);
	server_stop(&s);
	assert_int_equal(s.served, 3);
	assert_int_equal(s.accepts, 3);
	got_release(&g);
}

static void test_timeout_abort_and_errors(void **state)
{
	static const struct answer script[] = {
		{ .silent = true },
		{ .parts = { "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789" } },
		{ .parts = { "garbage\r\n\r\n" } },
		{ .parts = { "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123" }, .close_after = true },
	};
	struct lp_h1_pool *p = lp_h1_pool_new();
	struct got g = { LP_BUF_INIT, LP_BUF_INIT, 0 };
	struct server s, dead;
	char err[256];
	int64_t t0;
	int status;

	(void)state;
	server_start(&s, script, 4);
	t0 = lp_now_ms();
	assert_int_equal(call(p, &s, "GET", NULL, 150, &g, &status, err), LP_H1_TIMEOUT);
	assert_true(lp_now_ms() - t0 >= 140 && lp_now_ms() - t0 < 1000);
	g.body_limit = 5;
	assert_int_equal(call(p, &s, "GET", NULL, 2000, &g, &status, err), LP_H1_ABORTED);
	g.body_limit = 0;
	assert_int_equal(call(p, &s, "GET", NULL, 2000, &g, &status, err), LP_H1_FAILED);
	assert_non_null(strstr(err, "status line"));
	/* Closed in the middle of the body: an error, not a short answer. */
	assert_int_equal(call(p, &s, "GET", NULL, 2000, &g, &status, err), LP_H1_FAILED);
	assert_non_null(strstr(err, "closed"));
	server_stop(&s);

	/* Nothing listens on a port that was just closed. */
	server_start(&dead, script, 0);
	server_stop(&dead);
	assert_int_equal(call(p, &dead, "GET", NULL, 2000, &g, &status, err), LP_H1_FAILED);
	assert_non_null(strstr(err, "cannot connect"));
	lp_h1_pool_free(p);
	got_release(&g);
}

static void test_target_parse(void **state)
{
	struct lp_h1_target t;

	(void)state;
	assert_int_equal(lp_h1_target_parse("http://127.0.0.1:8081", &t), 0);
	assert_string_equal(t.host, "127.0.0.1");
	assert_string_equal(t.port, "8081");
	assert_string_equal(t.authority, "127.0.0.1:8081");
	assert_int_equal(lp_h1_target_parse("HTTP://producer/", &t), 0);
	assert_string_equal(t.host, "producer");
	assert_string_equal(t.port, "80");
	assert_int_equal(lp_h1_target_parse("http://[::1]:9000", &t), 0);
	assert_string_equal(t.host, "::1");
	assert_string_equal(t.port, "9000");
	assert_string_equal(t.authority, "[::1]:9000");
	assert_int_equal(lp_h1_target_parse("https://producer:8081", &t), -EINVAL);
	assert_int_equal(lp_h1_target_parse("http://producer:8081/prefix", &t), -EINVAL);
	assert_int_equal(lp_h1_target_parse("http://user@producer", &t), -EINVAL);
	assert_int_equal(lp_h1_target_parse("http://producer:0", &t), -EINVAL);
	assert_int_equal(lp_h1_target_parse("http://producer:65536", &t), -EINVAL);
	assert_int_equal(lp_h1_target_parse("http://producer:80x", &t), -EINVAL);
	assert_int_equal(lp_h1_target_parse("http://", &t), -EINVAL);
	assert_int_equal(lp_h1_target_parse("http://:80", &t), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_length_and_reuse),
		cmocka_unit_test(test_chunked_1xx_and_close_delimited),
		cmocka_unit_test(test_closed_idle_connection_is_replaced),
		cmocka_unit_test(test_written_post_is_not_sent_twice),
		cmocka_unit_test(test_reset_idle_connection_still_retried),
		cmocka_unit_test(test_timeout_abort_and_errors),
		cmocka_unit_test(test_target_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
