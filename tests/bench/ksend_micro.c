/* ksend_micro.c - CPU time per message of the two ways to hand messages to
 * lp_kproducer: lp_kproducer_send one by one (a lock pair, a topic lookup
 * by name and a delivery record per message) and an lp_kbatch per 100
 * messages (one of each per batch), as the generator's workers send.
 *
 * THREADS threads (4, as the generator's bench) each send MSGS 256-byte
 * keyed messages per round, through librdkafka's in-process mock cluster
 * (one broker, 6 partitions) or a real broker (argv[3]), lz4, with
 * lp_kproducer's own settings (idempotent, acks=all, linger.ms=5); a round
 * ends when every message is reported.  Rounds alternate the two modes.
 * Per message: the sending threads' CPU (CLOCK_THREAD_CPUTIME_ID, so other
 * load on the machine moves it little) and the whole process's
 * (getrusage: librdkafka's threads, the delivery reports and, with the
 * mock cluster, the broker too).
 *
 * After make:
 *   cc -O2 -Icommon/include -o /tmp/ksend_micro tests/bench/ksend_micro.c \
 *      build/liblogpipe.a $(pkg-config --cflags --libs rdkafka jansson) \
 *      -luuid -lm -pthread
 *   /tmp/ksend_micro [ROUNDS] [MSGS] [BROKERS] */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "logpipe/kafka.h"

#include <librdkafka/rdkafka_mock.h>

#define THREADS 4
#define BATCH 100
#define SIZE 256
#define TOPIC "ksend-micro"

static struct lp_kproducer *kp;
static atomic_long reported, failed;
static int msgs = 50000;

static void done(void *opaque, rd_kafka_resp_err_t err, int32_t partition, int64_t offset)
{
	(void)opaque;
	(void)partition;
	(void)offset;
	if (err)
		atomic_fetch_add(&failed, 1);
	atomic_fetch_add(&reported, 1);
}

static double thread_cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double proc_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

struct worker {
	pthread_t t;
	int index;
	int batched;   /* lp_kbatch per BATCH, or lp_kproducer_send each */
	double cpu_s;  /* this thread's CPU for its sends */
	long sent;     /* enqueued */
};

static void *work(void *arg)
{
	struct worker *w = arg;
	char val[SIZE], key[16];
	struct lp_kbatch b;
	double c0 = thread_cpu_s();
	int i, j;

	memset(val, 'x', sizeof(val));
	for (i = 0; i < msgs; i += BATCH) {
		if (w->batched)
			lp_kbatch_begin(&b, kp, TOPIC, done, NULL);
		for (j = i; j < i + BATCH && j < msgs; j++) {
			int n = snprintf(key, sizeof(key), "svc-%d", (j * 7 + w->index) % 13);
			int rc;

			memcpy(val, key, (size_t)n); /* a different value each time */
			if (w->batched)
				rc = lp_kbatch_send(&b, key, (size_t)n, val, sizeof(val), 1000);
			else
				rc = lp_kproducer_send(kp, TOPIC, key, (size_t)n, val, sizeof(val),
						       NULL, 1000, done, NULL);
			if (rc == 0)
				w->sent++;
		}
		if (w->batched)
			lp_kbatch_end(&b);
	}
	w->cpu_s = thread_cpu_s() - c0;
	return NULL;
}

static void round_once(int batched, double *send_us, double *proc_us)
{
	struct worker ws[THREADS];
	long sent = 0;
	double c0 = proc_cpu_s(), send_cpu = 0;
	struct timespec nap = { 0, 2000000 };
	int i;

	atomic_store(&reported, 0);
	memset(ws, 0, sizeof(ws));
	for (i = 0; i < THREADS; i++) {
		ws[i].index = i;
		ws[i].batched = batched;
		pthread_create(&ws[i].t, NULL, work, &ws[i]);
	}
	for (i = 0; i < THREADS; i++) {
		pthread_join(ws[i].t, NULL);
		sent += ws[i].sent;
		send_cpu += ws[i].cpu_s;
	}
	while (atomic_load(&reported) < sent)
		nanosleep(&nap, NULL);
	*send_us = 1e6 * send_cpu / (double)sent;
	*proc_us = 1e6 * (proc_cpu_s() - c0) / (double)sent;
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 6;
	const char *brokers = argc > 3 ? argv[3] : NULL;
	const char *props[] = { "compression.type", "lz4", "log_level", "3", NULL };
	rd_kafka_mock_cluster_t *mc = NULL;
	rd_kafka_t *owner = NULL;
	char err[512];
	double s_us, p_us;
	int r;

	if (argc > 2)
		msgs = atoi(argv[2]);
	if (!brokers) {
		rd_kafka_conf_t *conf = rd_kafka_conf_new();

		rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
		owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
		mc = rd_kafka_mock_cluster_new(owner, 1);
		rd_kafka_mock_topic_create(mc, TOPIC, 6, 1);
		brokers = rd_kafka_mock_cluster_bootstraps(mc);
	}
	kp = lp_kproducer_new(brokers, props, err, sizeof(err));
	if (!kp) {
		fprintf(stderr, "ksend_micro: %s\n", err);
		return 1;
	}
	round_once(1, &s_us, &p_us); /* warm-up: connections, metadata */
	printf("%d threads x %d messages of %d B per round, %s, lz4\n", THREADS, msgs, SIZE,
	       mc ? "mock cluster" : brokers);
	for (r = 0; r < 2 * rounds; r++) {
		double la[3] = { 0 };

		getloadavg(la, 3);
		round_once(r % 2, &s_us, &p_us);
		printf("%-6s senders %.2f us CPU/msg, process %.2f us CPU/msg (load %.1f)\n",
		       r % 2 ? "batch" : "single", s_us, p_us, la[0]);
		fflush(stdout);
	}
	printf("failed deliveries: %ld\n", atomic_load(&failed));
	lp_kproducer_free(kp, 10000);
	if (mc)
		rd_kafka_mock_cluster_destroy(mc);
	if (owner)
		rd_kafka_destroy(owner);
	return 0;
}
