/* run.c - one generation run: paced workers, counters and a controller.
 *
 * Pacing.  All workers of a run share one token bucket (ratelimit.h)
 * filled at this instance's share of the rate.  A worker asks how long
 * until a batch's worth of tokens is there, sleeps that long (in slices,
 * so a stop is noticed), takes the tokens and generates the batch.  The
 * bucket starts empty and holds at most 100 ms of events, so the rate over
 * any second is the target as long as the workers keep up: a worker that
 * overslept or was held up by the sink finds the tokens it missed, but a
 * stall longer than 100 ms is not made up for in a burst.  Up to the
 * machine's limit the achieved rate is therefore the bucket's rate, which
 * is exact over time; above it, the workers simply never wait.
 *
 * Sharing.  The controller thread asks the sink every heartbeat how many
 * instances are running (the generator answers from Redis) and sets the
 * bucket to rate / instances.  It also samples the counters four times a
 * second for the achieved rate over the last five seconds, starts the
 * occasional error burst (one service logging mostly errors for a few
 * seconds) and ends the run when its duration is over.
 *
 * Refusals.  While the sink refuses batches (its breaker is open), a
 * worker sheds what falls due and sleeps a slice between asks, so the
 * shed count is still what the rate asked for but no core is spent on it.
 *
 * Deliveries.  Each batch gets a small tracker that every event of it
 * points to (the sink's token).  A sink with open/send_open/close gets a
 * batch's events between one open and one close on the worker's thread,
 * so it can share its own costs per batch.  A delivery report counts the
 * event sent or failed; the last report of a batch tells the sink how the
 * batch went (the generator feeds its Kafka breaker with that) and frees
 * the tracker.
 * in_flight counts events handed to the sink and not yet reported (while a
 * batch is being handed over it counts the whole batch); it is the last
 * field a report touches, so a run whose in_flight is 0 after
 * its workers stopped can be freed. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "content.h"
#include "run.h"
#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/ratelimit.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

/* Longest single sleep of a worker or the controller, so that a stop
 * request is noticed quickly. */
#define SLICE_US 20000
/* Controller tick, and how often it samples the counters. */
#define TICK_MS 50
#define SAMPLE_MS 250
/* Samples kept: the achieved rate is measured over 5 s. */
#define NSAMPLES 21
/* The bucket holds this much time's worth of events. */
#define BURST_S 0.1
/* An error burst starts on average every BURST_EVERY_MS and lasts 2-6 s. */
#define BURST_EVERY_MS 30000
#define BURST_MIN_MS 2000
#define BURST_SPAN_MS 4000

struct sample {
	int64_t t_us;                 /* monotonic time of the sample */
	unsigned long long generated; /* counter value then */
};

struct gen_run {
	struct gen_params params;       /* as started */
	char *instance_id;              /* written into events */
	struct gen_sink sink;           /* where events go */
	const struct gen_metrics *m;    /* process-wide series, may be NULL */
	int64_t heartbeat_ms;           /* how often peers() is asked */
	uint64_t seed;                  /* content randomness base */
	bool no_bursts;                 /* never start an error burst */

	struct lp_bucket bucket;        /* shared pacing of all workers */
	pthread_t *workers;             /* params.threads threads */
	int nworkers;                   /* how many were started */
	pthread_t controller;           /* ends the run, heartbeats, samples */
	bool controller_started;        /* controller must be joined */
	atomic_bool stop;               /* set to make every thread return */
	int64_t deadline_us;            /* monotonic end, 0 for none */
	int64_t start_us;               /* monotonic start */
	int64_t started_at_ms;          /* wall start */

	_Atomic int effective_batch;    /* events per take at the current share */
	_Atomic int burst_service;      /* service index in an error burst, -1 none */
	_Atomic int64_t burst_until_ms; /* monotonic end of that burst */
	_Atomic unsigned long long seq; /* next event number */
	_Atomic unsigned long long generated;
	_Atomic unsigned long long sent;
	_Atomic unsigned long long errors;
	_Atomic unsigned long long rate_limited;
	_Atomic unsigned long long in_flight;

	pthread_mutex_t mu;             /* guards the fields below */
	enum gen_run_state state;       /* running until the controller ends */
	int64_t end_us;                 /* monotonic end, 0 while running */
	int64_t ended_at_ms;            /* wall end, 0 while running */
	int instances;                  /* instances sharing the rate */
	double instance_rate;           /* rate / instances */
	struct sample samples[NSAMPLES]; /* ring of counter samples */
	int nsamples;                   /* samples in the ring */
	int next_sample;                /* slot of the next sample */
	pthread_mutex_t stop_mu;        /* serialises gen_run_stop */
};

