/* breaker.c - circuit breaker for one dependency.
 *
 * The state machine:
 *
 *   CLOSED --(>= min_calls in window and failure rate >= failure_rate)--> OPEN
 *   OPEN --(open_ms elapsed; noticed by the next allow or state query)--> HALF_OPEN
 *   HALF_OPEN --(half_open_calls trials all succeeded)--> CLOSED (window cleared)
 *   HALF_OPEN --(any trial failed)--> OPEN (the wait starts again)
 *
 * The window is a ring of the outcomes (failed or not) of the last `window`
 * calls recorded while closed, with a running count of the failures, so
 * recording is O(1).  In half-open, allow hands out at most
 * half_open_calls permits and record counts the successes.  A record that
 * arrives while open belongs to a call let through before the breaker
 * opened: it is ignored.  Every transition updates the gauge
 * circuit_breaker_state{name} and writes a log line. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "logpipe/breaker.h"
#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

struct lp_breaker {
	pthread_mutex_t mu;           /* guards every field below but name and opts */
	char *name;                   /* dependency name, the gauge's label */
	struct lp_breaker_opts opts;  /* settings, defaults filled in */
	enum lp_breaker_state state;  /* current state */
	int64_t opened_at_ms;         /* when it last opened (monotonic) */
	unsigned char *ring;          /* 1 for a failed call, opts.window entries */
	int ring_next;                /* slot the next outcome goes to */
	int calls;                    /* outcomes in the ring, up to opts.window */
	int failures;                 /* failed outcomes in the ring */
	int trials_allowed;           /* half-open permits handed out */
	int trials_ok;                /* half-open trials that succeeded */
	struct lp_series *gauge;      /* circuit_breaker_state{name} */
};

static const struct lp_breaker_opts defaults = {
	.window = 10,
	.min_calls = 5,
	.failure_rate = 0.5,
	.open_ms = 5000,
	.half_open_calls = 3,
	.slow_ms = 0,
};

struct lp_breaker *lp_breaker_new(const char *name, const struct lp_breaker_opts *opts)
{
	struct lp_breaker *b = lp_xcalloc(1, sizeof(*b));
	struct lp_metric *m;

	b->opts = opts ? *opts : defaults;
	/* Zero or nonsensical fields take their default. */
	if (b->opts.window <= 0)
		b->opts.window = defaults.window;
	if (b->opts.min_calls <= 0)
		b->opts.min_calls = defaults.min_calls;
	if (b->opts.min_calls > b->opts.window)
		b->opts.min_calls = b->opts.window;
	if (!(b->opts.failure_rate > 0 && b->opts.failure_rate <= 1))
		b->opts.failure_rate = defaults.failure_rate;
	if (b->opts.open_ms <= 0)
		b->opts.open_ms = defaults.open_ms;
	if (b->opts.half_open_calls <= 0)
		b->opts.half_open_calls = defaults.half_open_calls;
	if (b->opts.slow_ms < 0)
		b->opts.slow_ms = 0;

	pthread_mutex_init(&b->mu, NULL);
	b->name = lp_xstrdup(name ? name : "");
	b->ring = lp_xcalloc((size_t)b->opts.window, 1);
	b->state = LP_BREAKER_CLOSED;
	m = lp_metric_new(lp_registry_default(), LP_GAUGE, "circuit_breaker_state",
			  "Circuit breaker state (0 closed, 1 open, 2 half-open).", "name", NULL, 0);
	if (m) {
		b->gauge = lp_metric_series(m, b->name);
		lp_series_set(b->gauge, LP_BREAKER_CLOSED);
	}
	return b;
}

void lp_breaker_free(struct lp_breaker *b)
{
	if (!b)
		return;
	pthread_mutex_destroy(&b->mu);
	free(b->ring);
	free(b->name);
	free(b);
}

const char *lp_breaker_name(const struct lp_breaker *b)
{
	return b->name;
}

const char *lp_breaker_state_name(enum lp_breaker_state s)
{
	switch (s) {
	case LP_BREAKER_CLOSED: return "closed";
	case LP_BREAKER_OPEN: return "open";
	case LP_BREAKER_HALF_OPEN: return "half_open";
	}
	return "unknown";
}

/* ---- transitions (mutex held) ------------------------------------------- */

static void clear_window(struct lp_breaker *b)
{
	memset(b->ring, 0, (size_t)b->opts.window);
	b->ring_next = 0;
	b->calls = 0;
	b->failures = 0;
}

