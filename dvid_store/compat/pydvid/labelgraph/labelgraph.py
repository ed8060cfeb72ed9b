"""pydvid's ``labelgraph`` functions: DVID removed the datatype, so each raises :class:`LabelgraphRemovedError`.

The error is pydvid's :class:`~dvid_store.compat.pydvid.errors.DvidHttpError` (status
``None``: refused before sending) and dvid_store's
:class:`~dvid_store.errors.UnsupportedError`, with what to use instead.
"""

from __future__ import annotations

from typing import Any, NoReturn

from ....datatypes.graph import LABELGRAPH_REMOVED
from ..errors import LabelgraphRemovedError

__all__ = ["create_new", "update_edge", "update_edges", "update_vertex", "update_vertices"]


def _removed(call: str, uuid: str, data_name: str, endpoint: str) -> NoReturn:
    raise LabelgraphRemovedError(
        f"labelgraph.{call}", None, "refused before sending", LABELGRAPH_REMOVED.format(call=call),
        "POST", f"/api/node/{uuid}/{data_name}/{endpoint}",
    )


def create_new(connection: Any, uuid: str, data_name: str) -> NoReturn:
    """Refused: DVID has no labelgraph datatype any more."""
    _removed("create_new", uuid, "", "instance")


def update_vertices(connection: Any, uuid: str, data_name: str, vertex_list: Any) -> NoReturn:
    """Refused: DVID has no labelgraph datatype any more."""
    _removed("update_vertices", uuid, data_name, "weight")


def update_vertex(connection: Any, uuid: str, data_name: str, vert: Any, weight: Any) -> NoReturn:
    """Refused: DVID has no labelgraph datatype any more."""
    _removed("update_vertex", uuid, data_name, "weight")


def update_edges(connection: Any, uuid: str, data_name: str, edge_list: Any) -> NoReturn:
    """Refused: DVID has no labelgraph datatype any more."""
    _removed("update_edges", uuid, data_name, "weight")


def update_edge(connection: Any, uuid: str, data_name: str, vert1: Any, vert2: Any, weight: Any) -> NoReturn:
    """Refused: DVID has no labelgraph datatype any more."""
    _removed("update_edge", uuid, data_name, "weight")
