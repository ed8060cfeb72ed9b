"""Many ROIs at once: one label volume painted with several ROIs, and the ROI of each of many points.

Both read each ROI's block runs once (``GET /roi``, one request per ROI, in
parallel) and do the rest locally with numpy, so a million points cost as many
requests as one.

Indices and overlaps
--------------------
The ROIs are numbered in the order given, from 1; 0 means "in none of them".
Where ROIs overlap, **the one listed first wins**: list them in order of
priority. The same rule holds for :func:`roi_label_volume`, :func:`point_roi_indices`
and :func:`point_rois`.

Scales
------
:func:`roi_label_volume` paints at any power-of-two ``scale``: a voxel of scale
``s`` stands for the ``2**s``-cube of full-resolution voxels at ``2**s`` times its
coordinates, and belongs to an ROI when any ROI block overlaps that cube. At the
scale whose voxels are the ROI's blocks (scale 5 for DVID's default 32³ blocks)
each voxel is one block; below it the answer is exact per voxel.

neuclease equivalents (``neuclease.dvid.roi``)
----------------------------------------------
``fetch_combined_roi_volume(server, uuid, rois, box_zyx=...)`` →
``roi_label_volume(node, rois, box, scale=5)`` (first listed wins instead of last
written; overlaps are not tallied); ``determine_point_rois(..., points_df)`` →
``points_df["roi"] = point_rois(node, rois, points_df)`` (exact per voxel at scale 0
rather than looked up in a scale-5 volume).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..errors import DvidInputError
from ..geometry import Box, as_box, box_shape, check_allocation
from ._frames import pandas
from ._progress import map_threaded
from .roi import spans_to_blocks

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["RoiLabels", "point_roi_indices", "point_rois", "roi_label_volume", "spans_contain"]

_OFFSET = 2**31


class RoiLabels(NamedTuple):
    """Several ROIs painted into one volume (from :func:`roi_label_volume`).

    Attributes
    ----------
    volume : numpy.ndarray
        (z, y, x) uint8 (up to 255 ROIs) or uint16 array: each voxel holds the index
        of the ROI containing it, 0 where none does.
    box : Box
        Where ``volume`` lies, half-open, in voxels of ``scale``.
    scale : int
        The volume's scale (voxel edge ``2**scale`` full-resolution voxels).
    names : dict of int to str
        Index → ROI name, 1..n in the order the names were given.
    """

    volume: np.ndarray
    box: Box
    scale: int
    names: dict[int, str]


class _Loaded(NamedTuple):
    name: str
    block: tuple[int, int, int]
    spans: np.ndarray


def roi_label_volume(
    node: Node,
    names: Sequence[str],
    box: Sequence[Sequence[int]] | np.ndarray | None = None,
    *,
    scale: int = 0,
    workers: int = 4,
) -> RoiLabels:
    """Paint several ROIs into one label volume.

    Parameters
    ----------
    node : Node
        The version to read the ROIs from.
    names : sequence of str
        ``roi`` instance names, in order of priority (the first listed wins where
        ROIs overlap); ROI ``names[i]`` is painted with ``i + 1``.
    box : ((z0, y0, x0), (z1, y1, x1)), optional
        Half-open box **in voxels of** ``scale``; default: the union of the ROIs'
        bounding boxes at that scale.
    scale : int
        Power-of-two downsampling level, 0 (full resolution) or more.
    workers : int
        ROIs fetched at once.

    Returns
    -------
    RoiLabels
        ``(volume, box, scale, names)``; ``names`` maps each index to its ROI.

    Raises
    ------
    DvidInputError
        No names, repeated names, a negative scale, more than 65535 ROIs, ``box``
        omitted while every ROI is empty, or a volume too large for memory.
    UnknownInstanceError
        A name that is no instance of the node.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 0:
        raise DvidInputError(f"scale must be a non-negative integer (0 = full resolution), got {scale!r}")
    factor = 2 ** int(scale)
    rois = _load(node, names, workers)
    if box is None:
        boxes = [b for b in (_scaled_bounds(r, factor) for r in rois) if b is not None]
        if not boxes:
            raise DvidInputError(
                f"ROIs {list(names)} are all empty, so they have no bounding box: pass box= to get an all-zero volume"
            )
        start = tuple(min(b[0][i] for b in boxes) for i in range(3))
        stop = tuple(max(b[1][i] for b in boxes) for i in range(3))
        region = as_box((start, stop))
    else:
        region = as_box(box)
    dtype = np.uint8 if len(rois) <= np.iinfo(np.uint8).max else np.uint16
    shape = box_shape(region)
    check_allocation(shape, dtype, f"an ROI label volume over {region} at scale {scale}")
    volume = np.zeros(shape, dtype=dtype)
    for index, roi in enumerate(rois, start=1):
        _paint(volume, region, factor, roi, index)
    return RoiLabels(volume, region, int(scale), {i: r.name for i, r in enumerate(rois, start=1)})


