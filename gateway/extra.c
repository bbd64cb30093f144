/* extra.c - the pipeline view's routes (GET /api/v1/pipeline, and GET
 * /monitor, seed 004's name for it, so that its demo's curl lines work
 * against the gateway).  See extra.h.
 *
 * The routes go into the gateway's table through gw_route() (route.h), so
 * they get auth (the read scope), the per-client rate limit and the access
 * log like every other route; gateway_start() calls gw_extra_routes()
 * before adding the proxied routes, so these patterns take precedence. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "logpipe/buf.h"
#include "logpipe/http.h"
#include "extra.h"
#include "pipeline.h"
#include "route.h"

#include "logpipe/banned.h"

/* A request waits this long for the first sample after start-up. */
#define FIRST_SAMPLE_WAIT_MS 5000

static void handle_pipeline(struct lp_http_req *r, void *ud)
{
	struct gw_pipeline *pl = ud;
	struct lp_buf h = LP_BUF_INIT;
	char v[8];
	bool history = lp_http_query(r, "history", v, sizeof(v)) > 0 && strcmp(v, "0") != 0 &&
		       strcmp(v, "false") != 0;
	size_t len;
	char *body = gw_pipeline_json(pl, history, FIRST_SAMPLE_WAIT_MS, &len);

	lp_buf_adds(&h, gw_reply_headers());
	lp_buf_adds(&h, "Cache-Control: no-store\r\n");
	lp_http_reply(r, 200, "application/json", body, len, h.buf);
	lp_buf_release(&h);
	free(body);
}

int gw_extra_routes(const struct gw_routes *reg, struct gw_pipeline *pl)
{
	int rc = 0;

	if (!pl)
		return -EINVAL;
	rc |= gw_route(reg, "GET", "/api/v1/pipeline", GW_SCOPE_READ, handle_pipeline, pl);
	/* Seed 004's path. */
	rc |= gw_route(reg, "GET", "/monitor", GW_SCOPE_READ, handle_pipeline, pl);
	return rc < 0 ? -ENOSPC : 0;
}
