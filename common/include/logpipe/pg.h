/* pg.h - a fixed-size PostgreSQL connection pool on libpq.
 *
 * Connections are opened lazily and re-opened when a caller reports one
 * broken.  lp_pgpool_get waits up to timeout_ms for a free connection.
 * Thread-safe. */
#ifndef LOGPIPE_PG_H
#define LOGPIPE_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

struct lp_pgpool;

/* conninfo: a libpq connection string or URI.  Nothing is opened yet. */
struct lp_pgpool *lp_pgpool_new(const char *conninfo, int size, int connect_timeout_s);
void lp_pgpool_free(struct lp_pgpool *p);
/* A connected PGconn, or NULL on timeout / connection failure (message in
 * err when err is not NULL). */
PGconn *lp_pgpool_get(struct lp_pgpool *p, int timeout_ms, char *err, size_t errlen);
/* Returns a connection; broken = true closes it (the next get reconnects).
 * Also closes it if PQstatus says it is bad. */
void lp_pgpool_put(struct lp_pgpool *p, PGconn *c, bool broken);
/* Runs "SELECT 1" on a pooled connection: 0 or -EIO. */
int lp_pgpool_ping(struct lp_pgpool *p, int timeout_ms);

/* True when a result's SQLSTATE says the connection itself failed (class 08,
 * admin shutdown 57P01..57P03) rather than the statement. */
bool lp_pg_conn_error(const PGresult *res, PGconn *c);

#endif
