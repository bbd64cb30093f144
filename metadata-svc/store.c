/* store.c - host and service metadata in PostgreSQL (see store.h).
 *
 * Statements are built from the kind's field table (column names are
 * constants of record.c, never user input) and every value travels as a
 * parameter.  Timestamps are selected as epoch milliseconds so that the
 * JSON form is rendered by lp_rfc3339 like every other time in logpipe. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logpipe/buf.h"
#include "logpipe/pg.h"
#include "logpipe/util.h"
#include "store.h"

#include "logpipe/banned.h"

/* Fills e from a failed result; returns the errno to report. */
static int fail(PGconn *c, const struct md_kind *k, PGresult *res, struct store_err *e)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *constraint = res ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : NULL;
	size_t i;

	e->broken = lp_pg_conn_error(res, c);
	lp_strlcpy(e->message, res ? PQresultErrorMessage(res) : PQerrorMessage(c),
		   sizeof(e->message));
	e->message[strcspn(e->message, "\n")] = '\0';
	if (!state || strcmp(state, "23505") != 0 || !k)
		return -EIO;
	/* unique_violation: name the field from the constraint's name. */
	lp_strlcpy(e->field, k->fields[0].json, sizeof(e->field));
	for (i = 1; constraint && i < k->nfields; i++)
		if (strstr(constraint, k->fields[i].column))
			lp_strlcpy(e->field, k->fields[i].json, sizeof(e->field));
	return -EEXIST;
}

int store_exec(PGconn *c, const char *sql, struct store_err *e)
{
	PGresult *res = PQexec(c, sql);
	int ret = 0;

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		ret = fail(c, NULL, res, e);
	PQclear(res);
	return ret;
}

/* The JSON form of row i of res. */
static json_t *row_json(const struct md_kind *k, PGresult *res, int row)
{
	const char *cols[MD_MAX_FIELDS + 2];
	size_t i;

	for (i = 0; i < k->nfields + 2; i++)
		cols[i] = PQgetisnull(res, row, (int)i) ? NULL : PQgetvalue(res, row, (int)i);
	return md_record_json(k, cols);
}

/* Runs sql with params; on PGRES_TUPLES_OK hands back the result. */
static int query(PGconn *c, const struct md_kind *k, const char *sql, int n,
		 const char *const *params, PGresult **out, struct store_err *e)
{
	PGresult *res = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		int ret = fail(c, k, res, e);

		PQclear(res);
		return ret;
	}
	*out = res;
	return 0;
}

/* Runs a statement returning at most one record into *rec (-ENOENT if none). */
static int one(PGconn *c, const struct md_kind *k, const char *sql, int n,
	       const char *const *params, json_t **rec, struct store_err *e)
{
	PGresult *res;
	int ret = query(c, k, sql, n, params, &res, e);

	if (ret < 0)
		return ret;
	if (PQntuples(res) == 0) {
		ret = -ENOENT;
	} else if (rec) {
		*rec = row_json(k, res, 0);
	}
	PQclear(res);
	return ret;
}

/* A statement returning rows into a new array *items. */
static int many(PGconn *c, const struct md_kind *k, const char *sql, int n,
		const char *const *params, json_t **items, struct store_err *e)
{
	PGresult *res;
	int ret = query(c, k, sql, n, params, &res, e), i;

	if (ret < 0)
		return ret;
	*items = json_array();
	for (i = 0; i < PQntuples(res); i++)
		json_array_append_new(*items, row_json(k, res, i));
	PQclear(res);
	return 0;
}

int store_get(PGconn *c, const struct md_kind *k, size_t field, const char *value, bool lock,
	      json_t **out, struct store_err *e)
{
	struct lp_buf sql = LP_BUF_INIT;
	int ret;

	lp_buf_adds(&sql, "SELECT ");
	md_select_list(k, &sql);
	lp_buf_addf(&sql, " FROM %s WHERE %s = $1%s", k->table, k->fields[field].column,
		    lock ? " FOR UPDATE" : "");
	ret = one(c, k, sql.buf, 1, &value, out, e);
	lp_buf_release(&sql);
	return ret;
}

