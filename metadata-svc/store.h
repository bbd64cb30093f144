/* store.h - host and service metadata in PostgreSQL.
 *
 * Every function runs parameterised statements on a connection the caller
 * took from the pool (and, for writes, opened a transaction on with
 * store_exec(c, "BEGIN")), and is written once for both kinds against the
 * record tables of record.h.  Records come back in their JSON form.
 *
 * Returns 0, -ENOENT (no such record), -EEXIST (a unique key taken; e->field
 * names it), or -EIO (e->message says why; e->broken when the connection
 * itself failed and must be returned broken). */
#ifndef METADATA_STORE_H
#define METADATA_STORE_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>

#include "record.h"

struct store_err {
	bool broken;       /* the connection failed (not just the statement) */
	char field[32];    /* -EEXIST: the JSON field whose value is taken */
	char message[256]; /* what PostgreSQL said */
};

/* Runs a statement without parameters or rows (BEGIN, COMMIT, ROLLBACK). */
int store_exec(PGconn *c, const char *sql, struct store_err *e);
/* The record whose field number `field` (0 = key) equals value; with
 * lock, the row is locked FOR UPDATE until the transaction ends. */
int store_get(PGconn *c, const struct md_kind *k, size_t field, const char *value, bool lock,
	      json_t **out, struct store_err *e);
/* A page of records ordered by key, and the total count. */
int store_list(PGconn *c, const struct md_kind *k, long long limit, long long offset,
	       json_t **items, long long *total, struct store_err *e);
/* Up to limit records with keys after `after` (NULL: from the first),
 * locked FOR SHARE: the resync's batches. */
int store_scan(PGconn *c, const struct md_kind *k, const char *after, int limit, json_t **items,
	       struct store_err *e);
int store_insert(PGconn *c, const struct md_kind *k, const struct md_values *v, json_t **out,
		 struct store_err *e);
/* Sets the fields present in v on the record key. */
int store_update(PGconn *c, const struct md_kind *k, const char *key, const struct md_values *v,
		 json_t **out, struct store_err *e);
int store_delete(PGconn *c, const struct md_kind *k, const char *key, struct store_err *e);

#endif
