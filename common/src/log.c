/* log.c - structured JSON log lines on stderr, one object per line.
 *
 * A line is built in a heap buffer and written with one write(2), so lines
 * from different threads never interleave (stderr is unbuffered, and writes
 * of a pipe's PIPE_BUF or less are atomic).  With lp_log_buffer, lines
 * below WARN are gathered (whole lines, under one mutex) and written
 * together, at most flush_ms later: one write(2) for many access lines
 * instead of one each, which contend for the file's lock.  The request
 * and trace ids are thread-local; the service name and minimum level are set once at
 * start-up. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "logpipe/buf.h"
#include "logpipe/log.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

static const char *const level_names[] = { "debug", "info", "warn", "error" };

/* The service name on every line; the program name until lp_log_init. */
static char log_service[64];
/* Lines below this level are dropped. */
static atomic_int log_min = LP_LOG_INFO;
/* The id and the W3C trace id of the request this thread serves, "" for
 * none. */
static _Thread_local char log_request[128];
static _Thread_local char log_trace[33];

void lp_log_init(const char *service, enum lp_log_level min)
{
	lp_strlcpy(log_service, service ? service : "", sizeof(log_service));
	atomic_store(&log_min, (int)min);
}

int lp_log_level_parse(const char *s, enum lp_log_level *out)
{
	for (size_t i = 0; i < LP_ARRAY_SIZE(level_names); i++) {
		if (!strcasecmp(s, level_names[i])) {
			*out = (enum lp_log_level)i;
			return 0;
		}
	}
	if (!strcasecmp(s, "warning")) {
		*out = LP_LOG_WARN;
		return 0;
	}
	return -EINVAL;
}

void lp_log_set_request(const char *request_id, const char *trace_id)
{
	lp_strlcpy(log_request, request_id ? request_id : "", sizeof(log_request));
	lp_strlcpy(log_trace, trace_id ? trace_id : "", sizeof(log_trace));
}

static void write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		p += n;
		len -= (size_t)n;
	}
}

/* ---- buffered output (lp_log_buffer) ------------------------------------ */

/* Lines waiting to be written, whole lines only; written when a line would
 * not fit, with a line at WARN or above, by the flusher every
 * log_flush_ms, and at exit.  A static array: nothing to free. */
static char log_pending[64 * 1024];
static size_t log_pending_len;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int log_flush_ms; /* 0: every line written at once */

static void flush_locked(void)
{
	write_all(STDERR_FILENO, log_pending, log_pending_len);
	log_pending_len = 0;
}

void lp_log_flush(void)
{
	pthread_mutex_lock(&log_mu);
	flush_locked();
	pthread_mutex_unlock(&log_mu);
}

static void *flusher_main(void *arg)
{
	(void)arg;
	for (;;) {
		int ms = atomic_load(&log_flush_ms);

		if (ms <= 0)
			ms = 100; /* buffering was turned off: nothing to do */
		struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

		nanosleep(&ts, NULL);
		lp_log_flush();
	}
	return NULL;
}

static void register_atexit(void)
{
	atexit(lp_log_flush);
}

int lp_log_buffer(int flush_ms)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	static int started;
	pthread_t t;

	if (flush_ms < 0)
		return -EINVAL;
	if (flush_ms == 0) {
		atomic_store(&log_flush_ms, 0);
		lp_log_flush();
		return 0;
	}
	pthread_mutex_lock(&log_mu);
	if (!started) {
		/* Detached: it only ever sleeps and writes out. */
		if (pthread_create(&t, NULL, flusher_main, NULL) != 0) {
			pthread_mutex_unlock(&log_mu);
			return -EAGAIN;
		}
		pthread_detach(t);
		started = 1;
	}
	atomic_store(&log_flush_ms, flush_ms);
	pthread_mutex_unlock(&log_mu);
	pthread_once(&once, register_atexit);
	return 0;
}

