/* main.c - logpipe-gateway: arguments, configuration and signals.
 *
 * The gateway is the only public entry of logpipe.  It authenticates each
 * request by API key, limits each client's rate through windows shared by
 * every gateway instance in Redis, lowers the ingest limit while the
 * pipeline's consumers lag behind (adaptive backpressure), and proxies the
 * request to the service that owns the route.  With no keys configured it
 * runs open, for local development, and then listens on loopback only.
 * See gateway.c for the request path and docs/gateway.md for operation. */
#include <stdio.h>
#include <stdlib.h>

#include "logpipe/config.h"
#include "logpipe/daemon.h"
#include "logpipe/log.h"
#include "gateway.h"

#include "logpipe/banned.h"

int main(int argc, char **argv)
{
	struct gateway_settings s;
	struct gateway *g;
	enum lp_log_level lvl = LP_LOG_INFO;
	char err[256];
	int rc;

	rc = lp_cli_main(argc, argv, "logpipe-gateway",
			 "the public entry: API keys, shared rate limits, adaptive backpressure, routing",
			 gateway_options, &s);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	lp_log_level_parse(s.log_level, &lvl);
	lp_log_init("gateway", lvl);
	lp_daemon_signals();

	g = gateway_start(&s, err, sizeof(err));
	if (!g) {
		lp_error("cannot start: %s", err);
		lp_config_release(gateway_options, &s);
		return 1;
	}
	lp_info("listening on %s, producer %s, consumer %s, redis %s, kafka %s",
		gateway_listen(g), s.up_producer, s.up_consumer,
		*s.redis_url ? s.redis_url : "(none)", *s.kafka_brokers ? s.kafka_brokers : "(none)");
	lp_daemon_wait();
	lp_info("stopping");
	gateway_stop(g);
	lp_config_release(gateway_options, &s);
	lp_info("stopped");
	return 0;
}
