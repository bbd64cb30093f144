/* generator.c - the load generator's REST API, its Kafka sink and its
 * share of the global rate.
 *
 * POST /api/v1/generator/start   (also POST /start, seed 004)
 *      optional JSON {rate, size_bytes | size_kb, threads, batch_size,
 *      duration_s}; no body runs the configured defaults.  When a run is
 *      going it is stopped and replaced ("restarted"), so a dashboard can
 *      change the rate with one call.
 * POST /api/v1/generator/stop    (also POST /stop)
 * GET  /api/v1/generator/status  running, target and achieved rate, totals
 * GET  /api/v1/generator/catalog the hosts and services events come from,
 *      with the metadata metadata-svc should hold for them
 *
 * Events go straight to the raw topic, keyed by service, through the
 * producer (acks=all; idempotent only with kafka.idempotence), a batch at
 * a time through one lp_kbatch (one handle reference, topic object and delivery record per
 * batch); an event counts as sent only when its delivery report says the
 * broker has it.  While Kafka is down events
 * wait in librdkafka's bounded queue (kafka.queue_max, up to
 * kafka.timeout_ms each) and flow when it returns; once the queue is full
 * or the breaker "kafka" has opened on failed batches, the batches due are
 * shed and counted in log_events_rate_limited_total instead.
 *
 * Runs (run.c) are replaced, never reused: a stopped run stays readable
 * for /status until the next start, and is freed once its last delivery
 * report has come in, because the reports point at it. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "content.h"
#include "generator.h"
#include "params.h"
#include "registry.h"
#include "run.h"
#include "logpipe/breaker.h"
#include "logpipe/http.h"
#include "logpipe/kafka.h"
#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/redis.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

#define OPT(key, type, def, field, help, lo, hi) \
	{ key, type, def, offsetof(struct generator_settings, field), help, lo, hi }

const struct lp_cfg_opt generator_options[] = {
	OPT("http.listen", LP_CFG_STR, "8085", http_listen, "address:port or port to serve HTTP on", 0, 0),
	OPT("http.threads", LP_CFG_INT, "8", http_threads, "HTTP worker threads", 1, 1024),
	OPT("http.front", LP_CFG_STR, "events", http_front, "events: an event loop front takes the connections (slow clients hold no thread) and passes requests to CivetWeb behind it; civetweb: CivetWeb threads serve everything", 0, 0),
	OPT("http.event_loops", LP_CFG_INT, "1", http_loops, "event loop threads of the events front; 0: one per CPU, at most 8", 0, 8),
	OPT("log.level", LP_CFG_STR, "info", log_level, "debug, info, warn or error", 0, 0),
	OPT("kafka.brokers", LP_CFG_STR, "127.0.0.1:9092", kafka_brokers, "Kafka bootstrap servers", 0, 0),
	OPT("topics.raw", LP_CFG_STR, "raw-logs", topic_raw, "topic generated events are written to", 0, 0),
	OPT("kafka.timeout_ms", LP_CFG_INT, "120000", kafka_timeout_ms, "how long an event may wait for Kafka before it counts as an error", 1000, 3600000),
	OPT("kafka.queue_max", LP_CFG_INT, "100000", kafka_queue_max, "events queued for Kafka before batches are shed", 1000, 10000000),
	OPT("kafka.compression", LP_CFG_STR, "none", kafka_compression, "compression of produced batches: none, lz4, snappy, zstd or gzip; none (lz4 before 2026-12-07) as the producer's and the enricher's: on one machine lz4 cost the pipeline about 10 % more CPU per event, the broker and the enricher decompressing (docs/benchmarks.md)", 0, 0),
	OPT("kafka.linger_ms", LP_CFG_INT, "50", kafka_linger_ms, "how long librdkafka lets a batch fill before sending it (linger.ms); shorter makes librdkafka's broker thread spin at a paced rate once the broker is slow to answer (docs/benchmarks.md)", 0, 1000),
	OPT("kafka.idempotence", LP_CFG_BOOL, "false", kafka_idempotence, "idempotent producer (librdkafka enable.idempotence); on, librdkafka 2.0.2's broker thread spins while a due batch waits for its partition's last request (it sends nothing more for a partition with five or more messages in flight; a slow broker: 27-43 us of CPU per event instead of 6-8, docs/benchmarks.md); off, a retried request may put an event into Kafka twice (stored once: the consumer skips ids it has)", 0, 0),
	OPT("redis.url", LP_CFG_STR, "redis://127.0.0.1:6379", redis_url, "Redis where running instances register to share the rate", 0, 0),
	OPT("generator.instance_id", LP_CFG_STR, NULL, instance_id, "this instance's name (default: generator-HOST-PORT)", 0, 0),
	OPT("generator.rate", LP_CFG_DOUBLE, "1000", rate, "default events per second, shared by all running instances", 0, 0),
	OPT("generator.threads", LP_CFG_INT, "4", threads, "default worker threads", 1, GEN_THREADS_MAX),
	OPT("generator.batch_size", LP_CFG_INT, "10", batch_size, "default events per batch", 1, GEN_BATCH_MAX),
	OPT("generator.size_bytes", LP_CFG_INT, "256", size_bytes, "default size of one serialised event in bytes", GEN_SIZE_MIN, GEN_SIZE_MAX),
	OPT("generator.duration_s", LP_CFG_DOUBLE, "0", duration_s, "default run length in seconds; 0 runs until stopped", 0, 0),
	OPT("generator.autostart", LP_CFG_BOOL, "false", autostart, "start generating with the defaults at launch", 0, 0),
	OPT("generator.registry_key", LP_CFG_STR, "logpipe:generator:instances", registry_key, "Redis sorted set of the running instances that share the rate", 0, 0),
	OPT("generator.instance_ttl_ms", LP_CFG_INT, "3000", instance_ttl_ms, "an instance counts this long after its last heartbeat (beats every third of it)", 300, 600000),
	OPT("generator.stop_wait_ms", LP_CFG_INT, "5000", stop_wait_ms, "how long a stop waits for outstanding deliveries before answering", 0, 600000),
	LP_CFG_END,
};

/* How long a send waits for room in librdkafka's queue before shedding.
 * At full speed the queue is full all the time and room comes in bursts,
 * as acknowledgements free whole batches; on a busy machine a burst can
 * be a few hundred ms away.  Shedding after 100 ms, as the first version
 * did, counted such waits as failed batches and opened the breaker, which
 * then stopped the run for 5 s (docs/benchmarks.md, "Generator"); a full
 * second is waited only when Kafka is really not taking events. */