/* The delivery tracker of one batch. */
struct batch {
	struct gen_run *run;   /* owner */
	_Atomic int pending;   /* reports awaited, plus one held by the worker */
	_Atomic int failed;    /* events lost */
	int64_t t0_ms;         /* monotonic time the batch started */
};

const char *gen_run_state_name(enum gen_run_state s)
{
	switch (s) {
	case GEN_RUN_RUNNING: return "running";
	case GEN_RUN_STOPPED: return "stopped";
	case GEN_RUN_COMPLETED: return "completed";
	}
	return "unknown";
}

int gen_effective_batch(int batch_size, double instance_rate)
{
	double cap = instance_rate / 20;

	if (cap < 1)
		cap = 1;
	return batch_size < cap ? batch_size : (int)cap;
}

static void metric_add(struct lp_series *s, double v)
{
	if (s && v != 0)
		lp_series_add(s, v);
}

/* A process-wide series of the run, or NULL. */
#define M(r, field) ((r)->m ? (r)->m->field : NULL)

/* Sets the bucket to this instance's share.  Caller holds r->mu. */
static void set_share(struct gen_run *r, int instances)
{
	double rate = r->params.rate / (instances > 0 ? instances : 1);
	int batch = gen_effective_batch(r->params.batch_size, rate);
	double burst = rate * BURST_S;

	if (burst < batch)
		burst = batch;
	r->instances = instances > 0 ? instances : 1;
	r->instance_rate = rate;
	atomic_store(&r->effective_batch, batch);
	lp_bucket_set_rate(&r->bucket, rate, burst);
}

/* ---- deliveries -------------------------------------------------------- */

static void batch_release(struct batch *b)
{
	struct gen_run *r = b->run;

	if (atomic_fetch_sub(&b->pending, 1) != 1)
		return;
	if (r->sink.batch_done)
		r->sink.batch_done(r->sink.ud, atomic_load(&b->failed) == 0,
				   lp_now_ms() - b->t0_ms);
	free(b);
}

void gen_run_delivered(void *token, bool ok)
{
	struct batch *b = token;
	struct gen_run *r = b->run;

	if (ok) {
		atomic_fetch_add(&r->sent, 1);
		metric_add(M(r, sent), 1);
	} else {
		atomic_fetch_add(&r->errors, 1);
		atomic_fetch_add(&b->failed, 1);
		metric_add(M(r, errors), 1);
	}
	batch_release(b);
	/* Last: once in_flight reaches 0 the run may be freed. */
	atomic_fetch_sub(&r->in_flight, 1);
}

/* ---- workers ----------------------------------------------------------- */

