"""A plain text progress bar for long labelmap transfers (``progress=True``), without tqdm."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

__all__ = ["TextProgress"]


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
