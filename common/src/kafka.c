/* kafka.c - Kafka producer and consumer helpers on librdkafka.
 *
 * Producer.  The handle is idempotent (enable.idempotence=true, acks=all,
 * linger.ms=5).  A dedicated thread calls rd_kafka_poll() until the producer
 * is freed, so delivery reports are served even when no caller is sending.
 * Each message carries a small heap record {done, opaque} as its
 * msg_opaque; the delivery-report callback calls done exactly once and
 * frees the record.  A full local queue is not an error at first: send
 * waits (the poll thread drains the queue) until block_ms has passed, and
 * only then gives up with -ENOBUFS.  Free flushes for a bounded time, then
 * purges what is left so that every done callback still runs (with a
 * purge error) before the handle is destroyed.
 *
 * A fatal error (the idempotent producer's sequence numbers out of step
 * with the broker's, as after a broker restart that lost its producer
 * state) leaves a librdkafka handle refusing every message for good.  The
 * poll thread then replaces it with a new handle made from the same
 * configuration: the old one's messages are purged (their callbacks run
 * with a purge error, which callers treat as retriable) and it is retired:
 * still polled until it is destroyed once nothing can reference it any
 * more, i.e. its queue is empty (every callback ran), no lp_kproducer_send
 * or lp_kproducer_outq is using it (each holds the handle it uses, counted
 * under p->mu) and lp__kproducer_grace_ms has passed since it was retired
 * (callers of lp_kproducer_handle use the pointer for a bounded call, such
 * as a metadata request, without holding it).  There is no cap on
 * replacements.  Without this, a service kept running but never produced
 * again.
 *
 * A batch (lp_kbatch, the generator's workers) holds the handle and a
 * topic object of it from begin to end and shares one record among its
 * messages, counted (refs) so that the last report or the end frees it;
 * its values are copied into chunks owned by that record and handed over
 * without RD_KAFKA_MSG_F_COPY (kslab below).  A send that fails because
 * the handle was replaced moves the batch to the new one.  A message's
 * msg_opaque is a struct lp_kref {record, done's argument}: the record's
 * own (self) for lp_kproducer_send and lp_kbatch_send, the caller's for
 * lp_kbatch_send_ref, whose messages each have their own argument (the
 * producer's events: per-event results without a record per event) and
 * whose values, owned by the caller until their report, are not copied.
 *
 * lp_kwait counts the deliveries of a group.  Its per-message opaque is a
 * heap slot {w, index} that lp_kwait_done frees; when a send fails the
 * slot is freed by lp_kproducer_send itself (it recognises lp_kwait_done),
 * because the caller never holds on to the slot pointer.
 *
 * Consumer.  Auto-commit and automatic offset store are off: a stage
 * commits, synchronously, exactly the offsets whose output is safe.  A
 * rebalance callback re-applies a pause to newly assigned partitions, so a
 * paused consumer stays paused across rebalances.  fetch.wait.max.ms is
 * 100 rather than librdkafka's 500: a broker answers the requests of one
 * connection in order, so a commit or a lag query on the consumer's handle
 * waits behind the fetch long-poll in flight, once per request.
 *
 * Lag.  lp_kafka_group_lag asks for metadata, the group's committed offsets
 * (OffsetFetch through a consumer handle of that group: the caller's own,
 * or a cached never-subscribed one) and the log-end offsets of every
 * partition (one ListOffsets per leader). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logpipe/kafka.h"
#include "logpipe/log.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

#define SEEK_TIMEOUT_MS 5000
#define PURGE_DRAIN_MS 2000

/* ---- shared configuration ------------------------------------------------ */

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	enum lp_log_level l;

	/* librdkafka uses syslog levels; it reports transient trouble such
	 * as a refused connection at LOG_ERR (3), which is a warning here. */
	if (level <= 2)
		l = LP_LOG_ERROR;
	else if (level <= 4)
		l = LP_LOG_WARN;
	else if (level <= 6)
		l = LP_LOG_INFO;
	else
		l = LP_LOG_DEBUG;
	lp_log_kv(l,
		  (const char *[]){ "component", "kafka", "client", rd_kafka_name(rk),
				    "facility", fac, NULL },
		  "%s", buf);
}

