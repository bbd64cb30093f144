/* backpressure.c - consumer-lag reader and the adaptive ingest limit.
 *
 * One thread, and one librdkafka consumer handle per group, created with
 * that group's id but never subscribed, so it never joins the group.  Each
 * round reads, per group, the committed offsets (rd_kafka_committed: the
 * consumer's own OffsetFetch path) and the high watermark of every
 * partition of the group's topics; lag = high - committed, or high - low
 * for a partition with nothing committed yet.  (Not lp_kafka_group_lag:
 * its ListConsumerGroupOffsets admin request crashes librdkafka 2.0.2 on a
 * NOT_COORDINATOR answer, confluentinc/librdkafka#5040, and trips an
 * assertion when it times out.)  The sum over groups becomes the limit
 * (gw_bp_limit), published in an atomic for the request path and in the
 * gauges kafka_consumer_lag{group},
 * gateway_ingest_limit and gateway_backpressure_state, then sleeps for the
 * rest of the interval.  The thread checks its stop flag between groups
 * and while sleeping, so gw_bp_stop returns within one Kafka timeout. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/util.h"
#include "backpressure.h"

#include "logpipe/banned.h"

struct gw_backpressure {
	struct gw_bp_policy policy;   /* thresholds, copied */
	struct gw_bp_group *groups;   /* what to read (owned) */
	size_t ngroups;
	int interval_ms;              /* between readings */
	rd_kafka_t **rks;             /* one handle per group (NULL entries until made) */
	pthread_t thread;             /* the reader */
	bool started;                 /* thread is running */
	atomic_bool stop;             /* set by gw_bp_stop */
	_Atomic long long limit;      /* current limit, read lock-free */
	pthread_mutex_t mu;           /* guards snap */
	struct gw_bp_snapshot snap;   /* last reading */
	struct lp_metric *lag_metric; /* kafka_consumer_lag{group} */
	struct lp_series *limit_gauge; /* gateway_ingest_limit */
	struct lp_series *state_gauge; /* gateway_backpressure_state */
};

long long gw_bp_limit(const struct gw_bp_policy *p, long long lag, enum gw_bp_state *state)
{
	long long floor = p->floor < p->rate ? p->floor : p->rate;
	double frac;

	if (lag < p->lag_normal) {
		*state = GW_BP_NORMAL;
		return p->rate;
	}
	if (lag > p->lag_critical) {
		*state = GW_BP_CRITICAL;
		return floor;
	}
	*state = GW_BP_DEGRADED;
	if (p->lag_critical <= p->lag_normal)
		return floor;
	/* Linear from rate at lag_normal to floor at lag_critical. */
	frac = (double)(lag - p->lag_normal) / (double)(p->lag_critical - p->lag_normal);
	return p->rate - (long long)((double)(p->rate - floor) * frac + 0.5);
}

