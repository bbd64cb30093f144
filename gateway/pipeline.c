/* pipeline.c - the pipeline view: background sampling of every stage and
 * the JSON snapshot behind GET /api/v1/pipeline.
 *
 * Design (see pipeline.h for the contract).  Reading a stage can be slow
 * or hang (a stopped broker makes librdkafka wait for its timeout, a big
 * table makes the row count take seconds), so nothing is read on the
 * request path: three threads each own a kind of source and publish what
 * they read under the one mutex, and the sampler composes the snapshot.
 *
 *   sampler  HTTP sources, all requests of a round at once on one curl
 *            multi handle (timeouts shorter than the sample interval, so a
 *            hung service costs one interval at most); then it composes.
 *   kafka    one librdkafka producer handle (it never produces: it only
 *            asks for metadata and watermarks).  The end offset of a topic
 *            is the sum of its partitions' high watermarks: every message
 *            ever written, whoever wrote it, across restarts.  It reads
 *            when the sampler starts a round, while the HTTP requests of
 *            that round are out, and the sampler waits for it (bounded), so
 *            the offsets and the services' counters of one snapshot are
 *            read at the same moment, not up to a sample interval apart.
 *   slow     GET /api/stats?from=1970-01-01T00:00:00Z from the consumer
 *            (all rows, every tenant: no X-Tenant-ID is sent) and the du
 *            walk of the two data directories.
 *
 * A stop flag is checked by every wait (curl's progress callback included),
 * so gw_pipeline_stop returns within about a second.
 *
 * Samples go into a ring sized for five minutes; rates are computed from
 * the ring when the snapshot is composed.  The snapshot is kept serialised:
 * the handler copies a string.
 *
 * What a snapshot shows must read as one moment of one pipeline.  Each
 * group of figures says when it was read ("read_at"), and the stage counts
 * are put in pipeline order (gw_pl_order): a stage never shows fewer events
 * than one after it.  Readings still differ by milliseconds (the row count
 * by seconds), and the services' counters start from 0 when a process
 * restarts while the topics and the table keep everything, so a raw
 * reading can be behind a later stage's; every count is a lower bound of
 * what passed its stage, and the larger later count is the better one.
 * The readings that were raised are listed in "adjusted".  Reals are
 * rounded to one decimal and printed with JSON_FLAGS, so that 81.9 reads
 * "81.9" and not jansson's 17-digit "81.900000000000006". */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "logpipe/buf.h"
#include "logpipe/json.h"
#include "logpipe/log.h"
#include "logpipe/util.h"
#include "backpressure.h"
#include "pipeline.h"

#include "logpipe/banned.h"

#define RING_SPAN_MS (5 * 60 * 1000) /* history kept for the chart */
#define RATE_WINDOW_MS 60000         /* "rates" */
#define RATE_NOW_MS 10000            /* "rates_10s" */
#define DISK_EVERY_MS 10000          /* du walks at most this often */
#define STATS_TIMEOUT_MS 15000       /* the row count may be slow */
#define MAX_BODY (4 << 20)           /* larger answers are cut (metrics stay small) */
#define ERR_LEN 200
/* Reals printed with 15 significant digits: a value rounded to one decimal
 * prints as that decimal (17 digits show the binary approximation). */
#define JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

static const char *const service_names[GW_PL_NSERVICES] = { "producer", "metadata", "enricher",
							     "consumer", "generator" };
static const char *const topic_roles[GW_PL_NTOPICS] = { "raw", "complete", "partial", "dlq" };

/* The HTTP requests of one sampler round. */
enum fetch_kind { F_METRICS, F_HEALTH, F_GENSTATUS };

struct fetch {
	enum gw_pl_service svc;     /* whose */
	enum fetch_kind kind;       /* what */
	const char *path;           /* request path */
	CURL *h;                    /* easy handle, kept between rounds */
	struct lp_buf body;         /* answer of the last round */
	long status;                /* HTTP status, 0 when the request failed */
	char error[CURL_ERROR_SIZE]; /* curl's message when it failed */
};

static const struct {
	enum gw_pl_service svc;
	enum fetch_kind kind;
	const char *path;
} fetch_table[] = {
	{ GW_PL_PRODUCER, F_METRICS, "/metrics" },  { GW_PL_PRODUCER, F_HEALTH, "/health" },
	{ GW_PL_METADATA, F_HEALTH, "/health" },    { GW_PL_ENRICHER, F_METRICS, "/metrics" },
	{ GW_PL_ENRICHER, F_HEALTH, "/health" },    { GW_PL_CONSUMER, F_METRICS, "/metrics" },
	{ GW_PL_CONSUMER, F_HEALTH, "/health" },    { GW_PL_GENERATOR, F_METRICS, "/metrics" },
	{ GW_PL_GENERATOR, F_HEALTH, "/health" },
	{ GW_PL_GENERATOR, F_GENSTATUS, "/api/v1/generator/status" },
};
#define NFETCH (sizeof(fetch_table) / sizeof(fetch_table[0]))

/* What the kafka thread read last. */
struct kafka_read {
	long long end[GW_PL_NTOPICS];  /* end offsets, -1 unknown */
	int parts[GW_PL_NTOPICS];      /* partition counts, -1 unknown */
	char error[ERR_LEN];           /* "" when the last read was complete */
	uint64_t round;                /* the sampler round it was read for */
	int64_t read_ms;               /* wall clock when it was read, 0 never */
};

/* What the slow thread read last. */
struct slow_read {
	long long rows;                /* stored rows, -1 unknown */
	int64_t rows_ms;               /* wall clock when rows was read, 0 unknown */
	char rows_error[ERR_LEN];
	long long disk[2];             /* kafka, postgres bytes; -1 unknown */
	char disk_error[2][ERR_LEN];
};

/* A consumer group and which stage its lag sits before. */
struct lag_group {
	char name[96];
	const char *stage;             /* "enricher", "consumer" or NULL */
};

struct gw_pipeline {
	/* settings (copied) */
	char *urls[GW_PL_NSERVICES];
	char *brokers;
	char *topics[GW_PL_NTOPICS];
	char *dirs[2];                 /* kafka, postgres data dirs; NULL = not shown */
	int sample_ms;
	void (*lag)(void *ud, struct gw_bp_snapshot *out);
	void *lag_ud;
	struct lag_group groups[GW_BP_MAX_GROUPS];
	size_t ngroups;

	/* threads */
	pthread_t sampler, kafka, slow;
	bool sampler_started, kafka_started, slow_started;
	atomic_bool stop;              /* set by gw_pipeline_stop */

	/* sampler-owned */
	CURLM *multi;
	struct fetch fetches[NFETCH];
	rd_kafka_t *rk;                /* kafka-thread-owned after start */

