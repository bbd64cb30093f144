/* generator.h - the load generator service: synthetic log events at a set
 * rate and size, straight to Kafka, started and stopped over REST.
 *
 * generator_start() brings up the Kafka producer, the Redis instance
 * registry and the HTTP server (and a first run when generator.autostart
 * is set); generator_stop() stops the run, flushes Kafka and frees
 * everything.  main.c is only arguments and signals, so tests can run the
 * service in-process. */
#ifndef LOGPIPE_GENERATOR_H
#define LOGPIPE_GENERATOR_H

#include <stddef.h>

#include "logpipe/config.h"

struct generator_settings {
	char *http_listen;           /* CivetWeb listening_ports value */
	long long http_threads;      /* HTTP worker threads */
	char *http_front;            /* events or civetweb: who listens (http.h) */
	long long http_loops;        /* the event front's loop threads */
	char *log_level;             /* debug, info, warn, error */
	char *kafka_brokers;         /* bootstrap servers */
	char *topic_raw;             /* where generated events go */
	long long kafka_timeout_ms;  /* how long an event may wait for Kafka */
	long long kafka_queue_max;   /* events queued locally before shedding */
	char *kafka_compression;     /* none, lz4, snappy, zstd, gzip */
	long long kafka_linger_ms;   /* librdkafka's linger.ms: how long a batch fills */
	int kafka_idempotence;       /* librdkafka's enable.idempotence */
	char *redis_url;             /* where instances register */
	char *instance_id;           /* this instance's name; empty: host and port */
	double rate;                 /* default events/s, shared by all instances */
	long long threads;           /* default worker threads */
	long long batch_size;        /* default events per batch */
	long long size_bytes;        /* default serialised event size */
	double duration_s;           /* default run length; 0 = until stopped */
	int autostart;               /* start a run with the defaults at launch */
	char *registry_key;          /* Redis sorted set of running instances */
	long long instance_ttl_ms;   /* an instance counts this long after a beat */
	long long stop_wait_ms;      /* a stop waits this long for deliveries */
};

extern const struct lp_cfg_opt generator_options[];

struct generator;

struct generator *generator_start(const struct generator_settings *s, char *err,
				  size_t errlen);
/* Safe on a half-built generator and on NULL. */
void generator_stop(struct generator *g);

#endif
