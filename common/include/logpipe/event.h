/* event.h - the log event: parse, validate, normalise, serialise.
 *
 * Input is one JSON object in any of the shapes the seeds send.  The
 * normalised form, which is what travels on Kafka and is stored, is:
 *
 *   { "id": UUID, "schema_version": 1,
 *     "timestamp": RFC 3339 UTC ms, "received_at": RFC 3339 UTC ms,
 *     "level": "TRACE|DEBUG|INFO|WARN|ERROR|FATAL", "message": str,
 *     "service": str, "host": str?, "source_ip": str?, "tenant": str?,
 *     "correlation_id": str?, "trace_id": str?, "span_id": str?,
 *     "attributes": { ... } }
 *
 * Aliases: `severity` for `level` (and WARNING for WARN, case-insensitive),
 * `source` for `service` when `service` is absent, `organizationId` /
 * `tenant` / `tenant_id` for tenant, `correlationId` / `trace_id` /
 * `traceId` / `correlation_id` for correlation_id, `hostname` for host,
 * `ts` / `@timestamp` for timestamp.  Unknown top-level fields move under
 * `attributes` (never dropped; an attribute of the same name wins).
 * Timestamps may be RFC 3339 strings or epoch milliseconds (integer).
 * Trace context: a `trace_id` / `traceId` of 32 and a `span_id` / `spanId`
 * of 16 hexadecimal digits (not all zero) are kept, lower-cased, as
 * `trace_id` and `span_id` (the trace id may also be the correlation id);
 * ids of another shape stay what they were (a correlation id, an
 * attribute). */
#ifndef LOGPIPE_EVENT_H
#define LOGPIPE_EVENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LP_EVENT_SCHEMA_VERSION 1

struct lp_event_limits {
	size_t max_message;    /* bytes of `message` (default 65536) */
	size_t max_attributes; /* keys in `attributes` after merging (default 64) */
	size_t max_field;      /* bytes of service/host/tenant/... (default 256) */
	size_t max_depth;      /* JSON nesting depth of the object (default 8) */
};

/* Why an input was refused: HTTP status (400 or 413), a stable code, the
 * offending field if any, and a human sentence. */
struct lp_event_error {
	int status;
	char code[32];     /* "invalid_json", "missing_field", "invalid_field", "too_large" */
	char field[48];
	char message[200];
};

extern const struct lp_event_limits lp_event_default_limits;

/* Validates and normalises one parsed input object.  Returns a new object
 * (caller json_decref's it) in the normalised form, with `id` (the
 * client's UUID, in lower case, if it sent one, else a fresh UUIDv7; an `id`
 * that is not a UUID is refused), `received_at` = now_ms and
 * `schema_version` set; `tenant`, if non-NULL, overrides any tenant in the
 * input (the gateway's API key decides).  Returns NULL and fills *err.
 * lim NULL means lp_event_default_limits; err may be NULL.  Normalising a
 * normalised event gives the same event (but a new received_at). */
json_t *lp_event_normalize(json_t *in, const struct lp_event_limits *lim, int64_t now_ms,
			   const char *tenant, struct lp_event_error *err);

/* Parses text and normalises it.  Same contract as above. */
json_t *lp_event_parse(const char *text, size_t len, const struct lp_event_limits *lim,
		       int64_t now_ms, const char *tenant, struct lp_event_error *err);

/* Checks an already normalised event (the enricher's filter stage).
 * Returns 0 or -EINVAL with the reason in err. */
int lp_event_check_normalized(json_t *ev, char *err, size_t errlen);

/* What lp_event_scan finds in an event: the fields the look-ups read. */
struct lp_event_view {
	char service[257];       /* non-empty */
	const char *host;        /* NULL when absent; else points into host_buf */
	const char *source_ip;   /* NULL when absent; else into source_ip_buf */
	char host_buf[257];
	char source_ip_buf[64];
};

/* The filter stage's fast path (event_scan.c): one pass over text, no
 * JSON tree.  Returns 0 when text is certainly a JSON object that
 * json_loadb() parses and lp_event_check_normalized() accepts, without an
 * "enrichment" member, and fills v; -ENOTSUP when that is not certain (the
 * text may still be valid, only not for this path to decide), and the
 * caller must take the full path (which also words any refusal). */
int lp_event_scan(const char *text, size_t len, struct lp_event_view *v);

struct lp_buf;

/* A JSON string member as written: its content between the quotes (p is
 * NULL when the member is absent or null), and whether it holds a
 * backslash escape (only the plain ones: \u escapes are never accepted). */
struct lp_json_text {
	const char *p;
	size_t n;
	bool escaped;
};

/* What lp_event_scan_stored finds in an enriched event: the members the
 * consumer's COPY line reads (status: the enrichment's "status"). */