static int conf_set(rd_kafka_conf_t *conf, const char *key, const char *val, char *err,
		    size_t errlen)
{
	char why[256];

	if (rd_kafka_conf_set(conf, key, val, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
		snprintf(err, errlen, "kafka property \"%s\": %s", key, why);
		return -EINVAL;
	}
	return 0;
}

/*
 * Applies extra properties.  Each entry is either "key=value" or a key
 * followed by its value as the next entry (keys never contain '=').
 */
static int conf_set_props(rd_kafka_conf_t *conf, const char *const *props, char *err,
			  size_t errlen)
{
	char key[128];
	const char *eq;

	for (; props && *props; props++) {
		eq = strchr(*props, '=');
		if (eq) {
			if ((size_t)(eq - *props) >= sizeof(key)) {
				snprintf(err, errlen, "kafka property name too long: \"%s\"",
					 *props);
				return -EINVAL;
			}
			memcpy(key, *props, (size_t)(eq - *props));
			key[eq - *props] = '\0';
			if (conf_set(conf, key, eq + 1, err, errlen) < 0)
				return -EINVAL;
			continue;
		}
		if (!props[1]) {
			snprintf(err, errlen, "kafka property \"%s\" has no value", *props);
			return -EINVAL;
		}
		if (conf_set(conf, props[0], props[1], err, errlen) < 0)
			return -EINVAL;
		props++;
	}
	return 0;
}

/*
 * A configuration with bootstrap servers, the given defaults (key, value
 * pairs, NULL-terminated) and then the caller's properties, which win.
 */
static rd_kafka_conf_t *make_conf(const char *brokers, const char *const *defaults,
				  const char *const *props, char *err, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();

	rd_kafka_conf_set_log_cb(conf, on_log);
	if (conf_set(conf, "bootstrap.servers", brokers ? brokers : "", err, errlen) < 0 ||
	    conf_set_props(conf, defaults, err, errlen) < 0 ||
	    conf_set_props(conf, props, err, errlen) < 0) {
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	return conf;
}

/* ---- producer ------------------------------------------------------------ */

/* How long a replaced handle stays alive at least (see lp_kproducer_handle). */
int lp__kproducer_grace_ms = 30000;

/* One librdkafka handle and who is using it. */
struct lp__khandle {
	rd_kafka_t *rk;       /* the handle */
	int users;            /* sends and outq calls using it now (under p->mu) */
	int64_t retired_ms;   /* when it was replaced (monotonic), 0 while in use */
	struct lp__khandle *next; /* the next retired handle */
};

struct lp_kproducer {
	pthread_mutex_t mu;       /* guards cur and every khandle's users */
	struct lp__khandle *cur;      /* the handle in use; replaced by the poller only */
	rd_kafka_conf_t *conf;    /* a copy, for a new handle after a fatal error */
	struct lp__khandle *retired;  /* replaced handles not destroyed yet (poller only) */
	atomic_int nretired;      /* entries in retired */
	atomic_bool fatal;        /* the handle in use raised a fatal error */
	atomic_int renewals;      /* handles replaced so far */
	pthread_t poller;     /* serves delivery reports */
	bool poller_started;  /* poller was created (join it) */
	atomic_int run;       /* cleared to stop the poller */
};

/* The handle in use, held until kh_put: a replacement does not destroy it
 * meanwhile. */
static struct lp__khandle *kh_get(struct lp_kproducer *p)
{
	struct lp__khandle *h;

	pthread_mutex_lock(&p->mu);
	h = p->cur;
	h->users++;
	pthread_mutex_unlock(&p->mu);
	return h;
}

static void kh_put(struct lp_kproducer *p, struct lp__khandle *h)
{
	pthread_mutex_lock(&p->mu);
	h->users--;
	pthread_mutex_unlock(&p->mu);
}

/* What travels with each message as its msg_opaque: one per message from
 * lp_kproducer_send, one shared by every message of an lp_kbatch. */
struct lp__kmsg {
	lp_kdone_fn done;     /* called once per message with its delivery result */
	struct lp_kref self;  /* {this record, done's argument}: the msg_opaque of a
	                       * message without a lp_kref of its own */
	atomic_int refs;      /* messages not reported yet, plus one while a batch is open */
	struct kslab *slab;   /* a batch's copies of its values, newest chunk first */
};

/* A new record, refs 1. */
static struct lp__kmsg *kmsg_new(lp_kdone_fn done, void *opaque)
{
	struct lp__kmsg *km = lp_xmalloc(sizeof(*km));

	km->done = done;
	km->self.km = km;
	km->self.opaque = opaque;
	km->slab = NULL;
	atomic_init(&km->refs, 1);
	return km;
}

/* Values of a batch up to KSLAB_MAX bytes are copied into chunks that the
 * batch's record owns and frees with it, after the last report, and are
 * handed to librdkafka without RD_KAFKA_MSG_F_COPY: its per-message
 * allocation is then half the size, and one chunk takes a few hundred
 * values.  Larger values are copied by librdkafka as usual (it may keep a
 * reference to one above message.copy.max.bytes in a request buffer). */
#define KSLAB_CHUNK (32 * 1024)
#define KSLAB_MAX 4096

struct kslab {
	struct kslab *next;   /* the previous chunk */
	size_t used;          /* bytes of data taken */
	char data[KSLAB_CHUNK];
};

static void kmsg_free(struct lp__kmsg *km)
{
	struct kslab *c;

	while ((c = km->slab) != NULL) {
		km->slab = c->next;
		free(c);
	}
	free(km);
}

/* A copy of val that lives as long as km, or NULL when too large. */
static void *kslab_copy(struct lp__kmsg *km, const void *val, size_t len)
{
	struct kslab *c = km->slab;
	void *dst;

	if (len > KSLAB_MAX)
		return NULL;
	if (!c || KSLAB_CHUNK - c->used < len) {
		c = lp_xmalloc(sizeof(*c));
		c->next = km->slab;
		c->used = 0;
		km->slab = c;
	}
	dst = c->data + c->used;
	memcpy(dst, val, len);
	c->used += (len + 7) & ~(size_t)7;
	if (c->used > KSLAB_CHUNK)
		c->used = KSLAB_CHUNK;
	return dst;
}

/* A lp_kwait completion: which group and which message in it. */
struct kslot {
	struct lp_kwait *w;
	size_t index;
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct lp_kref *ref = m->_private;
	struct lp__kmsg *km;
	void *arg;

	if (!ref)
		return;
	/* Read before done: a caller's lp_kref may go with what done frees. */
	km = ref->km;
	arg = ref->opaque;
	km->done(arg, m->err, m->partition, m->offset);
	if (atomic_fetch_sub(&km->refs, 1) == 1)
		kmsg_free(km);
}

static void on_producer_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	char fatal[256];

	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		struct lp_kproducer *p = opaque;

		rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
		lp_error("kafka producer fatal error: %s; the handle will be replaced", fatal);
		if (p && rk == lp_kproducer_handle(p))
			atomic_store(&p->fatal, true);
		return;
	}
	lp_warn("kafka producer: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* Replaces a handle that raised a fatal error (poll thread only). */
static void renew(struct lp_kproducer *p)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_dup(p->conf);
	struct lp__khandle *h, *old;
	rd_kafka_t *rk;
	char why[512];
	int left;

	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
	if (!rk) {
		lp_error("kafka producer: cannot make a new handle: %s; trying again", why);
		rd_kafka_conf_destroy(conf);
		atomic_store(&p->fatal, true);
		return;
	}
	h = lp_xcalloc(1, sizeof(*h));
	h->rk = rk;
	pthread_mutex_lock(&p->mu);
	old = p->cur;
	p->cur = h;
	pthread_mutex_unlock(&p->mu);
	left = rd_kafka_outq_len(old->rk);
	rd_kafka_purge(old->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
	old->retired_ms = lp_now_ms();
	old->next = p->retired;
	p->retired = old;
	atomic_fetch_add(&p->nretired, 1);
	atomic_fetch_add(&p->renewals, 1);
	lp_warn("kafka producer: new handle after a fatal error; %d messages of the old one "
		"fail with a purge error and are retried by their senders",
		left);
}

/* Serves the retired handles' callbacks and destroys those nothing can
 * reference any more (poll thread only). */
static void reap_retired(struct lp_kproducer *p)
{
	struct lp__khandle **pp = &p->retired, *h;
	int64_t now = lp_now_ms();
	int users;

	while ((h = *pp) != NULL) {
		if (rd_kafka_outq_len(h->rk) > 0)
			rd_kafka_poll(h->rk, 0);
		/* No new user can appear: only cur is handed out. */
		pthread_mutex_lock(&p->mu);
		users = h->users;
		pthread_mutex_unlock(&p->mu);
		if (users > 0 || rd_kafka_outq_len(h->rk) > 0 ||
		    now - h->retired_ms < lp__kproducer_grace_ms) {
			pp = &h->next;
			continue;
		}
		*pp = h->next;
		rd_kafka_destroy(h->rk);
		free(h);
		atomic_fetch_sub(&p->nretired, 1);
	}
}

static void *poll_loop(void *arg)
{
	struct lp_kproducer *p = arg;

	while (atomic_load(&p->run)) {
		rd_kafka_poll(p->cur->rk, 100);
		reap_retired(p);
		if (atomic_exchange(&p->fatal, false))
			renew(p);
	}
	return NULL;
}

struct lp_kproducer *lp_kproducer_new(const char *brokers, const char *const *props, char *err,
				      size_t errlen)
{
	static const char *const defaults[] = {
		"enable.idempotence", "true", "acks", "all", "linger.ms", "5",
		"log.connection.close", "false", NULL,
	};
	struct lp_kproducer *p;
	rd_kafka_conf_t *conf;
	char why[512];

	conf = make_conf(brokers, defaults, props, err, errlen);
	if (!conf)
		return NULL;
	rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
	rd_kafka_conf_set_error_cb(conf, on_producer_error);

	p = lp_xcalloc(1, sizeof(*p));
	rd_kafka_conf_set_opaque(conf, p);
	p->conf = rd_kafka_conf_dup(conf);
	p->cur = lp_xcalloc(1, sizeof(*p->cur));
	p->cur->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
	if (!p->cur->rk) {
		snprintf(err, errlen, "cannot create kafka producer: %s", why);
		rd_kafka_conf_destroy(conf); /* not taken over on failure */
		rd_kafka_conf_destroy(p->conf);
		free(p->cur);
		free(p);
		return NULL;
	}
	pthread_mutex_init(&p->mu, NULL);
	atomic_store(&p->run, 1);
	if (pthread_create(&p->poller, NULL, poll_loop, p) != 0) {
		snprintf(err, errlen, "cannot start the kafka poll thread");
		lp_kproducer_free(p, 0);
		return NULL;
	}
	p->poller_started = true;
	return p;
}

int lp_kproducer_free(struct lp_kproducer *p, int timeout_ms)
{
	struct lp__khandle *h;
	rd_kafka_t *rk;
	int64_t deadline;
	int left;

	if (!p)
		return 0;
	h = kh_get(p);
	rd_kafka_flush(h->rk, timeout_ms);
	left = rd_kafka_outq_len(h->rk);
	kh_put(p, h);
	atomic_store(&p->run, 0);
	if (p->poller_started)
		pthread_join(p->poller, NULL);
	rk = p->cur->rk; /* the poller may have replaced it meanwhile */
	if (rd_kafka_outq_len(rk) > 0) {
		/* Give what is left its delivery report (a purge error), so every
		 * done callback runs exactly once and no record leaks. */
		rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
		deadline = lp_now_ms() + PURGE_DRAIN_MS;
		while (rd_kafka_outq_len(rk) > 0 && lp_now_ms() < deadline)
			rd_kafka_poll(rk, 50);
	}
	rd_kafka_destroy(rk);
	free(p->cur);
	while ((h = p->retired) != NULL) {
		deadline = lp_now_ms() + PURGE_DRAIN_MS;
		while (rd_kafka_outq_len(h->rk) > 0 && lp_now_ms() < deadline)
			rd_kafka_poll(h->rk, 50);
		rd_kafka_destroy(h->rk);
		p->retired = h->next;
		free(h);
	}
	pthread_mutex_destroy(&p->mu);
	rd_kafka_conf_destroy(p->conf);
	free(p);
	return left;
}

static int err_to_errno(rd_kafka_resp_err_t e)
{
	switch (e) {
	case RD_KAFKA_RESP_ERR__QUEUE_FULL:
		return -ENOBUFS;
	case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
		return -EMSGSIZE;
	case RD_KAFKA_RESP_ERR__INVALID_ARG:
		return -EINVAL;
	case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
	case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
		return -ENOENT;
	default:
		return -EIO;
	}
}

/* Fills vu with a message's key, value, flags, opaque and headers (when
 * there are any); returns the number of items, at most 5. */
static size_t message_vu(rd_kafka_vu_t *vu, const void *key, size_t keylen, const void *val,
			 size_t vallen, int flags, void *opaque, rd_kafka_headers_t *headers)
{
	size_t n = 0;

	vu[n].vtype = RD_KAFKA_VTYPE_KEY;
	vu[n].u.mem.ptr = (void *)key;
	vu[n++].u.mem.size = key ? keylen : 0;
	vu[n].vtype = RD_KAFKA_VTYPE_VALUE;
	vu[n].u.mem.ptr = (void *)val;
	vu[n++].u.mem.size = vallen;
	vu[n].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
	vu[n++].u.i = flags;
	vu[n].vtype = RD_KAFKA_VTYPE_OPAQUE;
	vu[n++].u.ptr = opaque;
	if (headers) {
		vu[n].vtype = RD_KAFKA_VTYPE_HEADERS;
		vu[n++].u.headers = headers;
	}
	return n;
}

int lp_kproducer_send(struct lp_kproducer *p, const char *topic, const void *key, size_t keylen,
		      const void *val, size_t vallen, rd_kafka_headers_t *headers, int block_ms,
		      lp_kdone_fn done, void *opaque)
{
	rd_kafka_vu_t vu[6];
	size_t n = 0;
	struct lp__kmsg *km = NULL;
	rd_kafka_error_t *e;
	rd_kafka_resp_err_t code;
	int64_t deadline = lp_now_ms() + (block_ms > 0 ? block_ms : 0);
	struct timespec nap = { 0, 2 * 1000 * 1000 };
	struct lp__khandle *h;
	int ret;

	if (done)
		km = kmsg_new(done, opaque);
	vu[n].vtype = RD_KAFKA_VTYPE_TOPIC;
	vu[n++].u.cstr = topic;
	n += message_vu(vu + n, key, keylen, val, vallen, RD_KAFKA_MSG_F_COPY,
			km ? &km->self : NULL, headers);

	h = kh_get(p);
	for (;;) {
		e = rd_kafka_produceva(h->rk, vu, n);
		if (!e) {
			kh_put(p, h);
			return 0;
		}
		code = rd_kafka_error_code(e);
		if (code != RD_KAFKA_RESP_ERR__QUEUE_FULL || lp_now_ms() >= deadline)
			break;
		rd_kafka_error_destroy(e);
		/* Sleep rather than poll: polling here would run other messages'
		 * callbacks on the caller's thread, possibly under its locks. */
		nanosleep(&nap, NULL);
	}
	kh_put(p, h);
	ret = err_to_errno(code);
	if (code != RD_KAFKA_RESP_ERR__QUEUE_FULL)
		lp_warn("cannot produce to \"%s\": %s", topic, rd_kafka_error_string(e));
	rd_kafka_error_destroy(e);
	free(km);
	/* The caller never kept the lp_kwait slot; it is ours to free. */
	if (done == lp_kwait_done)
		free(opaque);
	return ret;
}

/* Takes the handle in use and a topic object of it for an lp_kbatch. */
static int kbatch_attach(struct lp_kbatch *b)
{
	struct lp__khandle *h = kh_get(b->p);

	b->rkt = rd_kafka_topic_new(h->rk, b->topic, NULL);
	if (!b->rkt) {
		kh_put(b->p, h);
		return err_to_errno(rd_kafka_last_error());
	}
	b->h = h;
	return 0;
}

static void kbatch_detach(struct lp_kbatch *b)
{
	if (b->rkt)
		rd_kafka_topic_destroy(b->rkt);
	if (b->h)
		kh_put(b->p, b->h);
	b->rkt = NULL;
	b->h = NULL;
}

/* True when the poll thread replaced the handle the batch holds. */
static bool kbatch_stale(struct lp_kbatch *b)
{
	bool stale;

	pthread_mutex_lock(&b->p->mu);
	stale = b->p->cur != b->h;
	pthread_mutex_unlock(&b->p->mu);
	return stale;
}

int lp_kbatch_begin(struct lp_kbatch *b, struct lp_kproducer *p, const char *topic,
		    lp_kdone_fn done, void *opaque)
{
	struct lp__kmsg *km;

	memset(b, 0, sizeof(*b));
	b->p = p;
	b->topic = topic;
	km = kmsg_new(done, opaque); /* its ref is the batch's own, dropped by lp_kbatch_end */
	b->km = km;
	b->err = kbatch_attach(b);
	return b->err;
}

/* Enqueues one message of a batch: val (copied unless flags lacks
 * RD_KAFKA_MSG_F_COPY), headers taken over on success, ref as its
 * msg_opaque.  The caller counted it in km->refs; undone on failure. */
static int kbatch_produce(struct lp_kbatch *b, const void *key, size_t keylen, const void *val,
			  size_t vallen, int flags, rd_kafka_headers_t *headers,
			  struct lp_kref *ref, int block_ms)
{
	struct timespec nap = { 0, 2 * 1000 * 1000 };
	struct lp__kmsg *km = b->km;
	rd_kafka_resp_err_t code;
	rd_kafka_error_t *e;
	rd_kafka_vu_t vu[6];
	int64_t deadline = 0;
	bool renewed = false;
	size_t n;

	for (;;) {
		n = 0;
		vu[n].vtype = RD_KAFKA_VTYPE_RKT;
		vu[n++].u.rkt = b->rkt;
		n += message_vu(vu + n, key, keylen, val, vallen, flags, ref, headers);
		e = rd_kafka_produceva(b->h->rk, vu, n);
		if (!e)
			return 0;
		code = rd_kafka_error_code(e);
		rd_kafka_error_destroy(e);
		if (code == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
			if (!deadline)
				deadline = lp_now_ms() + (block_ms > 0 ? block_ms : 0);
			if (lp_now_ms() >= deadline)
				break;
			/* Sleep rather than poll, as lp_kproducer_send does. */
			nanosleep(&nap, NULL);
			continue;
		}
		/* A handle that raised a fatal error refuses every message; the
		 * poll thread replaces it.  A batch holds its handle for longer
		 * than one send, so move to the new one and try once more. */
		if (!renewed && kbatch_stale(b)) {
			renewed = true;
			kbatch_detach(b);
			b->err = kbatch_attach(b);
			if (b->err < 0) {
				atomic_fetch_sub(&km->refs, 1);
				return b->err;
			}
			continue;
		}
		break;
	}
	atomic_fetch_sub(&km->refs, 1); /* never 0 here: the batch holds one */
	if (code != RD_KAFKA_RESP_ERR__QUEUE_FULL)
		lp_warn("cannot produce to \"%s\": %s", b->topic, rd_kafka_err2str(code));
	return err_to_errno(code);
}

int lp_kbatch_send(struct lp_kbatch *b, const void *key, size_t keylen, const void *val,
		   size_t vallen, int block_ms)
{
	struct lp__kmsg *km = b->km;
	void *copy;

	if (!b->rkt) {
		/* No handle (lp_kbatch_begin failed, or a renewal did): try
		 * again, the poll thread may have made a new one meanwhile. */
		b->err = kbatch_attach(b);
		if (b->err < 0)
			return b->err;
	}
	/* Only this thread adds to the slab: the delivery thread reads none of
	 * it before the record's last reference goes, after lp_kbatch_end. */
	copy = kslab_copy(km, val, vallen);
	/* Counted before librdkafka has it: its report may come at once. */
	atomic_fetch_add(&km->refs, 1);
	return kbatch_produce(b, key, keylen, copy ? copy : val, vallen,
			      copy ? 0 : RD_KAFKA_MSG_F_COPY, NULL, &km->self, block_ms);
}

int lp_kbatch_send_ref(struct lp_kbatch *b, const void *key, size_t keylen, const void *val,
		       size_t vallen, rd_kafka_headers_t *headers, struct lp_kref *ref,
		       void *opaque, int block_ms)
{
	if (!b->rkt) {
		b->err = kbatch_attach(b);
		if (b->err < 0)
			return b->err;
	}
	ref->km = b->km;
	ref->opaque = opaque;
	atomic_fetch_add(&b->km->refs, 1);
	/* Up to KSLAB_MAX the value is the caller's until its report (see
	 * kslab: librdkafka copies one that small into its request). */
	return kbatch_produce(b, key, keylen, val, vallen,
			      vallen <= KSLAB_MAX ? 0 : RD_KAFKA_MSG_F_COPY, headers, ref,
			      block_ms);
}

void lp_kbatch_end(struct lp_kbatch *b)
{
	kbatch_detach(b);
	if (b->km && atomic_fetch_sub(&b->km->refs, 1) == 1)
		kmsg_free(b->km);
	b->km = NULL;
}

int lp_kproducer_outq(struct lp_kproducer *p)
{
	struct lp__khandle *h = kh_get(p);
	int n = rd_kafka_outq_len(h->rk);

	kh_put(p, h);
	return n;
}

rd_kafka_t *lp_kproducer_handle(struct lp_kproducer *p)
{
	rd_kafka_t *rk;

	pthread_mutex_lock(&p->mu);
	rk = p->cur->rk;
	pthread_mutex_unlock(&p->mu);
	return rk;
}

int lp_kproducer_renewals(struct lp_kproducer *p)
{
	return atomic_load(&p->renewals);
}

int lp_kproducer_retired(struct lp_kproducer *p)
{
	return atomic_load(&p->nretired);
}

/* ---- lp_kwait ------------------------------------------------------------ */

void lp_kwait_init(struct lp_kwait *w, rd_kafka_resp_err_t *results)
{
	pthread_condattr_t ca;

	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cv, &ca);
	pthread_condattr_destroy(&ca);
	w->pending = 0;
	w->failed = 0;
	w->first_err = RD_KAFKA_RESP_ERR_NO_ERROR;
	w->results = results;
}

void lp_kwait_release(struct lp_kwait *w)
{
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
}

void lp_kwait_add(struct lp_kwait *w)
{
	pthread_mutex_lock(&w->mu);
	w->pending++;
	pthread_mutex_unlock(&w->mu);
}

void *lp_kwait_slot(struct lp_kwait *w, size_t index)
{
	struct kslot *s = lp_xmalloc(sizeof(*s));

	s->w = w;
	s->index = index;
	return s;
}

/* Records one result.  w must not be touched after the unlock: the waiter
 * may return and release it at once. */
static void kwait_report(struct lp_kwait *w, size_t index, rd_kafka_resp_err_t err)
{
	pthread_mutex_lock(&w->mu);
	w->pending--;
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		w->failed++;
		if (w->first_err == RD_KAFKA_RESP_ERR_NO_ERROR)
			w->first_err = err;
	}
	if (w->results)
		w->results[index] = err;
	if (w->pending <= 0)
		pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

void lp_kwait_done(void *opaque, rd_kafka_resp_err_t err, int32_t partition, int64_t offset)
{
	struct kslot *s = opaque;

	kwait_report(s->w, s->index, err);
	free(s);
}

void lp_kwait_cancel(struct lp_kwait *w, size_t index, rd_kafka_resp_err_t err)
{
	kwait_report(w, index, err != RD_KAFKA_RESP_ERR_NO_ERROR ? err : RD_KAFKA_RESP_ERR__FAIL);
}

int lp_kwait_wait(struct lp_kwait *w, int timeout_ms)
{
	struct timespec until;
	int ret = 0;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&w->mu);
	while (w->pending > 0) {
		if (timeout_ms < 0) {
			pthread_cond_wait(&w->cv, &w->mu);
		} else if (pthread_cond_timedwait(&w->cv, &w->mu, &until) == ETIMEDOUT) {
			ret = w->pending > 0 ? -ETIMEDOUT : 0;
			break;
		}
	}
	pthread_mutex_unlock(&w->mu);
	return ret;
}

