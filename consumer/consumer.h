/* consumer.h - the storage service: enriched events from Kafka into
 * PostgreSQL in batches, and the query API over what is stored.
 *
 * consumer_start() opens the pools, the Kafka consumer and the DLQ
 * producer, starts the consume loop and the housekeeping thread and serves
 * HTTP; consumer_stop() stops HTTP, lets the loop finish (store and commit)
 * the batch in hand, leaves the group and frees everything.  main.c is
 * only arguments and signals, so tests can run the service in-process. */
#ifndef LOGPIPE_CONSUMER_H
#define LOGPIPE_CONSUMER_H

#include <stddef.h>

#include "logpipe/config.h"

struct consumer_settings {
	char *http_listen;           /* CivetWeb listening_ports value */
	long long http_threads;      /* HTTP worker threads */
	char *http_front;            /* events or civetweb: who listens (http.h) */
	long long http_loops;        /* the event front's loop threads */
	char *log_level;             /* debug, info, warn, error */
	char *kafka_brokers;         /* bootstrap servers */
	char *kafka_group;           /* consumer group id */
	long long kafka_fetch_wait_ms; /* fetch.wait.max.ms */
	long long kafka_fetch_min_bytes; /* fetch.min.bytes */
	char *topic_complete;        /* enriched events with every lookup answered */
	char *topic_partial;         /* enriched events with some lookup missing */
	char *topic_dlq;             /* where events that cannot be stored go */
	char *pg_dsn;                /* libpq connection string or URI */
	long long pg_pool_size;      /* connections serving queries */
	long long query_timeout_ms;  /* statement_timeout of each query */
	long long batch_max_events;  /* most records stored in one transaction */
	long long batch_max_ms;      /* longest wait to fill a batch */
	long long batch_fast_rate;   /* events/s from which it may double */
	long long retry_max_attempts; /* attempts for a row the database refuses */
	long long retention_days;    /* drop daily partitions older than this; 0 keeps all */
	long long partitions_ahead;  /* daily partitions created ahead of today */
	long long partitions_interval_s; /* seconds between partition and retention passes */
	int dedup_by_id;             /* skip ids already stored under another ts */
	long long store_writers;     /* connections of the direct path */
	long long tail_buffer;       /* events the live tail keeps; 0 = off */
	long long tail_max_clients;  /* live tails at once */
	long long tail_heartbeat_ms; /* comment line to a quiet tail this often */
};

extern const struct lp_cfg_opt consumer_options[];

struct consumer;

struct consumer *consumer_start(const struct consumer_settings *s, char *err, size_t errlen);
/* Safe on a half-built consumer and on NULL. */
void consumer_stop(struct consumer *c);

#endif
