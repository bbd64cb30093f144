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
 * caller's 400. */
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

static json_t *pb_tree(struct conv *c, const pb_request *req)
{
	json_t *rls = json_array();

	for (size_t i = 0; i < req->n_resource_logs; i++) {
		const pb_resource_logs *rl = req->resource_logs[i];
		json_t *sls = json_array(), *o = json_object();

		if (rl->resource)
			json_object_set_new(o, "resource",
					    json_pack("{s:o}", "attributes",
						      pb_kvs(c, rl->resource->n_attributes,
							     rl->resource->attributes)));
		for (size_t j = 0; j < rl->n_scope_logs; j++) {
			const pb_scope_logs *sl = rl->scope_logs[j];
			json_t *recs = json_array(), *so = json_object();

			if (sl->scope)
				json_object_set_new(
					so, "scope",
					json_pack("{s:o, s:o, s:o}", "name",
						  pb_string(c, sl->scope->name), "version",
						  pb_string(c, sl->scope->version), "attributes",
						  pb_kvs(c, sl->scope->n_attributes,
							 sl->scope->attributes)));
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

long otlp_decode(const char *body, size_t len, enum otlp_encoding enc, size_t max_records,
		 lp_batch_item_fn fn, void *ud, char *err, size_t errlen)
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
