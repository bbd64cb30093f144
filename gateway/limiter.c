/* limiter.c - leased tokens from shared one-second windows in Redis.
 *
 * The algorithm
 * -------------
 * Redis holds, per client and per second of Redis's own clock, a counter
 * of the requests granted so far ("<prefix><key>:<epoch second>", expiring
 * after 3 s).  One Lua script (LEASE below) reads the clock, grants
 * min(want, limit - used) tokens, adds them to the counter and returns
 * {granted, used, milliseconds left in the window}.  Using Redis's clock
 * means the instances agree on the windows even when their clocks drift.
 *
 * Each instance keeps, per client, the tokens it leased and the local
 * monotonic time at which that window ends (time the call was sent plus
 * the milliseconds left, so a lease is never used past its window).  A
 * request spends a local token; when there is none, one lease is asked for
 * that client at a time (single flight).  A lease of zero marks the client
 * refused until the window ends.
 *
 * Who waits for a lease: gw_limiter_take never does, since the gateway's
 * event loops call it and one of them waiting on Redis would stall every
 * connection it serves.  It hands the lease to a lease thread (one per
 * Redis connection) and answers "pending"; the caller asks again after
 * the on_lease callback told it a lease ended.  Nothing is admitted
 * without a leased token meanwhile, so the shared limit stays exact.
 * gw_limiter_take_wait, for threads that may block (CivetWeb's workers),
 * leases itself or waits for the lease in flight, as before.
 *
 * Accuracy: Redis never grants more than the limit per window, so with any
 * number of instances the admitted rate cannot exceed it.  It can fall
 * short only by tokens leased but not spent before their window ends: at
 * most one lease per instance, and only by an instance whose own traffic
 * stopped.  With the default lease of limit/20 that is 5 % per idle
 * instance in the worst case and close to nothing under sustained load.
 *
 * Fallback: when a lease fails (Redis down, timeout, breaker "redis" open)
 * the client is decided for local_retry_ms by a local token bucket of
 * limit / instances per second, so the fleet as a whole stays near the
 * limit while Redis is away.
 *
 * Memory: clients live in 64 shards (hash chains under one mutex each);
 * a shard drops clients idle for 10 s when visited, and past 4096 clients
 * a shard sends newcomers to one shared local-only bucket rather than grow
 * without bound. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logpipe/breaker.h"
#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/ratelimit.h"
#include "logpipe/redis.h"
#include "logpipe/util.h"
#include "limiter.h"

#include "logpipe/banned.h"

#define NSHARDS 64
#define NBUCKETS 256           /* hash chains per shard */
#define MAX_PER_SHARD 4096     /* clients per shard before the overflow bucket */
#define IDLE_US (10 * 1000000LL)
#define SWEEP_EVERY_US (5 * 1000000LL)
#define MAX_CONNS 16

