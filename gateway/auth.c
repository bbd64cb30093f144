/* auth.c - API key parsing, hashing and constant-time lookup.
 *
 * See auth.h for the configuration syntax.  The key text is hashed as soon
 * as it is parsed and the copy in the settings is the only plaintext left
 * in the process; nothing here logs or returns it.  Hashing and the
 * constant-time comparison are OpenSSL's (EVP_Digest, CRYPTO_memcmp):
 * reviewed, tested code instead of a hand-written copy. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "logpipe/util.h"
#include "auth.h"

#include "logpipe/banned.h"

static const struct {
	const char *name;
	unsigned bit;
} scope_names[] = {
	{ "ingest", GW_SCOPE_INGEST },
	{ "read", GW_SCOPE_READ },
	{ "admin", GW_SCOPE_ADMIN },
};

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Narrows [*s, *s + *len) to exclude surrounding blanks. */
static void trim(const char **s, size_t *len)
{
	while (*len > 0 && is_blank(**s)) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && is_blank((*s)[*len - 1]))
		(*len)--;
}

/* SHA-256 fetched from the provider once: EVP_sha256() makes EVP_Digest
 * fetch it again on every call under OpenSSL 3, which cost as much as the
 * hash of a key itself (perf, per request of the gateway). */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

int gw_sha256(const void *data, size_t len, unsigned char out[GW_SHA256_LEN])
{
	unsigned int n = 0;

	pthread_once(&sha256_once, sha256_fetch);
	if (!EVP_Digest(data, len, out, &n, sha256_md ? sha256_md : EVP_sha256(), NULL) ||
	    n != GW_SHA256_LEN) {
		memset(out, 0, GW_SHA256_LEN);
		return -EIO;
	}
	return 0;
}

/* Digest contexts for the hash of a presented key, taken and given back
 * with atomic exchanges by any thread: EVP_Digest makes (and cleanses and
 * frees) a context per call, which cost about as much as the hash itself
 * on the gateway's request path.  A context is reset by EVP_DigestInit_ex2
 * before each use, and SHA-256's final step wipes its input block, so no
 * byte of a presented key stays in one. */
#define AUTH_CTXS 8

struct gw_auth_ctxs {
	EVP_MD_CTX *_Atomic slot[AUTH_CTXS];
};

static atomic_uint ctx_hint; /* spreads the threads over the slots */
static __thread unsigned my_slot; /* 1 + this thread's slot; 0: not chosen yet */

static int hash_presented(const struct gw_auth *a, const char *key, size_t len,
			  unsigned char out[GW_SHA256_LEN])
{
	EVP_MD_CTX *ctx, *none = NULL;
	unsigned int n = 0;
	unsigned i;
	int ok;

	pthread_once(&sha256_once, sha256_fetch);
	if (!a->ctxs || !sha256_md)
		return gw_sha256(key, len, out);
	if (!my_slot)
		my_slot = 1 + atomic_fetch_add(&ctx_hint, 1) % AUTH_CTXS;
	i = my_slot - 1;
	ctx = atomic_exchange(&a->ctxs->slot[i], NULL);
	if (!ctx && !(ctx = EVP_MD_CTX_new()))
		return gw_sha256(key, len, out);
	ok = EVP_DigestInit_ex2(ctx, sha256_md, NULL) && EVP_DigestUpdate(ctx, key, len) &&
	     EVP_DigestFinal_ex(ctx, out, &n) && n == GW_SHA256_LEN;
	if (!atomic_compare_exchange_strong(&a->ctxs->slot[i], &none, ctx))
		EVP_MD_CTX_free(ctx);
	if (!ok) {
		memset(out, 0, GW_SHA256_LEN);
		return -EIO;
	}
	return 0;
}

void gw_hex(const unsigned char *d, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[d[i] >> 4];
		out[2 * i + 1] = digits[d[i] & 15];
	}
	out[2 * n] = '\0';
}

bool gw_scopes_allow(unsigned have, unsigned need)
{
	if (have & GW_SCOPE_ADMIN)
		return true;
	return (have & need) == need;
}

