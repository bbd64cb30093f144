/* lookup.c - tiered metadata lookups (see lookup.h for the contract).
 *
 * Per key: table -> memo -> Redis -> metadata service.  Each tier reports
 * a tier_outcome and lookup_classify() (merge.c) turns the outcomes into
 * the lookup's verdict, so the rules about which tier is authoritative live
 * in one tested place.  Answers from tiers 2 and 3 are remembered in the
 * memo: records for positive_ttl_ms, "not found" for negative_ttl_ms;
 * "unavailable" is never remembered, so recovery is seen at once.
 *
 * The metadata service is reached with one libcurl easy handle per thread
 * (a pthread key), so its connection stays alive between lookups. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "logpipe/breaker.h"
#include "logpipe/buf.h"
#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/redis.h"
#include "logpipe/util.h"
#include "lookup.h"
#include "strmap.h"
#include "table.h"

#include "logpipe/banned.h"

#define MAX_KEY 600
#define MAX_BODY (64 * 1024) /* a record is far smaller; more is refused */

/* A remembered answer from tier 2 or 3. */
struct memo_entry {
	struct md_record *rec; /* the record, or NULL for "not found" */
	enum tier tier;        /* the tier that answered */
	int64_t expires_ms;    /* monotonic time it is forgotten */
};

struct lookup {
	struct mdtable *table;          /* tier 1, may be NULL */
	struct lp_redis *redis;         /* tier 2, may be NULL */
	struct lp_breaker *redis_br;    /* "redis" */
	char *meta_url;                 /* tier 3 base URL without trailing '/', or NULL */
	struct lp_breaker *meta_br;     /* "metadata-svc" */
	long meta_timeout_ms;           /* tier 3 whole-request timeout */
	int64_t neg_ttl_ms, pos_ttl_ms; /* memo lifetimes */
	size_t memo_max;                /* memo bound */
	pthread_key_t curl_key;         /* this thread's CURL * */
	bool curl_key_made;             /* curl_key must be deleted */

	pthread_mutex_t memo_mu;        /* guards memo */
	struct strmap memo;             /* key -> struct memo_entry * */

	struct lp_series *hits[TIER_COUNT];   /* enrichment_cache_hits_total{tier} */
	struct lp_series *misses[TIER_COUNT]; /* enrichment_cache_misses_total{tier} */
	struct lp_series *errors[TIER_COUNT]; /* enrichment_cache_errors_total{tier} */
};

static void memo_entry_free(void *v)
{
	struct memo_entry *e = v;

	md_record_unref(e->rec);
	free(e);
}

static void curl_handle_free(void *h)
{
	curl_easy_cleanup(h);
}

struct lookup *lookup_new(const struct lookup_opts *o, char *err, size_t errlen)
{
	struct lookup *l = lp_xcalloc(1, sizeof(*l));
	struct lp_registry *reg = lp_registry_default();
	struct lp_breaker_opts bo = { 0 };
	struct lp_metric *h, *m, *e;
	int t;

	l->table = o->table;
	l->neg_ttl_ms = o->negative_ttl_ms;
	l->pos_ttl_ms = o->positive_ttl_ms;
	l->memo_max = o->memo_max ? o->memo_max : 100000;
	pthread_mutex_init(&l->memo_mu, NULL);

	h = lp_metric_new(reg, LP_COUNTER, "enrichment_cache_hits_total",
			  "Metadata lookups answered by each tier", "tier", NULL, 0);
	m = lp_metric_new(reg, LP_COUNTER, "enrichment_cache_misses_total",
			  "Metadata lookups a tier could not answer (not held or not found)", "tier",
			  NULL, 0);
	e = lp_metric_new(reg, LP_COUNTER, "enrichment_cache_errors_total",
			  "Metadata lookups a tier failed (unavailable, timeout, breaker open)", "tier",
			  NULL, 0);
	for (t = 0; t < TIER_COUNT; t++) {
		l->hits[t] = lp_metric_series(h, tier_names[t]);
		l->misses[t] = lp_metric_series(m, tier_names[t]);
		l->errors[t] = lp_metric_series(e, tier_names[t]);
	}

