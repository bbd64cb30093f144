/* util.c - clocks, small string helpers and allocation that cannot fail.
 *
 * lp_rfc3339 and lp_parse_rfc3339, also declared in util.h, live in time.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logpipe/util.h"

#include "logpipe/banned.h"

/* ---- clocks ------------------------------------------------------------- */

static int64_t clock_us(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t lp_now_us(void)
{
	return clock_us(CLOCK_MONOTONIC);
}

int64_t lp_now_ms(void)
{
	return clock_us(CLOCK_MONOTONIC) / 1000;
}

int64_t lp_wall_ms(void)
{
	return clock_us(CLOCK_REALTIME) / 1000;
}

/* The slice lp_sleep_ms sleeps between two looks at *stop: short enough
 * that a shutdown is noticed at once, long enough to cost nothing. */
#define SLEEP_SLICE_MS 20

void lp_sleep_ms(int64_t ms, const atomic_bool *stop)
{
	int64_t end = lp_now_ms() + ms;
	int64_t left;

	while ((left = end - lp_now_ms()) > 0) {
		struct timespec ts;

		if (stop && atomic_load(stop))
			return;
		if (stop && left > SLEEP_SLICE_MS)
			left = SLEEP_SLICE_MS;
		ts.tv_sec = left / 1000;
		ts.tv_nsec = (long)(left % 1000) * 1000000;
		nanosleep(&ts, NULL);
	}
}

/* ---- allocation --------------------------------------------------------- */

static void *oom(size_t n)
{
	fprintf(stderr, "logpipe: out of memory allocating %zu bytes\n", n);
	abort();
}

void *lp_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	return p ? p : oom(n);
}

void *lp_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	return p ? p : oom(n * size);
}

void *lp_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	return q ? q : oom(n);
}

char *lp_xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;

	return memcpy(lp_xmalloc(n), s, n);
}

/* ---- strings ------------------------------------------------------------ */

/* Lower-case hex, and (nonzero) not all zero. */
static bool hex_run(const char *s, size_t n, bool nonzero)
{
	bool zero = true;

	for (size_t i = 0; i < n; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
		zero &= s[i] == '0';
	}
	return !(nonzero && zero);
}

bool lp_traceparent_ok(const char *tp, char trace[33])
{
	size_t n = tp ? strnlen(tp, 56) : 0;

	if (!(n >= 55 && (n == 55 || tp[55] == '-') && tp[2] == '-' && tp[35] == '-' &&
	      tp[52] == '-' && hex_run(tp, 2, false) && strncmp(tp, "ff", 2) != 0 &&
	      hex_run(tp + 3, 32, true) && hex_run(tp + 36, 16, true) &&
	      hex_run(tp + 53, 2, false)))
		return false;
	if (trace) {
		memcpy(trace, tp + 3, 32);
		trace[32] = '\0';
	}
	return true;
}

bool lp_utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		size_t k, need;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i <= need)
			return false;
		for (k = 1; k <= need; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += need + 1;
	}
	return true;
}

size_t lp_fmt_u64(char *dst, uint64_t v)
{
	char d[20];
	size_t i = sizeof(d), n;

	do {
		d[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	n = sizeof(d) - i;
	memcpy(dst, d + i, n);
	dst[n] = '\0';
	return n;
}

int lp_parse_decimal(const char *s, size_t n, int lo, int hi)
{
	long v = 0;
	size_t i;

	if (n == 0 || n > 9)
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v < lo || v > hi ? -1 : (int)v;
}

size_t lp_strlcpy(char *dst, const char *src, size_t dstlen)
{
	size_t n = strlen(src);

	if (dstlen) {
		size_t k = n < dstlen - 1 ? n : dstlen - 1;

		memcpy(dst, src, k);
		dst[k] = '\0';
	}
	return n;
}

bool lp_str_has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}
