/* record.h - host and service metadata records: the two kinds described
 * once as tables, validation of request bodies, and the JSON form.
 *
 * Each kind is a table of fields (JSON name, column, type); the store, the
 * cache and the HTTP handlers are written once against it.  The JSON form
 * of a record is the one the API serves, the Redis cache holds and
 * metadata-changes carries:
 *   host:    {"hostname", "ipAddress", "datacenter", "environment",
 *             "costCenter", "tags", "createdAt", "updatedAt"}
 *   service: {"name", "team", "owner", "tier", "tags", "createdAt", "updatedAt"}
 * Nothing here does I/O (unit-tested in metadata-svc/tests/test_record.c). */
#ifndef METADATA_RECORD_H
#define METADATA_RECORD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

enum md_ftype {
	MD_F_KEY,   /* the primary key: required on create, never changed */
	MD_F_TEXT,  /* optional string (null clears it) */
	MD_F_IP,    /* optional IPv4/IPv6 literal, stored in canonical form */
	MD_F_TAGS,  /* JSON object of tags (null or absent: {}) */
};

struct md_field {
	const char *json;    /* name in the JSON form ("costCenter") */
	const char *column;  /* column in PostgreSQL ("cost_center") */
	enum md_ftype type;
};

#define MD_MAX_FIELDS 8

struct md_kind {
	const char *name;       /* "host" / "service": key prefix on Redis and Kafka */
	const char *what;       /* "host" / "service" for messages */
	const char *table;      /* "host_metadata" / "service_metadata" */
	const char *path;       /* "/api/metadata/hosts" */
	const struct md_field *fields; /* fields[0] is the key */
	size_t nfields;
	int ip_field;           /* index of the MD_F_IP field, or -1 */
};

extern const struct md_kind md_host_kind;
extern const struct md_kind md_service_kind;

/* Limits on values. */
#define MD_MAX_TEXT 256      /* bytes of a text field */
#define MD_MAX_TAGS 64       /* keys in tags */
#define MD_MAX_TAGS_JSON 8192 /* bytes of tags serialised */

enum md_mode {
	MD_CREATE,  /* POST: key required, absent fields are null */
	MD_REPLACE, /* PUT: key from the path, absent fields are null */
	MD_PATCH,   /* PATCH: only the fields present change */
};

/* A validated body: per field, whether it was given and its value as text
 * (NULL for SQL NULL); tags as serialised JSON. */
struct md_values {
	bool present[MD_MAX_FIELDS];
	char *text[MD_MAX_FIELDS];   /* owned */
};

/* Why a body was refused: the field (JSON name) and a sentence. */
struct md_invalid {
	char field[32];
	char message[200];
};

/* Validates body for mode.  path_key is the key from the URL (REPLACE,
 * PATCH; NULL for CREATE); a key in the body must then equal it.  Unknown
 * fields are refused, except createdAt/updatedAt, which are ignored (so a
 * GET body can be PUT back).  Returns 0 and fills out (release with
 * md_values_release), or -EINVAL and fills why. */
int md_validate(const struct md_kind *k, json_t *body, enum md_mode mode, const char *path_key,
		struct md_values *out, struct md_invalid *why);
void md_values_release(struct md_values *v);

/* True when s is a well-formed key of kind k (so it may exist). */
bool md_key_valid(const struct md_kind *k, const char *s);
/* Writes the canonical text of an IPv4/IPv6 literal into out (at least 46
 * bytes).  Returns false when s is not an address. */
bool md_ip_canonical(const char *s, char *out, size_t outlen);

/* Builds the JSON form from column texts in the table's field order
 * followed by created_at and updated_at as epoch milliseconds (the order
 * md_select_list() produces).  NULL texts become null. */
json_t *md_record_json(const struct md_kind *k, const char *const *cols);

struct lp_buf;
/* Appends "hostname, ip_address, ..., tags::text, <created ms>, <updated
 * ms>": the select list every query of the store uses, in the order
 * md_record_json() reads. */
void md_select_list(const struct md_kind *k, struct lp_buf *sql);

/* The cache and topic key of a record: "host:NAME", "hostip:IP",
 * "service:NAME".  Returns out, or NULL when it does not fit. */
char *md_cache_key(char *out, size_t outlen, const char *prefix, const char *value);

#endif
