"""The README's python examples run as written, like the docs' examples (tests/test_notebooks.py).

Its blocks run in order in one namespace, with ``localhost:8000`` pointing at the session's
DVID server. "A first look" starts (and stops) a throwaway server of its own, exactly as a
newcomer runs it; the pytest examples define test functions, which then run with the
fixtures they name.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from test_notebooks import _examples, run_markdown_examples

from dvid_store import Node
from dvid_store.testing import DvidServer, FaultProxy

README = Path(__file__).resolve().parents[1] / "README.md"

#: What "A first look" shows; the test fails if an edit drops one.
FIRST_LOOK_SHOWS = {
    "a throwaway server": "DvidServer().start()",
    "a repo and instances": "client.create_repo(",
    "lazy dask arrays from a node": "dvid_store.open_dask(node,",
    "the URL form, with a branch reference and a scale": ':master/segmentation", scale=1)',
    "xarray through the dvid engine": 'engine="dvid"',
    "node API slicing with signed coordinates": "vol[-64:0,",
    "a labelmap merge": ".merge(",
    "keyvalue": 'node.keyvalue("notes")[',
    "a new version": "node.new_version(",
    "create_array on it": "dvid_store.create_array(child,",
    "to_dvid": "dvid_store.to_dvid(",
    "stopping the server": "server.stop()",
}


def _first_look() -> str:
    text = README.read_text()
    section = re.search(r"^## A first look\n(.*?)^## ", text, re.DOTALL | re.MULTILINE)
    assert section, "README.md has no '## A first look' section"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.DOTALL | re.MULTILINE)
    assert len(blocks) == 1, "'A first look' should be one python block"
    return blocks[0]


def test_the_first_look_shows_what_it_promises() -> None:
    code = _first_look()
    missing = [what for what, snippet in FIRST_LOOK_SHOWS.items() if snippet not in code]
    assert not missing, f"'A first look' no longer shows: {', '.join(missing)}"
    assert "a3f9" not in code and "localhost:8000" not in code  # nothing that needs an existing server


@pytest.mark.timeout(240)
def test_readme_examples_run(
    dvid_server: DvidServer,
    dvid_node: Node,
    dvid_fault_proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert len(_examples(README)) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    try:
        run_markdown_examples(README, dvid_server, monkeypatch, namespace)
    finally:  # a failing first look must not leave its server running
        server = namespace.get("server")
        if isinstance(server, DvidServer) and server.running:
            server.stop()
    printed = capsys.readouterr().out.splitlines()
    # what the first look prints is what its comments say
    assert printed[:3] == ["(128, 128, 128) (64, 64, 64) -96.0 True", "1 1 3", "True"], printed
    assert isinstance(namespace["server"], DvidServer) and not namespace["server"].running

    # the pytest examples: run each test function with the fixtures it names
    fixtures = {"dvid_server": dvid_server, "dvid_node": dvid_node, "dvid_fault_proxy": dvid_fault_proxy}
    tests = {name: f for name, f in namespace.items() if name.startswith("test_") and inspect.isfunction(f)}
    assert len(tests) >= 2, sorted(namespace)
    for function in tests.values():
        function(**{name: fixtures[name] for name in inspect.signature(function).parameters})
    assert "grayscale" in dvid_node.instances()  # test_my_pipeline made it
