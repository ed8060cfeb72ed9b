"""DVID's sparse-volume encodings: run-length spans, voxel coordinates and masks.

DVID describes the voxels of one label as *runs* along x. On the wire (legacy
``format=rles``, also the body of ``/split`` and ``/split-supervoxel``) that is::

    u8 0 (binary payload), u8 3 (dims), u8 0 (runs along x), u8 0,
    u32 0 (voxel count, unused), u32 nspans,
    nspans x (i32 x, i32 y, i32 z, i32 length)            little-endian

In Python every run is a row ``(z, y, x, length)`` of an ``(N, 4)`` int array (the
run covers ``x .. x + length - 1`` at ``(z, y)``), and coordinates are rows
``(z, y, x)``, like everywhere else in dvid_store. Every function here is pure
and vectorised (no per-run Python loops).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from ..errors import DvidError, DvidInputError
from ..geometry import Box, as_box, as_zyx, box_shape

__all__ = [
    "SparseVolError",
    "clip_runs",
    "decode_rles",
    "encode_rles",
    "runs_bounding_box",
    "runs_from_coords",
    "runs_from_mask",
    "runs_to_coords",
    "runs_to_mask",
    "runs_voxel_count",
]

_HEADER = struct.Struct("<BBBBII")


class SparseVolError(DvidError, ValueError):
    """A sparse-volume payload from the server does not follow DVID's layout."""


def decode_rles(data: bytes | bytearray | memoryview, *, header: bool = True) -> np.ndarray:
    """Decode DVID run-length spans into ``(N, 4)`` rows of ``(z, y, x, length)``.

    Parameters
    ----------
    data : bytes
        The payload: legacy RLE with its 12-byte header (``header=True``, DVID's
        ``format=rles`` and ``/sparsevol-coarse``) or bare spans (``format=srles``).
    header : bool
        Whether ``data`` starts with the legacy header.

    Returns
    -------
    numpy.ndarray
        int32 array of shape ``(N, 4)``; columns z, y, x (run start) and length.

    Raises
    ------
    SparseVolError
        The header is not a 3-D binary run encoding along x, or the length does not
        match the span count.
    """
    buf = memoryview(data).cast("B")
    offset = 0
    count: int | None = None
    if header:
        if len(buf) < _HEADER.size:
            raise SparseVolError(f"sparse volume payload of {len(buf)} bytes is shorter than its 12-byte header")
        payload, dims, axis, _, _, count = _HEADER.unpack_from(buf)
        if payload != 0 or dims != 3 or axis != 0:
            raise SparseVolError(
                f"unexpected sparse volume header (payload type {payload}, {dims} dims, run axis {axis}); "
                "expected a binary 3-D encoding with runs along x"
            )
        offset = _HEADER.size
    body = len(buf) - offset
    if body % 16:
        raise SparseVolError(f"sparse volume spans take {body} bytes, not a multiple of 16")
    if count is not None and count != body // 16:
        raise SparseVolError(f"sparse volume header announces {count} spans but the payload holds {body // 16}")
    spans = np.frombuffer(buf, dtype="<i4", offset=offset).reshape(-1, 4)
    # DVID order x, y, z, length -> z, y, x, length
    return spans[:, [2, 1, 0, 3]].astype(np.int32)


def encode_rles(runs: np.ndarray | Sequence[Sequence[int]]) -> bytes:
    """Encode ``(z, y, x, length)`` runs as DVID's legacy RLE payload (with header).

    Raises
    ------
    DvidInputError
        ``runs`` is not ``(N, 4)`` or holds a length below 1.
    """
    arr = _as_runs(runs)
    spans = np.ascontiguousarray(arr[:, [2, 1, 0, 3]], dtype="<i4")
    return _HEADER.pack(0, 3, 0, 0, 0, len(spans)) + spans.tobytes()


def runs_voxel_count(runs: np.ndarray) -> int:
    """Number of voxels covered by ``runs`` (runs are assumed not to overlap)."""
    return int(np.asarray(runs)[:, 3].astype(np.int64).sum())


def runs_bounding_box(runs: np.ndarray) -> Box | None:
    """Exact half-open ``(z, y, x)`` box of the voxels in ``runs``; ``None`` if empty."""
    arr = np.asarray(runs, dtype=np.int64)
    if len(arr) == 0:
        return None
    start = arr[:, :3].min(axis=0)
    stop = np.array([arr[:, 0].max() + 1, arr[:, 1].max() + 1, (arr[:, 2] + arr[:, 3]).max()])
    return as_zyx(start), as_zyx(stop)


def runs_to_coords(runs: np.ndarray) -> np.ndarray:
    """Every voxel of ``runs`` as ``(N, 3)`` int32 rows of ``(z, y, x)``, run by run."""
    arr = np.asarray(runs, dtype=np.int64).reshape(-1, 4)
    lengths = arr[:, 3]
    total = int(lengths.sum())
    coords = np.repeat(arr[:, :3], lengths, axis=0)
    # x advances by one inside each run: subtract each run's start index in the output.
    starts = np.cumsum(lengths) - lengths
    coords[:, 2] += np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
    return coords.astype(np.int32)


