/* query.c - the query API over log_events.
 *
 * Pagination is by keyset, not offset: a page ends with the (ts, id) of its
 * last row, and the next page asks for rows strictly after it in the order
 * (ts desc, id desc).  Rows inserted meanwhile can therefore neither shift
 * rows into the next page twice nor push any out: a page holds exactly the
 * rows that sort after the cursor, whatever happened above it.  The cursor
 * carries ts in microseconds (the column's precision) so the comparison is
 * exact; it is base64url so clients treat it as opaque.
 *
 * The comparison "(ts, id) < (t, i)" is written as "ts <= t AND (ts < t OR
 * id < i)" so the planner sees a plain range on ts and can walk the
 * (ts desc) and (column, ts desc) indexes of 001_log_events.sql.  The full
 * text filter repeats the indexed expression to_tsvector('simple',
 * message) exactly so the GIN index serves it.
 *
 * Requests that come through the gateway carry X-Tenant-ID, the tenant of
 * the caller's API key; every query is then confined to that tenant (asking
 * for another is 403, an event of another is 404).  Without the header -
 * the consumer's own port, which is internal - nothing is confined.
 *
 * The walk.  Such pages (query_needs_plan_race, below) first read the
 * newest rows of one index in page order - the one filter it answers
 * exactly, with the time range and the cursor - at most 100 per row of the
 * page, and apply the other filters to those rows alone.  A full page from
 * it is the page; common words and common pairs of fields, whose bitmaps
 * are huge, are answered that way at a cost that does not grow with the
 * table.  Otherwise the race below runs.
 *
 * Plan racing.  For a page ordered by ts with a LIMIT, the planner picks
 * between walking the ts index and filtering (fast when matches are
 * common) and collecting every match through the other indexes, then
 * sorting (fast when they are rare).  It judges "common" assuming the
 * filters are independent, which fails for words or fields that rarely
 * occur together, and for rare words it keeps no statistics on: the walk
 * then reads the whole table, recomputing to_tsvector on every row.  For
 * pages whose filters can be misjudged that way (query_needs_plan_race) a
 * probe first counts the matches, up to a cap, with bitmap scans only,
 * within a quarter of the timeout, at most one second.  No match: the page
 * is empty.  Below the cap the page is read with bitmap scans only;
 * otherwise the ordered plan runs within that budget again, and if that
 * runs out, the bitmap plan gets the rest of the timeout.
 *
 * Every statement runs with a statement_timeout; a connection failure is
 * recorded in the postgres breaker and answered 503 with Retry-After,
 * while the breaker is open queries fail fast the same way. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "logpipe/breaker.h"
#include "logpipe/event.h"
#include "logpipe/http.h"
#include "logpipe/log.h"
#include "logpipe/pg.h"
#include "logpipe/util.h"
#include "query.h"
#include "store.h"

#include "logpipe/banned.h"

/* 9999-12-31T23:59:59.999Z in epoch ms: RFC 3339's last instant. */
#define MAX_EPOCH_MS 253402300799999LL

/* ---- times ---------------------------------------------------------------- */

int query_parse_time(const char *s, int64_t *us)
{
	int64_t ms;

	if (!s || !*s)
		return -EINVAL;
	if (isdigit((unsigned char)s[0]) || (s[0] == '-' && isdigit((unsigned char)s[1]))) {
		const char *p = s + (s[0] == '-');
		char *end;
		long long v;

		while (isdigit((unsigned char)*p))
			p++;
		if (*p == '\0') {
			errno = 0;
			v = strtoll(s, &end, 10);
			if (errno || *end || v > MAX_EPOCH_MS || v < QUERY_MIN_US / 1000)
				return -EINVAL;
			*us = (int64_t)v * 1000;
			return 0;
		}
	}
	if (lp_parse_rfc3339(s, &ms) < 0 || ms > MAX_EPOCH_MS || ms < QUERY_MIN_US / 1000)
		return -EINVAL;
	*us = ms * 1000;
	return 0;
}

void query_format_ts(int64_t us, char out[40])
{
	int64_t secs = us / 1000000, frac = us % 1000000;
	time_t t;
	struct tm tm;
	char tmp[96];

	if (frac < 0) {
		frac += 1000000;
		secs--;
	}
	t = (time_t)secs;
	gmtime_r(&t, &tm);
	/* Years stay within 4 digits for from and to (see MAX_EPOCH_MS) and
	 * within 6 for a cursor (INT64_MAX is in 294247), so 32 bytes suffice;
	 * the larger scratch keeps the compiler's worst case satisfied. */
	snprintf(tmp, sizeof(tmp), "%04d-%02d-%02d %02d:%02d:%02d.%06d+00", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
	lp_strlcpy(out, tmp, 40);
}

/* ---- cursors ------------------------------------------------------------ */

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64url_value(char c)
{
	const char *p = c ? strchr(B64URL, c) : NULL;

	return p ? (int)(p - B64URL) : -1;
}

/* Decodes unpadded base64url into out; returns the length or -1. */
static int b64url_decode(const char *s, char *out, size_t outlen)
{
	size_t n = 0;
	unsigned acc = 0;
	int bits = 0;

	for (; *s; s++) {
		int v = b64url_value(*s);

		if (v < 0)
			return -1;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n + 1 >= outlen)
				return -1;
			out[n++] = (char)((acc >> bits) & 0xff);
		}
	}
	/* Leftover bits must be zero padding of the last character. */
	if (bits >= 6 || (acc & ((1u << bits) - 1)) != 0)
		return -1;
	out[n] = '\0';
	return (int)n;
}

/* Any ts from QUERY_MIN_US up is a position: query_format_ts writes it as
 * a literal PostgreSQL reads (INT64_MAX is in year 294247, before its last,
 * 294276), and a ts below could only fail there, as a 500. */
