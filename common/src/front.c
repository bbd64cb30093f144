/* front.c - the event-driven HTTP front (see front.h).
 *
 * Each loop thread owns an epoll set, a listening socket of the public
 * address (SO_REUSEPORT: the kernel spreads new connections over the
 * loops), the connections it accepted and a pool of idle upstream sockets
 * per target.  Every socket is non-blocking and registered once,
 * edge-triggered, for input and output; the loop keeps a readable and a
 * writable flag per socket, set by events and cleared when a read comes
 * back short or a write is refused, so no epoll_ctl(2) is needed per
 * request.  A read that fills less than the room given is taken to have
 * drained the socket, which is how TCP sockets behave on Linux.
 *
 * A client connection is in one of these states:
 *
 *   READ    collecting a request: head (reqhead.c) and Content-Length body;
 *   WAIT    the handler could not decide without waiting (a rate-limit
 *           lease in flight): the request stays in c->in and is offered
 *           again after lp_front_kick (or at the next sweep);
 *   CALL    waiting for the upstream call the handler asked for;
 *   DEFER   waiting for lp_front_answer from another thread: the answer
 *           comes through the loop's done queue and its eventfd (written
 *           by the first answer of a batch only);
 *   WRITE   writing the reply, then back to READ (kept alive), or, after
 *           a request with "Connection: close", LINGER (its shut side
 *           tells the client the reply is whole; what it sent after that
 *           request is dropped);
 *   TUNNEL  passing bytes both ways to the CivetWeb server behind, until
 *           either side ends (see front.h for what goes there);
 *   LINGER  CivetWeb closed its side (after a 413, say) while the client
 *           may still be sending: our side is shut for writing and what the
 *           client sends is read and dropped until it closes or LINGER_MS
 *           pass.  Closing at once with unread bytes would reset the
 *           connection and could destroy the reply before the client read
 *           it, which is what CivetWeb's own graceful close avoids.
 *
 * An upstream call takes the most recently used idle socket of its target
 * (one idle longer than IDLE_MAX_MS is closed instead: CivetWeb drops idle
 * connections after its own keep-alive timeout), sends the request, and
 * reads until lp_h1_parse_answer finds the answer whole.  When a reused socket
 * ends or resets before any byte of the answer, the upstream had probably
 * closed it meanwhile, and the request is sent once more on a new
 * connection, as h1.c does, but only when that cannot act twice: when no
 * byte of it had been written, or when its method is idempotent.  A POST
 * that was written may have been acted on (a producer whose events Kafka
 * acknowledged, then crashed): it is answered 502 rather than sent again.
 * So that this stays rare, a non-idempotent request is not written to a
 * pooled socket the upstream is already known to have closed.  Idle pooled
 * sockets stay in the epoll set; an input event on one (the upstream
 * closing it) closes it, and those of a batch of events are handled before
 * the rest of the batch (close_idle_ended), so that no request of the
 * batch is written to a socket the batch says is closed.
 *
 * A deferred request's handle (struct lp_front_later) lives apart from its
 * connection: the client may go before the answer comes, and the front may
 * stop before it.  The loop thread alone links the two (c->later, h->c);
 * lp_front_answer only queues the handle on its loop under answer_mu, the
 * one lock of the path, which also orders it against lp_front_stop: a
 * handle still pending when the loops have stopped is marked orphan, and
 * its answer, whenever it comes, frees it without touching the loop.
 *
 * Objects closed while the loop is going through a batch of events are
 * freed after the batch, since a later event of the batch may point at
 * them.  Timeouts are checked every SWEEP_MS by walking the loop's
 * connections.
 *
 * Sockets are read with recv(2), not read(2): the same for a socket, but
 * without the file layer's part of read (vfs_read, its access checks and
 * notifications), which showed in the gateway's profile. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "logpipe/log.h"
#include "logpipe/util.h"
#include "logpipe/front.h"

#include "logpipe/banned.h"

#define MAX_LOOPS 8
#define MAX_TARGETS 16       /* distinct upstreams per loop */
#define MAX_IDLE 256         /* idle sockets kept per target and loop */
#define IDLE_MAX_MS 2000     /* idle longer: closed, not reused */
#define RESOLVE_TTL_MS 10000 /* a target's address is looked up again after */
#define READ_ROOM 16384      /* bytes asked of one read(2) */
#define SWEEP_MS 100         /* between two timeout checks */
#define MAX_EVENTS 64
#define LINGER_MS 2000       /* at most this long reading what a closed tunnel's client sends */
#define CONTINUE_REPLY "HTTP/1.1 100 Continue\r\n\r\n"

enum kind { K_LISTEN, K_WAKE, K_CLIENT, K_INNER, K_UP };

/* What an epoll event points at: the first member of each owner. */
struct ent {
	enum kind kind;
	int fd;
};

struct loop;
struct conn;

/* The idle sockets of one upstream target in one loop. */
struct bucket {
	const struct lp_h1_target *t;      /* the target (the handler's, long-lived) */
	struct sockaddr_storage addr;   /* its resolved address */
	socklen_t alen;                 /* 0: not resolved */
	int64_t resolved_ms;            /* when */
	struct upconn *idle;            /* a stack, the most recently used on top */
	size_t nidle;
};

/* A connection to an upstream. */
struct upconn {
	struct ent e;           /* K_UP */
	struct loop *l;
	struct bucket *b;       /* its target */
	struct conn *owner;     /* the client whose call it carries; NULL: idle */
	bool connecting;        /* connect(2) in progress */
	bool reused;            /* taken from the pool for this call */
	bool readable, writable;
	bool hup;               /* the upstream ended or reset: read until EOF */
	bool dead;              /* closed; freed after the batch */
	int64_t idle_since;     /* lp_now_ms() when it went back to the pool */
	struct upconn *next;    /* the idle stack, or the loop's dead list */
};

enum cstate { C_READ, C_WAIT, C_CALL, C_DEFER, C_WRITE, C_TUNNEL, C_LINGER };

/* The handle of a deferred request (see the top of the file). */
struct lp_front_later {
	struct loop *l;                   /* the loop that owns the connection */
	struct conn *c;                   /* the connection; NULL once it closed (loop only) */
	struct lp_buf reply;              /* the answer, once given */
	bool orphan;                      /* the front stopped first (answer_mu) */
	struct lp_front_later *next_done; /* the loop's done queue (answer_mu) */
	struct lp_front_later *prev, *next; /* the loop's pending list (loop only) */
};

