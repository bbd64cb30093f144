/* logpipe-topics.c - wait for a Kafka broker, create logpipe's topics, list them.
 *
 *   logpipe-topics --brokers HOST:PORT [--wait SECONDS]
 *                  [--create NAME:PARTITIONS[:compact]]... [--list]
 *
 * The local runner and the integration tests use it as Kafka's readiness
 * check: a broker is ready for logpipe when it answers metadata, accepts
 * CreateTopics and shows every topic with a leader for each partition. So the
 * tool does exactly that, in three phases sharing one deadline (--wait):
 *
 *   1. ask for metadata until a broker answers;
 *   2. create the topics in one CreateTopics request, retrying the ones that
 *      failed with anything but a clearly permanent error (a KRaft broker that
 *      has just started says INVALID_REPLICATION_FACTOR until it has
 *      registered itself); TOPIC_ALREADY_EXISTS counts as success, so the tool
 *      is idempotent;
 *   3. ask for metadata until every topic is there with all partitions led.
 *
 * --list then prints one line per non-internal topic on stdout:
 * "NAME<TAB>PARTITIONS<TAB>CLEANUP_POLICY". Progress and errors go to stderr.
 * Exit status: 0 ready, 1 not ready by the deadline or a permanent error,
 * 2 usage.
 *
 * It uses only librdkafka and libc, not liblogpipe, so it builds and works
 * whatever state the shared library is in.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "logpipe/banned.h"

#define MAX_TOPICS 64
#define MAX_TOPIC_NAME 249 /* Kafka's own limit */

/* One topic asked for with --create. */
struct topic_spec {
	char name[MAX_TOPIC_NAME + 1]; /* topic name */
	int partitions;                /* partition count to create with */
	int compact;                   /* 1: cleanup.policy=compact */
	int created;                   /* 1: created or already there */
	rd_kafka_resp_err_t last_err;  /* last CreateTopics error, if any */
	char last_errstr[256];         /* its message from the broker */
	int warned;                    /* 1: partition mismatch already reported */
};

/* Command line. */
struct opts {
	const char *brokers;                   /* bootstrap.servers */
	double wait_s;                         /* overall deadline in seconds */
	int list;                              /* 1: print topics at the end */
	int replication;                       /* replication factor to create with */
	struct topic_spec topics[MAX_TOPICS];  /* --create arguments */
	int ntopics;                           /* how many of them */
};

/* The last error librdkafka reported through error_cb, for the final message. */
static char last_client_error[512];

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void usage(FILE *out)
{
	fputs("usage: logpipe-topics --brokers HOST:PORT [--wait SECONDS]\n"
	      "                      [--create NAME:PARTITIONS[:compact]]... [--list]\n"
	      "                      [--replication N]\n"
	      "\n"
	      "Waits until the broker answers metadata (at most --wait seconds, default 30),\n"
	      "creates the topics (existing ones are fine), waits until each has a leader\n"
	      "for every partition, and with --list prints NAME PARTITIONS CLEANUP_POLICY\n"
	      "for every non-internal topic.\n",
	      out);
}

