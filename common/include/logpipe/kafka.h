/* kafka.h - Kafka producer and consumer helpers on librdkafka.
 *
 * Producer: idempotent (enable.idempotence=true, acks=all), a background
 * thread serves delivery reports, and each message carries a completion
 * that is called exactly once with the delivery result.  lp_kwait is a
 * ready-made completion for callers that block until a group of messages
 * is acknowledged (the producer's 202 only after the ack).  Free flushes
 * what is queued (bounded by a timeout) before destroying the handle.
 *
 * Consumer: manual offset commits only (enable.auto.commit=false), so a
 * stage commits after its output is safe.  Commits name explicit offsets
 * (message offset + 1) per partition. */
#ifndef LOGPIPE_KAFKA_H
#define LOGPIPE_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

/* Extra librdkafka properties: "key=value" strings, NULL-terminated. */
struct lp_kprops {
	const char *const *kv;
};

/* ---- producer ---------------------------------------------------------- */

/* Called once per message from the delivery thread.  err is
 * RD_KAFKA_RESP_ERR_NO_ERROR on success. */
typedef void (*lp_kdone_fn)(void *opaque, rd_kafka_resp_err_t err, int32_t partition,
			    int64_t offset);

struct lp_kproducer;
struct lp__khandle;
struct lp__kmsg;

/* props may be NULL.  Returns NULL with a message in err. */
struct lp_kproducer *lp_kproducer_new(const char *brokers, const char *const *props,
				      char *err, size_t errlen);
/* Flushes up to timeout_ms, then destroys.  Returns the number of messages
 * that were still undelivered (0 when everything was acknowledged). */
int lp_kproducer_free(struct lp_kproducer *p, int timeout_ms);

/* Enqueues one message (copied).  headers, if not NULL, is taken over on
 * success.  done is called later with opaque.  Returns 0, or a negative
 * errno if it could not be enqueued (done is then not called): -ENOBUFS
 * when the local queue stayed full for block_ms, -EMSGSIZE when the
 * message is larger than message.max.bytes, -EINVAL when librdkafka finds
 * it invalid, -ENOENT for an unknown topic, -EIO otherwise
 * (lp_kafka_send_err maps these back). */
int lp_kproducer_send(struct lp_kproducer *p, const char *topic, const void *key,
		      size_t keylen, const void *val, size_t vallen,
		      rd_kafka_headers_t *headers, int block_ms, lp_kdone_fn done,
		      void *opaque);
/* A batch of sends to one topic that share one completion: for a caller
 * that sends many messages with the same done and opaque (the generator).
 * The batch takes the producer's handle and the topic once, and one record
 * carries (done, opaque) for all its messages, where lp_kproducer_send
 * takes a lock twice, looks the topic up and allocates a record per
 * message.  Use from one thread, begin ... send ... end, and keep it short
 * (it holds the handle: a replaced one is destroyed only after end).
 * Fields are private. */
struct lp_kbatch {
	struct lp_kproducer *p;  /* the producer */
	const char *topic;       /* borrowed until lp_kbatch_end */
	struct lp__khandle *h;       /* the handle held, or NULL */
	rd_kafka_topic_t *rkt;   /* topic object of h, or NULL */
	struct lp__kmsg *km;         /* the shared record */
	int err;                 /* last attach error, 0 when attached */
};
/* Starts a batch.  Returns 0, or a negative errno when no topic object
 * could be made (the sends then try again).  Call lp_kbatch_end in any
 * case. */
int lp_kbatch_begin(struct lp_kbatch *b, struct lp_kproducer *p, const char *topic,
		    lp_kdone_fn done, void *opaque);
/* Enqueues one message as lp_kproducer_send does (copied, keyed, no
 * headers), with the same return values; done(opaque, ...) is called once
 * for it later when it returns 0, never otherwise.  A handle replaced after
 * a fatal error is noticed and the send tried once on the new one.  The
 * copy of a value up to 4 KiB is kept by the batch until its last report
 * (memory: a batch's values stay allocated until all are reported). */
int lp_kbatch_send(struct lp_kbatch *b, const void *key, size_t keylen, const void *val,
		   size_t vallen, int block_ms);
/* A message's own completion argument in an lp_kbatch: memory the caller
 * provides per message (inside its own record of the message, say) and
 * keeps in place until done was called for that message.  Fields are
 * private. */
struct lp_kref {
	struct lp__kmsg *km;  /* the batch's shared record */
	void *opaque;         /* done's argument for this message */
};
/* Enqueues one message of the batch as lp_kbatch_send does, with these
 * differences: done is called with opaque (not the batch's) for it, ref is
 * the message's completion record (see struct lp_kref), headers (may be
 * NULL) are taken over on success, and a value up to 4 KiB is NOT copied:
 * val must stay valid and unchanged until done was called for it (a
 * larger value is copied).  For a caller that keeps its events until each
 * is reported anyway (the producer's requests): no allocation per message
 * besides librdkafka's own.  Returns 0 or a negative errno as
 * lp_kbatch_send; on an error done is not called and headers stay the
 * caller's. */
int lp_kbatch_send_ref(struct lp_kbatch *b, const void *key, size_t keylen, const void *val,
		       size_t vallen, rd_kafka_headers_t *headers, struct lp_kref *ref,
		       void *opaque, int block_ms);
