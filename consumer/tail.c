/* tail.c - live tail of stored events (see tail.h). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logpipe/event.h"
#include "logpipe/http.h"
#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/util.h"
#include "query.h"
#include "tail.h"

#include "logpipe/banned.h"

/* Frames taken from the ring in one go before they are written. */
#define TAIL_CHUNK_BYTES (64 * 1024)

/* ---- records -------------------------------------------------------------- */

static const char *str_of(json_t *ev, const char *key)
{
	const char *s = json_string_value(json_object_get(ev, key));

	return s ? s : "";
}

struct tail_rec *tail_rec_of(const char *text, size_t len, int rank, const char *const vals[5])
{
	size_t lens[5], total = len + 1, i;
	struct tail_rec *rec;
	const char *at[5];
	char *p;

	for (i = 0; i < 5; i++) {
		lens[i] = strlen(vals[i]);
		total += lens[i] + 1;
	}
	rec = lp_xmalloc(sizeof(*rec) + total);
	rec->json_len = len;
	memcpy(rec->json, text, len);
	rec->json[len] = '\0';
	p = rec->json + rec->json_len + 1;
	for (i = 0; i < 5; i++) {
		memcpy(p, vals[i], lens[i] + 1);
		at[i] = p;
		p += lens[i] + 1;
	}
	rec->service = at[0];
	rec->host = at[1];
	rec->tenant = at[2];
	rec->trace_id = at[3];
	rec->message = at[4];
	rec->level_rank = rank;
	return rec;
}

struct tail_rec *tail_rec_scanned(const char *text, size_t len, const struct lp_event_stored *v,
				  int rank, bool as_stored, struct lp_buf *tmp)
{
	const struct lp_json_text *f[5] = { &v->service, &v->host, &v->tenant, &v->trace_id,
					    &v->message };
	const char *vals[5];
	size_t off[5], i;

	if (!as_stored || memchr(text, '\n', len) || memchr(text, '\r', len))
		return NULL;
	lp_buf_reset(tmp);
	for (i = 0; i < 5; i++) {
		off[i] = tmp->len;
		lp_json_text_add(tmp, f[i]);
		lp_buf_addch(tmp, '\0');
	}
	for (i = 0; i < 5; i++)
		vals[i] = tmp->buf + off[i];
	return tail_rec_of(text, len, rank, vals);
}

struct tail_rec *tail_rec_new(json_t *ev, const char *text, size_t len)
{
	static const char *const keys[] = { "service", "host", "tenant", "trace_id", "message" };
	const char *vals[5], *canon, *level;
	struct tail_rec *rec;
	char *json = NULL;
	size_t i;

	/* The level as stored: "warning" is WARN.  When the record's text
	 * already says what the stored row says (the enricher's records
	 * always do), it is the tail's text as it is: a second serialisation
	 * of every event would cost the store as much CPU as its COPY.  A
	 * text with a line break is serialised anyway: an SSE data line
	 * cannot hold one. */
	level = str_of(ev, "level");
	canon = lp_level_canonical(level);
	if (!text || memchr(text, '\n', len) || memchr(text, '\r', len) ||
	    (canon && strcmp(canon, level) != 0)) {
		if (canon)
			json_object_set_new(ev, "level", json_string(canon));
		json = json_dumps(ev, JSON_COMPACT);
		if (!json)
			return NULL;
		text = json;
		len = strlen(json);
	}
	for (i = 0; i < LP_ARRAY_SIZE(keys); i++)
		vals[i] = str_of(ev, keys[i]);
	rec = tail_rec_of(text, len, lp_level_rank(canon ? canon : "INFO"), vals);
	free(json);
	return rec;
}

