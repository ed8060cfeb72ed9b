"""DVID voxel instances as dask arrays: :func:`open_dask` to read, :func:`to_dvid` to write.

A dask chunk is always a whole number of DVID blocks, and each task reads or writes
its chunk through :class:`~dvid_store.blocks.BlockIO` in as few requests as the
per-request caps allow (one ``/specificblocks`` per ≤ 1024 blocks; one ``POST /raw``
per box). That avoids both one-task-per-block graphs and zarr's per-chunk overhead.
Readers and writers pickle as configuration, so they run on dask.distributed workers,
each worker using its own connections. :func:`open_dask` returns a
:class:`~dvid_store.dask_array.DvidArray`, whose ``compute()`` on the local schedulers
fills one result array in place instead of concatenating chunks (half the peak memory).

Tuning (defaults chosen with ``benchmarks/bench_tuning.py``, 384³ regions, 2 cores,
loopback DVID; every figure a median with the settings taking turns):

* chunk size: ``chunk_bytes=`` of :func:`open_dask`, default
  :data:`DEFAULT_CHUNK_BYTES` (64 MiB). 16 and 256 MiB were not consistently faster
  for reads or writes of uint8 or uint64 (ratios 0.7–1.6 to the default, varying
  from run to run with the machine's load), so the default stays. :func:`to_dvid`
  keeps the chunks of the array it is given (only rechunking what splits blocks).
* requests in flight: one per dask worker thread (``dask.config.set(num_workers=n)``);
  each task sends its chunk's requests one after the other. On 2 cores (shared
  with DVID) 1, 4 and 8 threads measured 0.5–1.4x dask's default of one thread
  per core for ``to_dvid``, with no consistent winner, so dask's default stays.
* request size: the caps of :class:`~dvid_store.blocks.BlockIO` (blocks and bytes
  per request, voxels per ``POST /raw``; see :mod:`dvid_store.blocks`).
"""

from __future__ import annotations

import contextlib
import math
import threading
import uuid
import warnings
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .blocks import BlockIO
from .errors import ConcurrentWriteError, DvidError, DvidInputError
from .geometry import Box, aligned_box, as_zyx, block_coords_in_box, box_shape
from .layout import Layout, Level, discover_layout
from .urls import parse_url

if TYPE_CHECKING:

    from .dask_array import DvidArray
    from .node import Node

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "VolumeReader",
    "VolumeWriter",
    "block_locks",
    "default_chunks",
    "open_dask",
    "resolve_target",
    "step_one_bounds",
    "to_dvid",
]

ZYX = tuple[int, int, int]

#: Target size of a default dask chunk (whole blocks, as cubic as the array allows):
#: 384³ uint8 with 32³ blocks, 192³ uint64 with 64³ blocks. Measured against 16 and
#: 256 MiB with ``benchmarks/bench_tuning.py``; no size was consistently faster.
DEFAULT_CHUNK_BYTES = 64 << 20


def resolve_target(
    url_or_node: str | Node, instance: str | None, scale: int | None, **conn: Any
) -> tuple[Node, str, int]:
    """(node, instance, scale) from a ``dvid://`` URL or a node and an instance name.

    A URL may end in a level number (``dvid://host:port/uuid/grayscale/1``), which
    then gives the scale; ``conn`` (``user``, ``app``, ``token``, ``scheme``) sets up the
    connection for URLs.
    """
    if isinstance(url_or_node, str):
        parsed = parse_url(url_or_node)
        if instance is not None and instance != parsed.instance:
            raise DvidInputError(f"the URL names instance {parsed.instance!r} but instance={instance!r} was given")
        url_scale = None
        if parsed.key:
            if not parsed.key.isdigit():
                raise DvidInputError(f"{url_or_node!r}: after the instance only a level number may follow")
            url_scale = int(parsed.key)
        if url_scale is not None and scale is not None and scale != url_scale:
            raise DvidInputError(f"the URL names level {url_scale} but scale={scale} was given")
        return parsed.node(**conn), parsed.instance, url_scale if url_scale is not None else (scale or 0)
    if instance is None:
        raise DvidInputError("give the instance name along with the node, or a dvid:// URL")
    return url_or_node, instance, int(scale or 0)


