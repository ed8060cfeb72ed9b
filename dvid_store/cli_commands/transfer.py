"""``export``, ``import`` and ``copy``: chunked, parallel, resumable transfers through dask.

Every transfer cuts its region into chunks whose inner edges fall on the target's
block grid (DVID blocks, or the zarr chunks of an export), so no two tasks ever touch
the same block. The source is a dask array (``dask.array.from_array`` over a DVID
:class:`~dvid_store.level_io.VolumeReader`, a zarr array or a memory-mapped file) with
exactly those chunks; one dask task per chunk writes it to the target and records it
in the :class:`~.journal.Journal`. dask's threaded scheduler runs ``--workers`` tasks
at a time, with :class:`dask.diagnostics.ProgressBar` on stderr.

Multichannel volumes (rgba8blk, ``(z, y, x, 4)``) transfer with the channel axis
whole in every chunk: a task moves whole voxels, as DVID stores them.

Interrupted (Ctrl-C, SIGTERM) or failed transfers keep their journal; the same
command run again skips the chunks it lists ("skipped N chunks already copied").
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DvidError, DvidInputError, UnknownInstanceError
from ..geometry import Box
from .common import Context, format_box, format_bytes, format_rate, format_zyx, parse_target
from .journal import Journal, default_journal_path
from .volumes import DvidLevel, Volume, check_castable, check_channels, open_local, open_zarr_output

if TYPE_CHECKING:
    from ..node import Node

__all__ = [
    "DEFAULT_TASK_BYTES",
    "DEFAULT_ZARR_CHUNK_BYTES",
    "TransferError",
    "TransferInterrupted",
    "TransferResult",
    "check_values",
    "plan_chunks",
    "run_copy",
    "run_export",
    "run_import",
    "transfer",
]

ZYX = tuple[int, int, int]

#: Default size of one task's chunk (whole blocks, as cubic as the region allows).
DEFAULT_TASK_BYTES = 8 << 20

#: Default size of one zarr chunk of an export (whole DVID blocks).
DEFAULT_ZARR_CHUNK_BYTES = 1 << 20


class TransferError(DvidError):
    """A transfer failed part way; its journal lets the same command resume it."""


class TransferInterrupted(KeyboardInterrupt):
    """A transfer was interrupted by a signal; the message says how to resume.

    Attributes
    ----------
    exit_code : int
        128 + the signal number (130 for Ctrl-C, 143 for SIGTERM).
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class TransferResult:
    """What a transfer did."""

    chunks: int
    skipped: int
    nbytes: int
    seconds: float


