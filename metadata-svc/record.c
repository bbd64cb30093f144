/* record.c - host and service metadata records (see record.h).
 *
 * Validation is strict in what it stores and plain in what it says: the
 * first invalid field is named in the error, unknown fields are refused
 * (a typo such as "costcenter" must not be dropped silently), and IP
 * addresses are stored in canonical form so that the enricher, which
 * canonicalises an event's source_ip the same way, finds them. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logpipe/buf.h"
#include "logpipe/event.h"
#include "logpipe/json.h"
#include "logpipe/util.h"
#include "record.h"

#include "logpipe/banned.h"

static const struct md_field host_fields[] = {
	{ "hostname", "hostname", MD_F_KEY },
	{ "ipAddress", "ip_address", MD_F_IP },
	{ "datacenter", "datacenter", MD_F_TEXT },
	{ "environment", "environment", MD_F_TEXT },
	{ "costCenter", "cost_center", MD_F_TEXT },
	{ "tags", "tags", MD_F_TAGS },
};

static const struct md_field service_fields[] = {
	{ "name", "name", MD_F_KEY },
	{ "team", "team", MD_F_TEXT },
	{ "owner", "owner", MD_F_TEXT },
	{ "tier", "tier", MD_F_TEXT },
	{ "tags", "tags", MD_F_TAGS },
};

const struct md_kind md_host_kind = {
	"host", "host", "host_metadata", "/api/metadata/hosts",
	host_fields, LP_ARRAY_SIZE(host_fields), 1,
};

const struct md_kind md_service_kind = {
	"service", "service", "service_metadata", "/api/metadata/services",
	service_fields, LP_ARRAY_SIZE(service_fields), -1,
};

static int invalid(struct md_invalid *why, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int invalid(struct md_invalid *why, const char *field, const char *fmt, ...)
{
	va_list ap;

	lp_strlcpy(why->field, field, sizeof(why->field));
	va_start(ap, fmt);
	vsnprintf(why->message, sizeof(why->message), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

bool md_key_valid(const struct md_kind *k, const char *s)
{
	size_t n, i;

	if (!s)
		return false;
	n = strlen(s);
	if (k == &md_host_kind) {
		/* DNS names and the like: letters, digits, '.', '-', '_'. */
		if (n == 0 || n > 253 || s[0] == '.' || s[0] == '-')
			return false;
		for (i = 0; i < n; i++) {
			char c = s[i];

			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'))
				return false;
		}
		return true;
	}
	/* Service names are what events carry: printable, no spaces, and none
	 * of the characters that would need escaping in a URL path. */
	if (n == 0 || n > 128)
		return false;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c <= ' ' || c == 0x7f || c == '/' || c == '?' || c == '#' || c == '%' ||
		    c == '\\')
			return false;
	}
	return true;
}

bool md_ip_canonical(const char *s, char *out, size_t outlen)
{
	unsigned char addr[16];

	if (!s || !lp_ip_valid(s))
		return false;
	if (inet_pton(AF_INET, s, addr) == 1)
		return inet_ntop(AF_INET, addr, out, (socklen_t)outlen) != NULL;
	if (inet_pton(AF_INET6, s, addr) == 1)
		return inet_ntop(AF_INET6, addr, out, (socklen_t)outlen) != NULL;
	return false;
}

void md_values_release(struct md_values *v)
{
	size_t i;

	for (i = 0; i < MD_MAX_FIELDS; i++) {
		free(v->text[i]);
		v->text[i] = NULL;
		v->present[i] = false;
	}
}

static const struct md_field *field_named(const struct md_kind *k, const char *name)
{
	size_t i;

	for (i = 0; i < k->nfields; i++)
		if (!strcmp(k->fields[i].json, name))
			return &k->fields[i];
	return NULL;
}

