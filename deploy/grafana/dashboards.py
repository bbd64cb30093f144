#!/usr/bin/env python3
"""dashboards.py - writes deploy/grafana/dashboards/*.json.

    python3 deploy/grafana/dashboards.py          # regenerate
    python3 deploy/grafana/dashboards.py --check  # exit 1 if a file differs

The five logpipe dashboards (ingest, gateway and rate limiting, enrichment,
storage, Kafka lag) as data: a row of panels is a list of (title, kind,
queries, unit), laid out on Grafana's 24-column grid.  Queries select on
the job names of deploy/prometheus (gateway, producer, metadata, enricher,
consumer, generator) and use only metric names the services register
(tests/deploy/test_grafana.py checks both).  Generated rather than written
by hand so that every panel has the same datasource, ids and layout."""
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "prometheus"}


def q(expr, legend=""):
    return (expr, legend)


def rate(metric, sel="", by="", window="$__rate_interval"):
    s = f"rate({metric}{{{sel}}}[{window}])"
    return f"sum by ({by}) ({s})" if by else f"sum({s})"


def quantile(p, metric, sel="", by="le"):
    return (f"histogram_quantile({p}, sum by ({by}) "
            f"(rate({metric}_bucket{{{sel}}}[$__rate_interval])))")


def panel(pid, title, kind, queries, unit, x, y, w, h, desc=""):
    p = {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": e, "legendFormat": lg}
            for i, (e, lg) in enumerate(queries)
        ],
    }
    if desc:
        p["description"] = desc
    if kind == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {"lineWidth": 1, "fillOpacity": 10}
        p["options"] = {"legend": {"displayMode": "list", "placement": "bottom"},
                        "tooltip": {"mode": "multi"}}
    elif kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                          "values": False},
                        "colorMode": "value", "graphMode": "area"}
    return p


def dashboard(uid, title, description, rows):
    panels, pid, y = [], 1, 0
    for row in rows:
        if isinstance(row, str):  # a row header
            panels.append({"id": pid, "type": "row", "title": row, "collapsed": False,
                           "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
            pid, y = pid + 1, y + 1
            continue
        h = 4 if all(k == "stat" for _, k, _, _ in row) else 8
        w = 24 // len(row)
        for i, (title, kind, queries, unit) in enumerate(row):
            panels.append(panel(pid, title, kind, queries, unit, i * w, y, w, h))
            pid += 1
        y += h
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["logpipe"],
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "utc",
        "templating": {"list": []},
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"title": "logpipe", "type": "dashboards", "tags": ["logpipe"],
                   "asDropdown": True}],
        "panels": panels,
    }


TS, STAT = "timeseries", "stat"

BREAKERS = ("Circuit breakers (0 closed, 1 open, 2 half-open)", TS,
            [q("max by (job, name) (circuit_breaker_state)", "{{job}} {{name}}")], "none")

