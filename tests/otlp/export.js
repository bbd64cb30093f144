// export.js - sends log records to logpipe with the official OpenTelemetry
// JS SDK (sdk-logs + the OTLP/HTTP exporters), as an instrumented service
// would.  Used by tests/integration/test_otlp.py.
//
//   node export.js SPEC.json
//
// SPEC: {"url": "http://127.0.0.1:PORT/v1/logs", "protocol": "proto"|"json",
//        "compression": "gzip"|"none", "headers": {...},
//        "resource": {attr: value}, "scope": {"name":..., "version":...},
//        "records": [{"severityNumber", "severityText", "body", "attributes",
//                     "timestampMs", "traceId", "spanId"}]}
// All records go in one export request (a batch processor flushed once).
// Prints one JSON line: {"results": [{"code": 0|1, "error": "..."}]}, the
// exporter's result for each export; exits 0 when every export succeeded.
'use strict';
const fs = require('fs');
const api = require('@opentelemetry/api');
const { Resource } = require('@opentelemetry/resources');
const { LoggerProvider, BatchLogRecordProcessor } = require('@opentelemetry/sdk-logs');

const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const { OTLPLogExporter } = spec.protocol === 'json'
	? require('@opentelemetry/exporter-logs-otlp-http')
	: require('@opentelemetry/exporter-logs-otlp-proto');

const exporter = new OTLPLogExporter({
	url: spec.url,
	headers: spec.headers || {},
	compression: spec.compression || 'none',
	timeoutMillis: 15000,
});
const results = [];
const exportOne = exporter.export.bind(exporter);
exporter.export = (records, done) => exportOne(records, (res) => {
	results.push({ code: res.code, error: res.error ? String(res.error) : null });
	done(res);
});

const provider = new LoggerProvider({ resource: new Resource(spec.resource || {}) });
provider.addLogRecordProcessor(new BatchLogRecordProcessor(exporter, {
	maxExportBatchSize: 512, scheduledDelayMillis: 60000,
}));
const scope = spec.scope || {};
const logger = provider.getLogger(scope.name || 'logpipe-test', scope.version);

for (const r of spec.records) {
	let ctx = api.ROOT_CONTEXT;
	if (r.traceId)
		ctx = api.trace.setSpanContext(ctx, {
			traceId: r.traceId, spanId: r.spanId, traceFlags: api.TraceFlags.SAMPLED,
		});
	logger.emit({
		severityNumber: r.severityNumber,
		severityText: r.severityText,
		body: r.body,
		attributes: r.attributes || {},
		timestamp: r.timestampMs === undefined ? undefined : new Date(r.timestampMs),
		context: ctx,
	});
}

provider.forceFlush().then(() => provider.shutdown()).then(() => {
	console.log(JSON.stringify({ results }));
	process.exit(results.length > 0 && results.every((x) => x.code === 0) ? 0 : 1);
}, (err) => {
	console.log(JSON.stringify({ results, error: String(err) }));
	process.exit(1);
});