	/* shared, under mu */
	pthread_mutex_t mu;
	pthread_cond_t first_cv;       /* signalled when the first snapshot is published */
	pthread_cond_t round_cv;       /* kafka_round or kread changed */
	uint64_t kafka_round;          /* the round the sampler wants offsets for */
	struct kafka_read kread;
	struct slow_read sread;
	struct gw_pl_sample *ring;     /* samples, ring of cap entries */
	size_t cap, count, head;       /* head: index of the next write */
	char *json;                    /* the published snapshot (owned) */
	size_t json_len;
};

/* ---- pure helpers -------------------------------------------------------- */

int gw_prom_sum(const char *text, const char *name, double *sum)
{
	size_t nlen = strlen(name);
	const char *line = text;
	int found = 0;

	*sum = 0;
	while (line && *line) {
		const char *eol = strchr(line, '\n');
		const char *p = line + nlen;

		if (*line != '#' && strncmp(line, name, nlen) == 0 && (*p == '{' || *p == ' ')) {
			if (*p == '{') {
				bool quoted = false;

				/* Skip the label set; values may hold '}' inside quotes. */
				for (p++; *p && *p != '\n'; p++) {
					if (quoted && *p == '\\' && p[1])
						p++;
					else if (*p == '"')
						quoted = !quoted;
					else if (!quoted && *p == '}')
						break;
				}
				if (*p == '}')
					p++;
			}
			if (*p == ' ') {
				char *end;
				double v = strtod(p, &end);

				if (end != p && !isnan(v)) {
					*sum += v;
					found++;
				}
			}
		}
		line = eol ? eol + 1 : NULL;
	}
	return found;
}

/* Adds the blocks used under the directory fd (closed here). */
static void walk_dir(int fd, int depth, long long *bytes)
{
	DIR *d = fdopendir(fd);
	struct dirent *e;
	struct stat st;

	if (!d) {
		close(fd);
		return;
	}
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* gone meanwhile (Kafka deletes segments) or unreadable */
		*bytes += (long long)st.st_blocks * 512;
		if (S_ISDIR(st.st_mode) && depth < 32) {
			int sub = openat(dirfd(d), e->d_name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (sub >= 0)
				walk_dir(sub, depth + 1, bytes);
		}
	}
	closedir(d);
}

int gw_disk_usage(const char *dir, long long *bytes, char *err, size_t errlen)
{
	struct stat st;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0) {
		int e = errno;

		snprintf(err, errlen, "cannot read \"%s\": %s", dir, strerror(e));
		if (fd >= 0)
			close(fd);
		return -e;
	}
	*bytes = (long long)st.st_blocks * 512;
	walk_dir(fd, 0, bytes);
	return 0;
}

bool gw_pl_rate(const struct gw_pl_sample *s, size_t n, int k, int64_t window_ms, double *rate)
{
	long long sum = 0;
	int64_t span = 0;
	size_t i;
	int steps = 0;

	if (n < 2)
		return false;
	for (i = n - 1; i > 0; i--) {
		const struct gw_pl_sample *a = &s[i - 1], *b = &s[i];

		if (s[n - 1].t_ms - a->t_ms > window_ms)
			break;
		if (a->v[k] < 0 || b->v[k] < 0)
			continue;
		if (b->v[k] > a->v[k])
			sum += b->v[k] - a->v[k]; /* a decrease is a restart: nothing counted */
		span += b->t_ms - a->t_ms;
		steps++;
	}
	if (steps == 0 || span <= 0)
		return false;
	*rate = (double)sum * 1000.0 / (double)span;
	return true;
}

unsigned gw_pl_order(long long v[GW_PLS_N])
{
	long long below = -1; /* the largest known count downstream */
	unsigned raised = 0;
	int i;

	for (i = GW_PLS_N - 1; i >= 0; i--) {
		if (v[i] < 0)
			continue;
		if (v[i] < below) {
			v[i] = below;
			raised |= 1u << i;
		} else {
			below = v[i];
		}
	}
	return raised;
}

/* ---- small helpers -------------------------------------------------------- */

static void add_error(json_t *errors, const char *source, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void add_error(json_t *errors, const char *source, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_array_append_new(errors, json_pack("{s:s, s:s}", "source", source, "message", msg));
}

/* True when errors already holds an entry from source (one per service is
 * enough: a stopped service fails every request of a round). */
static bool has_error(json_t *errors, const char *source)
{
	size_t i;
	json_t *e;

	json_array_foreach(errors, i, e)
	{
		json_t *s = json_object_get(e, "source");

		if (json_is_string(s) && strcmp(json_string_value(s), source) == 0)
			return true;
	}
	return false;
}

static json_t *int_or_null(long long v)
{
	return v >= 0 ? json_integer(v) : json_null();
}

/* A rate rounded to 0.1 event/s, or null (printed so by JSON_FLAGS). */
static json_t *rate_json(bool ok, double r)
{
	return ok ? json_real(round(r * 10.0) / 10.0) : json_null();
}

static int clamp_int(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* ---- HTTP sources (sampler) ----------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
	struct lp_buf *b = ud;
	size_t len = size * n;

	if (b->len + len > MAX_BODY)
		return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
	lp_buf_add(b, data, len);
	return len;
}

/* Aborts a transfer when the pipeline is stopping. */
static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	const atomic_bool *stop = ud;

	return atomic_load(stop) ? 1 : 0;
}

static CURL *easy_new(struct gw_pipeline *p, struct lp_buf *body, char *error, long timeout_ms)
{
	CURL *h = curl_easy_init();

	if (!h)
		return NULL;
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	/* No keep-alive: a CivetWeb server gives every open connection a
	 * worker thread, and a poll every few seconds needs none kept. */
	curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 1000 ? timeout_ms : 1000L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, &p->stop);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "logpipe-gateway-pipeline");
	return h;
}

/* One round: every request at once; returns when all are done (each has
 * its own timeout) or the pipeline stops. */
