/* daemon.h - process plumbing every service main() shares: signals and
 * the wait for a stop request.
 *
 * The signal handler only sets a flag (as kcat does); main() then runs the
 * service's orderly stop outside signal context. */
#ifndef LOGPIPE_DAEMON_H
#define LOGPIPE_DAEMON_H

#include <signal.h>

/* Set to 1 by SIGTERM or SIGINT.  Read it, never write it. */
extern volatile sig_atomic_t lp_stop_requested;

/* Installs SIGTERM/SIGINT handlers and ignores SIGPIPE. */
void lp_daemon_signals(void);
/* Blocks until SIGTERM or SIGINT arrives. */
void lp_daemon_wait(void);

#endif
