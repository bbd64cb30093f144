"""test_slowloris.py - slow clients starve no service (issue 14, item 4).

On every service port, 200 connections each send half a request head and
stall.  A fresh connection's GET /health/live must still be answered within
1 s, and the stalled connections must be closed after the request (head)
timeout, with a 408 reply: each of them has a request under way, so a reply
is due.  With CivetWeb alone on the port (a worker thread per connection)
the stalled clients hold every worker and the health probe waits; the event
front holds them on its loops without a thread each.
"""

import selectors
import socket
import time

SERVICES = ["gateway", "producer", "enricher", "consumer", "metadata", "generator"]
STALLED = 200
HALF_HEAD = b"GET /health/live HTTP/1.1\r\nHost: x\r\nUser-Agent: slow"
# The services' default request timeout is 10 s (the gateway's
# http.request_timeout_ms too); the stalled connections must be gone by then
# plus this margin.
HEAD_TIMEOUT_S = 10.0
MARGIN_S = 8.0


def _stall(port, n):
    """n connections to port, each having sent HALF_HEAD."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(HALF_HEAD)
        s.setblocking(False)
        socks.append(s)
    return socks


def _live_within(port, limit_s):
    """Seconds GET /health/live took on a fresh connection, or None when no
    whole 200 came within limit_s."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=limit_s) as s:
            s.settimeout(max(0.05, limit_s - (time.monotonic() - t0)))
            s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            got = b""
            while b"\r\n\r\n" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
    except OSError:
        return None
    took = time.monotonic() - t0
    if not got.startswith(b"HTTP/1.1 200") or took > limit_s:
        return None
    return took


def _drain(stalled, deadline):
    """Reads every stalled connection until it closes or deadline passes;
    returns {sock: bytes received} and the set of those still open."""
    got = {s: b"" for s in stalled}
    sel = selectors.DefaultSelector()
    for s in stalled:
        sel.register(s, selectors.EVENT_READ)
    open_ = set(stalled)
    while open_ and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                chunk = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                got[s] += chunk
            else:
                sel.unregister(s)
                open_.discard(s)
    sel.close()
    return got, open_


def test_half_heads_do_not_starve_health(services):
    started = services(*SERVICES)
    assert set(started) == set(SERVICES)
    stalled = {}
    try:
        for name in SERVICES:
            stalled[name] = _stall(services.ports[name], STALLED)
        t_stalled = time.monotonic()

        slow = {}
        for name in SERVICES:
            took = _live_within(services.ports[name], 1.0)
            if took is None:
                slow[name] = "no 200 within 1 s"
        assert not slow, f"/health/live starved by {STALLED} stalled clients: {slow}"

        deadline = t_stalled + HEAD_TIMEOUT_S + MARGIN_S
        problems = {}
        for name in SERVICES:
            got, still_open = _drain(stalled[name], deadline)
            no_408 = sum(1 for b in got.values() if not b.startswith(b"HTTP/1.1 408"))
            if still_open or no_408:
                problems[name] = (f"{len(still_open)} of {STALLED} still open, "
                                  f"{no_408} closed without a 408")
        assert not problems, f"stalled connections after the head timeout: {problems}"
    finally:
        for socks in stalled.values():
            for s in socks:
                s.close()
