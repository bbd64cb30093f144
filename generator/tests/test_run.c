/* test_run.c - pacing, sharing, shedding and delivery accounting of a run,
 * against a fake sink (no Kafka). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../run.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

/* A sink that records what it is given.  Deliveries are reported at once,
 * or held back until release() when hold is set. */
struct fake {
	int send_rc;                 /* what send answers */
	bool allow;                  /* what allow answers */
	bool hold;                   /* keep tokens instead of reporting */
	int peers;                   /* what peers answers */
	_Atomic unsigned long sends; /* events given */
	_Atomic unsigned long bytes; /* their total size */
	_Atomic int batches_ok, batches_failed;
	_Atomic int bad_keys;        /* keys that are not a service name */
	_Atomic int finished;        /* calls of finished() */
	_Atomic unsigned long asks;  /* calls of allow() */
	bool batched;                /* offer open/send_open/close */
	_Atomic int opens, closes;   /* calls of open() and close() */
	_Atomic int wrong_thread;    /* send_open or close off open's thread */
	pthread_mutex_t mu;          /* guards held */
	void **held;
	size_t nheld, cap;
};

static bool fake_allow(void *ud)
{
	struct fake *f = ud;

	atomic_fetch_add(&f->asks, 1);
	return f->allow;
}

static int fake_send(void *ud, const char *key, size_t keylen, const char *val, size_t vallen,
		     void *token)
{
	struct fake *f = ud;

	if (keylen == 0 || key[keylen - 1] != 'e') /* not "...-service" */
		atomic_fetch_add(&f->bad_keys, 1);
	if (f->send_rc != 0)
		return f->send_rc;
	atomic_fetch_add(&f->sends, 1);
	atomic_fetch_add(&f->bytes, vallen);
	if (!f->hold) {
		gen_run_delivered(token, true);
		return 0;
	}
	pthread_mutex_lock(&f->mu);
	if (f->nheld == f->cap) {
		f->cap = f->cap ? 2 * f->cap : 1024;
		f->held = lp_xrealloc(f->held, f->cap * sizeof(*f->held));
	}
	f->held[f->nheld++] = token;
	pthread_mutex_unlock(&f->mu);
	return 0;
}

/* The state of one batch opened through the batched sink. */
struct fake_batch {
	struct fake *f;
	void *token;
	pthread_t thread; /* the worker that opened it */
};

static void *fake_open(void *ud, void *token)
{
	struct fake *f = ud;
	struct fake_batch *b = lp_xmalloc(sizeof(*b));

	b->f = f;
	b->token = token;
	b->thread = pthread_self();
	atomic_fetch_add(&f->opens, 1);
	return b;
}

static int fake_send_open(void *state, const char *key, size_t keylen, const char *val,
			  size_t vallen)
{
	struct fake_batch *b = state;

	if (!pthread_equal(b->thread, pthread_self()))
		atomic_fetch_add(&b->f->wrong_thread, 1);
	return fake_send(b->f, key, keylen, val, vallen, b->token);
}

static void fake_close(void *state)
{
	struct fake_batch *b = state;

	if (!pthread_equal(b->thread, pthread_self()))
		atomic_fetch_add(&b->f->wrong_thread, 1);
	atomic_fetch_add(&b->f->closes, 1);
	free(b);
}

static void fake_batch_done(void *ud, bool ok, int64_t elapsed_ms)
{
	struct fake *f = ud;

	atomic_fetch_add(ok ? &f->batches_ok : &f->batches_failed, 1);
}

static void fake_finished(void *ud)
{
	atomic_fetch_add(&((struct fake *)ud)->finished, 1);
}

static int fake_peers(void *ud)
{
	return ((struct fake *)ud)->peers;
}

/* Reports every held delivery, every other one failed. */
static void release(struct fake *f)
{
	size_t i;

	pthread_mutex_lock(&f->mu);
	for (i = 0; i < f->nheld; i++)
		gen_run_delivered(f->held[i], i % 2 == 0);
	f->nheld = 0;
	pthread_mutex_unlock(&f->mu);
}