static void fetch_round(struct gw_pipeline *p)
{
	struct lp_buf url = LP_BUF_INIT;
	int running = 0;
	size_t i;

	for (i = 0; i < NFETCH; i++) {
		struct fetch *f = &p->fetches[i];

		lp_buf_reset(&f->body);
		f->status = 0;
		f->error[0] = '\0';
		lp_buf_reset(&url);
		lp_buf_addf(&url, "%s%s", p->urls[f->svc], f->path);
		curl_easy_setopt(f->h, CURLOPT_URL, url.buf);
		curl_multi_add_handle(p->multi, f->h);
	}
	lp_buf_release(&url);
	do {
		CURLMsg *m;
		int left;

		if (curl_multi_perform(p->multi, &running) != CURLM_OK)
			break;
		while ((m = curl_multi_info_read(p->multi, &left)) != NULL) {
			struct fetch *f = NULL;

			if (m->msg != CURLMSG_DONE)
				continue;
			for (i = 0; i < NFETCH; i++)
				if (p->fetches[i].h == m->easy_handle)
					f = &p->fetches[i];
			if (!f)
				continue;
			if (m->data.result == CURLE_OK) {
				curl_easy_getinfo(f->h, CURLINFO_RESPONSE_CODE, &f->status);
			} else {
				f->status = 0;
				if (!f->error[0])
					lp_strlcpy(f->error, curl_easy_strerror(m->data.result),
						   sizeof(f->error));
			}
		}
		if (running && !atomic_load(&p->stop))
			curl_multi_poll(p->multi, NULL, 0, 100, NULL);
	} while (running && !atomic_load(&p->stop));
	for (i = 0; i < NFETCH; i++)
		curl_multi_remove_handle(p->multi, p->fetches[i].h);
}

static const struct fetch *find_fetch(const struct gw_pipeline *p, enum gw_pl_service svc,
				      enum fetch_kind kind)
{
	size_t i;

	for (i = 0; i < NFETCH; i++)
		if (p->fetches[i].svc == svc && p->fetches[i].kind == kind)
			return &p->fetches[i];
	return NULL;
}

/* Metric `name` of service svc from this round, or -1 (with an error entry
 * once per service when /metrics failed). */
static long long metric(const struct gw_pipeline *p, enum gw_pl_service svc, const char *name)
{
	const struct fetch *f = find_fetch(p, svc, F_METRICS);
	double v;

	if (!f || f->status != 200 || gw_prom_sum(f->body.buf, name, &v) == 0)
		return -1;
	return (long long)llround(v);
}

static void metrics_errors(const struct gw_pipeline *p, json_t *errors)
{
	size_t i;

	for (i = 0; i < NFETCH; i++) {
		const struct fetch *f = &p->fetches[i];

		if (f->kind != F_METRICS || f->status == 200 || has_error(errors, service_names[f->svc]))
			continue;
		if (f->status == 0)
			add_error(errors, service_names[f->svc], "%s/metrics: %s", p->urls[f->svc],
				  f->error[0] ? f->error : "no answer");
		else
			add_error(errors, service_names[f->svc], "%s/metrics answered %ld",
				  p->urls[f->svc], f->status);
	}
}

/* services.<name> and breakers.<name> from each /health. */
static void health_json(const struct gw_pipeline *p, json_t *services, json_t *breakers,
			json_t *errors)
{
	int s;

	for (s = 0; s < GW_PL_NSERVICES; s++) {
		const struct fetch *f = find_fetch(p, (enum gw_pl_service)s, F_HEALTH);
		json_t *h = NULL, *checks, *br = json_object(), *ck = json_object(), *c;
		const char *name, *status = "UNREACHABLE";

		if (f && (f->status == 200 || f->status == 503))
			h = lp_json_loadb(f->body.buf, f->body.len, 0, NULL);
		if (h && json_is_string(json_object_get(h, "status")))
			status = json_string_value(json_object_get(h, "status"));
		checks = h ? json_object_get(h, "checks") : NULL;
		json_object_foreach(checks, name, c)
		{
			json_t *st = json_object_get(c, "status");
			json_t *cb = json_object_get(c, "circuit_breaker");

			if (json_is_string(st))
				json_object_set(ck, name, st);
			if (json_is_string(cb))
				json_object_set(br, name, cb);
		}
		json_object_set_new(services, service_names[s],
				    json_pack("{s:s, s:s, s:O, s:O}", "status", status, "url",
					      p->urls[s], "checks", ck, "breakers", br));
		json_object_set(breakers, service_names[s], h ? br : json_null());
		if (!h && f && !has_error(errors, service_names[s]))
			add_error(errors, service_names[s], "%s/health: %s", p->urls[s],
				  f->status ? "not JSON" : (f->error[0] ? f->error : "no answer"));
		json_decref(br);
		json_decref(ck);
		json_decref(h);
	}
}

/* ---- kafka thread --------------------------------------------------------- */

static void on_kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	lp_debug("pipeline view kafka: %s: %s", fac, buf);
}

static rd_kafka_t *kafka_handle(const char *brokers, char *err, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char kerr[256];
	rd_kafka_t *rk;

	if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, kerr, sizeof(kerr)) !=
		    RD_KAFKA_CONF_OK ||
	    rd_kafka_conf_set(conf, "client.id", "logpipe-gateway-pipeline", kerr, sizeof(kerr)) !=
		    RD_KAFKA_CONF_OK) {
		snprintf(err, errlen, "kafka: %s", kerr);
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rd_kafka_conf_set_log_cb(conf, on_kafka_log);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
	if (!rk) {
		snprintf(err, errlen, "kafka: %s", kerr);
		rd_kafka_conf_destroy(conf);
	}
	return rk;
}

/* The time left until deadline, in slices of at most 250 ms, so that a
 * stop is noticed between two calls even while the broker is away. */
static int remaining(int64_t deadline)
{
	int64_t left = deadline - lp_now_ms();

	return left > 250 ? 250 : left > 0 ? (int)left : 1;
}

/* Reads the end offsets of the topics into *out. */
static void read_offsets(struct gw_pipeline *p, int timeout_ms, struct kafka_read *out)
{
	int64_t deadline = lp_now_ms() + timeout_ms, lo, hi;
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t e;
	int t, k, i;

	for (k = 0; k < GW_PL_NTOPICS; k++) {
		out->end[k] = -1;
		out->parts[k] = -1;
	}
	out->error[0] = '\0';
	do
		e = rd_kafka_metadata(p->rk, 1, NULL, &md, remaining(deadline));
	while (e == RD_KAFKA_RESP_ERR__TIMED_OUT && lp_now_ms() < deadline &&
	       !atomic_load(&p->stop));
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(out->error, sizeof(out->error), "%s: metadata: %s", p->brokers,
			 rd_kafka_err2str(e));
		return;
	}
	for (k = 0; k < GW_PL_NTOPICS; k++) {
		const rd_kafka_metadata_topic_t *mt = NULL;
		long long sum = 0;

		for (t = 0; t < md->topic_cnt; t++)
			if (strcmp(md->topics[t].topic, p->topics[k]) == 0)
				mt = &md->topics[t];
		if (!mt || mt->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			snprintf(out->error, sizeof(out->error), "topic \"%s\": %s", p->topics[k],
				 mt ? rd_kafka_err2str(mt->err) : "does not exist");
			continue;
		}
		for (i = 0; i < mt->partition_cnt && !atomic_load(&p->stop); i++) {
			do
				e = rd_kafka_query_watermark_offsets(p->rk, mt->topic,
								     mt->partitions[i].id, &lo, &hi,
								     remaining(deadline));
			while (e == RD_KAFKA_RESP_ERR__TIMED_OUT && lp_now_ms() < deadline &&
			       !atomic_load(&p->stop));
			if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
				snprintf(out->error, sizeof(out->error), "watermarks of %s[%d]: %s",
					 mt->topic, mt->partitions[i].id, rd_kafka_err2str(e));
				break;
			}
			sum += hi;
		}
		if (i == mt->partition_cnt) {
			out->end[k] = sum;
			out->parts[k] = mt->partition_cnt;
		}
	}
	rd_kafka_metadata_destroy(md);
}

