/* test_otlp.c - the OTLP protobuf fast path (otlp_decode_fast) against the
 * tree path it replaces: for every log record of a set of varied requests,
 * the event text the fast path writes must be byte for byte what
 * otlp_decode's input object gives through lp_event_normalize and
 * json_dumps (ids aside: both are fresh UUIDv7s), and a record the fast
 * path declines must reach the item callback exactly as before.  Requests
 * cover every AnyValue kind as attribute and as body, missing fields,
 * escapes, unicode, invalid UTF-8, trace ids of every shape, resources and
 * scopes, duplicate and colliding keys, and tight limits. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "logpipe/buf.h"
#include "logpipe/event.h"
#include "logpipe/json.h"
#include "logpipe/util.h"
#include "opentelemetry/proto/collector/logs/v1/logs_service.pb-c.h"
#include "../otlp.h"

#include "logpipe/banned.h"

#define NOW_MS 1700000000123LL
#define MAX_OUT 64

typedef Opentelemetry__Proto__Collector__Logs__V1__ExportLogsServiceRequest pb_request;
typedef Opentelemetry__Proto__Logs__V1__ResourceLogs pb_resource_logs;
typedef Opentelemetry__Proto__Logs__V1__ScopeLogs pb_scope_logs;
typedef Opentelemetry__Proto__Logs__V1__LogRecord pb_record;
typedef Opentelemetry__Proto__Resource__V1__Resource pb_resource;
typedef Opentelemetry__Proto__Common__V1__InstrumentationScope pb_scope;
typedef Opentelemetry__Proto__Common__V1__AnyValue pb_any;
typedef Opentelemetry__Proto__Common__V1__KeyValue pb_kv;
typedef Opentelemetry__Proto__Common__V1__ArrayValue pb_array;
typedef Opentelemetry__Proto__Common__V1__KeyValueList pb_kvlist;

/* ---- building requests ------------------------------------------------------ */

/* Everything a request's structs took, freed at once. */
static void *arena[4096];
static size_t narena;

static void *take(size_t n)
{
	void *p = lp_xcalloc(1, n);

	assert_true(narena < LP_ARRAY_SIZE(arena));
	arena[narena++] = p;
	return p;
}

static void arena_free(void)
{
	while (narena)
		free(arena[--narena]);
}

static char *str(const char *s)
{
	char *p = take(strlen(s) + 1);

	memcpy(p, s, strlen(s));
	return p;
}

static pb_any *any_new(void)
{
	pb_any *a = take(sizeof(*a));

	opentelemetry__proto__common__v1__any_value__init(a);
	return a;
}

static pb_any *s_(const char *s)
{
	pb_any *a = any_new();

	a->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
	a->string_value = str(s);
	return a;
}

static pb_any *b_(int v)
{
	pb_any *a = any_new();

	a->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE;
	a->bool_value = v;
	return a;
}

static pb_any *i_(int64_t v)
{
	pb_any *a = any_new();

	a->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
	a->int_value = v;
	return a;
}

static pb_any *d_(double v)
{
	pb_any *a = any_new();

	a->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE;
	a->double_value = v;
	return a;
}

static pb_any *y_(const void *data, size_t n)
{
	pb_any *a = any_new();

	a->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE;
	a->bytes_value.data = take(n + 1);
	memcpy(a->bytes_value.data, data, n);
	a->bytes_value.len = n;
	return a;
}

/* An array of n values (NULL ends the list early is not allowed: n exact). */
static pb_any *arr_(size_t n, ...)
{
	pb_any *a = any_new();
	pb_array *v = take(sizeof(*v));
	va_list ap;

	opentelemetry__proto__common__v1__array_value__init(v);
	v->n_values = n;
	v->values = take((n + 1) * sizeof(*v->values));
	va_start(ap, n);
	for (size_t i = 0; i < n; i++)
		v->values[i] = va_arg(ap, pb_any *);
	va_end(ap);
	a->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE;
	a->array_value = v;
	return a;
}

