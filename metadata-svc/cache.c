/* cache.c - the metadata service's Redis cache (see cache.h).
 *
 * Pending invalidations are a bounded list of keys.  When it overflows
 * (a long outage with many writes), the whole key space of the cache
 * (host:*, hostip:*, service:*) is cleared with SCAN + DEL instead, which
 * is equally correct and only costs some misses. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "logpipe/breaker.h"
#include "logpipe/json.h"
#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/redis.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

#define MAX_PENDING 10000

struct mdcache {
	struct lp_redis *redis;    /* NULL when there is no cache */
	struct lp_breaker *br;     /* "redis" */
	int ttl_s;                 /* lifetime of an entry */
	pthread_mutex_t mu;        /* guards the pending list */
	char **pending;            /* keys whose invalidation did not reach Redis */
	size_t npending, cap;
	bool overflow;             /* too many: clear everything instead */
	struct lp_series *hits, *misses, *errors; /* metadata_cache_requests_total{result} */
};

struct mdcache *mdcache_new(const char *url, int timeout_ms, int ttl_s)
{
	struct mdcache *c = lp_xcalloc(1, sizeof(*c));
	struct lp_metric *m;
	struct lp_breaker_opts bo = { 0 };

	pthread_mutex_init(&c->mu, NULL);
	c->ttl_s = ttl_s > 0 ? ttl_s : 300;
	m = lp_metric_new(lp_registry_default(), LP_COUNTER, "metadata_cache_requests_total",
			  "Redis cache lookups by result", "result", NULL, 0);
	c->hits = lp_metric_series(m, "hit");
	c->misses = lp_metric_series(m, "miss");
	c->errors = lp_metric_series(m, "error");
	if (url && *url) {
		bo.open_ms = 2000;
		c->br = lp_breaker_new("redis", &bo);
		c->redis = lp_redis_new(url, timeout_ms, c->br);
		if (!c->redis) {
			mdcache_free(c);
			return NULL;
		}
	}
	return c;
}

