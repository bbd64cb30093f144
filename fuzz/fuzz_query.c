/* fuzz_query.c - a query string as GET /api/logs and /api/stats get it:
 * lp_http_query (CivetWeb's decoding of one parameter) feeding the
 * consumer's query_parse_filter, then the SQL builders.
 *
 * Checks: a refusal names the parameter and says why; an accepted filter
 * has its limit in range, NUL-terminated strings, and builds statements
 * with at most QUERY_MAX_PARAMS parameters, none of them NULL, in which no
 * client value appears (values travel as parameters only). */
#include <stdbool.h>

#include "fuzz.h"
#include "logpipe/http.h"
#include "logpipe/log.h"
#include "../consumer/query.h"

#include "logpipe/banned.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	lp_log_init("fuzz", LP_LOG_ERROR);
	return 0;
}

static int get(void *ud, const char *name, char *out, size_t outlen)
{
	return lp_http_query(ud, name, out, outlen);
}

static void check_sql(struct query_sql *q, const struct query_filter *f)
{
	FUZZ_CHECK(q->nparams >= 0 && q->nparams <= QUERY_MAX_PARAMS, "%d parameters",
		   q->nparams);
	for (int i = 0; i < q->nparams; i++)
		FUZZ_CHECK(q->params[i] != NULL, "parameter %d is NULL", i + 1);
	/* Client text never becomes SQL text (a value with a quote would show). */
	if (strlen(f->text) > 3 && strchr(f->text, '\''))
		FUZZ_CHECK(!strstr(q->sql.buf, f->text), "text value in SQL: %s", q->sql.buf);
	if (strlen(f->service) > 3 && strchr(f->service, '\''))
		FUZZ_CHECK(!strstr(q->sql.buf, f->service), "service value in SQL: %s", q->sql.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lp_http_req r;
	struct query_filter f;
	struct query_sql q;
	char param[64], err[256];
	bool stats = size > 0 && (data[0] & 1);

	memset(&r, 0, sizeof(r));
	r.query = fuzz_cstr(data, size);
	param[0] = err[0] = '\0';
	if (query_parse_filter(&f, get, &r, stats, 1700000000000LL, param, sizeof(param), err,
			       sizeof(err)) < 0) {
		FUZZ_CHECK(param[0] && err[0], "refusal without parameter or reason");
		free((char *)r.query);
		return 0;
	}
	if (!stats)
		FUZZ_CHECK(f.limit >= 1 && f.limit <= QUERY_MAX_LIMIT, "limit %d", f.limit);
	FUZZ_CHECK(memchr(f.service, 0, sizeof(f.service)) && memchr(f.host, 0, sizeof(f.host)) &&
			   memchr(f.tenant, 0, sizeof(f.tenant)) && memchr(f.text, 0, sizeof(f.text)),
		   "unterminated string");
	query_sql_init(&q);
	if (stats)
		query_build_stats(&f, &q);
	else
		query_build_list(&f, &q);
	check_sql(&q, &f);
	query_sql_release(&q);
	(void)query_needs_plan_race(&f);
	free((char *)r.query);
	return 0;
}
