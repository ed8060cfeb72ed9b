"""pydvid's ``labelgraph`` package (every call refused: DVID removed the datatype)."""

from .labelgraph import create_new, update_edge, update_edges, update_vertex, update_vertices

__all__ = ["create_new", "update_edge", "update_edges", "update_vertex", "update_vertices"]