static const char LEASE[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"local key = KEYS[1] .. ':' .. math.floor(now / 1000)\n"
	"local want = tonumber(ARGV[1])\n"
	"local limit = tonumber(ARGV[2])\n"
	"local used = tonumber(redis.call('GET', key) or '0')\n"
	"local grant = 0\n"
	"if used < limit then\n"
	"  grant = math.min(want, limit - used)\n"
	"  used = redis.call('INCRBY', key, grant)\n"
	"  if used == grant then redis.call('PEXPIRE', key, 3000) end\n"
	"end\n"
	"return {grant, used, 1000 - (now % 1000)}\n";

/* One client as this instance sees it. */
struct entry {
	struct entry *next;      /* hash chain */
	uint64_t hash;           /* of key */
	char *key;               /* "<class>:<client>" (owned) */
	long tokens;             /* leased and not yet spent */
	long global_left;        /* limit - used in Redis after the last lease */
	int64_t window_end_us;   /* monotonic end of the leased window */
	bool refused;            /* Redis granted nothing: refuse until window_end_us */
	bool fetching;           /* a thread is leasing for this client */
	int waiters;             /* threads waiting for that lease */
	int64_t local_until_us;  /* decide locally until then (Redis failed) */
	bool bucket_ready;       /* bucket initialised */
	double bucket_rate;      /* rate the bucket was set to */
	struct lp_bucket bucket; /* the local fallback */
	int64_t last_us;         /* last request, for the idle sweep */
};

struct shard {
	pthread_mutex_t mu;          /* guards everything in the shard */
	pthread_cond_t cv;           /* signalled when a lease completes */
	struct entry *tab[NBUCKETS]; /* hash chains */
	size_t n;                    /* entries in tab */
	int64_t last_sweep_us;       /* last idle sweep */
	struct entry overflow;       /* shared local-only client when full */
};

/* A lease for the lease thread. */
struct job {
	struct job *next;
	struct shard *s;
	struct entry *e;                /* kept by its fetching flag */
	char *key;                      /* owned */
	long want, limit;
};

/* A lease thread: the leases of the clients of one Redis connection. */
struct worker {
	struct gw_limiter *l;
	struct lp_redis *r;
	pthread_t th;
	bool started;
	pthread_mutex_t mu;             /* guards the queue and stop */
	pthread_cond_t cv;              /* a job came, or stop */
	struct job *head, *tail;
	bool stop;
};

struct gw_limiter {
	struct gw_limiter_opts o;       /* options (strings copied below) */
	struct worker workers[MAX_CONNS]; /* one per connection */
	pthread_mutex_t notify_mu;      /* guards on_lease and its calls */
	void (*on_lease)(void *ud);
	void *on_lease_ud;
	char *prefix;                   /* Redis key prefix (owned) */
	struct lp_breaker *breaker;     /* "redis", NULL without Redis */
	atomic_bool last_lease_failed;  /* the latest lease to end failed */
	struct lp_redis *conns[MAX_CONNS]; /* Redis connections */
	int nconns;
	pthread_mutex_t sha_mu;         /* guards sha */
	char sha[48];                   /* SHA-1 of LEASE once loaded, "" before */
	struct lp_series *calls;        /* gateway_ratelimit_redis_calls_total{result} */
	struct lp_series *calls_err;
	struct lp_series *calls_refused;
	struct shard shards[NSHARDS];
};

/* ---- pure helpers ------------------------------------------------------- */

long gw_lease_size(long limit, int divisor)
{
	long n = divisor > 0 ? limit / divisor : limit;

	return n < 1 ? 1 : n;
}

size_t gw_ratelimit_headers(const struct gw_limit *d, const char *unit, char *out,
			    size_t outlen)
{
	/* Built by hand: this runs for every limited request, and snprintf
	 * showed in its profile. */
	char lim[24], rem[24], reset[24];
	const char *parts[] = { "RateLimit-Limit: ", lim, "\r\nRateLimit-Remaining: ", rem,
				"\r\nRateLimit-Reset: ", reset, "\r\nRateLimit-Policy: ", lim,
				";w=1", unit ? ";qu=\"" : "", unit ? unit : "", unit ? "\"" : "",
				"\r\nRateLimit: limit=", lim, ", remaining=", rem, ", reset=",
				reset, "\r\n" };
	size_t i, n = 0, k;

	lp_fmt_u64(lim, (uint64_t)(d->limit < 0 ? 0 : d->limit));
	lp_fmt_u64(rem, (uint64_t)(d->remaining < 0 ? 0 : d->remaining));
	lp_fmt_u64(reset, (uint64_t)(d->reset_s < 0 ? 0 : d->reset_s));
	for (i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		k = strlen(parts[i]);
		if (n + k >= outlen) {
			if (outlen)
				out[0] = '\0';
			return 0;
		}
		memcpy(out + n, parts[i], k);
		n += k;
	}
	out[n] = '\0';
	return n;
}

int gw_retry_after_s(int reset_s, int jitter_s, unsigned *seed)
{
	int base = reset_s < 1 ? 1 : reset_s;

	if (jitter_s <= 0)
		return base;
	return base + (int)((unsigned)rand_r(seed) % (unsigned)(jitter_s + 1));
}

/* ---- Redis -------------------------------------------------------------- */

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

/* Loads LEASE into Redis's script cache and remembers its SHA-1. */
static int load_script(struct gw_limiter *l, struct lp_redis *r, char *sha, size_t shalen)
{
	redisReply *rep = lp_redis_cmd(r, "SCRIPT LOAD %s", LEASE);
	int ret = -EIO;

	if (rep && rep->type == REDIS_REPLY_STRING && rep->len < shalen) {
		pthread_mutex_lock(&l->sha_mu);
		lp_strlcpy(l->sha, rep->str, sizeof(l->sha));
		pthread_mutex_unlock(&l->sha_mu);
		lp_strlcpy(sha, rep->str, shalen);
		ret = 0;
	} else if (rep && rep->type == REDIS_REPLY_ERROR) {
		lp_warn("redis: cannot load the rate-limit script: %s", rep->str);
	}
	if (rep)
		freeReplyObject(rep);
	return ret;
}

/*
 * Leases up to want tokens of key's current window.  Returns 0 with the
 * grant, the window's use and the milliseconds left in it, or -EIO.
 */
static int lease(struct gw_limiter *l, struct lp_redis *r, const char *key, long want,
		 long limit, long *grant, long *used, long *ms_left)
{
	redisReply *rep = NULL;
	char sha[48];
	int attempt, ret = -EIO;

	pthread_mutex_lock(&l->sha_mu);
	lp_strlcpy(sha, l->sha, sizeof(sha));
	pthread_mutex_unlock(&l->sha_mu);

	for (attempt = 0; attempt < 2; attempt++) {
		if (!sha[0] && load_script(l, r, sha, sizeof(sha)) < 0)
			goto out;
		rep = lp_redis_cmd(r, "EVALSHA %s 1 %s%s %ld %ld", sha, l->prefix, key, want, limit);
		if (!rep)
			goto out;
		if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
			/* Redis restarted or flushed its scripts: load again. */
			freeReplyObject(rep);
			rep = NULL;
			sha[0] = '\0';
			continue;
		}
		break;
	}
	if (!rep)
		goto out;
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
	    rep->element[0]->type != REDIS_REPLY_INTEGER ||
	    rep->element[1]->type != REDIS_REPLY_INTEGER ||
	    rep->element[2]->type != REDIS_REPLY_INTEGER) {
		lp_warn("redis: unexpected answer to the rate-limit script%s%s",
			rep->type == REDIS_REPLY_ERROR ? ": " : "",
			rep->type == REDIS_REPLY_ERROR ? rep->str : "");
		goto out;
	}
	*grant = (long)rep->element[0]->integer;
	*used = (long)rep->element[1]->integer;
	*ms_left = (long)rep->element[2]->integer;
	ret = 0;