/* ---- consumer ------------------------------------------------------------ */

struct lp_kconsumer {
	rd_kafka_t *rk;       /* the librdkafka handle */
	atomic_bool paused;   /* re-applied to partitions assigned later */
};

static bool cooperative(rd_kafka_t *rk)
{
	return strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
}

static void log_error_obj(const char *what, rd_kafka_error_t *e)
{
	if (!e)
		return;
	lp_warn("kafka %s: %s", what, rd_kafka_error_string(e));
	rd_kafka_error_destroy(e);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			 rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	struct lp_kconsumer *c = opaque;
	rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;

	switch (err) {
	case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
		lp_info("kafka: %d partitions assigned", parts->cnt);
		if (cooperative(rk))
			log_error_obj("incremental assign", rd_kafka_incremental_assign(rk, parts));
		else
			e = rd_kafka_assign(rk, parts);
		if (atomic_load(&c->paused))
			rd_kafka_pause_partitions(rk, parts);
		break;
	case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
		lp_info("kafka: %d partitions revoked", parts->cnt);
		if (cooperative(rk))
			log_error_obj("incremental unassign",
				      rd_kafka_incremental_unassign(rk, parts));
		else
			e = rd_kafka_assign(rk, NULL);
		break;
	default:
		lp_warn("kafka rebalance error: %s", rd_kafka_err2str(err));
		e = rd_kafka_assign(rk, NULL);
		break;
	}
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
		lp_warn("kafka assign: %s", rd_kafka_err2str(e));
}

