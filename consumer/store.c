/* store.c - batched, idempotent writes of log events into PostgreSQL.
 *
 * A batch of N events costs a fixed handful of round trips instead of N,
 * and the server parses rows in its fastest input path, COPY.  There are
 * two paths:
 *
 *  - direct (almost every batch): BEGIN, COPY straight into log_events,
 *    COMMIT: the cost of a bulk load.  Taken when the caller's
 *    store_probe() found the batch fresh: no id twice in it, none shared
 *    with the batch stored just before it, and (with dedup_by_id) none of
 *    its ids stored within a day of its times (one probe by primary key).
 *    The consume loop runs that probe on its own connection while the
 *    store thread writes the batch before, so it costs the write path
 *    nothing.  A batch delivered again (after a crash or a rebalance)
 *    that the probe did not flag fails the COPY on the primary key and is
 *    rolled back and sent down the other path.  The probe sees what was
 *    committed when it ran; an id another consumer stores meanwhile under
 *    another timestamp gets through, just as past the staging path's NOT
 *    EXISTS, which sees only committed rows too.
 *  - staging: COPY cannot skip duplicates by itself, so rows go into a
 *    temporary table that lives as long as the session (created once per
 *    connection, emptied by ON COMMIT DELETE ROWS) and one INSERT ... SELECT
 *    moves them into log_events with ON CONFLICT DO NOTHING.
 *
 * The table's primary key is
 * (id, ts) because a partitioned table's unique keys must hold the
 * partition key; a redelivered Kafka record always carries both, so the
 * conflict clause alone makes redelivery harmless.  With dedup_by_id the
 * INSERT also skips an id that is already stored under a timestamp up to a
 * day away (a client resending its own id without a timestamp gets a new
 * one from the producer), at the price of a primary-key probe in the two
 * or three partitions of those days per row; DISTINCT ON (id) does the
 * same inside one batch.
 *
 * Both paths add the rows they inserted to the per-minute and per-hour
 * counts of migration 004 in the same transaction (GET /api/stats reads
 * them), and the direct path may COPY a batch on several connections at
 * once (store_direct()).
 *
 * Row format: COPY text format, tab-separated, \N for NULL, with
 * backslash, newline, carriage return and tab escaped.  Timestamps are
 * re-written from the parsed value (RFC 3339 UTC), so the server never
 * sees a spelling it might read differently.
 *
 * Error kinds: see store.h.  The SQLSTATE class decides: connection (08),
 * shutdown (57P01-57P03), resources (53), system (58), missing schema or
 * rights (42, 3D, 3F, 28) and a read-only server (25006) mean "wait for the
 * database"; 40 (rollback), 55P03 (lock) and 57014 (timeout) mean "retry";
 * anything else (22 data, 23 constraint, 54 limit, ...) means a row is bad. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logpipe/event.h"
#include "logpipe/log.h"
#include "logpipe/util.h"
#include "store.h"

#include "logpipe/banned.h"

/* ---- COPY rows ----------------------------------------------------------- */

void store_copy_escape(struct lp_buf *out, const char *s, size_t len)
{
	size_t i, run = 0;

	if (!s) {
		lp_buf_add(out, "\\N", 2);
		return;
	}
	lp_buf_grow(out, len);
	for (i = 0; i < len; i++) {
		const char *esc;

		switch (s[i]) {
		case '\\': esc = "\\\\"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		default: continue;
		}
		lp_buf_add(out, s + run, i - run);
		lp_buf_add(out, esc, 2);
		run = i + 1;
	}
	lp_buf_add(out, s + run, len - run);
}

static void add_col(struct lp_buf *out, const char *s, bool last)
{
	store_copy_escape(out, s, s ? strlen(s) : 0);
	lp_buf_addch(out, last ? '\n' : '\t');
}

static int fail(char *err, size_t errlen, const char *key, const char *what)
{
	if (err && errlen)
		snprintf(err, errlen, "'%s' %s", key, what);
	return -EINVAL;
}

/* Optional string field: absent or null gives NULL, a string gives its
 * value, anything else is an error. */
static int opt_str(json_t *ev, const char *key, const char **out, char *err, size_t errlen)
{
	json_t *v = json_object_get(ev, key);

	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return fail(err, errlen, key, "is not a string");
	*out = json_string_value(v);
	return 0;
}

static int parse_time(json_t *ev, const char *key, bool required, char out[32], bool *present,
		      char *err, size_t errlen)
{
	const char *s;
	int64_t ms;

	*present = false;
	if (opt_str(ev, key, &s, err, errlen) < 0)
		return -EINVAL;
	if (!s)
		return required ? fail(err, errlen, key, "is missing") : 0;
	if (lp_parse_rfc3339(s, &ms) < 0)
		return fail(err, errlen, key, "is not an RFC 3339 time");
	lp_rfc3339(ms, out);
	*present = true;
	return 0;
}

/* Top-level names that have a column (or, for schema_version, that are
 * implied by the table); every other top-level key goes under attributes. */
static bool has_column(const char *key)
{
	static const char *const known[] = {
		"id",      "schema_version", "timestamp",      "received_at", "level",
		"message", "service",        "host",           "source_ip",   "tenant",
		"correlation_id", "attributes", "enrichment", "trace_id", "span_id",
	};

	for (size_t i = 0; i < LP_ARRAY_SIZE(known); i++)
		if (strcmp(key, known[i]) == 0)
			return true;
	return false;
}

/* The attributes to store: the event's object plus any top-level key
 * without a column (an attribute of the same name wins).  Returns a new
 * reference or NULL with err. */
static json_t *merged_attributes(json_t *ev, char *err, size_t errlen)
{
	json_t *attrs = json_object_get(ev, "attributes");
	json_t *out;
	const char *key;
	json_t *val;

	if (attrs && !json_is_null(attrs) && !json_is_object(attrs)) {
		fail(err, errlen, "attributes", "is not an object");
		return NULL;
	}
	out = json_is_object(attrs) ? json_copy(attrs) : json_object();
	json_object_foreach(ev, key, val) {
		if (!has_column(key) && !json_object_get(out, key))
			json_object_set(out, key, val);
	}
	return out;
}

