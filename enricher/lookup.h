/* lookup.h - tiered metadata lookups: the tier-1 table, Redis, then the
 * metadata service over REST, each tier behind its own circuit breaker.
 *
 * For one key the tiers are asked in order until one answers:
 *   1. the in-process table (table.h), then a small in-process memo of
 *      recent answers from tiers 2 and 3 (positive and negative, each with
 *      its own TTL, invalidated by the table's change feed);
 *   2. Redis, the metadata service's cache (GET host:NAME, hostip:IP,
 *      service:NAME); a miss there is not an answer;
 *   3. the metadata service: GET /api/metadata/hosts/{name},
 *      /hosts/by-ip/{ip}, /services/{name} over a keep-alive libcurl
 *      handle per thread, with short timeouts; 404 is an authoritative
 *      "not found".
 * A tier that is down, slow or whose breaker is open is skipped, so an
 * unanswered lookup costs at most the tiers' timeouts and, once the
 * breakers open, nothing.
 *
 * Thread-safe: any thread may look up. */
#ifndef ENRICHER_LOOKUP_H
#define ENRICHER_LOOKUP_H

#include <stddef.h>
#include <stdint.h>

#include "merge.h"

struct mdtable;
struct lp_breaker;
struct lookup;

struct lookup_opts {
	struct mdtable *table;         /* tier 1, or NULL */
	const char *redis_url;         /* tier 2, NULL or "" for none */
	int redis_timeout_ms;          /* connect and command timeout */
	const char *metadata_url;      /* tier 3 base URL, NULL or "" for none */
	int metadata_timeout_ms;       /* whole-request timeout */
	int64_t negative_ttl_ms;       /* how long a "not found" is remembered */
	int64_t positive_ttl_ms;       /* how long a tier 2/3 record is remembered */
	size_t memo_max;               /* most remembered answers */
};

/* Creates the tiers' clients and breakers ("redis", "metadata-svc") and
 * registers the cache metrics.  Never connects here.  NULL on a bad URL
 * (err says why). */
struct lookup *lookup_new(const struct lookup_opts *o, char *err, size_t errlen);
void lookup_free(struct lookup *l);

/* Looks a host up by name, and by address when the name is NULL or not
 * found.  Both may be NULL (status LOOKUP_NO_FIELD).  Fills a; the caller
 * calls lookup_answer_release. */
void lookup_host(struct lookup *l, const char *host, const char *ip, struct lookup_answer *a);
void lookup_service(struct lookup *l, const char *name, struct lookup_answer *a);

/* Forgets any remembered answer for key (the table's change callback). */
void lookup_invalidate(struct lookup *l, const char *key);

/* The breaker of tier 2 or 3 (NULL when the tier is not configured). */
struct lp_breaker *lookup_breaker(struct lookup *l, enum tier t);
/* PINGs Redis / asks the metadata service's /health/live, for /health. */
int lookup_probe(struct lookup *l, enum tier t, char *detail, size_t len);

#endif
