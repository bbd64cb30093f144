/* uuid.c - time-ordered UUIDv7 (RFC 9562) and UUID syntax checks.
 *
 * Layout of a UUIDv7, most significant bit first:
 *
 *   48 bits unix_ts_ms | 4 bits version (7) | 12 bits rand_a
 *   2 bits variant (10) | 62 bits rand_b
 *
 * rand_a is used as a counter (RFC 9562 section 6.2, method 1) so that ids
 * made in the same millisecond by this process still sort in the order
 * they were made: on a new millisecond the counter starts at a random value
 * below 2048 (leaving room to count), within the same millisecond it is
 * incremented, and when it runs out the timestamp is advanced by one
 * millisecond instead of waiting.  If the wall clock steps backwards the
 * last timestamp is reused, so ids never go backwards within a process.
 * rand_b is fresh randomness from getrandom(2) for every id, drawn from a
 * per-thread pool refilled 4 KiB at a time so that making an id costs no
 * system call (the services make one per event; nothing here forks).  A
 * mutex guards the (timestamp, counter) pair; randomness is drawn outside
 * it. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "logpipe/event.h"

#include "logpipe/banned.h"

static pthread_mutex_t uuid_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t uuid_last_ms; /* timestamp of the last id made, guarded */
static uint16_t uuid_counter; /* its rand_a counter, 12 bits, guarded */

/* Fills buf with random bytes.  getrandom(2) on the urandom pool only
 * fails on kernels without it; the fallback then is a splitmix64 stream
 * seeded from the clock and pid, which the per-millisecond counter keeps
 * unique within this process anyway. */
static void random_bytes(void *buf, size_t n)
{
	unsigned char *p = buf;
	size_t got = 0;
	while (got < n) {
		ssize_t r = getrandom(p + got, n - got, 0);
		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		break;
	}
	if (got == n)
		return;

	static _Thread_local uint64_t state;
	if (state == 0) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		state = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
			((uint64_t)getpid() << 16) ^ (uint64_t)(uintptr_t)&ts;
	}
	for (; got < n; got++) {
		uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
		p[got] = (unsigned char)(z ^ (z >> 31));
	}
}

/* Hands out random bytes from a per-thread pool of getrandom(2) output. */
static void pooled_random(unsigned char *out, size_t n)
{
	static _Thread_local unsigned char pool[4096];
	static _Thread_local size_t left;

	if (left < n) {
		random_bytes(pool, sizeof(pool));
		left = sizeof(pool);
	}
	memcpy(out, pool + sizeof(pool) - left, n);
	left -= n;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void lp_uuid7(char out[37])
{
	unsigned char rnd[10]; /* 2 bytes to seed the counter, 8 for rand_b */
	pooled_random(rnd, sizeof(rnd));

	uint64_t now = wall_ms();
	pthread_mutex_lock(&uuid_lock);
	if (now > uuid_last_ms) {
		uuid_last_ms = now;
		uuid_counter = (uint16_t)(((rnd[0] << 8) | rnd[1]) & 0x7ff);
	} else if (uuid_counter < 0xfff) {
		uuid_counter++;
	} else {
		uuid_last_ms++;
		uuid_counter = (uint16_t)(((rnd[0] << 8) | rnd[1]) & 0x7ff);
	}
	uint64_t ms = uuid_last_ms;
	uint16_t counter = uuid_counter;
	pthread_mutex_unlock(&uuid_lock);

	unsigned char b[16];
	for (int i = 0; i < 6; i++)
		b[i] = (unsigned char)(ms >> (40 - 8 * i));
	b[6] = (unsigned char)(0x70 | (counter >> 8));
	b[7] = (unsigned char)(counter & 0xff);
	memcpy(b + 8, rnd + 2, 8);
	b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));

	static const char hex[] = "0123456789abcdef";
	char *o = out;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*o++ = '-';
		*o++ = hex[b[i] >> 4];
		*o++ = hex[b[i] & 0x0f];
	}
	*o = '\0';
}

bool lp_uuid_valid(const char *s)
{
	if (!s)
		return false;
	for (int i = 0; i < 36; i++) {
		char c = s[i];
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return false;
		} else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
			     (c >= 'A' && c <= 'F'))) {
			return false; /* also stops at an early NUL */
		}
	}
	return s[36] == '\0';
}
