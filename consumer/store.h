/* store.h - the consumer's PostgreSQL write path: events to COPY rows, one
 * idempotent transaction per batch, and partition maintenance.
 *
 * A batch is a run of COPY text lines, one per event, produced by
 * store_format_row() and laid back to back in one buffer, so that any
 * contiguous sub-range of a batch (what bisecting a failing batch needs)
 * is again a valid COPY payload without copying.
 *
 * store_batch() writes such a payload in one transaction: COPY straight
 * into log_events when store_probe() found that nothing in it can be a
 * duplicate, otherwise COPY into a session-local staging table and one
 * INSERT INTO log_events SELECT ... ON CONFLICT DO NOTHING (and, unless
 * disabled, skipping ids already stored under a timestamp up to a day
 * away).  In the same transaction it adds the rows it inserted to the
 * per-minute and per-hour counts that GET /api/stats reads (migration
 * 004).  It reports what kind of
 * failure happened so the caller can choose between waiting for the
 * database (STORE_UNAVAILABLE), retrying (STORE_TRANSIENT) and splitting
 * the batch to isolate a bad row (STORE_REJECTED).
 *
 * A struct store holds one pooled connection across batches (the staging
 * table lives in that session).  It is not thread-safe: one consume loop
 * owns it. */
#ifndef LOGPIPE_CONSUMER_STORE_H
#define LOGPIPE_CONSUMER_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "logpipe/buf.h"
#include "logpipe/event.h"
#include "logpipe/pg.h"

/* Outcome of one attempt to store a batch. */
enum store_result {
	STORE_OK = 0,
	/* The database cannot be used now: connection refused or lost, server
	 * shutting down, out of resources, or the schema or permissions are not
	 * there.  Not the rows' fault: wait and retry the same rows. */
	STORE_UNAVAILABLE = -1,
	/* The transaction lost a race (serialization failure, deadlock, lock or
	 * statement timeout).  Retrying the same rows soon should work. */
	STORE_TRANSIENT = -2,
	/* The database refused the data (bad value, constraint, limit): some
	 * row in the batch is poison. */
	STORE_REJECTED = -3,
};

/* Where a record came from in Kafka, stored with the row. */
struct store_origin {
	const char *topic;         /* topic name */
	int32_t partition;         /* partition */
	int64_t offset;            /* offset of the record */
	const char *default_status; /* enrichment_status when the event has none */
};

/* Number of columns in a COPY line (and in the staging table). */
#define STORE_NCOLUMNS 19

/* Appends s (len bytes) to out escaped for COPY's text format: backslash,
 * newline, carriage return and tab become two-character escapes.  A NULL s
 * appends \N (SQL NULL). */
void store_copy_escape(struct lp_buf *out, const char *s, size_t len);

/* Appends one COPY text line (with its newline) for the normalised event
 * ev.  Top-level fields that have no column are kept under attributes.
 * Returns 0, or -EINVAL with the reason in err when the event cannot be
 * stored (not an object, bad id, timestamp or level, missing message or
 * service); out is then left as it was. */
int store_format_row(json_t *ev, const struct store_origin *o, struct lp_buf *out, char *err,
		     size_t errlen);

/* The fast path of store_format_row: the same line for the record text[0,
 * len) (as json_loadb would parse it), written from lp_event_scan_stored()
 * without a JSON tree.  scratch: three buffers it may use (kept by the
 * caller between records).  Returns 0, fills v, and sets *rank to the
 * stored level's rank and *level_as_stored to whether the record's level
 * is absent or already spelled as stored; -ENOTSUP when the scan declines
 * or the record is not certainly storable (out is then as it was): the
 * caller takes the full path, which also words any refusal. */
int store_format_fast(const char *text, size_t len, const struct store_origin *o,
		      struct lp_buf *out, struct lp_buf scratch[3], struct lp_event_stored *v,
		      int *rank, bool *level_as_stored);

/* Maps a SQLSTATE (NULL when there is none, e.g. the connection broke) and
 * whether the connection is still good to a store_result. */
