/* sha256.h - SHA-256 (FIPS 180-4), small and dependency-free.
 *
 * The gateway stores API keys only as SHA-256 digests; this is the whole
 * implementation it needs, so that it does not depend on which TLS library
 * libcurl happens to link.  Not constant-time with respect to the length of
 * the input (lengths are not secret here).  Thread-safe: no global state. */
#ifndef LOGPIPE_GATEWAY_SHA256_H
#define LOGPIPE_GATEWAY_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define GW_SHA256_LEN 32

struct gw_sha256 {
	uint32_t h[8];          /* chaining state */
	uint64_t bytes;         /* message length so far */
	unsigned char blk[64];  /* partial block */
	size_t fill;            /* bytes used in blk */
};

void gw_sha256_init(struct gw_sha256 *c);
void gw_sha256_update(struct gw_sha256 *c, const void *data, size_t len);
void gw_sha256_final(struct gw_sha256 *c, unsigned char out[GW_SHA256_LEN]);
/* One call: out = SHA-256(data). */
void gw_sha256(const void *data, size_t len, unsigned char out[GW_SHA256_LEN]);
/* Writes the lowercase hex of the first n bytes of d into out (2n+1 bytes). */
void gw_hex(const unsigned char *d, size_t n, char *out);

#endif
