/* breaker.h - circuit breaker for one dependency.
 *
 * Count-based sliding window of the last `window` calls.  CLOSED: calls
 * pass; once at least `min_calls` are in the window and the failure rate
 * (failures + slow calls) reaches `failure_rate`, the breaker OPENs.  OPEN:
 * calls are refused until `open_ms` has passed, then HALF_OPEN lets
 * `half_open_calls` trial calls through; if they all succeed it closes
 * (window cleared), if any fails it opens again.
 *
 * Usage: if (!lp_breaker_allow(b)) fail fast; else call and then
 * lp_breaker_record(b, ok, elapsed_ms).  Every allowed call must be
 * recorded exactly once.  Thread-safe (one mutex).  Each breaker registers
 * the gauge circuit_breaker_state{name} (0 closed, 1 open, 2 half-open). */
#ifndef LOGPIPE_BREAKER_H
#define LOGPIPE_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

enum lp_breaker_state { LP_BREAKER_CLOSED = 0, LP_BREAKER_OPEN = 1, LP_BREAKER_HALF_OPEN = 2 };

struct lp_breaker_opts {
	int window;          /* calls in the sliding window (default 10) */
	int min_calls;       /* calls needed before the rate counts (default 5) */
	double failure_rate; /* open at this rate, 0..1 (default 0.5) */
	int64_t open_ms;     /* time spent open before half-open (default 5000) */
	int half_open_calls; /* trial calls in half-open (default 3) */
	int64_t slow_ms;     /* a call slower than this counts as failed; 0 = off */
};

struct lp_breaker;

/* opts may be NULL for the defaults; zero fields take their default. */
struct lp_breaker *lp_breaker_new(const char *name, const struct lp_breaker_opts *opts);
void lp_breaker_free(struct lp_breaker *b);

bool lp_breaker_allow(struct lp_breaker *b);
void lp_breaker_record(struct lp_breaker *b, bool ok, int64_t elapsed_ms);
enum lp_breaker_state lp_breaker_state(struct lp_breaker *b);
const char *lp_breaker_name(const struct lp_breaker *b);
const char *lp_breaker_state_name(enum lp_breaker_state s); /* "closed", "open", "half_open" */
/* Milliseconds until an open breaker lets a trial call through (0 if not open). */
int64_t lp_breaker_retry_after_ms(struct lp_breaker *b);

/* The same with an explicit monotonic clock, for tests. */
bool lp_breaker_allow_at(struct lp_breaker *b, int64_t now_ms);
void lp_breaker_record_at(struct lp_breaker *b, bool ok, int64_t elapsed_ms, int64_t now_ms);
enum lp_breaker_state lp_breaker_state_at(struct lp_breaker *b, int64_t now_ms);

#endif
