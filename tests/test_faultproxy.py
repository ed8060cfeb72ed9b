"""FaultProxy (dvid_store.testing.faultproxy) in front of the real server: what reaches the wire.

Clients here are ``http.client`` and raw sockets, so that every byte, header and
reset the proxy sends is seen as it is; ``requests`` where redirects are followed.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import requests

from dvid_store import Node
from dvid_store.blocks import BlockIO
from dvid_store.testing import DvidServer, Fault, FaultProxy


# ------------------------------------------------------------------ helpers
@pytest.fixture
def kv_base(dvid_node: Node) -> str:
    """``/api/node/<uuid>/kv``: a fresh keyvalue instance."""
    dvid_node.create_instance("keyvalue", "kv")
    return f"/api/node/{dvid_node.uuid}/kv"


@contextlib.contextmanager
def connection(proxy: FaultProxy, timeout: float = 10.0) -> Iterator[http.client.HTTPConnection]:
    conn = http.client.HTTPConnection(proxy.address, timeout=timeout)
    try:
        yield conn
    finally:
        conn.close()


def exchange(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None):
    """One request on ``conn``: (response, body)."""
    conn.request(method, path, body=body)
    response = conn.getresponse()
    return response, response.read()


def direct(server: DvidServer, method: str, path: str, body: bytes | None = None) -> requests.Response:
    """The same request straight to DVID, bypassing the proxy."""
    with requests.Session() as session:
        return session.request(method, server.url + path, data=body, timeout=30)


def raw(proxy: FaultProxy, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send raw bytes, read until the proxy closes: (status line, headers by lower-case name, body bytes)."""
    host, port = proxy.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = bytearray()
        while chunk := sock.recv(1 << 16):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def get_request(path: str, *, close: bool = False) -> bytes:
    """A GET as raw bytes; ``close``: asking the proxy to close after answering."""
    connection = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: dvid\r\n{connection}\r\n".encode()


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """Decode a chunked body: (data, whether it ended with the terminating chunk)."""
    data, pos = bytearray(), 0
    while pos < len(body):
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end], 16)
        if size == 0:
            assert body[end:] == b"\r\n\r\n", "bytes after the terminating chunk"
            return bytes(data), True
        data += body[end + 2 : end + 2 + size]
        assert body[end + 2 + size : end + 4 + size] == b"\r\n"
        pos = end + 4 + size
    return bytes(data), False


def records(body: bytes) -> list[bytes]:
    """Split a DVID block-record stream; fails unless it ends exactly on a record boundary."""
    out, pos = [], 0
    while pos < len(body):
        assert pos + 16 <= len(body), "a record header is cut"
        n = struct.unpack_from("<i", body, pos + 12)[0]
        assert pos + 16 + n <= len(body), "a record payload is cut"
        out.append(body[pos : pos + 16 + n])
        pos += 16 + n
    return out


def store(server: DvidServer, kv_base: str, key: str, value: bytes) -> None:
    assert direct(server, "POST", f"{kv_base}/key/{key}", value).status_code == 200


def timed(function, *args):
    start = time.monotonic()
    result = function(*args)
    return time.monotonic() - start, result