#define SEND_BLOCK_MS 1000

struct generator {
	const struct generator_settings *s; /* settings, owned by main */
	struct gen_params defaults;         /* what a start without fields runs */
	char instance_id[128];              /* this instance's name */
	struct lp_kproducer *kp;            /* Kafka producer (acks=all) */
	struct lp_breaker *kbreaker;        /* trips on failed batches */
	struct lp_breaker *rbreaker;        /* trips on Redis failures */
	struct lp_redis *redis;             /* the registry's connection */
	struct gen_registry *registry;      /* running instances */
	struct lp_http_server *http;        /* the REST API */
	struct gen_metrics metrics;         /* process-wide series */
	struct lp_series *instances_gauge;  /* generator_instances */

	pthread_mutex_t ctl_mu;             /* serialises start and stop */
	pthread_mutex_t mu;                 /* guards the two fields below */
	struct gen_run *cur;                /* the current or last run, or NULL */
	struct gen_run **retired;           /* replaced runs awaiting deliveries */
	size_t nretired;
};

/* ---- the Kafka sink ---------------------------------------------------- */

static bool sink_allow(void *ud)
{
	struct generator *g = ud;

	return lp_breaker_allow(g->kbreaker);
}

static void delivered(void *opaque, rd_kafka_resp_err_t err, int32_t partition, int64_t offset)
{
	gen_run_delivered(opaque, err == RD_KAFKA_RESP_ERR_NO_ERROR);
}

