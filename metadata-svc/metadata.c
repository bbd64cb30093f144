/* metadata.c - the metadata service's requests, change feed and resync.
 *
 *   GET    /api/metadata/{hosts|services}?limit=&offset=   a page, ordered by key
 *   POST   /api/metadata/{hosts|services}                  201, 409 if the key is taken
 *   GET    /api/metadata/hosts/by-ip/{ip}                  the host with that address
 *   GET    /api/metadata/{hosts|services}/{key}            200 or 404
 *   PUT    /api/metadata/{hosts|services}/{key}            replace: 200 or 404
 *   PATCH  /api/metadata/{hosts|services}/{key}            the fields given: 200 or 404
 *   DELETE /api/metadata/{hosts|services}/{key}            204 or 404
 *
 * A write is one transaction: lock the old row, write the new one,
 * publish the new record (or a tombstone) to metadata-changes and wait for
 * Kafka's acknowledgement, then COMMIT, then invalidate the cache, then
 * answer.  Publishing inside the transaction keeps the topic and the
 * database in the same order per key (the row lock serialises writers),
 * and a failed publish rolls the write back (503): the client never sees
 * a success that the enrichers will not hear of.  If COMMIT itself fails
 * after the publish, the record's state is read again and republished so
 * that the topic converges on what the database holds.
 *
 * Reads are cache-aside through cache.c.  At start a resync thread
 * republishes every record (in key order, rows locked FOR SHARE while
 * their batch is published so that a concurrent write is ordered after
 * it), which repairs the topic if it was lost or if rows were written
 * behind the service's back. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "cache.h"
#include "logpipe/breaker.h"
#include "logpipe/http.h"
#include "logpipe/kafka.h"
#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/pg.h"
#include "logpipe/ratelimit.h"
#include "logpipe/util.h"
#include "metadata.h"
#include "record.h"
#include "store.h"

#include "logpipe/banned.h"

#define OPT(key, type, def, field, help, lo, hi) \
	{ key, type, def, offsetof(struct metadata_settings, field), help, lo, hi }

const struct lp_cfg_opt metadata_options[] = {
	OPT("http.listen", LP_CFG_STR, "8082", http_listen, "address:port or port to serve HTTP on", 0, 0),
	OPT("http.threads", LP_CFG_INT, "16", http_threads, "HTTP worker threads", 1, 1024),
	OPT("http.front", LP_CFG_STR, "events", http_front, "events: an event loop front takes the connections (slow clients hold no thread) and passes requests to CivetWeb behind it; civetweb: CivetWeb threads serve everything", 0, 0),
	OPT("http.event_loops", LP_CFG_INT, "1", http_loops, "event loop threads of the events front; 0: one per CPU, at most 8", 0, 8),
	OPT("log.level", LP_CFG_STR, "info", log_level, "debug, info, warn or error", 0, 0),
	OPT("pg.dsn", LP_CFG_STR, "postgresql://postgres@127.0.0.1:5432/logpipe", pg_dsn, "PostgreSQL connection string", 0, 0),
	OPT("pg.pool_size", LP_CFG_INT, "8", pg_pool_size, "PostgreSQL connections in the pool", 1, 256),
	OPT("pg.timeout_ms", LP_CFG_INT, "2000", pg_timeout_ms, "longest wait for a pooled connection before 503", 10, 60000),
	OPT("redis.url", LP_CFG_STR, "redis://127.0.0.1:6379", redis_url, "Redis of the cache; empty disables caching", 0, 0),
	OPT("redis.timeout_ms", LP_CFG_INT, "200", redis_timeout_ms, "Redis connect and command timeout", 1, 60000),
	OPT("cache.ttl_s", LP_CFG_INT, "120", cache_ttl_s, "lifetime of a cached record in seconds", 1, 86400),
	OPT("kafka.brokers", LP_CFG_STR, "127.0.0.1:9092", kafka_brokers, "Kafka bootstrap servers", 0, 0),
	OPT("kafka.timeout_ms", LP_CFG_INT, "5000", kafka_timeout_ms, "delivery timeout of a change before the write is rolled back", 100, 600000),
	OPT("topics.metadata", LP_CFG_STR, "metadata-changes", topic_metadata, "compacted topic every change is published to", 0, 0),
	OPT("publish.resync_on_start", LP_CFG_BOOL, "true", resync_on_start, "republish every record to the topic at start", 0, 0),
	OPT("api.list_max", LP_CFG_INT, "1000", list_max, "largest page a list returns", 1, 100000),
	LP_CFG_END,
};

#define RESYNC_BATCH 500

/* One REST collection: the service and the kind it serves. */
struct coll {
	struct metadata *m;
	const struct md_kind *k;
};

