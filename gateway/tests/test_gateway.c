/* test_gateway.c - the whole gateway in-process, in front of a fake
 * upstream (a logpipe HTTP server that echoes what it receives), spoken
 * to with libcurl: routing and what passes through, the auth matrix and
 * tenant stamping, 404/405/413, rate-limit headers and 429, the 502, 503
 * and 504 of a failing upstream, and the aggregate /health. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "logpipe/buf.h"
#include "logpipe/config.h"
#include "logpipe/http.h"
#include "logpipe/log.h"
#include "logpipe/util.h"
#include "../gateway.h"

#include "logpipe/banned.h"

#define assert_contains(hay, needle)                                                      \
	do {                                                                               \
		const char *h_ = (hay), *n_ = (needle);                                    \
		if (!h_ || !strstr(h_, n_)) {                                              \
			print_error("\"%s\" not found in \"%s\"\n", n_, h_ ? h_ : "(null)"); \
			fail();                                                            \
		}                                                                          \
	} while (0)

#define assert_status(r, want)                                                             \
	do {                                                                               \
		if ((r)->status != (want)) {                                               \
			print_error("status %ld, want %d; body %s\n", (r)->status, (want),  \
				    (r)->body.buf);                                        \
			fail();                                                            \
		}                                                                          \
	} while (0)

struct env {
	struct lp_http_server *up;   /* the fake upstream */
	int up_port, dead_port, gw_port;
	struct gateway_settings s;
	struct gateway *g;
	char base[64];               /* http://127.0.0.1:<gw_port> */
};

struct resp {
	long status;
	struct lp_buf head; /* header lines */
	struct lp_buf body;
};

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* ---- the fake upstream -------------------------------------------------- */

/* /api/logs/slow answers only once the test has seen the gateway give up on
 * it (or after 10 s), so it is slower than any timeout however busy the
 * machine is, and the timeout can be far above what a normal call takes. */
static atomic_bool slow_released;

static void wait_released(void)
{
	int i;

	for (i = 0; i < 1000 && !atomic_load(&slow_released); i++)
		usleep(10 * 1000);
}

static void add_hdr(json_t *o, struct lp_http_req *r, const char *name)
{
	const char *v = lp_http_header(r, name);

	json_object_set_new(o, name, v ? json_string(v) : json_null());
}

static void echo(struct lp_http_req *r, void *ud)
{
	json_t *o;

	if (strcmp(r->path, "/api/logs/slow") == 0) {
		wait_released();
	} else if (strcmp(r->path, "/api/logs/busy") == 0) {
		lp_http_reply_error(r, 503, "busy", "Retry-After: 7\r\n", "come back later");
		return;
	} else if (strcmp(r->path, "/api/logs/broken") == 0) {
		lp_http_reply_error(r, 500, "internal", NULL, "it broke");
		return;
	}
	o = json_pack("{s:s, s:s, s:s?, s:s%}", "method", r->method, "path", r->path, "query",
		      r->query, "body", r->body ? r->body : "", r->body_len);
	add_hdr(o, r, "X-Tenant-ID");
	add_hdr(o, r, "X-Request-ID");
	add_hdr(o, r, "traceparent");
	add_hdr(o, r, "Content-Type");
	add_hdr(o, r, "X-API-Key");
	add_hdr(o, r, "Authorization");
	add_hdr(o, r, "X-Forwarded-For");
	lp_http_reply_json(r, strcmp(r->method, "POST") == 0 ? 202 : 200, o,
			   "Location: /somewhere/1\r\nX-Internal: secret\r\n"
			   "RateLimit-Limit: 4242\r\n");
}

/* ---- a libcurl client --------------------------------------------------- */

static size_t on_data(char *p, size_t s, size_t n, void *ud)
{
	lp_buf_add(ud, p, s * n);
	return s * n;
}