static pb_kv *kv(const char *k, pb_any *v)
{
	pb_kv *p = take(sizeof(*p));

	opentelemetry__proto__common__v1__key_value__init(p);
	p->key = str(k);
	p->value = v;
	return p;
}

/* n KeyValues from the arguments. */
static pb_kv **kvs_v(size_t n, va_list ap)
{
	pb_kv **list = take((n + 1) * sizeof(*list));

	for (size_t i = 0; i < n; i++)
		list[i] = va_arg(ap, pb_kv *);
	return list;
}

static pb_any *kvl_(size_t n, ...)
{
	pb_any *a = any_new();
	pb_kvlist *l = take(sizeof(*l));
	va_list ap;

	opentelemetry__proto__common__v1__key_value_list__init(l);
	va_start(ap, n);
	l->values = kvs_v(n, ap);
	va_end(ap);
	l->n_values = n;
	a->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE;
	a->kvlist_value = l;
	return a;
}

static pb_record *rec(void)
{
	pb_record *r = take(sizeof(*r));

	opentelemetry__proto__logs__v1__log_record__init(r);
	return r;
}

static void rec_attrs(pb_record *r, size_t n, ...)
{
	va_list ap;

	va_start(ap, n);
	r->attributes = kvs_v(n, ap);
	va_end(ap);
	r->n_attributes = n;
}

static void rec_trace(pb_record *r, const char *trace, size_t tn, const char *span, size_t sn)
{
	r->trace_id.data = take(tn + 1);
	memcpy(r->trace_id.data, trace, tn);
	r->trace_id.len = tn;
	r->span_id.data = take(sn + 1);
	memcpy(r->span_id.data, span, sn);
	r->span_id.len = sn;
}

static pb_resource *resource(size_t n, ...)
{
	pb_resource *res = take(sizeof(*res));
	va_list ap;

	opentelemetry__proto__resource__v1__resource__init(res);
	va_start(ap, n);
	res->attributes = kvs_v(n, ap);
	va_end(ap);
	res->n_attributes = n;
	return res;
}

static pb_scope *scope(const char *name, const char *version, size_t n, ...)
{
	pb_scope *sc = take(sizeof(*sc));
	va_list ap;

	opentelemetry__proto__common__v1__instrumentation_scope__init(sc);
	sc->name = str(name);
	sc->version = str(version);
	va_start(ap, n);
	sc->attributes = kvs_v(n, ap);
	va_end(ap);
	sc->n_attributes = n;
	return sc;
}

/* One ScopeLogs of the records (NULL-terminated). */
static pb_scope_logs *scope_logs(pb_scope *sc, pb_record **recs)
{
	pb_scope_logs *sl = take(sizeof(*sl));
	size_t n = 0;

	opentelemetry__proto__logs__v1__scope_logs__init(sl);
	sl->scope = sc;
	while (recs[n])
		n++;
	sl->log_records = recs;
	sl->n_log_records = n;
	return sl;
}

static pb_resource_logs *resource_logs(pb_resource *res, size_t n, ...)
{
	pb_resource_logs *rl = take(sizeof(*rl));
	va_list ap;

	opentelemetry__proto__logs__v1__resource_logs__init(rl);
	rl->resource = res;
	rl->scope_logs = take((n + 1) * sizeof(*rl->scope_logs));
	va_start(ap, n);
	for (size_t i = 0; i < n; i++)
		rl->scope_logs[i] = va_arg(ap, pb_scope_logs *);
	va_end(ap);
	rl->n_scope_logs = n;
	return rl;
}

/* The request of the resource logs, packed. */
static uint8_t *pack(size_t *len, size_t n, ...)
{
	pb_request req = OPENTELEMETRY__PROTO__COLLECTOR__LOGS__V1__EXPORT_LOGS_SERVICE_REQUEST__INIT;
	uint8_t *out;
	va_list ap;

	req.resource_logs = take((n + 1) * sizeof(*req.resource_logs));
	va_start(ap, n);
	for (size_t i = 0; i < n; i++)
		req.resource_logs[i] = va_arg(ap, pb_resource_logs *);
	va_end(ap);
	req.n_resource_logs = n;
	*len = opentelemetry__proto__collector__logs__v1__export_logs_service_request__get_packed_size(
		&req);
	out = take(*len + 1);
	opentelemetry__proto__collector__logs__v1__export_logs_service_request__pack(&req, out);
	return out;
}