struct metadata {
	const struct metadata_settings *s; /* settings, owned by main */
	struct lp_pgpool *pool;            /* PostgreSQL */
	struct lp_breaker *pg_br;          /* "postgres" */
	struct mdcache *cache;             /* Redis cache-aside */
	struct lp_kproducer *kp;           /* metadata-changes */
	struct lp_breaker *kafka_br;       /* "kafka" */
	struct lp_http_server *http;       /* the REST API */
	struct coll hosts, services;       /* route contexts */
	pthread_t resync;                  /* the start-up resync */
	bool resync_started;               /* resync must be joined */
	atomic_bool stop;                  /* asks the resync to return */
	struct lp_series *published;       /* metadata_changes_published_total */
	struct lp_series *publish_failed;  /* metadata_changes_failed_total */
	struct lp_series *resynced;        /* metadata_resync_records_total */
};

/* ---- replies ---------------------------------------------------------------------- */

static void reply_invalid(struct lp_http_req *r, const struct md_invalid *why)
{
	lp_http_reply_json(r, 400,
			   json_pack("{s:s, s:{s:s, s:s, s:s}}", "status", "error", "error", "code",
				     "invalid_field", "field", why->field, "message", why->message),
			   NULL);
}

static void reply_unavailable(struct lp_http_req *r, const char *code, struct lp_breaker *br,
			      const char *what)
{
	char hdr[64];
	long secs = (long)(lp_breaker_retry_after_ms(br) / 1000) + 1;

	snprintf(hdr, sizeof(hdr), "Retry-After: %ld\r\n", secs);
	lp_http_reply_error(r, 503, code, hdr, "%s is unavailable; retry later", what);
}

static void reply_db_error(struct metadata *m, struct lp_http_req *r, const struct store_err *e)
{
	if (e->broken) {
		reply_unavailable(r, "database_unavailable", m->pg_br, "the database");
		return;
	}
	lp_error("database: %s", e->message);
	lp_http_reply_error(r, 500, "database_error", NULL, "the database refused the statement");
}

/* ---- PostgreSQL connections ----------------------------------------------------------- */

/* A pooled connection, or NULL after answering 503. */
static PGconn *conn_get(struct metadata *m, struct lp_http_req *r)
{
	char err[256] = "";
	PGconn *c;

	if (!lp_breaker_allow(m->pg_br)) {
		if (r)
			reply_unavailable(r, "database_unavailable", m->pg_br, "the database");
		return NULL;
	}
	c = lp_pgpool_get(m->pool, (int)m->s->pg_timeout_ms, err, sizeof(err));
	if (!c) {
		lp_breaker_record(m->pg_br, false, 0);
		lp_warn("database: %s", err);
		if (r)
			reply_unavailable(r, "database_unavailable", m->pg_br, "the database");
	}
	return c;
}

static void conn_put(struct metadata *m, PGconn *c, bool broken)
{
	lp_breaker_record(m->pg_br, !broken, 0);
	lp_pgpool_put(m->pool, c, broken);
}

/* ---- the change feed ------------------------------------------------------------------- */

/*
 * Publishes n records of kind k (recs[i] NULL: a tombstone for keys[i]) and
 * waits for every acknowledgement.  Returns 0 when all were acknowledged.
 */
