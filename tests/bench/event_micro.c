/* event_micro.c - CPU time per event of the producer's two ways to make
 * the normalised text of an input: the full path (lp_event_parse, then
 * json_dumps) and the one-pass scanner (lp_event_scan_input), on the same
 * inputs in one process, measured with the thread's CPU clock so that
 * other load on the machine moves it little.  Built and run by
 * tests/bench/ingest_bench.sh; alone:
 *   cc -O2 -Icommon/include -o /tmp/event_micro tests/bench/event_micro.c \
 *      build/liblogpipe.a -ljansson -luuid -lcrypto -lm -pthread
 *   /tmp/event_micro [ROUNDS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logpipe/event.h"

static double cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static const struct {
	const char *name, *body;
} inputs[] = {
	{ "bench (4 fields)",
	  "{\"level\":\"INFO\",\"message\":\"benchmark event with a typical length of text\","
	  "\"service\":\"bench\",\"host\":\"web-1\"}" },
	{ "seed-like (aliases, 3 attributes)",
	  "{\"timestamp\":\"2024-01-15T14:23:45.123Z\",\"severity\":\"warning\",\"source\":\"auth-service\","
	  "\"message\":\"Failed login attempt for user admin from 10.1.2.3\",\"hostname\":\"auth-7\","
	  "\"organizationId\":\"org-42\",\"correlationId\":\"c0ffee-1234\",\"attributes\":{\"user\":\"admin\","
	  "\"attempt\":3,\"mfa\":false},\"region\":\"eu-west-1\"}" },
	{ "large (1 KiB message, escapes)", NULL },
};

int main(int argc, char **argv)
{
	long rounds = argc > 1 ? atol(argv[1]) : 200000;
	char big[1400];
	size_t n = 0;

	n += (size_t)snprintf(big, sizeof(big), "{\"service\":\"api\",\"level\":\"error\",\"message\":\"");
	while (n < 1100)
		n += (size_t)snprintf(big + n, sizeof(big) - n, "at frame %zu\\n\\tcaller \\\"x\\\" ", n);
	snprintf(big + n, sizeof(big) - n, "\",\"trace_id\":\"abc\",\"pid\":1234}");

	printf("%-36s %12s %12s %8s\n", "input", "full ns/ev", "scan ns/ev", "ratio");
	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		const char *body = inputs[i].body ? inputs[i].body : big;
		size_t len = strlen(body);
		struct lp_event_fast f;
		double t0, full, scan;

		if (lp_event_scan_input(body, len, NULL, 1705328625123LL, NULL, &f) != 0) {
			fprintf(stderr, "event_micro: the scanner leaves \"%s\" to the full path\n",
				inputs[i].name);
			return 1;
		}
		free(f.text);
		t0 = cpu_ns();
		for (long r = 0; r < rounds; r++) {
			json_t *ev = lp_event_parse(body, len, NULL, 1705328625123LL, NULL, NULL);
			char *text = json_dumps(ev, JSON_COMPACT);

			free(text);
			json_decref(ev);
		}
		full = (cpu_ns() - t0) / (double)rounds;
		t0 = cpu_ns();
		for (long r = 0; r < rounds; r++) {
			lp_event_scan_input(body, len, NULL, 1705328625123LL, NULL, &f);
			free(f.text);
		}
		scan = (cpu_ns() - t0) / (double)rounds;
		printf("%-36s %12.0f %12.0f %7.1fx\n", inputs[i].name, full, scan, full / scan);
	}
	return 0;
}
