/* cache.h - the metadata service's Redis cache (cache-aside).
 *
 * Reads look in Redis first and fill it after a database read; every write
 * invalidates the keys it affects (host:NAME, hostip:IP, service:NAME).
 * The enricher reads the same keys as its tier 2.
 *
 * An invalidation that cannot reach Redis is not forgotten: the keys are
 * kept and deleted before the cache is read again, and until that worked
 * reads bypass the cache, so a Redis outage can never leave a stale entry
 * behind once Redis is back.  Thread-safe. */
#ifndef METADATA_CACHE_H
#define METADATA_CACHE_H

#include <jansson.h>
#include <stddef.h>

struct mdcache;
struct lp_breaker;

/* url empty or NULL: no cache (every call is a miss or a no-op). */
struct mdcache *mdcache_new(const char *url, int timeout_ms, int ttl_s);
void mdcache_free(struct mdcache *c);
/* The record cached under key, or NULL (miss, Redis down, cache suspect). */
json_t *mdcache_get(struct mdcache *c, const char *key);
/* Caches rec under key for the TTL (best effort). */
void mdcache_put(struct mdcache *c, const char *key, json_t *rec);
/* Deletes keys (NULL entries skipped); remembered when Redis is down. */
void mdcache_invalidate(struct mdcache *c, const char *const *keys, size_t n);
/* For /health: 0 when Redis answers PING, -EIO otherwise. */
int mdcache_ping(struct mdcache *c, char *detail, size_t len);
struct lp_breaker *mdcache_breaker(struct mdcache *c);

#endif
