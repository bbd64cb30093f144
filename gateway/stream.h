/* stream.h - a proxied answer passed on as it arrives, for GET
 * /api/logs/tail (Server-Sent Events).
 *
 * The other proxied routes are answered whole: the event front (front.c)
 * and upstream.c read the upstream's whole answer, under the upstream's
 * timeout, before replying.  A stream has no end and no size, so its route
 * is served on CivetWeb's side instead (the front tunnels it there, and the
 * tunnel passes bytes on as they come, with no overall timeout) by
 * gw_stream_proxy on one CivetWeb worker thread: it opens its own
 * connection to the upstream (Connection: close), waits up to
 * head_timeout_ms for the answer's head, and then
 *   - a 200 text/event-stream answer is passed on close-delimited, each
 *     read as it arrives, until the upstream ends it, the client is gone
 *     (a write fails: at the latest at the next heartbeat of the upstream)
 *     or *stop is set (checked every second);
 *   - any other answer is read whole (Content-Length or close, at most
 *     1 MiB) and replied with its status, Content-Type and Retry-After. */
#ifndef LOGPIPE_GATEWAY_STREAM_H
#define LOGPIPE_GATEWAY_STREAM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "logpipe/h1.h"
#include "upstream.h"

struct lp_http_req;

struct gw_stream_call {
	const struct lp_h1_target *target; /* the upstream */
	const char *method;             /* "GET" or "HEAD" */
	const char *path;               /* percent-encoded */
	const char *query;              /* raw, without '?', or NULL */
	const char *const *headers;     /* "Name: value", NULL-terminated */
	const char *reply_headers;      /* extra "Name: value\r\n" lines for the client */
	long connect_timeout_ms;
	long head_timeout_ms;           /* until the answer's head is in */
	const atomic_bool *stop;        /* ends a stream when set */
	/* out */
	int64_t head_ms;                /* until the answer's head came (the breaker's
					 * call time; a stream's length is not) */
};

/* Returns GW_CALL_OK once r was answered (streamed or whole), otherwise
 * GW_CALL_TIMEOUT or GW_CALL_FAILED with err, r unanswered. */
enum gw_call_result gw_stream_proxy(struct lp_http_req *r, struct gw_stream_call *sc,
				    char *err, size_t errlen);

#endif