enum store_result store_classify(const char *sqlstate, bool conn_ok);

struct store;

/* Most connections one store writes a batch with. */
#define STORE_MAX_WRITERS 8

/* pool: where the store takes its connections (kept across batches).
 * dedup_by_id: also skip an event whose id is stored under another
 * timestamp.  statement_timeout_ms: per statement, 0 = none.  writers:
 * connections the direct path COPYs a batch with at once (1 to
 * STORE_MAX_WRITERS; see store_batch), each taken from pool. */
struct store *store_new(struct lp_pgpool *pool, bool dedup_by_id, int statement_timeout_ms,
			int writers);
/* Returns the connection to the pool.  NULL is a no-op. */
void store_free(struct store *st);

/* Stores the COPY payload data[0..len) holding nrows lines.  fresh:
 * store_probe() found the batch fresh, so it is copied straight into
 * log_events (falling back to the staging path when a row turns out to be
 * stored under the same id and timestamp), by the store's writers at once,
 * each its share of the rows in a transaction of its own, committed only
 * once every share is in; otherwise the staging path, one transaction.  On STORE_OK sets *inserted to the rows that were new (the
 * rest were already stored).  Otherwise err holds the server's message. */
enum store_result store_batch(struct store *st, const char *data, size_t len, size_t nrows,
			      bool fresh, long long *inserted, char *err, size_t errlen);

/* Decides whether a payload may take the direct path: sets *fresh when no
 * id occurs twice in it, none occurs in prev (the payload of the batch
 * stored just before, which may not be committed yet; prevrows 0 for
 * none) and, with dedup_by_id, none is stored under a timestamp up to a
 * day from the batch's times (one query on st's own connection).  A
 * payload it cannot read is not fresh.  Returns STORE_OK, or the kind of
 * failure with err (*fresh is then false). */
enum store_result store_probe(struct store *st, const char *data, size_t len, size_t nrows,
			      const char *prev, size_t prevlen, size_t prevrows, bool *fresh,
			      char *err, size_t errlen);

/* True when some id of payload b occurs in payload a, or when either
 * cannot be read (so that the caller takes the careful path).  Exposed for
 * the tests. */
bool store_ids_overlap(const char *a, size_t alen, size_t arows, const char *b, size_t blen,
		       size_t brows);

/* Reads the ids and timestamps of a payload (the first two columns of each
 * of its nrows lines, as store_format_row writes them).  Returns true when
 * no id occurs twice (case aside), and then fills ids with a PostgreSQL
 * array literal of them and from/to with the batch's time range widened by
 * the one-day dedup window (RFC 3339).  Exposed for the tests. */
bool store_scan_batch(const char *data, size_t len, size_t nrows, struct lp_buf *ids,
		      char from[32], char to[32]);

/* Adds to out the counts of the nrows lines of a payload (as
 * store_format_row writes them) by the key they are counted under in
 * log_events_minute and log_events_hour: one COPY line per minute, tenant,
 * service, level and level_rank (still escaped, sorted) and the number of
 * rows.  Returns 0, or -EINVAL when a line has too few columns or no
 * timestamp.  Exposed for the tests. */
int store_count_keys(const char *data, size_t len, size_t nrows, struct lp_buf *out);

/* Calls logpipe_ensure_partitions(days_back, days_ahead); sets *created.
 * Returns 0 or -EIO with err. */
int store_ensure_partitions(struct lp_pgpool *pool, int days_back, int days_ahead, int *created,
			    char *err, size_t errlen);
/* Drops the daily partitions whose whole day is older than retention_days
 * days before today (UTC), and deletes rows that old from the default
 * partition and counts that old from log_events_minute and _hour.  Sets *dropped to the partitions dropped.  retention_days <= 0
 * keeps everything.  Returns 0 or -EIO with err. */
int store_apply_retention(struct lp_pgpool *pool, int retention_days, int *dropped, char *err,
			  size_t errlen);

/* Routes libpq notices of c to the debug log instead of stderr. */
void store_quiet_notices(PGconn *c);

#endif