/* Ends the batch: releases the handle.  Reports may still come later. */
void lp_kbatch_end(struct lp_kbatch *b);
/* Messages waiting in the local queue or in flight. */
int lp_kproducer_outq(struct lp_kproducer *p);
/* The librdkafka handle in use, borrowed: after a fatal error it is replaced
 * (see kafka.c) and destroyed lp__kproducer_grace_ms later at the earliest,
 * so use it for a bounded call (metadata, purge, a lag query), never keep it. */
rd_kafka_t *lp_kproducer_handle(struct lp_kproducer *p);
/* How many times the handle was replaced after a fatal error (see kafka.c). */
int lp_kproducer_renewals(struct lp_kproducer *p);
/* Replaced handles not destroyed yet (their messages still reported, a send
 * still using one, or within the grace period). */
int lp_kproducer_retired(struct lp_kproducer *p);
/* Milliseconds a replaced handle lives at least (30000; tests lower it
 * before creating the producer). */
extern int lp__kproducer_grace_ms;

/* A completion that counts outstanding deliveries of a group. */
struct lp_kwait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int pending;                   /* sends not yet reported */
	int failed;                    /* reported with an error */
	rd_kafka_resp_err_t first_err; /* first error seen */
	rd_kafka_resp_err_t *results;  /* optional per-message result array */
};
void lp_kwait_init(struct lp_kwait *w, rd_kafka_resp_err_t *results);
void lp_kwait_release(struct lp_kwait *w);
/* Use as the done callback with opaque = lp_kwait_slot(w, index).
 * Call lp_kwait_add(w) before each send; on a failed send call
 * lp_kwait_cancel(w, index, err). */
void lp_kwait_add(struct lp_kwait *w);
void *lp_kwait_slot(struct lp_kwait *w, size_t index);
void lp_kwait_done(void *opaque, rd_kafka_resp_err_t err, int32_t partition, int64_t offset);
void lp_kwait_cancel(struct lp_kwait *w, size_t index, rd_kafka_resp_err_t err);
/* Waits until every send reported or timeout_ms passed.  Returns 0 when
 * all reported, -ETIMEDOUT otherwise (the callbacks may still come; the
 * lp_kwait must outlive them, so callers wait again without timeout). */
int lp_kwait_wait(struct lp_kwait *w, int timeout_ms);

/* ---- consumer ---------------------------------------------------------- */

struct lp_kconsumer;

/* Subscribes group to topics (NULL-terminated).  Returns NULL with err. */
struct lp_kconsumer *lp_kconsumer_new(const char *brokers, const char *group,
				      const char *const *topics, const char *const *props,
				      char *err, size_t errlen);
/* Closes (leaves the group) and destroys. */
void lp_kconsumer_free(struct lp_kconsumer *c);
/* Next message or NULL on timeout.  Error events (err != 0) are returned
 * too; the caller destroys every message with rd_kafka_message_destroy. */
rd_kafka_message_t *lp_kconsumer_poll(struct lp_kconsumer *c, int timeout_ms);
/* Commits, synchronously, offset+1 for the highest offset of each
 * topic-partition among msgs.  Returns 0 or -EIO (message in log). */
int lp_kconsumer_commit(struct lp_kconsumer *c, rd_kafka_message_t *const *msgs, size_t n);
/* Pauses or resumes every assigned partition. */
int lp_kconsumer_pause(struct lp_kconsumer *c, bool pause);
/* Rewinds each partition in msgs to its lowest offset there (used to
 * retry uncommitted messages after a failure without losing them). */
int lp_kconsumer_rewind(struct lp_kconsumer *c, rd_kafka_message_t *const *msgs, size_t n);
rd_kafka_t *lp_kconsumer_handle(struct lp_kconsumer *c);

/* Total lag (high watermark - committed) of group over topics, queried
 * from the broker with handle rk.  Returns 0 and sets *lag, or -EIO. */
int lp_kafka_group_lag(rd_kafka_t *rk, const char *group, const char *const *topics,
		       int timeout_ms, long long *lag);

/* ---- trace context --------------------------------------------------------- */

/* Copies the trace context headers of m (trace_id, span_id, traceparent; the
 * producer sets them) into *h, creating *h when it is NULL and m has any, so
 * that every topic an event passes carries them. */
void lp_kafka_pass_trace(const rd_kafka_message_t *m, rd_kafka_headers_t **h);
/* The trace_id header of h, or of m's headers, copied to out when it is 32
 * characters; out, or NULL when there is none (for log lines about a
 * record: lp_log_kv leaves a NULL value out). */
const char *lp_kafka_headers_trace(const rd_kafka_headers_t *h, char out[33]);
const char *lp_kafka_trace_id(const rd_kafka_message_t *m, char out[33]);

/* ---- errors ------------------------------------------------------------ */

/* True when e refuses the record itself (too large, invalid): sending it
 * again can never succeed, so the caller dead-letters it and moves on.
 * False for transient errors (queue full, timeout, broker down, ...). */
bool lp_kafka_err_permanent(rd_kafka_resp_err_t e);
/* The error a refused lp_kproducer_send (negative errno rc) stands for,
 * e.g. for lp_kwait_cancel: -EMSGSIZE is MSG_SIZE_TOO_LARGE, -EINVAL
 * __INVALID_ARG (both permanent), -ENOENT __UNKNOWN_TOPIC, -ENOBUFS
 * __QUEUE_FULL, anything else __FAIL. */
rd_kafka_resp_err_t lp_kafka_send_err(int rc);

/* A dead letter too large for the dead-letter topic is sent cut to this
 * many bytes, with a header "truncated" holding its original size. */
#define LP_DLQ_TRUNCATED_BYTES 65536

#endif
