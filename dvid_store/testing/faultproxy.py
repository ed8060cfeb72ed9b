"""A fault-injecting HTTP proxy in front of a real DVID server.

:class:`FaultProxy` listens on a loopback port and forwards every request to a real
server (normally the throwaway :class:`~dvid_store.testing.DvidServer`). Rules added
with :meth:`FaultProxy.inject` make chosen requests fail the way real networks,
load balancers and servers fail, on the wire, so that a client's handling of each
failure can be tested without imitating DVID's HTTP API. Benchmarks can model a
far-away server with :attr:`FaultProxy.latency` and :attr:`FaultProxy.bandwidth`.

Every request is read completely (request line, headers, body sized or chunked)
before a rule is chosen, and every forwarded answer is read completely from the
server before anything is sent back, so "before" and "after" faults are exact: the
server either never saw the request or finished it.

Fault kinds
-----------
``latency`` (``seconds=1.0``)
    Wait, then forward. A slow or far-away server, a congested link, a backend
    warming its caches.
``stall`` (``seconds=None``: until :meth:`FaultProxy.stop`)
    Read the request and never answer for that long, then close. A hung worker, a
    server in a long garbage-collection or storage pause, a load balancer holding a
    connection to a dead backend. Only a read timeout gets the client out.
``reset_before``
    Reset the connection (TCP RST) without forwarding: the server did nothing. A
    load balancer or proxy dropping the connection during a backend restart, an
    idle keep-alive connection closed by a middlebox just as it was reused.
    Every request is safe to repeat.
``reset_after``
    Forward, let the server finish, then reset the connection without sending any
    of the answer: the server did the work. A proxy timing out on a slow answer, a
    network partition after the write. Repeating a non-idempotent request repeats
    its effect.
``cut_length`` (``at=0.5``)
    Send the headers with the full ``Content-Length``, then only ``at`` bytes of the
    body (an int: bytes; a float: a fraction of the body), then close. A server
    crash or a dropped connection in the middle of a sized answer; the client can
    tell from the length.
``cut_chunked_broken`` (``at=0.5``)
    Send the body chunked, stop after ``at`` bytes without the terminating chunk,
    close. The same for a streamed answer (DVID streams block data chunked); the
    missing terminator gives it away.
``cut_chunked_clean`` (``at=0.5``, ``close=False``)
    Send ``at`` bytes chunked, then a proper terminating chunk: valid HTTP framing
    around a short body. A server or proxy that hits an error after it started a
    streamed answer can only end the stream; only the content shows it. With
    ``close=True`` the answer says ``Connection: close`` and the connection closes.
``cut_records`` (``records=None``, ``at=0.5``, ``close=False``)
    Like ``cut_chunked_clean``, but the cut falls on a DVID block-record boundary
    (records of little-endian ``int32 x, y, z, n`` and ``n`` bytes): ``records``
    whole records are sent (default: half of them, rounded down). The body parses
    perfectly and just lacks blocks; only counting them catches it. A body that is
    not a record stream is cut at ``at`` bytes instead.
``cut_close`` (``at=0.5``)
    Drop ``Content-Length`` and ``Transfer-Encoding``, say ``Connection: close``,
    send ``at`` bytes and close: a close-delimited body (HTTP/1.0 style, still sent
    by some old proxies) where the cut looks exactly like the end.
``status`` (``status=503``, ``body=None``, ``content_type="text/plain; charset=utf-8"``, ``headers=None``)
    Answer with that status without forwarding: an overloaded server, a load
    balancer without a healthy backend, a restart window. ``headers`` adds headers
    such as ``Retry-After``.
``status_503``, ``status_500`` (``body``, ``content_type``, ``headers``)
    ``status`` with 503 or 500.
``html_503`` (``body``, ``content_type``, ``headers``)
    503 with an HTML page: the error page of nginx or a cloud load balancer where
    DVID would answer text or JSON.
``html_200`` (``body``, ``content_type``, ``headers``)
    200 ``text/html`` sign-in page, not forwarded: a single-sign-on gateway or
    captive portal answering in the server's place. The server did nothing.
``garbage`` (``size=4096``, ``seed=None``)
    200 ``application/octet-stream`` of random bytes, not forwarded: a request
    routed to the wrong service, corruption by a middlebox.
``redirect`` (``status=301``, ``location=None``: the same path and query on the proxy)
    Answer a redirect without forwarding: http to https upgrades, a moved server, a
    load balancer rule. Most clients resend a redirected POST (301/302) as a GET.
``trickle`` (``rate=64``)
    Forward, but send the answer's body at ``rate`` bytes/s: a congested link or a
    slow-loris server. Every read returns something, so per-read timeouts never
    fire while the total time grows without bound.

The ``dvid_fault_proxy`` pytest fixture (see :mod:`dvid_store.testing.pytest_plugin`)
gives a test its own proxy in front of the session's server.

Body faults on answers that cannot have a body (to ``HEAD``, 204, 304) send the
headers as they are; the ``cut_*`` kinds that close the connection still close it.

Examples
--------
>>> with FaultProxy(server.url) as proxy:                          # doctest: +SKIP
...     proxy.inject("reset_after", match="/key/", methods={"POST"})
...     client = DvidClient(proxy.url)
...     proxy.latency = 0.05      # every forwarded request, like a far-away server
...     proxy.bandwidth = 10e6    # bytes/s of every answer's body
"""

