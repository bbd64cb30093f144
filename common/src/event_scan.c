/* event_scan.c - the fast paths that read events without a jansson tree:
 * the enricher's filter stage, the producer and the consumer.
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

#include "logpipe/buf.h"
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
		unsigned char high = 0;

		while (s->p < s->end && (unsigned char)*s->p >= 0x20 && *s->p != '"' &&
		       *s->p != '\\')
			high |= (unsigned char)*s->p++;
		/* ASCII (the common case) is valid UTF-8 as it is. */
		if ((high & 0x80) && !lp_utf8_valid((const unsigned char *)run, (size_t)(s->p - run)))
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

/* ---- the producer's fast path ------------------------------------------------ */

/*
 * lp_event_scan_input() does what lp_event_normalize() and json_dumps()
 * do for the common input, writing the normalised event straight from the
 * input text.  It must write exactly jansson's bytes, so it takes only
 * what it can copy in jansson's form:
 *
 *   - strings: any UTF-8 and plain escapes; jansson writes them back the
 *     same except `\/`, which it writes as `/` (\u escapes are left out);
 *   - integers of up to 18 digits except -0 (jansson writes 0); reals are
 *     left out, as jansson writes them with 17 significant digits;
 *   - objects whose keys hold no escape and no duplicate (jansson keeps
 *     the last of duplicates), at most NESTED_MAX_KEYS of them;
 *   - whitespace outside strings, which the compact form drops.
 *
 * The aliases and the order of the output repeat event.c's table and
 * lp_event_normalize(); every refusal is left to that full path, which
 * words it.  fuzz/fuzz_event_scan.c checks that the bytes are the same.
 */

#define IN_MAX_MEMBERS 128  /* top-level members; more are left to the full path */
#define NESTED_MAX_KEYS 64  /* keys of one nested object */
#define MAX_EPOCH_MS 253402300799999LL /* as event.c: 9999-12-31T23:59:59.999Z */

enum vkind { V_STRING, V_OBJECT, V_ARRAY, V_NULL, V_INT, V_BOOL };

/* One member of an input object, as written. */
struct in_member {
	const char *k;     /* key (holds no escape) */
	size_t kn;         /* bytes of key */
	const char *v;     /* value's first byte */
	const char *ve;    /* one past its last */
	enum vkind kind;
	struct span str;   /* V_STRING: its content */
	int depth;         /* containers nested in the value, 0 for a scalar */
	bool moved;        /* a top-level member that goes under attributes */
};

static bool in_value(struct scan *s, struct in_member *m, int budget);

/* Whether one of the n members has m's key. */
static bool has_key(const struct in_member *set, size_t n, const struct in_member *m)
{
	size_t j;

	for (j = 0; j < n; j++)
		if (set[j].kn == m->kn && memcmp(set[j].k, m->k, m->kn) == 0)
			return true;
	return false;
}

/* Bytes a string's content decodes to (escapes are two bytes each). */
static size_t decoded_len(const struct span *sp)
{
	size_t n = sp->n;

	if (sp->escaped)
		for (size_t i = 0; i + 1 < sp->n; i++)
			if (sp->p[i] == '\\') {
				n--;
				i++;
			}
	return n;
}

/* An object or array at s->p; members of an object go to mem (up to max,
 * *n of them) when mem is given.  budget is how many containers deep the
 * value may go, this one included. */
