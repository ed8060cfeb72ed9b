"""The dask array type of :func:`~dvid_store.open_dask`: one copy, not two, on ``compute()``.

dask's ``compute()`` of a many-chunk array builds every chunk, then copies them all
into a fresh result (``concatenate3``): the peak is twice the result, and for labels
the copy costs about as much as reading them from DVID. A :class:`DvidArray` knows
where its chunks come from, so on the local schedulers (threads, synchronous)
``compute()`` and ``numpy.asarray`` allocate the result once and let each task decode
its blocks straight into it: faster, and the peak memory is about one result instead
of two (``benchmarks/bench_transfers.py``; the figures are on the "Performance" page
of the docs).

Everything else is dask's: operations on a :class:`DvidArray` (arithmetic,
``rechunk``, ``map_blocks``, ...) give ordinary dask arrays, ``dask.compute(a, b)``
and distributed or process schedulers use dask's own assembly, and slicing with
steps of 1 keeps the fast path for the cut-out box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
from dask.array.core import slices_from_chunks

from .geometry import check_allocation
from .level_io import step_one_bounds

if TYPE_CHECKING:
    from .level_io import VolumeReader

__all__ = ["DvidArray"]

ZYX = tuple[int, int, int]

# Keywords of Array.compute() that are not scheduler options.
_COMPUTE_OPTIONS = ("scheduler", "optimize_graph", "traverse")


class DvidArray(da.Array):
    """A lazy dask array of one box of a DVID level (what :func:`~dvid_store.open_dask` returns).

    It is an ordinary :class:`dask.array.Array` in every way but two:

    * ``compute()`` (and ``numpy.asarray``) on the threaded or synchronous scheduler
      reads every chunk straight into one preallocated result, with dask's worker
      threads, instead of building chunks and concatenating them;
    * indexing with slices of step 1 gives a :class:`DvidArray` of the cut-out box.

    Attributes
    ----------
    reader : VolumeReader
        Where the voxels come from.
    start : (int, int, int)
        Index, in ``reader``, of this array's ``[0, 0, 0]``.
    """

    reader: VolumeReader
    start: ZYX

    @classmethod
    def wrap(cls, array: da.Array, reader: VolumeReader, start: Sequence[int] = (0, 0, 0)) -> DvidArray:
        """The :class:`DvidArray` of ``array``, whose values are ``reader[start + index]``."""
        wrapped = cls(array.dask, array.name, array.chunks, meta=array._meta)
        wrapped.reader = reader
        wrapped.start = tuple(int(s) for s in start)  # type: ignore[assignment]
        return wrapped

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (da.Array(self.dask, self.name, self.chunks, meta=self._meta), self.reader, self.start))

    def __getitem__(self, key: Any) -> Any:
        # dask.array.Array has no annotations, and untyped_calls_exclude does not reach super() calls
        result = super().__getitem__(key)  # type: ignore[no-untyped-call]
        try:
            bounds = step_one_bounds(key, self.shape)
        except IndexError:  # None, fancy or negative-step indices: dask's result as it is
            return result
        if bounds is None or not isinstance(result, da.Array):
            return result
        if result.shape != tuple(b.stop - b.start for b in bounds):
            return result
        return DvidArray.wrap(result, self.reader, [s + b.start for s, b in zip(self.start, bounds)])

    def compute(self, **kwargs: Any) -> Any:
        """The voxels as a numpy array (see :meth:`dask.array.Array.compute`).

        On the threaded and synchronous schedulers every task decodes its chunk's
        blocks into its part of one result array; other schedulers (distributed,
        processes) build the chunks and concatenate them as dask always does.
        """
        get = _local_get(kwargs.get("scheduler"), self)
        if get is None:
            return super().compute(**kwargs)  # type: ignore[no-untyped-call]  # dask: unannotated
        options = {k: v for k, v in kwargs.items() if k not in _COMPUTE_OPTIONS}
        return read_into_result(self.reader, self.start, self.chunks, get, **options)


def _rebuild(array: da.Array, reader: VolumeReader, start: ZYX) -> DvidArray:
    return DvidArray.wrap(array, reader, start)


def _local_get(scheduler: Any, array: da.Array) -> Any:
    """dask's get function for this compute if it shares this process's memory, else None."""
    import dask.local
    import dask.threaded
    from dask.base import get_scheduler

    get = get_scheduler(scheduler=scheduler, collections=[array])
    return get if get in (dask.threaded.get, dask.local.get_sync) else None


def _read_chunk(reader: VolumeReader, out: np.ndarray, start: ZYX, region: tuple[slice, ...]) -> None:
    reader.read_into(tuple(slice(s + r.start, s + r.stop) for s, r in zip(start, region)), out[region])


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
