/* merge.c - metadata records, lookup classification and the merge.
 *
 * See merge.h for the formats.  The merge always writes all six
 * enrichment fields (null when unknown) so that downstream readers see a
 * stable shape whether the event is complete or partial. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logpipe/buf.h"
#include "logpipe/json.h"
#include "logpipe/util.h"
#include "merge.h"

#include "logpipe/banned.h"

const char *const md_attr_names[2][MD_NATTR] = {
	[MD_HOST] = { "datacenter", "environment", "cost_center" },
	[MD_SERVICE] = { "team", "owner", "tier" },
};

/* The record's JSON field for each attr[] slot, and for its name. */
static const char *const json_attr[2][MD_NATTR] = {
	[MD_HOST] = { "datacenter", "environment", "costCenter" },
	[MD_SERVICE] = { "team", "owner", "tier" },
};
static const char *const json_name[2] = { [MD_HOST] = "hostname", [MD_SERVICE] = "name" };
static const char *const lookup_names[2] = { [MD_HOST] = "host", [MD_SERVICE] = "service" };

const char *const tier_names[TIER_COUNT] = { "local", "redis", "metadata" };

static int set_err(char *err, size_t errlen, const char *field, const char *what)
{
	if (err && errlen)
		snprintf(err, errlen, "field '%s' %s", field, what);
	return -1;
}

/* Copies an optional string field: absent or null -> NULL; other types fail. */
static int opt_string(json_t *obj, const char *field, char **out, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, field);

	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return set_err(err, errlen, field, "is not a string");
	*out = lp_xstrdup(json_string_value(v));
	return 0;
}

struct md_record *md_record_from_json(enum md_kind kind, json_t *obj, char *err, size_t errlen)
{
	struct md_record *r;
	const char *name;
	int i;

	if (!json_is_object(obj)) {
		set_err(err, errlen, "record", "is not a JSON object");
		return NULL;
	}
	name = json_string_value(json_object_get(obj, json_name[kind]));
	if (!name || !*name) {
		set_err(err, errlen, json_name[kind], "is missing or empty");
		return NULL;
	}
	r = lp_xcalloc(1, sizeof(*r));
	r->refs = 1;
	r->kind = kind;
	r->name = lp_xstrdup(name);
	if (kind == MD_HOST && opt_string(obj, "ipAddress", &r->ip, err, errlen) < 0)
		goto fail;
	for (i = 0; i < MD_NATTR; i++)
		if (opt_string(obj, json_attr[kind][i], &r->attr[i], err, errlen) < 0)
			goto fail;
	return r;
fail:
	md_record_unref(r);
	return NULL;
}

struct md_record *md_record_parse(enum md_kind kind, const char *text, size_t len, char *err,
				  size_t errlen)
{
	json_error_t je;
	json_t *obj = lp_json_loadb(text, len, 0, &je);
	struct md_record *r;

	if (!obj) {
		if (err && errlen)
			snprintf(err, errlen, "invalid JSON: %s", je.text);
		return NULL;
	}
	r = md_record_from_json(kind, obj, err, errlen);
	json_decref(obj);
	return r;
}

struct md_record *md_record_ref(struct md_record *r)
{
	if (r)
		__atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
	return r;
}

