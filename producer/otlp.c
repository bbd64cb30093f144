/* otlp.c - OTLP/HTTP logs: export requests as logpipe input events.
 *
 * Both encodings end in the same walk over an OTLP JSON tree (jansson): a
 * JSON body is parsed into it directly, a protobuf body is unpacked by
 * protobuf-c and then written out as the tree OTLP JSON would have given
 * (lowerCamelCase, ids in hex, 64-bit times as decimal strings), so one
 * mapping (map_record) serves both and they cannot drift apart.
 *
 * Hostile input is bounded before anything recurses: a protobuf body is
 * first scanned (pb_depth) along the generated descriptors, message
 * fields only, and refused when nested deeper than OTLP_MAX_DEPTH, since
 * protobuf-c's unpack recurses once per nested message with a frame of
 * about a kilobyte; a JSON body is scanned for its bracket depth before
 * jansson parses it.  Everything after that recurses at most as deep.
 *
 * A record that cannot be mapped (an id of the wrong length, an attribute
 * value of the wrong type) is handed on as an error, to be counted in the
 * reply's partialSuccess; a body that does not decode at all is the
 * caller's 400.
 *
 * The tree is the reference, not the hot path: otlp_decode_fast writes
 * most protobuf records' normalised events straight from protobuf-c's
 * structs, with the same bytes (see "protobuf straight to event text"). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <protobuf-c/protobuf-c.h>
#include <zlib.h>

#include "google/rpc/status.pb-c.h"
#include "logpipe/buf.h"
#include "logpipe/http.h"
#include "logpipe/json.h"
#include "logpipe/util.h"
#include "opentelemetry/proto/collector/logs/v1/logs_service.pb-c.h"
#include "otlp.h"

#include "logpipe/banned.h"

/* Shorter names for the generated types. */
typedef Opentelemetry__Proto__Collector__Logs__V1__ExportLogsServiceRequest pb_request;
typedef Opentelemetry__Proto__Logs__V1__ResourceLogs pb_resource_logs;
typedef Opentelemetry__Proto__Logs__V1__ScopeLogs pb_scope_logs;
typedef Opentelemetry__Proto__Logs__V1__LogRecord pb_record;
typedef Opentelemetry__Proto__Common__V1__AnyValue pb_any;
typedef Opentelemetry__Proto__Common__V1__KeyValue pb_kv;
typedef Opentelemetry__Proto__Common__V1__InstrumentationScope pb_scope;

/* The JSON bracket depth allowed: what the HTTP layer allows any body. */
#define JSON_MAX_DEPTH LP_HTTP_MAX_JSON_DEPTH

int otlp_encoding_of(const char *ct)
{
	size_t n;

	if (!ct || !*ct)
		return OTLP_PROTOBUF;
	n = strcspn(ct, "; \t");
	if (n == 22 && !strncasecmp(ct, "application/x-protobuf", 22))
		return OTLP_PROTOBUF;
	if (n == 16 && !strncasecmp(ct, "application/json", 16))
		return OTLP_JSON;
	return -1;
}

const char *otlp_content_type(enum otlp_encoding enc)
{
	return enc == OTLP_JSON ? "application/json" : "application/x-protobuf";
}

int otlp_gunzip(const char *in, size_t len, size_t max, char **out, size_t *outlen)
{
	z_stream z;
	size_t cap = len * 4 + 1024, used = 0;
	char *buf;
	int rc, ret = 0;

	if (cap > max + 1)
		cap = max + 1;
	buf = lp_xmalloc(cap + 1);
	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) {
		free(buf);
		return -ENOMEM;
	}
	z.next_in = (Bytef *)(uintptr_t)in;
	z.avail_in = (uInt)(len > UINT32_MAX ? UINT32_MAX : len);
	for (;;) {
		if (used == cap) {
			if (cap > max) {
				ret = -E2BIG;
				goto out;
			}
			cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
			buf = lp_xrealloc(buf, cap + 1);
		}
		z.next_out = (Bytef *)buf + used;
		z.avail_out = (uInt)(cap - used);
		rc = inflate(&z, Z_NO_FLUSH);
		used = cap - z.avail_out;
		if (rc == Z_STREAM_END)
			break;
		if (rc == Z_BUF_ERROR && z.avail_in == 0) {
			ret = -EINVAL; /* cut short */
			goto out;
		}
		if (rc != Z_OK && rc != Z_BUF_ERROR) {
			ret = -EINVAL;
			goto out;
		}
	}
	if (used > max) {
		ret = -E2BIG;
		goto out;
	}
	buf[used] = '\0';
	*out = buf;
	*outlen = used;
	buf = NULL;
out:
	inflateEnd(&z);
	free(buf);
	return ret;
}

/* ---- bounds checked before decoding ----------------------------------------- */

static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t x = 0;

	for (int shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;

		x |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -EINVAL;
}

/*
 * Walks the protobuf message of type d in p[0..len) and returns -ELOOP when
 * its message fields nest deeper than OTLP_MAX_DEPTH, -EINVAL when it is
 * not even well framed, else 0.  Only framing is read here: protobuf-c
 * decodes.  Fields unknown to d are skipped, as protobuf-c keeps them flat.
 */
static int pb_depth(const uint8_t *p, size_t len, const ProtobufCMessageDescriptor *d, int depth)
{
	const uint8_t *end = p + len;
	uint64_t tag, n;
	int rc;

	if (depth > OTLP_MAX_DEPTH)
		return -ELOOP;
	while (p < end) {
		if (varint(&p, end, &tag) < 0 || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
			return -EINVAL;
		switch (tag & 7) {
		case 0:
			if (varint(&p, end, &n) < 0)
				return -EINVAL;
			break;
		case 1:
			if (end - p < 8)
				return -EINVAL;
			p += 8;
			break;
		case 5:
			if (end - p < 4)
				return -EINVAL;
			p += 4;
			break;
		case 2: {
			const ProtobufCFieldDescriptor *f;

			if (varint(&p, end, &n) < 0 || n > (uint64_t)(end - p))
				return -EINVAL;
			f = protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3));
			if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
				rc = pb_depth(p, (size_t)n, f->descriptor, depth + 1);
				if (rc < 0)
					return rc;
			}
			p += n;
			break;
		}
		default:
			return -EINVAL; /* groups are not proto3 */
		}
	}
	return 0;
}

/* ---- protobuf to the OTLP JSON tree ----------------------------------------- */

/* Conversion state: the first problem found. */
struct conv {
	const char *why; /* NULL while all is well */
};

static json_t *pb_string(struct conv *c, const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (!lp_utf8_valid((const unsigned char *)(s ? s : ""), n)) {
		c->why = "a string field is not valid UTF-8";
		return json_string("");
	}
	return json_stringn(s ? s : "", n);
}

static json_t *pb_hex(const ProtobufCBinaryData *b)
{
	static const char digits[] = "0123456789abcdef";
	char *s = lp_xmalloc(b->len * 2 + 1);
	json_t *v;

	for (size_t i = 0; i < b->len; i++) {
		s[2 * i] = digits[b->data[i] >> 4];
		s[2 * i + 1] = digits[b->data[i] & 15];
	}
	s[b->len * 2] = '\0';
	v = json_stringn(s, b->len * 2);
	free(s);
	return v;
}