# --------------------------------------------------------------- forwarding
def test_get_post_head_delete_on_one_kept_alive_connection(
    dvid_fault_proxy: FaultProxy, dvid_server: DvidServer, kv_base: str
) -> None:
    value = bytes(range(256)) * 40
    with connection(dvid_fault_proxy) as conn:
        response, body = exchange(conn, "POST", f"{kv_base}/key/k", value)
        assert response.status == 200
        sock = conn.sock
        assert sock is not None
        response, body = exchange(conn, "GET", f"{kv_base}/key/k")
        same = direct(dvid_server, "GET", f"{kv_base}/key/k")
        assert (response.status, body) == (200, value) == (same.status_code, same.content)
        assert response.getheader("Content-Type") == same.headers["Content-Type"] == "application/octet-stream"
        assert response.getheader("Content-Length") == str(len(value))
        assert response.getheader("Transfer-Encoding") is None
        response, body = exchange(conn, "HEAD", f"{kv_base}/key/k")
        assert (response.status, body) == (200, b"")
        response, body = exchange(conn, "GET", f"{kv_base}/info")
        assert response.status == 200 and json.loads(body)["Base"]["Name"] == "kv"
        assert response.getheader("Content-Type") == "application/json"
        response, body = exchange(conn, "DELETE", f"{kv_base}/key/k")
        assert response.status == 200
        response, body = exchange(conn, "GET", f"{kv_base}/key/k")
        same = direct(dvid_server, "GET", f"{kv_base}/key/k")
        assert response.status == same.status_code == 404
        assert body == same.content
        response, _ = exchange(conn, "HEAD", f"{kv_base}/key/k")
        assert response.status == 404
        assert conn.sock is sock, "the proxy closed a kept-alive connection"
    assert [(r.method, r.upstream_status, r.fault) for r in dvid_fault_proxy.log] == [
        ("POST", 200, None),
        ("GET", 200, None),
        ("HEAD", 200, None),
        ("GET", 200, None),
        ("DELETE", 200, None),
        ("GET", 404, None),
        ("HEAD", 404, None),
    ]
    assert dvid_fault_proxy.faults_applied == 0


def test_chunked_request_body_and_get_with_a_body(
    dvid_fault_proxy: FaultProxy, dvid_server: DvidServer, kv_base: str
) -> None:
    with connection(dvid_fault_proxy) as conn:
        conn.request("POST", f"{kv_base}/key/a", body=iter([b"chun", b"", b"ked"]), encode_chunked=True)
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"")
        # DVID's batch read takes the keys as the body of a GET.
        response, body = exchange(conn, "GET", f"{kv_base}/keyvalues?json=true", json.dumps(["a"]).encode())
    same = direct(dvid_server, "GET", f"{kv_base}/keyvalues?json=true", json.dumps(["a"]).encode())
    assert response.status == 200
    assert body == same.content == b'{"a":chunked}'


def test_large_post_round_trip(dvid_fault_proxy: FaultProxy, dvid_server: DvidServer, kv_base: str) -> None:
    value = np.random.default_rng(7).bytes(64 << 20)
    with requests.Session() as session:
        put = session.post(f"{dvid_fault_proxy.url}{kv_base}/key/big", data=value, timeout=60)
        assert put.status_code == 200
        got = session.get(f"{dvid_fault_proxy.url}{kv_base}/key/big", timeout=60)
    assert got.status_code == 200 and got.headers["Content-Length"] == str(64 << 20)
    assert got.content == value
    assert direct(dvid_server, "GET", f"{kv_base}/key/big").content == value


def test_dvid_client_through_the_fixture(dvid_fault_proxy: FaultProxy, dvid_server: DvidServer) -> None:
    from dvid_store import DvidClient

    client = DvidClient(dvid_fault_proxy.url, admin_token=dvid_server.admin_token, app="pytest")
    node = client.create_repo(f"through-proxy-{os.getpid()}-{time.monotonic_ns()}")
    node.create_instance("keyvalue", "kv")
    kv = node.keyvalue("kv")
    kv.put("x", b"through the proxy")
    assert kv.get("x") == b"through the proxy"
    assert all(r.fault is None and r.upstream_status == 200 for r in dvid_fault_proxy.log)
    assert direct(dvid_server, "GET", f"/api/node/{node.uuid}/kv/key/x").content == b"through the proxy"


def test_expect_continue_and_http_1_0(dvid_fault_proxy: FaultProxy, dvid_server: DvidServer, kv_base: str) -> None:
    host, port = dvid_fault_proxy.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {kv_base}/key/e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        assert sock.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")
    assert direct(dvid_server, "GET", f"{kv_base}/key/e").content == b"hello"
    # HTTP/1.0 without keep-alive: the proxy answers and closes (raw() reads to the end).
    status, headers, body = raw(dvid_fault_proxy, b"GET /api/heartbeat HTTP/1.0\r\n\r\n")
    assert (status, headers["connection"], headers["content-length"]) == ("HTTP/1.1 200 OK", "close", str(len(body)))