static int cursor_parse_plain(const char *s, int64_t *ts_us, char id[37])
{
	const char *colon = strchr(s, ':');
	char num[24];
	char *end;
	long long v;
	size_t n;

	if (!colon || (n = (size_t)(colon - s)) == 0 || n >= sizeof(num))
		return -EINVAL;
	memcpy(num, s, n);
	num[n] = '\0';
	errno = 0;
	v = strtoll(num, &end, 10);
	if (errno || *end || v < QUERY_MIN_US || !lp_uuid_valid(colon + 1) ||
	    strlen(colon + 1) != 36)
		return -EINVAL;
	*ts_us = v;
	for (n = 0; n < 36; n++)
		id[n] = (char)tolower((unsigned char)colon[1 + n]);
	id[36] = '\0';
	return 0;
}

int query_cursor_encode(int64_t ts_us, const char *id, char *out, size_t outlen)
{
	char plain[80];
	int len = snprintf(plain, sizeof(plain), "%" PRId64 ":%s", ts_us, id);
	size_t i, o = 0;
	unsigned acc = 0;
	int bits = 0;

	if (len < 0 || (size_t)len >= sizeof(plain))
		return -EINVAL;
	for (i = 0; i < (size_t)len; i++) {
		acc = (acc << 8) | (unsigned char)plain[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			if (o + 1 >= outlen)
				return -EINVAL;
			out[o++] = B64URL[(acc >> bits) & 0x3f];
		}
	}
	if (bits > 0) {
		if (o + 1 >= outlen)
			return -EINVAL;
		out[o++] = B64URL[(acc << (6 - bits)) & 0x3f];
	}
	out[o] = '\0';
	return 0;
}

int query_cursor_decode(const char *s, int64_t *ts_us, char id[37])
{
	char plain[80];
	int n;

	if (!s || !*s)
		return -EINVAL;
	if (strchr(s, ':'))
		return cursor_parse_plain(s, ts_us, id);
	/* A NUL inside would hide the bytes after it from the parser. */
	n = b64url_decode(s, plain, sizeof(plain));
	if (n < 0 || strlen(plain) != (size_t)n)
		return -EINVAL;
	return cursor_parse_plain(plain, ts_us, id);
}

/* ---- parameters ----------------------------------------------------------- */

static int bad(char *param, size_t paramlen, const char *name, char *err, size_t errlen,
	       const char *fmt, const char *value)
{
	lp_strlcpy(param, name, paramlen);
	snprintf(err, errlen, fmt, value);
	return -EINVAL;
}

/* Reads a string parameter of at most max bytes into out (size max + 1).
 * Returns its length, 0 when absent or empty, or -EINVAL (too long). */
static int read_str(query_get_fn get, void *ud, const char *name, char *out, size_t max,
		    char *param, size_t paramlen, char *err, size_t errlen)
{
	char buf[QUERY_MAX_TEXT + 2];
	int n = get(ud, name, buf, max + 2 < sizeof(buf) ? max + 2 : sizeof(buf));

	out[0] = '\0';
	if (n == -ENOENT)
		return 0;
	if (n < 0 || (size_t)n > max) {
		char lim[24];

		snprintf(lim, sizeof(lim), "%zu", max);
		return bad(param, paramlen, name, err, errlen, "is longer than %s bytes", lim);
	}
	memcpy(out, buf, (size_t)n + 1);
	return n;
}

static int read_level(query_get_fn get, void *ud, const char *name, int *rank, char *param,
		      size_t paramlen, char *err, size_t errlen)
{
	char buf[16];
	const char *canon;
	int n = read_str(get, ud, name, buf, sizeof(buf) - 1, param, paramlen, err, errlen);

	*rank = -1;
	if (n <= 0)
		return n;
	canon = lp_level_canonical(buf);
	if (!canon)
		return bad(param, paramlen, name, err, errlen,
			   "'%s' is not one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL", buf);
	*rank = lp_level_rank(canon);
	return 0;
}

static int read_time(query_get_fn get, void *ud, const char *name, bool *has, int64_t *us,
		     char *param, size_t paramlen, char *err, size_t errlen)
{
	char buf[64];
	int n = read_str(get, ud, name, buf, sizeof(buf) - 1, param, paramlen, err, errlen);

	*has = false;
	if (n <= 0)
		return n;
	if (query_parse_time(buf, us) < 0)
		return bad(param, paramlen, name, err, errlen,
			   "'%s' is neither RFC 3339 nor epoch milliseconds", buf);
	*has = true;
	return 0;
}

