/* klat.c - where the time of one acknowledged event goes inside librdkafka:
 * a closed loop of WINDOW single events in flight (as WINDOW keep-alive
 * clients of the producer), with the producer's client settings
 * (idempotent, acks=all, max.in.flight 5, linger.ms LINGER) and its
 * delivery-report path (a thread in rd_kafka_poll(rk, 100), as
 * common/src/kafka.c).  Prints events/s, the produce-to-report latency
 * (p50, p99) and, from librdkafka's statistics of the last seconds, the
 * means of its three parts: int_latency (produce() until the batch is
 * made: the linger), outbuf_latency (a made request waiting to be sent:
 * the in-flight limit) and rtt (the broker's round trip, acks=all), the
 * mean events per produce request (batchcnt), and the process's CPU per
 * event (every thread: the client side of librdkafka's cost).
 *
 *   cc -O2 -o /tmp/klat tests/bench/klat.c $(pkg-config --cflags --libs rdkafka) -pthread
 *   /tmp/klat BROKERS TOPIC SECONDS WINDOW LINGER [key=value ...] */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#define MAXLAT (1 << 22)

static const char body[] = "{\"level\":\"INFO\",\"message\":\"benchmark event with a typical "
			   "length of text\",\"service\":\"bench\",\"host\":\"web-1\"}";
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int inflight;
static atomic_int run = 1;
static long nlat, failed;
static double *lat;
static char stats[1 << 16];

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *ud)
{
	double t0 = *(double *)m->_private;

	(void)rk;
	(void)ud;
	free(m->_private);
	pthread_mutex_lock(&mu);
	if (m->err)
		failed++;
	else if (nlat < MAXLAT)
		lat[nlat++] = now_us() - t0;
	inflight--;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
}

static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *ud)
{
	(void)rk;
	(void)ud;
	pthread_mutex_lock(&mu);
	snprintf(stats, sizeof(stats), "%.*s", (int)len, json);
	pthread_mutex_unlock(&mu);
	return 0;
}

static void *poller(void *arg)
{
	while (atomic_load(&run))
		rd_kafka_poll(arg, 100);
	return NULL;
}

/* The "avg" (µs, given in ms) of the object named key after the first
 * occurrence of from ("nodeid":1, the real broker's block). */
static double stat_avg(const char *from, const char *key)
{
	char pat[64];
	const char *p = strstr(stats, from), *q;

	if (!p)
		return -1;
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	q = strstr(p, pat);
	if (!q || !(q = strstr(q, "\"avg\":")))
		return -1;
	return atof(q + 6) / 1e3; /* µs to ms */
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	char err[512];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;
	pthread_t th;
	double t0, t1, secs, c0 = 0;
	int window, i;
	long sent = 0;

	if (argc < 6) {
		fprintf(stderr, "usage: klat BROKERS TOPIC SECONDS WINDOW LINGER [key=value ...]\n");
		return 2;
	}
	secs = atof(argv[3]);
	window = atoi(argv[4]);
	lat = malloc(sizeof(*lat) * MAXLAT);
	const char *kv[] = { "bootstrap.servers", argv[1], "enable.idempotence", "true",
			     "acks", "all", "linger.ms", argv[5],
			     "statistics.interval.ms", "1000", NULL };
	for (i = 0; kv[i]; i += 2)
		if (rd_kafka_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err)) != RD_KAFKA_CONF_OK) {
			fprintf(stderr, "klat: %s\n", err);
			return 2;
		}
	for (i = 6; i < argc; i++) {
		char k[256], *eq;

		snprintf(k, sizeof(k), "%s", argv[i]);
		eq = strchr(k, '=');
		if (!eq)
			return 2;
		*eq = '\0';
		if (rd_kafka_conf_set(conf, k, eq + 1, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
			fprintf(stderr, "klat: %s\n", err);
			return 2;
		}
	}
	rd_kafka_conf_set_dr_msg_cb(conf, on_dr);
	rd_kafka_conf_set_stats_cb(conf, on_stats);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	if (!rk) {
		fprintf(stderr, "klat: %s\n", err);
		return 2;
	}
	pthread_create(&th, NULL, poller, rk);
	/* Warm-up: metadata, the producer id, the connection. */
	t0 = now_us();
	for (int phase = 0; phase < 2; phase++) {
		double end = now_us() + (phase ? secs : 2) * 1e6;

		if (phase) {
			pthread_mutex_lock(&mu);
			nlat = 0;
			pthread_mutex_unlock(&mu);
			t0 = now_us();
			c0 = cpu_s();
			sent = 0;
		}
		while (now_us() < end) {
			double *st = malloc(sizeof(*st));

			pthread_mutex_lock(&mu);
			while (inflight >= window)
				pthread_cond_wait(&cv, &mu);
			inflight++;
			pthread_mutex_unlock(&mu);
			*st = now_us();
			if (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(argv[2]),
					      RD_KAFKA_V_VALUE((void *)body, sizeof(body) - 1),
					      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
					      RD_KAFKA_V_OPAQUE(st), RD_KAFKA_V_END)) {
				free(st);
				pthread_mutex_lock(&mu);
				inflight--;
				failed++;
				pthread_mutex_unlock(&mu);
			}
			sent++;
		}
	}
	pthread_mutex_lock(&mu);
	while (inflight > 0)
		pthread_cond_wait(&cv, &mu);
	t1 = now_us();
	c0 = cpu_s() - c0;
	qsort(lat, (size_t)nlat, sizeof(*lat), cmp);
	printf("window %d linger %s%s%s: %.0f ev/s  produce->report p50 %.3f ms p99 %.3f ms  "
	       "avg int_latency %.3f ms outbuf_latency %.3f ms rtt %.3f ms  batchcnt %.1f  "
	       "cpu %.1f us/ev  failed %ld\n",
	       window, argv[5], argc > 6 ? " " : "", argc > 6 ? argv[6] : "", sent / ((t1 - t0) / 1e6),
	       nlat ? lat[nlat / 2] / 1e3 : -1, nlat ? lat[nlat * 99 / 100] / 1e3 : -1,
	       stat_avg("\"nodeid\":1,", "int_latency"),
	       stat_avg("\"nodeid\":1,", "outbuf_latency"), stat_avg("\"nodeid\":1,", "rtt"),
	       stat_avg("\"topics\":", "batchcnt") * 1e3, 1e6 * c0 / (sent ? sent : 1), failed);
	if (getenv("KLAT_STATS")) {
		FILE *f = fopen(getenv("KLAT_STATS"), "w");

		if (f) {
			fputs(stats, f);
			fclose(f);
		}
	}
	pthread_mutex_unlock(&mu);
	atomic_store(&run, 0);
	pthread_join(th, NULL);
	rd_kafka_flush(rk, 5000);
	rd_kafka_destroy(rk);
	free(lat);
	return 0;
}