def plan_chunks(shape: Sequence[int], origin: Sequence[int], step: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """dask chunks of a region whose inner edges fall on multiples of ``step``.

    Parameters
    ----------
    shape : (z, y, x)
        Region shape; axes after z, y, x (channels) are one chunk each.
    origin : (z, y, x)
        Coordinate of the region's first voxel in the target's grid.
    step : (z, y, x)
        Chunk size; cuts are at coordinates that are multiples of it.
    """
    out = []
    for n, a, s in zip(shape, origin, step):
        cuts, edge, end = [], a, a + n
        while edge < end:
            nxt = min(end, (edge // s + 1) * s)
            cuts.append(nxt - edge)
            edge = nxt
        out.append(tuple(cuts) or (0,))
    out.extend((int(n),) for n in shape[len(step) :])
    return tuple(out)


def _chunk_size(
    given: ZYX | None, journal: Journal, shape: ZYX, grid: ZYX, itemsize: int, workers: int | None, what: str
) -> ZYX:
    """``--chunks``, else the chunks of the journal being resumed, else a default.

    The default is the most cubic box of whole ``grid`` cells of at most
    :data:`DEFAULT_TASK_BYTES`, smaller when that leaves fewer than four tasks per
    worker (so that small transfers run in parallel too).
    """
    step = given or (tuple(journal.step) if journal.step else None)
    if step is None:
        nbytes = math.prod(shape) * itemsize
        tasks = 4 * (workers or os.cpu_count() or 1)
        step = _default_chunks(shape, grid, itemsize, min(DEFAULT_TASK_BYTES, max(1, nbytes // tasks)))
    if any(s <= 0 or s % g for s, g in zip(step, grid)):
        raise DvidInputError(
            f"--chunks {format_zyx(step)} must be whole multiples of the {what} {format_zyx(grid)} (z, y, x)"
        )
    return step  # type: ignore[return-value]


class _ChunkWriter:
    """The task body: write one chunk to the target, then record it in the journal."""

    def __init__(self, target: Any, journal: Journal) -> None:
        self.target = target
        self.journal = journal

    def __call__(self, data: np.ndarray, region: tuple[slice, ...], start: tuple[int, ...]) -> int:
        self.target[region] = data
        self.journal.add(start)
        return int(data.nbytes)


def transfer(
    ctx: Context,
    source: Volume,
    target: Volume,
    journal: Journal,
    step: ZYX,
    *,
    workers: int | None,
    verb: str,
) -> TransferResult:
    """Copy ``source`` into ``target`` chunk by chunk, in parallel, skipping journalled chunks.

    Parameters
    ----------
    ctx : Context
        Output settings (progress bar unless quiet).
    source, target : Volume
        Same shape; the target's ``grid_origin`` places the chunk grid.
    journal : Journal
        Loaded journal of this transfer (started here with the chunk grid).
    step : (z, y, x)
        Chunk size (multiple of the target's grid).
    workers : int, optional
        Threads; default dask's (the number of cores).
    verb : str
        ``"copied"``, ``"exported"``, ``"imported"`` (for the report).

    Raises
    ------
    TransferInterrupted
        Ctrl-C or SIGTERM; the journal is kept.
    TransferError
        A chunk failed; the journal is kept and the message says how to resume.
    """
    import dask
    import dask.array as da
    from dask.base import compute
    from dask.delayed import delayed
    from dask.diagnostics.progress import ProgressBar

    if tuple(source.shape) != tuple(target.shape):
        raise DvidInputError(f"source shape {source.shape} differs from target shape {target.shape}")
    chunks = plan_chunks(source.shape, target.grid_origin, step)
    total = math.prod(len(c) for c in chunks)
    array = da.from_array(
        source.array, chunks=chunks, asarray=False, fancy=False, lock=False,
        meta=np.empty((0,) * len(source.shape), source.dtype), name=f"read-{verb}-{journal.path.stem}",
    )
    check_castable(source.dtype, target.dtype, target.label)  # commands check before creating anything
    journal.begin(step, total)
    starts = [np.cumsum((0,) + c[:-1]) for c in chunks]
    parts = array.to_delayed(optimize_graph=True)
    write = _ChunkWriter(target.array, journal)
    tasks, skipped = [], 0
    for index in np.ndindex(*array.numblocks):
        start = tuple(int(starts[axis][i]) for axis, i in enumerate(index))
        if start in journal.done:
            skipped += 1
            continue
        region = tuple(slice(s, s + chunks[axis][i]) for axis, (s, i) in enumerate(zip(start, index)))
        tasks.append(delayed(write, pure=False)(parts[index], region, start))
    if skipped:
        ctx.note(f"resuming: {skipped} of {total} chunks already {verb} (journal {journal.path})")
    began = time.perf_counter()
    try:
        with dask.config.set(scheduler="threads", num_workers=workers or os.cpu_count() or 1):
            if ctx.quiet or not tasks:
                sizes = compute(*tasks)
            else:
                with ProgressBar(out=ctx.err, dt=0.1):
                    sizes = compute(*tasks)
    except KeyboardInterrupt as exc:
        journal.close()  # kept on disk for the resume
        code = getattr(exc, "exit_code", 130)
        done = len(journal.done) + journal.added
        raise TransferInterrupted(
            f"interrupted after {done} of {total} chunks; run the same command again to resume "
            f"(journal {journal.path})",
            code,
        ) from None
    except Exception as exc:
        journal.close()  # kept on disk for the resume
        done = len(journal.done) + journal.added
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise TransferError(
            f"{text} — {done} of {total} chunks were {verb}; run the same command again to resume "
            f"(journal {journal.path})"
        ) from exc
    seconds = time.perf_counter() - began
    journal.finish()
    result = TransferResult(len(tasks), skipped, int(sum(sizes)), seconds)
    line = (
        f"{verb} {result.chunks} chunks ({format_bytes(result.nbytes)}) from {source.label} to {target.label} "
        f"in {seconds:.2f} s: {format_rate(result.nbytes, seconds)}"
    )
    if skipped:
        line += f"; skipped {skipped} chunks already {verb}"
    ctx.say(line)
    return result


def check_values(source: Volume, dtype: np.dtype, what: str, workers: int | None) -> None:
    """Refuse a source whose values the target type cannot hold, before anything is created or written.

    Floats never go into integer instances; an integer conversion that only some
    values survive (``int64`` labels into ``uint64``, ``uint16`` into ``uint8``) reads
    the source's value range first (one parallel pass) and refuses values out of range.

    Raises
    ------
    DvidInputError
        The conversion would lose values.
    """
    import dask
    import dask.array as da
    from dask.base import compute

    dtype = np.dtype(dtype)
    check_castable(source.dtype, dtype, what)
    if not (source.dtype.kind in "iu" and dtype.kind in "iu") or np.can_cast(source.dtype, dtype, "safe"):
        return
    chunks = _default_chunks(source.spatial_shape, (1, 1, 1), source.voxel_bytes, DEFAULT_TASK_BYTES)
    array = da.from_array(
        source.array, chunks=chunks + source.channel_shape, asarray=False, fancy=False, lock=False,
        meta=np.empty((0,) * len(source.shape), source.dtype),
    )
    with dask.config.set(scheduler="threads", num_workers=workers or os.cpu_count() or 1):
        low, high = compute(array.min(), array.max())
    info = np.iinfo(dtype)
    if int(low) < info.min or int(high) > info.max:
        raise DvidInputError(
            f"{source.label} holds values {int(low)}..{int(high)}, which {what} ({dtype}) cannot store; "
            "convert the data first"
        )


# ------------------------------------------------------------------ commands
def _scale(url_level: int | None, option: int | None, url: str) -> int:
    if url_level is not None and option is not None and url_level != option:
        raise DvidInputError(f"{url} names level {url_level} but --scale {option} was given")
    return url_level if url_level is not None else (option or 0)


def _journal(args: argparse.Namespace, command: str, identity: dict[str, Any]) -> Journal:
    path = args.journal or default_journal_path(command, identity)
    return Journal.load(path, identity)


def run_export(ctx: Context, args: argparse.Namespace) -> int:
    """``dvid-store export URL OUT``: a box of a DVID level into a local OME-Zarr v3 group."""
    src = parse_target(args.url).require("instance")
    level = DvidLevel.open(ctx, src, _scale(src.level, args.scale, args.url), args.supervoxels)
    box: Box = args.box or level.extents()
    source = level.reader(box)
    itemsize = source.voxel_bytes
    identity = {"command": "export", "source": source.identity, "destination": {"zarr": os.path.abspath(args.out)}}
    journal = _journal(args, "export", identity)
    zarr_chunks = args.zarr_chunks or _resumed_zarr_chunks(journal, args.out) or _default_chunks(
        source.spatial_shape, level.level.block_shape, itemsize, DEFAULT_ZARR_CHUNK_BYTES
    )
    step = _chunk_size(args.chunks, journal, source.spatial_shape, zarr_chunks, itemsize, args.workers, "zarr chunks")
    target = open_zarr_output(
        args.out, level, box, zarr_chunks, reopen=journal.resumed, overwrite=args.overwrite,
        journalled=len(journal.done),
    )
    ctx.note(f"exporting {level.url} box {format_box(box)} ({format_zyx(source.shape)} {source.dtype}) to {args.out}")
    transfer(ctx, source, target, journal, step, workers=args.workers, verb="exported")
    return 0


def _default_chunks(shape: ZYX, grid: ZYX, itemsize: int, target_bytes: int) -> ZYX:
    from ..dask import default_chunks

    return default_chunks(shape, grid, itemsize, target_bytes)


def _resumed_zarr_chunks(journal: Journal, out: str) -> ZYX | None:
    """The zarr chunks of an export being resumed (so the grid stays the same)."""
    if not journal.resumed or not os.path.exists(os.path.join(out, "0", "zarr.json")):
        return None
    import zarr

    return tuple(zarr.open_array(os.path.join(out, "0"), mode="r").chunks[:3])  # type: ignore[return-value]


def _ensure_instance(
    ctx: Context, node: Node, instance: str, journal: Journal, create: bool, make: Callable[[], None]
) -> None:
    """Make the destination instance when ``--create`` asks for it, and refuse the mix-ups.

    Without ``--create`` the instance must exist; with it, it must not, unless this run
    resumes the same transfer (whose first run created it).
    """
    if instance not in node.instances():
        if not create:
            raise UnknownInstanceError(
                "GET", node.transport.base_url, None,
                f"node {node.uuid[:8]} has no instance {instance!r}; add --create to make it",
            )
        make()
    elif create and not journal.resumed:
        raise DvidInputError(
            f"instance {instance!r} already exists on node {node.uuid[:8]}; drop --create to write into it"
        )


def run_import(ctx: Context, args: argparse.Namespace) -> int:
    """``dvid-store import IN URL``: a local zarr array, ``.npy`` or TIFF stack into a DVID instance."""
    from ..create import create_array

    source = open_local(args.input, args.dataset)
    dst = parse_target(args.url).require("instance")
    assert dst.instance is not None
    scale = _scale(dst.level, args.scale, args.url)
    offset: ZYX = args.offset or source.attrs.get("offset") or (0, 0, 0)
    node = dst.node(ctx)
    identity = {
        "command": "import",
        "source": source.identity,
        "destination": {"server": node.transport.base_url, "uuid": node.uuid, "instance": dst.instance,
                        "level": scale, "offset": list(offset)},
    }
    journal = _journal(args, "import", identity)
    new_dtype = np.dtype("uint64") if args.labels else source.dtype  # of an instance made by --create
    if source.channel_shape and args.labels:
        raise DvidInputError(f"{source.label} has channels (shape {source.shape}); labels are one uint64 per voxel")

    def make() -> None:
        box: Box = (offset, tuple(o + n for o, n in zip(offset, source.shape)))  # type: ignore[assignment]
        if args.downres_levels and new_dtype != np.uint64:
            raise DvidInputError("--downres-levels applies to labelmap instances (uint64 data or --labels)")
        settings: dict[str, Any] = {"scales": args.downres_levels or 0}
        if args.block_size:
            settings["block_size"] = args.block_size
        voxel = args.voxel_size or source.attrs.get("voxel_size")
        if voxel:
            settings["voxel_size"] = voxel
        if source.attrs.get("voxel_units"):
            settings["voxel_units"] = source.attrs["voxel_units"]
        assert dst.instance is not None
        # RGBA data (z, y, x, 4) make an rgba8blk instance; create_array names what else DVID stores
        dtype: Any = np.dtype((new_dtype, source.channel_shape)) if source.channel_shape else new_dtype
        create_array(node, dst.instance, box, dtype, labels=True if args.labels else None, **settings)
        ctx.note(f"created {dst.instance!r} on node {node.uuid[:8]} covering {format_box(box)}")

    # values are checked against the target type before anything is created or written
    level: DvidLevel | None = None
    if dst.instance in node.instances():
        level = DvidLevel.open(ctx, dst, scale, node=node)
        what = f"{level.level.typename} {dst.instance!r}"
        check_channels(source, level.channel_shape, what)
        check_values(source, level.dtype, what, args.workers)
    elif args.create:
        if scale:
            raise DvidInputError("--create makes a new instance and writes its level 0; drop the level")
        if source.channel_shape:
            from ..create import _typename

            _typename(np.dtype((new_dtype, source.channel_shape)), None)  # refused before anything is written
        check_values(source, new_dtype, "the new instance", args.workers)
    _ensure_instance(ctx, node, dst.instance, journal, args.create, make)
    level = level or DvidLevel.open(ctx, dst, scale, node=node)
    check_channels(source, level.channel_shape, f"{level.level.typename} {dst.instance!r}")
    target = level.writer(offset, source.spatial_shape)
    step = _chunk_size(
        args.chunks, journal, source.spatial_shape, level.level.block_shape, source.voxel_bytes, args.workers,
        "DVID blocks",
    )
    transfer(ctx, source, target, journal, step, workers=args.workers, verb="imported")
    return 0


def run_copy(ctx: Context, args: argparse.Namespace) -> int:
    """``dvid-store copy SRC DST``: a box of one DVID level into another instance, node or server."""
    from ..blocks import LABEL_TYPES
    from ..create import create_array

    src = parse_target(args.src).require("instance")
    dst = parse_target(args.dst).require("node", "instance")
    level = DvidLevel.open(ctx, src, _scale(src.level, args.scale, args.src), args.supervoxels)
    box: Box = args.box or level.extents()
    source = level.reader(box)
    dst = dataclasses.replace(dst, instance=dst.instance or level.layout.instance, level=dst.level or 0)
    assert dst.instance is not None and dst.level is not None
    offset: ZYX = args.offset or box[0]
    stop: ZYX = tuple(o + n for o, n in zip(offset, source.spatial_shape))  # type: ignore[assignment]
    node = dst.node(ctx)
    destination = {"server": node.transport.base_url, "uuid": node.uuid, "instance": dst.instance,
                   "level": dst.level, "offset": list(offset)}
    where = ("server", "uuid", "instance", "level")
    overlap = all(a < d and c < b for a, b, c, d in zip(box[0], box[1], offset, stop))
    if overlap and all(source.identity[k] == destination[k] for k in where):
        raise DvidInputError("source and destination regions overlap in the same instance; copy elsewhere first")
    identity = {"command": "copy", "source": source.identity, "destination": destination}
    journal = _journal(args, "copy", identity)
    labels = level.layout.typename in LABEL_TYPES

    def make() -> None:
        if dst.level:
            raise DvidInputError("--create makes a new instance and writes its level 0; drop the level from DST")
        if args.downres_levels and not labels:
            raise DvidInputError("--downres-levels applies to labelmap instances")
        downres = args.downres_levels
        if downres is None:  # as many lower levels as the source has below the copied one
            downres = len(level.layout.levels) - 1 - int(level.level.path) if labels else 0
        factor = level.level.factor
        assert dst.instance is not None
        channels = level.channel_shape
        dtype: Any = np.dtype((level.dtype, channels)) if channels else level.dtype  # rgba8blk stays rgba8blk
        create_array(
            node, dst.instance, (offset, stop), dtype, labels=labels, scales=downres,
            block_size=level.level.block_shape, voxel_size=tuple(v * factor for v in level.layout.voxel_size),
            voxel_units=level.layout.units if all(level.layout.units) else "nanometers",
        )
        ctx.note(
            f"created {dst.instance!r} ({level.layout.typename}) on node {node.uuid[:8]} "
            f"covering {format_box((offset, stop))}"
        )

    out: DvidLevel | None = None
    if dst.instance in node.instances():  # a new instance gets the source's type
        out = DvidLevel.open(ctx, dst, dst.level, node=node)
        what = f"{out.level.typename} {dst.instance!r}"
        check_channels(source, out.channel_shape, what)
        check_values(source, out.dtype, what, args.workers)
    _ensure_instance(ctx, node, dst.instance, journal, args.create, make)
    out = out or DvidLevel.open(ctx, dst, dst.level, node=node)
    target = out.writer(offset, source.spatial_shape)
    step = _chunk_size(
        args.chunks, journal, source.spatial_shape, out.level.block_shape, source.voxel_bytes, args.workers,
        "DVID blocks",
    )
    transfer(ctx, source, target, journal, step, workers=args.workers, verb="copied")
    return 0
