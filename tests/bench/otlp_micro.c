/* otlp_micro.c - CPU time per log record of the producer's OTLP path, by
 * stage, against the batch path's scanner, in one process with the
 * thread's CPU clock (so other load on the machine moves it little).
 *
 * Input: the protocols bench's request (argv[1], an ExportLogsServiceRequest
 * of 100 records, protobuf) and the same events as a JSON array (argv[2]).
 * Rows:
 *   decode           otlp_decode with a callback that does nothing: protobuf-c
 *                    unpack, the OTLP JSON tree (pb_tree), the mapping
 *   + normalise      what the producer did with each mapped record before
 *                    otlp_decode_fast (and still does with a declined one):
 *                    lp_event_normalize on the tree, then json_dumps
 *   + dump, scan     the alternative: json_dumps of the mapped input, then the
 *                    batch path's one-pass scanner (lp_event_scan_input)
 *   fast             what the producer does since otlp_decode_fast: protobuf-c
 *                    unpack, each record's normalised event written as text
 *                    straight from the structs (declined records: + normalise)
 *   batch scanner    the batch path per event: lp_json_array_spans over the
 *                    array, lp_event_scan_input per element
 * Built and run by tests/bench/protocols_bench.py; alone (after make):
 *   cc -O2 -Icommon/include -Iproducer -Ibuild/gen -o /tmp/otlp_micro \
 *      tests/bench/otlp_micro.c build/producer/otlp.o build/gen/.../\*.pb-c.o \
 *      build/liblogpipe.a -lprotobuf-c -lz -ljansson -luuid -lcrypto -lm -pthread
 *   /tmp/otlp_micro otlp.pb batch.json [ROUNDS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "logpipe/event.h"
#include "otlp.h"

#define NOW_MS 1700000000000LL

enum stage { DECODE, NORMALISE, DUMP_SCAN, FAST };

static enum stage stage; /* what the callback does with each record */
static long failures;    /* records the stage could not make an event of */
static long declined;    /* records the fast path left to the tree */

static double cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int on_record(void *ud, size_t index, json_t *item, const char *error)
{
	struct lp_event_error er;
	struct lp_event_fast f;
	json_t *ev;
	char *text;

	(void)ud;
	(void)index;
	(void)error;
	if (!item) {
		failures++;
		return 0;
	}
	switch (stage) {
	case DECODE:
		break;
	case FAST: /* a record the fast path declined */
		declined++;
		/* fall through */
	case NORMALISE:
		ev = lp_event_normalize(item, &lp_event_default_limits, NOW_MS, NULL, &er);
		text = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
		failures += text == NULL;
		free(text);
		json_decref(ev);
		break;
	case DUMP_SCAN:
		text = json_dumps(item, JSON_COMPACT);
		if (text && lp_event_scan_input(text, strlen(text), &lp_event_default_limits, NOW_MS,
						NULL, &f) == 0)
			free(f.text);
		else
			failures++;
		free(text);
		break;
	}
	return 0;
}

static int on_event(void *ud, size_t index, struct otlp_event *e)
{
	(void)ud;
	(void)index;
	free(e->ev.text);
	return 0;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0) {
		perror(path);
		exit(2);
	}
	rewind(f);
	buf = malloc((size_t)n + 1);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
		perror(path);
		exit(2);
	}
	buf[n] = '\0';
	*len = (size_t)n;
	fclose(f);
	return buf;
}

int main(int argc, char **argv)
{
	static const char *const names[] = { "decode", "decode + normalise + dumps (before)",
					     "decode + dumps + scanner",
					     "fast: decode + event text (now)" };
	struct otlp_fast fast = { &lp_event_default_limits, NOW_MS, NULL, on_event };
	struct lp_json_span spans[1000];
	size_t pblen, jlen;
	char *pb, *js, err[256];
	int rounds;
	long n = 0;
	double t;

	if (argc < 3) {
		fprintf(stderr, "usage: otlp_micro OTLP.pb BATCH.json [ROUNDS]\n");
		return 2;
	}
	pb = slurp(argv[1], &pblen);
	js = slurp(argv[2], &jlen);
	rounds = argc > 3 ? atoi(argv[3]) : 1000;
	for (stage = DECODE; stage <= FAST; stage++) {
		failures = 0;
		t = cpu_ns();
		for (int r = 0; r < rounds; r++)
			n = otlp_decode_fast(pb, pblen, OTLP_PROTOBUF, 10000,
					     stage == FAST ? &fast : NULL, on_record, NULL, err,
					     sizeof(err));
		if (n <= 0) {
			fprintf(stderr, "otlp_micro: %s\n", err);
			return 1;
		}
		printf("otlp_micro: %-36s %6.2f us/record%s\n", names[stage],
		       (cpu_ns() - t) / 1e3 / rounds / (double)n, failures ? "  FAILURES" : "");
		if (stage == FAST && declined)
			printf("otlp_micro: %ld records declined by the fast path\n", declined);
	}
	failures = 0;
	t = cpu_ns();
	for (int r = 0; r < rounds; r++) {
		n = lp_json_array_spans(js, jlen, spans, 1000);
		for (long i = 0; i < n; i++) {
			struct lp_event_fast f;

			if (lp_event_scan_input(spans[i].p, spans[i].n, &lp_event_default_limits,
						NOW_MS, NULL, &f) == 0)
				free(f.text);
			else
				failures++;
		}
	}
	printf("otlp_micro: %-36s %6.2f us/event%s\n", "batch: array spans + scanner",
	       (cpu_ns() - t) / 1e3 / rounds / (double)(n > 0 ? n : 1),
	       failures || n <= 0 ? "  FAILURES" : "");
	free(pb);
	free(js);
	return 0;
}