/* ---- the two paths ------------------------------------------------------------ */

/* What one path made of a request: per record "ok <event>" (the id masked)
 * or "rejected <code> <message>", and which records the fast path wrote. */
struct result {
	long n;                 /* otlp_decode's return */
	char err[200];          /* its error */
	char *out[MAX_OUT];     /* per record */
	bool fast[MAX_OUT];     /* written by the fast path */
	const struct lp_event_limits *lim;
	const char *tenant;
};

static char *masked(const char *text, size_t len)
{
	char *s = lp_xmalloc(len + 4);

	memcpy(s, "ok ", 3);
	memcpy(s + 3, text, len);
	s[len + 3] = '\0';
	/* {"id":"<36>" */
	if (len > 44 && strncmp(text, "{\"id\":\"", 7) == 0)
		memset(s + 3 + 7, '0', 36);
	return s;
}

/* The tree path's handling of one record, as producer.c's batch_item. */
static int on_item(void *ud, size_t index, json_t *item, const char *error)
{
	struct result *r = ud;
	struct lp_event_error e;
	json_t *ev;
	char *text, buf[400];

	assert_true(index < MAX_OUT);
	if (!item) {
		snprintf(buf, sizeof(buf), "rejected invalid_json %s", error ? error : "");
		r->out[index] = lp_xstrdup(buf);
		return 0;
	}
	ev = lp_event_normalize(item, r->lim, NOW_MS, r->tenant, &e);
	if (!ev) {
		snprintf(buf, sizeof(buf), "rejected %s %s", e.code, e.message);
		r->out[index] = lp_xstrdup(buf);
		return 0;
	}
	text = json_dumps(ev, JSON_COMPACT);
	assert_non_null(text);
	r->out[index] = masked(text, strlen(text));
	/* The fast path's event carries its ids for the Kafka headers. */
	free(text);
	json_decref(ev);
	return 0;
}

static int on_event(void *ud, size_t index, struct otlp_event *e)
{
	struct result *r = ud;
	json_t *ev;
	json_error_t je;

	assert_true(index < MAX_OUT);
	assert_int_equal(strlen(e->ev.text), e->ev.len);
	/* The Kafka key is the service, inside the text. */
	assert_true(e->ev.service > e->ev.text && e->ev.service < e->ev.text + e->ev.len);
	assert_memory_equal(e->ev.id, e->ev.text + 7, 36);
	ev = lp_json_loadb(e->ev.text, e->ev.len, 0, &je);
	assert_non_null(ev);
	assert_int_equal(strlen(json_string_value(json_object_get(ev, "service"))),
			 e->ev.service_len);
	assert_memory_equal(json_string_value(json_object_get(ev, "service")), e->ev.service,
			    e->ev.service_len);
	assert_string_equal(json_string_value(json_object_get(ev, "trace_id"))
				    ? json_string_value(json_object_get(ev, "trace_id"))
				    : "",
			    e->trace);
	assert_string_equal(json_string_value(json_object_get(ev, "span_id"))
				    ? json_string_value(json_object_get(ev, "span_id"))
				    : "",
			    e->span);
	json_decref(ev);
	r->out[index] = masked(e->ev.text, e->ev.len);
	r->fast[index] = true;
	free(e->ev.text);
	return 0;
}

static void result_release(struct result *r)
{
	for (size_t i = 0; i < MAX_OUT; i++)
		free(r->out[i]);
	memset(r, 0, sizeof(*r));
}

/* Runs both paths on body; they must agree.  Returns how many records the
 * fast path wrote; *fast_mask gets one bit per record (first 64). */