def _level_io(
    node: Node, layout: Layout, level: Level, supervoxels: bool, compression: str | None, *, throttle: bool = False
) -> BlockIO:
    return BlockIO(
        node, level.instance, typename=level.typename, block_shape=level.block_shape, scale=level.scale,
        supervoxels=supervoxels, compression=compression, stored=level.stored, throttle=throttle,
    )


def _normalise_key(key: Any, shape: ZYX) -> tuple[tuple[slice, ...], tuple[Any, ...]]:
    """Bounding slices (step 1) of a basic index, and the index to apply to them afterwards."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (3 - len(key))
    if len(key) != 3:
        raise IndexError(f"too many indices for a 3-d volume: {key!r}")
    bounds, after = [], []
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


def step_one_bounds(key: Any, shape: ZYX) -> tuple[slice, ...] | None:
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


class VolumeReader:
    """A numpy-like, picklable view of one level of a DVID instance (for ``dask.array.from_array``).

    ``reader[z0:z1, y0:y1, x0:x1]`` reads that box (array indices: index 0 is
    ``origin``) through :meth:`BlockIO.read_box`.

    Parameters
    ----------
    io : BlockIO
        The level's block access.
    origin : (int, int, int)
        Voxel coordinate of index 0.
    shape : (int, int, int)
        Array shape.
    """

    ndim = 3

    def __init__(self, io: BlockIO, origin: Sequence[int], shape: Sequence[int]) -> None:
        self.io = io
        self.origin: ZYX = as_zyx(origin)
        self.shape: ZYX = tuple(int(n) for n in shape)  # type: ignore[assignment]
        self.dtype = io.dtype

    def __repr__(self) -> str:
        return f"VolumeReader({self.io!r}, origin={self.origin}, shape={self.shape})"

    def __getitem__(self, key: Any) -> np.ndarray:
        bounds, after = _normalise_key(key, self.shape)
        sizes = [s.stop - s.start for s in bounds]
        if 0 in sizes:
            return np.empty(sizes, self.dtype)[after]
        data = self.io.read_box(self._box(bounds))
        return data[after] if any(a != slice(None) for a in after) else data

    def read_into(self, region: tuple[slice, ...], out: np.ndarray) -> np.ndarray:
        """Read ``self[region]`` (slices of step 1, array indices) into ``out``, a view of that shape."""
        return self.io.read_box(self._box(region), out=out)

    def _box(self, region: tuple[slice, ...]) -> Box:
        """The voxel box of array-index slices of step 1."""
        return (
            tuple(o + s.start for o, s in zip(self.origin, region)),  # type: ignore[return-value]
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
    """

    def __init__(self, io: BlockIO, origin: Sequence[int], shape: Sequence[int]) -> None:
        self.io = io
        self.origin: ZYX = as_zyx(origin)
        self.shape: ZYX = tuple(int(n) for n in shape)  # type: ignore[assignment]
        self.dtype = io.dtype
        self.ndim = 3

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        bounds = step_one_bounds(key, self.shape)
        if bounds is None:
            raise DvidInputError("DVID volumes are written by boxes: use slices with step 1")
        value = np.asarray(value)
        start = tuple(o + s.start for o, s in zip(self.origin, bounds))
        stop = tuple(o + s.stop for o, s in zip(self.origin, bounds))
        if value.shape != tuple(b - a for a, b in zip(start, stop)):
            value = np.broadcast_to(value, tuple(b - a for a, b in zip(start, stop)))
        if value.size == 0:
            return
        box: Box = (start, stop)  # type: ignore[assignment]
        outer = aligned_box(box, self.io.block_shape)
        if outer == box:
            self.io.write_box(value, start)
            return
        # Check before merging: numpy's assignment would wrap values that do not fit.
        value = self.io._check_dtype(value)
        self.io.node.require_writable(f"writing to {self.io.instance!r}")
        edges = _edge_blocks(box, outer, self.io.block_shape)
        with block_locks(self.io, edges):
            data = np.empty(box_shape(outer), self.io.dtype)
            stored = self._stored_view()
            for coord, block in _read_all(stored, edges).items():
                dst, _ = _block_slices(outer, coord, self.io.block_shape)
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
        again = _read_all(stored, edges)
        bs = self.io.block_shape
        for coord in edges:
            dst, _ = _block_slices(outer, coord, bs)
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