from __future__ import annotations

import contextlib
import enum
import errno
import http
import http.client
import ipaddress
import os
import random
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeAlias

__all__ = ["Fault", "FaultProxy", "Matcher", "ProxyRecord", "Rule"]

#: What :meth:`FaultProxy.inject` accepts as ``match``.
Matcher: TypeAlias = str | re.Pattern[str] | Callable[[str, str], bool]


#: accept() failures after which the listener still works: the queued client went
#: away, or the process ran out of descriptors or memory for a moment.
_ACCEPT_AGAIN = frozenset({
    errno.ECONNABORTED, errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EPROTO, errno.EINTR,
})
_ACCEPT_BACKOFF = 0.05
#: How often a stalled connection looks whether its client hung up or stop() was called.
_STALL_POLL = 0.2


class Fault(enum.StrEnum):
    """The fault kinds of :meth:`FaultProxy.inject` (see the module docstring)."""

    LATENCY = "latency"
    STALL = "stall"
    RESET_BEFORE = "reset_before"
    RESET_AFTER = "reset_after"
    CUT_LENGTH = "cut_length"
    CUT_CHUNKED_BROKEN = "cut_chunked_broken"
    CUT_CHUNKED_CLEAN = "cut_chunked_clean"
    CUT_RECORDS = "cut_records"
    CUT_CLOSE = "cut_close"
    STATUS = "status"
    STATUS_503 = "status_503"
    STATUS_500 = "status_500"
    HTML_503 = "html_503"
    HTML_200 = "html_200"
    GARBAGE = "garbage"
    REDIRECT = "redirect"
    TRICKLE = "trickle"


_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_HTML_503_PAGE = (
    "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    "<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n"
    "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_SIGN_IN_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>\n"
    "<h1>Sign in to continue</h1>\n"
    '<form method="post" action="/login"><input name="user"><input name="password" type="password">'
    '<button type="submit">Sign in</button></form>\n</body></html>\n'
)
_ANSWER_PARAMS = {"body": None, "content_type": _TEXT, "headers": None}

#: Each kind's parameters and their defaults.
_PARAMS: dict[Fault, dict[str, Any]] = {
    Fault.LATENCY: {"seconds": 1.0},
    Fault.STALL: {"seconds": None},
    Fault.RESET_BEFORE: {},
    Fault.RESET_AFTER: {},
    Fault.CUT_LENGTH: {"at": 0.5},
    Fault.CUT_CHUNKED_BROKEN: {"at": 0.5},
    Fault.CUT_CHUNKED_CLEAN: {"at": 0.5, "close": False},
    Fault.CUT_RECORDS: {"records": None, "at": 0.5, "close": False},
    Fault.CUT_CLOSE: {"at": 0.5},
    Fault.STATUS: {"status": 503, **_ANSWER_PARAMS},
    Fault.STATUS_503: dict(_ANSWER_PARAMS),
    Fault.STATUS_500: dict(_ANSWER_PARAMS),
    Fault.HTML_503: {**_ANSWER_PARAMS, "body": _HTML_503_PAGE, "content_type": _HTML},
    Fault.HTML_200: {**_ANSWER_PARAMS, "body": _SIGN_IN_PAGE, "content_type": _HTML},
    Fault.GARBAGE: {"size": 4096, "seed": None},
    Fault.REDIRECT: {"status": 301, "location": None},
    Fault.TRICKLE: {"rate": 64.0},
}
#: The fixed status of the convenience kinds that answer in the server's place.
_FIXED_STATUS = {Fault.STATUS_503: 503, Fault.STATUS_500: 500, Fault.HTML_503: 503, Fault.HTML_200: 200}
_ANSWERING = frozenset({Fault.STATUS, *_FIXED_STATUS})
_CLOSING_CUTS = frozenset({Fault.CUT_LENGTH, Fault.CUT_CHUNKED_BROKEN, Fault.CUT_CLOSE})

#: Hop-by-hop headers (RFC 9110 7.6.1): they describe one connection, never forwarded.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
     "te", "trailer", "transfer-encoding", "upgrade"}
)
_MAX_LINE = 65536
_MAX_HEADERS = 200
_RECV = 1 << 18
#: Bodies up to this size go out in one send with their headers (one packet for small answers).
_SMALL = 1 << 16
#: Paced sends go out in pieces of this many seconds' worth of bytes.
_PACE_TICK = 0.02
_MAX_PIECE = 1 << 20
_RECORD_HEAD = struct.Struct("<iiii")


