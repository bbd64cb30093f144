/* strmap.h - a string-keyed hash map (chained, power-of-two buckets).
 *
 * Keys are copied and owned by the map; values are opaque pointers the
 * caller owns (put and del hand back the value they displace so the caller
 * can release it).  Not thread-safe: callers hold their own lock. */
#ifndef ENRICHER_STRMAP_H
#define ENRICHER_STRMAP_H

#include <stddef.h>

struct strmap_entry;

struct strmap {
	struct strmap_entry **buckets; /* nbuckets chains, NULL when empty */
	size_t nbuckets;               /* a power of two, or 0 before first put */
	size_t count;                  /* entries in the map */
};

#define STRMAP_INIT { NULL, 0, 0 }

/* Frees every entry (calling release on each value when not NULL) and
 * leaves the map empty and reusable. */
void strmap_clear(struct strmap *m, void (*release)(void *value));
/* The value stored under key, or NULL. */
void *strmap_get(const struct strmap *m, const char *key);
/* Stores value under key.  Returns the value it replaced, or NULL. */
void *strmap_put(struct strmap *m, const char *key, void *value);
/* Removes key.  Returns its value, or NULL if it was absent. */
void *strmap_del(struct strmap *m, const char *key);
/* Calls fn on every entry; fn returning non-zero removes the entry (after
 * fn had the chance to release its value). */
void strmap_filter(struct strmap *m, int (*fn)(void *ud, const char *key, void *value), void *ud);

#endif
