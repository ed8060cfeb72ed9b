"""Executable documentation: the notebooks and the docs' code examples run against the test server.

* Every notebook in ``notebooks/`` runs top to bottom in a Jupyter kernel of this
  interpreter, against the session's DVID server (``$DVID_URL``), and is stored stripped.
  Its last cell deletes its demo repo when ``$DVID_RPC`` is set, else says how to.
* ``jupyter nbconvert --to notebook --execute notebooks/01-quickstart.ipynb``, as users
  type it, runs the notebook on a throwaway server of its own.
* Every ```` ```python ```` block of every page in ``docs/pages`` runs, page by page in
  one namespace, with ``localhost:8000`` pointing at the session's server. A block whose
  first line is ``# needs: <what>`` (e.g. a remote scheduler) is shown but not run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from dvid_store import DvidClient
from dvid_store.testing import DvidServer

#: The notebooks and documentation examples prove the docs run: once, with the newest versions.
pytestmark = pytest.mark.one_environment

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
DOC_PAGES = sorted((ROOT / "docs" / "pages").glob("*.md"))
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "dvid-store-tests"

#: Per notebook: the repo alias it creates, texts its outputs must contain, and whether the
#: test gives it $DVID_RPC (then its last cell deletes the repo; else it says how to).
EXPECTED: dict[str, dict[str, Any]] = {
    "01-quickstart.ipynb": {"alias": "quickstart", "texts": ["body at (z, y, x)", "bodies in it:"], "rpc": False},
    "02-xarray.ipynb": {
        "alias": "xarray",
        "texts": ["z runs from -2560.0 to -40.0 nanometer", "nearest plane: z = -1000.0 nm"],
        "rpc": True,
    },
    "03-distributed.ipynb": {"alias": "distributed", "texts": ["100% Completed", "LocalCluster"], "rpc": False},
    "04-versions.ipynb": {"alias": "versions", "texts": ["refused:", "merged body", ":proofreading~1"], "rpc": True},
}


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    """A kernelspec that runs this very interpreter (``python3`` may name another one)."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "dvid_store tests", "language": "python"})
    )
    return KernelSpecManager(kernel_dirs=[str(root)])


def _outputs(nb: nbformat.NotebookNode) -> Iterator[dict[str, Any]]:
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for output in _outputs(nb):
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        for mime in ("text/plain", "text/html"):
            data = output.get("data", {}).get(mime)
            if data:
                parts.append(data if isinstance(data, str) else "".join(data))
    return "\n".join(parts)


def _run(path: Path, specs: KernelSpecManager, env: dict[str, str]) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    manager = KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)
    client = NotebookClient(
        nb, km=manager, timeout=120, resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    # cleanup_kc: shut the kernel down and close its sockets although we made its manager.
    # A failing cell raises CellExecutionError with the cell's source and traceback.
    client.execute(env=env, cleanup_kc=True)
    return nb


def _env(**extra: str) -> dict[str, str]:
    # No MPLBACKEND: the kernel's own inline backend draws with Agg (headless) and turns
    # figures into image/png outputs; MPLBACKEND=Agg would draw them nowhere.
    env = {k: v for k, v in os.environ.items() if k not in ("DVID_URL", "MPLBACKEND")}
    env.update(extra)
    return env


@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_against_the_test_server(
    path: Path, dvid_server: DvidServer, dvid_client: DvidClient, kernel_specs: KernelSpecManager
) -> None:
    expected = EXPECTED[path.name]
    before = set(dvid_client.repos())
    env = _env(DVID_URL=dvid_server.url, DVID_ADMIN_TOKEN=dvid_server.admin_token)
    if expected["rpc"]:
        env["DVID_RPC"] = dvid_server.rpc_address
    nb = _run(path, kernel_specs, env)
    outputs = list(_outputs(nb))
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert figures, "the notebook drew no figure"
    text = _text(nb)
    for snippet in expected["texts"]:
        assert snippet in text, f"{snippet!r} is missing from the outputs"
    # it used the server it was given, and deleted its demo repo or said how to
    new = {root: repo for root, repo in dvid_client.repos().items() if root not in before}
    if expected["rpc"]:
        assert not new, f"the notebook left {[repo.alias for repo in new.values()]} on the server"
        assert "Started deletion of repo" in text
    else:
        assert [repo.alias for repo in new.values()] == [expected["alias"]]
        (root,) = new
        assert f"-rpc=localhost:8001 repos delete {root}" in text
    assert dvid_server.running


@pytest.mark.timeout(240)
def test_jupyter_nbconvert_runs_a_notebook_standalone(tmp_path: Path) -> None:
    """What users type, without $DVID_URL: the notebook starts (and stops) a throwaway server."""
    jupyter = Path(sys.executable).with_name("jupyter")
    assert jupyter.exists(), f"no jupyter next to {sys.executable}: install dvid_store[test]"
    (tmp_path / "notebooks").mkdir()
    shutil.copy(NOTEBOOK_DIR / "01-quickstart.ipynb", tmp_path / "notebooks")
    command = [str(jupyter), "nbconvert", "--to", "notebook", "--execute", "notebooks/01-quickstart.ipynb"]
    done = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=220)
    assert done.returncode == 0, done.stderr[-3000:]
    nb = nbformat.read(tmp_path / "notebooks" / "01-quickstart.nbconvert.ipynb", as_version=4)
    outputs = list(_outputs(nb))
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert "http://127.0.0.1:" in _text(nb)
    assert "stays on" not in _text(nb)  # a throwaway server: nothing to clean up
    if shutil.which("git") and (ROOT / ".git").exists():  # the executed copy never dirties a checkout
        ignored = subprocess.run(
            ["git", "-C", str(ROOT), "check-ignore", "-q", "notebooks/01-quickstart.nbconvert.ipynb"], check=False
        )
        assert ignored.returncode == 0, "git does not ignore notebooks/*.nbconvert.ipynb"


