"""test_spool_durability.py - the spool's 202 comes after the fdatasync of its record.

A kill -9 cannot show this: the page cache survives the process, so a spool
that answered before syncing would pass every crash test.  Here the real
producer runs with Kafka unreachable (its brokers point at a closed port, so
every event goes to the on-disk spool) under an LD_PRELOAD shim
(sync_trace.c, built here with cc) that logs, in order, each pwrite() and
fdatasync()/fsync() of a file (path, offset, length; the size when the sync
started) and each write to a socket.  The check: for every reply
"HTTP/1.1 202" written to a client socket, each event id in its body lies in
a spool segment, inside a pwrite that a later sync of that file covers
(size at the sync's start >= end of the pwrite), and that sync returned
before the first byte of the reply was written.  Every id the client got a
202 for must be among the replies the shim saw, or the check would be empty.

Each runs twice: with HTTP/1.0 requests (which the event front passes to
CivetWeb behind it, whose worker answers) and with kept-alive connections,
whose requests the front serves on the producer's async routes (deferred,
answered by the spool writer's done).

The second test proves the check can fail: the shim's SYNC_TRACE_NOOP=1
turns fdatasync() into a no-op (nothing synced, nothing logged), the defect
a producer answering before its data is durable would have, and the check
must report every 202 as a violation.

No Kafka, Redis or PostgreSQL is needed, so this is quick and in the core
tier.  Under a sanitizer build (scripts/test-all.sh runs the suite on
build-san/bin) the ASan runtime must come first in LD_PRELOAD: it is found
with ldd and put before the shim.
"""

import http.client
import json
import re
import subprocess
import threading
from pathlib import Path

import pytest

import infra as lp
from conftest import sanitizer_reports

HERE = Path(__file__).resolve().parent
SHIM_SRC = HERE / "sync_trace.c"


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    out = tmp_path_factory.mktemp("shim") / "sync_trace.so"
    r = subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror",
                        "-o", str(out), str(SHIM_SRC), "-ldl"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


def preload_for(binary, shim_path):
    """LD_PRELOAD for binary: the sanitizer runtimes it links first, then the shim."""
    r = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    runtimes = re.findall(r"=>\s*(\S*lib(?:asan|ubsan)\.so[^\s]*)", r.stdout)
    return ":".join(runtimes + [str(shim_path)])


class _Http10(http.client.HTTPConnection):
    _http_vsn = 10
    _http_vsn_str = "HTTP/1.0"


