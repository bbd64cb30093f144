/* content.c - what a synthetic log event says.
 *
 * Design.  An event is drawn in three steps: a service by traffic weight,
 * one of that service's hosts, then a level from the normal mix or, while
 * the service is in an error burst, from the burst mix.  The message is
 * chosen by level (request completed, slow request, upstream failure, ...)
 * with the service's own endpoints and business words, request ids and
 * latencies, so that a search over the stored logs finds something
 * plausible.
 *
 * Size.  The event is serialised by hand into a buffer, in the field
 * order of event.h, in two parts: everything up to the end of the message
 * text, and the fields after it (the "tail").  Their total length tells
 * how far from size_bytes the event is.  When short, filler words are
 * appended to the message; when long, the tail is rebuilt with fewer
 * optional fields and then the message is cut.  The event is therefore
 * exactly size_bytes long from GEN_MIN_EVENT_BYTES up, at the cost of two
 * memcpy's, and no JSON library is involved on this hot path.  Every
 * string written is either from the tables below (checked to need no
 * escaping), a number, or escaped with lp_buf_add_json_str. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "content.h"
#include "logpipe/event.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

/* ---- randomness -------------------------------------------------------- */

void gen_rng_seed(struct gen_rng *r, uint64_t seed)
{
	/* One splitmix64 step spreads similar seeds (thread numbers) apart. */
	uint64_t z = seed + 0x9e3779b97f4a7c15ULL;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	z ^= z >> 31;
	r->s = z ? z : 0x2545f4914f6cdd1dULL;
}

uint64_t gen_rng_next(struct gen_rng *r)
{
	uint64_t x = r->s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	r->s = x;
	return x * 0x2545f4914f6cdd1dULL;
}

uint32_t gen_rng_below(struct gen_rng *r, uint32_t n)
{
	/* Multiply-shift maps 32 random bits onto [0, n) with a bias below
	 * n / 2^32, invisible in synthetic content. */
	return n ? (uint32_t)(((gen_rng_next(r) >> 32) * (uint64_t)n) >> 32) : 0;
}

/* ---- the catalogue ----------------------------------------------------- */

const struct gen_host gen_hosts[] = {
	{ "web-01", "192.168.1.101", "us-east-1", "production", "engineering" },
	{ "web-02", "192.168.1.102", "us-east-1", "production", "engineering" },
	{ "web-03", "192.168.1.103", "us-west-2", "production", "engineering" },
	{ "web-04", "192.168.1.104", "us-west-2", "production", "engineering" },
	{ "api-01", "192.168.1.111", "us-east-1", "production", "payments" },
	{ "api-02", "192.168.1.112", "us-east-1", "production", "payments" },
	{ "api-03", "192.168.1.113", "us-west-2", "production", "commerce" },
	{ "api-04", "192.168.1.114", "us-west-2", "production", "commerce" },
	{ "worker-01", "192.168.1.121", "us-east-1", "production", "operations" },
	{ "worker-02", "192.168.1.122", "us-west-2", "production", "operations" },
	{ "worker-03", "192.168.1.123", "eu-central-1", "staging", "operations" },
	{ "search-01", "192.168.1.131", "eu-central-1", "production", "engineering" },
};
const size_t gen_nhosts = LP_ARRAY_SIZE(gen_hosts);

#define HOSTS(...) (const unsigned char[]){ __VA_ARGS__ }, \
	sizeof((const unsigned char[]){ __VA_ARGS__ })
#define ENDPOINTS(...) (const char *const[]){ __VA_ARGS__ }, \
	sizeof((const char *const[]){ __VA_ARGS__ }) / sizeof(const char *)

/* Indexes of gen_services, which pick each service's business messages. */
enum { SVC_USER, SVC_AUTH, SVC_ORDER, SVC_PAYMENT, SVC_INVENTORY, SVC_SEARCH, SVC_NOTIFICATION,
       SVC_SHIPPING };

