/* dashboard.c - GET / (the dashboard page) and the bridge from the page to
 * the local runner's control endpoint.  See dashboard.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <civetweb.h>
#include <curl/curl.h>
#include <jansson.h>

#include "logpipe/buf.h"
#include "logpipe/http.h"
#include "logpipe/log.h"
#include "logpipe/util.h"
#include "dashboard.h"
#include "logpipe/front.h"
#include "route.h"

#include "logpipe/banned.h"

/* A control action waits for the component to be up again (Kafka takes a
 * while); reading is quick. */
#define CONTROL_ACT_TIMEOUT_MS 180000L
#define CONTROL_READ_TIMEOUT_MS 3000L
#define CONTROL_MAX_BODY (1 << 20)

/* The page may only talk to its own origin and runs inline code only. */
static const char page_headers[] =
	"Cache-Control: no-cache\r\n"
	"X-Content-Type-Options: nosniff\r\n"
	"X-Frame-Options: DENY\r\n"
	"Referrer-Policy: no-referrer\r\n"
	"Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
	"style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; "
	"form-action 'none'; frame-ancestors 'none'\r\n";

struct gw_dashboard *gw_dashboard_new(const char *control_url, bool auth_on)
{
	struct gw_dashboard *d = lp_xcalloc(1, sizeof(*d));

	if (control_url && *control_url) {
		size_t n = strlen(control_url);

		while (n > 0 && control_url[n - 1] == '/')
			n--;
		d->control_url = lp_xmalloc(n + 1);
		memcpy(d->control_url, control_url, n);
		d->control_url[n] = '\0';
	}
	d->auth_on = auth_on;
	return d;
}

void gw_dashboard_free(struct gw_dashboard *d)
{
	if (!d)
		return;
	free(d->control_url);
	free(d);
}

void gw_dashboard_page(struct lp_http_req *r, void *ud)
{
	struct lp_buf h = LP_BUF_INIT;

	lp_buf_adds(&h, gw_reply_headers());
	lp_buf_adds(&h, page_headers);
	lp_http_reply(r, 200, "text/html; charset=utf-8", gw__dashboard_html,
		      (size_t)(gw__dashboard_html_end - gw__dashboard_html), h.buf);
	lp_buf_release(&h);
}