static void die_usage(const char *fmt, ...)
{
	va_list ap;

	fputs("logpipe-topics: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n", stderr);
	usage(stderr);
	exit(2);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Milliseconds left until deadline, at least floor_ms and at most cap_ms. */
static int left_ms(double deadline, int floor_ms, int cap_ms)
{
	double ms = (deadline - now_s()) * 1000.0;

	if (ms < floor_ms)
		return floor_ms;
	if (ms > cap_ms)
		return cap_ms;
	return (int)ms;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static void parse_create(struct opts *o, const char *arg)
{
	struct topic_spec *t;
	const char *colon, *rest;
	char *end;
	size_t namelen;
	long n;

	if (o->ntopics == MAX_TOPICS)
		die_usage("too many --create (at most %d)", MAX_TOPICS);
	colon = strchr(arg, ':');
	if (!colon)
		die_usage("--create '%s': expected NAME:PARTITIONS[:compact]", arg);
	namelen = (size_t)(colon - arg);
	if (namelen == 0 || namelen > MAX_TOPIC_NAME)
		die_usage("--create '%s': topic name must be 1..%d characters", arg,
			  MAX_TOPIC_NAME);
	errno = 0;
	n = strtol(colon + 1, &end, 10);
	if (errno || end == colon + 1 || n < 1 || n > 100000)
		die_usage("--create '%s': partitions must be a number from 1", arg);
	rest = end;
	t = &o->topics[o->ntopics];
	memset(t, 0, sizeof(*t));
	memcpy(t->name, arg, namelen);
	t->name[namelen] = '\0';
	t->partitions = (int)n;
	if (*rest == ':' && !strcmp(rest + 1, "compact"))
		t->compact = 1;
	else if (*rest)
		die_usage("--create '%s': only ':compact' may follow the partitions", arg);
	o->ntopics++;
}

static void parse_args(struct opts *o, int argc, char **argv)
{
	int i;

	memset(o, 0, sizeof(*o));
	o->wait_s = 30;
	o->replication = 1;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			exit(0);
		} else if (!strcmp(a, "--list")) {
			o->list = 1;
		} else if (!strcmp(a, "--brokers") || !strcmp(a, "--wait") ||
			   !strcmp(a, "--create") || !strcmp(a, "--replication")) {
			char *end;

			if (!v)
				die_usage("%s needs a value", a);
			i++;
			if (!strcmp(a, "--brokers")) {
				o->brokers = v;
			} else if (!strcmp(a, "--create")) {
				parse_create(o, v);
			} else if (!strcmp(a, "--wait")) {
				errno = 0;
				o->wait_s = strtod(v, &end);
				if (errno || *end || o->wait_s < 0)
					die_usage("--wait '%s': expected seconds", v);
			} else {
				errno = 0;
				o->replication = (int)strtol(v, &end, 10);
				if (errno || *end || o->replication < 1)
					die_usage("--replication '%s': expected a number", v);
			}
		} else {
			die_usage("unknown argument '%s'", a);
		}
	}
	if (!o->brokers || !*o->brokers)
		die_usage("--brokers is required");
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	snprintf(last_client_error, sizeof(last_client_error), "%s: %s",
		 rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static rd_kafka_t *client_new(const struct opts *o)
{
	char errstr[512];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;

	if (rd_kafka_conf_set(conf, "bootstrap.servers", o->brokers, errstr, sizeof(errstr)) ||
	    rd_kafka_conf_set(conf, "client.id", "logpipe-topics", errstr, sizeof(errstr)) ||
	    /* Connection-refused chatter while the broker boots is expected:
	     * keep it out of stderr and quote only the last one on failure. */
	    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr)) ||
	    rd_kafka_conf_set(conf, "reconnect.backoff.ms", "100", errstr, sizeof(errstr)) ||
	    rd_kafka_conf_set(conf, "reconnect.backoff.max.ms", "500", errstr, sizeof(errstr))) {
		fprintf(stderr, "logpipe-topics: %s\n", errstr);
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rd_kafka_conf_set_error_cb(conf, on_error);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (!rk) {
		fprintf(stderr, "logpipe-topics: cannot create a Kafka client: %s\n", errstr);
		rd_kafka_conf_destroy(conf);
	}
	return rk;
}

/* Phase 1: metadata from any broker. Returns the metadata or NULL at deadline. */
static const struct rd_kafka_metadata *wait_broker(rd_kafka_t *rk, double deadline)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t err;

	for (;;) {
		rd_kafka_poll(rk, 0);
		err = rd_kafka_metadata(rk, 1, NULL, &md, left_ms(deadline, 100, 2000));
		if (!err && md->broker_cnt > 0)
			return md;
		if (!err)
			rd_kafka_metadata_destroy(md);
		else
			snprintf(last_client_error, sizeof(last_client_error), "%s",
				 rd_kafka_err2str(err));
		if (now_s() >= deadline)
			return NULL;
		sleep_ms(200);
	}
}