static bool in_container(struct scan *s, struct in_member *m, int budget, struct in_member *mem,
			 size_t max, size_t *n)
{
	char close = *s->p == '{' ? '}' : ']';
	struct span keys[NESTED_MAX_KEYS];
	size_t nkeys = 0;
	bool first = true;

	if (budget < 1)
		return false;
	m->kind = close == '}' ? V_OBJECT : V_ARRAY;
	m->depth = 1;
	s->p++;
	skip_ws(s);
	if (s->p < s->end && *s->p == close) {
		s->p++;
		return true;
	}
	for (;;) {
		struct in_member child;
		struct span key;

		if (!first) {
			skip_ws(s);
			if (s->p >= s->end || *s->p != ',')
				return false;
			s->p++;
			skip_ws(s);
		}
		first = false;
		if (close == '}') {
			if (s->p >= s->end || *s->p != '"' || !scan_string(s, &key) || key.escaped)
				return false;
			if (mem) {
				if (*n >= max)
					return false;
			} else {
				if (nkeys >= NESTED_MAX_KEYS)
					return false;
				for (size_t i = 0; i < nkeys; i++)
					if (keys[i].n == key.n && memcmp(keys[i].p, key.p, key.n) == 0)
						return false;
				keys[nkeys++] = key;
			}
			skip_ws(s);
			if (s->p >= s->end || *s->p != ':')
				return false;
			s->p++;
			skip_ws(s);
		}
		if (!in_value(s, &child, budget - 1))
			return false;
		if (child.depth + 1 > m->depth)
			m->depth = child.depth + 1;
		if (mem && close == '}') {
			child.k = key.p;
			child.kn = key.n;
			mem[(*n)++] = child;
		}
		skip_ws(s);
		if (s->p < s->end && *s->p == close) {
			s->p++;
			return true;
		}
	}
}

static bool in_value(struct scan *s, struct in_member *m, int budget)
{
	const char *start = s->p;
	bool ok;

	memset(m, 0, sizeof(*m));
	m->v = start;
	if (s->p >= s->end)
		return false;
	switch (*s->p) {
	case '"':
		m->kind = V_STRING;
		ok = scan_string(s, &m->str);
		break;
	case '{':
	case '[':
		ok = in_container(s, m, budget, NULL, 0, NULL);
		break;
	case 't':
		m->kind = V_BOOL;
		ok = scan_literal(s, "true");
		break;
	case 'f':
		m->kind = V_BOOL;
		ok = scan_literal(s, "false");
		break;
	case 'n':
		m->kind = V_NULL;
		ok = scan_literal(s, "null");
		break;
	default:
		m->kind = V_INT;
		ok = scan_number(s) && memchr(start, '.', (size_t)(s->p - start)) == NULL &&
		     !(s->p - start == 2 && start[0] == '-' && start[1] == '0');
		break;
	}
	m->ve = s->p;
	return ok;
}

/* Appends a scanned value in jansson's compact form. */
static void put_compact(struct lp_buf *b, const char *p, const char *end)
{
	bool in_str = false;
	const char *run = p;

	for (; p < end; p++) {
		char c = *p;

		if (in_str) {
			if (c == '"') {
				in_str = false;
			} else if (c == '\\') {
				if (p[1] == '/') {
					lp_buf_add(b, run, (size_t)(p - run));
					run = p + 1; /* drop the backslash */
				}
				p++;
			}
		} else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
			lp_buf_add(b, run, (size_t)(p - run));
			run = p + 1;
		} else if (c == '"') {
			in_str = true;
		}
	}
	lp_buf_add(b, run, (size_t)(p - run));
}

static void put_key(struct lp_buf *b, const char *k, size_t kn)
{
	lp_buf_addch(b, '"');
	lp_buf_add(b, k, kn);
	lp_buf_add(b, "\":", 2);
}

/* A macro's value as a string literal. */
#define SCAN_STR_(x) #x
#define SCAN_STR(x) SCAN_STR_(x)

/* ,"name":"value" for a value that needs no escaping.  Appended piece by
 * piece, not with lp_buf_addf: printf was a tenth of a batch's CPU. */
static void put_plain(struct lp_buf *b, const char *name, const char *val)
{
	lp_buf_add(b, ",\"", 2);
	lp_buf_adds(b, name);
	lp_buf_add(b, "\":\"", 3);
	lp_buf_adds(b, val);
	lp_buf_addch(b, '"');
}

