/* buf.c - growable byte buffer, always NUL-terminated (after git's strbuf).
 *
 * An initialised buffer with nothing allocated points at the shared, empty
 * lp__buf_empty (alloc == 0), so that LP_BUF_INIT needs no allocation and
 * b->buf is always a valid string.  Nothing ever writes to lp__buf_empty. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logpipe/buf.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

char lp__buf_empty[1];

void lp_buf_init(struct lp_buf *b, size_t hint)
{
	b->buf = lp__buf_empty;
	b->len = 0;
	b->alloc = 0;
	if (hint)
		lp_buf_grow(b, hint);
}

void lp_buf_release(struct lp_buf *b)
{
	if (b->alloc)
		free(b->buf);
	lp_buf_init(b, 0);
}

void lp_buf_grow(struct lp_buf *b, size_t n)
{
	size_t need;

	if (n > SIZE_MAX - b->len - 1) {
		fprintf(stderr, "logpipe: buffer size overflow\n");
		abort();
	}
	need = b->len + n + 1;
	if (need <= b->alloc)
		return;
	/* Grow by half again so that appending byte by byte stays linear. */
	if (need < b->alloc + b->alloc / 2)
		need = b->alloc + b->alloc / 2;
	if (need < 64)
		need = 64;
	b->buf = lp_xrealloc(b->alloc ? b->buf : NULL, need);
	if (!b->alloc)
		b->buf[0] = '\0';
	b->alloc = need;
}

void lp_buf_add(struct lp_buf *b, const void *data, size_t len)
{
	if (!len)
		return;
	lp_buf_grow(b, len);
	memcpy(b->buf + b->len, data, len);
	b->len += len;
	b->buf[b->len] = '\0';
}

void lp_buf_adds(struct lp_buf *b, const char *s)
{
	lp_buf_add(b, s, strlen(s));
}

void lp_buf_addch(struct lp_buf *b, char c)
{
	lp_buf_grow(b, 1);
	b->buf[b->len++] = c;
	b->buf[b->len] = '\0';
}

void lp_buf_addf(struct lp_buf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	lp_buf_vaddf(b, fmt, ap);
	va_end(ap);
}

void lp_buf_vaddf(struct lp_buf *b, const char *fmt, va_list ap)
{
	va_list cp;
	int n;

	/* First try in the space there is; if it was too small, grow to the
	 * size vsnprintf reported and format again. */
	if (b->alloc - b->len < 64)
		lp_buf_grow(b, 64);
	va_copy(cp, ap);
	n = vsnprintf(b->buf + b->len, b->alloc - b->len, fmt, cp);
	va_end(cp);
	if (n < 0) {
		b->buf[b->len] = '\0';
		return;
	}
	if ((size_t)n >= b->alloc - b->len) {
		lp_buf_grow(b, (size_t)n);
		va_copy(cp, ap);
		vsnprintf(b->buf + b->len, b->alloc - b->len, fmt, cp);
		va_end(cp);
	}
	b->len += (size_t)n;
}

/* The escaping of both string writers: quotes, backslashes and control
 * characters, the latter as \u00XX with hex digits from the given set;
 * runs of other bytes (UTF-8 included) are copied at once. */
static void add_json_str(struct lp_buf *b, const unsigned char *p, const unsigned char *end,
			 const char *hex)
{
	const unsigned char *run = p;

	lp_buf_grow(b, (size_t)(end - p) + 2);
	lp_buf_addch(b, '"');
	for (; p < end; p++) {
		char esc;

		if (*p >= 0x20 && *p != '"' && *p != '\\')
			continue;
		lp_buf_add(b, run, (size_t)(p - run));
		run = p + 1;
		switch (*p) {
		case '"': esc = '"'; break;
		case '\\': esc = '\\'; break;
		case '\n': esc = 'n'; break;
		case '\r': esc = 'r'; break;
		case '\t': esc = 't'; break;
		case '\b': esc = 'b'; break;
		case '\f': esc = 'f'; break;
		default: esc = 0; break;
		}
		if (esc) {
			char e[2] = { '\\', esc };

			lp_buf_add(b, e, 2);
		} else {
			char u[6] = { '\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15] };

			lp_buf_add(b, u, 6);
		}
	}
	lp_buf_add(b, run, (size_t)(p - run));
	lp_buf_addch(b, '"');
}

void lp_buf_add_json_str(struct lp_buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");

	add_json_str(b, p, p + strlen((const char *)p), "0123456789abcdef");
}

void lp_buf_add_json_strn(struct lp_buf *b, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;

	add_json_str(b, p, p + n, "0123456789ABCDEF");
}

void lp_buf_reset(struct lp_buf *b)
{
	b->len = 0;
	if (b->alloc)
		b->buf[0] = '\0';
}

char *lp_buf_detach(struct lp_buf *b, size_t *len)
{
	char *s = b->alloc ? b->buf : lp_xcalloc(1, 1);

	if (len)
		*len = b->len;
	lp_buf_init(b, 0);
	return s;
}
