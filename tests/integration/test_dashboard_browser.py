"""test_dashboard_browser.py - the dashboard page in Debian's Chromium.

Starts Kafka, Redis, PostgreSQL (session infra) and all six services, then
runs tests/browser/run.sh (playwright-core driving /usr/bin/chromium) against
the gateway: the page opens and fills in, the generator is started from the
page and the counts grow, it is stopped, every generated event is counted in
PostgreSQL, and a posted event is found with the search box.  The browser
script's own checks are printed; its last line "N passed, N failed" must
show no failure.  Skipped, with the reason, only when node/npm or Chromium
cannot be installed on this machine, and never under CI=true (CI installs
them with `make deps`, so there their absence is a failure).  The final
page is saved as dashboard.png in the test's work directory (kept with
LOGPIPE_KEEP_TMP).
"""

import os
import subprocess
from pathlib import Path

import pytest

import infra as lp

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "tests" / "browser" / "run.sh"
STAGES = ("producer", "metadata", "enricher", "consumer", "generator")


@pytest.fixture(scope="module")
def browser_ready():
    r = subprocess.run([str(RUN), "--install-only"], capture_output=True, text=True, timeout=900)
    if r.returncode == 77 and os.environ.get("CI") != "true":
        pytest.skip("browser test prerequisites cannot be installed here: "
                    + (r.stderr.strip().splitlines() or ["?"])[-1])
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboard_in_chromium(browser_ready, infra, services, topics, pg_dsn):
    missing = [n for n in ("gateway",) + STAGES if not (lp.bin_dir() / f"logpipe-{n}").is_file()]
    if missing:
        pytest.skip("not built: " + ", ".join(missing))
    services(*STAGES, topics=topics, pg_dsn=pg_dsn)
    suffix = "-" + services.run_id
    gw = services("gateway", topics=topics, config={"gateway": {
        "backpressure.groups": (f"logpipe-enricher{suffix}={topics['raw']},"
                                f"logpipe-consumer{suffix}={topics['complete']}+{topics['partial']}"),
        "topics.raw": topics["raw"], "topics.complete": topics["complete"],
        "topics.partial": topics["partial"], "topics.dlq": topics["dlq"],
        "pipeline.sample_ms": 1000,
        "pipeline.kafka_data_dir": str(infra.kafka.data_dir),
        "pipeline.pg_data_dir": str(infra.postgres.data_dir),
        "upstream.control": "",
    }})["gateway"]
    shot = services.workdir / "dashboard.png"
    r = subprocess.run([str(RUN), "--url", gw.url, "--screenshot", str(shot), "--timeout-s", "150"],
                       capture_output=True, text=True, timeout=600)
    print(r.stdout)
    print(r.stderr[-3000:])
    last = (r.stdout.strip().splitlines() or [""])[-1]
    assert r.returncode == 0 and last.endswith(" 0 failed"), f"browser test: {last}\n{r.stdout}"
