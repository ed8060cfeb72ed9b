"""Many single-chunk calls on an event loop → few multi-block DVID requests in threads.

zarr calls ``store.get`` once per chunk, concurrently, on one event loop. A
:class:`Batcher` collects the calls that arrive together, waits until the loop has
gone round a few times without a new one (no timers, no sleeps), then hands the whole
batch to a blocking function in a thread pool (:func:`io_executor`) and resolves every
caller's future with its item's result. HTTP and decoding therefore never run on the
event loop thread.

Knobs: a batch holds at most the store's blocks per request
(:attr:`~dvid_store.blocks.BlockIO.blocks_per_request`: ``max_blocks`` and
``max_bytes`` of :class:`~dvid_store.zarr.DvidStore`, defaults 1024 blocks and
128 MiB, i.e. 1024 uint8 32³ blocks or 64 uint64 64³ blocks); the pool that runs the
batches, and so the number of zarr-path requests in flight per process, has
:func:`io_threads` threads (``$DVID_STORE_IO_THREADS`` or :func:`set_io_threads`,
default ``min(16, 4 * cores)``, 8 on 2 cores). ``benchmarks/bench_tuning.py`` (384³,
2 cores) found no setting consistently faster than these defaults: 16–4096 blocks
per request measured 0.8–1.0x and 1–16 threads 0.65–1.25x the default, varying from
run to run with the machine's load.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["Batcher", "io_executor", "io_threads", "set_io_threads"]

T = TypeVar("T")
R = TypeVar("R")

_ENV_THREADS = "DVID_STORE_IO_THREADS"
_executor: ThreadPoolExecutor | None = None
_executor_pid: int | None = None
_executor_lock = threading.Lock()
_threads_override: int | None = None


def io_threads() -> int:
    """Threads of the I/O pool, i.e. zarr-path requests in flight per process.

    :func:`set_io_threads` if called, else ``$DVID_STORE_IO_THREADS``, else
    ``min(16, 4 * cores)``. Each thread runs one whole request (HTTP and decoding),
    so more threads than cores help while requests wait on the server.
    """
    if _threads_override is not None:
        return _threads_override
    configured = os.environ.get(_ENV_THREADS)
    if configured:
        return max(1, int(configured))
    return min(16, 4 * (os.cpu_count() or 1))


def set_io_threads(threads: int | None) -> None:
    """Resize the process's I/O pool (``None``: back to the environment/default).

    Requests already running finish in the old pool; new ones use the new pool.
    """
    global _executor, _threads_override
    if threads is not None and int(threads) < 1:
        from ..errors import DvidInputError

        raise DvidInputError(f"io threads must be at least 1, got {threads}")
    with _executor_lock:
        _threads_override = None if threads is None else int(threads)
        old, _executor = _executor, None
    if old is not None:
        old.shutdown(wait=False)


def io_executor() -> ThreadPoolExecutor:
    """The process's thread pool for DVID requests (a new one after a fork)."""
    global _executor, _executor_pid
    pid = os.getpid()
    if _executor is None or _executor_pid != pid:
        with _executor_lock:
            if _executor is None or _executor_pid != pid:
                _executor = ThreadPoolExecutor(io_threads(), thread_name_prefix="dvid_store-io")
                _executor_pid = pid
    return _executor


@dataclass
class _Pending(Generic[T]):
    items: list[T] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)
    scheduled: bool = False
    last_count: int = 0
    rounds: int = 0


class Batcher(Generic[T, R]):
    """Gather concurrent ``submit`` calls into batches for a blocking function.

    Parameters
    ----------
    run : callable
        ``run(items) -> results`` (same length and order); blocking, called in a pool
        thread with at most ``max_items`` items. An exception fails every caller of
        the batch.
    max_items : int
        Largest batch; a full batch is sent at once.
    settle_rounds : int
        Loop iterations to wait for more calls while new ones keep arriving.

    Notes
    -----
    State is kept per event loop, so one batcher serves zarr's loop, fsspec's loop and
    a user's ``asyncio.run`` alike.
    """

    def __init__(self, run: Callable[[list[T]], Sequence[R]], *, max_items: int, settle_rounds: int = 3) -> None:
        self._run = run
        self.max_items = max(1, int(max_items))
        self.settle_rounds = settle_rounds
        self._pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pending[T]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Batches sent so far (for tests and benchmarks).
        self.batches_sent = 0

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result."""
        loop = asyncio.get_running_loop()
        with self._lock:
            pending = self._pending.get(loop)
            if pending is None:
                pending = self._pending[loop] = _Pending()
        future: asyncio.Future[R] = loop.create_future()
        pending.items.append(item)
        pending.futures.append(future)
        if len(pending.items) >= self.max_items:
            self._flush(loop, pending)
        elif not pending.scheduled:
            pending.scheduled = True
            pending.last_count = len(pending.items)
            pending.rounds = 0
            loop.call_soon(self._tick, loop, pending)
        return await future

    def _tick(self, loop: asyncio.AbstractEventLoop, pending: _Pending[T]) -> None:
        if not pending.scheduled:
            return
        count = len(pending.items)
        if pending.rounds < self.settle_rounds and (count != pending.last_count or pending.rounds == 0):
            pending.last_count = count
            pending.rounds += 1
            loop.call_soon(self._tick, loop, pending)
            return
        self._flush(loop, pending)

    def _flush(self, loop: asyncio.AbstractEventLoop, pending: _Pending[T]) -> None:
        items, futures = pending.items, pending.futures
        pending.items, pending.futures = [], []
        pending.scheduled = False
        for start in range(0, len(items), self.max_items):
            batch = items[start : start + self.max_items]
            waiting = futures[start : start + self.max_items]
            self.batches_sent += 1
            task = loop.create_task(self._execute(loop, batch, waiting))
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)

    async def _execute(
        self, loop: asyncio.AbstractEventLoop, items: list[T], futures: list[asyncio.Future[Any]]
    ) -> None:
        try:
            results = await loop.run_in_executor(io_executor(), self._run, items)
        except BaseException as exc:  # every waiting caller gets the error
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for future, result in zip(futures, results):
            if not future.done():
                future.set_result(result)