/* Waits (in slices, so that a stop is seen) until the sampler asks for a
 * round after `done`; returns it, or 0 when stopping. */
static uint64_t next_round(struct gw_pipeline *p, uint64_t done)
{
	uint64_t want = 0;

	pthread_mutex_lock(&p->mu);
	while (!atomic_load(&p->stop) && p->kafka_round == done) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 250 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&p->round_cv, &p->mu, &ts);
	}
	if (!atomic_load(&p->stop))
		want = p->kafka_round;
	pthread_mutex_unlock(&p->mu);
	return want;
}

static void *kafka_main(void *arg)
{
	struct gw_pipeline *p = arg;
	struct kafka_read r;
	int timeout = clamp_int(p->sample_ms, 500, 3000);
	uint64_t round = 0;
	bool failing = false;

	while (!atomic_load(&p->stop)) {
		round = next_round(p, round);
		if (!round)
			break;
		read_offsets(p, timeout, &r);
		r.round = round;
		r.read_ms = lp_wall_ms();
		rd_kafka_poll(p->rk, 0);
		if (r.error[0] && !failing)
			lp_warn("pipeline view: %s", r.error);
		else if (!r.error[0] && failing)
			lp_info("pipeline view: topic offsets readable again");
		failing = r.error[0] != '\0';
		pthread_mutex_lock(&p->mu);
		p->kread = r;
		pthread_cond_broadcast(&p->round_cv);
		pthread_mutex_unlock(&p->mu);
	}
	return NULL;
}

/* ---- slow thread ------------------------------------------------------------ */

