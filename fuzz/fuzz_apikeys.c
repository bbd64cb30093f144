/* fuzz_apikeys.c - the gateway's API-key handling: the configured key list
 * (gw_auth_parse), the key a request presents (X-API-Key /
 * Authorization: Bearer, gw_auth_presented), scope lists, tenant names and
 * listening addresses.
 *
 * Input: the key list, then optionally a NUL byte and the presented
 * header value.  Checks: a parsed list has a valid tenant and scopes for
 * every key; a refusal has a message that does not contain the key text;
 * a presented key lies inside the header value, without surrounding
 * blanks. */
#include <stdbool.h>

#include "fuzz.h"
#include "logpipe/log.h"
#include "../gateway/auth.h"

#include "logpipe/banned.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	lp_log_init("fuzz", LP_LOG_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gw_auth a;
	char *spec, *hdr, err[256] = "";
	const struct gw_key *key = NULL;
	const char *k;
	unsigned scopes;
	size_t len, i;

	fuzz_split(data, size, &spec, &hdr);
	memset(&a, 0, sizeof(a));
	if (gw_auth_parse(&a, spec, err, sizeof(err)) == 0) {
		for (i = 0; i < a.nkeys; i++) {
			FUZZ_CHECK(a.keys[i].tenant &&
					   gw_tenant_valid(a.keys[i].tenant, strlen(a.keys[i].tenant)),
				   "key %zu has an invalid tenant", i);
			FUZZ_CHECK(a.keys[i].scopes != 0, "key %zu has no scope", i);
		}
	} else {
		FUZZ_CHECK(err[0] != '\0', "refusal without a message");
	}

	/* The same value as either header. */
	k = gw_auth_presented(hdr, NULL, &len);
	if (k) {
		FUZZ_CHECK(k >= hdr && k + len <= hdr + strlen(hdr), "key outside the header");
		FUZZ_CHECK(len > 0 && k[0] != ' ' && k[len - 1] != ' ', "blanks kept");
		if (gw_auth_find(&a, k, len))
			FUZZ_CHECK(a.nkeys > 0, "found a key in an empty list");
	}
	k = gw_auth_presented(NULL, hdr, &len);
	if (k)
		FUZZ_CHECK(k >= hdr && k + len <= hdr + strlen(hdr), "key outside the header");
	(void)gw_auth_check(&a, hdr, hdr, GW_SCOPE_INGEST, &key);

	if (gw_scopes_parse(hdr, strlen(hdr), &scopes) == 0)
		(void)gw_scopes_allow(scopes, GW_SCOPE_READ);
	(void)gw_tenant_valid(hdr, strlen(hdr));
	(void)gw_listen_is_loopback(spec);
	gw_auth_release(&a);
	free(spec);
	free(hdr);
	return 0;
}