struct lp_kconsumer *lp_kconsumer_new(const char *brokers, const char *group,
				      const char *const *topics, const char *const *props,
				      char *err, size_t errlen)
{
	static const char *const defaults[] = {
		"enable.auto.commit", "false", "enable.auto.offset.store", "false",
		"auto.offset.reset", "earliest", "log.connection.close", "false",
		"fetch.wait.max.ms", "100", NULL,
	};
	struct lp_kconsumer *c;
	rd_kafka_conf_t *conf;
	rd_kafka_topic_partition_list_t *subs;
	rd_kafka_resp_err_t e;
	char why[512];
	size_t i;

	if (!group || !topics || !topics[0]) {
		snprintf(err, errlen, "kafka consumer needs a group and at least one topic");
		return NULL;
	}
	conf = make_conf(brokers, defaults, props, err, errlen);
	if (!conf)
		return NULL;
	if (conf_set(conf, "group.id", group, err, errlen) < 0) {
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	c = lp_xcalloc(1, sizeof(*c));
	rd_kafka_conf_set_opaque(conf, c);
	rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
	c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
	if (!c->rk) {
		snprintf(err, errlen, "cannot create kafka consumer: %s", why);
		rd_kafka_conf_destroy(conf);
		free(c);
		return NULL;
	}
	rd_kafka_poll_set_consumer(c->rk);

	subs = rd_kafka_topic_partition_list_new(4);
	for (i = 0; topics[i]; i++)
		rd_kafka_topic_partition_list_add(subs, topics[i], RD_KAFKA_PARTITION_UA);
	e = rd_kafka_subscribe(c->rk, subs);
	rd_kafka_topic_partition_list_destroy(subs);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(err, errlen, "cannot subscribe: %s", rd_kafka_err2str(e));
		lp_kconsumer_free(c);
		return NULL;
	}
	return c;
}