out:
	if (rep)
		freeReplyObject(rep);
	if (ret == 0)
		lp_series_inc(*grant > 0 ? l->calls : l->calls_refused);
	else
		lp_series_inc(l->calls_err);
	return ret;
}

/* ---- shards ------------------------------------------------------------- */

static void entry_free(struct entry *e)
{
	if (e->bucket_ready)
		lp_bucket_release(&e->bucket);
	free(e->key);
	free(e);
}

static void sweep(struct shard *s, int64_t now)
{
	size_t i;

	s->last_sweep_us = now;
	for (i = 0; i < NBUCKETS; i++) {
		struct entry **pp = &s->tab[i];

		while (*pp) {
			struct entry *e = *pp;

			if (now - e->last_us > IDLE_US && !e->fetching && e->waiters == 0) {
				*pp = e->next;
				entry_free(e);
				s->n--;
			} else {
				pp = &e->next;
			}
		}
	}
}

static struct entry *find_or_add(struct shard *s, const char *key, uint64_t h, int64_t now)
{
	struct entry **head = &s->tab[h % NBUCKETS], *e;

	for (e = *head; e; e = e->next)
		if (e->hash == h && strcmp(e->key, key) == 0)
			return e;
	if (now - s->last_sweep_us > SWEEP_EVERY_US || s->n >= MAX_PER_SHARD)
		sweep(s, now);
	if (s->n >= MAX_PER_SHARD)
		return &s->overflow;
	e = lp_xcalloc(1, sizeof(*e));
	e->hash = h;
	e->key = lp_xstrdup(key);
	e->next = *head;
	*head = e;
	s->n++;
	return e;
}