static json_t *pb_base64(const ProtobufCBinaryData *b)
{
	char *s = lp_xmalloc(4 * ((b->len + 2) / 3) + 1);
	int n = EVP_EncodeBlock((unsigned char *)s, b->data, (int)b->len);
	json_t *v = json_stringn(s, n > 0 ? (size_t)n : 0);

	free(s);
	return v;
}

static json_t *pb_u64(uint64_t v)
{
	char buf[24];

	lp_fmt_u64(buf, v);
	return json_string(buf);
}

static json_t *pb_kvs(struct conv *c, size_t n, pb_kv **kv);

static json_t *pb_anyvalue(struct conv *c, const pb_any *a)
{
	json_t *o = json_object();

	if (!a)
		return o;
	switch (a->value_case) {
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
		json_object_set_new(o, "stringValue", pb_string(c, a->string_value));
		break;
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
		json_object_set_new(o, "boolValue", json_boolean(a->bool_value));
		break;
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
		json_object_set_new(o, "intValue", json_integer((json_int_t)a->int_value));
		break;
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
		/* JSON has no NaN or infinities: OTLP JSON spells them. */
		if (isnan(a->double_value))
			json_object_set_new(o, "doubleValue", json_string("NaN"));
		else if (isinf(a->double_value))
			json_object_set_new(o, "doubleValue", json_string(a->double_value > 0
										  ? "Infinity"
										  : "-Infinity"));
		else
			json_object_set_new(o, "doubleValue", json_real(a->double_value));
		break;
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE: {
		json_t *vals = json_array();

		for (size_t i = 0; a->array_value && i < a->array_value->n_values; i++)
			json_array_append_new(vals, pb_anyvalue(c, a->array_value->values[i]));
		json_object_set_new(o, "arrayValue", json_pack("{s:o}", "values", vals));
		break;
	}
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE:
		json_object_set_new(o, "kvlistValue",
				    json_pack("{s:o}", "values",
					      a->kvlist_value
						      ? pb_kvs(c, a->kvlist_value->n_values,
							       a->kvlist_value->values)
						      : json_array()));
		break;
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE:
		json_object_set_new(o, "bytesValue", pb_base64(&a->bytes_value));
		break;
	default:
		break; /* empty */
	}
	return o;
}

static json_t *pb_kvs(struct conv *c, size_t n, pb_kv **kv)
{
	json_t *arr = json_array();

	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, json_pack("{s:o, s:o}", "key", pb_string(c, kv[i]->key),
						     "value", pb_anyvalue(c, kv[i]->value)));
	return arr;
}

static json_t *pb_log_record(struct conv *c, const pb_record *r)
{
	json_t *o = json_object();

	if (r->time_unix_nano)
		json_object_set_new(o, "timeUnixNano", pb_u64(r->time_unix_nano));
	if (r->observed_time_unix_nano)
		json_object_set_new(o, "observedTimeUnixNano", pb_u64(r->observed_time_unix_nano));
	if (r->severity_number)
		json_object_set_new(o, "severityNumber", json_integer(r->severity_number));
	if (r->severity_text && *r->severity_text)
		json_object_set_new(o, "severityText", pb_string(c, r->severity_text));
	if (r->body)
		json_object_set_new(o, "body", pb_anyvalue(c, r->body));
	json_object_set_new(o, "attributes", pb_kvs(c, r->n_attributes, r->attributes));
	if (r->trace_id.len)
		json_object_set_new(o, "traceId", pb_hex(&r->trace_id));
	if (r->span_id.len)
		json_object_set_new(o, "spanId", pb_hex(&r->span_id));
	if (r->event_name && *r->event_name)
		json_object_set_new(o, "eventName", pb_string(c, r->event_name));
	return o;
}

/* A ResourceLogs without its scopeLogs: {"resource": {"attributes": [...]}}. */
static json_t *pb_resource_json(struct conv *c, const pb_resource_logs *rl)
{
	json_t *o = json_object();

	if (rl->resource)
		json_object_set_new(o, "resource",
				    json_pack("{s:o}", "attributes",
					      pb_kvs(c, rl->resource->n_attributes,
						     rl->resource->attributes)));
	return o;
}

/* A ScopeLogs without its logRecords: {"scope": {...}}. */
static json_t *pb_scope_json(struct conv *c, const pb_scope_logs *sl)
{
	json_t *so = json_object();

	if (sl->scope)
		json_object_set_new(so, "scope",
				    json_pack("{s:o, s:o, s:o}", "name",
					      pb_string(c, sl->scope->name), "version",
					      pb_string(c, sl->scope->version), "attributes",
					      pb_kvs(c, sl->scope->n_attributes,
						     sl->scope->attributes)));
	return so;
}

static json_t *pb_tree(struct conv *c, const pb_request *req)
{
	json_t *rls = json_array();

	for (size_t i = 0; i < req->n_resource_logs; i++) {
		const pb_resource_logs *rl = req->resource_logs[i];
		json_t *sls = json_array(), *o = pb_resource_json(c, rl);

		for (size_t j = 0; j < rl->n_scope_logs; j++) {
			const pb_scope_logs *sl = rl->scope_logs[j];
			json_t *recs = json_array(), *so = pb_scope_json(c, sl);

			for (size_t k = 0; k < sl->n_log_records; k++)
				json_array_append_new(recs, pb_log_record(c, sl->log_records[k]));
			json_object_set_new(so, "logRecords", recs);
			json_array_append_new(sls, so);
		}
		json_object_set_new(o, "scopeLogs", sls);
		json_array_append_new(rls, o);
	}
	return json_pack("{s:o}", "resourceLogs", rls);
}

/* ---- the OTLP JSON tree to input events --------------------------------------- */

/* A member by its lowerCamelCase name or, as protobuf's JSON parsers also
 * accept, its proto field name. */
static json_t *get(json_t *o, const char *camel, const char *snake)
{
	json_t *v = json_object_get(o, camel);

	if (!v && snake)
		v = json_object_get(o, snake);
	return json_is_null(v) ? NULL : v;
}

/* An int64 sent as a JSON number or a decimal string. */
static int int64_of(json_t *v, int64_t *out)
{
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return 0;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end;

		errno = 0;
		long long x = strtoll(s, &end, 10);
		if (errno || end == s || *end)
			return -EINVAL;
		*out = x;
		return 0;
	}
	return -EINVAL;
}

/* A uint64 (a time in nanoseconds): a JSON number or a decimal string. */
static int u64_of(json_t *v, uint64_t *out)
{
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		*out = (uint64_t)json_integer_value(v);
		return 0;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end;

		if (*s < '0' || *s > '9')
			return -EINVAL;
		errno = 0;
		unsigned long long x = strtoull(s, &end, 10);
		if (errno || *end)
			return -EINVAL;
		*out = x;
		return 0;
	}
	return -EINVAL;
}

static int kvs_into(json_t *dst, json_t *list, const char **why);

