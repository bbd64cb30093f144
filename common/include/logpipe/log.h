/* log.h - structured JSON log lines on stderr, one object per line.
 *
 * Every line carries ts, level, service and msg; callers add fields with
 * lp_log_kv().  The request being served, if any, is kept per thread
 * (lp_log_set_request): its id as "request_id" and its W3C trace id as
 * "trace_id" on every line that thread writes.  Thread-safe: each line is
 * written with a single write(2). */
#ifndef LOGPIPE_LOG_H
#define LOGPIPE_LOG_H

#include <stdbool.h>

enum lp_log_level { LP_LOG_DEBUG, LP_LOG_INFO, LP_LOG_WARN, LP_LOG_ERROR };

/* Sets the service name written on every line and the minimum level. */
void lp_log_init(const char *service, enum lp_log_level min);
/* Parses "debug", "info", "warn", "error"; returns -EINVAL otherwise. */
int lp_log_level_parse(const char *s, enum lp_log_level *out);
/* Sets this thread's request id and W3C trace id (32 hex digits, from
 * lp_traceparent_ok), or clears either with NULL. */
void lp_log_set_request(const char *request_id, const char *trace_id);

/* Buffers lines below WARN for at most flush_ms milliseconds and writes
 * them together (0, the default: each line is written at once).  A line
 * at WARN or above is written at once, with every line before it.  What
 * is buffered is written at exit (atexit) and by lp_log_flush; a crash
 * loses at most flush_ms of lines below WARN.  Returns 0 or -errno. */
int lp_log_buffer(int flush_ms);
/* Writes out what lp_log_buffer holds. */
void lp_log_flush(void);

/* Whether lines of level lvl are written (to skip formatting fields of a
 * line that would be dropped). */
bool lp_log_enabled(enum lp_log_level lvl);

void lp_log(enum lp_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Like lp_log, with extra string fields: NULL-terminated key, value pairs
 * before the message, e.g. lp_log_kv(LP_LOG_INFO, (const char *[]){"topic",
 * t, NULL}, "created").  A pair whose value is NULL is left out; a key
 * given here wins over the thread's request_id / trace_id. */
void lp_log_kv(enum lp_log_level lvl, const char *const *kv, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define lp_debug(...) lp_log(LP_LOG_DEBUG, __VA_ARGS__)
#define lp_info(...)  lp_log(LP_LOG_INFO, __VA_ARGS__)
#define lp_warn(...)  lp_log(LP_LOG_WARN, __VA_ARGS__)
#define lp_error(...) lp_log(LP_LOG_ERROR, __VA_ARGS__)

#endif
