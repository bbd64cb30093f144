/* bench_submit.c - the producer's submission core at a fixed number of
 * requests in flight, without HTTP: what an event-driven front in front of
 * producer_submit can get from Kafka with the producer's client settings.
 *
 * Usage: bench_submit SECONDS WINDOW one|batch
 *   Settings come from the environment like the service's (LOGPIPE_*, e.g.
 *   LOGPIPE_KAFKA_BROKERS, LOGPIPE_KAFKA_LINGER_MS, LOGPIPE_HTTP_LISTEN).
 *   One thread submits POST /api/logs bodies (one: the ingest bench's event;
 *   batch: 100 of them to /api/logs/batch), keeping WINDOW submissions in
 *   flight, for SECONDS.  It prints one line:
 *     submit window=W one: N ev/s  p50 X ms  p99 Y ms  cpu Z us/ev  non-2xx K
 *   (latency from producer_submit to done; CPU of the whole process, every
 *   thread, per accepted event).
 * Built on demand: make build/producer/tests/bench_submit. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "logpipe/buf.h"
#include "logpipe/config.h"
#include "logpipe/log.h"
#include "logpipe/util.h"
#include "../producer.h"

#include "logpipe/banned.h"

static const char BODY[] = "{\"level\":\"INFO\",\"message\":\"benchmark event with a typical "
			   "length of text\",\"service\":\"bench\",\"host\":\"web-1\"}";

/* One submission's timing. */
struct slot {
	int64_t t0_us;  /* submitted */
	int status;     /* the answer's */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long inflight;        /* submissions not answered yet */
static long answered, bad;   /* answered in all; not 2xx */
static double *lat;          /* latencies in ms of answered ones */
static size_t nlat, caplat;

static void on_done(void *ud, const struct producer_reply *r)
{
	struct slot *s = ud;
	double ms = (double)(lp_now_us() - s->t0_us) / 1000.0;

	pthread_mutex_lock(&mu);
	if (r->status / 100 != 2)
		bad++;
	if (nlat == caplat) {
		caplat = caplat ? caplat * 2 : 65536;
		lat = lp_xrealloc(lat, caplat * sizeof(*lat));
	}
	lat[nlat++] = ms;
	answered++;
	inflight--;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
	free(s);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
	struct producer_settings s;
	struct producer *p;
	struct lp_buf batch = LP_BUF_INIT;
	struct producer_input in = { 0 };
	char err[256];
	int secs, window, per;
	int64_t t0, end;
	double c0, c1, dur;
	long sent = 0, ok;

	if (argc != 4 || (strcmp(argv[3], "one") != 0 && strcmp(argv[3], "batch") != 0)) {
		fprintf(stderr, "usage: bench_submit SECONDS WINDOW one|batch\n");
		return 2;
	}
	secs = atoi(argv[1]);
	window = atoi(argv[2]);
	lp_log_init("producer", LP_LOG_WARN);
	if (lp_config_load(producer_options, &s, NULL, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench_submit: %s\n", err);
		return 2;
	}
	p = producer_start(&s, err, sizeof(err));
	if (!p) {
		fprintf(stderr, "bench_submit: %s\n", err);
		return 1;
	}
	if (strcmp(argv[3], "one") == 0) {
		in.route = PRODUCER_ONE;
		in.body = BODY;
		in.len = sizeof(BODY) - 1;
		per = 1;
	} else {
		lp_buf_addch(&batch, '[');
		for (int i = 0; i < 100; i++) {
			if (i)
				lp_buf_addch(&batch, ',');
			lp_buf_adds(&batch, BODY);
		}
		lp_buf_addch(&batch, ']');
		in.route = PRODUCER_BATCH;
		in.body = batch.buf;
		in.len = batch.len;
		per = 100;
	}
	in.content_type = "application/json";

	/* A second of warm-up (metadata, connections), not counted. */
	for (int phase = 0; phase < 2; phase++) {
		t0 = lp_now_us();
		end = lp_now_ms() + (phase == 0 ? 1000 : (int64_t)secs * 1000);
		c0 = cpu_s();
		pthread_mutex_lock(&mu);
		answered = bad = 0;
		nlat = 0;
		pthread_mutex_unlock(&mu);
		sent = 0;
		while (lp_now_ms() < end) {
			struct slot *sl = lp_xcalloc(1, sizeof(*sl));

			pthread_mutex_lock(&mu);
			while (inflight >= window)
				pthread_cond_wait(&cv, &mu);
			inflight++;
			pthread_mutex_unlock(&mu);
			sl->t0_us = lp_now_us();
			producer_submit(p, &in, on_done, sl);
			sent++;
		}
		pthread_mutex_lock(&mu);
		while (inflight > 0)
			pthread_cond_wait(&cv, &mu);
		pthread_mutex_unlock(&mu);
		c1 = cpu_s();
		dur = (double)(lp_now_us() - t0) / 1e6;
	}
	ok = answered - bad;
	qsort(lat, nlat, sizeof(*lat), cmp_double);
	printf("submit window=%d %s: %.0f ev/s  p50 %.2f ms  p99 %.2f ms  cpu %.1f us/ev  "
	       "non-2xx %ld  (%ld requests)\n",
	       window, argv[3], (double)(ok * per) / dur, nlat ? lat[nlat / 2] : 0.0,
	       nlat ? lat[(size_t)((double)nlat * 0.99)] : 0.0,
	       ok ? 1e6 * (c1 - c0) / (double)(ok * per) : 0.0, bad, sent);
	producer_stop(p);
	lp_config_release(producer_options, &s);
	lp_buf_release(&batch);
	free(lat);
	return 0;
}
