/* auth.h - API keys: parsing the configured list, hashing, lookup and scopes.
 *
 * Keys are configured as one string, entries separated by ';' (or new
 * lines), each "KEY:TENANT:SCOPE[,SCOPE...]", for example
 *   "k3y-1:acme:ingest,read;k3y-2:ops:admin".
 * Only the SHA-256 of each key is kept; a presented key is hashed and
 * compared with every stored hash in constant time, so neither the lookup
 * time nor an early exit reveals how much of a guess was right.  admin
 * implies ingest and read.
 *
 * A presented key comes from X-API-Key or from "Authorization: Bearer K"
 * (X-API-Key wins when both are sent).  A struct gw_auth is read-only
 * after gw_auth_parse and may be shared by any number of threads. */
#ifndef LOGPIPE_GATEWAY_AUTH_H
#define LOGPIPE_GATEWAY_AUTH_H

#include <stdbool.h>
#include <stddef.h>

/* Length of a key's digest: SHA-256, computed by OpenSSL's libcrypto. */
#define GW_SHA256_LEN 32

enum gw_scope {
	GW_SCOPE_NONE = 0,   /* open routes (health, metrics) */
	GW_SCOPE_INGEST = 1, /* POST /api/logs, /api/logs/batch */
	GW_SCOPE_READ = 2,   /* GET of logs, metadata, generator status */
	GW_SCOPE_ADMIN = 4,  /* metadata writes, generator control; implies the others */
};

#define GW_TENANT_MAX 128

struct gw_key {
	unsigned char hash[GW_SHA256_LEN]; /* SHA-256 of the key text */
	char id[17];     /* first 8 bytes of the hash in hex: names the key in logs and limits */
	char *tenant;    /* stamped on requests as X-Tenant-ID (owned) */
	unsigned scopes; /* GW_SCOPE_* bits */
};

struct gw_auth_ctxs;

struct gw_auth {
	struct gw_key *keys; /* configured keys (owned) */
	size_t nkeys;        /* 0: authentication is off */
	struct gw_auth_ctxs *ctxs; /* digest contexts the lookups reuse (owned; auth.c) */
};

enum gw_auth_result {
	GW_AUTH_OK,        /* known key with the scope (or auth off) */
	GW_AUTH_MISSING,   /* 401: no key presented */
	GW_AUTH_UNKNOWN,   /* 401: key not configured */
	GW_AUTH_FORBIDDEN, /* 403: key lacks the scope */
};

/* Parses spec (NULL or "" gives an empty list) into a, which must be zeroed
 * or released.  Returns 0, or -EINVAL (-EIO when libcrypto fails) with a
 * message that names the entry by position, never the key. */
int gw_auth_parse(struct gw_auth *a, const char *spec, char *err, size_t errlen);
void gw_auth_release(struct gw_auth *a);

/* The key presented by a request, from the values of its X-API-Key and
 * Authorization headers (either may be NULL); NULL when there is none.
 * *len is the key's length (surrounding blanks excluded). */
const char *gw_auth_presented(const char *x_api_key, const char *authorization, size_t *len);
/* The configured key equal to key[0..len), or NULL.  Always compares with
 * every configured key. */
const struct gw_key *gw_auth_find(const struct gw_auth *a, const char *key, size_t len);
/* The whole decision for one request.  *key is set on GW_AUTH_OK and
 * GW_AUTH_FORBIDDEN (NULL when auth is off). */
enum gw_auth_result gw_auth_check(const struct gw_auth *a, const char *x_api_key,
				  const char *authorization, unsigned need,
				  const struct gw_key **key);

/* True when scopes `have` grant `need` (admin grants everything). */
bool gw_scopes_allow(unsigned have, unsigned need);
/* Parses "ingest,read" (blanks allowed around names).  0 or -EINVAL. */
int gw_scopes_parse(const char *s, size_t len, unsigned *out);
/* "ingest", "read", "admin" or "none" for one scope bit. */
const char *gw_scope_name(unsigned scope);
/* out = SHA-256(data[0..len)) through libcrypto's EVP interface.  0, or
 * -EIO when libcrypto fails (out is then zeroed). */
int gw_sha256(const void *data, size_t len, unsigned char out[GW_SHA256_LEN]);
/* Writes the lowercase hex of the first n bytes of d into out (2n+1 bytes). */
void gw_hex(const unsigned char *d, size_t n, char *out);
/* True for a tenant name safe to send in a header: [A-Za-z0-9._@:-]{1,128}. */
bool gw_tenant_valid(const char *s, size_t len);
/* True when every address of a CivetWeb listening_ports value is loopback
 * (127.x, [::1], localhost): where the gateway may run with auth off. */
bool gw_listen_is_loopback(const char *listen);

#endif