static long both(const uint8_t *body, size_t len, const struct lp_event_limits *lim,
		 const char *tenant, uint64_t *fast_mask)
{
	struct result old = { .lim = lim, .tenant = tenant };
	struct result neu = { .lim = lim, .tenant = tenant };
	struct otlp_fast fast = { .lim = lim, .now_ms = NOW_MS, .tenant = tenant,
				  .fn = on_event };
	long nfast = 0;

	old.n = otlp_decode((const char *)body, len, OTLP_PROTOBUF, 50, on_item, &old, old.err,
			    sizeof(old.err));
	neu.n = otlp_decode_fast((const char *)body, len, OTLP_PROTOBUF, 50, &fast, on_item, &neu,
				 neu.err, sizeof(neu.err));
	assert_int_equal(old.n, neu.n);
	if (old.n < 0)
		assert_string_equal(old.err, neu.err);
	*fast_mask = 0;
	for (long i = 0; i < old.n && i < MAX_OUT; i++) {
		assert_non_null(old.out[i]);
		assert_non_null(neu.out[i]);
		if (strcmp(old.out[i], neu.out[i]) != 0)
			fail_msg("record %ld:\n  tree: %s\n  fast: %s", i, old.out[i], neu.out[i]);
		if (neu.fast[i]) {
			nfast++;
			*fast_mask |= 1ull << i;
		}
	}
	result_release(&old);
	result_release(&neu);
	return nfast;
}

/* ---- the requests --------------------------------------------------------------- */

/* The protocols bench's record: severity 9 "INFO", a string body, a
 * resource with service.name and host.name. */
static void test_bench_record(void **state)
{
	pb_record *r = rec();
	uint64_t mask;
	size_t len;
	uint8_t *body;

	(void)state;
	r->severity_number = 9;
	r->severity_text = str("INFO");
	r->body = s_("benchmark event with a typical length of text");
	body = pack(&len, 1,
		    resource_logs(resource(2, kv("service.name", s_("bench")),
					   kv("host.name", s_("web-1"))),
				  1, scope_logs(NULL, (pb_record *[]){ r, NULL })));
	assert_int_equal(both(body, len, NULL, NULL, &mask), 1);
	arena_free();
}

/* A fixed expectation, so that the comparison cannot pass by both paths
 * changing together. */
static int on_golden(void *ud, size_t index, struct otlp_event *e)
{
	char **out = ud;

	(void)index;
	*out = masked(e->ev.text, e->ev.len);
	free(e->ev.text);
	return 0;
}

static int on_golden_item(void *ud, size_t index, json_t *item, const char *error)
{
	(void)ud;
	(void)index;
	(void)item;
	(void)error;
	fail_msg("the golden record went the tree path");
	return 0;
}

static void test_golden(void **state)
{
	static const char trace[16] = "\x01\x23\x45\x67\x89\xab\xcd\xef\x01\x23\x45\x67\x89\xab\xcd\xef";
	pb_record *r = rec();
	struct otlp_fast fast = { .now_ms = NOW_MS, .tenant = "acme", .fn = on_golden };
	char *out = NULL, err[200];
	size_t len;
	uint8_t *body;

	(void)state;
	r->time_unix_nano = 1700000000999999999ull;
	r->severity_number = 17;
	r->severity_text = str("Bad");
	r->body = kvl_(2, kv("a", i_(-3)), kv("b", arr_(2, d_(0.5), b_(0))));
	rec_trace(r, trace, 16, "\0\0\0\0\0\0\0\x01", 8);
	rec_attrs(r, 2, kv("k\"1", s_("v\n\x01\xc3\xa9")), kv("n", d_(1e21)));
	body = pack(&len, 1,
		    resource_logs(resource(2, kv("service.name", s_("svc")), kv("zone", s_("z1"))),
				  1,
				  scope_logs(scope("lib", "", 0), (pb_record *[]){ r, NULL })));
	assert_int_equal(otlp_decode_fast((const char *)body, len, OTLP_PROTOBUF, 10, &fast,
					  on_golden_item, &out, err, sizeof(err)),
			 1);
	assert_non_null(out);
	assert_string_equal(
		out,
		"ok {\"id\":\"000000000000000000000000000000000000\",\"schema_version\":1,"
		"\"timestamp\":\"2023-11-14T22:13:20.999Z\",\"received_at\":\"2023-11-14T22:13:20.123Z\","
		"\"level\":\"ERROR\",\"message\":\"{\\\"a\\\":-3,\\\"b\\\":[0.5,false]}\","
		"\"service\":\"svc\",\"tenant\":\"acme\","
		"\"correlation_id\":\"0123456789abcdef0123456789abcdef\","
		"\"trace_id\":\"0123456789abcdef0123456789abcdef\",\"span_id\":\"0000000000000001\","
		"\"attributes\":{\"k\\\"1\":\"v\\n\\u0001\xc3\xa9\",\"n\":1e21,"
		"\"otel.body\":{\"a\":-3,\"b\":[0.5,false]},\"otel.severity_text\":\"Bad\","
		"\"otel.resource\":{\"zone\":\"z1\"},\"otel.scope\":{\"name\":\"lib\"}}}");
	free(out);
	arena_free();
}

