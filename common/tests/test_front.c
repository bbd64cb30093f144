/* test_front.c - the event front of every service, in-process, spoken to
 * over raw sockets: routes answered later from another thread
 * (lp_http_route_async, and lp_front_defer under it), in order on one
 * connection, many at once on one loop, on a CivetWeb worker (a chunked
 * body), a client gone before its answer, a stop that waits for the
 * answers and one that gives up; the real client address reaching a
 * CivetWeb handler behind the front; a half-sent head cut off with 408
 * while /health/live answers. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "logpipe/buf.h"
#include "logpipe/front.h"
#include "logpipe/http.h"
#include "logpipe/util.h"
#include "testutil.h"

#include "logpipe/banned.h"

/* ---- a queue of deferred requests, answered by a thread of its own ------ */

#define MAXQ 512

struct answerer {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct lp_http_req *q[MAXQ]; /* deferred, not answered yet */
	char tag[MAXQ][32];          /* each one's X-Tag, copied in the handler */
	int n;
	int hold;                    /* answer only once n reaches hold */
	bool reverse;                /* answer the newest first */
	bool stop;
	atomic_int handled, answered;
	atomic_int on_front;         /* handled on a front loop, not a CivetWeb worker */
	pthread_t th;
};

static void answer_one(struct lp_http_req *r, const char *tag)
{
	json_t *j = json_pack("{s:s}", "tag", tag);

	lp_http_reply_json(r, 202, j, "Retry-After: 1\r\n");
	lp_http_answer(r);
}