int store_format_row(json_t *ev, const struct store_origin *o, struct lp_buf *out, char *err,
		     size_t errlen)
{
	const char *id, *level, *canon, *message, *service, *host, *source_ip, *tenant, *corr;
	const char *trace, *span;
	const char *status = o->default_status;
	char ts[32], rcv[32], rank[8], part[16], off[24];
	bool has_ts, has_rcv;
	json_t *attrs = NULL, *enr;
	char *attrs_text = NULL, *enr_text = NULL;
	int ret = -EINVAL;

	if (!json_is_object(ev))
		return fail(err, errlen, "event", "is not a JSON object");
	if (opt_str(ev, "id", &id, err, errlen) < 0)
		return -EINVAL;
	if (!lp_uuid_valid(id))
		return fail(err, errlen, "id", "is missing or not a UUID");
	if (parse_time(ev, "timestamp", true, ts, &has_ts, err, errlen) < 0 ||
	    parse_time(ev, "received_at", false, rcv, &has_rcv, err, errlen) < 0)
		return -EINVAL;
	if (opt_str(ev, "level", &level, err, errlen) < 0)
		return -EINVAL;
	canon = level ? lp_level_canonical(level) : "INFO";
	if (!canon)
		return fail(err, errlen, "level", "is not a known level");
	if (opt_str(ev, "message", &message, err, errlen) < 0 ||
	    opt_str(ev, "service", &service, err, errlen) < 0 ||
	    opt_str(ev, "host", &host, err, errlen) < 0 ||
	    opt_str(ev, "source_ip", &source_ip, err, errlen) < 0 ||
	    opt_str(ev, "tenant", &tenant, err, errlen) < 0 ||
	    opt_str(ev, "correlation_id", &corr, err, errlen) < 0 ||
	    opt_str(ev, "trace_id", &trace, err, errlen) < 0 ||
	    opt_str(ev, "span_id", &span, err, errlen) < 0)
		return -EINVAL;
	if (!message)
		return fail(err, errlen, "message", "is missing");
	if (!service || !*service)
		return fail(err, errlen, "service", "is missing or empty");

	enr = json_object_get(ev, "enrichment");
	if (enr && !json_is_null(enr)) {
		json_t *st;

		if (!json_is_object(enr))
			return fail(err, errlen, "enrichment", "is not an object");
		st = json_object_get(enr, "status");
		if (json_is_string(st))
			status = json_string_value(st);
		enr_text = json_dumps(enr, JSON_COMPACT);
	}
	attrs = merged_attributes(ev, err, errlen);
	if (!attrs)
		goto out;
	attrs_text = json_dumps(attrs, JSON_COMPACT);
	if (!attrs_text || (enr && !json_is_null(enr) && !enr_text)) {
		fail(err, errlen, "attributes", "cannot be serialised");
		goto out;
	}

	snprintf(rank, sizeof(rank), "%d", lp_level_rank(canon));
	snprintf(part, sizeof(part), "%d", (int)o->partition);
	snprintf(off, sizeof(off), "%lld", (long long)o->offset);
	/* The column order is the staging table's (see STAGE_DDL). */
	add_col(out, id, false);
	add_col(out, ts, false);
	add_col(out, has_rcv ? rcv : NULL, false);
	add_col(out, canon, false);
	add_col(out, rank, false);
	add_col(out, service, false);
	add_col(out, host, false);
	add_col(out, source_ip, false);
	add_col(out, tenant, false);
	add_col(out, corr, false);
	add_col(out, message, false);
	add_col(out, attrs_text, false);
	add_col(out, enr_text, false);
	add_col(out, status, false);
	add_col(out, o->topic, false);
	add_col(out, part, false);
	add_col(out, off, false);
	add_col(out, trace, false);
	add_col(out, span, true);
	ret = 0;
out:
	json_decref(attrs);
	free(attrs_text);
	free(enr_text);
	return ret;
}

/* A plain string member copied into dst; false when it is absent, holds
 * an escape or does not fit. */
static bool plain_copy(const struct lp_json_text *t, char *dst, size_t len)
{
	if (!t->p || t->escaped || t->n >= len)
		return false;
	memcpy(dst, t->p, t->n);
	dst[t->n] = '\0';
	return true;
}

/* A string member as a COPY field: decoded, then escaped for COPY. */
static void add_text(struct lp_buf *out, const struct lp_json_text *t, struct lp_buf *tmp,
		     bool last)
{
	if (!t->p) {
		lp_buf_add(out, "\\N", 2);
	} else if (!t->escaped) {
		store_copy_escape(out, t->p, t->n);
	} else {
		lp_buf_reset(tmp);
		lp_json_text_add(tmp, t);
		store_copy_escape(out, tmp->buf, tmp->len);
	}
	lp_buf_addch(out, last ? '\n' : '\t');
}

