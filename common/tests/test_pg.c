/* test_pg.c - the PostgreSQL pool without a server: which results count as
 * a lost connection, and how the pool fails when nothing listens.  The pool
 * against a real PostgreSQL is covered by the integration tests. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "logpipe/log.h"
#include "logpipe/pg.h"
#include "logpipe/util.h"
#include "testutil.h"

#include "logpipe/banned.h"

static void test_conn_error(void **state)
{
	PGresult *ok = PQmakeEmptyPGresult(NULL, PGRES_COMMAND_OK);
	PGresult *rows = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
	PGresult *libpq_err = PQmakeEmptyPGresult(NULL, PGRES_FATAL_ERROR);

	/* No result at all: libpq could not send. */
	assert_true(lp_pg_conn_error(NULL, NULL));
	assert_false(lp_pg_conn_error(ok, NULL));
	assert_false(lp_pg_conn_error(rows, NULL));
	/* An error without SQLSTATE is libpq's own (connection lost). */
	assert_true(lp_pg_conn_error(libpq_err, NULL));
	PQclear(ok);
	PQclear(rows);
	PQclear(libpq_err);
}

static void test_unreachable(void **state)
{
	char conninfo[128], err[256] = "";
	struct lp_pgpool *p;
	int64_t t0 = lp_now_ms();

	snprintf(conninfo, sizeof(conninfo), "postgresql://logpipe@127.0.0.1:%d/logpipe",
		 test_free_port());
	p = lp_pgpool_new(conninfo, 2, 2);
	assert_non_null(p);
	assert_null(lp_pgpool_get(p, 1000, err, sizeof(err)));
	assert_contains(err, "refused");
	assert_true(err[strlen(err) - 1] != '\n');
	/* The failed connect gave its slot back: both slots are still usable. */
	assert_null(lp_pgpool_get(p, 100, NULL, 0));
	assert_null(lp_pgpool_get(p, 100, NULL, 0));
	assert_int_equal(lp_pgpool_ping(p, 1000), -EIO);
	assert_true(lp_now_ms() - t0 < 3000);
	lp_pgpool_put(p, NULL, true);
	lp_pgpool_free(p);
	lp_pgpool_free(NULL);
	assert_null(lp_pgpool_new("host=x", 0, 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conn_error),
		cmocka_unit_test(test_unreachable),
	};

	lp_log_init("test_pg", LP_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