@dataclass(frozen=True, slots=True)
class ProxyRecord:
    """One request seen by the proxy.

    Attributes
    ----------
    method : str
        The request's method.
    path : str
        The request target as sent (path and query).
    fault : Fault or None
        The fault applied, ``None`` when forwarded faithfully.
    upstream_status : int or None
        The server's status, ``None`` when the request never reached it (or the
        server could not be reached).
    """

    method: str
    path: str
    fault: Fault | None
    upstream_status: int | None


@dataclass(eq=False)
class Rule:
    """A fault to apply to matching requests; made by :meth:`FaultProxy.inject`.

    Attributes
    ----------
    kind : Fault
        What happens to a matching request.
    params : mapping
        The kind's parameters, defaults filled in.
    times : int or None
        How many requests it applies to; ``None``: all of them.
    match : str, compiled regex, callable or None
        A substring of (or a regex searched in) the request target, or a
        ``callable(method, target) -> bool``; ``None`` matches every request.
    methods : frozenset of str or None
        The methods it applies to (upper case); ``None``: all.
    applied : int
        How many requests it has been applied to so far.
    """

    kind: Fault
    params: Mapping[str, Any]
    times: int | None = 1
    match: Matcher | None = None
    methods: frozenset[str] | None = None
    applied: int = 0

    @property
    def remaining(self) -> int | None:
        """Requests it will still apply to (``None``: unlimited)."""
        return None if self.times is None else max(0, self.times - self.applied)

    def matches(self, method: str, target: str) -> bool:
        """Whether a request with this method and target (path and query) matches."""
        if self.methods is not None and method.upper() not in self.methods:
            return False
        if self.match is None:
            return True
        if isinstance(self.match, str):
            return self.match in target
        if isinstance(self.match, re.Pattern):
            return self.match.search(target) is not None
        return bool(self.match(method, target))


class _Stopped(Exception):
    """The proxy is stopping: the connection's thread gives up at once."""


class _BadRequest(Exception):
    """The client sent something that is not HTTP/1.x."""


class _ClientGone(Exception):
    """The client closed its connection in the middle of a request."""


@dataclass(slots=True)
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytearray | None
    keep_alive: bool


@dataclass(slots=True)
class _Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


