/* limiter.h - per-client rate limits shared by every gateway through Redis.
 *
 * Each limited client (an API key, or a client address when anonymous) has
 * a budget of `limit` tokens per one-second window; a request takes `cost`
 * of them (the gateway: one per request in the api class, one per event
 * in the ingest class).  The windows live in
 * Redis, so all gateway instances draw from the same budget, but an
 * instance does not ask Redis for every request: it leases a block of
 * tokens (max(1, limit / lease_divisor)) and spends them locally until they
 * run out or the window ends.  Redis therefore sees about lease_divisor
 * calls per client per second per instance at most, and a refused window
 * is remembered locally, so a client being answered 429 costs no Redis call
 * at all.  See limiter.c for the algorithm and its accuracy.
 *
 * Leases are asked of Redis by lease threads, never by gw_limiter_take's
 * caller: see gw_limiter_take.
 *
 * While Redis is unreachable (its breaker is open or a lease failed) each
 * instance decides alone with a token bucket of limit / instances per
 * second, and tries Redis again a second later.
 *
 * Thread-safe: callers on any thread may call gw_limiter_take at once. */
#ifndef LOGPIPE_GATEWAY_LIMITER_H
#define LOGPIPE_GATEWAY_LIMITER_H

#include <stdbool.h>
#include <stddef.h>

struct lp_breaker;

struct gw_limiter_opts {
	const char *redis_url;  /* NULL or "": local buckets only */
	int redis_timeout_ms;   /* connect and command timeout (default 100) */
	int redis_conns;        /* connections to Redis (default 4) */
	const char *prefix;     /* Redis key prefix (default "logpipe:rl:") */
	int lease_divisor;      /* a lease is max(1, limit / lease_divisor) (default 20) */
	double burst_ratio;     /* local bucket capacity, in seconds of limit (default 1) */
	int instances;          /* gateways sharing the limit, for the local fallback (default 1) */
	int local_retry_ms;     /* after a failed lease, decide locally this long (default 1000) */
};

/* One decision, with what the RateLimit headers report. */
struct gw_limit {
	bool allowed;   /* the request may proceed */
	bool local;     /* decided by the local fallback, not the shared window */
	long limit;     /* tokens per window */
	long remaining; /* tokens left in the window (estimate across instances) */
	int reset_s;    /* seconds until the window (or bucket) refills, >= 1 */
	bool pending;   /* gw_limiter_take: undecided until a lease in flight ends
			 * (allowed is false): ask again after on_lease */
	bool too_large; /* refused because the cost is more than a whole window
			 * (the limit, or the local bucket's capacity) holds:
			 * asking again cannot help while the limit stays */
};

struct gw_limiter;

struct gw_limiter *gw_limiter_new(const struct gw_limiter_opts *o);
/* NULL is a no-op. */
void gw_limiter_free(struct gw_limiter *l);
/* Takes cost tokens (at least 1) of client `key` against `limit` per
 * second, all or none, without ever waiting for Redis (the event loops call
 * it): when the client has fewer leased tokens than cost, a lease of the
 * missing ones (at least the usual lease size) is handed to a lease thread
 * and out->pending is set; ask again once on_lease was called.  Nothing is
 * admitted without its tokens meanwhile, so the shared limit holds.  A
 * cost above what one window can hold is refused with out->too_large. */
void gw_limiter_take(struct gw_limiter *l, const char *key, long limit, long cost,
		     struct gw_limit *out);
/* The same, for a thread that may block: leases itself, or waits for the
 * lease in flight (bounded by twice the Redis timeout, then local).  Never
 * pending. */
void gw_limiter_take_wait(struct gw_limiter *l, const char *key, long limit, long cost,
			  struct gw_limit *out);
/* fn(ud) is called (on a lease thread, or the thread of a
 * gw_limiter_take_wait) whenever a lease ended, so that pending requests
 * can ask again.  NULL clears it; on return no call of the previous one is
 * in progress. */
void gw_limiter_on_lease(struct gw_limiter *l, void (*fn)(void *ud), void *ud);
/* The breaker guarding Redis, or NULL when Redis is not configured. */
struct lp_breaker *gw_limiter_breaker(struct gw_limiter *l);
/* Whether decisions are shared through Redis now: its breaker is closed
 * (half-open's trial may fail again) and the latest lease did not fail
 * (the breaker opens only after several failures). */
bool gw_limiter_shared(struct gw_limiter *l);
/* PING through the first connection: 0, -EIO, or -ENOENT without Redis. */
int gw_limiter_ping(struct gw_limiter *l);

/* ---- pure helpers (unit-tested) ---------------------------------------- */

/* Tokens to lease at once for a limit. */
long gw_lease_size(long limit, int divisor);
/* Writes the RateLimit-* header lines for d to out (Kong's three fields
 * and the IETF draft-07 RateLimit-Policy / RateLimit fields, window 1 s).
 * unit, when not NULL, names what the limit counts in the policy's quota
 * unit parameter (qu, as in later drafts): RateLimit-Policy: 1000;w=1;
 * qu="events".  Returns the length written, or 0 when outlen is too small. */
size_t gw_ratelimit_headers(const struct gw_limit *d, const char *unit, char *out,
			    size_t outlen);
/* Retry-After for a refused request: reset_s plus 0..jitter_s seconds. */
int gw_retry_after_s(int reset_s, int jitter_s, unsigned *seed);

#endif