/* A client connection. */
struct conn {
	struct ent e;             /* K_CLIENT: the client socket */
	struct ent inner;         /* K_INNER: the CivetWeb side of a tunnel, fd -1 before */
	struct loop *l;
	enum cstate st;
	char addr[48];            /* the client's address */
	bool readable, writable;  /* of the client socket */
	bool inner_readable, inner_writable; /* of the inner socket */
	bool hup, inner_hup;      /* that side ended or reset: read until EOF */
	bool c_eof, i_eof;        /* tunnel: either side ended its stream */
	bool i_shut;              /* tunnel: the inner socket's writing side is shut */
	bool i_gone;              /* tunnel: CivetWeb takes no more bytes (closed early) */
	bool dead;                /* closed; freed after the batch */
	int inner_port;           /* local port of the inner socket (peer table key) */
	int64_t deadline;         /* READ: the request must be whole by; WRITE: written by */
	struct lp_buf in;         /* read from the client and not used yet */
	size_t in_pos;            /* tunnel: bytes of in already passed on */
	struct lp_buf out;        /* the reply (tunnel: bytes from CivetWeb) */
	size_t out_pos;           /* bytes of out written */
	struct lp_buf head;       /* a copy of the request head, NUL-terminated in parts */
	struct lp_buf body;       /* a copy of the request body */
	struct lp_rq rq;          /* the head, pointing into head */
	struct lp_front_req q;    /* the request as the handler sees it */
	struct lp_buf call;       /* the upstream request */
	size_t call_pos;          /* bytes of call sent */
	struct lp_buf answer;     /* the upstream answer so far */
	size_t answer_max;        /* read no further than this */
	struct upconn *up;        /* the upstream connection of the call */
	struct lp_front_later *later; /* DEFER: the handle, given to the handler */
	bool retried;             /* the call was sent again on a new connection */
	bool continued;           /* "100 Continue" was sent for the request in c->in */
	bool close_after;         /* the request served asked for "Connection: close" */
	bool got_any;             /* some byte of the answer arrived */
	int64_t call_deadline;    /* the call fails with LP_H1_TIMEOUT after */
	int64_t connect_deadline; /* the connect in progress times out after */
	struct conn *prev, *next; /* the loop's connections */
	struct conn *next_dead;   /* the loop's dead list */
};

struct loop {
	struct lp_front *f;
	int ep;                   /* epoll set */
	struct ent listen;        /* K_LISTEN: this loop's listening socket */
	struct ent wake;          /* K_WAKE: eventfd that stops the loop */
	pthread_t th;
	bool started;
	int64_t now;              /* lp_now_ms() when the batch of events in hand was taken */
	atomic_bool stop;         /* lp_front_stop: end the loop */
	atomic_bool detached;     /* the loop saw f->detach: the handler is not called again */
	atomic_bool kicked;       /* lp_front_kick: offer the WAIT requests again */
	bool quiet;               /* quiescing: its listening socket is closed */
	bool accept_later;        /* out of descriptors: the sweep accepts again */
	bool accept_stuck;        /* that was logged */
	atomic_int busy;          /* quiescing: requests still being served, -1 before counted */
	struct conn *conns;       /* open client connections */
	struct conn *dead_conns;  /* closed during this batch */
	struct upconn *dead_ups;
	struct bucket b[MAX_TARGETS];
	size_t nb;
	struct lp_front_later *pending; /* deferred, not answered or not taken yet */
	struct lp_front_later *done;    /* answered, for the loop to take (answer_mu) */
};

struct lp_front {
	struct lp_front_opts o;
	atomic_bool quiesce;      /* lp_front_quiesce was called */
	atomic_bool detach;       /* lp_front_detach was called */
	struct sockaddr_storage inner; /* 127.0.0.1:inner_port */
	int nloops;
	struct loop loops[MAX_LOOPS];
	char timeout_reply[384];  /* the 408 sent to a client too slow to send */
	size_t timeout_reply_len;
	int port;                 /* the public port */
};

/* Orders lp_front_answer against the loops taking answers and against
 * lp_front_stop (see the top of the file). */
static pthread_mutex_t answer_mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- the peer table --------------------------------------------------------
 * CivetWeb sees a tunnelled request come from 127.0.0.1 and the tunnel's
 * local port; the table maps that port to the real client's address. */

static pthread_mutex_t peers_mu = PTHREAD_MUTEX_INITIALIZER;
static char (*peers)[48]; /* 65536 entries, allocated by the first front */

static void peer_set(int port, const char *addr)
{
	if (port <= 0 || port > 65535)
		return;
	pthread_mutex_lock(&peers_mu);
	lp_strlcpy(peers[port], addr, sizeof(peers[port]));
	pthread_mutex_unlock(&peers_mu);
}

static void peer_clear(int port)
{
	if (port <= 0 || port > 65535)
		return;
	pthread_mutex_lock(&peers_mu);
	peers[port][0] = '\0';
	pthread_mutex_unlock(&peers_mu);
}

bool lp_front_peer_addr(int port, char out[48])
{
	bool found = false;

	pthread_mutex_lock(&peers_mu);
	if (peers && port > 0 && port <= 65535 && peers[port][0]) {
		lp_strlcpy(out, peers[port], 48);
		found = true;
	}
	pthread_mutex_unlock(&peers_mu);
	return found;
}

/* ---- small helpers ---------------------------------------------------------- */

static int watch(struct loop *l, struct ent *e)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
				  .data.ptr = e };

	return epoll_ctl(l->ep, EPOLL_CTL_ADD, e->fd, &ev) < 0 ? -errno : 0;
}

static void nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void addr_text(const struct sockaddr *sa, char out[48])
{
	const void *a = sa->sa_family == AF_INET6
				? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
				: (const void *)&((const struct sockaddr_in *)sa)->sin_addr;

	if (!inet_ntop(sa->sa_family, a, out, 48))
		lp_strlcpy(out, "?", 48);
	/* An IPv4 client of a dual-stack socket, as CivetWeb shows it. */
	if (strncmp(out, "::ffff:", 7) == 0 && strchr(out + 7, '.'))
		memmove(out, out + 7, strlen(out + 7) + 1);
}

/* ---- upstream connections --------------------------------------------------- */

static void up_close(struct upconn *u)
{
	if (u->dead)
		return;
	close(u->e.fd);
	u->e.fd = -1;
	u->dead = true;
	u->owner = NULL;
	u->next = u->l->dead_ups;
	u->l->dead_ups = u;
}

static struct bucket *bucket_of(struct loop *l, const struct lp_h1_target *t)
{
	size_t i;

	for (i = 0; i < l->nb; i++)
		if (l->b[i].t == t)
			return &l->b[i];
	if (l->nb == MAX_TARGETS)
		return NULL;
	memset(&l->b[l->nb], 0, sizeof(l->b[l->nb]));
	l->b[l->nb].t = t;
	return &l->b[l->nb++];
}

/* Pops the most recently used idle socket, closing the stale ones. */
static struct upconn *pool_pop(struct bucket *b, int64_t now)
{
	struct upconn *u;

	while ((u = b->idle) != NULL) {
		b->idle = u->next;
		b->nidle--;
		u->next = NULL;
		if (now - u->idle_since <= IDLE_MAX_MS)
			return u;
		up_close(u);
	}
	return NULL;
}

static void pool_push(struct bucket *b, struct upconn *u, int64_t now)
{
	if (b->nidle >= MAX_IDLE) {
		up_close(u);
		return;
	}
	u->owner = NULL;
	u->reused = false;
	u->idle_since = now;
	u->next = b->idle;
	b->idle = u;
	b->nidle++;
}

/* Unlinks u from its bucket's idle stack (it is there). */
static void pool_remove(struct upconn *u)
{
	struct upconn **p;

	for (p = &u->b->idle; *p; p = &(*p)->next) {
		if (*p == u) {
			*p = u->next;
			u->b->nidle--;
			u->next = NULL;
			return;
		}
	}
}

static int resolve(struct bucket *b, int64_t now, char *err, size_t errlen)
{
	struct addrinfo hints, *res = NULL;
	int rc;

	if (b->alen && now - b->resolved_ms < RESOLVE_TTL_MS)
		return 0;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	rc = getaddrinfo(b->t->host, b->t->port, &hints, &res);
	if (rc != 0 || !res) {
		snprintf(err, errlen, "cannot resolve %s: %s", b->t->host, gai_strerror(rc));
		return -1;
	}
	memcpy(&b->addr, res->ai_addr, res->ai_addrlen);
	b->alen = res->ai_addrlen;
	b->resolved_ms = now;
	freeaddrinfo(res);
	return 0;
}