/* How long a close may take.  With the broker gone, a plain
 * rd_kafka_consumer_close() waits out every request still in flight (a
 * final commit among them), which can take longer than a service's whole
 * 10 s stop budget. */
#define CONSUMER_CLOSE_MS 4000

void lp_kconsumer_free(struct lp_kconsumer *c)
{
	rd_kafka_error_t *error;
	rd_kafka_queue_t *q;
	int64_t deadline;
	int flags = 0;

	if (!c)
		return;
	/* The asynchronous close forwards the consumer's queue to q: the
	 * rebalance that gives the partitions up, and also records fetched
	 * but not yet polled.  Those have no callback, and serving them with
	 * rd_kafka_queue_poll_callback() aborts in librdkafka 2.0
	 * (rd_kafka_q_serve: res != RD_KAFKA_OP_RES_PASS), so q is read as
	 * events: the rebalance handled, the rest dropped.  Stop waiting for
	 * the close after CONSUMER_CLOSE_MS and leave without it. */
	q = rd_kafka_queue_new(c->rk);
	error = rd_kafka_consumer_close_queue(c->rk, q);
	if (error) {
		lp_warn("kafka consumer close: %s", rd_kafka_error_string(error));
		rd_kafka_error_destroy(error);
		flags = RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE;
	} else {
		deadline = lp_now_ms() + CONSUMER_CLOSE_MS;
		while (!rd_kafka_consumer_closed(c->rk) && lp_now_ms() < deadline) {
			rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);

			if (ev && rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
				on_rebalance(c->rk, rd_kafka_event_error(ev),
					     rd_kafka_event_topic_partition_list(ev), c);
			if (ev)
				rd_kafka_event_destroy(ev);
		}
		if (!rd_kafka_consumer_closed(c->rk)) {
			lp_warn("kafka consumer close: not done after %d ms (broker unreachable?); "
				"leaving without it", CONSUMER_CLOSE_MS);
			flags = RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE;
		}
	}
	rd_kafka_queue_destroy(q);
	rd_kafka_destroy_flags(c->rk, flags);
	free(c);
}