def test_unreachable_upstream_is_a_502() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with FaultProxy(f"http://127.0.0.1:{port}/") as proxy, connection(proxy) as conn:
        response, body = exchange(conn, "GET", "/api/heartbeat")
        assert response.status == 502 and b"did not answer" in body
        response, _ = exchange(conn, "GET", "/api/heartbeat")  # the connection survives
        assert response.status == 502
    assert [(r.fault, r.upstream_status) for r in proxy.log] == [(None, None), (None, None)]


def test_construction_and_lifecycle(dvid_server: DvidServer) -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(dvid_server.url, host="0.0.0.0")
    with pytest.raises(ValueError, match="host:port"):
        FaultProxy("nonsense")
    with pytest.raises(ValueError, match="plain http"):
        FaultProxy("https://127.0.0.1:1")
    proxy = FaultProxy(dvid_server.url.removeprefix("http://"))
    with pytest.raises(RuntimeError, match="not running"):
        proxy.url  # noqa: B018
    with proxy:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", proxy.url)
        assert proxy.url == f"http://{proxy.address}"
        assert requests.get(proxy.url + "/api/heartbeat", timeout=10).status_code == 200
    assert not proxy.running
    proxy.stop()  # twice is fine


# ------------------------------------------------------------------- rules
def test_times_match_methods_order_and_clear(dvid_fault_proxy: FaultProxy, kv_base: str) -> None:
    proxy = dvid_fault_proxy
    twice = proxy.inject("status_500", times=2, match="/key/", methods={"get"})
    with connection(proxy) as conn:
        assert exchange(conn, "POST", f"{kv_base}/key/a", b"v")[0].status == 200  # method does not match
        assert exchange(conn, "GET", f"{kv_base}/keys")[0].status == 200  # path does not match
        assert [exchange(conn, "GET", f"{kv_base}/key/a")[0].status for _ in range(3)] == [500, 500, 200]
        assert (twice.applied, twice.remaining) == (2, 0)

        # In order: the first matching rule with applications left.
        proxy.inject(Fault.STATUS, status=429, times=1, match=re.compile(r"/key/a$"))
        proxy.inject("status_503", times=None, match=lambda method, path: path.endswith("/key/a"))
        statuses = [exchange(conn, "GET", f"{kv_base}/key/a")[0].status for _ in range(4)]
        assert statuses == [429, 503, 503, 503]
        assert exchange(conn, "GET", f"{kv_base}/key/b")[0].status == 404  # forwarded
        proxy.clear()
        assert proxy.rules == []
        assert exchange(conn, "GET", f"{kv_base}/key/a")[0].status == 200
    assert proxy.faults_applied == 6
    faults = [r.fault for r in proxy.log]
    assert faults == [None, None, "status_500", "status_500", None, "status", "status_503", "status_503",
                      "status_503", None, None]
    proxy.clear(log=True)
    assert proxy.log == [] and proxy.faults_applied == 0


def test_inject_refuses_what_it_cannot_do(dvid_fault_proxy: FaultProxy) -> None:
    proxy = dvid_fault_proxy
    with pytest.raises(ValueError, match="unknown fault kind"):
        proxy.inject("explode")
    with pytest.raises(TypeError, match="takes at"):
        proxy.inject("cut_length", seconds=1)
    with pytest.raises(ValueError, match="fraction"):
        proxy.inject("cut_length", at=1.5)
    with pytest.raises(ValueError, match="times"):
        proxy.inject("stall", times=0)
    with pytest.raises(ValueError, match="status"):
        proxy.inject("redirect", status=200)
    with pytest.raises(TypeError, match="status_503"):
        proxy.inject("status_503", status=500)
    with pytest.raises(ValueError, match="bytes per second"):
        proxy.inject("trickle", rate=0)
    with pytest.raises(ValueError):
        proxy.latency = -1
    with pytest.raises(ValueError):
        proxy.bandwidth = 0
    assert proxy.rules == []