static int sink_send(void *ud, const char *key, size_t keylen, const char *val, size_t vallen,
		     void *token)
{
	struct generator *g = ud;

	return lp_kproducer_send(g->kp, g->s->topic_raw, key, keylen, val, vallen, NULL,
				 SEND_BLOCK_MS, delivered, token);
}

/* A batch through one lp_kbatch: one handle reference, topic lookup and
 * delivery record for the whole batch instead of one per event. */
static void *sink_open(void *ud, void *token)
{
	struct generator *g = ud;
	struct lp_kbatch *kb = lp_xmalloc(sizeof(*kb));

	/* A failed begin is retried by each send, which then reports. */
	(void)lp_kbatch_begin(kb, g->kp, g->s->topic_raw, delivered, token);
	return kb;
}

static int sink_send_open(void *state, const char *key, size_t keylen, const char *val,
			  size_t vallen)
{
	return lp_kbatch_send(state, key, keylen, val, vallen, SEND_BLOCK_MS);
}

static void sink_close(void *state)
{
	lp_kbatch_end(state);
	free(state);
}

static void sink_batch_done(void *ud, bool ok, int64_t elapsed_ms)
{
	struct generator *g = ud;

	lp_breaker_record(g->kbreaker, ok, elapsed_ms);
}

/* A run has ended: its share goes to the others at their next beat. */
static void sink_finished(void *ud)
{
	struct generator *g = ud;

	gen_registry_leave(g->registry);
}

static int sink_peers(void *ud)
{
	struct generator *g = ud;
	int n = gen_registry_beat(g->registry);

	lp_series_set(g->instances_gauge, n);
	return n;
}

/* ---- runs -------------------------------------------------------------- */

/* Frees the retired runs whose deliveries are all in.  Caller holds mu. */
static void reap_locked(struct generator *g)
{
	size_t i = 0;

	while (i < g->nretired) {
		if (!gen_run_idle(g->retired[i])) {
			i++;
			continue;
		}
		gen_run_free(g->retired[i]);
		g->retired[i] = g->retired[--g->nretired];
	}
}

/* Replaces the current run by a new one with params p.  Caller holds
 * ctl_mu.  Returns 0 and sets *restarted, or -EIO with err. */
static int run_replace(struct generator *g, const struct gen_params *p, bool *restarted,
		       char *err, size_t errlen)
{
	struct gen_run_opts o = { 0 };
	struct gen_run_stats st;
	struct gen_run *old = g->cur, *run;

	*restarted = false;
	if (old) {
		gen_run_stats(old, &st);
		*restarted = st.state == GEN_RUN_RUNNING;
		gen_run_stop(old);
	}
	o.params = *p;
	o.instance_id = g->instance_id;
	o.sink.allow = sink_allow;
	o.sink.send = sink_send;
	o.sink.open = sink_open;
	o.sink.send_open = sink_send_open;
	o.sink.close = sink_close;
	o.sink.batch_done = sink_batch_done;
	o.sink.peers = sink_peers;
	o.sink.finished = sink_finished;
	o.sink.ud = g;
	o.metrics = &g->metrics;
	o.heartbeat_ms = g->s->instance_ttl_ms / 3;
	run = gen_run_start(&o, err, errlen);
	pthread_mutex_lock(&g->mu);
	if (old) {
		g->retired = lp_xrealloc(g->retired, (g->nretired + 1) * sizeof(*g->retired));
		g->retired[g->nretired++] = old;
	}
	g->cur = run;
	reap_locked(g);
	pthread_mutex_unlock(&g->mu);
	if (!run)
		return -EIO;
	lp_log_kv(LP_LOG_INFO, (const char *const[]){ "instance", g->instance_id, NULL },
		  "%s: %.10g events/s across %d instance(s), %lld bytes, %d threads, batch %d, "
		  "duration %.10g s (0: until stopped)",
		  *restarted ? "restarted" : "started", p->rate,
		  gen_registry_count(g->registry, NULL), p->size_bytes, p->threads, p->batch_size,
		  p->duration_s);
	return 0;
}

/* Stops the current run and waits (bounded) for its deliveries.  Caller
 * holds ctl_mu.  Returns false when no run was going. */
