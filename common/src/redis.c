/* redis.c - a small thread-safe Redis client on hiredis.
 *
 * One blocking hiredis connection behind a mutex.  Nothing is opened until
 * the first command; a command that fails at the I/O level (refused,
 * reset, timed out) frees the context, and the next command reconnects.
 * Connect and command I/O are both bounded by timeout_ms, so a hung Redis
 * costs a caller at most about twice that.
 *
 * When a breaker is given, every command asks it first and reports to it
 * afterwards: while it is open, commands fail at once without touching the
 * network.  A Redis error reply (REDIS_REPLY_ERROR) is an answer, so it
 * counts as a success for the breaker; only I/O failures count against it.
 *
 * hiredis writes with plain send(2): a process using this must ignore
 * SIGPIPE (lp_daemon_signals does). */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "logpipe/breaker.h"
#include "logpipe/log.h"
#include "logpipe/redis.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

#define REDIS_DEFAULT_PORT 6379

struct lp_redis {
	char *host;             /* host name or address, no brackets */
	int port;               /* TCP port */
	int db;                 /* database selected after connecting */
	char *user;             /* ACL user name, or NULL */
	char *password;         /* AUTH password, or NULL */
	int timeout_ms;         /* connect and command timeout */
	struct lp_breaker *br;  /* caller's breaker, may be NULL */
	pthread_mutex_t mu;     /* guards ctx and down */
	redisContext *ctx;      /* open connection, or NULL */
	bool down;              /* the last attempt failed (log transitions only) */
};

/* ---- URL ---------------------------------------------------------------- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A heap copy of s[0..n) with %XX escapes decoded. */
static char *pct_decode(const char *s, size_t n)
{
	char *out = lp_xmalloc(n + 1), *o = out;
	size_t i;

	for (i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			*o++ = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		} else {
			*o++ = s[i];
		}
	}
	*o = '\0';
	return out;
}

/*
 * "redis://[[user]:password@]host[:port][/db]" or "host[:port]"; an IPv6
 * host is written in brackets.  Returns 0 or -EINVAL.
 */
static int parse_url(struct lp_redis *r, const char *url)
{
	const char *s = url, *end, *at, *colon, *h, *hend;

	if (strncasecmp(s, "redis://", 8) == 0)
		s += 8;
	else if (strstr(s, "://"))
		return -EINVAL; /* rediss:// (TLS) and others are not supported */
	end = s + strcspn(s, "/?#");

	at = memchr(s, '@', (size_t)(end - s));
	if (at) {
		/* The last '@' ends the user info (a password may hold one). */
		while (memchr(at + 1, '@', (size_t)(end - at - 1)))
			at = memchr(at + 1, '@', (size_t)(end - at - 1));
		colon = memchr(s, ':', (size_t)(at - s));
		if (colon) {
			if (colon > s)
				r->user = pct_decode(s, (size_t)(colon - s));
			r->password = pct_decode(colon + 1, (size_t)(at - colon - 1));
		} else if (at > s) {
			r->user = pct_decode(s, (size_t)(at - s));
		}
		s = at + 1;
	}

	if (*s == '[') {
		h = s + 1;
		hend = memchr(h, ']', (size_t)(end - h));
		if (!hend)
			return -EINVAL;
		s = hend + 1;
	} else {
		h = s;
		hend = memchr(s, ':', (size_t)(end - s));
		if (!hend)
			hend = end;
		s = hend;
	}
	if (hend == h)
		return -EINVAL;
	r->host = pct_decode(h, (size_t)(hend - h));

	r->port = REDIS_DEFAULT_PORT;
	if (s < end) {
		if (*s != ':')
			return -EINVAL;
		r->port = lp_parse_decimal(s + 1, (size_t)(end - s - 1), 1, 65535);
		if (r->port < 0)
			return -EINVAL;
	}

	r->db = 0;
	if (*end == '/' && end[1] && end[1] != '?' && end[1] != '#') {
		r->db = lp_parse_decimal(end + 1, strcspn(end + 1, "?#"), 0, 1000000);
		if (r->db < 0)
			return -EINVAL;
	}
	return 0;
}

/* ---- lifecycle ---------------------------------------------------------- */

void lp_redis_free(struct lp_redis *r)
{
	if (!r)
		return;
	if (r->ctx)
		redisFree(r->ctx);
	pthread_mutex_destroy(&r->mu);
	free(r->host);
	free(r->user);
	free(r->password);
	free(r);
}

struct lp_redis *lp_redis_new(const char *url, int timeout_ms, struct lp_breaker *br)
{
	struct lp_redis *r;
	const char *at;