/* The input spellings of each field, as event.c's table. */
enum in_field { IF_MESSAGE, IF_SERVICE, IF_LEVEL, IF_TIMESTAMP, IF_ID, IF_HOST, IF_SOURCE_IP,
		IF_TENANT, IF_CORRELATION_ID, IF_ATTRIBUTES, IN_FIELDS };

static const char *const in_aliases[IN_FIELDS][5] = {
	[IF_MESSAGE] = { "message" },
	[IF_SERVICE] = { "service", "source" },
	[IF_LEVEL] = { "level", "severity" },
	[IF_TIMESTAMP] = { "timestamp", "ts", "@timestamp" },
	[IF_ID] = { "id" },
	[IF_HOST] = { "host", "hostname" },
	[IF_SOURCE_IP] = { "source_ip" },
	[IF_TENANT] = { "tenant", "organizationId", "tenant_id" },
	[IF_CORRELATION_ID] = { "correlation_id", "correlationId", "trace_id", "traceId" },
	[IF_ATTRIBUTES] = { "attributes" },
};

/* Whether m's key is name.  Without strlen(name): this runs for every
 * spelling of every field against every member (strlen was 6 % of a
 * batch's CPU).  A key holds no raw NUL (JSON escapes it), so strncmp
 * stops within both. */
static bool key_is(const struct in_member *m, const char *name)
{
	return m->kn > 0 && name[0] == m->k[0] && strncmp(name, m->k, m->kn) == 0 &&
	       name[m->kn] == '\0';
}

/* The field a key spells, or -1. */
static int in_field_of(const struct in_member *m)
{
	for (int i = 0; i < IN_FIELDS; i++)
		for (const char *const *a = in_aliases[i]; *a; a++)
			if (key_is(m, *a))
				return i;
	return -1;
}

/* A plain (unescaped) string member copied into dst; false if it is not
 * one or does not fit. */
static bool plain_string(const struct in_member *m, char *dst, size_t len)
{
	return m->kind == V_STRING && copy_plain(&m->str, dst, len);
}

/* The member's integer value; it is known to be at most 18 digits. */
static int64_t int_value(const struct in_member *m)
{
	const char *p = m->v;
	bool neg = *p == '-';
	int64_t v = 0;

	if (neg)
		p++;
	for (; p < m->ve; p++)
		v = v * 10 + (*p - '0');
	return neg ? -v : v;
}