/* Every attribute value kind, in a record and in the resource and scope. */
static pb_kv **all_kinds(size_t *n)
{
	static const char bin[] = "\x00\xff\x10";
	pb_kv **l = take(40 * sizeof(*l));
	size_t k = 0;

	l[k++] = kv("str", s_("plain"));
	l[k++] = kv("empty", s_(""));
	l[k++] = kv("esc", s_("q\" b\\ s/ nl\n cr\r tab\t bs\b ff\f c1\x01 c1f\x1f del\x7f"));
	l[k++] = kv("uni", s_("h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xf0\x9f\x98\x80 \xe2\x80\xa8"));
	l[k++] = kv("t", b_(1));
	l[k++] = kv("f", b_(0));
	l[k++] = kv("i0", i_(0));
	l[k++] = kv("ineg", i_(-42));
	l[k++] = kv("imax", i_(INT64_MAX));
	l[k++] = kv("imin", i_(INT64_MIN));
	l[k++] = kv("d1", d_(1.0));
	l[k++] = kv("d01", d_(0.1));
	l[k++] = kv("dneg0", d_(-0.0));
	l[k++] = kv("dbig", d_(1e20));
	l[k++] = kv("dhuge", d_(1.5e300));
	l[k++] = kv("dsmall", d_(1e-5));
	l[k++] = kv("dtiny", d_(4.9e-324));
	l[k++] = kv("dpi", d_(3.141592653589793));
	l[k++] = kv("d17", d_(123456789012345678.0));
	l[k++] = kv("nan", d_(NAN));
	l[k++] = kv("inf", d_(INFINITY));
	l[k++] = kv("ninf", d_(-INFINITY));
	l[k++] = kv("arr", arr_(4, s_("x"), i_(1), arr_(1, b_(1)), kvl_(1, kv("in", d_(2.5)))));
	l[k++] = kv("arrempty", arr_(0));
	l[k++] = kv("kvl", kvl_(3, kv("a", s_("1")), kv("b", kvl_(1, kv("c", any_new()))),
				kv("\xc3\xa9\n", i_(7))));
	l[k++] = kv("kvlempty", kvl_(0));
	l[k++] = kv("bytes", y_(bin, 3));
	l[k++] = kv("bytes1", y_("a", 1));
	l[k++] = kv("bytes2", y_("ab", 2));
	l[k++] = kv("bytes0", y_("", 0));
	l[k++] = kv("emptyany", any_new());
	l[k++] = kv("nullvalue", NULL);
	l[k++] = kv("", s_("empty key"));
	*n = k;
	return l;
}

static void test_attribute_kinds(void **state)
{
	pb_record *r = rec(), *r2 = rec();
	pb_resource *res;
	pb_scope *sc;
	size_t n, len;
	uint64_t mask;
	uint8_t *body;

	(void)state;
	r->body = s_("all kinds");
	r->attributes = all_kinds(&n);
	r->n_attributes = n;
	r2->body = s_("all kinds around it");
	res = resource(2, kv("service.name", s_("svc")), kv("host.name", s_("h\xc3\xb6st")));
	res->attributes = all_kinds(&n);
	res->attributes[n++] = kv("service.name", s_("svc"));
	res->n_attributes = n;
	sc = scope("s", "1.0", 0);
	sc->attributes = all_kinds(&n);
	sc->n_attributes = n;
	body = pack(&len, 1,
		    resource_logs(res, 1, scope_logs(sc, (pb_record *[]){ r, r2, NULL })));
	assert_int_equal(both(body, len, NULL, NULL, &mask), 2);
	arena_free();
}

