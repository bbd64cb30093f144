/* route.c - the pieces a route the gateway serves itself needs: see route.h. */
#include <errno.h>

#include "logpipe/util.h"
#include "route.h"

#include "logpipe/banned.h"

/* Filled by the request path before a handler runs, cleared after. */
static __thread char tl_headers[512];

int gw_route(const struct gw_routes *reg, const char *method, const char *pattern,
	     unsigned scope, lp_http_handler fn, void *ud)
{
	if (!reg || !reg->add)
		return -EINVAL;
	return reg->add(reg->ctx, method, pattern, scope, fn, ud);
}

const char *gw_reply_headers(void)
{
	return tl_headers;
}

char *gw_reply_headers_buf(size_t *len)
{
	*len = sizeof(tl_headers);
	return tl_headers;
}

void gw_reply_headers_set(const char *lines)
{
	if (lines)
		lp_strlcpy(tl_headers, lines, sizeof(tl_headers));
	else
		tl_headers[0] = '\0';
}
