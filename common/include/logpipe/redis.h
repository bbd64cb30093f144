/* redis.h - a small thread-safe Redis client on hiredis.
 *
 * One connection guarded by a mutex, with connect/command timeouts and a
 * lazy reconnect; calls fail fast while the breaker "redis" is open.  For
 * more parallelism, create several. */
#ifndef LOGPIPE_REDIS_H
#define LOGPIPE_REDIS_H

#include <hiredis/hiredis.h>
#include <stdbool.h>

struct lp_redis;
struct lp_breaker;

/* url: "redis://host:port[/db]" or "host:port".  Never connects here. */
struct lp_redis *lp_redis_new(const char *url, int timeout_ms, struct lp_breaker *br);
void lp_redis_free(struct lp_redis *r);
/* Runs a command (hiredis format).  Returns the reply (freeReplyObject it)
 * or NULL when Redis is unreachable, timed out or the breaker is open.  A
 * reply of type REDIS_REPLY_ERROR is returned as is. */
redisReply *lp_redis_cmd(struct lp_redis *r, const char *fmt, ...);
redisReply *lp_redis_cmdargv(struct lp_redis *r, int argc, const char **argv,
			     const size_t *argvlen);
/* PING: 0 or -EIO. */
int lp_redis_ping(struct lp_redis *r);
struct lp_breaker *lp_redis_breaker(struct lp_redis *r);

#endif