def point_roi_indices(
    node: Node, names: Sequence[str], points: Any, *, workers: int = 4
) -> np.ndarray:
    """Which of several ROIs each point lies in, as indices (numpy only).

    Parameters
    ----------
    node : Node
        The version to read the ROIs from.
    names : sequence of str
        ``roi`` instance names in order of priority (first listed wins).
    points : array-like or DataFrame
        (N, 3) full-resolution voxel coordinates in (z, y, x) order, or a DataFrame
        with columns ``z``, ``y``, ``x``.
    workers : int
        ROIs fetched at once.

    Returns
    -------
    numpy.ndarray
        (N,) uint16 (uint8 for up to 255 ROIs): ``i`` for ``names[i - 1]``, 0 for
        points in none of them.
    """
    pts = _points(points)
    rois = _load(node, names, workers)
    out = np.zeros(len(pts), dtype=np.uint8 if len(rois) <= 255 else np.uint16)
    for index, roi in enumerate(rois, start=1):
        free = out == 0
        inside = spans_contain(roi.spans, roi.block, pts[free])
        out[np.flatnonzero(free)[inside]] = index
    return out


def point_rois(node: Node, names: Sequence[str], points: Any, *, workers: int = 4) -> Any:
    """The ROI each point lies in, by name.

    Parameters
    ----------
    node : Node
        The version to read the ROIs from.
    names : sequence of str
        ``roi`` instance names in order of priority (first listed wins).
    points : array-like or DataFrame
        (N, 3) full-resolution voxel coordinates (z, y, x), or a DataFrame with
        columns ``z``, ``y``, ``x`` (its index is kept).
    workers : int
        ROIs fetched at once.

    Returns
    -------
    pandas.Series
        Named ``"roi"``, categorical with the ROI names as categories (in the order
        given), NaN for points in no ROI; indexed like ``points`` (a DataFrame's own
        index, else 0..N-1).
    """
    pd = pandas("point_rois()")
    indices = point_roi_indices(node, names, points, workers=workers)
    codes = indices.astype(np.int64) - 1
    index = points.index if hasattr(points, "columns") else None
    values = pd.Categorical.from_codes(codes, categories=list(names))
    return pd.Series(values, index=index, name="roi")


def spans_contain(spans: np.ndarray, block_shape: Sequence[int], points: np.ndarray) -> np.ndarray:
    """Whether each point lies in a block covered by the runs ``spans``.

    Parameters
    ----------
    spans : numpy.ndarray
        (M, 4) runs ``z, y, x0, x1`` (x1 inclusive) of block coordinates, as
        :meth:`Roi.spans` returns them; any order, overlaps allowed.
    block_shape : (z, y, x)
        Block size in voxels.
    points : numpy.ndarray
        (N, 3) int voxel coordinates (z, y, x) within the int32 range.

    Returns
    -------
    numpy.ndarray
        (N,) bool.
    """
    runs = np.asarray(spans, dtype=np.int64).reshape(-1, 4)
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 3)
    result = np.zeros(len(pts), dtype=bool)
    if len(runs) == 0 or len(pts) == 0:
        return result
    blocks = pts // np.asarray(block_shape, dtype=np.int64)
    # Each (z, y) row of blocks gets a rank; a run and a point then compare as one
    # int64 key, rank * 2**33 + x (x shifted to be non-negative, so below 2**32).
    rows = _row_keys(runs[:, 0], runs[:, 1])
    groups = np.unique(rows)
    run_rank = np.searchsorted(groups, rows).astype(np.int64)
    starts = run_rank * 2**33 + (runs[:, 2] + _OFFSET)
    ends = run_rank * 2**33 + (runs[:, 3] + _OFFSET)
    order = np.argsort(starts, kind="stable")
    starts = starts[order]
    # Largest end among the runs starting at or before each one: overlapping runs
    # (DVID stores runs as posted) still cover their union.
    reach = np.maximum.accumulate(ends[order])
    point_rows = _row_keys(blocks[:, 0], blocks[:, 1])
    rank = np.searchsorted(groups, point_rows)
    known = rank < len(groups)
    known[known] = groups[rank[known]] == point_rows[known]
    keys = rank.astype(np.int64) * 2**33 + (blocks[:, 2] + _OFFSET)
    last = np.searchsorted(starts, keys, side="right") - 1
    hit = known & (last >= 0)
    hit[hit] = reach[last[hit]] >= keys[hit]
    return hit


