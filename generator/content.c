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
 * escaping), a number, or escaped with lp_buf_add_json_str.
 *
 * Cost.  The generator is meant to run at what librdkafka can take, so
 * writing an event must cost little next to producing it.  Nothing here
 * goes through printf: numbers are written by put_u and put_hex, the tail
 * is written once with the offsets where each optional field ends (a
 * shorter tail is a prefix of the full one), and the timestamp's text is
 * kept per writer and only its milliseconds rewritten within a second.
 * Profiled at full speed, the printf-based first version spent two thirds
 * of a worker's time formatting (docs/benchmarks.md, "Generator"). */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "content.h"
#include "logpipe/event.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

/* ---- appending ----------------------------------------------------------
 *
 * lp_buf's own appenders are a call each and terminate the string after
 * every piece; these are inlined and leave the terminating NUL to
 * gen_event_write, which writes it once at the end. */

static inline void put(struct lp_buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->alloc)
		lp_buf_grow(b, n);
	memcpy(b->buf + b->len, s, n);
	b->len += n;
}

/* A string literal, its length known at compile time. */
#define PUTL(b, lit) put((b), (lit), sizeof(lit) - 1)

static inline void puts_(struct lp_buf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* v in decimal, zero-padded to at least width digits (printf's %0*llu). */
static void put_u0(struct lp_buf *b, uint64_t v, int width)
{
	char d[24];
	int n = 0;

	do {
		d[sizeof(d) - 1 - n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n < width && n < (int)sizeof(d))
		d[sizeof(d) - 1 - n++] = '0';
	put(b, d + sizeof(d) - n, (size_t)n);
}

static inline void put_u(struct lp_buf *b, uint64_t v)
{
	put_u0(b, v, 1);
}

/* x as 16 lower-case hex digits (printf's %016llx). */
static void hex16(char out[16], uint64_t x)
{
	static const char digits[] = "0123456789abcdef";
	int i;

	for (i = 15; i >= 0; i--, x >>= 4)
		out[i] = digits[x & 15];
}

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

	memcpy(q->id, "req_", 4);
	hex16(q->id + 4, gen_rng_next(r));
	q->id[20] = '\0';
	q->endpoint = svc->endpoints[gen_rng_below(r, (uint32_t)svc->nendpoints)];
	q->latency_ms = latency_for(r, l);
	if (l == GEN_ERROR || l == GEN_FATAL)
		q->status = PICK(r, bad);
	else if (l == GEN_WARN)
		q->status = gen_rng_below(r, 3) ? 200 : 429;
	else
		q->status = PICK(r, ok);
}

/* Appends " request_id=req_...", which ends every message. */
static void put_request_id(struct lp_buf *b, const struct request *q)
{
	PUTL(b, " request_id=");
	put(b, q->id, 20);
}

/* A line service number si would log about its business at INFO.  The
 * numbers are drawn in the order they are written. */
static void business_message(struct lp_buf *b, struct gen_rng *r, size_t si,
			     const struct request *q)
{
	unsigned n = gen_rng_below(r, 1000000);

	switch (si) {
	case SVC_PAYMENT:
		/* payment pay_%06u authorized amount=%u.%02u %s in %ums */
		PUTL(b, "payment pay_");
		put_u0(b, n, 6);
		PUTL(b, " authorized amount=");
		put_u(b, 1 + gen_rng_below(r, 900));
		PUTL(b, ".");
		put_u0(b, gen_rng_below(r, 100), 2);
		PUTL(b, " ");
		puts_(b, PICK(r, currencies));
		PUTL(b, " in ");
		put_u(b, q->latency_ms);
		PUTL(b, "ms");
		break;
	case SVC_ORDER:
		/* order ORD-%06u created items=%u total=%u.%02u customer=%u */
		PUTL(b, "order ORD-");
		put_u0(b, n, 6);
		PUTL(b, " created items=");
		put_u(b, 1 + gen_rng_below(r, 9));
		PUTL(b, " total=");
		put_u(b, 5 + gen_rng_below(r, 500));
		PUTL(b, ".");
		put_u0(b, gen_rng_below(r, 100), 2);
		PUTL(b, " customer=");
		put_u(b, gen_rng_below(r, 100000));
		break;
	case SVC_INVENTORY:
		/* stock reserved sku=SKU-%05u qty=%u warehouse=wh-%u remaining=%u */
		PUTL(b, "stock reserved sku=SKU-");
		put_u0(b, n % 100000, 5);
		PUTL(b, " qty=");
		put_u(b, 1 + gen_rng_below(r, 5));
		PUTL(b, " warehouse=wh-");
		put_u(b, 1 + gen_rng_below(r, 4));
		PUTL(b, " remaining=");
		put_u(b, gen_rng_below(r, 2000));
		break;
	case SVC_NOTIFICATION:
		/* %s notification queued template=order-confirmation user=%u */
		puts_(b, PICK(r, channels));
		PUTL(b, " notification queued template=order-confirmation user=");
		put_u(b, n);
		break;
	case SVC_AUTH:
		/* access token issued user=%u scope=read:orders ttl=%us */
		PUTL(b, "access token issued user=");
		put_u(b, n);
		PUTL(b, " scope=read:orders ttl=");
		put_u(b, 600 * (1 + gen_rng_below(r, 6)));
		PUTL(b, "s");
		break;
	case SVC_SHIPPING:
		/* shipment SHP-%06u label created carrier=ups weight=%u.%ukg */
		PUTL(b, "shipment SHP-");
		put_u0(b, n, 6);
		PUTL(b, " label created carrier=ups weight=");
		put_u(b, gen_rng_below(r, 30));
		PUTL(b, ".");
		put_u(b, gen_rng_below(r, 10));
		PUTL(b, "kg");
		break;
	case SVC_SEARCH:
		/* search query answered hits=%u shards=%u took %ums */
		PUTL(b, "search query answered hits=");
		put_u(b, n % 5000);
		PUTL(b, " shards=");
		put_u(b, 1 + gen_rng_below(r, 8));
		PUTL(b, " took ");
		put_u(b, q->latency_ms);
		PUTL(b, "ms");
		break;
	default:
		/* user %u session refreshed, %u active sessions */
		PUTL(b, "user ");
		put_u(b, n);
		PUTL(b, " session refreshed, ");
		put_u(b, 1 + gen_rng_below(r, 5));
		PUTL(b, " active sessions");
		break;
	}
	put_request_id(b, q);
}

static void message_write(struct lp_buf *b, struct gen_rng *r, size_t si, enum gen_level l,
			  const struct request *q)
{
	switch (l) {
	case GEN_TRACE:
		/* entering handler %s request_id=%s */
		PUTL(b, "entering handler ");
		puts_(b, q->endpoint);
		break;
	case GEN_DEBUG:
		/* %s took %uus hit=%s request_id=%s */
		puts_(b, PICK(r, debug_what));
		PUTL(b, " took ");
		put_u(b, 10 + gen_rng_below(r, 2000));
		PUTL(b, "us hit=");
		if (gen_rng_below(r, 4))
			PUTL(b, "true");
		else
			PUTL(b, "false");
		break;
	case GEN_INFO:
		if (gen_rng_below(r, 2)) {
			business_message(b, r, si, q);
			return;
		}
		/* %s completed status=%u latency_ms=%u request_id=%s */
		puts_(b, q->endpoint);
		PUTL(b, " completed status=");
		put_u(b, q->status);
		PUTL(b, " latency_ms=");
		put_u(b, q->latency_ms);
		break;
	case GEN_WARN:
		switch (gen_rng_below(r, 3)) {
		case 0:
			/* slow request %s took %ums (threshold 500ms) request_id=%s */
			PUTL(b, "slow request ");
			puts_(b, q->endpoint);
			PUTL(b, " took ");
			put_u(b, q->latency_ms);
			PUTL(b, "ms (threshold 500ms)");
			break;
		case 1:
			/* retrying call to %s attempt %u/3 after %ums request_id=%s */
			PUTL(b, "retrying call to ");
			puts_(b, gen_services[gen_rng_below(r, (uint32_t)gen_nservices)].name);
			PUTL(b, " attempt ");
			put_u(b, 1 + gen_rng_below(r, 3));
			PUTL(b, "/3 after ");
			put_u(b, q->latency_ms);
			PUTL(b, "ms");
			break;
		default:
			/* connection pool %u%% used (%u of 50 connections) request_id=%s */
			PUTL(b, "connection pool ");
			put_u(b, 80 + gen_rng_below(r, 20));
			PUTL(b, "% used (");
			put_u(b, 40 + gen_rng_below(r, 10));
			PUTL(b, " of 50 connections)");
			break;
		}
		break;
	case GEN_ERROR:
		/* %s failed status=%u: %s request_id=%s */
		puts_(b, q->endpoint);
		PUTL(b, " failed status=");
		put_u(b, q->status);
		PUTL(b, ": ");
		puts_(b, PICK(r, failure_reasons));
		break;
	default:
		/* fatal: %s request_id=%s */
		PUTL(b, "fatal: ");
		puts_(b, PICK(r, fatal_reasons));
		break;
	}
	put_request_id(b, q);
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

/* How much of the optional tail to write: each level drops one more
 * optional field, the last written first. */
enum tail_detail { TAIL_FULL, TAIL_NO_ATTRIBUTES, TAIL_NO_CORRELATION, TAIL_BARE, TAIL_NDETAIL };

void gen_writer_init(struct gen_writer *w)
{
	memset(w, 0, sizeof(*w));
	lp_buf_init(&w->out, 1024);
	lp_buf_init(&w->tail, 512);
	w->ts_sec = -1;
}

void gen_writer_release(struct gen_writer *w)
{
	lp_buf_release(&w->out);
	lp_buf_release(&w->tail);
}

/* Writes the full tail (without its closing brace) into b and, in
 * end[d], its length at each detail d: a shorter tail is a prefix of it,
 * because the optional fields are written in the order they are kept. */
static void tail_write(struct lp_buf *b, size_t end[TAIL_NDETAIL], const struct gen_service *svc,
		       const struct gen_host *host, const char *tenant, struct gen_rng *r,
		       const struct request *q, const struct gen_event_spec *s)
{
	char trace[32];

	b->len = 0;
	PUTL(b, "\",\"service\":\"");
	puts_(b, svc->name);
	PUTL(b, "\",\"host\":\"");
	puts_(b, host->name);
	PUTL(b, "\",\"source_ip\":\"");
	puts_(b, host->ip);
	PUTL(b, "\"");
	end[TAIL_BARE] = b->len;
	PUTL(b, ",\"tenant\":\"");
	puts_(b, tenant);
	PUTL(b, "\"");
	end[TAIL_NO_CORRELATION] = b->len;
	hex16(trace, gen_rng_next(r));
	hex16(trace + 16, gen_rng_next(r));
	PUTL(b, ",\"correlation_id\":\"");
	put(b, trace, sizeof(trace));
	PUTL(b, "\"");
	end[TAIL_NO_ATTRIBUTES] = b->len;
	PUTL(b, ",\"attributes\":{\"request_id\":\"");
	put(b, q->id, 20);
	PUTL(b, "\",\"endpoint\":\"");
	puts_(b, q->endpoint);
	PUTL(b, "\",\"http_status\":");
	put_u(b, q->status);
	PUTL(b, ",\"latency_ms\":");
	put_u(b, q->latency_ms);
	PUTL(b, ",\"generator\":");
	lp_buf_add_json_str(b, s->instance_id ? s->instance_id : "");
	PUTL(b, ",\"seq\":");
	put_u(b, s->seq);
	PUTL(b, "}");
	end[TAIL_FULL] = b->len;
}

/* Appends n bytes of filler words to b. */
static void pad(struct lp_buf *b, size_t n)
{
	const size_t len = sizeof(filler) - 1;

	lp_buf_grow(b, n);
	while (n > 0) {
		size_t k = n < len ? n : len;

		put(b, filler, k);
		n -= k;
	}
}

/* The last instant whose text has four digits of year (lp_rfc3339 clamps
 * there, so its milliseconds may not be rewritten). */
#define MAX_CACHED_MS 253402300799999LL

/* Appends the RFC 3339 text of ms (lp_rfc3339's), formatting it in full
 * only when the second changes. */
static void put_time(struct lp_buf *b, struct gen_writer *w, int64_t ms)
{
	int64_t sec = ms / 1000;
	unsigned frac = (unsigned)(ms % 1000);

	if (ms < 0 || ms > MAX_CACHED_MS) {
		/* Not a time the generator makes; no cache for it. */
		lp_rfc3339(ms, w->ts);
		w->ts_len = strlen(w->ts);
		w->ts_sec = -1;
		put(b, w->ts, w->ts_len);
		return;
	}
	if (sec != w->ts_sec) {
		lp_rfc3339(ms, w->ts);
		w->ts_len = strlen(w->ts);
		w->ts_sec = sec;
	}
	/* "...:SS.mmmZ": the milliseconds are the three digits before 'Z'. */
	w->ts[w->ts_len - 4] = (char)('0' + frac / 100);
	w->ts[w->ts_len - 3] = (char)('0' + frac / 10 % 10);
	w->ts[w->ts_len - 2] = (char)('0' + frac % 10);
	put(b, w->ts, w->ts_len);
}

const struct gen_service *gen_event_write(struct gen_writer *w, struct gen_rng *r,
					  const struct gen_event_spec *s)
{
	size_t si = gen_service_draw(r);
	const struct gen_service *svc = &gen_services[si];
	enum gen_level l = gen_level_draw(r, (int)si == s->burst_service ? gen_burst_mix
									  : gen_level_mix);
	const struct gen_host *host;
	const char *tenant;
	struct request q;
	struct lp_buf *out = &w->out;
	size_t end[TAIL_NDETAIL];
	size_t msg_start, msg_len, total, tail_len;
	char id[37];
	int d;

	request_draw(&q, r, svc, l);
	host = &gen_hosts[svc->hosts[gen_rng_below(r, (uint32_t)svc->nhosts)]];
	tenant = PICK(r, tenants);
	tail_write(&w->tail, end, svc, host, tenant, r, &q, s);

	lp_uuid7(id);
	out->len = 0;
	PUTL(out, "{\"id\":\"");
	put(out, id, 36);
	PUTL(out, "\",\"schema_version\":");
	put_u(out, LP_EVENT_SCHEMA_VERSION);
	PUTL(out, ",\"timestamp\":\"");
	put_time(out, w, s->now_ms);
	PUTL(out, "\",\"received_at\":\"");
	put(out, w->ts, w->ts_len); /* the text put_time just wrote */
	PUTL(out, "\",\"level\":\"");
	puts_(out, gen_level_names[l]);
	PUTL(out, "\",\"message\":\"");
	msg_start = out->len;
	message_write(out, r, si, l, &q);
	msg_len = out->len - msg_start;

	/* Drop optional fields until the event fits, then cut the message. */
	for (d = TAIL_FULL;; d++) {
		tail_len = end[d] + 1; /* and the closing brace */
		total = out->len + tail_len;
		if (total <= s->size_bytes || d == TAIL_BARE)
			break;
	}
	if (total < s->size_bytes) {
		pad(out, s->size_bytes - total);
	} else if (total > s->size_bytes) {
		size_t over = total - s->size_bytes;
		size_t keep = msg_len > over ? msg_len - over : 0;

		if (keep < MIN_MESSAGE)
			keep = msg_len < MIN_MESSAGE ? msg_len : MIN_MESSAGE;
		out->len = msg_start + keep;
		/* Show the cut as a reader expects it, with an ellipsis. */
		if (keep < msg_len)
			memcpy(out->buf + out->len - 3, "...", 3);
	}
	put(out, w->tail.buf, end[d]);
	PUTL(out, "}");
	out->buf[out->len] = '\0';
	return svc;
}
