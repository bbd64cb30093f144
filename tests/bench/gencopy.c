/* gencopy.c - rows of log_events in PostgreSQL's COPY text format, with the
 * generator's own content (generator/content.c), for the query benchmark.
 *
 *   gencopy --rows N [--days D] [--now-ms T] [--seed S] [--size BYTES]
 *           [--traced PERMILLE]  > rows.copy
 *
 * Pushing ten million events through the pipeline would take hours on the
 * benchmark machine; this writes what the consumer would have stored for
 * them, in the column order of COLUMNS below, so that `COPY log_events
 * (COLUMNS) FROM STDIN` loads them in minutes.  Each event is made by
 * gen_event_write() exactly as logpipe-generator makes it (the catalogue's
 * services by traffic weight, their hosts, the level mix, error bursts, the
 * messages with their endpoints, business words, request ids and latencies,
 * padded or trimmed to --size bytes, 256 by default as under `make run`),
 * then parsed back and laid out as a row.  What the other stages add is
 * imitated: the id is a UUIDv7 of the event's time (the producer's), the
 * enrichment object is the one the enricher makes from the catalogue's
 * metadata (generator/content.c holds it), received_at and stored_at follow
 * the event by a few milliseconds.
 *
 * Time.  The N events are spread over the D days (default 7) before T
 * (default: now), with a daily rhythm (traffic at its lowest at 03:00 UTC,
 * a third of the peak at 15:00) and a burst now and then: in each hour, with
 * probability 1/3, one service (by traffic weight) logs from its burst mix
 * (mostly ERROR and WARN) for 2 to 12 minutes, as the generator's bursts do.
 *
 * Trace ids.  The generator writes straight to Kafka, so its events carry a
 * correlation id (32 hex digits; at 256 bytes it is trimmed away) but no
 * trace_id; events that come through the producer with a traceparent header
 * (or OTLP) have one.  --traced PERMILLE (default 100) of the events get a
 * trace_id (their correlation id when they have one), shared by 1 to 8
 * traced events in a row, and a span id, as if they had.
 *
 * Deterministic: the same arguments print the same rows (the rng is seeded
 * with --seed; ids too come from it). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "../../generator/content.h"
#include "logpipe/event.h"
#include "logpipe/json.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

/* The columns of each line, in order (the benchmark passes the same list
 * to COPY). */
#define COLUMNS                                                                       \
	"id, ts, received_at, stored_at, level, level_rank, service, host, source_ip, "   \
	"tenant, correlation_id, message, attributes, enrichment, enrichment_status, "    \
	"kafka_topic, kafka_partition, kafka_offset, trace_id, span_id"

#define DAY_MS (24LL * 3600 * 1000)
#define HOUR_MS (3600LL * 1000)

struct opts {
	long long rows;    /* events to write */
	double days;       /* spread over this many days */
	int64_t now_ms;    /* ... ending here */
	uint64_t seed;     /* rng seed */
	size_t size;       /* serialised size of each generated event */
	unsigned traced;   /* per mille of events with a trace id */
};

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* Relative traffic at time t: a day's sine, from 1/3 at 03:00 UTC to 1 at
 * 15:00 UTC. */
static double traffic(int64_t t)
{
	double h = (double)((t % DAY_MS + DAY_MS) % DAY_MS) / HOUR_MS;
	/* 1 - cos goes from 0 at 03:00 to 2 at 15:00. */
	double c = 1.0 - cos(2.0 * M_PI * (h - 3.0) / 24.0);

	return 1.0 / 3.0 + (2.0 / 3.0) * (c / 2.0);
}

/* The N event times, ascending, drawn from the daily rhythm by rejection. */
static int64_t *draw_times(struct gen_rng *r, const struct opts *o)
{
	int64_t span = (int64_t)(o->days * DAY_MS);
	int64_t start = o->now_ms - span;
	int64_t *t = malloc((size_t)o->rows * sizeof(*t));
	long long i = 0;

	if (!t)
		return NULL;
	while (i < o->rows) {
		int64_t x = start + (int64_t)(gen_rng_next(r) % (uint64_t)span);
		double u = (double)(gen_rng_next(r) >> 11) / 9007199254740992.0;

		if (u < traffic(x))
			t[i++] = x;
	}
	qsort(t, (size_t)o->rows, sizeof(*t), cmp_i64);
	return t;
}