def runs_from_coords(coords: np.ndarray) -> np.ndarray:
    """Runs along x covering ``(N, 3)`` voxel coordinates ``(z, y, x)`` (duplicates allowed).

    Returns
    -------
    numpy.ndarray
        int32 ``(M, 4)`` rows of ``(z, y, x, length)`` in z, y, x order.
    """
    arr = np.unique(np.asarray(coords, dtype=np.int64).reshape(-1, 3), axis=0)  # sorted z, y, x
    if len(arr) == 0:
        return np.zeros((0, 4), dtype=np.int32)
    same_row = (arr[1:, 0] == arr[:-1, 0]) & (arr[1:, 1] == arr[:-1, 1])
    starts = np.concatenate([[True], ~(same_row & (arr[1:, 2] == arr[:-1, 2] + 1))])
    first = np.nonzero(starts)[0]
    lengths = np.diff(np.append(first, len(arr)))
    return np.column_stack([arr[first], lengths]).astype(np.int32)


def runs_from_mask(mask: np.ndarray, offset: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Runs along x of the true voxels of a 3-D mask placed at ``offset`` (z, y, x).

    Returns
    -------
    numpy.ndarray
        int32 ``(N, 4)`` rows of ``(z, y, x, length)`` in z, y, x order.
    """
    m = np.asarray(mask)
    if m.ndim != 3:
        raise DvidInputError(f"a mask must be 3-D (z, y, x), got shape {m.shape}")
    m = m.astype(bool, copy=False)
    oz, oy, ox = as_zyx(offset, "mask offset")
    padded = np.zeros(m.shape[:2] + (m.shape[2] + 2,), dtype=np.int8)
    padded[:, :, 1:-1] = m
    edges = np.diff(padded, axis=2)
    zs, ys, xs = np.nonzero(edges == 1)  # run starts (x index into the mask)
    _, _, xe = np.nonzero(edges == -1)  # run ends (exclusive), same C order as the starts
    runs = np.stack([zs + oz, ys + oy, xs + ox, xe - xs], axis=1)
    return runs.astype(np.int32)


def runs_to_mask(runs: np.ndarray, box: Box | Sequence[Sequence[int]]) -> np.ndarray:
    """Paint ``runs`` into a boolean mask covering ``box`` (parts outside are dropped)."""
    start, stop = as_box(box)
    shape = box_shape((start, stop))
    arr = np.asarray(runs, dtype=np.int64).reshape(-1, 4)
    z = arr[:, 0] - start[0]
    y = arr[:, 1] - start[1]
    x0 = np.maximum(arr[:, 2] - start[2], 0)
    x1 = np.minimum(arr[:, 2] + arr[:, 3] - start[2], shape[2])
    keep = (z >= 0) & (z < shape[0]) & (y >= 0) & (y < shape[1]) & (x1 > x0)
    z, y, x0, x1 = z[keep], y[keep], x0[keep], x1[keep]
    # +1 at each run start and -1 at its end on rows one voxel wider; a cumulative sum
    # along x then counts the runs covering each voxel.
    row = (z * shape[1] + y) * (shape[2] + 1)
    size = shape[0] * shape[1] * (shape[2] + 1)
    delta = np.bincount(row + x0, minlength=size) - np.bincount(row + x1, minlength=size)
    cover = np.cumsum(delta.reshape(shape[0], shape[1], shape[2] + 1), axis=2)
    return cover[:, :, :-1] > 0


def _as_runs(runs: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    arr = np.asarray(runs)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 4 or not np.issubdtype(arr.dtype, np.integer):
        raise DvidInputError(f"runs are integer rows of (z, y, x, length), got an array of shape {arr.shape}")
    if (arr[:, 3] < 1).any():
        raise DvidInputError("every run needs a length of at least 1")
    return arr.astype(np.int64)


def clip_runs(runs: np.ndarray, box: Box | Sequence[Sequence[int]]) -> np.ndarray:
    """The parts of ``runs`` inside a half-open ``(z, y, x)`` box (runs cut at its x edges)."""
    start, stop = as_box(box)
    arr = np.asarray(runs, dtype=np.int64).reshape(-1, 4)
    x0 = np.maximum(arr[:, 2], start[2])
    x1 = np.minimum(arr[:, 2] + arr[:, 3], stop[2])
    keep = (
        (arr[:, 0] >= start[0]) & (arr[:, 0] < stop[0]) & (arr[:, 1] >= start[1]) & (arr[:, 1] < stop[1]) & (x1 > x0)
    )
    out = np.stack([arr[keep, 0], arr[keep, 1], x0[keep], (x1 - x0)[keep]], axis=1)
    return out.astype(np.int32)