/* Writes one whole line: at once, or into log_pending while buffering. */
static void emit(const char *p, size_t n, bool urgent)
{
	if (!atomic_load_explicit(&log_flush_ms, memory_order_relaxed)) {
		write_all(STDERR_FILENO, p, n);
		return;
	}
	pthread_mutex_lock(&log_mu);
	if (log_pending_len + n > sizeof(log_pending))
		flush_locked();
	if (n > sizeof(log_pending)) {
		write_all(STDERR_FILENO, p, n);
	} else {
		memcpy(log_pending + log_pending_len, p, n);
		log_pending_len += n;
	}
	if (urgent)
		flush_locked();
	pthread_mutex_unlock(&log_mu);
}

/* The RFC 3339 time of epoch_ms, from a per-thread copy of the last one:
 * within the same second only the milliseconds change, so gmtime_r and
 * snprintf run once a second per thread, not once a line. */
static const char *log_time(int64_t epoch_ms)
{
	static _Thread_local char ts[32];
	static _Thread_local int64_t ts_sec = INT64_MIN;
	int64_t sec = epoch_ms / 1000, ms = epoch_ms % 1000;

	if (ms < 0) {
		ms += 1000;
		sec--;
	}
	if (sec != ts_sec) {
		lp_rfc3339(epoch_ms, ts);
		ts_sec = sec;
		return ts;
	}
	/* "YYYY-MM-DDTHH:MM:SS.mmmZ": the milliseconds are at 20..22. */
	ts[20] = (char)('0' + ms / 100);
	ts[21] = (char)('0' + ms / 10 % 10);
	ts[22] = (char)('0' + ms % 10);
	return ts;
}

static void log_line(enum lp_log_level lvl, const char *const *kv, const char *fmt, va_list ap)
{
	struct lp_buf line;
	struct lp_buf msg = LP_BUF_INIT;
	const char *text = fmt;
	bool own_request = false, own_trace = false;
	int saved = errno;

	if ((int)lvl < atomic_load(&log_min))
		return;
	if (lvl > LP_LOG_ERROR)
		lvl = LP_LOG_ERROR;
	/* One allocation for a typical line (an access line is about 400
	 * bytes); a message without conversions is used as it is. */
	lp_buf_init(&line, 512);
	if (strchr(fmt, '%')) {
		lp_buf_vaddf(&msg, fmt, ap);
		text = msg.buf;
	}
	lp_buf_adds(&line, "{\"ts\":\"");
	lp_buf_adds(&line, log_time(lp_wall_ms()));
	lp_buf_adds(&line, "\",\"level\":\"");
	lp_buf_adds(&line, level_names[lvl]);
	lp_buf_adds(&line, "\",\"service\":");
	lp_buf_add_json_str(&line, log_service[0] ? log_service : program_invocation_short_name);
	lp_buf_adds(&line, ",\"msg\":");
	lp_buf_add_json_str(&line, text);
	for (; kv && kv[0]; kv += 2) {
		if (!kv[1])
			continue;
		own_request |= strcmp(kv[0], "request_id") == 0;
		own_trace |= strcmp(kv[0], "trace_id") == 0;
		lp_buf_addch(&line, ',');
		lp_buf_add_json_str(&line, kv[0]);
		lp_buf_addch(&line, ':');
		lp_buf_add_json_str(&line, kv[1]);
	}
	if (log_request[0] && !own_request) {
		lp_buf_adds(&line, ",\"request_id\":");
		lp_buf_add_json_str(&line, log_request);
	}
	if (log_trace[0] && !own_trace) {
		lp_buf_adds(&line, ",\"trace_id\":");
		lp_buf_add_json_str(&line, log_trace);
	}
	lp_buf_adds(&line, "}\n");
	emit(line.buf, line.len, lvl >= LP_LOG_WARN);

	lp_buf_release(&msg);
	lp_buf_release(&line);
	errno = saved;
}

bool lp_log_enabled(enum lp_log_level lvl)
{
	return (int)lvl >= atomic_load_explicit(&log_min, memory_order_relaxed);
}

void lp_log(enum lp_log_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_line(lvl, NULL, fmt, ap);
	va_end(ap);
}

void lp_log_kv(enum lp_log_level lvl, const char *const *kv, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_line(lvl, kv, fmt, ap);
	va_end(ap);
}