int query_parse_filter(struct query_filter *f, query_get_fn get, void *ud, bool for_stats,
		       int64_t now_ms, char *param, size_t paramlen, char *err, size_t errlen)
{
	char buf[128];
	int n;

	memset(f, 0, sizeof(*f));
	f->limit = QUERY_DEFAULT_LIMIT;
	if (read_str(get, ud, "service", f->service, QUERY_MAX_FIELD, param, paramlen, err,
		     errlen) < 0 ||
	    read_str(get, ud, "host", f->host, QUERY_MAX_FIELD, param, paramlen, err, errlen) < 0 ||
	    read_str(get, ud, "tenant", f->tenant, QUERY_MAX_FIELD, param, paramlen, err, errlen) <
		    0 ||
	    read_level(get, ud, "level", &f->level_rank, param, paramlen, err, errlen) < 0 ||
	    read_level(get, ud, "min_level", &f->min_rank, param, paramlen, err, errlen) < 0 ||
	    read_time(get, ud, "from", &f->has_from, &f->from_us, param, paramlen, err, errlen) <
		    0 ||
	    read_time(get, ud, "to", &f->has_to, &f->to_us, param, paramlen, err, errlen) < 0)
		return -EINVAL;
	/* trace_id: 32 hexadecimal digits, from a trace to its logs. */
	n = read_str(get, ud, "trace_id", f->trace_id, 32, param, paramlen, err, errlen);
	if (n < 0)
		return -EINVAL;
	for (int i = 0; i < n; i++) {
		char c = f->trace_id[i];

		if (c >= 'A' && c <= 'F')
			f->trace_id[i] = (char)(c - 'A' + 'a');
		else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			n = -1;
	}
	if (n > 0 && n != 32)
		n = -1;
	if (n < 0)
		return bad(param, paramlen, "trace_id", err, errlen, "is not %s",
			   "32 hexadecimal digits");
	/* `text` is the documented name; `q` is the usual short one. */
	n = read_str(get, ud, "text", f->text, QUERY_MAX_TEXT, param, paramlen, err, errlen);
	if (n == 0)
		n = read_str(get, ud, "q", f->text, QUERY_MAX_TEXT, param, paramlen, err, errlen);
	if (n < 0)
		return -EINVAL;
	if (f->has_from && f->has_to && f->from_us > f->to_us)
		return bad(param, paramlen, "from", err, errlen, "%s", "is after 'to'");
	if (for_stats) {
		if (!f->has_from) {
			f->has_from = true;
			f->from_us = (now_ms - 24LL * 3600 * 1000) * 1000;
			if (f->has_to && f->from_us > f->to_us)
				f->from_us = f->to_us - 24LL * 3600 * 1000000;
			if (f->from_us < QUERY_MIN_US)
				f->from_us = QUERY_MIN_US;
		}
		return 0;
	}

	n = read_str(get, ud, "limit", buf, 16, param, paramlen, err, errlen);
	if (n < 0)
		return -EINVAL;
	if (n > 0) {
		char *end;
		long v;

		errno = 0;
		v = strtol(buf, &end, 10);
		if (errno || *end || v < 1 || v > QUERY_MAX_LIMIT)
			return bad(param, paramlen, "limit", err, errlen,
				   "'%s' is not a whole number from 1 to 1000", buf);
		f->limit = (int)v;
	}
	n = read_str(get, ud, "cursor", buf, sizeof(buf) - 1, param, paramlen, err, errlen);
	if (n < 0)
		return -EINVAL;
	if (n > 0) {
		if (query_cursor_decode(buf, &f->cursor_ts_us, f->cursor_id) < 0)
			return bad(param, paramlen, "cursor", err, errlen,
				   "'%s' is not a cursor this API returned", buf);
		f->has_cursor = true;
	}
	return 0;
}

/* ---- SQL ---------------------------------------------------------------- */

/* Columns every row-returning statement selects, in this order. */
#define QUERY_ROW_COLUMNS                                                                   \
	"id::text, (extract(epoch FROM ts) * 1000000)::bigint, "                           \
	"(extract(epoch FROM received_at) * 1000000)::bigint, "                            \
	"(extract(epoch FROM stored_at) * 1000000)::bigint, level, service, host, source_ip, " \
	"tenant, correlation_id, message, attributes::text, enrichment::text, enrichment_status, " \
	"trace_id, span_id"

enum {
	COL_ID, COL_TS, COL_RECEIVED, COL_STORED, COL_LEVEL, COL_SERVICE, COL_HOST,
	COL_SOURCE_IP, COL_TENANT, COL_CORRELATION, COL_MESSAGE, COL_ATTRIBUTES,
	COL_ENRICHMENT, COL_ENRICHMENT_STATUS, COL_TRACE_ID, COL_SPAN_ID,
};

void query_sql_init(struct query_sql *q)
{
	memset(q, 0, sizeof(*q));
	lp_buf_init(&q->sql, 512);
	lp_buf_init(&q->words, 0);
}

void query_sql_release(struct query_sql *q)
{
	lp_buf_release(&q->sql);
	lp_buf_release(&q->words);
}

/* Adds a parameter and returns its number. */
static int param_str(struct query_sql *q, const char *v)
{
	q->params[q->nparams] = v;
	return ++q->nparams;
}

static int param_int(struct query_sql *q, long long v)
{
	snprintf(q->vals[q->nparams], sizeof(q->vals[0]), "%lld", v);
	return param_str(q, q->vals[q->nparams]);
}

static int param_ts(struct query_sql *q, int64_t us)
{
	query_format_ts(us, q->vals[q->nparams]);
	return param_str(q, q->vals[q->nparams]);
}

/* Parts of a WHERE clause (build_where_parts), so that the walk can split
 * the filters between its inner and outer statement. */
enum {
	W_SERVICE = 1 << 0,
	W_HOST = 1 << 1,
	W_TENANT = 1 << 2,
	W_TRACE = 1 << 3,
	W_LEVEL = 1 << 4,
	W_MIN_LEVEL = 1 << 5,
	W_TEXT = 1 << 6,
	W_TIME = 1 << 7,   /* from and to */
	W_CURSOR = 1 << 8, /* after the cursor's (ts, id) */
	W_FILTERS = W_SERVICE | W_HOST | W_TENANT | W_TRACE | W_LEVEL | W_MIN_LEVEL | W_TEXT | W_TIME,
};

static void build_where_parts(const struct query_filter *f, struct query_sql *q, unsigned parts)
{
	lp_buf_adds(&q->sql, " WHERE true");
	if ((parts & W_SERVICE) && f->service[0])
		lp_buf_addf(&q->sql, " AND service = $%d", param_str(q, f->service));
	if ((parts & W_HOST) && f->host[0])
		lp_buf_addf(&q->sql, " AND host = $%d", param_str(q, f->host));
	if ((parts & W_TENANT) && f->tenant[0])
		lp_buf_addf(&q->sql, " AND tenant = $%d", param_str(q, f->tenant));
	if ((parts & W_TRACE) && f->trace_id[0])
		lp_buf_addf(&q->sql, " AND trace_id = $%d", param_str(q, f->trace_id));
	if ((parts & W_LEVEL) && f->level_rank >= 0)
		lp_buf_addf(&q->sql, " AND level_rank = $%d::smallint", param_int(q, f->level_rank));
	if ((parts & W_MIN_LEVEL) && f->min_rank >= 0)
		lp_buf_addf(&q->sql, " AND level_rank >= $%d::smallint", param_int(q, f->min_rank));
	if ((parts & W_TEXT) && f->text[0])
		lp_buf_addf(&q->sql,
			    " AND to_tsvector('simple', message) @@ plainto_tsquery('simple', $%d)",
			    param_str(q, f->text));
	if ((parts & W_TIME) && f->has_from)
		lp_buf_addf(&q->sql, " AND ts >= $%d::timestamptz", param_ts(q, f->from_us));
	if ((parts & W_TIME) && f->has_to)
		lp_buf_addf(&q->sql, " AND ts < $%d::timestamptz", param_ts(q, f->to_us));
	if ((parts & W_CURSOR) && f->has_cursor) {
		int t = param_ts(q, f->cursor_ts_us);
		int i = param_str(q, f->cursor_id);

		lp_buf_addf(&q->sql,
			    " AND ts <= $%d::timestamptz AND (ts < $%d::timestamptz OR id < $%d::uuid)",
			    t, t, i);
	}
}

