/* run.h - one generation run: worker threads paced by a shared token
 * bucket, their counters, and the controller that ends the run.
 *
 * A run knows nothing of Kafka or Redis: it hands events to a sink (the
 * generator plugs in Kafka, tests plug in a fake) and asks the sink how
 * many instances share the rate.  Life cycle: gen_run_start, then
 * gen_run_stop (or the duration runs out), gen_run_drain until every
 * delivery is reported, gen_run_free.  gen_run_stats and the sink's
 * delivery reports may come from any thread at any time in between. */
#ifndef LOGPIPE_GENERATOR_RUN_H
#define LOGPIPE_GENERATOR_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "params.h"

struct lp_series;
struct gen_run;

/* Where a run's events go. */
struct gen_sink {
	/* Asked once per batch; false sheds the batch (counted as rate
	 * limited) without generating it.  NULL: always allowed. */
	bool (*allow)(void *ud);
	/* Enqueues one event; the sink copies key and val.  Returns 0, and
	 * then calls gen_run_delivered(token, ok) exactly once, later, from
	 * any thread; -ENOBUFS when its queue stayed full (the rest of the
	 * batch is shed and counted as rate limited); another negative errno
	 * when the event is lost (counted as an error). */
	int (*send)(void *ud, const char *key, size_t keylen, const char *val, size_t vallen,
		    void *token);
	/* Optional, for a sink that sends a batch cheaper than its events one
	 * by one: open(ud, token) is called by a worker before a batch's first
	 * send and returns the sink's state for that batch (NULL: use send);
	 * send_open(state, ...) then replaces send, with the same contract and
	 * the token given to open; close(state) is called after the batch's
	 * last send, on the same thread.  All three or none. */
	void *(*open)(void *ud, void *token);
	int (*send_open)(void *state, const char *key, size_t keylen, const char *val,
			 size_t vallen);
	void (*close)(void *state);
	/* Called once per batch after its last delivery report: ok when every
	 * event of it was delivered.  NULL: not needed. */
	void (*batch_done)(void *ud, bool ok, int64_t elapsed_ms);
	/* Asked every heartbeat_ms by the controller: how many running
	 * instances share the rate, at least 1.  NULL: this one alone. */
	int (*peers)(void *ud);
	/* Called once by the controller when the workers have stopped (on
	 * request or at the end of the duration).  NULL: not needed. */
	void (*finished)(void *ud);
	void *ud;
};

/* The process-wide series a run adds to; any may be NULL. */
struct gen_metrics {
	struct lp_series *generated;    /* log_events_generated_total */
	struct lp_series *rate_limited; /* log_events_rate_limited_total */
	struct lp_series *sent;         /* kafka_messages_sent_total */
	struct lp_series *errors;       /* log_events_errors_total */
	struct lp_series *rate_current; /* log_generation_rate_current */
	struct lp_series *rate_target;  /* log_generation_rate_target */
};

struct gen_run_opts {
	struct gen_params params;          /* what to generate, already checked */
	const char *instance_id;           /* written into each event; copied */
	struct gen_sink sink;              /* where the events go */
	const struct gen_metrics *metrics; /* must outlive the run; may be NULL */
	int64_t heartbeat_ms;              /* how often peers() is asked; 0: 1000 */
	uint64_t seed;                     /* content randomness; 0: from the clock */
	bool no_bursts;                    /* never start an error burst (tests) */
};

enum gen_run_state {
	GEN_RUN_RUNNING,   /* workers are generating */
	GEN_RUN_STOPPED,   /* stopped on request */
	GEN_RUN_COMPLETED, /* its duration ran out */
};

/* A snapshot of a run, for /status. */
struct gen_run_stats {
	enum gen_run_state state;
	struct gen_params params;      /* as started */
	int effective_batch;           /* batch actually used (smaller at low rates) */
	int64_t started_at_ms;         /* wall clock */
	int64_t ended_at_ms;           /* wall clock, 0 while running */
	double elapsed_s;              /* running time so far, or in all */
	int instances;                 /* instances sharing the rate, last known */
	double instance_rate;          /* this instance's share of params.rate */
	double achieved_rate;          /* events/s generated over the last 5 s */
	double average_rate;           /* generated / elapsed_s */
	unsigned long long generated;  /* handed to the sink */
	unsigned long long sent;       /* reported delivered */
	unsigned long long errors;     /* lost: failed sends and failed deliveries */
	unsigned long long rate_limited; /* shed: refused by allow() or a full queue */
	unsigned long long in_flight;  /* handed to the sink, not yet reported */
};

/* Starts the workers.  Returns NULL with a message in err (bad params or
 * no threads). */
struct gen_run *gen_run_start(const struct gen_run_opts *o, char *err, size_t errlen);
/* Stops the workers and waits for them.  Idempotent; deliveries may still
 * be pending afterwards. */
void gen_run_stop(struct gen_run *r);
/* Waits up to timeout_ms (< 0: for ever) until every delivery has been
 * reported.  Returns true when none is pending. */
bool gen_run_drain(struct gen_run *r, int timeout_ms);
/* True once the run has stopped and no delivery is pending: it may be freed. */
bool gen_run_idle(struct gen_run *r);
void gen_run_stats(struct gen_run *r, struct gen_run_stats *out);
/* Stops the run and frees it.  The caller makes sure no delivery report
 * can arrive any more (gen_run_idle, or the sink is gone).  NULL is a no-op. */
void gen_run_free(struct gen_run *r);

/* The sink's completion for the token it was given with an event. */
void gen_run_delivered(void *token, bool ok);

const char *gen_run_state_name(enum gen_run_state s); /* "running", "stopped", "completed" */

/* The batch a run takes from its bucket at a given instance rate: the
 * requested batch, smaller at low rates so that events are not bunched
 * (at least 20 takes per second when the rate allows). */
int gen_effective_batch(int batch_size, double instance_rate);

#endif