/* Errors that no retry will cure. */
static int is_permanent(rd_kafka_resp_err_t err)
{
	switch (err) {
	case RD_KAFKA_RESP_ERR_INVALID_PARTITIONS:
	case RD_KAFKA_RESP_ERR_INVALID_CONFIG:
	case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
	case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
	case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
	case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
	case RD_KAFKA_RESP_ERR_INVALID_REQUEST:
		return 1;
	default:
		return 0;
	}
}

/* One CreateTopics round for the topics not yet created. Returns 0 when all
 * are created, 1 to retry, -1 on a permanent error (already reported). */
static int create_round(rd_kafka_t *rk, struct opts *o, double deadline)
{
	rd_kafka_NewTopic_t *nts[MAX_TOPICS];
	rd_kafka_AdminOptions_t *aopts = NULL;
	rd_kafka_queue_t *q = NULL;
	rd_kafka_event_t *ev = NULL;
	const rd_kafka_CreateTopics_result_t *res;
	const rd_kafka_topic_result_t **tres;
	char errstr[512];
	size_t ntres, j;
	int i, n = 0, ret = 1, tmo = left_ms(deadline, 1000, 10000);

	for (i = 0; i < o->ntopics; i++) {
		struct topic_spec *t = &o->topics[i];

		if (t->created)
			continue;
		nts[n] = rd_kafka_NewTopic_new(t->name, t->partitions, o->replication,
					       errstr, sizeof(errstr));
		if (!nts[n]) {
			fprintf(stderr, "logpipe-topics: topic '%s': %s\n", t->name, errstr);
			ret = -1;
			goto out;
		}
		n++;
		if (t->compact &&
		    rd_kafka_NewTopic_set_config(nts[n - 1], "cleanup.policy", "compact")) {
			fprintf(stderr, "logpipe-topics: topic '%s': cannot set cleanup.policy\n",
				t->name);
			ret = -1;
			goto out;
		}
	}
	if (n == 0) {
		ret = 0;
		goto out;
	}

	aopts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
	rd_kafka_AdminOptions_set_request_timeout(aopts, tmo, errstr, sizeof(errstr));
	rd_kafka_AdminOptions_set_operation_timeout(aopts, tmo, errstr, sizeof(errstr));
	q = rd_kafka_queue_new(rk);
	rd_kafka_CreateTopics(rk, nts, (size_t)n, aopts, q);
	ev = rd_kafka_queue_poll(q, tmo + 2000);
	if (!ev) {
		snprintf(last_client_error, sizeof(last_client_error),
			 "CreateTopics: no answer within %d ms", tmo + 2000);
		goto out;
	}
	if (rd_kafka_event_error(ev)) {
		snprintf(last_client_error, sizeof(last_client_error), "CreateTopics: %s",
			 rd_kafka_event_error_string(ev));
		goto out;
	}
	res = rd_kafka_event_CreateTopics_result(ev);
	tres = rd_kafka_CreateTopics_result_topics(res, &ntres);
	ret = 0;
	for (j = 0; j < ntres; j++) {
		const char *name = rd_kafka_topic_result_name(tres[j]);
		rd_kafka_resp_err_t err = rd_kafka_topic_result_error(tres[j]);
		const char *msg = rd_kafka_topic_result_error_string(tres[j]);

		for (i = 0; i < o->ntopics; i++) {
			struct topic_spec *t = &o->topics[i];

			if (strcmp(t->name, name))
				continue;
			if (!err || err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
				t->created = 1;
				continue;
			}
			t->last_err = err;
			snprintf(t->last_errstr, sizeof(t->last_errstr), "%s",
				 msg ? msg : rd_kafka_err2str(err));
			if (is_permanent(err)) {
				fprintf(stderr, "logpipe-topics: cannot create topic '%s': %s: %s\n",
					name, rd_kafka_err2name(err), t->last_errstr);
				ret = -1;
			} else if (ret == 0) {
				ret = 1;
			}
		}
	}
out:
	if (ev)
		rd_kafka_event_destroy(ev);
	if (q)
		rd_kafka_queue_destroy(q);
	if (aopts)
		rd_kafka_AdminOptions_destroy(aopts);
	rd_kafka_NewTopic_destroy_array(nts, (size_t)n);
	return ret;
}