static int publish(struct metadata *m, const struct md_kind *k, const char *const *keys,
		   json_t *const *recs, size_t n)
{
	rd_kafka_resp_err_t *results = lp_xcalloc(n ? n : 1, sizeof(*results));
	struct lp_kwait w;
	size_t i, ok = 0;
	int64_t t0 = lp_now_ms();
	char key[600];

	if (!lp_breaker_allow(m->kafka_br)) {
		free(results);
		return -EAGAIN;
	}
	lp_kwait_init(&w, results);
	for (i = 0; i < n; i++) {
		char *text = recs[i] ? json_dumps(recs[i], JSON_COMPACT) : NULL;

		lp_kwait_add(&w);
		if (!md_cache_key(key, sizeof(key), k->name, keys[i]) || (recs[i] && !text)) {
			lp_kwait_cancel(&w, i, RD_KAFKA_RESP_ERR__FAIL);
			free(text);
			continue;
		}
		if (lp_kproducer_send(m->kp, m->s->topic_metadata, key, strlen(key), text,
				      text ? strlen(text) : 0, NULL, 1000, lp_kwait_done,
				      lp_kwait_slot(&w, i)) < 0)
			lp_kwait_cancel(&w, i, RD_KAFKA_RESP_ERR__QUEUE_FULL);
		free(text);
	}
	/* Deliveries are bounded by message.timeout.ms, so this wait ends. */
	if (lp_kwait_wait(&w, (int)m->s->kafka_timeout_ms + 5000) < 0)
		lp_kwait_wait(&w, -1);
	for (i = 0; i < n; i++)
		if (results[i] == RD_KAFKA_RESP_ERR_NO_ERROR)
			ok++;
	if (ok < n)
		lp_warn("%zu of %zu metadata changes not acknowledged: %s", n - ok, n,
			rd_kafka_err2str(w.first_err));
	lp_kwait_release(&w);
	free(results);
	lp_breaker_record(m->kafka_br, ok == n, lp_now_ms() - t0);
	lp_series_add(m->published, (double)ok);
	lp_series_add(m->publish_failed, (double)(n - ok));
	return ok == n ? 0 : -EIO;
}

/* After a COMMIT that failed or may not have happened: publish what the
 * database holds now, so the topic converges on it. */
static void reconcile(struct metadata *m, const struct md_kind *k, const char *key)
{
	struct store_err e = { 0 };
	json_t *rec = NULL;
	PGconn *c = conn_get(m, NULL);
	int ret;

	if (!c)
		goto fail;
	ret = store_get(c, k, 0, key, false, &rec, &e);
	conn_put(m, c, e.broken);
	if ((ret == 0 || ret == -ENOENT) && publish(m, k, &key, &rec, 1) == 0) {
		json_decref(rec);
		return;
	}
	json_decref(rec);
fail:
	lp_error("%s '%s': the change feed may disagree with the database until its next "
		 "change or the next start's resync", k->what, key);
}

/* ---- the cache -------------------------------------------------------------------------- */

/* The address of a host record, or NULL. */
static const char *ip_of(const struct md_kind *k, json_t *rec)
{
	if (k->ip_field < 0 || !rec)
		return NULL;
	return json_string_value(json_object_get(rec, k->fields[k->ip_field].json));
}

/* Invalidates every key a write from old to new may have changed. */
static void invalidate(struct metadata *m, const struct md_kind *k, const char *key, json_t *old,
		       json_t *new)
{
	char kbuf[600], ip1[600], ip2[600];
	const char *keys[3] = { NULL, NULL, NULL };
	const char *a = ip_of(k, old), *b = ip_of(k, new);

	keys[0] = md_cache_key(kbuf, sizeof(kbuf), k->name, key);
	if (a)
		keys[1] = md_cache_key(ip1, sizeof(ip1), "hostip", a);
	if (b && (!a || strcmp(a, b) != 0))
		keys[2] = md_cache_key(ip2, sizeof(ip2), "hostip", b);
	mdcache_invalidate(m->cache, keys, 3);
}

/* ---- reads ------------------------------------------------------------------------------ */

/* GET one record by field (0 = key, or the address) through the cache. */
static void read_one(struct coll *co, struct lp_http_req *r, size_t field, const char *prefix,
		     const char *value)
{
	struct metadata *m = co->m;
	struct store_err e = { 0 };
	char key[600];
	json_t *rec = NULL;
	PGconn *c;
	int ret;

	if (md_cache_key(key, sizeof(key), prefix, value)) {
		rec = mdcache_get(m->cache, key);
		if (rec) {
			lp_http_reply_json(r, 200, rec, NULL);
			return;
		}
	}
	c = conn_get(m, r);
	if (!c)
		return;
	ret = store_get(c, co->k, field, value, false, &rec, &e);
	conn_put(m, c, e.broken);
	if (ret == -ENOENT) {
		lp_http_reply_error(r, 404, "not_found", NULL, "no %s with %s '%s'", co->k->what,
				    co->k->fields[field].json, value);
		return;
	}
	if (ret < 0) {
		reply_db_error(m, r, &e);
		return;
	}
	mdcache_put(m->cache, key, rec);
	lp_http_reply_json(r, 200, rec, NULL);
}