static int reset_seconds(int64_t until_us, int64_t now)
{
	int64_t d = until_us - now;
	int s = (int)((d + 999999) / 1000000);

	return s < 1 ? 1 : s;
}

/* The local token bucket's decision on cost tokens. */
static void decide_locally(struct gw_limiter *l, struct entry *e, long limit, long cost,
			   int64_t now, struct gw_limit *out)
{
	double rate = (double)limit / (l->o.instances > 0 ? l->o.instances : 1);
	double burst = rate * l->o.burst_ratio;
	int64_t wait;

	if (burst < 1)
		burst = 1;
	if (!e->bucket_ready) {
		lp_bucket_init(&e->bucket, rate, burst);
		e->bucket_ready = true;
		e->bucket_rate = rate;
	} else if (e->bucket_rate != rate) {
		lp_bucket_set_rate(&e->bucket, rate, burst);
		e->bucket_rate = rate;
	}
	out->local = true;
	out->limit = (long)(rate + 0.5) > 0 ? (long)(rate + 0.5) : 1;
	/* The bucket never holds more than burst: a bigger cost would wait
	 * for ever. */
	out->too_large = (double)cost > burst;
	out->allowed = !out->too_large && lp_bucket_take_at(&e->bucket, (double)cost, now);
	out->remaining = (long)lp_bucket_available_at(&e->bucket, now);
	wait = out->allowed || out->too_large ? 0 : lp_bucket_wait_us_at(&e->bucket, (double)cost, now);
	out->reset_s = reset_seconds(now + wait, now);
}

enum verdict { DECIDED, NEED_LEASE, IN_FLIGHT };

/* Decides on cost tokens from what e holds (the shard locked), or tells
 * what is missing. */
static enum verdict decide(struct gw_limiter *l, struct shard *s, struct entry *e,
			   struct lp_redis *r, long limit, long cost, int64_t now,
			   struct gw_limit *out)
{
	if (now >= e->window_end_us) {
		e->tokens = 0;
		e->refused = false;
	}
	if (!r || e == &s->overflow || now < e->local_until_us) {
		decide_locally(l, e, limit, cost, now, out);
		return DECIDED;
	}
	if (cost > limit) { /* no window ever grants that many */
		out->allowed = false;
		out->too_large = true;
		out->remaining = e->global_left + e->tokens;
		out->reset_s = 1;
		return DECIDED;
	}
	if (e->tokens >= cost) {
		e->tokens -= cost;
		out->allowed = true;
		out->remaining = e->global_left + e->tokens;
		out->reset_s = reset_seconds(e->window_end_us, now);
		return DECIDED;
	}
	if (e->refused) { /* the window is spent; what is left serves smaller requests */
		out->allowed = false;
		out->remaining = e->tokens;
		out->reset_s = reset_seconds(e->window_end_us, now);
		return DECIDED;
	}
	return e->fetching ? IN_FLIGHT : NEED_LEASE;
}

/* Tokens to lease for a request of cost while e holds some: the usual
 * lease, or what is missing when that is more. */
static long want_of(const struct gw_limiter *l, const struct entry *e, long limit, long cost)
{
	long want = gw_lease_size(limit, l->o.lease_divisor);

	return cost - e->tokens > want ? cost - e->tokens : want;
}

