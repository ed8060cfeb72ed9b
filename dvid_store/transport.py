"""The HTTP core: the only module of dvid_store that speaks HTTP.

One :class:`Transport` per server. It keeps one ``requests.Session`` per thread and
per process (a forked child never reuses its parent's sockets), adds ``u=``/``app=``
to every request, sends tokens without ever showing them, and is the one place where

* answers are **read**: every body is read here, inside the attempt that asked for it,
  so a body that breaks off (a reset, broken chunking, a length that does not match)
  is an error of that attempt, never a short value handed to the caller;
* answers are **judged**: only a 2xx answer that looks like DVID's counts as success.
  Redirects are never followed (``requests`` would resend a redirected POST as a GET,
  turning a write into a read that "succeeds"); a 3xx is a :class:`RedirectError`
  naming the ``Location``. An HTML page answered with 200 (a sign-in or captive
  portal) is an :class:`UnexpectedAnswerError`;
* failures are **retried**: requests that are safe to repeat are retried on 503/504,
  on connection errors and on broken or malformed bodies, within the time budget of
  a :class:`RetryPolicy`;
* time is **bounded**: every call has a wall-clock deadline, which also stops bodies
  that trickle in too slowly for the per-read timeout to notice;
* exceptions are **clean**: every failure is a :class:`~dvid_store.errors.DvidError`
  raised outside any ``except`` block, so no exception carries a chained
  ``requests`` exception (whose request holds the ``Authorization`` header and the
  ``admintoken=`` URL), printed, pickled or shipped from a dask worker.

Its pickled state is configuration only: no sessions and no tokens. An unpickled
transport reads its tokens again from the environment (``DVID_TOKEN``,
``DVID_ADMIN_TOKEN``), which is how dask workers get them.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import json as jsonlib
import logging
import os
import random
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import requests
import urllib3
from requests.adapters import HTTPAdapter

from .errors import (
    DvidConnectionError,
    DvidError,
    DvidTimeoutError,
    MalformedAnswerError,
    RedirectError,
    ServerBusyError,
    UnexpectedAnswerError,
    error_from_response,
    redact_text,
    redact_url,
)

__all__ = ["Answer", "RetryPolicy", "Secret", "Transport"]

log = logging.getLogger("dvid_store.http")

TOKEN_ENV = "DVID_TOKEN"
ADMIN_TOKEN_ENV = "DVID_ADMIN_TOKEN"

_RETRY_STATUSES = frozenset({503, 504})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_WRITE_METHODS = frozenset({"POST", "PUT", "DELETE"})
_PIECE = 1 << 20

#: Failures of the wire itself, raised while connecting, sending or reading a body.
_WIRE_ERRORS: tuple[type[BaseException], ...] = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)

T = TypeVar("T")


class Secret:
    """A string that never shows itself in a repr, str, log line or pickle."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: call this only where it is put on the wire."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is never pickled; set it again from the environment")


