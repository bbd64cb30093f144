/* test_front.c - the gateway's event front, in-process, in front of a fake
 * upstream (a logpipe HTTP server that echoes what it receives), spoken to
 * over raw sockets: pipelined requests answered in order, a connection
 * moving from the fast path to CivetWeb, the real client address on both
 * paths, a slow head cut off with 408, a truncated body refused with 400,
 * an upstream that dropped its idle connection, Expect: 100-continue, and
 * many connections at once. */
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
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "logpipe/buf.h"
#include "logpipe/config.h"
#include "logpipe/http.h"
#include "logpipe/log.h"
#include "logpipe/util.h"
#include "../../common/tests/testutil.h"
#include "logpipe/front.h"
#include "../gateway.h"

#include "logpipe/banned.h"

struct env {
	struct lp_http_server *up; /* the fake upstream */
	int up_port, gw_port;
	struct gateway_settings s;
	struct gateway *g;
};

/* The fake upstream: the request's method, path, X-Request-ID and
 * X-Forwarded-For as a JSON object. */
static void echo(struct lp_http_req *r, void *ud)
{
	const char *id = lp_http_header(r, "X-Request-ID"),
		   *xff = lp_http_header(r, "X-Forwarded-For");
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "method", r->method, "path", r->path,
			      "id", id ? id : "", "xff", xff ? xff : "", "body_len",
			      (json_int_t)r->body_len);

	lp_http_reply_json(r, strcmp(r->method, "POST") == 0 ? 202 : 200, o, NULL);
}

static void set_str(char **field, const char *v)
{
	free(*field);
	*field = lp_xstrdup(v);
}

/* ---- a scripted upstream ------------------------------------------------
 * A raw server on 127.0.0.1 that answers successive requests from a script
 * (or drops them: reads one whole and closes without answering), counting
 * the requests it read. */

struct step {
	const char *answer; /* NULL: drop the connection after reading the request */
	bool close_after;   /* close the connection once answered */
	bool hold;          /* answer only once the script's release is set */
};

struct script {
	int lfd, port;
	pthread_t th;
	const struct step *steps;
	int nsteps;
	atomic_int served;  /* requests to /api/logs and /api/stats read whole */
	atomic_int open;    /* connections being served */
	atomic_int closed;  /* connections the script closed */
	atomic_bool release; /* held answers may go */
};

/* Reads one request (head and Content-Length body) into b; false at EOF. */
static bool script_read(int fd, char b[8192])
{
	size_t len = 0, need = 0;
	char *end;

	for (;;) {
		ssize_t n = recv(fd, b + len, 8192 - 1 - len, 0);

		if (n <= 0)
			return false;
		len += (size_t)n;
		b[len] = '\0';
		end = strstr(b, "\r\n\r\n");
		if (!end)
			continue;
		if (!need) {
			const char *cl = strstr(b, "Content-Length: ");

			need = (size_t)(end + 4 - b) + (cl && cl < end ? strtoul(cl + 16, NULL, 10) : 0);
		}
		if (len >= need)
			return true;
	}
}

#define OTHER "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

struct script_conn {
	struct script *sc;
	int fd;
};

/* One connection's requests, each answered by the next step. */
static void *script_conn_main(void *arg)
{
	struct script_conn *cn = arg;
	struct script *sc = cn->sc;
	char b[8192];

	while (script_read(cn->fd, b)) {
		const char *path = strchr(b, ' ') + 1;
		const struct step *st;
		int i;

		if (strncmp(path, "/api/logs ", 10) != 0 && strncmp(path, "/api/stats ", 11) != 0) {
			/* The gateway's own probes (the pipeline view's): not part
			 * of the script. */
			(void)!send(cn->fd, OTHER, strlen(OTHER), MSG_NOSIGNAL);
			break;
		}
		i = atomic_fetch_add(&sc->served, 1);
		st = i < sc->nsteps ? &sc->steps[i] : NULL;
		if (!st || !st->answer)
			break;
		while (st->hold && !atomic_load(&sc->release))
			usleep(1000);
		(void)!send(cn->fd, st->answer, strlen(st->answer), MSG_NOSIGNAL);
		if (st->close_after)
			break;
	}
	close(cn->fd);
	atomic_fetch_add(&sc->closed, 1);
	atomic_fetch_sub(&sc->open, 1);
	free(cn);
	return NULL;
}