long gw_ingest_cost(enum gw_ingest_form form, const char *body, size_t len)
{
	const char *p = body, *end = body ? body + len : body;
	bool in_str = false, esc = false, array = false, want = false;
	long depth = 0, n = 0;

	if (form == GW_INGEST_ONE || !body)
		return 1;
	if (form == GW_INGEST_OTLP)
		return len ? (long)((len + 1023) / 1024) : 1;
	if (end - p >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	/* One pass over the bytes, strings skipped: in an array an element
	 * starts at the first non-blank byte after '[' or a comma of depth 1;
	 * outside one, an object at each '{' of depth 0. */
	array = p < end && *p == '[';
	for (; p < end; p++) {
		char c = *p;

		if (in_str) {
			if (esc) {
				esc = false;
				continue;
			}
			/* Most of a batch is inside strings: run to the next quote
			 * or backslash in a tight loop. */
			while (p < end && *p != '"' && *p != '\\')
				p++;
			if (p >= end)
				break;
			if (*p == '\\')
				esc = true;
			else
				in_str = false;
			continue;
		}
		if (want && depth == 1 && c != ' ' && c != '\t' && c != '\r' && c != '\n' &&
		    c != ']') {
			n++;
			want = false;
		}
		switch (c) {
		case '"':
			in_str = true;
			break;
		case '{':
			if (!array && depth == 0)
				n++;
			depth++;
			break;
		case '[':
			depth++;
			if (array && depth == 1)
				want = true;
			break;
		case '}':
		case ']':
			depth--;
			break;
		case ',':
			if (array && depth == 1)
				want = true;
			break;
		default:
			break;
		}
	}
	return n > 0 ? n : 1;
}

const char *gw_bp_state_name(enum gw_bp_state s)
{
	switch (s) {
	case GW_BP_NORMAL:
		return "NORMAL";
	case GW_BP_DEGRADED:
		return "DEGRADED";
	case GW_BP_CRITICAL:
		return "CRITICAL";
	}
	return "UNKNOWN";
}

void gw_bp_groups_free(struct gw_bp_group *g)
{
	size_t i, j;

	if (!g)
		return;
	for (i = 0; g[i].name; i++) {
		for (j = 0; g[i].topics[j]; j++)
			free(g[i].topics[j]);
		free(g[i].topics);
		free(g[i].name);
	}
	free(g);
}

static char *dup_trimmed(const char *s, size_t n)
{
	char *out;

	while (n > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	out = lp_xmalloc(n + 1);
	memcpy(out, s, n);
	out[n] = '\0';
	return out;
}

struct gw_bp_group *gw_bp_groups_parse(const char *spec, char *err, size_t errlen)
{
	struct gw_bp_group *g = lp_xcalloc(1, sizeof(*g));
	size_t n = 0;
	const char *p = spec ? spec : "";

	while (*p) {
		size_t len = strcspn(p, ",");
		const char *eq = memchr(p, '=', len), *t;
		size_t nt = 0;

		if (len == 0) {
			p++;
			continue;
		}
		if (n == GW_BP_MAX_GROUPS) {
			snprintf(err, errlen, "backpressure.groups: at most %d groups", GW_BP_MAX_GROUPS);
			goto fail;
		}
		g = lp_xrealloc(g, (n + 2) * sizeof(*g));
		memset(&g[n], 0, 2 * sizeof(*g));
		if (!eq) {
			snprintf(err, errlen,
				 "backpressure.groups: \"%.*s\" names no topics (GROUP=TOPIC+TOPIC)",
				 (int)len, p);
			goto fail;
		}
		g[n].name = dup_trimmed(p, (size_t)(eq - p));
		g[n].topics = lp_xcalloc(1, sizeof(char *));
		for (t = eq + 1; t < p + len;) {
			size_t tl = strcspn(t, "+,");
			char *topic = dup_trimmed(t, tl);

			if (!*topic) {
				free(topic);
			} else {
				g[n].topics = lp_xrealloc(g[n].topics, (nt + 2) * sizeof(char *));
				g[n].topics[nt++] = topic;
				g[n].topics[nt] = NULL;
			}
			t += tl;
			if (*t == '+')
				t++;
		}
		n++;
		if (!*g[n - 1].name || nt == 0) {
			snprintf(err, errlen, "backpressure.groups: empty group or topic in \"%.*s\"",
				 (int)len, p);
			goto fail;
		}
		p += len;
	}
	return g;
fail:
	gw_bp_groups_free(g);
	return NULL;
}

/* librdkafka's own messages go to the JSON log. */
static void on_kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	if (level <= 4)
		lp_warn("kafka lag reader: %s: %s", fac, buf);
	else
		lp_debug("kafka lag reader: %s: %s", fac, buf);
}

/* A consumer handle carrying group (never subscribed), or NULL with err. */
static rd_kafka_t *group_handle(const char *brokers, const char *group, char *err, size_t errlen)
{
	static const char *const props[] = {
		"client.id", "logpipe-gateway-lag", "enable.auto.commit", "false",
		"enable.auto.offset.store", "false", "enable.partition.eof", "false",
	};
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char kerr[256];
	rd_kafka_t *rk;
	size_t i;

	if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, kerr, sizeof(kerr)) !=
		    RD_KAFKA_CONF_OK ||
	    rd_kafka_conf_set(conf, "group.id", group, kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK)
		goto bad;
	for (i = 0; i < LP_ARRAY_SIZE(props); i += 2)
		if (rd_kafka_conf_set(conf, props[i], props[i + 1], kerr, sizeof(kerr)) !=
		    RD_KAFKA_CONF_OK)
			goto bad;
	rd_kafka_conf_set_log_cb(conf, on_kafka_log);
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kerr, sizeof(kerr));
	if (rk)
		return rk; /* conf is owned by rk now */
	snprintf(err, errlen, "kafka: %s", kerr);
	return NULL;
bad:
	snprintf(err, errlen, "kafka: %s", kerr);
	rd_kafka_conf_destroy(conf);
	return NULL;
}