	/* A tier that fails or is slow trips its breaker; the wait in open is
	 * short because a lookup skipped is an event enriched partially. */
	bo.open_ms = 2000;
	if (o->redis_url && *o->redis_url) {
		bo.slow_ms = o->redis_timeout_ms;
		l->redis_br = lp_breaker_new("redis", &bo);
		l->redis = lp_redis_new(o->redis_url, o->redis_timeout_ms, l->redis_br);
		if (!l->redis) {
			snprintf(err, errlen, "invalid redis url '%s'", o->redis_url);
			goto fail;
		}
	}
	if (o->metadata_url && *o->metadata_url) {
		size_t n;

		if (!lp_str_has_prefix(o->metadata_url, "http://") &&
		    !lp_str_has_prefix(o->metadata_url, "https://")) {
			snprintf(err, errlen, "invalid metadata url '%s' (want http://host:port)",
				 o->metadata_url);
			goto fail;
		}
		l->meta_url = lp_xstrdup(o->metadata_url);
		n = strlen(l->meta_url);
		while (n > 0 && l->meta_url[n - 1] == '/')
			l->meta_url[--n] = '\0';
		l->meta_timeout_ms = o->metadata_timeout_ms > 0 ? o->metadata_timeout_ms : 500;
		bo.slow_ms = l->meta_timeout_ms;
		l->meta_br = lp_breaker_new("metadata-svc", &bo);
		if (pthread_key_create(&l->curl_key, curl_handle_free) != 0) {
			snprintf(err, errlen, "cannot create a thread key");
			goto fail;
		}
		l->curl_key_made = true;
	}
	return l;
fail:
	lookup_free(l);
	return NULL;
}

void lookup_free(struct lookup *l)
{
	CURL *c;

	if (!l)
		return;
	if (l->curl_key_made) {
		/* The calling thread's handle; other threads' die with them. */
		c = pthread_getspecific(l->curl_key);
		if (c)
			curl_easy_cleanup(c);
		pthread_key_delete(l->curl_key);
	}
	lp_redis_free(l->redis);
	lp_breaker_free(l->redis_br);
	lp_breaker_free(l->meta_br);
	free(l->meta_url);
	strmap_clear(&l->memo, memo_entry_free);
	pthread_mutex_destroy(&l->memo_mu);
	free(l);
}

struct lp_breaker *lookup_breaker(struct lookup *l, enum tier t)
{
	return t == TIER_REDIS ? l->redis_br : t == TIER_METADATA ? l->meta_br : NULL;
}

/* ---- the memo --------------------------------------------------------------- */

/* Returns true and fills rec/tier when key is remembered and fresh. */
static bool memo_get(struct lookup *l, const char *key, struct md_record **rec, enum tier *tier)
{
	struct memo_entry *e;
	bool found = false;

	pthread_mutex_lock(&l->memo_mu);
	e = strmap_get(&l->memo, key);
	if (e && e->expires_ms > lp_now_ms()) {
		*rec = md_record_ref(e->rec);
		*tier = e->tier;
		found = true;
	}
	pthread_mutex_unlock(&l->memo_mu);
	return found;
}

static int drop_expired(void *ud, const char *key, void *value)
{
	struct memo_entry *e = value;
	(void)key;

	if (e->expires_ms > *(int64_t *)ud)
		return 0;
	memo_entry_free(e);
	return 1;
}

static void memo_put(struct lookup *l, const char *key, struct md_record *rec, enum tier tier)
{
	struct memo_entry *e;
	int64_t now = lp_now_ms(), ttl = rec ? l->pos_ttl_ms : l->neg_ttl_ms;

	if (ttl <= 0)
		return;
	e = lp_xmalloc(sizeof(*e));
	e->rec = md_record_ref(rec);
	e->tier = tier;
	e->expires_ms = now + ttl;
	pthread_mutex_lock(&l->memo_mu);
	if (l->memo.count >= l->memo_max) {
		strmap_filter(&l->memo, drop_expired, &now);
		if (l->memo.count >= l->memo_max)
			strmap_clear(&l->memo, memo_entry_free);
	}
	e = strmap_put(&l->memo, key, e);
	pthread_mutex_unlock(&l->memo_mu);
	if (e)
		memo_entry_free(e);
}

void lookup_invalidate(struct lookup *l, const char *key)
{
	struct memo_entry *e;

	pthread_mutex_lock(&l->memo_mu);
	e = strmap_del(&l->memo, key);
	pthread_mutex_unlock(&l->memo_mu);
	if (e)
		memo_entry_free(e);
}

/* ---- tier 2: Redis ------------------------------------------------------------ */

static enum tier_outcome ask_redis(struct lookup *l, enum md_kind kind, const char *key,
				   struct md_record **rec)
{
	redisReply *r = lp_redis_cmd(l->redis, "GET %s", key);
	enum tier_outcome out = OUT_UNAVAILABLE;
	char err[160];

	if (!r)
		return OUT_UNAVAILABLE;
	if (r->type == REDIS_REPLY_NIL) {
		out = OUT_MISS;
	} else if (r->type == REDIS_REPLY_STRING) {
		*rec = md_record_parse(kind, r->str, r->len, err, sizeof(err));
		if (*rec) {
			out = OUT_FOUND;
		} else {
			/* A damaged cache entry is a miss: the service has the truth. */
			lp_warn("ignoring redis entry %s: %s", key, err);
			out = OUT_MISS;
		}
	}
	freeReplyObject(r);
	return out;
}