static void *script_main(void *arg)
{
	struct script *sc = arg;
	int fd;

	while ((fd = accept(sc->lfd, NULL, NULL)) >= 0) {
		struct script_conn *cn = lp_xcalloc(1, sizeof(*cn));
		pthread_t th;

		cn->sc = sc;
		cn->fd = fd;
		atomic_fetch_add(&sc->open, 1);
		assert_int_equal(pthread_create(&th, NULL, script_conn_main, cn), 0);
		pthread_detach(th);
	}
	return NULL;
}

static void script_start(struct script *sc, const struct step *steps, int n)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);

	memset(sc, 0, sizeof(*sc));
	sc->steps = steps;
	sc->nsteps = n;
	sc->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(sc->lfd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(sc->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(sc->lfd, 8), 0);
	assert_int_equal(getsockname(sc->lfd, (struct sockaddr *)&sa, &sl), 0);
	sc->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&sc->th, NULL, script_main, sc), 0);
}

/* After the gateway stopped: its connections are closed, so each
 * connection's thread ends. */
static void script_stop(struct script *sc)
{
	shutdown(sc->lfd, SHUT_RDWR);
	pthread_join(sc->th, NULL);
	close(sc->lfd);
	while (atomic_load(&sc->open) > 0)
		usleep(1000);
}

static const char *next_redis_url; /* for the next start_with; NULL: no Redis */

/* up_port > 0: the upstream listens there (a script); else the echo server. */
static int start_with(void **state, int loops, long long timeout_ms, int up_port)
{
	struct env *e = lp_xcalloc(1, sizeof(*e));
	struct lp_http_opts uo = { 0 };
	char err[256], listen[64], url[64];

	if (up_port > 0) {
		e->up_port = up_port;
		goto gateway;
	}
	/* Port 0: a port picked free and bound later can be taken meanwhile. */
	uo.listen = "127.0.0.1:0";
	uo.threads = 8;
	uo.service = "fake-upstream";
	e->up = lp_http_server_new(&uo, err, sizeof(err));
	assert_non_null(e->up);
	lp_http_route(e->up, NULL, "/*", echo, NULL);
	assert_int_equal(lp_http_start(e->up, err, sizeof(err)), 0);
	e->up_port = lp_http_port(e->up);
gateway:
	assert_int_equal(lp_config_load(gateway_options, &e->s, NULL, err, sizeof(err)), 0);
	e->gw_port = test_free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", e->gw_port);
	set_str(&e->s.http_listen, listen);
	set_str(&e->s.http_front, "events");
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", e->up_port);
	set_str(&e->s.up_producer, url);
	set_str(&e->s.up_consumer, url);
	set_str(&e->s.up_metadata, url);
	set_str(&e->s.up_enricher, url);
	set_str(&e->s.up_generator, url);
	set_str(&e->s.redis_url, next_redis_url ? next_redis_url : "");
	if (next_redis_url)
		e->s.redis_timeout_ms = 2000;
	set_str(&e->s.kafka_brokers, "");
	set_str(&e->s.auth_keys, "");
	e->s.http_timeout_ms = timeout_ms;
	e->s.http_loops = loops;
	e->s.rl_rate = 1000000;
	e->g = gateway_start(&e->s, err, sizeof(err));
	/* Its port, picked free, can be taken before it binds: pick again. */
	for (int i = 0; !e->g && strstr(err, "in use") && i < 20; i++) {
		e->gw_port = test_free_port();
		snprintf(listen, sizeof(listen), "127.0.0.1:%d", e->gw_port);
		set_str(&e->s.http_listen, listen);
		e->g = gateway_start(&e->s, err, sizeof(err));
	}
	if (!e->g)
		print_error("gateway_start: %s\n", err);
	assert_non_null(e->g);
	*state = e;
	return 0;
}

static int start(void **state, int loops, long long timeout_ms)
{
	return start_with(state, loops, timeout_ms, 0);
}

static int setup(void **state)
{
	return start(state, 2, 400);
}

/* One loop, so that every connection shares its upstream pool. */
static int setup_one_loop(void **state)
{
	return start(state, 1, 5000);
}

static int teardown(void **state)
{
	struct env *e = *state;

	gateway_stop(e->g);
	if (e->up)
		lp_http_server_free(e->up);
	lp_config_release(gateway_options, &e->s);
	free(e);
	return 0;
}