int store_format_fast(const char *text, size_t len, const struct store_origin *o,
		      struct lp_buf *out, struct lp_buf scratch[3], struct lp_event_stored *v,
		      int *rank, bool *level_as_stored)
{
	char id[40], buf[64], ts[32], rcv[32], lvl[32], num[24];
	const char *canon = "INFO";
	int64_t ms;

	lp_buf_reset(&scratch[0]);
	lp_buf_reset(&scratch[1]);
	if (!text || lp_event_scan_stored(text, len, v, &scratch[0], &scratch[1]) < 0)
		return -ENOTSUP;
	/* The checks of store_format_row; any doubt is the full path's. */
	if (!plain_copy(&v->id, id, sizeof(id)) || !lp_uuid_valid(id))
		return -ENOTSUP;
	if (!plain_copy(&v->timestamp, buf, sizeof(buf)) || lp_parse_rfc3339(buf, &ms) < 0)
		return -ENOTSUP;
	lp_rfc3339(ms, ts);
	if (v->received_at.p) {
		if (!plain_copy(&v->received_at, buf, sizeof(buf)) ||
		    lp_parse_rfc3339(buf, &ms) < 0)
			return -ENOTSUP;
		lp_rfc3339(ms, rcv);
	}
	*level_as_stored = true;
	if (v->level.p) {
		if (!plain_copy(&v->level, lvl, sizeof(lvl)) || !(canon = lp_level_canonical(lvl)))
			return -ENOTSUP;
		*level_as_stored = strcmp(canon, lvl) == 0;
	}
	if (!v->message.p || !v->service.p || v->service.n == 0)
		return -ENOTSUP;
	*rank = lp_level_rank(canon);

	/* The column order is store_format_row's. */
	add_col(out, id, false);
	add_col(out, ts, false);
	add_col(out, v->received_at.p ? rcv : NULL, false);
	add_col(out, canon, false);
	snprintf(num, sizeof(num), "%d", *rank);
	add_col(out, num, false);
	add_text(out, &v->service, &scratch[2], false);
	add_text(out, &v->host, &scratch[2], false);
	add_text(out, &v->source_ip, &scratch[2], false);
	add_text(out, &v->tenant, &scratch[2], false);
	add_text(out, &v->correlation_id, &scratch[2], false);
	add_text(out, &v->message, &scratch[2], false);
	store_copy_escape(out, scratch[0].buf, scratch[0].len);
	lp_buf_addch(out, '\t');
	if (v->has_enrichment)
		store_copy_escape(out, scratch[1].buf, scratch[1].len);
	else
		lp_buf_add(out, "\\N", 2);
	lp_buf_addch(out, '\t');
	if (v->status.p)
		add_text(out, &v->status, &scratch[2], false);
	else
		add_col(out, o->default_status, false);
	add_col(out, o->topic, false);
	snprintf(num, sizeof(num), "%d", (int)o->partition);
	add_col(out, num, false);
	snprintf(num, sizeof(num), "%lld", (long long)o->offset);
	add_col(out, num, false);
	add_text(out, &v->trace_id, &scratch[2], false);
	add_text(out, &v->span_id, &scratch[2], true);
	return 0;
}

/* ---- error kinds ------------------------------------------------------- */

enum store_result store_classify(const char *sqlstate, bool conn_ok)
{
	static const char *const unavailable_classes[] = {"08", "53", "58", "42", "3D", "3F", "28"};
	static const char *const unavailable_codes[] = {"57P01", "57P02", "57P03", "25006"};
	static const char *const transient_codes[] = {"55P03", "57014"};

	if (!conn_ok || !sqlstate || strlen(sqlstate) != 5)
		return STORE_UNAVAILABLE;
	for (size_t i = 0; i < LP_ARRAY_SIZE(unavailable_codes); i++)
		if (strcmp(sqlstate, unavailable_codes[i]) == 0)
			return STORE_UNAVAILABLE;
	for (size_t i = 0; i < LP_ARRAY_SIZE(unavailable_classes); i++)
		if (strncmp(sqlstate, unavailable_classes[i], 2) == 0)
			return STORE_UNAVAILABLE;
	if (strncmp(sqlstate, "40", 2) == 0)
		return STORE_TRANSIENT;
	for (size_t i = 0; i < LP_ARRAY_SIZE(transient_codes); i++)
		if (strcmp(sqlstate, transient_codes[i]) == 0)
			return STORE_TRANSIENT;
	return STORE_REJECTED;
}

/* ---- the batch transaction -------------------------------------------- */

struct store {
	struct lp_pgpool *pool;   /* where conn comes from */
	PGconn *conn;             /* held across batches; NULL until needed */
	bool stage_ready;         /* the staging table exists in conn's session */
	bool dedup_by_id;         /* also skip ids stored under another ts */
	int statement_timeout_ms; /* set on the session; 0 = none */
	int nhelpers;             /* extra writers of the direct path */
	struct store *helper[STORE_MAX_WRITERS - 1]; /* their connections */
};

#define STAGE_COLUMNS                                                                  \
	"id, ts, received_at, level, level_rank, service, host, source_ip, tenant, " \
	"correlation_id, message, attributes, enrichment, enrichment_status, "      \
	"kafka_topic, kafka_partition, kafka_offset, trace_id, span_id"

static const char STAGE_DDL[] =
	"CREATE TEMP TABLE IF NOT EXISTS logpipe_stage ("
	"id uuid, ts timestamptz, received_at timestamptz, level text, level_rank smallint, "
	"service text, host text, source_ip text, tenant text, correlation_id text, "
	"message text, attributes json, enrichment json, enrichment_status text, "
	"kafka_topic text, kafka_partition int, kafka_offset bigint, trace_id text, "
	"span_id text) ON COMMIT DELETE ROWS";

/* The columns of the per-minute counts (migration 004) a stored row adds
 * one to, in this order: what store_count_keys() writes and what the
 * staging INSERT returns. */
#define KEY_COLUMNS "ts, tenant, service, level, level_rank"

/* n rows to count at ts (store_count_keys() gives whole minutes) under
 * tenant, service, level, level_rank: the rows the transaction inserted. */
static const char KEYS_DDL[] =
	"CREATE TEMP TABLE IF NOT EXISTS logpipe_stage_keys (ts timestamptz, tenant text, "
	"service text, level text, level_rank smallint, n bigint) ON COMMIT DELETE ROWS";

/* Adds the rows of logpipe_stage_keys (the rows this transaction inserted)
 * to the per-minute and per-hour counts.  Every writer takes the count
 * rows' locks in the same order (minute before hour, each sorted by key),
 * so two transactions adding to the same minutes wait for each other
 * instead of deadlocking. */
#define COUNT_INTO(table, col, fn)                                                         \
	"INSERT INTO " table " AS c (" col ", tenant, service, level, level_rank, n) "  \
	"SELECT " fn "(ts), tenant, service, level, level_rank, sum(n) "              \
	"FROM logpipe_stage_keys GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5 "       \
	"ON CONFLICT ON CONSTRAINT " table "_key DO UPDATE SET n = c.n + excluded.n"

static const char COUNTS_SQL[] = COUNT_INTO("log_events_minute", "minute", "logpipe_minute")
	"; " COUNT_INTO("log_events_hour", "hour", "logpipe_hour");