/* An AnyValue as the plain JSON value it holds; NULL with *why set. */
static json_t *any_value(json_t *a, const char **why)
{
	json_t *v;
	int64_t i;

	if (!json_is_object(a)) {
		*why = "an AnyValue must be a JSON object";
		return NULL;
	}
	if ((v = get(a, "stringValue", "string_value"))) {
		if (!json_is_string(v))
			goto bad;
		return json_incref(v);
	}
	if ((v = get(a, "boolValue", "bool_value"))) {
		if (!json_is_boolean(v))
			goto bad;
		return json_incref(v);
	}
	if ((v = get(a, "intValue", "int_value"))) {
		if (int64_of(v, &i) < 0)
			goto bad;
		return json_integer((json_int_t)i);
	}
	if ((v = get(a, "doubleValue", "double_value"))) {
		if (json_is_number(v) || json_is_string(v)) /* "NaN", "Infinity" */
			return json_incref(v);
		goto bad;
	}
	if ((v = get(a, "bytesValue", "bytes_value"))) {
		if (!json_is_string(v))
			goto bad;
		return json_incref(v); /* base64, as sent */
	}
	if ((v = get(a, "arrayValue", "array_value"))) {
		json_t *vals = json_is_object(v) ? get(v, "values", NULL) : NULL, *arr, *x;
		size_t k;

		if (!json_is_object(v) || (vals && !json_is_array(vals)))
			goto bad;
		arr = json_array();
		json_array_foreach (vals, k, x) {
			json_t *e = any_value(x, why);

			if (!e) {
				json_decref(arr);
				return NULL;
			}
			json_array_append_new(arr, e);
		}
		return arr;
	}
	if ((v = get(a, "kvlistValue", "kvlist_value"))) {
		json_t *obj;

		if (!json_is_object(v))
			goto bad;
		obj = json_object();
		if (kvs_into(obj, get(v, "values", NULL), why) < 0) {
			json_decref(obj);
			return NULL;
		}
		return obj;
	}
	return json_null(); /* an empty AnyValue */
bad:
	*why = "an AnyValue holds a value of the wrong JSON type";
	return NULL;
}

/* Adds each KeyValue of list (an array, or NULL) to dst. */
static int kvs_into(json_t *dst, json_t *list, const char **why)
{
	json_t *kv;
	size_t i;

	if (!list)
		return 0;
	if (!json_is_array(list)) {
		*why = "attributes must be an array of KeyValue";
		return -EINVAL;
	}
	json_array_foreach (list, i, kv) {
		json_t *key = json_is_object(kv) ? get(kv, "key", NULL) : NULL, *val, *av;

		if (!json_is_string(key)) {
			*why = "a KeyValue has no string key";
			return -EINVAL;
		}
		av = get(kv, "value", NULL);
		val = av ? any_value(av, why) : json_null();
		if (!val)
			return -EINVAL;
		json_object_set_new(dst, json_string_value(key), val);
	}
	return 0;
}

/* Lower-case hex of exactly want characters, not all zero, into out
 * (want + 1 bytes).  0, or -ENOENT when absent or all zero (OTLP: no id),
 * or -EINVAL. */
static int hex_id(json_t *v, size_t want, char *out)
{
	const char *s;
	bool zero = true;

	if (!v)
		return -ENOENT;
	if (!json_is_string(v))
		return -EINVAL;
	s = json_string_value(v);
	if (json_string_length(v) == 0)
		return -ENOENT;
	if (json_string_length(v) != want)
		return -EINVAL;
	for (size_t i = 0; i < want; i++) {
		char c = s[i];

		if (c >= 'A' && c <= 'F')
			c = (char)(c - 'A' + 'a');
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return -EINVAL;
		zero &= c == '0';
		out[i] = c;
	}
	out[want] = '\0';
	return zero ? -ENOENT : 0;
}

static const char *const severity_levels[] = { "TRACE", "DEBUG", "INFO",
					       "WARN",  "ERROR", "FATAL" };

/* SEVERITY_NUMBER_* names, as protobuf's JSON may spell the enum. */
static int severity_of_name(const char *s)
{
	static const char prefix[] = "SEVERITY_NUMBER_";
	size_t n = sizeof(prefix) - 1;

	if (strncmp(s, prefix, n) != 0)
		return -1;
	s += n;
	for (int i = 0; i < 6; i++) {
		size_t l = strlen(severity_levels[i]);

		if (strncmp(s, severity_levels[i], l) == 0) {
			if (s[l] == '\0')
				return i * 4 + 1;
			if (s[l] >= '2' && s[l] <= '4' && s[l + 1] == '\0')
				return i * 4 + 1 + (s[l] - '1');
		}
	}
	return strcmp(s, "UNSPECIFIED") == 0 ? 0 : -1;
}

/* What a resource (or a scope) gives each of its records. */
struct context {
	json_t *service;  /* service.name, borrowed, or NULL */
	json_t *host;     /* host.name, borrowed, or NULL */
	json_t *resource; /* the other resource attributes (owned object) */
	json_t *scope;    /* name, version, attributes of the scope (owned), or NULL */
};