static bool run_stop(struct generator *g)
{
	struct gen_run_stats st;
	struct gen_run *run = g->cur;

	if (!run)
		return false;
	gen_run_stats(run, &st);
	gen_run_stop(run);
	if (!gen_run_drain(run, (int)g->s->stop_wait_ms))
		lp_warn("stopped with deliveries still outstanding");
	return st.state == GEN_RUN_RUNNING;
}

/* ---- JSON -------------------------------------------------------------- */

/* Reals in the replies: rounded to one decimal (rates, durations) and
 * printed with 15 significant digits, so that 81.9 reads "81.9" and not
 * jansson's default 17-digit "81.900000000000006". */
#define JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

/* A number as JSON, to one decimal: an integer when it is one, so that 1000
 * reads "1000" and not "1000.0". */
static json_t *number(double v)
{
	v = round(v * 10.0) / 10.0;
	if (v == floor(v) && fabs(v) < 9e15)
		return json_integer((json_int_t)v);
	return json_real(v);
}

/* Replies with body (json_decref'd) printed with JSON_FLAGS. */
static void reply_json(struct lp_http_req *r, int status, json_t *body)
{
	char *text = body ? json_dumps(body, JSON_FLAGS) : NULL;

	json_decref(body);
	if (!text) {
		lp_http_reply_error(r, 500, "internal", NULL, "cannot serialise the answer");
		return;
	}
	lp_http_reply(r, status, "application/json", text, strlen(text), NULL);
	free(text);
}

/* A measured rate, to the whole event per second. */
static json_t *rate(double v)
{
	return json_integer((json_int_t)llround(v));
}

static json_t *time_or_null(int64_t ms)
{
	char ts[32];

	if (ms <= 0)
		return json_null();
	lp_rfc3339(ms, ts);
	return json_string(ts);
}

/* The status object of /status and of the start and stop answers. */
static json_t *status_json(struct generator *g)
{
	struct gen_run_stats st = { 0 };
	const char *state = "idle";
	bool reachable, have;
	int instances = gen_registry_count(g->registry, &reachable);

	pthread_mutex_lock(&g->mu);
	have = g->cur != NULL;
	if (have)
		gen_run_stats(g->cur, &st);
	reap_locked(g);
	pthread_mutex_unlock(&g->mu);
	if (have) {
		state = gen_run_state_name(st.state);
		instances = st.instances;
	} else {
		st.params = g->defaults;
		st.instance_rate = g->defaults.rate;
	}
	return json_pack("{s:b, s:s, s:s, s:o, s:o, s:i, s:o, s:o, s:I, s:I, s:I, s:I, s:I,"
			 " s:i, s:i, s:i, s:I, s:o, s:o, s:o, s:I, s:s, s:s, s:s}",
			 "running", st.state == GEN_RUN_RUNNING && have,
			 "state", state,
			 "instance_id", g->instance_id,
			 "target_rate", number(st.params.rate),
			 "instance_rate", rate(st.instance_rate),
			 "instances", instances,
			 "achieved_rate", rate(st.achieved_rate),
			 "average_rate", rate(st.average_rate),
			 "generated", (json_int_t)st.generated,
			 "sent", (json_int_t)st.sent,
			 "errors", (json_int_t)st.errors,
			 "rate_limited", (json_int_t)st.rate_limited,
			 "in_flight", (json_int_t)st.in_flight,
			 "threads", st.params.threads,
			 "batch_size", st.params.batch_size,
			 "effective_batch_size", have ? st.effective_batch : st.params.batch_size,
			 "size_bytes", (json_int_t)st.params.size_bytes,
			 "duration_s", number(st.params.duration_s),
			 "started_at", time_or_null(st.started_at_ms),
			 "stopped_at", time_or_null(st.ended_at_ms),
			 "elapsed_ms", (json_int_t)llround(st.elapsed_s * 1000),
			 "topic", g->s->topic_raw,
			 "kafka", lp_breaker_state_name(lp_breaker_state(g->kbreaker)),
			 "redis", reachable ? "ok" : "unreachable");
}