/* headers: NULL-terminated "Name: value" list or NULL. */
static void call(struct env *e, const char *method, const char *path, const char *body,
		 const char *const *headers, struct resp *r)
{
	CURL *h = curl_easy_init();
	struct curl_slist *hl = NULL;
	char url[512];
	size_t i;

	lp_buf_init(&r->head, 0);
	lp_buf_init(&r->body, 0);
	snprintf(url, sizeof(url), "%s%s", e->base, path);
	for (i = 0; headers && headers[i]; i++)
		hl = curl_slist_append(hl, headers[i]);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &r->body);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &r->head);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
	assert_int_equal(curl_easy_perform(h), CURLE_OK);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	curl_slist_free_all(hl);
	curl_easy_cleanup(h);
}

static void resp_free(struct resp *r)
{
	lp_buf_release(&r->head);
	lp_buf_release(&r->body);
}

/* The value of a field of the JSON echo ("" when null or absent). */
static const char *echoed(struct resp *r, const char *field, char *out, size_t len)
{
	json_t *o = lp_json_loads(r->body.buf, 0, NULL), *v;

	out[0] = '\0';
	if (o && (v = json_object_get(o, field)) && json_is_string(v))
		lp_strlcpy(out, json_string_value(v), len);
	json_decref(o);
	return out;
}

/* ---- fixtures ----------------------------------------------------------- */

static void set_str(char **field, const char *v)
{
	free(*field);
	*field = lp_xstrdup(v);
}

/* The consumer route's timeout: far above a normal call on a busy machine
 * under the sanitizers, and /api/logs/slow waits until released. */
#define CONSUMER_TIMEOUT_MS 1000

static int start_env(void **state, const char *keys, long long rate)
{
	struct env *e = lp_xcalloc(1, sizeof(*e));
	struct lp_http_opts uo = { 0 };
	char err[256], listen[64], url[64];

	e->dead_port = free_port();
	/* Port 0: a port picked free and bound later can be taken meanwhile. */
	uo.listen = "127.0.0.1:0";
	uo.threads = 8;
	uo.service = "fake-upstream";
	e->up = lp_http_server_new(&uo, err, sizeof(err));
	assert_non_null(e->up);
	lp_http_route(e->up, NULL, "/*", echo, NULL);
	assert_int_equal(lp_http_start(e->up, err, sizeof(err)), 0);
	e->up_port = lp_http_port(e->up);

	assert_int_equal(lp_config_load(gateway_options, &e->s, NULL, err, sizeof(err)), 0);
	e->gw_port = free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", e->gw_port);
	set_str(&e->s.http_listen, listen);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", e->up_port);
	set_str(&e->s.up_producer, url);
	set_str(&e->s.up_consumer, url);
	set_str(&e->s.up_metadata, url);
	set_str(&e->s.up_enricher, url);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", e->dead_port);
	set_str(&e->s.up_generator, url);
	set_str(&e->s.redis_url, "");
	set_str(&e->s.kafka_brokers, "");
	set_str(&e->s.auth_keys, keys);
	e->s.http_max_body = 1024;
	e->s.up_consumer_timeout_ms = CONSUMER_TIMEOUT_MS;
	e->s.rl_rate = rate;
	e->g = gateway_start(&e->s, err, sizeof(err));
	/* Its port, picked free, can be taken before it binds: pick again. */
	for (int i = 0; !e->g && strstr(err, "in use") && i < 20; i++) {
		e->gw_port = free_port();
		snprintf(listen, sizeof(listen), "127.0.0.1:%d", e->gw_port);
		set_str(&e->s.http_listen, listen);
		e->g = gateway_start(&e->s, err, sizeof(err));
	}
	if (!e->g)
		print_error("gateway_start: %s\n", err);
	assert_non_null(e->g);
	snprintf(e->base, sizeof(e->base), "http://127.0.0.1:%d", e->gw_port);
	*state = e;
	return 0;
}

static int setup_open(void **state)
{
	return start_env(state, "", 100000);
}

static int setup_keys(void **state)
{
	return start_env(state, "ing-key:acme:ingest;read-key:acme:read;admin-key:ops:admin",
			 100000);
}