int lp_event_scan_input(const char *text, size_t len, const struct lp_event_limits *lim,
			int64_t now_ms, const char *tenant, struct lp_event_fast *out)
{
	struct in_member mem[IN_MAX_MEMBERS], attr[IN_MAX_MEMBERS], top;
	const struct in_member *pick[IN_FIELDS] = { 0 };
	const char *level = "INFO";
	char tsbuf[32], rcvbuf[32], buf[64];
	struct scan s = { text, text + len, 0 };
	struct lp_buf b;
	size_t n = 0, nattr = 0, count, i, j;
	int budget, f;
	int64_t ms = now_ms;

	if (!lim)
		lim = &lp_event_default_limits;
	budget = lim->max_depth > SCAN_MAX_DEPTH ? SCAN_MAX_DEPTH : (int)lim->max_depth;
	if (tenant) {
		size_t tn = strlen(tenant);

		/* One that jansson would escape, or refuse, is not worth it. */
		if (!lp_utf8_valid((const unsigned char *)tenant, tn))
			return -ENOTSUP;
		for (i = 0; i < tn; i++)
			if ((unsigned char)tenant[i] < 0x20 || tenant[i] == '"' || tenant[i] == '\\')
				return -ENOTSUP;
	}

	/* One object; the event is depth 1, its members may reach max_depth. */
	skip_ws(&s);
	if (s.p >= s.end || *s.p != '{' || !in_container(&s, &top, budget, mem, IN_MAX_MEMBERS, &n))
		return -ENOTSUP;
	skip_ws(&s);
	if (s.p != s.end)
		return -ENOTSUP;
	for (i = 0; i < n; i++)
		for (j = i + 1; j < n; j++)
			if (mem[i].kn == mem[j].kn && memcmp(mem[i].k, mem[j].k, mem[i].kn) == 0)
				return -ENOTSUP;
	/* Trace context in the body is the full path's to validate and keep
	 * (it lands as trace_id/span_id beside the correlation id). */
	for (i = 0; i < n; i++)
		if (key_is(&mem[i], "trace_id") || key_is(&mem[i], "traceId") ||
		    key_is(&mem[i], "span_id") || key_is(&mem[i], "spanId"))
			return -ENOTSUP;

	/* 1. Resolve aliases: the first spelling present and not null. */
	for (f = 0; f < IN_FIELDS; f++) {
		if (f == IF_TENANT && tenant)
			continue;
		for (const char *const *a = in_aliases[f]; *a && !pick[f]; a++)
			for (i = 0; i < n; i++)
				if (mem[i].kind != V_NULL && key_is(&mem[i], *a)) {
					pick[f] = &mem[i];
					break;
				}
	}

	/* 2. Validate; any doubt goes to the full path. */
	if (!pick[IF_MESSAGE] || pick[IF_MESSAGE]->kind != V_STRING ||
	    pick[IF_MESSAGE]->str.n == 0 || decoded_len(&pick[IF_MESSAGE]->str) > lim->max_message)
		return -ENOTSUP;
	/* The service is also the Kafka key, read from the output: plain. */
	if (!pick[IF_SERVICE] || pick[IF_SERVICE]->kind != V_STRING ||
	    pick[IF_SERVICE]->str.n == 0 || pick[IF_SERVICE]->str.escaped ||
	    pick[IF_SERVICE]->str.n > lim->max_field)
		return -ENOTSUP;
	if (pick[IF_LEVEL]) {
		if (!plain_string(pick[IF_LEVEL], buf, sizeof(buf)) ||
		    !(level = lp_level_canonical(buf)))
			return -ENOTSUP;
	}
	if (pick[IF_TIMESTAMP]) {
		if (pick[IF_TIMESTAMP]->kind == V_INT)
			ms = int_value(pick[IF_TIMESTAMP]);
		else if (!plain_string(pick[IF_TIMESTAMP], buf, sizeof(buf)) ||
			 lp_parse_rfc3339(buf, &ms) < 0)
			return -ENOTSUP;
		if (ms < 0 || ms > MAX_EPOCH_MS)
			return -ENOTSUP;
	}
	lp_rfc3339(ms, tsbuf);
	if (pick[IF_ID]) {
		if (!plain_string(pick[IF_ID], buf, sizeof(buf)) || !lp_uuid_valid(buf))
			return -ENOTSUP;
		for (i = 0; i < 37; i++)
			out->id[i] = (char)(buf[i] >= 'A' && buf[i] <= 'Z' ? buf[i] + 32 : buf[i]);
	} else {
		lp_uuid7(out->id);
	}
	for (f = IF_HOST; f <= IF_CORRELATION_ID; f++)
		if (pick[f] && (pick[f]->kind != V_STRING || decoded_len(&pick[f]->str) > lim->max_field))
			return -ENOTSUP;
	if (pick[IF_SOURCE_IP] && pick[IF_SOURCE_IP]->str.n > 0 &&
	    (!plain_string(pick[IF_SOURCE_IP], buf, sizeof(buf)) || !lp_ip_valid(buf)))
		return -ENOTSUP;
	if (pick[IF_ATTRIBUTES] && pick[IF_ATTRIBUTES]->kind != V_OBJECT)
		return -ENOTSUP;
	/* Top-level members are at depth 2. */
	for (i = 0; i < n; i++)
		if (mem[i].depth + 1 > (int)lim->max_depth)
			return -ENOTSUP;

	/* 3. Attributes: the input's, then the members not used up, unless
	 * an attribute of the same name is there; those move one level down. */
	if (pick[IF_ATTRIBUTES]) {
		struct scan as = { pick[IF_ATTRIBUTES]->v, pick[IF_ATTRIBUTES]->ve, 0 };

		if (!in_container(&as, &top, budget, attr, IN_MAX_MEMBERS, &nattr))
			return -ENOTSUP;
		for (i = 0; i < nattr; i++)
			for (j = i + 1; j < nattr; j++)
				if (attr[i].kn == attr[j].kn &&
				    memcmp(attr[i].k, attr[j].k, attr[i].kn) == 0)
					return -ENOTSUP;
	}
	count = nattr;
	for (i = 0; i < n; i++) {
		bool consumed;

		f = in_field_of(&mem[i]);
		if (key_is(&mem[i], "schema_version") || key_is(&mem[i], "received_at"))
			consumed = true;
		else if (f < 0)
			consumed = false;
		else if (f == IF_TENANT && tenant)
			consumed = true;
		else
			consumed = mem[i].kind == V_NULL || pick[f] == &mem[i];
		if (consumed)
			continue;
		if (has_key(attr, nattr, &mem[i]))
			continue;
		if (mem[i].depth + 2 > (int)lim->max_depth)
			return -ENOTSUP;
		mem[i].moved = true;
		count++;
	}
	if (count > lim->max_attributes)
		return -ENOTSUP;

	/* 4. Write it, in lp_event_normalize()'s order. */
	lp_buf_init(&b, len + 256 + (tenant ? strlen(tenant) : 0));
	lp_buf_adds(&b, "{\"id\":\"");
	lp_buf_adds(&b, out->id);
	lp_buf_adds(&b, "\",\"schema_version\":" SCAN_STR(LP_EVENT_SCHEMA_VERSION) ",\"timestamp\":\"");
	lp_buf_adds(&b, tsbuf);
	lp_buf_addch(&b, '"');
	lp_rfc3339(now_ms, rcvbuf);
	put_plain(&b, "received_at", rcvbuf);
	put_plain(&b, "level", level);
	lp_buf_adds(&b, ",\"message\":");
	put_compact(&b, pick[IF_MESSAGE]->v, pick[IF_MESSAGE]->ve);
	lp_buf_adds(&b, ",\"service\":");
	out->service_len = pick[IF_SERVICE]->str.n;
	size_t service_at = b.len + 1;
	lp_buf_add(&b, pick[IF_SERVICE]->v, (size_t)(pick[IF_SERVICE]->ve - pick[IF_SERVICE]->v));
	for (f = IF_HOST; f <= IF_CORRELATION_ID; f++) {
		static const char *const names[] = { "host", "source_ip", "tenant", "correlation_id" };

		if (f == IF_TENANT && tenant) {
			if (*tenant)
				put_plain(&b, "tenant", tenant);
			continue;
		}
		if (!pick[f] || pick[f]->str.n == 0)
			continue;
		lp_buf_add(&b, ",\"", 2);
		lp_buf_adds(&b, names[f - IF_HOST]);
		lp_buf_add(&b, "\":", 2);
		put_compact(&b, pick[f]->v, pick[f]->ve);
	}
	lp_buf_adds(&b, ",\"attributes\":{");
	for (i = 0; i < nattr; i++) {
		if (i > 0)
			lp_buf_addch(&b, ',');
		put_key(&b, attr[i].k, attr[i].kn);
		put_compact(&b, attr[i].v, attr[i].ve);
	}
	for (i = 0, j = nattr; i < n; i++) {
		if (!mem[i].moved)
			continue;
		if (j++ > 0)
			lp_buf_addch(&b, ',');
		put_key(&b, mem[i].k, mem[i].kn);
		put_compact(&b, mem[i].v, mem[i].ve);
	}
	lp_buf_adds(&b, "}}");
	out->text = lp_buf_detach(&b, &out->len);
	out->service = out->text + service_at;
	return 0;
}