/* Bodies of every kind. */
static void test_bodies(void **state)
{
	static const char bin[] = "\x00\xff\x10\x80";
	pb_any *bodies[] = {
		s_("text"), s_(""), s_("x"), i_(12), i_(-9), d_(2.5), d_(NAN), d_(-INFINITY),
		b_(1), b_(0), arr_(2, s_("a\"b"), i_(3)), arr_(0), kvl_(1, kv("k", s_("v\n"))),
		kvl_(0), y_(bin, 4), any_new(), s_("\xe2\x9c\x93 \x01"),
	};
	pb_record *recs[LP_ARRAY_SIZE(bodies) + 3];
	size_t n = 0, len;
	uint64_t mask;
	uint8_t *body;
	long nfast;

	(void)state;
	for (size_t i = 0; i < LP_ARRAY_SIZE(bodies); i++) {
		recs[n] = rec();
		recs[n++]->body = bodies[i];
	}
	recs[n] = rec(); /* no body */
	n++;
	recs[n] = rec(); /* no body, an event name */
	recs[n++]->event_name = str("user.login");
	recs[n] = NULL;
	body = pack(&len, 1, resource_logs(NULL, 1, scope_logs(NULL, recs)));
	nfast = both(body, len, NULL, NULL, &mask);
	assert_int_equal(nfast, (long)n);
	arena_free();
}