static bool word_char(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       c == '_' || (unsigned char)c >= 0x80;
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* True when the word w[0..n) occurs as a whole word of s. */
static bool has_word(const char *s, const char *w, size_t n)
{
	while (*s) {
		size_t len = 0, i;

		while (*s && !word_char(*s))
			s++;
		while (word_char(s[len]))
			len++;
		if (len == n) {
			for (i = 0; i < n && lower(s[i]) == lower(w[i]); i++)
				;
			if (i == n)
				return true;
		}
		s += len;
	}
	return false;
}

bool tail_match(const struct query_filter *f, const struct tail_rec *rec)
{
	const char *w;

	if (!f)
		return true;
	if ((f->service[0] && strcmp(f->service, rec->service) != 0) ||
	    (f->host[0] && strcmp(f->host, rec->host) != 0) ||
	    (f->tenant[0] && strcmp(f->tenant, rec->tenant) != 0) ||
	    (f->trace_id[0] && strcasecmp(f->trace_id, rec->trace_id) != 0) ||
	    (f->level_rank >= 0 && rec->level_rank != f->level_rank) ||
	    (f->min_rank >= 0 && rec->level_rank < f->min_rank))
		return false;
	for (w = f->text; *w;) {
		size_t n = 0;

		while (*w && !word_char(*w))
			w++;
		while (word_char(w[n]))
			n++;
		if (n > 0 && !has_word(rec->message, w, n))
			return false;
		w += n;
	}
	return true;
}

/* ---- the ring ------------------------------------------------------------- */

struct tail_ring {
	pthread_mutex_t mu;
	pthread_cond_t cv;       /* broadcast on every append and on close */
	struct tail_rec **slots; /* event seq lives in slots[seq % cap] */
	size_t cap;
	uint64_t head;           /* seq of the newest event, 0 before the first */
	bool closed;
};

struct tail_ring *tail_ring_new(size_t cap)
{
	struct tail_ring *t = lp_xcalloc(1, sizeof(*t));
	pthread_condattr_t ca;

	t->cap = cap ? cap : 1;
	t->slots = lp_xcalloc(t->cap, sizeof(*t->slots));
	pthread_mutex_init(&t->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cv, &ca);
	pthread_condattr_destroy(&ca);
	return t;
}

void tail_ring_free(struct tail_ring *t)
{
	size_t i;

	if (!t)
		return;
	for (i = 0; i < t->cap; i++)
		free(t->slots[i]);
	free(t->slots);
	pthread_cond_destroy(&t->cv);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

void tail_ring_append(struct tail_ring *t, struct tail_rec **recs, size_t n)
{
	struct tail_rec **old = lp_xcalloc(n ? n : 1, sizeof(*old));
	size_t i, nold = 0;

	pthread_mutex_lock(&t->mu);
	for (i = 0; i < n; i++) {
		struct tail_rec **slot;

		if (!recs[i])
			continue;
		t->head++;
		slot = &t->slots[t->head % t->cap];
		old[nold++] = *slot;
		*slot = recs[i];
	}
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
	/* Freed outside the lock: readers copy what they send under it. */
	for (i = 0; i < nold; i++)
		free(old[i]);
	free(old);
}

uint64_t tail_ring_head(struct tail_ring *t)
{
	uint64_t h;

	pthread_mutex_lock(&t->mu);
	h = t->head;
	pthread_mutex_unlock(&t->mu);
	return h;
}

void tail_ring_close(struct tail_ring *t)
{
	pthread_mutex_lock(&t->mu);
	t->closed = true;
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

int tail_ring_read(struct tail_ring *t, uint64_t *next, const struct query_filter *f,
		   struct lp_buf *out, size_t max_bytes, uint64_t *dropped, int timeout_ms)
{
	struct timespec until;
	uint64_t oldest;
	int frames = 0;

	*dropped = 0;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&t->mu);
	if (*next > t->head + 1 || *next == 0)
		*next = t->head + 1;
	while (!t->closed && t->head < *next)
		if (pthread_cond_timedwait(&t->cv, &t->mu, &until) == ETIMEDOUT)
			break;
	if (t->closed) {
		pthread_mutex_unlock(&t->mu);
		return -ECANCELED;
	}
	oldest = t->head >= t->cap ? t->head - t->cap + 1 : 1;
	if (*next < oldest) {
		*dropped = oldest - *next;
		*next = oldest;
	}
	for (; *next <= t->head && out->len < max_bytes; (*next)++) {
		const struct tail_rec *rec = t->slots[*next % t->cap];

		if (!tail_match(f, rec))
			continue;
		lp_buf_addf(out, "id: %llu\ndata: ", (unsigned long long)*next);
		lp_buf_add(out, rec->json, rec->json_len);
		lp_buf_adds(out, "\n\n");
		frames++;
	}
	pthread_mutex_unlock(&t->mu);
	return frames;
}

/* ---- HTTP ------------------------------------------------------------------- */

struct tail_api {
	struct tail_ring *ring;
	int max_clients;
	int heartbeat_ms;
	atomic_int clients;     /* handlers streaming now */
	atomic_bool stopping;
	struct lp_series *open;    /* consumer_tail_clients */
	struct lp_series *dropped; /* consumer_tail_dropped_total */
	struct lp_series *refused; /* consumer_tail_refused_total */
};

struct tail_api *tail_api_new(struct tail_ring *ring, int max_clients, int heartbeat_ms)
{
	struct tail_api *ta = lp_xcalloc(1, sizeof(*ta));

	ta->ring = ring;
	ta->max_clients = max_clients;
	ta->heartbeat_ms = heartbeat_ms > 0 ? heartbeat_ms : 15000;
	atomic_init(&ta->clients, 0);
	atomic_init(&ta->stopping, false);
	ta->open = lp_gauge(lp_registry_default(), "consumer_tail_clients",
			    "Live tails (GET /api/logs/tail) streaming now");
	ta->dropped = lp_counter(lp_registry_default(), "consumer_tail_dropped_total",
				 "Events live-tail clients missed because they fell behind the ring");
	ta->refused = lp_counter(lp_registry_default(), "consumer_tail_refused_total",
				 "Live tails refused with 503 (tail.max_clients were open)");
	return ta;
}

void tail_api_stop(struct tail_api *ta)
{
	if (!ta)
		return;
	atomic_store(&ta->stopping, true);
	tail_ring_close(ta->ring);
}

void tail_api_free(struct tail_api *ta)
{
	free(ta);
}

static int http_get(void *ud, const char *name, char *out, size_t outlen)
{
	return lp_http_query(ud, name, out, outlen);
}

/* Where a client starts: after its Last-Event-ID, or after the newest event. */
static uint64_t start_seq(struct tail_api *ta, struct lp_http_req *r)
{
	const char *v = lp_http_header(r, "Last-Event-ID");
	unsigned long long id;
	char *end;

	if (v && *v >= '0' && *v <= '9') {
		errno = 0;
		id = strtoull(v, &end, 10);
		if (!errno && !*end && id < UINT64_MAX)
			return (uint64_t)id + 1;
	}
	return tail_ring_head(ta->ring) + 1;
}

static void stream(struct tail_api *ta, struct lp_http_req *r, const struct query_filter *f)
{
	struct lp_buf out = LP_BUF_INIT;
	uint64_t next = start_seq(ta, r), dropped;
	int64_t last_write = lp_now_ms();
	int n;

	if (lp_http_stream_begin(r, 200, "text/event-stream",
				 "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n") < 0)
		return;
	/* The head and a first comment go out at once: the client knows it is
	 * connected (and the gateway passes the answer on) before any event. */
	if (lp_http_stream_write(r, ": connected\n\n", 13) < 0)
		return;
	while (!atomic_load(&ta->stopping)) {
		int64_t wait = ta->heartbeat_ms - (lp_now_ms() - last_write);

		lp_buf_reset(&out);
		n = tail_ring_read(ta->ring, &next, f, &out, TAIL_CHUNK_BYTES, &dropped,
				   wait > 0 ? (int)wait : 0);
		if (n < 0)
			break;
		if (dropped) {
			char d[96];
			int dl;

			lp_series_add(ta->dropped, (double)dropped);
			dl = snprintf(d, sizeof(d), "event: dropped\ndata: {\"count\":%llu}\n\n",
					  (unsigned long long)dropped);

			if (lp_http_stream_write(r, d, (size_t)dl) < 0)
				break;
			last_write = lp_now_ms();
		}
		if (out.len > 0) {
			if (lp_http_stream_write(r, out.buf, out.len) < 0)
				break;
			last_write = lp_now_ms();
		} else if (lp_now_ms() - last_write >= ta->heartbeat_ms) {
			/* Keeps proxies from timing the stream out and finds a
			 * client that went away. */
			if (lp_http_stream_write(r, ": keepalive\n\n", 13) < 0)
				break;
			last_write = lp_now_ms();
		}
	}
	lp_buf_release(&out);
}

static void handle_tail(struct lp_http_req *r, void *ud)
{
	struct tail_api *ta = ud;
	struct query_filter *f;
	const char *tenant = lp_http_header(r, "X-Tenant-ID");
	char param[32], err[200];

	if (strcmp(r->method, "HEAD") == 0) {
		/* The head of a stream: no body, or HEAD would never end. */
		lp_http_reply(r, 200, "text/event-stream", NULL, 0, NULL);
		return;
	}
	if (atomic_fetch_add(&ta->clients, 1) >= ta->max_clients) {
		atomic_fetch_sub(&ta->clients, 1);
		lp_series_inc(ta->refused);
		lp_http_reply_error(r, 503, "too_many_tails", "Retry-After: 5\r\n",
				    "%d live tails are open, the most tail.max_clients allows",
				    ta->max_clients);
		return;
	}
	f = lp_xmalloc(sizeof(*f));
	if (query_parse_filter(f, http_get, r, true, lp_wall_ms(), param, sizeof(param), err,
			       sizeof(err)) < 0) {
		lp_http_reply_error(r, 400, "invalid_parameter", NULL, "parameter '%s' %s", param,
				    err);
	} else if (tenant && *tenant &&
		   ((f->tenant[0] && strcmp(f->tenant, tenant) != 0) ||
		    strlen(tenant) > QUERY_MAX_FIELD)) {
		/* A tenant's key sees its own tenant's events only. */
		lp_http_reply_error(r, 403, "forbidden", NULL,
				    "this API key may only read tenant '%s'", tenant);
	} else {
		if (tenant && *tenant)
			lp_strlcpy(f->tenant, tenant, sizeof(f->tenant));
		lp_series_add(ta->open, 1);
		stream(ta, r, f);
		lp_series_add(ta->open, -1);
	}
	free(f);
	atomic_fetch_sub(&ta->clients, 1);
}

int tail_api_routes(struct tail_api *ta, struct lp_http_server *s)
{
	return lp_http_route(s, "GET", "/api/logs/tail", handle_tail, ta);
}
