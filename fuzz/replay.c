/* replay.c - main() for the fuzz targets built without libFuzzer: runs
 * LLVMFuzzerTestOneInput once on every file named on the command line (a
 * directory stands for the files in it) and prints how many ran.  This is
 * how the seed corpus and the crash regressions in tests/fuzz_regress run
 * in `make test` with the ordinary compiler and sanitizers.
 *
 * Each input runs on a thread with the stack of a CivetWeb worker (100 KiB
 * in Debian's build), where the services run these parsers: an input that
 * makes a parser recurse too deeply crashes here as it would in a service,
 * where libFuzzer's 8 MiB main stack would hide it (issue 18). */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

#include "logpipe/banned.h"

#define WORKER_STACK (100 * 1024)

/* One input, for the thread. */
struct input {
	const uint8_t *data;
	size_t size;
};

static void *run_input(void *arg)
{
	struct input *in = arg;

	LLVMFuzzerTestOneInput(in->data, in->size);
	return NULL;
}

/* Runs the target on data in a thread with a worker-sized stack. */
static void run_on_worker_stack(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	pthread_attr_t a;
	pthread_t t;

	if (pthread_attr_init(&a) != 0 || pthread_attr_setstacksize(&a, WORKER_STACK) != 0 ||
	    pthread_create(&t, &a, run_input, &in) != 0) {
		fprintf(stderr, "replay: cannot start a thread\n");
		abort();
	}
	pthread_join(t, NULL);
	pthread_attr_destroy(&a);
}

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (!f) {
		fprintf(stderr, "replay: cannot open \"%s\"\n", path);
		return -1;
	}
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 4096;
			buf = realloc(buf, cap);
			if (!buf)
				abort();
		}
		n = fread(buf + len, 1, cap - len, f);
		if (n == 0)
			break;
		len += n;
	}
	fclose(f);
	/* Own the exact size, so ASan sees reads past the end of the input. */
	{
		unsigned char *exact = malloc(len ? len : 1);

		if (!exact)
			abort();
		if (len)
			memcpy(exact, buf, len);
		free(buf);
		run_on_worker_stack(exact, len);
		free(exact);
	}
	return 0;
}

static int run_path(const char *path, int *count)
{
	struct stat st;
	struct dirent *de;
	char sub[4096];
	DIR *d;
	int ret = 0;

	if (stat(path, &st) < 0) {
		fprintf(stderr, "replay: no such file or directory \"%s\"\n", path);
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		(*count)++;
		return run_file(path);
	}
	d = opendir(path);
	if (!d)
		return -1;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
		if (run_path(sub, count) < 0)
			ret = -1;
	}
	closedir(d);
	return ret;
}

int main(int argc, char **argv)
{
	int count = 0, ret = 0;

	LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++)
		if (run_path(argv[i], &count) < 0)
			ret = 1;
	printf("replay: %s: %d inputs ran\n", argv[0], count);
	return ret;
}
