"""Waiting for a server's real state, for tests of work DVID finishes after it answers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, timeout: float = 30.0, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns a truthy value, and return that value.

    DVID finishes some work after answering a request (label indices, max labels,
    annotation syncs, labelsz counts), so a test asks the server again until the
    state it expects is there, instead of sleeping for a guessed time.

    Parameters
    ----------
    condition
        Asks the server; a truthy result ends the wait.
    what
        What is awaited, for the failure message.
    timeout
        Seconds before giving up.
    interval
        Seconds between two polls.

    Returns
    -------
    T
        The first truthy result of ``condition``.

    Raises
    ------
    AssertionError
        If ``condition`` is still falsy after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
