"""What every DVID voxel volume shares: metadata, box reads and writes, numpy slicing.

A :class:`VolumeInstance` is a 3-D array in DVID's *signed* voxel coordinates. Reads
and writes take boxes ``((z0, y0, x0), (z1, y1, x1))`` (half-open, voxels, any
sign) and numpy arrays in ``(z, y, x)`` order. Numpy-style slicing reads and writes
the same boxes::

    vol[0:64, 100:200, -50:50]          # a (64, 100, 100) array
    vol[0:64, 0:64, 0:64] = block       # a block-aligned write

**Slice bounds are absolute DVID coordinates.** DVID coordinates are signed, so
``vol[-10:0, 0:5, 0:5]`` means voxels z = -10 … -1, *not* "the last ten" as in
numpy. An open bound (``vol[:, 0:10, :]``) means the edge of the instance's
stored bounding box (:attr:`VolumeInstance.extents`); it is an error when
nothing has been stored yet. Steps other than 1, ``None`` (``np.newaxis``) and
array ("fancy") indices are refused; an integer index selects one plane and
drops that axis, like numpy. :meth:`VolumeInstance.with_options` makes a view
whose slicing passes options (``scale=``, ``supervoxels=``, ``roi=`` …) on.

ROIs (``roi=``) are checked before sending: DVID v1.0.0 reads an ROI's block
coordinates as coordinates of the volume's own blocks, so an ROI with another
block size would mask the wrong voxels and is refused.

Requests larger than one HTTP call can carry (DVID refuses bodies over 3 GiB,
libdvid kept to ``INT_MAX / 8`` voxels) are split into block-aligned parts that
are fetched or sent in parallel threads; reads land directly in one
preallocated output array.
"""

from __future__ import annotations

import contextlib
import math
import operator
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, ClassVar

import lz4.block
import numpy as np

from ..errors import (
    ConcurrentWriteError,
    DvidInputError,
    MalformedAnswerError,
    unchecked_if_read_back_fails,
)
from ..geometry import (
    ZYX,
    Box,
    aligned_box,
    as_box,
    as_zyx,
    box_shape,
    check_allocation,
    is_aligned,
    split_box,
    xyz_string,
)
from .base import Instance

if TYPE_CHECKING:
    from ..node import Node

__all__ = [
    "DVID_MAX_REQUEST_BYTES",
    "LIBDVID_MAX_VOXELS",
    "LZ4_MAX_BYTES",
    "DvidIndexError",
    "VolumeInstance",
]

#: DVID refuses a single volume request whose payload exceeds this (``server.MaxDataRequest``).
DVID_MAX_REQUEST_BYTES = 3 * 2**30

#: libdvid's per-request voxel limit (``INT_MAX / 8``): the default part size.
LIBDVID_MAX_VOXELS = (2**31 - 1) // 8

#: Largest input one LZ4 block can hold (``LZ4_MAX_INPUT_SIZE``), rounded down.
LZ4_MAX_BYTES = 2**30

_STREAM_CHUNK = 1 << 20

# DVID's DataType names in /info -> numpy dtypes.
_DVID_DTYPES = {
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "float32": np.float32,
    "float64": np.float64,
}