static void fake_init(struct fake *f)
{
	memset(f, 0, sizeof(*f));
	f->allow = true;
	f->peers = 1;
	pthread_mutex_init(&f->mu, NULL);
}

static void fake_release(struct fake *f)
{
	pthread_mutex_destroy(&f->mu);
	free(f->held);
}

static struct gen_run *start(struct fake *f, double rate, int threads, int batch,
			     double duration_s, long long size)
{
	struct gen_run_opts o = { 0 };
	struct gen_run *r;
	char err[200];

	o.params.rate = rate;
	o.params.threads = threads;
	o.params.batch_size = batch;
	o.params.duration_s = duration_s;
	o.params.size_bytes = size;
	o.instance_id = "test";
	o.sink.allow = fake_allow;
	o.sink.send = fake_send;
	if (f->batched) {
		o.sink.open = fake_open;
		o.sink.send_open = fake_send_open;
		o.sink.close = fake_close;
	}
	o.sink.batch_done = fake_batch_done;
	o.sink.peers = fake_peers;
	o.sink.finished = fake_finished;
	o.sink.ud = f;
	o.heartbeat_ms = 100;
	o.seed = 99;
	r = gen_run_start(&o, err, sizeof(err));
	if (!r)
		fail_msg("cannot start: %s", err);
	return r;
}

/* Waits (bounded) for a run with a duration to complete by itself. */
static void wait_completed(struct gen_run *r, double duration_s)
{
	struct gen_run_stats st;
	int64_t end = lp_now_ms() + (int64_t)(duration_s * 1000) + 3000;

	do {
		lp_sleep_ms(20, NULL);
		gen_run_stats(r, &st);
	} while (st.state == GEN_RUN_RUNNING && lp_now_ms() < end);
	assert_int_equal(st.state, GEN_RUN_COMPLETED);
}

/*
 * Counts against the clock.  The bucket starts empty and fills at the rate,
 * so a run never generates more than rate x time: that bound is exact and
 * checked as such.  Fewer is what a busy machine causes (a worker stalled
 * longer than the bucket's 100 ms does not make the rest up in a burst), so
 * the lower bounds are loose, enough to catch a pacer that runs at a
 * fraction of the rate; how exactly the rate is held is measured by
 * tests/bench/generator_bench.sh (docs/benchmarks.md).
 */
#define AT_LEAST(want) ((want) * 0.8)

/* Runs at rate for duration: never more than rate x duration (one event
 * more: the last one may fall due exactly at the deadline), and most of it. */
static void check_rate(double rate, int threads, int batch, double duration)
{
	struct fake f;
	struct gen_run_stats st;
	struct gen_run *r;
	double want = rate * duration;

	fake_init(&f);
	r = start(&f, rate, threads, batch, duration, 512);
	wait_completed(r, duration);
	assert_true(gen_run_drain(r, 1000));
	gen_run_stats(r, &st);
	if ((double)st.generated > want + 1 || (double)st.generated < AT_LEAST(want))
		fail_msg("rate %.0f for %.1f s: %llu events, %.0f expected", rate, duration,
			 st.generated, want);
	assert_int_equal(st.sent, st.generated);
	assert_int_equal(st.errors, 0);
	assert_int_equal(st.rate_limited, 0);
	assert_int_equal(st.in_flight, 0);
	assert_int_equal(atomic_load(&f.bytes), atomic_load(&f.sends) * 512);
	assert_int_equal(atomic_load(&f.bad_keys), 0);
	assert_int_equal(atomic_load(&f.finished), 1);
	assert_true(fabs(st.elapsed_s - duration) < 0.01);
	assert_true(gen_run_idle(r));
	gen_run_free(r);
	fake_release(&f);
}

static void test_rate_1000(void **state)
{
	check_rate(1000, 4, 10, 1.5);
}

static void test_rate_20000(void **state)
{
	check_rate(20000, 4, 10, 1.0);
}

static void test_low_rate_not_bunched(void **state)
{
	/* 20 events/s with batches of 10: taken one by one. */
	check_rate(20, 2, 10, 1.5);
	assert_int_equal(gen_effective_batch(10, 20), 1);
	assert_int_equal(gen_effective_batch(10, 100), 5);
	assert_int_equal(gen_effective_batch(10, 1000), 10);
	assert_int_equal(gen_effective_batch(10, 0.5), 1);
}