/* A UUIDv7 of time ms with random bits from r. */
static void uuid7_at(struct gen_rng *r, int64_t ms, char out[37])
{
	unsigned char b[16];
	uint64_t a = gen_rng_next(r), c = gen_rng_next(r);
	int i;

	for (i = 0; i < 6; i++)
		b[i] = (unsigned char)((uint64_t)ms >> (40 - 8 * i));
	for (i = 6; i < 16; i++)
		b[i] = (unsigned char)((i < 11 ? a : c) >> (8 * (i % 8)));
	b[6] = (unsigned char)(0x70 | (b[6] & 0x0f));
	b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));
	snprintf(out, 37,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
		 b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
		 b[14], b[15]);
}

/* Writes s to f escaped for COPY's text format; NULL as \N. */
static void put_field(FILE *f, const char *s, int last)
{
	if (!s) {
		fputs("\\N", f);
	} else {
		for (; *s; s++) {
			switch (*s) {
			case '\\': fputs("\\\\", f); break;
			case '\t': fputs("\\t", f); break;
			case '\n': fputs("\\n", f); break;
			case '\r': fputs("\\r", f); break;
			default: fputc(*s, f);
			}
		}
	}
	fputc(last ? '\n' : '\t', f);
}

static const char *jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static const struct gen_host *host_by_name(const char *name)
{
	for (size_t i = 0; name && i < gen_nhosts; i++)
		if (strcmp(gen_hosts[i].name, name) == 0)
			return &gen_hosts[i];
	return NULL;
}

static const struct gen_service *service_by_name(const char *name)
{
	for (size_t i = 0; name && i < gen_nservices; i++)
		if (strcmp(gen_services[i].name, name) == 0)
			return &gen_services[i];
	return NULL;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	o->rows = 0;
	o->days = 7;
	o->now_ms = (int64_t)time(NULL) * 1000;
	o->seed = 1;
	o->size = 256;
	o->traced = 100;
	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v)
			return -EINVAL;
		if (strcmp(argv[i], "--rows") == 0)
			o->rows = atoll(v);
		else if (strcmp(argv[i], "--days") == 0)
			o->days = atof(v);
		else if (strcmp(argv[i], "--now-ms") == 0)
			o->now_ms = atoll(v);
		else if (strcmp(argv[i], "--seed") == 0)
			o->seed = strtoull(v, NULL, 10);
		else if (strcmp(argv[i], "--size") == 0)
			o->size = (size_t)atol(v);
		else if (strcmp(argv[i], "--traced") == 0)
			o->traced = (unsigned)atoi(v);
		else
			return -EINVAL;
		i++;
	}
	return o->rows > 0 && o->days > 0 && o->traced <= 1000 ? 0 : -EINVAL;
}