/* A new connection to b's target, connecting; NULL with err. */
static struct upconn *up_new(struct loop *l, struct bucket *b, int64_t now, char *err,
			     size_t errlen)
{
	struct upconn *u;
	int fd;

	if (resolve(b, now, err, errlen) < 0)
		return NULL;
	fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "cannot make a socket: %s", strerror(errno));
		return NULL;
	}
	nodelay(fd);
	u = lp_xcalloc(1, sizeof(*u));
	u->e.kind = K_UP;
	u->e.fd = fd;
	u->l = l;
	u->b = b;
	if (connect(fd, (struct sockaddr *)&b->addr, b->alen) < 0) {
		if (errno != EINPROGRESS) {
			snprintf(err, errlen, "cannot connect to %s port %s: %s", b->t->host,
				 b->t->port, strerror(errno));
			b->alen = 0; /* look it up again next time */
			close(fd);
			free(u);
			return NULL;
		}
		u->connecting = true;
	}
	if (watch(l, &u->e) < 0) {
		snprintf(err, errlen, "epoll: %s", strerror(errno));
		close(fd);
		free(u);
		return NULL;
	}
	u->writable = !u->connecting;
	return u;
}

/* ---- client connections ------------------------------------------------------ */

static void conn_close(struct conn *c);
static void call_run(struct conn *c);

static struct conn *conn_new(struct loop *l, int fd, const struct sockaddr *sa)
{
	struct conn *c = lp_xcalloc(1, sizeof(*c));

	c->e.kind = K_CLIENT;
	c->e.fd = fd;
	c->inner.kind = K_INNER;
	c->inner.fd = -1;
	c->l = l;
	c->st = C_READ;
	c->writable = true;
	c->deadline = lp_now_ms() + l->f->o.request_timeout_ms;
	addr_text(sa, c->addr);
	lp_buf_init(&c->in, 0);
	lp_buf_init(&c->out, 0);
	lp_buf_init(&c->head, 0);
	lp_buf_init(&c->body, 0);
	lp_buf_init(&c->call, 0);
	lp_buf_init(&c->answer, 0);
	c->next = l->conns;
	if (l->conns)
		l->conns->prev = c;
	l->conns = c;
	return c;
}

static void conn_free(struct conn *c)
{
	lp_buf_release(&c->in);
	lp_buf_release(&c->out);
	lp_buf_release(&c->head);
	lp_buf_release(&c->body);
	lp_buf_release(&c->call);
	lp_buf_release(&c->answer);
	free(c);
}

/* Ends the call in progress: the handler gets its outcome (and frees its
 * state); the upstream socket goes back to the pool when keep is set. */
static void call_done(struct conn *c, enum lp_h1_result io, size_t n, const char *err, bool keep)
{
	struct lp_front *f = c->l->f;
	struct upconn *u = c->up;

	c->up = NULL;
	if (u) {
		/* One whose end was reported with the answer (the upstream closed
		 * after it) gets no further event: it is not pooled. */
		if (keep && !u->hup)
			pool_push(u->b, u, c->l->now);
		else
			up_close(u);
	}
	lp_buf_reset(&c->out);
	c->out_pos = 0;
	f->o.handler.finish(f->o.handler.ud, &c->q, c->answer.buf, n, io, err);
	c->q.state = NULL;
	lp_buf_reset(&c->answer);
	c->st = C_WRITE;
	c->deadline = c->l->now + f->o.request_timeout_ms;
}

static void conn_close(struct conn *c)
{
	struct loop *l = c->l;

	if (c->dead)
		return;
	/* Only lp_front_stop closes a connection waiting for its call; the
	 * server the handler would count the request in may be gone. */
	if (c->st == C_CALL) {
		if (c->up)
			up_close(c->up);
		c->up = NULL;
		l->f->o.handler.cancel(l->f->o.handler.ud, &c->q);
		c->q.state = NULL;
	}
	close(c->e.fd);
	c->e.fd = -1;
	if (c->inner.fd >= 0) {
		close(c->inner.fd);
		c->inner.fd = -1;
		peer_clear(c->inner_port);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		l->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->later) {
		c->later->c = NULL; /* its answer finds nobody */
		c->later = NULL;
	}
	c->dead = true;
	c->next_dead = l->dead_conns;
	l->dead_conns = c;
}

/* Reads what the client sent into c->in.  Returns the count read, 0 when
 * nothing is there now, -1 when the connection ended (and was closed unless
 * keep_on_eof: the tunnel passes an end on). */
static ssize_t client_read(struct conn *c, bool keep_on_eof)
{
	size_t avail;
	ssize_t n;

	lp_buf_grow(&c->in, READ_ROOM);
	avail = c->in.alloc - c->in.len - 1;
	n = recv(c->e.fd, c->in.buf + c->in.len, avail, 0);
	if (n > 0) {
		c->in.len += (size_t)n;
		c->in.buf[c->in.len] = '\0';
		if ((size_t)n < avail && !c->hup)
			c->readable = false;
		return n;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		c->readable = false;
		return 0;
	}
	if (n == 0 && keep_on_eof) {
		c->c_eof = true;
		c->readable = false;
		return -1;
	}
	conn_close(c);
	return -1;
}

/* Writes the rest of c->out to the client.  True when all is written. */
static bool client_flush(struct conn *c)
{
	while (c->out_pos < c->out.len) {
		ssize_t n;

		if (!c->writable)
			return false;
		n = send(c->e.fd, c->out.buf + c->out_pos, c->out.len - c->out_pos, MSG_NOSIGNAL);
		if (n > 0) {
			c->out_pos += (size_t)n;
			if (c->out_pos < c->out.len)
				c->writable = false;
		} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			c->writable = false;
		} else {
			conn_close(c);
			return false;
		}
	}
	return true;
}

/* Drops the first n bytes of c->in. */
static void consume(struct conn *c, size_t n)
{
	memmove(c->in.buf, c->in.buf + n, c->in.len - n);
	c->in.len -= n;
	c->in.buf[c->in.len] = '\0';
}

/* ---- the tunnel ------------------------------------------------------------------ */

static void tunnel_run(struct conn *c);
static void linger(struct conn *c);

/* Passes the connection to CivetWeb, starting with what c->in holds. */
static void to_tunnel(struct conn *c)
{
	struct lp_front *f = c->l->f;
	struct sockaddr_in la;
	socklen_t ll = sizeof(la);
	int fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		lp_warn("front: cannot make a socket for %s: %s", c->addr, strerror(errno));
		conn_close(c);
		return;
	}
	nodelay(fd);
	if (connect(fd, (struct sockaddr *)&f->inner, sizeof(struct sockaddr_in)) < 0 &&
	    errno != EINPROGRESS) {
		lp_warn("front: cannot reach the server behind on port %d: %s", f->o.inner_port,
			strerror(errno));
		close(fd);
		conn_close(c);
		return;
	}
	c->inner.fd = fd;
	/* Known before CivetWeb can read a byte: the table is filled first. */
	if (getsockname(fd, (struct sockaddr *)&la, &ll) == 0) {
		c->inner_port = ntohs(la.sin_port);
		peer_set(c->inner_port, c->addr);
	}
	if (watch(c->l, &c->inner) < 0) {
		conn_close(c);
		return;
	}
	c->st = C_TUNNEL;
	c->in_pos = 0;
	lp_buf_reset(&c->out);
	c->out_pos = 0;
	tunnel_run(c);
}

