"""DVID's ``roi`` datatype: a region of interest made of whole blocks.

An ROI is a set of blocks of the instance's block size (default 32³ voxels).
DVID stores it as runs along x, ``[z, y, x0, x1]`` with ``x1`` inclusive; this
module converts between runs and (z, y, x) block coordinates, boolean masks and
points.

libdvid equivalents (``DVIDNodeService`` → here, with ``roi = node.roi(name)``):

| libdvid | dvid_store |
| --- | --- |
| ``create_roi(name)`` | ``Roi.create(node, name)`` |
| ``get_roi(name)`` | ``roi.blocks()`` (N×3 array, same z, y, x order) |
| ``post_roi(name, blocks_zyx)`` | ``roi.post_blocks(blocks_zyx)`` |
| ``get_roi_partition(name, size)`` | ``roi.partition(size)`` |
| ``roi_ptquery(name, points_zyx)`` | ``roi.contains(points_zyx)`` |
| ``get_roi3D(name, dims_zyx, offset_zyx)`` | ``roi.mask(((z0, y0, x0), (z1, y1, x1)))`` |

What the v1.0.0 server really does (checked against it by the tests)
-------------------------------------------------------------------
* ``POST /roi`` **replaces** the whole ROI (libdvid's help says it extends it).
  Overlapping runs are stored as sent; :meth:`Roi.blocks` de-duplicates.
* ``GET /mask`` is wrong for boxes whose start is negative and not on the block
  grid (it uses truncating division); block-aligned requests are right
  everywhere. :meth:`Roi.mask` therefore always asks for the block-aligned box
  that contains the request and crops it.
* ``GET /partition`` panics (500) for ``batchsize=0`` and returns nonsense for
  negative sizes; the client refuses both. Its ``optimized=true`` variant returns
  subvolumes whose ``MaxPoint`` lies below their ``MinPoint``, so it is not offered.
* ``POST /ptquery`` works on committed nodes and with negative coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, NamedTuple

import numpy as np

from ..errors import DvidInputError
from ..geometry import Box, aligned_box, as_box, as_zyx, box_shape, xyz_string
from .base import Instance
from .volume import bytes_into

__all__ = ["Roi", "Substack", "blocks_to_spans", "spans_to_blocks"]


class Substack(NamedTuple):
    """A cubic piece of an ROI partition, like libdvid's ``SubstackZYX``.

    Attributes
    ----------
    size : int
        Edge length in voxels (partition size × block edge).
    z, y, x : int
        Voxel coordinates of its first corner.
    """

    size: int
    z: int
    y: int
    x: int

    @property
    def box(self) -> Box:
        """The substack as a half-open voxel box ``((z0, y0, x0), (z1, y1, x1))``."""
        return (self.z, self.y, self.x), (self.z + self.size, self.y + self.size, self.x + self.size)


class Roi(Instance):
    """An ``roi`` instance.

    Parameters
    ----------
    node : Node
        The version to read from and write to.
    name : str
        The instance name.
    """

    typenames: ClassVar[tuple[str, ...]] = ("roi",)
    default_typename: ClassVar[str] = "roi"

    @property
    def block_shape(self) -> tuple[int, int, int]:
        """Block size in voxels, (z, y, x)."""
        x, y, z = self.info["Extended"]["BlockSize"]
        return int(z), int(y), int(x)

    # --------------------------------------------------------------- reading
    def spans(self) -> np.ndarray:
        """The runs as DVID stores them: an (N, 4) int32 array of ``z, y, x0, x1`` (x1 inclusive)."""
        runs = self.transport.get_json(self.path("roi")) or []
        return np.asarray(runs, dtype=np.int32).reshape(-1, 4)

    def blocks(self) -> np.ndarray:
        """Block coordinates of the ROI.

        Returns
        -------
        numpy.ndarray
            (N, 3) int32 array of (z, y, x) block coordinates, sorted by z, then y,
            then x (libdvid's ``get_roi`` order), without duplicates.
        """
        return spans_to_blocks(self.spans())

    def contains(self, points: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
        """Which points lie inside the ROI (``POST /ptquery``; allowed on committed nodes).

        Parameters
        ----------
        points : array-like
            (N, 3) voxel coordinates in (z, y, x) order; negative values are fine.

        Returns
        -------
        numpy.ndarray
            (N,) bool array, in the order of ``points``.
        """
        pts = _as_points(points)
        if len(pts) == 0:
            return np.zeros(0, dtype=bool)
        answer = self.transport.post_json(self.path("ptquery"), pts[:, ::-1].tolist(), idempotent=True)
        return np.asarray(answer, dtype=bool)

    def mask(self, box: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
        """The ROI as a 0/1 volume over ``box`` (libdvid's ``get_roi3D``).

        Parameters
        ----------
        box : ((z0, y0, x0), (z1, y1, x1))
            Half-open voxel box; may be negative and need not be block-aligned.

        Returns
        -------
        numpy.ndarray
            uint8 array of the box's shape, (z, y, x): 1 inside the ROI, 0 outside.
        """
        start, stop = as_box(box)
        astart, astop = aligned_box((start, stop), self.block_shape)
        shape = box_shape((astart, astop))
        path = self.path("mask", "0_1_2", xyz_string(shape), xyz_string(astart))
        volume = np.empty(shape, np.uint8)
        self.transport.stream("GET", path, bytes_into(volume))
        crop = tuple(slice(a - b, c - b) for a, c, b in zip(start, stop, astart))
        return np.ascontiguousarray(volume[crop])

    def partition(self, partition_size: int) -> tuple[list[Substack], float]:
        """Cover the ROI with cubic substacks (libdvid's ``get_roi_partition``).

        Parameters
        ----------
        partition_size : int
            Substack edge length in blocks (``batchsize`` in DVID).

        Returns
        -------
        substacks : list of Substack
            ``(size, z, y, x)`` tuples, sorted by z, y, x; ``size`` is
            ``partition_size`` × the block edge, in voxels. Only substacks holding
            at least one ROI block are listed.
        packing_factor : float
            ROI blocks / all blocks of the listed substacks; NaN for an empty ROI
            (0/0, as in libdvid).

        Raises
        ------
        DvidInputError
            ``partition_size`` < 1, or the ROI's blocks are not cubes.
        """
        if isinstance(partition_size, bool) or not isinstance(partition_size, (int, np.integer)) or partition_size < 1:
            raise DvidInputError(f"partition_size must be a positive number of blocks, got {partition_size!r}")
        block = self.block_shape
        if len(set(block)) != 1:
            raise DvidInputError(
                f"ROI {self.name!r} has non-cubic blocks {block} (z, y, x); substacks are cubes of whole blocks"
            )
        answer = self.transport.get_json(self.path("partition"), params={"batchsize": int(partition_size)})
        size = int(partition_size) * block[0]
        corners = {tuple(int(v) for v in s["MinPoint"][::-1]) for s in answer.get("Subvolumes") or []}
        substacks = [Substack(size, *corner) for corner in sorted(corners)]
        total, active = int(answer["NumTotalBlocks"]), int(answer["NumActiveBlocks"])
        return substacks, (active / total if total else math.nan)

    # --------------------------------------------------------------- writing
    def post_blocks(self, blocks: Sequence[Sequence[int]] | np.ndarray) -> None:
        """Make the ROI exactly these blocks (DVID replaces the whole ROI).

        Parameters
        ----------
        blocks : array-like
            (N, 3) block coordinates in (z, y, x) order, any order, duplicates
            allowed. An empty list empties the ROI.
        """
        coords = _as_points(blocks, what="block coordinates")
        self.require_writable("writing the ROI")
        self.transport.request(
            "POST", self.path("roi"), json=blocks_to_spans(coords).tolist(), idempotent=True
        )

    def post_mask(self, mask: np.ndarray, offset: Sequence[int] = (0, 0, 0)) -> np.ndarray:
        """Make the ROI the blocks that hold at least one true voxel of ``mask``.

        Parameters
        ----------
        mask : numpy.ndarray
            3-D (z, y, x) array; nonzero means inside. Any shape.
        offset : (z, y, x)
            Voxel coordinate of ``mask[0, 0, 0]``; any integers, not only block-aligned.

        Returns
        -------
        numpy.ndarray
            The (N, 3) block coordinates written, sorted by z, y, x.
        """
        arr = np.asarray(mask)
        if arr.ndim != 3:
            raise DvidInputError(f"an ROI mask must be a 3-D (z, y, x) array, got shape {arr.shape}")
        start = as_zyx(offset, "mask offset")
        stop = tuple(s + n for s, n in zip(start, arr.shape))
        block = self.block_shape
        if arr.size == 0:
            coords = np.zeros((0, 3), dtype=np.int32)
        else:
            astart, astop = aligned_box((start, stop), block)
            grid = np.zeros(box_shape((astart, astop)), dtype=bool)
            grid[tuple(slice(a - b, c - b) for a, c, b in zip(start, stop, astart))] = arr != 0
            nz, ny, nx = (n // b for n, b in zip(grid.shape, block))
            occupied = grid.reshape(nz, block[0], ny, block[1], nx, block[2]).any(axis=(1, 3, 5))
            coords = (np.argwhere(occupied) + np.asarray(astart) // np.asarray(block)).astype(np.int32)
        self.post_blocks(coords)
        return coords

    def delete(self) -> None:
        """Remove every block of the ROI (the instance itself stays)."""
        self.require_writable("deleting the ROI")
        self.transport.request("DELETE", self.path("roi"))


# ---------------------------------------------------------------- run lengths
def spans_to_blocks(spans: np.ndarray) -> np.ndarray:
    """``[z, y, x0, x1]`` runs (x1 inclusive) → sorted unique (N, 3) int32 (z, y, x) blocks."""
    runs = np.asarray(spans, dtype=np.int64).reshape(-1, 4)
    lengths = runs[:, 3] - runs[:, 2] + 1
    if len(runs) == 0 or lengths.sum() == 0:
        return np.zeros((0, 3), dtype=np.int32)
    total = int(lengths.sum())
    run_of = np.repeat(np.arange(len(runs)), lengths)
    # Position inside its run: global index minus the run's first global index.
    within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    blocks = np.stack([runs[run_of, 0], runs[run_of, 1], runs[run_of, 2] + within], axis=1)
    return np.unique(blocks, axis=0).astype(np.int32)


def blocks_to_spans(blocks: np.ndarray) -> np.ndarray:
    """(N, 3) (z, y, x) blocks, any order → minimal ``[z, y, x0, x1]`` runs sorted by z, y, x0."""
    coords = np.unique(np.asarray(blocks, dtype=np.int64).reshape(-1, 3), axis=0)
    if len(coords) == 0:
        return np.zeros((0, 4), dtype=np.int64)
    z, y, x = coords.T
    breaks = np.ones(len(coords), dtype=bool)
    breaks[1:] = (z[1:] != z[:-1]) | (y[1:] != y[:-1]) | (x[1:] != x[:-1] + 1)
    first = np.flatnonzero(breaks)
    last = np.append(first[1:] - 1, len(coords) - 1)
    return np.stack([z[first], y[first], x[first], x[last]], axis=1)


def _as_points(points: object, what: str = "points") -> np.ndarray:
    arr = np.asarray(points)
    if arr.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise DvidInputError(f"{what} must be an (N, 3) array in (z, y, x) order, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer) and (
        not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr))
    ):
            raise DvidInputError(f"{what} must be integers, got {arr.dtype} values that are not whole numbers")
    return arr.astype(np.int64)
