"""The documentation site builds, with warnings as errors (broken links, bad API refs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: The site builds from the same sources in every environment: once, with the newest versions.
pytestmark = pytest.mark.one_environment

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_docs_build_strict(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(DOCS / "mkdocs.yml"), "-d", str(tmp_path)],
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    api = (tmp_path / "api" / "index.html").read_text()
    assert "DvidClient" in api and "create_repo" in api  # mkdocstrings rendered the docstrings
