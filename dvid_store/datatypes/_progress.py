"""Long node-API transfers: a plain text progress bar (``progress=True``, no tqdm) and ordered
threaded maps over many small requests."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TextIO, TypeVar

import numpy as np

from ..errors import DvidInputError

__all__ = ["TextProgress", "check_workers", "map_threaded"]

_T = TypeVar("_T")
_R = TypeVar("_R")


class TextProgress:
    """``[#####.....] 50% 5000/10000 points`` (or ``5000 points``) on one line of ``stream``, redrawn as work is done.

    Parameters
    ----------
    total : int or None
        Units of work in all; ``None`` when unknown (only the count is shown).
    what : str
        Name of the units, shown after the counts.
    enabled : bool
        Draw nothing when false (so callers need no branches).
    stream : file, optional
        Where to draw (default ``sys.stderr``).
    """

    width = 30

    def __init__(self, total: int | None, what: str, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total = None if total is None else max(int(total), 0)
        self.what = what
        self.enabled = enabled
        self.done = 0
        self._stream = stream
        self._lock = threading.Lock()  # updated from worker threads
        self._draw()

    def update(self, count: int) -> None:
        """Record ``count`` more units done."""
        with self._lock:
            self.done += int(count)
            self._draw()

    def close(self) -> None:
        """End the bar's line."""
        if self.enabled:
            stream = self._stream or sys.stderr
            stream.write("\n")
            stream.flush()

    def _draw(self) -> None:
        if not self.enabled:
            return
        stream = self._stream or sys.stderr
        if self.total is None:
            stream.write(f"\r{self.done} {self.what}")
            stream.flush()
            return
        fraction = 1.0 if self.total == 0 else min(self.done / self.total, 1.0)
        filled = round(fraction * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        stream.write(f"\r[{bar}] {fraction:4.0%} {self.done}/{self.total} {self.what}")
        stream.flush()


def check_workers(workers: object) -> int:
    """``workers`` as a positive int, or :class:`DvidInputError` before anything is sent."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise DvidInputError(f"workers must be a positive integer, got {workers!r}")
    return int(workers)


def map_threaded(
    work: Callable[[_T], _R],
    items: Sequence[_T],
    workers: int,
    what: str = "items",
    progress: bool = False,
) -> list[_R]:
    """``[work(i) for i in items]`` on up to ``workers`` threads, in order; the first error is raised.

    One item, or one worker, runs in the calling thread. ``progress`` draws a
    :class:`TextProgress` of ``what`` done on stderr.
    """
    workers = check_workers(workers)
    bar = TextProgress(len(items), what, enabled=progress)

    def one(item: _T) -> _R:
        result = work(item)
        bar.update(1)
        return result

    try:
        if workers == 1 or len(items) <= 1:
            return [one(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="dvid_store-map") as pool:
            results: Iterator[_R] = pool.map(one, items)
            return list(results)
    finally:
        bar.close()
