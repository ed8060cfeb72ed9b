"""DVID voxel instances as dask arrays: :func:`open_dask` to read, :func:`to_dvid` to write.

A dask chunk is always a whole number of DVID blocks, and each task reads or writes
its chunk through :class:`~dvid_store.blocks.BlockIO` in as few requests as the
per-request caps allow (one ``/specificblocks`` per ≤ 1024 blocks; one ``POST /raw``
per box). That avoids both one-task-per-block graphs and zarr's per-chunk overhead.
Readers and writers pickle as configuration, so they run on dask.distributed workers,
each worker using its own connections. :func:`open_dask` returns a
:class:`~dvid_store.dask_array.DvidArray`, whose ``compute()`` on the local schedulers
fills one result array in place instead of concatenating chunks (half the peak memory).

Multichannel levels (``rgba8blk``) are 4-d dask arrays, ``(z, y, x, 4)`` uint8 with
the channels R, G, B, A last, chunked whole along the channel axis: a task reads or
writes all channels of its blocks, as DVID stores them.

The numpy-like views of a level that the tasks use (:class:`VolumeReader`,
:class:`VolumeWriter`, with :func:`block_locks` and :func:`step_one_bounds`) live in
:mod:`dvid_store.level_io` and can also be imported from here.

Tuning (defaults chosen with ``benchmarks/bench_tuning.py``; a default changed only
where another setting won in every run; the figures are on the "Performance" page of
the docs):

* chunk size: ``chunk_bytes=`` of :func:`open_dask`, default
  :data:`DEFAULT_CHUNK_BYTES` (64 MiB). Smaller and bigger chunks were not
  consistently faster for reads or writes of uint8 or uint64, so the default stays.
  :func:`to_dvid` keeps the chunks of the array it is given (only rechunking what
  splits blocks).
* requests in flight: one per dask worker thread (``dask.config.set(num_workers=n)``);
  each task sends its chunk's requests one after the other. Fewer or more threads
  than dask's default of one per core had no consistent winner for ``to_dvid``, so
  dask's default stays.
* request size: the caps of :class:`~dvid_store.blocks.BlockIO` (blocks and bytes
  per request, voxels per ``POST /raw``; see :mod:`dvid_store.blocks`).
"""

from __future__ import annotations

import math
import uuid
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .blocks import BlockIO
from .dask_array import DvidArray
from .errors import DvidError, DvidInputError
from .geometry import Box, as_zyx
from .layout import Layout, Level, discover_layout
from .level_io import VolumeReader, VolumeWriter, block_locks, step_one_bounds
from .urls import parse_url

if TYPE_CHECKING:
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
#: 384³ uint8 with 32³ blocks, 192³ uint64 with 64³ blocks. Chosen with
#: ``benchmarks/bench_tuning.py``: no other size was consistently faster (see the
#: "Performance" page of the docs).
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


def _voxel_bytes(io: BlockIO) -> int:
    """Bytes of one voxel: its value's size times its channels."""
    return io.dtype.itemsize * math.prod(io.channel_shape)


def _axes_text(io: BlockIO) -> str:
    if io.channel_shape:
        return f"4-d (z, y, x, {io.channel_shape[0]}: channels R, G, B, A last)"
    return "3-d (z, y, x)"


def _level_io(
    node: Node, layout: Layout, level: Level, supervoxels: bool, compression: str | None, *, throttle: bool = False
) -> BlockIO:
    return BlockIO(
        node, level.instance, typename=level.typename, block_shape=level.block_shape, scale=level.scale,
        supervoxels=supervoxels, compression=compression, stored=level.stored, throttle=throttle,
    )


def default_chunks(
    shape: Sequence[int], block_shape: Sequence[int], itemsize: int, target_bytes: int = DEFAULT_CHUNK_BYTES
) -> ZYX:
    """The default dask chunk: the most cubic box of whole blocks not above ``target_bytes``.

    Never smaller than one block; clipped to the array's block grid.
    """
    grid = [max(1, math.ceil(n / b)) for n, b in zip(shape, block_shape)]
    block_bytes = int(np.prod(block_shape)) * itemsize
    best: tuple[int, ...] = (1, 1, 1)
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