static int setup_limited(void **state)
{
	return start_env(state, "", 5);
}

static int teardown(void **state)
{
	struct env *e = *state;

	atomic_store(&slow_released, true);
	gateway_stop(e->g);
	lp_http_server_free(e->up);
	lp_config_release(gateway_options, &e->s);
	free(e);
	return 0;
}

/* ---- tests -------------------------------------------------------------- */

static void test_routes_pass_through(void **state)
{
	struct env *e = *state;
	struct resp r;
	char v[256];
	static const char *const h[] = {
		"Content-Type: application/json", "X-Tenant-ID: evil", "X-Request-ID: req-123",
		"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", NULL
	};

	call(e, "POST", "/api/logs", "{\"message\":\"m\",\"service\":\"s\"}", h, &r);
	assert_status(&r, 202);
	assert_string_equal(echoed(&r, "method", v, sizeof(v)), "POST");
	assert_string_equal(echoed(&r, "path", v, sizeof(v)), "/api/logs");
	assert_string_equal(echoed(&r, "body", v, sizeof(v)), "{\"message\":\"m\",\"service\":\"s\"}");
	assert_string_equal(echoed(&r, "Content-Type", v, sizeof(v)), "application/json");
	/* Auth is off: the client's tenant claim is dropped, never trusted. */
	assert_string_equal(echoed(&r, "X-Tenant-ID", v, sizeof(v)), "");
	assert_string_equal(echoed(&r, "X-Request-ID", v, sizeof(v)), "req-123");
	assert_string_equal(echoed(&r, "X-Forwarded-For", v, sizeof(v)), "127.0.0.1");
	echoed(&r, "traceparent", v, sizeof(v));
	assert_memory_equal(v, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36);
	assert_contains(r.head.buf, "X-Request-ID: req-123");
	assert_contains(r.head.buf, "Location: /somewhere/1");
	assert_contains(r.head.buf, "RateLimit-Limit: 100000");
	assert_null(strstr(r.head.buf, "4242"));      /* the upstream's own RateLimit is dropped */
	assert_null(strstr(r.head.buf, "X-Internal")); /* not a forwarded header */
	resp_free(&r);

	call(e, "GET", "/api/logs?service=a%20b&level=ERROR", NULL, NULL, &r);
	assert_status(&r, 200);
	assert_string_equal(echoed(&r, "query", v, sizeof(v)), "service=a%20b&level=ERROR");
	echoed(&r, "traceparent", v, sizeof(v));
	assert_int_equal(strlen(v), 55); /* generated when absent */
	resp_free(&r);

	call(e, "GET", "/api/logs/0190a1b2-0000-7000-8000-000000000001", NULL, NULL, &r);
	assert_status(&r, 200);
	assert_string_equal(echoed(&r, "path", v, sizeof(v)),
			    "/api/logs/0190a1b2-0000-7000-8000-000000000001");
	resp_free(&r);

	call(e, "PUT", "/api/metadata/hosts/web%201", "{\"datacenter\":\"eu\"}",
	     (const char *const[]){ "Content-Type: application/json", NULL }, &r);
	assert_status(&r, 200);
	assert_string_equal(echoed(&r, "method", v, sizeof(v)), "PUT");
	assert_string_equal(echoed(&r, "path", v, sizeof(v)), "/api/metadata/hosts/web 1");
	resp_free(&r);

	call(e, "DELETE", "/api/metadata/services/billing", NULL, NULL, &r);
	assert_status(&r, 200);
	assert_string_equal(echoed(&r, "method", v, sizeof(v)), "DELETE");
	resp_free(&r);

	call(e, "POST", "/api/logs/batch", "[{\"message\":\"m\",\"service\":\"s\"}]", NULL, &r);
	assert_status(&r, 202);
	assert_string_equal(echoed(&r, "path", v, sizeof(v)), "/api/logs/batch");
	resp_free(&r);

	call(e, "GET", "/api/stats", NULL, NULL, &r);
	assert_status(&r, 200);
	resp_free(&r);
}

