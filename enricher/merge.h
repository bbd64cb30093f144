/* merge.h - the enricher's pure logic: metadata records, lookup answers,
 * their classification, and the merge that writes an event's
 * "enrichment" object.
 *
 * Nothing here does I/O, so all of it is unit-tested directly
 * (enricher/tests/test_merge.c).
 *
 * A metadata record is the JSON the metadata service serves, stores in
 * Redis and publishes to metadata-changes (one format everywhere):
 *   host:    {"hostname", "ipAddress", "datacenter", "environment", "costCenter", "tags", ...}
 *   service: {"name", "team", "owner", "tier", "tags", ...}
 * It is parsed once into an immutable, reference-counted struct md_record,
 * so the tier-1 table can hand the same record to any thread. */
#ifndef ENRICHER_MERGE_H
#define ENRICHER_MERGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum md_kind { MD_HOST = 0, MD_SERVICE = 1 };

#define MD_NATTR 3 /* enrichment fields each kind contributes */

struct md_record {
	int refs;                /* references (atomic); freed at zero */
	enum md_kind kind;       /* host or service */
	char *name;              /* hostname or service name, never NULL */
	char *ip;                /* the host's ipAddress, or NULL */
	char *attr[MD_NATTR];    /* host: datacenter, environment, cost_center;
				    service: team, owner, tier; each may be NULL */
};

/* The enrichment field names of a kind, in attr[] order. */
extern const char *const md_attr_names[2][MD_NATTR];

/* Parses a record of kind from JSON text / an object.  Returns a record
 * with one reference, or NULL with a message in err (not an object, no
 * name, a field of the wrong type). */
struct md_record *md_record_parse(enum md_kind kind, const char *text, size_t len, char *err,
				  size_t errlen);
struct md_record *md_record_from_json(enum md_kind kind, json_t *obj, char *err, size_t errlen);
struct md_record *md_record_ref(struct md_record *r);
/* Drops one reference; NULL is a no-op. */
void md_record_unref(struct md_record *r);

/* The key a record or a lookup is filed under, in the tier-1 table, the
 * Redis cache and metadata-changes: "host:NAME", "hostip:IP",
 * "service:NAME".  Returns out, or NULL if it does not fit. */
char *md_key(char *out, size_t outlen, const char *prefix, const char *value);

/* ---- lookups -------------------------------------------------------------- */

/* Where an answer came from, and the tier labels of the metrics. */
enum tier { TIER_LOCAL = 0, TIER_REDIS = 1, TIER_METADATA = 2, TIER_COUNT = 3 };
extern const char *const tier_names[TIER_COUNT]; /* "local", "redis", "metadata" */

/* What one tier said about one key. */
enum tier_outcome {
	OUT_SKIPPED = 0,  /* not asked (disabled, or an earlier tier answered) */
	OUT_FOUND,        /* the record */
	OUT_NOT_FOUND,    /* an authoritative "no such record" */
	OUT_MISS,         /* a cache that does not hold the key (not authoritative) */
	OUT_UNAVAILABLE,  /* could not be asked: down, timed out, breaker open */
};

/* The result of one lookup (host or service), as the merge reports it. */
enum lookup_status {
	LOOKUP_FOUND = 0,
	LOOKUP_NOT_FOUND,            /* "not_found" */
	LOOKUP_NO_FIELD,             /* "no_host_field": nothing to look up by */
	LOOKUP_REDIS_UNAVAILABLE,    /* "redis_unavailable" */
	LOOKUP_METADATA_UNAVAILABLE, /* "metadata_unavailable" */
};
const char *lookup_reason(enum lookup_status s);

/* Decides a lookup's status from what each tier said (index enum tier).
 * The first tier that found the record wins; an authoritative not-found
 * (the metadata service, or the local table when no later tier could be
 * asked because none is configured) is not_found; otherwise the lookup
 * is unanswered and blamed on the last tier that was unavailable: the
 * metadata service when it was, else Redis. */
enum lookup_status lookup_classify(const enum tier_outcome out[TIER_COUNT]);

struct lookup_answer {
	enum lookup_status status; /* the verdict */
	enum tier tier;            /* which tier answered (FOUND, NOT_FOUND) */
	const char *by;            /* "host", "source_ip" or "service" */
	const char *value;         /* the value looked up (borrowed), or NULL */
	unsigned failed_tiers;     /* bit (1 << tier) for each tier unavailable */
	struct md_record *rec;     /* FOUND: one reference, owned by the answer */
};

void lookup_answer_init(struct lookup_answer *a, const char *by, const char *value);
/* Drops the record reference. */
void lookup_answer_release(struct lookup_answer *a);

/* ---- merge ---------------------------------------------------------------- */

/* Sets ev["enrichment"] (replacing any) to
 *   {"status": "complete"|"partial", "enriched_at": RFC 3339,
 *    "datacenter", "environment", "cost_center", "team", "owner", "tier"
 *        (strings, null when unknown),
 *    "host": {"name", "matched_by", "source"}?   (when found)
 *    "service": {"name", "source"}?              (when found)
 *    "missing": [{"lookup": "host"|"service", "by", "value", "reason",
 *                 "failed_tiers": [...]}]        (partial only)}
 * Both answers are required.  Returns true when the event is complete
 * (both lookups found). */
bool enrich_merge(json_t *ev, const struct lookup_answer *host, const struct lookup_answer *svc,
		  int64_t now_wall_ms);

struct lp_buf;
/* The same object as text, appended to out (the enricher's hot path). */
bool enrich_render(struct lp_buf *out, const struct lookup_answer *host,
		   const struct lookup_answer *svc, int64_t now_wall_ms);
/* Appends event (the text of a JSON object without an "enrichment"
 * member) with "enrichment": enrichment added as its last member.
 * Returns 0, or -EINVAL when event does not end with '}'. */
int enrich_splice(struct lp_buf *out, const char *event, size_t len, const char *enrichment,
		  size_t enlen);

#endif