def post(url, body):
    """One HTTP/1.0 request on a connection of its own: the event front
    passes HTTP/1.0 to CivetWeb behind it (urllib's "Connection: close"
    requests it serves itself)."""
    host, rest = url.split("//", 1)[1].split("/", 1)
    h, port = host.split(":")
    conn = _Http10(h, int(port), timeout=30)
    try:
        conn.request("POST", "/" + rest, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


class KeptAlive:
    """A client on one kept-alive connection: the event front serves its
    requests on the producer's async routes itself, where post's (HTTP/1.0)
    go to CivetWeb behind it."""

    def __init__(self, url):
        host, port = url.split("//", 1)[1].split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def __call__(self, url, body):
        path = "/" + url.split("//", 1)[1].split("/", 1)[1]
        self.conn.request("POST", path, body=json.dumps(body).encode(),
                          headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        return r.status, r.read()


def run_producer(workdir, shim_path, noop, threads=6, per_thread=20, keep_alive=False):
    """Starts the producer under the shim with Kafka unreachable, sends events
    from several threads (single events and batches; keep_alive: on one
    kept-alive connection each, else urllib's connection per request), stops
    it; returns (ids answered 202, trace lines, spool directory)."""
    ports = {n: lp.free_port() for n in lp.SERVICES}
    dead_kafka = f"127.0.0.1:{lp.free_port()}"
    env = lp.service_env("producer", ports, {"kafka.brokers": dead_kafka},
                         extra={"kafka.timeout_ms": 1000})
    trace = workdir / "trace.log"
    proc = lp.ServiceProc("producer", env, workdir / "logs" / "producer.log", ports["producer"],
                          cwd=workdir / "producer")
    proc.env.update({"LD_PRELOAD": preload_for(proc.binary, shim_path),
                     "SYNC_TRACE_LOG": str(trace),
                     "SYNC_TRACE_NOOP": "1" if noop else "0"})
    ids, statuses, lock = [], {}, threading.Lock()

    def worker(n):
        send = KeptAlive(proc.url) if keep_alive else post
        for i in range(per_thread):
            if i % 5 == 4:
                status, raw = send(proc.url + "/api/logs/batch",
                                   [{"message": f"fsync {n}/{i}/{k}", "service": "dur"}
                                    for k in range(4)])
                got = [r["id"] for r in json.loads(raw).get("results", []) if "id" in r] \
                    if status in (202, 207) else []
            else:
                status, raw = send(proc.url + "/api/logs",
                                   {"message": f"fsync {n}/{i}", "service": "dur"})
                got = [json.loads(raw)["id"]] if status == 202 else []
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 202:
                    ids.extend(got)

    proc.start()
    try:
        proc.wait_ready(30)
        ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        assert set(statuses) == {202}, statuses
    finally:
        rc = proc.stop(timeout=15)
    assert rc == 0, (rc, proc.log_tail(30))
    reports = sanitizer_reports(workdir / "logs")
    assert not reports, reports
    return ids, trace.read_text().splitlines(), workdir / "producer" / "spool"


def check_trace(lines, ids, spool_dir):
    """The violations of "a 202 only after the sync covering its record"
    (strings), and the number of 202 replies checked."""
    syncs, pwrites, replies, streams = [], [], [], {}
    for n, line in enumerate(lines):
        kind, rest = line.split(" ", 1)
        if kind == "SYNC":
            path, size = rest.rsplit(" ", 1)
            syncs.append((n, path, int(size)))
        elif kind == "PWRITE":
            path, off, length = rest.rsplit(" ", 2)
            pwrites.append((n, path, int(off), int(length)))
        elif kind == "SEND":
            fd, data = (rest.split(" ", 1) + [""])[:2]
            data = bytes.fromhex(data)
            if data.startswith(b"HTTP/1."):
                # The first bytes of a reply: it is sent from here on.
                streams[fd] = {"at": n, "data": bytearray(data)}
                replies.append(streams[fd])
            elif fd in streams:
                streams[fd]["data"] += data

    # Where each event lies on disk: its id's position in a segment file.
    where = {}
    for seg in sorted(Path(spool_dir).glob("*.seg")):
        content = seg.read_bytes()
        for m in re.finditer(rb'"id":"([0-9a-f-]{36})"', content):
            where.setdefault(m.group(1).decode(), (str(seg.resolve()), m.start()))

    violations, seen, checked = [], set(), 0
    for rep in replies:
        head, _, body = bytes(rep["data"]).partition(b"\r\n\r\n")
        if not head.split(b" ", 2)[1:2] == [b"202"]:
            continue
        checked += 1
        doc = json.JSONDecoder().raw_decode(body.decode())[0]
        rids = [doc["id"]] if "id" in doc else [r["id"] for r in doc.get("results", [])
                                                  if "id" in r]
        for rid in rids:
            # A reply CivetWeb wrote goes out twice (CivetWeb to the event
            # front's tunnel, then the front to the client): the first,
            # the earliest, is the one checked.
            if rid in seen:
                continue
            seen.add(rid)
            if rid not in where:
                violations.append(f"202 for {rid}, which is in no spool segment")
                continue
            path, pos = where[rid]
            # The pwrite that put it there, before the reply.
            pw = [p for p in pwrites if p[0] < rep["at"] and p[1] == path
                  and p[2] <= pos < p[2] + p[3]]
            if not pw:
                violations.append(f"202 for {rid} before any pwrite of its record")
                continue
            at, _, off, length = pw[-1]
            covered = [s for s in syncs if at < s[0] < rep["at"] and s[1] == path
                       and s[2] >= off + length]
            if not covered:
                violations.append(f"202 for {rid} (trace line {rep['at']}) with no sync of "
                                  f"{Path(path).name} covering bytes {off}..{off + length} "
                                  f"(written at line {at}) before it")
    unseen = set(ids) - seen
    assert not unseen, (f"{len(unseen)} ids answered 202 are in no reply the shim saw: "
                        "the trace misses the producer's socket writes")
    return violations, checked


@pytest.mark.parametrize("keep_alive", [False, True], ids=["civetweb", "front"])
def test_every_spool_202_follows_the_fdatasync_of_its_record(shim, tmp_path, keep_alive):
    ids, lines, spool = run_producer(tmp_path, shim, noop=False, keep_alive=keep_alive)
    assert len(ids) >= 100, len(ids)
    violations, checked = check_trace(lines, ids, spool)
    assert not violations, f"{len(violations)} of {len(ids)} events:\n" + "\n".join(violations[:10])
    nsync = sum(1 for line in lines if line.startswith("SYNC "))
    print(f"\n{len(ids)} events answered 202 in {checked} replies, "
          f"each after the fdatasync covering its record ({nsync} syncs)")


@pytest.mark.parametrize("keep_alive", [False, True], ids=["civetweb", "front"])
def test_the_check_fails_when_fdatasync_is_a_no_op(shim, tmp_path, keep_alive):
    ids, lines, spool = run_producer(tmp_path, shim, noop=True, threads=2, per_thread=10,
                                     keep_alive=keep_alive)
    assert ids
    violations, checked = check_trace(lines, ids, spool)
    assert checked > 0
    assert len(violations) == len(ids), (len(violations), len(ids), violations[:3])
    assert all("no sync" in v for v in violations), violations[:3]
    print(f"\nfdatasync a no-op: all {len(ids)} events answered 202 reported, e.g. {violations[0]}")
