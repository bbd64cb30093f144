/* main.c - logpipe-enricher: arguments, configuration and signals.
 *
 * The enricher reads normalised events from raw-logs, adds host and
 * service metadata from a tiered cache (an in-process table fed by the
 * compacted metadata-changes topic, Redis, then the metadata service) and
 * writes each event to enriched-logs-complete or enriched-logs-partial.
 * Invalid records go to logs-dlq.  Input offsets are committed only after
 * every output of a batch is acknowledged, so nothing is lost across
 * crashes and rebalances (duplicates are possible; events keep their id).
 * See enricher.c for the pipeline and lookup.c for the tiers. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <curl/curl.h>

#include "enricher.h"
#include "logpipe/config.h"
#include "logpipe/daemon.h"
#include "logpipe/log.h"

#include "logpipe/banned.h"

/* libcurl's global state lives exactly as long as the service (the
 * metadata tier's REST client). */
static void *start(const void *settings, char *err, size_t errlen)
{
	struct enricher *e;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	e = enricher_start(settings, err, errlen);
	if (!e)
		curl_global_cleanup();
	return e;
}

static void started(void *svc, const void *settings)
{
	const struct enricher_settings *s = settings;

	lp_info("listening on %s, kafka %s, %s -> %s | %s", s->http_listen, s->kafka_brokers,
		s->topic_raw, s->topic_complete, s->topic_partial);
}

static void stop(void *svc)
{
	enricher_stop(svc);
	curl_global_cleanup();
}

int main(int argc, char **argv)
{
	static const struct lp_service svc = {
		.prog = "logpipe-enricher",
		.name = "enricher",
		.summary = "adds host and service metadata to log events from a tiered cache",
		.options = enricher_options,
		.log_level_offset = offsetof(struct enricher_settings, log_level),
		.start = start,
		.started = started,
		.stop = stop,
	};
	struct enricher_settings s;

	return lp_service_main(&svc, &s, argc, argv);
}
