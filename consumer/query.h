/* query.h - the query API over stored events: GET /api/logs (filters,
 * newest first, keyset cursor), GET /api/logs/{id} and GET /api/stats.
 *
 * The pure half (parameter parsing, cursor coding, SQL building) is
 * separate from the HTTP half so that tests can check which SQL and which
 * parameters a query string turns into.  SQL text is only ever assembled
 * from fixed fragments; every value a client sends travels as a separate
 * parameter of PQexecParams. */
#ifndef LOGPIPE_CONSUMER_QUERY_H
#define LOGPIPE_CONSUMER_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "logpipe/buf.h"

struct lp_breaker;
struct lp_http_server;
struct lp_pgpool;

#define QUERY_DEFAULT_LIMIT 50
#define QUERY_MAX_LIMIT 1000
#define QUERY_MAX_FIELD 256   /* longest service, host or tenant value */
#define QUERY_MAX_TEXT 1024   /* longest full-text query */
#define QUERY_MAX_PARAMS 14   /* most parameters one statement takes */

/* 0001-01-01T00:00:00Z in epoch microseconds: the earliest time the API
 * takes (from, to, a cursor's ts).  query_format_ts cannot write the years
 * before (PostgreSQL spells them "... BC"), and no stored row is older. */
#define QUERY_MIN_US (-62135596800000000LL)

/* What a request asks for.  Strings are empty when the filter is absent. */
struct query_filter {
	char service[QUERY_MAX_FIELD + 1]; /* exact service */
	char host[QUERY_MAX_FIELD + 1];    /* exact host */
	char tenant[QUERY_MAX_FIELD + 1];  /* exact tenant */
	char trace_id[33];                 /* exact W3C trace id, lower-case hex */
	char text[QUERY_MAX_TEXT + 1];     /* words that must all occur in message */
	int level_rank;                    /* exact level (TRACE 0 .. FATAL 5), -1 any */
	int min_rank;                      /* this level or more severe, -1 any */
	bool has_from, has_to;             /* time range present */
	int64_t from_us, to_us;            /* [from, to) in epoch microseconds */
	int limit;                         /* page size, 1 .. QUERY_MAX_LIMIT */
	bool has_cursor;                   /* continue after (cursor_ts_us, cursor_id) */
	int64_t cursor_ts_us;              /* ts of the last row of the previous page */
	char cursor_id[37];                /* id of the last row of the previous page */
};

/* Reads query parameter name into out (decoded, NUL-terminated); returns
 * its length, -ENOENT when absent, or another negative errno (-ERANGE: out
 * is too small).  lp_http_query has this shape. */
typedef int (*query_get_fn)(void *ud, const char *name, char *out, size_t outlen);

/* Fills f from the request's parameters.  for_stats: the time range
 * defaults to the last 24 hours and limit/cursor are not read.  Returns 0,
 * or -EINVAL with the offending parameter's name in param and a sentence in
 * err. */
int query_parse_filter(struct query_filter *f, query_get_fn get, void *ud, bool for_stats,
		       int64_t now_ms, char *param, size_t paramlen, char *err, size_t errlen);

/* Parses a time given as epoch milliseconds (digits) or RFC 3339 into
 * epoch microseconds.  Returns 0 or -EINVAL. */
int query_parse_time(const char *s, int64_t *us);
/* Writes epoch microseconds as a timestamptz literal PostgreSQL reads
 * exactly: "2024-01-15 14:23:45.123456+00". */
void query_format_ts(int64_t us, char out[40]);

/* Cursor: base64url (no padding) of "<ts_us>:<uuid>".  decode also accepts
 * the plain "<ts_us>:<uuid>" form.  Both return 0 or -EINVAL. */
int query_cursor_encode(int64_t ts_us, const char *id, char *out, size_t outlen);
int query_cursor_decode(const char *s, int64_t *ts_us, char id[37]);

/* A statement and its parameters.  Values point into the filter it was
 * built from or into vals; the filter must outlive the statement. */
struct query_sql {
	struct lp_buf sql;                    /* the statement */
	const char *params[QUERY_MAX_PARAMS]; /* $1 .. $n */
	char vals[QUERY_MAX_PARAMS][48];      /* storage for numbers and times */
	int nparams;                          /* n */
	struct lp_buf words;                  /* storage for the walk's word patterns */
};

