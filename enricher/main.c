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
#include <stdio.h>
#include <stdlib.h>

#include <curl/curl.h>

#include "enricher.h"
#include "logpipe/config.h"
#include "logpipe/daemon.h"
#include "logpipe/log.h"

#include "logpipe/banned.h"

int main(int argc, char **argv)
{
	struct enricher_settings s;
	struct enricher *e;
	enum lp_log_level lvl = LP_LOG_INFO;
	char err[256];
	int rc;

	rc = lp_cli_main(argc, argv, "logpipe-enricher",
			 "adds host and service metadata to log events from a tiered cache",
			 enricher_options, &s);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	lp_log_level_parse(s.log_level, &lvl);
	lp_log_init("enricher", lvl);
	lp_daemon_signals();
	curl_global_init(CURL_GLOBAL_DEFAULT);

	e = enricher_start(&s, err, sizeof(err));
	if (!e) {
		lp_error("cannot start: %s", err);
		lp_config_release(enricher_options, &s);
		curl_global_cleanup();
		return 1;
	}
	lp_info("listening on %s, kafka %s, %s -> %s | %s", s.http_listen, s.kafka_brokers,
		s.topic_raw, s.topic_complete, s.topic_partial);
	lp_daemon_wait();
	lp_info("stopping");
	enricher_stop(e);
	lp_config_release(enricher_options, &s);
	curl_global_cleanup();
	lp_info("stopped");
	return 0;
}
