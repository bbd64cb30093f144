/* fake_req.h - a fake request for the query parser's getter in the
 * consumer's unit tests: ud is a NULL-terminated list of name, value pairs. */
#ifndef CONSUMER_TESTS_FAKE_REQ_H
#define CONSUMER_TESTS_FAKE_REQ_H

#include <errno.h>
#include <string.h>

static int fake_get(void *ud, const char *name, char *out, size_t outlen)
{
	const char *const *kv = ud;

	for (; kv[0]; kv += 2) {
		if (strcmp(kv[0], name) == 0) {
			size_t n = strlen(kv[1]);

			if (n + 1 > outlen)
				return -ERANGE;
			memcpy(out, kv[1], n + 1);
			return (int)n;
		}
	}
	return -ENOENT;
}

#endif