static void build_where(const struct query_filter *f, struct query_sql *q)
{
	build_where_parts(f, q, W_FILTERS);
}

/* The filters and the cursor: the rows a page and its probe look at. */
static void build_page_where(const struct query_filter *f, struct query_sql *q)
{
	build_where_parts(f, q, W_FILTERS | W_CURSOR);
}

/* ORDER BY names the table's columns: a bare "id" would mean the output
 * column id::text (output names win in ORDER BY), whose order no index has
 * and which is not the uuid order the cursor compares with; every page would
 * then sort all the matching rows. */
void query_build_list(const struct query_filter *f, struct query_sql *q)
{
	lp_buf_adds(&q->sql, "SELECT " QUERY_ROW_COLUMNS " FROM log_events");
	build_page_where(f, q);
	lp_buf_addf(&q->sql, " ORDER BY log_events.ts DESC, log_events.id DESC LIMIT $%d",
		    param_int(q, f->limit + 1));
}

int query_walk_rows(const struct query_filter *f)
{
	int n = QUERY_WALK_PER_ROW * (f->limit + 1);

	return n < QUERY_WALK_MAX ? n : QUERY_WALK_MAX;
}

/* The one field filter an index in page order serves exactly, with the
 * time range: the walk's inner statement reads that index.  The most
 * selective first, as far as a fixed order can tell: a trace has a few
 * events, a service or a host a share of them, a level or a tenant more. */
static unsigned walk_driver(const struct query_filter *f)
{
	if (f->trace_id[0])
		return W_TRACE;
	if (f->service[0])
		return W_SERVICE;
	if (f->host[0])
		return W_HOST;
	if (f->level_rank >= 0)
		return W_LEVEL;
	if (f->tenant[0])
		return W_TENANT;
	return 0;
}

void query_build_walk(const struct query_filter *f, struct query_sql *q)
{
	unsigned driver = walk_driver(f);

	lp_buf_adds(&q->sql, "SELECT " QUERY_ROW_COLUMNS " FROM (SELECT * FROM log_events");
	build_where_parts(f, q, driver | W_TIME | W_CURSOR);
	lp_buf_addf(&q->sql,
		    " ORDER BY log_events.ts DESC, log_events.id DESC LIMIT $%d) AS log_events",
		    param_int(q, query_walk_rows(f)));
	build_where_parts(f, q, W_FILTERS & ~(driver | W_TIME));
	if (f->text[0]) {
		/* A cheap test before to_tsvector: each run of ASCII letters and
		 * digits of the text occurs in a matching message, in any case
		 * (ILIKE lowers both sides as to_tsvector lowers words). */
		const char *p = f->text;
		int runs = 0;

		lp_buf_addch(&q->words, '{');
		while (*p) {
			size_t n = 0;

			while (p[n] && isascii((unsigned char)p[n]) && isalnum((unsigned char)p[n]))
				n++;
			if (n > 0) {
				lp_buf_adds(&q->words, runs++ ? ",%" : "%");
				lp_buf_add(&q->words, p, n);
				lp_buf_addch(&q->words, '%');
				p += n;
			} else {
				p++;
			}
		}
		lp_buf_addch(&q->words, '}');
		if (runs > 0)
			lp_buf_addf(&q->sql, " AND message ILIKE ALL ($%d::text[])",
				    param_str(q, q->words.buf));
	}
	lp_buf_addf(&q->sql, " ORDER BY log_events.ts DESC, log_events.id DESC LIMIT $%d",
		    param_int(q, f->limit + 1));
}

int query_probe_cap(const struct query_filter *f)
{
	return 2 * (f->limit + 1) > 2000 ? 2 * (f->limit + 1) : 2000;
}

void query_build_probe(const struct query_filter *f, struct query_sql *q)
{
	lp_buf_adds(&q->sql, "SELECT count(*) FROM (SELECT 1 FROM log_events");
	build_page_where(f, q);
	lp_buf_addf(&q->sql, " LIMIT $%d) AS m", param_int(q, query_probe_cap(f)));
}

void query_build_estimate(const struct query_filter *f, struct query_sql *q)
{
	lp_buf_adds(&q->sql, "EXPLAIN SELECT 1 FROM log_events");
	build_page_where(f, q);
}

void query_build_estimate_walked(const struct query_filter *f, struct query_sql *q)
{
	lp_buf_adds(&q->sql, "EXPLAIN SELECT 1 FROM log_events");
	build_where_parts(f, q, walk_driver(f) | W_TIME | W_CURSOR);
}

bool query_walk_worth(double rows, double total, int limit)
{
	struct query_filter f = {.limit = limit};

	if (rows < 0 || total <= 0)
		return true; /* no estimate: the walk is bounded anyway */
	/* Expected matches among the rows walked: at least a page's. */
	return rows / total * query_walk_rows(&f) >= limit + 1;
}

double query_estimate_rows(const char *plan_line)
{
	const char *p = plan_line ? strstr(plan_line, " rows=") : NULL;

	return p ? strtod(p + 6, NULL) : -1;
}

void query_build_get(const char *id, const char *tenant, struct query_sql *q)
{
	lp_buf_addf(&q->sql, "SELECT " QUERY_ROW_COLUMNS " FROM log_events WHERE id = $%d::uuid",
		    param_str(q, id));
	if (tenant)
		lp_buf_addf(&q->sql, " AND tenant = $%d", param_str(q, tenant));
	lp_buf_adds(&q->sql, " ORDER BY log_events.ts DESC LIMIT 1");
}