def _block_slices(outer: Box, coord: ZYX, block_shape: ZYX) -> tuple[tuple[slice, ...], None]:
    lo = tuple(v * b - o for v, b, o in zip(coord, block_shape, outer[0]))
    return tuple(slice(l, l + b) for l, b in zip(lo, block_shape)), None


def _read_all(io: BlockIO, coords: list[ZYX]) -> dict[ZYX, np.ndarray]:
    """Every block of ``coords``, absent ones (confirmed by :meth:`BlockIO.read`) as zeros."""
    found = io.read(coords)
    return {c: found[c] if c in found else np.zeros(io.block_shape, io.dtype) for c in coords}


_local_locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_local_guard = threading.Lock()


@contextlib.contextmanager
def block_locks(io: BlockIO, coords: Sequence[ZYX]) -> Iterator[None]:
    """Hold the merge locks of blocks ``coords`` of ``io``'s level (see :class:`VolumeWriter`).

    Process-local locks always; on a dask.distributed worker also one
    ``distributed.MultiLock`` over the blocks' names, cluster-wide. Locks are taken
    in sorted order, so writers never deadlock.
    """
    transport = io.node.transport
    names = [
        f"dvid_store-merge:{transport.base_url}/{io.node.uuid}/{io.instance}/{io.scale}/{z}_{y}_{x}"
        for z, y, x in sorted(coords)
    ]
    with _local_guard:
        locks = [_local_locks.setdefault(name, threading.Lock()) for name in names]
    with contextlib.ExitStack() as stack:
        for lock in locks:
            stack.enter_context(lock)
        cluster = _cluster_lock(names)
        if cluster is not None:
            cluster.acquire()
            stack.callback(cluster.release)
        yield


def _cluster_lock(names: list[str]) -> Any:
    try:
        from distributed import MultiLock, get_worker
    except ImportError:
        return None
    try:
        get_worker()
    except ValueError:  # not running on a worker
        return None
    return MultiLock(names=names)


def default_chunks(
    shape: Sequence[int], block_shape: Sequence[int], itemsize: int, target_bytes: int = DEFAULT_CHUNK_BYTES
) -> ZYX:
    """The default dask chunk: the most cubic box of whole blocks not above ``target_bytes``.

    Never smaller than one block; clipped to the array's block grid.
    """
    grid = [max(1, math.ceil(n / b)) for n, b in zip(shape, block_shape)]
    block_bytes = int(np.prod(block_shape)) * itemsize
    best = (1, 1, 1)
    k = 1
    while True:
        counts = tuple(min(g, k) for g in grid)
        if k > 1 and int(np.prod(counts)) * block_bytes > target_bytes:
            break
        best = counts
        if list(counts) == grid:
            break
        k += 1
    return tuple(c * b for c, b in zip(best, block_shape))  # type: ignore[return-value]


def _aligned(chunks: tuple[tuple[int, ...], ...], start: Sequence[int], block_shape: Sequence[int]) -> bool:
    for axis_chunks, a, b in zip(chunks, start, block_shape):
        edge = a
        for c in axis_chunks[:-1]:
            edge += c
            if edge % b:
                return False
    return True


