/* fuzz.h - what the libFuzzer targets in fuzz/ share.
 *
 * Each fuzz_NAME.c defines LLVMFuzzerTestOneInput for one parser of
 * outside input and checks, besides "no crash, no sanitizer report", the
 * properties its header promises (a normalised event normalises to itself,
 * a formatted time parses back to the same instant, ...).  A property that
 * does not hold aborts, which libFuzzer reports like a crash.
 *
 * The same sources build two ways (Makefile): with clang and libFuzzer
 * (`make fuzz`, build-fuzz/NAME) to search, and with the normal compiler
 * and fuzz/replay.c as main (`make fuzz-regress`, build/fuzz/NAME) to run
 * the seed corpus and the files in tests/fuzz_regress/NAME once, as a regression
 * test that needs no clang. */
#ifndef LOGPIPE_FUZZ_H
#define LOGPIPE_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Aborts, printing the failed condition and a formatted detail. */
#define FUZZ_CHECK(cond, ...)                                                   \
	do {                                                                    \
		if (!(cond)) {                                                  \
			fprintf(stderr, "fuzz: %s:%d: check failed: %s: ",      \
				__FILE__, __LINE__, #cond);                     \
			fprintf(stderr, __VA_ARGS__);                           \
			fputc('\n', stderr);                                    \
			abort();                                                \
		}                                                               \
	} while (0)

/* A NUL-terminated heap copy of the input (free() it). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		abort();
	if (size)
		memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/* Splits the input at its first NUL byte: *a is the part before (a heap
 * copy, NUL-terminated), *b the part after (may be empty).  Targets that
 * take two strings use it; inputs without a NUL have an empty *b. */
static inline void fuzz_split(const uint8_t *data, size_t size, char **a, char **b)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t na = nul ? (size_t)(nul - data) : size;

	*a = fuzz_cstr(data, na);
	*b = nul ? fuzz_cstr(nul + 1, size - na - 1) : fuzz_cstr(data, 0);
}

#endif