/* Replies {"status": word, "message": ..., "generator": status}. */
static void reply_action(struct generator *g, struct lp_http_req *r, const char *word,
			 const char *message)
{
	reply_json(r, 200,
		   json_pack("{s:s, s:s, s:o}", "status", word, "message", message, "generator",
			     status_json(g)));
}

/* ---- handlers ---------------------------------------------------------- */

/* Query parameters a form may send instead of a JSON body. */
static const char *const query_fields[] = { "rate", "size_bytes", "size_kb", "threads",
					    "batch_size", "duration_s" };

/* Reads the run's settings from the body, or else the query string.
 * Returns 0, or -EINVAL after replying 400. */
static int read_params(struct generator *g, struct lp_http_req *r, struct gen_params *p)
{
	struct gen_param_error e;
	json_t *obj = NULL;
	char val[64];
	size_t i;
	int rc;

	*p = g->defaults;
	if (r->body_len == 0 && r->query) {
		obj = json_object();
		for (i = 0; i < LP_ARRAY_SIZE(query_fields); i++)
			if (lp_http_query(r, query_fields[i], val, sizeof(val)) >= 0)
				json_object_set_new(obj, query_fields[i], json_string(val));
		rc = gen_params_apply(p, obj, &e);
		json_decref(obj);
	} else {
		rc = gen_params_parse(p, r->body, r->body_len, &e);
	}
	if (rc == 0)
		return 0;
	lp_http_reply_json(r, 400,
			   json_pack("{s:s, s:{s:s, s:s, s:s}}", "status", "error", "error", "code",
				     e.code, "field", e.field, "message", e.message),
			   NULL);
	return -EINVAL;
}

static void handle_start(struct lp_http_req *r, void *ud)
{
	struct generator *g = ud;
	struct gen_params p;
	bool restarted;
	char err[200], msg[256];
	int rc;

	if (read_params(g, r, &p) < 0)
		return;
	pthread_mutex_lock(&g->ctl_mu);
	rc = run_replace(g, &p, &restarted, err, sizeof(err));
	pthread_mutex_unlock(&g->ctl_mu);
	if (rc < 0) {
		lp_http_reply_error(r, 500, "start_failed", NULL, "cannot start: %s", err);
		return;
	}
	snprintf(msg, sizeof(msg), "%s generating %.10g events/s of %lld bytes%s",
		 restarted ? "stopped the previous run and restarted," : "started", p.rate,
		 p.size_bytes, p.duration_s > 0 ? " for a limited duration" : " until stopped");
	reply_action(g, r, restarted ? "restarted" : "started", msg);
}

static void handle_stop(struct lp_http_req *r, void *ud)
{
	struct generator *g = ud;
	bool was_running;

	pthread_mutex_lock(&g->ctl_mu);
	was_running = run_stop(g);
	pthread_mutex_unlock(&g->ctl_mu);
	reply_action(g, r, was_running ? "stopped" : "not_running",
		     was_running ? "generation stopped" : "no generation was running");
}

static void handle_status(struct lp_http_req *r, void *ud)
{
	reply_json(r, 200, status_json(ud));
}

/* The catalogue: hosts and services as metadata-svc's POST bodies, and
 * which hosts each service runs on. */
static json_t *catalog_json(void)
{
	json_t *hosts = json_array(), *services = json_array(), *placement = json_object();
	json_t *names;
	size_t i, j;

	for (i = 0; i < gen_nhosts; i++)
		json_array_append_new(hosts,
				      json_pack("{s:s, s:s, s:s, s:s, s:s}", "hostname",
						gen_hosts[i].name, "ipAddress", gen_hosts[i].ip,
						"datacenter", gen_hosts[i].datacenter, "environment",
						gen_hosts[i].environment, "costCenter",
						gen_hosts[i].cost_center));
	for (i = 0; i < gen_nservices; i++) {
		const struct gen_service *s = &gen_services[i];

		json_array_append_new(services, json_pack("{s:s, s:s, s:s, s:s}", "name", s->name,
							  "team", s->team, "owner", s->owner,
							  "tier", s->tier));
		names = json_array();
		for (j = 0; j < s->nhosts; j++)
			json_array_append_new(names, json_string(gen_hosts[s->hosts[j]].name));
		json_object_set_new(placement, s->name, names);
	}
	return json_pack("{s:o, s:o, s:o}", "hosts", hosts, "services", services, "placement",
			 placement);
}