/* Maps one LogRecord; returns the input object or NULL with *why. */
static json_t *map_record(const struct context *cx, json_t *rec, const char **why)
{
	json_t *in, *attrs, *body, *v, *level = NULL;
	char trace[33], span[17];
	uint64_t ns = 0;
	int64_t sev = 0;
	int rc;

	if (!json_is_object(rec)) {
		*why = "a log record must be a JSON object";
		return NULL;
	}
	in = json_object();
	attrs = json_object();
	json_object_set_new(in, "attributes", attrs);
	if (kvs_into(attrs, get(rec, "attributes", NULL), why) < 0)
		goto fail;

	/* body: a string is the message; anything else is kept as JSON. */
	body = get(rec, "body", NULL);
	if (body) {
		json_t *b = any_value(body, why);

		if (!b)
			goto fail;
		if (json_is_string(b) && json_string_length(b) > 0) {
			json_object_set_new(in, "message", b);
		} else if (!json_is_null(b)) {
			char *text = json_dumps(b, JSON_COMPACT | JSON_ENCODE_ANY);

			json_object_set_new(in, "message", json_string(text ? text : ""));
			free(text);
			json_object_set_new(attrs, "otel.body", b);
		} else {
			json_decref(b);
		}
	}
	v = get(rec, "eventName", "event_name");
	if (v && !json_is_string(v)) {
		*why = "eventName must be a string";
		goto fail;
	}
	if (v && json_string_length(v) > 0)
		json_object_set(attrs, "otel.event_name", v);
	/* A record with neither body nor name still happened: keep it. */
	if (!json_object_get(in, "message"))
		json_object_set_new(in, "message",
				    v && json_string_length(v) > 0 ? json_incref(v)
								   : json_string("(no body)"));

	/* time: when it happened, else when it was observed, else now. */
	v = get(rec, "timeUnixNano", "time_unix_nano");
	if (v && u64_of(v, &ns) < 0) {
		*why = "timeUnixNano must be an unsigned integer (a number or a decimal string)";
		goto fail;
	}
	if (ns == 0 && (v = get(rec, "observedTimeUnixNano", "observed_time_unix_nano")) &&
	    u64_of(v, &ns) < 0) {
		*why = "observedTimeUnixNano must be an unsigned integer";
		goto fail;
	}
	if (ns)
		json_object_set_new(in, "timestamp", json_integer((json_int_t)(ns / 1000000)));

	/* level: the number when given, else the text when it names one. */
	v = get(rec, "severityNumber", "severity_number");
	if (v) {
		if (json_is_string(v) && (sev = severity_of_name(json_string_value(v))) >= 0)
			;
		else if (int64_of(v, &sev) < 0 || sev < 0 || sev > 24) {
			*why = "severityNumber must be 0 to 24";
			goto fail;
		}
	}
	v = get(rec, "severityText", "severity_text");
	if (v && !json_is_string(v)) {
		*why = "severityText must be a string";
		goto fail;
	}
	if (sev > 0)
		level = json_string(severity_levels[(sev - 1) / 4]);
	else if (v && lp_level_canonical(json_string_value(v)))
		level = json_string(lp_level_canonical(json_string_value(v)));
	if (level)
		json_object_set_new(in, "level", level);
	if (v && json_string_length(v) > 0 &&
	    (!level || strcasecmp(json_string_value(v), json_string_value(level)) != 0))
		json_object_set(attrs, "otel.severity_text", v);

	/* trace context */
	rc = hex_id(get(rec, "traceId", "trace_id"), 32, trace);
	if (rc == -EINVAL) {
		*why = "traceId must be 16 bytes (32 hexadecimal digits)";
		goto fail;
	}
	if (rc == 0) {
		json_object_set_new(in, "trace_id", json_string(trace));
		json_object_set_new(in, "correlation_id", json_string(trace));
	}
	rc = hex_id(get(rec, "spanId", "span_id"), 16, span);
	if (rc == -EINVAL) {
		*why = "spanId must be 8 bytes (16 hexadecimal digits)";
		goto fail;
	}
	if (rc == 0)
		json_object_set_new(in, "span_id", json_string(span));

	json_object_set_new(in, "service",
			    cx->service ? json_incref(cx->service) : json_string("unknown_service"));
	if (cx->host)
		json_object_set(in, "host", cx->host);
	if (json_object_size(cx->resource) > 0)
		json_object_set(attrs, "otel.resource", cx->resource);
	if (cx->scope)
		json_object_set(attrs, "otel.scope", cx->scope);
	return in;
fail:
	json_decref(in);
	return NULL;
}

/* Fills the resource part of cx from a ResourceLogs; -EINVAL with *why. */
static int resource_context(struct context *cx, json_t *rl, const char **why)
{
	json_t *res = get(rl, "resource", NULL), *v;

	cx->resource = json_object();
	if (res && !json_is_object(res)) {
		*why = "resource must be an object";
		return -EINVAL;
	}
	if (res && kvs_into(cx->resource, get(res, "attributes", NULL), why) < 0)
		return -EINVAL;
	v = json_object_get(cx->resource, "service.name");
	if (json_is_string(v) && json_string_length(v) > 0) {
		cx->service = json_incref(v);
		json_object_del(cx->resource, "service.name");
	}
	v = json_object_get(cx->resource, "host.name");
	if (json_is_string(v) && json_string_length(v) > 0) {
		cx->host = json_incref(v);
		json_object_del(cx->resource, "host.name");
	}
	return 0;
}

/* The scope part of cx from a ScopeLogs; -EINVAL with *why. */
static int scope_context(struct context *cx, json_t *sl, const char **why)
{
	json_t *sc = get(sl, "scope", NULL), *attrs, *v;

	cx->scope = NULL;
	if (!sc)
		return 0;
	if (!json_is_object(sc)) {
		*why = "scope must be an object";
		return -EINVAL;
	}
	cx->scope = json_object();
	if ((v = get(sc, "name", NULL)) && json_is_string(v) && json_string_length(v) > 0)
		json_object_set(cx->scope, "name", v);
	if ((v = get(sc, "version", NULL)) && json_is_string(v) && json_string_length(v) > 0)
		json_object_set(cx->scope, "version", v);
	attrs = json_object();
	if (kvs_into(attrs, get(sc, "attributes", NULL), why) < 0) {
		json_decref(attrs);
		return -EINVAL;
	}
	if (json_object_size(attrs) > 0)
		json_object_set(cx->scope, "attributes", attrs);
	json_decref(attrs);
	if (json_object_size(cx->scope) == 0) {
		json_decref(cx->scope);
		cx->scope = NULL;
	}
	return 0;
}

static void context_release(struct context *cx)
{
	json_decref(cx->service);
	json_decref(cx->host);
	json_decref(cx->resource);
	json_decref(cx->scope);
	memset(cx, 0, sizeof(*cx));
}

/* The array under a key, or an empty walk when absent; NULL (bad) when it
 * is there but not an array. */
static json_t *list_of(json_t *o, const char *camel, const char *snake, bool *bad)
{
	json_t *v = json_is_object(o) ? get(o, camel, snake) : NULL;

	if (v && !json_is_array(v))
		*bad = true;
	return json_is_array(v) ? v : NULL;
}

static long walk(json_t *tree, size_t max_records, lp_batch_item_fn fn, void *ud, char *err,
		 size_t errlen)
{
	json_t *rls, *rl, *sl, *rec;
	size_t i, j, k, count = 0, index = 0;
	const char *why = NULL;
	bool bad = !json_is_object(tree);
	long ret;

	rls = list_of(tree, "resourceLogs", "resource_logs", &bad);
	/* The structure first, and the count before the first record. */
	json_array_foreach (rls, i, rl) {
		json_t *sls = list_of(rl, "scopeLogs", "scope_logs", &bad);

		bad |= !json_is_object(rl);
		json_array_foreach (sls, j, sl) {
			json_t *recs = list_of(sl, "logRecords", "log_records", &bad);

			bad |= !json_is_object(sl);
			count += json_array_size(recs);
		}
	}
	if (bad) {
		snprintf(err, errlen, "not an ExportLogsServiceRequest: resourceLogs, scopeLogs "
				      "and logRecords must be arrays of objects");
		return -EINVAL;
	}
	if (count > max_records) {
		snprintf(err, errlen, "the request holds %zu log records, more than %zu", count,
			 max_records);
		return -E2BIG;
	}
	json_array_foreach (rls, i, rl) {
		struct context cx = { 0 };

		if (resource_context(&cx, rl, &why) < 0) {
			context_release(&cx);
			goto invalid;
		}
		json_array_foreach (list_of(rl, "scopeLogs", "scope_logs", &bad), j, sl) {
			if (scope_context(&cx, sl, &why) < 0) {
				context_release(&cx);
				goto invalid;
			}
			json_array_foreach (list_of(sl, "logRecords", "log_records", &bad), k, rec) {
				const char *rwhy = NULL;
				json_t *in = map_record(&cx, rec, &rwhy);
				int stop = fn(ud, index++, in, in ? NULL : rwhy);

				json_decref(in);
				if (stop) {
					context_release(&cx);
					return (long)index;
				}
			}
			json_decref(cx.scope);
			cx.scope = NULL;
		}
		context_release(&cx);
	}
	return (long)index;
invalid:
	snprintf(err, errlen, "%s", why);
	ret = -EINVAL;
	return ret;
}

