/* table.c - tier 1: an in-process copy of the metadata-changes topic.
 *
 * Design.  metadata-changes is compacted and keyed host:NAME /
 * service:NAME, so reading it from the beginning and applying every
 * record in order leaves exactly the current metadata.  The feed thread
 * owns a plain librdkafka consumer that assign()s every partition at
 * OFFSET_BEGINNING: no group membership (so no rebalance delay and no
 * other enricher sharing the partitions) and no commits (so every start is
 * a rebuild).  enable.partition.eof tells when a partition has been read
 * to its end; once each has, the table is loaded.  The topic's partition
 * list is re-read every few seconds, which also copes with the topic not
 * existing yet when the enricher starts.
 *
 * Hosts are filed twice, under host:NAME and hostip:IP, sharing one
 * record.  When a host's address changes or the host is deleted, its old
 * hostip: entry is removed only if it still points at that host, so
 * changes of two hosts swapping an address apply correctly in any order. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "logpipe/breaker.h"
#include "logpipe/log.h"
#include "logpipe/util.h"
#include "strmap.h"
#include "table.h"

#include "logpipe/banned.h"

#define MAX_KEY 600           /* longest key filed: prefix plus a 512-byte name */
#define REFRESH_MS 3000       /* how often the partition list is re-read */

struct mdtable {
	pthread_rwlock_t lock;       /* guards map, hosts, services */
	struct strmap map;           /* key -> struct md_record * (one reference each) */
	size_t hosts, services;      /* records held, by kind */
	mdtable_change_fn on_change; /* told about every changed key, or NULL */
	void *on_change_ud;          /* its argument */

	pthread_mutex_t mu;          /* guards the fields below, with cv */
	pthread_cond_t cv;           /* signalled when loaded turns true */
	bool loaded;                 /* every partition read to its end once */
	bool feed_ok;                /* the last poll reached the broker */
	char feed_err[160];          /* the last consumer error, for /health */

	rd_kafka_t *rk;              /* the feed's consumer, NULL without a feed */
	char *topic;                 /* metadata-changes */
	struct lp_breaker *br;       /* records the feed's health, may be NULL */
	int64_t started_ms;          /* when the feed started (monotonic) */
	pthread_t thread;            /* the feed thread */
	bool thread_started;         /* thread must be joined */
	atomic_bool stop;            /* asks the feed thread to return */
};

struct mdtable *mdtable_new(mdtable_change_fn on_change, void *ud)
{
	struct mdtable *t = lp_xcalloc(1, sizeof(*t));

	pthread_rwlock_init(&t->lock, NULL);
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cv, NULL);
	t->on_change = on_change;
	t->on_change_ud = ud;
	return t;
}

static void unref_value(void *v)
{
	md_record_unref(v);
}

void mdtable_free(struct mdtable *t)
{
	if (!t)
		return;
	if (t->thread_started) {
		atomic_store(&t->stop, true);
		pthread_join(t->thread, NULL);
	}
	if (t->rk) {
		rd_kafka_consumer_close(t->rk);
		rd_kafka_destroy(t->rk);
	}
	strmap_clear(&t->map, unref_value);
	pthread_rwlock_destroy(&t->lock);
	pthread_mutex_destroy(&t->mu);
	pthread_cond_destroy(&t->cv);
	free(t->topic);
	free(t);
}

/* ---- applying changes ------------------------------------------------------ */

/* Removes hostip:IP if it still points at rec.  Caller holds the write lock. */
static void drop_ip_locked(struct mdtable *t, const struct md_record *rec)
{
	char key[MAX_KEY];

	if (!rec || !rec->ip || !md_key(key, sizeof(key), "hostip", rec->ip))
		return;
	if (strmap_get(&t->map, key) == rec)
		md_record_unref(strmap_del(&t->map, key));
}

static void notify_ip(struct mdtable *t, const char *ip)
{
	char key[MAX_KEY];

	if (ip && t->on_change && md_key(key, sizeof(key), "hostip", ip))
		t->on_change(t->on_change_ud, key);
}