static void handle_catalog(struct lp_http_req *r, void *ud)
{
	lp_http_reply_json(r, 200, catalog_json(), NULL);
}

/* ---- health ------------------------------------------------------------ */

/* Ready while the broker answers metadata and the breaker is not open. */
static bool kafka_check(void *ud, char *detail, size_t len)
{
	struct generator *g = ud;
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t e;

	e = rd_kafka_metadata(lp_kproducer_handle(g->kp), 0, NULL, &md, 1000);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(detail, len, "broker does not answer: %s", rd_kafka_err2str(e));
		return false;
	}
	snprintf(detail, len, "%d brokers, %d events queued", md->broker_cnt,
		 lp_kproducer_outq(g->kp));
	rd_kafka_metadata_destroy(md);
	return lp_breaker_state(g->kbreaker) != LP_BREAKER_OPEN;
}

/* Not required: without Redis each instance keeps its last share. */
static bool redis_check(void *ud, char *detail, size_t len)
{
	struct generator *g = ud;
	int n = gen_registry_count(g->registry, NULL);

	if (lp_redis_ping(g->redis) < 0) {
		snprintf(detail, len, "unreachable; keeping the share of %d instance(s)", n);
		return false;
	}
	snprintf(detail, len, "%d instance(s) sharing the rate", n);
	return true;
}

/* ---- life cycle -------------------------------------------------------- */

/* "generator-HOST-PORT" from the host name and the listening port. */
static void default_instance_id(char *out, size_t len, const char *listen)
{
	char host[64] = "localhost";
	const char *port = strrchr(listen, ':');

	gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	port = port ? port + 1 : listen;
	snprintf(out, len, "generator-%s-%.*s", host, (int)strspn(port, "0123456789"), port);
}

static void metrics_init(struct generator *g)
{
	struct lp_registry *reg = lp_registry_default();

	g->metrics.generated = lp_counter(reg, "log_events_generated_total",
					  "Events generated and handed to Kafka");
	g->metrics.rate_limited = lp_counter(reg, "log_events_rate_limited_total",
					     "Events shed because Kafka could not take them "
					     "(queue full or breaker open)");
	g->metrics.sent = lp_counter(reg, "kafka_messages_sent_total",
				     "Messages acknowledged by Kafka");
	g->metrics.errors = lp_counter(reg, "log_events_errors_total",
				       "Events Kafka did not acknowledge");
	g->metrics.rate_current = lp_gauge(reg, "log_generation_rate_current",
					   "Events per second this instance generated over the last 5 s");
	g->metrics.rate_target = lp_gauge(reg, "log_generation_rate_target",
				   "Events per second asked of all instances together (0 when stopped)");
	g->instances_gauge = lp_gauge(reg, "generator_instances",
				      "Running generator instances sharing the rate, as last known");
}

struct generator *generator_start(const struct generator_settings *s, char *err, size_t errlen)
{
	struct generator *g = lp_xcalloc(1, sizeof(*g));
	struct gen_param_error pe;
	struct lp_http_opts ho = { 0 };
	char timeout[32], queue[32], linger[32];
	const char *props[] = { "message.timeout.ms", timeout,
				"queue.buffering.max.messages", queue,
				/* Large events fill memory before the count does. */
				"queue.buffering.max.kbytes", "262144",
				"compression.type", s->kafka_compression,
				"linger.ms", linger,
				"enable.idempotence", s->kafka_idempotence ? "true" : "false",
				/* Find a returning broker within a second, so that
				 * what waited in the queue flows soon after. */
				"reconnect.backoff.max.ms", "1000",
				NULL };
	bool restarted;

