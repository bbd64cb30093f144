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
	double kafka_linger_ms;    /* librdkafka linger.ms (fractions of a ms allowed) */
	long long kafka_batch_size; /* librdkafka batch.size (bytes per partition batch) */
	long long kafka_max_in_flight; /* max.in.flight.requests.per.connection (idempotent: <= 5) */
	int kafka_nodelay;         /* socket.nagle.disable on the broker connections */
	int kafka_gate;            /* hold new events while earlier ones await Kafka */
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
/* Safe on a half-built producer and on NULL.  Every submission's done has
 * been called when it returns. */
void producer_stop(struct producer *p);

/* ---- the submission core --------------------------------------------------
 *
 * What the HTTP routes do, without an HTTP server and without a thread
 * waiting for Kafka: producer_submit() validates the request and hands its
 * events on, then returns at once; done() is called exactly once with
 * everything the HTTP reply needs, from whichever thread finishes:
 *
 *   the caller's own thread, before producer_submit returns, for an answer
 *     that needs no I/O: 4xx (415, 400, 413 ...), 503 while stopping, a
 *     batch with no valid item, 503 without a spool when Kafka is down;
 *   librdkafka's delivery-report thread (kafka.c's poll thread), when the
 *     last event of the request is acknowledged or refused for good;
 *   the producer's spool writer thread, after the fdatasync of the events
 *     that went to the spool (breaker open, spool mode, a failed or timed
 *     out delivery, shutdown), or after the spool refused them (503).
 *
 * So done must not block (copy the reply, wake the thread or loop that
 * writes it, return): it runs on a thread other requests' completions
 * share.  A 202 (200 for OTLP) is never passed before every event it
 * covers is acknowledged by Kafka or fsync'd to the spool.  The producer
 * counts each submission in flight until done returned: producer_stop
 * waits for them (spooling rather than waiting for Kafka, as the routes
 * always did). */

/* Which route's semantics a submission has. */
enum producer_route {
	PRODUCER_ONE,   /* POST /api/logs: one JSON event */
	PRODUCER_BATCH, /* POST /api/logs/batch: JSON array or NDJSON */
	PRODUCER_OTLP,  /* POST /v1/logs: OTLP/HTTP, protobuf or JSON */
};

/* A request, borrowed for the duration of producer_submit only: every
 * pointer may be freed once it returned (events are copied out). */
struct producer_input {
	enum producer_route route;
	const char *body;             /* request body: len bytes, no NUL needed after them
	                               * (test_submit passes none, under ASan too) */
	size_t len;                   /* bytes of body */
	const char *content_type;     /* Content-Type header, NULL when absent */
	const char *content_encoding; /* Content-Encoding (OTLP: gzip), NULL when absent */
	const char *traceparent;      /* W3C traceparent header, NULL when absent */
	const char *tenant;           /* X-Tenant-ID header, NULL when absent */
	const char *request_id;       /* the request's id for log lines written on
	                               * other threads (X-Request-ID), or NULL */
};

/* An answer: valid only during the done call (copy what is kept). */
struct producer_reply {
	int status;                 /* HTTP status */
	const char *content_type;   /* "application/json", OTLP's protobuf type ... */
	const char *body;           /* the body (not NUL-terminated for protobuf) */
	size_t len;                 /* bytes of body */
	const char *headers;        /* extra "Name: value\r\n" lines (Retry-After,
	                             * Connection: close) or NULL */
};

typedef void (*producer_done_fn)(void *ud, const struct producer_reply *r);

/* Submits a request; done(ud, reply) is called exactly once, possibly
 * before this returns (see above).  Never blocks on Kafka or on the disk;
 * it may wait up to 1 s for room in librdkafka's local queue when that is
 * full (queue.buffering.max.messages), as a send always did.  Returns 0. */
int producer_submit(struct producer *p, const struct producer_input *in, producer_done_fn done,
		    void *ud);

#endif