void query_sql_init(struct query_sql *q);
void query_sql_release(struct query_sql *q);
/* The page query: matching rows newest first (ts desc, id desc), limit + 1
 * of them so the caller knows whether another page follows.  Columns are
 * those of QUERY_ROW_COLUMNS. */
void query_build_list(const struct query_filter *f, struct query_sql *q);
/* One event by id ($1), of tenant ($2) when tenant is not NULL. */
void query_build_get(const char *id, const char *tenant, struct query_sql *q);
/* The walk (query.c): the page among the newest query_walk_rows(f) rows
 * of the one field filter (or none) an index in page order serves, with
 * the time range and the cursor; the other filters are applied to those
 * rows only.  When it returns limit + 1 rows they are the page's (every
 * matching row is among the rows walked, in the same order); fewer prove
 * nothing, and the page is then run in full.  A text filter is checked
 * there by `message ILIKE ALL ($n::text[])` first, '%run%' for each run of
 * ASCII letters and digits of the text (every word a matching message has
 * contains them), so that to_tsvector runs only on the rows that may match:
 * it costs about ten times as much. */
void query_build_walk(const struct query_filter *f, struct query_sql *q);
/* EXPLAIN of the rows the page's filters (and cursor) match, planning
 * only: with query_build_estimate_walked's, it tells the race whether to
 * walk first (query_walk_worth; a rare word would make the walk read its
 * whole budget for nothing).  query_estimate_rows reads the rows= of the
 * plan's first line, -1 when there is none. */
void query_build_estimate(const struct query_filter *f, struct query_sql *q);
/* The same for the rows the walk reads from: its one field filter (or
 * none), the time range and the cursor. */
void query_build_estimate_walked(const struct query_filter *f, struct query_sql *q);
/* Whether to walk first: at the density the planner expects (rows of the
 * total the walk reads from; -1 unknown: walk), a page of limit + 1
 * matches among the rows walked.  A word outside ANALYZE's most-common
 * list is estimated at 0.5 % of the rows at most, under the walk's 1 %:
 * such words go to the probe. */
bool query_walk_worth(double rows, double total, int limit);
double query_estimate_rows(const char *plan_line);
/* Rows the walk reads: QUERY_WALK_PER_ROW per row of the page and one
 * more, at most QUERY_WALK_MAX. */
int query_walk_rows(const struct query_filter *f);
#define QUERY_WALK_PER_ROW 100
#define QUERY_WALK_MAX 20000
/* The race's probe for a page (query.c): how many rows match, counted up
 * to query_probe_cap(f) and no further. */
void query_build_probe(const struct query_filter *f, struct query_sql *q);
int query_probe_cap(const struct query_filter *f);
/* Counts over the filter: rows (level, service, count, grouping) for the
 * grouping sets (level), (service) and () - the total.  When
 * query_stats_from_counts(f), they are added up from the per-hour and
 * per-minute counts (migration 004) and the rows of the partial minutes at
 * the ends of the range; otherwise counted over log_events's rows. */
void query_build_stats(const struct query_filter *f, struct query_sql *q);
/* True when the counts tables can answer f: no host and no text filter. */
bool query_stats_from_counts(const struct query_filter *f);

/* True when the planner may misjudge f badly enough to walk the whole
 * table: a full-text filter, or two or more field filters (their
 * selectivities are multiplied as if independent).  Such pages are run with
 * a plan race (query.c). */
bool query_needs_plan_race(const struct query_filter *f);

/* ---- HTTP --------------------------------------------------------------- */

struct query_api;

/* pool serves the queries; br is the service's postgres breaker (queries
 * record connection failures in it); timeout_ms bounds each statement. */
struct query_api *query_api_new(struct lp_pgpool *pool, struct lp_breaker *br, int timeout_ms);
void query_api_free(struct query_api *qa);
/* Registers GET /api/logs, GET /api/logs/{id} and GET /api/stats. */
int query_api_routes(struct query_api *qa, struct lp_http_server *s);

#endif