/* ---- protobuf straight to event text ------------------------------------------
 *
 * The tree path above builds, per record, the OTLP JSON tree, the input
 * object and (in the producer) the normalised event, then serialises it:
 * three jansson trees and a json_dumps.  For a protobuf request the fast
 * path writes the normalised event's text directly from protobuf-c's
 * structs, byte for byte what lp_event_normalize() and json_dumps() give
 * the record's input object: the same members in the same order, strings
 * escaped as jansson escapes them (lp_buf_add_json_strn), integers, reals
 * (17 significant digits, jansson's exponent form) and base64 as the tree
 * path writes them.  The resource's and the scope's share of the event
 * (service, host, otel.resource, otel.scope) is written once per resource
 * and scope, not per record.
 *
 * Like the batch path's scanner, it declines what it is not sure of, and
 * such a record takes the tree path, which also words any refusal: a
 * severity or an id that the mapping refuses, a span id without a trace id
 * (the producer's traceparent rule for that case is the tree's), duplicate
 * keys in a list (jansson keeps the first one's place and the last one's
 * value), a record attribute named like one the mapping adds (otel.*), a
 * service that needs escaping (it is also the Kafka key, read from the
 * text), a tenant that is not valid UTF-8, and anything over the limits
 * (message, fields (the trace id is also the correlation id), attribute
 * count, nesting depth).  test_otlp.c compares
 * the two paths over records of every kind, and fuzz_otlp.c on any input. */

/* The attributes the mapping adds to a record's own. */
static const char *const otel_keys[] = { "otel.body", "otel.event_name", "otel.severity_text",
					 "otel.resource", "otel.scope" };

/* Keys of one list more than this are left to the tree path (checked for
 * duplicates in quadratic time). */
#define FAST_MAX_KEYS 128

static bool utf8_ok(const char *s)
{
	return !s || lp_utf8_valid((const unsigned char *)s, strlen(s));
}

static bool kvs_utf8(size_t n, pb_kv **kv);

static bool any_utf8(const pb_any *a)
{
	if (!a)
		return true;
	switch (a->value_case) {
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
		return utf8_ok(a->string_value);
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE:
		for (size_t i = 0; a->array_value && i < a->array_value->n_values; i++)
			if (!any_utf8(a->array_value->values[i]))
				return false;
		return true;
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE:
		return !a->kvlist_value ||
		       kvs_utf8(a->kvlist_value->n_values, a->kvlist_value->values);
	default:
		return true;
	}
}

static bool kvs_utf8(size_t n, pb_kv **kv)
{
	for (size_t i = 0; i < n; i++)
		if (!utf8_ok(kv[i]->key) || !any_utf8(kv[i]->value))
			return false;
	return true;
}

/* Whether every string of the request is valid UTF-8: what pb_tree checks
 * (pb_string), so that the request is refused whole, as before. */
static bool request_utf8(const pb_request *req)
{
	for (size_t i = 0; i < req->n_resource_logs; i++) {
		const pb_resource_logs *rl = req->resource_logs[i];

		if (rl->resource && !kvs_utf8(rl->resource->n_attributes, rl->resource->attributes))
			return false;
		for (size_t j = 0; j < rl->n_scope_logs; j++) {
			const pb_scope_logs *sl = rl->scope_logs[j];

			if (sl->scope && (!utf8_ok(sl->scope->name) || !utf8_ok(sl->scope->version) ||
					  !kvs_utf8(sl->scope->n_attributes, sl->scope->attributes)))
				return false;
			for (size_t k = 0; k < sl->n_log_records; k++) {
				const pb_record *r = sl->log_records[k];

				if (!utf8_ok(r->severity_text) || !any_utf8(r->body) ||
				    !kvs_utf8(r->n_attributes, r->attributes) ||
				    !utf8_ok(r->event_name))
					return false;
			}
		}
	}
	return true;
}

/* No two keys alike (and not too many to tell). */
static bool kvs_unique(size_t n, pb_kv **kv)
{
	if (n > FAST_MAX_KEYS)
		return false;
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			if (strcmp(kv[i]->key, kv[j]->key) == 0)
				return false;
	return true;
}

/* A text writer that may decline. */
struct fw {
	struct lp_buf *b;
	size_t max_depth; /* the deepest a container may sit (the event is 1) */
	bool bad;         /* declined: the record takes the tree path */
};

static void fw_str(struct fw *w, const char *s)
{
	s = s ? s : "";
	lp_buf_add_json_strn(w->b, s, strlen(s));
}

static void fw_int(struct fw *w, int64_t v)
{
	char s[24];
	uint64_t u = (uint64_t)v;
	size_t n = 0;

	if (v < 0) {
		s[n++] = '-';
		u = 0 - u;
	}
	n += lp_fmt_u64(s + n, u);
	lp_buf_add(w->b, s, n);
}

/* A double as jansson writes a real ("%.17g", ".0" when it would read as an
 * integer, no '+' or leading zeros in the exponent); NaN and infinities as
 * OTLP JSON spells them, strings. */
static void fw_double(struct fw *w, double d)
{
	char s[48], *e;
	int n;

	if (isnan(d)) {
		lp_buf_adds(w->b, "\"NaN\"");
		return;
	}
	if (isinf(d)) {
		lp_buf_adds(w->b, d > 0 ? "\"Infinity\"" : "\"-Infinity\"");
		return;
	}
	n = snprintf(s, sizeof(s) - 2, "%.17g", d);
	if (n < 0 || (size_t)n >= sizeof(s) - 2) {
		w->bad = true;
		return;
	}
	if (!strchr(s, '.') && !strchr(s, 'e')) {
		s[n++] = '.';
		s[n++] = '0';
		s[n] = '\0';
	}
	if ((e = strchr(s, 'e'))) {
		char *start = e + 1, *end = start + 1;

		if (*start == '-')
			start++;
		while (*end == '0')
			end++;
		if (end != start) {
			memmove(start, end, (size_t)(s + n - end) + 1);
			n -= (int)(end - start);
		}
	}
	lp_buf_add(w->b, s, (size_t)n);
}

static void fw_kvs(struct fw *w, size_t n, pb_kv **kv, size_t depth, const pb_kv *skip1,
		   const pb_kv *skip2);

