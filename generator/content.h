/* content.h - what a synthetic log event says: services, hosts, the level
 * mix, error bursts, messages, and the serialised event padded to a size.
 *
 * Everything here is pure: randomness comes from a caller-owned generator
 * (struct gen_rng), time from the caller, so tests can replay it.  The
 * tables are constant and shared; the functions are thread-safe as long
 * as each thread has its own gen_rng and buffers. */
#ifndef LOGPIPE_GENERATOR_CONTENT_H
#define LOGPIPE_GENERATOR_CONTENT_H

#include <stddef.h>
#include <stdint.h>

#include "logpipe/buf.h"

/* ---- randomness -------------------------------------------------------- */

/* xorshift64* generator: fast, good enough for synthetic content, never
 * zero once seeded. */
struct gen_rng {
	uint64_t s; /* state, never 0 */
};

void gen_rng_seed(struct gen_rng *r, uint64_t seed);
uint64_t gen_rng_next(struct gen_rng *r);
/* Uniform in [0, n); 0 when n is 0. */
uint32_t gen_rng_below(struct gen_rng *r, uint32_t n);

/* ---- the catalogue ----------------------------------------------------- */

/* A host the generated events come from.  The extra fields are what
 * metadata-svc should know about it (GET /api/v1/generator/catalog), so
 * that enrichment has something to add. */
struct gen_host {
	const char *name;        /* "web-01" */
	const char *ip;          /* "192.168.1.101" */
	const char *datacenter;  /* "us-east-1" */
	const char *environment; /* "production" */
	const char *cost_center; /* "engineering" */
};

/* A service: who runs it, where, what it serves and how much traffic it
 * takes. */
struct gen_service {
	const char *name;              /* the event's `service` and the Kafka key */
	const char *team;              /* metadata: owning team */
	const char *owner;             /* metadata: owner's address */
	const char *tier;              /* metadata: "critical", "high", "standard" */
	unsigned weight;               /* share of the traffic, relative */
	const unsigned char *hosts;    /* indexes into gen_hosts */
	size_t nhosts;
	const char *const *endpoints;  /* "POST /api/v1/payments" */
	size_t nendpoints;
};

extern const struct gen_host gen_hosts[];
extern const size_t gen_nhosts;
extern const struct gen_service gen_services[];
extern const size_t gen_nservices;

/* Draws a service index by traffic weight. */
size_t gen_service_draw(struct gen_rng *r);

/* ---- levels ------------------------------------------------------------ */

enum gen_level { GEN_TRACE, GEN_DEBUG, GEN_INFO, GEN_WARN, GEN_ERROR, GEN_FATAL, GEN_NLEVELS };

extern const char *const gen_level_names[GEN_NLEVELS];
/* Weights per 10,000 events.  Normal traffic: 70 % INFO, 15 % DEBUG,
 * 10 % WARN, 4 % ERROR, 0.5 % TRACE, 0.5 % FATAL.  A service in an error
 * burst logs mostly ERROR and WARN. */
extern const unsigned gen_level_mix[GEN_NLEVELS];
extern const unsigned gen_burst_mix[GEN_NLEVELS];

/* Draws a level from mix (weights summing to 10,000). */
enum gen_level gen_level_draw(struct gen_rng *r, const unsigned mix[GEN_NLEVELS]);

/* ---- events ------------------------------------------------------------ */

/* What one event must look like. */
struct gen_event_spec {
	int64_t now_ms;          /* wall clock: timestamp and received_at */
	size_t size_bytes;       /* target length of the serialised event */
	int burst_service;       /* index of the service in an error burst, -1 if none */
	const char *instance_id; /* attributes.generator */
	uint64_t seq;            /* attributes.seq: this instance's event number */
};

/* Scratch space a thread reuses for every event, so that writing one
 * allocates nothing once warm. */
struct gen_writer {
	struct lp_buf out;  /* the serialised event */
	struct lp_buf tail; /* fields after the message, built apart */
	int64_t ts_sec;     /* the second ts was formatted for, -1 for none */
	char ts[32];        /* its RFC 3339 text; the milliseconds are rewritten */
	size_t ts_len;      /* strlen(ts) */
};

void gen_writer_init(struct gen_writer *w);
void gen_writer_release(struct gen_writer *w);

/* Writes one event in the producer's normalised schema (see event.h) into
 * w->out, replacing what was there.  The message is padded with filler
 * words, or trimmed of its optional fields (attributes, then
 * correlation_id, then tenant) and then shortened, so that the event is
 * exactly size_bytes long whenever that is at least GEN_MIN_EVENT_BYTES.
 * Returns the service, which is also the Kafka key. */
const struct gen_service *gen_event_write(struct gen_writer *w, struct gen_rng *r,
					  const struct gen_event_spec *s);

/* No event is shorter than this, whatever size_bytes asks: the required
 * fields, host, source_ip and a few words of message. */
#define GEN_MIN_EVENT_BYTES 300

#endif