/* Validates one present field's value into *text. */
static int check_field(const struct md_kind *k, const struct md_field *f, json_t *v,
		       char **text, struct md_invalid *why)
{
	char ip[64];

	switch (f->type) {
	case MD_F_KEY:
		if (!json_is_string(v) || !md_key_valid(k, json_string_value(v)))
			return invalid(why, f->json, "'%s' must be a %s name (%s)", f->json, k->what,
				       k == &md_host_kind
					       ? "1-253 letters, digits, '.', '-' or '_'"
					       : "1-128 printable characters, no spaces or '/'");
		*text = lp_xstrdup(json_string_value(v));
		return 0;
	case MD_F_TEXT:
		if (json_is_null(v))
			return 0;
		if (!json_is_string(v))
			return invalid(why, f->json, "'%s' must be a string or null", f->json);
		if (json_string_length(v) > MD_MAX_TEXT)
			return invalid(why, f->json, "'%s' is longer than %d bytes", f->json,
				       MD_MAX_TEXT);
		*text = lp_xstrdup(json_string_value(v));
		return 0;
	case MD_F_IP:
		if (json_is_null(v))
			return 0;
		if (!json_is_string(v) || !md_ip_canonical(json_string_value(v), ip, sizeof(ip)))
			return invalid(why, f->json, "'%s' must be an IPv4 or IPv6 address", f->json);
		*text = lp_xstrdup(ip);
		return 0;
	case MD_F_TAGS:
		if (json_is_null(v)) {
			*text = lp_xstrdup("{}");
			return 0;
		}
		if (!json_is_object(v))
			return invalid(why, f->json, "'%s' must be a JSON object", f->json);
		if (json_object_size(v) > MD_MAX_TAGS)
			return invalid(why, f->json, "'%s' has more than %d keys", f->json,
				       MD_MAX_TAGS);
		*text = json_dumps(v, JSON_COMPACT);
		if (!*text || strlen(*text) > MD_MAX_TAGS_JSON) {
			free(*text);
			*text = NULL;
			return invalid(why, f->json, "'%s' is larger than %d bytes", f->json,
				       MD_MAX_TAGS_JSON);
		}
		return 0;
	}
	return invalid(why, f->json, "unknown field type");
}

int md_validate(const struct md_kind *k, json_t *body, enum md_mode mode, const char *path_key,
		struct md_values *out, struct md_invalid *why)
{
	const char *name;
	json_t *v;
	size_t i;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(body))
		return invalid(why, "", "the body must be a JSON object");
	json_object_foreach(body, name, v) {
		if (!strcmp(name, "createdAt") || !strcmp(name, "updatedAt"))
			continue;
		if (!field_named(k, name))
			return invalid(why, name, "unknown field '%s'", name);
	}
	for (i = 0; i < k->nfields; i++) {
		const struct md_field *f = &k->fields[i];

		v = json_object_get(body, f->json);
		if (f->type == MD_F_KEY) {
			if (mode == MD_CREATE && !v)
				return invalid(why, f->json, "'%s' is required", f->json);
			if (v && mode != MD_CREATE &&
			    (!json_is_string(v) || strcmp(json_string_value(v), path_key) != 0)) {
				md_values_release(out);
				return invalid(why, f->json, "'%s' must match the path ('%s'); renaming "
					       "is not supported", f->json, path_key);
			}
			if (!v) {
				if (!md_key_valid(k, path_key))
					return invalid(why, f->json, "'%s' in the path is not a valid %s name",
						       path_key, k->what);
				out->text[i] = lp_xstrdup(path_key);
				out->present[i] = true;
				continue;
			}
		}
		if (!v) {
			/* Absent: PATCH leaves it alone, the others store the default. */
			if (mode != MD_PATCH) {
				out->present[i] = true;
				if (f->type == MD_F_TAGS)
					out->text[i] = lp_xstrdup("{}");
			}
			continue;
		}
		if (check_field(k, f, v, &out->text[i], why) < 0) {
			md_values_release(out);
			return -EINVAL;
		}
		out->present[i] = true;
	}
	return 0;
}

json_t *md_record_json(const struct md_kind *k, const char *const *cols)
{
	json_t *o = json_object(), *tags;
	char ts[32];
	size_t i;

	for (i = 0; i < k->nfields; i++) {
		const char *c = cols[i];

		if (k->fields[i].type == MD_F_TAGS) {
			tags = c ? lp_json_loads(c, 0, NULL) : NULL;
			json_object_set_new(o, k->fields[i].json, tags ? tags : json_object());
		} else {
			json_object_set_new(o, k->fields[i].json, c ? json_string(c) : json_null());
		}
	}
	for (i = 0; i < 2; i++) {
		const char *c = cols[k->nfields + i];

		if (c) {
			lp_rfc3339(strtoll(c, NULL, 10), ts);
			json_object_set_new(o, i == 0 ? "createdAt" : "updatedAt", json_string(ts));
		}
	}
	return o;
}

void md_select_list(const struct md_kind *k, struct lp_buf *sql)
{
	size_t i;

	for (i = 0; i < k->nfields; i++)
		lp_buf_addf(sql, "%s%s%s", i ? ", " : "", k->fields[i].column,
			    k->fields[i].type == MD_F_TAGS ? "::text" : "");
	lp_buf_adds(sql, ", (extract(epoch from created_at) * 1000)::bigint"
			 ", (extract(epoch from updated_at) * 1000)::bigint");
}

char *md_cache_key(char *out, size_t outlen, const char *prefix, const char *value)
{
	int n = snprintf(out, outlen, "%s:%s", prefix, value);

	return n < 0 || (size_t)n >= outlen ? NULL : out;
}
