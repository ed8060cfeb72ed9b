"""``dvid://`` URLs: which server, node and instance a URL names.

URL form::

    dvid://host:port/<uuid | unique prefix | prefix:branch[~N]>/<instance>[/<rest>]

The rest is a zarr key for the ``dvid://`` filesystem (:mod:`dvid_store.fs`) or a
level number for :class:`~dvid_store.DvidStore`, :func:`~dvid_store.open_dask` and
:func:`~dvid_store.open_dataarray`. Parsing sends nothing; :meth:`DvidURL.node`
resolves the node reference on the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .client import FULL_UUID, DvidClient
from .errors import DvidInputError
from .node import Node

__all__ = ["DvidURL", "parse_url"]


@dataclass(frozen=True)
class DvidURL:
    """The parts of a ``dvid://`` URL.

    Attributes
    ----------
    server : str
        ``http://host:port``.
    ref : str
        Node reference as written (UUID, prefix, ``prefix:branch[~N]``).
    instance : str
        Instance name.
    key : str
        The rest of the path (a zarr key, a level number or ``""``).
    """

    server: str
    ref: str
    instance: str
    key: str = ""

    def client(self, **conn: Any) -> DvidClient:
        """A client of the URL's server; ``conn`` as for :class:`~dvid_store.DvidClient`."""
        return DvidClient(self.server, **conn)

    def node(self, **conn: Any) -> Node:
        """The node the reference names: a full UUID as it is (no request; an unknown one
        fails at its first use with :class:`~dvid_store.UnknownNodeError`), anything else
        resolved (one or two requests).

        ``conn`` goes to :class:`~dvid_store.DvidClient`, plus ``scheme`` (``"http"``
        or ``"https"``) to reach the server with another scheme than the URL's.
        """
        scheme = conn.pop("scheme", None)
        server = self.server if scheme is None else f"{scheme}://{self.server.split('://', 1)[1]}"
        client = DvidURL(server, self.ref, self.instance, self.key).client(**conn)
        if FULL_UUID.match(self.ref):
            return Node(client, self.ref)
        return client.node(self.ref)


def parse_url(url: str, scheme: str = "http") -> DvidURL:
    """Split ``dvid://host:port/<node>/<instance>[/key]`` (the ``dvid://`` may be missing).

    Raises
    ------
    DvidInputError
        Host, node or instance is missing.
    """
    text = url
    for prefix in ("dvid://", "dvid::"):
        text = text.removeprefix(prefix)
    parts = [p for p in text.strip("/").split("/")]
    if len(parts) < 3 or not all(parts[:3]):
        raise DvidInputError(
            f"{url!r} is not a DVID URL: use dvid://host:port/<uuid or prefix or uuid:branch>/<instance>[/<key>]"
        )
    host, ref, instance = parts[:3]
    return DvidURL(f"{scheme}://{host}", ref, instance, "/".join(parts[3:]))
