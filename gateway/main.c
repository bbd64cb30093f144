/* main.c - logpipe-gateway: arguments, configuration and signals.
 *
 * The gateway is the only public entry of logpipe.  It authenticates each
 * request by API key, limits each client's rate through windows shared by
 * every gateway instance in Redis, lowers the ingest limit while the
 * pipeline's consumers lag behind (adaptive backpressure), and proxies the
 * request to the service that owns the route.  With no keys configured it
 * runs open, for local development, and then listens on loopback only.
 * See gateway.c for the request path and docs/gateway.md for operation. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "logpipe/config.h"
#include "logpipe/daemon.h"
#include "logpipe/log.h"
#include "gateway.h"

#include "logpipe/banned.h"

static void *start(const void *settings, char *err, size_t errlen)
{
	const struct gateway_settings *s = settings;

	/* One access line per request: written together, not one write(2)
	 * each from every worker thread into the same file. */
	if (s->log_buffer_ms > 0 && lp_log_buffer((int)s->log_buffer_ms) < 0)
		lp_warn("cannot buffer the log; writing each line at once");
	return gateway_start(settings, err, errlen);
}

static void started(void *svc, const void *settings)
{
	const struct gateway_settings *s = settings;

	lp_info("listening on %s, producer %s, consumer %s, redis %s, kafka %s",
		gateway_listen(svc), s->up_producer, s->up_consumer,
		*s->redis_url ? s->redis_url : "(none)", *s->kafka_brokers ? s->kafka_brokers : "(none)");
}

static void stop(void *svc)
{
	gateway_stop(svc);
}

int main(int argc, char **argv)
{
	static const struct lp_service svc = {
		.prog = "logpipe-gateway",
		.name = "gateway",
		.summary = "the public entry: API keys, shared rate limits, adaptive backpressure, routing",
		.options = gateway_options,
		.log_level_offset = offsetof(struct gateway_settings, log_level),
		.start = start,
		.started = started,
		.stop = stop,
	};
	struct gateway_settings s;

	return lp_service_main(&svc, &s, argc, argv);
}
