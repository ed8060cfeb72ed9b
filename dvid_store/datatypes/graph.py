"""libdvid's graph calls, for a datatype DVID no longer has.

DVID's ``labelgraph`` datatype (a weighted vertex/edge store on a graph-DB engine)
was removed in April 2023 (commit ``99ba21db``); it is absent from DVID v1.0.0
and every later release, so no current server can create or serve one (creating
the type answers 400 "Data type "labelgraph" is not supported").

:class:`LabelGraph` keeps libdvid's method names so that ported code fails at the
first graph call with an :class:`~dvid_store.errors.UnsupportedError` that says
what to use instead. No method sends a request.

What to use today
-----------------
* **Body connectivity and adjacency**: labelmap's own endpoints (bodies,
  supervoxels, merges/cleaves, label indices) through ``node.labelmap(name)``, and
  synapse connectivity from an ``annotation`` instance synced to the labelmap
  (``node.annotations(name).for_label(body)``).
* **Your own vertices, edges and weights**: store them in a ``keyvalue`` instance,
  e.g. one JSON document per vertex (``node.keyvalue(name).put_json(str(v), {...})``)
  and batch reads with ``get_many``; it is versioned like any DVID data.
* **Graph queries at scale**: connectome graph services such as neuPrint
  (Neo4j), or any external graph database, fed from DVID.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import UnsupportedError

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["LABELGRAPH_REMOVED", "LabelGraph"]

LABELGRAPH_REMOVED = (
    "DVID removed the labelgraph datatype in 2023 (it is absent from DVID v1.0.0 and later), "
    "so {call} cannot work against any current server. Instead: keep vertices and edges in a "
    "keyvalue instance (e.g. JSON per vertex: node.keyvalue(name).put_json / get_many), use "
    "labelmap's body and supervoxel APIs and an annotation instance synced to the labelmap "
    "for connectivity, or an external graph database such as neuPrint."
)


class LabelGraph:
    """Placeholder for a ``labelgraph`` instance: every operation raises :class:`UnsupportedError`.

    Constructing it succeeds (without contacting the server) so that the error
    appears at the call that would have used the graph, with the advice above.

    Parameters
    ----------
    node : Node
        The version the graph would live in.
    name : str
        The instance name.
    """

    typenames = ("labelgraph",)
    default_typename = "labelgraph"

    def __init__(self, node: Node, name: str) -> None:
        self.node = node
        self.name = name

    def __repr__(self) -> str:
        return f"LabelGraph({self.name!r}, node={self.node.uuid[:8]!r}) — unsupported: DVID removed labelgraph"

    @classmethod
    def create(cls, node: Node, name: str, **settings: Any) -> NoReturn:
        """libdvid's ``create_graph``: always raises :class:`UnsupportedError`."""
        raise UnsupportedError(LABELGRAPH_REMOVED.format(call="create_graph"))

    @staticmethod
    def _removed(call: str) -> NoReturn:
        raise UnsupportedError(LABELGRAPH_REMOVED.format(call=call))

    def update_vertices(self, vertices: Any) -> NoReturn:
        """libdvid's ``update_vertices``: always raises :class:`UnsupportedError`."""
        self._removed("update_vertices")

    def update_edges(self, edges: Any) -> NoReturn:
        """libdvid's ``update_edges``: always raises :class:`UnsupportedError`."""
        self._removed("update_edges")

    def get_subgraph(self, vertices: Any = None) -> NoReturn:
        """libdvid's ``get_subgraph``: always raises :class:`UnsupportedError`."""
        self._removed("get_subgraph")

    def get_vertex_neighbors(self, vertex: Any) -> NoReturn:
        """libdvid's ``get_vertex_neighbors``: always raises :class:`UnsupportedError`."""
        self._removed("get_vertex_neighbors")

    neighbors = get_vertex_neighbors

    def get_properties(self, *args: Any, **kwargs: Any) -> NoReturn:
        """libdvid's vertex/edge property reads: always raise :class:`UnsupportedError`."""
        self._removed("get_properties")

    def set_properties(self, *args: Any, **kwargs: Any) -> NoReturn:
        """libdvid's vertex/edge property transactions: always raise :class:`UnsupportedError`."""
        self._removed("set_properties")

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Deleting graph elements: always raises :class:`UnsupportedError`."""
        self._removed("delete")

    @property
    def info(self) -> NoReturn:
        """There is no ``/info`` to read: raises :class:`UnsupportedError`."""
        self._removed("info")
