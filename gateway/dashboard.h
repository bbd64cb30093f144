/* dashboard.h - the dashboard page (GET /) and its bridge to the local
 * runner's control endpoint (/api/v1/control/...).
 *
 * The page is gateway/dashboard/index.html, one file with its CSS and
 * JavaScript inline and no assets from elsewhere, embedded into the binary
 * at build time (dashboard_page.c), so the gateway serves it from memory
 * and the page works offline.  It polls GET /api/v1/pipeline, drives the
 * generator through /api/v1/generator/..., searches with GET /api/logs, and
 * reaches the runner's stop/start/restart and chaos switches through
 * /api/v1/control/..., which this module forwards to upstream.control:
 *
 *   GET  /api/v1/control/status              -> GET  /control/status
 *   POST /api/v1/control/COMPONENT/ACTION    -> POST /control/COMPONENT/ACTION
 *   GET  /api/v1/control/chaos/status|history -> GET /chaos/...
 *   POST /api/v1/control/chaos/enable|disable -> POST /chaos/...
 *
 * Seed 004's own paths are served too, as aliases with the same scopes:
 * /control/... as /api/v1/control/... and /chaos/ACTION as
 * /api/v1/control/chaos/ACTION.
 *
 * The module sits below the gateway object: gateway.c makes the bridge and
 * calls gw_dashboard_routes() with its struct gw_routes (route.h); nothing
 * here calls into gateway.c.
 *
 * Without a runner (upstream.control empty or not answering), GET
 * /api/v1/control/status answers 200 {"available": false, "message": ...}
 * and the actions 404 (not configured) or 502 (not answering).
 *
 * The runner only listens on loopback; with the gateway's auth off, the
 * bridge answers loopback clients only, so a gateway opened to the network
 * with auth.allow_open does not open the runner too.  With auth on, reading
 * needs the read scope and acting the admin scope. */
#ifndef LOGPIPE_GATEWAY_DASHBOARD_H
#define LOGPIPE_GATEWAY_DASHBOARD_H

#include <stdbool.h>
#include <stddef.h>

struct lp_http_req;
struct gw_routes;

/* The embedded page (dashboard_page.c): bytes [gw__dashboard_html,
 * gw__dashboard_html_end), followed by a NUL. */
extern const char gw__dashboard_html[];
extern const char gw__dashboard_html_end[];

struct gw_dashboard {
	char *control_url;   /* runner's control endpoint, no trailing '/'; NULL = none */
	bool auth_on;        /* API keys configured: the scopes guard the bridge */
};

/* control_url may be NULL or "".  Never NULL. */
struct gw_dashboard *gw_dashboard_new(const char *control_url, bool auth_on);
void gw_dashboard_free(struct gw_dashboard *d);

/* GET /: the page.  ud: unused. */
void gw_dashboard_page(struct lp_http_req *r, void *ud);
/* GET and POST /api/v1/control/... and seed 004's /control/...: ud is the
 * struct gw_dashboard. */
void gw_dashboard_control(struct lp_http_req *r, void *ud);
/* GET and POST seed 004's /chaos/...: the same as /api/v1/control/chaos/.... */
void gw_dashboard_chaos(struct lp_http_req *r, void *ud);

/* Adds GET / and the bridge's routes (and seed 004's aliases) through reg,
 * serving d (which must outlive the HTTP server).  Returns 0 or -errno. */
int gw_dashboard_routes(const struct gw_routes *reg, struct gw_dashboard *d);

/* The runner path for the part after /api/v1/control/ ("kafka/stop" ->
 * "/control/kafka/stop", "chaos/enable" -> "/chaos/enable", "status" ->
 * "/control/status").  Returns false when param is not of that shape. */
bool gw_dashboard_control_path(const char *param, char *out, size_t outlen);

#endif
