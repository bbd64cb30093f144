/* kafkatool.c - a small Kafka client for the enricher's tests and benchmark.
 *
 *   kafkatool produce BROKERS TOPIC [KEYFIELD]
 *       one message per stdin line; the key is the line's JSON string field
 *       KEYFIELD (default "service") when present; "{{NOW_US}}" in a line
 *       is replaced by the wall clock in microseconds at send time; a line
 *       that is exactly "{{EMPTY}}" is sent as an empty value without a key;
 *       a line starting "{{TRACE:<32 characters>}}" is the rest of it with a
 *       trace_id header of those characters (as the producer sets).
 *       Waits for every acknowledgement; prints "acked N failed M".
 *   kafkatool consume BROKERS TOPIC[,TOPIC...] [MAX] [IDLE_MS] [WAIT_MS] [FROM]
 *       reads every partition from the beginning, or from its end when FROM
 *       is "end" (only messages written from now on), with no consumer group, and
 *       prints one JSON line per message: topic, partition, offset, key,
 *       value (the text), headers, recv_us (wall clock at receipt).  Stops
 *       after MAX messages (0 = no limit), after IDLE_MS without one once
 *       all partitions reached their end, or after WAIT_MS in total.  Writes
 *       "ready" on stderr once every partition has reached its end (so a
 *       caller can start producing knowing nothing will be read late).
 *   kafkatool count BROKERS TOPIC[,TOPIC...]
 *       prints the sum of the high watermarks of the topics.
 *   kafkatool create BROKERS TOPIC PARTITIONS [NAME=VALUE...]
 *       creates the topic with these topic configs (max.message.bytes=...),
 *       for tests that need a broker to refuse what a service sends.
 *
 * Only for tests: not built by the Makefile; the scripts compile it with
 *   cc -O2 -o kafkatool kafkatool.c $(pkg-config --cflags --libs rdkafka jansson) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "benchclock.h"

static int acked, failed;

static void die(const char *what, const char *why)
{
	fprintf(stderr, "kafkatool: %s: %s\n", what, why);
	exit(2);
}

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void)rk;
	(void)opaque;
	if (m->err) {
		failed++;
		fprintf(stderr, "kafkatool: delivery failed: %s\n", rd_kafka_err2str(m->err));
	} else {
		acked++;
	}
}

static rd_kafka_t *client(rd_kafka_type_t type, const char *brokers)
{
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	char err[512], group[64];
	rd_kafka_t *rk;

	if (rd_kafka_conf_set(c, "bootstrap.servers", brokers, err, sizeof(err)))
		die("config", err);
	if (type == RD_KAFKA_PRODUCER) {
		rd_kafka_conf_set(c, "enable.idempotence", "true", err, sizeof(err));
		rd_kafka_conf_set(c, "linger.ms", "5", err, sizeof(err));
		rd_kafka_conf_set(c, "queue.buffering.max.messages", "1000000", err, sizeof(err));
		rd_kafka_conf_set_dr_msg_cb(c, on_dr);
	} else {
		snprintf(group, sizeof(group), "kafkatool-%lld", wall_us());
		rd_kafka_conf_set(c, "group.id", group, err, sizeof(err));
		rd_kafka_conf_set(c, "enable.auto.commit", "false", err, sizeof(err));
		rd_kafka_conf_set(c, "enable.partition.eof", "true", err, sizeof(err));
		rd_kafka_conf_set(c, "fetch.wait.max.ms", "10", err, sizeof(err));
	}
	rk = rd_kafka_new(type, c, err, sizeof(err));
	if (!rk)
		die("client", err);
	return rk;
}

static int produce(const char *brokers, const char *topic, const char *keyfield)
{
	rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, brokers);
	char *line = NULL, *out;
	size_t cap = 0;
	ssize_t len;
	int sent = 0;

	while ((len = getline(&line, &cap, stdin)) > 0) {
		char *mark, num[32], trace[33] = "";
		const char *key = NULL;
		json_t *j;

		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (len == 0)
			continue;
		if (len >= 42 && !strncmp(line, "{{TRACE:", 8) && !strncmp(line + 40, "}}", 2)) {
			memcpy(trace, line + 8, 32);
			trace[32] = '\0';
			memmove(line, line + 42, (size_t)len - 41);
			len -= 42;
		}
		out = line;
		mark = strstr(line, "{{NOW_US}}");
		if (!strcmp(line, "{{EMPTY}}")) {
			line[0] = '\0';
		} else if (mark) {
			snprintf(num, sizeof(num), "%lld", wall_us());
			out = malloc((size_t)len + 32);
			memcpy(out, line, (size_t)(mark - line));
			snprintf(out + (mark - line), (size_t)len + 32 - (size_t)(mark - line), "%s%s",
				 num, mark + 10);
		}
		j = json_loads(out, 0, NULL);
		if (j && json_is_string(json_object_get(j, keyfield)))
			key = json_string_value(json_object_get(j, keyfield));
		for (;;) {
			rd_kafka_headers_t *h = NULL;
			rd_kafka_resp_err_t e;

			if (trace[0]) {
				h = rd_kafka_headers_new(1);
				rd_kafka_header_add(h, "trace_id", -1, trace, 32);
			}
			e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
					      RD_KAFKA_V_VALUE(out, strlen(out)),
					      RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
					      RD_KAFKA_V_HEADERS(h),
					      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
			if (e && h)
				rd_kafka_headers_destroy(h);
			if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
				rd_kafka_poll(rk, 10);
				continue;
			}
			if (e)
				die("produce", rd_kafka_err2str(e));
			break;
		}
		json_decref(j);
		if (out != line)
			free(out);
		sent++;
		rd_kafka_poll(rk, 0);
	}
	while (rd_kafka_outq_len(rk) > 0 && acked + failed < sent)
		rd_kafka_poll(rk, 50);
	printf("acked %d failed %d\n", acked, failed);
	free(line);
	rd_kafka_destroy(rk);
	return failed ? 1 : 0;
}

/* Topics named in a comma list, with their partition counts. */
struct topics {
	char *names[8];
	int parts[8];
	int n, total;
};

