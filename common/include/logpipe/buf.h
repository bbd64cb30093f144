/* buf.h - growable byte buffer, always NUL-terminated (after git's strbuf). */
#ifndef LOGPIPE_BUF_H
#define LOGPIPE_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct lp_buf {
	char *buf;    /* the bytes, NUL-terminated; never NULL after init */
	size_t len;   /* bytes in use, not counting the NUL */
	size_t alloc; /* bytes allocated; 0 while buf points at a static "" */
};

#define LP_BUF_INIT { lp__buf_empty, 0, 0 }
extern char lp__buf_empty[];

void lp_buf_init(struct lp_buf *b, size_t hint);
/* Frees the storage and leaves b re-initialised (usable again). */
void lp_buf_release(struct lp_buf *b);
/* Ensures room for n more bytes plus the NUL.  Aborts on out-of-memory. */
void lp_buf_grow(struct lp_buf *b, size_t n);
void lp_buf_add(struct lp_buf *b, const void *data, size_t len);
void lp_buf_adds(struct lp_buf *b, const char *s);
void lp_buf_addch(struct lp_buf *b, char c);
void lp_buf_addf(struct lp_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void lp_buf_vaddf(struct lp_buf *b, const char *fmt, va_list ap);
/* Appends s as a JSON string literal, quotes included (NULL gives ""). */
void lp_buf_add_json_str(struct lp_buf *b, const char *s);
/* Appends the n bytes at s (valid UTF-8, NULs escaped like any control
 * character) as a JSON string literal with exactly the bytes jansson's
 * json_dumps writes for it: \u001F for control characters without a short
 * escape, '/' and UTF-8 as they are. */
void lp_buf_add_json_strn(struct lp_buf *b, const char *s, size_t n);
void lp_buf_reset(struct lp_buf *b);
/* Hands the storage to the caller (free() it) and re-initialises b. */
char *lp_buf_detach(struct lp_buf *b, size_t *len);

#endif
