/* strmap.c - a string-keyed hash map (chained, power-of-two buckets).
 *
 * FNV-1a over the key picks the bucket; the table doubles when the load
 * factor passes 1, so chains stay short.  The key is stored in the same
 * allocation as its entry. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "logpipe/util.h"
#include "strmap.h"

#include "logpipe/banned.h"

struct strmap_entry {
	struct strmap_entry *next; /* next entry of the same bucket */
	uint64_t hash;             /* FNV-1a of key, kept to rehash cheaply */
	void *value;               /* the caller's value */
	char key[];                /* NUL-terminated copy of the key */
};

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static struct strmap_entry **slot(const struct strmap *m, const char *key, uint64_t h)
{
	struct strmap_entry **e = &m->buckets[h & (m->nbuckets - 1)];

	while (*e && ((*e)->hash != h || strcmp((*e)->key, key) != 0))
		e = &(*e)->next;
	return e;
}

static void grow(struct strmap *m)
{
	size_t n = m->nbuckets ? m->nbuckets * 2 : 64, i;
	struct strmap_entry **b = lp_xcalloc(n, sizeof(*b));

	for (i = 0; i < m->nbuckets; i++) {
		struct strmap_entry *e = m->buckets[i], *next;

		for (; e; e = next) {
			next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = n;
}

void strmap_clear(struct strmap *m, void (*release)(void *value))
{
	size_t i;

	for (i = 0; i < m->nbuckets; i++) {
		struct strmap_entry *e = m->buckets[i], *next;

		for (; e; e = next) {
			next = e->next;
			if (release && e->value)
				release(e->value);
			free(e);
		}
	}
	free(m->buckets);
	m->buckets = NULL;
	m->nbuckets = 0;
	m->count = 0;
}

void *strmap_get(const struct strmap *m, const char *key)
{
	struct strmap_entry *e;

	if (!m->count)
		return NULL;
	e = *slot(m, key, fnv1a(key));
	return e ? e->value : NULL;
}

void *strmap_put(struct strmap *m, const char *key, void *value)
{
	uint64_t h = fnv1a(key);
	struct strmap_entry **s, *e;
	size_t klen;
	void *old;

	if (m->count >= m->nbuckets)
		grow(m);
	s = slot(m, key, h);
	if (*s) {
		old = (*s)->value;
		(*s)->value = value;
		return old;
	}
	klen = strlen(key);
	e = lp_xmalloc(sizeof(*e) + klen + 1);
	e->next = NULL;
	e->hash = h;
	e->value = value;
	memcpy(e->key, key, klen + 1);
	*s = e;
	m->count++;
	return NULL;
}

void *strmap_del(struct strmap *m, const char *key)
{
	struct strmap_entry **s, *e;
	void *old;

	if (!m->count)
		return NULL;
	s = slot(m, key, fnv1a(key));
	if (!*s)
		return NULL;
	e = *s;
	*s = e->next;
	old = e->value;
	free(e);
	m->count--;
	return old;
}

void strmap_filter(struct strmap *m, int (*fn)(void *ud, const char *key, void *value), void *ud)
{
	size_t i;

	for (i = 0; i < m->nbuckets; i++) {
		struct strmap_entry **s = &m->buckets[i];

		while (*s) {
			struct strmap_entry *e = *s;

			if (fn(ud, e->key, e->value)) {
				*s = e->next;
				free(e);
				m->count--;
			} else {
				s = &e->next;
			}
		}
	}
}
