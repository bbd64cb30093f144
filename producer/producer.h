/* producer.h - the ingest service: HTTP in, validated events out to Kafka.
 *
 * producer_start() opens the disk spool (and recovers what it holds),
 * brings up the Kafka producer, the spool's drain thread and the HTTP
 * server; producer_stop() stops accepting, finishes the requests in
 * flight, stops the drain, flushes Kafka and closes the spool, within
 * about 10 s.  main.c is only arguments and signals, so tests can run the
 * service in-process. */
#ifndef LOGPIPE_PRODUCER_H
#define LOGPIPE_PRODUCER_H

#include <stddef.h>

#include "logpipe/config.h"

struct producer_settings {
	char *http_listen;         /* CivetWeb listening_ports value */
	long long http_threads;    /* HTTP worker threads */
	char *http_front;          /* events or civetweb: who listens (http.h) */
	long long http_loops;      /* the event front's loop threads */
	long long http_max_body;   /* request body cap in bytes (413 above) */
	char *log_level;           /* debug, info, warn, error */
	char *kafka_brokers;       /* bootstrap servers */
	char *topic_raw;           /* where accepted events go */
	char *topic_dlq;           /* where spooled events Kafka refuses for good go */
	long long kafka_timeout_ms; /* delivery timeout before spooling (or 503) */
	long long max_message;     /* bytes of `message` */
	long long max_attributes;  /* keys under `attributes` */
	long long batch_max_items; /* events per batch request */
	long long otlp_max_records; /* log records per OTLP export request */
	int spool_enabled;         /* spool while Kafka is unreachable */
	char *spool_dir;           /* spool directory */
	long long spool_max_bytes; /* bound on the spool's files */
	long long spool_segment_bytes; /* one segment file's size */
	long long spool_drain_batch; /* events produced per drain round */
	char *syslog_listen;       /* syslog receiver's address, "" = off (syslog.c) */
	int syslog_udp;            /* also receive syslog over UDP */
	long long syslog_max_message; /* largest syslog message in bytes */
	long long syslog_max_connections; /* syslog TCP connections at once */
	long long syslog_idle_timeout_ms; /* a silent syslog connection is closed after */
	long long syslog_message_timeout_ms; /* one inside a message is closed after */
};

extern const struct lp_cfg_opt producer_options[];

struct producer;

/* Returns NULL with a message in err (bad settings, spool directory in use
 * or unreadable, port taken). */
struct producer *producer_start(const struct producer_settings *s, char *err, size_t errlen);
/* Safe on a half-built producer and on NULL. */
void producer_stop(struct producer *p);

#endif