/* The staging path's insert: the rows it inserted (not those ON CONFLICT
 * skipped) go into logpipe_stage_keys to be counted; it returns how many. */
#define STAGE_INSERT(select)                                                               \
	"WITH ins AS (INSERT INTO log_events (" STAGE_COLUMNS ") " select                  \
	" ON CONFLICT DO NOTHING RETURNING " KEY_COLUMNS "), "                             \
	"k AS (INSERT INTO logpipe_stage_keys (" KEY_COLUMNS ", n) SELECT *, 1 FROM ins) " \
	"SELECT count(*) FROM ins"

static const char INSERT_SQL[] =
	STAGE_INSERT("SELECT " STAGE_COLUMNS " FROM logpipe_stage");

/* An id stored under a timestamp this close is the same event. */
#define DEDUP_WINDOW_MS (24LL * 3600 * 1000)

/* Is any id of the batch stored within the window?  logpipe_ids_stored()
 * (migration 004) asks each daily partition of the window's days for the
 * ids alone, which only the primary key answers: asked with the ts range
 * too, a partition without statistics yet (a new day's, one just emptied)
 * had the planner walk its (ts, id) index through the whole window for
 * every batch, which cost more than storing the batch. */
static const char PROBE_SQL[] = "SELECT logpipe_ids_stored($1::uuid[], $2::timestamptz, "
				"$3::timestamptz)";

/* A window of more days than this (a batch with times far apart) is probed
 * through the parent table instead: one query per day would not end. */
#define PROBE_MAX_DAYS 8

/* The range is constant, so the planner prunes to the partitions of those
 * days; the ids are probed by primary key, unless stale statistics mislead
 * the planner (see above). */
static const char PROBE_WIDE_SQL[] =
	"SELECT 1 FROM log_events WHERE id = ANY($1::uuid[]) "
	"AND ts >= $2::timestamptz AND ts <= $3::timestamptz LIMIT 1";

/* The window bounds the probe to the partitions of the neighbouring days
 * (the planner prunes the others at run time): a probe of every partition
 * costs more than the insert itself once a week of them exists. */
static const char INSERT_DEDUP_SQL[] =
	STAGE_INSERT("SELECT DISTINCT ON (s.id) " STAGE_COLUMNS
		     " FROM logpipe_stage s WHERE NOT EXISTS "
		     "(SELECT 1 FROM log_events e WHERE e.id = s.id AND "
		     "e.ts >= s.ts - interval '1 day' AND e.ts <= s.ts + interval '1 day')");


/* The only sane plan for the dedup probe is a nested loop of primary-key
 * probes into the partitions left after run-time pruning.  A partition
 * whose statistics are stale (a new day's, or one just bulk-loaded) can make
 * the planner hash the whole partition, or walk the ts index, for every
 * batch instead; in this session (the store's own) those alternatives are
 * switched off.  The INSERT itself only scans the staging table, which has
 * no other path.  Switching plans off inflates cost estimates past the JIT
 * thresholds, and compiling the expressions of a 1000-row insert costs more
 * than running them, so JIT is off too.  The statement is not prepared: a
 * generic plan ran the probe far slower than the plan made for each batch. */
static const char PLAN_SETTINGS[] =
	"SET enable_hashjoin = off; SET enable_mergejoin = off; "
	"SET enable_bitmapscan = off; SET enable_seqscan = off; SET jit = off";

static void notice_to_log(void *arg, const char *message)
{
	size_t n = strlen(message);

	lp_debug("postgres: %.*s", (int)(n && message[n - 1] == '\n' ? n - 1 : n), message);
}

void store_quiet_notices(PGconn *c)
{
	if (c)
		PQsetNoticeProcessor(c, notice_to_log, NULL);
}

struct store *store_new(struct lp_pgpool *pool, bool dedup_by_id, int statement_timeout_ms,
			int writers)
{
	struct store *st = lp_xcalloc(1, sizeof(*st));

	st->pool = pool;
	st->dedup_by_id = dedup_by_id;
	st->statement_timeout_ms = statement_timeout_ms;
	writers = writers < 1 ? 1 : writers > STORE_MAX_WRITERS ? STORE_MAX_WRITERS : writers;
	for (st->nhelpers = 0; st->nhelpers < writers - 1; st->nhelpers++)
		st->helper[st->nhelpers] = store_new(pool, dedup_by_id, statement_timeout_ms, 1);
	return st;
}

static void drop_conn(struct store *st, bool broken)
{
	if (st->conn)
		lp_pgpool_put(st->pool, st->conn, broken);
	st->conn = NULL;
	st->stage_ready = false;
}

void store_free(struct store *st)
{
	if (!st)
		return;
	for (int i = 0; i < st->nhelpers; i++)
		store_free(st->helper[i]);
	drop_conn(st, false);
	free(st);
}

/* Classifies res (which may be NULL), copies the message into err and
 * clears res.  A connection that is no longer usable is given back broken. */
static enum store_result failed(struct store *st, PGresult *res, char *err, size_t errlen)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	bool conn_ok = st->conn && PQstatus(st->conn) == CONNECTION_OK;
	/* The primary message only: DETAIL may repeat a whole row. */
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	enum store_result r;
	size_t n;

	if (!msg || !*msg)
		msg = st->conn ? PQerrorMessage(st->conn) : "no connection";
	snprintf(err, errlen, "%s%s%s", state ? state : "", state ? ": " : "", msg);
	n = strlen(err);
	while (n && (err[n - 1] == '\n' || err[n - 1] == ' '))
		err[--n] = '\0';
	r = store_classify(state, conn_ok && !(res && lp_pg_conn_error(res, st->conn)));
	PQclear(res);
	if (r == STORE_UNAVAILABLE || !conn_ok) {
		drop_conn(st, true);
	} else if (PQtransactionStatus(st->conn) != PQTRANS_IDLE) {
		PGresult *rb = PQexec(st->conn, "ROLLBACK");
		if (PQresultStatus(rb) != PGRES_COMMAND_OK)
			drop_conn(st, true);
		PQclear(rb);
	}
	return r;
}