const struct gen_service gen_services[] = {
	[SVC_USER] = { "user-service", "identity", "identity-team@example.com", "high", 20,
	  HOSTS(0, 1),
	  ENDPOINTS("GET /api/v1/users", "POST /api/v1/users", "PUT /api/v1/users/profile",
		    "GET /api/v1/users/preferences") },
	[SVC_AUTH] = { "auth-service", "identity", "security-team@example.com", "critical", 15,
	  HOSTS(2, 3),
	  ENDPOINTS("POST /oauth/token", "POST /api/v1/login", "POST /api/v1/logout",
		    "GET /.well-known/jwks.json") },
	[SVC_ORDER] = { "order-service", "commerce", "orders-team@example.com", "critical", 15,
	  HOSTS(6, 7),
	  ENDPOINTS("POST /api/v1/orders", "GET /api/v1/orders", "POST /api/v1/orders/cancel",
		    "GET /api/v1/orders/history") },
	[SVC_PAYMENT] = { "payment-service", "payments", "payments-team@example.com", "critical", 12,
	  HOSTS(4, 5),
	  ENDPOINTS("POST /api/v1/payments", "POST /api/v1/payments/capture",
		    "POST /api/v1/refunds", "GET /api/v1/payments/status") },
	[SVC_INVENTORY] = { "inventory-service", "commerce", "inventory-team@example.com", "high", 12,
	  HOSTS(8, 9),
	  ENDPOINTS("GET /api/v1/stock", "POST /api/v1/stock/reserve",
		    "POST /api/v1/stock/release", "PUT /api/v1/stock/adjust") },
	[SVC_SEARCH] = { "search-service", "discovery", "search-team@example.com", "standard", 12,
	  HOSTS(11, 0),
	  ENDPOINTS("GET /api/v1/search", "GET /api/v1/search/suggest",
		    "POST /api/v1/search/reindex") },
	[SVC_NOTIFICATION] = { "notification-service", "platform", "platform-team@example.com", "standard", 8,
	  HOSTS(10, 8),
	  ENDPOINTS("POST /api/v1/notifications/email", "POST /api/v1/notifications/sms",
		    "POST /api/v1/notifications/push") },
	[SVC_SHIPPING] = { "shipping-service", "logistics", "logistics-team@example.com", "high", 6,
	  HOSTS(9, 7),
	  ENDPOINTS("POST /api/v1/shipments", "GET /api/v1/shipments/track",
		    "POST /api/v1/shipments/label") },
};
const size_t gen_nservices = LP_ARRAY_SIZE(gen_services);

size_t gen_service_draw(struct gen_rng *r)
{
	unsigned total = 0, x;
	size_t i;

	for (i = 0; i < gen_nservices; i++)
		total += gen_services[i].weight;
	x = gen_rng_below(r, total);
	for (i = 0; i + 1 < gen_nservices; i++) {
		if (x < gen_services[i].weight)
			return i;
		x -= gen_services[i].weight;
	}
	return i;
}

/* ---- levels ------------------------------------------------------------ */

const char *const gen_level_names[GEN_NLEVELS] = { "TRACE", "DEBUG", "INFO",
						   "WARN",  "ERROR", "FATAL" };
/*                                       TRACE DEBUG INFO  WARN  ERROR FATAL */
const unsigned gen_level_mix[GEN_NLEVELS] = { 50, 1500, 7000, 1000, 400, 50 };
const unsigned gen_burst_mix[GEN_NLEVELS] = { 0, 500, 2500, 2000, 4700, 300 };

enum gen_level gen_level_draw(struct gen_rng *r, const unsigned mix[GEN_NLEVELS])
{
	unsigned x = gen_rng_below(r, 10000);
	int l;

	for (l = 0; l < GEN_NLEVELS - 1; l++) {
		if (x < mix[l])
			return (enum gen_level)l;
		x -= mix[l];
	}
	return GEN_FATAL;
}

/* ---- messages ---------------------------------------------------------- */