/* A lease of want tokens sent at sent_us ended (rc < 0: failed): e takes
 * the result (the shard locked) and the waiters are woken. */
static void lease_done(struct gw_limiter *l, struct shard *s, struct entry *e, int rc,
		       long limit, long want, long grant, long used, long ms_left,
		       int64_t sent_us)
{
	int64_t end;

	e->fetching = false;
	atomic_store(&l->last_lease_failed, rc < 0);
	if (rc < 0) {
		e->local_until_us = lp_now_us() + (int64_t)l->o.local_retry_ms * 1000;
	} else {
		if (ms_left < 1)
			ms_left = 1;
		end = sent_us + ms_left * 1000;
		/* Tokens kept for a bigger request belong to their own window:
		 * a grant from the next one (Redis's second turned meanwhile)
		 * must not let them be spent in it. */
		if (end > e->window_end_us + 500000)
			e->tokens = 0;
		e->window_end_us = end;
		e->tokens += grant;
		e->global_left = limit - used > 0 ? limit - used : 0;
		/* Less than asked: the window is spent. */
		e->refused = grant < want;
	}
	pthread_cond_broadcast(&s->cv);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct gw_limiter *l = w->l;

	lp_log_set_request(NULL, NULL);
	for (;;) {
		struct job *j;
		long grant = 0, used = 0, ms_left = 0;
		int64_t sent_us;
		int rc;

		pthread_mutex_lock(&w->mu);
		while (!w->head && !w->stop)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->stop) { /* what is left is freed by gw_limiter_free */
			pthread_mutex_unlock(&w->mu);
			break;
		}
		j = w->head;
		w->head = j->next;
		if (!w->head)
			w->tail = NULL;
		pthread_mutex_unlock(&w->mu);
		sent_us = lp_now_us();
		rc = lease(l, w->r, j->key, j->want, j->limit, &grant, &used, &ms_left);
		pthread_mutex_lock(&j->s->mu);
		lease_done(l, j->s, j->e, rc, j->limit, j->want, grant, used, ms_left, sent_us);
		pthread_mutex_unlock(&j->s->mu);
		free(j->key);
		free(j);
		pthread_mutex_lock(&l->notify_mu);
		if (l->on_lease)
			l->on_lease(l->on_lease_ud);
		pthread_mutex_unlock(&l->notify_mu);
	}
	return NULL;
}

static struct lp_redis *redis_of(struct gw_limiter *l, uint64_t h, int *idx)
{
	if (!l->nconns)
		return NULL;
	*idx = (int)((h / NSHARDS) % (uint64_t)l->nconns);
	return l->conns[*idx];
}

void gw_limiter_take(struct gw_limiter *l, const char *key, long limit, long cost,
		     struct gw_limit *out)
{
	uint64_t h = fnv1a(key);
	struct shard *s = &l->shards[h % NSHARDS];
	int idx = 0;
	struct lp_redis *r = redis_of(l, h, &idx);
	int64_t now = lp_now_us();
	struct job *j = NULL;
	struct entry *e;

	memset(out, 0, sizeof(*out));
	out->limit = limit;
	if (limit < 1)
		limit = 1;
	if (cost < 1)
		cost = 1;
	pthread_mutex_lock(&s->mu);
	e = find_or_add(s, key, h, now);
	e->last_us = now;
	switch (decide(l, s, e, r, limit, cost, now, out)) {
	case DECIDED:
		break;
	case NEED_LEASE:
		if (!l->workers[idx].started) { /* no lease thread: as a failed lease */
			lease_done(l, s, e, -EIO, limit, 0, 0, 0, 0, now);
			decide_locally(l, e, limit, cost, now, out);
			break;
		}
		e->fetching = true; /* keeps e from the sweep until lease_done */
		j = lp_xcalloc(1, sizeof(*j));
		j->s = s;
		j->e = e;
		j->key = lp_xstrdup(key);
		j->want = want_of(l, e, limit, cost);
		j->limit = limit;
		/* fall through */
	case IN_FLIGHT:
		out->pending = true;
		out->remaining = 0;
		out->reset_s = 1;
		break;
	}
	pthread_mutex_unlock(&s->mu);
	if (j) {
		struct worker *w = &l->workers[idx];

		pthread_mutex_lock(&w->mu);
		if (w->tail)
			w->tail->next = j;
		else
			w->head = j;
		w->tail = j;
		pthread_cond_signal(&w->cv);
		pthread_mutex_unlock(&w->mu);
	}
	if (!out->local)
		out->limit = limit;
}