INGEST = dashboard(
    "logpipe-ingest", "logpipe / Ingest",
    "Events from the clients and the generator into Kafka, and what comes out stored.",
    [
        [("Received /s", STAT, [q(rate("log_events_received_total", 'job="producer"'))], "ops"),
         ("Rejected /s", STAT, [q(rate("log_events_rejected_total", 'job="producer"'))], "ops"),
         ("Spooled events", STAT, [q('sum(logpipe_spool_events{job="producer"})')], "none"),
         ("Stored /s", STAT, [q(rate("log_events_processed_total", 'job="consumer"'))], "ops")],
        "Producer",
        [("Events received, rejected, failed", TS, [
            q(rate("log_events_received_total", 'job="producer"'), "received"),
            q(rate("log_events_rejected_total", 'job="producer"'), "rejected (4xx)"),
            q(rate("log_events_errors_total", 'job="producer"'), "Kafka did not acknowledge")],
          "ops"),
         ("Request to Kafka acknowledgement", TS, [
             q(quantile(0.5, "log_event_processing_time", 'job="producer"'), "p50"),
             q(quantile(0.99, "log_event_processing_time", 'job="producer"'), "p99")], "s")],
        [("Spool (events waiting for Kafka)", TS, [
            q('sum by (instance) (logpipe_spool_events{job="producer"})', "{{instance}} events")],
          "none"),
         ("Spool size", TS, [
             q('sum by (instance) (logpipe_spool_bytes{job="producer"})', "{{instance}}")],
          "bytes")],
        "Generator",
        [("Generated and acknowledged /s", TS, [
            q(rate("log_events_generated_total", 'job="generator"'), "generated"),
            q(rate("kafka_messages_sent_total", 'job="generator"'), "acknowledged"),
            q(rate("log_events_rate_limited_total", 'job="generator"'), "shed"),
            q(rate("log_events_errors_total", 'job="generator"'), "lost")], "ops"),
         ("Generation rate", TS, [
             q('sum(log_generation_rate_current{job="generator"})', "achieved"),
             q('max(log_generation_rate_target{job="generator"})', "target"),
             q('max(generator_instances{job="generator"})', "instances")], "none")],
        "End to end",
        [("Kafka writes by service /s", TS, [
            q(rate("kafka_messages_sent_total", "", "job"), "{{job}}")], "ops"),
         ("Stored vs received /s", TS, [
             q(rate("log_events_received_total", 'job="producer"'), "received"),
             q(rate("log_events_processed_total", 'job="consumer"'), "stored")], "ops")],
        [BREAKERS],
    ])

GATEWAY = dashboard(
    "logpipe-gateway", "logpipe / Gateway and rate limiting",
    "Requests through the gateway, its answers, latency, rate limits and backpressure.",
    [
        [("Requests /s", STAT, [q(rate("http_requests_total", 'job="gateway"'))], "reqps"),
         ("5xx share", STAT, [q(
             'sum(rate(http_requests_total{job="gateway", status=~"5.."}[$__rate_interval]))'
             ' / sum(rate(http_requests_total{job="gateway"}[$__rate_interval]))')],
          "percentunit"),
         ("429 /s", STAT, [q(rate("log_events_rate_limited_total", 'job="gateway"'))], "reqps"),
         ("Ingest limit (events/s)", STAT, [q('max(gateway_ingest_limit{job="gateway"})')], "none")],
        "Traffic",
        [("Requests by route /s", TS, [
            q(rate("http_requests_total", 'job="gateway"', "route, method"),
              "{{method}} {{route}}")], "reqps"),
         ("Answers by status /s", TS, [
             q(rate("http_requests_total", 'job="gateway"', "status"), "{{status}}")],
          "reqps")],
        [("Latency by route (p99)", TS, [
            q(quantile(0.99, "http_request_duration_seconds", 'job="gateway"', "le, route"),
              "{{route}}")], "s"),
         ("Upstream latency (p50, p99)", TS, [
             q(quantile(0.5, "gateway_upstream_duration_seconds", 'job="gateway"',
                        "le, upstream"), "{{upstream}} p50"),
             q(quantile(0.99, "gateway_upstream_duration_seconds", 'job="gateway"',
                        "le, upstream"), "{{upstream}} p99")], "s")],
        [("Upstream errors /s", TS, [
            q(rate("gateway_upstream_errors_total", 'job="gateway"', "upstream, kind"),
              "{{upstream}} {{kind}}")], "ops"),
         BREAKERS],
        "Rate limiting and backpressure",
        [("Refused with 429 by class /s", TS, [
            q(rate("log_events_rate_limited_total", 'job="gateway"', "class"), "{{class}}")],
          "reqps"),
         ("Permits left (last decision)", TS, [
             q('min by (class) (rate_limiter_available_permissions{job="gateway"})',
               "{{class}}")], "none")],
        [("Ingest limit and state", TS, [
            q('max(gateway_ingest_limit{job="gateway"})', "limit events/s"),
            q('max(gateway_backpressure_state{job="gateway"})', "state (0 normal, 1 degraded, 2 critical)")],
          "none"),
         ("Redis lease calls /s", TS, [
             q(rate("gateway_ratelimit_redis_calls_total", 'job="gateway"', "result"),
               "{{result}}")], "ops")],
    ])

