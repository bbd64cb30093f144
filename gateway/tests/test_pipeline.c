/* test_pipeline.c - the pipeline view's pieces: Prometheus text sums,
 * rates from the sample ring (restarts, gaps, window), the du walk, the
 * control bridge's path mapping, and a whole view over fake services (an
 * lp_http_server whose /metrics and /health are the real ones) with no
 * Kafka: counts where a source answers, null and an error where not. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "logpipe/http.h"
#include "logpipe/metrics.h"
#include "logpipe/util.h"
#include "../dashboard.h"
#include "../pipeline.h"

#include "logpipe/banned.h"

/* ---- gw_prom_sum ---------------------------------------------------------- */

static const char prom[] =
	"# HELP kafka_messages_sent_total Messages acknowledged by Kafka\n"
	"# TYPE kafka_messages_sent_total counter\n"
	"kafka_messages_sent_total 1234\n"
	"kafka_messages_sent_total_other 99\n"
	"log_events_errors_total{reason=\"invalid_json\"} 2\n"
	"log_events_errors_total{reason=\"odd}\\\"name\"} 3\n"
	"log_events_errors_total{reason=\"db_rejected\"} 5 1700000000000\n"
	"logpipe_spool_events 0\n"
	"float_gauge 2.5e3\n";

static void test_prom_sum(void **state)
{
	double v;

	assert_int_equal(gw_prom_sum(prom, "kafka_messages_sent_total", &v), 1);
	assert_true(v == 1234);
	assert_int_equal(gw_prom_sum(prom, "log_events_errors_total", &v), 3);
	assert_true(v == 10);
	assert_int_equal(gw_prom_sum(prom, "logpipe_spool_events", &v), 1);
	assert_true(v == 0);
	assert_int_equal(gw_prom_sum(prom, "float_gauge", &v), 1);
	assert_true(v == 2500);
	assert_int_equal(gw_prom_sum(prom, "kafka_messages_sent", &v), 0);
	assert_int_equal(gw_prom_sum(prom, "absent_total", &v), 0);
	assert_int_equal(gw_prom_sum("", "x", &v), 0);
	assert_int_equal(gw_prom_sum("x 1", "x", &v), 1); /* no final newline */
	assert_true(v == 1);
}

/* ---- gw_pl_rate ------------------------------------------------------------ */

static void fill(struct gw_pl_sample *s, size_t n, int64_t step_ms, const long long *vals)
{
	size_t i;

	memset(s, 0, n * sizeof(*s));
	for (i = 0; i < n; i++) {
		s[i].t_ms = 1000000 + (int64_t)i * step_ms;
		s[i].v[0] = vals[i];
	}
}

static void assert_rate(const struct gw_pl_sample *s, size_t n, int64_t window, double want)
{
	double got = -1;

	if (!gw_pl_rate(s, n, 0, window, &got) || got < want - 0.001 || got > want + 0.001) {
		print_error("rate %f, want %f\n", got, want);
		fail();
	}
}

static void test_rate(void **state)
{
	struct gw_pl_sample s[8];
	double r;

	/* 100 more every 2 s: 50/s. */
	fill(s, 5, 2000, (const long long[]){ 0, 100, 200, 300, 400 });
	assert_rate(s, 5, 60000, 50);
	/* The window keeps the last 4 s only: still 50/s. */
	assert_rate(s, 5, 4000, 50);
	/* A restart (counter back to 0) counts nothing for that step. */
	fill(s, 5, 2000, (const long long[]){ 1000, 1100, 0, 100, 200 });
	assert_rate(s, 5, 60000, 37.5);
	/* Unknown values are skipped, their time too. */
	fill(s, 5, 2000, (const long long[]){ 0, -1, 200, 300, -1 });
	assert_rate(s, 5, 60000, 50);
	/* Fewer than two known values: no rate. */
	fill(s, 3, 2000, (const long long[]){ -1, 5, -1 });
	assert_false(gw_pl_rate(s, 3, 0, 60000, &r));
	assert_false(gw_pl_rate(s, 1, 0, 60000, &r));
	/* Flat: 0/s, not "unknown". */
	fill(s, 3, 2000, (const long long[]){ 7, 7, 7 });
	assert_rate(s, 3, 60000, 0);
}

