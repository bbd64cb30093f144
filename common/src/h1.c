/* h1.c - a small HTTP/1.1 client with a keep-alive pool (see h1.h).
 *
 * A call takes an idle socket for its host:port from the pool (or
 * connects), sends the request head and body with one sendmsg(2), and
 * reads the answer with blocking recv(2) calls into a buffer on its stack
 * (the socket's SO_RCVTIMEO keeps each wait within the call's deadline, and
 * is set again only when the time left moves away from it): the header section must fit
 * in it (LP_H1_BUF), the body streams through to the caller's sink.  The
 * socket goes back to the pool when the answer was complete and the
 * upstream did not ask to close.
 *
 * An idle socket may have been closed by the upstream meanwhile (CivetWeb
 * drops idle connections after its keep-alive timeout).  One idle for more
 * than LP_H1_PEEK_AFTER_MS is checked with a non-blocking MSG_PEEK before use;
 * a request whose method is not idempotent is checked whatever its idle
 * time.  The remaining race (closed while the request was on its way) is
 * caught by sending again on a new connection when nothing of the answer
 * came, but only when that cannot act twice: when not a byte of the
 * request had left (the write itself failed), or when the method is
 * idempotent.  A POST that was written and then met a closed connection
 * may have been acted on (a producer that had Kafka acknowledge the
 * events and died before answering): sending it again would store its
 * events twice, so it fails (502) instead. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include "logpipe/buf.h"
#include "logpipe/util.h"
#include "logpipe/h1.h"

#include "logpipe/banned.h"

#define LP_H1_BUCKETS 16          /* distinct upstreams in one pool */
#define LP_H1_MAX_IDLE 128        /* idle sockets kept per upstream */
#define LP_H1_IDLE_MAX_MS 2000    /* idle longer: closed instead of used */
#define LP_H1_PEEK_AFTER_MS 50    /* idle longer: checked before use */
#define LP_H1_BUF 16384           /* read buffer: bounds the header section */
#define LP_H1_TMO_SLACK_MS 200    /* SO_RCVTIMEO is left alone within this */

struct lp_h1_idle {
	int fd;
	int64_t since_ms; /* back in the pool at */
	long rcvtimeo_ms; /* its SO_RCVTIMEO */
};

struct lp_h1_bucket {
	char key[272];         /* "host port" */
	struct lp_h1_idle *idle;  /* a stack: the most recently used on top */
	size_t n, cap;
};

struct lp_h1_pool {
	pthread_mutex_t mu; /* guards the buckets */
	struct lp_h1_bucket b[LP_H1_BUCKETS];
	size_t nb;
};

/* How the body of an answer ends. */
enum body_mode { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_EOF };

/* One call's connection and read state. */
struct lp_h1_io {
	int fd;
	long rcvtimeo_ms;     /* the socket's SO_RCVTIMEO, 0 for none */
	bool reused;          /* came from the pool */
	bool got_any;         /* some byte of the answer arrived */
	int64_t deadline_ms;
	bool mem;             /* the whole answer is in buf: no socket to read */
	bool ended;           /* mem: the parser wanted more than buf holds */
	size_t pos, len;      /* unread bytes are buf[pos, len) */
	char *buf;            /* LP_H1_BUF bytes on lp_h1_perform's stack, or the answer */
	size_t cap;           /* size of buf */
};

/* The answer's framing, from its header section. */
struct lp_h1_head {
	int status;
	int minor;           /* HTTP/1.minor */
	bool close;          /* Connection: close */
	bool chunked;
	bool has_length;
	unsigned long long length;
};

struct lp_h1_pool *lp_h1_pool_new(void)
{
	struct lp_h1_pool *p = lp_xcalloc(1, sizeof(*p));

	pthread_mutex_init(&p->mu, NULL);
	return p;
}

void lp_h1_pool_free(struct lp_h1_pool *p)
{
	size_t i, j;

	if (!p)
		return;
	for (i = 0; i < p->nb; i++) {
		for (j = 0; j < p->b[i].n; j++)
			close(p->b[i].idle[j].fd);
		free(p->b[i].idle);
	}
	pthread_mutex_destroy(&p->mu);
	free(p);
}

/* ---- the pool ------------------------------------------------------------- */