/* ---- tier 3: the metadata service ---------------------------------------------- */

static size_t collect(char *p, size_t size, size_t n, void *ud)
{
	struct lp_buf *b = ud;

	if (b->len + size * n > MAX_BODY)
		return 0; /* aborts the transfer */
	lp_buf_add(b, p, size * n);
	return size * n;
}

static CURL *thread_curl(struct lookup *l)
{
	CURL *c = pthread_getspecific(l->curl_key);

	if (c)
		return c;
	c = curl_easy_init();
	if (!c)
		return NULL;
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	pthread_setspecific(l->curl_key, c);
	return c;
}

/* GETs base + path; returns the HTTP status, or -1 when there was none. */
static long http_get(struct lookup *l, const char *path, long timeout_ms, struct lp_buf *body)
{
	struct lp_buf url = LP_BUF_INIT;
	CURL *c = thread_curl(l);
	long status = -1;
	CURLcode rc;

	if (!c)
		return -1;
	lp_buf_addf(&url, "%s%s", l->meta_url, path);
	curl_easy_setopt(c, CURLOPT_URL, url.buf);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 200 ? timeout_ms : 200L);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	else
		lp_debug("GET %s: %s", url.buf, curl_easy_strerror(rc));
	lp_buf_release(&url);
	return status;
}

static enum tier_outcome ask_metadata(struct lookup *l, enum md_kind kind, const char *path,
				      struct md_record **rec)
{
	struct lp_buf body = LP_BUF_INIT;
	enum tier_outcome out = OUT_UNAVAILABLE;
	int64_t t0;
	long status;
	char err[160];

	if (!lp_breaker_allow(l->meta_br))
		return OUT_UNAVAILABLE;
	t0 = lp_now_ms();
	status = http_get(l, path, l->meta_timeout_ms, &body);
	if (status == 200) {
		*rec = md_record_parse(kind, body.buf, body.len, err, sizeof(err));
		if (*rec)
			out = OUT_FOUND;
		else
			lp_warn("metadata service answered %s with a bad record: %s", path, err);
	} else if (status == 404) {
		out = OUT_NOT_FOUND;
	}
	lp_breaker_record(l->meta_br, out != OUT_UNAVAILABLE, lp_now_ms() - t0);
	lp_buf_release(&body);
	return out;
}

/* Builds "/api/metadata/<coll>/<escaped value>" into path. */
static bool rest_path(struct lookup *l, struct lp_buf *path, const char *coll, const char *value)
{
	CURL *c = thread_curl(l);
	char *esc;

	if (!c)
		return false;
	esc = curl_easy_escape(c, value, 0);
	if (!esc)
		return false;
	lp_buf_addf(path, "/api/metadata/%s/%s", coll, esc);
	curl_free(esc);
	return true;
}

/* ---- one key through every tier ------------------------------------------------ */

/* What is looked up: the kind, the key prefix and the REST collection. */
struct probe {
	enum md_kind kind;
	const char *prefix; /* "host", "hostip", "service" */
	const char *coll;   /* "hosts", "hosts/by-ip", "services" */
};

static const struct probe by_host = { MD_HOST, "host", "hosts" };
static const struct probe by_ip = { MD_HOST, "hostip", "hosts/by-ip" };
static const struct probe by_service = { MD_SERVICE, "service", "services" };

static void count(struct lookup *l, enum tier t, enum tier_outcome o)
{
	if (o == OUT_FOUND)
		lp_series_inc(l->hits[t]);
	else if (o == OUT_MISS || o == OUT_NOT_FOUND)
		lp_series_inc(l->misses[t]);
	else if (o == OUT_UNAVAILABLE)
		lp_series_inc(l->errors[t]);
}

/* Resolves one value; fills a (status, tier, failed_tiers, rec). */
static void resolve(struct lookup *l, const struct probe *p, const char *value,
		    struct lookup_answer *a)
{
	enum tier_outcome out[TIER_COUNT] = { OUT_SKIPPED, OUT_SKIPPED, OUT_SKIPPED };
	struct md_record *rec = NULL;
	struct lp_buf path = LP_BUF_INIT;
	char key[MAX_KEY];
	enum tier t = TIER_LOCAL;

	if (!md_key(key, sizeof(key), p->prefix, value)) {
		a->status = LOOKUP_NOT_FOUND; /* longer than any stored name */
		return;
	}
	if (l->table && (rec = mdtable_get(l->table, key)) != NULL) {
		out[TIER_LOCAL] = OUT_FOUND;
	} else if (memo_get(l, key, &rec, &t)) {
		out[t] = rec ? OUT_FOUND : OUT_NOT_FOUND;
		lp_series_inc(l->hits[TIER_LOCAL]);
		goto out;
	} else {
		/* Without tiers 2 and 3 the table is the only truth. */
		out[TIER_LOCAL] = l->redis || l->meta_url ? OUT_MISS : OUT_NOT_FOUND;
	}
	count(l, TIER_LOCAL, out[TIER_LOCAL]);
	if (rec)
		goto out;