int main(int argc, char **argv)
{
	struct opts o;
	struct gen_rng r;
	struct gen_writer w;
	struct gen_event_spec spec = { 0 };
	int64_t *times, burst_until = 0, hour = -1;
	int burst = -1;
	unsigned trace_left = 0;
	char trace_id[33];
	FILE *f = stdout;
	static char obuf[1 << 20];

	if (parse_args(argc, argv, &o) < 0) {
		fprintf(stderr, "usage: gencopy --rows N [--days D] [--now-ms T] [--seed S] "
				"[--size BYTES] [--traced PERMILLE]\ncolumns: %s\n", COLUMNS);
		return 2;
	}
	setvbuf(f, obuf, _IOFBF, sizeof(obuf));
	gen_rng_seed(&r, o.seed);
	times = draw_times(&r, &o);
	if (!times) {
		fprintf(stderr, "gencopy: out of memory\n");
		return 1;
	}
	gen_writer_init(&w);
	spec.size_bytes = o.size;
	spec.instance_id = "generator-bench-8085";
	for (long long i = 0; i < o.rows; i++) {
		int64_t ts = times[i];
		int64_t rcv = ts + (int64_t)gen_rng_below(&r, 20);
		int64_t stored = rcv + 30 + (int64_t)gen_rng_below(&r, 250);
		char id[37], tsb[32], rcvb[32], stb[32], enrb[1024], part[12], off[24], span[17];
		char rank[8];
		const struct gen_service *svc;
		const struct gen_host *h;
		json_t *ev;
		char *attrs;
		const char *level, *trace = NULL;
		bool traced;

		/* A burst starts, with probability 1/3, in each hour. */
		if (ts / HOUR_MS != hour) {
			hour = ts / HOUR_MS;
			if (gen_rng_below(&r, 3) == 0) {
				burst = (int)gen_service_draw(&r);
				burst_until = hour * HOUR_MS + (int64_t)gen_rng_below(&r, 48) * 60000 +
					      (2 + (int64_t)gen_rng_below(&r, 11)) * 60000;
			}
		}
		spec.now_ms = ts;
		spec.seq = (uint64_t)i;
		spec.burst_service = ts < burst_until ? burst : -1;
		gen_event_write(&w, &r, &spec);
		ev = lp_json_loadb(w.out.buf, w.out.len, 0, NULL);
		if (!ev) {
			fprintf(stderr, "gencopy: the generator wrote an event jansson refuses\n");
			return 1;
		}
		uuid7_at(&r, ts, id);
		lp_rfc3339(ts, tsb);
		lp_rfc3339(rcv, rcvb);
		lp_rfc3339(stored, stb);
		level = jstr(ev, "level");
		svc = service_by_name(jstr(ev, "service"));
		h = host_by_name(jstr(ev, "host"));
		if (!svc || !h || !level) {
			fprintf(stderr, "gencopy: an event outside the catalogue\n");
			return 1;
		}
		snprintf(enrb, sizeof(enrb),
			 "{\"status\":\"complete\",\"enriched_at\":\"%s\",\"datacenter\":\"%s\","
			 "\"environment\":\"%s\",\"cost_center\":\"%s\",\"team\":\"%s\","
			 "\"owner\":\"%s\",\"tier\":\"%s\",\"host\":{\"name\":\"%s\",\"source\":"
			 "\"local\",\"matched_by\":\"hostname\"},\"service\":{\"name\":\"%s\","
			 "\"source\":\"local\"}}",
			 rcvb, h->datacenter, h->environment, h->cost_center, svc->team, svc->owner,
			 svc->tier, h->name, svc->name);
		attrs = json_object_get(ev, "attributes")
				? json_dumps(json_object_get(ev, "attributes"), JSON_COMPACT)
				: NULL;
		traced = gen_rng_below(&r, 1000) < o.traced;
		if (traced) {
			/* A trace spans a few events (1 to 8) of the traced ones. */
			if (trace_left == 0) {
				const char *c = jstr(ev, "correlation_id");

				if (c && strlen(c) == 32)
					lp_strlcpy(trace_id, c, sizeof(trace_id));
				else
					snprintf(trace_id, sizeof(trace_id), "%016" PRIx64 "%016" PRIx64,
						 gen_rng_next(&r), gen_rng_next(&r));
				trace_left = 1 + gen_rng_below(&r, 8);
			}
			trace_left--;
			trace = trace_id;
			snprintf(span, sizeof(span), "%016" PRIx64, gen_rng_next(&r));
		}
		/* Kafka's key is the service: one partition per service of six. */
		snprintf(part, sizeof(part), "%u", (unsigned)(svc - gen_services) % 6);
		snprintf(off, sizeof(off), "%lld", i);
		put_field(f, id, 0);
		put_field(f, tsb, 0);
		put_field(f, rcvb, 0);
		put_field(f, stb, 0);
		put_field(f, level, 0);
		snprintf(rank, sizeof(rank), "%d", lp_level_rank(level));
		put_field(f, rank, 0);
		put_field(f, svc->name, 0);
		put_field(f, h->name, 0);
		put_field(f, jstr(ev, "source_ip"), 0);
		put_field(f, jstr(ev, "tenant"), 0);
		put_field(f, jstr(ev, "correlation_id"), 0);
		put_field(f, jstr(ev, "message"), 0);
		put_field(f, attrs, 0);
		put_field(f, enrb, 0);
		put_field(f, "complete", 0);
		put_field(f, "enriched-logs-complete", 0);
		put_field(f, part, 0);
		put_field(f, off, 0);
		put_field(f, trace, 0);
		put_field(f, trace ? span : NULL, 1);
		free(attrs);
		json_decref(ev);
	}
	gen_writer_release(&w);
	free(times);
	if (fflush(f) != 0) {
		fprintf(stderr, "gencopy: write failed: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}
