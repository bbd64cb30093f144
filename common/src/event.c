/* event.c - the log event: aliases, validation and the normalised form.
 *
 * Clients send events in several shapes (see event.h and the seeds), so
 * normalising happens in three steps:
 *
 *  1. Resolve: for each field of the normalised form, the table `fields`
 *     lists the input spellings, most preferred first; the first one present
 *     with a non-null value is picked.  A JSON null counts as absent.
 *  2. Validate the picked values and turn them into their normalised form
 *     (level spelling, timestamp as RFC 3339 UTC, id in lower case).  The
 *     first problem found is reported, naming the key the client used.
 *  3. Build the output.  Every input key that was not picked moves under
 *     `attributes` (an attribute of the same name already there wins), so
 *     nothing the client sent is lost; this includes a losing alias, e.g.
 *     `source` when `service` is also present.  The exceptions are known
 *     names holding null, and the tenant spellings when the caller
 *     overrides the tenant: the gateway's API key decides the tenant.  And
 *     `schema_version` and `received_at`, which only normalising sets, are
 *     replaced, so normalising a normalised event changes nothing else.
 *
 * Text fields that are optional (host, source_ip, tenant, correlation_id)
 * may be sent as "" and are then dropped; structured ones (id, level,
 * timestamp) must be valid when present.  Limits are checked here except
 * the body size, which the HTTP layer enforces before parsing. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "logpipe/event.h"
#include "logpipe/json.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

const struct lp_event_limits lp_event_default_limits = {
	.max_message = 65536,
	.max_attributes = 64,
	.max_field = 256,
	.max_depth = 8,
};

/* 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write. */
#define MAX_EPOCH_MS 253402300799999LL

/* ---- levels -------------------------------------------------------------- */

