/* log.c - structured JSON log lines on stderr, one object per line.
 *
 * A line is built in a heap buffer and written with one write(2), so lines
 * from different threads never interleave (stderr is unbuffered, and writes
 * of a pipe's PIPE_BUF or less are atomic).  The trace id is thread-local;
 * the service name and minimum level are set once at start-up. */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <strings.h>
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
/* The correlation id of the request this thread serves, "" for none. */
static _Thread_local char log_trace[128];

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

void lp_log_set_trace(const char *trace_id)
{
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

static void log_line(enum lp_log_level lvl, const char *const *kv, const char *fmt, va_list ap)
{
	struct lp_buf line = LP_BUF_INIT;
	struct lp_buf msg = LP_BUF_INIT;
	int saved = errno;
	char ts[32];

	if ((int)lvl < atomic_load(&log_min))
		return;
	if (lvl > LP_LOG_ERROR)
		lvl = LP_LOG_ERROR;
	lp_rfc3339(lp_wall_ms(), ts);
	lp_buf_vaddf(&msg, fmt, ap);

	lp_buf_addf(&line, "{\"ts\":\"%s\",\"level\":\"%s\",\"service\":", ts, level_names[lvl]);
	lp_buf_add_json_str(&line, log_service[0] ? log_service : program_invocation_short_name);
	lp_buf_adds(&line, ",\"msg\":");
	lp_buf_add_json_str(&line, msg.buf);
	for (; kv && kv[0]; kv += 2) {
		lp_buf_addch(&line, ',');
		lp_buf_add_json_str(&line, kv[0]);
		lp_buf_addch(&line, ':');
		lp_buf_add_json_str(&line, kv[1]);
	}
	if (log_trace[0]) {
		lp_buf_adds(&line, ",\"trace_id\":");
		lp_buf_add_json_str(&line, log_trace);
	}
	lp_buf_adds(&line, "}\n");
	write_all(STDERR_FILENO, line.buf, line.len);

	lp_buf_release(&msg);
	lp_buf_release(&line);
	errno = saved;
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
