/* registry.h - the running generator instances, as Redis knows them, so
 * that they share one global rate.
 *
 * Each running instance beats once a heartbeat: it stamps its id in a
 * sorted set with Redis's own clock, drops the members not stamped within
 * the TTL and reads how many are left.  An instance then generates
 * rate / count.  While Redis cannot be reached (or its breaker is open) a
 * beat answers the last count it knew, so each instance keeps its last
 * share instead of jumping to the full rate.  Thread-safe. */
#ifndef LOGPIPE_GENERATOR_REGISTRY_H
#define LOGPIPE_GENERATOR_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

struct lp_redis;
struct gen_registry;

/* redis is borrowed and must outlive the registry.  key names the sorted
 * set (one per group of instances sharing a rate); ttl_ms is how long an
 * instance counts after its last beat. */
struct gen_registry *gen_registry_new(struct lp_redis *redis, const char *key,
				      const char *instance_id, int64_t ttl_ms);
void gen_registry_free(struct gen_registry *g);

/* Registers or refreshes this instance and returns how many instances are
 * running, at least 1.  Falls back to the last known count when Redis
 * does not answer. */
int gen_registry_beat(struct gen_registry *g);
/* Removes this instance at once (its peers take over its share at their
 * next beat).  Best effort. */
void gen_registry_leave(struct gen_registry *g);
/* The last count known, and whether the last beat reached Redis. */
int gen_registry_count(struct gen_registry *g, bool *reachable);

#endif
