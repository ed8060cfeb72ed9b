"""libdvid's ``DVIDConnection`` and ``DVIDServerService``, on dvid_store's client."""

from __future__ import annotations

import warnings
from typing import Any
from urllib.parse import parse_qsl

from ...client import DvidClient
from ...errors import DvidInputError
from ...transport import RetryPolicy
from ._errors import DVIDException, ErrMsg, libdvid_errors
from ._types import ConnectionMethod

__all__ = ["DEFAULT_TIMEOUT", "DVIDConnection", "DVIDServerService", "client", "method_name"]

#: libdvid's default request timeout, seconds.
DEFAULT_TIMEOUT = 120

#: Every status above 2xx, returned (not raised) when libdvid's ``checkHttpErrors`` is off.
_ANY_ERROR_STATUS = tuple(range(300, 600))


def client(
    address: str,
    user: str,
    app: str,
    resource_server: str = "",
    resource_port: int = 0,
    *,
    timeout: float | tuple[float, float] | None = None,
    retry: RetryPolicy | None = None,
    deadline: float | None = None,
) -> DvidClient:
    """A :class:`~dvid_store.DvidClient` as libdvid configured its connections (user, app, 120 s timeout).

    ``timeout`` (a number: connect and read; or a ``(connect, read)`` pair), ``retry``
    and ``deadline`` are dvid_store's limits, for callers that bound their calls
    (libdvid had only its fixed timeout).
    """
    if resource_server:
        warnings.warn(
            f"libdvid's resource manager ({resource_server}:{resource_port}) is not used: DVID's own throttle "
            "option and dvid_store's retries of busy (503) answers replace it",
            UserWarning,
            stacklevel=3,
        )
    options: dict[str, Any] = {"retry": retry}
    options["timeout"] = (5.0, float(DEFAULT_TIMEOUT)) if timeout is None else timeout
    if deadline is not None:
        options["deadline"] = float(deadline)
    return DvidClient(address.rstrip("/"), user=user, app=app, **options)


def method_name(method: Any) -> str:
    """``ConnectionMethod.GET`` (or ``"GET"``) → ``"GET"``."""
    if isinstance(method, ConnectionMethod):
        return method.name
    if isinstance(method, str) and method.upper() in ConnectionMethod.__members__:
        return method.upper()
    raise ErrMsg(f"method must be a libdvid.ConnectionMethod (HEAD, GET, POST, PUT, DELETE), got {method!r}")


def payload_bytes(payload: Any) -> bytes | None:
    """libdvid's payload: bytes-like, ``str`` (UTF-8) or ``None``; anything else is refused as libdvid did."""
    if payload is None:
        return None
    if isinstance(payload, str):
        return payload.encode()
    try:
        return bytes(memoryview(payload))
    except TypeError:
        raise ErrMsg(f"the payload must be bytes (or str), got {type(payload).__name__}") from None