/* An AnyValue as the plain JSON value it holds, at the given depth. */
static void fw_any(struct fw *w, const pb_any *a, size_t depth)
{
	if (w->bad)
		return;
	switch (a ? a->value_case : OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE__NOT_SET) {
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
		fw_str(w, a->string_value);
		break;
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
		lp_buf_adds(w->b, a->bool_value ? "true" : "false");
		break;
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
		fw_int(w, a->int_value);
		break;
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
		fw_double(w, a->double_value);
		break;
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE:
		if (depth > w->max_depth) {
			w->bad = true;
			return;
		}
		lp_buf_addch(w->b, '[');
		for (size_t i = 0; a->array_value && i < a->array_value->n_values && !w->bad; i++) {
			if (i > 0)
				lp_buf_addch(w->b, ',');
			fw_any(w, a->array_value->values[i], depth + 1);
		}
		lp_buf_addch(w->b, ']');
		break;
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE:
		if (a->kvlist_value)
			fw_kvs(w, a->kvlist_value->n_values, a->kvlist_value->values, depth, NULL,
			       NULL);
		else
			fw_kvs(w, 0, NULL, depth, NULL, NULL);
		break;
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE: {
		size_t n = 4 * ((a->bytes_value.len + 2) / 3);
		int m;

		if (a->bytes_value.len > INT32_MAX / 2) {
			w->bad = true;
			return;
		}
		lp_buf_grow(w->b, n + 3);
		w->b->buf[w->b->len++] = '"';
		m = EVP_EncodeBlock((unsigned char *)w->b->buf + w->b->len, a->bytes_value.data,
				    (int)a->bytes_value.len);
		w->b->len += m > 0 ? (size_t)m : 0;
		w->b->buf[w->b->len++] = '"';
		w->b->buf[w->b->len] = '\0';
		break;
	}
	default:
		lp_buf_adds(w->b, "null"); /* an empty AnyValue */
		break;
	}
}

/* A KeyValue list as an object at the given depth, without skip1/skip2. */
static void fw_kvs(struct fw *w, size_t n, pb_kv **kv, size_t depth, const pb_kv *skip1,
		   const pb_kv *skip2)
{
	bool first = true;

	if (w->bad)
		return;
	if (depth > w->max_depth || !kvs_unique(n, kv)) {
		w->bad = true;
		return;
	}
	lp_buf_addch(w->b, '{');
	for (size_t i = 0; i < n && !w->bad; i++) {
		if (kv[i] == skip1 || kv[i] == skip2)
			continue;
		if (!first)
			lp_buf_addch(w->b, ',');
		first = false;
		fw_str(w, kv[i]->key);
		lp_buf_addch(w->b, ':');
		fw_any(w, kv[i]->value, depth + 1);
	}
	lp_buf_addch(w->b, '}');
}

/* What a resource and a scope give each of their records, written once. */
struct fast_context {
	const char *service;   /* service.name, or NULL (unknown_service) */
	const char *host;      /* host.name, or NULL */
	struct lp_buf resource; /* otel.resource's object, "" when it has no member */
	struct lp_buf scope;    /* otel.scope's object, "" when there is none */
	bool declined;          /* the records take the tree path */
	char received_at[32];   /* now, RFC 3339 */
};

/* A non-empty string value, or NULL. */
static const char *nonempty_string(const pb_any *a)
{
	if (a && a->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE &&
	    a->string_value && *a->string_value)
		return a->string_value;
	return NULL;
}

/* The resource's part of fx, as resource_context and map_record make it. */
static void fast_resource(struct fast_context *fx, const pb_resource_logs *rl, size_t max_depth)
{
	size_t n = rl->resource ? rl->resource->n_attributes : 0, others = n;
	pb_kv **kv = rl->resource ? rl->resource->attributes : NULL;
	const pb_kv *svc = NULL, *host = NULL;
	struct fw w = { &fx->resource, max_depth, false };

	lp_buf_reset(&fx->resource);
	fx->service = fx->host = NULL;
	fx->declined = !kvs_unique(n, kv);
	if (fx->declined)
		return;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(kv[i]->key, "service.name") == 0 && nonempty_string(kv[i]->value)) {
			svc = kv[i];
			fx->service = kv[i]->value->string_value;
			others--;
		} else if (strcmp(kv[i]->key, "host.name") == 0 && nonempty_string(kv[i]->value)) {
			host = kv[i];
			fx->host = kv[i]->value->string_value;
			others--;
		}
	}
	/* The event is depth 1, attributes 2, otel.resource 3. */
	if (others > 0)
		fw_kvs(&w, n, kv, 3, svc, host);
	fx->declined = w.bad;
}

/* The scope's part of fx, as scope_context makes it. */
static void fast_scope(struct fast_context *fx, const pb_scope_logs *sl, size_t max_depth)
{
	const pb_scope *sc = sl->scope;
	struct fw w = { &fx->scope, max_depth, false };
	bool first = true;

	lp_buf_reset(&fx->scope);
	if (!sc)
		return;
	if (3 > max_depth && ((sc->name && *sc->name) || (sc->version && *sc->version) ||
			      sc->n_attributes > 0)) {
		fx->declined = true;
		return;
	}
	lp_buf_addch(w.b, '{');
	if (sc->name && *sc->name) {
		lp_buf_adds(w.b, "\"name\":");
		fw_str(&w, sc->name);
		first = false;
	}
	if (sc->version && *sc->version) {
		lp_buf_adds(w.b, first ? "\"version\":" : ",\"version\":");
		fw_str(&w, sc->version);
		first = false;
	}
	if (sc->n_attributes > 0) {
		lp_buf_adds(w.b, first ? "\"attributes\":" : ",\"attributes\":");
		fw_kvs(&w, sc->n_attributes, sc->attributes, 4, NULL, NULL);
		first = false;
	}
	lp_buf_addch(w.b, '}');
	if (first)
		lp_buf_reset(&fx->scope);
	fx->declined |= w.bad;
}

/* Lower-case hex of an id of exactly want bytes into out: 1, or 0 when
 * absent or all zero (no id), or -1 when of another length. */
static int fast_id(const ProtobufCBinaryData *b, size_t want, char *out)
{
	static const char digits[] = "0123456789abcdef";
	bool zero = true;

	out[0] = '\0';
	if (b->len == 0)
		return 0;
	if (b->len != want)
		return -1;
	for (size_t i = 0; i < want; i++) {
		out[2 * i] = digits[b->data[i] >> 4];
		out[2 * i + 1] = digits[b->data[i] & 15];
		zero &= b->data[i] == 0;
	}
	out[2 * want] = '\0';
	if (zero)
		out[0] = '\0';
	return zero ? 0 : 1;
}

/* Whether s needs no escaping in JSON. */
static bool plain(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == '"' || *s == '\\')
			return false;
	return true;
}

/* One record's event into ev; false when the fast path declines it.  tmp
 * is scratch space. */
static bool fast_record(const struct otlp_fast *fast, const struct lp_event_limits *lim,
			const struct fast_context *fx, const pb_record *r, struct lp_buf *tmp,
			struct otlp_event *ev)
{
	const char *level = NULL, *sevtext = r->severity_text, *name = r->event_name;
	const char *service = fx->service ? fx->service : "unknown_service", *msg;
	bool body_attr = false, name_attr, sev_attr, first = true;
	size_t msg_len, nattrs, service_at;
	struct lp_buf b;
	struct fw w = { &b, lim->max_depth, false };
	uint64_t ns;
	char ts[32];
	int sev = r->severity_number;