# ----------------------------------------------------------- before/after
def test_reset_before_stores_nothing(dvid_fault_proxy: FaultProxy, dvid_server: DvidServer, kv_base: str) -> None:
    dvid_fault_proxy.inject("reset_before", methods={"POST"})
    with connection(dvid_fault_proxy) as conn, pytest.raises(ConnectionResetError):
        exchange(conn, "POST", f"{kv_base}/key/k", b"value")
    assert direct(dvid_server, "GET", f"{kv_base}/key/k").status_code == 404
    assert [(r.fault, r.upstream_status) for r in dvid_fault_proxy.log] == [("reset_before", None)]


def test_reset_after_stores_the_value(dvid_fault_proxy: FaultProxy, dvid_server: DvidServer, kv_base: str) -> None:
    dvid_fault_proxy.inject("reset_after", methods={"POST"})
    with connection(dvid_fault_proxy) as conn, pytest.raises(ConnectionResetError):
        exchange(conn, "POST", f"{kv_base}/key/k", b"value")
    assert direct(dvid_server, "GET", f"{kv_base}/key/k").content == b"value"
    assert [(r.fault, r.upstream_status) for r in dvid_fault_proxy.log] == [("reset_after", 200)]


def test_stall_answers_nothing_for_that_long(dvid_fault_proxy: FaultProxy, kv_base: str) -> None:
    dvid_fault_proxy.inject("stall", seconds=0.3)
    with connection(dvid_fault_proxy) as conn:
        start = time.monotonic()
        with pytest.raises(http.client.RemoteDisconnected):
            exchange(conn, "GET", f"{kv_base}/keys")
        assert time.monotonic() - start >= 0.3
    assert [(r.fault, r.upstream_status) for r in dvid_fault_proxy.log] == [("stall", None)]


def test_a_stall_ends_when_its_client_hangs_up(dvid_fault_proxy: FaultProxy, kv_base: str) -> None:
    # Stalls last until stop() by default; a client that timed out and left must not
    # keep a socket and a thread of the proxy for the rest of a long fault run.
    dvid_fault_proxy.inject("stall", times=None)
    for _ in range(3):
        with connection(dvid_fault_proxy, timeout=0.2) as conn, pytest.raises(TimeoutError):
            exchange(conn, "GET", f"{kv_base}/keys")
    assert len(dvid_fault_proxy.log) == 3
    deadline = time.monotonic() + 10
    while dvid_fault_proxy.open_connections and time.monotonic() < deadline:
        threading.Event().wait(0.02)
    assert dvid_fault_proxy.open_connections == 0
    dvid_fault_proxy.clear()
    with connection(dvid_fault_proxy) as conn:
        assert exchange(conn, "GET", "/api/heartbeat")[0].status == 200


def test_accept_survives_a_client_that_gave_up_in_the_queue(
    dvid_fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # accept() fails with ECONNABORTED when a queued client reset first (and with
    # EMFILE when descriptors run out for a moment): later clients must still get in.
    real_accept = socket.socket.accept
    failures = [OSError(errno.ECONNABORTED, "Software caused connection abort"),
                OSError(errno.EMFILE, "Too many open files")]

    def flaky_accept(self: socket.socket) -> tuple[socket.socket, object]:
        if failures:
            raise failures.pop(0)
        return real_accept(self)

    monkeypatch.setattr(socket.socket, "accept", flaky_accept)
    with connection(dvid_fault_proxy) as conn:  # the accept loop is waiting in the real accept already
        assert exchange(conn, "GET", "/api/heartbeat")[0].status == 200
    for _ in range(3):
        with connection(dvid_fault_proxy) as conn:
            assert exchange(conn, "GET", "/api/heartbeat")[0].status == 200
    assert not failures


def test_stop_ends_stalls_trickles_and_idle_connections(dvid_server: DvidServer) -> None:
    proxy = FaultProxy(dvid_server.url).start()
    reached: dict[str, threading.Event] = {"stall": threading.Event(), "trickle": threading.Event()}

    def arrived(name: str):
        def match(method: str, path: str) -> bool:
            if name in path:
                reached[name].set()
                return True
            return False

        return match

    proxy.inject("stall", match=arrived("stall"))  # until stop()
    proxy.inject("trickle", rate=1, match=arrived("trickle"))
    errors: dict[str, BaseException] = {}

    def ask(name: str) -> None:
        with connection(proxy, timeout=30) as conn:
            try:
                exchange(conn, "GET", f"/api/server/info?{name}")
            except (OSError, http.client.HTTPException) as exc:
                errors[name] = exc

    clients = [threading.Thread(target=ask, args=(name,)) for name in reached]
    with connection(proxy) as idle:
        assert exchange(idle, "GET", "/api/heartbeat")[0].status == 200
        for thread in clients:
            thread.start()
        for event in reached.values():
            assert event.wait(10)
        address = proxy.address.rsplit(":", 1)
        stopper = threading.Thread(target=proxy.stop)
        stopper.start()
        stopper.join(10)
        assert not stopper.is_alive(), "stop() hung"
        for thread in clients:
            thread.join(10)
            assert not thread.is_alive()
        assert set(errors) == {"stall", "trickle"}
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            exchange(idle, "GET", "/api/heartbeat")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address[0], int(address[1])), timeout=1).close()


