/* ratelimit.h - token bucket, and retry delays with exponential backoff.
 *
 * The bucket holds up to `burst` tokens and refills continuously at
 * `rate` tokens per second.  Thread-safe (one mutex). */
#ifndef LOGPIPE_RATELIMIT_H
#define LOGPIPE_RATELIMIT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct lp_bucket {
	pthread_mutex_t mu; /* guards every field below */
	double rate;        /* tokens added per second */
	double burst;       /* capacity */
	double tokens;      /* tokens available at `last_us` */
	int64_t last_us;    /* monotonic time of the last refill */
};

void lp_bucket_init(struct lp_bucket *b, double rate, double burst);
void lp_bucket_release(struct lp_bucket *b);
/* Changes rate and burst, keeping the tokens (capped at the new burst). */
void lp_bucket_set_rate(struct lp_bucket *b, double rate, double burst);
/* Takes n tokens if available.  Returns true on success. */
bool lp_bucket_take(struct lp_bucket *b, double n);
/* Tokens available now. */
double lp_bucket_available(struct lp_bucket *b);
/* Microseconds until n tokens will be available (0 if they are now,
 * INT64_MAX if they never will: n > burst, or rate 0). */
int64_t lp_bucket_wait_us(struct lp_bucket *b, double n);

/* The same with an explicit monotonic clock, for tests. */
bool lp_bucket_take_at(struct lp_bucket *b, double n, int64_t now_us);
double lp_bucket_available_at(struct lp_bucket *b, int64_t now_us);
int64_t lp_bucket_wait_us_at(struct lp_bucket *b, double n, int64_t now_us);

/* Delay before retry number `attempt` (1-based): exponential from base_ms,
 * capped at max_ms, with "equal jitter" (half fixed, half random) so that
 * clients spread out.  seed is a per-caller state for rand_r (NULL: a
 * per-thread one).  The result lies in [d/2, d] for d = min(max_ms,
 * base_ms * 2^(attempt-1)). */
int64_t lp_backoff_ms(int attempt, int64_t base_ms, int64_t max_ms, unsigned *seed);

#endif
