"""The dask array type of :func:`~dvid_store.open_dask`: region-sized graphs, one copy on ``compute()``.

A :class:`DvidArray` knows where its chunks come from (a
:class:`~dvid_store.level_io.VolumeReader` and the index of its first voxel), which
gives it two things a plain dask array cannot do:

* Slicing builds a new graph for the cut-out box alone. dask slices by adding a layer
  on top of the whole array's graph, and every later computation then walks every
  chunk of the whole instance (graph culling lists all of them): on a teravoxel
  labelmap that is millions of chunks, listed before the first byte is read, and
  the time and memory of that grow with the instance, not the slice. A slice of a :class:`DvidArray` is a
  ``from_array`` over just its box, with the chunks dask's slicing would have given
  (the level's chunk grid, cut at the box's edges), so work on a region costs what
  the region costs. Its name is a token of the level, the box and the chunks: equal
  slices have equal names, however they were reached.
* ``compute()`` (and ``numpy.asarray``) on the local schedulers (threads,
  synchronous) allocates the result once and lets each task decode its blocks
  straight into it. dask's own ``compute()`` of a many-chunk array builds every
  chunk, then copies them all into a fresh result (``concatenate3``): the peak is
  twice the result, and for labels the copy costs about as much as reading them from
  DVID (``benchmarks/bench_transfers.py``; the figures are on the "Performance" page
  of the docs).

Everything else is dask's: operations on a :class:`DvidArray` (arithmetic,
``rechunk``, ``map_blocks``, ...) give ordinary dask arrays, ``dask.compute(a, b)``
and distributed or process schedulers use dask's own assembly. Integer indices and
slices with other steps cut out the bounding box first (a region-sized graph) and
let dask do the rest; ``None``, arrays, masks and negative steps are dask's alone,
on the whole array's graph.

A multichannel level (rgba8blk) is 4-d, ``(z, y, x, 4)``, with every chunk holding
all 4 channels: a region is cut along z, y and x, and a selection of channels
(``a[..., 0]``) is dask's indexing of that region's graph.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
from dask.array.core import slices_from_chunks
from dask.base import tokenize

from .errors import DvidInputError
from .geometry import check_allocation
from .level_io import VolumeReader, _normalise_key

__all__ = ["DvidArray"]

ZYX = tuple[int, int, int]
Chunks = tuple[tuple[int, ...], ...]

# Keywords of Array.compute() that are not scheduler options.
_COMPUTE_OPTIONS = ("scheduler", "optimize_graph", "traverse")


class DvidArray(da.Array):
    """A lazy dask array of one box of a DVID level (what :func:`~dvid_store.open_dask` returns).

    It is an ordinary :class:`dask.array.Array` in every way but two:

    * indexing with integers and slices gives an array whose graph covers the selected
      box only (a :class:`DvidArray` when every slice has step 1), so computing on a
      region of a huge instance costs what the region costs;
    * ``compute()`` (and ``numpy.asarray``) on the threaded or synchronous scheduler
      reads every chunk straight into one preallocated result, with dask's worker
      threads, instead of building chunks and concatenating them.

    Attributes
    ----------
    reader : VolumeReader
        Where the voxels come from.
    start : (int, int, int)
        Index, in ``reader``, of this array's ``[0, 0, 0]`` (z, y, x; a channel axis
        always starts at 0).
    source : str
        Token of the level and how it is read (instance, version, scale, supervoxels,
        transfer encoding): with the box and the chunks it names the graph of a slice.
    """

    reader: VolumeReader
    start: ZYX
    source: str

    @classmethod
    def from_reader(
        cls, reader: VolumeReader, chunks: Chunks, source: str, start: Sequence[int] = (0, 0, 0)
    ) -> DvidArray:
        """A new graph reading ``reader[start : start + shape]``, one task per chunk.

        Parameters
        ----------
        reader : VolumeReader
            The level.
        chunks : tuple of tuples
            Normalised dask chunks of the box (their sums give its shape); every inner
            chunk edge should fall on a DVID block boundary so that no two tasks read
            the same block. A multichannel level's channel axis is one whole chunk.
        source : str
            Token of the level and how it is read; the array's name is
            ``dvid-<instance>-`` followed by a token of ``source``, ``start`` and
            ``chunks``, so the same box with the same chunks always has the same name.
        start : (int, int, int)
            Index in ``reader`` of the array's ``[0, 0, 0]``.
        """
        origin: ZYX = tuple(int(s) for s in start)  # type: ignore[assignment]
        shape = tuple(sum(c) for c in chunks)
        if origin == (0, 0, 0) and shape == reader.shape:
            box = reader
        else:
            box = VolumeReader(reader.io, [o + s for o, s in zip(reader.origin, origin)], shape)
        name = f"dvid-{reader.io.instance}-{tokenize(source, origin, chunks)}"
        array = da.from_array(
            box, chunks=chunks, name=name, asarray=False, fancy=False, lock=False,
            meta=np.empty((0,) * len(shape), reader.dtype),
        )
        return cls.wrap(array, reader, origin, source)

    @classmethod
    def wrap(
        cls, array: da.Array, reader: VolumeReader, start: Sequence[int] = (0, 0, 0), source: str | None = None
    ) -> DvidArray:
        """The :class:`DvidArray` of ``array``, whose values are ``reader[start + index]``.

        ``source`` defaults to ``array``'s name.
        """
        wrapped = cls(array.dask, array.name, array.chunks, meta=array._meta)
        wrapped.reader = reader
        wrapped.start = tuple(int(s) for s in start)  # type: ignore[assignment]
        wrapped.source = array.name if source is None else source
        return wrapped

    def __reduce__(self) -> tuple[Any, ...]:
        plain = da.Array(self.dask, self.name, self.chunks, meta=self._meta)
        return (_rebuild, (plain, self.reader, self.start, self.source))

    def __getitem__(self, key: Any) -> Any:
        basic = _basic_key(key)
        if basic is None:
            # dask.array.Array has no annotations, and untyped_calls_exclude does not reach super() calls
            return super().__getitem__(key)  # type: ignore[no-untyped-call]
        try:
            bounds, after = _normalise_key(basic, self.shape)
        except IndexError:  # negative steps, out-of-range integers, too many indices: dask's answer and errors
            return super().__getitem__(key)  # type: ignore[no-untyped-call]
        region = self.region(bounds[:3])
        # channels are chunked whole: selecting some is dask's indexing of the region
        rest = after[:3] + tuple(_channel_index(b, a, n) for b, a, n in zip(bounds[3:], after[3:], self.shape[3:]))
        if all(a == slice(None) for a in rest):
            return region
        # integers and steps, applied by dask to the box's own graph
        return da.Array.__getitem__(region, rest)

    def region(self, bounds: Sequence[slice]) -> DvidArray:
        """The box ``self[bounds]`` (slices of step 1 within the shape) on a graph of its own.

        Its chunks are this array's, cut at the box's edges (as dask's slicing cuts
        them); without a cut it is this array itself. ``bounds`` cut z, y and x; a
        channel axis is kept whole (a fourth bound, if given, must cover it).
        """
        if any(b != slice(0, n) for b, n in zip(bounds[3:], self.shape[3:])):
            raise DvidInputError(
                f"a region keeps all {self.shape[3]} channels (select channels by indexing it: region[..., 0])"
            )
        cut = [(int(b.start), int(b.stop)) for b in bounds[:3]]
        if all(a == 0 and b == n for (a, b), n in zip(cut, self.shape)):
            return self
        chunks = tuple(_cut_chunks(c, a, b) for c, (a, b) in zip(self.chunks, cut)) + tuple(self.chunks[len(cut) :])
        start = [s + a for s, (a, _) in zip(self.start, cut)]
        return DvidArray.from_reader(self.reader, chunks, self.source, start)

    def compute(self, **kwargs: Any) -> Any:
        """The voxels as a numpy array (see :meth:`dask.array.Array.compute`).

        On the threaded and synchronous schedulers every task decodes its chunk's
        blocks into its part of one result array. On a dask.distributed client the
        chunks are read on the workers and each is copied into one result on the
        client as it arrives, then released (dask would first join them all on one
        worker, which holds twice the result and sends it on through the scheduler).
        The process scheduler builds the chunks and concatenates them as dask always
        does.
        """
        scheduler = kwargs.get("scheduler")
        get = _local_get(scheduler, self)
        if get is None:
            client = _distributed_client(scheduler, self)
            if client is not None:
                return gather_into_result(client, self)
            return super().compute(**kwargs)  # type: ignore[no-untyped-call]  # dask: unannotated
        options = {k: v for k, v in kwargs.items() if k not in _COMPUTE_OPTIONS}
        return read_into_result(self.reader, self.start, self.chunks, get, **options)


def _rebuild(array: da.Array, reader: VolumeReader, start: ZYX, source: str) -> DvidArray:
    return DvidArray.wrap(array, reader, start, source)


def _basic_key(key: Any) -> tuple[Any, ...] | None:
    """``key`` as a tuple if it holds only integers, slices and ``...``; None for anything else."""
    items = key if isinstance(key, tuple) else (key,)
    for item in items:
        if isinstance(item, (bool, np.bool_)):  # numpy reads a boolean as a mask, not as 0 or 1
            return None
        if not (isinstance(item, (int, np.integer, slice)) or item is Ellipsis):
            return None
    return items


def _channel_index(bound: slice, after: Any, size: int) -> Any:
    """The index of a channel axis that ``bound`` then ``after`` (from ``_normalise_key``) select."""
    if bound == slice(0, size) and after == slice(None):
        return slice(None)
    if isinstance(after, slice):
        return slice(bound.start, bound.stop, after.step)
    return bound.start


def _cut_chunks(chunks: tuple[int, ...], start: int, stop: int) -> tuple[int, ...]:
    """The chunks of ``[start, stop)`` along one axis: the pieces of ``chunks`` it covers, cut at its ends."""
    if stop <= start:
        return (0,)
    edges = list(itertools.accumulate(chunks, initial=0))
    i = bisect.bisect_right(edges, start) - 1
    pieces = []
    while i < len(chunks) and edges[i] < stop:
        piece = min(edges[i + 1], stop) - max(edges[i], start)
        if piece > 0:
            pieces.append(piece)
        i += 1
    return tuple(pieces)


def _local_get(scheduler: Any, array: da.Array) -> Any:
    """dask's get function for this compute if it shares this process's memory, else None."""
    import dask.local
    import dask.threaded
    from dask.base import get_scheduler

    get = get_scheduler(scheduler=scheduler, collections=[array])
    return get if get in (dask.threaded.get, dask.local.get_sync) else None


def _distributed_client(scheduler: Any, array: da.Array) -> Any:
    """The dask.distributed client this compute would run on, else None."""
    from dask.base import get_scheduler

    get = get_scheduler(scheduler=scheduler, collections=[array])
    owner = getattr(get, "__self__", None)
    if owner is None or type(owner).__module__.split(".")[0] != "distributed":
        return None
    return owner


def gather_into_result(client: Any, array: da.Array) -> np.ndarray:
    """Compute ``array``'s chunks on a distributed cluster and copy each into one new array as it arrives.

    A failed chunk cancels the others and raises its error.
    """
    from dask.core import flatten
    from distributed import as_completed

    check_allocation(array.shape, array.dtype, "computing a DVID array")
    out = np.empty(array.shape, array.dtype)
    if out.size == 0:
        return out
    keys = list(flatten(array.__dask_keys__()))
    futures = client.get(dict(array.__dask_graph__()), keys, sync=False)
    place = {future.key: region for future, region in zip(futures, slices_from_chunks(array.chunks))}
    failure: BaseException | None = None
    for future in as_completed(futures):
        if future.status != "finished":
            failure = future.exception()
            break
        out[place[future.key]] = future.result()
        future.release()
    if failure is not None:
        client.cancel(futures)
        raise failure
    return out


def _read_chunk(reader: VolumeReader, out: np.ndarray, start: ZYX, region: tuple[slice, ...]) -> None:
    # start is (z, y, x): a channel slice of the region is the reader's own
    spatial = tuple(slice(s + r.start, s + r.stop) for s, r in zip(start, region))
    reader.read_into(spatial + region[len(spatial) :], out[region])


def read_into_result(
    reader: VolumeReader, start: Sequence[int], chunks: tuple[tuple[int, ...], ...], get: Any, **options: Any
) -> np.ndarray:
    """Read ``reader[start : start + shape]`` into one new array, a task per chunk, run by ``get``.

    Parameters
    ----------
    reader : VolumeReader
        The level to read.
    start : (int, int, int)
        Index in ``reader`` of the result's ``[0, 0, 0]``.
    chunks : tuple of tuples
        dask chunks of the result: one task per chunk.
    get : callable
        A dask scheduler get function that runs tasks in this process
        (``dask.threaded.get`` or ``dask.local.get_sync``).
    **options
        Passed to ``get`` (``num_workers``, ``pool``, ...).
    """
    shape = tuple(sum(c) for c in chunks)
    check_allocation(shape, reader.dtype, f"computing {reader.io.instance!r}")
    out = np.empty(shape, reader.dtype)
    if out.size == 0:
        return out
    origin = tuple(int(s) for s in start)
    name = f"dvid-read-into-{id(out):x}"
    graph = {
        (name, i): (_read_chunk, reader, out, origin, region)
        for i, region in enumerate(slices_from_chunks(chunks))
    }
    get(graph, list(graph), **options)
    return out
