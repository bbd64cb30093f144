/* daemon.h - process plumbing every service main() shares: signals and
 * the wait for a stop request.
 *
 * The signal handler only sets a flag (as kcat does); main() then runs the
 * service's orderly stop outside signal context. */
#ifndef LOGPIPE_DAEMON_H
#define LOGPIPE_DAEMON_H

#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>

struct lp_cfg_opt;

/* Set by SIGTERM or SIGINT.  Read it, never write it.  An atomic rather
 * than a volatile sig_atomic_t: the handler may run on any of the
 * process's threads, and a lock-free atomic is safe in a handler too. */
extern atomic_bool lp_stop_requested;

/* Installs SIGTERM/SIGINT handlers and ignores SIGPIPE. */
void lp_daemon_signals(void);
/* Blocks until SIGTERM or SIGINT arrives. */
void lp_daemon_wait(void);

/* One service's life as main() runs it: parse the command line and the
 * configuration into a settings struct, start, wait for SIGTERM/SIGINT,
 * stop, release.  The settings struct is opaque here; start, started and
 * stop receive the pointers main() handed over. */
struct lp_service {
	const char *prog;                 /* "logpipe-producer" */
	const char *name;                 /* the log prefix: "producer" */
	const char *summary;              /* one line for --help */
	const struct lp_cfg_opt *options; /* the service's configuration table */
	size_t log_level_offset;          /* offsetof(settings, log_level), a char * */
	void *(*start)(const void *settings, char *err, size_t errlen);
	void (*started)(void *svc, const void *settings); /* logs what it serves */
	void (*stop)(void *svc);
};

/* Returns main()'s exit status: 0 after a clean stop (or --help,
 * --version, a good --check-config), 1 when the service cannot start,
 * 2 for a usage or configuration error. */
int lp_service_main(const struct lp_service *svc, void *settings, int argc, char **argv);

#endif