/* Words a message can use.  None needs JSON escaping. */
static const char *const failure_reasons[] = {
	"upstream timeout after 5000ms",
	"connection refused by db-01:5432",
	"deadlock detected, transaction rolled back",
	"circuit breaker open for downstream dependency",
	"unexpected end of stream from cache-01:6379",
	"TLS handshake failed with partner endpoint",
	"too many open files",
	"constraint violation on unique index",
};
static const char *const fatal_reasons[] = {
	"out of memory, cannot allocate worker buffer",
	"database connection pool exhausted after 30 retries",
	"configuration reload failed, refusing to serve",
	"disk full on /var/lib/app, cannot write journal",
};
static const char *const debug_what[] = {
	"cache lookup", "feature flag evaluation", "SQL query", "token validation",
	"rate limit check", "schema validation",
};
static const char *const currencies[] = { "EUR", "USD", "GBP", "JPY" };
static const char *const tenants[] = { "acme-corp", "globex", "initech", "umbrella", "hooli" };
static const char *const channels[] = { "email", "sms", "push" };

#define PICK(r, a) ((a)[gen_rng_below((r), LP_ARRAY_SIZE(a))])

/* Details of the request an event talks about, shared by the message and
 * the attributes. */
struct request {
	char id[24];          /* "req_" + 16 hex digits */
	const char *endpoint; /* one of the service's endpoints */
	unsigned status;      /* HTTP status */
	unsigned latency_ms;  /* how long it took */
};

static unsigned latency_for(struct gen_rng *r, enum gen_level l)
{
	switch (l) {
	case GEN_WARN:
		return 500 + gen_rng_below(r, 2500);
	case GEN_ERROR:
	case GEN_FATAL:
		return gen_rng_below(r, 4) ? 5000 : 20 + gen_rng_below(r, 300);
	default:
		/* Most requests are quick, one in twenty is in the long tail. */
		return gen_rng_below(r, 20) ? 2 + gen_rng_below(r, 80) : 80 + gen_rng_below(r, 400);
	}
}

static void request_draw(struct request *q, struct gen_rng *r, const struct gen_service *svc,
			 enum gen_level l)
{
	static const unsigned ok[] = { 200, 200, 200, 201, 204 };
	static const unsigned bad[] = { 500, 502, 503, 504 };

	snprintf(q->id, sizeof(q->id), "req_%016llx", (unsigned long long)gen_rng_next(r));
	q->endpoint = svc->endpoints[gen_rng_below(r, (uint32_t)svc->nendpoints)];
	q->latency_ms = latency_for(r, l);
	if (l == GEN_ERROR || l == GEN_FATAL)
		q->status = PICK(r, bad);
	else if (l == GEN_WARN)
		q->status = gen_rng_below(r, 3) ? 200 : 429;
	else
		q->status = PICK(r, ok);
}

/* A line service number si would log about its business at INFO. */
static void business_message(struct lp_buf *b, struct gen_rng *r, size_t si,
			     const struct request *q)
{
	unsigned n = gen_rng_below(r, 1000000);

	switch (si) {
	case SVC_PAYMENT:
		lp_buf_addf(b, "payment pay_%06u authorized amount=%u.%02u %s in %ums", n,
			    1 + gen_rng_below(r, 900), gen_rng_below(r, 100), PICK(r, currencies),
			    q->latency_ms);
		break;
	case SVC_ORDER:
		lp_buf_addf(b, "order ORD-%06u created items=%u total=%u.%02u customer=%u", n,
			    1 + gen_rng_below(r, 9), 5 + gen_rng_below(r, 500), gen_rng_below(r, 100),
			    gen_rng_below(r, 100000));
		break;
	case SVC_INVENTORY:
		lp_buf_addf(b, "stock reserved sku=SKU-%05u qty=%u warehouse=wh-%u remaining=%u",
			    n % 100000, 1 + gen_rng_below(r, 5), 1 + gen_rng_below(r, 4),
			    gen_rng_below(r, 2000));
		break;
	case SVC_NOTIFICATION:
		lp_buf_addf(b, "%s notification queued template=order-confirmation user=%u",
			    PICK(r, channels), n);
		break;
	case SVC_AUTH:
		lp_buf_addf(b, "access token issued user=%u scope=read:orders ttl=%us", n,
			    600 * (1 + gen_rng_below(r, 6)));
		break;
	case SVC_SHIPPING:
		lp_buf_addf(b, "shipment SHP-%06u label created carrier=ups weight=%u.%ukg", n,
			    gen_rng_below(r, 30), gen_rng_below(r, 10));
		break;
	case SVC_SEARCH:
		lp_buf_addf(b, "search query answered hits=%u shards=%u took %ums", n % 5000,
			    1 + gen_rng_below(r, 8), q->latency_ms);
		break;
	default:
		lp_buf_addf(b, "user %u session refreshed, %u active sessions", n,
			    1 + gen_rng_below(r, 5));
		break;
	}
	lp_buf_addf(b, " request_id=%s", q->id);
}

