/* params.c - a start request's fields, read through one table.
 *
 * Each accepted name (with its aliases) maps to a field, its kind and its
 * bounds; one loop over the request object looks every key up in the
 * table, so an unknown key is found by the same walk that reads the known
 * ones.  Values are read into a copy of the settings and copied back only
 * when every field passed. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "params.h"
#include "logpipe/json.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

enum field { F_RATE, F_SIZE_BYTES, F_SIZE_KB, F_THREADS, F_BATCH, F_DURATION };

/* One accepted name. */
struct param_name {
	const char *name;  /* as it appears in the request */
	enum field field;  /* what it sets */
};

static const struct param_name names[] = {
	{ "rate", F_RATE },
	{ "rate_per_second", F_RATE },
	{ "ratePerSecond", F_RATE },
	{ "size_bytes", F_SIZE_BYTES },
	{ "size", F_SIZE_BYTES },
	{ "size_kb", F_SIZE_KB },
	{ "threads", F_THREADS },
	{ "batch_size", F_BATCH },
	{ "batchSize", F_BATCH },
	{ "duration_s", F_DURATION },
	{ "duration", F_DURATION },
	{ "durationSeconds", F_DURATION },
};

static int fail(struct gen_param_error *e, const char *code, const char *field, const char *fmt,
		...) __attribute__((format(printf, 4, 5)));