/* Reads and drops what the client sends; closes at its end. */
static void drain_client(struct conn *c)
{
	char junk[4096];

	while (c->readable && !c->dead) {
		ssize_t n = recv(c->e.fd, junk, sizeof(junk), 0);

		if (n > 0) {
			if ((size_t)n < sizeof(junk) && !c->hup)
				c->readable = false;
		} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			c->readable = false;
		} else {
			conn_close(c);
		}
	}
}

/* The reply to a "Connection: close" request was written: a graceful
 * close, as after a 408 (closing with unread bytes would reset the
 * connection and could destroy the reply before the client read it). */
static void close_after_reply(struct conn *c)
{
	if (c->c_eof) {
		conn_close(c);
		return;
	}
	shutdown(c->e.fd, SHUT_WR);
	c->st = C_LINGER;
	c->deadline = lp_now_ms() + LINGER_MS;
	drain_client(c);
}

/* CivetWeb is done with the connection and its reply was passed on. */
static void linger(struct conn *c)
{
	close(c->inner.fd);
	c->inner.fd = -1;
	peer_clear(c->inner_port);
	close_after_reply(c);
}

/* Moves bytes both ways until neither side can take or give more. */
static void tunnel_run(struct conn *c)
{
	bool moved = true;
	ssize_t n;

	while (moved && !c->dead) {
		moved = false;
		/* client -> CivetWeb */
		if (c->in_pos < c->in.len && c->i_gone) {
			c->in_pos = c->in.len; /* dropped */
			moved = true;
		} else if (c->in_pos < c->in.len && c->inner_writable) {
			n = send(c->inner.fd, c->in.buf + c->in_pos, c->in.len - c->in_pos,
				 MSG_NOSIGNAL);
			if (n > 0) {
				c->in_pos += (size_t)n;
				moved = true;
			} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
				c->inner_writable = false;
			} else {
				/* CivetWeb answered early (413, say) and closed while the
				 * client was still sending: its answer may be waiting to be
				 * read, so the tunnel goes on, dropping the client's bytes. */
				c->i_gone = true;
				c->inner_readable = true;
				moved = true;
			}
		} else if (c->in_pos == c->in.len && !c->c_eof && c->readable) {
			lp_buf_reset(&c->in);
			c->in_pos = 0;
			n = client_read(c, true);
			if (c->dead)
				return;
			moved = n != 0;
		}
		if (c->c_eof && c->in_pos == c->in.len && !c->i_shut) {
			shutdown(c->inner.fd, SHUT_WR);
			c->i_shut = true;
		}
		/* CivetWeb -> client */
		if (c->out_pos < c->out.len) {
			size_t before = c->out_pos;

			if (!client_flush(c))
				moved = moved || c->out_pos != before;
			else
				moved = true;
			if (c->dead)
				return;
		} else if (!c->i_eof && c->inner_readable) {
			size_t avail;

			lp_buf_reset(&c->out);
			c->out_pos = 0;
			lp_buf_grow(&c->out, READ_ROOM);
			avail = c->out.alloc - 1;
			n = recv(c->inner.fd, c->out.buf, avail, 0);
			if (n > 0) {
				c->out.len = (size_t)n;
				if ((size_t)n < avail && !c->inner_hup)
					c->inner_readable = false;
				moved = true;
			} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
				c->inner_readable = false;
			} else {
				c->i_eof = true; /* CivetWeb is done with this connection */
				moved = true;
			}
		}
		if (c->i_eof && c->out_pos == c->out.len) {
			linger(c);
			return;
		}
	}
}

/* ---- requests ----------------------------------------------------------------- */

/* Moves a pointer into c->in over to the same byte of c->head. */
static char *to_head(struct conn *c, const char *p)
{
	return c->head.buf + (p - c->in.buf);
}

/* Fills c->q from the parsed head at the start of c->in and body_len
 * bytes after it: copies the head, NUL-terminates its parts. */
static void take_request(struct conn *c, size_t body_len)
{
	struct lp_rq *rq = &c->rq;
	size_t i;

	lp_buf_reset(&c->head);
	lp_buf_add(&c->head, c->in.buf, rq->head_len);
	lp_buf_reset(&c->body);
	lp_buf_add(&c->body, c->in.buf + rq->head_len, body_len);
	memset(&c->q, 0, sizeof(c->q));
	c->q.method = to_head(c, rq->method);
	c->q.method[rq->method_len] = '\0';
	c->q.path = to_head(c, rq->path);
	c->q.path[rq->path_len] = '\0';
	if (rq->query) {
		c->q.query = to_head(c, rq->query);
		c->q.query[rq->query_len] = '\0';
	}
	for (i = 0; i < rq->nheaders; i++) {
		char *name = to_head(c, rq->headers[i].name);
		char *value = to_head(c, rq->headers[i].value);

		name[rq->headers[i].name_len] = '\0';
		value[rq->headers[i].value_len] = '\0';
		rq->headers[i].name = name;
		rq->headers[i].value = value;
	}
	rq->method = c->q.method;
	rq->path = c->q.path;
	rq->query = c->q.query;
	c->q.body = c->body.buf;
	c->q.body_len = c->body.len;
	c->q.head = rq;
	c->q.remote_addr = c->addr;
	c->q.reply = &c->out;
	c->q.call = &c->call;
	c->q.close = rq->close;
	c->close_after = rq->close;
}

static void call_start(struct conn *c);

/* Looks at c->in for a whole request.  Returns 1 when one was taken (the
 * state changed), 0 when more bytes are needed, -1 when the connection
 * became a tunnel or was closed. */
static int next_request(struct conn *c)
{
	struct lp_front *f = c->l->f;
	enum lp_front_verdict v;
	size_t body_len;

	if (c->in.len == 0)
		return 0;
	if (atomic_load_explicit(&c->l->detached, memory_order_relaxed)) {
		to_tunnel(c); /* the handler is gone (lp_front_detach) */
		return -1;
	}
	switch (lp_rq_parse(c->in.buf, c->in.len, &c->rq)) {
	case LP_RQ_INCOMPLETE:
		return 0;
	case LP_RQ_OTHER:
		to_tunnel(c);
		return -1;
	default:
		break;
	}
	body_len = c->rq.content_length > 0 ? (size_t)c->rq.content_length : 0;
	if (c->rq.content_length > (long long)f->o.max_body) {
		to_tunnel(c); /* CivetWeb refuses it with 413 */
		return -1;
	}
	if (c->in.len < c->rq.head_len + body_len) {
		lp_buf_grow(&c->in, c->rq.head_len + body_len - c->in.len);
		/* The client waits for this before it sends the body, as CivetWeb
		 * would tell it when the body is read.  Best effort: 25 bytes on a
		 * socket with nothing else queued. */
		if (c->rq.expect_continue && !c->continued && c->in.len == c->rq.head_len) {
			(void)!send(c->e.fd, CONTINUE_REPLY, sizeof(CONTINUE_REPLY) - 1,
				    MSG_NOSIGNAL);
			c->continued = true;
		}
		return 0;
	}
	c->continued = false;
	take_request(c, body_len);
	lp_buf_reset(&c->out);
	lp_buf_reset(&c->call);
	c->out_pos = 0;
	v = f->o.handler.start(f->o.handler.ud, &c->q);
	if (v == LP_FRONT_DECLINE) {
		to_tunnel(c); /* c->in still holds the request as it came */
		return -1;
	}
	if (v == LP_FRONT_LATER) {
		c->st = C_WAIT; /* c->in still holds it; offered again when kicked */
		return -1;
	}
	consume(c, c->rq.head_len + body_len);
	if (v == LP_FRONT_DEFER) {
		if (!c->later) { /* a handler bug: nobody would answer */
			lp_error("front: %s %s deferred without lp_front_defer", c->q.method,
				 c->q.path);
			conn_close(c);
			return -1;
		}
		c->st = C_DEFER;
		return -1;
	}
	if (c->later) { /* lp_front_defer, then a verdict that is not DEFER */
		lp_error("front: %s %s took a handle and did not defer", c->q.method, c->q.path);
		conn_close(c);
		return -1;
	}
	if (v == LP_FRONT_REPLY) {
		c->st = C_WRITE;
		c->deadline = c->l->now + f->o.request_timeout_ms;
	} else {
		call_start(c);
	}
	return 1;
}

