/* metadata.h - the metadata service: CRUD for host and service metadata.
 *
 * metadata_start() opens the PostgreSQL pool, the Redis cache and the
 * Kafka producer of metadata-changes, starts the HTTP server and the
 * start-up resync; metadata_stop() stops accepting, waits for requests in
 * flight and frees everything.  main.c is only arguments and signals, so
 * tests can run the service in-process. */
#ifndef LOGPIPE_METADATA_H
#define LOGPIPE_METADATA_H

#include <stddef.h>

#include "logpipe/config.h"

struct metadata_settings {
	char *http_listen;          /* CivetWeb listening_ports value */
	long long http_threads;     /* HTTP worker threads */
	char *http_front;           /* events or civetweb: who listens (http.h) */
	long long http_loops;       /* the event front's loop threads */
	char *log_level;            /* debug, info, warn, error */
	char *pg_dsn;               /* libpq connection string or URI */
	long long pg_pool_size;     /* connections in the pool */
	long long pg_timeout_ms;    /* longest wait for a pooled connection */
	char *redis_url;            /* the cache; empty disables it */
	long long redis_timeout_ms; /* connect and command timeout */
	long long cache_ttl_s;      /* lifetime of a cache entry */
	char *kafka_brokers;        /* bootstrap servers */
	long long kafka_timeout_ms; /* delivery timeout of a change */
	char *topic_metadata;       /* the compacted change feed */
	int resync_on_start;        /* republish every record at start */
	long long list_max;         /* largest page of a list */
};

extern const struct lp_cfg_opt metadata_options[];

struct metadata;

struct metadata *metadata_start(const struct metadata_settings *s, char *err, size_t errlen);
/* Safe on a half-built service and on NULL. */
void metadata_stop(struct metadata *m);

#endif