bool query_stats_from_counts(const struct query_filter *f)
{
	/* log_events_minute and _hour have no host and no message. */
	return !f->host[0] && !f->text[0];
}

/* t rounded down (up) to a multiple of step, all in microseconds. */
static int64_t floor_to(int64_t t, int64_t step)
{
	int64_t r = t % step;

	return r < 0 ? t - r - step : t - r;
}

static int64_t ceil_to(int64_t t, int64_t step)
{
	int64_t d = floor_to(t, step);

	return d == t ? t : d + step;
}

#define MINUTE_US (60LL * 1000000)
#define HOUR_US (60 * MINUTE_US)

/* Parameter numbers of the field filters of a statement, 0 when absent. */
struct field_params {
	int service, tenant, level, min_level;
};

static struct field_params field_params(const struct query_filter *f, struct query_sql *q)
{
	struct field_params p = {0, 0, 0, 0};

	if (f->service[0])
		p.service = param_str(q, f->service);
	if (f->tenant[0])
		p.tenant = param_str(q, f->tenant);
	if (f->level_rank >= 0)
		p.level = param_int(q, f->level_rank);
	if (f->min_rank >= 0)
		p.min_level = param_int(q, f->min_rank);
	return p;
}

/* One branch of the stats union: (level, service, n) of table over
 * [lo, hi) of col, hi = 0 for no upper bound; log_events's rows count one
 * each, the count tables' count n. */
static void stats_branch(struct query_sql *q, const struct field_params *p, const char *table,
			 const char *col, int lo, int hi)
{
	bool rows = strcmp(table, "log_events") == 0;

	if (q->sql.len && q->sql.buf[q->sql.len - 1] != '(')
		lp_buf_adds(&q->sql, " UNION ALL ");
	lp_buf_addf(&q->sql, "SELECT level, service, %s FROM %s WHERE %s >= $%d::timestamptz",
		    rows ? "count(*) AS n" : "n", table, col, lo);
	if (hi)
		lp_buf_addf(&q->sql, " AND %s < $%d::timestamptz", col, hi);
	if (p->service)
		lp_buf_addf(&q->sql, " AND service = $%d", p->service);
	if (p->tenant)
		lp_buf_addf(&q->sql, " AND tenant = $%d", p->tenant);
	if (p->level)
		lp_buf_addf(&q->sql, " AND level_rank = $%d::smallint", p->level);
	if (p->min_level)
		lp_buf_addf(&q->sql, " AND level_rank >= $%d::smallint", p->min_level);
	if (rows)
		lp_buf_adds(&q->sql, " GROUP BY level, service");
}

/* The range [from, to) is cut at whole minutes and hours: the hours in it
 * are read from log_events_hour, the minutes around them from
 * log_events_minute, and the parts of a minute at either end, if any, from
 * log_events itself (at most a minute of rows each).  A day is then some
 * 24 x (tenants x services x levels) count rows plus two hours of minutes,
 * instead of every row of the day. */
static void build_stats_from_counts(const struct query_filter *f, struct query_sql *q)
{
	struct field_params p = field_params(f, q);
	int64_t from = f->from_us;
	int64_t m0 = ceil_to(from, MINUTE_US), h0 = ceil_to(from, HOUR_US);
	int64_t m1 = 0, h1 = 0;
	int pfrom = param_ts(q, from), pm0 = 0, ph0 = 0, ph1 = 0, pm1 = 0, pto = 0;

	if (f->has_to) {
		m1 = floor_to(f->to_us, MINUTE_US);
		h1 = floor_to(f->to_us, HOUR_US);
		pto = param_ts(q, f->to_us);
	}
	lp_buf_adds(&q->sql, "SELECT level, service, coalesce(sum(n), 0)::bigint, grouping(level, service) "
			     "FROM (");
	if (f->has_to && m0 >= m1) {
		/* Within a minute (or two parts of two): the rows. */
		stats_branch(q, &p, "log_events", "ts", pfrom, pto);
		goto done;
	}
	if (m0 > from) {
		pm0 = param_ts(q, m0);
		stats_branch(q, &p, "log_events", "ts", pfrom, pm0);
	} else {
		pm0 = pfrom;
	}
	if (!f->has_to || h0 < h1) {
		ph0 = h0 > m0 ? param_ts(q, h0) : pm0;
		if (h0 > m0)
			stats_branch(q, &p, "log_events_minute", "minute", pm0, ph0);
		if (f->has_to)
			ph1 = h1 < f->to_us ? param_ts(q, h1) : pto;
		stats_branch(q, &p, "log_events_hour", "hour", ph0, ph1);
		if (!f->has_to)
			goto done;
		if (m1 > h1) {
			pm1 = m1 < f->to_us ? param_ts(q, m1) : pto;
			stats_branch(q, &p, "log_events_minute", "minute", ph1, pm1);
		} else {
			pm1 = ph1;
		}
	} else {
		pm1 = m1 < f->to_us ? param_ts(q, m1) : pto;
		stats_branch(q, &p, "log_events_minute", "minute", pm0, pm1);
	}
	if (m1 < f->to_us)
		stats_branch(q, &p, "log_events", "ts", pm1, pto);
done:
	lp_buf_adds(&q->sql, ") AS c GROUP BY GROUPING SETS ((level), (service), ()) "
			     "ORDER BY 4, 3 DESC");
}

void query_build_stats(const struct query_filter *f, struct query_sql *q)
{
	if (f->has_from && query_stats_from_counts(f)) {
		build_stats_from_counts(f, q);
		return;
	}
	lp_buf_adds(&q->sql, "SELECT level, service, count(*)::bigint, grouping(level, service) "
			     "FROM log_events");
	build_where(f, q);
	lp_buf_adds(&q->sql, " GROUP BY GROUPING SETS ((level), (service), ()) ORDER BY 4, 3 DESC");
}

/* ---- HTTP --------------------------------------------------------------- */

