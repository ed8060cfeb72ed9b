"""The journal that makes transfers resumable: which chunks of a transfer are finished.

A journal is a small JSON-lines file. Its first line describes the transfer (source,
destination, region and chunk grid: its *identity*); every later line is the start of
one finished chunk, ``[z, y, x]`` in region coordinates, appended (and flushed) right
after the chunk's data were written. A transfer that is interrupted (Ctrl-C, SIGTERM, a
lost connection) leaves its journal behind; running the same command again finds it,
skips the chunks it lists and deletes it when every chunk is done.

By default the file lives in ``$DVID_STORE_JOURNAL_DIR`` or
``$XDG_CACHE_HOME/dvid_store/journals`` (``~/.cache/...``) under a name derived from the
identity, so the same command finds the same journal.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import DvidInputError

__all__ = ["Journal", "default_journal_path", "identity_key"]

_FORMAT = "dvid-store journal"
_VERSION = 1


def identity_key(identity: Mapping[str, Any]) -> str:
    """A short, stable hash of a transfer's identity."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def default_journal_path(command: str, identity: Mapping[str, Any]) -> Path:
    """Where the journal of a transfer lives unless ``--journal`` says otherwise."""
    base = os.environ.get("DVID_STORE_JOURNAL_DIR")
    if base:
        folder = Path(base)
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = Path(cache) / "dvid_store" / "journals"
    return folder / f"{command}-{identity_key(identity)}.jsonl"


class Journal:
    """Finished chunks of one transfer, kept in a JSON-lines file.

    Use :meth:`load`, then :meth:`begin` with the chunk grid, :meth:`add` after each
    chunk (thread-safe) and :meth:`finish` when all are done (deletes the file).

    Attributes
    ----------
    path : Path
        The file.
    identity : dict
        What the transfer is (compared when resuming).
    resumed : bool
        The file was there when loaded: this run resumes a transfer.
    step : (int, int, int) or None
        The chunk size the journal was started with (``None`` for a new journal).
    done : set of tuple
        Chunk starts already finished when the journal was loaded.
    added : int
        Chunks recorded by this run.
    """

    def __init__(
        self, path: Path, identity: dict[str, Any], *, resumed: bool = False,
        step: tuple[int, ...] | None = None, done: Iterable[tuple[int, ...]] = (),
    ) -> None:
        self.path = path
        self.identity = identity
        self.resumed = resumed
        self.step = step
        self.done: set[tuple[int, ...]] = set(done)
        self.added = 0
        self._lock = threading.Lock()
        self._file: Any = None
        self._closed = False

    @classmethod
    def load(cls, path: str | os.PathLike[str], identity: Mapping[str, Any]) -> Journal:
        """Read the journal at ``path`` if there is one (nothing is written yet).

        Parameters
        ----------
        path : path
            The journal file.
        identity : mapping
            JSON-ready description of the transfer (without the chunk grid).

        Raises
        ------
        DvidInputError
            The file exists but records another transfer, or is not a journal.
        """
        path = Path(path)
        ident = json.loads(json.dumps(identity))  # its JSON form, as it is compared later
        if not path.exists():
            return cls(path, ident)
        with path.open("r", encoding="utf-8") as f:
            lines = f.read().splitlines()
        try:
            head = json.loads(lines[0]) if lines else None
        except ValueError:
            head = None
        if not isinstance(head, dict) or head.get("format") != _FORMAT:
            raise DvidInputError(f"{path} is not a dvid-store journal; choose another --journal file")
        if head.get("identity") != ident:
            raise DvidInputError(
                f"journal {path} records a different transfer ({_summary(head.get('identity'))}); "
                "delete it to start over, or choose another --journal file"
            )
        done: set[tuple[int, ...]] = set()
        for line in lines[1:]:
            try:
                done.add(tuple(int(v) for v in json.loads(line)))
            except (ValueError, TypeError):
                continue  # a line cut short by a kill: that chunk is simply done again
        step = tuple(int(v) for v in head["step"]) if head.get("step") else None
        return cls(path, ident, resumed=True, step=step, done=done)

    def begin(self, step: tuple[int, ...], total: int) -> None:
        """Fix the chunk grid; a new journal writes its first line now.

        Raises
        ------
        DvidInputError
            A resumed journal was made with other chunks.
        """
        step = tuple(int(v) for v in step)
        if self.resumed:
            if self.step is not None and self.step != step:
                raise DvidInputError(
                    f"journal {self.path} was started with chunks {','.join(map(str, self.step))}; "
                    "resume with the same --chunks, or delete the journal to start over"
                )
            return
        self.step = step
        self.path.parent.mkdir(parents=True, exist_ok=True)
        head = {"format": _FORMAT, "version": _VERSION, "step": list(step), "chunks": int(total),
                "identity": self.identity}
        with self.path.open("w", encoding="utf-8") as f:
            f.write(json.dumps(head, sort_keys=True) + "\n")

    def add(self, start: tuple[int, ...]) -> None:
        """Record one finished chunk (thread-safe; flushed at once)."""
        line = json.dumps([int(v) for v in start]) + "\n"
        with self._lock:
            if self._closed:
                # A chunk that finished after the transfer failed: record it (a resume
                # skips it) without leaving a file open behind the closed journal.
                with self.path.open("a", encoding="utf-8") as late:
                    late.write(line)
            else:
                if self._file is None:
                    self._file = self.path.open("a", encoding="utf-8")
                self._file.write(line)
                self._file.flush()
            self.added += 1

    def close(self) -> None:
        """Close the file (it stays on disk, for a later resume); later chunks are still recorded."""
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None

    def finish(self) -> None:
        """The transfer is complete: delete the journal."""
        self.close()
        self.path.unlink(missing_ok=True)


def _summary(identity: Any) -> str:
    if not isinstance(identity, dict):
        return "unreadable"
    parts = [f"{k}: {identity[k]}" for k in ("command", "source", "destination") if k in identity]
    return "; ".join(parts) or "unknown"