static void test_ingest_health_is_local(void **state)
{
	struct env *e = *state;
	struct resp r;
	json_t *o;

	call(e, "GET", "/api/logs/health", NULL, NULL, &r);
	assert_status(&r, 200);
	o = lp_json_loads(r.body.buf, 0, NULL);
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "status")), "NORMAL");
	assert_int_equal(json_integer_value(json_object_get(o, "current_limit")), 100000);
	assert_true(json_is_null(json_object_get(o, "consumer_lag")));
	assert_null(json_object_get(o, "method")); /* not the echo of an upstream */
	json_decref(o);
	assert_contains(r.head.buf, "RateLimit-Policy: 100000;w=1");
	resp_free(&r);
}

static void test_errors(void **state)
{
	struct env *e = *state;
	struct resp r;
	char big[2048];

	call(e, "DELETE", "/api/logs", NULL, NULL, &r);
	assert_status(&r, 405);
	assert_contains(r.head.buf, "Allow: POST, GET");
	assert_contains(r.body.buf, "\"method_not_allowed\"");
	resp_free(&r);

	call(e, "GET", "/nowhere", NULL, NULL, &r);
	assert_status(&r, 404);
	assert_contains(r.body.buf, "\"not_found\"");
	resp_free(&r);

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	call(e, "POST", "/api/logs", big, NULL, &r);
	assert_status(&r, 413);
	assert_contains(r.body.buf, "\"payload_too_large\"");
	resp_free(&r);

	/* The upstream's own answers pass through, Retry-After included. */
	call(e, "GET", "/api/logs/busy", NULL, NULL, &r);
	assert_status(&r, 503);
	assert_contains(r.head.buf, "Retry-After: 7");
	assert_contains(r.body.buf, "\"busy\"");
	resp_free(&r);

	/* Slower than the consumer route's timeout: the upstream answers only
	 * after the gateway gave up. */
	atomic_store(&slow_released, false);
	call(e, "GET", "/api/logs/slow", NULL, NULL, &r);
	atomic_store(&slow_released, true);
	assert_status(&r, 504);
	assert_contains(r.body.buf, "\"upstream_timeout\"");
	resp_free(&r);
}

static void test_dead_upstream_opens_its_breaker(void **state)
{
	struct env *e = *state;
	struct resp r;
	int i;

	/* The generator is a port nobody listens on: 502 until the breaker opens. */
	for (i = 0; i < 5; i++) {
		call(e, "GET", "/api/v1/generator/status", NULL, NULL, &r);
		assert_status(&r, 502);
		assert_contains(r.body.buf, "\"bad_gateway\"");
		resp_free(&r);
	}
	call(e, "POST", "/api/v1/generator/start", "{}", NULL, &r);
	assert_status(&r, 503);
	assert_contains(r.body.buf, "\"upstream_unavailable\"");
	assert_contains(r.head.buf, "Retry-After: ");
	resp_free(&r);

	/* Other upstreams are not affected. */
	call(e, "GET", "/api/logs", NULL, NULL, &r);
	assert_status(&r, 200);
	resp_free(&r);

	call(e, "GET", "/health", NULL, NULL, &r);
	assert_status(&r, 200);
	assert_contains(r.body.buf, "\"generator\":{\"status\":\"DOWN\"");
	assert_contains(r.body.buf, "\"circuit_breaker\":\"open\"");
	assert_contains(r.body.buf, "\"producer\":{\"status\":\"UP\"");
	resp_free(&r);
}