/* Runs a command expecting PGRES_COMMAND_OK; on failure returns its kind. */
static enum store_result exec_cmd(struct store *st, const char *sql, char *err, size_t errlen)
{
	PGresult *res = PQexec(st->conn, sql);

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		return failed(st, res, err, errlen);
	PQclear(res);
	return STORE_OK;
}

/* Makes sure st->conn is connected and has the staging table. */
static enum store_result prepare_session(struct store *st, char *err, size_t errlen)
{
	char sql[64];
	enum store_result r;

	if (!st->conn) {
		st->conn = lp_pgpool_get(st->pool, 5000, err, errlen);
		if (!st->conn)
			return STORE_UNAVAILABLE;
		store_quiet_notices(st->conn);
		st->stage_ready = false;
	}
	if (st->stage_ready)
		return STORE_OK;
	snprintf(sql, sizeof(sql), "SET statement_timeout = %d", st->statement_timeout_ms);
	r = exec_cmd(st, sql, err, errlen);
	if (r == STORE_OK)
		r = exec_cmd(st, STAGE_DDL, err, errlen);
	if (r == STORE_OK)
		r = exec_cmd(st, KEYS_DDL, err, errlen);
	if (r == STORE_OK)
		r = exec_cmd(st, PLAN_SETTINGS, err, errlen);
	if (r != STORE_OK)
		return r == STORE_REJECTED ? STORE_UNAVAILABLE : r;
	st->stage_ready = true;
	return STORE_OK;
}

/* Runs copy_sql (a COPY ... FROM STDIN) with the payload, sent with
 * PQputCopyData in pieces libpq handles well.  *dup is set when the COPY
 * failed on a unique key (SQLSTATE 23505). */
static enum store_result copy_rows(struct store *st, const char *copy_sql, const char *data,
				   size_t len, bool *dup, char *err, size_t errlen)
{
	const size_t chunk = 256 * 1024;
	PGresult *res = PQexec(st->conn, copy_sql);
	const char *state;
	size_t off;

	*dup = false;
	if (PQresultStatus(res) != PGRES_COPY_IN)
		return failed(st, res, err, errlen);
	PQclear(res);
	for (off = 0; off < len; off += chunk) {
		size_t n = len - off < chunk ? len - off : chunk;

		if (PQputCopyData(st->conn, data + off, (int)n) != 1)
			break;
	}
	/* An incomplete send ends the COPY with an error so the server rolls
	 * back; the result below then reports it. */
	PQputCopyEnd(st->conn, off < len ? "incomplete copy data" : NULL);
	res = PQgetResult(st->conn);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		/* Drain the remaining results so the connection is idle again. */
		PGresult *more;
		while ((more = PQgetResult(st->conn)))
			PQclear(more);
		state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		*dup = state && strcmp(state, "23505") == 0;
		return failed(st, res, err, errlen);
	}
	PQclear(res);
	while ((res = PQgetResult(st->conn)))
		PQclear(res);
	return STORE_OK;
}

/* ---- the direct path ------------------------------------------------------ */

static int cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, 36);
}

/* Reads the ids (lower case) and the time range of the nrows lines of a
 * payload, as store_format_row writes them, into *keysp (allocated, sorted)
 * and lo/hi; adds the PostgreSQL array literal of the ids to ids when it is
 * not NULL.  Returns false when the payload is not in that format (*keysp
 * is then NULL). */
static bool scan_ids(const char *data, size_t len, size_t nrows, char (**keysp)[36],
		     struct lp_buf *ids, int64_t *lo, int64_t *hi)
{
	char (*keys)[36] = lp_xmalloc((nrows ? nrows : 1) * sizeof(*keys));
	const char *p = data, *end = data + len;
	size_t n = 0, i;

	*lo = INT64_MAX;
	*hi = INT64_MIN;
	if (ids)
		lp_buf_addch(ids, '{');
	while (p < end && n < nrows) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *ts = p + 37, *tab;
		char tsbuf[40];
		int64_t ms;

		if (!nl || nl - p < 38 || p[36] != '\t' ||
		    !(tab = memchr(ts, '\t', (size_t)(nl - ts))) ||
		    (size_t)(tab - ts) >= sizeof(tsbuf))
			break; /* not our format: let the careful path decide */
		for (i = 0; i < 36; i++)
			keys[n][i] = (char)tolower((unsigned char)p[i]);
		memcpy(tsbuf, ts, (size_t)(tab - ts));
		tsbuf[tab - ts] = '\0';
		if (lp_parse_rfc3339(tsbuf, &ms) < 0)
			break;
		*lo = ms < *lo ? ms : *lo;
		*hi = ms > *hi ? ms : *hi;
		if (ids) {
			if (n)
				lp_buf_addch(ids, ',');
			lp_buf_add(ids, keys[n], 36);
		}
		n++;
		p = nl + 1;
	}
	if (ids)
		lp_buf_addch(ids, '}');
	if (n != nrows || nrows == 0) {
		free(keys);
		*keysp = NULL;
		return false;
	}
	qsort(keys, n, sizeof(*keys), cmp_id);
	*keysp = keys;
	return true;
}

bool store_scan_batch(const char *data, size_t len, size_t nrows, struct lp_buf *ids,
		      char from[32], char to[32])
{
	char (*keys)[36];
	int64_t lo, hi;
	bool ok;
	size_t i;

	if (!scan_ids(data, len, nrows, &keys, ids, &lo, &hi))
		return false;
	ok = true;
	for (i = 1; i < nrows && ok; i++)
		ok = memcmp(keys[i - 1], keys[i], 36) != 0;
	free(keys);
	if (ok) {
		lp_rfc3339(lo - DEDUP_WINDOW_MS, from);
		lp_rfc3339(hi + DEDUP_WINDOW_MS, to);
	}
	return ok;
}