	if (l->redis) {
		out[TIER_REDIS] = ask_redis(l, p->kind, key, &rec);
		count(l, TIER_REDIS, out[TIER_REDIS]);
		if (rec) {
			t = TIER_REDIS;
			memo_put(l, key, rec, t);
			goto out;
		}
	}
	if (l->meta_url) {
		out[TIER_METADATA] = rest_path(l, &path, p->coll, value)
					     ? ask_metadata(l, p->kind, path.buf, &rec)
					     : OUT_UNAVAILABLE;
		count(l, TIER_METADATA, out[TIER_METADATA]);
		t = TIER_METADATA;
		if (out[TIER_METADATA] == OUT_FOUND || out[TIER_METADATA] == OUT_NOT_FOUND)
			memo_put(l, key, rec, t);
	}
out:
	lp_buf_release(&path);
	a->status = lookup_classify(out);
	a->tier = t;
	a->rec = a->status == LOOKUP_FOUND ? rec : NULL;
	if (!a->rec)
		md_record_unref(rec);
	if (out[TIER_REDIS] == OUT_UNAVAILABLE)
		a->failed_tiers |= 1u << TIER_REDIS;
	if (out[TIER_METADATA] == OUT_UNAVAILABLE)
		a->failed_tiers |= 1u << TIER_METADATA;
}

/* The canonical text of an address (as the metadata service stores it),
 * or the input unchanged when it is not an address. */
static const char *canonical_ip(const char *ip, char *buf, size_t len)
{
	unsigned char addr[16];

	if (inet_pton(AF_INET, ip, addr) == 1)
		return inet_ntop(AF_INET, addr, buf, (socklen_t)len) ? buf : ip;
	if (inet_pton(AF_INET6, ip, addr) == 1)
		return inet_ntop(AF_INET6, addr, buf, (socklen_t)len) ? buf : ip;
	return ip;
}

void lookup_host(struct lookup *l, const char *host, const char *ip, struct lookup_answer *a)
{
	struct lookup_answer by_addr;
	char canon[64];

	if ((!host || !*host) && (!ip || !*ip)) {
		lookup_answer_init(a, NULL, NULL);
		a->status = LOOKUP_NO_FIELD;
		return;
	}
	if (host && *host) {
		lookup_answer_init(a, "host", host);
		resolve(l, &by_host, host, a);
		if (a->status == LOOKUP_FOUND || !ip || !*ip)
			return;
	} else {
		lookup_answer_init(a, "source_ip", ip);
		resolve(l, &by_ip, canonical_ip(ip, canon, sizeof(canon)), a);
		return;
	}
	/* Not found by name: try the address.  Keep the name's verdict unless
	 * the address found it, or the name was not found but the address
	 * lookup could not be answered (then the host might exist). */
	lookup_answer_init(&by_addr, "source_ip", ip);
	resolve(l, &by_ip, canonical_ip(ip, canon, sizeof(canon)), &by_addr);
	if (by_addr.status == LOOKUP_FOUND ||
	    (a->status == LOOKUP_NOT_FOUND && by_addr.status != LOOKUP_NOT_FOUND)) {
		by_addr.failed_tiers |= a->failed_tiers;
		*a = by_addr;
		return;
	}
	a->failed_tiers |= by_addr.failed_tiers;
	lookup_answer_release(&by_addr);
}

void lookup_service(struct lookup *l, const char *name, struct lookup_answer *a)
{
	lookup_answer_init(a, "service", name);
	if (!name || !*name) {
		a->status = LOOKUP_NO_FIELD;
		return;
	}
	resolve(l, &by_service, name, a);
}

/* ---- health probes ---------------------------------------------------------------- */

int lookup_probe(struct lookup *l, enum tier t, char *detail, size_t len)
{
	struct lp_buf body = LP_BUF_INIT;
	long status;

	if (t == TIER_REDIS) {
		if (!l->redis) {
			snprintf(detail, len, "not configured");
			return 0;
		}
		if (lp_redis_ping(l->redis) < 0) {
			snprintf(detail, len, "PING failed");
			return -EIO;
		}
		snprintf(detail, len, "PONG");
		return 0;
	}
	if (!l->meta_url) {
		snprintf(detail, len, "not configured");
		return 0;
	}
	status = http_get(l, "/health/live", 1000, &body);
	lp_buf_release(&body);
	if (status != 200) {
		snprintf(detail, len, "GET %s/health/live: %s %ld", l->meta_url,
			 status < 0 ? "no answer" : "status", status);
		return -EIO;
	}
	snprintf(detail, len, "%s answers", l->meta_url);
	return 0;
}
