/* main.c - logpipe-generator: arguments, configuration and signals.
 *
 * The generator is the pipeline's synthetic load: it writes realistic log
 * events of the producer's schema straight to Kafka at a set rate and
 * size, started, stopped and watched over REST, and shares one global
 * rate with its other instances through Redis.  See generator.c for the
 * API, run.c for the pacing and content.c for what the events say. */
#include <stdio.h>
#include <stdlib.h>

#include "generator.h"
#include "logpipe/config.h"
#include "logpipe/daemon.h"
#include "logpipe/log.h"

#include "logpipe/banned.h"

int main(int argc, char **argv)
{
	struct generator_settings s;
	struct generator *g;
	enum lp_log_level lvl = LP_LOG_INFO;
	char err[256];
	int rc;

	rc = lp_cli_main(argc, argv, "logpipe-generator",
			 "generates synthetic log events into Kafka at a set rate, controlled over REST",
			 generator_options, &s);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	lp_log_level_parse(s.log_level, &lvl);
	lp_log_init("generator", lvl);
	lp_daemon_signals();

	g = generator_start(&s, err, sizeof(err));
	if (!g) {
		lp_error("cannot start: %s", err);
		lp_config_release(generator_options, &s);
		return 1;
	}
	lp_info("listening on %s, kafka %s, topic %s", s.http_listen, s.kafka_brokers,
		s.topic_raw);
	lp_daemon_wait();
	lp_info("stopping");
	generator_stop(g);
	lp_config_release(generator_options, &s);
	lp_info("stopped");
	return 0;
}