static void message_write(struct lp_buf *b, struct gen_rng *r, size_t si, enum gen_level l,
			  const struct request *q)
{
	switch (l) {
	case GEN_TRACE:
		lp_buf_addf(b, "entering handler %s request_id=%s", q->endpoint, q->id);
		break;
	case GEN_DEBUG:
		lp_buf_addf(b, "%s took %uus hit=%s request_id=%s", PICK(r, debug_what),
			    10 + gen_rng_below(r, 2000), gen_rng_below(r, 4) ? "true" : "false", q->id);
		break;
	case GEN_INFO:
		if (gen_rng_below(r, 2))
			business_message(b, r, si, q);
		else
			lp_buf_addf(b, "%s completed status=%u latency_ms=%u request_id=%s",
				    q->endpoint, q->status, q->latency_ms, q->id);
		break;
	case GEN_WARN:
		switch (gen_rng_below(r, 3)) {
		case 0:
			lp_buf_addf(b, "slow request %s took %ums (threshold 500ms) request_id=%s",
				    q->endpoint, q->latency_ms, q->id);
			break;
		case 1:
			lp_buf_addf(b, "retrying call to %s attempt %u/3 after %ums request_id=%s",
				    gen_services[gen_rng_below(r, (uint32_t)gen_nservices)].name,
				    1 + gen_rng_below(r, 3), q->latency_ms, q->id);
			break;
		default:
			lp_buf_addf(b, "connection pool %u%% used (%u of 50 connections) request_id=%s",
				    80 + gen_rng_below(r, 20), 40 + gen_rng_below(r, 10), q->id);
			break;
		}
		break;
	case GEN_ERROR:
		lp_buf_addf(b, "%s failed status=%u: %s request_id=%s", q->endpoint, q->status,
			    PICK(r, failure_reasons), q->id);
		break;
	default:
		lp_buf_addf(b, "fatal: %s request_id=%s", PICK(r, fatal_reasons), q->id);
		break;
	}
}

/* ---- events ------------------------------------------------------------ */

/* Filler appended to short messages: words, so that a padded message still
 * reads like text and compresses like text. */
static const char filler[] =
	" lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor"
	" incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud"
	" exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat duis aute"
	" irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla"
	" pariatur excepteur sint occaecat cupidatat non proident sunt in culpa qui officia"
	" deserunt mollit anim id est laborum";

/* Shortest message kept when an event is trimmed to size. */
#define MIN_MESSAGE 32

/* How much of the optional tail to write. */
enum tail_detail { TAIL_FULL, TAIL_NO_ATTRIBUTES, TAIL_NO_CORRELATION, TAIL_BARE };

void gen_writer_init(struct gen_writer *w)
{
	lp_buf_init(&w->out, 1024);
	lp_buf_init(&w->tail, 512);
}

void gen_writer_release(struct gen_writer *w)
{
	lp_buf_release(&w->out);
	lp_buf_release(&w->tail);
}

/* The values of the fields after the message, drawn once per event. */
struct tail_values {
	const struct gen_service *svc;
	const struct gen_host *host;
	const char *tenant;
	char trace_id[33];
	const struct request *q;
	const struct gen_event_spec *s;
};