/* The consumer's row count over all time and tenants, or -1 with err. */
static long long stored_rows(struct gw_pipeline *p, char *err, size_t errlen)
{
	struct lp_buf body = LP_BUF_INIT, url = LP_BUF_INIT;
	char cerr[CURL_ERROR_SIZE] = "";
	long long rows = -1;
	long status = 0;
	CURL *h = easy_new(p, &body, cerr, STATS_TIMEOUT_MS);
	CURLcode rc;
	json_t *j = NULL;

	if (!h) {
		snprintf(err, errlen, "cannot make a curl handle");
		return -1;
	}
	lp_buf_addf(&url, "%s/api/stats?from=1970-01-01T00:00:00Z", p->urls[GW_PL_CONSUMER]);
	curl_easy_setopt(h, CURLOPT_URL, url.buf);
	rc = curl_easy_perform(h);
	if (rc != CURLE_OK) {
		snprintf(err, errlen, "%s: %s", url.buf, cerr[0] ? cerr : curl_easy_strerror(rc));
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	j = lp_json_loadb(body.buf, body.len, 0, NULL);
	if (status != 200 || !json_is_integer(json_object_get(j, "total"))) {
		json_t *m = json_object_get(json_object_get(j, "error"), "message");

		snprintf(err, errlen, "%s answered %ld%s%.200s", url.buf, status,
			 json_is_string(m) ? ": " : "", json_is_string(m) ? json_string_value(m) : "");
		goto out;
	}
	rows = (long long)json_integer_value(json_object_get(j, "total"));
out:
	json_decref(j);
	curl_easy_cleanup(h);
	lp_buf_release(&body);
	lp_buf_release(&url);
	return rows;
}

static void *slow_main(void *arg)
{
	struct gw_pipeline *p = arg;
	int64_t last_disk = 0, next_count = 0;
	bool warned = false;

	while (!atomic_load(&p->stop)) {
		int64_t t0 = lp_now_ms();
		struct slow_read r;
		int d;

		pthread_mutex_lock(&p->mu);
		r = p->sread;
		pthread_mutex_unlock(&p->mu);
		if (t0 >= next_count) {
			r.rows_error[0] = '\0';
			r.rows = stored_rows(p, r.rows_error, sizeof(r.rows_error));
			r.rows_ms = r.rows >= 0 ? lp_wall_ms() : 0;
			/* The count scans the table: on a big one, ask at most a
			 * fifth of the time so that it never loads PostgreSQL. */
			next_count = t0 + 5 * (lp_now_ms() - t0);
		}
		if (r.rows < 0 && !warned && !atomic_load(&p->stop))
			lp_warn("pipeline view: stored row count: %s", r.rows_error);
		warned = r.rows < 0;
		if (last_disk == 0 || t0 - last_disk >= DISK_EVERY_MS) {
			last_disk = t0;
			for (d = 0; d < 2; d++) {
				r.disk[d] = -1;
				r.disk_error[d][0] = '\0';
				if (p->dirs[d] &&
				    gw_disk_usage(p->dirs[d], &r.disk[d], r.disk_error[d],
						  sizeof(r.disk_error[d])) < 0)
					r.disk[d] = -1;
			}
		}
		pthread_mutex_lock(&p->mu);
		p->sread = r;
		pthread_mutex_unlock(&p->mu);
		lp_sleep_ms(p->sample_ms - (lp_now_ms() - t0), &p->stop);
	}
	return NULL;
}

/* ---- composing the snapshot (sampler) ---------------------------------------- */

/* Copies the ring, oldest first, into out (cap entries); returns the count. */
static size_t ring_linear(const struct gw_pipeline *p, struct gw_pl_sample *out)
{
	size_t i, start = (p->head + p->cap - p->count) % p->cap;

	for (i = 0; i < p->count; i++)
		out[i] = p->ring[(start + i) % p->cap];
	return p->count;
}

/* The keys of "rates" and of the history, and the counter behind each
 * (stored falls back from the processed metric to the row count). */
static const struct {
	const char *key;
	int k, fallback;
} rate_keys[] = {
	{ "generated", GW_PLC_GENERATED, -1 }, { "accepted", GW_PLC_ACCEPTED, -1 },
	{ "raw", GW_PLC_RAW, -1 },             { "enriched", GW_PLC_ENRICHED, -1 },
	{ "stored", GW_PLC_PROCESSED, GW_PLC_STORED }, { "dead_lettered", GW_PLC_DLQ, -1 },
};

static json_t *rates_json(const struct gw_pl_sample *s, size_t n, int64_t window)
{
	json_t *o = json_object();
	size_t i;

	for (i = 0; i < LP_ARRAY_SIZE(rate_keys); i++) {
		double r = 0;
		bool ok = gw_pl_rate(s, n, rate_keys[i].k, window, &r);

		if (!ok && rate_keys[i].fallback >= 0)
			ok = gw_pl_rate(s, n, rate_keys[i].fallback, window, &r);
		json_object_set_new(o, rate_keys[i].key, rate_json(ok, r));
	}
	return o;
}

/* The rate of one step between two samples for the history. */
static json_t *step_rate(const struct gw_pl_sample *a, const struct gw_pl_sample *b, int k,
			 int fallback)
{
	double r;

	if (gw_pl_rate((const struct gw_pl_sample[]){ *a, *b }, 2, k, INT64_MAX / 2, &r))
		return rate_json(true, r);
	if (fallback >= 0 &&
	    gw_pl_rate((const struct gw_pl_sample[]){ *a, *b }, 2, fallback, INT64_MAX / 2, &r))
		return rate_json(true, r);
	return json_null();
}

static json_t *history_json(const struct gw_pl_sample *s, size_t n)
{
	json_t *o = json_object(), *t = json_array(), *series[LP_ARRAY_SIZE(rate_keys)];
	size_t i, j;

	for (j = 0; j < LP_ARRAY_SIZE(rate_keys); j++)
		series[j] = json_array();
	for (i = 1; i < n; i++) {
		json_array_append_new(t, json_integer(s[i].wall_ms));
		for (j = 0; j < LP_ARRAY_SIZE(rate_keys); j++)
			json_array_append_new(series[j], step_rate(&s[i - 1], &s[i], rate_keys[j].k,
								   rate_keys[j].fallback));
	}
	json_object_set_new(o, "t", t);
	for (j = 0; j < LP_ARRAY_SIZE(rate_keys); j++)
		json_object_set_new(o, rate_keys[j].key, series[j]);
	return o;
}

static long long sum2(long long a, long long b)
{
	return a >= 0 && b >= 0 ? a + b : -1;
}

/* "lag" (per group) and the lag before the enricher and the consumer. */
static void lag_json(struct gw_pipeline *p, json_t *root, json_t *errors, long long *enricher_lag,
		     long long *consumer_lag)
{
	struct gw_bp_snapshot s;
	json_t *lag = json_object();
	size_t i, j;

	*enricher_lag = *consumer_lag = -1;
	if (!p->lag) {
		json_object_set_new(root, "lag", lag);
		return;
	}
	memset(&s, 0, sizeof(s));
	p->lag(p->lag_ud, &s);
	for (i = 0; i < s.ngroups; i++) {
		json_object_set_new(lag, s.groups[i].name, int_or_null(s.groups[i].lag));
		for (j = 0; j < p->ngroups; j++) {
			if (strcmp(p->groups[j].name, s.groups[i].name) != 0 || !p->groups[j].stage)
				continue;
			if (strcmp(p->groups[j].stage, "enricher") == 0)
				*enricher_lag = s.groups[i].lag;
			else
				*consumer_lag = s.groups[i].lag;
		}
	}
	if (s.enabled && s.error[0])
		add_error(errors, "kafka", "%s", s.error);
	json_object_set_new(root, "lag", lag);
}

static json_t *service_stage(json_t *services, int svc)
{
	json_t *st = json_object_get(json_object_get(services, service_names[svc]), "status");

	return json_pack("{s:s, s:s}", "kind", "service", "status",
			 json_is_string(st) ? json_string_value(st) : "UNREACHABLE");
}

/* The services' counters read in one round; -1 where unknown. */
struct counters {
	long long generated;      /* generator: log_events_generated_total */
	long long gen_sent;       /* generator: kafka_messages_sent_total */
	long long received;       /* producer: log_events_received_total */
	long long rejected;       /* producer: log_events_rejected_total */
	long long sent;           /* producer: kafka_messages_sent_total */
	long long spooled;        /* producer: logpipe_spool_events */
	long long accepted;       /* producer: sent + spooled */
	long long complete;       /* enricher: enrichment_successes_total */
	long long partial;        /* enricher: enrichment_partial_total */
	long long enricher_dead;  /* enricher: enrichment_dead_lettered_total */
	long long processed;      /* consumer: log_events_processed_total */
	long long consumer_dead;  /* consumer: log_events_errors_total */
	long long paused;         /* consumer: consumer_paused */
};

static void read_counters(const struct gw_pipeline *p, struct counters *c)
{
	c->generated = metric(p, GW_PL_GENERATOR, "log_events_generated_total");
	c->gen_sent = metric(p, GW_PL_GENERATOR, "kafka_messages_sent_total");
	c->received = metric(p, GW_PL_PRODUCER, "log_events_received_total");
	c->rejected = metric(p, GW_PL_PRODUCER, "log_events_rejected_total");
	c->sent = metric(p, GW_PL_PRODUCER, "kafka_messages_sent_total");
	c->spooled = metric(p, GW_PL_PRODUCER, "logpipe_spool_events");
	c->accepted = c->sent >= 0 ? c->sent + (c->spooled > 0 ? c->spooled : 0) : -1;
	c->complete = metric(p, GW_PL_ENRICHER, "enrichment_successes_total");
	c->partial = metric(p, GW_PL_ENRICHER, "enrichment_partial_total");
	c->enricher_dead = metric(p, GW_PL_ENRICHER, "enrichment_dead_lettered_total");
	c->processed = metric(p, GW_PL_CONSUMER, "log_events_processed_total");
	c->consumer_dead = metric(p, GW_PL_CONSUMER, "log_events_errors_total");
	c->paused = metric(p, GW_PL_CONSUMER, "consumer_paused");
}

/* The generator's status (a copy), or json_null() with an error entry. */
static json_t *generator_status(const struct gw_pipeline *p, json_t *errors)
{
	const struct fetch *f = find_fetch(p, GW_PL_GENERATOR, F_GENSTATUS);
	json_t *gs = NULL;

	if (f && f->status == 200)
		gs = lp_json_loadb(f->body.buf, f->body.len, 0, NULL);
	if (json_is_object(gs))
		return gs;
	json_decref(gs);
	if (f && !has_error(errors, "generator"))
		add_error(errors, "generator", "%s/api/v1/generator/status: %s",
			  p->urls[GW_PL_GENERATOR],
			  f->status ? "unexpected answer" : (f->error[0] ? f->error : "no answer"));
	return json_null();
}

static json_t *counts_json(const struct counters *c, const struct kafka_read *kr,
			   const struct slow_read *sr, const long long chain[GW_PLS_N])
{
	json_t *o = json_object();

	json_object_set_new(o, "generated", int_or_null(c->generated));
	json_object_set_new(o, "generated_sent", int_or_null(c->gen_sent));
	json_object_set_new(o, "received", int_or_null(c->received));
	json_object_set_new(o, "rejected", int_or_null(c->rejected));
	json_object_set_new(o, "accepted", int_or_null(c->accepted));
	json_object_set_new(o, "spooled", int_or_null(c->spooled));
	json_object_set_new(o, "raw", int_or_null(chain[GW_PLS_RAW]));
	json_object_set_new(o, "enriched_complete", int_or_null(c->complete));
	json_object_set_new(o, "enriched_partial", int_or_null(c->partial));
	json_object_set_new(o, "enricher_dead_lettered", int_or_null(c->enricher_dead));
	json_object_set_new(o, "processed", int_or_null(c->processed));
	json_object_set_new(o, "consumer_dead_lettered", int_or_null(c->consumer_dead));
	json_object_set_new(o, "stored", int_or_null(sr->rows));
	json_object_set_new(o, "dead_lettered", int_or_null(kr->end[GW_PL_DLQ]));
	return o;
}

static json_t *topics_json(const struct gw_pipeline *p, const struct kafka_read *kr)
{
	json_t *o = json_object();
	int k;

	for (k = 0; k < GW_PL_NTOPICS; k++)
		json_object_set_new(o, p->topics[k],
				    json_pack("{s:s, s:o, s:o}", "role", topic_roles[k], "end_offset",
					      int_or_null(kr->end[k]), "partitions",
					      kr->parts[k] >= 0 ? json_integer(kr->parts[k])
								: json_null()));
	return o;
}

/* The stages in pipeline order, for the dashboard: each with its count and
 * the queue waiting for it (backlog or lag). */
static json_t *stages_json(const struct gw_pipeline *p, const struct counters *c,
			   const struct kafka_read *kr, const long long chain[GW_PLS_N],
			   json_t *services, json_t *gen, long long elag, long long clag)
{
	json_t *stages = json_object(), *o, *inflight = json_object_get(gen, "in_flight");

	o = service_stage(services, GW_PL_GENERATOR);
	json_object_set_new(o, "count", int_or_null(c->generated));
	json_object_set_new(o, "sent", int_or_null(c->gen_sent));
	json_object_set(o, "backlog", inflight ? inflight : json_null());
	json_object_set_new(stages, "generator", o);

	o = service_stage(services, GW_PL_PRODUCER);
	json_object_set_new(o, "count", int_or_null(c->accepted));
	json_object_set_new(o, "backlog", int_or_null(c->spooled));
	json_object_set_new(stages, "producer", o);

	json_object_set_new(stages, "raw",
			    json_pack("{s:s, s:s, s:o}", "kind", "topic", "topic",
				      p->topics[GW_PL_RAW], "count", int_or_null(chain[GW_PLS_RAW])));

	o = service_stage(services, GW_PL_ENRICHER);
	json_object_set_new(o, "count", int_or_null(chain[GW_PLS_ENRICHER]));
	json_object_set_new(o, "complete", int_or_null(c->complete));
	json_object_set_new(o, "partial", int_or_null(c->partial));
	json_object_set_new(o, "lag", int_or_null(elag));
	json_object_set_new(stages, "enricher", o);

	json_object_set_new(stages, "enriched",
			    json_pack("{s:s, s:[s,s], s:o, s:o, s:o}", "kind", "topic", "topics",
				      p->topics[GW_PL_COMPLETE], p->topics[GW_PL_PARTIAL], "count",
				      int_or_null(chain[GW_PLS_ENRICHED]),
				      "complete", int_or_null(kr->end[GW_PL_COMPLETE]), "partial",
				      int_or_null(kr->end[GW_PL_PARTIAL])));

	o = service_stage(services, GW_PL_CONSUMER);
	json_object_set_new(o, "count", int_or_null(chain[GW_PLS_CONSUMER]));
	json_object_set_new(o, "lag", int_or_null(clag));
	json_object_set_new(o, "paused", c->paused < 0 ? json_null() : json_boolean(c->paused > 0));
	json_object_set_new(stages, "consumer", o);

	json_object_set_new(stages, "postgres",
			    json_pack("{s:s, s:o}", "kind", "store", "count",
				      int_or_null(chain[GW_PLS_STORED])));
	json_object_set_new(stages, "dlq",
			    json_pack("{s:s, s:s, s:o}", "kind", "topic", "topic",
				      p->topics[GW_PL_DLQ], "count", int_or_null(kr->end[GW_PL_DLQ])));
	return stages;
}

static json_t *disk_json(const struct gw_pipeline *p, const struct slow_read *sr)
{
	json_t *o = json_object();

	json_object_set_new(o, "kafka_bytes", int_or_null(sr->disk[0]));
	json_object_set_new(o, "postgres_bytes", int_or_null(sr->disk[1]));
	json_object_set_new(o, "kafka_dir", p->dirs[0] ? json_string(p->dirs[0]) : json_null());
	json_object_set_new(o, "postgres_dir", p->dirs[1] ? json_string(p->dirs[1]) : json_null());
	return o;
}

/* Appends the sample to the ring; returns the ring oldest first (free it)
 * and its length in *n. */
static struct gw_pl_sample *ring_push(struct gw_pipeline *p, const struct gw_pl_sample *smp,
				      size_t *n)
{
	struct gw_pl_sample *lin = lp_xmalloc(p->cap * sizeof(*lin));

	pthread_mutex_lock(&p->mu);
	p->ring[p->head] = *smp;
	p->head = (p->head + 1) % p->cap;
	if (p->count < p->cap)
		p->count++;
	*n = ring_linear(p, lin);
	pthread_mutex_unlock(&p->mu);
	return lin;
}

static json_t *time_or_null(int64_t wall_ms)
{
	char when[32];

	if (wall_ms <= 0)
		return json_null();
	lp_rfc3339(wall_ms, when);
	return json_string(when);
}

static const char *const chain_names[GW_PLS_N] = { "producer_count", "raw", "enricher",
						   "enriched", "consumer", "stored" };

/* Builds and publishes the snapshot from this round (its services read
 * from round_wall_ms on) and the shared reads. */
static void compose(struct gw_pipeline *p, int64_t round_wall_ms)
{
	struct kafka_read kr;
	struct slow_read sr;
	struct counters c;
	struct gw_pl_sample smp, *lin;
	json_t *root, *errors = json_array(), *services = json_object(), *breakers = json_object(),
		      *gen, *stages;
	long long elag, clag, chain[GW_PLS_N], reading[GW_PLS_N];
	json_t *adjusted;
	unsigned raised;
	char when[32];
	size_t n, k;
	char *text;

	pthread_mutex_lock(&p->mu);
	kr = p->kread;
	sr = p->sread;
	pthread_mutex_unlock(&p->mu);

	read_counters(p, &c);
	metrics_errors(p, errors);
	gen = generator_status(p, errors);
	if (kr.error[0])
		add_error(errors, "kafka", "%s", kr.error);
	if (sr.rows < 0 && sr.rows_error[0])
		add_error(errors, "postgres", "stored row count: %s", sr.rows_error);
	for (k = 0; k < 2; k++)
		if (sr.disk_error[k][0])
			add_error(errors, k == 0 ? "kafka" : "postgres", "disk use: %s",
				  sr.disk_error[k]);

	memset(&smp, 0, sizeof(smp));
	smp.t_ms = lp_now_ms();
	smp.wall_ms = lp_wall_ms();
	smp.v[GW_PLC_GENERATED] = c.generated;
	smp.v[GW_PLC_ACCEPTED] = c.accepted;
	smp.v[GW_PLC_RAW] = kr.end[GW_PL_RAW];
	smp.v[GW_PLC_ENRICHED] = sum2(kr.end[GW_PL_COMPLETE], kr.end[GW_PL_PARTIAL]);
	smp.v[GW_PLC_STORED] = sr.rows;
	smp.v[GW_PLC_PROCESSED] = c.processed;
	smp.v[GW_PLC_DLQ] = kr.end[GW_PL_DLQ];
	lin = ring_push(p, &smp, &n);

	root = json_object();
	json_object_set_new(root, "status", json_string("success"));
	json_object_set_new(root, "ready", json_true());
	lp_rfc3339(smp.wall_ms, when);
	json_object_set_new(root, "updated_at", json_string(when));
	json_object_set_new(root, "sample_ms", json_integer(p->sample_ms));
	json_object_set_new(root, "is_streaming",
			    json_is_object(gen) ? json_boolean(json_is_true(json_object_get(gen, "running")))
						: json_null());
	/* The stage counts in pipeline order (see the top of the file). */
	chain[GW_PLS_PRODUCED] = c.generated >= 0 || c.accepted >= 0
					 ? (c.generated > 0 ? c.generated : 0) +
						   (c.accepted > 0 ? c.accepted : 0)
					 : -1;
	chain[GW_PLS_RAW] = kr.end[GW_PL_RAW];
	chain[GW_PLS_ENRICHER] = sum2(c.complete, c.partial);
	chain[GW_PLS_ENRICHED] = sum2(kr.end[GW_PL_COMPLETE], kr.end[GW_PL_PARTIAL]);
	chain[GW_PLS_CONSUMER] = c.processed;
	chain[GW_PLS_STORED] = sr.rows;
	memcpy(reading, chain, sizeof(reading));
	raised = gw_pl_order(chain);
	adjusted = json_object();
	for (k = 0; k < GW_PLS_N; k++)
		if (raised & (1u << k))
			json_object_set_new(adjusted, chain_names[k], json_integer(reading[k]));
	/* Seed 004's /monitor fields. */
	json_object_set_new(root, "producer_count", int_or_null(chain[GW_PLS_PRODUCED]));
	json_object_set_new(root, "kafka_count", int_or_null(chain[GW_PLS_RAW]));
	json_object_set_new(root, "stored_count", int_or_null(chain[GW_PLS_STORED]));
	json_object_set_new(root, "cassandra_count", int_or_null(chain[GW_PLS_STORED]));
	json_object_set_new(root, "adjusted", adjusted);
	json_object_set_new(root, "read_at",
			    json_pack("{s:o, s:o, s:o}", "services", time_or_null(round_wall_ms),
				      "kafka", time_or_null(p->brokers ? kr.read_ms : 0), "stored",
				      time_or_null(sr.rows >= 0 ? sr.rows_ms : 0)));

	json_object_set_new(root, "counts", counts_json(&c, &kr, &sr, chain));
	json_object_set_new(root, "topics", topics_json(p, &kr));
	lag_json(p, root, errors, &elag, &clag);
	json_object_set_new(root, "rates", rates_json(lin, n, RATE_WINDOW_MS));
	json_object_set_new(root, "rates_10s", rates_json(lin, n, RATE_NOW_MS));
	free(lin);
	health_json(p, services, breakers, errors);
	stages = stages_json(p, &c, &kr, chain, services, gen, elag, clag);
	json_object_set_new(root, "stages", stages);
	json_object_set_new(root, "generator", gen);
	json_object_set_new(root, "services", services);
	json_object_set_new(root, "breakers", breakers);
	json_object_set_new(root, "disk", disk_json(p, &sr));
	json_object_set_new(root, "errors", errors);

	text = json_dumps(root, JSON_FLAGS);
	json_decref(root);
	if (!text)
		return;
	pthread_mutex_lock(&p->mu);
	free(p->json);
	p->json = text;
	p->json_len = strlen(text);
	pthread_cond_broadcast(&p->first_cv);
	pthread_mutex_unlock(&p->mu);
}

/* Asks the kafka thread for this round's offsets. */
static uint64_t start_round(struct gw_pipeline *p)
{
	uint64_t round;

	pthread_mutex_lock(&p->mu);
	round = ++p->kafka_round;
	pthread_cond_broadcast(&p->round_cv);
	pthread_mutex_unlock(&p->mu);
	return round;
}

/* Waits until the offsets of `round` are in or deadline (monotonic ms)
 * passes; a read that takes longer (a broker away) leaves the previous
 * one in the snapshot, with its own read_at. */
static void wait_round(struct gw_pipeline *p, uint64_t round, int64_t deadline)
{
	pthread_mutex_lock(&p->mu);
	while (!atomic_load(&p->stop) && p->kread.round < round && lp_now_ms() < deadline) {
		int64_t left = deadline - lp_now_ms();
		struct timespec ts;

		if (left > 250)
			left = 250;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long)left * 1000000L;
		while (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&p->round_cv, &p->mu, &ts);
	}
	pthread_mutex_unlock(&p->mu);
}