# ------------------------------------------------------------------ helpers
def _row_keys(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return ((z + _OFFSET).astype(np.uint64) << np.uint64(32)) | (y + _OFFSET).astype(np.uint64)


def _load(node: Node, names: Sequence[str], workers: int) -> list[_Loaded]:
    if isinstance(names, str):
        raise DvidInputError(f"names must be a list of ROI names, got the single name {names!r}: pass [{names!r}]")
    wanted = list(names)
    if not wanted or not all(isinstance(n, str) and n for n in wanted):
        raise DvidInputError(f"names must be a non-empty list of ROI instance names, got {wanted!r}")
    repeated = sorted({n for n in wanted if wanted.count(n) > 1})
    if repeated:
        raise DvidInputError(f"ROI names must be distinct (each gets one index), repeated: {repeated}")
    if len(wanted) > np.iinfo(np.uint16).max:
        raise DvidInputError(f"at most {np.iinfo(np.uint16).max} ROIs fit a uint16 label volume, got {len(wanted)}")

    def one(name: str) -> _Loaded:
        roi = node.roi(name)
        return _Loaded(name, roi.block_shape, roi.spans())

    return map_threaded(one, wanted, workers, "ROIs")


def _points(points: Any) -> np.ndarray:
    if hasattr(points, "columns"):
        missing = [c for c in "zyx" if c not in points.columns]
        if missing:
            raise DvidInputError(f"a points DataFrame needs columns z, y, x; missing {missing}")
        arr: np.ndarray = np.asarray(points[["z", "y", "x"]].to_numpy())
    else:
        arr = np.asarray(points)
    if arr.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise DvidInputError(f"points must be an (N, 3) array in (z, y, x) order, got shape {arr.shape}")
    if arr.dtype.kind not in "iu" and (
        arr.dtype.kind != "f" or not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr))
    ):
        raise DvidInputError(f"points must be whole voxel coordinates, got {arr.dtype} values that are not")
    out = arr.astype(np.int64)
    if out.min() < -_OFFSET or out.max() >= _OFFSET:
        raise DvidInputError("points must lie within DVID's int32 coordinate range")
    return out


def _axis_blocks(coarse: np.ndarray, factor: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last block each coarse voxel of an axis overlaps."""
    return (coarse * factor) // block, ((coarse + 1) * factor - 1) // block


def _scaled_bounds(roi: _Loaded, factor: int) -> Box | None:
    blocks = spans_to_blocks(roi.spans)
    if len(blocks) == 0:
        return None
    size = np.asarray(roi.block, dtype=np.int64)
    low = blocks.min(axis=0).astype(np.int64) * size
    high = (blocks.max(axis=0).astype(np.int64) + 1) * size
    start = tuple(int(v) for v in low // factor)
    stop = tuple(int(v) for v in -((-high) // factor))
    return (start[0], start[1], start[2]), (stop[0], stop[1], stop[2])


def _paint(volume: np.ndarray, region: Box, factor: int, roi: _Loaded, index: int) -> None:
    """Write ``index`` where the ROI covers a voxel of ``volume`` that is still 0."""
    bounds = _scaled_bounds(roi, factor)
    if bounds is None:
        return
    start = [max(a, b) for a, b in zip(region[0], bounds[0])]
    stop = [min(a, b) for a, b in zip(region[1], bounds[1])]
    if any(b <= a for a, b in zip(start, stop)):
        return
    blocks = spans_to_blocks(roi.spans).astype(np.int64)
    first = blocks.min(axis=0)
    grid = np.zeros(tuple(blocks.max(axis=0) - first + 1), dtype=bool)
    grid[tuple((blocks - first).T)] = True
    lows, highs = [], []
    for axis in range(3):
        coarse = np.arange(start[axis], stop[axis], dtype=np.int64)
        lo, hi = _axis_blocks(coarse, factor, roi.block[axis])
        lows.append(np.clip(lo - first[axis], 0, grid.shape[axis]))
        highs.append(np.clip(hi - first[axis] + 1, 0, grid.shape[axis]))
    if all(np.array_equal(h - lo_, np.ones_like(lo_)) for lo_, h in zip(lows, highs)):
        # Every coarse voxel lies in one block: look it up.
        covered = grid[np.ix_(*lows)]
    else:
        # Coarse voxels span several blocks: count ROI blocks in each voxel's block range.
        table = np.zeros(tuple(n + 1 for n in grid.shape), dtype=np.int64)
        table[1:, 1:, 1:] = grid.cumsum(0).cumsum(1).cumsum(2)
        total = np.zeros(tuple(len(a) for a in lows), dtype=np.int64)
        for corner in range(8):
            picks = [highs[a] if corner >> a & 1 else lows[a] for a in range(3)]
            sign = 1 if bin(corner).count("1") % 2 == 1 else -1
            total += sign * table[np.ix_(*picks)]
        covered = total > 0
    view = volume[tuple(slice(a - r, b - r) for a, b, r in zip(start, stop, region[0]))]
    view[covered & (view == 0)] = index
