/* daemon.c - signal flag and wait loop shared by every service's main(). */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "logpipe/config.h"
#include "logpipe/daemon.h"
#include "logpipe/log.h"

#include "logpipe/banned.h"

/* C11 lets a signal handler touch an atomic only if it is lock-free. */
_Static_assert(ATOMIC_BOOL_LOCK_FREE == 2, "atomic_bool must be lock-free");

atomic_bool lp_stop_requested;

static void on_stop_signal(int sig)
{
	(void)sig;
	atomic_store(&lp_stop_requested, true);
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

	while (!atomic_load(&lp_stop_requested))
		nanosleep(&ts, NULL);
}

int lp_service_main(const struct lp_service *svc, void *settings, int argc, char **argv)
{
	enum lp_log_level lvl = LP_LOG_INFO;
	const char *level;
	char err[256];
	void *h;
	int rc;

	rc = lp_cli_main(argc, argv, svc->prog, svc->summary, svc->options, settings);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	memcpy(&level, (const char *)settings + svc->log_level_offset, sizeof(level));
	if (!level || lp_log_level_parse(level, &lvl) != 0) {
		fprintf(stderr, "%s: log.level '%s' is not one of debug, info, warn, error\n",
			svc->prog, level ? level : "");
		lp_config_release(svc->options, settings);
		return 2;
	}
	lp_log_init(svc->name, lvl);
	lp_daemon_signals();

	h = svc->start(settings, err, sizeof(err));
	if (!h) {
		lp_error("cannot start: %s", err);
		lp_config_release(svc->options, settings);
		return 1;
	}
	svc->started(h, settings);
	lp_daemon_wait();
	lp_info("stopping");
	svc->stop(h);
	lp_config_release(svc->options, settings);
	lp_info("stopped");
	lp_log_flush();
	return 0;
}