struct query_api {
	struct lp_pgpool *pool; /* query connections */
	struct lp_breaker *br;  /* the service's postgres breaker */
	int timeout_ms;         /* statement_timeout of each query */
};

struct query_api *query_api_new(struct lp_pgpool *pool, struct lp_breaker *br, int timeout_ms)
{
	struct query_api *qa = lp_xcalloc(1, sizeof(*qa));

	qa->pool = pool;
	qa->br = br;
	qa->timeout_ms = timeout_ms;
	return qa;
}

void query_api_free(struct query_api *qa)
{
	free(qa);
}

static void reply_unavailable(struct query_api *qa, struct lp_http_req *r, const char *why)
{
	char hdr[64];
	int64_t ms = lp_breaker_retry_after_ms(qa->br);

	snprintf(hdr, sizeof(hdr), "Retry-After: %lld\r\n", (long long)(ms / 1000 + 1));
	lp_http_reply_error(r, 503, "database_unavailable", hdr, "%s", why);
}

bool query_needs_plan_race(const struct query_filter *f)
{
	int n = (f->service[0] != 0) + (f->host[0] != 0) + (f->tenant[0] != 0) + (f->trace_id[0] != 0) +
		(f->level_rank >= 0) + (f->min_rank >= 0);

	return f->text[0] || n >= 2;
}

static bool timed_out(const PGresult *res)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	return state && strcmp(state, "57014") == 0;
}

/* The plans a statement may run with (exec_plan). */
enum plan {
	PLAN_ANY,    /* the planner's choice */
	PLAN_BITMAP, /* bitmap scans only: no plain index or sequential scans */
	PLAN_WALK,   /* no bitmap scans: the walk reads an index in page order */
};

/* Runs q under plan with a statement timeout. */
static PGresult *exec_plan(PGconn *c, const struct query_sql *q, int timeout_ms, enum plan plan)
{
	char sql[256];
	PGresult *res;
	bool bitmap_only = plan == PLAN_BITMAP;

	/* What is left of a budget may be nothing; 0 would mean no limit. */
	if (timeout_ms < 1)
		timeout_ms = 1;

	/* Parallel workers are left to the usual plan: starting them costs more
	 * than the few rows a bitmap plan is chosen for. */
	/* JIT compiles for hundreds of milliseconds where a page of rows takes
	 * a few; the API's queries are better off without it. */
	snprintf(sql, sizeof(sql),
		 "SET statement_timeout = %d; SET enable_indexscan = %s; SET enable_seqscan = %s; "
		 "SET enable_bitmapscan = %s; SET max_parallel_workers_per_gather = %s; "
		 "SET jit = off",
		 timeout_ms, bitmap_only ? "off" : "on", bitmap_only ? "off" : "on",
		 plan == PLAN_WALK ? "off" : "on", bitmap_only ? "0" : "DEFAULT");
	res = PQexec(c, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		return res;
	PQclear(res);
	return PQexecParams(c, q->sql.buf, q->nparams, NULL, q->params, NULL, NULL, 0);
}

/* The page of a race (query.h).  First the walk, when given and the
 * planner's estimates (EXPLAINs, planning only) of the matches (estimate)
 * and of the rows the walk reads from (driver) make a page likely among
 * the rows walked (query_walk_worth): the newest
 * rows of the one filter an index in page order serves, at most
 * query_walk_rows(f) of them, with the other filters applied to those
 * alone.  A full page from it is the page (want rows: limit + 1); it costs
 * the same whatever the table's size or the machine's load, and answers the
 * common words and the common pairs of fields, for which the probe below
 * builds large bitmaps (1.4 s for a word in one row in 25 of the 5.4 M rows
 * of issue 15; 84-195 ms on the bench's 10 M rows spread over eight days).
 *
 * Otherwise a probe counts the matches, up to a cap,
 * through the bitmap plans alone, within the budget.  None: an empty page.
 * Few: the bitmap plan fetches and sorts them.  Many, or a probe that takes
 * too long (its bitmaps are huge, so matches are likely not rare): the
 * ordered plan gets the budget, then the bitmap plan what is left of the
 * timeout.  The budget is a quarter of the timeout, at most 1 s.  The probe
 * has all of it: two common words that seldom occur together make large
 * bitmaps but few matches, and cutting that probe short sent such pages to
 * the ordered plan, which reads the whole table for them (2 s instead of
 * 0.6 s on ten million rows). */
static PGresult *race(struct query_api *qa, PGconn *c, const struct query_sql *q,
		      const struct query_sql *walk, const struct query_sql *estimate,
		      const struct query_sql *driver, int want, const struct query_sql *probe, int cap)
{
	int budget = qa->timeout_ms / 4 < 1000 ? qa->timeout_ms / 4 : 1000;
	int64_t t0 = lp_now_ms();
	PGresult *res;
	long long found = -1;

	if (walk && estimate && driver) {
		/* The walk only for pages whose matches are dense enough, as the
		 * planner judges them; rare ones go to the probe at once. */
		double rows = -1, total = -1;

		res = exec_plan(c, estimate, budget, PLAN_ANY);
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0)
			rows = query_estimate_rows(PQgetvalue(res, 0, 0));
		PQclear(res);
		res = exec_plan(c, driver, budget, PLAN_ANY);
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0)
			total = query_estimate_rows(PQgetvalue(res, 0, 0));
		PQclear(res);
		if (!query_walk_worth(rows, total, want - 1))
			walk = NULL;
	}
	if (walk) {
		res = exec_plan(c, walk, budget, PLAN_WALK);
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) >= want)
			return res;
		if (PQresultStatus(res) != PGRES_TUPLES_OK && !timed_out(res))
			return res; /* a real failure: report it */
		PQclear(res);
	}
	res = exec_plan(c, probe, budget, PLAN_BITMAP);
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
		found = atoll(PQgetvalue(res, 0, 0));
	else if (!timed_out(res))
		return res; /* a real failure: report it */
	PQclear(res);
	/* No match at all: the page is empty, no need to collect it again. */
	if (found == 0)
		return PQmakeEmptyPGresult(c, PGRES_TUPLES_OK);
	if (found > 0 && found < cap)
		return exec_plan(c, q, qa->timeout_ms - (int)(lp_now_ms() - t0), PLAN_BITMAP);
	res = exec_plan(c, q, budget, PLAN_ANY);
	if (timed_out(res)) {
		lp_debug("query: the ordered plan took over %d ms, trying bitmap scans", budget);
		PQclear(res);
		res = exec_plan(c, q, qa->timeout_ms - (int)(lp_now_ms() - t0), PLAN_BITMAP);
	}
	return res;
}