/* Runs a client connection as far as it can go now. */
static void client_run(struct conn *c)
{
	struct lp_front *f = c->l->f;

	while (!c->dead) {
		size_t before;
		int r;

		if (c->st == C_TUNNEL) {
			tunnel_run(c);
			return;
		}
		if (c->st == C_LINGER) {
			drain_client(c);
			return;
		}
		if (c->st == C_CALL || c->st == C_WAIT || c->st == C_DEFER)
			return;
		if (c->st == C_WRITE) {
			if (!client_flush(c))
				return;
			if (c->close_after) {
				close_after_reply(c);
				return;
			}
			c->st = C_READ;
			lp_buf_reset(&c->out);
			c->out_pos = 0;
			c->deadline = c->l->now + f->o.request_timeout_ms;
		}
		r = next_request(c);
		if (r < 0)
			return;
		if (r > 0)
			continue;
		if (!c->readable)
			return;
		before = c->in.len;
		if (client_read(c, true) == 0)
			return;
		if (c->c_eof) {
			/* Ended inside a request: CivetWeb words the error (a
			 * truncated body is 400) as it would have. */
			if (c->in.len > 0)
				to_tunnel(c);
			else
				conn_close(c);
			return;
		}
		/* The first bytes of a request: it has request_timeout_ms from now. */
		if (before == 0)
			c->deadline = c->l->now + f->o.request_timeout_ms;
	}
}

/* ---- the upstream call ------------------------------------------------------------- */

/* Sends the call on a pooled or new connection (fresh: always new). */
static void call_send(struct conn *c, bool fresh)
{
	struct loop *l = c->l;
	struct bucket *b = bucket_of(l, c->q.target);
	int64_t now = l->now;
	char err[256] = "";
	struct upconn *u = NULL;

	if (!b) {
		call_done(c, LP_H1_FAILED, 0, "too many distinct upstreams", false);
		return;
	}
	/* An idle socket the upstream closed before this batch of events was
	 * taken is out of the pool already (close_idle_ended). */
	if (!fresh)
		u = pool_pop(b, now);
	if (!u)
		u = up_new(l, b, now, err, sizeof(err));
	else
		u->reused = true;
	if (!u) {
		call_done(c, LP_H1_FAILED, 0, err, false);
		return;
	}
	u->owner = c;
	c->up = u;
	c->call_pos = 0;
	c->got_any = false;
	lp_buf_reset(&c->answer);
	c->connect_deadline = u->connecting ? now + c->q.connect_timeout_ms : 0;
	call_run(c);
}

static void call_start(struct conn *c)
{
	struct lp_front *f = c->l->f;

	c->st = C_CALL;
	c->retried = false;
	c->call_deadline = c->l->now + c->q.timeout_ms;
	/* The handler's max_response applies when it parses; this only keeps a
	 * runaway answer from growing without end. */
	c->answer_max = (size_t)f->o.max_body + (16u << 20);
	call_send(c, false);
}

/* A reused connection that failed before any byte of the answer: the
 * upstream had probably closed it.  Sends again on a new one, unless that
 * was done already, or bytes of the request were written and its method is
 * not idempotent (the upstream may have acted on it); false then. */
static bool call_retry(struct conn *c)
{
	if (!c->up->reused || c->got_any || c->retried)
		return false;
	if (c->call_pos > 0 && !lp_h1_idempotent(c->q.method))
		return false;
	up_close(c->up);
	c->up = NULL;
	c->retried = true;
	call_send(c, true);
	return true;
}

static void call_fail(struct conn *c, const char *what, int err_no)
{
	char err[256];

	snprintf(err, sizeof(err), "%s: %s", what, strerror(err_no));
	call_done(c, LP_H1_FAILED, 0, err, false);
}

/* Parses what came of the answer; true when the call ended. */
static bool call_answer(struct conn *c, bool eof)
{
	static const struct lp_h1_req none;
	char err[256];
	size_t used;
	bool keep;
	int status;
	enum lp_h1_result r;

	r = lp_h1_parse_answer(&none, c->answer.buf, c->answer.len, eof, &status, &used, &keep, err,
			    sizeof(err));
	if (r == LP_H1_AGAIN && c->answer.len < c->answer_max)
		return false;
	if (r == LP_H1_AGAIN) {
		/* Hand over what there is: the handler's limit turns it into a
		 * "too large" answer. */
		call_done(c, LP_H1_OK, c->answer.len, NULL, false);
	} else if (r == LP_H1_OK) {
		call_done(c, LP_H1_OK, used, NULL, keep && !eof);
	} else {
		call_done(c, LP_H1_FAILED, 0, err, false);
	}
	return true;
}

/* Runs the call as far as it can go now. */
static void call_run(struct conn *c)
{
	struct upconn *u = c->up;
	size_t avail;
	ssize_t n;

	if (!u || c->st != C_CALL)
		return;
	if (u->connecting) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		if (!u->writable && !u->readable)
			return;
		if (getsockopt(u->e.fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			soerr = errno;
		if (soerr == 0 && !u->writable)
			return;
		if (soerr != 0) {
			char what[300];

			u->b->alen = 0;
			snprintf(what, sizeof(what), "cannot connect to %s port %s", u->b->t->host,
				 u->b->t->port);
			call_fail(c, what, soerr);
			return;
		}
		u->connecting = false;
		c->connect_deadline = 0;
	}
	while (c->call_pos < c->call.len) {
		if (!u->writable)
			return;
		n = send(u->e.fd, c->call.buf + c->call_pos, c->call.len - c->call_pos,
			 MSG_NOSIGNAL);
		if (n > 0) {
			c->call_pos += (size_t)n;
			if (c->call_pos < c->call.len)
				u->writable = false;
		} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			u->writable = false;
		} else {
			int e = errno;

			if (!call_retry(c))
				call_fail(c, "sending the request", e);
			return;
		}
	}
	while (u->readable) {
		lp_buf_grow(&c->answer, READ_ROOM);
		avail = c->answer.alloc - c->answer.len - 1;
		n = recv(u->e.fd, c->answer.buf + c->answer.len, avail, 0);
		if (n > 0) {
			c->answer.len += (size_t)n;
			c->answer.buf[c->answer.len] = '\0';
			c->got_any = true;
			if ((size_t)n < avail && !u->hup)
				u->readable = false;
			if (call_answer(c, false))
				return;
		} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			u->readable = false;
		} else if (n == 0) {
			if (!call_retry(c))
				call_answer(c, true);
			return;
		} else {
			int e = errno;

			if (!call_retry(c))
				call_fail(c, "waiting for the answer", e);
			return;
		}
	}
}

/* ---- answers given later ------------------------------------------------------------ */

struct lp_front_later *lp_front_defer(struct lp_front_req *q)
{
	struct conn *c = (struct conn *)((char *)q - offsetof(struct conn, q));
	struct lp_front_later *h;

