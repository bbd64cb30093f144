/* daemon.c - signal flag and wait loop shared by every service's main(). */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "logpipe/daemon.h"

#include "logpipe/banned.h"

volatile sig_atomic_t lp_stop_requested;

static void on_stop_signal(int sig)
{
	(void)sig;
	lp_stop_requested = 1;
}

void lp_daemon_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

void lp_daemon_wait(void)
{
	struct timespec ts = { 0, 50 * 1000 * 1000 };

	while (!lp_stop_requested)
		nanosleep(&ts, NULL);
}