/* Phase 2: create until done, a permanent error or the deadline. */
static int create_topics(rd_kafka_t *rk, struct opts *o, double deadline)
{
	int r, i;

	for (;;) {
		r = create_round(rk, o, deadline);
		if (r <= 0)
			return r;
		if (now_s() >= deadline)
			break;
		sleep_ms(300);
	}
	for (i = 0; i < o->ntopics; i++) {
		const struct topic_spec *t = &o->topics[i];

		if (t->created)
			continue;
		if (t->last_err)
			fprintf(stderr, "logpipe-topics: topic '%s' not created: %s: %s\n", t->name,
				rd_kafka_err2name(t->last_err), t->last_errstr);
		else
			fprintf(stderr, "logpipe-topics: topic '%s' not created: %s\n", t->name,
				last_client_error[0] ? last_client_error : "no answer");
	}
	return -1;
}

static const rd_kafka_metadata_topic_t *find_topic(const struct rd_kafka_metadata *md,
						   const char *name)
{
	int i;

	for (i = 0; i < md->topic_cnt; i++)
		if (!strcmp(md->topics[i].topic, name))
			return &md->topics[i];
	return NULL;
}

/* Why topic t is not usable yet, or NULL when it is. */
static const char *topic_problem(const struct rd_kafka_metadata *md, struct topic_spec *t)
{
	const rd_kafka_metadata_topic_t *mt = find_topic(md, t->name);
	int p;

	if (!mt)
		return "not in metadata";
	if (mt->err)
		return rd_kafka_err2str(mt->err);
	if (mt->partition_cnt == 0)
		return "no partitions yet";
	for (p = 0; p < mt->partition_cnt; p++)
		if (mt->partitions[p].err || mt->partitions[p].leader < 0)
			return "a partition has no leader yet";
	if (mt->partition_cnt != t->partitions && !t->warned) {
		fprintf(stderr,
			"logpipe-topics: warning: topic '%s' exists with %d partitions, "
			"asked for %d (left as it is)\n",
			t->name, mt->partition_cnt, t->partitions);
		t->warned = 1;
	}
	return NULL;
}

/* Phase 3: every topic in metadata with led partitions. On success *mdp holds
 * the last metadata (caller destroys it). */
static int wait_topics(rd_kafka_t *rk, struct opts *o, double deadline,
		       const struct rd_kafka_metadata **mdp)
{
	const struct rd_kafka_metadata *md = NULL;
	const char *why = NULL, *who = NULL;
	rd_kafka_resp_err_t err;
	int i;

	for (;;) {
		err = rd_kafka_metadata(rk, 1, NULL, &md, left_ms(deadline, 100, 2000));
		if (!err) {
			why = NULL;
			for (i = 0; i < o->ntopics && !why; i++) {
				why = topic_problem(md, &o->topics[i]);
				who = o->topics[i].name;
			}
			if (!why) {
				*mdp = md;
				return 0;
			}
			rd_kafka_metadata_destroy(md);
		} else {
			why = rd_kafka_err2str(err);
			who = "(metadata)";
		}
		if (now_s() >= deadline)
			break;
		sleep_ms(200);
	}
	fprintf(stderr, "logpipe-topics: topic '%s' not ready within the wait: %s\n", who, why);
	return -1;
}

/* cleanup.policy of each listed topic through DescribeConfigs; policies[i]
 * stays "?" where the broker did not say. */