def _spatial_chunks(chunks: Any, channel_shape: tuple[int, ...]) -> Any:
    """The (z, y, x) part of requested chunks of a multichannel level, whose channel axis is one chunk.

    Accepts chunks for z, y, x alone or for all four axes with the channel axis whole
    (its size, ``-1`` or ``None``); an int or ``"auto"`` applies to z, y and x.
    """
    if not channel_shape:
        return chunks
    ndim = 3 + len(channel_shape)
    whole = [(None, -1, n, (n,)) for n in channel_shape]
    if isinstance(chunks, dict):
        extra = {k: v for k, v in chunks.items() if k not in (0, 1, 2, -ndim, 1 - ndim, 2 - ndim)}
        spatial = {k % ndim: v for k, v in chunks.items() if k not in extra}
        if any(v not in whole[(k % ndim) - 3] for k, v in extra.items()):
            raise DvidInputError(
                f"chunks {chunks!r} split the channel axis; its {channel_shape[0]} channels are one chunk "
                "(a DVID voxel holds them all): give chunks for z, y, x"
            )
        return spatial
    if isinstance(chunks, (tuple, list)) and len(chunks) == ndim:
        if any(c not in w for c, w in zip(chunks[3:], whole)):
            raise DvidInputError(
                f"chunks {chunks!r} split the channel axis; its {channel_shape[0]} channels are one chunk "
                f"(a DVID voxel holds them all): use (z, y, x) or (z, y, x, {channel_shape[0]})"
            )
        return tuple(chunks[:3])
    return chunks


def _dask_chunks(
    chunks: Any, shape: Sequence[int], dtype: np.dtype, block_shape: ZYX
) -> tuple[tuple[int, ...], ...]:
    """Normalise requested chunks; sizes that split blocks are rounded (with a warning).

    ``shape`` is the array's; a channel axis after (z, y, x) is one chunk.
    """
    channels = tuple(int(n) for n in shape[3:])
    spatial = _dask_spatial_chunks(_spatial_chunks(chunks, channels), as_zyx(shape[:3]), dtype, block_shape)
    return spatial + tuple((n,) for n in channels)


