/* kafka_relay.c - the enricher benchmark's peer: a plain pass-through from
 * one topic to another with the enricher's Kafka client settings, so that
 * the latency the enricher adds can be set against what Kafka alone costs
 * on the same machine at the same moment.
 *
 *   kafka_relay BROKERS FROM TO [FETCH_WAIT_MS] [LINGER_MS] [NODELAY]
 *   kafka_relay --log-append-time BROKERS TOPIC...
 *   kafka_relay --stamps BROKERS TOPIC[,TOPIC...] WAIT_MS IDLE_MS
 *
 * Reads every partition of FROM from its end (no consumer group, no
 * commits) and produces each record unchanged, with its key, to TO: an
 * idempotent producer with acks=all, linger.ms LINGER_MS (default 1);
 * the consumer's fetch.wait.max.ms is FETCH_WAIT_MS (default 10) and
 * socket.nagle.disable is NODELAY (default true), as in the enricher.
 * Writes "ready" on stderr once every partition reached its end; runs
 * until SIGTERM or SIGINT, then waits up to 5 s for the acknowledgements
 * and prints "relayed N failed M".
 *
 * With --log-append-time it only sets message.timestamp.type=LogAppendTime
 * on the named topics (which must have no other dynamic configuration: the
 * request replaces it), so that every record carries the broker's append
 * time, and exits.
 *
 * With --stamps it is the benchmark's measuring consumer, kept light so
 * that measuring perturbs little: it reads every partition of the topics
 * from their end and, for each record whose value holds "sent_us", prints
 * "TOPIC_INDEX ID TIMESTAMP_MS RECV_US" (ID: the value of the first "id"
 * key, found by text search; TIMESTAMP_MS: the record's timestamp;
 * RECV_US: wall clock at receipt).  "ready" on stderr as above; stops
 * after WAIT_MS in total or IDLE_MS without a record once ready.
 *
 * Only for the benchmark; compiled by tests/bench/enricher_bench.py with
 *   cc -O2 -o kafka_relay kafka_relay.c $(pkg-config --cflags --libs rdkafka) */
#define _GNU_SOURCE /* memmem */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "benchclock.h"

static volatile sig_atomic_t stop;
static long relayed, failed;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void)rk;
	(void)opaque;
	if (m->err)
		failed++;
	else
		relayed++;
}

static void set(rd_kafka_conf_t *c, const char *key, const char *val)
{
	char err[256];

	if (rd_kafka_conf_set(c, key, val, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
		fprintf(stderr, "kafka_relay: %s: %s\n", key, err);
		exit(2);
	}
}

static rd_kafka_t *client(rd_kafka_type_t type, const char *brokers, const char *fetch_wait,
			  const char *linger, const char *nodelay)
{
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	char err[512];
	rd_kafka_t *rk;

	set(c, "bootstrap.servers", brokers);
	set(c, "socket.nagle.disable", nodelay);
	if (type == RD_KAFKA_PRODUCER) {
		set(c, "enable.idempotence", "true");
		set(c, "acks", "all");
		set(c, "linger.ms", linger);
		rd_kafka_conf_set_dr_msg_cb(c, on_dr);
	} else {
		set(c, "group.id", "kafka-relay");
		set(c, "enable.auto.commit", "false");
		set(c, "enable.partition.eof", "true");
		set(c, "fetch.wait.max.ms", fetch_wait);
	}
	rk = rd_kafka_new(type, c, err, sizeof(err));
	if (!rk) {
		fprintf(stderr, "kafka_relay: %s\n", err);
		exit(2);
	}
	return rk;
}

/* Assigns every partition of the topics from their end; returns their
 * number, 0 when a topic is missing. */
static int assign_all(rd_kafka_t *rk, char **topics, int ntopics)
{
	const struct rd_kafka_metadata *md;
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
	int i, k, p, n, total = 0;

	if (rd_kafka_metadata(rk, 1, NULL, &md, 10000)) {
		fprintf(stderr, "kafka_relay: no metadata\n");
		exit(2);
	}
	for (k = 0; k < ntopics; k++) {
		for (i = 0, n = 0; i < md->topic_cnt; i++)
			if (!strcmp(md->topics[i].topic, topics[k]))
				n = md->topics[i].partition_cnt;
		if (n == 0) {
			total = 0;
			break;
		}
		for (p = 0; p < n; p++)
			rd_kafka_topic_partition_list_add(l, topics[k], p)->offset =
				RD_KAFKA_OFFSET_END;
		total += n;
	}
	rd_kafka_metadata_destroy(md);
	if (total)
		rd_kafka_assign(rk, l);
	rd_kafka_topic_partition_list_destroy(l);
	return total;
}

/* Prints the stamp line of one record, if it is a measured event. */
static void stamp(const rd_kafka_message_t *m, char **topics, int ntopics, long long recv_us)
{
	const char *v = m->payload, *id, *end;
	int k;

	if (!v || !memmem(v, m->len, "\"sent_us\"", 9))
		return;
	id = memmem(v, m->len, "\"id\": \"", 7);
	if (!id)
		return;
	id += 7;
	end = memchr(id, '"', m->len - (size_t)(id - v));
	if (!end)
		return;
	for (k = 0; k < ntopics && strcmp(topics[k], rd_kafka_topic_name(m->rkt)); k++)
		;
	printf("%d %.*s %lld %lld\n", k, (int)(end - id), id,
	       (long long)rd_kafka_message_timestamp(m, NULL), recv_us);
}

static int stamps(const char *brokers, char *list, long wait_ms, long idle_ms)
{
	rd_kafka_t *rk = client(RD_KAFKA_CONSUMER, brokers, "10", "1", "true");
	char *topics[8], *save = NULL, *tok;
	int ntopics = 0, parts, eofs = 0;
	long long start = mono_ms(), last = 0;

	for (tok = strtok_r(list, ",", &save); tok && ntopics < 8; tok = strtok_r(NULL, ",", &save))
		topics[ntopics++] = tok;
	parts = assign_all(rk, topics, ntopics);
	if (!parts) {
		fprintf(stderr, "kafka_relay: a topic of %s is missing\n", list);
		return 2;
	}
	while (!stop && mono_ms() - start < wait_ms) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);

		if (!m) {
			if (eofs >= parts && last && mono_ms() - last >= idle_ms)
				break;
			continue;
		}
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			if (++eofs == parts) {
				fputs("ready\n", stderr);
				fflush(stderr);
				last = mono_ms();
			}
		} else if (!m->err) {
			stamp(m, topics, ntopics, wall_us());
			last = mono_ms();
		}
		rd_kafka_message_destroy(m);
	}
	fflush(stdout);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	return 0;
}

