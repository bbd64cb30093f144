"""test_chaos.py - the default chaos run (tests/chaos/chaos.py) inside the integration suite.

chaos.py starts its own Kafka, Redis, PostgreSQL and six services on free
ports (it stops and kills them, so it must not share the session's), sends a
known set of events through the gateway while it kills services and stops
the infrastructure, and ends with one line

    chaos: sent=N accepted=N stored=N duplicates=N lost=N faults=N

This test runs it with the default length (CHAOS_SECONDS unset: 60 s of load,
at least 20 faults) against the binaries under test (LOGPIPE_BIN_DIR) and
asserts that line, that the run had each fault kind (a kill -9 of the
producer while Kafka was down, a PostgreSQL outage a consumer batch ran
into, a Redis outage: the "chaos-kinds:" line), and that no service exited
on its own during the run or uncleanly on the final SIGTERM (under the
sanitizer build a report makes a service exit 98 or 99).  On failure the
output is shown, including the diagnosis chaos.py prints for lost ids and the
directory it kept, and the seed: CHAOS_SEED=N (the only CHAOS_* setting
passed through) replays the run's choices of faults and load.

Duplicates are counted per event marker (attributes.mark), not per id: a
redelivered record cannot make a second row, an event stored again under a
new id can.  test_the_count_sees_a_resend_under_a_new_id checks that
counting on rows made up for the purpose.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHAOS = REPO / "tests" / "chaos" / "chaos.py"
SEED = re.compile(r": seed (\d+),")
KINDS = ("kafka_down_producer_kill9", "postgres_outage_mid_batch", "redis_outage")
SUMMARY = re.compile(r"^chaos: sent=(\d+) accepted=(\d+) stored=(\d+) duplicates=(\d+) "
                     r"lost=(\d+) faults=(\d+)$")
# 60 s of load, up to 120 s more to reach 20 faults, infra start, settling
# (bounded by CHAOS_SETTLE_SECONDS) and the stops, with room for a slow box.
TIMEOUT = 1500


def test_default_chaos_run_loses_nothing():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CHAOS_") or k == "CHAOS_SEED"}
    try:
        r = subprocess.run([sys.executable, str(CHAOS)], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = e.stdout if isinstance(e.stdout, str) else (e.stdout or b"").decode()
        raise AssertionError(f"chaos.py did not finish within {TIMEOUT} s:\n{out[-20000:]}")
    out = r.stdout
    lines = out.rstrip("\n").splitlines()
    assert lines, "chaos.py printed nothing"
    seed = SEED.search(out)
    replay = f"replay with CHAOS_SEED={seed.group(1)}" if seed else "no seed printed"
    print(f"\nchaos: {replay}")
    m = SUMMARY.match(lines[-1])
    assert m, f"last line is not the summary: {lines[-1]!r} ({replay})\n{out[-20000:]}"
    sent, accepted, stored, dups, lost, faults = map(int, m.groups())
    print(lines[-1])
    assert seed, f"chaos.py did not print its seed\n{out[-20000:]}"
    assert r.returncode == 0 and lost == 0 and dups == 0, \
        f"{lines[-1]} ({replay})\n{out[-20000:]}"
    assert faults >= 20, f"only {faults} faults injected ({replay})\n{out[-20000:]}"
    assert accepted > 0 and stored == accepted and sent >= accepted, f"{lines[-1]} ({replay})"
    # Each fault kind happened.
    kinds = [ln for ln in lines if ln.startswith("chaos-kinds: ")]
    assert len(kinds) == 1, f"no chaos-kinds line ({replay})\n{out[-20000:]}"
    counts = dict(kv.split("=") for kv in kinds[0].split()[1:])
    print(kinds[0])
    missing = [k for k in KINDS if int(counts.get(k, 0)) < 1]
    assert not missing, f"fault kinds that did not happen: {missing} ({replay})\n" \
                        f"{out[-20000:]}"
    # A crash, or a sanitizer report at exit, is a failure too.
    exits = [ln for ln in lines if ln.startswith("chaos-exits: ")]
    assert exits == ["chaos-exits: unplanned=0 unclean_sigterm=0"], \
        f"{exits} ({replay})\n{out[-20000:]}"


def _chaos_module():
    spec = importlib.util.spec_from_file_location("chaos", CHAOS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_count_sees_a_resend_under_a_new_id():
    chaos = _chaos_module()
    acc, pend = chaos.ACCEPTED, chaos.PENDING
    events = {"a": {"state": acc, "mark": "r-1"}, "b": {"state": acc, "mark": "r-2"},
              "c": {"state": pend, "mark": "r-3"}, "d": {"state": acc, "mark": "r-4"}}
    # a stored once; b stored, and again under a new id x (a resend the
    # system turned into a second event); c never accepted, stored anyway
    # (allowed: its answer was lost); d lost.
    by_id = {"a": 1, "b": 1, "x": 1, "c": 1}
    by_mark = {"r-1": 1, "r-2": 2, "r-3": 1}
    v = chaos.check_rows(events, by_id, by_mark)
    assert all(n == 1 for n in by_id.values())  # per id, nothing is doubled
    assert v["dups"] == {"r-2": 2}
    assert v["lost"] == ["d"] and v["stored"] == 2
    assert v["strays"] == {"x"}
    # The same event twice under its own id is a duplicate too.
    v = chaos.check_rows(events, {"a": 2, "b": 1, "d": 1}, {"r-1": 2, "r-2": 1, "r-4": 1})
    assert v["dups"] == {"r-1": 2} and not v["lost"] and not v["strays"]
