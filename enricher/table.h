/* table.h - tier 1: an in-process copy of the metadata-changes topic.
 *
 * The table maps "host:NAME", "hostip:IP" and "service:NAME" to metadata
 * records.  A feed thread reads the compacted topic metadata-changes from
 * the beginning on every start (assign(), no consumer group membership and
 * no commits, so each instance rebuilds its own full copy) and keeps
 * applying changes while the enricher runs; a NULL value (tombstone)
 * removes the key.  The table is "loaded" once every partition was read to
 * its end at least once.
 *
 * Lookups take a read lock and return their own reference to the record,
 * so the feed may replace it meanwhile.  All functions are thread-safe. */
#ifndef ENRICHER_TABLE_H
#define ENRICHER_TABLE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "merge.h"

struct lp_breaker;
struct mdtable;

/* Called by the thread that applied a change, once per key whose answer
 * may have changed (including the old and new hostip: keys of a host). */
typedef void (*mdtable_change_fn)(void *ud, const char *key);

/* An empty table without a feed (tests apply changes by hand). */
struct mdtable *mdtable_new(mdtable_change_fn on_change, void *ud);
/* Starts the feed thread on brokers/topic.  br (may be NULL) records the
 * feed's health: each poll that reached the broker succeeds, each
 * consumer error fails.  Returns 0, or -EINVAL with err. */
int mdtable_start_feed(struct mdtable *t, const char *brokers, const char *topic,
		       struct lp_breaker *br, char *err, size_t errlen);
/* Stops the feed and frees every record.  NULL is a no-op. */
void mdtable_free(struct mdtable *t);

/* Applies one topic record: key "host:NAME" or "service:NAME", value the
 * record JSON, or NULL (len 0) for a tombstone.  Returns 0, or -EINVAL for
 * an unknown key prefix or a value that does not parse (ignored). */
int mdtable_apply(struct mdtable *t, const char *key, size_t keylen, const char *val,
		  size_t vallen);

/* The record filed under key, with a new reference, or NULL. */
struct md_record *mdtable_get(struct mdtable *t, const char *key);
/* Hosts and services held. */
void mdtable_counts(struct mdtable *t, size_t *hosts, size_t *services);
/* True once the feed reached the end of every partition once. */
bool mdtable_loaded(struct mdtable *t);
/* Waits up to timeout_ms for loaded, returning early when *stop is set. */
bool mdtable_wait_loaded(struct mdtable *t, int timeout_ms, const atomic_bool *stop);
/* Feed state for /health: true while the last poll reached the broker. */
bool mdtable_feed_healthy(struct mdtable *t, char *detail, size_t len);

#endif
