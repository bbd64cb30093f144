/* extra.c - routes the gateway serves itself beyond the proxied API: the
 * dashboard page (GET /), the pipeline view (GET /api/v1/pipeline) and the
 * page's bridge to the local runner (/api/v1/control/...), and seed 004's
 * names for the last two (GET /monitor, /control/..., /chaos/...), with
 * the same handlers and scopes, so that its demo's curl lines work against
 * the gateway.  (Its POST /start and /stop are proxied to the generator,
 * which serves those paths itself: see add_routes in gateway.c.)
 *
 * Each route is registered with gateway_route() so that it gets auth, the
 * per-client rate limit and the access log; gateway_start() calls
 * gateway_register_extra_routes() before adding the proxied routes, so
 * these patterns take precedence.  The page itself is open (it holds no
 * data; what it shows comes from the routes below, which need the read
 * scope, and acting needs admin).
 *
 * What the routes need (the pipeline view's threads, the bridge's URL)
 * lives here, keyed by the gateway, and is freed by
 * gateway_release_extra_routes() from gateway_stop(). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "logpipe/http.h"
#include "logpipe/log.h"
#include "logpipe/util.h"
#include "backpressure.h"
#include "dashboard.h"
#include "gateway.h"
#include "pipeline.h"

#include "logpipe/banned.h"

/* A request waits this long for the first sample after start-up. */
#define FIRST_SAMPLE_WAIT_MS 5000

/* What one gateway's extra routes own. */
struct extra {
	struct gateway *g;          /* whose */
	struct gw_pipeline *pl;     /* the pipeline view */
	struct gw_dashboard *dash;  /* the control bridge */
};

/* Gateways are few per process (one, or a handful in tests). */
#define MAX_GATEWAYS 16
static struct extra extras[MAX_GATEWAYS];
static pthread_mutex_t extras_mu = PTHREAD_MUTEX_INITIALIZER;

static void lag_of(void *ud, struct gw_bp_snapshot *out)
{
	gateway_lag(ud, out);
}

static void handle_pipeline(struct lp_http_req *r, void *ud)
{
	struct gw_pipeline *pl = ud;
	struct lp_buf h = LP_BUF_INIT;
	char v[8];
	bool history = lp_http_query(r, "history", v, sizeof(v)) > 0 && strcmp(v, "0") != 0 &&
		       strcmp(v, "false") != 0;
	size_t len;
	char *body = gw_pipeline_json(pl, history, FIRST_SAMPLE_WAIT_MS, &len);

	lp_buf_adds(&h, gateway_reply_headers());
	lp_buf_adds(&h, "Cache-Control: no-store\r\n");
	lp_http_reply(r, 200, "application/json", body, len, h.buf);
	lp_buf_release(&h);
	free(body);
}

int gateway_register_extra_routes(struct gateway *g)
{
	const struct gateway_settings *s = gateway_settings_of(g);
	struct gw_pipeline_opts o = { 0 };
	struct extra *x = NULL;
	char err[256];
	size_t i;
	int rc = 0;

	pthread_mutex_lock(&extras_mu);
	for (i = 0; i < MAX_GATEWAYS && !x; i++)
		if (!extras[i].g)
			x = &extras[i];
	if (x)
		x->g = g;
	pthread_mutex_unlock(&extras_mu);
	if (!x)
		return -ENOSPC;

	o.urls[GW_PL_PRODUCER] = s->up_producer;
	o.urls[GW_PL_METADATA] = s->up_metadata;
	o.urls[GW_PL_ENRICHER] = s->up_enricher;
	o.urls[GW_PL_CONSUMER] = s->up_consumer;
	o.urls[GW_PL_GENERATOR] = s->up_generator;
	o.brokers = s->kafka_brokers;
	o.topics[GW_PL_RAW] = s->topic_raw;
	o.topics[GW_PL_COMPLETE] = s->topic_complete;
	o.topics[GW_PL_PARTIAL] = s->topic_partial;
	o.topics[GW_PL_DLQ] = s->topic_dlq;
	o.groups = s->bp_groups;
	o.kafka_data_dir = s->pl_kafka_data_dir;
	o.pg_data_dir = s->pl_pg_data_dir;
	o.sample_ms = (int)s->pl_sample_ms;
	o.lag = lag_of;
	o.lag_ud = g;
	x->pl = gw_pipeline_start(&o, err, sizeof(err));
	if (!x->pl) {
		lp_error("pipeline view: %s", err);
		gateway_release_extra_routes(g);
		return -EINVAL;
	}
	x->dash = gw_dashboard_new(s->up_control, s->auth_keys && *s->auth_keys);

	rc |= gateway_route(g, "GET", "/", GATEWAY_OPEN, gw_dashboard_page, NULL);
	rc |= gateway_route(g, "GET", "/api/v1/pipeline", GATEWAY_READ, handle_pipeline, x->pl);
	rc |= gateway_route(g, "GET", "/api/v1/control/*", GATEWAY_READ, gw_dashboard_control,
			    x->dash);
	rc |= gateway_route(g, "POST", "/api/v1/control/*", GATEWAY_ADMIN, gw_dashboard_control,
			    x->dash);
	/* Seed 004's paths. */
	rc |= gateway_route(g, "GET", "/monitor", GATEWAY_READ, handle_pipeline, x->pl);
	rc |= gateway_route(g, "GET", "/control/*", GATEWAY_READ, gw_dashboard_control, x->dash);
	rc |= gateway_route(g, "POST", "/control/*", GATEWAY_ADMIN, gw_dashboard_control, x->dash);
	rc |= gateway_route(g, "GET", "/chaos/*", GATEWAY_READ, gw_dashboard_chaos, x->dash);
	rc |= gateway_route(g, "POST", "/chaos/*", GATEWAY_ADMIN, gw_dashboard_chaos, x->dash);
	return rc < 0 ? -ENOSPC : 0;
}

void gateway_release_extra_routes(struct gateway *g)
{
	struct extra x = { 0 };
	size_t i;

	pthread_mutex_lock(&extras_mu);
	for (i = 0; i < MAX_GATEWAYS; i++) {
		if (extras[i].g == g && g) {
			x = extras[i];
			memset(&extras[i], 0, sizeof(extras[i]));
			break;
		}
	}
	pthread_mutex_unlock(&extras_mu);
	gw_pipeline_stop(x.pl);
	gw_dashboard_free(x.dash);
}
