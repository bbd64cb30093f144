/* pg.c - a fixed-size PostgreSQL connection pool on libpq.
 *
 * The pool is an array of `size` slots guarded by one mutex; a condition
 * variable wakes callers waiting for a free slot.  A slot's connection is
 * opened lazily by the caller that takes it (outside the lock, so a slow
 * connect does not stall the pool) and closed when it is returned broken,
 * so the next caller reconnects.  Free slots that still hold a connection
 * are preferred to empty ones.  A connection returned inside a transaction
 * is rolled back first, so one caller's mistake does not leak into the
 * next caller's statements. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logpipe/log.h"
#include "logpipe/pg.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

struct pg_slot {
	PGconn *conn;   /* NULL until opened, and after being closed */
	bool busy;      /* handed out to a caller */
};

struct lp_pgpool {
	char *conninfo;         /* libpq connection string or URI */
	int connect_timeout_s;  /* libpq connect_timeout, 0 = libpq's default */
	int size;               /* number of slots */
	struct pg_slot *slots;
	pthread_mutex_t mu;     /* guards slots */
	pthread_cond_t cv;      /* signalled when a slot is returned */
};

struct lp_pgpool *lp_pgpool_new(const char *conninfo, int size, int connect_timeout_s)
{
	struct lp_pgpool *p;
	pthread_condattr_t ca;

	if (!conninfo || size <= 0)
		return NULL;
	p = lp_xcalloc(1, sizeof(*p));
	p->conninfo = lp_xstrdup(conninfo);
	p->connect_timeout_s = connect_timeout_s > 0 ? connect_timeout_s : 0;
	p->size = size;
	p->slots = lp_xcalloc((size_t)size, sizeof(*p->slots));
	pthread_mutex_init(&p->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cv, &ca);
	pthread_condattr_destroy(&ca);
	return p;
}

void lp_pgpool_free(struct lp_pgpool *p)
{
	int i;

	if (!p)
		return;
	for (i = 0; i < p->size; i++) {
		if (p->slots[i].busy)
			lp_warn("pg pool freed with a connection still in use");
		if (p->slots[i].conn)
			PQfinish(p->slots[i].conn);
	}
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p->slots);
	free(p->conninfo);
	free(p);
}

/* libpq messages end with a newline; error buffers should not. */
static void copy_pq_error(char *err, size_t errlen, const char *msg)
{
	size_t n;

	if (!err || errlen == 0)
		return;
	lp_strlcpy(err, msg && *msg ? msg : "unknown libpq error", errlen);
	n = strlen(err);
	while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
		err[--n] = '\0';
}

