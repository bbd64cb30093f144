/* event_scan.c - the fast path of the enricher's filter stage.
 *
 * lp_event_scan() reads a normalised event without building a jansson tree:
 * one pass that checks the whole text is JSON and notes where the top-level
 * members the filter and the look-ups need are.  It answers only the easy
 * case, an event that is certainly valid; everything else (invalid JSON, an
 * invalid or doubtful field, a \u escape, a duplicate member, a number
 * jansson might refuse as too large, an "enrichment" member) is left to the
 * full path, json_loadb() and lp_event_check_normalized(), which also words
 * the reason a record is refused.  So the scan must never accept what the
 * full path refuses; fuzz/fuzz_event_scan.c checks exactly that.
 *
 * The grammar is RFC 8259's, with jansson's own limits where it has them:
 * strings are UTF-8 without control characters, and the text is one object
 * with nothing but whitespace after it. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "logpipe/event.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

/* Deeper nesting is legal JSON, but left to the full path. */
#define SCAN_MAX_DEPTH 32

/* The top-level members the scan looks at. */
enum member {
	M_ID, M_MESSAGE, M_SERVICE, M_LEVEL, M_TIMESTAMP, M_HOST, M_SOURCE_IP, M_TENANT,
	M_CORRELATION_ID, M_RECEIVED_AT, M_TRACE_ID, M_SPAN_ID, M_ATTRIBUTES, M_ENRICHMENT,
	NMEMBERS
};

static const char *const member_names[NMEMBERS] = {
	"id", "message", "service", "level", "timestamp", "host", "source_ip", "tenant",
	"correlation_id", "received_at", "trace_id", "span_id", "attributes", "enrichment",
};

enum kind { K_NONE, K_STRING, K_OBJECT, K_OTHER };

/* Where one member's value is: for a string, its content between the
 * quotes, and whether it holds an escape. */
struct span {
	enum kind kind;  /* K_NONE while the member has not been seen */
	const char *p;   /* a string's first byte after the quote */
	size_t n;        /* its length in bytes, escapes as written */
	bool escaped;    /* it holds a backslash escape */
};

/* The scanner's position in the text. */
struct scan {
	const char *p;   /* next byte to read */
	const char *end; /* one past the last byte */
	int depth;       /* containers open around p */
};