# --------------------------------------------------------------------- cuts
@pytest.fixture
def value_path(dvid_server: DvidServer, kv_base: str) -> tuple[str, bytes]:
    """A stored keyvalue of 10 000 bytes: (its path, the value)."""
    value = np.random.default_rng(3).bytes(10_000)
    store(dvid_server, kv_base, "v", value)
    return f"{kv_base}/key/v", value


def test_cut_length(dvid_fault_proxy: FaultProxy, value_path: tuple[str, bytes]) -> None:
    path, value = value_path
    dvid_fault_proxy.inject("cut_length")
    status, headers, body = raw(dvid_fault_proxy, get_request(path))
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-length"] == "10000" and "transfer-encoding" not in headers
    assert body == value[:5000]
    dvid_fault_proxy.inject("cut_length", at=1234)
    with connection(dvid_fault_proxy) as conn, pytest.raises(http.client.IncompleteRead) as info:
        exchange(conn, "GET", path)
    assert info.value.partial == value[:1234]


def test_cut_chunked_broken(dvid_fault_proxy: FaultProxy, value_path: tuple[str, bytes]) -> None:
    path, value = value_path
    dvid_fault_proxy.inject("cut_chunked_broken", at=0.25)
    status, headers, body = raw(dvid_fault_proxy, get_request(path))
    assert status == "HTTP/1.1 200 OK"
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    assert dechunk(body) == (value[:2500], False)
    dvid_fault_proxy.inject("cut_chunked_broken", at=100)
    with connection(dvid_fault_proxy) as conn, pytest.raises(http.client.IncompleteRead):
        exchange(conn, "GET", path)


def test_cut_chunked_clean_is_a_valid_short_answer(
    dvid_fault_proxy: FaultProxy, value_path: tuple[str, bytes]
) -> None:
    path, value = value_path
    dvid_fault_proxy.inject("cut_chunked_clean", at=3000)
    with connection(dvid_fault_proxy) as conn:
        response, body = exchange(conn, "GET", path)
        sock = conn.sock
        assert response.status == 200 and body == value[:3000]
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.getheader("Content-Type") == "application/octet-stream"
        assert exchange(conn, "GET", path)[1] == value  # same connection, kept alive
        assert conn.sock is sock
        dvid_fault_proxy.inject("cut_chunked_clean", at=0.1, close=True)
        response, body = exchange(conn, "GET", path)
        assert body == value[:1000] and response.getheader("Connection") == "close"