static void handle_get(struct lp_http_req *r, void *ud)
{
	struct coll *co = ud;

	if (!md_key_valid(co->k, r->param)) {
		lp_http_reply_error(r, 404, "not_found", NULL, "no %s '%s'", co->k->what, r->param);
		return;
	}
	read_one(co, r, 0, co->k->name, r->param);
}

static void handle_by_ip(struct lp_http_req *r, void *ud)
{
	struct coll *co = ud;
	char ip[64];

	if (!md_ip_canonical(r->param, ip, sizeof(ip))) {
		lp_http_reply_json(r, 400,
				   json_pack("{s:s, s:{s:s, s:s, s:s}}", "status", "error", "error",
					     "code", "invalid_field", "field", "ip", "message",
					     "the path must end with an IPv4 or IPv6 address"),
				   NULL);
		return;
	}
	read_one(co, r, (size_t)co->k->ip_field, "hostip", ip);
}

/* Reads query parameter name as an integer in [lo, hi]; false after 400. */
static bool query_int(struct lp_http_req *r, const char *name, long long def, long long lo,
		      long long hi, long long *out)
{
	char buf[32], *end;
	struct md_invalid why;
	int n = lp_http_query(r, name, buf, sizeof(buf));

	*out = def;
	if (n == -ENOENT)
		return true;
	if (n >= 0) {
		*out = strtoll(buf, &end, 10);
		if (*buf && !*end && *out >= lo && *out <= hi)
			return true;
	}
	lp_strlcpy(why.field, name, sizeof(why.field));
	snprintf(why.message, sizeof(why.message), "'%s' must be an integer from %lld to %lld", name,
		 lo, hi);
	reply_invalid(r, &why);
	return false;
}

static void handle_list(struct lp_http_req *r, void *ud)
{
	struct coll *co = ud;
	struct metadata *m = co->m;
	struct store_err e = { 0 };
	long long limit, offset, total = 0;
	json_t *items = NULL;
	PGconn *c;

	if (!query_int(r, "limit", m->s->list_max < 100 ? m->s->list_max : 100, 1, m->s->list_max,
		       &limit) ||
	    !query_int(r, "offset", 0, 0, 1LL << 40, &offset))
		return;
	c = conn_get(m, r);
	if (!c)
		return;
	if (store_list(c, co->k, limit, offset, &items, &total, &e) < 0) {
		conn_put(m, c, e.broken);
		reply_db_error(m, r, &e);
		return;
	}
	conn_put(m, c, false);
	lp_http_reply_json(r, 200,
			   json_pack("{s:o, s:I, s:I, s:I}", "items", items, "total", (json_int_t)total,
				     "limit", (json_int_t)limit, "offset", (json_int_t)offset),
			   NULL);
}

/* ---- writes ------------------------------------------------------------------------------ */

enum op { OP_CREATE, OP_REPLACE, OP_PATCH, OP_DELETE };

static void reply_conflict(struct lp_http_req *r, const struct md_kind *k,
			   const struct md_values *v, const struct store_err *e)
{
	const char *value = "";
	size_t i;

	for (i = 0; i < k->nfields; i++)
		if (!strcmp(k->fields[i].json, e->field) && v->text[i])
			value = v->text[i];
	lp_http_reply_json(r, 409,
			   json_pack("{s:s, s:{s:s, s:s, s:s+++}}", "status", "error", "error", "code",
				     "conflict", "field", e->field, "message", e->field, " '",
				     value, "' is already taken"),
			   NULL);
}

