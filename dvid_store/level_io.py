"""One level of a DVID voxel instance as numpy-like boxes: :class:`VolumeReader` and :class:`VolumeWriter`.

Both work in array indices of the level as its :class:`~dvid_store.layout.Layout`
presents it (index 0 is the level's block-aligned minimum point) and go through
:class:`~dvid_store.blocks.BlockIO`. They pickle as configuration, so the dask front
end (:func:`~dvid_store.open_dask`, :func:`~dvid_store.to_dvid`,
:class:`~dvid_store.dask_array.DvidArray`), the xarray backend and the command line's
transfers use them on any worker.

A write of a box that covers blocks only in part merges those edge blocks under
:func:`block_locks` (see :class:`VolumeWriter`).

Multichannel levels (``rgba8blk``) are 4-d, ``(z, y, x, 4)``: reads may select
channels (the voxels are read whole and cut here), writes cover all 4 channels of
their box, as DVID stores whole voxels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from .blocks import BlockIO, _overlap
from .datatypes.volume import block_merge_locks
from .errors import ConcurrentWriteError, DvidInputError, unchecked_if_read_back_fails
from .geometry import Box, aligned_box, as_zyx, block_coords_in_box, box_shape

__all__ = ["VolumeReader", "VolumeWriter", "block_locks", "step_one_bounds"]

ZYX = tuple[int, int, int]


def _normalise_key(key: Any, shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[Any, ...]]:
    """Bounding slices (step 1) of a basic index, and the index to apply to them afterwards.

    ``shape`` is the array's: ``(z, y, x)``, or ``(z, y, x, 4)`` for a multichannel level.
    """
    ndim = len(shape)
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (ndim - len(key))
    if len(key) != ndim:
        axes = "(z, y, x)" if ndim == 3 else "(z, y, x, channel)"
        raise IndexError(f"too many indices for a {ndim}-d volume {axes}: {key!r}")
    bounds: list[slice] = []
    after: list[int | slice] = []
    for k, n in zip(key, shape):
        if isinstance(k, (int, np.integer)):
            i = int(k) + n if k < 0 else int(k)
            if not 0 <= i < n:
                raise IndexError(f"index {k} is out of bounds for size {n}")
            bounds.append(slice(i, i + 1))
            after.append(0)
        elif isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step < 0:
                raise IndexError("negative steps are not supported by DVID volumes")
            stop = max(stop, start)
            bounds.append(slice(start, stop))
            after.append(slice(None, None, step) if step != 1 else slice(None))
        else:
            raise IndexError(f"only integers and slices index a DVID volume, got {k!r}")
    return tuple(bounds), tuple(after)


def step_one_bounds(key: Any, shape: Sequence[int]) -> tuple[slice, ...] | None:
    """The box (slices of step 1) that a basic index cuts out of ``shape``.

    Returns None for integers (which drop an axis) and steps other than 1; raises
    IndexError for out-of-range integers, negative steps and anything but integers and
    slices (``None``, arrays).
    """
    bounds, after = _normalise_key(key, shape)
    keys = key if isinstance(key, tuple) else (key,)
    if any(a != slice(None) for a in after) or any(isinstance(k, (int, np.integer)) for k in keys):
        return None
    return bounds


def _array_shape(io: BlockIO, shape: Sequence[int]) -> tuple[int, ...]:
    """``(z, y, x)`` plus the level's channel axis; ``shape`` may already include it."""
    spatial = tuple(int(n) for n in shape[:3])
    rest = tuple(int(n) for n in shape[3:])
    if len(shape) < 3 or (rest and rest != io.channel_shape):
        raise DvidInputError(
            f"a level of {io.typename} {io.instance!r} has shape (z, y, x)"
            + "".join(f" + ({n},)" for n in io.channel_shape) + f"; got {tuple(shape)}"
        )
    return spatial + io.channel_shape


