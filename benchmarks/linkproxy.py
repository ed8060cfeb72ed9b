"""A loopback relay that makes a local DVID look far away: latency per request, a shared bandwidth cap.

Real DVID servers sit 1–80 ms away; a benchmark against a server on the same machine
sees none of that, and so says nothing about how many requests a client keeps in
flight. :class:`LinkProxy` sits between client and server and models the link:

* ``latency``: every HTTP request waits this long after its headers arrive before it is
  forwarded, i.e. one round trip per request (the answer then streams back at once);
* ``bandwidth``: bytes per second of the whole link, shared by every connection, in
  each direction (a token bucket per direction).

It relays bytes as they come (nothing is buffered whole), so a big answer streams as it
would over a real link, and each client connection gets its own server connection, so
keep-alive behaves as it does without the proxy. The relay runs in a process of its own:
in the benchmark's process its threads would take the interpreter lock from the client
being measured, and the more work a client does in Python the more it would lose. It parses only what it must to see
where a request starts: the request line, headers, and a ``Content-Length`` or chunked
body. One proxy models one link; open another for other settings.

Unlike :class:`dvid_store.testing.FaultProxy`, which reads every answer whole so it can
cut, corrupt or replace it, this proxy never changes a byte.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import threading
import time
from types import TracebackType

__all__ = ["LinkProxy"]

_PIECE = 256 * 1024


class _Bucket:
    """A link direction: hands out send times so that the bytes of every connection together keep to ``rate``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free_at = 0.0

    def take(self, nbytes: int, rate: float | None) -> None:
        if rate is None:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._free_at)
            self._free_at = start + nbytes / rate
            done = self._free_at
        delay = done - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class _Relay:
    """Relay ``127.0.0.1:<port>`` to ``upstream`` (``host:port``) through a modelled link (in this process).

    Parameters
    ----------
    upstream : str
        ``host:port`` (or ``http://host:port``) of the server.
    latency : float
        Seconds each request waits before it is forwarded.
    bandwidth : float, optional
        Bytes per second of the link in each direction; ``None``: unlimited.
    """

    def __init__(self, upstream: str, *, latency: float = 0.0, bandwidth: float | None = None) -> None:
        host, _, port = upstream.split("://")[-1].rstrip("/").rpartition(":")
        self._upstream = (host, int(port))
        self.latency = latency
        self.bandwidth = bandwidth
        self._down = _Bucket()
        self._up = _Bucket()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._accepter = threading.Thread(target=self._accept, name="linkproxy-accept", daemon=True)
        self._accepter.start()

    @property
    def address(self) -> str:
        """``host:port`` to point clients at."""
        host, port = self._listener.getsockname()[:2]
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def close(self) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        self._hang_up(*sockets)

    def __enter__(self) -> _Relay:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ relaying
    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._upstream)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets.update((client, server))
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._answers, args=(server, client), daemon=True).start()

    def _answers(self, server: socket.socket, client: socket.socket) -> None:
        """Server to client: stream as it comes, at the link's rate."""
        try:
            while True:
                data = server.recv(_PIECE)
                if not data:
                    break
                self._down.take(len(data), self.bandwidth)
                client.sendall(data)
        except OSError:
            pass
        finally:
            self._hang_up(client, server)

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        """Client to server: hold each request's start for ``latency``, then stream it on."""
        reader = _Reader(client)
        try:
            while True:
                head = reader.until(b"\r\n\r\n")
                if head is None:
                    break
                arrived = time.monotonic()
                wait = arrived + self.latency - time.monotonic()
                if wait > 0 and self._stopping.wait(wait):
                    break
                self._send(server, head)
                length, chunked = _body_framing(head)
                if chunked:
                    while True:
                        size_line = reader.until(b"\r\n")
                        if size_line is None:
                            return
                        self._send(server, size_line)
                        size = int(size_line.split(b";")[0].strip(), 16)
                        self._relay(reader, server, size + 2)
                        if size == 0:
                            break
                else:
                    self._relay(reader, server, length)
        except (OSError, ValueError):
            pass
        finally:
            self._hang_up(client, server)

    def _relay(self, reader: _Reader, server: socket.socket, nbytes: int) -> None:
        while nbytes > 0:
            data = reader.some(min(nbytes, _PIECE))
            if not data:
                raise OSError("client closed mid-body")
            self._send(server, data)
            nbytes -= len(data)

    def _send(self, sock: socket.socket, data: bytes) -> None:
        self._up.take(len(data), self.bandwidth)
        sock.sendall(data)

    def _hang_up(self, *socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                self._sockets.discard(sock)


class _Reader:
    """Buffered reads from a socket: up to a delimiter, or what is there."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def until(self, delimiter: bytes) -> bytes | None:
        while True:
            end = self._buffer.find(delimiter)
            if end >= 0:
                cut = end + len(delimiter)
                data = bytes(self._buffer[:cut])
                del self._buffer[:cut]
                return data
            more = self._sock.recv(_PIECE)
            if not more:
                return None
            self._buffer += more

    def some(self, limit: int) -> bytes:
        if self._buffer:
            data = bytes(self._buffer[:limit])
            del self._buffer[:limit]
            return data
        return self._sock.recv(limit)


def _body_framing(head: bytes) -> tuple[int, bool]:
    """(Content-Length, chunked?) of a request head."""
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return length, chunked


class LinkProxy:
    """A :class:`_Relay` in a child process: ``127.0.0.1:<port>`` → ``upstream`` through a modelled link.

    Parameters
    ----------
    upstream : str
        ``host:port`` (or ``http://host:port``) of the server.
    latency : float
        Seconds each request waits before it is forwarded.
    bandwidth : float, optional
        Bytes per second of the link in each direction; ``None``: unlimited.
    """

    def __init__(self, upstream: str, *, latency: float = 0.0, bandwidth: float | None = None) -> None:
        self.latency = latency
        self.bandwidth = bandwidth
        command = [sys.executable, __file__, upstream, "--latency", str(latency)]
        if bandwidth is not None:
            command += ["--bandwidth", str(bandwidth)]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line:
            self.close()
            raise RuntimeError(f"the link proxy did not start: {command}")
        self.address = line

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def pid(self) -> int:
        """Process id of the relay (for CPU accounting)."""
        return self._process.pid

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()  # the child serves until its stdin closes
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> LinkProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="relay to UPSTREAM through a modelled link until stdin closes")
    parser.add_argument("upstream")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--bandwidth", type=float, default=None)
    args = parser.parse_args()
    relay = _Relay(args.upstream, latency=args.latency, bandwidth=args.bandwidth)
    print(relay.address, flush=True)
    sys.stdin.read()
    relay.close()


if __name__ == "__main__":
    main()
