/* main.c - logpipe-generator: arguments, configuration and signals.
 *
 * The generator is the pipeline's synthetic load: it writes realistic log
 * events of the producer's schema straight to Kafka at a set rate and
 * size, started, stopped and watched over REST, and shares one global
 * rate with its other instances through Redis.  See generator.c for the
 * API, run.c for the pacing and content.c for what the events say. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "generator.h"
#include "logpipe/config.h"
#include "logpipe/daemon.h"
#include "logpipe/log.h"

#include "logpipe/banned.h"

static void *start(const void *settings, char *err, size_t errlen)
{
	return generator_start(settings, err, errlen);
}

static void started(void *svc, const void *settings)
{
	const struct generator_settings *s = settings;

	lp_info("listening on %s, kafka %s, topic %s", s->http_listen, s->kafka_brokers,
		s->topic_raw);
}

static void stop(void *svc)
{
	generator_stop(svc);
}

int main(int argc, char **argv)
{
	static const struct lp_service svc = {
		.prog = "logpipe-generator",
		.name = "generator",
		.summary = "generates synthetic log events into Kafka at a set rate, controlled over REST",
		.options = generator_options,
		.log_level_offset = offsetof(struct generator_settings, log_level),
		.start = start,
		.started = started,
		.stop = stop,
	};
	struct generator_settings s;

	return lp_service_main(&svc, &s, argc, argv);
}