class VolumeReader:
    """A numpy-like, picklable view of one level of a DVID instance (for ``dask.array.from_array``).

    ``reader[z0:z1, y0:y1, x0:x1]`` reads that box (array indices: index 0 is
    ``origin``) through :meth:`BlockIO.read_box`. A multichannel level (rgba8blk) is
    4-d, ``(z, y, x, 4)``; an index of its channel axis cuts the voxels read.

    Parameters
    ----------
    io : BlockIO
        The level's block access.
    origin : (int, int, int)
        Voxel coordinate of index 0.
    shape : (int, int, int)
        Array shape (z, y, x); the channel axis of a multichannel level is added (it
        may be given too).
    """

    def __init__(self, io: BlockIO, origin: Sequence[int], shape: Sequence[int]) -> None:
        self.io = io
        self.origin: ZYX = as_zyx(origin)
        self.shape: tuple[int, ...] = _array_shape(io, shape)
        self.dtype = io.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"VolumeReader({self.io!r}, origin={self.origin}, shape={self.shape})"

    def __getitem__(self, key: Any) -> np.ndarray:
        bounds, after = _normalise_key(key, self.shape)
        sizes = [s.stop - s.start for s in bounds]
        if 0 in sizes:
            empty: np.ndarray = np.empty(sizes, self.dtype)[after]
            return empty
        data = self.io.read_box(self._box(bounds))
        if bounds[3:] and any(b != slice(0, n) for b, n in zip(bounds[3:], self.shape[3:])):
            data = data[(slice(None),) * 3 + bounds[3:]]
        return data[after] if any(a != slice(None) for a in after) else data

    def read_into(self, region: tuple[slice, ...], out: np.ndarray) -> np.ndarray:
        """Read ``self[region]`` (slices of step 1, array indices) into ``out``, a view of that shape."""
        channels = region[3:]
        if all(c == slice(0, n) for c, n in zip(channels, self.shape[3:])):
            return self.io.read_box(self._box(region), out=out)
        out[...] = self.io.read_box(self._box(region))[(slice(None),) * 3 + channels]
        return out

    def _box(self, region: tuple[slice, ...]) -> Box:
        """The voxel box of array-index slices of step 1 (a channel slice is left to the caller)."""
        return (
            tuple(o + s.start for o, s in zip(self.origin, region)),
            tuple(o + s.stop for o, s in zip(self.origin, region)),
        )