bool store_ids_overlap(const char *a, size_t alen, size_t arows, const char *b, size_t blen,
		       size_t brows)
{
	char (*ka)[36], (*kb)[36];
	int64_t lo, hi;
	bool overlap = false;
	size_t i;

	if (arows == 0 || brows == 0)
		return false;
	if (!scan_ids(a, alen, arows, &ka, NULL, &lo, &hi))
		return true;
	if (!scan_ids(b, blen, brows, &kb, NULL, &lo, &hi)) {
		free(ka);
		return true;
	}
	for (i = 0; i < brows && !overlap; i++)
		overlap = bsearch(kb[i], ka, arows, sizeof(*ka), cmp_id) != NULL;
	free(ka);
	free(kb);
	return overlap;
}

enum store_result store_probe(struct store *st, const char *data, size_t len, size_t nrows,
			      const char *prev, size_t prevlen, size_t prevrows, bool *fresh,
			      char *err, size_t errlen)
{
	struct lp_buf ids = LP_BUF_INIT;
	char from[32], to[32];
	const char *params[3];
	enum store_result r = STORE_OK;
	int64_t lo, hi;
	PGresult *res;
	bool wide;

	*fresh = false;
	if (nrows == 0 || !store_scan_batch(data, len, nrows, &ids, from, to) ||
	    store_ids_overlap(prev, prevlen, prevrows, data, len, nrows))
		goto out;
	if (!st->dedup_by_id) {
		*fresh = true;
		goto out;
	}
	r = prepare_session(st, err, errlen);
	if (r != STORE_OK)
		goto out;
	params[0] = ids.buf;
	params[1] = from;
	params[2] = to;
	wide = lp_parse_rfc3339(from, &lo) < 0 || lp_parse_rfc3339(to, &hi) < 0 ||
	       hi - lo > PROBE_MAX_DAYS * 24LL * 3600 * 1000;
	res = PQexecParams(st->conn, wide ? PROBE_WIDE_SQL : PROBE_SQL, 3, NULL, params, NULL,
			   NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		r = failed(st, res, err, errlen);
		goto out;
	}
	*fresh = wide ? PQntuples(res) == 0
		      : PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "f") == 0;
	PQclear(res);
out:
	lp_buf_release(&ids);
	return r;
}

/* ---- per-minute counts ---------------------------------------------------- */

/* Column numbers in a COPY line (the order of STAGE_COLUMNS). */
enum { COL_TS = 1, COL_LEVEL = 3, COL_RANK = 4, COL_SERVICE = 5, COL_TENANT = 8 };

struct count_key {
	const char *s;   /* the key's text, once the keys buffer is complete */
	size_t off, len; /* where it is in that buffer */
};

static int cmp_key(const void *a, const void *b)
{
	const struct count_key *x = a, *y = b;
	int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);

	return c ? c : (x->len > y->len) - (x->len < y->len);
}

int store_count_keys(const char *data, size_t len, size_t nrows, struct lp_buf *out)
{
	static const int order[] = { COL_TENANT, COL_SERVICE, COL_LEVEL, COL_RANK };
	struct count_key *key = lp_xmalloc((nrows ? nrows : 1) * sizeof(*key));
	struct lp_buf text = LP_BUF_INIT;
	const char *p = data, *end = data + len;
	size_t n, i, run;
	int ret = -EINVAL;

	for (n = 0; n < nrows; n++) {
		const char *nl = p < end ? memchr(p, '\n', (size_t)(end - p)) : NULL;
		const char *col[COL_TENANT + 2];
		const char *q = p;
		char tsbuf[40], minute[32];
		size_t tslen;
		int c = 0;
		int64_t ms;

		if (!nl)
			goto out;
		/* Escaped values hold no tab: every tab ends a column. */
		col[c++] = q;
		while (c < (int)LP_ARRAY_SIZE(col) && (q = memchr(q, '\t', (size_t)(nl - q)))) {
			q++;
			col[c++] = q;
		}
		if (c < (int)LP_ARRAY_SIZE(col))
			goto out;
		tslen = (size_t)(col[COL_TS + 1] - 1 - col[COL_TS]);
		if (tslen >= sizeof(tsbuf))
			goto out;
		memcpy(tsbuf, col[COL_TS], tslen);
		tsbuf[tslen] = '\0';
		if (lp_parse_rfc3339(tsbuf, &ms) < 0)
			goto out;
		/* The minute as logpipe_minute() has it: whole minutes since
		 * 2000, which is a whole number of minutes after 1970. */
		ms -= ((ms % 60000) + 60000) % 60000;
		lp_rfc3339(ms, minute);
		key[n].off = text.len;
		lp_buf_adds(&text, minute);
		for (i = 0; i < LP_ARRAY_SIZE(order); i++) {
			int k = order[i];

			/* The column, still escaped: COPY reads it back as it was. */
			lp_buf_addch(&text, '\t');
			lp_buf_add(&text, col[k], (size_t)(col[k + 1] - 1 - col[k]));
		}
		key[n].len = text.len - key[n].off;
		p = nl + 1;
	}
	/* One line per key, with its number of rows. */
	for (i = 0; i < n; i++)
		key[i].s = text.buf + key[i].off;
	qsort(key, n, sizeof(*key), cmp_key);
	for (i = 0; i < n; i = run) {
		for (run = i + 1; run < n && cmp_key(&key[i], &key[run]) == 0; run++)
			;
		lp_buf_add(out, key[i].s, key[i].len);
		lp_buf_addf(out, "\t%zu\n", run - i);
	}
	ret = 0;
out:
	lp_buf_release(&text);
	free(key);
	return ret;
}

/* Adds the rows this transaction inserted, listed in logpipe_stage_keys,
 * to the per-minute and per-hour counts. */
static enum store_result add_counts(struct store *st, char *err, size_t errlen)
{
	return exec_cmd(st, COUNTS_SQL, err, errlen);
}

/* ---- the two paths ------------------------------------------------------- */

/* One writer's share of the direct path, up to its COMMIT: BEGIN, COPY
 * its rows straight into log_events and their count keys into
 * logpipe_stage_keys.  A row already stored under the same (id, ts) fails
 * the COPY on the primary key and sets *dup. */
struct direct_part {
	struct store *st;
	const char *data;
	size_t len, nrows;
	bool dup;
	enum store_result r;
	char err[256];
	pthread_t thread;
	bool started; /* thread runs direct_copy(); join it */
};

