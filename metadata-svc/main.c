/* main.c - logpipe-metadata: arguments, configuration and signals.
 *
 * The metadata service owns host and service metadata: CRUD over REST,
 * stored in PostgreSQL, cached in Redis (cache-aside, invalidated on every
 * write), and every change published to the compacted topic
 * metadata-changes before the request is answered, so that the enrichers'
 * in-process tables follow every change.  See metadata.c. */
#include <stdio.h>
#include <stdlib.h>

#include "logpipe/config.h"
#include "logpipe/daemon.h"
#include "logpipe/log.h"
#include "metadata.h"

#include "logpipe/banned.h"

int main(int argc, char **argv)
{
	struct metadata_settings s;
	struct metadata *m;
	enum lp_log_level lvl = LP_LOG_INFO;
	char err[256];
	int rc;

	rc = lp_cli_main(argc, argv, "logpipe-metadata",
			 "CRUD for host and service metadata, cached in Redis, published to Kafka",
			 metadata_options, &s);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	lp_log_level_parse(s.log_level, &lvl);
	lp_log_init("metadata", lvl);
	lp_daemon_signals();

	m = metadata_start(&s, err, sizeof(err));
	if (!m) {
		lp_error("cannot start: %s", err);
		lp_config_release(metadata_options, &s);
		return 1;
	}
	lp_info("listening on %s, kafka %s, topic %s", s.http_listen, s.kafka_brokers,
		s.topic_metadata);
	lp_daemon_wait();
	lp_info("stopping");
	metadata_stop(m);
	lp_config_release(metadata_options, &s);
	lp_info("stopped");
	return 0;
}