class VolumeInstance(Instance):
    """A DVID instance holding a 3-D voxel volume (imageblk family, labels).

    Attributes
    ----------
    max_request_voxels : int
        Largest part, in voxels, of one HTTP request; bigger reads and writes are
        split into block-aligned parts (default libdvid's ``INT_MAX / 8``; the
        byte limits of DVID and of LZ4 lower it further where they apply). Set it
        on an instance to change it for that object only.
    max_workers : int
        Threads used for the parts of one split request.
    """

    max_request_voxels: int = LIBDVID_MAX_VOXELS
    max_workers: int = 4

    #: Trailing channel axis of the arrays (rgba8blk: 4), or ``()``.
    channel_shape: ClassVar[tuple[int, ...]] = ()

    #: Keyword options that numpy slicing passes to :meth:`read` / :meth:`write`.
    _slice_options: dict[str, Any]
    #: Slicing options that select what is read (a view with them set refuses writes).
    _read_only_options: ClassVar[tuple[str, ...]] = ()
    #: Slicing options that only change how reads travel (left out of writes).
    _read_transfer_options: ClassVar[tuple[str, ...]] = ()
    #: Slicing options that only change how writes are made (left out of reads).
    _write_only_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, node: Node, name: str) -> None:
        super().__init__(node, name)
        self._slice_options = {}

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["slice_options"] = dict(self._slice_options)
        state["limits"] = {k: v for k, v in vars(self).items() if k in ("max_request_voxels", "max_workers")}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._slice_options = dict(state.get("slice_options", {}))
        for key, value in state.get("limits", {}).items():
            setattr(self, key, value)

    # ---------------------------------------------------------------- metadata
    @property
    def dtype(self) -> np.dtype:
        """numpy dtype of one voxel (of one channel, for rgba8blk)."""
        values = self.info["Extended"]["Values"]
        name = values[0]["DataType"]
        try:
            return np.dtype(_DVID_DTYPES[name])
        except KeyError:
            raise DvidInputError(
                f"instance {self.name!r} stores {name!r} voxels, which dvid_store cannot map to numpy"
            ) from None

    @property
    def block_shape(self) -> ZYX:
        """DVID block size in voxels, ``(z, y, x)``."""
        x, y, z = self.info["Extended"]["BlockSize"]
        return int(z), int(y), int(x)

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Physical size of one voxel, ``(z, y, x)``, in :attr:`voxel_units`."""
        x, y, z = self.info["Extended"]["VoxelSize"]
        return float(z), float(y), float(x)

    @property
    def voxel_units(self) -> tuple[str, str, str]:
        """Units of :attr:`voxel_size`, ``(z, y, x)`` (e.g. ``"nanometers"``)."""
        x, y, z = self.info["Extended"]["VoxelUnits"]
        return str(z), str(y), str(x)

    @property
    def extents(self) -> Box | None:
        """The stored bounding box of this version: a half-open ``(z, y, x)`` box in voxels.

        ``None`` until something has been written. DVID keeps it per version,
        grows it on every ``/raw`` write and never shrinks it. Asked from the
        server on every access (other clients may write).
        """
        self.refresh()
        info = self.info
        extents = info.get("Extents") or {}
        lo = extents.get("MinPoint", info["Extended"].get("MinPoint"))
        hi = extents.get("MaxPoint", info["Extended"].get("MaxPoint"))
        if not lo or not hi:
            return None
        start = (int(lo[2]), int(lo[1]), int(lo[0]))
        stop = (int(hi[2]) + 1, int(hi[1]) + 1, int(hi[0]) + 1)
        return start, stop

    def bounding_box(self) -> Box | None:
        """The stored bounding box (pydvid's "extents"); same as :attr:`extents`."""
        return self.extents

    @property
    def shape(self) -> tuple[int, ...] | None:
        """Shape of the stored bounding box, ``(z, y, x)`` (plus channels); ``None`` if empty."""
        box = self.extents
        return None if box is None else box_shape(box) + self.channel_shape

    @property
    def ndim(self) -> int:
        """3, or 4 with a trailing channel axis."""
        return 3 + len(self.channel_shape)

    def set_extents(self, box: Box | Sequence[Sequence[int]]) -> None:
        """Overwrite this version's stored bounding box (``POST /extents``).

        Parameters
        ----------
        box : ((z0, y0, x0), (z1, y1, x1))
            Half-open box in voxels.
        """
        start, stop = as_box(box)
        self.require_writable("setting the extents")
        payload = {"MinPoint": list(reversed(start)), "MaxPoint": [c - 1 for c in reversed(stop)]}
        self.transport.post_json(self.path("extents"), payload)
        self.refresh()

    def set_voxel_size(self, voxel_size: Sequence[float]) -> None:
        """Set the physical voxel size, ``(z, y, x)``, for the whole instance (``POST /resolution``)."""
        z, y, x = (float(v) for v in voxel_size)
        self.require_writable("setting the voxel size")
        self.transport.post_json(self.path("resolution"), [x, y, z])
        self.refresh()

    # ------------------------------------------------------------ reads, writes
    def read(self, box: Box | Sequence[Sequence[int]], **options: Any) -> np.ndarray:
        """Read a box ``((z0, y0, x0), (z1, y1, x1))`` as a numpy array; see the subclasses."""
        raise NotImplementedError(f"{type(self).__name__} does not define read()")

    def write(self, array: Any, offset: Sequence[int], **options: Any) -> None:
        """Write a block-aligned array at ``offset`` (z, y, x); see the subclasses."""
        raise NotImplementedError(f"{type(self).__name__} does not define write()")

    # ------------------------------------------------------------ numpy slicing
    def with_options(self, **options: Any) -> VolumeInstance:
        """A copy whose numpy slicing passes ``options`` to :meth:`read` / :meth:`write`.

        Examples
        --------
        >>> seg.with_options(scale=1, supervoxels=True)[0:32, 0:32, 0:32]   # doctest: +SKIP
        """
        clone = type(self).__new__(type(self))
        clone.__setstate__(self.__getstate__())
        clone._slice_options = {**self._slice_options, **options}
        return clone

    def __getitem__(self, key: Any) -> np.ndarray:
        start, stop, dropped, channel = self._resolve_key(key, self._slice_options)
        shape = tuple(max(0, b - a) for a, b in zip(start, stop))
        if all(shape):
            options = {k: v for k, v in self._slice_options.items() if k not in self._write_only_options}
            data = self.read((start, stop), **options)
        else:  # an empty selection, as numpy allows
            data = np.zeros(shape + self.channel_shape, dtype=self.dtype)
        data = data.reshape(_kept(shape, dropped) + self.channel_shape)
        if channel is not None:
            data = data[(Ellipsis, channel)]
        return data

    def __setitem__(self, key: Any, value: Any) -> None:
        start, stop, dropped, channel = self._resolve_key(key, self._slice_options)
        if channel is not None and channel != slice(None):
            raise DvidInputError("writes cover all channels: index the channel axis with ':' (or not at all)")
        shape = tuple(max(0, b - a) for a, b in zip(start, stop))
        kept = _kept(shape, dropped) + self.channel_shape
        array = np.asarray(value)
        while array.ndim > len(kept) and array.shape[0] == 1:
            array = array[0]  # numpy drops leading unit axes of the value too
        try:
            array = np.broadcast_to(array, kept).reshape(shape + self.channel_shape)
        except ValueError:
            raise DvidInputError(
                f"cannot place an array of shape {np.shape(value)} into a selection of shape {kept}"
            ) from None
        options = {k: v for k, v in self._slice_options.items() if k not in self._read_transfer_options}
        for key in self._read_only_options:
            if options.pop(key, None):
                raise DvidInputError(
                    f"this view reads with {key}={self._slice_options[key]!r}, which writes cannot use; "
                    "write through the instance itself (or a with_options() view without it)"
                )
        if all(shape):
            self.write(array, start, **options)

    def _resolve_key(self, key: Any, options: Mapping[str, Any]) -> tuple[ZYX, ZYX, frozenset[int], Any]:
        """A numpy-style key as (start, stop) in DVID coordinates, integer-indexed axes, channel key.

        The box may be empty (stop <= start on some axis).
        """
        items = list(key) if isinstance(key, tuple) else [key]
        if any(k is None for k in items):
            raise DvidInputError(
                "np.newaxis / None is not supported when indexing a DVID volume; add axes to the result instead"
            )
        ndim = self.ndim
        n_ellipsis = sum(k is Ellipsis for k in items)
        if n_ellipsis > 1:
            raise DvidInputError("an index can only have a single ellipsis ('...')")
        if n_ellipsis:
            at = next(i for i, k in enumerate(items) if k is Ellipsis)
            items[at : at + 1] = [slice(None)] * max(ndim - (len(items) - 1), 0)
        if len(items) > ndim:
            axes = "(z, y, x, channel)" if self.channel_shape else "(z, y, x)"
            raise DvidIndexError(
                f"too many indices for a {ndim}-D DVID volume {axes}: got {len(items)}" + _pydvid_hint(items)
            )
        items += [slice(None)] * (ndim - len(items))
        channel = _check_channel_key(items[3], self.channel_shape[0], items) if self.channel_shape else None

        bounds: list[tuple[int | None, int | None]] = []
        dropped: set[int] = set()
        for axis, item in enumerate(items[:3]):
            if isinstance(item, slice):
                if item.step not in (None, 1):
                    raise DvidInputError(
                        f"slice steps are not supported (axis {'zyx'[axis]} has step {item.step}); "
                        "read the box and step through the result, e.g. vol[0:64, 0:64, 0:64][::2]"
                    )
                bounds.append((_as_coordinate(item.start, axis), _as_coordinate(item.stop, axis)))
            else:
                index = _as_coordinate(item, axis, plane=True)
                bounds.append((index, None if index is None else index + 1))
                dropped.add(axis)
        if any(a is None or b is None for a, b in bounds):
            ext = self._extents_for(options)
            if ext is None:
                raise DvidInputError(
                    f"instance {self.name!r} has no stored bounding box yet, so open slice bounds "
                    "(':', 'a:' or ':b') cannot be resolved; give explicit coordinates"
                )
            bounds = [
                (ext[0][axis] if a is None else a, ext[1][axis] if b is None else b)
                for axis, (a, b) in enumerate(bounds)
            ]
        start = tuple(int(a) for a, _ in bounds)  # type: ignore[arg-type]
        stop = tuple(int(b) for _, b in bounds)  # type: ignore[arg-type]
        return start, stop, frozenset(dropped), channel  # type: ignore[return-value]

    def _extents_for(self, options: Mapping[str, Any]) -> Box | None:
        """The stored bounding box in the voxel grid that ``options`` select (scale 0 here)."""
        return self.extents

    def _check_roi(self, roi: str | None) -> None:
        """Refuse an ROI whose block size differs from this instance's, before sending.

        DVID (v1.0.0) applies an ROI by reading its block coordinates as
        coordinates of *this instance's* blocks, so masks and masked writes are
        only right when both use the same block size.
        """
        if not roi:
            return
        info = self.node.typeinfo(roi)
        if info["Base"]["TypeName"] != "roi":
            raise DvidInputError(f"{roi!r} is a {info['Base']['TypeName']} instance, not a roi")
        x, y, z = info["Extended"]["BlockSize"]
        if (int(z), int(y), int(x)) != self.block_shape:
            raise DvidInputError(
                f"roi {roi!r} has {(int(z), int(y), int(x))} blocks but {self.name!r} has {self.block_shape} "
                "blocks; DVID reads the roi's block coordinates as this instance's block coordinates, so it "
                "would mask the wrong voxels. Use a roi with the same block size"
            )

    # ------------------------------------------------------------------ engine
    def _part_voxels(self, itemsize: int, compressed: bool) -> int:
        limit = min(int(self.max_request_voxels), DVID_MAX_REQUEST_BYTES // itemsize)
        if compressed:
            limit = min(limit, LZ4_MAX_BYTES // itemsize)
        return max(limit, 1)

    @property
    def _voxel_bytes(self) -> int:
        return self.dtype.itemsize * max(1, math.prod(self.channel_shape))

    def _read_volume(
        self,
        box: Box,
        params: Mapping[str, Any],
        *,
        grid: Sequence[int],
        compressed: bool = False,
        sequential: bool = False,
        read_part: Callable[[Box, np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """Read ``box`` into a new array, in parts of at most :attr:`max_request_voxels`.

        ``read_part(part, dest)`` fills ``dest`` (the part's view of the output);
        by default it is ``GET /raw`` with ``params``.
        """
        _check_int32(box)
        check_allocation(box_shape(box) + self.channel_shape, self.dtype, f"a read of {self.name!r}")
        out = np.zeros(box_shape(box) + self.channel_shape, dtype=self.dtype)
        reader = read_part or (lambda part, dest: self._get_raw(part, dest, params, compressed=compressed))
        parts = list(split_box(box, self._part_voxels(self._voxel_bytes, compressed), grid))
        tasks = [(part, out[_slices(part, box)]) for part in parts]
        _run_parts(tasks, reader, 1 if sequential else self.max_workers, writing=False)
        return out

    def _get_raw(self, part: Box, dest: np.ndarray, params: Mapping[str, Any], *, compressed: bool) -> None:
        """``GET /raw/0_1_2/<size>/<offset>`` of ``part`` into ``dest``, its length checked."""
        consume = lz4_into(dest) if compressed else bytes_into(dest)
        self.transport.stream("GET", self._raw_path(part), consume, params=params)

    def _raw_path(self, part: Box) -> str:
        return self.path("raw", "0_1_2", xyz_string(box_shape(part)), xyz_string(part[0]))

    def _write_volume(
        self,
        array: np.ndarray,
        box: Box,
        params: Mapping[str, Any],
        *,
        compressed: bool = False,
        idempotent: bool = True,
        sequential: bool = False,
        write_part: Callable[[Box, np.ndarray], None] | None = None,
    ) -> None:
        """Send ``array`` (covering the aligned ``box``) in block-aligned parts."""
        writer = write_part or (
            lambda part, data: self._post_raw(part, data, params, compressed=compressed, idempotent=idempotent)
        )
        parts = list(split_box(box, self._part_voxels(self._voxel_bytes, compressed), self.block_shape))
        tasks = [(part, array[_slices(part, box)]) for part in parts]
        _run_parts(tasks, writer, 1 if sequential else self.max_workers, writing=True)

    def _post_raw(
        self, part: Box, data: np.ndarray, params: Mapping[str, Any], *, compressed: bool, idempotent: bool
    ) -> None:
        """``POST /raw/0_1_2/<size>/<offset>`` of one part."""
        contiguous = np.ascontiguousarray(data)
        body: bytes | memoryview = contiguous.reshape(-1).view(np.uint8).data
        if compressed:
            body = lz4.block.compress(body, store_size=False)
        post_retrying_busy(self.transport, self._raw_path(part), body, params, idempotent=idempotent)

    #: How to write an unaligned box instead, for the refusal's message ("" if there is no way here).
    _unaligned_hint: ClassVar[str] = ""

    def _check_write(
        self, array: Any, offset: Sequence[int], dtype: np.dtype | None = None, *, aligned: bool = True
    ) -> tuple[np.ndarray, Box]:
        """Validate a write before anything is sent; return the array and its box.

        With ``aligned=False`` a box off the block grid is accepted (the caller merges its edges).
        """
        arr = coerce_array(array, dtype or self.dtype, self.name, self.ndim, self.channel_shape)
        start = as_zyx(offset, "offset")
        box: Box = (start, tuple(s + n for s, n in zip(start, arr.shape[:3])))
        _check_int32(box)
        block = self.block_shape
        if aligned and not is_aligned(box, block):
            enclosing = aligned_box(box, block)
            raise DvidInputError(
                f"DVID only accepts block-aligned writes: the box {box[0]}–{box[1]} (z, y, x) of "
                f"instance {self.name!r} is not aligned to its {block} blocks. The enclosing aligned "
                f"box is {enclosing[0]}–{enclosing[1]}: read it, change your part, and write it back"
                + self._unaligned_hint
            )
        return arr, box

    def _write_merging_edges(self, array: np.ndarray, box: Box, params: Mapping[str, Any], *, sequential: bool) -> None:
        """Write an unaligned box: read the blocks it covers in part, merge ``array`` in, write them whole.

        The same rules as the front ends' edge merges: every voxel outside ``box``
        is written back exactly as it was read; the merge of a block holds its merge
        lock (per process, and cluster-wide on a dask.distributed worker); afterwards
        the partly covered blocks are read again, and if this write's voxels there
        are not what was written, another writer wrote over them in between:
        :class:`~dvid_store.errors.ConcurrentWriteError`.
        """
        if array.size == 0:
            return
        block = self.block_shape
        outer = aligned_box(box, block)
        slabs = _edge_slabs(box, outer, block)
        edges = sorted({coord for slab in slabs for coord in _block_coords(slab, block)})
        reads = {k: v for k, v in params.items() if k == "throttle"}
        with edge_block_locks(self, edges):
            merged = np.empty(box_shape(outer) + self.channel_shape, dtype=self.dtype)
            for slab in slabs:
                merged[_slices(slab, outer)] = self._read_volume(slab, reads, grid=block, sequential=sequential)
            merged[_slices(box, outer)] = array
            self._write_volume(merged, outer, params, idempotent=True, sequential=sequential)
            for slab in slabs:
                with unchecked_if_read_back_fails(f"{box[0]}–{box[1]} (z, y, x) of {self.name!r}"):
                    again = self._read_volume(slab, reads, grid=block, sequential=sequential)
                mine: Box = (
                    as_zyx([max(a, b) for a, b in zip(slab[0], box[0])]),
                    as_zyx([min(a, b) for a, b in zip(slab[1], box[1])]),
                )
                if not np.array_equal(again[_slices(mine, slab)], array[_slices(mine, box)]):
                    raise ConcurrentWriteError(
                        f"another writer wrote blocks of {self.name!r} in {slab[0]}–{slab[1]} (z, y, x) while this "
                        f"write merged its part of the box {box[0]}–{box[1]} into them, and this write's voxels "
                        "there were lost. Writes of boxes that share DVID blocks must not run at once from "
                        "independent processes: align boxes to the block grid, or write them one after the "
                        "other. Write the box again."
                    )


# ---------------------------------------------------------------------- helpers
def _edge_slabs(box: Box, outer: Box, block: ZYX) -> list[Box]:
    """Disjoint boxes, one block thick, covering the blocks of ``outer`` that ``box`` covers in part.

    ``outer`` is ``box`` rounded out to the block grid. Along each axis where ``box``
    starts (or stops) inside a block, the layer of blocks there is a slab; later
    axes' slabs leave out what earlier ones took, so no voxel is read twice.
    """
    lo, hi = list(outer[0]), list(outer[1])
    slabs: list[Box] = []
    for axis in range(3):
        if box[0][axis] != outer[0][axis]:
            top = min(lo[axis] + block[axis], hi[axis])
            slabs.append((_with(lo, axis, lo[axis]), _with(hi, axis, top)))
            lo[axis] = top
        if box[1][axis] != outer[1][axis] and hi[axis] > lo[axis]:
            bottom = max(hi[axis] - block[axis], lo[axis])
            slabs.append((_with(lo, axis, bottom), _with(hi, axis, hi[axis])))
            hi[axis] = bottom
        if hi[axis] <= lo[axis]:  # the slabs took every block
            break
    return slabs


def _with(point: Sequence[int], axis: int, value: int) -> ZYX:
    out = list(point)
    out[axis] = value
    return (out[0], out[1], out[2])


def _block_coords(box: Box, block: ZYX) -> list[ZYX]:
    ranges = [range(a // b, -(-c // b)) for a, c, b in zip(box[0], box[1], block)]
    return [(z, y, x) for z in ranges[0] for y in ranges[1] for x in ranges[2]]


_merge_locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_merge_locks_guard = threading.Lock()


@contextlib.contextmanager
def edge_block_locks(volume: VolumeInstance, coords: Sequence[ZYX], scale: int = 0) -> Iterator[None]:
    """Hold the merge locks of blocks ``coords`` of ``volume`` (at ``scale``) while their edges are merged.

    See :func:`block_merge_locks`.
    """
    with block_merge_locks(volume.node, volume.name, scale, coords):
        yield


@contextlib.contextmanager
def block_merge_locks(node: Node, instance: str, scale: int, coords: Sequence[ZYX]) -> Iterator[None]:
    """Hold the merge locks of blocks ``coords`` of an instance's level while their edges are merged.

    Process-local locks always; on a dask.distributed worker also one
    ``distributed.MultiLock`` over the blocks' names, cluster-wide, so node API merges
    and the front ends' merges (:func:`dvid_store.level_io.block_locks`) of the same
    blocks wait for each other, in one process and on one cluster. Locks are taken in
    sorted order, so writers never deadlock.
    """
    names = [
        f"dvid_store-merge:{node.transport.base_url}/{node.uuid}/{instance}/{scale}/{z}_{y}_{x}"
        for z, y, x in sorted(coords)
    ]
    with _merge_locks_guard:
        locks = [_merge_locks.setdefault(name, threading.Lock()) for name in names]
    with contextlib.ExitStack() as stack:
        for lock in locks:
            stack.enter_context(lock)
        cluster = _cluster_lock(names)
        if cluster is not None:
            cluster.acquire()
            stack.callback(cluster.release)
        yield


def _cluster_lock(names: list[str]) -> Any:
    """A ``distributed.MultiLock`` over ``names`` when running on a dask.distributed worker, else None."""
    try:
        from distributed import MultiLock, get_worker
    except ImportError:
        return None
    try:
        get_worker()
    except ValueError:  # not running on a worker
        return None
    return MultiLock(names=names)


class DvidIndexError(DvidInputError, IndexError):
    """An index that does not fit the volume's axes: too many indices, or a channel out of range.

    An :class:`IndexError`, as numpy raises for the same mistakes, and a
    :class:`~dvid_store.errors.DvidInputError` (nothing was sent).
    """


def _pydvid_hint(items: Sequence[Any]) -> str:
    """Advice for a key written in pydvid's channel-first ``[c, x, y, z]`` order, else ''."""
    if len(items) != 4:
        return ""
    x, y, z = items[1:]
    if not all(isinstance(k, slice) for k in (x, y, z)):
        return ""
    return (
        f". This looks like pydvid's channel-first [c, x, y, z] order; dvid_store slices (z, y, x): "
        f"vol[{_slice_text(z)}, {_slice_text(y)}, {_slice_text(x)}] (or use dvid_store.compat.pydvid)"
    )


def _slice_text(item: slice) -> str:
    start = "" if item.start is None else str(item.start)
    stop = "" if item.stop is None else str(item.stop)
    return f"{start}:{stop}" + ("" if item.step is None else f":{item.step}")


def _check_channel_key(key: Any, channels: int, items: Sequence[Any]) -> Any:
    """The channel part of a key, if it selects channels that exist; else :class:`DvidIndexError`.

    numpy would return an empty axis for a slice past the last channel; here that is
    almost always a key written for other axes (pydvid's ``[c, x, y, z]``), so it is refused.
    """
    if isinstance(key, slice):
        try:
            bounds = [operator.index(b) for b in (key.start, key.stop) if b is not None]
        except TypeError:
            raise DvidInputError(f"channel slice bounds must be integers, got {_slice_text(key)}") from None
        if all(-channels <= b <= channels for b in bounds):
            return key
        raise DvidIndexError(
            f"the 4th index selects channels, of which this volume has {channels} (R, G, B, A); "
            f"{_slice_text(key)} selects none of them" + _pydvid_hint(items)
        )
    if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
        raise DvidInputError(
            f"the channel index must be an integer or a slice, got {key!r}; fancy indices are not supported"
        )
    if not -channels <= int(key) < channels:
        raise DvidIndexError(f"channel index {key} is out of range for {channels} channels (R, G, B, A)")
    return int(key)


def _check_int32(box: Box) -> None:
    if min(box[0]) < -(2**31) or max(box[1]) > 2**31:
        raise DvidInputError(
            f"DVID coordinates are 32-bit signed integers; the box {box[0]}–{box[1]} leaves that range"
        )


def _kept(shape: tuple[int, ...], dropped: frozenset[int]) -> tuple[int, ...]:
    return tuple(n for axis, n in enumerate(shape) if axis not in dropped)


def _as_coordinate(value: Any, axis: int, plane: bool = False) -> int | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise DvidInputError("boolean indices are not supported for DVID volumes")
    try:
        return operator.index(value)
    except TypeError:
        what = "an index" if plane else "a slice bound"
        raise DvidInputError(
            f"{what} along {'zyx'[axis]} must be an integer (an absolute DVID coordinate), got {value!r}; "
            "array ('fancy') and float indices are not supported"
        ) from None


def _slices(part: Box, whole: Box) -> tuple[slice, slice, slice]:
    return tuple(slice(a - o, b - o) for a, b, o in zip(part[0], part[1], whole[0]))  # type: ignore[return-value]


def coerce_array(
    array: Any, dtype: np.dtype, name: str, ndim: int = 3, channel_shape: tuple[int, ...] = ()
) -> np.ndarray:
    """Check (and losslessly convert) an array to be written to an instance storing ``dtype``.

    Accepted: the same dtype; a dtype that numpy casts *safely* to it; integers
    into a wider-or-equal integer type when every value fits. Floats are never
    cast into integers, and nothing is rounded or wrapped silently.
    """
    arr = np.asarray(array)
    if arr.ndim != ndim or arr.shape[3:] != channel_shape:
        want = "(z, y, x" + "".join(f", {c}" for c in channel_shape) + ")"
        raise DvidInputError(f"instance {name!r} takes {ndim}-D arrays shaped {want}, got shape {arr.shape}")
    if arr.dtype == dtype:
        return arr
    if np.can_cast(arr.dtype, dtype, casting="safe"):
        return arr.astype(dtype)
    if np.issubdtype(arr.dtype, np.integer) and np.issubdtype(dtype, np.integer) and arr.size:
        info = np.iinfo(dtype)
        lo, hi = int(arr.min()), int(arr.max())
        if info.min <= lo and hi <= info.max:
            return arr.astype(dtype)
        raise DvidInputError(
            f"instance {name!r} stores {dtype} voxels; the {arr.dtype} array holds values "
            f"{lo}..{hi}, outside {dtype}'s range {info.min}..{info.max}"
        )
    raise DvidInputError(
        f"instance {name!r} stores {dtype} voxels but the array is {arr.dtype}; dvid_store does not cast "
        f"it silently (that could round or wrap values): convert it yourself, e.g. array.astype(np.{dtype})"
    )


def bytes_into(dest: np.ndarray) -> Callable[[Iterator[bytes]], None]:
    """A body reader (see :meth:`Transport.stream`) that fills ``dest`` with exactly its bytes.

    A body longer or shorter than ``dest`` raises :class:`MalformedAnswerError`, so a
    safe request is asked again instead of leaving part of ``dest`` unwritten.
    """

    def consume(pieces: Iterator[bytes]) -> None:
        target = dest if dest.flags.c_contiguous else np.empty(dest.shape, dtype=dest.dtype)
        buf = target.reshape(-1).view(np.uint8)
        expected, pos = buf.size, 0
        for piece in pieces:
            end = pos + len(piece)
            if end > expected:
                raise MalformedAnswerError(
                    "GET", "", 200, f"the body is longer than the {expected} bytes the request geometry implies"
                )
            buf[pos:end] = np.frombuffer(piece, dtype=np.uint8)
            pos = end
        if pos != expected:
            raise MalformedAnswerError(
                "GET", "", 200, f"the body ended after {pos} of the {expected} bytes the request geometry implies"
            )
        if target is not dest:
            dest[...] = target

    return consume


def lz4_into(dest: np.ndarray) -> Callable[[Iterator[bytes]], None]:
    """A body reader that decompresses a raw LZ4 block of exactly ``dest.nbytes`` into ``dest``."""

    def consume(pieces: Iterator[bytes]) -> None:
        raw = b"".join(pieces)
        try:
            data = lz4.block.decompress(raw, uncompressed_size=dest.nbytes)
        except lz4.block.LZ4BlockError as exc:
            problem = f"bad LZ4 body of {len(raw)} bytes ({exc})"
        else:
            if len(data) == dest.nbytes:
                dest[...] = np.frombuffer(data, dtype=dest.dtype).reshape(dest.shape)
                return
            problem = f"the LZ4 body decompressed to {len(data)} bytes, expected {dest.nbytes}"
        raise MalformedAnswerError("GET", "", 200, problem)

    return consume


def post_retrying_busy(
    transport: Any,
    path: str,
    body: bytes | memoryview,
    params: Mapping[str, Any],
    *,
    idempotent: bool,
) -> None:
    """POST ``body`` that DVID answers with an empty body; a 503 is retried even when not idempotent.

    DVID answers 503 (throttled, or starting/stopping) before it reads the body, so
    even a non-idempotent POST may be sent again after one
    (:meth:`~dvid_store.transport.Transport.send_once`).
    """

    def send() -> None:
        transport.request("POST", path, params=params, data=body, idempotent=idempotent, expect_empty=True)

    if idempotent:
        send()  # the transport retries it
    else:
        transport.send_once(send)


def _run_parts(
    tasks: list[tuple[Box, np.ndarray]],
    work: Callable[[Box, np.ndarray], None],
    workers: int,
    *,
    writing: bool,
) -> None:
    """Run ``work(part, array)`` for every part, in parallel threads when there are several.

    The first failure stops the parts that have not started; for writes, the
    error lists which parts were written, so nothing is half-written silently.
    """
    if len(tasks) == 1 or workers <= 1:
        done: list[Box] = []
        for part, array in tasks:
            try:
                work(part, array)
            except BaseException as exc:
                _annotate(exc, writing, done, [p for p, _ in tasks])
                raise
            done.append(part)
        return
    stop = threading.Event()
    finished: list[Box] = []

    def run(part: Box, array: np.ndarray) -> None:
        if stop.is_set():
            return
        try:
            work(part, array)
        except BaseException:
            stop.set()
            raise
        finished.append(part)

    with ThreadPoolExecutor(max_workers=min(workers, len(tasks)), thread_name_prefix="dvid-part") as pool:
        futures = [pool.submit(run, part, array) for part, array in tasks]
        wait(futures, return_when=FIRST_EXCEPTION)
        stop.set()
    errors = [err for f in futures if (err := f.exception()) is not None]
    if errors:
        first = errors[0]
        _annotate(first, writing, finished, [p for p, _ in tasks])
        raise first


def _annotate(exc: BaseException, writing: bool, done: Iterable[Box], parts: list[Box]) -> None:
    if len(parts) <= 1:
        return
    done = list(done)
    if writing:
        exc.add_note(
            f"the write was split into {len(parts)} block-aligned parts; {len(done)} of them were stored "
            f"before this error: {done or 'none'}. The others were not written."
        )
    else:
        exc.add_note(f"while reading one of {len(parts)} parts of a split request")