/* ---- gw_disk_usage ------------------------------------------------------------ */

static void test_disk_usage(void **state)
{
	char dir[] = "/tmp/lp-du-XXXXXX", path[128], err[256];
	char block[4096];
	long long bytes = -1;
	int fd, i;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sub", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	memset(block, 'x', sizeof(block));
	snprintf(path, sizeof(path), "%s/sub/data", dir);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	for (i = 0; i < 64; i++)
		assert_int_equal(write(fd, block, sizeof(block)), (int)sizeof(block));
	fsync(fd);
	close(fd);
	snprintf(path, sizeof(path), "%s/link", dir);
	assert_int_equal(symlink("/usr", path), 0); /* not followed */

	assert_int_equal(gw_disk_usage(dir, &bytes, err, sizeof(err)), 0);
	assert_true(bytes >= 64 * 4096);
	assert_true(bytes < 64 * 4096 + 1024 * 1024);

	assert_true(gw_disk_usage("/nonexistent/lp-du", &bytes, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "/nonexistent/lp-du"));

	unlink(path);
	snprintf(path, sizeof(path), "%s/sub/data", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/sub", dir);
	rmdir(path);
	rmdir(dir);
}

/* ---- stage order ------------------------------------------------------------------ */

static void assert_chain(const long long *got, const long long *want)
{
	int i;

	for (i = 0; i < GW_PLS_N; i++)
		if (got[i] != want[i]) {
			print_error("stage %d: %lld, want %lld\n", i, got[i], want[i]);
			fail();
		}
}

static void test_order(void **state)
{
	/* Already in order: nothing changes. */
	long long a[GW_PLS_N] = { 300, 150, 147, 147, 145, 145 };
	long long a_want[GW_PLS_N] = { 300, 150, 147, 147, 145, 145 };
	/* The snapshot: raw-logs read long before the enricher's
	 * counters (kafka_count 2 beside 1131 enriched), and a producer count
	 * that restarted from 0 below what the table holds. */
	long long b[GW_PLS_N] = { 40, 2, 1131, 1100, 1090, 5000 };
	long long b_want[GW_PLS_N] = { 5000, 5000, 5000, 5000, 5000, 5000 };
	/* Unknown stages stay unknown and do not break the chain. */
	long long c[GW_PLS_N] = { 10, -1, 20, -1, 5, 7 };
	long long c_want[GW_PLS_N] = { 20, -1, 20, -1, 7, 7 };
	long long d[GW_PLS_N] = { -1, -1, -1, -1, -1, -1 };
	long long d_want[GW_PLS_N] = { -1, -1, -1, -1, -1, -1 };

	assert_int_equal(gw_pl_order(a), 0);
	assert_chain(a, a_want);
	assert_int_equal(gw_pl_order(b), (1u << GW_PLS_PRODUCED) | (1u << GW_PLS_RAW) |
						  (1u << GW_PLS_ENRICHER) | (1u << GW_PLS_ENRICHED) |
						  (1u << GW_PLS_CONSUMER));
	assert_chain(b, b_want);
	assert_int_equal(gw_pl_order(c), (1u << GW_PLS_PRODUCED) | (1u << GW_PLS_CONSUMER));
	assert_chain(c, c_want);
	assert_int_equal(gw_pl_order(d), 0);
	assert_chain(d, d_want);
}

/* ---- the control bridge's paths ------------------------------------------------ */

static void test_control_path(void **state)
{
	char out[160];

	assert_true(gw_dashboard_control_path("kafka/stop", out, sizeof(out)));
	assert_string_equal(out, "/control/kafka/stop");
	assert_true(gw_dashboard_control_path("enricher/status", out, sizeof(out)));
	assert_string_equal(out, "/control/enricher/status");
	assert_true(gw_dashboard_control_path("chaos/enable", out, sizeof(out)));
	assert_string_equal(out, "/chaos/enable");
	assert_true(gw_dashboard_control_path("chaos/history", out, sizeof(out)));
	assert_string_equal(out, "/chaos/history");
	assert_true(gw_dashboard_control_path("status", out, sizeof(out)));
	assert_string_equal(out, "/control/status");
	assert_false(gw_dashboard_control_path("kafka", out, sizeof(out)));
	assert_false(gw_dashboard_control_path("kafka/stop/now", out, sizeof(out)));
	assert_false(gw_dashboard_control_path("../etc/passwd", out, sizeof(out)));
	assert_false(gw_dashboard_control_path("kafka/stop?x=1", out, sizeof(out)));
	assert_false(gw_dashboard_control_path("Kafka/stop", out, sizeof(out)));
	assert_false(gw_dashboard_control_path("", out, sizeof(out)));
	assert_false(gw_dashboard_control_path("hostile/status", out, sizeof(out)));
	assert_false(gw_dashboard_control_path("kafka/explode", out, sizeof(out)));
	assert_false(gw_dashboard_control_path("chaos/start", out, sizeof(out)));
	assert_false(gw_dashboard_control_path(NULL, out, sizeof(out)));
}

/* ---- a whole view over fake services ---------------------------------------------- */

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

static void fake_stats(struct lp_http_req *r, void *ud)
{
	lp_http_reply_json(r, 200, json_pack("{s:s, s:i}", "status", "success", "total", 42), NULL);
}

static void fake_gen_status(struct lp_http_req *r, void *ud)
{
	lp_http_reply_json(r, 200,
			   json_pack("{s:b, s:s, s:i, s:i}", "running", 1, "state", "running",
				     "target_rate", 100, "in_flight", 3),
			   NULL);
}

static json_t *get_path(json_t *o, const char *a, const char *b)
{
	json_t *v = json_object_get(o, a);

	return b ? json_object_get(v, b) : v;
}

static void assert_int_at(json_t *o, const char *a, const char *b, long long want)
{
	json_t *v = get_path(o, a, b);

	if (!json_is_integer(v) || json_integer_value(v) != want) {
		char *t = json_dumps(o, JSON_COMPACT);

		print_error("%s.%s: want %lld in %s\n", a, b ? b : "", want, t);
		free(t);
		fail();
	}
}

static void test_view_over_fake_services(void **state)
{
	struct lp_registry *reg = lp_registry_default();
	struct lp_http_opts ho = { 0 };
	struct gw_pipeline_opts o = { 0 };
	struct lp_http_server *srv;
	struct gw_pipeline *p;
	char listen[64], up[64], dead[64], err[256];
	int port, dead_port;
	json_t *j, *e;
	size_t len, i;
	char *text;
	bool generator_error = false, kafka_error = false;

	/* The metrics a producer, enricher and consumer would show (one
	 * process here serves them all). */
	lp_series_add(lp_counter(reg, "kafka_messages_sent_total", "sent"), 100);
	lp_series_set(lp_gauge(reg, "logpipe_spool_events", "spooled"), 5);
	lp_series_add(lp_counter(reg, "log_events_processed_total", "stored"), 90);
	lp_series_add(lp_counter(reg, "enrichment_successes_total", "complete"), 70);
	lp_series_add(lp_counter(reg, "enrichment_partial_total", "partial"), 30);

	port = free_port();
	/* Two free ports in a row may be the same one: the stopped generator
	 * must not be the live fake server. */
	do
		dead_port = free_port();
	while (dead_port == port);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(up, sizeof(up), "http://%s", listen);
	snprintf(dead, sizeof(dead), "http://127.0.0.1:%d", dead_port);
	ho.listen = listen;
	ho.threads = 8;
	ho.service = "fake";
	srv = lp_http_server_new(&ho, err, sizeof(err));
	assert_non_null(srv);
	lp_http_route(srv, "GET", "/api/stats", fake_stats, NULL);
	lp_http_route(srv, "GET", "/api/v1/generator/status", fake_gen_status, NULL);
	assert_int_equal(lp_http_start(srv, err, sizeof(err)), 0);

	o.urls[GW_PL_PRODUCER] = up;
	o.urls[GW_PL_METADATA] = up;
	o.urls[GW_PL_ENRICHER] = up;
	o.urls[GW_PL_CONSUMER] = up;
	o.urls[GW_PL_GENERATOR] = dead; /* a stopped generator */
	o.brokers = "";                 /* no Kafka */
	o.topics[GW_PL_RAW] = "raw-logs";
	o.topics[GW_PL_COMPLETE] = "enriched-logs-complete";
	o.topics[GW_PL_PARTIAL] = "enriched-logs-partial";
	o.topics[GW_PL_DLQ] = "logs-dlq";
	o.groups = "logpipe-enricher=raw-logs,logpipe-consumer=enriched-logs-complete";
	o.kafka_data_dir = "/tmp";
	o.pg_data_dir = "/nonexistent/lp-pg";
	o.sample_ms = 200;
	p = gw_pipeline_start(&o, err, sizeof(err));
	if (!p)
		print_error("gw_pipeline_start: %s\n", err);
	assert_non_null(p);

	/* Wait until the slow thread's row count made it into a sample. */
	for (i = 0; i < 50; i++) {
		text = gw_pipeline_json(p, true, 3000, &len);
		j = lp_json_loadb(text, len, 0, NULL);
		free(text);
		assert_non_null(j);
		if (json_is_integer(json_object_get(j, "stored_count")))
			break;
		json_decref(j);
		j = NULL;
		usleep(100 * 1000);
	}
	assert_non_null(j);
	assert_true(json_is_true(json_object_get(j, "ready")));
	assert_int_at(j, "stored_count", NULL, 42);
	assert_int_at(j, "cassandra_count", NULL, 42);
	assert_int_at(j, "counts", "accepted", 105);
	assert_int_at(j, "counts", "processed", 90);
	assert_int_at(j, "counts", "enriched_complete", 70);
	assert_int_at(j, "counts", "enriched_partial", 30);
	assert_int_at(j, "producer_count", NULL, 105);
	/* Readings already in order: nothing adjusted; when each was read. */
	assert_int_equal(json_object_size(json_object_get(j, "adjusted")), 0);
	assert_true(json_is_string(get_path(j, "read_at", "services")));
	assert_true(json_is_string(get_path(j, "read_at", "stored")));
	assert_true(json_is_null(get_path(j, "read_at", "kafka")));
	assert_true(json_is_null(json_object_get(j, "kafka_count")));
	assert_true(json_is_null(get_path(j, "counts", "generated")));
	assert_true(json_is_null(json_object_get(j, "is_streaming")));
	assert_string_equal(json_string_value(get_path(get_path(j, "services", "producer"), "status",
						       NULL)),
			    "UP");
	assert_string_equal(json_string_value(get_path(get_path(j, "stages", "generator"),
						       "status", NULL)),
			    "UNREACHABLE");
	assert_true(json_integer_value(get_path(j, "disk", "kafka_bytes")) > 0);
	assert_true(json_is_null(get_path(j, "disk", "postgres_bytes")));
	assert_true(json_is_object(json_object_get(j, "history")));
	json_array_foreach(json_object_get(j, "errors"), i, e)
	{
		const char *src = json_string_value(json_object_get(e, "source"));

		generator_error |= src && strcmp(src, "generator") == 0;
		kafka_error |= src && strcmp(src, "kafka") == 0;
	}
	assert_true(generator_error);
	assert_true(kafka_error);
	json_decref(j);

	/* The fake generator comes up: is_streaming turns true. */
	lp_http_server_free(srv);
	gw_pipeline_stop(p);
	o.urls[GW_PL_GENERATOR] = up;
	ho.listen = listen;
	srv = lp_http_server_new(&ho, err, sizeof(err));
	assert_non_null(srv);
	lp_http_route(srv, "GET", "/api/v1/generator/status", fake_gen_status, NULL);
	assert_int_equal(lp_http_start(srv, err, sizeof(err)), 0);
	p = gw_pipeline_start(&o, err, sizeof(err));
	assert_non_null(p);
	text = gw_pipeline_json(p, false, 3000, &len);
	j = lp_json_loadb(text, len, 0, NULL);
	free(text);
	if (!json_is_true(json_object_get(j, "is_streaming"))) {
		text = json_dumps(json_object_get(j, "errors"), JSON_COMPACT);
		print_error("is_streaming not true; errors: %s\n", text);
		free(text);
		fail();
	}
	assert_int_at(json_object_get(j, "stages"), "generator", "backlog", 3);
	json_decref(j);
	gw_pipeline_stop(p);
	lp_http_server_free(srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prom_sum),
		cmocka_unit_test(test_rate),
		cmocka_unit_test(test_order),
		cmocka_unit_test(test_disk_usage),
		cmocka_unit_test(test_control_path),
		cmocka_unit_test(test_view_over_fake_services),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