	if (c->later)
		return c->later;
	h = lp_xcalloc(1, sizeof(*h));
	h->l = c->l;
	h->c = c;
	lp_buf_init(&h->reply, 0);
	h->next = c->l->pending;
	if (h->next)
		h->next->prev = h;
	c->l->pending = h;
	c->later = h;
	return h;
}

void lp_front_answer(struct lp_front_later *h, struct lp_buf *reply)
{
	uint64_t one = 1;

	if (!h)
		return;
	pthread_mutex_lock(&answer_mu);
	if (h->orphan) {
		pthread_mutex_unlock(&answer_mu);
		if (reply)
			lp_buf_release(reply);
		free(h);
		return;
	}
	if (reply) {
		h->reply = *reply;
		lp_buf_init(reply, 0);
	}
	h->next_done = h->l->done;
	h->l->done = h;
	/* Only the first answer of a batch wakes the loop: it takes them all
	 * (take_answers empties the queue under answer_mu), so an answer that
	 * finds the queue non-empty is sure to be taken by a wake still due. */
	if (!h->next_done)
		(void)!write(h->l->wake.fd, &one, sizeof(one));
	pthread_mutex_unlock(&answer_mu);
}

static void later_unlink(struct loop *l, struct lp_front_later *h)
{
	if (h->prev)
		h->prev->next = h->next;
	else
		l->pending = h->next;
	if (h->next)
		h->next->prev = h->prev;
	h->prev = h->next = NULL;
}

/* Writes the answers that came (in the order they came). */
static void take_answers(struct loop *l)
{
	struct lp_front_later *h, *rev = NULL;

	pthread_mutex_lock(&answer_mu);
	h = l->done;
	l->done = NULL;
	pthread_mutex_unlock(&answer_mu);
	while (h) { /* the queue is a stack: turn it over */
		struct lp_front_later *next = h->next_done;

		h->next_done = rev;
		rev = h;
		h = next;
	}
	while ((h = rev) != NULL) {
		struct conn *c = h->c;

		rev = h->next_done;
		later_unlink(l, h);
		if (c && !c->dead) {
			c->later = NULL;
			if (h->reply.len == 0) {
				conn_close(c);
			} else {
				lp_buf_release(&c->out);
				c->out = h->reply;
				lp_buf_init(&h->reply, 0);
				c->out_pos = 0;
				c->st = C_WRITE;
				c->deadline = lp_now_ms() + l->f->o.request_timeout_ms;
				client_run(c);
			}
		}
		lp_buf_release(&h->reply);
		free(h);
	}
}

/* The loops have stopped: answers queued are dropped, and the handles not
 * answered yet are left to free themselves when answered. */
static void orphan_pending(struct loop *l)
{
	struct lp_front_later *h;

	pthread_mutex_lock(&answer_mu);
	while ((h = l->done) != NULL) {
		l->done = h->next_done;
		later_unlink(l, h);
		lp_buf_release(&h->reply);
		free(h);
	}
	while ((h = l->pending) != NULL) {
		later_unlink(l, h);
		h->c = NULL;
		h->orphan = true;
	}
	pthread_mutex_unlock(&answer_mu);
}

static void add_status_line(struct lp_buf *out, int status)
{
	const char *text;

	switch (status) {
	case 100: text = "Continue"; break;
	case 200: text = "OK"; break;
	case 201: text = "Created"; break;
	case 202: text = "Accepted"; break;
	case 204: text = "No Content"; break;
	case 304: text = "Not Modified"; break;
	case 400: text = "Bad Request"; break;
	case 401: text = "Unauthorized"; break;
	case 403: text = "Forbidden"; break;
	case 404: text = "Not Found"; break;
	case 405: text = "Method Not Allowed"; break;
	case 408: text = "Request Timeout"; break;
	case 409: text = "Conflict"; break;
	case 413: text = "Payload Too Large"; break;
	case 415: text = "Unsupported Media Type"; break;
	case 422: text = "Unprocessable Entity"; break;
	case 429: text = "Too Many Requests"; break;
	case 500: text = "Internal Server Error"; break;
	case 502: text = "Bad Gateway"; break;
	case 503: text = "Service Unavailable"; break;
	case 504: text = "Gateway Timeout"; break;
	default: text = ""; break;
	}
	lp_buf_addf(out, "HTTP/1.1 %d %s\r\n", status, text);
}

void lp_front_reply(struct lp_buf *out, int status, const char *content_type,
		    const char *extra_headers, const char *body, size_t len)
{
	add_status_line(out, status);
	if (status < 200 || status == 204 || status == 304) {
		len = 0;
	} else {
		if (content_type)
			lp_buf_addf(out, "Content-Type: %s\r\n", content_type);
		lp_buf_addf(out, "Content-Length: %zu\r\n", len);
	}
	if (extra_headers)
		lp_buf_adds(out, extra_headers);
	lp_buf_adds(out, "\r\n");
	if (len > 0)
		lp_buf_add(out, body, len);
}

void lp_front_reply_json(struct lp_buf *out, int status, const char *extra_headers,
			 const char *json)
{
	if (!json)
		json = "{}";
	lp_front_reply(out, status, "application/json", extra_headers, json, strlen(json));
}

/* ---- the loop ---------------------------------------------------------------------- */

/* Accepts every connection waiting.  The listening socket is
 * edge-triggered: its next event comes with the next new connection, so
 * the backlog must be drained here.  A connection that failed on its way
 * in (ECONNABORTED, a network error) is skipped; when the process is out
 * of descriptors or memory, the rest of the backlog waits and the sweep
 * tries again (accept_later), since no event would say when. */
static void accept_all(struct loop *l)
{
	l->accept_later = false;
	while (l->listen.fd >= 0) {
		struct sockaddr_storage sa;
		socklen_t sl = sizeof(sa);
		int fd = accept4(l->listen.fd, (struct sockaddr *)&sa, &sl,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct conn *c;

		if (fd < 0) {
			int e = errno;

			if (e == EAGAIN || e == EWOULDBLOCK)
				return;
			if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
				if (!l->accept_stuck)
					lp_warn("front: cannot accept: %s (trying again every %d ms)",
						strerror(e), SWEEP_MS);
				l->accept_stuck = true;
				l->accept_later = true;
				return;
			}
			if (e == EBADF || e == EINVAL || e == ENOTSOCK || e == EFAULT) {
				lp_error("front: accept: %s", strerror(e));
				return;
			}
			continue; /* EINTR, ECONNABORTED, EPROTO, network errors */
		}
		l->accept_stuck = false;
		nodelay(fd);
		c = conn_new(l, fd, (struct sockaddr *)&sa);
		if (watch(l, &c->e) < 0)
			conn_close(c);
	}
}

/* Offers the requests in WAIT to the handler again. */
static void retry_waiting(struct loop *l)
{
	struct conn *c, *next;

	for (c = l->conns; c; c = next) {
		next = c->next;
		if (c->st == C_WAIT && !c->dead) {
			c->st = C_READ;
			client_run(c);
		}
	}
}

/* While the gateway stops: no new connections, idle ones closed, and
 * l->busy tells how many requests are still being served. */
static void quiesce(struct loop *l)
{
	struct conn *c, *next;
	int busy = 0;

	if (!l->quiet) {
		close(l->listen.fd);
		l->listen.fd = -1;
		l->quiet = true;
	}
	for (c = l->conns; c; c = next) {
		next = c->next;
		if (c->st == C_READ && c->in.len == 0)
			conn_close(c);
		else if (c->st != C_TUNNEL && c->st != C_LINGER)
			busy++;
	}
	atomic_store(&l->busy, busy);
}

