/* stream.c - streamed proxying for Server-Sent Events (see stream.h). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "logpipe/buf.h"
#include "logpipe/http.h"
#include "logpipe/util.h"
#include "stream.h"

#include "logpipe/banned.h"

#define MAX_HEAD 16384
#define MAX_BODY (1024 * 1024)
#define POLL_MS 1000

/* Waits for events on fd until deadline_ms (lp_now_ms()).  Returns 1 ready,
 * 0 timed out, -1 failed. */
static int wait_fd(int fd, short events, int64_t deadline_ms)
{
	for (;;) {
		int64_t left = deadline_ms - lp_now_ms();
		struct pollfd p = { .fd = fd, .events = events };
		int n;

		if (left <= 0)
			return 0;
		n = poll(&p, 1, left > POLL_MS ? POLL_MS : (int)left);
		if (n > 0)
			return 1;
		if (n < 0 && errno != EINTR)
			return -1;
	}
}

static int dial(const struct lp_h1_target *t, long timeout_ms, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai, *a;
	int fd = -1, rc;

	rc = getaddrinfo(t->host, t->port, &hints, &ai);
	if (rc != 0) {
		snprintf(err, errlen, "cannot resolve %s: %s", t->host, gai_strerror(rc));
		return -1;
	}
	for (a = ai; a; a = a->ai_next) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 ||
		    (errno == EINPROGRESS &&
		     wait_fd(fd, POLLOUT, lp_now_ms() + timeout_ms) == 1 &&
		     getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0))
			break;
		snprintf(err, errlen, "cannot connect to %s:%s: %s", t->host, t->port,
			 strerror(soerr ? soerr : errno ? errno : ETIMEDOUT));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

static int send_all(int fd, const char *p, size_t n, int64_t deadline_ms)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w > 0) {
			p += w;
			n -= (size_t)w;
		} else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (wait_fd(fd, POLLOUT, deadline_ms) != 1)
				return -1;
		} else {
			return -1;
		}
	}
	return 0;
}

/* Reads what fd has into b (up to room bytes more).  Returns bytes read,
 * 0 at the end, -EAGAIN when nothing is there, -1 on error. */
static ssize_t read_some(int fd, struct lp_buf *b, size_t room)
{
	ssize_t n;

	lp_buf_grow(b, room + 1);
	n = read(fd, b->buf + b->len, room);
	if (n > 0) {
		b->len += (size_t)n;
		b->buf[b->len] = '\0';
		return n;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return -EAGAIN;
	return n == 0 ? 0 : -1;
}

/* The value of header name in head (lines after the status line), copied
 * into out; false when absent. */
static bool head_value(const char *head, const char *name, char *out, size_t outlen)
{
	size_t n = strlen(name);
	const char *p = strstr(head, "\r\n");

	while (p && p[2] != '\r') {
		const char *line = p + 2, *end = strstr(line, "\r\n");

		if (!end)
			break;
		if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
			const char *v = line + n + 1;
			size_t len;

			while (*v == ' ' || *v == '\t')
				v++;
			len = (size_t)(end - v);
			while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
				len--;
			if (len >= outlen)
				len = outlen - 1;
			memcpy(out, v, len);
			out[len] = '\0';
			return true;
		}
		p = end;
	}
	return false;
}

/* Passes the rest of a close-delimited stream on as it arrives. */
static void pump(struct lp_http_req *r, int fd, struct lp_buf *b, const atomic_bool *stop)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (b->len > 0) {
			if (lp_http_stream_write(r, b->buf, b->len) < 0)
				return; /* the client is gone */
			lp_buf_reset(b);
		}
		if (stop && atomic_load(stop))
			return;
		if (poll(&p, 1, POLL_MS) < 0 && errno != EINTR)
			return;
		n = read_some(fd, b, 16384);
		if (n == 0 || n == -1)
			return; /* the upstream ended the stream */
	}
}

