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
default ``min(16, 4 * cores)``, 8 on 2 cores). ``benchmarks/bench_tuning.py`` found
no setting of either consistently faster than these defaults (the figures are on the
"Performance" page of the docs).
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

__all__ = ["Batcher", "FailureScope", "io_executor", "io_threads", "set_io_threads"]

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


@dataclass(eq=False)
class _Batch(Generic[T]):
    """One flushed batch; it can still be called off until a pool thread starts it."""

    items: list[T]
    futures: list[asyncio.Future[Any]]
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: bool = False
    dropped: bool = False


@dataclass
class _Pending(Generic[T]):
    items: list[T] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)
    scheduled: bool = False
    last_count: int = 0
    rounds: int = 0
    queued: set[_Batch[T]] = field(default_factory=set)


@dataclass
class _Failure:
    error: BaseException
    refused: bool = False
    quiet_rounds: int = 0


class FailureScope:
    """Stops the rest of a call once one of its batches failed.

    zarr does not cancel the other chunk tasks of a read or write when one fails:
    they keep calling the store after the caller already has the exception, each
    sending requests (and, against a stopped server, retrying for seconds) in the
    background. asyncio keeps no record of which task started which, so the call is
    recognised by time instead: its remaining chunk calls reach the store one after
    another, each a few event-loop iterations after the previous one failed.

    So when a batch fails, the scope fails, unsent, every item of its batchers still
    waiting on that event loop, and refuses every ``submit`` on that loop with the
    same exception until :attr:`QUIET_ROUNDS` loop iterations pass without one. The
    failed call therefore sends nothing more, however many chunks it had left, and a
    call made after it sends requests again. Calls of the same store overlapping the
    failure on the same loop share its fate, as they share its requests. Every
    batcher of one :class:`~dvid_store.zarr.DvidStore` uses one scope, so a failed
    read also stops the writes of the same zarr call.
    """

    #: Loop iterations without a refused call that end a failure. zarr 3.1's next
    #: chunk call followed a refused one within 4 iterations in reads and 12 in
    #: partial writes (task wake-ups through its ``gather`` and semaphore; store and
    #: ``dvid://`` paths alike); the margin costs microseconds.
    QUIET_ROUNDS = 64

    def __init__(self) -> None:
        self._failures: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Failure] = (
            weakref.WeakKeyDictionary()
        )
        self._batchers: weakref.WeakSet[Batcher[Any, Any]] = weakref.WeakSet()

    def register(self, batcher: Batcher[Any, Any]) -> None:
        self._batchers.add(batcher)

    def check(self, loop: asyncio.AbstractEventLoop) -> None:
        """Raise the failure the loop is still draining, without sending anything."""
        failure = self._failures.get(loop)
        if failure is not None:
            failure.refused = True
            raise failure.error

    def failed(self, loop: asyncio.AbstractEventLoop, error: BaseException) -> None:
        """A batch failed with ``error`` (call on the loop's thread)."""
        if loop in self._failures:
            return  # already draining; its own error goes on
        self._failures[loop] = _Failure(error)
        for batcher in list(self._batchers):
            batcher._drop(loop, error)
        loop.call_soon(self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        failure = self._failures.get(loop)
        if failure is None:
            return
        if failure.refused:
            failure.refused, failure.quiet_rounds = False, 0
        else:
            failure.quiet_rounds += 1
            if failure.quiet_rounds >= self.QUIET_ROUNDS:
                del self._failures[loop]
                return
        loop.call_soon(self._tick, loop)


class Batcher(Generic[T, R]):
    """Gather concurrent ``submit`` calls into batches for a blocking function.

    Parameters
    ----------
    run : callable
        ``run(items) -> results`` (same length and order); blocking, called in a pool
        thread with at most ``max_items`` items. An exception fails every caller of
        the batch and stops the rest of their call (see :class:`FailureScope`).
    max_items : int
        Largest batch; a full batch is sent at once.
    settle_rounds : int
        Loop iterations to wait for more calls while new ones keep arriving.
    scope : FailureScope, optional
        Shared with the batchers whose calls stop together (one per store); default:
        a scope of this batcher alone.

    Notes
    -----
    State is kept per event loop, so one batcher serves zarr's loop, fsspec's loop and
    a user's ``asyncio.run`` alike.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Sequence[R]],
        *,
        max_items: int,
        settle_rounds: int = 3,
        scope: FailureScope | None = None,
    ) -> None:
        self._run = run
        self.max_items = max(1, int(max_items))
        self.settle_rounds = settle_rounds
        self._pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pending[T]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.scope = scope if scope is not None else FailureScope()
        self.scope.register(self)
        #: Batches sent so far (for tests and benchmarks).
        self.batches_sent = 0

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result.

        Raises
        ------
        Exception
            The failure of the item's batch; or, without sending anything, the
            failure of a batch of the same call (see :class:`FailureScope`).
        """
        loop = asyncio.get_running_loop()
        self.scope.check(loop)
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
            batch = _Batch(items[start : start + self.max_items], futures[start : start + self.max_items])
            pending.queued.add(batch)
            task = loop.create_task(self._execute(loop, pending, batch))
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)

    def _start(self, batch: _Batch[T]) -> Sequence[R] | None:
        """Run a batch in a pool thread, unless it was called off while it waited for a thread."""
        with batch.lock:
            if batch.dropped:
                return None
            batch.started = True
        with self._lock:
            self.batches_sent += 1
        return self._run(batch.items)

    async def _execute(self, loop: asyncio.AbstractEventLoop, pending: _Pending[T], batch: _Batch[T]) -> None:
        try:
            results = await loop.run_in_executor(io_executor(), self._start, batch)
        except BaseException as exc:  # every waiting caller gets the error
            pending.queued.discard(batch)
            for future in batch.futures:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            self.scope.failed(loop, exc)
            return
        pending.queued.discard(batch)
        if results is None:
            return  # dropped: its callers already have the error
        for future, result in zip(batch.futures, results):
            if not future.done():
                future.set_result(result)

    def _drop(self, loop: asyncio.AbstractEventLoop, error: BaseException) -> None:
        """Fail, unsent, every item still waiting on ``loop`` (on the loop's thread)."""
        pending = self._pending.get(loop)
        if pending is None:
            return
        waiting = list(pending.futures)
        pending.items, pending.futures = [], []
        for batch in list(pending.queued):
            with batch.lock:
                if batch.started:
                    continue
                batch.dropped = True
            waiting.extend(batch.futures)
        for future in waiting:
            if not future.done():
                future.set_exception(error)
