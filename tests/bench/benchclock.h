/* benchclock.h - the two clocks the standalone bench tools read: wall
 * time in microseconds (stamps other processes compare) and monotonic
 * milliseconds (timeouts).  Header-only: each tool is built alone. */
#ifndef BENCHCLOCK_H
#define BENCHCLOCK_H

#include <sys/time.h>
#include <time.h>

static inline long long wall_us(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (long long)tv.tv_sec * 1000000LL + tv.tv_usec;
}

static inline long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

#endif
