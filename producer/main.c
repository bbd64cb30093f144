/* main.c - logpipe-producer: arguments, configuration and signals.
 *
 * The producer is the durable front door of the pipeline.  It validates
 * each event, gives it an id and answers 202 only once Kafka (acks=all,
 * idempotent producer) has acknowledged it or, while Kafka is unreachable,
 * once it is fsync'd to the disk spool, so a 202 is a promise that the
 * event will be stored.  See producer.c for the request handling and
 * spool.c for the spool.  SIGTERM or SIGINT: producer_stop() answers the
 * requests in flight and exits 0 within 10 s. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "logpipe/config.h"
#include "logpipe/daemon.h"
#include "logpipe/log.h"
#include "producer.h"

#include "logpipe/banned.h"

static void *start(const void *settings, char *err, size_t errlen)
{
	return producer_start(settings, err, errlen);
}

static void started(void *svc, const void *settings)
{
	const struct producer_settings *s = settings;

	lp_info("listening on %s, kafka %s, topic %s", s->http_listen, s->kafka_brokers,
		s->topic_raw);
}

static void stop(void *svc)
{
	producer_stop(svc);
}

int main(int argc, char **argv)
{
	static const struct lp_service svc = {
		.prog = "logpipe-producer",
		.name = "producer",
		.summary = "accepts log events over HTTP and makes them durable in Kafka",
		.options = producer_options,
		.log_level_offset = offsetof(struct producer_settings, log_level),
		.start = start,
		.started = started,
		.stop = stop,
	};
	struct producer_settings s;

	return lp_service_main(&svc, &s, argc, argv);
}
