/* testutil.h - helpers shared by the unit tests: a free loopback port for a
 * server under test, and a substring assertion that prints both strings.
 * Include after <cmocka.h>. */
#ifndef LOGPIPE_TESTUTIL_H
#define LOGPIPE_TESTUTIL_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A TCP port nobody listens on right now on 127.0.0.1: bind to port 0 and
 * ask which port the kernel picked (CivetWeb needs an explicit one). */
static inline int test_free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* Fails, printing both, unless needle occurs in hay. */
#define assert_contains(hay, needle)                                                      \
	do {                                                                               \
		const char *h_ = (hay), *n_ = (needle);                                    \
		if (!h_ || !strstr(h_, n_)) {                                              \
			print_error("\"%s\" not found in \"%s\"\n", n_, h_ ? h_ : "(null)"); \
			fail();                                                            \
		}                                                                          \
	} while (0)

#endif