int store_list(PGconn *c, const struct md_kind *k, long long limit, long long offset,
	       json_t **items, long long *total, struct store_err *e)
{
	struct lp_buf sql = LP_BUF_INIT;
	char lim[24], off[24];
	const char *params[] = { lim, off };
	PGresult *res;
	int ret;

	snprintf(lim, sizeof(lim), "%lld", limit);
	snprintf(off, sizeof(off), "%lld", offset);
	lp_buf_addf(&sql, "SELECT count(*) FROM %s", k->table);
	ret = query(c, k, sql.buf, 0, NULL, &res, e);
	if (ret < 0)
		goto out;
	*total = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	lp_buf_reset(&sql);
	lp_buf_adds(&sql, "SELECT ");
	md_select_list(k, &sql);
	lp_buf_addf(&sql, " FROM %s ORDER BY %s LIMIT $1 OFFSET $2", k->table, k->fields[0].column);
	ret = many(c, k, sql.buf, 2, params, items, e);
out:
	lp_buf_release(&sql);
	return ret;
}

int store_scan(PGconn *c, const struct md_kind *k, const char *after, int limit, json_t **items,
	       struct store_err *e)
{
	struct lp_buf sql = LP_BUF_INIT;
	char lim[24];
	const char *params[] = { lim, after };
	int ret;

	snprintf(lim, sizeof(lim), "%d", limit);
	lp_buf_adds(&sql, "SELECT ");
	md_select_list(k, &sql);
	lp_buf_addf(&sql, " FROM %s %s%s%s ORDER BY %s LIMIT $1 FOR SHARE", k->table,
		    after ? "WHERE " : "", after ? k->fields[0].column : "", after ? " > $2" : "",
		    k->fields[0].column);
	ret = many(c, k, sql.buf, after ? 2 : 1, params, items, e);
	lp_buf_release(&sql);
	return ret;
}

/* The placeholder of field i: tags are cast to jsonb. */
static void placeholder(struct lp_buf *sql, const struct md_field *f, int n)
{
	lp_buf_addf(sql, "$%d%s", n, f->type == MD_F_TAGS ? "::jsonb" : "");
}

int store_insert(PGconn *c, const struct md_kind *k, const struct md_values *v, json_t **out,
		 struct store_err *e)
{
	struct lp_buf sql = LP_BUF_INIT;
	const char *params[MD_MAX_FIELDS];
	size_t i;
	int ret;

	lp_buf_addf(&sql, "INSERT INTO %s (", k->table);
	for (i = 0; i < k->nfields; i++)
		lp_buf_addf(&sql, "%s%s", i ? ", " : "", k->fields[i].column);
	lp_buf_adds(&sql, ") VALUES (");
	for (i = 0; i < k->nfields; i++) {
		lp_buf_adds(&sql, i ? ", " : "");
		placeholder(&sql, &k->fields[i], (int)i + 1);
		params[i] = v->text[i];
	}
	lp_buf_adds(&sql, ") RETURNING ");
	md_select_list(k, &sql);
	ret = one(c, k, sql.buf, (int)k->nfields, params, out, e);
	lp_buf_release(&sql);
	return ret;
}

int store_update(PGconn *c, const struct md_kind *k, const char *key, const struct md_values *v,
		 json_t **out, struct store_err *e)
{
	struct lp_buf sql = LP_BUF_INIT;
	const char *params[MD_MAX_FIELDS];
	int n = 1, ret;
	size_t i;

	params[0] = key;
	lp_buf_addf(&sql, "UPDATE %s SET ", k->table);
	for (i = 1; i < k->nfields; i++) {
		if (!v->present[i])
			continue;
		lp_buf_addf(&sql, "%s%s = ", n > 1 ? ", " : "", k->fields[i].column);
		params[n++] = v->text[i];
		placeholder(&sql, &k->fields[i], n);
	}
	if (n == 1)
		lp_buf_adds(&sql, "updated_at = now()"); /* an empty PATCH still touches */
	lp_buf_addf(&sql, " WHERE %s = $1 RETURNING ", k->fields[0].column);
	md_select_list(k, &sql);
	ret = one(c, k, sql.buf, n, params, out, e);
	lp_buf_release(&sql);
	return ret;
}

int store_delete(PGconn *c, const struct md_kind *k, const char *key, struct store_err *e)
{
	struct lp_buf sql = LP_BUF_INIT;
	int ret;

	lp_buf_addf(&sql, "DELETE FROM %s WHERE %s = $1 RETURNING %s", k->table,
		    k->fields[0].column, k->fields[0].column);
	ret = one(c, k, sql.buf, 1, &key, NULL, e);
	lp_buf_release(&sql);
	return ret;
}