/* Severities, times, event names, trace ids. */
static void test_fields(void **state)
{
	static const char tr[16] = "\xAB\xCD\xEF\x01\x23\x45\x67\x89\xab\xcd\xef\x01\x23\x45\x67\x89";
	static const char zero[16] = { 0 };
	pb_record *recs[40];
	size_t n = 0, len;
	uint64_t mask;
	uint8_t *body;
	long nfast;

	(void)state;
#define R() (recs[n] = rec(), recs[n]->body = s_("m"), recs[n++])
	R()->severity_number = 1;
	R()->severity_number = 24;
	R()->severity_number = 13;
	R()->severity_number = 25;  /* refused */
	R()->severity_number = -1;  /* refused */
	R()->severity_text = str("warning");
	R()->severity_text = str("Notice");
	R()->severity_text = str("error");
	{
		pb_record *r = R();

		r->severity_number = 9;
		r->severity_text = str("info");
	}
	{
		pb_record *r = R();

		r->severity_number = 9;
		r->severity_text = str("Information \"x\"");
	}
	R()->time_unix_nano = 1700000000123456789ull;
	R()->observed_time_unix_nano = 1600000000000000000ull;
	{
		pb_record *r = R();

		r->time_unix_nano = 1;
		r->observed_time_unix_nano = 1600000000000000000ull;
	}
	R()->time_unix_nano = UINT64_MAX;
	R()->event_name = str("ev\t1");
	rec_trace(R(), tr, 16, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	rec_trace(R(), tr, 16, "", 0);
	rec_trace(R(), zero, 16, zero, 8);
	rec_trace(R(), "", 0, "\x01\x02\x03\x04\x05\x06\x07\x08", 8); /* span alone */
	rec_trace(R(), tr, 15, "", 0);                                 /* refused */
	rec_trace(R(), tr, 16, "\x01\x02", 2);                         /* refused */
	rec_trace(R(), zero, 16, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	recs[n] = NULL;
#undef R
	body = pack(&len, 1,
		    resource_logs(resource(1, kv("service.name", s_("fields"))), 1,
				  scope_logs(scope("", "", 0), recs)));
	nfast = both(body, len, NULL, NULL, &mask);
	/* The refusals and a span without a trace go the tree path. */
	assert_int_equal(nfast, (long)n - 6);
	arena_free();
}

/* Resources and scopes of every shape; keys that collide. */
static void test_context(void **state)
{
	pb_record *a = rec(), *b = rec(), *c = rec(), *d = rec(), *e = rec(), *f = rec();
	size_t len;
	uint64_t mask;
	uint8_t *body;
	long nfast;

	(void)state;
	a->body = s_("a");
	b->body = s_("b");
	rec_attrs(b, 2, kv("dup", s_("1")), kv("dup", s_("2")));
	c->body = i_(1);
	rec_attrs(c, 1, kv("otel.body", s_("mine")));
	d->body = s_("d");
	rec_attrs(d, 1, kv("otel.resource", s_("mine")));
	e->body = s_("e");
	rec_attrs(e, 1, kv("k", kvl_(2, kv("x", i_(1)), kv("x", i_(2)))));
	f->body = s_("f");
	body = pack(&len, 5,
		    /* a service name needing escapes: the tree path */
		    resource_logs(resource(1, kv("service.name", s_("sv\"c"))), 1,
				  scope_logs(NULL, (pb_record *[]){ a, NULL })),
		    /* service.name of another type stays in otel.resource */
		    resource_logs(resource(3, kv("service.name", i_(3)), kv("host.name", s_("")),
					   kv("r", b_(1))),
				  2, scope_logs(scope("n", "v", 1, kv("sa", s_("x"))),
						(pb_record *[]){ b, c, d, e, NULL }),
				  scope_logs(scope("", "", 0), (pb_record *[]){ f, NULL })),
		    /* duplicate resource keys: the tree path */
		    resource_logs(resource(2, kv("service.name", s_("x")),
					   kv("service.name", s_("y"))),
				  1, scope_logs(NULL, (pb_record *[]){ a, NULL })),
		    /* an empty resource, and no records */
		    resource_logs(resource(0), 1, scope_logs(NULL, (pb_record *[]){ NULL })),
		    resource_logs(resource(1, kv("host.name", s_("h"))), 1,
				  scope_logs(scope("", "", 2, kv("q", s_("1")), kv("q", s_("2"))),
					     (pb_record *[]){ f, NULL })));
	nfast = both(body, len, NULL, NULL, &mask);
	/* a (escaped service), b, c, d, e (collisions), a (dup resource), f
	 * (dup scope) go the tree path; f in the second resource does not. */
	assert_int_equal(nfast, 1);
	arena_free();
}

/* Tight limits: what exceeds one goes the tree path, which words it. */
static void test_limits(void **state)
{
	static const struct lp_event_limits lim = {
		.max_message = 10, .max_attributes = 3, .max_field = 8, .max_depth = 5,
	};
	pb_record *recs[20];
	size_t n = 0, len;
	uint64_t mask;
	uint8_t *body;
	long nfast;

	(void)state;
#define R() (recs[n] = rec(), recs[n]->body = s_("m"), recs[n++])
	R();                                                   /* fine */
	R()->body = s_("0123456789");                          /* fine: 10 */
	R()->body = s_("0123456789a");                         /* too long */
	R()->body = arr_(3, i_(100), i_(200), i_(3));          /* dumped: 13 */
	rec_attrs(R(), 2, kv("a", i_(1)), kv("b", i_(2)));     /* + otel.resource: 3 */
	rec_attrs(R(), 3, kv("a", i_(1)), kv("b", i_(2)), kv("c", i_(3))); /* 4 */
	rec_attrs(R(), 1, kv("d", arr_(1, arr_(1, arr_(1, i_(1)))))); /* depth 3..5: fine */
	rec_attrs(R(), 1, kv("d", arr_(1, arr_(1, arr_(1, arr_(1, i_(1))))))); /* 6: deep */
	R()->body = kvl_(1, kv("d", arr_(1, arr_(1, arr_(1, i_(1)))))); /* otel.body deep */
	rec_trace(R(), "0123456789abcdef", 16, "", 0); /* correlation_id: 32 > 8 */
	recs[n] = NULL;
#undef R
	body = pack(&len, 2,
		    resource_logs(resource(2, kv("service.name", s_("svc")), kv("z", s_("1"))), 1,
				  scope_logs(NULL, recs)),
		    resource_logs(resource(1, kv("service.name", s_("a-long-service"))), 1,
				  scope_logs(NULL, (pb_record *[]){ recs[0], NULL })));
	nfast = both(body, len, &lim, NULL, &mask);
	assert_int_equal(nfast, 4);
	assert_int_equal(mask, 0x1 | 0x2 | 0x10 | 0x40);
	/* A resource nested too deep for the records' otel.resource. */
	body = pack(&len, 1,
		    resource_logs(resource(2, kv("service.name", s_("svc")),
					   kv("z", arr_(1, arr_(1, arr_(1, i_(1)))))),
				  1, scope_logs(NULL, (pb_record *[]){ recs[0], NULL })));
	assert_int_equal(both(body, len, &lim, NULL, &mask), 0);
	arena_free();
}

/* Tenants: plain, empty, needing escapes, invalid UTF-8. */
static void test_tenants(void **state)
{
	static const char *const tenants[] = { "acme", "", "ac\"me\n", "bad\xff" };
	pb_record *r = rec();
	size_t len;
	uint64_t mask;
	uint8_t *body;

	(void)state;
	r->body = s_("t");
	body = pack(&len, 1,
		    resource_logs(resource(1, kv("service.name", s_("svc"))), 1,
				  scope_logs(NULL, (pb_record *[]){ r, NULL })));
	assert_int_equal(both(body, len, NULL, tenants[0], &mask), 1);
	assert_int_equal(both(body, len, NULL, tenants[1], &mask), 1);
	assert_int_equal(both(body, len, NULL, tenants[2], &mask), 1);
	assert_int_equal(both(body, len, NULL, tenants[3], &mask), 0);
	arena_free();
}

/* Invalid UTF-8 anywhere refuses the whole request, as before; so does a
 * request of more records than allowed. */
static void test_invalid(void **state)
{
	static const char *const bad[] = { "\xff", "a\xc3", "\xed\xa0\x80", "\xc0\xaf" };
	pb_record *r = rec(), *ok = rec(), *many[60];
	size_t len;
	uint64_t mask;
	uint8_t *body;

	(void)state;
	ok->body = s_("fine");
	for (size_t i = 0; i < LP_ARRAY_SIZE(bad); i++) {
		r->body = s_(bad[i]);
		body = pack(&len, 1,
			    resource_logs(NULL, 1, scope_logs(NULL, (pb_record *[]){ ok, r, NULL })));
		assert_int_equal(both(body, len, NULL, NULL, &mask), 0);
		r->body = s_("x");
		rec_attrs(r, 1, kv("k", arr_(1, kvl_(1, kv(bad[i], i_(1))))));
		body = pack(&len, 1,
			    resource_logs(NULL, 1, scope_logs(NULL, (pb_record *[]){ ok, r, NULL })));
		assert_int_equal(both(body, len, NULL, NULL, &mask), 0);
		rec_attrs(r, 0);
		body = pack(&len, 1,
			    resource_logs(NULL, 1,
					  scope_logs(scope("s", bad[i], 0),
						     (pb_record *[]){ ok, r, NULL })));
		assert_int_equal(both(body, len, NULL, NULL, &mask), 0);
	}
	for (size_t i = 0; i < 59; i++)
		many[i] = ok;
	many[59] = NULL;
	body = pack(&len, 1, resource_logs(NULL, 1, scope_logs(NULL, many)));
	assert_int_equal(both(body, len, NULL, NULL, &mask), 0);
	/* Not protobuf at all. */
	assert_int_equal(both((const uint8_t *)"\xff\xff\xff", 3, NULL, NULL, &mask), 0);
	arena_free();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bench_record), cmocka_unit_test(test_golden),
		cmocka_unit_test(test_attribute_kinds), cmocka_unit_test(test_bodies),
		cmocka_unit_test(test_fields), cmocka_unit_test(test_context),
		cmocka_unit_test(test_limits), cmocka_unit_test(test_tenants),
		cmocka_unit_test(test_invalid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
