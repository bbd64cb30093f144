/* ratelimit.c - token bucket, and retry delays with exponential backoff.
 *
 * The bucket does not run a timer: each call first refills it lazily with
 * rate * (now - last) tokens, capped at burst, then takes or measures.
 * Tokens are doubles so that slow rates (0.5/s) and fractional costs work.
 * A clock that goes backwards (only possible with the _at variants) adds
 * nothing rather than removing tokens.
 *
 * Backoff uses "equal jitter": half the exponential delay is fixed, so a
 * retry never comes too soon, and the other half is random, so that many
 * clients failing together do not retry together. */
#include <stdlib.h>

#include "logpipe/ratelimit.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

/* Tokens forgiven when comparing, so that rounding in the refill does not
 * refuse a token that has just become due. */
#define TOKEN_EPSILON 1e-9

void lp_bucket_init(struct lp_bucket *b, double rate, double burst)
{
	pthread_mutex_init(&b->mu, NULL);
	b->rate = rate > 0 ? rate : 0;
	b->burst = burst > 0 ? burst : 0;
	b->tokens = b->burst;
	b->last_us = lp_now_us();
}

void lp_bucket_release(struct lp_bucket *b)
{
	pthread_mutex_destroy(&b->mu);
}

/* Adds the tokens earned since last_us.  The mutex is held. */
static void refill(struct lp_bucket *b, int64_t now_us)
{
	if (now_us <= b->last_us)
		return;
	b->tokens += (double)(now_us - b->last_us) * b->rate / 1e6;
	if (b->tokens > b->burst)
		b->tokens = b->burst;
	b->last_us = now_us;
}

void lp_bucket_set_rate(struct lp_bucket *b, double rate, double burst)
{
	pthread_mutex_lock(&b->mu);
	refill(b, lp_now_us());
	b->rate = rate > 0 ? rate : 0;
	b->burst = burst > 0 ? burst : 0;
	if (b->tokens > b->burst)
		b->tokens = b->burst;
	pthread_mutex_unlock(&b->mu);
}

bool lp_bucket_take_at(struct lp_bucket *b, double n, int64_t now_us)
{
	bool ok;

	pthread_mutex_lock(&b->mu);
	refill(b, now_us);
	ok = b->tokens + TOKEN_EPSILON >= n;
	if (ok)
		b->tokens = b->tokens > n ? b->tokens - n : 0;
	pthread_mutex_unlock(&b->mu);
	return ok;
}

double lp_bucket_available_at(struct lp_bucket *b, int64_t now_us)
{
	double t;

	pthread_mutex_lock(&b->mu);
	refill(b, now_us);
	t = b->tokens;
	pthread_mutex_unlock(&b->mu);
	return t;
}

int64_t lp_bucket_wait_us_at(struct lp_bucket *b, double n, int64_t now_us)
{
	double missing, us;
	int64_t wait = 0;

	pthread_mutex_lock(&b->mu);
	refill(b, now_us);
	missing = n - b->tokens;
	if (missing > TOKEN_EPSILON) {
		if (n > b->burst + TOKEN_EPSILON || b->rate <= 0) {
			wait = INT64_MAX;
		} else {
			us = missing * 1e6 / b->rate;
			wait = (int64_t)us + ((double)(int64_t)us < us);
		}
	}
	pthread_mutex_unlock(&b->mu);
	return wait;
}

bool lp_bucket_take(struct lp_bucket *b, double n)
{
	return lp_bucket_take_at(b, n, lp_now_us());
}

double lp_bucket_available(struct lp_bucket *b)
{
	return lp_bucket_available_at(b, lp_now_us());
}

int64_t lp_bucket_wait_us(struct lp_bucket *b, double n)
{
	return lp_bucket_wait_us_at(b, n, lp_now_us());
}

/* ---- backoff ------------------------------------------------------------ */

/* The seed of callers that pass none. */
static _Thread_local unsigned backoff_seed;

int64_t lp_backoff_ms(int attempt, int64_t base_ms, int64_t max_ms, unsigned *seed)
{
	int64_t delay = base_ms, half;

	if (base_ms <= 0 || max_ms <= 0)
		return 0;
	if (!seed) {
		if (!backoff_seed)
			backoff_seed = (unsigned)lp_now_us() ^ (unsigned)(uintptr_t)&backoff_seed;
		seed = &backoff_seed;
	}
	/* Double per attempt, stopping at the cap before it can overflow. */
	for (int i = 1; i < attempt && delay < max_ms; i++)
		delay = delay > max_ms / 2 ? max_ms : delay * 2;
	if (delay > max_ms)
		delay = max_ms;
	half = delay / 2;
	return half + (int64_t)((unsigned long long)rand_r(seed) % (unsigned long long)(delay - half + 1));
}