/* The write path of every POST, PUT, PATCH and DELETE (see the top). */
static void mutate(struct coll *co, struct lp_http_req *r, enum op op, const char *key,
		   const struct md_values *v)
{
	struct metadata *m = co->m;
	const struct md_kind *k = co->k;
	struct store_err e = { 0 };
	json_t *old = NULL, *rec = NULL;
	char hdr[700];
	PGconn *c;
	int ret;

	c = conn_get(m, r);
	if (!c)
		return;
	if (store_exec(c, "BEGIN", &e) < 0) {
		reply_db_error(m, r, &e);
		goto out;
	}
	if (op != OP_CREATE) {
		ret = store_get(c, k, 0, key, true, &old, &e);
		if (ret == -ENOENT) {
			lp_http_reply_error(r, 404, "not_found", NULL, "no %s '%s'", k->what, key);
			goto rollback;
		}
		if (ret < 0) {
			reply_db_error(m, r, &e);
			goto rollback;
		}
	}
	if (op == OP_CREATE)
		ret = store_insert(c, k, v, &rec, &e);
	else if (op == OP_DELETE)
		ret = store_delete(c, k, key, &e);
	else
		ret = store_update(c, k, key, v, &rec, &e);
	if (ret == -EEXIST) {
		reply_conflict(r, k, v, &e);
		goto rollback;
	}
	if (ret < 0) {
		reply_db_error(m, r, &e);
		goto rollback;
	}
	if (publish(m, k, &key, &rec, 1) < 0) {
		reply_unavailable(r, "kafka_unavailable", m->kafka_br, "the change feed (Kafka)");
		goto rollback;
	}
	if (store_exec(c, "COMMIT", &e) < 0) {
		reply_db_error(m, r, &e);
		conn_put(m, c, e.broken);
		c = NULL;
		reconcile(m, k, key);
		goto out;
	}
	invalidate(m, k, key, old, rec);
	lp_log_kv(LP_LOG_INFO, (const char *[]){ "kind", k->name, "key", key, NULL }, "%s",
		  op == OP_CREATE ? "created" : op == OP_DELETE ? "deleted" : "updated");
	if (op == OP_DELETE) {
		lp_http_reply(r, 204, NULL, NULL, 0, NULL);
	} else if (op == OP_CREATE) {
		snprintf(hdr, sizeof(hdr), "Location: %s/%s\r\n", k->path, key);
		lp_http_reply_json(r, 201, json_incref(rec), hdr);
	} else {
		lp_http_reply_json(r, 200, json_incref(rec), NULL);
	}
	goto out;
rollback:
	if (!e.broken)
		store_exec(c, "ROLLBACK", &e);
out:
	if (c)
		conn_put(m, c, e.broken);
	json_decref(old);
	json_decref(rec);
}

/* Validates the body for op; false after answering 400. */
static bool body_values(struct coll *co, struct lp_http_req *r, enum md_mode mode,
			const char *path_key, struct md_values *v)
{
	struct md_invalid why;
	const char *ct = lp_http_header(r, "Content-Type");
	json_t *body = NULL;
	int ret;

	/* curl -d without -H sends a form type; the body is still JSON. */
	if (lp_http_media_type_is(ct, "application/x-www-form-urlencoded"))
		body = lp_json_loadb(r->body, r->body_len, 0, NULL);
	if (!body)
		body = lp_http_body_json(r);

	if (!body)
		return false;
	ret = md_validate(co->k, body, mode, path_key, v, &why);
	json_decref(body);
	if (ret < 0) {
		reply_invalid(r, &why);
		return false;
	}
	return true;
}

static void handle_create(struct lp_http_req *r, void *ud)
{
	struct coll *co = ud;
	struct md_values v;

	if (!body_values(co, r, MD_CREATE, NULL, &v))
		return;
	mutate(co, r, OP_CREATE, v.text[0], &v);
	md_values_release(&v);
}

static void handle_update(struct lp_http_req *r, void *ud)
{
	struct coll *co = ud;
	bool patch = !strcmp(r->method, "PATCH");
	struct md_values v;

	if (!body_values(co, r, patch ? MD_PATCH : MD_REPLACE, r->param, &v))
		return;
	mutate(co, r, patch ? OP_PATCH : OP_REPLACE, r->param, &v);
	md_values_release(&v);
}