def _as_secret(value: str | Secret | None, env: str) -> Secret | None:
    if isinstance(value, Secret):
        return value
    if value:
        return Secret(value)
    from_env = os.environ.get(env)
    return Secret(from_env) if from_env else None


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to retry.

    Requests that are safe to repeat (GET, HEAD, PUT, DELETE, and POSTs that the
    caller marks idempotent, such as whole-block writes) are retried on 503/504, on
    connection errors and on answers whose body broke off or could not be parsed,
    with capped, jittered exponential backoff. What bounds the retrying is time:
    no new attempt starts once ``total_seconds`` have passed since the first, so a
    server that restarts or sheds load for up to that long is ridden through.

    Parameters
    ----------
    total_seconds : float
        No new attempt starts after this much time since the first (pydvid's
        ``retry_timeout``). 0 means a single attempt.
    max_attempts : int, optional
        An extra cap on the attempts, the first included; ``None`` (default): only
        time bounds them.
    backoff_base, backoff_cap : float
        The n-th wait is uniform in ``[0, min(cap, base * 2**n)]`` ("full jitter"),
        never past the budget (pydvid's ``retry_interval`` maps to ``backoff_cap``).
    """

    total_seconds: float = 30.0
    max_attempts: int | None = None
    backoff_base: float = 0.05
    backoff_cap: float = 2.0

    def delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (0-based), before the budget cap."""
        return random.uniform(0.0, min(self.backoff_cap, self.backoff_base * (2 ** min(attempt, 30))))

    def allows(self, attempts: int, elapsed: float) -> bool:
        """Whether another attempt may start after ``attempts`` attempts and ``elapsed`` seconds."""
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return False
        return elapsed < self.total_seconds


@dataclass(frozen=True)
class _Config:
    base_url: str
    user: str | None
    app: str
    timeout: tuple[float, float]
    retry: RetryPolicy
    deadline: float
    pool_size: int = field(default=16)


class Answer:
    """A successful answer whose body has been read in full and checked.

    Attributes
    ----------
    status_code : int
    headers : mapping of str to str (case-insensitive)
    url : str
        The request URL with secrets masked.
    content : bytes
    """

    __slots__ = ("content", "headers", "status_code", "url")

    def __init__(self, status_code: int, headers: Mapping[str, str], url: str, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.url = url
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; :class:`MalformedAnswerError` if it is not JSON."""
        try:
            return jsonlib.loads(self.content)
        except ValueError:
            problem = f"the answer is not valid JSON: {self.content[:200]!r}"
        raise MalformedAnswerError("GET", self.url, self.status_code, problem)

    def __repr__(self) -> str:
        return f"Answer({self.status_code}, {len(self.content)} bytes, {self.url!r})"


class Transport:
    """HTTP access to one DVID server.

    Parameters
    ----------
    url : str
        Server root, e.g. ``"http://localhost:8000"`` (a missing scheme means http).
    user, app : str, optional
        Sent as ``u=`` and ``app=`` on every request (DVID records them as provenance).
    token : str, optional
        Bearer token (``Authorization: Bearer``); default from ``$DVID_TOKEN``.
    admin_token : str, optional
        DVID admin token, sent as ``admintoken=`` only on requests that need admin
        rights (so it never bypasses a lock by accident); default ``$DVID_ADMIN_TOKEN``.
    timeout : float or (float, float)
        Connect timeout and the longest silence while waiting for or reading an
        answer, in seconds.
    retry : RetryPolicy, optional
        Retry behaviour.
    deadline : float
        Wall-clock limit of one call in seconds, all its attempts and waits included;
        an answer still arriving then is cut off and :class:`DvidTimeoutError` raised.
    pool_size : int
        Connections kept per session (per thread).
    """

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        app: str = "dvid_store",
        token: str | Secret | None = None,
        admin_token: str | Secret | None = None,
        timeout: float | tuple[float, float] = (5.0, 120.0),
        retry: RetryPolicy | None = None,
        deadline: float = 600.0,
        pool_size: int = 16,
    ) -> None:
        if "://" not in url:
            url = "http://" + url
        if isinstance(timeout, (int, float)):
            timeout = (float(timeout), float(timeout))
        if deadline <= 0:
            raise ValueError(f"deadline must be positive, got {deadline}")
        self._config = _Config(
            base_url=url.rstrip("/"),
            user=user if user is not None else _default_user(),
            app=app,
            timeout=(float(timeout[0]), float(timeout[1])),
            retry=retry or RetryPolicy(),
            deadline=float(deadline),
            pool_size=pool_size,
        )
        self._token = _as_secret(token, TOKEN_ENV)
        self._admin_token = _as_secret(admin_token, ADMIN_TOKEN_ENV)
        self._init_sessions()

    # ------------------------------------------------------------------ state
    def _init_sessions(self) -> None:
        self._sent = itertools.count()
        self._sessions: dict[tuple[int, int], requests.Session] = {}
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_all, self._sessions)

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self._config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._config = state["config"]
        self._token = _as_secret(None, TOKEN_ENV)
        self._admin_token = _as_secret(None, ADMIN_TOKEN_ENV)
        self._init_sessions()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Transport) and other._config == self._config

    def __hash__(self) -> int:
        return hash(self._config)

    def __repr__(self) -> str:
        auth = ", token=***" if self._token else ""
        return f"Transport({self._config.base_url!r}, user={self._config.user!r}, app={self._config.app!r}{auth})"

    @property
    def base_url(self) -> str:
        return self._config.base_url

    @property
    def user(self) -> str | None:
        return self._config.user

    @property
    def app(self) -> str:
        return self._config.app

    @property
    def timeout(self) -> tuple[float, float]:
        return self._config.timeout

    @property
    def retry(self) -> RetryPolicy:
        return self._config.retry

    @property
    def deadline(self) -> float:
        return self._config.deadline

    @property
    def requests_sent(self) -> int:
        """HTTP requests this transport has sent in this process (retries included)."""
        # Reading an itertools.count without advancing it: its repr holds the next value.
        return int(repr(self._sent)[6:-1])

    @property
    def has_admin_token(self) -> bool:
        return self._admin_token is not None

    def close(self) -> None:
        """Close every pooled connection of every thread (new ones open on next use)."""
        with self._lock:
            _close_all(self._sessions)

    def session(self) -> requests.Session:
        """The calling thread's session in the calling process, created on first use."""
        key = (os.getpid(), threading.get_ident())
        session = self._sessions.get(key)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self._config.pool_size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            if self._token is not None:
                session.headers["Authorization"] = f"Bearer {self._token.reveal()}"
            with self._lock:
                # A forked child inherits the parent's dict: drop (without closing,
                # the sockets are the parent's) every session of another process.
                for stale in [k for k in self._sessions if k[0] != key[0]]:
                    del self._sessions[stale]
                self._sessions[key] = session
        return session

    # ---------------------------------------------------------------- requests
    def url(self, path: str) -> str:
        """Absolute URL of a path under the server root (``/api/...``)."""
        return self._config.base_url + "/" + path.lstrip("/")

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: bytes | bytearray | memoryview | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        admin: bool = False,
        timeout: tuple[float, float] | None = None,
        allow_status: tuple[int, ...] = (),
        expect_empty: bool | None = None,
        allow_html: bool = False,
    ) -> Answer:
        """Send one request, with retries, and return its answer, body read in full.

        Parameters
        ----------
        method : str
            HTTP method.
        path : str
            Path under the server root, e.g. ``"/api/server/info"``.
        params : mapping, optional
            Query parameters; ``u`` and ``app`` are added.
        data, json : optional
            Body as bytes, or a value to send as JSON.
        idempotent : bool, optional
            Whether the request may be repeated; default: true for GET, HEAD, PUT,
            DELETE, false for POST.
        admin : bool
            Attach the admin token (``admintoken=``).
        timeout : (float, float), optional
            Connect and read timeouts of this call instead of the transport's.
        allow_status : tuple of int
            Non-2xx statuses returned to the caller instead of raised (e.g. 404 for
            an existence check).
        expect_empty : bool, optional
            DVID answers this request with an empty body: any other 2xx answer is
            not DVID's and raises :class:`UnexpectedAnswerError`. Default: true for
            POST, PUT and DELETE (DVID answers its writes with empty bodies, and those
            that answer with JSON are sent through :meth:`request_json`), false
            otherwise.
        allow_html : bool
            Accept a 2xx answer that is an HTML page (only for bodies that are user
            data, such as keyvalue values; DVID's API never answers with HTML).

        Raises
        ------
        DvidHTTPError
            A subclass matching the status and DVID's message; :class:`RedirectError`
            for a 3xx.
        UnexpectedAnswerError
            A 2xx answer that is not DVID's.
        MalformedAnswerError
            The body broke off on every attempt.
        DvidConnectionError
            The server could not be reached within the retry budget
            (:class:`DvidTimeoutError`: the deadline passed).
        """

        def read_all(response: requests.Response, url: str, check: _Checker) -> Answer:
            content = b"".join(check.pieces(response))
            return Answer(response.status_code, response.headers, url, content)

        if expect_empty is None:
            expect_empty = method.upper() in _WRITE_METHODS

        return self._exchange(
            method, path, read_all, params=params, data=data, json=json, headers=headers,
            idempotent=idempotent, admin=admin, timeout=timeout, allow_status=allow_status,
            expect_empty=expect_empty, allow_html=allow_html,
        )

    @overload
    def send_once(self, send: Callable[[], T]) -> T: ...

    @overload
    def send_once(self, send: Callable[[], T], *, carried_out: Callable[[], bool]) -> T | None: ...

    def send_once(self, send: Callable[[], T], *, carried_out: Callable[[], bool] | None = None) -> T | None:
        """Run ``send``, one write that must not be repeated blindly, with the retries safe for it.

        ``send`` makes one request not marked idempotent, so the transport does not
        repeat it. Here a 503 or 429 (refused before anything was done) is sent again
        after back-off. After an answer lost or broken on the wire, or a gateway's 504,
        the write may or may not have been carried out: ``carried_out()`` asks the
        server, and the write is sent again only if it was not; without it, the
        failure is raised. The retry policy bounds the whole.

        Returns
        -------
        Whatever ``send`` returned, or ``None`` when ``carried_out()`` confirmed a
        write whose answer was lost (so never ``None`` without ``carried_out``).
        """
        policy = self._config.retry
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                return send()
            except ServerBusyError as exc:
                failure: DvidError = exc
                unsure = exc.status == 504  # a gateway's timeout: DVID may have done it
            except DvidTimeoutError:
                raise  # the call's deadline is spent
            except DvidConnectionError as exc:
                failure, unsure = exc, True
            except MalformedAnswerError as exc:
                if isinstance(exc, UnexpectedAnswerError):  # not DVID's answer: nothing to conclude
                    raise
                failure, unsure = exc, True  # DVID's 2xx whose body broke off
            if unsure:
                if carried_out is None:
                    raise failure
                if carried_out():
                    return None
            if not policy.allows(attempts, time.monotonic() - started):
                raise failure
            self._wait(attempts, started, float("inf"), "a write", "sent once", type(failure).__name__)

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """:meth:`request` whose answer is JSON, parsed inside the attempt (a cut or
        garbled answer to a safe request is retried like a broken connection)."""

        def read_json(response: requests.Response, url: str, check: _Checker) -> Any:
            content = b"".join(check.pieces(response))
            if not content.strip():
                return None
            try:
                return jsonlib.loads(content)
            except ValueError:
                problem = f"the answer is not valid JSON ({len(content)} bytes): {content[:200]!r}"
            raise MalformedAnswerError(method, url, response.status_code, problem)

        return self._exchange(method, path, read_json, **kwargs)

    def stream(
        self,
        method: str,
        path: str,
        consume: Callable[..., T],
        *,
        with_head: bool = False,
        **kwargs: Any,
    ) -> T:
        """Send a request and hand its body, piece by piece, to ``consume``.

        ``consume(pieces)`` parses the body as it arrives (e.g. straight into a numpy
        array) and returns the call's result. If the body breaks off, or ``consume``
        raises :class:`MalformedAnswerError` (a body that is short or does not parse),
        a safe request is sent again and ``consume`` is called anew: it must start
        from scratch on each call. With ``with_head=True`` it is called as
        ``consume(pieces, head)``, ``head`` an :class:`Answer` holding the status and
        headers (and no content). Other keyword arguments are those of :meth:`request`.
        """

        def read_stream(response: requests.Response, url: str, check: _Checker) -> T:
            if with_head:
                return consume(check.pieces(response), Answer(response.status_code, response.headers, url, b""))
            return consume(check.pieces(response))

        return self._exchange(method, path, read_stream, **kwargs)

    # convenience wrappers -----------------------------------------------------
    def get_json(self, path: str, **kwargs: Any) -> Any:
        """GET ``path`` and decode its JSON body."""
        return self.request_json("GET", path, **kwargs)

    def post_json(self, path: str, payload: Any = None, **kwargs: Any) -> Any:
        """POST ``payload`` as JSON and decode a JSON answer (``None`` for an empty body)."""
        return self.request_json("POST", path, json=payload, **kwargs)

    # ------------------------------------------------------------------ engine
    def _exchange(
        self,
        method: str,
        path: str,
        reader: Callable[[requests.Response, str, _Checker], T],
        *,
        params: Mapping[str, Any] | None = None,
        data: bytes | bytearray | memoryview | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        admin: bool = False,
        timeout: tuple[float, float] | None = None,
        allow_status: tuple[int, ...] = (),
        expect_empty: bool = False,
        allow_html: bool = False,
    ) -> T:
        method = method.upper()
        query: dict[str, Any] = {}
        if self._config.user:
            query["u"] = self._config.user
        if self._config.app:
            query["app"] = self._config.app
        if params:
            query.update({k: v for k, v in params.items() if v is not None})
        if admin and self._admin_token is not None:
            query["admintoken"] = self._admin_token.reveal()
        if idempotent is None:
            idempotent = method in _SAFE_METHODS
        url = self.url(path)
        shown = redact_url(url)
        connect_timeout, read_timeout = timeout or self._config.timeout
        policy = self._config.retry
        started = time.monotonic()
        deadline = started + self._config.deadline
        attempts = 0
        while True:
            attempts += 1
            next(self._sent)  # atomic under the GIL, unlike ``+= 1``
            remaining = deadline - time.monotonic()
            check = _Checker(method, shown, expect_empty=expect_empty, allow_html=allow_html)
            outcome: T | None = None
            error: DvidError | None = None
            retry_why: str | None = None
            wire_failure: str | None = None
            try:
                response = self.session().request(
                    # requests sends bytearray and memoryview bodies as they are; its stub lists only bytes.
                    method, url, params=query, data=data, json=json, headers=headers, stream=True,  # type: ignore[arg-type]
                    allow_redirects=False,
                    timeout=(max(0.01, min(connect_timeout, remaining)), max(0.01, min(read_timeout, remaining))),
                )
                with response, _watchdog.guard(response, deadline) as guard:
                    status = response.status_code
                    if 300 <= status < 400 and status not in allow_status:
                        error = RedirectError(method, shown, status, response.headers.get("Location", ""))
                    elif status >= 300 and status not in allow_status:
                        text = _error_text(response)
                        if status in _RETRY_STATUSES and idempotent:
                            retry_why = f"HTTP {status}"
                        error = error_from_response(method, shown, status, text)
                    else:
                        check.judge(response)
                        outcome = reader(response, shown, check)
                    if guard.expired:
                        raise _Expired
            except DvidError as exc:
                error = exc
                if isinstance(exc, MalformedAnswerError) and not exc.url:
                    error = type(exc)(method, shown, exc.status, exc.message)  # body readers do not know the URL
                if isinstance(exc, MalformedAnswerError) and not isinstance(exc, UnexpectedAnswerError):
                    retry_why = "a malformed answer" if idempotent else None
            except _Expired:
                wire_failure = "deadline"
            except _WIRE_ERRORS as exc:
                wire_failure = _describe(exc)
                if check.reading_body:
                    error = MalformedAnswerError(
                        method, shown, check.status,
                        f"the answer broke off after {check.received} bytes: {wire_failure}",
                    )
                retry_why = type(exc).__name__ if idempotent else None
            # Everything below runs outside the except blocks: no exception raised
            # here keeps a requests exception (and its secrets) as its __context__.
            if wire_failure == "deadline" or (wire_failure is not None and time.monotonic() >= deadline):
                raise _strip(DvidTimeoutError(
                    f"{method} {shown} did not complete within the deadline of {self._config.deadline:g} s "
                    f"({attempts} attempt(s)); raise Transport(deadline=...) for very large transfers",
                    url=shown, attempts=attempts,
                ))
            if error is None and wire_failure is None:
                return outcome  # type: ignore[return-value]
            elapsed = time.monotonic() - started
            if retry_why is not None and policy.allows(attempts, elapsed) and time.monotonic() < deadline:
                self._wait(attempts, started, deadline, method, shown, retry_why)
                continue
            if error is None:
                unknown = "" if idempotent else (
                    " The request may or may not have been carried out: check before sending it again."
                )
                raise _strip(DvidConnectionError(
                    f"cannot reach DVID at {self._config.base_url} ({method} {shown}): {wire_failure}; "
                    f"gave up after {attempts} attempt(s) in {elapsed:.1f} s. Is the server running and the URL "
                    f"right?{unknown}",
                    url=shown, attempts=attempts,
                ))
            if attempts > 1 and isinstance(error, (ServerBusyError, MalformedAnswerError)):
                error.add_note(f"gave up after {attempts} attempts in {elapsed:.1f} s")
            raise _strip(error)

    def _wait(self, attempts: int, started: float, deadline: float, method: str, url: str, why: str) -> None:
        policy = self._config.retry
        remaining = min(started + policy.total_seconds, deadline) - time.monotonic()
        delay = max(0.0, min(policy.delay(attempts - 1), remaining))
        log.info("retrying %s %s after %s (attempt %d, waiting %.3f s)", method, url, why, attempts, delay)
        time.sleep(delay)


class _Expired(Exception):
    """The call's deadline passed while its answer was being read."""


def _strip(error: DvidError) -> DvidError:
    """``error`` without a chained cause or context (they may hold requests and their secrets)."""
    error.__cause__ = None
    error.__context__ = None
    error.__suppress_context__ = True
    return error


class _Checker:
    """Reads a body piece by piece, counting it, and judges whether a 2xx answer is DVID's."""

    def __init__(self, method: str, url: str, *, expect_empty: bool, allow_html: bool) -> None:
        self.method = method
        self.url = url
        self.expect_empty = expect_empty
        self.allow_html = allow_html
        self.received = 0
        self.reading_body = False
        self.status = 200

    def judge(self, response: requests.Response) -> None:
        self.status = response.status_code
        kind = response.headers.get("Content-Type", "").lower()
        # Go labels bodies it is not told the type of by sniffing them, so DVID's
        # empty answers (HEAD, 204, empty bodies) may say text/html; DVID's bodies
        # themselves are JSON, text or binary with a declared type.
        empty = self.method == "HEAD" or self.status == 204 or response.headers.get("Content-Length") == "0"
        if "text/html" in kind and not self.allow_html and not empty:
            raise UnexpectedAnswerError(
                self.method, self.url, self.status,
                "the answer is an HTML page, which DVID's API never sends: a proxy, load balancer or "
                "sign-in page answered instead of DVID. Nothing can be assumed stored or read; check the "
                f"server URL and any login the network needs. Page begins: {_peek(response)!r}",
            )

    def pieces(self, response: requests.Response) -> Iterator[bytes]:
        """The body in pieces as they arrive; breaks surface as wire errors of this attempt."""
        self.reading_body = True
        length = response.headers.get("Content-Length")
        # iter_content (not raw.stream) marks the body consumed, so the connection
        # goes back to the pool instead of being closed.
        for piece in response.iter_content(_PIECE):
            if self.expect_empty and piece.strip():
                raise UnexpectedAnswerError(
                    self.method, self.url, self.status,
                    f"DVID answers this request with an empty body, but this answer holds {piece[:120]!r}: "
                    "something other than DVID answered (a proxy or portal?), so the request may not have "
                    "reached DVID",
                )
            self.received += len(piece)
            yield piece
        # urllib3 checks declared lengths, but only of bodies that are not content-encoded.
        # An answer to HEAD declares the length of the GET's body and has none.
        if (
            self.method != "HEAD"
            and length is not None
            and length.isdigit()
            and "Content-Encoding" not in response.headers
            and self.received != int(length)
        ):
            raise MalformedAnswerError(
                self.method, self.url, self.status,
                f"the answer ended after {self.received} of its {length} bytes",
            )
        self.reading_body = False


def _peek(response: requests.Response) -> str:
    try:
        head = response.raw.read(160, decode_content=True)
    except _WIRE_ERRORS:
        return ""
    return bytes(head).decode("utf-8", "replace")


# ------------------------------------------------------------------- deadlines
class _Guard:
    __slots__ = ("_sock", "cancelled", "expired")

    def __init__(self, sock: socket.socket | None) -> None:
        self._sock = sock
        self.expired = False
        self.cancelled = False

    def fire(self) -> None:
        if self.cancelled or self._sock is None:
            return
        self.expired = True
        # shutdown (not close) wakes a thread blocked in recv on this socket.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancelled = True


class _Watchdog:
    """One daemon thread that cuts off answers still arriving at their call's deadline.

    Per-read timeouts cannot bound a body that trickles in a few bytes at a time;
    shutting its socket down from here ends the read in the calling thread.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Guard]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def guard(self, response: requests.Response, deadline: float) -> _Guard:
        guard = _Guard(_socket_of(response))
        with self._cond:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._heap = []
                self._thread = threading.Thread(target=self._run, name="dvid-store-deadlines", daemon=True)
                self._thread.start()
            seq = next(self._seq)
            if seq % 4096 == 0:  # finished calls leave entries behind until their deadline
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (deadline, seq, guard))
            self._cond.notify()
        return guard

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                when, _, guard = self._heap[0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._cond.wait(min(wait, 60.0))
                    continue
                heapq.heappop(self._heap)
                guard.fire()


_watchdog = _Watchdog()


def _socket_of(response: requests.Response) -> socket.socket | None:
    raw = response.raw
    connection = getattr(raw, "connection", None) or getattr(raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        return sock
    fp = getattr(getattr(raw, "_fp", None), "fp", None)  # http.client's buffered socket reader
    sock = getattr(getattr(fp, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


# --------------------------------------------------------------------- helpers
def _close_all(sessions: dict[tuple[int, int], requests.Session]) -> None:
    pid = os.getpid()
    for key, session in list(sessions.items()):
        if key[0] == pid:
            session.close()
    sessions.clear()


def _default_user() -> str | None:
    for name in ("DVID_USER", "USER", "LOGNAME"):
        if os.environ.get(name):
            return os.environ[name]
    return None


def _error_text(response: requests.Response) -> str:
    try:
        return bytes(response.raw.read(64 << 10, decode_content=True)).decode("utf-8", "replace")
    except _WIRE_ERRORS:  # a body that breaks mid-stream still deserves an error
        return ""


def _describe(exc: BaseException) -> str:
    # urllib3 puts the whole request URL (query string included) in its messages.
    text = redact_text(str(exc))
    if "Connection refused" in text:
        return "connection refused"
    if isinstance(exc, (requests.Timeout, TimeoutError, socket.timeout)) or "timed out" in text:
        return "timed out"
    if "reset by peer" in text or "Connection aborted" in text:
        return "connection reset"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)):
        return f"the answer broke off ({type(exc).__name__})"
    return f"{type(exc).__name__}: {text[:300]}"


class _RedactSecrets(logging.Filter):
    """Masks secrets in urllib3's debug lines, which print full request URLs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(redact_text(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_RedactSecrets())
