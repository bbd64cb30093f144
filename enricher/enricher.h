/* enricher.h - the enrichment service: raw-logs in, enriched events out.
 *
 * enricher_start() brings up the Kafka clients, the metadata tiers, the
 * pipeline thread and the HTTP server (health and metrics);
 * enricher_stop() stops consuming, finishes the batches in flight (their
 * outputs acknowledged and offsets committed, or neither), leaves the
 * consumer group and frees everything.  main.c is only arguments and
 * signals, so tests can run the service in-process. */
#ifndef LOGPIPE_ENRICHER_H
#define LOGPIPE_ENRICHER_H

#include <stddef.h>

#include "logpipe/config.h"

struct enricher_settings {
	char *http_listen;            /* CivetWeb listening_ports value */
	long long http_threads;       /* HTTP worker threads */
	char *http_front;             /* events or civetweb: who listens (http.h) */
	long long http_loops;         /* the event front's loop threads */
	char *log_level;              /* debug, info, warn, error */
	char *kafka_brokers;          /* bootstrap servers */
	char *kafka_group;            /* consumer group sharing raw-logs */
	long long kafka_timeout_ms;   /* delivery timeout of one output message */
	long long kafka_session_timeout_ms; /* how soon a dead member's partitions move */
	long long kafka_linger_ms;    /* producer linger: latency against batching */
	long long kafka_fetch_wait_ms; /* consumer fetch.wait.max.ms */
	long long kafka_commit_interval_ms; /* background commit of stored offsets */
	int kafka_nodelay;            /* socket.nagle.disable on every connection */
	char *topic_raw;              /* input */
	char *topic_complete;         /* events with every lookup answered */
	char *topic_partial;          /* events with a lookup unanswered */
	char *topic_dlq;              /* events that are not valid normalised events */
	char *topic_metadata;         /* the compacted change feed tier 1 is built from */
	char *redis_url;              /* tier 2; empty disables it */
	long long redis_timeout_ms;   /* connect and command timeout */
	char *metadata_url;           /* tier 3; empty disables it */
	long long metadata_timeout_ms; /* whole-request timeout */
	int table_enabled;            /* tier 1 on or off */
	long long table_load_wait_ms; /* how long start-up waits for tier 1 to load */
	long long batch_max_events;   /* events per batch (one produce/ack/commit cycle) */
	long long batch_max_ms;       /* longest time spent gathering one batch */
	long long batch_in_flight;    /* batches enriched but not yet acknowledged */
	long long cache_negative_ttl_ms; /* how long "not found" is remembered */
	long long cache_positive_ttl_ms; /* how long a tier 2/3 record is remembered */
	long long retry_max_ms;       /* longest backoff between batch retries */
};

extern const struct lp_cfg_opt enricher_options[];

struct enricher;

struct enricher *enricher_start(const struct enricher_settings *s, char *err, size_t errlen);
/* Safe on a half-built enricher and on NULL. */
void enricher_stop(struct enricher *e);

#endif