int mdtable_apply(struct mdtable *t, const char *key, size_t keylen, const char *val,
		  size_t vallen)
{
	char k[MAX_KEY], ipkey[MAX_KEY], err[160];
	struct md_record *rec = NULL, *old;
	enum md_kind kind;
	char *old_ip = NULL;

	if (!key || keylen == 0 || keylen >= sizeof(k))
		return -EINVAL;
	memcpy(k, key, keylen);
	k[keylen] = '\0';
	if (lp_str_has_prefix(k, "host:") && k[5])
		kind = MD_HOST;
	else if (lp_str_has_prefix(k, "service:") && k[8])
		kind = MD_SERVICE;
	else
		return -EINVAL;
	if (val) {
		rec = md_record_parse(kind, val, vallen, err, sizeof(err));
		if (!rec) {
			lp_log_kv(LP_LOG_WARN, (const char *[]){ "key", k, NULL },
				  "ignoring a metadata change: %s", err);
			return -EINVAL;
		}
	}

	pthread_rwlock_wrlock(&t->lock);
	old = rec ? strmap_put(&t->map, k, md_record_ref(rec)) : strmap_del(&t->map, k);
	if (kind == MD_HOST) {
		drop_ip_locked(t, old);
		if (rec && rec->ip && md_key(ipkey, sizeof(ipkey), "hostip", rec->ip))
			md_record_unref(strmap_put(&t->map, ipkey, md_record_ref(rec)));
	}
	if (!old && rec)
		*(kind == MD_HOST ? &t->hosts : &t->services) += 1;
	else if (old && !rec)
		*(kind == MD_HOST ? &t->hosts : &t->services) -= 1;
	pthread_rwlock_unlock(&t->lock);

	if (old && old->ip)
		old_ip = lp_xstrdup(old->ip);
	md_record_unref(old);
	if (t->on_change) {
		t->on_change(t->on_change_ud, k);
		notify_ip(t, old_ip);
		notify_ip(t, rec ? rec->ip : NULL);
	}
	free(old_ip);
	md_record_unref(rec);
	return 0;
}

struct md_record *mdtable_get(struct mdtable *t, const char *key)
{
	struct md_record *r;

	pthread_rwlock_rdlock(&t->lock);
	r = md_record_ref(strmap_get(&t->map, key));
	pthread_rwlock_unlock(&t->lock);
	return r;
}

void mdtable_counts(struct mdtable *t, size_t *hosts, size_t *services)
{
	pthread_rwlock_rdlock(&t->lock);
	*hosts = t->hosts;
	*services = t->services;
	pthread_rwlock_unlock(&t->lock);
}

/* ---- state ---------------------------------------------------------------- */

static void set_loaded(struct mdtable *t)
{
	bool was;
	size_t h, s;

	pthread_mutex_lock(&t->mu);
	was = t->loaded;
	if (!t->loaded) {
		t->loaded = true;
		pthread_cond_broadcast(&t->cv);
	}
	pthread_mutex_unlock(&t->mu);
	if (!was) {
		mdtable_counts(t, &h, &s);
		lp_info("tier 1 loaded from %s: %zu hosts, %zu services in %lld ms",
			t->topic ? t->topic : "(none)", h, s, (long long)(lp_now_ms() - t->started_ms));
	}
}

bool mdtable_loaded(struct mdtable *t)
{
	bool l;

	pthread_mutex_lock(&t->mu);
	l = t->loaded;
	pthread_mutex_unlock(&t->mu);
	return l;
}

bool mdtable_wait_loaded(struct mdtable *t, int timeout_ms, const atomic_bool *stop)
{
	int64_t end = lp_now_ms() + timeout_ms;
	bool l;

	pthread_mutex_lock(&t->mu);
	while (!t->loaded && !(stop && atomic_load(stop)) && lp_now_ms() < end) {
		struct timespec ts;

		/* Short waits so that *stop is noticed promptly. */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&t->cv, &t->mu, &ts);
	}
	l = t->loaded;
	pthread_mutex_unlock(&t->mu);
	return l;
}

static void set_feed(struct mdtable *t, bool ok, const char *err)
{
	bool changed;

	pthread_mutex_lock(&t->mu);
	changed = t->feed_ok != ok;
	t->feed_ok = ok;
	if (err)
		lp_strlcpy(t->feed_err, err, sizeof(t->feed_err));
	pthread_mutex_unlock(&t->mu);
	if (t->br)
		lp_breaker_record(t->br, ok, 0);
	if (changed && !ok)
		lp_warn("metadata-changes feed failing: %s", err ? err : "unknown error");
	else if (changed)
		lp_info("metadata-changes feed reached the broker");
}

bool mdtable_feed_healthy(struct mdtable *t, char *detail, size_t len)
{
	size_t h, s;
	bool ok, loaded;

	mdtable_counts(t, &h, &s);
	pthread_mutex_lock(&t->mu);
	ok = t->feed_ok;
	loaded = t->loaded;
	snprintf(detail, len, "%s; %zu hosts, %zu services%s%s", loaded ? "loaded" : "loading", h,
		 s, ok ? "" : "; ", ok ? "" : t->feed_err);
	pthread_mutex_unlock(&t->mu);
	return ok;
}

/* ---- the feed --------------------------------------------------------------- */

/* What the feed thread knows about the topic's partitions. */
struct feed_parts {
	int count;          /* partitions assigned */
	bool *eof;          /* partition reached its end at least once */
	int eofs;           /* how many have */
	int64_t next_check; /* monotonic ms of the next partition-list refresh */
};

/* Reads the partition count; returns it, 0 if the topic does not exist, or
 * -1 if the broker could not be asked. */