/* Closes what timed out. */
static void sweep(struct loop *l, int64_t now)
{
	struct lp_front *f = l->f;
	struct conn *c, *next;
	size_t i;

	for (c = l->conns; c; c = next) {
		next = c->next;
		if (c->st == C_READ && now >= c->deadline) {
			if (c->in.len == 0) {
				conn_close(c);
				continue;
			}
			/* Best effort (the socket may be full), then a graceful
			 * close: the client may still be sending. */
			(void)!send(c->e.fd, f->timeout_reply, f->timeout_reply_len, MSG_NOSIGNAL);
			shutdown(c->e.fd, SHUT_WR);
			c->st = C_LINGER;
			c->deadline = now + LINGER_MS;
			drain_client(c);
		} else if ((c->st == C_WRITE || c->st == C_LINGER) && now >= c->deadline) {
			conn_close(c);
		} else if (c->st == C_CALL && (now >= c->call_deadline ||
					       (c->connect_deadline && now >= c->connect_deadline))) {
			call_done(c, LP_H1_TIMEOUT, 0, "timed out", false);
			client_run(c);
		}
	}
	retry_waiting(l); /* should a kick have been missed */
	if (atomic_load(&f->quiesce))
		quiesce(l);
	else if (l->accept_later)
		accept_all(l);
	for (i = 0; i < l->nb; i++) {
		struct upconn **p = &l->b[i].idle;

		while (*p) {
			struct upconn *u = *p;

			if (now - u->idle_since > IDLE_MAX_MS) {
				*p = u->next;
				l->b[i].nidle--;
				up_close(u);
			} else {
				p = &u->next;
			}
		}
	}
}

static void free_dead(struct loop *l)
{
	while (l->dead_conns) {
		struct conn *c = l->dead_conns;

		l->dead_conns = c->next_dead;
		conn_free(c);
	}
	while (l->dead_ups) {
		struct upconn *u = l->dead_ups;

		l->dead_ups = u->next;
		free(u);
	}
}

static void on_event(struct loop *l, struct ent *e, uint32_t m)
{
	bool in = m & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR);
	bool out = m & (EPOLLOUT | EPOLLHUP | EPOLLERR);
	/* The data of such an event may be followed by the end: with
	 * edge-triggered events there is no second event for it, so the reads
	 * go on until they see it. */
	bool hup = m & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);

	switch (e->kind) {
	case K_LISTEN:
		accept_all(l);
		break;
	case K_CLIENT: {
		struct conn *c = (struct conn *)e;

		if (c->dead)
			break;
		c->readable = c->readable || in;
		c->writable = c->writable || out;
		c->hup = c->hup || hup;
		/* Reset or gone both ways while its answer is awaited: nobody
		 * will read it (a client that only shut its sending side may). */
		if (c->st == C_DEFER && (m & (EPOLLHUP | EPOLLERR))) {
			conn_close(c);
			break;
		}
		client_run(c);
		break;
	}
	case K_INNER: {
		struct conn *c = (struct conn *)((char *)e - offsetof(struct conn, inner));

		if (c->dead)
			break;
		c->inner_readable = c->inner_readable || in;
		c->inner_writable = c->inner_writable || out;
		c->inner_hup = c->inner_hup || hup;
		tunnel_run(c);
		break;
	}
	case K_UP: {
		struct upconn *u = (struct upconn *)e;
		struct conn *c;

		if (u->dead)
			break;
		if (!u->owner) {
			if (in) { /* idle: the upstream closed it (or sent junk) */
				pool_remove(u);
				up_close(u);
			}
			break;
		}
		c = u->owner;
		u->readable = u->readable || in;
		u->writable = u->writable || out;
		u->hup = u->hup || hup;
		call_run(c);
		/* Ended: the reply is ready (never called from call_run itself,
		 * so that pipelined requests failing at once do not recurse). */
		if (!c->dead && c->st != C_CALL)
			client_run(c);
		break;
	}
	default:
		break;
	}
}

/* lp_front_detach: the calls in flight are cancelled (their connections
 * closed) and no request is offered to the handler from now on. */
static void detach(struct loop *l)
{
	struct conn *c, *next;

	for (c = l->conns; c; c = next) {
		next = c->next;
		if (c->st == C_CALL)
			conn_close(c);
	}
	atomic_store(&l->detached, true);
	retry_waiting(l); /* to CivetWeb now */
}

/* Closes the idle pooled sockets that the batch ev reports an input on
 * (the upstream closed them, or sent what nobody asked for), before any
 * event of the batch is handled: a request taken earlier in the batch
 * must not be written to one whose close is only reported later in it.
 * This is what a peek (recv MSG_PEEK) before each non-idempotent request
 * used to find out, for one system call per request; a close that comes
 * after epoll_wait returned is met as it was after a peek, by
 * call_retry's rule. */