/* message.timestamp.type=LogAppendTime on each topic; 0 on success. */
static int log_append_time(const char *brokers, char **names, int n)
{
	rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, brokers, "10", "1", "true");
	rd_kafka_ConfigResource_t *res[16];
	rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
	const rd_kafka_AlterConfigs_result_t *r;
	const rd_kafka_ConfigResource_t **out;
	rd_kafka_event_t *ev;
	size_t cnt, i;
	int k, bad = 0;

	if (n > 16)
		n = 16;
	for (k = 0; k < n; k++) {
		res[k] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, names[k]);
		rd_kafka_ConfigResource_set_config(res[k], "message.timestamp.type",
						   "LogAppendTime");
	}
	rd_kafka_AlterConfigs(rk, res, (size_t)n, NULL, q);
	ev = rd_kafka_queue_poll(q, 30000);
	if (!ev || rd_kafka_event_error(ev)) {
		fprintf(stderr, "kafka_relay: alter configs: %s\n",
			ev ? rd_kafka_event_error_string(ev) : "timed out");
		bad = 1;
	} else {
		r = rd_kafka_event_AlterConfigs_result(ev);
		out = rd_kafka_AlterConfigs_result_resources(r, &cnt);
		for (i = 0; i < cnt; i++)
			if (rd_kafka_ConfigResource_error(out[i])) {
				fprintf(stderr, "kafka_relay: %s: %s\n",
					rd_kafka_ConfigResource_name(out[i]),
					rd_kafka_ConfigResource_error_string(out[i]));
				bad = 1;
			}
	}
	if (ev)
		rd_kafka_event_destroy(ev);
	for (k = 0; k < n; k++)
		rd_kafka_ConfigResource_destroy(res[k]);
	rd_kafka_queue_destroy(q);
	rd_kafka_destroy(rk);
	return bad;
}

int main(int argc, char **argv)
{
	const char *fetch_wait = argc > 4 ? argv[4] : "10", *linger = argc > 5 ? argv[5] : "1";
	const char *nodelay = argc > 6 ? argv[6] : "true";
	rd_kafka_t *cons, *prod;
	int parts, eofs = 0;

	if (argc >= 4 && !strcmp(argv[1], "--log-append-time"))
		return log_append_time(argv[2], argv + 3, argc - 3);
	if (argc == 6 && !strcmp(argv[1], "--stamps"))
		return stamps(argv[2], argv[3], atol(argv[4]), atol(argv[5]));
	if (argc < 4) {
		fprintf(stderr, "usage: kafka_relay BROKERS FROM TO [FETCH_WAIT_MS] [LINGER_MS] "
				"[NODELAY]\n");
		return 2;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	cons = client(RD_KAFKA_CONSUMER, argv[1], fetch_wait, linger, nodelay);
	prod = client(RD_KAFKA_PRODUCER, argv[1], fetch_wait, linger, nodelay);
	parts = assign_all(cons, argv + 2, 1);
	if (parts == 0) {
		fprintf(stderr, "kafka_relay: no topic %s\n", argv[2]);
		return 2;
	}
	while (!stop) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 5);
		rd_kafka_resp_err_t e;

		rd_kafka_poll(prod, 0);
		if (!m)
			continue;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			if (++eofs == parts) {
				fputs("ready\n", stderr);
				fflush(stderr);
			}
		} else if (!m->err) {
			do {
				e = rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(argv[3]),
						      RD_KAFKA_V_VALUE(m->payload, m->len),
						      RD_KAFKA_V_KEY(m->key, m->key_len),
						      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
						      RD_KAFKA_V_END);
				if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
					rd_kafka_poll(prod, 10);
			} while (e == RD_KAFKA_RESP_ERR__QUEUE_FULL && !stop);
			if (e && e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
				failed++;
		}
		rd_kafka_message_destroy(m);
	}
	rd_kafka_flush(prod, 5000);
	printf("relayed %ld failed %ld\n", relayed, failed);
	rd_kafka_consumer_close(cons);
	rd_kafka_destroy(cons);
	rd_kafka_destroy(prod);
	return failed ? 1 : 0;
}