void md_record_unref(struct md_record *r)
{
	int i;

	if (!r || __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	free(r->name);
	free(r->ip);
	for (i = 0; i < MD_NATTR; i++)
		free(r->attr[i]);
	free(r);
}

char *md_key(char *out, size_t outlen, const char *prefix, const char *value)
{
	int n = snprintf(out, outlen, "%s:%s", prefix, value);

	return n < 0 || (size_t)n >= outlen ? NULL : out;
}

/* ---- lookups -------------------------------------------------------------- */

const char *lookup_reason(enum lookup_status s)
{
	switch (s) {
	case LOOKUP_FOUND:
		return "found";
	case LOOKUP_NOT_FOUND:
		return "not_found";
	case LOOKUP_NO_FIELD:
		return "no_host_field";
	case LOOKUP_REDIS_UNAVAILABLE:
		return "redis_unavailable";
	case LOOKUP_METADATA_UNAVAILABLE:
		return "metadata_unavailable";
	}
	return "unknown";
}

enum lookup_status lookup_classify(const enum tier_outcome out[TIER_COUNT])
{
	int t;

	for (t = 0; t < TIER_COUNT; t++)
		if (out[t] == OUT_FOUND)
			return LOOKUP_FOUND;
	for (t = 0; t < TIER_COUNT; t++)
		if (out[t] == OUT_NOT_FOUND)
			return LOOKUP_NOT_FOUND;
	if (out[TIER_METADATA] == OUT_UNAVAILABLE)
		return LOOKUP_METADATA_UNAVAILABLE;
	if (out[TIER_REDIS] == OUT_UNAVAILABLE)
		return LOOKUP_REDIS_UNAVAILABLE;
	/* Every tier asked missed: nobody has the record. */
	return LOOKUP_NOT_FOUND;
}

void lookup_answer_init(struct lookup_answer *a, const char *by, const char *value)
{
	memset(a, 0, sizeof(*a));
	a->status = LOOKUP_NOT_FOUND;
	a->by = by;
	a->value = value;
}

void lookup_answer_release(struct lookup_answer *a)
{
	md_record_unref(a->rec);
	a->rec = NULL;
}

/* ---- merge ---------------------------------------------------------------- */

static void add_field(struct lp_buf *b, const char *name, const char *value)
{
	lp_buf_adds(b, ",\"");
	lp_buf_adds(b, name);
	lp_buf_adds(b, "\":");
	if (value)
		lp_buf_add_json_str(b, value);
	else
		lp_buf_adds(b, "null");
}

static void add_missing(struct lp_buf *b, enum md_kind kind, const struct lookup_answer *a)
{
	const char *sep = "";
	int t;

	lp_buf_addf(b, "{\"lookup\":\"%s\"", lookup_names[kind]);
	if (a->by)
		add_field(b, "by", a->by);
	if (a->value)
		add_field(b, "value", a->value);
	add_field(b, "reason", lookup_reason(a->status));
	if (a->failed_tiers) {
		lp_buf_adds(b, ",\"failed_tiers\":[");
		for (t = 0; t < TIER_COUNT; t++) {
			if (a->failed_tiers & (1u << t)) {
				lp_buf_addf(b, "%s\"%s\"", sep, tier_names[t]);
				sep = ",";
			}
		}
		lp_buf_addch(b, ']');
	}
	lp_buf_addch(b, '}');
}

bool enrich_render(struct lp_buf *out, const struct lookup_answer *host,
		   const struct lookup_answer *svc, int64_t now_wall_ms)
{
	const struct lookup_answer *ans[2] = { [MD_HOST] = host, [MD_SERVICE] = svc };
	bool complete = host->status == LOOKUP_FOUND && host->rec &&
			svc->status == LOOKUP_FOUND && svc->rec;
	/* Formatting the time is the costliest step here: once per millisecond. */
	static _Thread_local int64_t ts_ms = -1;
	static _Thread_local char ts[32];
	const char *sep = "";
	int k, i;

	if (now_wall_ms != ts_ms) {
		lp_rfc3339(now_wall_ms, ts);
		ts_ms = now_wall_ms;
	}
	lp_buf_adds(out, complete ? "{\"status\":\"complete\"" : "{\"status\":\"partial\"");
	add_field(out, "enriched_at", ts);
	for (k = MD_HOST; k <= MD_SERVICE; k++) {
		const struct md_record *r = ans[k]->status == LOOKUP_FOUND ? ans[k]->rec : NULL;

		for (i = 0; i < MD_NATTR; i++)
			add_field(out, md_attr_names[k][i], r ? r->attr[i] : NULL);
	}
	for (k = MD_HOST; k <= MD_SERVICE; k++) {
		const struct md_record *r = ans[k]->status == LOOKUP_FOUND ? ans[k]->rec : NULL;

		if (!r)
			continue;
		lp_buf_adds(out, ",\"");
		lp_buf_adds(out, lookup_names[k]);
		lp_buf_adds(out, "\":{\"name\":");
		lp_buf_add_json_str(out, r->name);
		add_field(out, "source", tier_names[ans[k]->tier]);
		if (k == MD_HOST && ans[k]->by)
			add_field(out, "matched_by", ans[k]->by);
		lp_buf_addch(out, '}');
	}
	if (!complete) {
		lp_buf_adds(out, ",\"missing\":[");
		for (k = MD_HOST; k <= MD_SERVICE; k++) {
			if (ans[k]->status == LOOKUP_FOUND && ans[k]->rec)
				continue;
			lp_buf_adds(out, sep);
			add_missing(out, k, ans[k]);
			sep = ",";
		}
		lp_buf_addch(out, ']');
	}
	lp_buf_addch(out, '}');
	return complete;
}

bool enrich_merge(json_t *ev, const struct lookup_answer *host, const struct lookup_answer *svc,
		  int64_t now_wall_ms)
{
	struct lp_buf b = LP_BUF_INIT;
	bool complete = enrich_render(&b, host, svc, now_wall_ms);

	json_object_set_new(ev, "enrichment", lp_json_loadb(b.buf, b.len, 0, NULL));
	lp_buf_release(&b);
	return complete;
}

int enrich_splice(struct lp_buf *out, const char *event, size_t len, const char *enrichment,
		  size_t enlen)
{
	size_t end = len, body;

	while (end > 0 && (event[end - 1] == ' ' || event[end - 1] == '\t' ||
			   event[end - 1] == '\n' || event[end - 1] == '\r'))
		end--;
	if (end < 2 || event[end - 1] != '}')
		return -EINVAL;
	/* Is there a member before the closing brace? */
	body = end - 1;
	while (body > 0 && (event[body - 1] == ' ' || event[body - 1] == '\t' ||
			    event[body - 1] == '\n' || event[body - 1] == '\r'))
		body--;
	lp_buf_add(out, event, body);
	lp_buf_adds(out, event[body - 1] == '{' ? "\"enrichment\":" : ",\"enrichment\":");
	lp_buf_add(out, enrichment, enlen);
	lp_buf_addch(out, '}');
	return 0;
}