enum gw_call_result gw_stream_proxy(struct lp_http_req *r, struct gw_stream_call *sc,
				    char *err, size_t errlen)
{
	struct lp_buf req = LP_BUF_INIT, b = LP_BUF_INIT;
	int64_t t0 = lp_now_ms(), deadline = t0 + sc->head_timeout_ms;
	enum gw_call_result res = GW_CALL_FAILED;
	char ctype[128] = "", val[64];
	const char *end = NULL;
	size_t head_len, want = MAX_BODY;
	bool by_length = false;
	int fd, status = 0;
	size_t i;

	fd = dial(sc->target, sc->connect_timeout_ms, err, errlen);
	if (fd < 0)
		return GW_CALL_FAILED;
	lp_buf_addf(&req, "%s %s%s%s HTTP/1.1\r\nHost: %s\r\n",
		    sc->method && strcmp(sc->method, "HEAD") == 0 ? "HEAD" : "GET", sc->path,
		    sc->query ? "?" : "",
		    sc->query ? sc->query : "", sc->target->authority);
	for (i = 0; sc->headers && sc->headers[i]; i++)
		lp_buf_addf(&req, "%s\r\n", sc->headers[i]);
	lp_buf_adds(&req, "Accept: text/event-stream\r\nConnection: close\r\n\r\n");
	if (send_all(fd, req.buf, req.len, deadline) < 0) {
		snprintf(err, errlen, "sending the request failed");
		goto out;
	}
	/* The head. */
	while (!end) {
		ssize_t n = read_some(fd, &b, MAX_HEAD);

		if (n == -EAGAIN) {
			int w = wait_fd(fd, POLLIN, deadline);

			if (w == 0) {
				res = GW_CALL_TIMEOUT;
				snprintf(err, errlen, "no answer within %ld ms", sc->head_timeout_ms);
				goto out;
			}
			if (w < 0)
				goto out;
			continue;
		}
		if (n <= 0) {
			snprintf(err, errlen, "the upstream closed before its answer's head");
			goto out;
		}
		end = strstr(b.buf, "\r\n\r\n");
		if (!end && b.len > MAX_HEAD) {
			snprintf(err, errlen, "the answer's head is over %d bytes", MAX_HEAD);
			goto out;
		}
	}
	sc->head_ms = lp_now_ms() - t0;
	head_len = (size_t)(end - b.buf) + 4;
	if (sscanf(b.buf, "HTTP/1.%*c %d", &status) != 1 || status < 100 || status > 599) {
		snprintf(err, errlen, "the answer's status line is malformed");
		goto out;
	}
	b.buf[head_len - 2] = '\0'; /* the head's lines end at the blank line */
	head_value(b.buf, "Content-Type", ctype, sizeof(ctype));
	if (head_value(b.buf, "Transfer-Encoding", val, sizeof(val))) {
		snprintf(err, errlen, "a chunked answer cannot be passed on");
		goto out;
	}
	if (head_value(b.buf, "Content-Length", val, sizeof(val))) {
		want = strtoul(val, NULL, 10);
		by_length = true;
		if (want > MAX_BODY) {
			snprintf(err, errlen, "the answer is over %d bytes", MAX_BODY);
			goto out;
		}
	}
	res = GW_CALL_OK;
	if (status == 200 && lp_http_media_type_is(ctype, "text/event-stream")) {
		struct lp_buf h = LP_BUF_INIT;

		lp_buf_adds(&h, "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
		if (sc->reply_headers)
			lp_buf_adds(&h, sc->reply_headers);
		lp_http_stream_begin(r, 200, "text/event-stream", h.buf);
		lp_buf_release(&h);
		memmove(b.buf, b.buf + head_len, b.len - head_len);
		b.len -= head_len;
		pump(r, fd, &b, sc->stop);
		goto out;
	} else {
		/* A refusal or an error: whole. */
		struct lp_buf h = LP_BUF_INIT;
		char retry[32];

		if (head_value(b.buf, "Retry-After", retry, sizeof(retry)))
			lp_buf_addf(&h, "Retry-After: %s\r\n", retry);
		if (sc->reply_headers)
			lp_buf_adds(&h, sc->reply_headers);
		memmove(b.buf, b.buf + head_len, b.len - head_len);
		b.len -= head_len;
		while (b.len < want) {
			ssize_t n = read_some(fd, &b, want - b.len < 16384 ? want - b.len : 16384);

			if (n == -EAGAIN && wait_fd(fd, POLLIN, deadline) == 1)
				continue;
			if (n > 0)
				continue;
			if (n == 0 && !by_length)
				break;
			lp_buf_release(&h);
			res = n == -EAGAIN ? GW_CALL_TIMEOUT : GW_CALL_FAILED;
			snprintf(err, errlen, "the answer's body did not arrive whole");
			goto out;
		}
		if (b.len > want)
			b.len = want;
		lp_http_reply(r, status, ctype[0] ? ctype : NULL, b.buf, b.len, h.buf);
		lp_buf_release(&h);
	}
out:
	close(fd);
	lp_buf_release(&req);
	lp_buf_release(&b);
	return res;
}