static void handle_delete(struct lp_http_req *r, void *ud)
{
	struct coll *co = ud;

	if (!md_key_valid(co->k, r->param)) {
		lp_http_reply_error(r, 404, "not_found", NULL, "no %s '%s'", co->k->what, r->param);
		return;
	}
	mutate(co, r, OP_DELETE, r->param, NULL);
}

/* ---- resync ---------------------------------------------------------------------------- */

/* Republishes one batch of records after `after`; sets *last and *n. */
static int resync_batch(struct metadata *m, const struct md_kind *k, char **after, size_t *n)
{
	struct store_err e = { 0 };
	json_t *items = NULL;
	const char **keys = NULL;
	json_t **recs = NULL;
	PGconn *c = conn_get(m, NULL);
	size_t i;
	int ret = -EIO;

	*n = 0;
	if (!c)
		return -EIO;
	if (store_exec(c, "BEGIN", &e) < 0 || store_scan(c, k, *after, RESYNC_BATCH, &items, &e) < 0)
		goto out;
	*n = json_array_size(items);
	keys = lp_xcalloc(*n + 1, sizeof(*keys));
	recs = lp_xcalloc(*n + 1, sizeof(*recs));
	for (i = 0; i < *n; i++) {
		recs[i] = json_array_get(items, i);
		keys[i] = json_string_value(json_object_get(recs[i], k->fields[0].json));
	}
	if (publish(m, k, keys, recs, *n) < 0)
		goto out;
	if (store_exec(c, "COMMIT", &e) < 0)
		goto out;
	if (*n > 0) {
		free(*after);
		*after = lp_xstrdup(keys[*n - 1]);
	}
	lp_series_add(m->resynced, (double)*n);
	ret = 0;
out:
	if (ret < 0 && !e.broken)
		store_exec(c, "ROLLBACK", &e);
	conn_put(m, c, e.broken);
	free(keys);
	free(recs);
	json_decref(items);
	return ret;
}

static int resync_kind(struct metadata *m, const struct md_kind *k, size_t *total)
{
	char *after = NULL;
	size_t n;
	int ret;

	*total = 0;
	do {
		ret = resync_batch(m, k, &after, &n);
		*total += n;
	} while (ret == 0 && n == RESYNC_BATCH && !atomic_load(&m->stop));
	free(after);
	return ret;
}

static void *resync_main(void *arg)
{
	struct metadata *m = arg;
	unsigned seed = (unsigned)lp_now_us();
	size_t hosts = 0, services = 0;
	int attempt;

	for (attempt = 1; !atomic_load(&m->stop); attempt++) {
		if (resync_kind(m, &md_host_kind, &hosts) == 0 &&
		    resync_kind(m, &md_service_kind, &services) == 0) {
			lp_info("resync: republished %zu hosts and %zu services to %s", hosts, services,
				m->s->topic_metadata);
			break;
		}
		lp_sleep_ms(lp_backoff_ms(attempt, 500, 30000, &seed), &m->stop);
	}
	return NULL;
}

/* ---- health ---------------------------------------------------------------------------- */

static bool pg_healthy(void *ud, char *detail, size_t len)
{
	struct metadata *m = ud;

	if (lp_pgpool_ping(m->pool, 1000) < 0) {
		snprintf(detail, len, "SELECT 1 failed");
		return false;
	}
	snprintf(detail, len, "SELECT 1 answered");
	return true;
}

static bool kafka_healthy(void *ud, char *detail, size_t len)
{
	struct metadata *m = ud;
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t err;

	err = rd_kafka_metadata(lp_kproducer_handle(m->kp), 0, NULL, &md, 1000);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(detail, len, "metadata request failed: %s", rd_kafka_err2str(err));
		return false;
	}
	rd_kafka_metadata_destroy(md);
	snprintf(detail, len, "broker answers");
	return lp_breaker_state(m->kafka_br) != LP_BREAKER_OPEN;
}

static bool redis_healthy(void *ud, char *detail, size_t len)
{
	struct metadata *m = ud;

	return mdcache_ping(m->cache, detail, len) == 0;
}

/* ---- start and stop ------------------------------------------------------------------------ */

