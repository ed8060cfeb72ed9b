"""Boxes, blocks and DVID's coordinate strings.

Every Python-facing coordinate is ``(z, y, x)``; boxes are half-open
``((z0, y0, x0), (z1, y1, x1))`` in voxels and may be negative. DVID's ``x_y_z``
strings are produced only here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .errors import DvidInputError

__all__ = [
    "Box",
    "aligned_box",
    "as_box",
    "as_zyx",
    "block_coords_in_box",
    "box_shape",
    "check_allocation",
    "is_aligned",
    "split_box",
    "xyz_string",
]

ZYX = tuple[int, int, int]
Box = tuple[ZYX, ZYX]


def as_zyx(value: int | Sequence[int] | np.ndarray, what: str = "point") -> ZYX:
    """Three integers in (z, y, x) order; a single integer is used for all axes."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),) * 3
    raw = np.asarray(value).ravel()
    if raw.size != 3:
        raise DvidInputError(f"{what} needs 3 values in (z, y, x) order, got {raw.tolist()}")
    if raw.dtype.kind not in "iu":
        # int() would truncate 31.5 to 31 and shift the data by a voxel without a word.
        try:
            whole = raw.dtype.kind in "f" and bool(np.all(np.isfinite(raw))) and bool(np.all(raw == np.round(raw)))
        except TypeError:
            whole = False
        if not whole or raw.dtype.kind == "b":
            raise DvidInputError(
                f"{what} must be whole numbers of voxels in (z, y, x) order, got {raw.tolist()}; "
                "round the coordinates yourself (DVID addresses voxels by integers)"
            )
    items = [int(v) for v in raw]
    return items[0], items[1], items[2]


def as_box(box: Sequence[Sequence[int]] | np.ndarray) -> Box:
    """Validate a half-open ``((z0, y0, x0), (z1, y1, x1))`` box.

    Raises
    ------
    DvidInputError
        Not two (z, y, x) points, or an empty or inverted extent.
    """
    arr = np.asarray(box)
    if arr.shape != (2, 3):
        raise DvidInputError(f"a box is ((z0, y0, x0), (z1, y1, x1)), got {box!r}")
    start, stop = as_zyx(arr[0], "box start"), as_zyx(arr[1], "box stop")
    if any(b <= a for a, b in zip(start, stop)):
        raise DvidInputError(f"box {start}–{stop} is empty or inverted: every stop must exceed its start")
    return start, stop


def box_shape(box: Box) -> ZYX:
    start, stop = box
    return stop[0] - start[0], stop[1] - start[1], stop[2] - start[2]


def xyz_string(zyx: Sequence[int], sep: str = "_") -> str:
    """``(z, y, x)`` → DVID's ``"x_y_z"``."""
    return sep.join(str(int(v)) for v in reversed(tuple(zyx)))


def is_aligned(box: Box, block_shape: Sequence[int]) -> bool:
    """Whether both corners of ``box`` lie on the block grid."""
    return all(c % b == 0 for corner in box for c, b in zip(corner, block_shape))


def aligned_box(box: Box, block_shape: Sequence[int]) -> Box:
    """The smallest block-aligned box that contains ``box``."""
    start = tuple((c // b) * b for c, b in zip(box[0], block_shape))
    stop = tuple(-((-c) // b) * b for c, b in zip(box[1], block_shape))
    return start, stop  # type: ignore[return-value]


def block_coords_in_box(box: Box, block_shape: Sequence[int]) -> np.ndarray:
    """Block coordinates (rows of z, y, x) of every block that ``box`` touches, C order."""
    start, stop = aligned_box(box, block_shape)
    ranges = [np.arange(a // b, c // b) for a, c, b in zip(start, stop, block_shape)]
    grid = np.meshgrid(*ranges, indexing="ij")
    return np.stack([g.ravel() for g in grid], axis=1)


def split_box(box: Box, max_voxels: int, block_shape: Sequence[int] = (1, 1, 1)) -> Iterator[Box]:
    """Split ``box`` into parts of at most ``max_voxels`` voxels, cut on the block grid.

    Cuts go along z first (slabs), then y, then x, as few as needed. Inner cuts fall
    on multiples of the block size, so a block-aligned box gives block-aligned
    parts. A part is never thinner than one block, so a single block larger than
    ``max_voxels`` is returned whole.
    """
    yield from _split(box, max_voxels, tuple(int(b) for b in block_shape), 0)


def _split(box: Box, max_voxels: int, block_shape: tuple[int, ...], axis: int) -> Iterator[Box]:
    shape = box_shape(box)
    total = int(np.prod(shape, dtype=np.int64))
    if total <= max_voxels or axis == 3:
        yield box
        return
    grid = block_shape[axis]
    slab = total // shape[axis] * grid  # voxels in one block-thick slab across this axis
    start, stop = box
    if slab <= max_voxels:
        for a, b in _cuts(start[axis], stop[axis], (max_voxels // slab) * grid, grid):
            yield _with_extent(box, axis, a, b)
    else:
        for a, b in _cuts(start[axis], stop[axis], grid, grid):
            yield from _split(_with_extent(box, axis, a, b), max_voxels, block_shape, axis + 1)


def _with_extent(box: Box, axis: int, a: int, b: int) -> Box:
    start, stop = list(box[0]), list(box[1])
    start[axis], stop[axis] = a, b
    return (start[0], start[1], start[2]), (stop[0], stop[1], stop[2])


def _cuts(start: int, stop: int, step: int, grid: int) -> Iterator[tuple[int, int]]:
    """Intervals covering [start, stop) whose inner cuts fall on multiples of ``grid``."""
    cut = start
    while cut < stop:
        nxt = ((cut // grid) * grid) + step
        if nxt <= cut:
            nxt = cut + step
        nxt = min(nxt, stop)
        yield cut, nxt
        cut = nxt


def memory_limit() -> int:
    """Bytes of physical memory of this machine (a generous ceiling for one array)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return 1 << 62


def check_allocation(shape: Sequence[int], dtype: Any, what: str) -> None:
    """Refuse, before allocating, an array larger than this machine's memory.

    numpy would fail with a bare ``MemoryError`` (or the system would start
    swapping) only after the request was planned; a clear refusal says what to do.
    """
    nbytes = int(np.prod([int(n) for n in shape], dtype=object)) * np.dtype(dtype).itemsize
    limit = memory_limit()
    if nbytes > limit:
        raise DvidInputError(
            f"{what} of shape {tuple(int(n) for n in shape)} needs {nbytes / 2**30:,.1f} GiB, more than this "
            f"machine's {limit / 2**30:,.1f} GiB of memory; read a smaller box, or use open_dask() and compute "
            "on its chunks (e.g. a reduction, or to_dvid/da.store into other storage)"
        )