ENRICHMENT = dashboard(
    "logpipe-enrichment", "logpipe / Enrichment",
    "raw-logs to enriched-logs-complete / -partial: outcomes, latency, the tiered cache.",
    [
        [("Enriched /s", STAT, [q(rate("enrichment_attempts_total", 'job="enricher"'))], "ops"),
         ("Complete share", STAT, [q('avg(enrichment_coverage_ratio{job="enricher"})')],
          "percentunit"),
         ("Dead-lettered /s", STAT, [
             q(rate("enrichment_dead_lettered_total", 'job="enricher"'))], "ops"),
         ("p99 latency", STAT, [
             q(quantile(0.99, "enrichment_latency_seconds", 'job="enricher"'))], "s")],
        "Outcomes",
        [("Attempts and outcomes /s", TS, [
            q(rate("enrichment_attempts_total", 'job="enricher"'), "attempts"),
            q(rate("enrichment_successes_total", 'job="enricher"'), "complete"),
            q(rate("enrichment_partial_total", 'job="enricher"'), "partial"),
            q(rate("enrichment_dead_lettered_total", 'job="enricher"'), "dead-lettered")],
          "ops"),
         ("Latency per event", TS, [
             q(quantile(0.5, "enrichment_latency_seconds", 'job="enricher"'), "p50"),
             q(quantile(0.99, "enrichment_latency_seconds", 'job="enricher"'), "p99"),
             q(quantile(0.99, "enrichment_batch_seconds", 'job="enricher"'),
               "batch to commit p99")], "s")],
        "Tiered cache",
        [("Hits by tier /s", TS, [
            q(rate("enrichment_cache_hits_total", 'job="enricher"', "tier"), "{{tier}}")],
          "ops"),
         ("Misses and errors by tier /s", TS, [
             q(rate("enrichment_cache_misses_total", 'job="enricher"', "tier"),
               "miss {{tier}}"),
             q(rate("enrichment_cache_errors_total", 'job="enricher"', "tier"),
               "error {{tier}}")], "ops")],
        [("Tier-1 table records", TS, [
            q('max by (kind) (enrichment_table_records{job="enricher"})', "{{kind}}")],
          "none"),
         ("Batch retries /s", TS, [
             q(rate("enrichment_batch_retries_total", 'job="enricher"'), "retries")], "ops")],
        "Metadata service",
        [("Redis cache (metadata-svc) /s", TS, [
            q(rate("metadata_cache_requests_total", 'job="metadata"', "result"),
              "{{result}}")], "ops"),
         ("Changes published /s", TS, [
             q(rate("metadata_changes_published_total", 'job="metadata"'), "published"),
             q(rate("metadata_changes_failed_total", 'job="metadata"'), "failed")], "ops")],
        [BREAKERS],
    ])