void mdcache_free(struct mdcache *c)
{
	size_t i;

	if (!c)
		return;
	lp_redis_free(c->redis);
	lp_breaker_free(c->br);
	for (i = 0; i < c->npending; i++)
		free(c->pending[i]);
	free(c->pending);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

struct lp_breaker *mdcache_breaker(struct mdcache *c)
{
	return c->br;
}

/* DELs keys in one command.  Returns 0 when Redis answered. */
static int del_keys(struct mdcache *c, const char *const *keys, size_t n)
{
	const char **argv = lp_xcalloc(n + 1, sizeof(*argv));
	size_t argc = 0, i;
	redisReply *r;
	int ret = -EIO;

	argv[argc++] = "DEL";
	for (i = 0; i < n; i++)
		if (keys[i])
			argv[argc++] = keys[i];
	if (argc == 1) {
		free(argv);
		return 0;
	}
	r = lp_redis_cmdargv(c->redis, (int)argc, argv, NULL);
	if (r && r->type != REDIS_REPLY_ERROR)
		ret = 0;
	if (r)
		freeReplyObject(r);
	free(argv);
	return ret;
}

/* Deletes every key matching pattern.  Returns 0 when all went. */
static int del_pattern(struct mdcache *c, const char *pattern)
{
	char cursor[32] = "0";
	size_t i;

	do {
		redisReply *r = lp_redis_cmd(c->redis, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
		redisReply *keys;
		int rc;

		if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
			if (r)
				freeReplyObject(r);
			return -EIO;
		}
		lp_strlcpy(cursor, r->element[0]->str ? r->element[0]->str : "0", sizeof(cursor));
		keys = r->element[1];
		if (keys->elements > 0) {
			const char **argv = lp_xcalloc(keys->elements, sizeof(*argv));

			for (i = 0; i < keys->elements; i++)
				argv[i] = keys->element[i]->str;
			rc = del_keys(c, argv, keys->elements);
			free(argv);
			if (rc < 0) {
				freeReplyObject(r);
				return rc;
			}
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0);
	return 0;
}

/* Applies the pending invalidations.  Returns true when none is left, so
 * that the cache may be read. */
static bool flush_pending(struct mdcache *c)
{
	bool ok = true;
	size_t i;

	pthread_mutex_lock(&c->mu);
	if (c->overflow) {
		ok = del_pattern(c, "host:*") == 0 && del_pattern(c, "hostip:*") == 0 &&
		     del_pattern(c, "service:*") == 0;
	} else if (c->npending > 0) {
		ok = del_keys(c, (const char *const *)c->pending, c->npending) == 0;
	}
	if (ok && (c->overflow || c->npending > 0)) {
		lp_info("cache: %s invalidations that Redis missed were applied",
			c->overflow ? "the overflowed" : "the pending");
		for (i = 0; i < c->npending; i++)
			free(c->pending[i]);
		c->npending = 0;
		c->overflow = false;
	}
	pthread_mutex_unlock(&c->mu);
	return ok;
}

json_t *mdcache_get(struct mdcache *c, const char *key)
{
	redisReply *r;
	json_t *j = NULL;

	if (!c->redis)
		return NULL;
	if (!flush_pending(c)) {
		lp_series_inc(c->errors);
		return NULL;
	}
	r = lp_redis_cmd(c->redis, "GET %s", key);
	if (!r || r->type == REDIS_REPLY_ERROR) {
		lp_series_inc(c->errors);
	} else if (r->type == REDIS_REPLY_STRING) {
		j = lp_json_loadb(r->str, r->len, 0, NULL);
		lp_series_inc(j ? c->hits : c->misses);
	} else {
		lp_series_inc(c->misses);
	}
	if (r)
		freeReplyObject(r);
	return j;
}

void mdcache_put(struct mdcache *c, const char *key, json_t *rec)
{
	char *text;
	redisReply *r;

	if (!c->redis)
		return;
	pthread_mutex_lock(&c->mu);
	if (c->npending > 0 || c->overflow) {
		/* Not while an invalidation is owed: it could be for this key. */
		pthread_mutex_unlock(&c->mu);
		return;
	}
	pthread_mutex_unlock(&c->mu);
	text = json_dumps(rec, JSON_COMPACT);
	if (!text)
		return;
	r = lp_redis_cmd(c->redis, "SET %s %s EX %d", key, text, c->ttl_s);
	if (r)
		freeReplyObject(r);
	free(text);
}

void mdcache_invalidate(struct mdcache *c, const char *const *keys, size_t n)
{
	size_t i;

	if (!c->redis || del_keys(c, keys, n) == 0)
		return;
	pthread_mutex_lock(&c->mu);
	for (i = 0; i < n && !c->overflow; i++) {
		if (!keys[i])
			continue;
		if (c->npending == MAX_PENDING) {
			c->overflow = true;
			break;
		}
		if (c->npending == c->cap) {
			c->cap = c->cap ? c->cap * 2 : 64;
			c->pending = lp_xrealloc(c->pending, c->cap * sizeof(*c->pending));
		}
		c->pending[c->npending++] = lp_xstrdup(keys[i]);
	}
	pthread_mutex_unlock(&c->mu);
	lp_warn("cache: Redis unreachable; %zu invalidations kept for later", n);
}

int mdcache_ping(struct mdcache *c, char *detail, size_t len)
{
	size_t pending;

	if (!c->redis) {
		snprintf(detail, len, "no cache configured");
		return 0;
	}
	pthread_mutex_lock(&c->mu);
	pending = c->npending;
	pthread_mutex_unlock(&c->mu);
	if (lp_redis_ping(c->redis) < 0) {
		snprintf(detail, len, "PING failed; %zu invalidations pending", pending);
		return -EIO;
	}
	snprintf(detail, len, "PONG; %zu invalidations pending", pending);
	return 0;
}
