#!/usr/bin/python3
"""drill.py - seed 004's failure drills against the system `make run` started.

Each drill streams synthetic events from the generator, takes one part of
the pipeline away through the runner's control endpoint, watches where the
queue builds up (GET /api/v1/pipeline on the gateway), brings the part back,
watches the pipeline catch up, and checks that nothing was lost: once the
queues are drained, every event that reached raw-logs during the drill is a
row in PostgreSQL (or, if invalid, on logs-dlq).  It prints what should
happen before acting, a timeline while it waits, and one "ok"/"FAIL" line
per check; the exit status is 0 only when every check passed.

  drill.py NAME [--phase all|stop|restart] [--rate 100] [--down-s 20]
                [--recover-s 180] [--gateway URL] [--control URL]

  NAME: kafka, enricher, consumer, postgres, redis, generator

--phase stop does the first half (baseline, stop, watch the queue build)
and leaves the part stopped; --phase restart does the second half (start it,
watch the recovery, drain, check nothing was lost) against the baseline the
stop phase saved.  The shell scripts next to this file (stop-kafka.sh,
restart-kafka.sh, ...) are those halves, as in seed 004; NAME-drill.sh runs
both.  The generator drill is seed 004's pause/resume-producer.

Defaults: gateway http://127.0.0.1:8080 ($LOGPIPE_GATEWAY), control
endpoint http://127.0.0.1:8090 ($LOGPIPE_CONTROL), API key for the gateway
in $LOGPIPE_API_KEY when its auth is on.  Standard library only.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# What each drill takes away, what should happen, and how that is checked.
DRILLS = {
    "kafka": {
        "component": "kafka",
        "expect": [
            "the generator keeps generating: its events wait in its local queue "
            "(generated and producer_count keep growing, in_flight grows)",
            "kafka_count and the topics' end offsets cannot be read (null) and do not move",
            "stored_count stops growing: nothing new reaches the consumer",
            "after Kafka is back the generator's queue flushes (kafka_count jumps), "
            "the enricher and consumer catch up and every event is stored once",
        ],
        "queue_at": "generator",
    },
    "enricher": {
        "component": "enricher",
        "expect": [
            "raw-logs keeps growing (kafka_count rises at the generation rate)",
            "the enricher group's lag grows: the queue builds up in raw-logs, before the enricher",
            "stored_count stops growing once the consumer has drained the enriched topics",
            "after the restart the enricher works the lag down to 0 and every event is stored once",
        ],
        "queue_at": "enricher",
    },
    "consumer": {
        "component": "consumer",
        "expect": [
            "raw-logs and the enriched topics keep growing",
            "the consumer group's lag grows: the queue builds up in the enriched topics",
            "stored_count cannot be read while the consumer is down (null)",
            "after the restart the consumer works the lag down to 0 and every event is stored once",
        ],
        "queue_at": "consumer",
    },
    "postgres": {
        "component": "postgres",
        "expect": [
            "raw-logs and the enriched topics keep growing",
            "the consumer's postgres breaker opens and it pauses its partitions: "
            "the consumer group's lag grows (the queue builds up in Kafka, not in memory)",
            "stored_count cannot be read (null); the metadata service reports postgres DOWN",
            "after PostgreSQL is back the consumer resumes by itself, the lag goes to 0 "
            "and every event is stored once",
        ],
        "queue_at": "consumer",
    },
    "redis": {
        "component": "redis",
        "expect": [
            "nothing queues up: the services fall back (generator: local rate share, "
            "enricher: its own cache tiers, gateway: local rate-limit buckets)",
            "events keep flowing end to end: stored_count keeps growing",
            "services report redis DOWN in their health checks",
            "after Redis is back they use it again; every event is stored once",
        ],
        "queue_at": None,
    },
    "generator": {
        "component": None,
        "expect": [
            "pause: is_streaming turns false and the counts stop growing at every stage "
            "once the pipeline has drained what was in flight",
            "resume: is_streaming turns true and the counts grow again at the same rate",
            "every event generated is stored once",
        ],
        "queue_at": None,
    },
}


class DrillError(Exception):
    """The drill cannot go on (an endpoint is missing, an action failed)."""


class Client:
    def __init__(self, gateway, control, api_key):
        self.gateway = gateway.rstrip("/")
        self.control = control.rstrip("/")
        self.api_key = api_key

    def _call(self, url, method="GET", body=None, timeout=10.0, key=False):
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key and self.api_key:
            headers["X-API-Key"] = self.api_key
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            try:
                return e.code, json.loads(e.read() or b"null")
            except ValueError:
                return e.code, None
        except (OSError, ValueError) as e:
            raise DrillError(f"{method} {url}: {e}") from None

    def view(self):
        status, body = self._call(self.gateway + "/api/v1/pipeline", key=True)
        if status != 200:
            raise DrillError(f"GET /api/v1/pipeline answered {status}: {body}")
        return body

    def generator(self, action, body=None):
        method = "GET" if action == "status" else "POST"
        status, reply = self._call(self.gateway + "/api/v1/generator/" + action, method,
                                   body if method == "POST" else None, key=True)
        if status >= 300:
            raise DrillError(f"generator {action} answered {status}: {reply}")
        return reply

    def act(self, component, action):
        status, reply = self._call(f"{self.control}/control/{component}/{action}", "POST",
                                   timeout=240)
        if status not in (200, 202):
            raise DrillError(f"{action} {component} answered {status}: {reply}")
        return reply

    def status(self, component=None):
        path = f"/control/{component}/status" if component else "/control/status"
        status, reply = self._call(self.control + path)
        if status != 200:
            raise DrillError(f"GET {path} answered {status}: {reply}")
        return reply


# ---- output ------------------------------------------------------------------

T0 = time.monotonic()


def say(msg=""):
    print(msg, flush=True)


def fmt(v):
    return "-" if v is None else f"{v:,}" if isinstance(v, int) else str(v)


def timeline_header():
    say(f"  {'t':>5}  {'produced':>10} {'raw-logs':>10} {'stored':>10} "
        f"{'gen queue':>9} {'spool':>6} {'enr lag':>8} {'cons lag':>8}  note")


def timeline(v, note=""):
    st = v.get("stages", {})
    say(f"  {time.monotonic() - T0:5.0f}s {fmt(v.get('producer_count')):>10} "
        f"{fmt(v.get('kafka_count')):>10} {fmt(v.get('stored_count')):>10} "
        f"{fmt(st.get('generator', {}).get('backlog')):>9} "
        f"{fmt(st.get('producer', {}).get('backlog')):>6} "
        f"{fmt(st.get('enricher', {}).get('lag')):>8} {fmt(st.get('consumer', {}).get('lag')):>8}"
        f"  {note}")


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
            say(f"ok    {name}" + (f" ({detail})" if detail else ""))
        else:
            self.failed += 1
            say(f"FAIL  {name}" + (f": {detail}" if detail else ""))
        return cond


# ---- helpers -------------------------------------------------------------------

def watch(c, seconds, every=2.0, note=""):
    """Prints the timeline for `seconds`; returns the views seen."""
    seen = []
    end = time.monotonic() + seconds
    while True:
        v = c.view()
        seen.append(v)
        timeline(v, note)
        if time.monotonic() >= end:
            return seen
        time.sleep(every)


def wait_until(c, what, pred, timeout, every=2.0):
    """Timeline until pred(view) holds; returns (ok, last view)."""
    end = time.monotonic() + timeout
    v = None
    while time.monotonic() < end:
        v = c.view()
        if pred(v):
            timeline(v, what + ": yes")
            return True, v
        timeline(v, "waiting: " + what)
        time.sleep(every)
    return False, v


def running(c, component):
    return c.status(component).get("state") == "running"


def drained(v):
    lag = [x for x in (v.get("lag") or {}).values()]
    st = v.get("stages", {})
    return (v.get("stored_count") is not None and v.get("kafka_count") is not None
            and lag and all(x == 0 for x in lag)
            and not (st.get("producer", {}).get("backlog") or 0)
            and not (st.get("generator", {}).get("backlog") or 0))


def wait_drained(c, timeout):
    """Until the queues are empty and the counts stay put over four views
    (the sources are sampled apart, so one empty view may still show a
    stored count from before the last batch landed)."""
    end = time.monotonic() + timeout
    prev, still, v = None, 0, None
    while time.monotonic() < end:
        v = c.view()
        key = (v.get("kafka_count"), v.get("stored_count"), (v.get("counts") or {}).get("dead_lettered"))
        still = still + 1 if drained(v) and key == prev else 0
        prev = key
        if still >= 3:
            timeline(v, "drained: yes")
            return True, v
        timeline(v, "waiting: drained")
        time.sleep(2.0)
    return False, v


def baseline_of(v):
    c = v["counts"]
    return {"kafka": v["kafka_count"], "stored": v["stored_count"], "dlq": c.get("dead_lettered") or 0,
            "generated_sent": c.get("generated_sent"), "time": time.time()}


def state_path(name):
    return Path(tempfile.gettempdir()) / f"logpipe-drill-{name}.json"


# ---- phases --------------------------------------------------------------------

def preflight(c, d, ck):
    say("== preflight")
    try:
        comps = c.status()["components"]
    except DrillError as e:
        raise DrillError(f"{e}\nthe runner's control endpoint is needed: start logpipe with "
                         "`make run` (or pass --control)") from None
    down = [n for n, s in comps.items() if s["state"] != "running"]
    if down:
        raise DrillError(f"not everything is running: {', '.join(down)}; start them first "
                         f"(POST {c.control}/control/NAME/start)")
    v = c.view()
    if not v.get("ready"):
        raise DrillError("the pipeline view has no sample yet; try again in a few seconds")
    say(f"gateway {c.gateway}, control {c.control}: {len(comps)} components running")


def baseline(c, rate, ck):
    say(f"\n== baseline: the generator streams {rate:g} events/s and every stage follows")
    ok, v = wait_until(c, "flowing to PostgreSQL",
                       lambda v: v.get("is_streaming") and (v["rates_10s"].get("stored") or 0) > 0
                       and v.get("stored_count") is not None and v.get("kafka_count") is not None,
                       timeout=60)
    ck.check("baseline: events flow from the generator to PostgreSQL", ok)
    if not ok:
        raise DrillError("the pipeline does not flow; fix that before drilling")
    return v


def stop_phase(c, name, d, args, ck):
    preflight(c, d, ck)
    say(f"\n== drill: {name}. What should happen:")
    for line in d["expect"]:
        say(f"   - {line}")
    # Counted from a drained pipeline, so that what is in flight at the
    # start cannot blur the comparison at the end.
    prev = c.generator("status")
    if prev.get("running"):
        c.generator("stop")
    say("\n== drain what is in flight, then count")
    timeline_header()
    ok, v0 = wait_drained(c, args.recover_s)
    if not ok:
        raise DrillError("the pipeline does not drain (a stage is down or far behind); "
                         "fix that before drilling")
    base = baseline_of(v0)
    base["started_generator"] = not prev.get("running")
    base["prev_rate"] = prev.get("target_rate")
    c.generator("start", {"rate": args.rate, "size_bytes": 300})
    baseline(c, args.rate, ck)
    comp = d["component"]

    if comp is None:
        say("\n== pause the generator (POST /api/v1/generator/stop)")
        c.generator("stop")
    else:
        say(f"\n== stop {comp} (POST {c.control}/control/{comp}/stop)")
        c.act(comp, "stop")
        ck.check(f"{comp} is stopped", not running(c, comp))
    views = watch(c, args.down_s)
    check_outage(name, views[0], views[-1], views, ck)
    state_path(name).write_text(json.dumps(base))
    return base


def check_outage(name, first, last, views, ck):
    """What the outage must look like, from the views taken while it lasted."""
    st = lambda v, s, k: (v.get("stages", {}).get(s) or {}).get(k)  # noqa: E731
    mid = views[len(views) // 2]
    if name == "kafka":
        ck.check("the generator keeps producing while Kafka is away (producer_count grows)",
                 (last.get("producer_count") or 0) > (mid.get("producer_count") or 0),
                 f"{fmt(mid.get('producer_count'))} -> {fmt(last.get('producer_count'))}")
        ck.check("its events queue up in the generator (in_flight grows)",
                 (st(last, "generator", "backlog") or 0) > 0,
                 f"in flight {fmt(st(last, 'generator', 'backlog'))}")
        ck.check("kafka_count cannot be read or does not move",
                 last.get("kafka_count") is None or last.get("kafka_count") == mid.get("kafka_count"),
                 f"{fmt(mid.get('kafka_count'))} -> {fmt(last.get('kafka_count'))}")
        ck.check("stored_count stops growing",
                 last.get("stored_count") == mid.get("stored_count"),
                 f"{fmt(mid.get('stored_count'))} -> {fmt(last.get('stored_count'))}")
    elif name == "enricher":
        ck.check("raw-logs keeps growing", (last["kafka_count"] or 0) > (mid["kafka_count"] or 0),
                 f"{fmt(mid['kafka_count'])} -> {fmt(last['kafka_count'])}")
        ck.check("the queue builds before the enricher (its group's lag grows)",
                 (st(last, "enricher", "lag") or 0) > (st(mid, "enricher", "lag") or 0) > 0,
                 f"lag {fmt(st(mid, 'enricher', 'lag'))} -> {fmt(st(last, 'enricher', 'lag'))}")
        ck.check("stored_count stops growing", last["stored_count"] == mid["stored_count"],
                 f"{fmt(mid['stored_count'])} -> {fmt(last['stored_count'])}")
        ck.check("the view reports the enricher unreachable",
                 last["services"]["enricher"]["status"] == "UNREACHABLE")
    elif name in ("consumer", "postgres"):
        ck.check("raw-logs keeps growing", (last["kafka_count"] or 0) > (mid["kafka_count"] or 0),
                 f"{fmt(mid['kafka_count'])} -> {fmt(last['kafka_count'])}")
        ck.check("the queue builds before the consumer (its group's lag grows)",
                 (st(last, "consumer", "lag") or 0) > (st(mid, "consumer", "lag") or 0) > 0,
                 f"lag {fmt(st(mid, 'consumer', 'lag'))} -> {fmt(st(last, 'consumer', 'lag'))}")
        ck.check("the enricher keeps up (its lag stays small)",
                 (st(last, "enricher", "lag") or 0) < 5000, f"lag {fmt(st(last, 'enricher', 'lag'))}")
        ck.check("stored_count cannot be read or does not move",
                 last["stored_count"] is None or last["stored_count"] == mid["stored_count"],
                 f"{fmt(mid['stored_count'])} -> {fmt(last['stored_count'])}")
        if name == "postgres":
            cons = last["services"]["consumer"]
            ck.check("the consumer reports postgres DOWN and pauses",
                     cons["checks"].get("postgres") == "DOWN" or st(last, "consumer", "paused"),
                     f"checks {cons['checks']}, breakers {cons['breakers']}")
    elif name == "redis":
        ck.check("events keep flowing to PostgreSQL",
                 (last.get("stored_count") or 0) > (first.get("stored_count") or 0),
                 f"{fmt(first.get('stored_count'))} -> {fmt(last.get('stored_count'))}")
        lags = [x or 0 for x in (last.get("lag") or {}).values()]
        ck.check("no queue builds up (lag stays small)", max(lags or [0]) < 5000, f"lag {lags}")
        downs = [s for s, x in last["services"].items() if x["checks"].get("redis") == "DOWN"]
        ck.check("services report redis DOWN", bool(downs), ", ".join(downs))
    elif name == "generator":
        ck.check("is_streaming turns false", last.get("is_streaming") is False)
        ck.check("raw-logs stops growing", last["kafka_count"] == mid["kafka_count"],
                 f"{fmt(mid['kafka_count'])} -> {fmt(last['kafka_count'])}")
        ck.check("the pipeline drains: stored catches up with raw-logs", drained(last),
                 f"lag {last.get('lag')}")


def restart_phase(c, name, d, args, ck, base=None):
    if base is None:
        p = state_path(name)
        if not p.exists():
            raise DrillError(f"no baseline saved by the stop phase ({p}); run the stop phase first")
        base = json.loads(p.read_text())
        timeline_header()
    comp = d["component"]
    if comp is None:
        say(f"\n== resume the generator at {args.rate:g} events/s")
        c.generator("start", {"rate": args.rate, "size_bytes": 300})
        ok, _ = wait_until(c, "streaming again",
                           lambda v: v.get("is_streaming") and (v["rates_10s"].get("raw") or 0) > 0,
                           timeout=30)
        ck.check("resume: is_streaming turns true and raw-logs grows again", ok)
        watch(c, 6)
    else:
        say(f"\n== start {comp} again (POST {c.control}/control/{comp}/start)")
        t = time.monotonic()
        c.act(comp, "start")
        ck.check(f"{comp} is running again", running(c, comp),
                 f"after {time.monotonic() - t:.0f} s")
        ok, v = wait_until(c, "caught up (lag small, stored growing)",
                           lambda v: v.get("stored_count") is not None
                           and (v.get("stored_count") or 0) > (base["stored"] or 0)
                           and all((x or 0) < 2 * args.rate + 500 for x in (v.get("lag") or {}).values())
                           and all(x is not None for x in (v.get("lag") or {}).values()),
                           timeout=args.recover_s)
        ck.check("the pipeline recovers: the queue drains while events keep coming", ok)

    say("\n== stop streaming and let everything drain")
    c.generator("stop")
    ok, v = wait_drained(c, args.recover_s)
    ck.check("queues drained: both groups' lag is 0, no spool, nothing in flight", ok,
             f"lag {v.get('lag') if v else '?'}")
    if v and v.get("kafka_count") is not None and v.get("stored_count") is not None:
        d_raw = v["kafka_count"] - base["kafka"]
        d_stored = v["stored_count"] - base["stored"]
        d_dlq = (v["counts"].get("dead_lettered") or 0) - base["dlq"]
        ck.check("nothing lost: every event that reached raw-logs during the drill is stored "
                 "(or dead-lettered)", d_stored + d_dlq == d_raw and d_raw > 0,
                 f"raw-logs +{d_raw:,}, stored +{d_stored:,}, dead-lettered +{d_dlq:,}")
        sent0, sent1 = base.get("generated_sent"), v["counts"].get("generated_sent")
        if sent0 is not None and sent1 is not None and sent1 >= sent0:
            ck.check("every event the generator had acknowledged is in raw-logs",
                     d_raw >= sent1 - sent0, f"generator sent +{sent1 - sent0:,}")
    if not base.get("started_generator") and base.get("prev_rate"):
        say(f"   (the generator was running before the drill: back to {base['prev_rate']} events/s)")
        c.generator("start", {"rate": base["prev_rate"]})
    state_path(name).unlink(missing_ok=True)


def main():
    ap = argparse.ArgumentParser(description="Run one of seed 004's failure drills against "
                                 "the system `make run` started.")
    ap.add_argument("name", choices=sorted(DRILLS))
    ap.add_argument("--phase", choices=("all", "stop", "restart"), default="all")
    ap.add_argument("--rate", type=float, default=100.0, help="events/s generated (default 100)")
    ap.add_argument("--down-s", type=float, default=20.0, help="seconds to stay down (default 20)")
    ap.add_argument("--recover-s", type=float, default=180.0,
                    help="seconds allowed for catching up and draining (default 180)")
    ap.add_argument("--gateway", default=os.environ.get("LOGPIPE_GATEWAY", "http://127.0.0.1:8080"))
    ap.add_argument("--control", default=os.environ.get("LOGPIPE_CONTROL", "http://127.0.0.1:8090"))
    args = ap.parse_args()
    c = Client(args.gateway, args.control, os.environ.get("LOGPIPE_API_KEY", ""))
    d = DRILLS[args.name]
    ck = Checks()
    try:
        if args.phase in ("all", "stop"):
            base = stop_phase(c, args.name, d, args, ck)
        else:
            base = None
        if args.phase in ("all", "restart"):
            restart_phase(c, args.name, d, args, ck, base)
        elif d["component"]:
            say(f"\n{d['component']} is left stopped: run restart-{args.name}.sh "
                f"(drill.py {args.name} --phase restart) to bring it back and check the recovery")
    except DrillError as e:
        ck.check("the drill ran to its end", False, str(e))
    except KeyboardInterrupt:
        ck.check("the drill ran to its end", False, "interrupted")
    say(f"\ndrill {args.name}: {ck.passed} passed, {ck.failed} failed")
    sys.exit(1 if ck.failed else 0)


if __name__ == "__main__":
    main()