rd_kafka_message_t *lp_kconsumer_poll(struct lp_kconsumer *c, int timeout_ms)
{
	return rd_kafka_consumer_poll(c->rk, timeout_ms);
}

/*
 * One entry per topic-partition among msgs (errors skipped), with the
 * highest offset + 1 (commit) or the lowest offset (rewind).
 */
static rd_kafka_topic_partition_list_t *offsets_of(rd_kafka_message_t *const *msgs, size_t n,
						   bool highest)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
	rd_kafka_topic_partition_t *tp;
	const char *topic;
	int64_t off;
	size_t i;

	for (i = 0; i < n; i++) {
		const rd_kafka_message_t *m = msgs[i];

		if (!m || m->err != RD_KAFKA_RESP_ERR_NO_ERROR || !m->rkt || m->offset < 0)
			continue;
		topic = rd_kafka_topic_name(m->rkt);
		off = highest ? m->offset + 1 : m->offset;
		tp = rd_kafka_topic_partition_list_find(l, topic, m->partition);
		if (!tp) {
			tp = rd_kafka_topic_partition_list_add(l, topic, m->partition);
			tp->offset = off;
		} else if (highest ? off > tp->offset : off < tp->offset) {
			tp->offset = off;
		}
	}
	return l;
}

/* Logs and counts the per-partition errors of an offsets list. */
static int partition_errors(const char *what, const rd_kafka_topic_partition_list_t *l)
{
	int i, bad = 0;

	for (i = 0; i < l->cnt; i++) {
		if (l->elems[i].err == RD_KAFKA_RESP_ERR_NO_ERROR)
			continue;
		lp_warn("kafka %s %s[%d] at %lld: %s", what, l->elems[i].topic,
			l->elems[i].partition, (long long)l->elems[i].offset,
			rd_kafka_err2str(l->elems[i].err));
		bad++;
	}
	return bad;
}

int lp_kconsumer_commit(struct lp_kconsumer *c, rd_kafka_message_t *const *msgs, size_t n)
{
	rd_kafka_topic_partition_list_t *l = offsets_of(msgs, n, true);
	rd_kafka_resp_err_t e;
	int ret = 0;

	if (l->cnt == 0)
		goto out;
	e = rd_kafka_commit(c->rk, l, 0);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		lp_warn("kafka commit failed: %s", rd_kafka_err2str(e));
		ret = -EIO;
		goto out;
	}
	if (partition_errors("commit", l) > 0)
		ret = -EIO;
out:
	rd_kafka_topic_partition_list_destroy(l);
	return ret;
}

