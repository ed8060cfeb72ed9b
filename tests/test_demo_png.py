"""Where ``dvid-store demo`` (and so ``ci/demo``, which runs it in the checkout) saves its PNG.

Without ``--out`` the picture goes to dvid_store's cache folder, never to the current
directory: run from a git checkout, the demo must leave ``git status`` clean. The
demo's output says where the file is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dvid_store.codecs.png import decode_png


def _dvid_store_command() -> list[str]:
    script = Path(sys.executable).with_name("dvid-store")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dvid_store.cli"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.timeout(240)
def test_demo_without_out_leaves_the_current_checkout_clean(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    git = ["git", "-C", str(checkout)]
    subprocess.run([*git, "init", "--quiet"], check=True)
    (checkout / "README.md").write_text("a project\n")
    subprocess.run([*git, "add", "README.md"], check=True)
    subprocess.run(
        [*git, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "--quiet", "-m", "x"], check=True
    )
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in ("DVID_STORE_CACHE", "XDG_CACHE_HOME")}
    env["DVID_STORE_CACHE"] = str(cache)
    result = subprocess.run(
        [*_dvid_store_command(), "demo", "--size", "64"],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=200,
    )
    assert result.returncode == 0, result.stderr
    png = cache / "demo" / "demo-xy.png"
    assert f"saved {png} (" in result.stdout  # the output says where the picture is
    image = decode_png(png.read_bytes())
    assert image.shape == (64, 2 * 64 + 4, 3)
    status = subprocess.run([*git, "status", "--porcelain", "--ignored"], capture_output=True, text=True, check=True)
    assert status.stdout == "", f"the demo left files in the current checkout:\n{status.stdout}"