void gw_limiter_take_wait(struct gw_limiter *l, const char *key, long limit, long cost,
			  struct gw_limit *out)
{
	uint64_t h = fnv1a(key);
	struct shard *s = &l->shards[h % NSHARDS];
	int idx = 0;
	struct lp_redis *r = redis_of(l, h, &idx);
	int64_t now = lp_now_us(), deadline;
	struct entry *e;
	long grant = 0, used = 0, ms_left = 0, want;
	bool leased = false;
	int rc;

	memset(out, 0, sizeof(*out));
	out->limit = limit;
	if (limit < 1)
		limit = 1;
	if (cost < 1)
		cost = 1;
	/* Long enough for the lease in flight, never unbounded. */
	deadline = now + 2000LL * (l->o.redis_timeout_ms + 50);

	pthread_mutex_lock(&s->mu);
	e = find_or_add(s, key, h, now);
	e->last_us = now;
	for (;;) {
		enum verdict v = decide(l, s, e, r, limit, cost, now, out);

		if (v == DECIDED)
			break;
		if (v == IN_FLIGHT) {
			struct timespec ts;
			int64_t wall = lp_wall_ms() + (deadline - now) / 1000;

			if (now >= deadline) {
				decide_locally(l, e, limit, cost, now, out);
				break;
			}
			ts.tv_sec = wall / 1000;
			ts.tv_nsec = (long)(wall % 1000) * 1000000L;
			e->waiters++;
			pthread_cond_timedwait(&s->cv, &s->mu, &ts);
			e->waiters--;
			now = lp_now_us();
			continue;
		}
		/* Lease outside the lock; the entry stays (fetching blocks the sweep). */
		e->fetching = true;
		want = want_of(l, e, limit, cost);
		pthread_mutex_unlock(&s->mu);
		rc = lease(l, r, key, want, limit, &grant, &used, &ms_left);
		pthread_mutex_lock(&s->mu);
		lease_done(l, s, e, rc, limit, want, grant, used, ms_left, now);
		leased = true;
		now = lp_now_us();
	}
	pthread_mutex_unlock(&s->mu);
	if (leased) { /* a gw_limiter_take may be pending on this lease */
		pthread_mutex_lock(&l->notify_mu);
		if (l->on_lease)
			l->on_lease(l->on_lease_ud);
		pthread_mutex_unlock(&l->notify_mu);
	}
	if (!out->local)
		out->limit = limit;
}

void gw_limiter_on_lease(struct gw_limiter *l, void (*fn)(void *ud), void *ud)
{
	pthread_mutex_lock(&l->notify_mu);
	l->on_lease = fn;
	l->on_lease_ud = ud;
	pthread_mutex_unlock(&l->notify_mu);
}

/* ---- lifecycle ---------------------------------------------------------- */

struct gw_limiter *gw_limiter_new(const struct gw_limiter_opts *o)
{
	struct gw_limiter *l = lp_xcalloc(1, sizeof(*l));
	struct lp_registry *reg = lp_registry_default();
	struct lp_metric *calls;
	int i;

