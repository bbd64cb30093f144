/* tail.h - live tail: GET /api/logs/tail streams events as they are stored,
 * as Server-Sent Events.
 *
 * The store thread appends every event of a committed transaction to an
 * in-memory ring of the last tail.buffer events, each with a sequence
 * number that only grows (1, 2, ... per consumer process) and is sent as
 * the SSE id.  Tail handlers (CivetWeb worker threads, at most
 * tail.max_clients at once, 503 above) wait on the ring's condition
 * variable, filter with the query API's filters (query.h) and write
 *   id: N\ndata: {json}\n\n
 * frames.  Appending never waits for a client: the ring is overwritten,
 * and a client's state is only the next sequence number it wants.  A
 * client that falls behind the ring (it did not read while more than
 * tail.buffer events were stored) gets
 *   event: dropped\ndata: {"count":K}\n\n
 * and continues with the oldest event the ring still holds.  A comment
 * line (": keepalive") goes out after tail.heartbeat_ms without a frame.
 * Last-Event-ID: N resumes after N, without a gap while N + 1 is still in
 * the ring. */
#ifndef LOGPIPE_CONSUMER_TAIL_H
#define LOGPIPE_CONSUMER_TAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "logpipe/buf.h"
#include "logpipe/event.h"

struct lp_http_server;
struct query_filter;

/* One stored event as the tail sends it: its compact JSON and the fields
 * the filters look at, all in one allocation. */
struct tail_rec {
	int level_rank;       /* 0 TRACE .. 5 FATAL */
	const char *service, *host, *tenant, *trace_id, *message; /* "" when absent */
	size_t json_len;
	char json[];          /* compact JSON, NUL-terminated, then the strings */
};

/* A record of event ev (a stored event object: level canonical or not),
 * or NULL when it has no JSON form.  text[0, len) is ev's compact JSON
 * text as received (NULL: none); the record keeps it as its JSON when its
 * level is already canonical, and serialises ev otherwise. */
struct tail_rec *tail_rec_new(json_t *ev, const char *text, size_t len);

/* The record tail_rec_new(ev, text, len) makes, from what
 * store_format_fast found in text (v, the stored level's rank, and whether
 * the level is absent or spelled as stored), without a JSON tree; tmp is
 * scratch.  NULL when tail_rec_new would serialise the event again (a
 * level spelled otherwise, a line break in text): the caller then takes
 * the full path. */
struct tail_rec *tail_rec_scanned(const char *text, size_t len, const struct lp_event_stored *v,
				  int rank, bool as_stored, struct lp_buf *tmp);

/* A record whose JSON is text[0, len) as it is (no line break in it, its
 * level spelled as stored), of level rank and with the given service,
 * host, tenant, trace_id and message ("" when absent). */
struct tail_rec *tail_rec_of(const char *text, size_t len, int rank, const char *const vals[5]);

/* True when rec passes f's service, host, tenant, trace_id, level,
 * min_level and text filters (text: every word of it occurs as a word of
 * the message, ASCII letters in any case).  from, to, limit and cursor do
 * not apply to a tail. */
bool tail_match(const struct query_filter *f, const struct tail_rec *rec);

struct tail_ring;

/* cap: events kept (at least 1). */
struct tail_ring *tail_ring_new(size_t cap);
void tail_ring_free(struct tail_ring *t);
/* Appends recs (taking them over, NULL entries skipped) and wakes the
 * waiting handlers.  Never waits for a reader. */
void tail_ring_append(struct tail_ring *t, struct tail_rec **recs, size_t n);
/* The sequence number of the newest event, 0 before the first. */
uint64_t tail_ring_head(struct tail_ring *t);
/* Wakes every waiter for good: tail_ring_read returns -ECANCELED. */
void tail_ring_close(struct tail_ring *t);

/* Waits up to timeout_ms for events from *next on, then appends the frames
 * of those matching f (f NULL: all) to out until it holds max_bytes or
 * more, advancing *next past every event looked at.  When *next had
 * already left the ring, *dropped is set to the number of events lost and
 * *next to the oldest one kept (0 otherwise).  *next beyond head + 1
 * (a Last-Event-ID of another process) is taken as head + 1.  Returns the
 * number of frames appended (0: timed out or none matched), or -ECANCELED
 * after tail_ring_close. */
int tail_ring_read(struct tail_ring *t, uint64_t *next, const struct query_filter *f,
		   struct lp_buf *out, size_t max_bytes, uint64_t *dropped, int timeout_ms);

/* ---- HTTP --------------------------------------------------------------- */

struct tail_api;

struct tail_api *tail_api_new(struct tail_ring *ring, int max_clients, int heartbeat_ms);
/* Makes the handlers in flight return (before stopping the server). */
void tail_api_stop(struct tail_api *ta);
void tail_api_free(struct tail_api *ta);
/* Registers GET /api/logs/tail (before query_api_routes' /api/logs/{id}). */
int tail_api_routes(struct tail_api *ta, struct lp_http_server *s);

#endif