static void add_routes(struct lp_http_server *h, struct coll *co)
{
	char one[96], ip[96];

	snprintf(one, sizeof(one), "%s/*", co->k->path);
	snprintf(ip, sizeof(ip), "%s/by-ip/*", co->k->path);
	lp_http_route(h, "GET", co->k->path, handle_list, co);
	lp_http_route(h, "POST", co->k->path, handle_create, co);
	if (co->k->ip_field >= 0)
		lp_http_route(h, "GET", ip, handle_by_ip, co);
	lp_http_route(h, "GET", one, handle_get, co);
	lp_http_route(h, "PUT", one, handle_update, co);
	lp_http_route(h, "PATCH", one, handle_update, co);
	lp_http_route(h, "DELETE", one, handle_delete, co);
}

struct metadata *metadata_start(const struct metadata_settings *s, char *err, size_t errlen)
{
	struct metadata *m = lp_xcalloc(1, sizeof(*m));
	struct lp_registry *reg = lp_registry_default();
	struct lp_http_opts ho = { 0 };
	struct lp_breaker_opts bo = { 0 };
	char timeout[32];
	const char *props[] = { "message.timeout.ms", timeout, "linger.ms", "0", NULL };
	int rc;

	m->s = s;
	m->hosts.m = m;
	m->hosts.k = &md_host_kind;
	m->services.m = m;
	m->services.k = &md_service_kind;
	m->published = lp_counter(reg, "metadata_changes_published_total",
				  "Changes acknowledged by Kafka on the metadata topic");
	m->publish_failed = lp_counter(reg, "metadata_changes_failed_total",
				       "Changes Kafka did not acknowledge (the write was rolled back)");
	m->resynced = lp_counter(reg, "metadata_resync_records_total",
				 "Records republished by the start-up resync");
	bo.open_ms = 2000;
	m->pg_br = lp_breaker_new("postgres", &bo);
	m->kafka_br = lp_breaker_new("kafka", NULL);

	m->pool = lp_pgpool_new(s->pg_dsn, (int)s->pg_pool_size, 2);
	if (!m->pool) {
		snprintf(err, errlen, "cannot create the PostgreSQL pool");
		goto fail;
	}
	m->cache = mdcache_new(s->redis_url, (int)s->redis_timeout_ms, (int)s->cache_ttl_s);
	if (!m->cache) {
		snprintf(err, errlen, "invalid redis url '%s'", s->redis_url);
		goto fail;
	}
	snprintf(timeout, sizeof(timeout), "%lld", s->kafka_timeout_ms);
	m->kp = lp_kproducer_new(s->kafka_brokers, props, err, errlen);
	if (!m->kp)
		goto fail;

	ho.listen = s->http_listen;
	ho.threads = (int)s->http_threads;
	ho.front = s->http_front;
	ho.front_loops = (int)s->http_loops;
	ho.service = "metadata";
	m->http = lp_http_server_new(&ho, err, errlen);
	if (!m->http)
		goto fail;
	add_routes(m->http, &m->hosts);
	add_routes(m->http, &m->services);
	lp_http_health(m->http, "postgres", true, pg_healthy, m, m->pg_br);
	lp_http_health(m->http, "kafka", true, kafka_healthy, m, m->kafka_br);
	if (s->redis_url && *s->redis_url)
		lp_http_health(m->http, "redis", false, redis_healthy, m, mdcache_breaker(m->cache));
	if (lp_http_start(m->http, err, errlen) < 0)
		goto fail;

	if (s->resync_on_start) {
		rc = pthread_create(&m->resync, NULL, resync_main, m);
		if (rc != 0) {
			snprintf(err, errlen, "cannot start the resync thread: %s", strerror(rc));
			goto fail;
		}
		m->resync_started = true;
	}
	return m;
fail:
	metadata_stop(m);
	return NULL;
}

void metadata_stop(struct metadata *m)
{
	int left;

	if (!m)
		return;
	atomic_store(&m->stop, true);
	lp_http_server_free(m->http);
	if (m->resync_started)
		pthread_join(m->resync, NULL);
	if (m->kp) {
		left = lp_kproducer_free(m->kp, 5000);
		if (left > 0)
			lp_error("%d metadata changes were not delivered at shutdown", left);
	}
	mdcache_free(m->cache);
	lp_pgpool_free(m->pool);
	lp_breaker_free(m->kafka_br);
	lp_breaker_free(m->pg_br);
	free(m);
}
