/* front.h - the event-driven HTTP front: one public port, requests served
 * from epoll loops (at once, by an upstream call, or answered later), everything
 * else passed to the CivetWeb server behind.
 *
 * CivetWeb gives every connection a worker thread that sleeps once waiting
 * for its client and once waiting for the upstream, so a proxied request
 * cost two context switches and about six system calls.  The front does
 * the same work from a few event loops (one per core by default) with
 * non-blocking sockets on both sides: a proxied request costs a read, a
 * write to the upstream, a read of its answer and a write of the reply,
 * plus a share of an epoll_wait.
 *
 * Each request head is parsed by reqhead.c.  A plain HTTP/1.1 request is
 * offered to the handler (gateway.c), which either answers it at once
 * (an auth or rate-limit refusal), asks for an upstream call (the front
 * sends the request on a kept-alive non-blocking connection from its loop's
 * pool and gives the handler the whole answer), or declines it.  A declined
 * request, and anything the parser does not accept, turns its connection
 * into a byte tunnel to the CivetWeb server behind (on a loopback port),
 * which serves it exactly as it would have without the front: the local
 * routes, HEAD, chunked bodies, malformed requests and their errors.  The
 * CivetWeb side learns the client's real address from lp_front_client_addr.
 *
 * Timeouts: a request must arrive whole within request_timeout_ms of its
 * first byte (408 and close after), an idle kept-alive connection is closed
 * after request_timeout_ms, and an upstream call ends at its deadline with
 * LP_H1_TIMEOUT given to the handler.  A tunnel's timeouts are CivetWeb's.
 *
 * Thread-safety: the handler is called on loop threads, several at once. */
#ifndef LOGPIPE_FRONT_H
#define LOGPIPE_FRONT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "logpipe/buf.h"
#include "logpipe/h1.h"
#include "logpipe/reqhead.h"

struct lp_http_req;

/* A request the front read, as the handler sees it. */
struct lp_front_req {
	/* in: NUL-terminated, in the connection's buffer (valid until finish) */
	char *method;
	char *path;                  /* raw (percent-encoded), without the query */
	char *query;                 /* NULL when the target had no '?' */
	char *body;                  /* a NUL-terminated copy, body_len bytes */
	size_t body_len;
	const struct lp_rq *head;    /* the header fields (values NUL-terminated) */
	const char *remote_addr;     /* the client's address */
	/* out */
	struct lp_buf *reply;        /* the whole reply, when there is one */
	const struct lp_h1_target *target; /* LP_FRONT_CALL: where to send */
	struct lp_buf *call;         /* LP_FRONT_CALL: request head and body to send */
	long timeout_ms;             /* LP_FRONT_CALL: the whole call */
	long connect_timeout_ms;     /* LP_FRONT_CALL: a new connection */
	void *state;                 /* the handler's, until finish */
};

enum lp_front_verdict {
	LP_FRONT_DECLINE, /* not for the fast path: CivetWeb serves it */
	LP_FRONT_REPLY,   /* reply holds the whole reply */
	LP_FRONT_CALL,    /* send call to target, then finish */
	LP_FRONT_LATER,   /* cannot decide without waiting (a rate-limit lease in
			   * flight); nothing kept: offer the same request
			   * again after lp_front_kick */
};

struct lp_front_handler {
	/* Looks at q; may fill q->reply, or the call fields and q->state. */
	enum lp_front_verdict (*start)(void *ud, struct lp_front_req *q);
	/* The call's outcome: the whole answer (io LP_H1_OK, answer[0, n)) or
	 * LP_H1_TIMEOUT / LP_H1_FAILED with err.  Fills q->reply, frees q->state.
	 * Called even when the client has gone meanwhile. */
	void (*finish)(void *ud, struct lp_front_req *q, char *answer, size_t n,
		       enum lp_h1_result io, const char *err);
	/* The front stops with the call unfinished (lp_front_detach or
	 * lp_front_stop after a quiesce that timed out): frees q->state,
	 * answers nothing. */
	void (*cancel)(void *ud, struct lp_front_req *q);
	void *ud;
};

struct lp_front_opts {
	const char *listen;      /* "PORT", "HOST:PORT" or "[V6]:PORT" */
	int loops;               /* event loop threads; 0: one per CPU, at most 8 */
	size_t max_body;         /* larger bodies go to CivetWeb (its 413) */
	int request_timeout_ms;  /* see above */
	int inner_port;          /* the CivetWeb server on 127.0.0.1 */
	struct lp_front_handler handler;
};

struct lp_front;

/* Binds the public address and starts the loops; NULL with err. */
struct lp_front *lp_front_start(const struct lp_front_opts *o, char *err, size_t errlen);
/* Stops taking connections, closes the idle ones and waits (at most
 * timeout_ms) until every request the loops are serving was answered; a
 * connection answered meanwhile is closed.  Tunnels keep passing bytes, so
 * that CivetWeb can be stopped next and still answer what it serves.
 * NULL is a no-op. */
void lp_front_quiesce(struct lp_front *f, int timeout_ms);
/* Parts the loops from the handler: the calls still in flight (after a
 * quiesce that timed out) are cancelled and their connections closed, and
 * every later request goes to the CivetWeb server behind.  On return no
 * loop is in a handler call and none will be: what the handler uses (the
 * CivetWeb server, whose route table it reads) may then be freed while the
 * loops go on passing tunnelled bytes.  NULL is a no-op. */
void lp_front_detach(struct lp_front *f);
/* Offers every request its handler answered LP_FRONT_LATER again, soon,
 * on its loop.  Any thread; NULL is a no-op. */
void lp_front_kick(struct lp_front *f);
/* Stops the loops, closes every connection.  NULL is a no-op. */
void lp_front_stop(struct lp_front *f);

/* The address of the client of r: for a request CivetWeb read through a
 * tunnel, the real client's, copied into out; otherwise lp_http_remote_addr. */
const char *lp_front_client_addr(struct lp_http_req *r, char out[48]);

#endif