static PGconn *pg_connect(struct lp_pgpool *p, char *err, size_t errlen)
{
	const char *keys[] = { "dbname", "connect_timeout", "fallback_application_name", NULL };
	const char *vals[4];
	char timeout[16];
	PGconn *c;

	snprintf(timeout, sizeof(timeout), "%d", p->connect_timeout_s);
	/* dbname is expanded as a connection string; later keys override it. */
	vals[0] = p->conninfo;
	vals[1] = p->connect_timeout_s > 0 ? timeout : NULL;
	vals[2] = "logpipe";
	vals[3] = NULL;
	c = PQconnectdbParams(keys, vals, 1);
	if (!c) {
		copy_pq_error(err, errlen, "out of memory opening a PostgreSQL connection");
		return NULL;
	}
	if (PQstatus(c) != CONNECTION_OK) {
		copy_pq_error(err, errlen, PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	return c;
}

/* The index of a free slot, preferring one with a connection; -1 if none. */
static int free_slot(struct lp_pgpool *p)
{
	int i, empty = -1;

	for (i = 0; i < p->size; i++) {
		if (p->slots[i].busy)
			continue;
		if (p->slots[i].conn)
			return i;
		if (empty < 0)
			empty = i;
	}
	return empty;
}

static void deadline_in(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

PGconn *lp_pgpool_get(struct lp_pgpool *p, int timeout_ms, char *err, size_t errlen)
{
	struct timespec until;
	PGconn *c;
	int i;

	deadline_in(&until, timeout_ms > 0 ? timeout_ms : 0);
	pthread_mutex_lock(&p->mu);
	while ((i = free_slot(p)) < 0) {
		if (pthread_cond_timedwait(&p->cv, &p->mu, &until) == ETIMEDOUT &&
		    (i = free_slot(p)) < 0)
			break;
	}
	if (i < 0) {
		pthread_mutex_unlock(&p->mu);
		if (err && errlen)
			snprintf(err, errlen, "no free PostgreSQL connection within %d ms",
				 timeout_ms);
		return NULL;
	}
	p->slots[i].busy = true;
	c = p->slots[i].conn;
	p->slots[i].conn = NULL;
	pthread_mutex_unlock(&p->mu);

	/* A connection the server dropped while idle shows up as BAD here. */
	if (c && PQstatus(c) != CONNECTION_OK) {
		PQfinish(c);
		c = NULL;
	}
	if (!c)
		c = pg_connect(p, err, errlen);

	pthread_mutex_lock(&p->mu);
	p->slots[i].conn = c;
	if (!c) {
		p->slots[i].busy = false;
		pthread_cond_signal(&p->cv);
	}
	pthread_mutex_unlock(&p->mu);
	return c;
}

void lp_pgpool_put(struct lp_pgpool *p, PGconn *c, bool broken)
{
	PGresult *res;
	int i;

	if (!c)
		return;
	pthread_mutex_lock(&p->mu);
	for (i = 0; i < p->size; i++)
		if (p->slots[i].busy && p->slots[i].conn == c)
			break;
	pthread_mutex_unlock(&p->mu);
	if (i == p->size) {
		lp_error("pg connection returned to a pool it does not belong to; closed");
		PQfinish(c);
		return;
	}

	if (!broken && PQstatus(c) != CONNECTION_OK)
		broken = true;
	if (!broken && PQtransactionStatus(c) != PQTRANS_IDLE) {
		/* Left inside a transaction, or with a query running. */
		if (PQtransactionStatus(c) == PQTRANS_ACTIVE) {
			broken = true;
		} else {
			lp_warn("pg connection returned inside a transaction; rolling back");
			res = PQexec(c, "ROLLBACK");
			if (PQresultStatus(res) != PGRES_COMMAND_OK)
				broken = true;
			PQclear(res);
		}
	}
	if (broken)
		PQfinish(c);

	pthread_mutex_lock(&p->mu);
	if (broken)
		p->slots[i].conn = NULL;
	p->slots[i].busy = false;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

/*
 * Runs sql and waits for its result for at most timeout_ms, without
 * blocking in libpq (a hung server must not hang a health check).
 * Returns the last result or NULL on send failure or timeout.
 */
static PGresult *exec_bounded(PGconn *c, const char *sql, int timeout_ms)
{
	int64_t deadline = lp_now_ms() + timeout_ms;
	PGresult *res, *last = NULL;
	struct pollfd pfd;
	int left;

	if (!PQsendQuery(c, sql))
		return NULL;
	for (;;) {
		while (!PQisBusy(c)) {
			res = PQgetResult(c);
			if (!res)
				return last;
			PQclear(last);
			last = res;
		}
		left = (int)(deadline - lp_now_ms());
		if (left <= 0)
			break;
		pfd.fd = PQsocket(c);
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (poll(&pfd, 1, left) < 0 && errno != EINTR)
			break;
		if (!PQconsumeInput(c))
			break;
	}
	PQclear(last);
	return NULL;
}

int lp_pgpool_ping(struct lp_pgpool *p, int timeout_ms)
{
	int64_t t0 = lp_now_ms();
	char err[256];
	PGconn *c;
	PGresult *res;
	int left, ret;

	c = lp_pgpool_get(p, timeout_ms, err, sizeof(err));
	if (!c) {
		lp_debug("pg ping: %s", err);
		return -EIO;
	}
	left = timeout_ms - (int)(lp_now_ms() - t0);
	res = exec_bounded(c, "SELECT 1", left > 0 ? left : 1);
	ret = res && PQresultStatus(res) == PGRES_TUPLES_OK ? 0 : -EIO;
	PQclear(res);
	/* A failed or unanswered ping leaves the connection unusable. */
	lp_pgpool_put(p, c, ret < 0);
	return ret;
}

bool lp_pg_conn_error(const PGresult *res, PGconn *c)
{
	const char *state;

	if (c && PQstatus(c) != CONNECTION_OK)
		return true;
	if (!res)
		return true; /* libpq could not even send the statement */
	switch (PQresultStatus(res)) {
	case PGRES_FATAL_ERROR:
	case PGRES_NONFATAL_ERROR:
		break;
	default:
		return false;
	}
	state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	/* Errors made by libpq itself (lost connection) carry no SQLSTATE. */
	if (!state || !*state)
		return true;
	return strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
	       strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0;
}