/* Runs q; on failure replies (503 or 500) and returns NULL.  probe, when
 * not NULL, makes it a race (see race()) with that cap, after walk (when
 * not NULL) if that does not return want rows. */
static PGresult *run(struct query_api *qa, struct lp_http_req *r, const struct query_sql *q,
		     const struct query_sql *walk, const struct query_sql *estimate,
		     const struct query_sql *driver, int want, const struct query_sql *probe, int cap)
{
	char err[256];
	int64_t t0 = lp_now_ms();
	PGconn *c;
	PGresult *res;

	if (!lp_breaker_allow(qa->br)) {
		reply_unavailable(qa, r, "PostgreSQL is unavailable (circuit open); retry later");
		return NULL;
	}
	c = lp_pgpool_get(qa->pool, 2000, err, sizeof(err));
	if (!c) {
		lp_breaker_record(qa->br, false, lp_now_ms() - t0);
		lp_warn("query: no database connection: %s", err);
		reply_unavailable(qa, r, "PostgreSQL is unavailable; retry later");
		return NULL;
	}
	store_quiet_notices(c);
	if (probe)
		res = race(qa, c, q, walk, estimate, driver, want, probe, cap);
	else
		res = exec_plan(c, q, qa->timeout_ms, PLAN_ANY);
	if (PQresultStatus(res) == PGRES_TUPLES_OK) {
		lp_breaker_record(qa->br, true, lp_now_ms() - t0);
		lp_pgpool_put(qa->pool, c, false);
		return res;
	}
	if (lp_pg_conn_error(res, c)) {
		lp_breaker_record(qa->br, false, lp_now_ms() - t0);
		lp_warn("query: connection failed: %s", PQerrorMessage(c));
		reply_unavailable(qa, r, "PostgreSQL connection failed; retry later");
		lp_pgpool_put(qa->pool, c, true);
	} else {
		lp_breaker_record(qa->br, true, lp_now_ms() - t0);
		if (timed_out(res)) {
			lp_http_reply_error(r, 503, "query_timeout", "Retry-After: 1\r\n",
					    "the query took longer than %d ms; narrow the filters",
					    qa->timeout_ms);
		} else {
			lp_error("query failed: %s", PQresultErrorMessage(res));
			lp_http_reply_error(r, 500, "query_failed", NULL, "the query failed");
		}
		lp_pgpool_put(qa->pool, c, false);
	}
	PQclear(res);
	return NULL;
}

