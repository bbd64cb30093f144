"""test_http10.py - HTTP/1.0 requests are served by the event front (issue 14).

An HTTP/1.0 POST /api/logs, with and without "Connection: keep-alive", sent
on a raw socket to the producer and through the gateway, is answered 202
with "Connection: close", the connection closed after the reply, and its
event is on the raw topic, as for HTTP/1.1.

Each service runs with one HTTP worker thread, held by a chunked POST whose
body never ends (chunked bodies are CivetWeb's to read).  A request passed
to CivetWeb would wait behind it for longer than the client waits for its
reply (REPLY_TIMEOUT_S); one the front serves needs no worker.
"""

import json
import socket
import uuid

from test_gateway import gateway_config, need
from test_spool import topic_values

KEY = "h10-key-0001"
VARIANTS = (b"", b"Connection: keep-alive\r\n", b"Connection: Keep-Alive\r\n")
# Below the 10 s in which the producer's CivetWeb gives up on the held body
# (and the gateway's http.request_timeout_ms, raised here): a request
# waiting for the held worker gets no reply in time.
REPLY_TIMEOUT_S = 5.0


def _hold_worker(port, headers=b""):
    """A chunked POST /api/logs cut off inside its body: CivetWeb's worker
    reading it is held until the socket closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /api/logs HTTP/1.1\r\nHost: x\r\n" + headers +
              b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"4\r\n{\"a\"")
    return s


def _http10(port, body, extra=b""):
    """One HTTP/1.0 POST /api/logs on a raw socket: the whole reply, read up
    to the server's close."""
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT_S) as s:
        s.sendall(b"POST /api/logs HTTP/1.0\r\n" + extra +
                  b"Content-Type: application/json\r\nContent-Length: " +
                  str(len(data)).encode() + b"\r\n\r\n" + data)
        out = b""
        while True:
            chunk = s.recv(65536)  # a timeout here is the failure looked for
            if not chunk:
                return out.decode()
            out += chunk


def _check(reply, tag):
    head, _, body = reply.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 202 "), (tag, reply)
    assert "\r\nConnection: close" in head, (tag, reply)
    assert "keep-alive" not in head.lower(), (tag, reply)
    return json.loads(body)["id"]


def _run(port, tag, extra=b""):
    ids = set()
    for i, variant in enumerate(VARIANTS):
        ev = {"service": "http10", "level": "INFO", "message": f"{tag} {i} {uuid.uuid4().hex}"}
        ids.add(_check(_http10(port, ev, extra + variant), f"{tag} {i}"))
    return ids


def test_http10_on_the_producer_and_the_gateway(services, topics, infra, kafkatool):
    need("gateway", "producer")
    services("producer", "gateway", topics=topics, log_level="info",
             config={"producer": {"http.threads": 1},
                     "gateway": gateway_config(services, topics,
                                               **{"auth.keys": f"{KEY}:h10:ingest",
                                                  "http.threads": 1,
                                                  "http.request_timeout_ms": 60000})})
    ids = set()
    held = _hold_worker(services.ports["producer"])
    try:
        ids |= _run(services.ports["producer"], "producer")
    finally:
        held.close()
    auth = b"X-API-Key: " + KEY.encode() + b"\r\n"
    held = _hold_worker(services.ports["gateway"], auth)
    try:
        ids |= _run(services.ports["gateway"], "gateway", auth)
    finally:
        held.close()
    assert len(ids) == 2 * len(VARIANTS)
    found = {json.loads(v).get("id")
             for v in topic_values(kafkatool, infra.kafka.bootstrap, topics["raw"], wait_ms=5000)}
    assert ids <= found, ids - found
