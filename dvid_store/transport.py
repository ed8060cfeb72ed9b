"""The HTTP core: the only module of dvid_store that speaks HTTP.

One :class:`Transport` per server. It keeps one ``requests.Session`` per thread and
per process (a forked child never reuses its parent's sockets), adds ``u=``/``app=``
to every request, sends tokens without ever showing them, retries what is safe to
retry, and turns every non-2xx answer into an exception from :mod:`dvid_store.errors`.

Its pickled state is configuration only: no sessions and no tokens. An unpickled
transport reads its tokens again from the environment (``DVID_TOKEN``,
``DVID_ADMIN_TOKEN``), which is how dask workers get them.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from .errors import DvidConnectionError, ServerBusyError, error_from_response, redact_text, redact_url

__all__ = ["RetryPolicy", "Secret", "Transport"]

log = logging.getLogger("dvid_store.http")

TOKEN_ENV = "DVID_TOKEN"
ADMIN_TOKEN_ENV = "DVID_ADMIN_TOKEN"

_RETRY_STATUSES = frozenset({503, 504})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


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

    def __reduce__(self):
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
    caller marks idempotent) are retried on 503/504 and on connection errors, with
    capped, jittered exponential backoff, until ``max_attempts`` or ``total_seconds``.

    Parameters
    ----------
    max_attempts : int
        Attempts in all, the first included.
    total_seconds : float
        No new attempt starts after this much time since the first.
    backoff_base, backoff_cap : float
        The n-th wait is uniform in ``[0, min(cap, base * 2**n)]`` ("full jitter").
    """

    max_attempts: int = 8
    total_seconds: float = 30.0
    backoff_base: float = 0.05
    backoff_cap: float = 2.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.backoff_cap, self.backoff_base * (2**attempt)))


@dataclass(frozen=True)
class _Config:
    base_url: str
    user: str | None
    app: str
    timeout: tuple[float, float]
    retry: RetryPolicy
    pool_size: int = field(default=16)


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
        Connect and read timeouts in seconds.
    retry : RetryPolicy, optional
        Retry behaviour.
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
        timeout: float | tuple[float, float] = (5.0, 600.0),
        retry: RetryPolicy | None = None,
        pool_size: int = 16,
    ) -> None:
        if "://" not in url:
            url = "http://" + url
        if isinstance(timeout, (int, float)):
            timeout = (float(timeout), float(timeout))
        self._config = _Config(
            base_url=url.rstrip("/"),
            user=user if user is not None else _default_user(),
            app=app,
            timeout=(float(timeout[0]), float(timeout[1])),
            retry=retry or RetryPolicy(),
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
        stream: bool = False,
        idempotent: bool | None = None,
        admin: bool = False,
        timeout: tuple[float, float] | None = None,
        allow_status: tuple[int, ...] = (),
    ) -> requests.Response:
        """Send one request, with retries, and return the successful response.

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
        stream : bool
            Leave the body unread (the caller reads it, e.g. into a numpy array).
        idempotent : bool, optional
            Whether the request may be repeated; default: true for GET, HEAD, PUT,
            DELETE, false for POST.
        admin : bool
            Attach the admin token (``admintoken=``).
        allow_status : tuple of int
            Non-2xx statuses returned to the caller instead of raised (e.g. 404 for
            an existence check).

        Raises
        ------
        DvidHTTPError
            A subclass matching the status and DVID's message.
        DvidConnectionError
            The server could not be reached within the retry budget.
        """
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
        attempts = 0
        started = time.monotonic()
        while True:
            attempts += 1
            next(self._sent)  # atomic under the GIL, unlike ``+= 1``
            try:
                response = self.session().request(
                    method,
                    url,
                    params=query,
                    data=data,
                    json=json,
                    headers=headers,
                    stream=stream,
                    timeout=timeout or self._config.timeout,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if idempotent and self._may_retry(attempts, started):
                    self._wait(attempts, started, method, url, type(exc).__name__)
                    continue
                elapsed = time.monotonic() - started
                raise DvidConnectionError(
                    f"cannot reach DVID at {self._config.base_url} ({method} {redact_url(url)}): "
                    f"{_describe(exc)}; gave up after {attempts} attempt(s) in {elapsed:.1f} s. "
                    "Is the server running and the URL right?",
                    url=redact_url(url),
                    attempts=attempts,
                ) from None
            status = response.status_code
            if status < 300 or status in allow_status:
                return response
            text = _error_text(response)
            if status in _RETRY_STATUSES and idempotent and self._may_retry(attempts, started):
                self._wait(attempts, started, method, url, f"HTTP {status}")
                continue
            error = error_from_response(method, response.url, status, text)
            if isinstance(error, ServerBusyError) and attempts > 1:
                error = ServerBusyError(
                    method, response.url, status, f"{error.message} (gave up after {attempts} attempts)"
                )
            raise error

    def _may_retry(self, attempts: int, started: float) -> bool:
        policy = self._config.retry
        return attempts < policy.max_attempts and time.monotonic() - started < policy.total_seconds

    def _wait(self, attempts: int, started: float, method: str, url: str, why: str) -> None:
        policy = self._config.retry
        remaining = policy.total_seconds - (time.monotonic() - started)
        delay = max(0.0, min(policy.delay(attempts - 1), remaining))
        log.info("retrying %s %s after %s (attempt %d, waiting %.3f s)", method, redact_url(url), why, attempts, delay)
        time.sleep(delay)

    # convenience wrappers -----------------------------------------------------
    def get_json(self, path: str, **kwargs: Any) -> Any:
        """GET ``path`` and decode its JSON body."""
        return self.request("GET", path, **kwargs).json()

    def post_json(self, path: str, payload: Any = None, **kwargs: Any) -> Any:
        """POST ``payload`` as JSON and decode a JSON answer (``None`` for an empty body)."""
        response = self.request("POST", path, json=payload, **kwargs)
        return response.json() if response.content.strip() else None


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
        return response.text
    except Exception:  # a body that breaks mid-stream still deserves an error
        return ""


def _describe(exc: Exception) -> str:
    # urllib3 puts the whole request URL (query string included) in its messages.
    text = redact_text(str(exc))
    if "Connection refused" in text:
        return "connection refused"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return text


class _RedactSecrets(logging.Filter):
    """Masks secrets in urllib3's debug lines, which print full request URLs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(redact_text(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_RedactSecrets())