static void describe_policies(rd_kafka_t *rk, const struct rd_kafka_metadata *md,
			      char (*policies)[32], double deadline)
{
	rd_kafka_ConfigResource_t **crs;
	rd_kafka_AdminOptions_t *aopts;
	rd_kafka_queue_t *q;
	rd_kafka_event_t *ev;
	const rd_kafka_ConfigResource_t **rres;
	char errstr[256];
	size_t nres, j, k, ncfg;
	int i, tmo = left_ms(deadline, 2000, 10000);

	crs = calloc((size_t)md->topic_cnt + 1, sizeof(*crs));
	if (!crs)
		return;
	for (i = 0; i < md->topic_cnt; i++)
		crs[i] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, md->topics[i].topic);
	aopts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
	rd_kafka_AdminOptions_set_request_timeout(aopts, tmo, errstr, sizeof(errstr));
	q = rd_kafka_queue_new(rk);
	rd_kafka_DescribeConfigs(rk, crs, (size_t)md->topic_cnt, aopts, q);
	ev = rd_kafka_queue_poll(q, tmo + 2000);
	if (ev && !rd_kafka_event_error(ev)) {
		rres = rd_kafka_DescribeConfigs_result_resources(
			rd_kafka_event_DescribeConfigs_result(ev), &nres);
		for (j = 0; j < nres; j++) {
			const rd_kafka_ConfigEntry_t **ents =
				rd_kafka_ConfigResource_configs(rres[j], &ncfg);
			const char *name = rd_kafka_ConfigResource_name(rres[j]);

			for (k = 0; k < ncfg; k++) {
				const char *v = rd_kafka_ConfigEntry_value(ents[k]);

				if (strcmp(rd_kafka_ConfigEntry_name(ents[k]), "cleanup.policy"))
					continue;
				for (i = 0; i < md->topic_cnt; i++)
					if (!strcmp(md->topics[i].topic, name))
						snprintf(policies[i], sizeof(policies[i]), "%s",
							 v ? v : "?");
			}
		}
	}
	if (ev)
		rd_kafka_event_destroy(ev);
	rd_kafka_queue_destroy(q);
	rd_kafka_AdminOptions_destroy(aopts);
	rd_kafka_ConfigResource_destroy_array(crs, (size_t)md->topic_cnt);
	free(crs);
}

static int list_topics(rd_kafka_t *rk, const struct rd_kafka_metadata *md, double deadline)
{
	char (*policies)[32];
	int i;

	policies = calloc((size_t)md->topic_cnt + 1, sizeof(*policies));
	if (!policies) {
		fprintf(stderr, "logpipe-topics: out of memory\n");
		return -1;
	}
	for (i = 0; i < md->topic_cnt; i++)
		snprintf(policies[i], sizeof(policies[i]), "?");
	describe_policies(rk, md, policies, deadline);
	for (i = 0; i < md->topic_cnt; i++) {
		if (!strncmp(md->topics[i].topic, "__", 2))
			continue; /* __consumer_offsets and friends */
		printf("%s\t%d\t%s\n", md->topics[i].topic, md->topics[i].partition_cnt,
		       policies[i]);
	}
	fflush(stdout);
	free(policies);
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;
	rd_kafka_t *rk = NULL;
	const struct rd_kafka_metadata *md = NULL;
	double start, deadline;
	int ret = 1;

	parse_args(&o, argc, argv);
	start = now_s();
	deadline = start + o.wait_s;

	rk = client_new(&o);
	if (!rk)
		goto out;

	md = wait_broker(rk, deadline);
	if (!md) {
		fprintf(stderr, "logpipe-topics: broker %s did not answer metadata within %g s: %s\n",
			o.brokers, o.wait_s, last_client_error[0] ? last_client_error : "no answer");
		goto out;
	}
	if (o.ntopics) {
		rd_kafka_metadata_destroy(md);
		md = NULL;
		if (create_topics(rk, &o, deadline))
			goto out;
		if (wait_topics(rk, &o, deadline, &md))
			goto out;
		fprintf(stderr, "logpipe-topics: %d topic(s) ready on %s after %.1f s\n", o.ntopics,
			o.brokers, now_s() - start);
	}
	if (o.list && list_topics(rk, md, deadline))
		goto out;
	ret = 0;
out:
	if (md)
		rd_kafka_metadata_destroy(md);
	if (rk)
		rd_kafka_destroy(rk);
	return ret;
}