static void skip_ws(struct scan *s)
{
	while (s->p < s->end &&
	       (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

/* A string at s->p (its opening quote).  Plain escapes are accepted; \u
 * escapes are left to the full path (jansson checks their surrogates and
 * refuses \u0000). */
static bool scan_string(struct scan *s, struct span *out)
{
	const char *start;
	bool escaped = false;

	s->p++;
	start = s->p;
	for (;;) {
		const char *run = s->p;

		while (s->p < s->end && (unsigned char)*s->p >= 0x20 && *s->p != '"' &&
		       *s->p != '\\')
			s->p++;
		if (!lp_utf8_valid((const unsigned char *)run, (size_t)(s->p - run)))
			return false;
		if (s->p >= s->end || (unsigned char)*s->p < 0x20)
			return false;
		if (*s->p == '"')
			break;
		/* A backslash. */
		if (s->p + 1 >= s->end || !strchr("\"\\/bfnrt", s->p[1]) || s->p[1] == '\0')
			return false;
		escaped = true;
		s->p += 2;
	}
	if (out) {
		out->kind = K_STRING;
		out->p = start;
		out->n = (size_t)(s->p - start);
		out->escaped = escaped;
	}
	s->p++;
	return true;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* A number.  jansson refuses integers beyond 64 bits and reals that
 * overflow; numbers that could be either are left to the full path. */
static bool scan_number(struct scan *s)
{
	const char *start = s->p;
	size_t digits = 0;

	if (*s->p == '-')
		s->p++;
	if (s->p >= s->end || !is_digit(*s->p))
		return false;
	if (*s->p == '0') {
		s->p++;
		digits++;
	} else {
		while (s->p < s->end && is_digit(*s->p)) {
			s->p++;
			digits++;
		}
	}
	if (s->p < s->end && *s->p == '.') {
		s->p++;
		if (s->p >= s->end || !is_digit(*s->p))
			return false;
		while (s->p < s->end && is_digit(*s->p)) {
			s->p++;
			digits++;
		}
	}
	if (s->p < s->end && (*s->p == 'e' || *s->p == 'E'))
		return false; /* an exponent may overflow: the full path decides */
	return digits <= 18 && s->p > start;
}

static bool scan_literal(struct scan *s, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
		return false;
	s->p += n;
	return true;
}

static bool scan_value(struct scan *s, struct span *out);

/* An object or array at s->p; for the top-level object, members are noted
 * in spans. */
static bool scan_container(struct scan *s, struct span *spans)
{
	char close = *s->p == '{' ? '}' : ']';
	bool first = true;

	if (++s->depth > SCAN_MAX_DEPTH)
		return false;
	s->p++;
	skip_ws(s);
	if (s->p < s->end && *s->p == close) {
		s->p++;
		s->depth--;
		return true;
	}
	for (;;) {
		struct span key, val, *dst = NULL;

		if (!first) {
			skip_ws(s);
			if (s->p >= s->end || *s->p != ',')
				return false;
			s->p++;
			skip_ws(s);
		}
		first = false;
		if (close == '}') {
			if (s->p >= s->end || *s->p != '"' || !scan_string(s, &key))
				return false;
			if (spans) {
				/* A top-level name with an escape might spell a member
				 * the filter reads. */
				if (key.escaped)
					return false;
				for (int i = 0; i < NMEMBERS; i++) {
					if (strlen(member_names[i]) == key.n &&
					    memcmp(member_names[i], key.p, key.n) == 0) {
						dst = &spans[i];
						break;
					}
				}
				/* jansson keeps the last of duplicates: not worth it. */
				if (dst && dst->kind != K_NONE)
					return false;
			}
			skip_ws(s);
			if (s->p >= s->end || *s->p != ':')
				return false;
			s->p++;
			skip_ws(s);
		}
		if (!scan_value(s, dst ? dst : &val))
			return false;
		skip_ws(s);
		if (s->p < s->end && *s->p == close) {
			s->p++;
			s->depth--;
			return true;
		}
	}
}

static bool scan_value(struct scan *s, struct span *out)
{
	if (s->p >= s->end)
		return false;
	out->kind = K_OTHER;
	switch (*s->p) {
	case '"':
		return scan_string(s, out);
	case '{':
		out->kind = K_OBJECT;
		return scan_container(s, NULL);
	case '[':
		return scan_container(s, NULL);
	case 't':
		return scan_literal(s, "true");
	case 'f':
		return scan_literal(s, "false");
	case 'n':
		return scan_literal(s, "null");
	default:
		return scan_number(s);
	}
}

/* Copies a string member without escapes into dst (NUL-terminated).
 * False when it is escaped or does not fit. */
static bool copy_plain(const struct span *sp, char *dst, size_t len)
{
	if (sp->escaped || sp->n >= len)
		return false;
	memcpy(dst, sp->p, sp->n);
	dst[sp->n] = '\0';
	return true;
}

/* An optional plain string member: absent (NULL) or copied. */
static bool optional_plain(const struct span *sp, char *dst, size_t len, const char **out)
{
	*out = NULL;
	if (sp->kind == K_NONE)
		return true;
	if (sp->kind != K_STRING || !copy_plain(sp, dst, len))
		return false;
	*out = dst;
	return true;
}

int lp_event_scan(const char *text, size_t len, struct lp_event_view *v)
{
	struct span sp[NMEMBERS];
	struct scan s = { text, text + len, 0 };
	char buf[64];
	int64_t ms;
	int i;

	memset(sp, 0, sizeof(sp));
	skip_ws(&s);
	if (s.p >= s.end || *s.p != '{' || !scan_container(&s, sp))
		return -ENOTSUP;
	skip_ws(&s);
	if (s.p != s.end)
		return -ENOTSUP;

	/* The checks of lp_event_check_normalized, on the spans. */
	if (sp[M_ID].kind != K_STRING || !copy_plain(&sp[M_ID], buf, sizeof(buf)) ||
	    !lp_uuid_valid(buf))
		return -ENOTSUP;
	if (sp[M_MESSAGE].kind != K_STRING || sp[M_MESSAGE].n == 0)
		return -ENOTSUP;
	if (sp[M_SERVICE].kind != K_STRING || sp[M_SERVICE].n == 0 ||
	    !copy_plain(&sp[M_SERVICE], v->service, sizeof(v->service)))
		return -ENOTSUP;
	if (sp[M_LEVEL].kind != K_STRING || !copy_plain(&sp[M_LEVEL], buf, sizeof(buf)) ||
	    lp_level_rank(buf) < 0)
		return -ENOTSUP;
	if (sp[M_TIMESTAMP].kind != K_STRING || !copy_plain(&sp[M_TIMESTAMP], buf, sizeof(buf)) ||
	    lp_parse_rfc3339(buf, &ms) < 0)
		return -ENOTSUP;
	for (i = M_HOST; i <= M_SPAN_ID; i++)
		if (sp[i].kind != K_NONE && sp[i].kind != K_STRING)
			return -ENOTSUP;
	if (sp[M_ATTRIBUTES].kind != K_NONE && sp[M_ATTRIBUTES].kind != K_OBJECT)
		return -ENOTSUP;
	/* Re-fed output: the full path takes the old enrichment out. */
	if (sp[M_ENRICHMENT].kind != K_NONE)
		return -ENOTSUP;

	/* What the look-ups read. */
	if (!optional_plain(&sp[M_HOST], v->host_buf, sizeof(v->host_buf), &v->host) ||
	    !optional_plain(&sp[M_SOURCE_IP], v->source_ip_buf, sizeof(v->source_ip_buf),
			    &v->source_ip))
		return -ENOTSUP;
	return 0;
}