static void test_auth_matrix(void **state)
{
	struct env *e = *state;
	struct resp r;
	char v[128];
	static const struct {
		const char *method, *path, *key; /* key NULL: none */
		int want;
	} cases[] = {
		{ "GET", "/api/logs", NULL, 401 },
		{ "GET", "/api/logs", "X-API-Key: wrong", 401 },
		{ "GET", "/api/logs", "X-API-Key: ing-key", 403 },
		{ "GET", "/api/logs", "X-API-Key: read-key", 200 },
		{ "GET", "/api/logs", "Authorization: Bearer read-key", 200 },
		{ "GET", "/api/logs", "Authorization: Bearer admin-key", 200 },
		{ "POST", "/api/logs", NULL, 401 },
		{ "POST", "/api/logs", "X-API-Key: read-key", 403 },
		{ "POST", "/api/logs", "X-API-Key: ing-key", 202 },
		{ "POST", "/api/logs/batch", "X-API-Key: ing-key", 202 },
		{ "GET", "/api/metadata/hosts", "X-API-Key: read-key", 200 },
		{ "POST", "/api/metadata/hosts", "X-API-Key: read-key", 403 },
		{ "POST", "/api/metadata/hosts", "X-API-Key: ing-key", 403 },
		{ "POST", "/api/metadata/hosts", "X-API-Key: admin-key", 202 },
		{ "DELETE", "/api/metadata/hosts/h1", "X-API-Key: read-key", 403 },
		{ "DELETE", "/api/metadata/hosts/h1", "X-API-Key: admin-key", 200 },
		{ "POST", "/api/v1/generator/start", "X-API-Key: read-key", 403 },
		{ "POST", "/api/v1/generator/stop", "X-API-Key: ing-key", 403 },
		{ "GET", "/api/logs/health", NULL, 401 },
		{ "GET", "/api/logs/health", "X-API-Key: read-key", 200 },
		{ "GET", "/health", NULL, 200 },
		{ "GET", "/health/live", NULL, 200 },
		{ "GET", "/metrics", NULL, 200 },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *hdrs[] = { cases[i].key, NULL };

		call(e, cases[i].method, cases[i].path,
		     strcmp(cases[i].method, "POST") == 0 ? "{\"message\":\"m\",\"service\":\"s\"}"
							  : NULL,
		     hdrs, &r);
		if (r.status != cases[i].want) {
			print_error("%s %s with %s: %ld, want %d: %s\n", cases[i].method,
				    cases[i].path, cases[i].key ? cases[i].key : "no key", r.status,
				    cases[i].want, r.body.buf);
			fail();
		}
		if (r.status == 401)
			assert_contains(r.head.buf, "WWW-Authenticate: Bearer");
		resp_free(&r);
	}

	/* The key's tenant is stamped, the client's claim and the key dropped. */
	call(e, "POST", "/api/logs", "{}",
	     (const char *const[]){ "X-API-Key: ing-key", "X-Tenant-ID: other", NULL }, &r);
	assert_status(&r, 202);
	assert_string_equal(echoed(&r, "X-Tenant-ID", v, sizeof(v)), "acme");
	assert_string_equal(echoed(&r, "X-API-Key", v, sizeof(v)), "");
	resp_free(&r);
	call(e, "GET", "/api/logs", NULL,
	     (const char *const[]){ "Authorization: Bearer admin-key", NULL }, &r);
	assert_string_equal(echoed(&r, "X-Tenant-ID", v, sizeof(v)), "ops");
	assert_string_equal(echoed(&r, "Authorization", v, sizeof(v)), "");
	resp_free(&r);
}