class FaultProxy:
    """An HTTP/1.1 proxy on a loopback port that forwards to ``upstream`` and injects faults.

    One thread per client connection, with keep-alive. Requests and answers are
    read whole (request bodies of hundreds of MB are fine) and forwarded with the
    same status, headers and body; a forwarded body is always sent with
    ``Content-Length``. The faults are described in the module docstring.

    Parameters
    ----------
    upstream : str
        The server: ``"host:port"`` or ``"http://host:port"``.
    host : str
        The loopback address to listen on.
    port : int
        The port to listen on; 0 picks a free one.

    Attributes
    ----------
    latency : float
        Seconds added before every forwarded request (default 0).
    bandwidth : float or None
        Bytes per second of every answer body sent to clients (default ``None``:
        unlimited).

    Examples
    --------
    >>> with FaultProxy("127.0.0.1:8000") as proxy:                  # doctest: +SKIP
    ...     rule = proxy.inject("status_503", times=2, match="/keyvalues")
    ...     requests.get(proxy.url + "/api/server/info").status_code
    200
    """

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream_host, self.upstream_port = _parse_upstream(upstream)
        if not _is_loopback(host):
            raise ValueError(f"FaultProxy listens on loopback addresses only, not {host!r}")
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._rules: list[Rule] = []
        self._log: list[ProxyRecord] = []
        self._faults_applied = 0
        self._latency = 0.0
        self._bandwidth: float | None = None
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._address: tuple[str, int] | None = None
        self._accept_thread: threading.Thread | None = None
        self._threads: set[threading.Thread] = set()
        self._sockets: set[socket.socket] = set()

    # ---------------------------------------------------------------- info
    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"`` of the running proxy."""
        if self._address is None:
            raise RuntimeError("the FaultProxy is not running; call start() first")
        host, port = self._address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def url(self) -> str:
        """``"http://127.0.0.1:PORT"`` of the running proxy."""
        return f"http://{self.address}"

    @property
    def upstream(self) -> str:
        """``"host:port"`` of the server it forwards to."""
        return f"{self.upstream_host}:{self.upstream_port}"

    @property
    def running(self) -> bool:
        """Whether it is listening (between start() and stop())."""
        return self._listener is not None

    @property
    def latency(self) -> float:
        """Seconds added before every forwarded request."""
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self._latency = _non_negative("latency", seconds)

    @property
    def bandwidth(self) -> float | None:
        """Bytes per second of answer bodies sent to clients; ``None``: unlimited."""
        return self._bandwidth

    @bandwidth.setter
    def bandwidth(self, rate: float | None) -> None:
        self._bandwidth = None if rate is None else _positive("bandwidth", rate)

    @property
    def log(self) -> list[ProxyRecord]:
        """A snapshot of the requests seen so far, oldest first.

        A request's record is written before the client gets anything final (an
        answer, a reset, a cut), so it is there once the client has seen the result.
        """
        with self._lock:
            return list(self._log)

    @property
    def open_connections(self) -> int:
        """Client connections being served now (each has a thread until it ends)."""
        with self._lock:
            return len(self._threads)

    @property
    def faults_applied(self) -> int:
        """How many requests a fault rule has been applied to."""
        with self._lock:
            return self._faults_applied

    @property
    def rules(self) -> list[Rule]:
        """A snapshot of the rules, in the order they are checked (spent ones included)."""
        with self._lock:
            return list(self._rules)

    def __repr__(self) -> str:
        state = f"url={self.url!r}" if self.running else "stopped"
        return f"FaultProxy({state}, upstream={self.upstream!r})"

    # --------------------------------------------------------------- rules
    def inject(
        self,
        kind: Fault | str,
        *,
        times: int | None = 1,
        match: Matcher | None = None,
        methods: Iterable[str] | str | None = None,
        **params: Any,
    ) -> Rule:
        """Add a fault rule after the existing ones.

        Rules are checked in order; the first one that matches a request and has
        applications left is applied to it, and counts one application.

        Parameters
        ----------
        kind : Fault or str
            The fault (see the module docstring).
        times : int or None
            How many requests it applies to; ``None``: every matching request.
        match : str, compiled regex, callable or None
            A substring of the request target (path and query), a compiled regex
            searched in it, or ``callable(method, target) -> bool``; ``None``: all.
        methods : iterable of str, str or None
            The HTTP methods it applies to; ``None``: all.
        **params
            The kind's parameters (see the module docstring).

        Returns
        -------
        Rule
            The rule; its ``applied`` count shows how often it was used.

        Raises
        ------
        ValueError
            Unknown kind, or a parameter value out of range.
        TypeError
            A parameter the kind does not take, or of the wrong type.
        """
        fault = _fault(kind)
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
            raise ValueError(f"times must be a positive int or None, not {times!r}")
        if match is not None and not isinstance(match, str | re.Pattern) and not callable(match):
            raise TypeError(f"match must be a str, a compiled regex or a callable, not {match!r}")
        method_set = None
        if methods is not None:
            method_set = frozenset([methods.upper()] if isinstance(methods, str) else (m.upper() for m in methods))
        rule = Rule(fault, _check_params(fault, params), times, match, method_set)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self, *, log: bool = False) -> None:
        """Remove every rule (and, with ``log=True``, the log and the fault count)."""
        with self._lock:
            self._rules.clear()
            if log:
                self._log.clear()
                self._faults_applied = 0

    def _take_rule(self, method: str, target: str) -> Rule | None:
        # A re-entrant lock: a match callable may look at proxy.log.
        with self._lock:
            for rule in self._rules:
                if (rule.times is None or rule.applied < rule.times) and rule.matches(method, target):
                    rule.applied += 1
                    self._faults_applied += 1
                    return rule
        return None

    def _record(self, request: _Request, fault: Fault | None, status: int | None) -> None:
        with self._lock:
            self._log.append(ProxyRecord(request.method, request.target, fault, status))

    # ----------------------------------------------------------- lifecycle
    def start(self) -> Self:
        """Listen and serve in background threads; returns the proxy."""
        if self._listener is not None:
            return self
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self._host, self._port))
            listener.listen(128)
        except BaseException:
            listener.close()
            raise
        self._stopping = threading.Event()
        self._listener = listener
        self._address = listener.getsockname()[:2]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(listener,), name=f"faultproxy-accept-{self._address[1]}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: close the listener and every connection, join the threads.

        Stalled, trickling and delayed requests end at once. Safe to call twice.

        Parameters
        ----------
        timeout : float
            Seconds to wait for each thread (they end promptly; this is a backstop).
        """
        listener = self._listener
        if listener is None:
            return
        address = self._address
        with self._lock:
            self._stopping.set()
            sockets = list(self._sockets)
        # shutdown() wakes a blocked accept() on Linux; a connection wakes it elsewhere.
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        if self._accept_thread is not None and self._accept_thread.is_alive() and address is not None:
            with contextlib.suppress(OSError), socket.create_connection(address, timeout=1.0):
                pass
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        listener.close()
        # shutdown(), not close(): another thread may be blocked on the socket, and
        # closing a descriptor in use could hand its number to a new socket.
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
        with self._lock:
            leftovers = list(self._sockets)
            self._sockets.clear()
            self._threads.clear()
        for sock in leftovers:
            sock.close()
        self._listener = None
        self._accept_thread = None
        self._address = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _accept_loop(self, listener: socket.socket) -> None:
        count = 0
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError as exc:
                if self._stopping.is_set() or exc.errno not in _ACCEPT_AGAIN:
                    return
                # A client that gave up while queued, or no descriptors left for a
                # moment: the listener is fine, and every later client must still get in.
                self._stopping.wait(_ACCEPT_BACKOFF)
                continue
            if not self._track(client):
                return
            with contextlib.suppress(OSError):
                # Headers and body go out in separate sends; Nagle would hold the body back.
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            count += 1
            connection = _Connection(self, client)
            thread = threading.Thread(target=connection.serve, name=f"faultproxy-conn-{count}", daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _track(self, sock: socket.socket) -> bool:
        """Register a socket for stop(); a socket made while stopping is closed at once."""
        with self._lock:
            if not self._stopping.is_set():
                self._sockets.add(sock)
                return True
        sock.close()
        return False

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def _thread_done(self) -> None:
        with self._lock:
            self._threads.discard(threading.current_thread())

    def _pause(self, seconds: float | None) -> None:
        """Wait, or until stop(); raises _Stopped when stopping."""
        if seconds is None:
            self._stopping.wait()
        elif seconds > 0:
            self._stopping.wait(seconds)
        if self._stopping.is_set():
            raise _Stopped


class _Connection:
    """One client connection: reads its requests in turn and answers each."""

    def __init__(self, proxy: FaultProxy, sock: socket.socket) -> None:
        self.proxy = proxy
        self.sock = sock
        self.buffer = bytearray()
        self.closed = False
        self.upstream: http.client.HTTPConnection | None = None
        self.upstream_sock: socket.socket | None = None

    def serve(self) -> None:
        try:
            while not self.proxy._stopping.is_set():
                try:
                    request = self.read_request()
                except _BadRequest as exc:
                    body = f"FaultProxy: bad request: {exc}\n".encode()
                    self.send_answer(400, body, _TEXT, [], keep_alive=False, head=False)
                    break
                if request is None or not self.handle(request):
                    break
        except (OSError, _Stopped, _ClientGone, http.client.HTTPException):
            pass  # the client, the server or stop() ended the connection
        finally:
            self.close_upstream()
            self.close()
            self.proxy._thread_done()

    def close(self, *, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.proxy._untrack(self.sock)
        if reset:
            with contextlib.suppress(OSError):
                # Linger on, zero timeout: close() sends RST instead of FIN.
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def stall(self, seconds: float | None) -> None:
        """Answer nothing for ``seconds`` (``None``: until stop()), or until the client hangs up.

        A client that timed out and closed its end frees the connection at once, so
        that a long run of stall faults does not pile up sockets and threads until
        the proxy stops. Raises _Stopped when stopping, _ClientGone when the client left.
        """
        until = None if seconds is None else time.monotonic() + seconds
        while True:
            if self.proxy._stopping.is_set():
                raise _Stopped
            left = _STALL_POLL if until is None else min(_STALL_POLL, until - time.monotonic())
            if left <= 0:
                return
            readable, _, _ = select.select([self.sock], [], [], left)
            if readable:
                try:
                    pending = self.sock.recv(1, socket.MSG_PEEK)
                except OSError as exc:
                    raise _ClientGone from exc
                if not pending:
                    raise _ClientGone
                # The client sent more (a pipelined request): stay silent, without spinning on it.
                self.proxy._stopping.wait(left)

    # ------------------------------------------------------------- reading
    def _fill(self) -> bool:
        data = self.sock.recv(_RECV)
        if not data:
            return False
        self.buffer += data
        return True

    def readline(self) -> bytes:
        """One line including its newline; ``b""`` at a clean end of the connection."""
        start = 0
        while True:
            end = self.buffer.find(b"\n", start)
            if end >= 0:
                line = bytes(self.buffer[: end + 1])
                del self.buffer[: end + 1]
                return line
            if len(self.buffer) > _MAX_LINE:
                raise _BadRequest("line too long")
            start = len(self.buffer)
            if not self._fill():
                if self.buffer:
                    raise _ClientGone
                return b""

    def read_exact(self, size: int) -> bytearray:
        # One allocation and recv_into() straight into it: bodies can be hundreds of MB.
        out = bytearray(size)
        have = min(size, len(self.buffer))
        out[:have] = self.buffer[:have]
        del self.buffer[:have]
        with memoryview(out) as view:
            while have < size:
                got = self.sock.recv_into(view[have:])
                if not got:
                    raise _ClientGone
                have += got
        return out

    def read_request(self) -> _Request | None:
        line = self.readline()
        while line in (b"\r\n", b"\n"):  # RFC 9112 2.2: ignore empty lines before a request
            line = self.readline()
        if not line:
            return None
        parts = line.decode("latin-1").strip().split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(f"not an HTTP/1.x request line: {line[:80]!r}")
        method, target, version = parts
        if target.startswith(("http://", "https://")):  # absolute form, as sent to a forward proxy
            slash = target.find("/", target.find("//") + 2)
            target = target[slash:] if slash >= 0 else "/"
        headers = self.read_headers()
        fields = _fields(headers)
        connection = {t.strip().lower() for t in fields.get("connection", "").split(",")}
        keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
        chunked = "chunked" in fields.get("transfer-encoding", "").lower()
        length: int | None = None
        if not chunked and "content-length" in fields:
            values = {v.strip() for v in fields["content-length"].split(",")}
            if len(values) != 1 or not values.pop().isdigit():
                raise _BadRequest(f"bad Content-Length {fields['content-length']!r}")
            length = int(fields["content-length"].split(",")[0])
        if (chunked or length) and fields.get("expect", "").lower() == "100-continue":
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body: bytearray | None = None
        if chunked:
            body = self.read_chunked()
        elif length is not None:
            body = self.read_exact(length)
        return _Request(method.upper(), target, version, headers, body, keep_alive)

    def read_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        while True:
            line = self.readline()
            if not line:
                raise _ClientGone
            if line in (b"\r\n", b"\n"):
                return headers
            text = line.decode("latin-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and headers:  # obsolete line folding
                name, value = headers[-1]
                headers[-1] = (name, f"{value} {text.strip()}")
                continue
            name, sep, value = text.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(f"bad header line {text[:80]!r}")
            headers.append((name, value.strip()))
            if len(headers) > _MAX_HEADERS:
                raise _BadRequest("too many headers")

    def read_chunked(self) -> bytearray:
        body = bytearray()
        while True:
            line = self.readline()
            if not line:
                raise _ClientGone
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(f"bad chunk size line {line[:80]!r}") from None
            if size == 0:
                while self.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields: not forwarded
                return body
            body += self.read_exact(size)
            if self.read_exact(2) != b"\r\n":
                raise _BadRequest("chunk not followed by CRLF")

    # ------------------------------------------------------------ handling
    def handle(self, request: _Request) -> bool:
        """Answer one request as its rule says; returns whether to keep the connection."""
        proxy = self.proxy
        rule = proxy._take_rule(request.method, request.target)
        kind = rule.kind if rule is not None else None
        params: Mapping[str, Any] = rule.params if rule is not None else {}
        head = request.method == "HEAD"

        if kind is Fault.STALL:
            proxy._record(request, kind, None)
            with contextlib.suppress(_Stopped, _ClientGone):
                self.stall(params["seconds"])
            return False
        if kind is Fault.RESET_BEFORE:
            proxy._record(request, kind, None)
            self.close(reset=True)
            return False
        if kind in _ANSWERING:
            status: int = params["status"]
            body = params["body"]
            if body is None:
                body = f"{status} {_reason(status)} (injected by FaultProxy)\n"
            proxy._record(request, kind, None)
            extra = list((params["headers"] or {}).items())
            # 204 and 304 never have a body: one would be read as the start of the next answer.
            data = b"" if _bodyless(status) else body.encode() if isinstance(body, str) else bytes(body)
            return self.send_answer(status, data, params["content_type"], extra, request.keep_alive, head)
        if kind is Fault.GARBAGE:
            proxy._record(request, kind, None)
            seed = params["seed"]
            data = os.urandom(params["size"]) if seed is None else random.Random(seed).randbytes(params["size"])
            return self.send_answer(200, data, "application/octet-stream", [], request.keep_alive, head)
        if kind is Fault.REDIRECT:
            proxy._record(request, kind, None)
            location = params["location"] or proxy.url + request.target
            data = f"Redirecting to {location}\n".encode()
            return self.send_answer(
                params["status"], data, _TEXT, [("Location", location)], request.keep_alive, head
            )

        if kind is Fault.LATENCY:
            proxy._pause(params["seconds"])
        answer = self.forward(request)
        if answer is None:
            proxy._record(request, kind, None)
            message = f"FaultProxy: upstream {proxy.upstream} did not answer\n".encode()
            return self.send_answer(502, message, _TEXT, [], request.keep_alive, head)
        proxy._record(request, kind, answer.status)
        if kind is Fault.RESET_AFTER:
            self.close(reset=True)
            return False
        headers = [(k, v) for k, v in answer.headers if k.lower() not in _HOP_BY_HOP]
        if head or _bodyless(answer.status):
            keep = request.keep_alive and kind not in _CLOSING_CUTS
            self.send_head(answer.status, answer.reason, headers, keep)
            return keep
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        body = memoryview(answer.body)
        size = len(body)
        rate = params["rate"] if kind is Fault.TRICKLE else None

        if kind is Fault.CUT_LENGTH:
            cut = _cut_point(params["at"], size)
            self.send_head(answer.status, answer.reason, [*headers, ("Content-Length", str(size))], None)
            self.send_body(body[:cut], chunked=False, end=False)
            return False
        if kind in (Fault.CUT_CHUNKED_BROKEN, Fault.CUT_CHUNKED_CLEAN, Fault.CUT_RECORDS):
            if kind is Fault.CUT_RECORDS:
                cut = _record_cut(answer.body, params["records"], params["at"])
            else:
                cut = _cut_point(params["at"], size)
            keep = request.keep_alive and kind is not Fault.CUT_CHUNKED_BROKEN and not params.get("close")
            connection = None if kind is Fault.CUT_CHUNKED_BROKEN else keep
            self.send_head(answer.status, answer.reason, [*headers, ("Transfer-Encoding", "chunked")], connection)
            self.send_body(body[:cut], chunked=True, end=kind is not Fault.CUT_CHUNKED_BROKEN)
            return keep
        if kind is Fault.CUT_CLOSE:
            cut = _cut_point(params["at"], size)
            self.send_head(answer.status, answer.reason, headers, False)
            self.send_body(body[:cut], chunked=False, end=False)
            return False
        # Faithful (also after latency, and trickled): the whole body with Content-Length.
        headers.append(("Content-Length", str(size)))
        self.send_whole(answer.status, answer.reason, headers, request.keep_alive, body, rate)
        return request.keep_alive

    # ---------------------------------------------------------- forwarding
    def forward(self, request: _Request) -> _Answer | None:
        """Send the request to the server and read its whole answer; ``None`` if it failed."""
        proxy = self.proxy
        proxy._pause(proxy.latency)
        for attempt in range(2):
            reused = self.upstream is not None and not _dropped(self.upstream_sock)
            if self.upstream is not None and not reused:
                self.close_upstream()
            try:
                conn = self.upstream_connection()
                conn.putrequest(request.method, request.target, skip_host=True, skip_accept_encoding=True)
                names = {name.lower() for name, _ in request.headers}
                # Also hop-by-hop: the headers the client's Connection header names.
                listed = {
                    token.strip().lower()
                    for name, value in request.headers
                    if name.lower() == "connection"
                    for token in value.split(",")
                }
                for name, value in request.headers:
                    lower = name.lower()
                    if lower not in _HOP_BY_HOP and lower not in listed and lower not in ("content-length", "expect"):
                        conn.putheader(name, value)
                if "host" not in names:
                    conn.putheader("Host", proxy.upstream)
                if request.body is not None:
                    conn.putheader("Content-Length", str(len(request.body)))
                conn.endheaders(request.body)
                response = conn.getresponse()
                try:
                    body = response.read()
                finally:
                    response.close()
                if response.will_close:
                    self.close_upstream()
                return _Answer(response.status, response.reason, response.getheaders(), body)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close_upstream()
                if proxy._stopping.is_set():
                    raise _Stopped from None
                # A kept-alive connection the server closed as we reused it: say it again once.
                if not reused or attempt:
                    return None
            except (OSError, http.client.HTTPException, UnicodeError, ValueError):
                self.close_upstream()
                if proxy._stopping.is_set():
                    raise _Stopped from None
                return None
        return None

    def upstream_connection(self) -> http.client.HTTPConnection:
        if self.upstream is None:
            conn = http.client.HTTPConnection(self.proxy.upstream_host, self.proxy.upstream_port, timeout=30.0)
            conn.connect()
            assert conn.sock is not None
            # No timeout once connected: the server may take long; stop() unblocks us.
            conn.sock.settimeout(None)
            if not self.proxy._track(conn.sock):
                raise _Stopped
            self.upstream, self.upstream_sock = conn, conn.sock
        return self.upstream

    def close_upstream(self) -> None:
        conn, sock = self.upstream, self.upstream_sock
        self.upstream = self.upstream_sock = None
        if sock is not None:
            self.proxy._untrack(sock)
            sock.close()
        if conn is not None:
            conn.close()

    # ------------------------------------------------------------- writing
    def send_head(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        keep_alive: bool | None,
        body: memoryview | bytes | None = None,
    ) -> None:
        """Send the status line and headers (and ``body`` in the same send: one packet for small answers).

        ``keep_alive`` adds ``Connection: keep-alive`` or ``close``; ``None`` adds neither.
        """
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if keep_alive is not None:
            lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if body is not None and len(body):
            data += body
        self.sock.sendall(data)

    def send_body(
        self, body: memoryview | bytes, *, chunked: bool, end: bool, rate: float | None = None
    ) -> None:
        """Send a body, raw or as chunks (``end``: with the terminating chunk), paced to the slowest rate."""
        rates = [r for r in (rate, self.proxy.bandwidth) if r is not None]
        pace = min(rates) if rates else None
        view = memoryview(body)
        size = len(view)
        piece = size if pace is None else max(1, min(_MAX_PIECE, int(pace * _PACE_TICK)))
        started = time.monotonic()
        sent = 0
        while sent < size:
            part = view[sent : sent + piece]
            if chunked and len(part) <= _SMALL:
                self.sock.sendall(b"%x\r\n%b\r\n" % (len(part), bytes(part)))
            elif chunked:
                self.sock.sendall(b"%x\r\n" % len(part))
                self.sock.sendall(part)
                self.sock.sendall(b"\r\n")
            else:
                self.sock.sendall(part)
            sent += len(part)
            if pace is not None and sent < size:
                # Keep to the schedule of the whole body, not of each piece: no drift.
                self.proxy._pause(started + sent / pace - time.monotonic())
        if chunked and end:
            self.sock.sendall(b"0\r\n\r\n")

    def send_answer(
        self,
        status: int,
        body: bytes,
        content_type: str,
        extra: list[tuple[str, str]],
        keep_alive: bool,
        head: bool,
    ) -> bool:
        """An answer made up by the proxy; returns whether to keep the connection."""
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra]
        self.send_whole(status, _reason(status), headers, keep_alive, b"" if head else body)
        return keep_alive

    def send_whole(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        keep_alive: bool,
        body: memoryview | bytes,
        rate: float | None = None,
    ) -> None:
        """Send a whole answer whose headers give its length."""
        if rate is None and self.proxy.bandwidth is None and len(body) <= _SMALL:
            self.send_head(status, reason, headers, keep_alive, body)
        else:
            self.send_head(status, reason, headers, keep_alive)
            self.send_body(body, chunked=False, end=False, rate=rate)


# ------------------------------------------------------------------ helpers
def _parse_upstream(upstream: str) -> tuple[str, int]:
    text = upstream.strip()
    if text.startswith("https://"):
        raise ValueError(f"FaultProxy forwards to plain http only, not {upstream!r}")
    text = text.removeprefix("http://").rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in text:
        raise ValueError(f"upstream must be 'host:port' or 'http://host:port', not {upstream!r}")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fault(kind: Fault | str) -> Fault:
    try:
        return Fault(kind)
    except ValueError:
        known = ", ".join(f.value for f in Fault)
        raise ValueError(f"unknown fault kind {kind!r}; known: {known}") from None


def _check_params(kind: Fault, params: Mapping[str, Any]) -> dict[str, Any]:
    defaults = _PARAMS[kind]
    unknown = set(params) - set(defaults)
    if unknown:
        takes = ", ".join(defaults) or "no parameters"
        raise TypeError(f"fault {kind.value!r} takes {takes}; not {', '.join(sorted(unknown))}")
    out = {**defaults, **params}
    if kind in _FIXED_STATUS:
        out["status"] = _FIXED_STATUS[kind]
    for name, value in params.items():
        if name == "seconds":
            if value is not None or kind is not Fault.STALL:
                out[name] = _non_negative(name, value)
        elif name == "at":
            _cut_point(value, 0)
        elif name in ("records", "size"):
            if not (name == "records" and value is None) and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ValueError(f"{name} must be a non-negative int, not {value!r}")
        elif name == "close":
            if not isinstance(value, bool):
                raise TypeError(f"close must be a bool, not {value!r}")
        elif name == "status":
            allowed = (301, 302, 303, 307, 308) if kind is Fault.REDIRECT else range(200, 600)
            if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
                raise ValueError(f"status {value!r} is not one {kind.value!r} can send")
        elif name == "body":
            if value is not None and not isinstance(value, str | bytes | bytearray):
                raise TypeError(f"body must be str or bytes, not {type(value).__name__}")
        elif name in ("content_type", "location"):
            if not (name == "location" and value is None) and not isinstance(value, str):
                raise TypeError(f"{name} must be a str, not {value!r}")
        elif name == "headers":
            if value is not None and not isinstance(value, Mapping):
                raise TypeError(f"headers must be a mapping of str to str, not {value!r}")
        elif name == "seed":
            if value is not None and not isinstance(value, int):
                raise TypeError(f"seed must be an int or None, not {value!r}")
        elif name == "rate":
            out[name] = _positive(name, value)
    return out


def _non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, not {value!r}")
    return float(value)


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number of bytes per second, not {value!r}")
    return float(value)


def _cut_point(at: object, size: int) -> int:
    """Bytes to send of a body of ``size`` bytes: ``at`` bytes (int) or that fraction (float)."""
    if isinstance(at, bool) or not isinstance(at, int | float):
        raise TypeError(f"at must be an int (bytes) or a float (fraction of the body), not {at!r}")
    if isinstance(at, float):
        if not 0.0 <= at <= 1.0:
            raise ValueError(f"at as a fraction must be within [0, 1], not {at!r}")
        return int(size * at)
    if at < 0:
        raise ValueError(f"at must be >= 0 bytes, not {at!r}")
    return min(at, size)


def _record_ends(body: bytes) -> list[int] | None:
    """End offsets of the block records a body is made of (0 first); ``None``: not records."""
    ends = [0]
    pos, size = 0, len(body)
    while pos < size:
        if pos + _RECORD_HEAD.size > size:
            return None
        n = _RECORD_HEAD.unpack_from(body, pos)[3]
        pos += _RECORD_HEAD.size + n
        if n < 0 or pos > size:
            return None
        ends.append(pos)
    return ends


def _record_cut(body: bytes, records: int | None, at: float) -> int:
    ends = _record_ends(body)
    if ends is None:
        return _cut_point(at, len(body))
    count = len(ends) - 1
    keep = count // 2 if records is None else min(records, count)
    return ends[keep]


def _fields(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Headers by lower-case name; repeated fields joined with commas (RFC 9110 5.3)."""
    out: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _bodyless(status: int) -> bool:
    return 100 <= status < 200 or status in (204, 304)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _dropped(sock: socket.socket | None) -> bool:
    """Whether an idle kept-alive connection was closed by the server.

    An idle connection has nothing to read: anything readable is its end (or bytes
    that belong to no request), so it is not reused either way.
    """
    if sock is None:
        return True
    flags = getattr(socket, "MSG_DONTWAIT", None)
    try:
        if flags is None:
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable)
        sock.recv(1, socket.MSG_PEEK | flags)
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True
    return True