static void *sampler_main(void *arg)
{
	struct gw_pipeline *p = arg;
	int wait_ms = clamp_int(p->sample_ms * 3 / 4, 500, 3000);

	while (!atomic_load(&p->stop)) {
		int64_t t0 = lp_now_ms();
		int64_t wall0 = lp_wall_ms();
		uint64_t round = start_round(p);

		fetch_round(p);
		if (p->kafka_started)
			wait_round(p, round, t0 + wait_ms);
		if (atomic_load(&p->stop))
			break;
		compose(p, wall0);
		lp_sleep_ms(p->sample_ms - (lp_now_ms() - t0), &p->stop);
	}
	return NULL;
}

/* ---- lifecycle -------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
	return s && *s ? lp_xstrdup(s) : NULL;
}

static int parse_groups(struct gw_pipeline *p, const char *spec, char *err, size_t errlen)
{
	struct gw_bp_group *g;
	size_t i, j, k;

	if (!spec || !*spec)
		return 0;
	g = gw_bp_groups_parse(spec, err, errlen);
	if (!g)
		return -EINVAL;
	for (i = 0; g[i].name && p->ngroups < GW_BP_MAX_GROUPS; i++) {
		struct lag_group *lg = &p->groups[p->ngroups++];

		lp_strlcpy(lg->name, g[i].name, sizeof(lg->name));
		for (j = 0; g[i].topics[j]; j++) {
			for (k = 0; k < GW_PL_NTOPICS; k++) {
				if (strcmp(g[i].topics[j], p->topics[k]) != 0)
					continue;
				if (k == GW_PL_RAW)
					lg->stage = "enricher";
				else if ((k == GW_PL_COMPLETE || k == GW_PL_PARTIAL) && !lg->stage)
					lg->stage = "consumer";
			}
		}
	}
	gw_bp_groups_free(g);
	return 0;
}

struct gw_pipeline *gw_pipeline_start(const struct gw_pipeline_opts *o, char *err, size_t errlen)
{
	struct gw_pipeline *p = lp_xcalloc(1, sizeof(*p));
	long timeout;
	size_t i;
	int k;

	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->first_cv, NULL);
	pthread_cond_init(&p->round_cv, NULL);
	p->sample_ms = o->sample_ms > 0 ? o->sample_ms : 2000;
	for (k = 0; k < GW_PL_NSERVICES; k++)
		p->urls[k] = lp_xstrdup(o->urls[k] ? o->urls[k] : "");
	for (k = 0; k < GW_PL_NTOPICS; k++)
		p->topics[k] = lp_xstrdup(o->topics[k] ? o->topics[k] : "");
	p->brokers = dup_or_null(o->brokers);
	p->dirs[0] = dup_or_null(o->kafka_data_dir);
	p->dirs[1] = dup_or_null(o->pg_data_dir);
	p->lag = o->lag;
	p->lag_ud = o->lag_ud;
	for (k = 0; k < GW_PL_NTOPICS; k++) {
		p->kread.end[k] = -1;
		p->kread.parts[k] = -1;
	}
	if (!p->brokers)
		snprintf(p->kread.error, sizeof(p->kread.error), "no Kafka brokers configured");
	p->sread.rows = -1;
	p->sread.disk[0] = p->sread.disk[1] = -1;
	p->cap = (size_t)(RING_SPAN_MS / p->sample_ms) + 2;
	p->ring = lp_xcalloc(p->cap, sizeof(*p->ring));
	if (parse_groups(p, o->groups, err, errlen) < 0)
		goto fail;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	p->multi = curl_multi_init();
	timeout = clamp_int(p->sample_ms * 3 / 4, 500, 3000);
	for (i = 0; i < NFETCH; i++) {
		struct fetch *f = &p->fetches[i];

		f->svc = fetch_table[i].svc;
		f->kind = fetch_table[i].kind;
		f->path = fetch_table[i].path;
		lp_buf_init(&f->body, 0);
		f->h = easy_new(p, &f->body, f->error, timeout);
		if (!f->h) {
			snprintf(err, errlen, "cannot make a curl handle");
			goto fail;
		}
	}
	if (!p->multi)
		goto fail;
	if (p->brokers) {
		p->rk = kafka_handle(p->brokers, err, errlen);
		if (!p->rk)
			goto fail;
		if (pthread_create(&p->kafka, NULL, kafka_main, p) != 0)
			goto thread_fail;
		p->kafka_started = true;
	}
	if (pthread_create(&p->slow, NULL, slow_main, p) != 0)
		goto thread_fail;
	p->slow_started = true;
	if (pthread_create(&p->sampler, NULL, sampler_main, p) != 0)
		goto thread_fail;
	p->sampler_started = true;
	return p;
thread_fail:
	snprintf(err, errlen, "cannot start the pipeline view's threads");
fail:
	gw_pipeline_stop(p);
	return NULL;
}

void gw_pipeline_stop(struct gw_pipeline *p)
{
	size_t i;
	int k;

	if (!p)
		return;
	atomic_store(&p->stop, true);
	if (p->multi)
		curl_multi_wakeup(p->multi);
	if (p->sampler_started)
		pthread_join(p->sampler, NULL);
	if (p->kafka_started)
		pthread_join(p->kafka, NULL);
	if (p->slow_started)
		pthread_join(p->slow, NULL);
	for (i = 0; i < NFETCH; i++) {
		if (p->fetches[i].h)
			curl_easy_cleanup(p->fetches[i].h);
		lp_buf_release(&p->fetches[i].body);
	}
	if (p->multi)
		curl_multi_cleanup(p->multi);
	if (p->rk)
		rd_kafka_destroy(p->rk);
	for (k = 0; k < GW_PL_NSERVICES; k++)
		free(p->urls[k]);
	for (k = 0; k < GW_PL_NTOPICS; k++)
		free(p->topics[k]);
	free(p->brokers);
	free(p->dirs[0]);
	free(p->dirs[1]);
	free(p->ring);
	free(p->json);
	pthread_cond_destroy(&p->first_cv);
	pthread_cond_destroy(&p->round_cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

char *gw_pipeline_json(struct gw_pipeline *p, bool history, int wait_ms, size_t *len)
{
	struct lp_buf out = LP_BUF_INIT;
	struct gw_pl_sample *lin = NULL;
	size_t n = 0;

	pthread_mutex_lock(&p->mu);
	if (!p->json && wait_ms > 0) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += wait_ms / 1000;
		ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		while (!p->json && pthread_cond_timedwait(&p->first_cv, &p->mu, &ts) == 0)
			;
	}
	if (p->json)
		lp_buf_add(&out, p->json, p->json_len);
	if (history && p->json) {
		lin = lp_xmalloc(p->cap * sizeof(*lin));
		n = ring_linear(p, lin);
	}
	pthread_mutex_unlock(&p->mu);

	if (!out.len) {
		lp_buf_addf(&out, "{\"status\":\"success\",\"ready\":false,\"sample_ms\":%d,"
				  "\"errors\":[{\"source\":\"gateway\",\"message\":\"no sample "
				  "taken yet\"}]}",
			    p->sample_ms);
	} else if (lin) {
		json_t *h = history_json(lin, n);
		char *text = json_dumps(h, JSON_FLAGS);

		json_decref(h);
		if (text && out.len > 1 && out.buf[out.len - 1] == '}') {
			out.len--; /* splice "history" in before the closing brace */
			out.buf[out.len] = '\0';
			lp_buf_addf(&out, ",\"history\":%s}", text);
		}
		free(text);
	}
	free(lin);
	return lp_buf_detach(&out, len);
}