struct lp_event_stored {
	struct lp_json_text id, timestamp, received_at, level, message, service, host, source_ip,
		tenant, correlation_id, trace_id, span_id, status;
	bool has_enrichment; /* an "enrichment" object (not null) */
};

/* The consumer's fast path (event_scan.c): one pass over a stored event,
 * no JSON tree.  Returns 0 when text is certainly a JSON object that
 * json_loadb() parses, each member above is a string, null or absent
 * (attributes and enrichment: an object, null or absent), and the scan
 * can write jansson's bytes for what the consumer serialises; then v is
 * filled, attributes gets json_dumps(JSON_COMPACT) of the merged attributes
 * (the event's "attributes" object, then every other top-level member
 * whose name has no column and is not an attribute already; see
 * consumer/store.c) and enrichment that of the enrichment object.  The
 * buffers are appended to.  -ENOTSUP otherwise: the caller takes the full
 * path, which also words any refusal. */
int lp_event_scan_stored(const char *text, size_t len, struct lp_event_stored *v,
			 struct lp_buf *attributes, struct lp_buf *enrichment);

/* Appends t's string as jansson decodes it (its escapes are plain ones;
 * the NUL after it is lp_buf's).  Nothing for an absent t. */
void lp_json_text_add(struct lp_buf *out, const struct lp_json_text *t);

/* What lp_event_scan_input makes of an input event. */
struct lp_event_fast {
	char *text;          /* the normalised event, serialised (malloc'd, NUL-terminated) */
	size_t len;          /* bytes of text */
	char id[37];         /* its id */
	const char *service; /* the service, inside text (not NUL-terminated) */
	size_t service_len;  /* bytes of service */
};

/* The producer's fast path (event_scan.c): one pass over an input event,
 * no JSON tree.  Returns 0 when text is certainly an event that
 * lp_event_parse() accepts with the same arguments, and fills out with
 * exactly the bytes json_dumps(JSON_COMPACT) writes for the event it makes
 * (with the same id, when the input has one; else a fresh UUIDv7);
 * -ENOTSUP when that is not certain, and the caller must take the full
 * path (which also words any refusal).  tenant as for lp_event_parse. */
int lp_event_scan_input(const char *text, size_t len, const struct lp_event_limits *lim,
			int64_t now_ms, const char *tenant, struct lp_event_fast *out);

/* A piece of a text. */
struct lp_json_span {
	const char *p;
	size_t n;
};

/* One pass over the JSON array in text (event_scan.c): fills spans with
 * its elements and returns their count; -ENOTSUP when text is not
 * certainly an array that jansson parses, or has more than max elements
 * (the caller then asks jansson, which also words the error). */
long lp_json_array_spans(const char *text, size_t len, struct lp_json_span *spans, size_t max);
/* The bytes the JSON value at the start of text (after white space) takes
 * when the scan is sure jansson parses it the same, else -ENOTSUP. */
long lp_json_value_end(const char *text, size_t len);

/* Maps a level spelling to its canonical name, NULL if unknown. */
const char *lp_level_canonical(const char *s);
/* Numeric rank of a canonical level (TRACE 0 .. FATAL 5), -1 if unknown. */
int lp_level_rank(const char *canonical);

/* UUIDs. */
void lp_uuid7(char out[37]);          /* new time-ordered UUIDv7, lower case */
bool lp_uuid_valid(const char *s);    /* 8-4-4-4-12 hex */
bool lp_ip_valid(const char *s);      /* IPv4 or IPv6 literal */

/* Splits a batch body into items: a JSON array of objects, or NDJSON (one
 * object per non-blank line; a single object over several lines is a batch
 * of one).  Calls fn once per item in order with either the parsed item
 * (borrowed; fn may json_incref it) or NULL and a parse error message
 * ("line 3: ..." for NDJSON).  Returns the number of items, or a negative
 * errno: -EINVAL if the body is neither form or empty (msg in err), -E2BIG
 * if it holds more than max_items (checked before fn is first called).  fn
 * returning non-zero stops the walk; the count returned then includes that
 * item. */
typedef int (*lp_batch_item_fn)(void *ud, size_t index, json_t *item, const char *error);
long lp_batch_split(const char *body, size_t len, size_t max_items, lp_batch_item_fn fn,
		    void *ud, char *err, size_t errlen);
/* The same, offering each item's text to raw first (when not NULL): raw
 * returns 0 (done) or non-zero (stop) as fn does, or -ENOTSUP to have the
 * item parsed and handed to fn.  raw sees only text the split is sure of
 * (an array element that is an object, or an NDJSON line), and callers
 * get the same items, in the same order, with or without it. */
typedef int (*lp_batch_raw_fn)(void *ud, size_t index, const char *text, size_t len);
long lp_batch_split_raw(const char *body, size_t len, size_t max_items, lp_batch_raw_fn raw,
			lp_batch_item_fn fn, void *ud, char *err, size_t errlen);

#endif