static void target_key(const struct lp_h1_target *t, char key[272])
{
	size_t n = strlen(t->host), k = strlen(t->port);

	/* host < 256 and port < 8 bytes: always fits. */
	memcpy(key, t->host, n);
	key[n] = ' ';
	memcpy(key + n + 1, t->port, k + 1);
}

/* The bucket of key, created when create is set and there is room. */
static struct lp_h1_bucket *bucket(struct lp_h1_pool *p, const char *key, bool create)
{
	size_t i;

	for (i = 0; i < p->nb; i++)
		if (strcmp(p->b[i].key, key) == 0)
			return &p->b[i];
	if (!create || p->nb == LP_H1_BUCKETS)
		return NULL;
	lp_strlcpy(p->b[p->nb].key, key, sizeof(p->b[p->nb].key));
	return &p->b[p->nb++];
}

/* Pops the most recently used idle socket of key, or -1. */
static int pool_take(struct lp_h1_pool *p, const char *key, int64_t *idle_ms, long *rcvtimeo_ms)
{
	struct lp_h1_bucket *b;
	int64_t now = lp_now_ms();
	int fd = -1;

	pthread_mutex_lock(&p->mu);
	b = bucket(p, key, false);
	while (b && b->n > 0 && fd < 0) {
		struct lp_h1_idle *i = &b->idle[--b->n];

		if (now - i->since_ms > LP_H1_IDLE_MAX_MS) {
			close(i->fd);
			continue;
		}
		fd = i->fd;
		*idle_ms = now - i->since_ms;
		*rcvtimeo_ms = i->rcvtimeo_ms;
	}
	pthread_mutex_unlock(&p->mu);
	return fd;
}

/* Closes the oldest idle sockets of b (the bottom of the stack) once they
 * have been idle too long: after a burst, the sockets the quieter traffic
 * never reaches again would otherwise stay open (and closed by the peer)
 * for good. */
static void sweep(struct lp_h1_bucket *b, int64_t now)
{
	size_t k = 0;

	while (k < b->n && now - b->idle[k].since_ms > LP_H1_IDLE_MAX_MS)
		close(b->idle[k++].fd);
	if (k > 0) {
		memmove(b->idle, b->idle + k, (b->n - k) * sizeof(*b->idle));
		b->n -= k;
	}
}

static void pool_give(struct lp_h1_pool *p, const char *key, int fd, long rcvtimeo_ms)
{
	struct lp_h1_bucket *b;

	pthread_mutex_lock(&p->mu);
	b = bucket(p, key, true);
	if (b)
		sweep(b, lp_now_ms());
	if (b && b->n < LP_H1_MAX_IDLE) {
		if (b->n == b->cap) {
			b->cap = b->cap ? b->cap * 2 : 16;
			b->idle = lp_xrealloc(b->idle, b->cap * sizeof(*b->idle));
		}
		b->idle[b->n].fd = fd;
		b->idle[b->n].since_ms = lp_now_ms();
		b->idle[b->n].rcvtimeo_ms = rcvtimeo_ms;
		b->n++;
		fd = -1;
	}
	pthread_mutex_unlock(&p->mu);
	if (fd >= 0)
		close(fd);
}

/* True when the upstream has closed (or broken) an idle socket. */
static bool idle_dead(int fd)
{
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

	if (n < 0)
		return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
	return true; /* EOF, or bytes nobody asked for */
}

/* ---- the target ----------------------------------------------------------- */

