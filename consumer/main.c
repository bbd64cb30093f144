/* main.c - logpipe-consumer: arguments, configuration and signals.
 *
 * The consumer is the last hop of the pipeline.  It reads the enriched
 * topics, stores events in PostgreSQL in batches (one transaction each,
 * idempotent on the event id) and commits Kafka offsets only after the
 * database committed, so every event that reached Kafka is stored exactly
 * once.  It also serves the query API over the stored events.  See
 * consumer.c for the loop, store.c for the write path, query.c for the
 * API. */
#include <stdio.h>
#include <stdlib.h>

#include "logpipe/config.h"
#include "logpipe/daemon.h"
#include "logpipe/log.h"
#include "consumer.h"

#include "logpipe/banned.h"

int main(int argc, char **argv)
{
	struct consumer_settings s;
	struct consumer *c;
	enum lp_log_level lvl = LP_LOG_INFO;
	char err[256];
	int rc;

	rc = lp_cli_main(argc, argv, "logpipe-consumer",
			 "stores enriched log events in PostgreSQL and serves the query API",
			 consumer_options, &s);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	lp_log_level_parse(s.log_level, &lvl);
	lp_log_init("consumer", lvl);
	lp_daemon_signals();

	c = consumer_start(&s, err, sizeof(err));
	if (!c) {
		lp_error("cannot start: %s", err);
		lp_config_release(consumer_options, &s);
		return 1;
	}
	lp_info("listening on %s, kafka %s, topics %s %s, group %s", s.http_listen,
		s.kafka_brokers, s.topic_complete, s.topic_partial, s.kafka_group);
	lp_daemon_wait();
	lp_info("stopping");
	consumer_stop(c);
	lp_config_release(consumer_options, &s);
	lp_info("stopped");
	return 0;
}