def _dask_chunks(chunks: Any, shape: ZYX, dtype: np.dtype, block_shape: ZYX) -> tuple[tuple[int, ...], ...]:
    """Normalise requested chunks; sizes that split blocks are rounded (with a warning)."""
    from dask.array.core import normalize_chunks

    normal = normalize_chunks(chunks, shape, dtype=dtype, previous_chunks=block_shape)
    if _aligned(normal, (0, 0, 0), block_shape):
        return normal
    explicit = isinstance(chunks, (tuple, list)) and any(isinstance(c, (tuple, list)) for c in chunks)
    if explicit:
        raise DvidInputError(
            f"chunks {chunks!r} split DVID blocks of {block_shape} (z, y, x); every chunk edge "
            "must fall on a block boundary (use sizes that are multiples of the block size)"
        )
    rounded = tuple(
        max(b, int(round(max(c) / b)) * b) if c else b for c, b in zip(normal, block_shape)
    )
    warnings.warn(
        f"dask chunks {tuple(max(c) for c in normal)} split DVID blocks of {block_shape}; "
        f"rounded to {rounded} so that every task reads whole blocks",
        UserWarning,
        stacklevel=3,
    )
    return normalize_chunks(rounded, shape, dtype=dtype)


def open_dask(
    url_or_node: str | Node,
    instance: str | None = None,
    scale: int | None = None,
    supervoxels: bool = False,
    chunks: Any = None,
    *,
    compression: str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    throttle: bool = False,
    **conn: Any,
) -> DvidArray:
    """One level of a DVID instance as a lazy dask array.

    Parameters
    ----------
    url_or_node : str or Node
        ``dvid://host:port/<uuid|prefix|uuid:branch>/<instance>[/<level>]``, or a node.
    instance : str, optional
        Instance name (with a node).
    scale : int, optional
        Pyramid level (labelmap scale, or grayscale ``name_<scale>``); default 0.
    supervoxels : bool
        labelmap: supervoxel ids instead of body ids.
    chunks : optional
        dask chunks. Default: whole blocks, about ``chunk_bytes`` per chunk. Sizes
        that split blocks are rounded to whole blocks with a warning; explicit
        irregular chunks that split blocks are refused.
    compression : str, optional
        Transfer encoding (see :class:`~dvid_store.blocks.BlockIO`).
    chunk_bytes : int
        Target size of a default chunk.
    throttle : bool
        Send DVID's ``throttle=true`` with every request (see :class:`~dvid_store.blocks.BlockIO`).
    **conn
        ``user``, ``app``, ``token``, ``scheme`` for URLs.

    Returns
    -------
    DvidArray
        A :class:`dask.array.Array` whose shape, origin and dtype are those of the
        zarr array of :class:`~dvid_store.DvidStore`: index 0 is the level's
        block-aligned minimum point. Its ``compute()`` on the threaded or synchronous
        scheduler reads straight into the result (no second copy; see
        :class:`~dvid_store.dask_array.DvidArray`).
    """
    import dask.array as da
    from dask.base import tokenize

    from .dask_array import DvidArray

    node, instance, scale = resolve_target(url_or_node, instance, scale, **conn)
    layout = discover_layout(node, instance, supervoxels=supervoxels)
    level = layout.level(scale)
    io = _level_io(node, layout, level, supervoxels, compression, throttle=throttle)
    reader = VolumeReader(io, level.origin, level.shape)
    if chunks is None:
        chunks = default_chunks(level.shape, level.block_shape, io.dtype.itemsize, chunk_bytes)
    normal = _dask_chunks(chunks, level.shape, io.dtype, level.block_shape)
    name = f"dvid-{instance}-{tokenize(layout, scale, supervoxels, compression, normal)}"
    array = da.from_array(
        reader, chunks=normal, name=name, asarray=False, fancy=False, lock=False,
        meta=np.empty((0, 0, 0), io.dtype),
    )
    return DvidArray.wrap(array, reader)