static void direct_copy(struct direct_part *p)
{
	struct store *st = p->st;
	struct lp_buf keys = LP_BUF_INIT;
	bool kdup;

	p->dup = false;
	p->r = prepare_session(st, p->err, sizeof(p->err));
	if (p->r == STORE_OK && store_count_keys(p->data, p->len, p->nrows, &keys) < 0) {
		snprintf(p->err, sizeof(p->err), "%s", "a row is not in the consumer's COPY format");
		p->r = STORE_REJECTED;
	}
	if (p->r == STORE_OK)
		p->r = exec_cmd(st, "BEGIN", p->err, sizeof(p->err));
	if (p->r == STORE_OK)
		p->r = copy_rows(st, "COPY log_events (" STAGE_COLUMNS ") FROM STDIN", p->data,
				 p->len, &p->dup, p->err, sizeof(p->err));
	if (p->r == STORE_OK)
		p->r = copy_rows(st, "COPY logpipe_stage_keys (" KEY_COLUMNS ", n) FROM STDIN",
				 keys.buf, keys.len, &kdup, p->err, sizeof(p->err));
	lp_buf_release(&keys);
}

static void *direct_part_main(void *arg)
{
	direct_copy(arg);
	return NULL;
}

/* Rows a writer of the direct path is worth starting for. */
#define DIRECT_MIN_ROWS_PER_WRITER 100

/* The direct path.  The payload is cut into parts at line boundaries, one
 * per writer (the store's own connection and its helpers'), and each
 * writer COPYs its part in a transaction of its own, all at once: the
 * server parses the rows and updates the indexes on as many backends.  The
 * parts hold distinct ids (the batch is fresh), so the writers never wait
 * for each other's rows.  Only when every COPY succeeded does each writer,
 * one after the other, add its rows to the counts and COMMIT: the counts'
 * rows are shared, and a writer waiting for another's lock while this
 * thread waits for it would never end.  Otherwise every part is rolled
 * back; *dup asks for the staging path when a row was already stored.
 *
 * If a COMMIT fails after an earlier part's succeeded, the batch is stored
 * again by the caller: the rows committed are then duplicates (same id and
 * timestamp) and skipped, so nothing is stored or counted twice; they are
 * reported as duplicates rather than as inserted. */
static enum store_result store_direct(struct store *st, const char *data, size_t len,
				      size_t nrows, bool *dup, long long *inserted, char *err,
				      size_t errlen)
{
	struct direct_part part[STORE_MAX_WRITERS];
	size_t n = (size_t)st->nhelpers + 1, i, row = 0;
	const char *p = data, *end = data + len;
	enum store_result r = STORE_OK;

	if (n > nrows / DIRECT_MIN_ROWS_PER_WRITER)
		n = nrows / DIRECT_MIN_ROWS_PER_WRITER ? nrows / DIRECT_MIN_ROWS_PER_WRITER : 1;
	memset(part, 0, sizeof(part));
	for (i = 0; i < n; i++) {
		size_t want = nrows * (i + 1) / n - row;
		const char *q = p;

		part[i].st = i == 0 ? st : st->helper[i - 1];
		part[i].data = p;
		part[i].nrows = want;
		for (size_t k = 0; k < want && q; k++) {
			q = memchr(q, '\n', (size_t)(end - q));
			q = q ? q + 1 : NULL;
		}
		if (!q || (i == n - 1 && q != end)) {
			snprintf(err, errlen, "%s", "the payload does not hold the rows announced");
			return STORE_REJECTED;
		}
		part[i].len = (size_t)(q - p);
		row += want;
		p = q;
	}
	for (i = 1; i < n; i++)
		part[i].started = pthread_create(&part[i].thread, NULL, direct_part_main,
						 &part[i]) == 0;
	for (i = 0; i < n; i++)
		if (!part[i].started)
			direct_copy(&part[i]); /* part 0, or no thread for it */
	for (i = 1; i < n; i++)
		if (part[i].started)
			pthread_join(part[i].thread, NULL);

	/* The first failure is the one reported, a duplicate before any. */
	*dup = false;
	for (i = 0; i < n; i++) {
		if (part[i].r == STORE_OK)
			continue;
		if (r == STORE_OK || (part[i].dup && !*dup)) {
			r = part[i].r;
			snprintf(err, errlen, "%s", part[i].err);
		}
		*dup = *dup || part[i].dup;
	}
	if (r != STORE_OK) {
		/* A failed part was rolled back by failed(); roll the others back. */
		for (i = 0; i < n; i++)
			if (part[i].r == STORE_OK)
				exec_cmd(part[i].st, "ROLLBACK", part[i].err, sizeof(part[i].err));
		return r;
	}
	for (i = 0; i < n && r == STORE_OK; i++) {
		r = add_counts(part[i].st, err, errlen);
		if (r == STORE_OK)
			r = exec_cmd(part[i].st, "COMMIT", err, errlen);
	}
	if (r != STORE_OK) {
		/* The parts not yet committed are rolled back; those committed
		 * are skipped as duplicates when the batch is stored again. */
		for (; i < n; i++)
			exec_cmd(part[i].st, "ROLLBACK", part[i].err, sizeof(part[i].err));
		return r;
	}
	*inserted = (long long)nrows;
	return STORE_OK;
}