	/* What the mapping or normalising refuses, or the tree decides. */
	if (sev < 0 || sev > 24 || fast_id(&r->trace_id, 16, ev->trace) < 0 ||
	    fast_id(&r->span_id, 8, ev->span) < 0 || (ev->span[0] && !ev->trace[0]))
		return false;
	if (!kvs_unique(r->n_attributes, r->attributes))
		return false;
	for (size_t i = 0; i < r->n_attributes; i++)
		for (size_t k = 0; k < LP_ARRAY_SIZE(otel_keys); k++)
			if (strcmp(r->attributes[i]->key, otel_keys[k]) == 0)
				return false;
	/* The trace id is also the correlation id, a text field. */
	if (strlen(service) > lim->max_field || !plain(service) ||
	    (fx->host && strlen(fx->host) > lim->max_field) ||
	    (ev->trace[0] && 32 > lim->max_field) || lim->max_depth < 2)
		return false;
	if (fast->tenant && *fast->tenant &&
	    !lp_utf8_valid((const unsigned char *)fast->tenant, strlen(fast->tenant)))
		return false;

	/* level: the number when given, else the text when it names one. */
	sevtext = sevtext && *sevtext ? sevtext : NULL;
	if (sev > 0)
		level = severity_levels[(sev - 1) / 4];
	else if (sevtext)
		level = lp_level_canonical(sevtext);
	sev_attr = sevtext && (!level || strcasecmp(sevtext, level) != 0);

	/* message: a string body, else the body as JSON (kept as otel.body too),
	 * else the event name, else a placeholder. */
	name = name && *name ? name : NULL;
	name_attr = name != NULL;
	lp_buf_reset(tmp);
	if (nonempty_string(r->body)) {
		msg = r->body->string_value;
		msg_len = strlen(msg);
	} else if (r->body &&
		   r->body->value_case != OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE__NOT_SET) {
		struct fw bw = { tmp, lim->max_depth, false };
		bool str;

		/* Bytes (base64), NaN and the infinities are strings in the tree,
		 * so a non-empty one is a string body. */
		fw_any(&bw, r->body, 3);
		if (bw.bad)
			return false;
		str = (r->body->value_case ==
			       OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE ||
		       r->body->value_case ==
			       OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE) &&
		      tmp->len > 2 && tmp->buf[0] == '"';
		msg = str ? tmp->buf + 1 : tmp->buf;
		msg_len = str ? tmp->len - 2 : tmp->len;
		body_attr = !str;
	} else {
		msg = name ? name : "(no body)";
		msg_len = strlen(msg);
	}
	if (msg_len > lim->max_message)
		return false;
	nattrs = r->n_attributes + body_attr + name_attr + sev_attr + (fx->resource.len > 0) +
		 (fx->scope.len > 0);
	if (nattrs > lim->max_attributes)
		return false;

	/* time: when it happened, else when it was observed, else now. */
	ns = r->time_unix_nano ? r->time_unix_nano : r->observed_time_unix_nano;
	lp_rfc3339(ns ? (int64_t)(ns / 1000000) : fast->now_ms, ts);

	lp_uuid7(ev->ev.id);
	lp_buf_init(&b, 256 + msg_len + tmp->len + fx->resource.len + fx->scope.len);
	lp_buf_addf(&b, "{\"id\":\"%s\",\"schema_version\":%d,\"timestamp\":\"%s\",\"received_at\":\"%s\","
			"\"level\":\"%s\",\"message\":",
		    ev->ev.id, LP_EVENT_SCHEMA_VERSION, ts, fx->received_at, level ? level : "INFO");
	lp_buf_add_json_strn(&b, msg, msg_len);
	lp_buf_adds(&b, ",\"service\":\"");
	service_at = b.len;
	lp_buf_adds(&b, service);
	lp_buf_addch(&b, '"');
	if (fx->host) {
		lp_buf_adds(&b, ",\"host\":");
		fw_str(&w, fx->host);
	}
	if (fast->tenant && *fast->tenant) {
		lp_buf_adds(&b, ",\"tenant\":");
		fw_str(&w, fast->tenant);
	}
	if (ev->trace[0])
		lp_buf_addf(&b, ",\"correlation_id\":\"%s\",\"trace_id\":\"%s\"", ev->trace,
			    ev->trace);
	if (ev->span[0])
		lp_buf_addf(&b, ",\"span_id\":\"%s\"", ev->span);
	lp_buf_adds(&b, ",\"attributes\":{");
	for (size_t i = 0; i < r->n_attributes && !w.bad; i++) {
		if (!first)
			lp_buf_addch(&b, ',');
		first = false;
		fw_str(&w, r->attributes[i]->key);
		lp_buf_addch(&b, ':');
		fw_any(&w, r->attributes[i]->value, 3);
	}
	if (w.bad) {
		lp_buf_release(&b);
		return false;
	}
#define ATTR(name) lp_buf_adds(&b, first ? "\"" name "\":" : ",\"" name "\":"), first = false
	if (body_attr) {
		ATTR("otel.body");
		lp_buf_add(&b, tmp->buf, tmp->len);
	}
	if (name_attr) {
		ATTR("otel.event_name");
		fw_str(&w, name);
	}
	if (sev_attr) {
		ATTR("otel.severity_text");
		fw_str(&w, sevtext);
	}
	if (fx->resource.len > 0) {
		ATTR("otel.resource");
		lp_buf_add(&b, fx->resource.buf, fx->resource.len);
	}
	if (fx->scope.len > 0) {
		ATTR("otel.scope");
		lp_buf_add(&b, fx->scope.buf, fx->scope.len);
	}
#undef ATTR
	lp_buf_adds(&b, "}}");
	ev->ev.text = lp_buf_detach(&b, &ev->ev.len);
	ev->ev.service = ev->ev.text + service_at;
	ev->ev.service_len = strlen(service);
	return true;
}

/* The tree path's state for one resource and scope, built when a record
 * of theirs is first declined. */
struct tree_context {
	struct conv c;      /* always clean: the request's strings were checked */
	struct context cx;  /* resource_context and scope_context's */
	bool have_resource; /* cx holds the resource's part */
	bool have_scope;    /* and the scope's */
};

/* A declined record through the tree path: map_record, then fn. */
static int tree_record(struct tree_context *t, const pb_resource_logs *rl,
		       const pb_scope_logs *sl, const pb_record *r, size_t index,
		       lp_batch_item_fn fn, void *ud)
{
	const char *why = NULL;
	json_t *tree, *in;
	int stop;

	if (!t->have_resource) {
		tree = pb_resource_json(&t->c, rl);
		if (resource_context(&t->cx, tree, &why) < 0)
			fprintf(stderr, "otlp: %s\n", why); /* cannot happen for protobuf */
		json_decref(tree);
		t->have_resource = true;
	}
	if (!t->have_scope) {
		tree = pb_scope_json(&t->c, sl);
		if (scope_context(&t->cx, tree, &why) < 0)
			fprintf(stderr, "otlp: %s\n", why);
		json_decref(tree);
		t->have_scope = true;
	}
	tree = pb_log_record(&t->c, r);
	why = NULL;
	in = map_record(&t->cx, tree, &why);
	json_decref(tree);
	stop = fn(ud, index, in, in ? NULL : why);
	json_decref(in);
	return stop;
}

/* The protobuf request's records: each through the fast path, or the tree
 * path when it declines; what walk() returns for the same request. */