static int topic_partitions(struct mdtable *t)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(t->rk, t->topic, NULL);
	rd_kafka_resp_err_t e;
	int n = -1;

	if (!rkt)
		return -1;
	e = rd_kafka_metadata(t->rk, 0, rkt, &md, 2000);
	if (e == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1) {
		if (md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
			n = 0;
		else if (md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
			n = md->topics[0].partition_cnt;
	} else if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		set_feed(t, false, rd_kafka_err2str(e));
	}
	if (md)
		rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(rkt);
	return n;
}

/* Assigns partitions [fp->count, n) from the beginning. */
static void assign_new(struct mdtable *t, struct feed_parts *fp, int n)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n - fp->count);
	rd_kafka_error_t *e;
	int i;

	for (i = fp->count; i < n; i++)
		rd_kafka_topic_partition_list_add(l, t->topic, i)->offset = RD_KAFKA_OFFSET_BEGINNING;
	e = rd_kafka_incremental_assign(t->rk, l);
	rd_kafka_topic_partition_list_destroy(l);
	if (e) {
		lp_warn("cannot assign %s: %s", t->topic, rd_kafka_error_string(e));
		rd_kafka_error_destroy(e);
		return;
	}
	fp->eof = lp_xrealloc(fp->eof, (size_t)n * sizeof(*fp->eof));
	for (i = fp->count; i < n; i++)
		fp->eof[i] = false;
	lp_info("reading %s partitions %d..%d from the beginning", t->topic, fp->count, n - 1);
	fp->count = n;
}

static void refresh_partitions(struct mdtable *t, struct feed_parts *fp)
{
	int n = topic_partitions(t);

	if (n < 0) {
		fp->next_check = lp_now_ms() + 1000;
		return;
	}
	fp->next_check = lp_now_ms() + REFRESH_MS;
	if (n > fp->count)
		assign_new(t, fp, n);
	if (n == 0 || fp->eofs == fp->count)
		set_loaded(t); /* nothing (more) to read before serving */
}

static void handle_message(struct mdtable *t, struct feed_parts *fp, rd_kafka_message_t *m)
{
	if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
		if (m->partition >= 0 && m->partition < fp->count && !fp->eof[m->partition]) {
			fp->eof[m->partition] = true;
			if (++fp->eofs == fp->count)
				set_loaded(t);
		}
		set_feed(t, true, NULL);
		return;
	}
	if (m->err) {
		set_feed(t, false, rd_kafka_message_errstr(m));
		return;
	}
	set_feed(t, true, NULL);
	mdtable_apply(t, m->key, m->key_len, m->payload, m->len);
}

static void *feed_main(void *arg)
{
	struct mdtable *t = arg;
	struct feed_parts fp = { 0 };

	while (!atomic_load(&t->stop)) {
		rd_kafka_message_t *m;

		if (lp_now_ms() >= fp.next_check)
			refresh_partitions(t, &fp);
		m = rd_kafka_consumer_poll(t->rk, 100);
		if (!m)
			continue;
		handle_message(t, &fp, m);
		rd_kafka_message_destroy(m);
	}
	free(fp.eof);
	return NULL;
}

static int conf_set(rd_kafka_conf_t *c, const char *k, const char *v, char *err, size_t errlen)
{
	return rd_kafka_conf_set(c, k, v, err, errlen) == RD_KAFKA_CONF_OK ? 0 : -EINVAL;
}

int mdtable_start_feed(struct mdtable *t, const char *brokers, const char *topic,
		       struct lp_breaker *br, char *err, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char group[128], host[64] = "host";
	int rc;

	/* A group id of its own: never joined (assign only) nor committed. */
	gethostname(host, sizeof(host) - 1);
	snprintf(group, sizeof(group), "logpipe-enricher-table-%s-%ld-%lld", host, (long)getpid(),
		 (long long)lp_now_us());
	if (conf_set(conf, "bootstrap.servers", brokers, err, errlen) < 0 ||
	    conf_set(conf, "group.id", group, err, errlen) < 0 ||
	    conf_set(conf, "enable.auto.commit", "false", err, errlen) < 0 ||
	    conf_set(conf, "enable.auto.offset.store", "false", err, errlen) < 0 ||
	    conf_set(conf, "enable.partition.eof", "true", err, errlen) < 0 ||
	    conf_set(conf, "auto.offset.reset", "earliest", err, errlen) < 0 ||
	    conf_set(conf, "fetch.wait.max.ms", "50", err, errlen) < 0 ||
	    conf_set(conf, "allow.auto.create.topics", "false", err, errlen) < 0) {
		rd_kafka_conf_destroy(conf);
		return -EINVAL;
	}
	t->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errlen);
	if (!t->rk) {
		rd_kafka_conf_destroy(conf);
		return -EINVAL;
	}
	t->topic = lp_xstrdup(topic);
	t->br = br;
	t->started_ms = lp_now_ms();
	t->feed_ok = true;
	rc = pthread_create(&t->thread, NULL, feed_main, t);
	if (rc != 0) {
		snprintf(err, errlen, "cannot start the feed thread: %s", strerror(rc));
		return -rc;
	}
	t->thread_started = true;
	return 0;
}