	l->o = *o;
	if (l->o.redis_timeout_ms <= 0)
		l->o.redis_timeout_ms = 100;
	if (l->o.redis_conns <= 0)
		l->o.redis_conns = 4;
	if (l->o.redis_conns > MAX_CONNS)
		l->o.redis_conns = MAX_CONNS;
	if (l->o.lease_divisor <= 0)
		l->o.lease_divisor = 20;
	if (l->o.burst_ratio <= 0)
		l->o.burst_ratio = 1;
	if (l->o.instances <= 0)
		l->o.instances = 1;
	if (l->o.local_retry_ms <= 0)
		l->o.local_retry_ms = 1000;
	l->prefix = lp_xstrdup(o->prefix && *o->prefix ? o->prefix : "logpipe:rl:");
	l->o.prefix = l->prefix;
	l->o.redis_url = NULL;
	pthread_mutex_init(&l->sha_mu, NULL);
	pthread_mutex_init(&l->notify_mu, NULL);
	for (i = 0; i < NSHARDS; i++) {
		pthread_mutex_init(&l->shards[i].mu, NULL);
		pthread_cond_init(&l->shards[i].cv, NULL);
	}
	calls = lp_metric_new(reg, LP_COUNTER, "gateway_ratelimit_redis_calls_total",
			      "Token leases asked of Redis, by result", "result", NULL, 0);
	l->calls = lp_metric_series(calls, "granted");
	l->calls_refused = lp_metric_series(calls, "refused");
	l->calls_err = lp_metric_series(calls, "error");

	if (o->redis_url && *o->redis_url) {
		l->breaker = lp_breaker_new("redis", NULL);
		l->nconns = l->o.redis_conns;
		for (i = 0; i < l->nconns; i++) {
			struct worker *w = &l->workers[i];

			l->conns[i] = lp_redis_new(o->redis_url, l->o.redis_timeout_ms, l->breaker);
			w->l = l;
			w->r = l->conns[i];
			pthread_mutex_init(&w->mu, NULL);
			pthread_cond_init(&w->cv, NULL);
			w->started = pthread_create(&w->th, NULL, worker_main, w) == 0;
			if (!w->started)
				lp_error("rate limiter: cannot start a lease thread");
		}
	}
	return l;
}

void gw_limiter_free(struct gw_limiter *l)
{
	int i;
	size_t b;

	if (!l)
		return;
	for (i = 0; i < l->nconns; i++) {
		struct worker *w = &l->workers[i];

		pthread_mutex_lock(&w->mu);
		w->stop = true;
		pthread_cond_signal(&w->cv);
		pthread_mutex_unlock(&w->mu);
		if (w->started)
			pthread_join(w->th, NULL);
		while (w->head) {
			struct job *j = w->head;

			w->head = j->next;
			free(j->key);
			free(j);
		}
		pthread_mutex_destroy(&w->mu);
		pthread_cond_destroy(&w->cv);
	}
	for (i = 0; i < l->nconns; i++)
		lp_redis_free(l->conns[i]);
	lp_breaker_free(l->breaker);
	for (i = 0; i < NSHARDS; i++) {
		struct shard *s = &l->shards[i];

		for (b = 0; b < NBUCKETS; b++) {
			while (s->tab[b]) {
				struct entry *e = s->tab[b];

				s->tab[b] = e->next;
				entry_free(e);
			}
		}
		if (s->overflow.bucket_ready)
			lp_bucket_release(&s->overflow.bucket);
		pthread_mutex_destroy(&s->mu);
		pthread_cond_destroy(&s->cv);
	}
	pthread_mutex_destroy(&l->sha_mu);
	pthread_mutex_destroy(&l->notify_mu);
	free(l->prefix);
	free(l);
}

struct lp_breaker *gw_limiter_breaker(struct gw_limiter *l)
{
	return l->breaker;
}

bool gw_limiter_shared(struct gw_limiter *l)
{
	return l && l->breaker && lp_breaker_state(l->breaker) == LP_BREAKER_CLOSED &&
	       !atomic_load(&l->last_lease_failed);
}

int gw_limiter_ping(struct gw_limiter *l)
{
	if (!l->nconns)
		return -ENOENT;
	return lp_redis_ping(l->conns[0]);
}