static void set_state(struct lp_breaker *b, enum lp_breaker_state s, int64_t now_ms)
{
	enum lp_breaker_state old = b->state;

	b->state = s;
	if (s == LP_BREAKER_OPEN)
		b->opened_at_ms = now_ms;
	b->trials_allowed = 0;
	b->trials_ok = 0;
	if (s == LP_BREAKER_CLOSED)
		clear_window(b);
	if (b->gauge)
		lp_series_set(b->gauge, s);
	lp_log_kv(s == LP_BREAKER_OPEN ? LP_LOG_WARN : LP_LOG_INFO,
		  (const char *const[]){ "breaker", b->name, "from", lp_breaker_state_name(old),
					 "to", lp_breaker_state_name(s), NULL },
		  "circuit breaker \"%s\" %s", b->name, lp_breaker_state_name(s));
}

/* Turns OPEN into HALF_OPEN once the wait is over. */
static void tick(struct lp_breaker *b, int64_t now_ms)
{
	if (b->state == LP_BREAKER_OPEN && now_ms - b->opened_at_ms >= b->opts.open_ms)
		set_state(b, LP_BREAKER_HALF_OPEN, now_ms);
}

/* ---- calls -------------------------------------------------------------- */

bool lp_breaker_allow_at(struct lp_breaker *b, int64_t now_ms)
{
	bool ok = false;

	pthread_mutex_lock(&b->mu);
	tick(b, now_ms);
	switch (b->state) {
	case LP_BREAKER_CLOSED:
		ok = true;
		break;
	case LP_BREAKER_OPEN:
		break;
	case LP_BREAKER_HALF_OPEN:
		if (b->trials_allowed < b->opts.half_open_calls) {
			b->trials_allowed++;
			ok = true;
		}
		break;
	}
	pthread_mutex_unlock(&b->mu);
	return ok;
}

void lp_breaker_record_at(struct lp_breaker *b, bool ok, int64_t elapsed_ms, int64_t now_ms)
{
	bool failed = !ok || (b->opts.slow_ms > 0 && elapsed_ms > b->opts.slow_ms);

	pthread_mutex_lock(&b->mu);
	switch (b->state) {
	case LP_BREAKER_CLOSED:
		b->failures += failed - b->ring[b->ring_next];
		b->ring[b->ring_next] = failed;
		b->ring_next = (b->ring_next + 1) % b->opts.window;
		if (b->calls < b->opts.window)
			b->calls++;
		/* The epsilon keeps 3 of 5 at a 0.6 rate from missing by
		 * a rounding error. */
		if (b->calls >= b->opts.min_calls &&
		    b->failures >= b->opts.failure_rate * b->calls - 1e-9)
			set_state(b, LP_BREAKER_OPEN, now_ms);
		break;
	case LP_BREAKER_OPEN:
		break;
	case LP_BREAKER_HALF_OPEN:
		if (failed)
			set_state(b, LP_BREAKER_OPEN, now_ms);
		else if (++b->trials_ok >= b->opts.half_open_calls)
			set_state(b, LP_BREAKER_CLOSED, now_ms);
		break;
	}
	pthread_mutex_unlock(&b->mu);
}

enum lp_breaker_state lp_breaker_state_at(struct lp_breaker *b, int64_t now_ms)
{
	enum lp_breaker_state s;

	pthread_mutex_lock(&b->mu);
	tick(b, now_ms);
	s = b->state;
	pthread_mutex_unlock(&b->mu);
	return s;
}

static int64_t retry_after_at(struct lp_breaker *b, int64_t now_ms)
{
	int64_t ms = 0;

	pthread_mutex_lock(&b->mu);
	tick(b, now_ms);
	if (b->state == LP_BREAKER_OPEN)
		ms = b->opened_at_ms + b->opts.open_ms - now_ms;
	pthread_mutex_unlock(&b->mu);
	return ms;
}

bool lp_breaker_allow(struct lp_breaker *b)
{
	return lp_breaker_allow_at(b, lp_now_ms());
}

void lp_breaker_record(struct lp_breaker *b, bool ok, int64_t elapsed_ms)
{
	lp_breaker_record_at(b, ok, elapsed_ms, lp_now_ms());
}

enum lp_breaker_state lp_breaker_state(struct lp_breaker *b)
{
	return lp_breaker_state_at(b, lp_now_ms());
}

int64_t lp_breaker_retry_after_ms(struct lp_breaker *b)
{
	return retry_after_at(b, lp_now_ms());
}
