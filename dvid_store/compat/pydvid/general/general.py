"""pydvid's ``general`` module: the server's information, types and repos as DVID's JSON."""

from __future__ import annotations

from typing import Any

from ..dvid_connection import client_for
from ..errors import translated

__all__ = ["get_repos_info", "get_server_info", "get_server_types"]


def get_server_info(connection: Any) -> dict[str, Any]:
    """DVID's ``/api/server/info`` JSON (version, cores, storage backends, ...).

    Parameters
    ----------
    connection : http.client.HTTPConnection, DvidConnection or str
        The server (see :mod:`~dvid_store.compat.pydvid.dvid_connection`).
    """
    with translated("requesting json for: /api/server/info"):
        return dict(client_for(connection).server_info())


def get_server_types(connection: Any) -> dict[str, Any]:
    """DVID's ``/api/server/types`` JSON: the datatypes with at least one instance, name → type URL."""
    with translated("requesting json for: /api/server/types"):
        return dict(client_for(connection).server_types())


def get_repos_info(connection: Any) -> dict[str, Any]:
    """DVID's ``/api/repos/info`` JSON: every repo by root UUID, as DVID describes it.

    Each value is the repo's JSON exactly as DVID sends it (``Alias``,
    ``Root``, ``DataInstances``, ``DAG``, ...); dvid_store's typed form is
    :meth:`dvid_store.DvidClient.repos`.
    """
    with translated("requesting json for: /api/repos/info"):
        return {root: repo.raw for root, repo in client_for(connection).repos().items()}