def test_cut_records_ends_on_a_block_boundary(
    dvid_fault_proxy: FaultProxy, dvid_server: DvidServer, dvid_node: Node
) -> None:
    dvid_node.create_instance("uint8blk", "gray")
    io = BlockIO.open(dvid_node, "gray")
    io.write({(0, 0, i): np.full(io.block_shape, i + 1, np.uint8) for i in range(5)})
    path = (
        f"/api/node/{dvid_node.uuid}/gray/specificblocks?compression=uncompressed"
        "&blocks=0,0,0,1,0,0,2,0,0,3,0,0,4,0,0"
    )
    every = set(records(direct(dvid_server, "GET", path).content))
    assert len(every) == 5

    dvid_fault_proxy.inject("cut_records")  # half, rounded down
    status, headers, body = raw(dvid_fault_proxy, get_request(path, close=True))
    assert status == "HTTP/1.1 200 OK" and headers["transfer-encoding"] == "chunked"
    data, terminated = dechunk(body)
    assert terminated
    sent = records(data)
    assert len(sent) == 2 and set(sent) <= every

    dvid_fault_proxy.inject("cut_records", records=4)
    dvid_fault_proxy.inject("cut_records", records=99)
    with connection(dvid_fault_proxy) as conn:
        four = records(exchange(conn, "GET", path)[1])
        assert len(four) == 4 and set(four) <= every
        assert set(records(exchange(conn, "GET", path)[1])) == every

        # Not a record stream: cut at `at` bytes instead.
        dvid_node.create_instance("keyvalue", "kv")
        text = b"this is not a stream of block records at all"
        store(dvid_server, f"/api/node/{dvid_node.uuid}/kv", "t", text)
        dvid_fault_proxy.inject("cut_records", at=7)
        response, body = exchange(conn, "GET", f"/api/node/{dvid_node.uuid}/kv/key/t")
        assert response.status == 200 and body == text[:7]


def test_cut_close_looks_like_the_end(dvid_fault_proxy: FaultProxy, value_path: tuple[str, bytes]) -> None:
    path, value = value_path
    dvid_fault_proxy.inject("cut_close", at=4321)
    status, headers, body = raw(dvid_fault_proxy, get_request(path))
    assert status == "HTTP/1.1 200 OK" and headers["connection"] == "close"
    assert "content-length" not in headers and "transfer-encoding" not in headers
    assert body == value[:4321]
    dvid_fault_proxy.inject("cut_close")
    with connection(dvid_fault_proxy) as conn:
        response, body = exchange(conn, "GET", path)  # no error: the short body is all there is
    assert response.status == 200 and body == value[:5000]


# ----------------------------------------------------------------- answers
def test_status_answers_without_forwarding(
    dvid_fault_proxy: FaultProxy, dvid_server: DvidServer, kv_base: str
) -> None:
    proxy = dvid_fault_proxy
    proxy.inject("status_503")
    proxy.inject("status_500", body="boom")
    proxy.inject("status", status=429, body=b"slow down", headers={"Retry-After": "2"})
    with connection(proxy) as conn:
        response, body = exchange(conn, "POST", f"{kv_base}/key/k", b"value")
        assert (response.status, response.reason) == (503, "Service Unavailable")
        assert response.getheader("Content-Type") == "text/plain; charset=utf-8" and b"503" in body
        response, body = exchange(conn, "POST", f"{kv_base}/key/k", b"value")
        assert (response.status, body) == (500, b"boom")
        response, body = exchange(conn, "POST", f"{kv_base}/key/k", b"value")
        assert (response.status, body, response.getheader("Retry-After")) == (429, b"slow down", "2")
        assert direct(dvid_server, "GET", f"{kv_base}/key/k").status_code == 404
        assert exchange(conn, "POST", f"{kv_base}/key/k", b"value")[0].status == 200
    assert [r.upstream_status for r in proxy.log] == [None, None, None, 200]


def test_html_pages(dvid_fault_proxy: FaultProxy, kv_base: str) -> None:
    dvid_fault_proxy.inject("html_503")
    dvid_fault_proxy.inject("html_200")
    with connection(dvid_fault_proxy) as conn:
        response, body = exchange(conn, "GET", f"{kv_base}/key/missing")
        assert response.status == 503 and response.getheader("Content-Type").startswith("text/html")
        assert body.startswith(b"<html>")
        response, body = exchange(conn, "GET", f"{kv_base}/key/missing")  # 404 at the server
        assert response.status == 200 and response.getheader("Content-Type") == "text/html; charset=utf-8"
        assert b"Sign in" in body
    assert [(r.fault, r.upstream_status) for r in dvid_fault_proxy.log] == [("html_503", None), ("html_200", None)]