static long pb_walk(const pb_request *req, size_t max_records, const struct otlp_fast *fast,
		    lp_batch_item_fn fn, void *ud, char *err, size_t errlen)
{
	const struct lp_event_limits *lim = fast->lim ? fast->lim : &lp_event_default_limits;
	struct fast_context fx = { .resource = LP_BUF_INIT, .scope = LP_BUF_INIT };
	struct lp_buf tmp = LP_BUF_INIT;
	size_t count = 0, index = 0;
	int stop = 0;

	if (!request_utf8(req)) {
		snprintf(err, errlen, "a string field is not valid UTF-8");
		return -EINVAL;
	}
	for (size_t i = 0; i < req->n_resource_logs; i++)
		for (size_t j = 0; j < req->resource_logs[i]->n_scope_logs; j++)
			count += req->resource_logs[i]->scope_logs[j]->n_log_records;
	if (count > max_records) {
		snprintf(err, errlen, "the request holds %zu log records, more than %zu", count,
			 max_records);
		return -E2BIG;
	}
	lp_rfc3339(fast->now_ms, fx.received_at);
	for (size_t i = 0; i < req->n_resource_logs && !stop; i++) {
		const pb_resource_logs *rl = req->resource_logs[i];
		struct tree_context t = { 0 };

		fast_resource(&fx, rl, lim->max_depth);
		for (size_t j = 0; j < rl->n_scope_logs && !stop; j++) {
			const pb_scope_logs *sl = rl->scope_logs[j];
			bool declined = fx.declined;

			fast_scope(&fx, sl, lim->max_depth);
			for (size_t k = 0; k < sl->n_log_records && !stop; k++) {
				const pb_record *r = sl->log_records[k];
				struct otlp_event ev;

				if (!fx.declined && fast_record(fast, lim, &fx, r, &tmp, &ev))
					stop = fast->fn(ud, index++, &ev);
				else
					stop = tree_record(&t, rl, sl, r, index++, fn, ud);
			}
			fx.declined = declined; /* the scope's refusal ends with it */
			json_decref(t.cx.scope);
			t.cx.scope = NULL;
			t.have_scope = false;
		}
		context_release(&t.cx);
	}
	lp_buf_release(&fx.resource);
	lp_buf_release(&fx.scope);
	lp_buf_release(&tmp);
	return (long)index;
}

long otlp_decode_fast(const char *body, size_t len, enum otlp_encoding enc, size_t max_records,
		      const struct otlp_fast *fast, lp_batch_item_fn fn, void *ud, char *err,
		      size_t errlen)
{
	json_t *tree = NULL;
	long ret;

	if (enc == OTLP_JSON) {
		json_error_t je;

		if (lp_json_too_deep(body, len, JSON_MAX_DEPTH, NULL)) {
			snprintf(err, errlen, "JSON nested deeper than %d levels", JSON_MAX_DEPTH);
			return -ELOOP;
		}
		tree = lp_json_loadb(body, len, 0, &je);
		if (!tree) {
			snprintf(err, errlen, "invalid JSON at line %d column %d: %s", je.line,
				 je.column, je.text);
			return -EINVAL;
		}
	} else {
		const ProtobufCMessageDescriptor *d =
			&opentelemetry__proto__collector__logs__v1__export_logs_service_request__descriptor;
		pb_request *req;
		struct conv c = { 0 };
		int rc = pb_depth((const uint8_t *)body, len, d, 1);

		if (rc == -ELOOP) {
			snprintf(err, errlen, "protobuf messages nested deeper than %d levels",
				 OTLP_MAX_DEPTH);
			return -ELOOP;
		}
		req = rc < 0 ? NULL
			     : opentelemetry__proto__collector__logs__v1__export_logs_service_request__unpack(
				       NULL, len, (const uint8_t *)body);
		if (!req) {
			snprintf(err, errlen, "the body is not a protobuf ExportLogsServiceRequest");
			return -EINVAL;
		}
		if (fast) {
			ret = pb_walk(req, max_records, fast, fn, ud, err, errlen);
			opentelemetry__proto__collector__logs__v1__export_logs_service_request__free_unpacked(
				req, NULL);
			return ret;
		}
		tree = pb_tree(&c, req);
		opentelemetry__proto__collector__logs__v1__export_logs_service_request__free_unpacked(
			req, NULL);
		if (c.why) {
			snprintf(err, errlen, "%s", c.why);
			json_decref(tree);
			return -EINVAL;
		}
	}
	ret = walk(tree, max_records, fn, ud, err, errlen);
	json_decref(tree);
	return ret;
}

long otlp_decode(const char *body, size_t len, enum otlp_encoding enc, size_t max_records,
		 lp_batch_item_fn fn, void *ud, char *err, size_t errlen)
{
	return otlp_decode_fast(body, len, enc, max_records, NULL, fn, ud, err, errlen);
}

/* ---- replies ------------------------------------------------------------------ */

static void json_out(json_t *v, char **out, size_t *outlen)
{
	char *s = json_dumps(v, JSON_COMPACT);

	json_decref(v);
	if (!s)
		s = lp_xstrdup("{}");
	*out = s;
	*outlen = strlen(s);
}

void otlp_response(enum otlp_encoding enc, long long rejected, const char *msg, char **out,
		   size_t *outlen)
{
	bool partial = rejected > 0 || (msg && *msg);

	if (enc == OTLP_JSON) {
		json_t *o = json_object();

		if (partial) {
			char n[24];

			/* int64 is a decimal string in OTLP JSON. */
			snprintf(n, sizeof(n), "%lld", rejected);
			json_object_set_new(o, "partialSuccess",
					    json_pack("{s:s, s:s}", "rejectedLogRecords", n,
						      "errorMessage", msg ? msg : ""));
		}
		json_out(o, out, outlen);
		return;
	}
	Opentelemetry__Proto__Collector__Logs__V1__ExportLogsServiceResponse resp =
		OPENTELEMETRY__PROTO__COLLECTOR__LOGS__V1__EXPORT_LOGS_SERVICE_RESPONSE__INIT;
	Opentelemetry__Proto__Collector__Logs__V1__ExportLogsPartialSuccess ps =
		OPENTELEMETRY__PROTO__COLLECTOR__LOGS__V1__EXPORT_LOGS_PARTIAL_SUCCESS__INIT;

	if (partial) {
		ps.rejected_log_records = rejected;
		ps.error_message = (char *)(msg ? msg : "");
		resp.partial_success = &ps;
	}
	*outlen = opentelemetry__proto__collector__logs__v1__export_logs_service_response__get_packed_size(
		&resp);
	*out = lp_xmalloc(*outlen + 1);
	opentelemetry__proto__collector__logs__v1__export_logs_service_response__pack(
		&resp, (uint8_t *)*out);
}

void otlp_status(enum otlp_encoding enc, int code, const char *msg, char **out, size_t *outlen)
{
	if (enc == OTLP_JSON) {
		json_out(json_pack("{s:i, s:s}", "code", code, "message", msg ? msg : ""), out,
			 outlen);
		return;
	}
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;

	st.code = code;
	st.message = (char *)(msg ? msg : "");
	*outlen = google__rpc__status__get_packed_size(&st);
	*out = lp_xmalloc(*outlen + 1);
	google__rpc__status__pack(&st, (uint8_t *)*out);
}