static int remaining_ms(int64_t deadline)
{
	int64_t left = deadline - lp_now_ms();

	return left > 0 ? (int)left : 1;
}

/*
 * The lag of the handle's group over topics.  Returns 0 and sets *lag, or
 * -EIO with err.
 */
static int group_lag(rd_kafka_t *rk, char *const *topics, int timeout_ms, long long *lag,
		     char *err, size_t errlen)
{
	int64_t deadline = lp_now_ms() + timeout_ms, lo, hi;
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_partition_list_t *l = NULL;
	rd_kafka_resp_err_t e;
	long long sum = 0;
	int t, p, i, ret = -EIO;
	size_t k;

	e = rd_kafka_metadata(rk, 1, NULL, &md, remaining_ms(deadline));
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(err, errlen, "metadata: %s", rd_kafka_err2str(e));
		return -EIO;
	}
	l = rd_kafka_topic_partition_list_new(16);
	for (t = 0; t < md->topic_cnt; t++) {
		const rd_kafka_metadata_topic_t *mt = &md->topics[t];

		for (k = 0; topics[k]; k++)
			if (strcmp(topics[k], mt->topic) == 0)
				break;
		if (!topics[k] || mt->err != RD_KAFKA_RESP_ERR_NO_ERROR)
			continue;
		for (p = 0; p < mt->partition_cnt; p++)
			rd_kafka_topic_partition_list_add(l, mt->topic, mt->partitions[p].id);
	}
	rd_kafka_metadata_destroy(md);
	if (l->cnt == 0) {
		snprintf(err, errlen, "none of its topics exists");
		goto out;
	}
	e = rd_kafka_committed(rk, l, remaining_ms(deadline));
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(err, errlen, "committed offsets: %s", rd_kafka_err2str(e));
		goto out;
	}
	for (i = 0; i < l->cnt; i++) {
		rd_kafka_topic_partition_t *tp = &l->elems[i];

		e = rd_kafka_query_watermark_offsets(rk, tp->topic, tp->partition, &lo, &hi,
						     remaining_ms(deadline));
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
			snprintf(err, errlen, "watermarks of %s[%d]: %s", tp->topic, tp->partition,
				 rd_kafka_err2str(e));
			goto out;
		}
		if (tp->err != RD_KAFKA_RESP_ERR_NO_ERROR || tp->offset < 0)
			sum += hi - lo; /* nothing committed: the group reads from the start */
		else if (hi > tp->offset)
			sum += hi - tp->offset;
	}
	*lag = sum;
	ret = 0;
out:
	rd_kafka_topic_partition_list_destroy(l);
	return ret;
}

/* One reading of every group; publishes the result. */
static void read_lag(struct gw_backpressure *b)
{
	struct gw_bp_snapshot *s = &b->snap;
	long long total = 0, lag, limit;
	long long lags[GW_BP_MAX_GROUPS];
	enum gw_bp_state state;
	const char *failed = NULL;
	char why[160] = "";
	size_t i;
	int timeout = b->interval_ms > 500 ? b->interval_ms : 500;

	for (i = 0; i < b->ngroups && !atomic_load(&b->stop); i++) {
		if (group_lag(b->rks[i], b->groups[i].topics, timeout, &lag, why,
			      sizeof(why)) < 0) {
			lags[i] = -1;
			failed = b->groups[i].name;
			continue;
		}
		lags[i] = lag;
		total += lag;
		lp_series_set(lp_metric_series(b->lag_metric, b->groups[i].name), (double)lag);
	}
	for (i = 0; i < b->ngroups; i++)
		rd_kafka_poll(b->rks[i], 0);
	if (atomic_load(&b->stop))
		return;

	pthread_mutex_lock(&b->mu);
	for (i = 0; i < b->ngroups; i++)
		s->groups[i].lag = lags[i];
	if (failed) {
		snprintf(s->error, sizeof(s->error),
			 "cannot read the lag of group \"%s\" (%s); keeping the last limit", failed,
			 why);
	} else {
		s->error[0] = '\0';
		limit = gw_bp_limit(&b->policy, total, &state);
		if (state != s->state || s->lag < 0)
			lp_log(state == GW_BP_NORMAL ? LP_LOG_INFO : LP_LOG_WARN,
			       "ingest backpressure %s: lag %lld, limit %lld events/s",
			       gw_bp_state_name(state), total, limit);
		s->state = state;
		s->lag = total;
		s->limit = limit;
		s->updated_ms = lp_wall_ms();
		atomic_store(&b->limit, limit);
		lp_series_set(b->limit_gauge, (double)limit);
		lp_series_set(b->state_gauge, (double)state);
	}
	pthread_mutex_unlock(&b->mu);
}