class DVIDConnection:
    """Requests to any endpoint under a server's ``/api`` (libdvid's ``DVIDConnection``).

    Parameters
    ----------
    server_address : str
        e.g. ``"localhost:8000"`` or ``"http://emdata:8000"``.
    user, app : str
        Sent as ``u=`` and ``app=`` on every request.
    resource_server, resource_port
        libdvid's resource manager: not used (a warning says so).
    timeout, retry, deadline
        dvid_store's limits (keywords only; libdvid had none): the connect and read
        timeout (a number, or a ``(connect, read)`` pair; default libdvid's 120 s
        read timeout), the :class:`~dvid_store.RetryPolicy` of requests that are
        safe to repeat, and the seconds one call may take in all.
    """

    def __init__(
        self,
        server_address: str,
        user: str = "anonymous",
        app: str = "libdvid",
        resource_server: str = "",
        resource_port: int = 0,
        *,
        timeout: float | tuple[float, float] | None = None,
        retry: RetryPolicy | None = None,
        deadline: float | None = None,
    ) -> None:
        self._addr = server_address.rstrip("/")
        self._client = client(
            server_address, user, app, resource_server, resource_port, timeout=timeout, retry=retry,
            deadline=deadline,
        )

    def get_addr(self) -> str:
        """The server address as given (without trailing slashes)."""
        return self._addr

    def get_uri_root(self) -> str:
        """The prefix of every DVID API call: the address plus ``/api``."""
        return self._addr + "/api"

    @libdvid_errors
    def make_head_request(self, endpoint: str) -> int:
        """``HEAD`` of ``/api<endpoint>``; returns the status (a lost connection raises :class:`DVIDException`)."""
        return self._send(endpoint, "HEAD", None, None, check=False)[0]

    @libdvid_errors
    def make_request(
        self,
        endpoint: str,
        method: Any,
        payload: Any = None,
        timeout: float | None = None,
        datasize: int = 1,
        checkHttpErrors: bool = True,
    ) -> tuple[int, bytes, str]:
        """Send a request to ``/api<endpoint>`` and return ``(status, body, error message)``.

        ``timeout`` (seconds) is this request's connect and read timeout; default:
        the connection's (libdvid's 120 s unless the connection was given one).

        With ``checkHttpErrors`` (default) any status but 200 raises
        :class:`DVIDException`; without it the status is returned. ``datasize`` only
        served libdvid's resource manager and is ignored. The error message is ``""``
        (libdvid's was curl's, empty when an answer came).
        """
        status, body = self._send(endpoint, method_name(method), payload_bytes(payload), timeout, check=checkHttpErrors)
        return status, body, ""

    def _send(
        self, endpoint: str, method: str, payload: bytes | None, timeout: float | None, *, check: bool
    ) -> tuple[int, bytes]:
        path, _, query = endpoint.partition("?")
        if not path.startswith("/"):
            path = "/" + path
        options: dict[str, Any] = {
            "params": dict(parse_qsl(query, keep_blank_values=True)),
            "data": payload,
            "allow_status": () if check else _ANY_ERROR_STATUS,
            "expect_empty": False,
            "timeout": None if timeout is None else (float(timeout), float(timeout)),
        }
        transport = self._client.transport
        if method == "HEAD":
            # No body to read, even where the answer declares the length of the GET's.
            status = transport.stream(
                "HEAD", "/api" + path, lambda _, head: head.status_code, with_head=True, **options
            )
            content = b""
        else:
            answer = transport.request(method, "/api" + path, allow_html=True, **options)
            status, content = answer.status_code, answer.content
        if check and status != 200:
            raise DVIDException(status, f"DVIDException for {endpoint}\n{content.decode('utf-8', 'replace')}")
        return status, content


class DVIDServerService:
    """Server-wide actions (libdvid's ``DVIDServerService``): creating repos.

    The constructor asks the server for ``/api/server/info``, so a wrong address
    fails here, as in libdvid.

    Parameters
    ----------
    server_address : str
        e.g. ``"localhost:8000"``.
    user, app : str
        Sent as ``u=`` and ``app=`` on every request.
    timeout, retry, deadline
        dvid_store's limits, keywords only (see :class:`DVIDConnection`).
    """

    @libdvid_errors
    def __init__(
        self,
        server_address: str,
        user: str = "anonymous",
        app: str = "libdvid",
        *,
        timeout: float | tuple[float, float] | None = None,
        retry: RetryPolicy | None = None,
        deadline: float | None = None,
    ) -> None:
        self._client = client(server_address, user, app, timeout=timeout, retry=retry, deadline=deadline)
        self._client.server_info()

    @libdvid_errors
    def create_new_repo(self, alias: str, description: str) -> str:
        """Create a repo and return its root UUID.

        DVID v1.0.0 creates repos only with its admin token: give it in
        ``$DVID_ADMIN_TOKEN`` (dvid_store sends it only on calls that need it).
        """
        if not isinstance(alias, str) or not isinstance(description, str):
            raise DvidInputError("alias and description are strings")
        return self._client.create_repo(alias, description).uuid