static int64_t col_int(PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static void set_str(json_t *o, const char *key, PGresult *res, int row, int col)
{
	if (!PQgetisnull(res, row, col))
		json_object_set_new(o, key, json_string(PQgetvalue(res, row, col)));
}

static void set_time(json_t *o, const char *key, PGresult *res, int row, int col)
{
	char buf[32];
	int64_t us = col_int(res, row, col);

	if (PQgetisnull(res, row, col))
		return;
	lp_rfc3339(us >= 0 ? us / 1000 : -((-us + 999) / 1000), buf);
	json_object_set_new(o, key, json_string(buf));
}

static void set_json(json_t *o, const char *key, PGresult *res, int row, int col)
{
	json_t *v;

	if (PQgetisnull(res, row, col))
		return;
	v = lp_json_loads(PQgetvalue(res, row, col), JSON_DECODE_ANY, NULL);
	if (v)
		json_object_set_new(o, key, v);
}

/* One stored row in the event's normalised shape plus what storing added. */
static json_t *row_json(PGresult *res, int row)
{
	json_t *o = json_object();

	set_str(o, "id", res, row, COL_ID);
	json_object_set_new(o, "schema_version", json_integer(LP_EVENT_SCHEMA_VERSION));
	set_time(o, "timestamp", res, row, COL_TS);
	set_time(o, "received_at", res, row, COL_RECEIVED);
	set_str(o, "level", res, row, COL_LEVEL);
	set_str(o, "message", res, row, COL_MESSAGE);
	set_str(o, "service", res, row, COL_SERVICE);
	set_str(o, "host", res, row, COL_HOST);
	set_str(o, "source_ip", res, row, COL_SOURCE_IP);
	set_str(o, "tenant", res, row, COL_TENANT);
	set_str(o, "correlation_id", res, row, COL_CORRELATION);
	set_str(o, "trace_id", res, row, COL_TRACE_ID);
	set_str(o, "span_id", res, row, COL_SPAN_ID);
	set_json(o, "attributes", res, row, COL_ATTRIBUTES);
	set_json(o, "enrichment", res, row, COL_ENRICHMENT);
	set_str(o, "enrichment_status", res, row, COL_ENRICHMENT_STATUS);
	set_time(o, "stored_at", res, row, COL_STORED);
	return o;
}

static int http_get(void *ud, const char *name, char *out, size_t outlen)
{
	return lp_http_query(ud, name, out, outlen);
}

/* The tenant the gateway stamped from the caller's API key, or NULL when
 * the request did not come through an authenticating gateway. */
static const char *scoped_tenant(struct lp_http_req *r)
{
	const char *t = lp_http_header(r, "X-Tenant-ID");

	return t && *t ? t : NULL;
}

static bool parse_request(struct lp_http_req *r, struct query_filter *f, bool for_stats)
{
	const char *tenant = scoped_tenant(r);
	char param[32], err[200];

	if (query_parse_filter(f, http_get, r, for_stats, lp_wall_ms(), param, sizeof(param), err,
			       sizeof(err)) < 0) {
		lp_http_reply_error(r, 400, "invalid_parameter", NULL, "parameter '%s' %s", param,
				    err);
		return false;
	}
	if (tenant) {
		/* A tenant's key sees its own tenant's events only. */
		if ((f->tenant[0] && strcmp(f->tenant, tenant) != 0) ||
		    strlen(tenant) > QUERY_MAX_FIELD) {
			lp_http_reply_error(r, 403, "forbidden", NULL,
					    "this API key may only read tenant '%s'", tenant);
			return false;
		}
		lp_strlcpy(f->tenant, tenant, sizeof(f->tenant));
	}
	return true;
}

static void handle_list(struct lp_http_req *r, void *ud)
{
	struct query_api *qa = ud;
	struct query_filter *f = lp_xmalloc(sizeof(*f));
	struct query_sql q, probe, walk, estimate, walked;
	PGresult *res = NULL;
	json_t *logs, *next = json_null();
	int i, n;

	query_sql_init(&q);
	if (!parse_request(r, f, false))
		goto out;
	query_build_list(f, &q);
	if (query_needs_plan_race(f)) {
		query_sql_init(&walk);
		query_build_walk(f, &walk);
		query_sql_init(&estimate);
		query_build_estimate(f, &estimate);
		query_sql_init(&walked);
		query_build_estimate_walked(f, &walked);
		query_sql_init(&probe);
		query_build_probe(f, &probe);
		res = run(qa, r, &q, &walk, &estimate, &walked, f->limit + 1, &probe,
			  query_probe_cap(f));
		query_sql_release(&probe);
		query_sql_release(&estimate);
		query_sql_release(&walked);
		query_sql_release(&walk);
	} else {
		res = run(qa, r, &q, NULL, NULL, NULL, 0, NULL, 0);
	}
	if (!res)
		goto out;
	n = PQntuples(res);
	logs = json_array();
	for (i = 0; i < n && i < f->limit; i++)
		json_array_append_new(logs, row_json(res, i));
	if (n > f->limit) {
		char cur[128];

		/* The last row returned, not the extra one, starts the next page. */
		if (query_cursor_encode(col_int(res, f->limit - 1, COL_TS),
					PQgetvalue(res, f->limit - 1, COL_ID), cur, sizeof(cur)) == 0)
			next = json_string(cur);
	}
	lp_http_reply_json(r, 200,
			   json_pack("{s:s, s:I, s:o, s:o}", "status", "success", "count",
				     (json_int_t)json_array_size(logs), "logs", logs, "next_cursor",
				     next),
			   NULL);
	next = NULL;
out:
	json_decref(next);
	PQclear(res);
	query_sql_release(&q);
	free(f);
}

static void handle_get(struct lp_http_req *r, void *ud)
{
	struct query_api *qa = ud;
	const char *id = r->param;
	struct query_sql q;
	PGresult *res;

	if (!id || strlen(id) != 36 || !lp_uuid_valid(id)) {
		lp_http_reply_error(r, 400, "invalid_parameter", NULL,
				    "parameter 'id' is not a UUID");
		return;
	}
	query_sql_init(&q);
	query_build_get(id, scoped_tenant(r), &q);
	res = run(qa, r, &q, NULL, NULL, NULL, 0, NULL, 0);
	if (res) {
		if (PQntuples(res) == 0)
			lp_http_reply_error(r, 404, "not_found", NULL, "no log event with id '%s'",
					    id);
		else
			lp_http_reply_json(r, 200,
					   json_pack("{s:s, s:o}", "status", "success", "log",
						     row_json(res, 0)),
					   NULL);
	}
	PQclear(res);
	query_sql_release(&q);
}

static void handle_stats(struct lp_http_req *r, void *ud)
{
	static const char *const levels[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"};
	struct query_api *qa = ud;
	struct query_filter *f = lp_xmalloc(sizeof(*f));
	struct query_sql q;
	PGresult *res = NULL;
	json_t *by_level, *by_service, *range;
	json_int_t total = 0;
	char from[32], to[32];
	int i, n;

	query_sql_init(&q);
	if (!parse_request(r, f, true))
		goto out;
	query_build_stats(f, &q);
	res = run(qa, r, &q, NULL, NULL, NULL, 0, NULL, 0);
	if (!res)
		goto out;
	by_level = json_object();
	for (i = 0; i < (int)LP_ARRAY_SIZE(levels); i++)
		json_object_set_new(by_level, levels[i], json_integer(0));
	by_service = json_object();
	n = PQntuples(res);
	for (i = 0; i < n; i++) {
		json_int_t count = (json_int_t)col_int(res, i, 2);
		int grouping = (int)col_int(res, i, 3);

		/* grouping(level, service): 1 = by level, 2 = by service, 3 = total. */
		if (grouping == 3)
			total = count;
		else if (grouping == 1 && !PQgetisnull(res, i, 0))
			json_object_set_new(by_level, PQgetvalue(res, i, 0), json_integer(count));
		else if (grouping == 2 && !PQgetisnull(res, i, 1))
			json_object_set_new(by_service, PQgetvalue(res, i, 1), json_integer(count));
	}
	lp_rfc3339(f->from_us / 1000, from);
	range = json_pack("{s:s}", "from", from);
	if (f->has_to) {
		lp_rfc3339(f->to_us / 1000, to);
		json_object_set_new(range, "to", json_string(to));
	}
	lp_http_reply_json(r, 200,
			   json_pack("{s:s, s:o, s:I, s:o, s:o}", "status", "success", "range",
				     range, "total", total, "by_level", by_level, "by_service",
				     by_service),
			   NULL);
out:
	PQclear(res);
	query_sql_release(&q);
	free(f);
}

int query_api_routes(struct query_api *qa, struct lp_http_server *s)
{
	int rc = lp_http_route(s, "GET", "/api/logs", handle_list, qa);

	if (rc == 0)
		rc = lp_http_route(s, "GET", "/api/logs/*", handle_get, qa);
	if (rc == 0)
		rc = lp_http_route(s, "GET", "/api/stats", handle_stats, qa);
	return rc;
}