const char *gw_scope_name(unsigned scope)
{
	size_t i;

	for (i = 0; i < LP_ARRAY_SIZE(scope_names); i++)
		if (scope_names[i].bit == scope)
			return scope_names[i].name;
	return "none";
}

int gw_scopes_parse(const char *s, size_t len, unsigned *out)
{
	const char *end = s + len;
	unsigned bits = 0;

	while (s < end) {
		const char *comma = memchr(s, ',', (size_t)(end - s));
		const char *name = s;
		size_t n = (size_t)((comma ? comma : end) - s), i;

		trim(&name, &n);
		s = comma ? comma + 1 : end;
		if (n == 0)
			continue;
		for (i = 0; i < LP_ARRAY_SIZE(scope_names); i++)
			if (n == strlen(scope_names[i].name) &&
			    strncasecmp(name, scope_names[i].name, n) == 0)
				break;
		if (i == LP_ARRAY_SIZE(scope_names))
			return -EINVAL;
		bits |= scope_names[i].bit;
	}
	if (bits == 0)
		return -EINVAL;
	*out = bits;
	return 0;
}

bool gw_tenant_valid(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > GW_TENANT_MAX)
		return false;
	for (i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-' || c == '@' || c == ':'))
			return false;
	}
	return true;
}

/* Key text: printable ASCII without blanks and without the separators. */
static bool key_text_valid(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > 512)
		return false;
	for (i = 0; i < len; i++)
		if (s[i] <= ' ' || s[i] > '~' || s[i] == ':' || s[i] == ';' || s[i] == ',')
			return false;
	return true;
}

/* Parses one "KEY:TENANT:SCOPES" entry into k.  n is its position (1-based). */
static int parse_entry(const char *s, size_t len, size_t n, struct gw_key *k, char *err,
		       size_t errlen)
{
	const char *c1 = memchr(s, ':', len), *c2, *key = s, *tenant, *scopes;
	size_t klen, tlen, slen;

	c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - s)) : NULL;
	if (!c1 || !c2) {
		snprintf(err, errlen, "auth.keys entry %zu: expected KEY:TENANT:SCOPES", n);
		return -EINVAL;
	}
	klen = (size_t)(c1 - s);
	tenant = c1 + 1;
	tlen = (size_t)(c2 - tenant);
	scopes = c2 + 1;
	slen = len - (size_t)(scopes - s);
	trim(&key, &klen);
	trim(&tenant, &tlen);
	if (!key_text_valid(key, klen)) {
		snprintf(err, errlen,
			 "auth.keys entry %zu: the key must be 1-512 printable characters "
			 "without blanks, ':', ';' or ','", n);
		return -EINVAL;
	}
	if (!gw_tenant_valid(tenant, tlen)) {
		snprintf(err, errlen,
			 "auth.keys entry %zu: the tenant must be 1-%d characters of "
			 "[A-Za-z0-9._@:-]", n, GW_TENANT_MAX);
		return -EINVAL;
	}
	if (gw_scopes_parse(scopes, slen, &k->scopes) < 0) {
		snprintf(err, errlen,
			 "auth.keys entry %zu: scopes must be a comma-separated list of "
			 "ingest, read, admin", n);
		return -EINVAL;
	}
	if (gw_sha256(key, klen, k->hash) < 0) {
		snprintf(err, errlen, "auth.keys entry %zu: libcrypto could not hash the key", n);
		return -EIO;
	}
	gw_hex(k->hash, 8, k->id);
	k->tenant = lp_xmalloc(tlen + 1);
	memcpy(k->tenant, tenant, tlen);
	k->tenant[tlen] = '\0';
	return 0;
}

