/* params.h - the settings of one generation run and how a start request
 * sets them.
 *
 * A start request is a JSON object (or nothing, for the defaults):
 *   {"rate": 1000, "size_bytes": 256 | "size_kb": 1, "threads": 4,
 *    "batch_size": 10, "duration_s": 60}
 * Every field is optional and may also be a numeric string ("100"), as
 * HTML forms send them.  Aliases: rate_per_second / ratePerSecond,
 * size (bytes), batchSize, duration / durationSeconds.  Unknown fields and
 * values out of range are refused with the field named, so a typo never
 * silently runs the defaults. */
#ifndef LOGPIPE_GENERATOR_PARAMS_H
#define LOGPIPE_GENERATOR_PARAMS_H

#include <jansson.h>
#include <stddef.h>

/* Bounds of each setting, inclusive. */
#define GEN_RATE_MIN      0.1          /* events/s */
#define GEN_RATE_MAX      10000000.0   /* high enough to mean "as fast as it goes" */
#define GEN_SIZE_MIN      1LL          /* bytes; events never get below GEN_MIN_EVENT_BYTES */
#define GEN_SIZE_MAX      900000LL     /* below the ~1 MB message limit of librdkafka and the broker */
#define GEN_THREADS_MAX   64
#define GEN_BATCH_MAX     10000
#define GEN_DURATION_MAX  604800.0     /* a week */

struct gen_params {
	double rate;          /* events per second, shared by all running instances */
	long long size_bytes; /* target length of one serialised event */
	int threads;          /* worker threads of this instance */
	int batch_size;       /* events per token-bucket take and per breaker call */
	double duration_s;    /* the run stops by itself after this long; 0 = never */
};

/* Why a request was refused: a stable code, the field, a sentence. */
struct gen_param_error {
	char code[32];     /* "invalid_json", "invalid_field", "unknown_field" */
	char field[32];    /* the offending field, "" for the whole body */
	char message[200];
};

/* Applies the fields of obj (a JSON object, or NULL for none) over *p,
 * which holds the defaults, then checks the result.  *p is left unchanged
 * on failure.  Returns 0 or -EINVAL with *e filled. */
int gen_params_apply(struct gen_params *p, json_t *obj, struct gen_param_error *e);
/* The same from a request body: empty or blank means no fields. */
int gen_params_parse(struct gen_params *p, const char *body, size_t len,
		     struct gen_param_error *e);
/* Checks every field against its bounds.  Returns 0 or -EINVAL. */
int gen_params_check(const struct gen_params *p, struct gen_param_error *e);

#endif