def _dask_spatial_chunks(chunks: Any, shape: ZYX, dtype: np.dtype, block_shape: ZYX) -> tuple[tuple[int, ...], ...]:
    from dask.array.core import normalize_chunks

    normal: tuple[tuple[int, ...], ...] = normalize_chunks(chunks, shape, dtype=dtype, previous_chunks=block_shape)
    if _aligned(normal, (0, 0, 0), block_shape):
        return normal
    explicit = isinstance(chunks, (tuple, list)) and any(isinstance(c, (tuple, list)) for c in chunks)
    if explicit:
        raise DvidInputError(
            f"chunks {chunks!r} split DVID blocks of {block_shape} (z, y, x); every chunk edge "
            "must fall on a block boundary (use sizes that are multiples of the block size)"
        )
    rounded = tuple(
        max(b, round(max(c) / b) * b) if c else b for c, b in zip(normal, block_shape)
    )
    warnings.warn(
        f"dask chunks {tuple(max(c) for c in normal)} split DVID blocks of {block_shape}; "
        f"rounded to {rounded} so that every task reads whole blocks",
        UserWarning,
        stacklevel=3,
    )
    rounded_chunks: tuple[tuple[int, ...], ...] = normalize_chunks(rounded, shape, dtype=dtype)
    return rounded_chunks


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
        irregular chunks that split blocks are refused. A multichannel level's
        channel axis is always one chunk (give chunks for z, y, x, or a fourth
        entry that is the whole axis).
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
        block-aligned minimum point. ``(z, y, x)``; rgba8blk levels are
        ``(z, y, x, 4)`` uint8, channels R, G, B, A last. Slicing it gives an array whose graph covers
        the slice alone, however large the instance, and its ``compute()`` on the
        threaded or synchronous scheduler reads straight into the result (no second
        copy; see :class:`~dvid_store.dask_array.DvidArray`).
    """
    from dask.base import tokenize

    node, instance, scale = resolve_target(url_or_node, instance, scale, **conn)
    layout = discover_layout(node, instance, supervoxels=supervoxels, max_scale=scale)
    level = layout.level(scale)
    io = _level_io(node, layout, level, supervoxels, compression, throttle=throttle)
    reader = VolumeReader(io, level.origin, level.shape)
    if chunks is None:
        chunks = default_chunks(level.shape, level.block_shape, _voxel_bytes(io), chunk_bytes)
    normal = _dask_chunks(chunks, reader.shape, io.dtype, level.block_shape)
    # The level and how it is read; a slice's name adds its box and chunks (see DvidArray).
    source = tokenize(layout, scale, supervoxels, compression)
    return DvidArray.from_reader(reader, normal, source)


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
        3-d, ``(z, y, x)``; for an rgba8blk instance 4-d, ``(z, y, x, 4)``
        (channels R, G, B, A last; the channel axis is rechunked whole if split).
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
    Checks come first: a committed node, a dtype that does not fit and an array
    whose axes are not the level's (3-d; rgba8blk: ``(z, y, x, 4)``) are refused
    before any task runs. Chunks whose edges do not fall on
    DVID's block grid are rechunked so that no two tasks share a block; blocks at
    the edge of an unaligned region are read (labelmaps: as supervoxel ids), merged
    and written back under a lock (see :class:`VolumeWriter`). The values written
    into a labelmap are stored as supervoxel ids. An empty array writes nothing.
    """
    import dask.array as da
    from dask.delayed import delayed

    node, instance, scale = resolve_target(url_or_node, instance, scale, **conn)
    lock_state = node.locked_meanwhile()  # io.node.require_writable() below then asks nothing
    layout = discover_layout(node, instance, max_scale=scale)
    lock_state()
    level = layout.level(scale)
    io = _level_io(node, layout, level, False, None, throttle=throttle)
    channels = io.channel_shape
    if not isinstance(array, da.Array):
        data = np.asarray(array)
        _check_axes(io, instance, data.shape)
        # name=False: no hashing of the whole array (seconds per GB) for a one-off graph;
        # whole-block chunks of the default size, so nothing needs rechunking when aligned.
        chunks = default_chunks(data.shape[:3], level.block_shape, data.dtype.itemsize * math.prod(channels))
        array = da.from_array(data, chunks=chunks + channels, name=False)
    _check_axes(io, instance, array.shape)
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
        return None if compute else delayed(None)
    whole = tuple((n,) for n in channels)
    if tuple(array.chunks[3:]) != whole:  # a task writes whole voxels
        array = array.rechunk(array.chunks[:3] + whole)
    if not _aligned(array.chunks, start, level.block_shape):
        array = array.rechunk(_write_chunks(array.chunks[:3], start, level.block_shape) + whole)
    writer = VolumeWriter(io, start, array.shape)
    token = uuid.uuid4().hex
    regions = list(_chunk_regions(array.chunks))
    pieces = array.to_delayed().ravel()
    tasks = [
        delayed(_write_chunk, pure=False)(writer, region, piece, token)
        for region, piece in zip(regions, pieces)
    ]
    summary = delayed(_summarise_write, pure=False)(tasks, instance, token)
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
        tuple(o + r.start for o, r in zip(writer.origin, region)),
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


def _check_axes(io: BlockIO, instance: str, shape: Sequence[float]) -> None:
    """Refuse an array whose axes are not the level's: (z, y, x), plus the channels of rgba8blk."""
    channels = io.channel_shape
    if len(shape) == 3 + len(channels) and tuple(shape[3:]) == channels:
        return
    hint = ""
    if not channels and len(shape) == 4:
        hint = f"; {io.typename} {instance!r} has one channel (rgba8 data needs an rgba8blk instance)"
    elif channels and len(shape) == 3:
        hint = f"; {instance!r} is {io.typename}: give all {channels[0]} channels R, G, B, A as a last axis"
    raise DvidInputError(
        f"{io.typename} volumes are {_axes_text(io)}; got an array of shape {tuple(shape)}{hint}"
    )


def _check_int32_box(box: tuple[Sequence[int], Sequence[int]]) -> None:
    low, high = -(2**31), 2**31 - 1
    if any(not low <= v <= high for corner in box for v in corner):
        raise DvidInputError(
            f"the box {tuple(box[0])}–{tuple(box[1])} (z, y, x) leaves DVID's signed 32-bit coordinate range"
        )