int lp_kconsumer_pause(struct lp_kconsumer *c, bool pause)
{
	rd_kafka_topic_partition_list_t *l = NULL;
	rd_kafka_resp_err_t e;
	int ret = 0;

	/* Set first so that a rebalance from now on sees it. */
	atomic_store(&c->paused, pause);
	e = rd_kafka_assignment(c->rk, &l);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		lp_warn("kafka assignment: %s", rd_kafka_err2str(e));
		return -EIO;
	}
	if (l->cnt > 0) {
		e = pause ? rd_kafka_pause_partitions(c->rk, l)
			  : rd_kafka_resume_partitions(c->rk, l);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
			lp_warn("kafka %s: %s", pause ? "pause" : "resume", rd_kafka_err2str(e));
			ret = -EIO;
		} else if (partition_errors(pause ? "pause" : "resume", l) > 0) {
			ret = -EIO;
		}
	}
	rd_kafka_topic_partition_list_destroy(l);
	return ret;
}

int lp_kconsumer_rewind(struct lp_kconsumer *c, rd_kafka_message_t *const *msgs, size_t n)
{
	rd_kafka_topic_partition_list_t *l = offsets_of(msgs, n, false);
	rd_kafka_error_t *e;
	int ret = 0;

	if (l->cnt == 0)
		goto out;
	e = rd_kafka_seek_partitions(c->rk, l, SEEK_TIMEOUT_MS);
	if (e) {
		log_error_obj("seek", e);
		ret = -EIO;
		goto out;
	}
	if (partition_errors("seek", l) > 0)
		ret = -EIO;
out:
	rd_kafka_topic_partition_list_destroy(l);
	return ret;
}

rd_kafka_t *lp_kconsumer_handle(struct lp_kconsumer *c)
{
	return c->rk;
}

/* ---- consumer lag of any group ------------------------------------------- */

static int remaining_ms(int64_t deadline)
{
	int64_t left = deadline - lp_now_ms();

	return left > 0 ? (int)left : 0;
}

/* The partitions of topics, from a cluster-wide metadata request (asking
 * for named topics could auto-create them). */
static rd_kafka_topic_partition_list_t *partitions_of(rd_kafka_t *rk, const char *const *topics,
						      int timeout_ms)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_partition_list_t *l;
	rd_kafka_resp_err_t e;
	size_t i;
	int t, p;

	e = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		lp_warn("kafka metadata: %s", rd_kafka_err2str(e));
		return NULL;
	}
	l = rd_kafka_topic_partition_list_new(16);
	for (t = 0; t < md->topic_cnt; t++) {
		const rd_kafka_metadata_topic_t *mt = &md->topics[t];

		for (i = 0; topics[i]; i++)
			if (strcmp(topics[i], mt->topic) == 0)
				break;
		if (!topics[i] || mt->err != RD_KAFKA_RESP_ERR_NO_ERROR)
			continue;
		for (p = 0; p < mt->partition_cnt; p++)
			rd_kafka_topic_partition_list_add(l, mt->topic, mt->partitions[p].id);
	}
	rd_kafka_metadata_destroy(md);
	return l;
}

/*
 * A consumer handle of group for reading its committed offsets.  The
 * caller's own handle when it is that group's consumer; otherwise one made
 * on first use with the group's id, never subscribed (so it never joins
 * the group), kept for the life of the process.  Not the admin API's
 * ListConsumerGroupOffsets: librdkafka 2.0.2 crashes on its NOT_COORDINATOR
 * answer (confluentinc/librdkafka#5040) and asserts when it times out.
 */
#define LAG_HANDLES 8
static pthread_mutex_t lag_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
	char *key;      /* "brokers|group" */
	rd_kafka_t *rk; /* never-subscribed consumer of that group */
} lag_handles[LAG_HANDLES];

static rd_kafka_t *group_handle(rd_kafka_t *rk, const char *group)
{
	char brokers[512], gid[256], err[256], *key;
	size_t n = sizeof(gid);
	const rd_kafka_conf_t *conf = rd_kafka_conf(rk);
	rd_kafka_conf_t *c = NULL;
	rd_kafka_t *h = NULL;
	size_t klen;
	int i;

	if (rd_kafka_type(rk) == RD_KAFKA_CONSUMER &&
	    rd_kafka_conf_get(conf, "group.id", gid, &n) == RD_KAFKA_CONF_OK &&
	    strcmp(gid, group) == 0)
		return rk;
	n = sizeof(brokers);
	if (rd_kafka_conf_get(conf, "bootstrap.servers", brokers, &n) != RD_KAFKA_CONF_OK ||
	    !brokers[0]) {
		n = sizeof(brokers);
		if (rd_kafka_conf_get(conf, "metadata.broker.list", brokers, &n) !=
		    RD_KAFKA_CONF_OK)
			return NULL;
	}
	klen = strlen(brokers) + strlen(group) + 2;
	key = lp_xmalloc(klen);
	snprintf(key, klen, "%s|%s", brokers, group);

	pthread_mutex_lock(&lag_mu);
	for (i = 0; i < LAG_HANDLES && lag_handles[i].key; i++) {
		if (strcmp(lag_handles[i].key, key) == 0) {
			h = lag_handles[i].rk;
			goto out;
		}
	}
	if (i == LAG_HANDLES) {
		lp_warn("kafka: more than %d groups watched for lag; \"%s\" is not", LAG_HANDLES,
			group);
		goto out;
	}
	c = rd_kafka_conf_new();
	if (conf_set(c, "bootstrap.servers", brokers, err, sizeof(err)) < 0 ||
	    conf_set(c, "group.id", group, err, sizeof(err)) < 0 ||
	    conf_set(c, "enable.auto.commit", "false", err, sizeof(err)) < 0) {
		lp_warn("kafka: lag handle for group \"%s\": %s", group, err);
		rd_kafka_conf_destroy(c);
		goto out;
	}
	rd_kafka_conf_set_log_cb(c, on_log);
	h = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
	if (!h) {
		lp_warn("kafka: lag handle for group \"%s\": %s", group, err);
		rd_kafka_conf_destroy(c);
		goto out;
	}
	lag_handles[i].key = key;
	lag_handles[i].rk = h;
	key = NULL;
out:
	pthread_mutex_unlock(&lag_mu);
	free(key);
	return h;
}