/* Runs to the end of its duration against f; fills *st and frees the run. */
static void run_through(struct fake *f, double rate, int threads, double duration_s,
			struct gen_run_stats *st)
{
	struct gen_run *r = start(f, rate, threads, 10, duration_s, 300);

	wait_completed(r, duration_s);
	assert_true(gen_run_drain(r, 1000));
	gen_run_stats(r, st);
	gen_run_free(r);
}

/* Two instances share the rate: this one runs at half. */
static void test_share(void **state)
{
	struct fake f;
	struct gen_run_stats st;

	fake_init(&f);
	f.peers = 2;
	run_through(&f, 4000, 2, 1.0, &st);
	assert_int_equal(st.instances, 2);
	assert_true(st.instance_rate == 2000);
	assert_in_range(st.generated, AT_LEAST(2000), 2001);
	fake_release(&f);
}

/* A breaker that refuses sheds the batches: nothing generated. */
static void test_refused_batches_are_shed(void **state)
{
	struct fake f;
	struct gen_run_stats st;

	fake_init(&f);
	f.allow = false;
	run_through(&f, 1000, 2, 0.5, &st);
	assert_int_equal(st.generated, 0);
	assert_int_equal(atomic_load(&f.sends), 0);
	assert_in_range(st.rate_limited, AT_LEAST(500), 501);
	fake_release(&f);
}

/* While the sink refuses, the workers do not spin: at a rate whose bucket
 * holds 100,000 events they ask once per slice (20 ms) each, not once per
 * batch, and still count everything due as shed. */
static void test_refused_does_not_spin(void **state)
{
	struct fake f;
	struct gen_run_stats st;
	unsigned long asks;

	fake_init(&f);
	f.allow = false;
	run_through(&f, 1000000, 2, 0.5, &st);
	asks = atomic_load(&f.asks);
	/* 2 threads x 0.5 s / 20 ms = 50 asks; before, one per batch of 10:
	 * 50,000. */
	if (asks > 200)
		fail_msg("allow() asked %lu times in 0.5 s", asks);
	assert_int_equal(st.generated, 0);
	/* The bucket fills from the run's start to its deadline and no
	 * further, however late a loaded machine wakes the workers. */
	if ((double)st.rate_limited < AT_LEAST(500000) || st.rate_limited > 500000)
		fail_msg("%llu shed, 500000 due", st.rate_limited);
	fake_release(&f);
}

/* A full queue sheds the rest of the batch; other failures are errors. */
static void test_send_failures(void **state)
{
	struct fake f;
	struct gen_run_stats st;

	fake_init(&f);
	f.send_rc = -ENOBUFS;
	run_through(&f, 1000, 1, 0.3, &st);
	assert_int_equal(st.generated, 0);
	assert_int_equal(st.errors, 0);
	assert_in_range(st.rate_limited, AT_LEAST(300), 301);
	assert_int_equal(atomic_load(&f.batches_ok), 0);
	assert_in_range(atomic_load(&f.batches_failed), AT_LEAST(30), 31);
	fake_release(&f);

	fake_init(&f);
	f.send_rc = -EIO;
	run_through(&f, 1000, 1, 0.3, &st);
	assert_int_equal(st.generated, 0);
	assert_in_range(st.errors, AT_LEAST(300), 301);
	assert_int_equal(st.rate_limited, 0);
	fake_release(&f);
}

/* A sink with open/send_open/close gets every event of a batch through
 * them, on the worker's thread, one open and one close per batch, also
 * when a full queue cuts the batch short; the counts are those of send. */
