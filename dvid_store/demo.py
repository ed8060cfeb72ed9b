"""The README's main job: ``python -m dvid_store.demo`` is ``dvid-store demo``.

Kept as a thin alias of the command-line tool; the demo itself lives in
:mod:`dvid_store.cli_commands.demo`. Run it with ``ci/demo`` (installs everything
first), ``dvid-store demo`` or ``python -m dvid_store.demo`` (same options: ``--out``,
``--size``, ``--seed``, ``--workers``, ``--quiet``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dvid-store demo`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    from .cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