/* Fills the committed offsets of group into l (offset < 0: none). */
static int committed_offsets(rd_kafka_t *rk, const char *group,
			     rd_kafka_topic_partition_list_t *l, int64_t deadline)
{
	rd_kafka_t *h = group_handle(rk, group);
	rd_kafka_resp_err_t e;
	int i;

	if (!h)
		return -EIO;
	e = rd_kafka_committed(h, l, remaining_ms(deadline));
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		lp_warn("kafka: committed offsets of group \"%s\": %s", group,
			rd_kafka_err2str(e));
		return -EIO;
	}
	for (i = 0; i < l->cnt; i++)
		if (l->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR)
			l->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
	return 0;
}

/*
 * The log-end (RD_KAFKA_OFFSET_END) or log-start (RD_KAFKA_OFFSET_BEGINNING)
 * offsets of the partitions in l, as a new list.  One ListOffsets request
 * per leader for all partitions, rather than two per partition as
 * rd_kafka_query_watermark_offsets would send.
 */
static rd_kafka_topic_partition_list_t *log_offsets(rd_kafka_t *rk,
						    const rd_kafka_topic_partition_list_t *l,
						    int64_t which, int64_t deadline)
{
	rd_kafka_topic_partition_list_t *out = rd_kafka_topic_partition_list_copy(l);
	rd_kafka_resp_err_t e;
	int i;

	for (i = 0; i < out->cnt; i++)
		out->elems[i].offset = which;
	e = rd_kafka_offsets_for_times(rk, out, remaining_ms(deadline));
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		lp_warn("kafka: listing %s offsets: %s",
			which == RD_KAFKA_OFFSET_END ? "end" : "start", rd_kafka_err2str(e));
		rd_kafka_topic_partition_list_destroy(out);
		return NULL;
	}
	if (partition_errors("list offsets", out) > 0) {
		rd_kafka_topic_partition_list_destroy(out);
		return NULL;
	}
	return out;
}

int lp_kafka_group_lag(rd_kafka_t *rk, const char *group, const char *const *topics,
		       int timeout_ms, long long *lag)
{
	int64_t deadline = lp_now_ms() + timeout_ms;
	rd_kafka_topic_partition_list_t *l, *end = NULL, *start = NULL;
	long long sum = 0;
	bool uncommitted = false;
	int i, ret = -EIO;

	l = partitions_of(rk, topics, remaining_ms(deadline));
	if (!l)
		return -EIO;
	if (l->cnt == 0)
		goto done;
	if (committed_offsets(rk, group, l, deadline) < 0)
		goto out;
	end = log_offsets(rk, l, RD_KAFKA_OFFSET_END, deadline);
	if (!end)
		goto out;
	for (i = 0; i < l->cnt; i++)
		if (l->elems[i].offset < 0)
			uncommitted = true;
	/* Nothing committed yet: the group would read from the log start. */
	if (uncommitted && !(start = log_offsets(rk, l, RD_KAFKA_OFFSET_BEGINNING, deadline)))
		goto out;
	for (i = 0; i < l->cnt; i++) {
		int64_t committed = l->elems[i].offset;
		int64_t from = committed >= 0 ? committed : start->elems[i].offset;
		int64_t to = end->elems[i].offset;

		if (from >= 0 && to > from)
			sum += to - from;
	}
done:
	*lag = sum;
	ret = 0;
out:
	if (end)
		rd_kafka_topic_partition_list_destroy(end);
	if (start)
		rd_kafka_topic_partition_list_destroy(start);
	rd_kafka_topic_partition_list_destroy(l);
	return ret;
}

/* ---- errors no retry can cure -------------------------------------------- */

/* The record itself is refused: its size, or its form.  Everything else
 * (queue full, timeouts, a broker down, leadership moving, a fatal error
 * that makes the producer replace its handle, an unknown topic that an
 * operator may still create) can pass, so the caller retries it. */
bool lp_kafka_err_permanent(rd_kafka_resp_err_t e)
{
	switch (e) {
	case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_INVALID_MSG:
	case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
	case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_INVALID_RECORD:
	case RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP:
	case RD_KAFKA_RESP_ERR__INVALID_ARG:
		return true;
	default:
		return false;
	}
}

rd_kafka_resp_err_t lp_kafka_send_err(int rc)
{
	switch (rc) {
	case 0:
		return RD_KAFKA_RESP_ERR_NO_ERROR;
	case -EMSGSIZE:
		return RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
	case -EINVAL:
		return RD_KAFKA_RESP_ERR__INVALID_ARG;
	case -ENOENT:
		return RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
	case -ENOBUFS:
		return RD_KAFKA_RESP_ERR__QUEUE_FULL;
	default:
		return RD_KAFKA_RESP_ERR__FAIL;
	}
}

/* ---- trace context --------------------------------------------------------- */

void lp_kafka_pass_trace(const rd_kafka_message_t *m, rd_kafka_headers_t **h)
{
	static const char *const names[] = { "trace_id", "span_id", "traceparent" };
	rd_kafka_headers_t *in = NULL;
	const void *v;
	size_t n;

	if (!m || rd_kafka_message_headers(m, &in) != RD_KAFKA_RESP_ERR_NO_ERROR || !in)
		return;
	for (size_t i = 0; i < LP_ARRAY_SIZE(names); i++) {
		if (rd_kafka_header_get_last(in, names[i], &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR)
			continue;
		if (!*h)
			*h = rd_kafka_headers_new(3);
		rd_kafka_header_add(*h, names[i], -1, v, (ssize_t)n);
	}
}

const char *lp_kafka_headers_trace(const rd_kafka_headers_t *h, char out[33])
{
	const void *v;
	size_t n;

	if (!h || rd_kafka_header_get_last(h, "trace_id", &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR ||
	    !v || n != 32)
		return NULL;
	memcpy(out, v, 32);
	out[32] = '\0';
	return out;
}

const char *lp_kafka_trace_id(const rd_kafka_message_t *m, char out[33])
{
	rd_kafka_headers_t *h = NULL;

	if (!m || rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return NULL;
	return lp_kafka_headers_trace(h, out);
}
