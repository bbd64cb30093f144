/* util.h - clocks, small string helpers and allocation that cannot fail. */
#ifndef LOGPIPE_UTIL_H
#define LOGPIPE_UTIL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LP_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Monotonic clock, for durations and timeouts. */
int64_t lp_now_us(void);
int64_t lp_now_ms(void);
/* Wall clock in milliseconds since the epoch, for timestamps. */
int64_t lp_wall_ms(void);
/* Formats epoch milliseconds as RFC 3339 UTC with milliseconds
 * ("2024-01-15T14:23:45.123Z").  out must hold 32 bytes. */
void lp_rfc3339(int64_t epoch_ms, char out[32]);
/* Parses RFC 3339 / ISO 8601 (with 'Z' or an offset, optional fraction).
 * Returns 0 and sets *epoch_ms, or -EINVAL. */
int lp_parse_rfc3339(const char *s, int64_t *epoch_ms);

/* Allocation that aborts on out-of-memory instead of returning NULL. */
void *lp_xmalloc(size_t n);
void *lp_xcalloc(size_t n, size_t size);
void *lp_xrealloc(void *p, size_t n);
char *lp_xstrdup(const char *s);

/* Copies at most dstlen-1 bytes and always terminates; returns strlen(src). */
size_t lp_strlcpy(char *dst, const char *src, size_t dstlen);
bool lp_str_has_prefix(const char *s, const char *prefix);
/* The n bytes at s as a decimal number in [lo, hi] (digits only, at most
 * nine); -1 when they are not one (-1 is never a valid lo). */
int lp_parse_decimal(const char *s, size_t n, int lo, int hi);
/* True when s[0..n) is well-formed UTF-8: no overlong forms, surrogates or
 * code points above U+10FFFF (what jansson and PostgreSQL accept). */
bool lp_utf8_valid(const unsigned char *s, size_t n);
/* Whether tp is a W3C traceparent whose ids can be taken ("00-<32 hex>-
 * <16 hex>-<2 hex>", lower case, ids not all zero; a later version read
 * the same way); when it is and trace is not NULL, its trace id is copied
 * there. */
bool lp_traceparent_ok(const char *tp, char trace[33]);
/* Writes v in decimal and a NUL to dst (at least 21 bytes); returns the
 * number of digits.  For hot paths where snprintf's cost shows. */
size_t lp_fmt_u64(char *dst, uint64_t v);
/* Sleeps up to ms milliseconds, returning early when *stop (set by another
 * thread; may be NULL) becomes true. */
void lp_sleep_ms(int64_t ms, const atomic_bool *stop);

#endif
