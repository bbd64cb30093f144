/* main.c - logpipe-metadata: arguments, configuration and signals.
 *
 * The metadata service owns host and service metadata: CRUD over REST,
 * stored in PostgreSQL, cached in Redis (cache-aside, invalidated on every
 * write), and every change published to the compacted topic
 * metadata-changes before the request is answered, so that the enrichers'
 * in-process tables follow every change.  See metadata.c. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "logpipe/config.h"
#include "logpipe/daemon.h"
#include "logpipe/log.h"
#include "metadata.h"

#include "logpipe/banned.h"

static void *start(const void *settings, char *err, size_t errlen)
{
	return metadata_start(settings, err, errlen);
}

static void started(void *svc, const void *settings)
{
	const struct metadata_settings *s = settings;

	lp_info("listening on %s, kafka %s, topic %s", s->http_listen, s->kafka_brokers,
		s->topic_metadata);
}

static void stop(void *svc)
{
	metadata_stop(svc);
}

int main(int argc, char **argv)
{
	static const struct lp_service svc = {
		.prog = "logpipe-metadata",
		.name = "metadata",
		.summary = "CRUD for host and service metadata, cached in Redis, published to Kafka",
		.options = metadata_options,
		.log_level_offset = offsetof(struct metadata_settings, log_level),
		.start = start,
		.started = started,
		.stop = stop,
	};
	struct metadata_settings s;

	return lp_service_main(&svc, &s, argc, argv);
}
