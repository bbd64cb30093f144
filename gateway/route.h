/* route.h - what a route the gateway serves itself needs, from below.
 *
 * The gateway object (gateway.c) sits on top: it owns the route table and
 * the request path (auth, rate limit, access log).  The modules of its own
 * routes (dashboard.c, extra.c) sit below it and never call into it; they
 * export a registration function that gateway.c calls with a struct
 * gw_routes, through which they add their routes to the gateway's table,
 * and they take the RateLimit header lines of the request being handled
 * from here.  So the calls go one way:
 *
 *   gateway.c  ->  dashboard.c, extra.c  ->  route.c
 *   gateway.c  ------------------------->  route.c
 *
 * route.c holds only the per-thread header lines the request path fills
 * in (gw_reply_headers_buf) before it calls a route's handler. */
#ifndef LOGPIPE_GATEWAY_ROUTE_H
#define LOGPIPE_GATEWAY_ROUTE_H

#include <stddef.h>

#include "logpipe/http.h"
#include "auth.h"

/* How a module adds a route to the gateway's table.  add() registers a
 * route served by handler fn, behind auth (scope: GW_SCOPE_NONE for an
 * open route, else GW_SCOPE_INGEST, READ or ADMIN) and the per-client rate
 * limit, with an access line, exactly like the proxied routes.  Returns 0
 * or -errno.  Filled in by the gateway; valid only during the call of a
 * module's registration function. */
struct gw_routes {
	int (*add)(void *ctx, const char *method, const char *pattern, unsigned scope,
		   lp_http_handler fn, void *ud);
	void *ctx;
};

/* Adds one route through reg (reg->add).  Returns 0 or -errno. */
int gw_route(const struct gw_routes *reg, const char *method, const char *pattern,
	     unsigned scope, lp_http_handler fn, void *ud);

/* The RateLimit header lines ("Name: value\r\n"...) of the request being
 * handled on this thread, "" when none.  A handler passes them as extra
 * headers of its reply so that the RateLimit fields reach the client. */
const char *gw_reply_headers(void);

/* For the request path, around a handler: this thread's buffer behind
 * gw_reply_headers() (*len receives its size), to fill in place, and a
 * copy of lines into it (cut to fit; NULL or "" clears it). */
char *gw_reply_headers_buf(size_t *len);
void gw_reply_headers_set(const char *lines);

#endif
