/* registry.c - running generator instances in a Redis sorted set.
 *
 * The member is the instance id, the score the time of its last beat in
 * milliseconds by Redis's clock (TIME), so that instances on machines with
 * skewed clocks still agree on who is alive.  One Lua script does the
 * stamp, the expiry of stale members and the count atomically; the key
 * itself expires when every instance has gone quiet. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "registry.h"
#include "logpipe/log.h"
#include "logpipe/redis.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

/* KEYS[1] the set, ARGV[1] the instance id, ARGV[2] the TTL in ms. */
static const char beat_script[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"local ttl = tonumber(ARGV[2])\n"
	"redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
	"redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)\n"
	"redis.call('PEXPIRE', KEYS[1], ttl * 2)\n"
	"return redis.call('ZCARD', KEYS[1])\n";

struct gen_registry {
	struct lp_redis *redis; /* borrowed connection */
	char *key;              /* the sorted set */
	char *id;               /* this instance's member */
	char ttl[24];           /* TTL in ms, as the script's argument */
	pthread_mutex_t mu;     /* guards the two fields below */
	int count;              /* instances running, last known (>= 1) */
	bool reachable;         /* the last beat reached Redis */
};

struct gen_registry *gen_registry_new(struct lp_redis *redis, const char *key,
				      const char *instance_id, int64_t ttl_ms)
{
	struct gen_registry *g = lp_xcalloc(1, sizeof(*g));

	g->redis = redis;
	g->key = lp_xstrdup(key);
	g->id = lp_xstrdup(instance_id);
	snprintf(g->ttl, sizeof(g->ttl), "%lld", (long long)(ttl_ms > 0 ? ttl_ms : 3000));
	pthread_mutex_init(&g->mu, NULL);
	g->count = 1;
	g->reachable = true;
	return g;
}

void gen_registry_free(struct gen_registry *g)
{
	if (!g)
		return;
	pthread_mutex_destroy(&g->mu);
	free(g->key);
	free(g->id);
	free(g);
}

int gen_registry_beat(struct gen_registry *g)
{
	redisReply *rep = lp_redis_cmd(g->redis, "EVAL %s 1 %s %s %s", beat_script, g->key, g->id,
				       g->ttl);
	bool ok = rep && rep->type == REDIS_REPLY_INTEGER && rep->integer >= 1;
	int count;

	pthread_mutex_lock(&g->mu);
	if (ok) {
		count = rep->integer > 100000 ? 100000 : (int)rep->integer;
		if (count != g->count)
			lp_info("%d generator instance(s) now share the rate (were %d)", count,
				g->count);
		g->count = count;
	}
	if (ok && !g->reachable)
		lp_info("redis reachable again: sharing the rate with %d instance(s)", g->count);
	else if (!ok && g->reachable)
		lp_warn("redis unreachable: keeping the share of %d instance(s)", g->count);
	if (!ok && rep && rep->type == REDIS_REPLY_ERROR)
		lp_warn("instance registry: redis answered \"%s\"", rep->str);
	g->reachable = ok;
	count = g->count;
	pthread_mutex_unlock(&g->mu);
	if (rep)
		freeReplyObject(rep);
	return count;
}

void gen_registry_leave(struct gen_registry *g)
{
	redisReply *rep = lp_redis_cmd(g->redis, "ZREM %s %s", g->key, g->id);

	if (rep)
		freeReplyObject(rep);
}

int gen_registry_count(struct gen_registry *g, bool *reachable)
{
	int n;

	pthread_mutex_lock(&g->mu);
	n = g->count;
	if (reachable)
		*reachable = g->reachable;
	pthread_mutex_unlock(&g->mu);
	return n;
}