	g->s = s;
	pthread_mutex_init(&g->ctl_mu, NULL);
	pthread_mutex_init(&g->mu, NULL);
	g->defaults.rate = s->rate;
	g->defaults.size_bytes = s->size_bytes;
	g->defaults.threads = (int)s->threads;
	g->defaults.batch_size = (int)s->batch_size;
	g->defaults.duration_s = s->duration_s;
	if (gen_params_check(&g->defaults, &pe) < 0) {
		snprintf(err, errlen, "generator.%s: %s", pe.field, pe.message);
		goto fail;
	}
	if (s->instance_id && *s->instance_id)
		lp_strlcpy(g->instance_id, s->instance_id, sizeof(g->instance_id));
	else
		default_instance_id(g->instance_id, sizeof(g->instance_id), s->http_listen);
	metrics_init(g);
	g->kbreaker = lp_breaker_new("kafka", NULL);
	g->rbreaker = lp_breaker_new("redis", NULL);

	snprintf(timeout, sizeof(timeout), "%lld", s->kafka_timeout_ms);
	snprintf(queue, sizeof(queue), "%lld", s->kafka_queue_max);
	snprintf(linger, sizeof(linger), "%lld", s->kafka_linger_ms);
	g->kp = lp_kproducer_new(s->kafka_brokers, props, err, errlen);
	if (!g->kp)
		goto fail;
	g->redis = lp_redis_new(s->redis_url, 500, g->rbreaker);
	if (!g->redis) {
		snprintf(err, errlen, "redis.url: cannot use \"%s\"", s->redis_url);
		goto fail;
	}
	g->registry = gen_registry_new(g->redis, s->registry_key, g->instance_id,
				       s->instance_ttl_ms);

	ho.listen = s->http_listen;
	ho.threads = (int)s->http_threads;
	ho.front = s->http_front;
	ho.front_loops = (int)s->http_loops;
	ho.max_body = 65536;
	ho.service = "generator";
	g->http = lp_http_server_new(&ho, err, errlen);
	if (!g->http)
		goto fail;
	lp_http_route(g->http, "POST", "/api/v1/generator/start", handle_start, g);
	lp_http_route(g->http, "POST", "/api/v1/generator/stop", handle_stop, g);
	lp_http_route(g->http, "GET", "/api/v1/generator/status", handle_status, g);
	lp_http_route(g->http, "GET", "/api/v1/generator/catalog", handle_catalog, g);
	lp_http_route(g->http, "POST", "/start", handle_start, g);
	lp_http_route(g->http, "POST", "/stop", handle_stop, g);
	lp_http_health(g->http, "kafka", true, kafka_check, g, g->kbreaker);
	lp_http_health(g->http, "redis", false, redis_check, g, g->rbreaker);
	if (lp_http_start(g->http, err, errlen) < 0)
		goto fail;
	if (s->autostart) {
		pthread_mutex_lock(&g->ctl_mu);
		if (run_replace(g, &g->defaults, &restarted, err, errlen) < 0) {
			pthread_mutex_unlock(&g->ctl_mu);
			goto fail;
		}
		pthread_mutex_unlock(&g->ctl_mu);
	}
	return g;
fail:
	generator_stop(g);
	return NULL;
}

void generator_stop(struct generator *g)
{
	size_t i;
	int left;

	if (!g)
		return;
	/* No new requests, then no new events, then flush what is queued. */
	lp_http_server_free(g->http);
	if (g->registry) {
		pthread_mutex_lock(&g->ctl_mu);
		run_stop(g);
		pthread_mutex_unlock(&g->ctl_mu);
	}
	if (g->kp) {
		left = lp_kproducer_free(g->kp, 10000);
		if (left > 0)
			lp_error("%d generated events were not delivered at shutdown", left);
	}
	/* No delivery report can come any more: every run may go. */
	gen_run_free(g->cur);
	for (i = 0; i < g->nretired; i++)
		gen_run_free(g->retired[i]);
	free(g->retired);
	gen_registry_free(g->registry);
	lp_redis_free(g->redis);
	lp_breaker_free(g->kbreaker);
	lp_breaker_free(g->rbreaker);
	pthread_mutex_destroy(&g->ctl_mu);
	pthread_mutex_destroy(&g->mu);
	free(g);
}