int gw_auth_parse(struct gw_auth *a, const char *spec, char *err, size_t errlen)
{
	const char *p = spec ? spec : "";
	size_t n = 0, i;
	int ret = 0;

	memset(a, 0, sizeof(*a));
	while (*p) {
		size_t len = strcspn(p, ";\n");
		const char *e = p;
		size_t elen = len;

		trim(&e, &elen);
		if (elen > 0) {
			n++;
			a->keys = lp_xrealloc(a->keys, (a->nkeys + 1) * sizeof(*a->keys));
			memset(&a->keys[a->nkeys], 0, sizeof(*a->keys));
			ret = parse_entry(e, elen, n, &a->keys[a->nkeys], err, errlen);
			if (ret < 0)
				goto out;
			for (i = 0; i < a->nkeys; i++) {
				if (CRYPTO_memcmp(a->keys[i].hash, a->keys[a->nkeys].hash,
						  GW_SHA256_LEN) == 0) {
					snprintf(err, errlen,
						 "auth.keys entry %zu repeats the key of entry %zu", n,
						 i + 1);
					free(a->keys[a->nkeys].tenant);
					ret = -EINVAL;
					goto out;
				}
			}
			a->nkeys++;
		}
		p += len;
		if (*p)
			p++;
	}
	if (a->nkeys > 0)
		a->ctxs = lp_xcalloc(1, sizeof(*a->ctxs));
out:
	if (ret < 0)
		gw_auth_release(a);
	return ret;
}

void gw_auth_release(struct gw_auth *a)
{
	size_t i;

	if (!a)
		return;
	for (i = 0; i < a->nkeys; i++)
		free(a->keys[i].tenant);
	free(a->keys);
	if (a->ctxs) {
		for (i = 0; i < AUTH_CTXS; i++)
			EVP_MD_CTX_free(atomic_load(&a->ctxs->slot[i]));
		free(a->ctxs);
	}
	memset(a, 0, sizeof(*a));
}

const char *gw_auth_presented(const char *x_api_key, const char *authorization, size_t *len)
{
	const char *s;
	size_t n;

	if (x_api_key) {
		s = x_api_key;
		n = strlen(s);
		trim(&s, &n);
		if (n > 0) {
			*len = n;
			return s;
		}
	}
	if (authorization) {
		s = authorization;
		n = strlen(s);
		trim(&s, &n);
		if (n > 7 && strncasecmp(s, "Bearer", 6) == 0 && is_blank(s[6])) {
			s += 7;
			n -= 7;
			trim(&s, &n);
			if (n > 0) {
				*len = n;
				return s;
			}
		}
	}
	*len = 0;
	return NULL;
}

const struct gw_key *gw_auth_find(const struct gw_auth *a, const char *key, size_t len)
{
	unsigned char h[GW_SHA256_LEN];
	uintptr_t found = 0;
	size_t i;

	/* A key that cannot be hashed matches nothing: the request is refused. */
	if (hash_presented(a, key, len, h) < 0)
		return NULL;
	/* No early exit and no branch on the comparison: the time taken does
	 * not depend on which key (if any) matched. */
	for (i = 0; i < a->nkeys; i++) {
		int equal = CRYPTO_memcmp(h, a->keys[i].hash, GW_SHA256_LEN) == 0;
		uintptr_t mask = (uintptr_t)0 - (uintptr_t)equal;

		found |= mask & (uintptr_t)&a->keys[i];
	}
	return (const struct gw_key *)found;
}

enum gw_auth_result gw_auth_check(const struct gw_auth *a, const char *x_api_key,
				  const char *authorization, unsigned need,
				  const struct gw_key **key)
{
	const struct gw_key *k;
	const char *presented;
	size_t len;

	*key = NULL;
	if (a->nkeys == 0 || need == GW_SCOPE_NONE)
		return GW_AUTH_OK;
	presented = gw_auth_presented(x_api_key, authorization, &len);
	if (!presented)
		return GW_AUTH_MISSING;
	k = gw_auth_find(a, presented, len);
	if (!k)
		return GW_AUTH_UNKNOWN;
	*key = k;
	return gw_scopes_allow(k->scopes, need) ? GW_AUTH_OK : GW_AUTH_FORBIDDEN;
}

bool gw_listen_is_loopback(const char *listen)
{
	const char *p = listen;

	while (*p) {
		size_t n = strcspn(p, ",");

		while (n > 0 && *p == ' ') {
			p++;
			n--;
		}
		if (!(lp_str_has_prefix(p, "127.") || lp_str_has_prefix(p, "[::1]") ||
		      lp_str_has_prefix(p, "localhost:")))
			return false;
		p += n;
		if (*p == ',')
			p++;
	}
	return true;
}