def _write_chunks(chunks: tuple[tuple[int, ...], ...], start: ZYX, block_shape: ZYX) -> tuple[tuple[int, ...], ...]:
    """Chunks with the same nominal sizes (rounded to blocks) whose inner edges lie on the block grid."""
    out = []
    for axis_chunks, a, b in zip(chunks, start, block_shape):
        total = sum(axis_chunks)
        step = max(b, (max(axis_chunks) // b) * b) if axis_chunks else b
        cuts, edge = [], a
        end = a + total
        while edge < end:
            nxt = min(end, (edge // step + 1) * step)
            cuts.append(nxt - edge)
            edge = nxt
        out.append(tuple(cuts) or (0,))
    return tuple(out)


def to_dvid(
    array: Any,
    url_or_node: str | Node,
    instance: str | None = None,
    *,
    offset: Sequence[int] | None = None,
    scale: int | None = None,
    compute: bool = True,
    throttle: bool = False,
    **conn: Any,
) -> Any:
    """Write a dask (or numpy) array into a DVID instance.

    Parameters
    ----------
    array : dask.array.Array or array-like
        3-d, ``(z, y, x)``.
    url_or_node : str or Node
        Target ``dvid://`` URL or node.
    instance : str, optional
        Instance name (with a node). It must exist (see :func:`dvid_store.create_array`).
    offset : (z, y, x), optional
        Voxel coordinate (the level's grid) of ``array[0, 0, 0]``; default: index 0 of
        the level as :func:`open_dask` and :class:`~dvid_store.DvidStore` present it.
    scale : int, optional
        Level to write (labelmap scales > 0 need the label block codec).
    compute : bool
        Write now (default) or return a ``dask.delayed`` to compute later.
    throttle : bool
        Send DVID's ``throttle=true``: DVID runs few throttled requests at once and
        answers the others 503, which are retried within the retry budget.

    Raises
    ------
    DvidInputError, LockedNodeError
        Checked before any task runs: nothing is written.
    DvidError
        A chunk could not be written. Its notes say which chunks (voxel boxes) were
        stored, which failed and which were not attempted (after the first failure
        the remaining chunks are skipped). Every chunk is written whole or not at
        all, so writing the array again repairs it.

    Notes
    -----
    Checks come first: a committed node, a dtype that does not fit and a non-3-d
    array are refused before any task runs. Chunks whose edges do not fall on
    DVID's block grid are rechunked so that no two tasks share a block; blocks at
    the edge of an unaligned region are read (labelmaps: as supervoxel ids), merged
    and written back under a lock (see :class:`VolumeWriter`). The values written
    into a labelmap are stored as supervoxel ids. An empty array writes nothing.
    """
    import dask
    import dask.array as da

    node, instance, scale = resolve_target(url_or_node, instance, scale, **conn)
    layout = discover_layout(node, instance)
    level = layout.level(scale)
    io = _level_io(node, layout, level, False, None, throttle=throttle)
    if not isinstance(array, da.Array):
        data = np.asarray(array)
        if data.ndim != 3:
            raise DvidInputError(f"DVID volumes are 3-d (z, y, x); got an array of shape {data.shape}")
        # name=False: no hashing of the whole array (seconds per GB) for a one-off graph;
        # whole-block chunks of the default size, so nothing needs rechunking when aligned.
        chunks = default_chunks(data.shape, level.block_shape, data.dtype.itemsize)
        array = da.from_array(data, chunks=chunks, name=False)
    if array.ndim != 3:
        raise DvidInputError(f"DVID volumes are 3-d (z, y, x); got an array of shape {array.shape}")
    if any(math.isnan(n) for n in array.shape):
        raise DvidInputError("the array has unknown chunk sizes; call array.compute_chunk_sizes() first")
    src, dst = np.dtype(array.dtype), io.dtype
    if not (np.can_cast(src, dst, "safe") or src.kind == "b" or (src.kind in "iu" and dst.kind in "iu")):
        raise DvidInputError(
            f"cannot write {src} data into {level.typename} {instance!r} ({dst}) without losing values"
        )
    io.node.require_writable(f"writing to {instance!r}")
    start = as_zyx(offset if offset is not None else level.origin, "offset")
    _check_int32_box((start, tuple(a + int(n) for a, n in zip(start, array.shape))))
    if array.size == 0:
        return None if compute else dask.delayed(None)
    if not _aligned(array.chunks, start, level.block_shape):
        array = array.rechunk(_write_chunks(array.chunks, start, level.block_shape))
    writer = VolumeWriter(io, start, array.shape)
    token = uuid.uuid4().hex
    regions = list(_chunk_regions(array.chunks))
    pieces = array.to_delayed().ravel()
    tasks = [
        dask.delayed(_write_chunk, pure=False)(writer, region, piece, token)
        for region, piece in zip(regions, pieces)
    ]
    summary = dask.delayed(_summarise_write, pure=False)(tasks, instance, token)
    return summary.compute() if compute else summary


#: Outcome of one chunk of a :func:`to_dvid`: its voxel box and the error that stopped it,
#: ``None`` when it was stored, or the string "skipped" when it was not attempted.
_Outcome = tuple[Box, Any]

_failed_writes: set[str] = set()


def _chunk_regions(chunks: tuple[tuple[int, ...], ...]) -> Iterator[tuple[slice, ...]]:
    starts = [np.cumsum((0,) + c[:-1]) for c in chunks]
    for index in np.ndindex(*(len(c) for c in chunks)):
        yield tuple(slice(int(s[i]), int(s[i]) + c[i]) for s, c, i in zip(starts, chunks, index))


def _write_chunk(writer: VolumeWriter, region: tuple[slice, ...], data: np.ndarray, token: str) -> _Outcome:
    box: Box = (
        tuple(o + r.start for o, r in zip(writer.origin, region)),  # type: ignore[assignment]
        tuple(o + r.stop for o, r in zip(writer.origin, region)),
    )
    if token in _failed_writes or _cluster_flag(token, set_it=False):
        return box, "skipped"  # another chunk failed: stop writing, report it
    try:
        writer[region] = data
    except DvidError as exc:
        _failed_writes.add(token)
        _cluster_flag(token, set_it=True)
        return box, exc
    return box, None


def _cluster_flag(token: str, *, set_it: bool) -> bool:
    """A cluster-wide "a chunk of this write failed" flag (a ``distributed.Event``) on workers."""
    try:
        from distributed import Event, get_worker
    except ImportError:
        return False
    try:
        get_worker()
    except ValueError:
        return False
    event = Event(f"dvid_store-write-failed-{token}")
    if set_it:
        event.set()
        return True
    return bool(event.is_set())


def _summarise_write(outcomes: list[_Outcome], instance: str, token: str) -> None:
    _failed_writes.discard(token)
    failed = [(box, err) for box, err in outcomes if err is not None and not isinstance(err, str)]
    if not failed:
        return None
    stored = [box for box, err in outcomes if err is None]
    skipped = [box for box, err in outcomes if isinstance(err, str)]
    error: DvidError = failed[0][1]
    error.add_note(
        f"to_dvid into {instance!r}: {len(stored)} of {len(outcomes)} chunks were stored, {len(failed)} failed, "
        f"{len(skipped)} were not attempted after the failure. Each chunk is written whole or not at all; "
        "writing the array again repairs the rest."
    )
    error.add_note(f"failed chunks (voxel boxes, z, y, x): {_boxes_text([b for b, _ in failed])}")
    error.add_note(f"stored chunks: {_boxes_text(stored)}")
    raise error


def _boxes_text(boxes: list[Box], limit: int = 20) -> str:
    shown = ", ".join(f"{a}–{b}" for a, b in boxes[:limit])
    more = f" and {len(boxes) - limit} more" if len(boxes) > limit else ""
    return (shown + more) or "none"


def _check_int32_box(box: tuple[Sequence[int], Sequence[int]]) -> None:
    low, high = -(2**31), 2**31 - 1
    if any(not low <= v <= high for corner in box for v in corner):
        raise DvidInputError(
            f"the box {tuple(box[0])}–{tuple(box[1])} (z, y, x) leaves DVID's signed 32-bit coordinate range"
        )