enum store_result store_batch(struct store *st, const char *data, size_t len, size_t nrows,
			      bool fresh, long long *inserted, char *err, size_t errlen)
{
	enum store_result r;
	PGresult *res = NULL;
	bool dup = false;
	long long n;

	*inserted = 0;
	if (nrows == 0)
		return STORE_OK;
	r = prepare_session(st, err, errlen);
	if (r != STORE_OK)
		return r;
	if (fresh) {
		r = store_direct(st, data, len, nrows, &dup, inserted, err, errlen);
		if (r == STORE_OK || !dup)
			return r;
	}
	/* The staging path: the careful one, for batches that may hold
	 * events already stored. */
	r = prepare_session(st, err, errlen);
	if (r == STORE_OK)
		r = exec_cmd(st, "BEGIN", err, errlen);
	if (r == STORE_OK)
		r = copy_rows(st, "COPY logpipe_stage (" STAGE_COLUMNS ") FROM STDIN", data, len,
			      &dup, err, errlen);
	if (r == STORE_OK) {
		res = PQexec(st->conn, st->dedup_by_id ? INSERT_DEDUP_SQL : INSERT_SQL);
		if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
			r = failed(st, res, err, errlen);
			res = NULL;
		}
	}
	if (r != STORE_OK)
		return r;
	n = atoll(PQgetvalue(res, 0, 0));
	PQclear(res);
	r = add_counts(st, err, errlen);
	/* A COMMIT that fails with the connection may or may not have committed;
	 * the caller retries and the conflict clause makes that safe (the
	 * counts were committed with the rows or not at all). */
	if (r == STORE_OK)
		r = exec_cmd(st, "COMMIT", err, errlen);
	if (r == STORE_OK)
		*inserted = n;
	return r;
}

/* ---- partitions --------------------------------------------------------- */

/* Takes a connection for one maintenance call.  Returns NULL with err. */
static PGconn *maint_conn(struct lp_pgpool *pool, char *err, size_t errlen)
{
	PGconn *c = lp_pgpool_get(pool, 5000, err, errlen);

	store_quiet_notices(c);
	return c;
}

static int maint_fail(struct lp_pgpool *pool, PGconn *c, PGresult *res, const char *what,
		      char *err, size_t errlen)
{
	const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(c);
	size_t n;

	snprintf(err, errlen, "%s: %s", what, msg && *msg ? msg : "failed");
	n = strlen(err);
	while (n && err[n - 1] == '\n')
		err[--n] = '\0';
	lp_pgpool_put(pool, c, res ? lp_pg_conn_error(res, c) : true);
	PQclear(res);
	return -EIO;
}

int store_ensure_partitions(struct lp_pgpool *pool, int days_back, int days_ahead, int *created,
			    char *err, size_t errlen)
{
	char back[16], ahead[16];
	const char *params[2] = { back, ahead };
	PGconn *c = maint_conn(pool, err, errlen);
	PGresult *res;

	*created = 0;
	if (!c)
		return -EIO;
	snprintf(back, sizeof(back), "%d", days_back);
	snprintf(ahead, sizeof(ahead), "%d", days_ahead);
	res = PQexecParams(c, "SELECT logpipe_ensure_partitions($1::int, $2::int)", 2, NULL,
			   params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		return maint_fail(pool, c, res, "logpipe_ensure_partitions", err, errlen);
	*created = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	lp_pgpool_put(pool, c, false);
	return 0;
}

/* Daily partitions (named log_events_YYYYMMDD by logpipe_ensure_partitions)
 * whose day is before the cutoff day.  Names compare as dates because they
 * are fixed-width digits. */
static const char OLD_PARTITIONS_SQL[] =
	"SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
	"WHERE i.inhparent = 'log_events'::regclass "
	"AND c.relname ~ '^log_events_[0-9]{8}$' "
	"AND substr(c.relname, 12) < to_char((now() AT TIME ZONE 'UTC')::date - $1::int, "
	"'YYYYMMDD') ORDER BY 1";

static const char OLD_DEFAULT_ROWS_SQL[] =
	"DELETE FROM log_events_default WHERE ts < "
	"((now() AT TIME ZONE 'UTC')::date - $1::int)::timestamp AT TIME ZONE 'UTC'";

#define RETENTION_CUTOFF "((now() AT TIME ZONE 'UTC')::date - $1::int)::timestamp AT TIME ZONE 'UTC'"

static const char OLD_COUNTS_SQL[] =
	"WITH m AS (DELETE FROM log_events_minute WHERE minute < " RETENTION_CUTOFF ") "
	"DELETE FROM log_events_hour WHERE hour < " RETENTION_CUTOFF;

int store_apply_retention(struct lp_pgpool *pool, int retention_days, int *dropped, char *err,
			  size_t errlen)
{
	char days[16];
	const char *params[1] = { days };
	PGconn *c;
	PGresult *res;
	int i, n;

	*dropped = 0;
	if (retention_days <= 0)
		return 0;
	c = maint_conn(pool, err, errlen);
	if (!c)
		return -EIO;
	snprintf(days, sizeof(days), "%d", retention_days);
	res = PQexecParams(c, OLD_PARTITIONS_SQL, 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return maint_fail(pool, c, res, "listing partitions", err, errlen);
	n = PQntuples(res);
	for (i = 0; i < n; i++) {
		/* The name comes from the catalog, not from a request, and is
		 * quoted as an identifier all the same. */
		char *ident = PQescapeIdentifier(c, PQgetvalue(res, i, 0),
						 strlen(PQgetvalue(res, i, 0)));
		struct lp_buf sql = LP_BUF_INIT;
		PGresult *dr;

		if (!ident)
			break;
		lp_buf_addf(&sql, "DROP TABLE IF EXISTS %s", ident);
		PQfreemem(ident);
		dr = PQexec(c, sql.buf);
		lp_buf_release(&sql);
		if (PQresultStatus(dr) != PGRES_COMMAND_OK) {
			PQclear(res);
			return maint_fail(pool, c, dr, "dropping a partition", err, errlen);
		}
		PQclear(dr);
		lp_info("retention: dropped partition %s (older than %d days)",
			PQgetvalue(res, i, 0), retention_days);
		(*dropped)++;
	}
	PQclear(res);
	res = PQexecParams(c, OLD_DEFAULT_ROWS_SQL, 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		return maint_fail(pool, c, res, "trimming the default partition", err, errlen);
	if (atoll(PQcmdTuples(res)) > 0)
		lp_info("retention: deleted %s old rows from log_events_default", PQcmdTuples(res));
	PQclear(res);
	/* The counts of the same days (the cutoff is a day's start, so whole
	 * minutes and hours go). */
	res = PQexecParams(c, OLD_COUNTS_SQL, 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		return maint_fail(pool, c, res, "deleting old counts", err, errlen);
	PQclear(res);
	lp_pgpool_put(pool, c, false);
	return 0;
}