static void test_rate_limit_headers_and_429(void **state)
{
	struct env *e = *state;
	struct resp r;
	int i, ok = 0, limited = 0;
	int64_t t0 = lp_now_ms(), elapsed;
	long retry;
	const char *p;

	/* Until the first 429 (bounded): the bucket starts full with one
	 * second's worth (5) and earns 5 more per second, so how many pass
	 * depends on how long the calls took here, not on a guess at it. */
	for (i = 0; i < 200 && limited == 0; i++) {
		call(e, "GET", "/api/logs", NULL, NULL, &r);
		assert_contains(r.head.buf, "RateLimit-Limit: 5");
		assert_contains(r.head.buf, "RateLimit-Policy: 5;w=1");
		assert_contains(r.head.buf, "RateLimit: limit=5, remaining=");
		assert_contains(r.head.buf, "RateLimit-Reset: ");
		if (r.status == 200) {
			ok++;
		} else {
			assert_status(&r, 429);
			assert_contains(r.body.buf, "\"rate_limited\"");
			assert_contains(r.head.buf, "RateLimit-Remaining: 0");
			p = strstr(r.head.buf, "Retry-After: ");
			assert_non_null(p);
			retry = strtol(p + 13, NULL, 10);
			assert_in_range(retry, 1, 2); /* 1 s window plus up to 1 s of jitter */
			limited++;
		}
		resp_free(&r);
	}
	elapsed = lp_now_ms() - t0;
	assert_int_equal(limited, 1);
	if (ok < 5 || ok > 5 + 5 * elapsed / 1000 + 1)
		fail_msg("%d calls passed in %lld ms at 5/s with a burst of 5", ok,
			 (long long)elapsed);

	/* Open routes are never limited. */
	call(e, "GET", "/health/live", NULL, NULL, &r);
	assert_status(&r, 200);
	assert_null(strstr(r.head.buf, "RateLimit"));
	resp_free(&r);

	call(e, "GET", "/metrics", NULL, NULL, &r);
	assert_contains(r.body.buf, "log_events_rate_limited_total{class=\"api\"}");
	assert_contains(r.body.buf, "rate_limiter_available_permissions{class=\"api\"}");
	resp_free(&r);
}

/* Issue #17 item 5: ingest counts events.  At 5 per second a batch of 3
 * spends 3 of the window, one of 6 can never pass (413, not a 429 to
 * retry for ever), and the policy names its unit. */
static void test_ingest_limit_counts_events(void **state)
{
	struct env *e = *state;
	static const char *const h[] = { "Content-Type: application/json", NULL };
	struct resp r;
	int64_t t0;

	call(e, "POST", "/api/logs/batch", "[{\"m\":1},{\"m\":2},{\"m\":3},{},{},{}]", h, &r);
	assert_status(&r, 413);
	assert_contains(r.body.buf, "\"batch_over_rate_limit\"");
	assert_contains(r.body.buf, "carries 6 events");
	assert_contains(r.head.buf, "Retry-After: ");
	assert_contains(r.head.buf, "RateLimit-Policy: 5;w=1;qu=\"events\"");
	resp_free(&r);

	t0 = lp_now_ms();
	call(e, "POST", "/api/logs/batch", "{\"m\":1}\n{\"m\":2}\n{\"m\":3}\n", h, &r);
	assert_status(&r, 202);
	assert_contains(r.head.buf, "RateLimit-Remaining: 2\r\n");
	resp_free(&r);
	call(e, "POST", "/api/logs/batch", "[{},{},{}]", h, &r);
	/* 3 more tokens take 200 ms to come back at 5 per second. */
	if (lp_now_ms() - t0 < 200) {
		assert_status(&r, 429);
		assert_contains(r.body.buf, "5 events per second exceeded (this request carries 3)");
	}
	resp_free(&r);

	/* The api class counts requests. */
	call(e, "GET", "/api/logs", NULL, NULL, &r);
	assert_contains(r.head.buf, "RateLimit-Policy: 5;w=1;qu=\"requests\"");
	resp_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_routes_pass_through, setup_open, teardown),
		cmocka_unit_test_setup_teardown(test_ingest_health_is_local, setup_open, teardown),
		cmocka_unit_test_setup_teardown(test_errors, setup_open, teardown),
		cmocka_unit_test_setup_teardown(test_dead_upstream_opens_its_breaker, setup_open,
						teardown),
		cmocka_unit_test_setup_teardown(test_auth_matrix, setup_keys, teardown),
		cmocka_unit_test_setup_teardown(test_rate_limit_headers_and_429, setup_limited,
						teardown),
		cmocka_unit_test_setup_teardown(test_ingest_limit_counts_events, setup_limited,
						teardown),
	};

	lp_log_init("test_gateway", LP_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