static void describe(rd_kafka_t *rk, char *list, struct topics *t)
{
	const struct rd_kafka_metadata *md;
	char *save = NULL, *tok;
	int i, j;

	memset(t, 0, sizeof(*t));
	for (tok = strtok_r(list, ",", &save); tok && t->n < 8; tok = strtok_r(NULL, ",", &save))
		t->names[t->n++] = tok;
	if (rd_kafka_metadata(rk, 1, NULL, &md, 10000))
		die("metadata", "broker did not answer");
	for (i = 0; i < t->n; i++) {
		for (j = 0; j < md->topic_cnt; j++)
			if (!strcmp(md->topics[j].topic, t->names[i]))
				t->parts[i] = md->topics[j].partition_cnt;
		if (!t->parts[i])
			die("metadata", t->names[i]);
		t->total += t->parts[i];
	}
	rd_kafka_metadata_destroy(md);
}

static int count(const char *brokers, char *list)
{
	rd_kafka_t *rk = client(RD_KAFKA_CONSUMER, brokers);
	struct topics t;
	int64_t lo, hi;
	long long sum = 0;
	int i, p;

	describe(rk, list, &t);
	for (i = 0; i < t.n; i++)
		for (p = 0; p < t.parts[i]; p++) {
			if (rd_kafka_query_watermark_offsets(rk, t.names[i], p, &lo, &hi, 5000))
				die("watermarks", t.names[i]);
			sum += hi;
		}
	printf("%lld\n", sum);
	rd_kafka_destroy(rk);
	return 0;
}

static int create(const char *brokers, const char *topic, int parts, char **cfg, int ncfg)
{
	rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, brokers);
	rd_kafka_NewTopic_t *nt;
	rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
	const rd_kafka_topic_result_t **res;
	rd_kafka_event_t *ev;
	char err[512], *eq;
	size_t n;
	int i, rc = 0;

	nt = rd_kafka_NewTopic_new(topic, parts, 1, err, sizeof(err));
	if (!nt)
		die("topic", err);
	for (i = 0; i < ncfg; i++) {
		eq = strchr(cfg[i], '=');
		if (!eq)
			die("config", "expected NAME=VALUE");
		*eq = '\0';
		if (rd_kafka_NewTopic_set_config(nt, cfg[i], eq + 1))
			die("config", cfg[i]);
	}
	rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
	ev = rd_kafka_queue_poll(q, 30000);
	if (!ev)
		die("create", "no answer within 30 s");
	if (rd_kafka_event_error(ev))
		die("create", rd_kafka_event_error_string(ev));
	res = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
	if (n != 1 || rd_kafka_topic_result_error(res[0])) {
		fprintf(stderr, "kafkatool: create %s: %s\n", topic,
			n == 1 ? rd_kafka_topic_result_error_string(res[0]) : "no result");
		rc = 1;
	}
	rd_kafka_event_destroy(ev);
	rd_kafka_NewTopic_destroy(nt);
	rd_kafka_queue_destroy(q);
	rd_kafka_destroy(rk);
	return rc;
}

