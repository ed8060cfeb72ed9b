"""libdvid's small Python types: the enums, the coordinate tuples, and the graph primitives."""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["BlockZYX", "ConnectionMethod", "Edge", "PointZYX", "Slice2D", "SubstackZYX", "Vertex"]


class ConnectionMethod(enum.IntEnum):
    """HTTP verbs for ``custom_request`` and ``DVIDConnection.make_request`` (libdvid's order)."""

    HEAD = 0
    GET = 1
    POST = 2
    PUT = 3
    DELETE = 4


class Slice2D(enum.IntEnum):
    """Tile orientations for ``get_tile_slice``."""

    XY = 0
    XZ = 1
    YZ = 2


class BlockZYX(NamedTuple):
    """A block coordinate, ``(z, y, x)`` in blocks."""

    z: int
    y: int
    x: int


class PointZYX(NamedTuple):
    """A voxel coordinate, ``(z, y, x)``."""

    z: int
    y: int
    x: int


class SubstackZYX(NamedTuple):
    """A cubic substack of an ROI partition: edge ``size`` and first corner ``(z, y, x)``, in voxels."""

    size: int
    z: int
    y: int
    x: int


class Vertex:
    """A labelgraph vertex: an id and a weight (kept for ported code; DVID has no labelgraph any more).

    Parameters
    ----------
    id_ : int
        Vertex id.
    weight : float
        Vertex weight, e.g. its size in voxels.
    """

    def __init__(self, id_: int, weight: float) -> None:
        self.id = int(id_)
        self.weight = float(weight)

    def __repr__(self) -> str:
        return f"Vertex({self.id}, {self.weight})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vertex) and (other.id, other.weight) == (self.id, self.weight)

    def __hash__(self) -> int:
        return hash((self.id, self.weight))


class Edge:
    """A labelgraph edge: two vertex ids and a weight (kept for ported code; DVID has no labelgraph any more).

    Parameters
    ----------
    id1, id2 : int
        The vertices it joins.
    weight : float
        Edge weight, e.g. the size of the contact in voxels.
    """

    def __init__(self, id1: int, id2: int, weight: float) -> None:
        self.id1 = int(id1)
        self.id2 = int(id2)
        self.weight = float(weight)

    def __repr__(self) -> str:
        return f"Edge({self.id1}, {self.id2}, {self.weight})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Edge) and (other.id1, other.id2, other.weight) == (self.id1, self.id2, self.weight)

    def __hash__(self) -> int:
        return hash((self.id1, self.id2, self.weight))