static void test_batched_sink(void **state)
{
	struct fake f;
	struct gen_run_stats st;

	fake_init(&f);
	f.batched = true;
	run_through(&f, 20000, 4, 0.5, &st);
	assert_true(st.generated > 0);
	assert_int_equal(st.sent, st.generated);
	assert_int_equal(atomic_load(&f.sends), st.generated);
	assert_int_equal(st.in_flight, 0);
	assert_true(atomic_load(&f.opens) > 0);
	assert_int_equal(atomic_load(&f.closes), atomic_load(&f.opens));
	assert_int_equal(atomic_load(&f.opens),
			 atomic_load(&f.batches_ok) + atomic_load(&f.batches_failed));
	assert_int_equal(atomic_load(&f.wrong_thread), 0);
	assert_int_equal(atomic_load(&f.bad_keys), 0);
	fake_release(&f);

	fake_init(&f);
	f.batched = true;
	f.send_rc = -ENOBUFS;
	run_through(&f, 1000, 1, 0.3, &st);
	assert_int_equal(st.generated, 0);
	assert_in_range(st.rate_limited, AT_LEAST(300), 301);
	assert_int_equal(atomic_load(&f.closes), atomic_load(&f.opens));
	assert_int_equal(atomic_load(&f.batches_failed), atomic_load(&f.opens));
	fake_release(&f);
}

/* Waits (bounded, 30 s) until the run generated at least n events and has
 * a measured rate; fills *st. */
static void wait_stats(struct gen_run *r, struct gen_run_stats *st, unsigned long long n)
{
	int64_t end = lp_now_ms() + 30000;

	for (;;) {
		gen_run_stats(r, st);
		if (st->generated >= n && st->achieved_rate > 0)
			return;
		if (lp_now_ms() >= end)
			fail_msg("after 30 s: %llu events, achieved rate %.0f", st->generated,
				 st->achieved_rate);
		lp_sleep_ms(20, NULL);
	}
}

/* Sent counts only delivered events; a stopped run is idle only once
 * every report is in. */
static void test_stop_and_late_deliveries(void **state)
{
	struct fake f;
	struct gen_run_stats st;
	struct gen_run *r;

	fake_init(&f);
	f.hold = true;
	r = start(&f, 2000, 2, 10, 0, 300);
	/* Running: events and a measured rate, however long that takes here;
	 * never ahead of the rate (a batch per worker for the reads' order). */
	wait_stats(r, &st, 200);
	assert_int_equal(st.state, GEN_RUN_RUNNING);
	assert_true(st.achieved_rate > 0);
	if ((double)st.generated > 2000 * st.elapsed_s + 2 * 10)
		fail_msg("%llu events in %.3f s at 2000/s", st.generated, st.elapsed_s);
	gen_run_stop(r);
	gen_run_stop(r); /* idempotent */
	assert_int_equal(atomic_load(&f.finished), 1);
	gen_run_stats(r, &st);
	assert_int_equal(st.state, GEN_RUN_STOPPED);
	assert_true(st.generated > 0);
	assert_int_equal(st.sent, 0);
	assert_int_equal(st.in_flight, st.generated);
	assert_false(gen_run_idle(r));
	assert_false(gen_run_drain(r, 50));
	release(&f);
	assert_true(gen_run_drain(r, 0));
	assert_true(gen_run_idle(r));
	gen_run_stats(r, &st);
	assert_int_equal(st.sent + st.errors, st.generated);
	assert_int_equal(st.sent, (st.generated + 1) / 2);
	assert_true(atomic_load(&f.batches_failed) > 0);
	assert_int_equal(st.achieved_rate, 0);
	gen_run_free(r);
	fake_release(&f);
}

static void test_bad_params(void **state)
{
	struct gen_run_opts o = { 0 };
	char err[200];

	o.params.rate = 0;
	o.params.threads = 1;
	o.params.batch_size = 1;
	o.params.size_bytes = 300;
	o.sink.send = fake_send;
	assert_null(gen_run_start(&o, err, sizeof(err)));
	assert_non_null(strstr(err, "rate"));
	gen_run_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rate_1000),
		cmocka_unit_test(test_rate_20000),
		cmocka_unit_test(test_low_rate_not_bunched),
		cmocka_unit_test(test_share),
		cmocka_unit_test(test_refused_batches_are_shed),
		cmocka_unit_test(test_refused_does_not_spin),
		cmocka_unit_test(test_send_failures),
		cmocka_unit_test(test_batched_sink),
		cmocka_unit_test(test_stop_and_late_deliveries),
		cmocka_unit_test(test_bad_params),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