int lp_h1_target_parse(const char *base, struct lp_h1_target *t)
{
	const char *a, *h, *rest, *end;
	size_t n, hn;

	if (!base || strncasecmp(base, "http://", 7) != 0)
		return -EINVAL;
	a = base + 7;
	n = strlen(a);
	while (n > 0 && a[n - 1] == '/')
		n--;
	if (n == 0 || n >= sizeof(t->authority) || memchr(a, '/', n) || memchr(a, '@', n) ||
	    memchr(a, '?', n) || memchr(a, '#', n))
		return -EINVAL;
	if (a[0] == '[') {
		end = memchr(a, ']', n);
		if (!end)
			return -EINVAL;
		h = a + 1;
		hn = (size_t)(end - h);
		rest = end + 1;
	} else {
		end = memchr(a, ':', n);
		h = a;
		hn = end ? (size_t)(end - a) : n;
		rest = a + hn;
	}
	if (hn == 0 || hn >= sizeof(t->host))
		return -EINVAL;
	if (rest < a + n) {
		int port = *rest != ':' ? -1
			 : lp_parse_decimal(rest + 1, (size_t)(a + n - rest - 1), 1, 65535);

		if (port < 0)
			return -EINVAL;
		snprintf(t->port, sizeof(t->port), "%d", port);
	} else {
		lp_strlcpy(t->port, "80", sizeof(t->port));
	}
	memcpy(t->host, h, hn);
	t->host[hn] = '\0';
	memcpy(t->authority, a, n);
	t->authority[n] = '\0';
	return 0;
}

/* ---- sockets -------------------------------------------------------------- */

/* Waits for events on fd until deadline: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	int64_t left;
	int rc;

	for (;;) {
		left = deadline - lp_now_ms();
		if (left <= 0)
			return 0;
		rc = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (rc > 0)
			return 1; /* POLLERR and POLLHUP too: the next call tells */
		if (rc < 0 && errno != EINTR)
			return -1;
	}
}

/* Connected sockets block in recv(2), bounded by SO_RCVTIMEO (one call
 * instead of poll and recv); sends use MSG_DONTWAIT and poll. */
static int make_blocking(int fd, int *err_no)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		*err_no = errno;
		close(fd);
		return -1;
	}
	return fd;
}

static int connect_one(const struct addrinfo *a, int64_t deadline, int *err_no, bool *timed_out)
{
	int fd, one = 1, soerr = 0, w;
	socklen_t sl = sizeof(soerr);

	fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err_no = errno;
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
		return make_blocking(fd, err_no);
	if (errno == EINPROGRESS) {
		w = wait_fd(fd, POLLOUT, deadline);
		if (w > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
			return make_blocking(fd, err_no);
		*err_no = w > 0 ? soerr : w == 0 ? ETIMEDOUT : errno;
		*timed_out = w == 0;
	} else {
		*err_no = errno;
	}
	close(fd);
	return -1;
}

/* A new connection to t, or -1 with *res and err set. */
static int lp_h1_connect(const struct lp_h1_target *t, const struct lp_h1_req *rq, enum lp_h1_result *res,
		      char *err, size_t errlen)
{
	struct addrinfo hints, *ai = NULL, *a;
	int64_t deadline = lp_now_ms() + rq->connect_timeout_ms;
	bool timed_out = false;
	int fd = -1, e = 0, rc;

	if (deadline > rq->deadline_ms)
		deadline = rq->deadline_ms;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	rc = getaddrinfo(t->host, t->port, &hints, &ai);
	if (rc != 0) {
		snprintf(err, errlen, "cannot resolve %s: %s", t->host, gai_strerror(rc));
		*res = LP_H1_FAILED;
		return -1;
	}
	for (a = ai; a && fd < 0 && !timed_out; a = a->ai_next)
		fd = connect_one(a, deadline, &e, &timed_out);
	freeaddrinfo(ai);
	if (fd < 0) {
		snprintf(err, errlen, "cannot connect to %s port %s: %s", t->host, t->port,
			 timed_out ? "timed out" : strerror(e));
		*res = timed_out ? LP_H1_TIMEOUT : LP_H1_FAILED;
	}
	return fd;
}

/* Sends every byte of iov; 0, -ETIMEDOUT or -errno.  *sent counts the
 * bytes the kernel took. */
static int send_all(int fd, struct iovec *iov, int iovcnt, int64_t deadline, size_t *sent)
{
	struct msghdr m;
	ssize_t n;
	int w;

	*sent = 0;
	memset(&m, 0, sizeof(m));
	m.msg_iov = iov;
	m.msg_iovlen = (size_t)iovcnt;
	while (m.msg_iovlen > 0) {
		if (m.msg_iov->iov_len == 0) {
			m.msg_iov++;
			m.msg_iovlen--;
			continue;
		}
		n = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -errno;
			w = wait_fd(fd, POLLOUT, deadline);
			if (w <= 0)
				return w == 0 ? -ETIMEDOUT : -errno;
			continue;
		}
		*sent += (size_t)n;
		while (n > 0 && m.msg_iovlen > 0) {
			size_t k = (size_t)n < m.msg_iov->iov_len ? (size_t)n : m.msg_iov->iov_len;

			m.msg_iov->iov_base = (char *)m.msg_iov->iov_base + k;
			m.msg_iov->iov_len -= k;
			n -= (ssize_t)k;
			if (m.msg_iov->iov_len == 0) {
				m.msg_iov++;
				m.msg_iovlen--;
			}
		}
	}
	return 0;
}