static int consume(const char *brokers, char *list, long max, long idle_ms, long wait_ms,
		   int64_t from)
{
	rd_kafka_t *rk = client(RD_KAFKA_CONSUMER, brokers);
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
	struct topics t;
	long n = 0;
	int i, p, eofs = 0;
	unsigned char seen[1024] = { 0 }; /* partitions that reached their end once */
	long long start = mono_ms(), last = mono_ms();

	describe(rk, list, &t);
	for (i = 0; i < t.n; i++)
		for (p = 0; p < t.parts[i]; p++)
			rd_kafka_topic_partition_list_add(l, t.names[i], p)->offset = from;
	rd_kafka_assign(rk, l);
	rd_kafka_topic_partition_list_destroy(l);
	while ((max <= 0 || n < max) && mono_ms() - start < wait_ms) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
		rd_kafka_headers_t *hdrs = NULL;
		json_t *o, *h;
		const char *name;
		const void *val;
		size_t sz, k;

		if (!m) {
			if (eofs >= t.total && mono_ms() - last >= idle_ms)
				break;
			continue;
		}
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			for (i = 0, k = 0; i < t.n && strcmp(t.names[i], rd_kafka_topic_name(m->rkt)); i++)
				k += (size_t)t.parts[i];
			k += (size_t)m->partition;
			if (k < sizeof(seen) && !seen[k]) {
				seen[k] = 1;
				if (++eofs == t.total) {
					/* Every partition is being fetched: tell a waiting caller. */
					fputs("ready\n", stderr);
					fflush(stderr);
				}
			}
			rd_kafka_message_destroy(m);
			continue;
		}
		if (m->err) {
			fprintf(stderr, "kafkatool: %s\n", rd_kafka_message_errstr(m));
			rd_kafka_message_destroy(m);
			continue;
		}
		last = mono_ms();
		h = json_object();
		if (!rd_kafka_message_headers(m, &hdrs))
			for (k = 0; !rd_kafka_header_get_all(hdrs, k, &name, &val, &sz); k++)
				json_object_set_new(h, name, json_stringn(val ? val : "", val ? sz : 0));
		o = json_pack("{s:s, s:i, s:I, s:o, s:o, s:o, s:I, s:I}", "topic",
			      rd_kafka_topic_name(m->rkt), "partition", (int)m->partition, "offset",
			      (json_int_t)m->offset, "key",
			      m->key ? json_stringn(m->key, m->key_len) : json_null(), "value",
			      m->payload ? json_stringn(m->payload, m->len) : json_null(), "headers", h,
			      "recv_us", (json_int_t)wall_us(), "timestamp",
			      (json_int_t)rd_kafka_message_timestamp(m, NULL));
		json_dumpf(o, stdout, JSON_COMPACT);
		fputc('\n', stdout);
		json_decref(o);
		rd_kafka_message_destroy(m);
		n++;
	}
	fflush(stdout);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 4 && !strcmp(argv[1], "produce"))
		return produce(argv[2], argv[3], argc > 4 ? argv[4] : "service");
	if (argc >= 4 && !strcmp(argv[1], "consume"))
		return consume(argv[2], argv[3], argc > 4 ? atol(argv[4]) : 0,
			       argc > 5 ? atol(argv[5]) : 500, argc > 6 ? atol(argv[6]) : 30000,
			       argc > 7 && !strcmp(argv[7], "end") ? RD_KAFKA_OFFSET_END
								    : RD_KAFKA_OFFSET_BEGINNING);
	if (argc >= 4 && !strcmp(argv[1], "count"))
		return count(argv[2], argv[3]);
	if (argc >= 5 && !strcmp(argv[1], "create"))
		return create(argv[2], argv[3], atoi(argv[4]), argv + 5, argc - 5);
	fprintf(stderr, "usage: kafkatool produce|consume|count|create BROKERS TOPIC ...\n");
	return 2;
}