/* ---- the consumer's fast path ---------------------------------------------- */

/*
 * lp_event_scan_stored() reads an enriched event for the consumer's COPY
 * line (consumer/store.c, store_format_row) and writes the two JSON texts
 * the line holds, the merged attributes and the enrichment, in jansson's
 * compact form, under the same rules as the producer's fast path above:
 * plain escapes only, integers of up to 18 digits (no reals, no -0), keys
 * without escapes and without duplicates.  Anything else is -ENOTSUP.
 */

/* True when no two of the n members share a key. */
static bool keys_unique(const struct in_member *m, size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			if (m[i].kn == m[j].kn && memcmp(m[i].k, m[j].k, m[i].kn) == 0)
				return false;
	return true;
}

/* A string member (absent or null: p NULL); false for any other kind. */
static bool stored_text(const struct in_member *m, struct lp_json_text *t)
{
	memset(t, 0, sizeof(*t));
	if (!m || m->kind == V_NULL)
		return true;
	if (m->kind != V_STRING)
		return false;
	t->p = m->str.p;
	t->n = m->str.n;
	t->escaped = m->str.escaped;
	return true;
}

/* Containers one stored event may nest, itself included: the producer
 * normalises to 8 by default (event.c); deeper is the full path's.  It
 * also bounds the stack (a CivetWeb worker's 100 KiB in fuzz/replay.c):
 * each level holds in_container's keys. */