static void *answerer_main(void *arg)
{
	struct answerer *a = arg;

	pthread_mutex_lock(&a->mu);
	for (;;) {
		while (!a->stop && (a->n == 0 || a->n < a->hold))
			pthread_cond_wait(&a->cv, &a->mu);
		if (a->stop && a->n == 0)
			break;
		while (a->n > 0) {
			int i = a->reverse ? a->n - 1 : 0;
			struct lp_http_req *r = a->q[i];
			char tag[32];

			lp_strlcpy(tag, a->tag[i], sizeof(tag));
			if (!a->reverse) {
				memmove(&a->q[0], &a->q[1], (size_t)(a->n - 1) * sizeof(a->q[0]));
				memmove(&a->tag[0], &a->tag[1], (size_t)(a->n - 1) * sizeof(a->tag[0]));
			}
			a->n--;
			pthread_mutex_unlock(&a->mu);
			answer_one(r, tag);
			atomic_fetch_add(&a->answered, 1);
			pthread_mutex_lock(&a->mu);
		}
		a->hold = 0;
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

static void answerer_start(struct answerer *a, int hold, bool reverse)
{
	memset(a, 0, sizeof(*a));
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	a->hold = hold;
	a->reverse = reverse;
	assert_int_equal(pthread_create(&a->th, NULL, answerer_main, a), 0);
}

static void answerer_release(struct answerer *a)
{
	pthread_mutex_lock(&a->mu);
	a->hold = 0;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

static void answerer_stop(struct answerer *a)
{
	pthread_mutex_lock(&a->mu);
	a->stop = true;
	a->hold = 0;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
	pthread_join(a->th, NULL);
	pthread_mutex_destroy(&a->mu);
	pthread_cond_destroy(&a->cv);
}

/* POST /defer: copies X-Tag, defers, queues r for the answerer. */
static void handle_defer(struct lp_http_req *r, void *ud)
{
	struct answerer *a = ud;
	const char *tag = lp_http_header(r, "X-Tag");

	atomic_fetch_add(&a->handled, 1);
	if (r->front)
		atomic_fetch_add(&a->on_front, 1);
	if (!tag || strcmp(tag, "now") == 0) {
		lp_http_reply(r, 200, "text/plain", "now", 3, NULL);
		return;
	}
	assert_int_equal(lp_http_defer(r), 0);
	assert_int_equal(lp_http_defer(r), -EINVAL); /* once */
	if (strcmp(tag, "inline") == 0) { /* answered before the handler returns */
		answer_one(r, tag);
		return;
	}
	pthread_mutex_lock(&a->mu);
	assert_true(a->n < MAXQ);
	a->q[a->n] = r;
	lp_strlcpy(a->tag[a->n], tag, sizeof(a->tag[0]));
	a->n++;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

/* GET /who: the client's address as the handler sees it (CivetWeb's). */
static void handle_who(struct lp_http_req *r, void *ud)
{
	const char *a = lp_http_remote_addr(r);

	(void)ud;
	lp_http_reply(r, 200, "text/plain", a, strlen(a), NULL);
}

/* ---- the server and its clients ----------------------------------------- */

struct env {
	struct lp_http_server *s;
	int port;
};

static void server_start_as(struct env *e, struct answerer *a, const char *front, int loops,
			    int stop_ms, int timeout_ms)
{
	struct lp_http_opts o = { 0 };
	char err[256] = "";

	o.front = front;
	o.listen = "127.0.0.1:0";
	o.threads = 4;
	o.front_loops = loops;
	o.stop_timeout_ms = stop_ms;
	o.request_timeout_ms = timeout_ms;
	o.service = "test_front";
	e->s = lp_http_server_new(&o, err, sizeof(err));
	assert_non_null(e->s);
	assert_int_equal(lp_http_route_async(e->s, "POST", "/defer", handle_defer, a), 0);
	assert_int_equal(lp_http_route(e->s, "GET", "/who", handle_who, NULL), 0);
	if (lp_http_start(e->s, err, sizeof(err)) != 0)
		fail_msg("lp_http_start: %s", err);
	e->port = lp_http_port(e->s);
	assert_true(e->port > 0);
	if (front && strcmp(front, "civetweb") == 0)
		assert_null(lp_http_event_front(e->s));
	else
		assert_non_null(lp_http_event_front(e->s));
}

static void server_start(struct env *e, struct answerer *a, int loops, int stop_ms,
			 int timeout_ms)
{
	server_start_as(e, a, NULL, loops, stop_ms, timeout_ms);
}

/* A connection from local address from ("127.0.0.1", "127.0.0.2", ...). */
static int dial(const struct env *e, const char *from)
{
	struct sockaddr_in a = { .sin_family = AF_INET }, b = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(inet_pton(AF_INET, from, &b.sin_addr), 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&b, sizeof(b)), 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)e->port);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static void send_all(int fd, const char *s)
{
	size_t n = strlen(s), off = 0;

	while (off < n) {
		ssize_t k = send(fd, s + off, n - off, MSG_NOSIGNAL);

		assert_true(k > 0);
		off += (size_t)k;
	}
}

static void send_defer(int fd, const char *tag)
{
	char req[256];

	snprintf(req, sizeof(req),
		 "POST /defer HTTP/1.1\r\nHost: x\r\nX-Tag: %s\r\nContent-Type: "
		 "application/json\r\nContent-Length: 2\r\n\r\n{}",
		 tag);
	send_all(fd, req);
}

/* Reads into out until it holds count whole replies (Content-Length
 * counted), the peer closes, or ms pass.  True when the peer closed. */
static bool read_replies(int fd, struct lp_buf *out, int count, int ms)
{
	int64_t end = lp_now_ms() + ms;
	char b[4096];

	for (;;) {
		const char *p = out->buf ? out->buf : "";
		int whole = 0;
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		ssize_t n;

		for (;;) {
			const char *h = strstr(p, "\r\n\r\n"), *cl;
			long len = 0;

			if (!h)
				break;
			cl = strstr(p, "Content-Length: ");
			if (cl && cl < h)
				len = atol(cl + 16);
			if ((size_t)(h + 4 + len - out->buf) > out->len)
				break;
			whole++;
			p = h + 4 + len;
		}
		if (whole >= count)
			return false;
		if (lp_now_ms() >= end || poll(&pf, 1, 50) < 0)
			return false;
		if (!(pf.revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		n = recv(fd, b, sizeof(b), 0);
		if (n <= 0)
			return true;
		lp_buf_add(out, b, (size_t)n);
	}
}

/* Waits (at most 3 s) until n answers were given. */
static void wait_answered(struct answerer *a, int n)
{
	for (int i = 0; i < 3000 && atomic_load(&a->answered) < n; i++)
		usleep(1000);
	assert_int_equal(atomic_load(&a->answered), n);
}

static bool nothing_to_read(int fd)
{
	char ch;

	return recv(fd, &ch, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN;
}

/* ---- tests -------------------------------------------------------------- */

/* The handler defers; another thread answers with a JSON reply and a
 * Retry-After; the connection waits meanwhile and goes on after. */
static void test_defer_answered_from_another_thread(void **state)
{
	static struct answerer a;
	struct env e;
	struct lp_buf out = LP_BUF_INIT;
	int fd;

	(void)state;
	answerer_start(&a, 1000000, false); /* holds every answer */
	server_start(&e, &a, 1, 5000, 5000);
	fd = dial(&e, "127.0.0.1");
	send_defer(fd, "t1");
	for (int i = 0; i < 3000 && atomic_load(&a.handled) < 1; i++)
		usleep(1000);
	assert_int_equal(atomic_load(&a.handled), 1);
	assert_true(nothing_to_read(fd)); /* deferred: no reply yet */
	answerer_release(&a);
	assert_false(read_replies(fd, &out, 1, 3000));
	assert_contains(out.buf, "HTTP/1.1 202 Accepted\r\n");
	assert_contains(out.buf, "Retry-After: 1\r\n");
	assert_contains(out.buf, "Connection: keep-alive\r\n");
	assert_contains(out.buf, "{\"tag\":\"t1\"}");
	/* The same connection goes on: answered at once, deferred and answered
	 * before the handler returned, then through CivetWeb. */
	lp_buf_reset(&out);
	send_defer(fd, "inline");
	assert_false(read_replies(fd, &out, 1, 3000));
	assert_contains(out.buf, "{\"tag\":\"inline\"}");
	lp_buf_reset(&out);
	send_defer(fd, "now");
	assert_false(read_replies(fd, &out, 1, 3000));
	assert_contains(out.buf, "HTTP/1.1 200 ");
	lp_buf_reset(&out);
	send_all(fd, "GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_false(read_replies(fd, &out, 1, 3000));
	assert_contains(out.buf, "HTTP/1.1 200 ");
	close(fd);
	lp_http_server_free(e.s);
	answerer_stop(&a);
	lp_buf_release(&out);
}

/* "Connection: close" on an async route: served on the front (no CivetWeb
 * worker), answered later, the reply says close and the connection is
 * closed after it; a request pipelined after it is not served.  The same
 * for a reply given at once and one given before the handler returned. */
static void test_connection_close_on_the_front(void **state)
{
	static struct answerer a;
	static const char *const tags[] = { "t1", "inline", "now" };
	struct env e;
	struct lp_buf out = LP_BUF_INIT;
	char req[512];
	int fd;

	(void)state;
	answerer_start(&a, 1, false);
	server_start(&e, &a, 1, 5000, 5000);
	for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++) {
		int before = atomic_load(&a.handled);

		fd = dial(&e, "127.0.0.1");
		snprintf(req, sizeof(req),
			 "POST /defer HTTP/1.1\r\nHost: x\r\nX-Tag: %s\r\nConnection: close\r\n"
			 "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
			 "POST /defer HTTP/1.1\r\nHost: x\r\nX-Tag: after\r\n"
			 "Content-Length: 2\r\n\r\n{}",
			 tags[i]);
		send_all(fd, req);
		lp_buf_reset(&out);
		/* The peer closes after one reply. */
		assert_true(read_replies(fd, &out, 2, 3000));
		assert_non_null(out.buf);
		assert_contains(out.buf, "Connection: close\r\n");
		assert_null(strstr(out.buf, "keep-alive"));
		assert_null(strstr(strstr(out.buf, "\r\n\r\n") + 4, "HTTP/1.1"));
		if (strcmp(tags[i], "now") == 0)
			assert_contains(out.buf, "HTTP/1.1 200 ");
		else
			assert_contains(out.buf, "HTTP/1.1 202 ");
		assert_int_equal(atomic_load(&a.handled), before + 1);
		close(fd);
	}
	assert_int_equal(atomic_load(&a.on_front), 3);
	lp_http_server_free(e.s);
	answerer_stop(&a);
	lp_buf_release(&out);
}

/* HTTP/1.0 on an async route, with and without "Connection: keep-alive":
 * served on the front like "Connection: close" in HTTP/1.1 (the reply says
 * close, the connection is closed after it, a request pipelined after it
 * is not served), an Expect: 100-continue ignored.  A POST without
 * Content-Length is CivetWeb's (its body ends with the connection). */
static void test_http10_on_the_front(void **state)
{
	static struct answerer a;
	static const char *const variants[] = {
		"",
		"Connection: keep-alive\r\n",
		"Connection: Keep-Alive\r\nExpect: 100-continue\r\n",
	};
	struct env e;
	struct lp_buf out = LP_BUF_INIT;
	char req[512];
	int fd;

	(void)state;
	answerer_start(&a, 0, false);
	server_start(&e, &a, 1, 5000, 5000);
	for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
		int before = atomic_load(&a.handled);

		fd = dial(&e, "127.0.0.1");
		snprintf(req, sizeof(req),
			 "POST /defer HTTP/1.0\r\nX-Tag: v%zu\r\n%s"
			 "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
			 "POST /defer HTTP/1.0\r\nX-Tag: after\r\n"
			 "Content-Length: 2\r\n\r\n{}",
			 i, variants[i]);
		send_all(fd, req);
		lp_buf_reset(&out);
		assert_true(read_replies(fd, &out, 2, 3000)); /* closed after one */
		assert_non_null(out.buf);
		assert_true(strncmp(out.buf, "HTTP/1.1 202 ", 13) == 0);
		assert_contains(out.buf, "Connection: close\r\n");
		assert_null(strstr(out.buf, "keep-alive"));
		assert_null(strstr(out.buf, "100 Continue"));
		assert_null(strstr(strstr(out.buf, "\r\n\r\n") + 4, "HTTP/1."));
		snprintf(req, sizeof(req), "{\"tag\":\"v%zu\"}", i);
		assert_contains(out.buf, req);
		assert_int_equal(atomic_load(&a.handled), before + 1);
		assert_int_equal(atomic_load(&a.on_front), (int)i + 1);
		close(fd);
	}
	/* No Content-Length: CivetWeb reads the body up to the end. */
	fd = dial(&e, "127.0.0.1");
	send_all(fd, "POST /defer HTTP/1.0\r\nX-Tag: eof\r\n\r\n{}");
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	lp_buf_reset(&out);
	read_replies(fd, &out, 1, 3000);
	assert_non_null(out.buf);
	assert_contains(out.buf, " 202 ");
	assert_contains(out.buf, "{\"tag\":\"eof\"}");
	assert_int_equal(atomic_load(&a.on_front), 3);
	close(fd);
	lp_http_server_free(e.s);
	answerer_stop(&a);
	lp_buf_release(&out);
}

/* Three requests pipelined on one connection, each deferred: the replies
 * come in the order of the requests. */
static void test_pipelined_deferred_in_order(void **state)
{
	static struct answerer a;
	struct env e;
	struct lp_buf out = LP_BUF_INIT;
	const char *p1, *p2, *p3;
	int fd;

	(void)state;
	answerer_start(&a, 0, false);
	server_start(&e, &a, 1, 5000, 5000);
	fd = dial(&e, "127.0.0.1");
	send_all(fd, "POST /defer HTTP/1.1\r\nHost: x\r\nX-Tag: p1\r\nContent-Length: 2\r\n\r\n{}"
		     "POST /defer HTTP/1.1\r\nHost: x\r\nX-Tag: p2\r\nContent-Length: 2\r\n\r\n{}"
		     "POST /defer HTTP/1.1\r\nHost: x\r\nX-Tag: p3\r\nContent-Length: 2\r\n\r\n{}");
	assert_false(read_replies(fd, &out, 3, 5000));
	p1 = strstr(out.buf, "\"p1\"");
	p2 = strstr(out.buf, "\"p2\"");
	p3 = strstr(out.buf, "\"p3\"");
	assert_non_null(p1);
	assert_non_null(p2);
	assert_non_null(p3);
	assert_true(p1 < p2 && p2 < p3);
	close(fd);
	lp_http_server_free(e.s);
	answerer_stop(&a);
	lp_buf_release(&out);
}

/* POST /big: waits (at most 5 s) until the test says a small request on
 * the same loop was answered, then echoes what it read of the request. */
static atomic_int big_entered, small_answered;

static void handle_big(struct lp_http_req *r, void *ud)
{
	const char *tag = lp_http_header(r, "X-Tag");
	char q[32] = "-", text[128];
	int n;

	(void)ud;
	atomic_store(&big_entered, 1);
	if (lp_http_query(r, "q", q, sizeof(q)) < 0)
		lp_strlcpy(q, "-", sizeof(q));
	for (int i = 0; i < 5000 && !atomic_load(&small_answered); i++)
		usleep(1000);
	n = snprintf(text, sizeof(text), "tag=%s q=%s len=%zu last=%c", tag ? tag : "-", q,
		     r->body_len, r->body_len ? r->body[r->body_len - 1] : '-');
	lp_http_reply(r, 200, "text/plain", text, (size_t)n, NULL);
}

/* A request of BIG_BODY bytes to path with header X-Tag: tag. */
#define BIG_BODY (100 * 1024)

static void send_big(int fd, const char *path, const char *tag)
{
	struct lp_buf req = LP_BUF_INIT;
	size_t off = 0;

	lp_buf_addf(&req, "POST %s HTTP/1.1\r\nHost: x\r\nX-Tag: %s\r\nContent-Type: "
		    "application/json\r\nContent-Length: %d\r\n\r\n", path, tag, BIG_BODY);
	for (int i = 0; i < BIG_BODY - 1; i++)
		lp_buf_addch(&req, ' ');
	lp_buf_addch(&req, '!');
	while (off < req.len) {
		ssize_t k = send(fd, req.buf + off, req.len - off, MSG_NOSIGNAL);

		assert_true(k > 0);
		off += (size_t)k;
	}
	lp_buf_release(&req);
}

/* A big body's handler runs off the loop: on a front of one loop, a small
 * request on another connection is answered while the big one's handler
 * is still busy (it waits for exactly that).  The handler reads copies of
 * the header fields, query and body; deferred, answered before it returned
 * and answered at once, big requests are answered like small ones. */
static void test_big_bodies_do_not_hold_the_loop(void **state)
{
	static struct answerer a;
	struct lp_http_opts o = { 0 };
	struct env e;
	struct lp_buf out = LP_BUF_INIT;
	char err[256] = "";
	int big, small;

	(void)state;
	atomic_store(&big_entered, 0);
	atomic_store(&small_answered, 0);
	answerer_start(&a, 0, false);
	o.listen = "127.0.0.1:0";
	o.threads = 4;
	o.front_loops = 1;
	o.stop_timeout_ms = 5000;
	o.request_timeout_ms = 5000;
	o.service = "test_front";
	e.s = lp_http_server_new(&o, err, sizeof(err));
	assert_non_null(e.s);
	assert_int_equal(lp_http_route_async(e.s, "POST", "/defer", handle_defer, &a), 0);
	assert_int_equal(lp_http_route_async(e.s, "POST", "/big", handle_big, NULL), 0);
	if (lp_http_start(e.s, err, sizeof(err)) != 0)
		fail_msg("lp_http_start: %s", err);
	e.port = lp_http_port(e.s);
	big = dial(&e, "127.0.0.1");
	send_big(big, "/big?q=x%20y", "big");
	for (int i = 0; i < 3000 && !atomic_load(&big_entered); i++)
		usleep(1000);
	assert_int_equal(atomic_load(&big_entered), 1);
	small = dial(&e, "127.0.0.1");
	send_defer(small, "now");
	assert_false(read_replies(small, &out, 1, 3000));
	assert_non_null(out.buf);
	assert_contains(out.buf, "HTTP/1.1 200 ");
	atomic_store(&small_answered, 1);
	lp_buf_reset(&out);
	assert_false(read_replies(big, &out, 1, 6000));
	assert_non_null(out.buf);
	assert_contains(out.buf, "HTTP/1.1 200 ");
	assert_contains(out.buf, "tag=big q=x y len=102400 last=!");
	/* Deferred and answered by the answerer, answered before the handler
	 * returned, answered at once: in order on one connection. */
	lp_buf_reset(&out);
	send_big(big, "/defer", "bigdefer");
	send_big(big, "/defer", "inline");
	send_big(big, "/defer", "now");
	assert_false(read_replies(big, &out, 3, 5000));
	assert_non_null(out.buf);
	assert_contains(out.buf, "{\"tag\":\"bigdefer\"}");
	assert_contains(strstr(out.buf, "bigdefer"), "{\"tag\":\"inline\"}");
	assert_contains(strstr(out.buf, "\"inline\""), "HTTP/1.1 200 ");
	close(big);
	close(small);
	lp_http_server_free(e.s);
	answerer_stop(&a);
	lp_buf_release(&out);
}

#define MANY 200

/* 200 connections on one loop, every request deferred at once, answered
 * newest first from another thread: each client gets its own answer. */
static void test_many_in_flight_on_one_loop(void **state)
{
	static struct answerer a;
	static int fds[MANY];
	struct env e;
	struct lp_buf out = LP_BUF_INIT;
	char tag[32];
	int i;

	(void)state;
	answerer_start(&a, MANY, true); /* answers once all are in */
	server_start(&e, &a, 1, 5000, 10000);
	for (i = 0; i < MANY; i++) {
		fds[i] = dial(&e, "127.0.0.1");
		snprintf(tag, sizeof(tag), "m%d", i);
		send_defer(fds[i], tag);
	}
	for (i = 0; i < MANY; i++) {
		char want[40];

		lp_buf_reset(&out);
		assert_false(read_replies(fds[i], &out, 1, 10000));
		snprintf(want, sizeof(want), "{\"tag\":\"m%d\"}", i);
		assert_contains(out.buf, want);
		close(fds[i]);
	}
	wait_answered(&a, MANY);
	lp_http_server_free(e.s);
	answerer_stop(&a);
	lp_buf_release(&out);
}

/* The client resets its connection before the answer: the answer is
 * dropped (nothing leaks, nothing is written to a closed socket) and the
 * loop goes on serving. */
static void test_client_gone_before_the_answer(void **state)
{
	static struct answerer a;
	struct env e;
	struct lp_buf out = LP_BUF_INIT;
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	int fd, fd2;

	(void)state;
	answerer_start(&a, 1000000, false);
	server_start(&e, &a, 1, 5000, 5000);
	fd = dial(&e, "127.0.0.1");
	send_defer(fd, "gone");
	for (int i = 0; i < 3000 && atomic_load(&a.handled) < 1; i++)
		usleep(1000);
	assert_int_equal(atomic_load(&a.handled), 1);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	close(fd); /* a reset */
	/* The loop has seen the reset once it served a request that came after. */
	fd2 = dial(&e, "127.0.0.1");
	send_defer(fd2, "now");
	assert_false(read_replies(fd2, &out, 1, 3000));
	assert_contains(out.buf, "HTTP/1.1 200 ");
	answerer_release(&a);
	wait_answered(&a, 1);
	lp_buf_reset(&out);
	send_defer(fd2, "after");
	assert_false(read_replies(fd2, &out, 1, 3000));
	assert_contains(out.buf, "{\"tag\":\"after\"}");
	close(fd2);
	lp_http_server_free(e.s);
	answerer_stop(&a);
	lp_buf_release(&out);
}

struct stopper {
	struct lp_http_server *s;
	atomic_bool done;
};

static void *stopper_main(void *arg)
{
	struct stopper *st = arg;

	lp_http_server_free(st->s);
	atomic_store(&st->done, true);
	return NULL;
}

/* lp_http_server_free waits for the deferred requests: it returns only
 * after they were answered, and their clients have the answers. */
static void test_stop_waits_for_deferred(void **state)
{
	static struct answerer a;
	static struct stopper st;
	struct env e;
	struct lp_buf out = LP_BUF_INIT;
	pthread_t th;
	int fd[3], i;

	(void)state;
	answerer_start(&a, 1000000, false);
	server_start(&e, &a, 1, 10000, 10000);
	for (i = 0; i < 3; i++) {
		fd[i] = dial(&e, "127.0.0.1");
		send_defer(fd[i], "s");
	}
	for (i = 0; i < 3000 && atomic_load(&a.handled) < 3; i++)
		usleep(1000);
	assert_int_equal(atomic_load(&a.handled), 3);
	st.s = e.s;
	atomic_store(&st.done, false);
	assert_int_equal(pthread_create(&th, NULL, stopper_main, &st), 0);
	usleep(300 * 1000); /* the stop is under way, waiting */
	assert_false(atomic_load(&st.done));
	answerer_release(&a);
	for (i = 0; i < 3; i++) {
		lp_buf_reset(&out);
		read_replies(fd[i], &out, 1, 5000);
		assert_contains(out.buf, "HTTP/1.1 202 ");
		close(fd[i]);
	}
	pthread_join(th, NULL);
	assert_true(atomic_load(&st.done));
	answerer_stop(&a);
	lp_buf_release(&out);
}

/* A stop that gives up waiting (stop_timeout_ms): the connection is
 * closed, and the answer that comes after the server is gone is dropped
 * (the handle frees itself; ASan would see a use after free). */
static void test_stop_gives_up_then_late_answer(void **state)
{
	static struct answerer a;
	struct env e;
	struct lp_buf out = LP_BUF_INIT;
	int64_t t0;
	int fd;

	(void)state;
	answerer_start(&a, 1000000, false);
	server_start(&e, &a, 1, 300, 5000);
	fd = dial(&e, "127.0.0.1");
	send_defer(fd, "late");
	for (int i = 0; i < 3000 && atomic_load(&a.handled) < 1; i++)
		usleep(1000);
	assert_int_equal(atomic_load(&a.handled), 1);
	t0 = lp_now_ms();
	lp_http_server_free(e.s);
	assert_true(lp_now_ms() - t0 < 3000);
	assert_true(read_replies(fd, &out, 1, 3000)); /* closed, unanswered */
	assert_int_equal(out.len, 0);
	answerer_release(&a); /* answers into nothing */
	wait_answered(&a, 1);
	close(fd);
	answerer_stop(&a);
	lp_buf_release(&out);
}

/* A chunked body is CivetWeb's to read: the async route runs on a worker,
 * which waits for the answer given by another thread. */
static void test_defer_on_a_civetweb_worker(void **state)
{
	static struct answerer a;
	struct env e;
	struct lp_buf out = LP_BUF_INIT;
	int fd;

	(void)state;
	answerer_start(&a, 0, false);
	server_start(&e, &a, 1, 5000, 5000);
	fd = dial(&e, "127.0.0.1");
	send_all(fd, "POST /defer HTTP/1.1\r\nHost: x\r\nX-Tag: chunked\r\n"
		     "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n");
	assert_false(read_replies(fd, &out, 1, 3000));
	assert_contains(out.buf, "HTTP/1.1 202 ");
	assert_contains(out.buf, "Retry-After: 1\r\n");
	assert_contains(out.buf, "{\"tag\":\"chunked\"}");
	wait_answered(&a, 1);
	close(fd);
	lp_http_server_free(e.s);
	answerer_stop(&a);
	lp_buf_release(&out);
}

/* http.front civetweb: no front; the async route runs on a worker, which
 * waits for the answer; the address is the client's own. */
static void test_civetweb_alone(void **state)
{
	static struct answerer a;
	struct env e;
	struct lp_buf out = LP_BUF_INIT;
	struct lp_http_opts o = { 0 };
	char err[256] = "";
	int fd;

	(void)state;
	o.listen = "0";
	o.front = "sideways";
	assert_null(lp_http_server_new(&o, err, sizeof(err)));
	assert_contains(err, "neither events nor civetweb");
	answerer_start(&a, 0, false);
	server_start_as(&e, &a, "civetweb", 1, 5000, 5000);
	fd = dial(&e, "127.0.0.3");
	send_defer(fd, "cw");
	assert_false(read_replies(fd, &out, 1, 3000));
	assert_contains(out.buf, "{\"tag\":\"cw\"}");
	lp_buf_reset(&out);
	send_all(fd, "GET /who HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_false(read_replies(fd, &out, 1, 3000));
	assert_contains(out.buf, "\r\n\r\n127.0.0.3");
	close(fd);
	lp_http_server_free(e.s);
	answerer_stop(&a);
	lp_buf_release(&out);
}

/* A request the front passes to CivetWeb sees the real client address. */
static void test_client_address_through_the_tunnel(void **state)
{
	static struct answerer a;
	struct env e;
	struct lp_buf out = LP_BUF_INIT;
	int fd;

	(void)state;
	answerer_start(&a, 0, false);
	server_start(&e, &a, 1, 5000, 5000);
	fd = dial(&e, "127.0.0.7");
	send_all(fd, "GET /who HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_false(read_replies(fd, &out, 1, 3000));
	assert_contains(out.buf, "HTTP/1.1 200 ");
	assert_contains(out.buf, "\r\n\r\n127.0.0.7");
	close(fd);
	lp_http_server_free(e.s);
	answerer_stop(&a);
	lp_buf_release(&out);
}

/* Many clients send half a head and stall: /health/live answers at once
 * on a fresh connection, and the stalled ones get 408 after the timeout. */
static void test_half_heads_do_not_starve_health(void **state)
{
	static struct answerer a;
	static int fds[64];
	struct env e;
	struct lp_buf out = LP_BUF_INIT;
	int64_t t0;
	int i, fd;

	(void)state;
	answerer_start(&a, 0, false);
	server_start(&e, &a, 1, 5000, 800);
	for (i = 0; i < 64; i++) {
		fds[i] = dial(&e, "127.0.0.1");
		send_all(fds[i], "GET /health/live HTTP/1.1\r\nHost: x\r\n");
	}
	t0 = lp_now_ms();
	fd = dial(&e, "127.0.0.1");
	send_all(fd, "GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_false(read_replies(fd, &out, 1, 3000));
	assert_contains(out.buf, "HTTP/1.1 200 ");
	assert_true(lp_now_ms() - t0 < 1000);
	close(fd);
	for (i = 0; i < 64; i++) {
		lp_buf_reset(&out);
		read_replies(fds[i], &out, 1, 3000);
		assert_contains(out.buf, "HTTP/1.1 408 ");
		close(fds[i]);
	}
	lp_http_server_free(e.s);
	answerer_stop(&a);
	lp_buf_release(&out);
}

/* ---- the front alone: LP_FRONT_DEFER and lp_front_reply_json ------------ */

struct raw {
	struct lp_front_later *h; /* the deferred request */
	atomic_int started;
	bool reply;               /* answer at once instead */
};

static enum lp_front_verdict raw_start(void *ud, struct lp_front_req *q)
{
	struct raw *r = ud;

	if (r->reply) {
		lp_buf_adds(q->reply, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
		return LP_FRONT_REPLY;
	}
	r->h = lp_front_defer(q);
	atomic_fetch_add(&r->started, 1);
	return LP_FRONT_DEFER;
}

static void raw_finish(void *ud, struct lp_front_req *q, char *answer, size_t n,
		       enum lp_h1_result io, const char *err)
{
	(void)ud, (void)q, (void)answer, (void)n, (void)io, (void)err;
}

static void raw_cancel(void *ud, struct lp_front_req *q)
{
	(void)ud, (void)q;
}

static void test_raw_front_defer(void **state)
{
	static struct raw r;
	struct lp_front_opts o = { 0 };
	struct lp_front *f;
	struct lp_buf out = LP_BUF_INIT, reply = LP_BUF_INIT;
	struct env e;
	char err[256] = "";
	int fd;

	(void)state;
	memset(&r, 0, sizeof(r));
	o.listen = "127.0.0.1:0";
	o.loops = 2;
	o.max_body = 1 << 20;
	o.request_timeout_ms = 5000;
	o.inner_port = test_free_port(); /* nothing behind */
	o.handler.start = raw_start;
	o.handler.finish = raw_finish;
	o.handler.cancel = raw_cancel;
	o.handler.ud = &r;
	f = lp_front_start(&o, err, sizeof(err));
	assert_non_null(f);
	e.port = lp_front_port(f);
	assert_true(e.port > 0);
	fd = dial(&e, "127.0.0.1");
	send_all(fd, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
	for (int i = 0; i < 3000 && atomic_load(&r.started) < 1; i++)
		usleep(1000);
	assert_int_equal(atomic_load(&r.started), 1);
	lp_front_reply_json(&reply, 429, "Retry-After: 3\r\n", "{\"status\":\"busy\"}");
	lp_front_answer(r.h, &reply);
	assert_int_equal(reply.len, 0); /* taken */
	assert_false(read_replies(fd, &out, 1, 3000));
	assert_contains(out.buf, "HTTP/1.1 429 Too Many Requests\r\n");
	assert_contains(out.buf, "Content-Type: application/json\r\n");
	assert_contains(out.buf, "Content-Length: 17\r\n");
	assert_contains(out.buf, "Retry-After: 3\r\n\r\n{\"status\":\"busy\"}");
	close(fd);
	lp_front_stop(f);
	lp_buf_release(&out);
	lp_buf_release(&reply);
}

/* Issue #18: with the process out of descriptors, accept(2) fails and the
 * connections stay in the backlog.  The listening socket is edge-triggered:
 * no event comes for them until another connection does, so the front
 * tries again by itself once descriptors are free. */
static void test_backlog_served_after_emfile(void **state)
{
	static struct raw p;
	struct lp_front_opts o = { 0 };
	struct lp_front *f;
	struct lp_buf out = LP_BUF_INIT;
	struct sockaddr_in a = { .sin_family = AF_INET };
	struct rlimit saved, low;
	char listen[64], err[256];
	int fds[4], i, lowest;
	int port = test_free_port();

	(void)state;
	memset(&p, 0, sizeof(p));
	p.reply = true;
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	o.listen = listen;
	o.loops = 1;
	o.max_body = 1 << 20;
	o.request_timeout_ms = 5000;
	o.inner_port = test_free_port();
	o.handler.start = raw_start;
	o.handler.finish = raw_finish;
	o.handler.cancel = raw_cancel;
	o.handler.ud = &p;
	f = lp_front_start(&o, err, sizeof(err));
	assert_non_null(f);
	for (i = 0; i < 4; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		assert_true(fds[i] >= 0);
	}
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)port);

	/* No descriptor can be made while the limit is the lowest free one. */
	lowest = dup(0);
	assert_true(lowest >= 0);
	close(lowest);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
	low = saved;
	low.rlim_cur = (rlim_t)lowest;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	for (i = 0; i < 4; i++) /* the kernel completes them: they wait in the backlog */
		assert_int_equal(connect(fds[i], (struct sockaddr *)&a, sizeof(a)), 0);
	for (i = 0; i < 4; i++)
		send_all(fds[i], "GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
	usleep(50 * 1000); /* the front meets EMFILE meanwhile (or not: then it passes anyway) */
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);

	for (i = 0; i < 4; i++) {
		lp_buf_reset(&out);
		assert_false(read_replies(fds[i], &out, 1, 3000));
		assert_contains(out.buf, "HTTP/1.1 200 ");
		close(fds[i]);
	}
	lp_front_stop(f);
	lp_buf_release(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defer_answered_from_another_thread),
		cmocka_unit_test(test_pipelined_deferred_in_order),
		cmocka_unit_test(test_connection_close_on_the_front),
		cmocka_unit_test(test_http10_on_the_front),
		cmocka_unit_test(test_many_in_flight_on_one_loop),
		cmocka_unit_test(test_big_bodies_do_not_hold_the_loop),
		cmocka_unit_test(test_client_gone_before_the_answer),
		cmocka_unit_test(test_stop_waits_for_deferred),
		cmocka_unit_test(test_stop_gives_up_then_late_answer),
		cmocka_unit_test(test_defer_on_a_civetweb_worker),
		cmocka_unit_test(test_client_address_through_the_tunnel),
		cmocka_unit_test(test_civetweb_alone),
		cmocka_unit_test(test_half_heads_do_not_starve_health),
		cmocka_unit_test(test_raw_front_defer),
		cmocka_unit_test(test_backlog_served_after_emfile),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