static void tail_write(struct lp_buf *b, const struct tail_values *v, enum tail_detail d)
{
	lp_buf_reset(b);
	lp_buf_adds(b, "\",\"service\":\"");
	lp_buf_adds(b, v->svc->name);
	lp_buf_adds(b, "\",\"host\":\"");
	lp_buf_adds(b, v->host->name);
	lp_buf_adds(b, "\",\"source_ip\":\"");
	lp_buf_adds(b, v->host->ip);
	lp_buf_addch(b, '"');
	if (d <= TAIL_NO_CORRELATION) {
		lp_buf_adds(b, ",\"tenant\":\"");
		lp_buf_adds(b, v->tenant);
		lp_buf_addch(b, '"');
	}
	if (d <= TAIL_NO_ATTRIBUTES) {
		lp_buf_adds(b, ",\"correlation_id\":\"");
		lp_buf_adds(b, v->trace_id);
		lp_buf_addch(b, '"');
	}
	if (d == TAIL_FULL) {
		lp_buf_addf(b,
			    ",\"attributes\":{\"request_id\":\"%s\",\"endpoint\":\"%s\","
			    "\"http_status\":%u,\"latency_ms\":%u,\"generator\":",
			    v->q->id, v->q->endpoint, v->q->status, v->q->latency_ms);
		lp_buf_add_json_str(b, v->s->instance_id ? v->s->instance_id : "");
		lp_buf_addf(b, ",\"seq\":%llu}", (unsigned long long)v->s->seq);
	}
	lp_buf_addch(b, '}');
}

/* Appends n bytes of filler words to b. */
static void pad(struct lp_buf *b, size_t n)
{
	const size_t len = sizeof(filler) - 1;

	lp_buf_grow(b, n);
	while (n > 0) {
		size_t k = n < len ? n : len;

		lp_buf_add(b, filler, k);
		n -= k;
	}
}

const struct gen_service *gen_event_write(struct gen_writer *w, struct gen_rng *r,
					  const struct gen_event_spec *s)
{
	size_t si = gen_service_draw(r);
	const struct gen_service *svc = &gen_services[si];
	enum gen_level l = gen_level_draw(r, (int)si == s->burst_service ? gen_burst_mix
									  : gen_level_mix);
	struct request q;
	struct tail_values v;
	char id[37], ts[32];
	size_t msg_start, msg_len, total;
	enum tail_detail d;

	request_draw(&q, r, svc, l);
	v.svc = svc;
	v.host = &gen_hosts[svc->hosts[gen_rng_below(r, (uint32_t)svc->nhosts)]];
	v.tenant = PICK(r, tenants);
	snprintf(v.trace_id, sizeof(v.trace_id), "%016llx%016llx",
		 (unsigned long long)gen_rng_next(r), (unsigned long long)gen_rng_next(r));
	v.q = &q;
	v.s = s;

	lp_uuid7(id);
	lp_rfc3339(s->now_ms, ts);
	lp_buf_reset(&w->out);
	lp_buf_addf(&w->out,
		    "{\"id\":\"%s\",\"schema_version\":%d,\"timestamp\":\"%s\",\"received_at\":\"%s\","
		    "\"level\":\"%s\",\"message\":\"",
		    id, LP_EVENT_SCHEMA_VERSION, ts, ts, gen_level_names[l]);
	msg_start = w->out.len;
	message_write(&w->out, r, si, l, &q);
	msg_len = w->out.len - msg_start;

	/* Drop optional fields until the event fits, then cut the message. */
	for (d = TAIL_FULL;; d++) {
		tail_write(&w->tail, &v, d);
		total = w->out.len + w->tail.len;
		if (total <= s->size_bytes || d == TAIL_BARE)
			break;
	}
	if (total < s->size_bytes) {
		pad(&w->out, s->size_bytes - total);
	} else if (total > s->size_bytes) {
		size_t over = total - s->size_bytes;
		size_t keep = msg_len > over ? msg_len - over : 0;

		if (keep < MIN_MESSAGE)
			keep = msg_len < MIN_MESSAGE ? msg_len : MIN_MESSAGE;
		w->out.len = msg_start + keep;
		/* Show the cut as a reader expects it, with an ellipsis. */
		if (keep < msg_len)
			memcpy(w->out.buf + w->out.len - 3, "...", 3);
		w->out.buf[w->out.len] = '\0';
	}
	lp_buf_add(&w->out, w->tail.buf, w->tail.len);
	return svc;
}