STORAGE = dashboard(
    "logpipe-storage", "logpipe / Storage",
    "The consumer: batches into PostgreSQL, duplicates, dead letters, the query API.",
    [
        [("Stored /s", STAT, [q(rate("log_events_processed_total", 'job="consumer"'))], "ops"),
         ("Duplicates /s", STAT, [
             q(rate("log_events_duplicates_total", 'job="consumer"'))], "ops"),
         ("Dead-lettered /s", STAT, [
             q(rate("log_events_errors_total", 'job="consumer"'))], "ops"),
         ("Paused (PostgreSQL down)", STAT, [q('max(consumer_paused{job="consumer"})')],
          "bool")],
        "Write path",
        [("Records /s", TS, [
            q(rate("log_events_consumed_total", 'job="consumer"'), "consumed"),
            q(rate("log_events_processed_total", 'job="consumer"'), "stored (new rows)"),
            q(rate("log_events_duplicates_total", 'job="consumer"'), "duplicates")], "ops"),
         ("Batch store time", TS, [
             q(quantile(0.5, "log_event_processing_time", 'job="consumer"'), "p50"),
             q(quantile(0.99, "log_event_processing_time", 'job="consumer"'), "p99")], "s")],
        [("Batch size (p50, p99)", TS, [
            q(quantile(0.5, "consumer_batch_size", 'job="consumer"'), "p50"),
            q(quantile(0.99, "consumer_batch_size", 'job="consumer"'), "p99")], "none"),
         ("Retries and dead letters /s", TS, [
             q(rate("consumer_store_retries_total", 'job="consumer"'), "batch retries"),
             q(rate("log_events_errors_total", 'job="consumer"', "reason"),
               "DLQ {{reason}}")], "ops")],
        "Query API",
        [("Queries by route /s", TS, [
            q(rate("http_requests_total", 'job="consumer", route!~"/health.*|/metrics"',
                   "route, status"), "{{route}} {{status}}")], "reqps"),
         ("Query latency (p99)", TS, [
             q(quantile(0.99, "http_request_duration_seconds",
                        'job="consumer", route!~"/health.*|/metrics"', "le, route"),
               "{{route}}")], "s")],
        [BREAKERS],
    ])

KAFKA_LAG = dashboard(
    "logpipe-kafka-lag", "logpipe / Kafka lag",
    "How far the enricher and consumer groups are behind, and what the gateway does about it.",
    [
        [("Total lag", STAT, [q('sum(max by (group) (kafka_consumer_lag{job="gateway"}))')],
          "none"),
         ("Backpressure state", STAT, [q('max(gateway_backpressure_state{job="gateway"})')],
          "none"),
         ("Ingest limit (events/s)", STAT, [q('max(gateway_ingest_limit{job="gateway"})')], "none"),
         ("Consumer's own lag", STAT, [q('sum(kafka_consumer_lag{job="consumer"})')],
          "none")],
        "Lag",
        [("Lag by consumer group (gateway's reading)", TS, [
            q('max by (group) (kafka_consumer_lag{job="gateway"})', "{{group}}")], "none"),
         ("Consumer lag per instance (its own reading)", TS, [
             q('max by (instance) (kafka_consumer_lag{job="consumer"})', "{{instance}}")],
          "none")],
        [("Flow through the topics /s", TS, [
            q(rate("kafka_messages_sent_total", 'job=~"producer|generator"'), "into raw-logs"),
            q(rate("kafka_messages_sent_total", 'job="enricher"'), "into enriched-*"),
            q(rate("log_events_consumed_total", 'job="consumer"'), "read by the consumer")],
          "ops"),
         ("Ingest limit vs lag thresholds", TS, [
             q('max(gateway_ingest_limit{job="gateway"})', "ingest limit events/s"),
             q('max(gateway_backpressure_state{job="gateway"})', "state")], "none")],
        [("Kafka breakers", TS, [
            q('max by (job, name) (circuit_breaker_state{name=~".*kafka.*"})',
              "{{job}} {{name}}")], "none")],
    ])

DASHBOARDS = {
    "logpipe-ingest.json": INGEST,
    "logpipe-gateway.json": GATEWAY,
    "logpipe-enrichment.json": ENRICHMENT,
    "logpipe-storage.json": STORAGE,
    "logpipe-kafka-lag.json": KAFKA_LAG,
}


def render(d):
    return json.dumps(d, indent=2, sort_keys=True) + "\n"


def main(argv):
    check = "--check" in argv
    stale = []
    OUT.mkdir(exist_ok=True)
    for name, d in DASHBOARDS.items():
        path = OUT / name
        text = render(d)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("stale (run python3 deploy/grafana/dashboards.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
