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
 * Each request head is parsed by reqhead.c.  A plain HTTP/1.1 request
 * (kept alive, or with "Connection: close": the connection is then shut
 * after its reply, what the client sends after it dropped), or an HTTP/1.0
 * one (always shut after its reply), is offered to the handler (the
 * gateway's proxy, or lp_http_server's routes served on the loop), which either answers it at once (an auth or
 * rate-limit refusal), asks for an upstream call (the front sends the
 * request on a kept-alive non-blocking connection from its loop's pool and
 * gives the handler the whole answer), defers it (LP_FRONT_DEFER: another
 * thread answers later with lp_front_answer, no thread waits for it), or
 * declines it.  A declined
 * request, and anything the parser does not accept, turns its connection
 * into a byte tunnel to the CivetWeb server behind (on a loopback port),
 * which serves it exactly as it would have without the front: the local
 * routes, HEAD, chunked bodies, malformed requests and their errors.  The
 * CivetWeb side learns the client's real address from lp_front_peer_addr
 * (lp_http_remote_addr does that by itself).
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

struct lp_front_later;

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
	bool close;                  /* "Connection: close", or HTTP/1.0: the
	                              * front closes the connection after the
	                              * reply, which should say so
	                              * ("Connection: close") */
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
	LP_FRONT_DEFER,   /* taken: the handler called lp_front_defer(q) and
			   * answers later, from any thread, with
			   * lp_front_answer; the connection waits (its next
			   * pipelined request too), no thread does */
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

/* The port the front listens on (the one chosen for port 0), or -ENOTCONN. */
int lp_front_port(const struct lp_front *f);

/* The real client of a tunnel whose local port (as the server behind sees
 * its peer: 127.0.0.1 and this port) is port: copies its address into out
 * and returns true; false when no tunnel of any front has that port. */
bool lp_front_peer_addr(int port, char out[48]);

/* ---- answers given later ---------------------------------------------------
 * A handler that cannot answer at once (it waits for Kafka's delivery
 * report, say) takes a handle with lp_front_defer(q) and returns
 * LP_FRONT_DEFER.  Whatever it needs of q (header values, the body) it must
 * copy or use before it returns: q is not valid after.  Later, from any
 * thread, lp_front_answer(h, reply) hands the whole reply to the loop that
 * owns the connection and wakes it (an eventfd); the loop writes it, then
 * goes on with the connection's next request.  Exactly one
 * lp_front_answer per handle, which frees the handle: if the client has
 * gone meanwhile, or the front has stopped, the reply is dropped.  The
 * front does not time a deferred request out: the handler must answer.
 * lp_front_quiesce waits for deferred requests like for any other. */

/* In the handler's start, before it returns LP_FRONT_DEFER.  Never NULL. */
struct lp_front_later *lp_front_defer(struct lp_front_req *q);
/* Any thread, once per handle.  Takes reply's bytes (a whole HTTP/1.1
 * reply; lp_front_reply builds one) and leaves *reply empty and
 * initialised; reply NULL or empty: the connection is closed instead. */
void lp_front_answer(struct lp_front_later *h, struct lp_buf *reply);
/* Appends a whole reply to out: status line, Content-Type (when not NULL),
 * Content-Length, extra_headers ("Name: value\r\n" lines, or NULL), the
 * blank line and body[0, len).  1xx, 204 and 304 go without a body. */
void lp_front_reply(struct lp_buf *out, int status, const char *content_type,
		    const char *extra_headers, const char *body, size_t len);
/* The same with a JSON body: json (a JSON text) or, when NULL, {}. */
void lp_front_reply_json(struct lp_buf *out, int status, const char *extra_headers,
			 const char *json);

#endif
