/* main.c - logpipe-consumer: arguments, configuration and signals.
 *
 * The consumer is the last hop of the pipeline.  It reads the enriched
 * topics, stores events in PostgreSQL in batches (one transaction each,
 * idempotent on the event id) and commits Kafka offsets only after the
 * database committed, so every event that reached Kafka is stored exactly
 * once.  It also serves the query API over the stored events.  See
 * consumer.c for the loop, store.c for the write path, query.c for the
 * API. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "logpipe/config.h"
#include "logpipe/daemon.h"
#include "logpipe/log.h"
#include "consumer.h"

#include "logpipe/banned.h"

static void *start(const void *settings, char *err, size_t errlen)
{
	return consumer_start(settings, err, errlen);
}

static void started(void *svc, const void *settings)
{
	const struct consumer_settings *s = settings;

	lp_info("listening on %s, kafka %s, topics %s %s, group %s", s->http_listen,
		s->kafka_brokers, s->topic_complete, s->topic_partial, s->kafka_group);
}

static void stop(void *svc)
{
	consumer_stop(svc);
}

int main(int argc, char **argv)
{
	static const struct lp_service svc = {
		.prog = "logpipe-consumer",
		.name = "consumer",
		.summary = "stores enriched log events in PostgreSQL and serves the query API",
		.options = consumer_options,
		.log_level_offset = offsetof(struct consumer_settings, log_level),
		.start = start,
		.started = started,
		.stop = stop,
	};
	struct consumer_settings s;

	return lp_service_main(&svc, &s, argc, argv);
}