	if (!url)
		return NULL;
	r = lp_xcalloc(1, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
	if (parse_url(r, url) < 0) {
		/* Quote only what follows the user info: no password in logs. */
		at = strrchr(url, '@');
		lp_error("invalid redis url \"%s%s\"", at ? "***@" : "", at ? at + 1 : url);
		lp_redis_free(r);
		return NULL;
	}
	r->timeout_ms = timeout_ms > 0 ? timeout_ms : 1000;
	r->br = br;
	return r;
}

struct lp_breaker *lp_redis_breaker(struct lp_redis *r)
{
	return r->br;
}

/* ---- commands ----------------------------------------------------------- */

/* Logs the first failure after a success, and the first success after. */
static void note_state(struct lp_redis *r, bool ok, const char *why)
{
	if (!ok && !r->down)
		lp_warn("redis %s:%d unreachable: %s", r->host, r->port, why);
	else if (ok && r->down)
		lp_info("redis %s:%d reachable again", r->host, r->port);
	r->down = !ok;
}

/* Runs one setup command on a fresh context; false when it failed. */
static bool setup_cmd(redisContext *c, const char *what, redisReply *reply)
{
	bool ok = reply && reply->type != REDIS_REPLY_ERROR;

	if (!ok)
		lp_warn("redis %s failed: %s", what,
			reply ? reply->str : (c->errstr[0] ? c->errstr : "no reply"));
	if (reply)
		freeReplyObject(reply);
	return ok;
}

/* Opens r->ctx (AUTH, SELECT included).  Called with r->mu held. */
static bool connect_locked(struct lp_redis *r)
{
	struct timeval tv = { r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000 };
	redisContext *c = redisConnectWithTimeout(r->host, r->port, tv);

	if (!c || c->err) {
		note_state(r, false, c ? c->errstr : "out of memory");
		if (c)
			redisFree(c);
		return false;
	}
	redisSetTimeout(c, tv);
	redisEnableKeepAlive(c);
	if (r->password &&
	    !setup_cmd(c, "AUTH",
		       r->user ? redisCommand(c, "AUTH %s %s", r->user, r->password)
			       : redisCommand(c, "AUTH %s", r->password)))
		goto fail;
	if (r->db != 0 && !setup_cmd(c, "SELECT", redisCommand(c, "SELECT %d", r->db)))
		goto fail;
	r->ctx = c;
	return true;
fail:
	note_state(r, false, c->err ? c->errstr : "connection setup refused");
	redisFree(c);
	return false;
}

/*
 * One command, either from a format (fmt, *ap) or from argv.  Asks and
 * informs the breaker; reconnects lazily; drops the connection on I/O
 * failure.
 */
static redisReply *run(struct lp_redis *r, const char *fmt, va_list *ap, int argc,
		       const char **argv, const size_t *argvlen)
{
	redisReply *reply = NULL;
	int64_t t0;

	if (r->br && !lp_breaker_allow(r->br))
		return NULL;
	t0 = lp_now_ms();
	pthread_mutex_lock(&r->mu);
	if (r->ctx || connect_locked(r)) {
		if (fmt)
			reply = redisvCommand(r->ctx, fmt, *ap);
		else
			reply = redisCommandArgv(r->ctx, argc, argv, argvlen);
		if (!reply) {
			note_state(r, false, r->ctx->errstr[0] ? r->ctx->errstr : "no reply");
			redisFree(r->ctx);
			r->ctx = NULL;
		} else {
			note_state(r, true, NULL);
		}
	}
	pthread_mutex_unlock(&r->mu);
	if (r->br)
		lp_breaker_record(r->br, reply != NULL, lp_now_ms() - t0);
	return reply;
}

redisReply *lp_redis_cmd(struct lp_redis *r, const char *fmt, ...)
{
	redisReply *reply;
	va_list ap;

	va_start(ap, fmt);
	reply = run(r, fmt, &ap, 0, NULL, NULL);
	va_end(ap);
	return reply;
}

redisReply *lp_redis_cmdargv(struct lp_redis *r, int argc, const char **argv,
			     const size_t *argvlen)
{
	return run(r, NULL, NULL, argc, argv, argvlen);
}

int lp_redis_ping(struct lp_redis *r)
{
	redisReply *reply = lp_redis_cmd(r, "PING");
	int ret = -EIO;

	if (reply && reply->type == REDIS_REPLY_STATUS && strcasecmp(reply->str, "PONG") == 0)
		ret = 0;
	if (reply)
		freeReplyObject(reply);
	return ret;
}