static const char *const level_names[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"};

const char *lp_level_canonical(const char *s)
{
	if (!s)
		return NULL;
	if (strcasecmp(s, "WARNING") == 0)
		return "WARN";
	for (size_t i = 0; i < LP_ARRAY_SIZE(level_names); i++)
		if (strcasecmp(s, level_names[i]) == 0)
			return level_names[i];
	return NULL;
}

int lp_level_rank(const char *canonical)
{
	if (!canonical)
		return -1;
	for (size_t i = 0; i < LP_ARRAY_SIZE(level_names); i++)
		if (strcmp(canonical, level_names[i]) == 0)
			return (int)i;
	return -1;
}

bool lp_ip_valid(const char *s)
{
	unsigned char addr[16];
	if (!s)
		return false;
	return inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1;
}

/* ---- the field table -------------------------------------------------------- */

enum field_kind {
	F_ID,         /* a UUID, any version; kept in lower case */
	F_TIMESTAMP,  /* RFC 3339 string or integer epoch ms; default: now */
	F_LEVEL,      /* one of level_names in any case, or WARNING; default INFO */
	F_MESSAGE,    /* required non-empty string, at most max_message bytes */
	F_SERVICE,    /* required non-empty string, at most max_field bytes */
	F_TEXT,       /* optional string, at most max_field bytes; "" dropped */
	F_IP,         /* optional IPv4 or IPv6 literal; "" dropped */
	F_ATTRIBUTES, /* optional object */
};

struct field {
	const char *name;       /* its key in the normalised form */
	enum field_kind kind;   /* how it is validated */
	const char *aliases[5]; /* input spellings, most preferred first */
};

enum field_index {
	FI_MESSAGE,
	FI_SERVICE,
	FI_LEVEL,
	FI_TIMESTAMP,
	FI_ID,
	FI_HOST,
	FI_SOURCE_IP,
	FI_TENANT,
	FI_CORRELATION_ID,
	FI_ATTRIBUTES,
	N_FIELDS
};

/* In the order they are validated: message and service first, as they are
 * what a client most likely got wrong. */
static const struct field fields[N_FIELDS] = {
	[FI_MESSAGE] = {"message", F_MESSAGE, {"message"}},
	[FI_SERVICE] = {"service", F_SERVICE, {"service", "source"}},
	[FI_LEVEL] = {"level", F_LEVEL, {"level", "severity"}},
	[FI_TIMESTAMP] = {"timestamp", F_TIMESTAMP, {"timestamp", "ts", "@timestamp"}},
	[FI_ID] = {"id", F_ID, {"id"}},
	[FI_HOST] = {"host", F_TEXT, {"host", "hostname"}},
	[FI_SOURCE_IP] = {"source_ip", F_IP, {"source_ip"}},
	[FI_TENANT] = {"tenant", F_TEXT, {"tenant", "organizationId", "tenant_id"}},
	[FI_CORRELATION_ID] = {"correlation_id", F_TEXT,
			       {"correlation_id", "correlationId", "trace_id", "traceId"}},
	[FI_ATTRIBUTES] = {"attributes", F_ATTRIBUTES, {"attributes"}},
};

/* What resolving and validating found for one field. */
struct picked {
	const char *key; /* the input key used, NULL if absent */
	json_t *val;     /* its value (borrowed from the input) */
	const char *str; /* the normalised string value, NULL to leave it out */
};

static const struct field *field_of_key(const char *key)
{
	for (size_t i = 0; i < N_FIELDS; i++)
		for (const char *const *a = fields[i].aliases; *a; a++)
			if (strcmp(key, *a) == 0)
				return &fields[i];
	return NULL;
}

/* ---- helpers -------------------------------------------------------------- */

static json_t *fail(struct lp_event_error *err, int status, const char *code, const char *field,
		    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Fills *err (if any) and returns NULL, so callers can `return fail(...)`. */
static json_t *fail(struct lp_event_error *err, int status, const char *code, const char *field,
		    const char *fmt, ...)
{
	if (!err)
		return NULL;
	err->status = status;
	snprintf(err->code, sizeof(err->code), "%s", code);
	snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return NULL;
}

/* Allocation failures abort, as lp_xmalloc's do: an event is small and a
 * process out of memory cannot answer usefully anyway. */
static void out_of_memory(void)
{
	fputs("logpipe: out of memory building an event\n", stderr);
	abort();
}

static json_t *new_object(void)
{
	json_t *o = json_object();
	if (!o)
		out_of_memory();
	return o;
}

/* Adds val under key (stealing the reference). */
static void put(json_t *obj, const char *key, json_t *val)
{
	if (!val || json_object_set_new(obj, key, val) < 0)
		out_of_memory();
}

/* True if v, a value at nesting depth `depth` (the event object is depth
 * 1), is or holds a container deeper than max. */
static bool too_deep(json_t *v, size_t depth, size_t max)
{
	if (!json_is_object(v) && !json_is_array(v))
		return false;
	if (depth > max)
		return true;
	const char *k;
	json_t *child;
	size_t i;
	if (json_is_object(v)) {
		json_object_foreach (v, k, child)
			if (too_deep(child, depth + 1, max))
				return true;
	} else {
		json_array_foreach (v, i, child)
			if (too_deep(child, depth + 1, max))
				return true;
	}
	return false;
}

/* ---- validation ----------------------------------------------------------- */

static bool too_long(struct lp_event_error *err, const char *key, size_t len, size_t max)
{
	fail(err, 413, "too_large", key, "'%s' is %zu bytes, more than the limit of %zu", key, len,
	     max);
	return false;
}

/* Validates one picked field in place; returns false with *err filled. */
static bool check_field(const struct field *f, struct picked *p, const struct lp_event_limits *lim,
			int64_t now_ms, char idbuf[37], char tsbuf[32], struct lp_event_error *err)
{
	const char *key = p->key;
	json_t *v = p->val;
	const char *s = json_is_string(v) ? json_string_value(v) : NULL;
	size_t len = s ? json_string_length(v) : 0;

	switch (f->kind) {
	case F_MESSAGE:
	case F_SERVICE: {
		size_t max = f->kind == F_MESSAGE ? lim->max_message : lim->max_field;
		if (!v && f->aliases[1]) {
			fail(err, 400, "missing_field", f->name, "'%s' (or '%s') is required",
			     f->name, f->aliases[1]);
			return false;
		}
		if (!v) {
			fail(err, 400, "missing_field", f->name, "'%s' is required", f->name);
			return false;
		}
		if (!s || len == 0) {
			fail(err, 400, "invalid_field", key, "'%s' must be a non-empty string",
			     key);
			return false;
		}
		if (len > max)
			return too_long(err, key, len, max);
		p->str = s;
		return true;
	}
	case F_TEXT:
	case F_IP:
		if (!v)
			return true;
		if (!s) {
			fail(err, 400, "invalid_field", key, "'%s' must be a string", key);
			return false;
		}
		if (len > lim->max_field)
			return too_long(err, key, len, lim->max_field);
		if (len > 0 && f->kind == F_IP && !lp_ip_valid(s)) {
			fail(err, 400, "invalid_field", key,
			     "'%s' must be an IPv4 or IPv6 address, not '%.64s'", key, s);
			return false;
		}
		p->str = len > 0 ? s : NULL;
		return true;
	case F_ID:
		if (!v)
			return true;
		if (!s || !lp_uuid_valid(s)) {
			fail(err, 400, "invalid_field", key,
			     "'%s' must be a UUID (8-4-4-4-12 hexadecimal digits)", key);
			return false;
		}
		for (int i = 0; i < 37; i++)
			idbuf[i] = (char)tolower((unsigned char)s[i]);
		p->str = idbuf;
		return true;
	case F_LEVEL:
		if (!v) {
			p->str = "INFO";
			return true;
		}
		p->str = s ? lp_level_canonical(s) : NULL;
		if (!p->str) {
			fail(err, 400, "invalid_field", key,
			     "'%s' must be one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL", key);
			return false;
		}
		return true;
	case F_TIMESTAMP: {
		if (!v) {
			lp_rfc3339(now_ms, tsbuf);
			p->str = tsbuf;
			return true;
		}
		int64_t ms = -1;
		if (s && lp_parse_rfc3339(s, &ms) < 0)
			ms = -1;
		else if (json_is_integer(v))
			ms = json_integer_value(v);
		if (ms < 0 || ms > MAX_EPOCH_MS) {
			fail(err, 400, "invalid_field", key,
			     "'%s' must be an RFC 3339 time or integer epoch milliseconds "
			     "between 1970 and 9999",
			     key);
			return false;
		}
		lp_rfc3339(ms, tsbuf);
		p->str = tsbuf;
		return true;
	}
	case F_ATTRIBUTES:
		if (v && !json_is_object(v)) {
			fail(err, 400, "invalid_field", key, "'%s' must be an object", key);
			return false;
		}
		return true;
	}
	return true;
}

/* True if input key k (with value v) is used up by normalising rather
 * than moved under attributes. */
static bool key_consumed(const char *k, json_t *v, const struct picked *picks, bool tenant_override)
{
	/* Set by normalising itself: dropping a client's copy keeps
	 * normalising an already normalised event a no-op. */
	if (strcmp(k, "schema_version") == 0 || strcmp(k, "received_at") == 0)
		return true;
	const struct field *f = field_of_key(k);
	if (!f)
		return false;
	size_t i = (size_t)(f - fields);
	if (i == FI_TENANT && tenant_override)
		return true;
	return json_is_null(v) || (picks[i].key && strcmp(picks[i].key, k) == 0);
}

/* ---- trace context ------------------------------------------------------------- */

/* The W3C / OpenTelemetry ids: trace_id is 32 and span_id 16 hexadecimal
 * digits, not all zero.  Lower-cased into out (n + 1 bytes) when valid. */
static bool trace_hex(json_t *v, size_t n, char *out)
{
	const char *s = json_string_value(v);
	bool zero = true;

	if (!s || json_string_length(v) != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!isxdigit((unsigned char)s[i]))
			return false;
		out[i] = (char)tolower((unsigned char)s[i]);
		zero &= s[i] == '0';
	}
	out[n] = '\0';
	return !zero;
}

/* The first key of names whose value is a valid id of n digits, or NULL. */
static const char *trace_key(json_t *in, const char *const names[2], size_t n, char *out)
{
	for (int i = 0; i < 2; i++)
		if (trace_hex(json_object_get(in, names[i]), n, out))
			return names[i];
	return NULL;
}

static const char *const trace_names[2] = { "trace_id", "traceId" };
static const char *const span_names[2] = { "span_id", "spanId" };

/* ---- the public API ------------------------------------------------------------ */

json_t *lp_event_normalize(json_t *in, const struct lp_event_limits *lim, int64_t now_ms,
			   const char *tenant, struct lp_event_error *err)
{
	if (!lim)
		lim = &lp_event_default_limits;
	if (!json_is_object(in))
		return fail(err, 400, "invalid_json", NULL, "the event must be a JSON object");
	if (tenant && *tenant && !lp_utf8_valid((const unsigned char *)tenant, strlen(tenant)))
		return fail(err, 400, "invalid_field", "tenant", "the tenant is not valid UTF-8");

	const char *k;
	json_t *v;
	json_object_foreach (in, k, v)
		if (too_deep(v, 2, lim->max_depth))
			return fail(err, 400, "invalid_field", k,
				    "'%s' is nested more than %zu levels deep", k, lim->max_depth);

	/* 1. Resolve aliases. */
	struct picked picks[N_FIELDS] = {{0}};
	for (size_t i = 0; i < N_FIELDS; i++) {
		if (i == FI_TENANT && tenant)
			continue;
		for (const char *const *a = fields[i].aliases; *a && !picks[i].key; a++) {
			json_t *val = json_object_get(in, *a);
			if (val && !json_is_null(val)) {
				picks[i].key = *a;
				picks[i].val = val;
			}
		}
	}

	/* 2. Validate, in table order. */
	char idbuf[37], tsbuf[32], rcvbuf[32];
	for (size_t i = 0; i < N_FIELDS; i++)
		if (!check_field(&fields[i], &picks[i], lim, now_ms, idbuf, tsbuf, err))
			return NULL;
	if (tenant)
		picks[FI_TENANT].str = tenant[0] ? tenant : NULL;
	if (!picks[FI_ID].str) {
		lp_uuid7(idbuf);
		picks[FI_ID].str = idbuf;
	}

	/* 3. Build the normalised object, attributes first as they may be
	 * over the limit. */
	json_t *attrs = new_object();
	json_t *in_attrs = picks[FI_ATTRIBUTES].val;
	if (in_attrs)
		json_object_foreach (in_attrs, k, v)
			put(attrs, k, json_deep_copy(v));
	/* Trace context: a valid trace_id is kept as such (it may also have
	 * been picked as the correlation id), and so is a valid span_id. */
	char trace[33], span[17];
	const char *tkey = trace_key(in, trace_names, 32, trace);
	const char *skey = trace_key(in, span_names, 16, span);
	json_object_foreach (in, k, v)
		if (!key_consumed(k, v, picks, tenant != NULL) && !json_object_get(attrs, k) &&
		    !(tkey && strcmp(k, tkey) == 0) && !(skey && strcmp(k, skey) == 0))
			put(attrs, k, json_deep_copy(v));
	/* An unknown field moves one level down, under attributes: the limit
	 * holds for the normalised event, so that normalising it again (the
	 * enricher, a replay) accepts it. */
	json_object_foreach (attrs, k, v)
		if (too_deep(v, 3, lim->max_depth)) {
			fail(err, 400, "invalid_field", k,
			     "'%s' is nested more than %zu levels deep (under attributes)", k,
			     lim->max_depth);
			json_decref(attrs); /* k points into it */
			return NULL;
		}
	size_t nattrs = json_object_size(attrs);
	if (nattrs > lim->max_attributes) {
		json_decref(attrs);
		return fail(err, 413, "too_large", "attributes",
			    "%zu attributes (unknown fields included), more than the limit of %zu",
			    nattrs, lim->max_attributes);
	}

	json_t *out = new_object();
	put(out, "id", json_string(picks[FI_ID].str));
	put(out, "schema_version", json_integer(LP_EVENT_SCHEMA_VERSION));
	put(out, "timestamp", json_string(picks[FI_TIMESTAMP].str));
	lp_rfc3339(now_ms, rcvbuf);
	put(out, "received_at", json_string(rcvbuf));
	put(out, "level", json_string(picks[FI_LEVEL].str));
	put(out, "message", json_string(picks[FI_MESSAGE].str));
	put(out, "service", json_string(picks[FI_SERVICE].str));
	static const enum field_index optional[] = {FI_HOST, FI_SOURCE_IP, FI_TENANT,
						    FI_CORRELATION_ID};
	for (size_t j = 0; j < LP_ARRAY_SIZE(optional); j++)
		if (picks[optional[j]].str)
			put(out, fields[optional[j]].name, json_string(picks[optional[j]].str));
	if (tkey)
		put(out, "trace_id", json_string(trace));
	if (skey)
		put(out, "span_id", json_string(span));
	put(out, "attributes", attrs);
	return out;
}

json_t *lp_event_parse(const char *text, size_t len, const struct lp_event_limits *lim,
		       int64_t now_ms, const char *tenant, struct lp_event_error *err)
{
	if (!text || len == 0)
		return fail(err, 400, "invalid_json", NULL, "the body is empty");
	json_error_t je;
	json_t *in = lp_json_loadb(text, len, JSON_DECODE_ANY, &je);
	if (!in)
		return fail(err, 400, "invalid_json", NULL, "invalid JSON at line %d column %d: %s",
			    je.line, je.column, je.text);
	json_t *out = lp_event_normalize(in, lim, now_ms, tenant, err);
	json_decref(in);
	return out;
}

/* Writes "'key' <what>" into err and returns -EINVAL. */
static int check_fail(char *err, size_t errlen, const char *key, const char *what)
{
	if (err && errlen)
		snprintf(err, errlen, "'%s' %s", key, what);
	return -EINVAL;
}

int lp_event_check_normalized(json_t *ev, char *err, size_t errlen)
{
	if (!json_is_object(ev))
		return check_fail(err, errlen, "event", "is not a JSON object");

	const char *id = json_string_value(json_object_get(ev, "id"));
	if (!lp_uuid_valid(id))
		return check_fail(err, errlen, "id", "is missing or not a UUID");

	static const char *const required[] = {"message", "service"};
	for (size_t i = 0; i < LP_ARRAY_SIZE(required); i++) {
		const char *s = json_string_value(json_object_get(ev, required[i]));
		if (!s || !*s)
			return check_fail(err, errlen, required[i],
					  "is missing or not a non-empty string");
	}

	if (lp_level_rank(json_string_value(json_object_get(ev, "level"))) < 0)
		return check_fail(err, errlen, "level", "is missing or not a canonical level");

	int64_t ms;
	if (lp_parse_rfc3339(json_string_value(json_object_get(ev, "timestamp")), &ms) < 0)
		return check_fail(err, errlen, "timestamp", "is missing or not an RFC 3339 time");

	static const char *const optional[] = {"host",        "source_ip", "tenant",
					       "correlation_id", "received_at", "trace_id",
					       "span_id"};
	for (size_t i = 0; i < LP_ARRAY_SIZE(optional); i++) {
		json_t *v = json_object_get(ev, optional[i]);
		if (v && !json_is_string(v))
			return check_fail(err, errlen, optional[i], "is not a string");
	}

	json_t *attrs = json_object_get(ev, "attributes");
	if (attrs && !json_is_object(attrs))
		return check_fail(err, errlen, "attributes", "is not an object");
	return 0;
}