def test_the_four_notebooks_exist() -> None:
    assert [p.name for p in NOTEBOOKS] == sorted(EXPECTED)


def strip(path: Path) -> None:
    """Remove outputs, execution counts and editor metadata from a notebook, in place."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata = {}
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in ("kernelspec", "language_info")}
    nb.metadata.get("language_info", {}).pop("version", None)
    nbformat.write(nb, path)


_HOW_TO_STRIP = "strip the notebooks with: python tests/test_notebooks.py strip"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebooks_are_stripped(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    for cell in nb.cells:
        where = f"cell {cell.get('id')}"
        assert not cell.get("metadata"), f"{where} has editor metadata; {_HOW_TO_STRIP}"
        if cell.cell_type == "code":
            assert cell.get("outputs") == [], f"{where} has outputs; {_HOW_TO_STRIP}"
            assert cell.get("execution_count") is None, f"{where} has an execution count; {_HOW_TO_STRIP}"
    extra = set(nb.metadata) - {"kernelspec", "language_info"}
    assert not extra, f"notebook metadata {sorted(extra)} beyond the kernel; {_HOW_TO_STRIP}"


# --------------------------------------------------------------- docs examples
_FENCE = re.compile(r"^```python\b[^\n]*\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)
_SKIP = "# needs:"


def _examples(page: Path) -> list[tuple[int, str]]:
    """(first line number, code) of each runnable python block of a page."""
    text = page.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        code = match.group(1)
        if not code.lstrip().startswith(_SKIP):
            blocks.append((text.count("\n", 0, match.start(1)) + 1, code))
    return blocks


def run_markdown_examples(
    page: Path, dvid_server: DvidServer, monkeypatch: pytest.MonkeyPatch, namespace: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run the runnable python blocks of a markdown page, in order, in one namespace.

    ``localhost:8000`` in the code becomes the test server's address, ``$DVID_ADMIN_TOKEN``
    its admin token; figures draw with Agg. Call it from a test that ``chdir``-ed to a
    temporary directory. Environment variables the examples set are removed afterwards.

    Parameters
    ----------
    namespace : dict, optional
        Where the blocks run (the caller can look into it after a failure); a new one by default.

    Returns
    -------
    dict
        The namespace the blocks ran in.
    """
    host = dvid_server.url.split("://", 1)[1]
    monkeypatch.setenv("DVID_ADMIN_TOKEN", dvid_server.admin_token)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if namespace is None:
        namespace = {}
    namespace.setdefault("__name__", f"docs.{page.stem}")
    environment = dict(os.environ)
    try:
        for line, code in _examples(page):
            # leading newlines: tracebacks then name the line of the markdown page
            source = "\n" * (line - 1) + code.replace("localhost:8000", host)
            exec(compile(source, str(page), "exec"), namespace)
    finally:  # examples may set variables such as DVID_TOKEN; they must not reach other tests
        for key in set(os.environ) - set(environment):
            del os.environ[key]
        os.environ.update(environment)
    return namespace


RUNNABLE_PAGES = [page for page in DOC_PAGES if _examples(page)]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=[p.name for p in RUNNABLE_PAGES])
def test_documentation_examples_run(
    page: Path, dvid_server: DvidServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    run_markdown_examples(page, dvid_server, monkeypatch)


def test_docs_have_runnable_examples() -> None:
    names = {page.name for page in RUNNABLE_PAGES}
    assert {"quickstart.md", "howto-distributed.md", "howto-xarray.md"} <= names


if __name__ == "__main__":
    if sys.argv[1:] != ["strip"]:
        raise SystemExit("usage: python tests/test_notebooks.py strip   (strips notebooks/*.ipynb in place)")
    for notebook in NOTEBOOKS:
        strip(notebook)
        print("stripped", notebook.relative_to(ROOT))