/* Bounds the next blocking recv(2) by the deadline: SO_RCVTIMEO is set
 * only when the socket's value would pass the deadline or is far below
 * the time left, so calls with the same timeout leave it alone.  Returns
 * 0, -ETIMEDOUT when the deadline has passed, or -errno. */
static int bound_recv(struct lp_h1_io *io)
{
	int64_t left = io->deadline_ms - lp_now_ms();
	struct timeval tv;
	long tmo;

	if (left <= 0)
		return -ETIMEDOUT;
	if (io->rcvtimeo_ms > 0 && io->rcvtimeo_ms <= left &&
	    io->rcvtimeo_ms + LP_H1_TMO_SLACK_MS >= left)
		return 0;
	tmo = (long)(left > 2 * LP_H1_TMO_SLACK_MS ? left - LP_H1_TMO_SLACK_MS / 2 : left);
	tv.tv_sec = tmo / 1000;
	tv.tv_usec = (tmo % 1000) * 1000;
	if (setsockopt(io->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;
	io->rcvtimeo_ms = tmo;
	return 0;
}

/* Reads more of the answer after the unread bytes (moved to the front).
 * Returns the count read, 0 at EOF, -ENOBUFS when the buffer is full of
 * unread bytes, -ETIMEDOUT or -errno. */
static ssize_t fill(struct lp_h1_io *io)
{
	ssize_t n;
	int rc;

	if (io->mem) {
		io->ended = true;
		return 0;
	}
	if (io->pos > 0) {
		memmove(io->buf, io->buf + io->pos, io->len - io->pos);
		io->len -= io->pos;
		io->pos = 0;
	}
	if (io->len == io->cap)
		return -ENOBUFS;
	for (;;) {
		rc = bound_recv(io);
		if (rc < 0)
			return rc;
		n = recv(io->fd, io->buf + io->len, io->cap - io->len, 0);
		if (n > 0) {
			io->len += (size_t)n;
			io->got_any = true;
			return n;
		}
		if (n == 0)
			return 0;
		/* EAGAIN: SO_RCVTIMEO ran out; bound_recv tells whether the
		 * deadline did too. */
		if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
	}
}

/* ---- the answer ----------------------------------------------------------- */

/* The first "\r\n" in p[0, n), or NULL: memchr for the '\r' (glibc's
 * memmem showed in the gateway's profile for its two-byte needle). */
static char *find_crlf(char *p, size_t n)
{
	char *end = p + n, *r;

	while ((r = memchr(p, '\r', (size_t)(end - p))) != NULL) {
		if (r + 1 < end && r[1] == '\n')
			return r;
		p = r + 1;
	}
	return NULL;
}

/* The first "\r\n\r\n" in p[0, n), or NULL. */
static char *find_blank_line(char *p, size_t n)
{
	char *end = p + n, *r;

	while ((r = find_crlf(p, (size_t)(end - p))) != NULL) {
		if (end - r >= 4 && r[2] == '\r' && r[3] == '\n')
			return r;
		p = r + 2;
	}
	return NULL;
}

static bool header_is(const char *line, size_t n, const char *name, const char **v, size_t *vn)
{
	size_t k;

	/* Most lines differ in the first letter (names are ASCII letters). */
	if (n == 0 || (line[0] | 0x20) != (name[0] | 0x20))
		return false;
	k = strlen(name);
	if (n < k + 1 || line[k] != ':' || strncasecmp(line, name, k) != 0)
		return false;
	*v = line + k + 1;
	*vn = n - k - 1;
	while (*vn > 0 && (**v == ' ' || **v == '\t'))
		(*v)++, (*vn)--;
	while (*vn > 0 && ((*v)[*vn - 1] == ' ' || (*v)[*vn - 1] == '\t'))
		(*vn)--;
	return true;
}

static bool has_token(const char *v, size_t n, const char *tok)
{
	size_t k = strlen(tok), i;

	for (i = 0; i + k <= n; i++)
		if (strncasecmp(v + i, tok, k) == 0 && (i == 0 || v[i - 1] == ' ' || v[i - 1] == ',') &&
		    (i + k == n || v[i + k] == ' ' || v[i + k] == ',' || v[i + k] == ';'))
			return true;
	return false;
}

static int parse_length(const char *v, size_t n, unsigned long long *out)
{
	unsigned long long x = 0;
	size_t i;

	if (n == 0 || n > 18)
		return -1;
	for (i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		x = x * 10 + (unsigned long long)(v[i] - '0');
	}
	*out = x;
	return 0;
}

/* Parses one header section at buf[0, n) (CRLF CRLF included), handing
 * each line to the header sink. */
static enum lp_h1_result parse_head(const struct lp_h1_req *rq, char *buf, size_t n, struct lp_h1_head *hd,
				 char *err, size_t errlen)
{
	char *line = buf, *eol;
	const char *v;
	size_t ln, vn;

	memset(hd, 0, sizeof(*hd));
	eol = find_crlf(line, n);
	if (!eol || eol - line < 12 || memcmp(line, "HTTP/1.", 7) != 0 || line[7] < '0' ||
	    line[7] > '9' || line[8] != ' ' || line[9] < '1' || line[9] > '5' || line[10] < '0' ||
	    line[10] > '9' || line[11] < '0' || line[11] > '9') {
		snprintf(err, errlen, "malformed status line in the answer");
		return LP_H1_FAILED;
	}
	hd->minor = line[7] - '0';
	hd->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
	for (;;) {
		ln = (size_t)(eol - line) + 2;
		if (ln == 2)
			return LP_H1_OK; /* the blank line */
		if (rq->on_header && rq->on_header(line, 1, ln, rq->ud) != ln)
			return LP_H1_ABORTED;
		if (header_is(line, ln - 2, "Content-Length", &v, &vn)) {
			if (parse_length(v, vn, &hd->length) < 0) {
				snprintf(err, errlen, "malformed Content-Length in the answer");
				return LP_H1_FAILED;
			}
			hd->has_length = true;
		} else if (header_is(line, ln - 2, "Transfer-Encoding", &v, &vn)) {
			hd->chunked = has_token(v, vn, "chunked");
		} else if (header_is(line, ln - 2, "Connection", &v, &vn)) {
			hd->close = hd->close || has_token(v, vn, "close");
		}
		n -= ln;
		line += ln;
		eol = find_crlf(line, n);
		if (!eol)
			break;
	}
	snprintf(err, errlen, "malformed header section in the answer");
	return LP_H1_FAILED;
}

static enum lp_h1_result io_error(ssize_t rc, const char *what, char *err, size_t errlen)
{
	if (rc == -ETIMEDOUT) {
		snprintf(err, errlen, "timed out %s", what);
		return LP_H1_TIMEOUT;
	}
	if (rc == 0)
		snprintf(err, errlen, "connection closed by the upstream %s", what);
	else if (rc == -ENOBUFS)
		snprintf(err, errlen, "answer header section larger than %d bytes", LP_H1_BUF);
	else
		snprintf(err, errlen, "%s: %s", what, strerror((int)-rc));
	return LP_H1_FAILED;
}

/* Passes up to want bytes of the unread buffer to the body sink. */
static enum lp_h1_result sink(const struct lp_h1_req *rq, struct lp_h1_io *io, size_t want)
{
	size_t k = io->len - io->pos < want ? io->len - io->pos : want;

	if (k > 0 && rq->on_body && rq->on_body(io->buf + io->pos, 1, k, rq->ud) != k)
		return LP_H1_ABORTED;
	io->pos += k;
	return LP_H1_OK;
}

static enum lp_h1_result body_length(const struct lp_h1_req *rq, struct lp_h1_io *io,
				  unsigned long long left, char *err, size_t errlen)
{
	enum lp_h1_result r;
	size_t before;
	ssize_t rc;

	for (;;) {
		before = io->pos;
		r = sink(rq, io, left > SIZE_MAX ? SIZE_MAX : (size_t)left);
		if (r != LP_H1_OK)
			return r;
		left -= io->pos - before;
		if (left == 0)
			return LP_H1_OK;
		rc = fill(io);
		if (rc <= 0)
			return io_error(rc, "reading the body", err, errlen);
	}
}

static enum lp_h1_result body_eof(const struct lp_h1_req *rq, struct lp_h1_io *io, char *err,
			       size_t errlen)
{
	enum lp_h1_result r;
	ssize_t rc;

	for (;;) {
		r = sink(rq, io, SIZE_MAX);
		if (r != LP_H1_OK)
			return r;
		rc = fill(io);
		if (rc == 0)
			return LP_H1_OK;
		if (rc < 0)
			return io_error(rc, "reading the body", err, errlen);
	}
}

/* The next CRLF-terminated line of the unread buffer, reading more as
 * needed; *n excludes the CRLF, which is consumed. */
static enum lp_h1_result next_line(struct lp_h1_io *io, char **line, size_t *n, char *err,
				size_t errlen)
{
	char *eol;
	ssize_t rc;

	for (;;) {
		eol = find_crlf(io->buf + io->pos, io->len - io->pos);
		if (eol) {
			*line = io->buf + io->pos;
			*n = (size_t)(eol - *line);
			io->pos += *n + 2;
			return LP_H1_OK;
		}
		rc = fill(io);
		if (rc <= 0)
			return io_error(rc, "reading a chunked body", err, errlen);
	}
}

static enum lp_h1_result body_chunked(const struct lp_h1_req *rq, struct lp_h1_io *io, char *err,
				   size_t errlen)
{
	unsigned long long size;
	enum lp_h1_result r;
	char *line;
	size_t n, i;
	int d;

	for (;;) {
		r = next_line(io, &line, &n, err, errlen);
		if (r != LP_H1_OK)
			return r;
		size = 0;
		for (i = 0; i < n && line[i] != ';' && line[i] != ' '; i++) {
			char c = line[i];

			d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
				: c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
			if (d < 0 || i >= 15) {
				snprintf(err, errlen, "malformed chunk size in the answer");
				return LP_H1_FAILED;
			}
			size = size * 16 + (unsigned long long)d;
		}
		if (i == 0) {
			snprintf(err, errlen, "malformed chunk size in the answer");
			return LP_H1_FAILED;
		}
		if (size == 0)
			break;
		r = body_length(rq, io, size, err, errlen);
		if (r != LP_H1_OK)
			return r;
		r = next_line(io, &line, &n, err, errlen);
		if (r != LP_H1_OK)
			return r;
		if (n != 0) {
			snprintf(err, errlen, "malformed chunk end in the answer");
			return LP_H1_FAILED;
		}
	}
	do { /* trailers, up to the blank line */
		r = next_line(io, &line, &n, err, errlen);
		if (r != LP_H1_OK)
			return r;
	} while (n != 0);
	return LP_H1_OK;
}

/* Reads one whole answer; *keep tells whether the socket may be reused. */
static enum lp_h1_result read_answer(const struct lp_h1_req *rq, struct lp_h1_io *io, int *status,
				  bool *keep, char *err, size_t errlen)
{
	struct lp_h1_head hd;
	enum lp_h1_result r;
	enum body_mode mode;
	char *end;
	ssize_t rc;

	for (;;) {
		end = find_blank_line(io->buf + io->pos, io->len - io->pos);
		if (!end) {
			rc = fill(io);
			if (rc <= 0)
				return io_error(rc, "waiting for the answer", err, errlen);
			continue;
		}
		r = parse_head(rq, io->buf + io->pos, (size_t)(end + 4 - (io->buf + io->pos)), &hd,
			       err, errlen);
		if (r != LP_H1_OK)
			return r;
		io->pos = (size_t)(end + 4 - io->buf);
		if (hd.status >= 200 || hd.status == 101)
			break;
		/* 1xx: the real answer follows. */
	}
	if (hd.status == 101) {
		snprintf(err, errlen, "unexpected protocol switch in the answer");
		return LP_H1_FAILED;
	}
	*status = hd.status;
	if (hd.status == 204 || hd.status == 304)
		mode = BODY_NONE;
	else if (hd.chunked)
		mode = BODY_CHUNKED;
	else if (hd.has_length)
		mode = BODY_LENGTH;
	else
		mode = BODY_EOF;
	switch (mode) {
	case BODY_NONE:
		r = LP_H1_OK;
		break;
	case BODY_LENGTH:
		r = hd.length ? body_length(rq, io, hd.length, err, errlen) : LP_H1_OK;
		break;
	case BODY_CHUNKED:
		r = body_chunked(rq, io, err, errlen);
		break;
	default:
		r = body_eof(rq, io, err, errlen);
		break;
	}
	*keep = r == LP_H1_OK && mode != BODY_EOF && !hd.close && hd.minor >= 1 && io->pos == io->len;
	return r;
}

/* ---- a call --------------------------------------------------------------- */

static bool skip_header(const char *h)
{
	const char *colon = strchr(h, ':');

	/* "Name:" without a value removes a header in libcurl; nothing to send here. */
	if (!colon)
		return true;
	colon++;
	while (*colon == ' ' || *colon == '\t')
		colon++;
	return *colon == '\0' || strpbrk(h, "\r\n") != NULL;
}

/* Whether the request carries a body (and a Content-Length): as libcurl
 * sends them, never for GET (HEAD goes as GET), always for POST, PUT and
 * PATCH, and for other methods when there is one. */
static bool sends_body(const struct lp_h1_req *rq)
{
	const char *m = rq->method;

	if (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0)
		return false;
	return (rq->body && rq->body_len > 0) || strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 ||
	       strcmp(m, "PATCH") == 0;
}

void lp_h1_build_head(const struct lp_h1_target *t, const struct lp_h1_req *rq, struct lp_buf *h)
{
	const char *m = strcmp(rq->method, "HEAD") == 0 ? "GET" : rq->method;
	bool accept = false, body = sends_body(rq);
	size_t i;

	lp_buf_adds(h, m);
	lp_buf_addch(h, ' ');
	lp_buf_adds(h, rq->path);
	if (rq->query && *rq->query) {
		lp_buf_addch(h, '?');
		lp_buf_adds(h, rq->query);
	}
	lp_buf_adds(h, " HTTP/1.1\r\nHost: ");
	lp_buf_adds(h, t->authority);
	lp_buf_adds(h, "\r\n");
	for (i = 0; rq->headers && rq->headers[i]; i++) {
		if (skip_header(rq->headers[i]))
			continue;
		accept = accept || strncasecmp(rq->headers[i], "Accept:", 7) == 0;
		lp_buf_adds(h, rq->headers[i]);
		lp_buf_adds(h, "\r\n");
	}
	if (!accept)
		lp_buf_adds(h, "Accept: */*\r\n");
	if (body) {
		char n[24];

		lp_buf_adds(h, "Content-Length: ");
		lp_buf_add(h, n, lp_fmt_u64(n, rq->body ? rq->body_len : 0));
		lp_buf_adds(h, "\r\n");
	}
	lp_buf_adds(h, "\r\n");
}

bool lp_h1_idempotent(const char *method)
{
	static const char *const m[] = { "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE" };
	size_t i;

	for (i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		if (strcmp(method, m[i]) == 0)
			return true;
	return false;
}

/* True when a failure on a reused socket means the upstream had closed it
 * and sending once more on a new connection cannot act twice: nothing of
 * the request left (the write itself was refused), or it did but the
 * method is idempotent. */
static bool stale(const struct lp_h1_req *rq, const struct lp_h1_io *io, int send_rc, size_t sent,
		  enum lp_h1_result r, const char *err)
{
	bool closed;

	if (!io->reused || io->got_any)
		return false;
	closed = send_rc == -EPIPE || send_rc == -ECONNRESET;
	if (closed && sent == 0)
		return true;
	if (!lp_h1_idempotent(rq->method))
		return false;
	return closed || (r == LP_H1_FAILED && (strstr(err, "closed by the upstream") ||
					     strstr(err, strerror(ECONNRESET))));
}

static enum lp_h1_result attempt(struct lp_h1_pool *p, const struct lp_h1_target *t,
			      const struct lp_h1_req *rq, const char *key, struct lp_buf *head,
			      struct lp_h1_io *io, bool fresh, int *status, bool *retry, char *err,
			      size_t errlen)
{
	struct iovec iov[2];
	enum lp_h1_result r = LP_H1_FAILED;
	int64_t idle_ms = 0;
	bool keep = false, once = !lp_h1_idempotent(rq->method);
	size_t sent = 0;
	int rc;

	io->fd = -1;
	/* A request that must not go twice is not sent on a socket known
	 * closed, however briefly it was idle: it would not be sent again. */
	while (!fresh && (io->fd = pool_take(p, key, &idle_ms, &io->rcvtimeo_ms)) >= 0 &&
	       (once || idle_ms > LP_H1_PEEK_AFTER_MS) && idle_dead(io->fd)) {
		close(io->fd);
		io->fd = -1;
	}
	io->reused = io->fd >= 0;
	if (!io->reused) {
		io->rcvtimeo_ms = 0;
		io->fd = lp_h1_connect(t, rq, &r, err, errlen);
		if (io->fd < 0)
			return r;
	}
	iov[0].iov_base = head->buf;
	iov[0].iov_len = head->len;
	iov[1].iov_base = (void *)(uintptr_t)(rq->body ? rq->body : "");
	iov[1].iov_len = rq->body && sends_body(rq) ? rq->body_len : 0;
	rc = send_all(io->fd, iov, 2, rq->deadline_ms, &sent);
	if (rc < 0)
		r = io_error(rc, "sending the request", err, errlen);
	else
		r = read_answer(rq, io, status, &keep, err, errlen);
	*retry = r != LP_H1_OK && stale(rq, io, rc, sent, r, err);
	if (keep)
		pool_give(p, key, io->fd, io->rcvtimeo_ms);
	else
		close(io->fd);
	io->fd = -1;
	return r;
}

enum lp_h1_result lp_h1_perform(struct lp_h1_pool *p, const struct lp_h1_target *t, const struct lp_h1_req *rq,
			  int *status, char *err, size_t errlen)
{
	struct lp_buf head;
	struct lp_h1_io io;
	enum lp_h1_result r;
	char key[272], space[LP_H1_BUF];
	bool retry = false;

	*status = 0;
	err[0] = '\0';
	target_key(t, key);
	lp_buf_init(&head, 512);
	lp_h1_build_head(t, rq, &head);
	memset(&io, 0, sizeof(io));
	io.buf = space;
	io.cap = sizeof(space);
	io.deadline_ms = rq->deadline_ms;
	r = attempt(p, t, rq, key, &head, &io, false, status, &retry, err, errlen);
	if (retry) {
		memset(&io, 0, sizeof(io));
		io.buf = space;
		io.cap = sizeof(space);
		io.deadline_ms = rq->deadline_ms;
		err[0] = '\0';
		r = attempt(p, t, rq, key, &head, &io, true, status, &retry, err, errlen);
	}
	lp_buf_release(&head);
	return r;
}

void lp_h1_build_request(const struct lp_h1_target *t, const struct lp_h1_req *rq, struct lp_buf *out)
{
	lp_h1_build_head(t, rq, out);
	if (rq->body && sends_body(rq))
		lp_buf_add(out, rq->body, rq->body_len);
}

enum lp_h1_result lp_h1_parse_answer(const struct lp_h1_req *rq, char *buf, size_t n, bool eof,
			       int *status, size_t *used, bool *keep, char *err, size_t errlen)
{
	struct lp_h1_io io;
	enum lp_h1_result r;

	*status = 0;
	*used = 0;
	*keep = false;
	err[0] = '\0';
	memset(&io, 0, sizeof(io));
	io.fd = -1;
	io.mem = true;
	io.buf = buf;
	io.cap = n;
	io.len = n;
	r = read_answer(rq, &io, status, keep, err, errlen);
	if (io.ended && !eof && r != LP_H1_ABORTED) {
		err[0] = '\0';
		return LP_H1_AGAIN; /* it ran out of bytes: the answer goes on */
	}
	*used = io.pos;
	*keep = *keep && io.pos == n;
	return r;
}
