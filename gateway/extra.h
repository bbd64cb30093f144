/* extra.h - the pipeline view's routes: GET /api/v1/pipeline and seed
 * 004's name for it, GET /monitor (the same document).
 *
 * Like dashboard.c, this module sits below the gateway object: gateway.c
 * starts the pipeline view (pipeline.h) and calls gw_extra_routes() with
 * its struct gw_routes (route.h); nothing here calls into gateway.c. */
#ifndef LOGPIPE_GATEWAY_EXTRA_H
#define LOGPIPE_GATEWAY_EXTRA_H

struct gw_pipeline;
struct gw_routes;

/* Adds the routes through reg, serving pl (which must outlive the HTTP
 * server).  Returns 0 or -errno. */
int gw_extra_routes(const struct gw_routes *reg, struct gw_pipeline *pl);

#endif
