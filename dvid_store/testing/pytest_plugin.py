"""pytest fixtures backed by a real DVID server (registered via the ``pytest11`` entry point).

Fixtures
--------
dvid_server
    Session-scoped :class:`~dvid_store.testing.DvidServer`, started on first use and
    stopped (process and data directory gone) when the session ends, also after a
    failure or Ctrl-C.
dvid_client
    A :class:`~dvid_store.DvidClient` for that server, holding its admin token.
dvid_node
    A fresh repo per test: the :class:`~dvid_store.Node` on its root.
dvid_fault_proxy
    A :class:`~dvid_store.testing.FaultProxy` in front of the session's server, for
    one test and stopped after it: point a client at its ``url`` and ``inject()``
    the failures to test (resets, cut bodies, 503s, HTML pages, stalls, ...), e.g.
    ``DvidClient(dvid_fault_proxy.url, admin_token=dvid_server.admin_token)``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ..client import DvidClient
from ..node import Node
from .faultproxy import FaultProxy
from .server import DvidServer


@pytest.fixture(scope="session")
def dvid_server() -> Iterator[DvidServer]:
    """A running DVID server shared by the whole test session."""
    server = DvidServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dvid_client(dvid_server: DvidServer) -> DvidClient:
    """A client of the session's DVID server (with its admin token)."""
    return dvid_server.client(app="pytest")


@pytest.fixture
def dvid_node(dvid_client: DvidClient, request: pytest.FixtureRequest) -> Node:
    """The root node of a new repo made for this test alone."""
    alias = f"{request.node.name[:40]}-{uuid.uuid4().hex[:6]}"
    return dvid_client.create_repo(alias, description=f"pytest: {request.node.nodeid}")


@pytest.fixture
def dvid_fault_proxy(dvid_server: DvidServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the session's DVID server, for this test alone."""
    proxy = FaultProxy(dvid_server.url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