/* One path segment of lower-case letters, digits and '-'. */
static size_t segment(const char *s)
{
	size_t n = 0;

	while ((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9') || s[n] == '-')
		n++;
	return n;
}

/* What the runner has: deploy/local/runner.py's COMPONENTS, ACTIONS and
 * chaos routes.  Anything else is answered here, without a round trip. */
static const char *const components[] = {
	"kafka", "redis", "postgres", "metadata", "producer", "enricher", "consumer",
	"generator", "gateway", NULL
};
static const char *const actions[] = { "start", "stop", "restart", "status", NULL };
static const char *const chaos_actions[] = { "enable", "disable", "status", "history", NULL };

static bool in_list(const char *const *list, const char *s, size_t n)
{
	for (; *list; list++)
		if (strlen(*list) == n && strncmp(*list, s, n) == 0)
			return true;
	return false;
}

bool gw_dashboard_control_path(const char *param, char *out, size_t outlen)
{
	size_t a, b;
	bool chaos;

	if (!param)
		return false;
	a = segment(param);
	if (a == 0)
		return false;
	if (param[a] == '\0') {
		/* "status" only. */
		if (strcmp(param, "status") != 0)
			return false;
		snprintf(out, outlen, "/control/status");
		return true;
	}
	if (param[a] != '/')
		return false;
	b = segment(param + a + 1);
	if (b == 0 || param[a + 1 + b] != '\0')
		return false;
	chaos = a == 5 && strncmp(param, "chaos", 5) == 0;
	if (chaos ? !in_list(chaos_actions, param + a + 1, b)
		  : !in_list(components, param, a) || !in_list(actions, param + a + 1, b))
		return false;
	if (strlen(param) + 10 >= outlen)
		return false;
	snprintf(out, outlen, chaos ? "/%s" : "/control/%s", param);
	return true;
}

static bool is_loopback(const char *addr)
{
	return strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0 ||
	       strncmp(addr, "::ffff:127.", 11) == 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
	struct lp_buf *b = ud;
	size_t len = size * n;

	if (b->len + len > CONTROL_MAX_BODY)
		return 0;
	lp_buf_add(b, data, len);
	return len;
}

/* GET /api/v1/control/status without a runner: a status, not an error,
 * so that the page can tell "no runner here" without a failed request;
 * anything else without a runner is 404 (not configured) or 502. */
static void unavailable(struct lp_http_req *r, const char *param, const char *hdrs,
			const char *why)
{
	if (strcmp(r->method, "GET") == 0 && strcmp(param, "status") == 0)
		lp_http_reply_json(r, 200,
				   json_pack("{s:s, s:b, s:s}", "status", "unavailable", "available", 0,
					     "message", why),
				   hdrs);
	else
		lp_http_reply_error(r, 404, "control_unavailable", hdrs, "%s", why);
}

/* The actions take no parameters: a POST may carry no body or a JSON
 * object, which is not forwarded; anything else is the client's mistake. */
static bool body_acceptable(struct lp_http_req *r, const char *hdrs)
{
	json_error_t jerr;
	json_t *doc;
	size_t i = 0;

	while (i < r->body_len && strchr(" \t\r\n", r->body[i]))
		i++;
	if (i == r->body_len)
		return true;
	doc = lp_json_loadb(r->body, r->body_len, 0, &jerr);
	if (!json_is_object(doc)) {
		if (doc)
			lp_http_reply_error(r, 400, "invalid_body", hdrs,
					    "a control action takes no body or a JSON object");
		else
			lp_http_reply_error(r, 400, "invalid_json", hdrs,
					    "the body is not JSON: %s", jerr.text);
		json_decref(doc);
		return false;
	}
	json_decref(doc);
	return true;
}

/* Forwards r, whose route-relative part is param ("kafka/stop",
 * "chaos/enable", "status"), to the runner. */
static void control(struct lp_http_req *r, struct gw_dashboard *d, const char *param)
{
	const char *hdrs = gw_reply_headers();
	const char *addr = lp_http_remote_addr(r);
	bool post = strcmp(r->method, "POST") == 0;
	struct lp_buf url = LP_BUF_INIT, body = LP_BUF_INIT, h = LP_BUF_INIT;
	struct curl_slist *sl = NULL;
	char path[160], cerr[CURL_ERROR_SIZE] = "";
	long status = 0;
	CURLcode rc;
	CURL *c = NULL;

	if (!d->auth_on && !is_loopback(addr)) {
		lp_http_reply_error(r, 403, "forbidden", hdrs,
				    "the control bridge answers loopback clients only while auth "
				    "is off");
		goto out;
	}
	if (!gw_dashboard_control_path(param, path, sizeof(path))) {
		lp_http_reply_error(r, 404, "not_found", hdrs,
				    "no control route %s (COMPONENT/start|stop|restart|status, "
				    "chaos/enable|disable|status|history, status)",
				    r->path);
		goto out;
	}
	if (post && !body_acceptable(r, hdrs))
		goto out;
	if (!d->control_url) {
		unavailable(r, param, hdrs, "no control endpoint configured (upstream.control)");
		goto out;
	}
	c = curl_easy_init();
	if (!c) {
		lp_http_reply_error(r, 500, "internal", hdrs, "cannot make a curl handle");
		goto out;
	}
	lp_buf_addf(&url, "%s%s", d->control_url, path);
	sl = curl_slist_append(sl, "Accept: application/json");
	curl_easy_setopt(c, CURLOPT_URL, url.buf);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, sl);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, post ? CONTROL_ACT_TIMEOUT_MS : CONTROL_READ_TIMEOUT_MS);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	if (post) {
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
	}
	rc = curl_easy_perform(c);
	if (rc != CURLE_OK && !post && strcmp(path, "/control/status") == 0) {
		char msg[CURL_ERROR_SIZE + 256];

		snprintf(msg, sizeof(msg), "the control endpoint %s did not answer (%s); is `make run` "
			 "running?", d->control_url, cerr[0] ? cerr : curl_easy_strerror(rc));
		unavailable(r, param, hdrs, msg);
		goto out;
	}
	if (rc != CURLE_OK) {
		lp_http_reply_error(r, rc == CURLE_OPERATION_TIMEDOUT ? 504 : 502,
				    "control_unreachable", hdrs,
				    "the control endpoint %s did not answer (%s); is `make run` "
				    "running?",
				    d->control_url, cerr[0] ? cerr : curl_easy_strerror(rc));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (post)
		lp_info("control: %s %s answered %ld", r->method, path, status);
	lp_buf_adds(&h, hdrs);
	lp_buf_adds(&h, "Cache-Control: no-store\r\n");
	lp_http_reply(r, (int)status, "application/json", body.buf, body.len, h.buf);
out:
	if (c)
		curl_easy_cleanup(c);
	curl_slist_free_all(sl);
	lp_buf_release(&url);
	lp_buf_release(&body);
	lp_buf_release(&h);
}

void gw_dashboard_control(struct lp_http_req *r, void *ud)
{
	control(r, ud, r->param ? r->param : "");
}

void gw_dashboard_chaos(struct lp_http_req *r, void *ud)
{
	char param[64];

	/* "enable" under /chaos/ is "chaos/enable" under /api/v1/control/; a
	 * longer one is no chaos action and fails the path check. */
	snprintf(param, sizeof(param), "chaos/%s", r->param ? r->param : "");
	control(r, ud, param);
}

int gw_dashboard_routes(const struct gw_routes *reg, struct gw_dashboard *d)
{
	int rc = 0;

	if (!d)
		return -EINVAL;
	/* The page is open: it holds no data; what it shows comes from routes
	 * that need the read scope, and acting needs admin. */
	rc |= gw_route(reg, "GET", "/", GW_SCOPE_NONE, gw_dashboard_page, NULL);
	rc |= gw_route(reg, "GET", "/api/v1/control/*", GW_SCOPE_READ, gw_dashboard_control, d);
	rc |= gw_route(reg, "POST", "/api/v1/control/*", GW_SCOPE_ADMIN, gw_dashboard_control, d);
	/* Seed 004's paths. */
	rc |= gw_route(reg, "GET", "/control/*", GW_SCOPE_READ, gw_dashboard_control, d);
	rc |= gw_route(reg, "POST", "/control/*", GW_SCOPE_ADMIN, gw_dashboard_control, d);
	rc |= gw_route(reg, "GET", "/chaos/*", GW_SCOPE_READ, gw_dashboard_chaos, d);
	rc |= gw_route(reg, "POST", "/chaos/*", GW_SCOPE_ADMIN, gw_dashboard_chaos, d);
	return rc < 0 ? -ENOSPC : 0;
}