static void sleep_us(int64_t us)
{
	struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

/* Waits until n tokens are taken.  Returns false if the run is over. */
static bool pace(struct gen_run *r, int n)
{
	for (;;) {
		int64_t now = lp_now_us(), wait;

		/* One clock reading, before the deadline, for the whole turn:
		 * no token is ever counted for time after the run's end. */
		if (atomic_load(&r->stop) || (r->deadline_us && now >= r->deadline_us))
			return false;
		wait = lp_bucket_wait_us_at(&r->bucket, n, now);
		if (wait <= 0) {
			if (lp_bucket_take_at(&r->bucket, n, now))
				return true;
			continue; /* another worker took them */
		}
		if (wait > SLICE_US)
			wait = SLICE_US;
		if (r->deadline_us && now + wait > r->deadline_us)
			wait = r->deadline_us - now;
		sleep_us(wait > 0 ? wait : 1);
	}
}

/* Generates and hands over one batch of n events. */
static void send_batch(struct gen_run *r, struct gen_writer *w, struct gen_rng *rng, int n)
{
	struct batch *b = lp_xcalloc(1, sizeof(*b));
	struct gen_event_spec spec = { 0 };
	int64_t now = lp_now_ms();
	int burst = atomic_load(&r->burst_service);
	void *st; /* the sink's state for this batch, or NULL */
	int i, rc;
	int sent = 0;

	if (burst >= 0 && now >= atomic_load(&r->burst_until_ms))
		burst = -1;
	b->run = r;
	b->t0_ms = now;
	spec.size_bytes = (size_t)r->params.size_bytes;
	spec.burst_service = burst;
	spec.instance_id = r->instance_id;
	spec.seq = atomic_fetch_add(&r->seq, (unsigned long long)n);
	/* Counted in for the whole batch at once, and the unsent part taken
	 * off at the end: two atomic adds per batch instead of per event on
	 * counters every worker and the delivery thread share. */
	atomic_store(&b->pending, 1 + n);
	atomic_fetch_add(&r->in_flight, (unsigned long long)n);
	st = r->sink.open ? r->sink.open(r->sink.ud, b) : NULL;
	for (i = 0; i < n; i++, spec.seq++) {
		const struct gen_service *svc;

		spec.now_ms = lp_wall_ms();
		svc = gen_event_write(w, rng, &spec);
		if (st)
			rc = r->sink.send_open(st, svc->name, strlen(svc->name), w->out.buf,
					       w->out.len);
		else
			rc = r->sink.send(r->sink.ud, svc->name, strlen(svc->name), w->out.buf,
					  w->out.len, b);
		if (rc == 0) {
			sent++;
			continue;
		}
		if (rc == -ENOBUFS) {
			/* The sink is full: shed the rest of the batch. */
			atomic_fetch_add(&r->rate_limited, (unsigned long long)(n - i));
			metric_add(M(r, rate_limited), n - i);
			atomic_fetch_add(&b->failed, 1);
			break;
		}
		atomic_fetch_add(&r->errors, 1);
		atomic_fetch_add(&b->failed, 1);
		metric_add(M(r, errors), 1);
	}
	if (st)
		r->sink.close(st);
	if (sent < n) {
		atomic_fetch_sub(&b->pending, n - sent);
		atomic_fetch_sub(&r->in_flight, (unsigned long long)(n - sent));
	}
	atomic_fetch_add(&r->generated, (unsigned long long)sent);
	metric_add(M(r, generated), sent);
	batch_release(b);
}

/* The sink refused a batch of n (its breaker is open).  Sheds it, and
 * the events falling due in the next slice with it, then sleeps that
 * slice: asking again at once would spin through the bucket (at a high
 * rate it holds 100 ms of events) and take a core from the rest of the
 * process while nothing can be sent anyway. */
static void shed_while_refused(struct gen_run *r, int n)
{
	int64_t wait = SLICE_US, left, now;
	double due;

	/* Not past the end of the run: what falls due after it is not due. */
	if (r->deadline_us) {
		left = r->deadline_us - lp_now_us();
		if (left < wait)
			wait = left;
	}
	if (wait > 0)
		sleep_us(wait);
	/* A loaded machine wakes us late: count up to the deadline only. */
	now = lp_now_us();
	if (r->deadline_us && now > r->deadline_us)
		now = r->deadline_us;
	due = floor(lp_bucket_available_at(&r->bucket, now));
	if (due > 0 && !lp_bucket_take_at(&r->bucket, due, now))
		due = 0; /* another worker took them and counts them */
	atomic_fetch_add(&r->rate_limited, (unsigned long long)n + (unsigned long long)due);
	metric_add(M(r, rate_limited), (double)n + due);
}

/* Hands each worker its number. */
struct worker_arg {
	struct gen_run *run;
	int index;
};

static void *worker_main(void *arg)
{
	struct worker_arg *wa = arg;
	struct gen_run *r = wa->run;
	struct gen_writer w;
	struct gen_rng rng;

	gen_rng_seed(&rng, r->seed + (uint64_t)wa->index * 0x9e3779b97f4a7c15ULL);
	free(wa);
	gen_writer_init(&w);
	for (;;) {
		int n = atomic_load(&r->effective_batch);

		if (!pace(r, n))
			break;
		if (r->sink.allow && !r->sink.allow(r->sink.ud)) {
			shed_while_refused(r, n);
			continue;
		}
		send_batch(r, &w, &rng, n);
	}
	gen_writer_release(&w);
	return NULL;
}

/* ---- controller -------------------------------------------------------- */

/* Adds a sample of the counters and returns the rate over the ring.
 * Caller holds r->mu. */
static double sample(struct gen_run *r, int64_t now_us)
{
	struct sample *s = &r->samples[r->next_sample];
	const struct sample *oldest;

	s->t_us = now_us;
	s->generated = atomic_load(&r->generated);
	r->next_sample = (r->next_sample + 1) % NSAMPLES;
	if (r->nsamples < NSAMPLES)
		r->nsamples++;
	oldest = &r->samples[(r->next_sample + NSAMPLES - r->nsamples) % NSAMPLES];
	if (s->t_us <= oldest->t_us)
		return 0;
	return (double)(s->generated - oldest->generated) * 1e6 / (double)(s->t_us - oldest->t_us);
}

static void maybe_burst(struct gen_run *r, struct gen_rng *rng, int64_t now_ms)
{
	if (r->no_bursts || now_ms < atomic_load(&r->burst_until_ms))
		return;
	atomic_store(&r->burst_service, -1);
	if (gen_rng_below(rng, BURST_EVERY_MS / TICK_MS) != 0)
		return;
	atomic_store(&r->burst_until_ms, now_ms + BURST_MIN_MS + gen_rng_below(rng, BURST_SPAN_MS));
	atomic_store(&r->burst_service, (int)gen_rng_below(rng, (uint32_t)gen_nservices));
}

static void *controller_main(void *arg)
{
	struct gen_run *r = arg;
	struct gen_rng rng;
	int64_t next_beat = lp_now_ms() + r->heartbeat_ms;
	int64_t next_sample = lp_now_ms() + SAMPLE_MS;
	bool completed = false;
	double rate;
	int i;

	gen_rng_seed(&rng, r->seed ^ 0xc0ffee);
	while (!atomic_load(&r->stop)) {
		int64_t now = lp_now_ms();

		if (r->deadline_us && lp_now_us() >= r->deadline_us) {
			completed = true;
			break;
		}
		if (now >= next_beat && r->sink.peers) {
			int n = r->sink.peers(r->sink.ud);

			pthread_mutex_lock(&r->mu);
			if (n != r->instances)
				set_share(r, n);
			pthread_mutex_unlock(&r->mu);
			next_beat = now + r->heartbeat_ms;
		}
		if (now >= next_sample) {
			pthread_mutex_lock(&r->mu);
			rate = sample(r, lp_now_us());
			pthread_mutex_unlock(&r->mu);
			if (M(r, rate_current))
				lp_series_set(M(r, rate_current), rate);
			next_sample += SAMPLE_MS;
		}
		maybe_burst(r, &rng, now);
		lp_sleep_ms(TICK_MS, &r->stop);
	}
	atomic_store(&r->stop, true);
	for (i = 0; i < r->nworkers; i++)
		pthread_join(r->workers[i], NULL);
	pthread_mutex_lock(&r->mu);
	r->state = completed ? GEN_RUN_COMPLETED : GEN_RUN_STOPPED;
	r->end_us = completed ? r->deadline_us : lp_now_us();
	r->ended_at_ms = lp_wall_ms();
	pthread_mutex_unlock(&r->mu);
	if (M(r, rate_current))
		lp_series_set(M(r, rate_current), 0);
	if (M(r, rate_target))
		lp_series_set(M(r, rate_target), 0);
	if (r->sink.finished)
		r->sink.finished(r->sink.ud);
	return NULL;
}

/* ---- life cycle -------------------------------------------------------- */

struct gen_run *gen_run_start(const struct gen_run_opts *o, char *err, size_t errlen)
{
	struct gen_param_error pe;
	struct gen_run *r;
	int i, rc;

	if (gen_params_check(&o->params, &pe) < 0) {
		snprintf(err, errlen, "%s", pe.message);
		return NULL;
	}
	if (!o->sink.send) {
		snprintf(err, errlen, "no sink to send events to");
		return NULL;
	}
	r = lp_xcalloc(1, sizeof(*r));
	r->params = o->params;
	r->instance_id = lp_xstrdup(o->instance_id ? o->instance_id : "");
	r->sink = o->sink;
	r->m = o->metrics;
	r->heartbeat_ms = o->heartbeat_ms > 0 ? o->heartbeat_ms : 1000;
	r->seed = o->seed ? o->seed : (uint64_t)lp_now_us() ^ ((uint64_t)getpid() << 32);
	r->no_bursts = o->no_bursts;
	atomic_init(&r->burst_service, -1);
	pthread_mutex_init(&r->mu, NULL);
	pthread_mutex_init(&r->stop_mu, NULL);
	r->state = GEN_RUN_RUNNING;

	/* The share is known before the first event, so that a second
	 * instance does not begin at the full rate. */
	lp_bucket_init(&r->bucket, 1, 1);
	set_share(r, o->sink.peers ? o->sink.peers(o->sink.ud) : 1);
	/* Start empty at the run's own clock: the first events are due
	 * after 1/rate, not at once, and none before start_us. */
	r->start_us = lp_now_us();
	lp_bucket_take_at(&r->bucket, lp_bucket_available_at(&r->bucket, r->start_us),
			  r->start_us);
	r->started_at_ms = lp_wall_ms();
	r->samples[0].t_us = r->start_us;
	r->nsamples = 1;
	r->next_sample = 1;
	if (r->params.duration_s > 0)
		r->deadline_us = r->start_us + (int64_t)(r->params.duration_s * 1e6);
	r->workers = lp_xcalloc((size_t)r->params.threads, sizeof(*r->workers));
	for (i = 0; i < r->params.threads; i++) {
		struct worker_arg *wa = lp_xmalloc(sizeof(*wa));

		wa->run = r;
		wa->index = i;
		rc = pthread_create(&r->workers[i], NULL, worker_main, wa);
		if (rc != 0) {
			free(wa);
			snprintf(err, errlen, "cannot start worker thread: %s", strerror(rc));
			goto fail;
		}
		r->nworkers++;
	}
	rc = pthread_create(&r->controller, NULL, controller_main, r);
	if (rc != 0) {
		snprintf(err, errlen, "cannot start controller thread: %s", strerror(rc));
		goto fail;
	}
	r->controller_started = true;
	if (M(r, rate_target))
		lp_series_set(M(r, rate_target), r->params.rate);
	return r;
fail:
	atomic_store(&r->stop, true);
	for (i = 0; i < r->nworkers; i++)
		pthread_join(r->workers[i], NULL);
	r->nworkers = 0;
	gen_run_drain(r, -1);
	gen_run_free(r);
	return NULL;
}

void gen_run_stop(struct gen_run *r)
{
	pthread_mutex_lock(&r->stop_mu);
	atomic_store(&r->stop, true);
	if (r->controller_started) {
		pthread_join(r->controller, NULL);
		r->controller_started = false;
	}
	pthread_mutex_unlock(&r->stop_mu);
}

bool gen_run_drain(struct gen_run *r, int timeout_ms)
{
	int64_t end = lp_now_ms() + timeout_ms;

	while (atomic_load(&r->in_flight) > 0) {
		if (timeout_ms >= 0 && lp_now_ms() >= end)
			return false;
		sleep_us(2000);
	}
	return true;
}

bool gen_run_idle(struct gen_run *r)
{
	bool ended;

	pthread_mutex_lock(&r->mu);
	ended = r->state != GEN_RUN_RUNNING;
	pthread_mutex_unlock(&r->mu);
	return ended && atomic_load(&r->in_flight) == 0;
}

void gen_run_stats(struct gen_run *r, struct gen_run_stats *out)
{
	int64_t now = lp_now_us();

	memset(out, 0, sizeof(*out));
	out->params = r->params;
	out->effective_batch = atomic_load(&r->effective_batch);
	out->started_at_ms = r->started_at_ms;
	out->generated = atomic_load(&r->generated);
	out->sent = atomic_load(&r->sent);
	out->errors = atomic_load(&r->errors);
	out->rate_limited = atomic_load(&r->rate_limited);
	out->in_flight = atomic_load(&r->in_flight);

	pthread_mutex_lock(&r->mu);
	out->state = r->state;
	out->ended_at_ms = r->ended_at_ms;
	out->instances = r->instances;
	out->instance_rate = r->instance_rate;
	out->elapsed_s = (double)((r->end_us ? r->end_us : now) - r->start_us) / 1e6;
	if (r->state == GEN_RUN_RUNNING && r->nsamples > 0) {
		/* The rate from the oldest sample in the ring up to now. */
		const struct sample *o =
			&r->samples[(r->next_sample + NSAMPLES - r->nsamples) % NSAMPLES];

		if (now > o->t_us)
			out->achieved_rate = (double)(out->generated - o->generated) * 1e6 /
					     (double)(now - o->t_us);
	}
	pthread_mutex_unlock(&r->mu);
	if (out->elapsed_s > 0)
		out->average_rate = (double)out->generated / out->elapsed_s;
}

void gen_run_free(struct gen_run *r)
{
	if (!r)
		return;
	gen_run_stop(r);
	lp_bucket_release(&r->bucket);
	pthread_mutex_destroy(&r->mu);
	pthread_mutex_destroy(&r->stop_mu);
	free(r->workers);
	free(r->instance_id);
	free(r);
}