static void *reader_main(void *arg)
{
	struct gw_backpressure *b = arg;
	int64_t t0;
	bool warned = false;

	while (!atomic_load(&b->stop)) {
		t0 = lp_now_ms();
		read_lag(b);
		pthread_mutex_lock(&b->mu);
		if (b->snap.error[0] && !warned)
			lp_warn("%s", b->snap.error);
		warned = b->snap.error[0] != '\0';
		pthread_mutex_unlock(&b->mu);
		lp_sleep_ms(b->interval_ms - (lp_now_ms() - t0), &b->stop);
	}
	return NULL;
}

struct gw_backpressure *gw_bp_start(const struct gw_bp_opts *o, char *err, size_t errlen)
{
	struct gw_backpressure *b = lp_xcalloc(1, sizeof(*b));
	struct lp_registry *reg = lp_registry_default();
	size_t i;

	pthread_mutex_init(&b->mu, NULL);
	b->policy = o->policy;
	b->interval_ms = o->interval_ms > 0 && o->interval_ms <= 1000 ? o->interval_ms : 1000;
	atomic_store(&b->limit, o->policy.rate);
	b->snap.state = GW_BP_NORMAL;
	b->snap.lag = -1;
	b->snap.limit = o->policy.rate;
	b->snap.policy = o->policy;
	b->lag_metric = lp_metric_new(reg, LP_GAUGE, "kafka_consumer_lag",
				      "Messages not yet consumed, per consumer group", "group", NULL, 0);
	b->limit_gauge = lp_gauge(reg, "gateway_ingest_limit",
				  "Current ingest limit in events per second per client (adaptive)");
	b->state_gauge = lp_gauge(reg, "gateway_backpressure_state",
				  "Ingest state: 0 normal, 1 degraded, 2 critical");
	lp_series_set(b->limit_gauge, (double)o->policy.rate);

	if (!o->brokers || !*o->brokers)
		return b; /* disabled: the limit stays at rate */

	b->groups = gw_bp_groups_parse(o->groups, err, errlen);
	if (!b->groups)
		goto fail;
	for (b->ngroups = 0; b->groups[b->ngroups].name; b->ngroups++) {
		lp_strlcpy(b->snap.groups[b->ngroups].name, b->groups[b->ngroups].name,
			   sizeof(b->snap.groups[0].name));
		b->snap.groups[b->ngroups].lag = -1;
	}
	b->snap.ngroups = b->ngroups;
	b->snap.enabled = b->ngroups > 0;
	if (b->ngroups == 0)
		return b;

	b->rks = lp_xcalloc(b->ngroups, sizeof(*b->rks));
	for (i = 0; i < b->ngroups; i++) {
		b->rks[i] = group_handle(o->brokers, b->groups[i].name, err, errlen);
		if (!b->rks[i])
			goto fail;
	}
	if (pthread_create(&b->thread, NULL, reader_main, b) != 0) {
		snprintf(err, errlen, "cannot start the lag reader thread");
		goto fail;
	}
	b->started = true;
	return b;
fail:
	gw_bp_stop(b);
	return NULL;
}

void gw_bp_stop(struct gw_backpressure *b)
{
	size_t i;

	if (!b)
		return;
	atomic_store(&b->stop, true);
	if (b->started)
		pthread_join(b->thread, NULL);
	for (i = 0; b->rks && i < b->ngroups; i++) {
		if (!b->rks[i])
			continue;
		rd_kafka_consumer_close(b->rks[i]);
		rd_kafka_destroy(b->rks[i]);
	}
	free(b->rks);
	gw_bp_groups_free(b->groups);
	pthread_mutex_destroy(&b->mu);
	free(b);
}

long long gw_bp_current_limit(struct gw_backpressure *b)
{
	return atomic_load(&b->limit);
}

void gw_bp_snapshot(struct gw_backpressure *b, struct gw_bp_snapshot *out)
{
	pthread_mutex_lock(&b->mu);
	*out = b->snap;
	pthread_mutex_unlock(&b->mu);
	out->age_ms = out->updated_ms ? lp_wall_ms() - out->updated_ms : -1;
}