/* ---- a raw client ------------------------------------------------------- */

/* A connection to the gateway from local address from ("127.0.0.1", ...). */
static int dial(struct env *e, const char *from)
{
	struct sockaddr_in a = { .sin_family = AF_INET }, b = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(inet_pton(AF_INET, from, &b.sin_addr), 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&b, sizeof(b)), 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)e->gw_port);
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

/* Reads into out until it holds `count` whole replies (each head's
 * Content-Length counted), the peer closes, or 3 s pass.  Returns true
 * when the peer closed. */
static bool read_replies(int fd, struct lp_buf *out, int count)
{
	int64_t end = lp_now_ms() + 3000;
	char b[4096];

	for (;;) {
		const char *p = out->buf;
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
		if (lp_now_ms() >= end || poll(&pf, 1, 100) < 0)
			return false;
		if (!(pf.revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		n = recv(fd, b, sizeof(b), 0);
		if (n <= 0)
			return true;
		lp_buf_add(out, b, (size_t)n);
	}
}

/* Reads one reply into out, waiting up to ms. */
static void end_after_ms(int fd, struct lp_buf *out, int ms)
{
	int64_t end = lp_now_ms() + ms;

	while (lp_now_ms() < end && !strstr(out->buf ? out->buf : "", "\r\n\r\n"))
		if (read_replies(fd, out, 1))
			break;
}

/* The number of times needle occurs in hay. */
static int count_of(const char *hay, const char *needle)
{
	int n = 0;

	while ((hay = strstr(hay, needle)) != NULL) {
		n++;
		hay += strlen(needle);
	}
	return n;
}

/* ---- tests -------------------------------------------------------------- */

static void test_pipelined_in_order(void **state)
{
	struct env *e = *state;
	struct lp_buf out = LP_BUF_INIT;
	int fd = dial(e, "127.0.0.1");
	const char *a, *b, *c;

	send_all(fd, "POST /api/logs HTTP/1.1\r\nHost: x\r\nX-Request-ID: req-a\r\n"
		     "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
		     "GET /api/logs/b HTTP/1.1\r\nHost: x\r\nX-Request-ID: req-b\r\n\r\n"
		     "POST /api/logs HTTP/1.1\r\nHost: x\r\nX-Request-ID: req-c\r\n"
		     "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
	assert_false(read_replies(fd, &out, 3));
	a = strstr(out.buf, "\"id\":\"req-a\"");
	b = strstr(out.buf, "\"id\":\"req-b\"");
	c = strstr(out.buf, "\"id\":\"req-c\"");
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	assert_true(a < b && b < c);
	assert_int_equal(count_of(out.buf, "HTTP/1.1 202 "), 2);
	assert_int_equal(count_of(out.buf, "HTTP/1.1 200 "), 1);
	assert_int_equal(count_of(out.buf, "Connection: keep-alive"), 3);
	close(fd);
	lp_buf_release(&out);
}

/* "Connection: close" on a proxied route: one reply that says close, then
 * the end of the connection; what was pipelined after is not served. */
static void test_connection_close(void **state)
{
	struct env *e = *state;
	struct lp_buf out = LP_BUF_INIT;
	int fd = dial(e, "127.0.0.1");

	send_all(fd, "POST /api/logs HTTP/1.1\r\nHost: x\r\nX-Request-ID: req-a\r\n"
		     "Connection: close\r\nContent-Type: application/json\r\n"
		     "Content-Length: 2\r\n\r\n{}"
		     "POST /api/logs HTTP/1.1\r\nHost: x\r\nX-Request-ID: req-b\r\n"
		     "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
	assert_true(read_replies(fd, &out, 2)); /* closed after the first */
	assert_int_equal(count_of(out.buf, "HTTP/1.1 202 "), 1);
	assert_contains(out.buf, "\"id\":\"req-a\"");
	assert_null(strstr(out.buf, "req-b"));
	assert_contains(out.buf, "Connection: close\r\n");
	assert_null(strstr(out.buf, "keep-alive"));
	close(fd);
	lp_buf_release(&out);
}

static void test_fast_then_civetweb_on_one_connection(void **state)
{
	struct env *e = *state;
	struct lp_buf out = LP_BUF_INIT;
	int fd = dial(e, "127.0.0.1");

	/* The fast path first, then HEAD and a local route, which CivetWeb
	 * serves, on the same connection. */
	send_all(fd, "GET /api/stats HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_false(read_replies(fd, &out, 1));
	assert_contains(out.buf, "HTTP/1.1 200 ");
	assert_contains(out.buf, "\"path\":\"/api/stats\"");
	lp_buf_reset(&out);
	send_all(fd, "HEAD /api/stats HTTP/1.1\r\nHost: x\r\n\r\n");
	/* A HEAD answer has a Content-Length but no body: read the head. */
	assert_false(read_replies(fd, &out, 0) && out.len == 0);
	for (int i = 0; i < 30 && !strstr(out.buf, "\r\n\r\n"); i++) {
		char b[1024];
		ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);

		if (n > 0)
			lp_buf_add(&out, b, (size_t)n);
		else
			usleep(50 * 1000);
	}
	assert_contains(out.buf, "HTTP/1.1 200 ");
	lp_buf_reset(&out);
	send_all(fd, "GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_false(read_replies(fd, &out, 1));
	assert_contains(out.buf, "{\"status\":\"UP\"}");
	close(fd);
	lp_buf_release(&out);
}

static void test_client_address_on_both_paths(void **state)
{
	struct env *e = *state;
	struct lp_buf out = LP_BUF_INIT;
	int fd;

	/* The fast path. */
	fd = dial(e, "127.0.0.2");
	send_all(fd, "GET /api/stats HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_false(read_replies(fd, &out, 1));
	assert_contains(out.buf, "\"xff\":\"127.0.0.2\"");
	close(fd);
	lp_buf_reset(&out);
	/* A chunked body goes through CivetWeb, which must see the same client. */
	fd = dial(e, "127.0.0.2");
	send_all(fd, "GET /api/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
		     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
	read_replies(fd, &out, 1);
	assert_contains(out.buf, " 200 ");
	assert_contains(out.buf, "\"xff\":\"127.0.0.2\"");
	close(fd);
	lp_buf_release(&out);
}

static void test_slow_head_gets_408(void **state)
{
	struct env *e = *state;
	struct lp_buf out = LP_BUF_INIT;
	int fd = dial(e, "127.0.0.1");
	int64_t t0 = lp_now_ms();

	send_all(fd, "POST /api/logs HTTP/1.1\r\nHost: x\r\n");
	assert_true(read_replies(fd, &out, 2)); /* closed by the gateway */
	assert_contains(out.buf, "HTTP/1.1 408 ");
	assert_contains(out.buf, "request_timeout");
	assert_true(lp_now_ms() - t0 >= 300);
	assert_true(lp_now_ms() - t0 < 2500);
	close(fd);
	lp_buf_release(&out);
}

static void test_idle_connection_closed(void **state)
{
	struct env *e = *state;
	struct lp_buf out = LP_BUF_INIT;
	int fd = dial(e, "127.0.0.1");

	assert_true(read_replies(fd, &out, 1)); /* nothing sent: closed, no reply */
	assert_int_equal(out.len, 0);
	close(fd);
	lp_buf_release(&out);
}

static void test_truncated_body_gets_400(void **state)
{
	struct env *e = *state;
	struct lp_buf out = LP_BUF_INIT;
	int fd = dial(e, "127.0.0.1");

	send_all(fd, "POST /api/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
		     "Content-Length: 100\r\n\r\n{\"message\"");
	shutdown(fd, SHUT_WR);
	read_replies(fd, &out, 1);
	assert_contains(out.buf, "HTTP/1.1 400 ");
	close(fd);
	lp_buf_release(&out);
}

static void test_upstream_dropped_idle_connection(void **state)
{
	struct env *e = *state;
	struct lp_buf out = LP_BUF_INIT;
	int fd = dial(e, "127.0.0.1"), i;

	/* CivetWeb closes idle kept-alive connections after its keep-alive
	 * timeout (500 ms): the pooled one is gone by the second request. */
	for (i = 0; i < 3; i++) {
		lp_buf_reset(&out);
		send_all(fd, "GET /api/stats HTTP/1.1\r\nHost: x\r\n\r\n");
		assert_false(read_replies(fd, &out, 1));
		assert_contains(out.buf, "HTTP/1.1 200 ");
		if (i < 2)
			usleep(i == 0 ? 700 * 1000 : 300 * 1000);
	}
	close(fd);
	lp_buf_release(&out);
}

static void test_expect_continue(void **state)
{
	struct env *e = *state;
	struct lp_buf out = LP_BUF_INIT;
	int fd = dial(e, "127.0.0.1");
	struct pollfd pf = { .fd = fd, .events = POLLIN };
	char b[256];
	ssize_t n;

	send_all(fd, "POST /api/logs HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
		     "Content-Length: 2\r\n\r\n");
	/* The body is not sent before the go-ahead. */
	assert_int_equal(poll(&pf, 1, 2000), 1);
	n = recv(fd, b, sizeof(b) - 1, 0);
	assert_true(n > 0);
	b[n] = '\0';
	assert_string_equal(b, "HTTP/1.1 100 Continue\r\n\r\n");
	send_all(fd, "{}");
	assert_false(read_replies(fd, &out, 1));
	assert_contains(out.buf, "HTTP/1.1 202 ");
	close(fd);
	lp_buf_release(&out);
}

static void test_oversized_body_gets_413_not_a_reset(void **state)
{
	struct env *e = *state;
	struct lp_buf out = LP_BUF_INIT;
	int fd = dial(e, "127.0.0.1");
	struct timeval tv = { 3, 0 };
	size_t len = (size_t)e->s.http_max_body + 1, off = 0;
	char head[256], *body = malloc(len);

	assert_non_null(body);
	memset(body, 'x', len);
	snprintf(head, sizeof(head),
		 "POST /api/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
		 "Content-Length: %zu\r\n\r\n",
		 len);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	send_all(fd, head);
	/* CivetWeb answers 413 before the body is read and closes its side;
	 * the client is still sending the body meanwhile. */
	while (off < len) {
		ssize_t k = send(fd, body + off, len - off, MSG_NOSIGNAL);

		if (k <= 0)
			break;
		off += (size_t)k;
	}
	read_replies(fd, &out, 1);
	assert_contains(out.buf, "HTTP/1.1 413 ");
	close(fd);
	free(body);
	lp_buf_release(&out);
}

/* Issue #18: the upstream reads a POST on a kept-alive connection and
 * closes without answering.  It may have acted on it (a producer whose
 * events Kafka acknowledged, then died), so the front answers 502 and does
 * not send it again: the upstream read it once.  A GET in the same spot is
 * sent again, and a POST after the upstream closed an idle connection goes
 * on a new one, once. */
static void test_written_post_not_resent(void **state)
{
	static const struct step steps[] = {
		{ "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}", false, false },
		{ NULL, false, false }, /* the second POST: read, then closed */
		{ "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]", false, false },
		{ NULL, false, false }, /* the second GET: read, then closed */
		{ "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]", false, false }, /* sent again */
		{ "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}", true, false },
		{ "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}", false, false },
	};
	static const char post[] = "POST /api/logs HTTP/1.1\r\nHost: x\r\nContent-Type: "
				   "application/json\r\nContent-Length: 2\r\n\r\n{}";
	static const char get[] = "GET /api/stats HTTP/1.1\r\nHost: x\r\n\r\n";
	static struct script sc; /* outlives a failed assertion's jump */
	struct env *e;
	struct lp_buf out = LP_BUF_INIT;
	int fd;

	script_start(&sc, steps, 7);
	start_with(state, 1, 5000, sc.port);
	e = *state;
	fd = dial(e, "127.0.0.1");

	send_all(fd, post);
	assert_false(read_replies(fd, &out, 1));
	assert_contains(out.buf, "HTTP/1.1 202 ");
	lp_buf_reset(&out);
	send_all(fd, post); /* on the kept-alive connection */
	assert_false(read_replies(fd, &out, 1));
	assert_contains(out.buf, "HTTP/1.1 502 ");
	assert_int_equal(atomic_load(&sc.served), 2); /* it arrived once */

	lp_buf_reset(&out);
	send_all(fd, get);
	assert_false(read_replies(fd, &out, 1));
	assert_contains(out.buf, "HTTP/1.1 200 ");
	lp_buf_reset(&out);
	send_all(fd, get);
	assert_false(read_replies(fd, &out, 1));
	assert_contains(out.buf, "HTTP/1.1 200 ");
	assert_int_equal(atomic_load(&sc.served), 5); /* the GET went twice */

	/* The upstream closes a connection after answering, while it sits
	 * idle in the pool: the next POST goes on a new one, once.  (A close
	 * still on its way when the POST is written is the keep-alive race
	 * no client can tell from a crash: that one is a 502, so the test
	 * waits until the close has happened.) */
	int closed = atomic_load(&sc.closed);

	lp_buf_reset(&out);
	send_all(fd, post);
	assert_false(read_replies(fd, &out, 1));
	assert_contains(out.buf, "HTTP/1.1 202 ");
	for (int i = 0; i < 5000 && atomic_load(&sc.closed) == closed; i++)
		usleep(1000);
	assert_true(atomic_load(&sc.closed) > closed);
	lp_buf_reset(&out);
	send_all(fd, post);
	assert_false(read_replies(fd, &out, 1));
	assert_contains(out.buf, "HTTP/1.1 202 ");
	assert_int_equal(atomic_load(&sc.served), 7);
	close(fd);
	lp_buf_release(&out);
	teardown(state);
	script_stop(&sc);
}

/* ---- the front alone, with a handler that tells when it is called late -- */

struct probe {
	struct lp_h1_target t;
	bool reply;          /* answer at once instead of calling t */
	atomic_bool gone;    /* what the handler uses was freed */
	atomic_int late;     /* handler calls after that */
	atomic_int finishes, cancels;
};

static void probe_seen(struct probe *p)
{
	if (atomic_load(&p->gone))
		atomic_fetch_add(&p->late, 1);
}

static enum lp_front_verdict probe_start(void *ud, struct lp_front_req *q)
{
	struct probe *p = ud;

	probe_seen(p);
	if (p->reply) {
		lp_buf_adds(q->reply, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
		return LP_FRONT_REPLY;
	}
	q->target = &p->t;
	q->timeout_ms = 10000;
	q->connect_timeout_ms = 1000;
	lp_buf_adds(q->call, "POST /api/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
	q->state = p;
	return LP_FRONT_CALL;
}

static void probe_finish(void *ud, struct lp_front_req *q, char *answer, size_t n,
			 enum lp_h1_result io, const char *err)
{
	struct probe *p = ud;

	(void)answer, (void)n, (void)io, (void)err;
	probe_seen(p);
	atomic_fetch_add(&p->finishes, 1);
	lp_buf_adds(q->reply, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
}

static void probe_cancel(void *ud, struct lp_front_req *q)
{
	struct probe *p = ud;

	(void)q;
	probe_seen(p);
	atomic_fetch_add(&p->cancels, 1);
}

/* Issue #18: gateway_stop freed the CivetWeb server while the loops could
 * still call the handler, which reads its route table (a request on a
 * kept-alive connection) and counts in it (a call answered after a quiesce
 * that timed out).  After lp_front_detach the handler is never called:
 * the call in flight is cancelled, its answer coming later finds nobody,
 * and a new request goes to the server behind. */
static void test_detach_then_no_handler_call(void **state)
{
	static const struct step steps[] = {
		{ "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}", false, true },
	};
	static struct script sc;
	static struct probe p;
	struct lp_front_opts o = { 0 };
	struct lp_front *f;
	struct lp_buf out = LP_BUF_INIT;
	struct env e = { 0 };
	char listen[64], base[64], err[256];
	int64_t end;
	int fd, fd2;

	(void)state;
	memset(&p, 0, sizeof(p));
	script_start(&sc, steps, 1);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", sc.port);
	assert_int_equal(lp_h1_target_parse(base, &p.t), 0);
	e.gw_port = test_free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", e.gw_port);
	o.listen = listen;
	o.loops = 1;
	o.max_body = 1 << 20;
	o.request_timeout_ms = 5000;
	o.inner_port = test_free_port(); /* nothing behind: a tunnel is closed */
	o.handler.start = probe_start;
	o.handler.finish = probe_finish;
	o.handler.cancel = probe_cancel;
	o.handler.ud = &p;
	f = lp_front_start(&o, err, sizeof(err));
	assert_non_null(f);

	fd = dial(&e, "127.0.0.1");
	send_all(fd, "POST /api/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
	end = lp_now_ms() + 3000;
	while (atomic_load(&sc.served) < 1 && lp_now_ms() < end)
		usleep(1000);
	assert_int_equal(atomic_load(&sc.served), 1); /* the call is at the upstream */
	fd2 = dial(&e, "127.0.0.1");                  /* and an idle connection */

	lp_front_quiesce(f, 50); /* times out: the upstream holds its answer */
	lp_front_detach(f);
	atomic_store(&p.gone, true); /* gateway_stop frees the CivetWeb server here */
	atomic_store(&sc.release, true);
	send_all(fd2, "POST /api/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
	/* Both end without an answer: the call was cancelled, the new request
	 * found nothing behind. */
	assert_true(read_replies(fd, &out, 1));
	assert_int_equal(out.len, 0);
	assert_true(read_replies(fd2, &out, 1));
	assert_int_equal(out.len, 0);
	lp_front_stop(f);
	script_stop(&sc);
	assert_int_equal(atomic_load(&p.late), 0);
	assert_int_equal(atomic_load(&p.finishes), 0);
	assert_int_equal(atomic_load(&p.cancels), 1);
	close(fd);
	close(fd2);
	lp_buf_release(&out);
}

/* Issue #18: the rate limiter's lease waited for Redis on the event loop,
 * stalling every connection of that loop.  With a Redis that takes
 * connections and never answers (2 s timeout), one loop: a POST waits for
 * its lease without holding the loop, a request on another connection is
 * answered meanwhile, and the POST is answered once the lease failed
 * (the local fallback). */
static void test_lease_does_not_hold_the_loop(void **state)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	struct lp_buf out = LP_BUF_INIT, out2 = LP_BUF_INIT;
	struct env *e;
	char url[64];
	int64_t t0;
	int lfd = socket(AF_INET, SOCK_STREAM, 0), fd, fd2;

	assert_true(lfd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 64), 0); /* never accepted: connects, never answers */
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d", ntohs(sa.sin_port));
	next_redis_url = url;
	start_with(state, 1, 10000, 0);
	next_redis_url = NULL;
	e = *state;

	fd = dial(e, "127.0.0.1");
	t0 = lp_now_ms();
	send_all(fd, "POST /api/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
	usleep(100 * 1000); /* its lease is on its way to Redis */
	fd2 = dial(e, "127.0.0.1");
	send_all(fd2, "GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_false(read_replies(fd2, &out2, 1));
	assert_contains(out2.buf, "HTTP/1.1 200 ");
	assert_true(lp_now_ms() - t0 < 1500); /* not after the lease's 2 s */
	{
		char ch;

		assert_true(recv(fd, &ch, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN); /* POST waits */
	}
	/* The lease fails after 2 s (or 4: the script is loaded first). */
	end_after_ms(fd, &out, 6000);
	assert_contains(out.buf, "HTTP/1.1 202 ");
	close(fd);
	close(fd2);
	lp_buf_release(&out);
	lp_buf_release(&out2);
	teardown(state);
	close(lfd);
}

struct burst {
	struct env *e;
	int ok;
};

static void *burst_main(void *arg)
{
	struct burst *b = arg;
	struct lp_buf out = LP_BUF_INIT;
	int fd = dial(b->e, "127.0.0.1"), i;

	for (i = 0; i < 50; i++) {
		lp_buf_reset(&out);
		send_all(fd, "POST /api/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
		if (!read_replies(fd, &out, 1) && strstr(out.buf, "HTTP/1.1 202 "))
			b->ok++;
	}
	close(fd);
	lp_buf_release(&out);
	return NULL;
}

static void test_many_connections(void **state)
{
	struct env *e = *state;
	struct burst b[16];
	pthread_t th[16];
	int i, ok = 0;

	for (i = 0; i < 16; i++) {
		b[i].e = e;
		b[i].ok = 0;
		assert_int_equal(pthread_create(&th[i], NULL, burst_main, &b[i]), 0);
	}
	for (i = 0; i < 16; i++) {
		pthread_join(th[i], NULL);
		ok += b[i].ok;
	}
	assert_int_equal(ok, 16 * 50);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pipelined_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_close, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fast_then_civetweb_on_one_connection, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_client_address_on_both_paths, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_head_gets_408, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_connection_closed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_body_gets_400, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upstream_dropped_idle_connection,
						setup_one_loop, teardown),
		cmocka_unit_test(test_written_post_not_resent),
		cmocka_unit_test(test_detach_then_no_handler_call),
		cmocka_unit_test(test_lease_does_not_hold_the_loop),
		cmocka_unit_test_setup_teardown(test_expect_continue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversized_body_gets_413_not_a_reset, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_many_connections, setup, teardown),
	};

	lp_log_init("test", LP_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
