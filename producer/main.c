/* main.c - logpipe-producer: arguments, configuration and signals.
 *
 * The producer is the durable front door of the pipeline.  It validates
 * each event, gives it an id and answers 202 only once Kafka (acks=all,
 * idempotent producer) has acknowledged it or, while Kafka is unreachable,
 * once it is fsync'd to the disk spool, so a 202 is a promise that the
 * event will be stored.  See producer.c for the request handling and
 * spool.c for the spool.  SIGTERM or SIGINT: producer_stop() answers the
 * requests in flight and exits 0 within 10 s. */
#include <stdio.h>
#include <stdlib.h>

#include "logpipe/config.h"
#include "logpipe/daemon.h"
#include "logpipe/log.h"
#include "producer.h"

#include "logpipe/banned.h"

int main(int argc, char **argv)
{
	struct producer_settings s;
	struct producer *p;
	enum lp_log_level lvl = LP_LOG_INFO;
	char err[256];
	int rc;

	rc = lp_cli_main(argc, argv, "logpipe-producer",
			 "accepts log events over HTTP and makes them durable in Kafka",
			 producer_options, &s);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	lp_log_level_parse(s.log_level, &lvl);
	lp_log_init("producer", lvl);
	lp_daemon_signals();

	p = producer_start(&s, err, sizeof(err));
	if (!p) {
		lp_error("cannot start: %s", err);
		lp_config_release(producer_options, &s);
		return 1;
	}
	lp_info("listening on %s, kafka %s, topic %s", s.http_listen, s.kafka_brokers,
		s.topic_raw);
	lp_daemon_wait();
	lp_info("stopping");
	producer_stop(p);
	lp_config_release(producer_options, &s);
	lp_info("stopped");
	return 0;
}