#define STORED_MAX_DEPTH 12

/* The members of the object value m into out (at most max, *n of them, no
 * duplicate). */
static bool object_members(const struct in_member *m, struct in_member *out, size_t max,
			   size_t *n)
{
	struct scan s = { m->v, m->ve, 0 };
	struct in_member self;

	*n = 0;
	return in_container(&s, &self, STORED_MAX_DEPTH - 1, out, max, n) &&
	       keys_unique(out, *n);
}

void lp_json_text_add(struct lp_buf *out, const struct lp_json_text *t)
{
	size_t i, run = 0;

	if (!t->p)
		return;
	if (!t->escaped) {
		lp_buf_add(out, t->p, t->n);
		return;
	}
	for (i = 0; i + 1 < t->n; i++) {
		char c;

		if (t->p[i] != '\\')
			continue;
		switch (t->p[i + 1]) {
		case 'b': c = '\b'; break;
		case 'f': c = '\f'; break;
		case 'n': c = '\n'; break;
		case 'r': c = '\r'; break;
		case 't': c = '\t'; break;
		default: c = t->p[i + 1]; break; /* " \ / */
		}
		lp_buf_add(out, t->p + run, i - run);
		lp_buf_addch(out, c);
		i++;
		run = i + 1;
	}
	lp_buf_add(out, t->p + run, t->n - run);
}

int lp_event_scan_stored(const char *text, size_t len, struct lp_event_stored *v,
			 struct lp_buf *attributes, struct lp_buf *enrichment)
{
	struct in_member mem[IN_MAX_MEMBERS], attr[IN_MAX_MEMBERS], enr[NESTED_MAX_KEYS], top;
	const struct in_member *pick[NMEMBERS] = { 0 };
	struct lp_json_text *texts[M_SPAN_ID + 1] = {
		[M_ID] = &v->id, [M_MESSAGE] = &v->message, [M_SERVICE] = &v->service,
		[M_LEVEL] = &v->level, [M_TIMESTAMP] = &v->timestamp, [M_HOST] = &v->host,
		[M_SOURCE_IP] = &v->source_ip, [M_TENANT] = &v->tenant,
		[M_CORRELATION_ID] = &v->correlation_id, [M_RECEIVED_AT] = &v->received_at,
		[M_TRACE_ID] = &v->trace_id, [M_SPAN_ID] = &v->span_id,
	};
	struct scan s = { text, text + len, 0 };
	size_t n = 0, nattr = 0, nenr = 0, i, count;
	int k;

	skip_ws(&s);
	if (s.p >= s.end || *s.p != '{' ||
	    !in_container(&s, &top, STORED_MAX_DEPTH, mem, IN_MAX_MEMBERS, &n))
		return -ENOTSUP;
	skip_ws(&s);
	if (s.p != s.end || !keys_unique(mem, n))
		return -ENOTSUP;
	for (i = 0; i < n; i++)
		for (k = 0; k < NMEMBERS; k++)
			if (key_is(&mem[i], member_names[k])) {
				pick[k] = &mem[i];
				break;
			}

