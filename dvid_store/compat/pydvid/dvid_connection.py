"""pydvid's ``DvidConnection``, and how every pydvid call turns its connection argument into a client.

pydvid's functions take an ``httplib.HTTPConnection`` (Python 3: ``http.client``), or
anything like it. Here they also take a ``"host:port"`` string and pydvid's own
:class:`DvidConnection`. Only the address and the timeout are taken from a
connection object: the requests go through a :class:`~dvid_store.DvidClient`
(pooled connections per thread, retries, deadlines), never through the object itself.
"""

from __future__ import annotations

import http.client
import re
import threading
from dataclasses import dataclass, replace
from typing import Any

from ...client import DvidClient
from ...errors import DvidInputError
from ...node import Node
from ...transport import RetryPolicy

__all__ = ["DvidConnection", "client_for", "node_for"]

#: Sent as ``app=`` on every request made through the pydvid layer.
APP = "pydvid"

_FULL_UUID = re.compile(r"^[0-9a-f]{32}$")


class DvidConnection:
    """pydvid's per-thread connection pool, as an address and a timeout.

    Parameters
    ----------
    hostname : str
        The DVID server, e.g. ``"emdata1:8000"`` or ``"localhost:8000"``.
    timeout : float, optional
        Seconds to wait for a connection and for each answer.
    retry : RetryPolicy, optional
        How long to retry failures that are safe to retry (default: dvid_store's,
        30 s); ``VoxelsAccessor`` sets its own from ``retry_timeout``.
    deadline : float, optional
        Seconds one call may take in all, retries included (default: dvid_store's).
    app : str
        Sent as ``app=`` on every request.
    """

    def __init__(
        self,
        hostname: str,
        timeout: float | None = None,
        *,
        retry: RetryPolicy | None = None,
        deadline: float | None = None,
        app: str = "pydvid",
    ) -> None:
        self.hostname = hostname
        self.timeout = timeout
        self.retry = retry
        self.deadline = deadline
        self.app = app

    def __repr__(self) -> str:
        return f"DvidConnection({self.hostname!r}, timeout={self.timeout!r})"

    def close(self) -> None:
        """Nothing to close: the clients made from it pool their connections themselves."""


@dataclass(frozen=True)
class _Settings:
    """What a pydvid connection argument says about the client to use."""

    url: str
    timeout: float | None = None
    retry: RetryPolicy | None = None
    deadline: float | None = None
    app: str = APP


_clients: dict[_Settings, DvidClient] = {}
_clients_lock = threading.Lock()


def _settings(connection: Any) -> _Settings:
    """The client settings of a pydvid connection argument."""
    if isinstance(connection, str):
        return _Settings(connection)
    if isinstance(connection, DvidConnection):
        return _Settings(connection.hostname, connection.timeout, connection.retry, connection.deadline, connection.app)
    if isinstance(connection, http.client.HTTPConnection):
        scheme = "https" if isinstance(connection, http.client.HTTPSConnection) else "http"
        host = connection.host if ":" not in connection.host else f"[{connection.host}]"
        timeout = connection.timeout if isinstance(connection.timeout, (int, float)) else None
        return _Settings(f"{scheme}://{host}:{connection.port}", timeout)
    raise DvidInputError(
        f"a pydvid connection is an http.client.HTTPConnection, a DvidConnection or a 'host:port' string, "
        f"not {type(connection).__name__}"
    )


def client_for(connection: Any, retry: RetryPolicy | None = None) -> DvidClient:
    """The :class:`~dvid_store.DvidClient` for a pydvid connection argument (one per set of settings).

    Parameters
    ----------
    connection : http.client.HTTPConnection, DvidConnection or str
        Where the server is; a connection's timeout becomes the client's (and a
        :class:`DvidConnection`'s retry policy, deadline and app too).
    retry : RetryPolicy, optional
        The retry policy, in place of the connection's (default: the connection's,
        else the client's).
    """
    key = _settings(connection)
    if retry is not None:
        key = replace(key, retry=retry)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            options: dict[str, Any] = {"app": key.app, "retry": key.retry}
            if key.timeout:
                options["timeout"] = float(key.timeout)
            if key.deadline is not None:
                options["deadline"] = float(key.deadline)
            client = _clients[key] = DvidClient(key.url, **options)
    return client


def node_for(client: DvidClient, uuid: str) -> Node:
    """The node ``uuid`` names: a full UUID as is, else resolved (a unique prefix, ``prefix:branch``)."""
    if _FULL_UUID.match(uuid):
        return Node(client, uuid)
    return client.node(uuid)