class VolumeWriter:
    """A picklable ``target[region] = data`` for ``dask.array.store`` into a DVID level.

    Regions are array indices (index 0 = ``origin``). A region that covers whole
    blocks is written directly. Blocks it covers only in part (its edge blocks) are
    read, merged and written back:

    * labelmap edge blocks are read as supervoxel ids, whatever view the data was
      read through, so every voxel outside the region keeps its stored supervoxel id
      bit for bit (a body-id read would write merged bodies back as supervoxels and
      make merges impossible to undo). The written values are stored as given.
    * the merge of a block holds a lock on it: a per-process lock, and on a
      dask.distributed worker a cluster-wide ``distributed.MultiLock``, so tasks of
      one cluster that share blocks never lose each other's voxels;
    * afterwards the edge blocks are read again, and if the region's own voxels
      there are not what was written, another writer (an independent process: no
      lock reaches it) wrote over them: :class:`~dvid_store.errors.ConcurrentWriteError`.

    A multichannel level (rgba8blk) is 4-d, ``(z, y, x, 4)``, and every region
    covers all 4 channels (DVID stores whole voxels); edge blocks merge all channels
    of the region's voxels.
    """

    def __init__(self, io: BlockIO, origin: Sequence[int], shape: Sequence[int]) -> None:
        self.io = io
        self.origin: ZYX = as_zyx(origin)
        self.shape: tuple[int, ...] = _array_shape(io, shape)
        self.dtype = io.dtype
        self.ndim = len(self.shape)

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        bounds = step_one_bounds(key, self.shape)
        if bounds is None:
            raise DvidInputError("DVID volumes are written by boxes: use slices with step 1")
        if any(b != slice(0, n) for b, n in zip(bounds[3:], self.shape[3:])):
            raise DvidInputError(
                f"{self.io.typename} {self.io.instance!r} stores whole voxels: a write covers all "
                f"{', '.join(map(str, self.io.channel_shape))} channels of its box (got {bounds[3:]})"
            )
        value = np.asarray(value)
        start = tuple(o + s.start for o, s in zip(self.origin, bounds))
        stop = tuple(o + s.stop for o, s in zip(self.origin, bounds))
        shape = tuple(b - a for a, b in zip(start, stop)) + self.io.channel_shape
        if value.shape != shape:
            value = np.broadcast_to(value, shape)
        if value.size == 0:
            return
        box: Box = (start, stop)
        outer = aligned_box(box, self.io.block_shape)
        if outer == box:
            self.io.write_box(value, start)
            return
        # Check before merging: numpy's assignment would wrap values that do not fit.
        value = self.io._check_dtype(value)
        self.io.node.require_writable(f"writing to {self.io.instance!r}")
        edges = _edge_blocks(box, outer, self.io.block_shape)
        with block_locks(self.io, edges):
            data = np.empty(box_shape(outer) + self.io.channel_shape, self.io.dtype)
            stored = self._stored_view()
            for coord, block in _read_all(stored, edges).items():
                dst, _ = _overlap(outer, coord, self.io.block_shape)
                data[dst] = block
            inner = tuple(slice(a - o, b - o) for a, b, o in zip(start, stop, outer[0]))
            data[inner] = value
            self.io.write_box(data, outer[0])
            self._verify(stored, edges, outer, data, box)

    def _stored_view(self) -> BlockIO:
        """The block access that reads what is stored: supervoxel ids for labelmaps."""
        io = self.io
        if io.family != "labelmap" or io.supervoxels:
            return io
        return BlockIO(
            io.node, io.instance, typename=io.typename, block_shape=io.block_shape, scale=io.scale,
            supervoxels=True, compression=io.compression, stored=io.stored, max_blocks=io.max_blocks,
            max_bytes=io.max_bytes, max_write_voxels=io.max_write_voxels,
        )

    def _verify(self, stored: BlockIO, edges: list[ZYX], outer: Box, data: np.ndarray, box: Box) -> None:
        """Read the merged edge blocks back; the region's own voxels must be as written."""
        with unchecked_if_read_back_fails(f"{box[0]}–{box[1]} (z, y, x) of {self.io.instance!r}"):
            again = _read_all(stored, edges)
        bs = self.io.block_shape
        for coord in edges:
            dst, _ = _overlap(outer, coord, bs)
            mine = tuple(
                slice(max(d.start, a - o), min(d.stop, b - o)) for d, a, b, o in zip(dst, box[0], box[1], outer[0])
            )
            block_dst = tuple(slice(m.start - d.start, m.stop - d.start) for m, d in zip(mine, dst))
            if not np.array_equal(again[coord][block_dst], data[mine]):
                lo = tuple(c * b for c, b in zip(coord, bs))
                raise ConcurrentWriteError(
                    f"another writer wrote block at {lo} (z, y, x) of {self.io.instance!r} while this write "
                    f"merged its part of the box {box[0]}–{box[1]} into it, and this write's voxels there were "
                    "lost. Writes of boxes that share DVID blocks must not run at once from independent "
                    "processes: align boxes to the block grid, or run the writers as tasks of one "
                    "dask.distributed cluster (which locks shared blocks). Write the box again."
                )


def _edge_blocks(box: Box, outer: Box, block_shape: ZYX) -> list[ZYX]:
    """Blocks of ``outer`` that ``box`` covers only in part, sorted."""
    edges = []
    for c in block_coords_in_box(outer, block_shape):
        coord = (int(c[0]), int(c[1]), int(c[2]))
        lo = tuple(v * b for v, b in zip(coord, block_shape))
        hi = tuple(v + b for v, b in zip(lo, block_shape))
        if any(l < a or h > b for l, h, a, b in zip(lo, hi, box[0], box[1])):
            edges.append(coord)
    return sorted(edges)


def _read_all(io: BlockIO, coords: list[ZYX]) -> dict[ZYX, np.ndarray]:
    """Every block of ``coords``, absent ones (confirmed by :meth:`BlockIO.read`) as zeros."""
    found = io.read(coords)
    return {c: found[c] if c in found else np.zeros(io.block_array_shape, io.dtype) for c in coords}


def block_locks(io: BlockIO, coords: Sequence[ZYX]) -> contextlib.AbstractContextManager[None]:
    """Hold the merge locks of blocks ``coords`` of ``io``'s level (see :class:`VolumeWriter`).

    The node API's merge locks (:func:`dvid_store.datatypes.volume.block_merge_locks`):
    process-local, and cluster-wide on a dask.distributed worker, so the front ends'
    and the node API's merges of the same blocks wait for each other.
    """
    return block_merge_locks(io.node, io.instance, io.scale, coords)
