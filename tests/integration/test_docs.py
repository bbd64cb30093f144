"""test_docs.py - the documents that describe code stay true to it."""

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_configuration_md_matches_the_settings_tables():
    """docs/configuration.md is exactly what the binaries' --help says."""
    bindir = __import__("infra").bin_dir()
    want = subprocess.run([str(REPO / "scripts" / "gen-config-docs.sh"), str(bindir)],
                          capture_output=True, text=True, check=True, timeout=60).stdout
    have = (REPO / "docs" / "configuration.md").read_text()
    assert have == want, "docs/configuration.md is stale: run scripts/gen-config-docs.sh " \
                         "> docs/configuration.md"


def test_every_binary_answers_help_version_check_config():
    bindir = __import__("infra").bin_dir()
    for svc in ("gateway", "producer", "metadata", "enricher", "consumer", "generator"):
        exe = str(Path(bindir) / f"logpipe-{svc}")
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and r.stdout.startswith(f"logpipe-{svc} "), (svc, r)
        r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and "LOGPIPE_" in r.stdout, (svc, r)
        r = subprocess.run([exe, "--check-config"], capture_output=True, text=True,
                           timeout=10)
        assert r.returncode == 0, (svc, r.stderr)
        r = subprocess.run([exe, "--check-config"], capture_output=True, text=True,
                           timeout=10, env={"LOGPIPE_HTTP_THREADS": "lots"})
        assert r.returncode != 0 and "http.threads" in r.stderr, (svc, r)
        r = subprocess.run([exe, "--no-such-flag"], capture_output=True, text=True,
                           timeout=10)
        assert r.returncode != 0, (svc, r)