static void close_idle_ended(const struct epoll_event *ev, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		struct ent *e = ev[i].data.ptr;
		struct upconn *u;

		if (e->kind != K_UP)
			continue;
		u = (struct upconn *)e;
		if (!u->dead && !u->owner &&
		    (ev[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
			pool_remove(u);
			up_close(u);
		}
	}
}

static void *loop_main(void *arg)
{
	struct loop *l = arg;
	struct epoll_event ev[MAX_EVENTS];
	int64_t next_sweep = lp_now_ms() + SWEEP_MS;

	lp_log_set_request(NULL, NULL);
	for (;;) {
		int n = epoll_wait(l->ep, ev, MAX_EVENTS, SWEEP_MS), i;
		int64_t now;
		bool stop = false;

		/* The time of the deadlines set while handling the batch: one
		 * clock read, not several per request. */
		l->now = lp_now_ms();
		if (n < 0 && errno != EINTR) {
			lp_error("front: epoll_wait: %s", strerror(errno));
			break;
		}
		/* Between two batches no handler call is in progress. */
		if (atomic_load(&l->f->detach) && !atomic_load(&l->detached))
			detach(l);
		close_idle_ended(ev, n);
		for (i = 0; i < n; i++) {
			struct ent *e = ev[i].data.ptr;

			if (e->kind == K_WAKE) {
				uint64_t v;

				(void)!read(l->wake.fd, &v, sizeof(v));
				stop = stop || atomic_load(&l->stop);
				take_answers(l);
				if (atomic_exchange(&l->kicked, false))
					retry_waiting(l);
			} else {
				on_event(l, e, ev[i].events);
			}
		}
		now = lp_now_ms();
		if (now >= next_sweep) {
			sweep(l, now);
			next_sweep = now + SWEEP_MS;
		}
		free_dead(l);
		if (stop)
			break;
	}
	atomic_store(&l->detached, true); /* lp_front_detach need not wait for it */
	return NULL;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

/* Resolves the public address: "PORT", "HOST:PORT" or "[V6]:PORT". */
static int listen_addr(const char *spec, struct sockaddr_storage *sa, socklen_t *len, char *err,
		       size_t errlen)
{
	struct addrinfo hints, *res = NULL;
	char host[256] = "", port[16];
	const char *colon = strrchr(spec, ':');
	int rc;

	if (!colon) {
		lp_strlcpy(port, spec, sizeof(port));
	} else if (spec[0] == '[' && colon > spec && colon[-1] == ']') {
		if ((size_t)(colon - spec - 2) >= sizeof(host))
			goto bad;
		memcpy(host, spec + 1, (size_t)(colon - spec - 2));
		host[colon - spec - 2] = '\0';
		lp_strlcpy(port, colon + 1, sizeof(port));
	} else {
		if ((size_t)(colon - spec) >= sizeof(host))
			goto bad;
		memcpy(host, spec, (size_t)(colon - spec));
		host[colon - spec] = '\0';
		lp_strlcpy(port, colon + 1, sizeof(port));
	}
	if (!port[0] || strspn(port, "0123456789") != strlen(port) || strchr(host, ','))
		goto bad;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	hints.ai_family = host[0] ? AF_UNSPEC : AF_INET;
	rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (rc != 0 || !res) {
		snprintf(err, errlen, "cannot resolve http.listen \"%s\": %s", spec,
			 gai_strerror(rc));
		return -EINVAL;
	}
	memcpy(sa, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
bad:
	snprintf(err, errlen,
		 "http.listen \"%s\" is not PORT, HOST:PORT or [V6]:PORT (the event front takes "
		 "one plain address)",
		 spec);
	return -EINVAL;
}

static int sa_port(const struct sockaddr_storage *sa)
{
	if (sa->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return ntohs(((const struct sockaddr_in *)sa)->sin_port);
}

static void sa_set_port(struct sockaddr_storage *sa, int port)
{
	if (sa->ss_family == AF_INET6)
		((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
}

int lp_front_port(const struct lp_front *f)
{
	return f && f->port > 0 ? f->port : -ENOTCONN;
}

/* A listening socket on sa; reuseport lets every loop have one. */
static int listen_on(const struct sockaddr_storage *sa, socklen_t len, bool reuseport,
		     char *err, size_t errlen)
{
	int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0) {
		snprintf(err, errlen, "cannot make a socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)sa, len) < 0 || listen(fd, 1024) < 0) {
		snprintf(err, errlen, "cannot listen: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

struct lp_front *lp_front_start(const struct lp_front_opts *o, char *err, size_t errlen)
{
	struct lp_front *f = lp_xcalloc(1, sizeof(*f));
	struct sockaddr_in *in = (struct sockaddr_in *)&f->inner;
	struct sockaddr_storage sa;
	socklen_t sl;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int i, probe;

	f->o = *o;
	f->nloops = o->loops > 0 ? o->loops : (int)(cpus > 0 ? cpus : 1);
	if (f->nloops > MAX_LOOPS)
		f->nloops = MAX_LOOPS;
	for (i = 0; i < MAX_LOOPS; i++) {
		f->loops[i].ep = -1;
		f->loops[i].listen.fd = -1;
		f->loops[i].wake.fd = -1;
	}
	in->sin_family = AF_INET;
	in->sin_port = htons((uint16_t)o->inner_port);
	in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	snprintf(f->timeout_reply, sizeof(f->timeout_reply),
		 "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
		 "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
		 (int)strlen("{\"status\":\"error\",\"error\":{\"code\":\"request_timeout\","
			     "\"message\":\"the request did not arrive in time\"}}"),
		 "{\"status\":\"error\",\"error\":{\"code\":\"request_timeout\","
		 "\"message\":\"the request did not arrive in time\"}}");
	f->timeout_reply_len = strlen(f->timeout_reply);

	pthread_mutex_lock(&peers_mu);
	if (!peers)
		peers = lp_xcalloc(65536, sizeof(*peers));
	pthread_mutex_unlock(&peers_mu);

	if (listen_addr(o->listen, &sa, &sl, err, errlen) < 0)
		goto fail;
	/* SO_REUSEPORT would let a second server share the port silently: a
	 * plain bind first finds the port taken, by anyone.  Port 0 needs no
	 * probe: the first loop's socket gets a free port, the others take
	 * the same (only sockets with SO_REUSEPORT can share it). */
	if (sa_port(&sa) != 0) {
		probe = listen_on(&sa, sl, false, err, errlen);
		if (probe < 0)
			goto fail;
		close(probe);
	}
	for (i = 0; i < f->nloops; i++) {
		struct loop *l = &f->loops[i];

		l->f = f;
		l->ep = epoll_create1(EPOLL_CLOEXEC);
		l->listen.kind = K_LISTEN;
		l->listen.fd = listen_on(&sa, sl, true, err, errlen);
		if (l->listen.fd >= 0 && sa_port(&sa) == 0) {
			struct sockaddr_storage got;
			socklen_t gl = sizeof(got);

			if (getsockname(l->listen.fd, (struct sockaddr *)&got, &gl) == 0)
				sa_set_port(&sa, sa_port(&got));
		}
		l->wake.kind = K_WAKE;
		l->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (l->ep < 0 || l->listen.fd < 0 || l->wake.fd < 0 || watch(l, &l->listen) < 0 ||
		    watch(l, &l->wake) < 0) {
			if (!err[0])
				snprintf(err, errlen, "cannot set up event loop %d: %s", i,
					 strerror(errno));
			goto fail;
		}
	}
	f->port = sa_port(&sa);
	for (i = 0; i < f->nloops; i++) {
		if (pthread_create(&f->loops[i].th, NULL, loop_main, &f->loops[i]) != 0) {
			snprintf(err, errlen, "cannot start event loop %d", i);
			goto fail;
		}
		f->loops[i].started = true;
	}
	return f;
fail:
	lp_front_stop(f);
	return NULL;
}

void lp_front_quiesce(struct lp_front *f, int timeout_ms)
{
	int64_t end = lp_now_ms() + timeout_ms;
	int i, busy;

	if (!f)
		return;
	for (i = 0; i < f->nloops; i++)
		atomic_store(&f->loops[i].busy, -1);
	atomic_store(&f->quiesce, true);
	do {
		usleep(20 * 1000);
		busy = 0;
		for (i = 0; i < f->nloops; i++) {
			int b = atomic_load(&f->loops[i].busy);

			busy += b < 0 ? 1 : b;
		}
	} while (busy > 0 && lp_now_ms() < end);
	if (busy > 0)
		lp_warn("front: stopping with %d requests unanswered after %d ms", busy,
			timeout_ms);
}

void lp_front_kick(struct lp_front *f)
{
	int i;

	if (!f)
		return;
	for (i = 0; i < f->nloops; i++) {
		struct loop *l = &f->loops[i];
		uint64_t one = 1;

		if (l->started && !atomic_exchange(&l->kicked, true))
			(void)!write(l->wake.fd, &one, sizeof(one));
	}
}

void lp_front_detach(struct lp_front *f)
{
	int i;

	if (!f)
		return;
	atomic_store(&f->detach, true);
	for (i = 0; i < f->nloops; i++) {
		struct loop *l = &f->loops[i];
		uint64_t one = 1;

		if (!l->started)
			continue;
		(void)!write(l->wake.fd, &one, sizeof(one));
		while (!atomic_load(&l->detached))
			usleep(1000);
	}
}

void lp_front_stop(struct lp_front *f)
{
	int i;
	size_t j;

	if (!f)
		return;
	for (i = 0; i < MAX_LOOPS; i++) {
		struct loop *l = &f->loops[i];
		uint64_t one = 1;

		if (l->started) {
			atomic_store(&l->stop, true);
			(void)!write(l->wake.fd, &one, sizeof(one));
			pthread_join(l->th, NULL);
		}
		while (l->conns)
			conn_close(l->conns);
		orphan_pending(l);
		for (j = 0; j < l->nb; j++) {
			while (l->b[j].idle) {
				struct upconn *u = l->b[j].idle;

				l->b[j].idle = u->next;
				up_close(u);
			}
		}
		free_dead(l);
		if (l->listen.fd >= 0)
			close(l->listen.fd);
		if (l->wake.fd >= 0)
			close(l->wake.fd);
		if (l->ep >= 0)
			close(l->ep);
	}
	free(f);
}