	memset(v, 0, sizeof(*v));
	for (k = 0; k <= M_SPAN_ID; k++)
		if (!stored_text(pick[k], texts[k]))
			return -ENOTSUP;
	if (pick[M_ATTRIBUTES] && pick[M_ATTRIBUTES]->kind != V_NULL) {
		if (pick[M_ATTRIBUTES]->kind != V_OBJECT ||
		    !object_members(pick[M_ATTRIBUTES], attr, IN_MAX_MEMBERS, &nattr))
			return -ENOTSUP;
	}
	if (pick[M_ENRICHMENT] && pick[M_ENRICHMENT]->kind != V_NULL) {
		if (pick[M_ENRICHMENT]->kind != V_OBJECT ||
		    !object_members(pick[M_ENRICHMENT], enr, NESTED_MAX_KEYS, &nenr))
			return -ENOTSUP;
		v->has_enrichment = true;
		for (i = 0; i < nenr; i++)
			if (key_is(&enr[i], "status") && !stored_text(&enr[i], &v->status))
				memset(&v->status, 0, sizeof(v->status)); /* not a string: none */
	}
	/* Every other member is written back below: it must be one the scan
	 * writes as jansson does (in_value refuses reals and -0 already). */

	/* The attributes: the event's, then each top-level member without a
	 * column that is not an attribute already, in the event's order. */
	lp_buf_addch(attributes, '{');
	for (i = 0; i < nattr; i++) {
		if (i > 0)
			lp_buf_addch(attributes, ',');
		put_key(attributes, attr[i].k, attr[i].kn);
		put_compact(attributes, attr[i].v, attr[i].ve);
	}
	count = nattr;
	for (i = 0; i < n; i++) {
		bool column = key_is(&mem[i], "schema_version");

		for (k = 0; k < NMEMBERS && !column; k++)
			column = pick[k] == &mem[i];
		if (column)
			continue;
		if (has_key(attr, nattr, &mem[i]))
			continue;
		if (count++ > 0)
			lp_buf_addch(attributes, ',');
		put_key(attributes, mem[i].k, mem[i].kn);
		put_compact(attributes, mem[i].v, mem[i].ve);
	}
	lp_buf_addch(attributes, '}');
	if (v->has_enrichment)
		put_compact(enrichment, pick[M_ENRICHMENT]->v, pick[M_ENRICHMENT]->ve);
	return 0;
}

/* ---- batches ----------------------------------------------------------------- */

long lp_json_value_end(const char *text, size_t len)
{
	struct scan s = { text, text + len, 0 };
	struct span v;

	skip_ws(&s);
	if (!scan_value(&s, &v))
		return -ENOTSUP;
	return (long)(s.p - text);
}

long lp_json_array_spans(const char *text, size_t len, struct lp_json_span *spans, size_t max)
{
	struct scan s = { text, text + len, 1 };
	size_t n = 0;

	skip_ws(&s);
	if (s.p >= s.end || *s.p != '[')
		return -ENOTSUP;
	s.p++;
	skip_ws(&s);
	if (s.p < s.end && *s.p == ']') {
		s.p++;
	} else {
		for (;;) {
			struct span v;

			if (n >= max)
				return -ENOTSUP;
			spans[n].p = s.p;
			if (!scan_value(&s, &v))
				return -ENOTSUP;
			spans[n].n = (size_t)(s.p - spans[n].p);
			n++;
			skip_ws(&s);
			if (s.p < s.end && *s.p == ']') {
				s.p++;
				break;
			}
			if (s.p >= s.end || *s.p != ',')
				return -ENOTSUP;
			s.p++;
			skip_ws(&s);
		}
	}
	skip_ws(&s);
	return s.p == s.end ? (long)n : -ENOTSUP;
}