def test_garbage(dvid_fault_proxy: FaultProxy, kv_base: str) -> None:
    dvid_fault_proxy.inject("garbage", size=1000, seed=5, times=2)
    with connection(dvid_fault_proxy) as conn:
        first = exchange(conn, "GET", f"{kv_base}/key/missing")
        second = exchange(conn, "GET", f"{kv_base}/key/missing")
    assert first[0].status == 200 and first[0].getheader("Content-Type") == "application/octet-stream"
    assert len(first[1]) == 1000 and first[1] == second[1]  # seeded


def test_redirects(dvid_fault_proxy: FaultProxy, dvid_server: DvidServer, kv_base: str) -> None:
    proxy = dvid_fault_proxy
    store(dvid_server, kv_base, "k", b"value")
    proxy.inject("redirect")
    with requests.Session() as session:
        got = session.get(f"{proxy.url}{kv_base}/key/k?x=1", timeout=10)
        assert got.content == b"value"
        assert [(r.status_code, r.headers["Location"]) for r in got.history] == [
            (301, f"{proxy.url}{kv_base}/key/k?x=1")
        ]
        # 307 keeps the method and body: the POST reaches the server.
        proxy.inject("redirect", status=307, methods={"POST"})
        posted = session.post(f"{proxy.url}{kv_base}/key/new", data=b"posted", timeout=10)
        assert posted.status_code == 200 and [r.status_code for r in posted.history] == [307]
        proxy.inject("redirect", status=302, location="http://elsewhere.invalid/x")
        moved = session.get(f"{proxy.url}{kv_base}/key/k", allow_redirects=False, timeout=10)
        assert (moved.status_code, moved.headers["Location"]) == (302, "http://elsewhere.invalid/x")
    assert direct(dvid_server, "GET", f"{kv_base}/key/new").content == b"posted"
    assert [(r.method, r.fault) for r in proxy.log] == [
        ("GET", "redirect"), ("GET", None), ("POST", "redirect"), ("POST", None), ("GET", "redirect")
    ]


# ------------------------------------------------------------------ timing
def test_latency_fault_and_attribute_slow_requests_down(dvid_fault_proxy: FaultProxy, kv_base: str) -> None:
    proxy = dvid_fault_proxy
    with connection(proxy) as conn:
        # Lower bounds only: an injected delay cannot make a request faster,
        # while comparing against an undelayed request races the machine's load.
        exchange(conn, "GET", f"{kv_base}/keys")
        proxy.inject("latency", seconds=0.3)
        delayed, (response, _) = timed(exchange, conn, "GET", f"{kv_base}/keys")
        assert response.status == 200
        assert delayed >= 0.3
        proxy.latency = 0.2
        slow, (response, _) = timed(exchange, conn, "GET", f"{kv_base}/keys")
        assert response.status == 200 and slow >= 0.2
    assert [r.fault for r in proxy.log] == [None, "latency", None]


def test_trickle_and_bandwidth_slow_bodies_down(
    dvid_fault_proxy: FaultProxy, dvid_server: DvidServer, kv_base: str
) -> None:
    proxy = dvid_fault_proxy
    small, large = b"t" * 1000, np.random.default_rng(4).bytes(200_000)
    store(dvid_server, kv_base, "small", small)
    store(dvid_server, kv_base, "large", large)
    with connection(proxy) as conn:
        exchange(conn, "GET", f"{kv_base}/key/small")
        proxy.inject("trickle", rate=2000)
        trickled, (response, body) = timed(exchange, conn, "GET", f"{kv_base}/key/small")
        assert body == small and response.getheader("Content-Length") == "1000"
        assert trickled >= 0.4

        _, body = exchange(conn, "GET", f"{kv_base}/key/large")
        assert body == large
        proxy.bandwidth = 400_000
        capped, (_, body) = timed(exchange, conn, "GET", f"{kv_base}/key/large")
        assert body == large
        assert capped >= 0.4
        proxy.bandwidth = None