static int fail(struct gen_param_error *e, const char *code, const char *field, const char *fmt,
		...)
{
	va_list ap;

	lp_strlcpy(e->code, code, sizeof(e->code));
	lp_strlcpy(e->field, field, sizeof(e->field));
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Reads a JSON number, or a string holding one.  Returns false if v is
 * neither or is not finite. */
static bool read_number(json_t *v, double *out)
{
	const char *s;
	char *end;

	if (json_is_number(v)) {
		*out = json_number_value(v);
		return isfinite(*out);
	}
	s = json_string_value(v);
	if (!s || !*s)
		return false;
	errno = 0;
	*out = strtod(s, &end);
	while (*end == ' ')
		end++;
	return errno == 0 && *end == '\0' && end != s && isfinite(*out);
}

static int read_int(json_t *v, const char *name, double lo, double hi, long long *out,
		    struct gen_param_error *e)
{
	double d;

	if (!read_number(v, &d) || d != floor(d))
		return fail(e, "invalid_field", name, "\"%s\" must be an integer", name);
	if (d < lo || d > hi)
		return fail(e, "invalid_field", name, "\"%s\" must be between %.0f and %.0f", name, lo,
			    hi);
	*out = (long long)d;
	return 0;
}

static int read_real(json_t *v, const char *name, double lo, double hi, double *out,
		     struct gen_param_error *e)
{
	double d;

	if (!read_number(v, &d))
		return fail(e, "invalid_field", name, "\"%s\" must be a number", name);
	if (d < lo || d > hi)
		return fail(e, "invalid_field", name, "\"%s\" must be between %g and %g", name, lo, hi);
	*out = d;
	return 0;
}

static const struct param_name *lookup(const char *key)
{
	size_t i;

	for (i = 0; i < LP_ARRAY_SIZE(names); i++)
		if (!strcmp(names[i].name, key))
			return &names[i];
	return NULL;
}

/* Reads one field into p.  *size_from remembers which name set the size,
 * so that size_bytes and size_kb together are refused. */
static int apply_one(struct gen_params *p, const struct param_name *n, json_t *v,
		     const char **size_from, struct gen_param_error *e)
{
	long long i;
	double d;
	int rc = 0;

	switch (n->field) {
	case F_RATE:
		rc = read_real(v, n->name, GEN_RATE_MIN, GEN_RATE_MAX, &p->rate, e);
		break;
	case F_SIZE_BYTES:
	case F_SIZE_KB:
		if (*size_from)
			return fail(e, "invalid_field", n->name,
				    "give one of \"%s\" and \"%s\", not both", *size_from, n->name);
		*size_from = n->name;
		if (n->field == F_SIZE_BYTES) {
			rc = read_int(v, n->name, (double)GEN_SIZE_MIN, (double)GEN_SIZE_MAX,
				      &p->size_bytes, e);
			break;
		}
		rc = read_real(v, n->name, (double)GEN_SIZE_MIN / 1024, (double)GEN_SIZE_MAX / 1024,
			       &d, e);
		if (rc == 0)
			p->size_bytes = llround(d * 1024);
		if (p->size_bytes < GEN_SIZE_MIN)
			p->size_bytes = GEN_SIZE_MIN;
		break;
	case F_THREADS:
		rc = read_int(v, n->name, 1, GEN_THREADS_MAX, &i, e);
		if (rc == 0)
			p->threads = (int)i;
		break;
	case F_BATCH:
		rc = read_int(v, n->name, 1, GEN_BATCH_MAX, &i, e);
		if (rc == 0)
			p->batch_size = (int)i;
		break;
	case F_DURATION:
		rc = read_real(v, n->name, 0, GEN_DURATION_MAX, &p->duration_s, e);
		break;
	}
	return rc;
}

int gen_params_check(const struct gen_params *p, struct gen_param_error *e)
{
	if (!(p->rate >= GEN_RATE_MIN && p->rate <= GEN_RATE_MAX))
		return fail(e, "invalid_field", "rate", "\"rate\" must be between %g and %g",
			    GEN_RATE_MIN, GEN_RATE_MAX);
	if (p->size_bytes < GEN_SIZE_MIN || p->size_bytes > GEN_SIZE_MAX)
		return fail(e, "invalid_field", "size_bytes",
			    "\"size_bytes\" must be between %lld and %lld", GEN_SIZE_MIN, GEN_SIZE_MAX);
	if (p->threads < 1 || p->threads > GEN_THREADS_MAX)
		return fail(e, "invalid_field", "threads", "\"threads\" must be between 1 and %d",
			    GEN_THREADS_MAX);
	if (p->batch_size < 1 || p->batch_size > GEN_BATCH_MAX)
		return fail(e, "invalid_field", "batch_size",
			    "\"batch_size\" must be between 1 and %d", GEN_BATCH_MAX);
	if (!(p->duration_s >= 0 && p->duration_s <= GEN_DURATION_MAX))
		return fail(e, "invalid_field", "duration_s",
			    "\"duration_s\" must be between 0 and %g", GEN_DURATION_MAX);
	return 0;
}

int gen_params_apply(struct gen_params *p, json_t *obj, struct gen_param_error *e)
{
	struct gen_params t = *p;
	const char *size_from = NULL;
	const char *key;
	json_t *v;

	if (obj && !json_is_object(obj))
		return fail(e, "invalid_json", "", "the request body must be a JSON object");
	if (obj) {
		json_object_foreach(obj, key, v) {
			const struct param_name *n = lookup(key);

			if (!n)
				return fail(e, "unknown_field", key,
					    "unknown field \"%.64s\"; expected rate, size_bytes, "
					    "size_kb, threads, batch_size or duration_s", key);
			if (json_is_null(v))
				continue; /* null means "keep the default" */
			if (apply_one(&t, n, v, &size_from, e) < 0)
				return -EINVAL;
		}
	}
	if (gen_params_check(&t, e) < 0)
		return -EINVAL;
	*p = t;
	return 0;
}

int gen_params_parse(struct gen_params *p, const char *body, size_t len,
		     struct gen_param_error *e)
{
	json_error_t je;
	json_t *obj;
	size_t i;
	int rc;

	for (i = 0; i < len && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' ||
				body[i] == '\t'); i++)
		;
	if (i == len)
		return gen_params_apply(p, NULL, e);
	obj = lp_json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (!obj)
		return fail(e, "invalid_json", "", "the request body is not valid JSON: %s (at %d:%d)",
			    je.text, je.line, je.column);
	rc = gen_params_apply(p, obj, e);
	json_decref(obj);
	return rc;
}
