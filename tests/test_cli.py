"""The dvid-store command-line tool, run as subprocesses against the session's DVID server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zarr

from dvid_store import DvidClient, Node, open_dask
from dvid_store.blocks import BlockIO
from dvid_store.cli import main
from dvid_store.cli_commands.common import parse_box, parse_target
from dvid_store.codecs.png import decode_png
from dvid_store.create import create_array
from dvid_store.errors import DvidInputError
from dvid_store.testing import FaultProxy


def _command() -> list[str]:
    """The installed ``dvid-store`` script next to this interpreter, else ``python -m dvid_store.cli``."""
    script = Path(sys.executable).with_name("dvid-store")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dvid_store.cli"]


CLI = _command()


@dataclass
class Source:
    """A repo with a grayscale instance at negative coordinates, a labelmap and a keyvalue."""

    host: str
    node: Node
    gray: np.ndarray
    gray_start: tuple[int, int, int]
    seg: np.ndarray

    def url(self, instance: str = "", ref: str | None = None) -> str:
        base = f"dvid://{self.host}/{ref or self.node.uuid}"
        return f"{base}/{instance}" if instance else base


@pytest.fixture(scope="module")
def source(dvid_server) -> Source:
    client = dvid_server.client(app="pytest-cli")
    node = client.create_repo("cli-source", "dvid-store command-line tests")
    rng = np.random.default_rng(5)
    start = (-32, 0, 32)
    gray = rng.integers(0, 256, (96, 128, 128), dtype=np.uint8)
    create_array(node, "gray", (start, tuple(a + n for a, n in zip(start, gray.shape))), "uint8", voxel_size=(40, 8, 4))
    BlockIO.open(node, "gray").write_box(gray, start)
    seg = (np.arange(128**3, dtype=np.uint64).reshape(128, 128, 128) // 7000) * np.uint64(2**33 + 1)
    create_array(node, "seg", (128, 128, 128), "uint64")
    BlockIO.open(node, "seg").write_box(seg, (0, 0, 0))
    node.create_instance("keyvalue", "notes")
    node.keyvalue("notes").put("alpha", b"1")
    node.keyvalue("notes").put("beta", b"2")
    return Source(dvid_server.url.split("://", 1)[1], node, gray, start, seg)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The subprocess environment: journals go to this test's own cache directory."""
    environment = {k: v for k, v in os.environ.items() if k != "DVID_STORE_JOURNAL_DIR"}
    environment["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return environment


def run(env: dict[str, str], *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    """Run ``dvid-store args...`` and check its exit code."""
    return run_all(env, [list(args)], code=code)[0]


def run_all(env: dict[str, str], commands: list[list[str]], code: int = 0) -> list[subprocess.CompletedProcess[str]]:
    """Run independent ``dvid-store`` commands at the same time (each start-up costs ~1 s)."""
    processes = [
        subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args in commands
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        assert result.returncode == code, f"{process.args}: exit {result.returncode}\nstdout:\n{out}\nstderr:\n{err}"
        results.append(result)
    return results


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a failed run (and nothing else on stderr)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dvid-store: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def _journal_entries(path: Path) -> int:
    if not path.exists():
        return 0
    return max(0, len(path.read_text().splitlines()) - 1)


def _far(source: Source, proxy: FaultProxy) -> Callable[[str], str]:
    """URLs of ``source``'s server through ``proxy`` (whose latency makes a transfer take seconds)."""
    return lambda url: url.replace(source.host, proxy.address)


def _default_sigint() -> None:
    """In the child, before exec: SIGINT as a terminal sends it (Python then raises KeyboardInterrupt).

    A suite started as a background job of a non-interactive shell (as a CI runner may do)
    runs with SIGINT ignored, and children inherit that, so Ctrl-C would never reach them.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_when(
    args: list[str], env: dict[str, str], ready: Callable[[], bool], sig: int
) -> subprocess.CompletedProcess[str]:
    """Start a transfer, send ``sig`` as soon as ``ready()`` (a chunk is journalled), and wait for it."""
    process = subprocess.Popen(
        [*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 60
    try:
        while not ready():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no chunk was journalled within 60 s"
            time.sleep(0.002)  # between two looks at the journal, the condition itself
        process.send_signal(sig)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


# ------------------------------------------------------------------ parsing (in process)
def test_urls_and_boxes_parse_in_every_accepted_form() -> None:
    assert parse_target("localhost:8000").kind == "server"
    assert parse_target("http://localhost:8000/").server == "http://localhost:8000"
    node = parse_target("dvid://h:1/ab12:master")
    assert (node.kind, node.ref) == ("node", "ab12:master")
    inst = parse_target("dvid://h:1/ab12/seg/2")
    assert (inst.kind, inst.ref, inst.instance, inst.level) == ("instance", "ab12", "seg", 2)
    api = parse_target("https://h:1/api/node/ab12/gray")
    assert (api.server, api.ref, api.instance) == ("https://h:1", "ab12", "gray")
    for bad in ("", "dvid://", "ftp://h/x", "dvid://h:1/ab12/seg/zarr.json", "dvid://h:1//seg"):
        with pytest.raises(DvidInputError):
            parse_target(bad)
    assert parse_box("-64,0,0:0,64,128") == ((-64, 0, 0), (0, 64, 128))
    assert parse_box("0:8, -4:4, 1:2") == ((0, -4, 1), (8, 4, 2))
    for bad in ("1,2", "0,0,0:0,1,1", "a:b,c:d,e:f"):
        with pytest.raises(DvidInputError):
            parse_box(bad)


# ------------------------------------------------------------------ help
def test_help_for_the_tool_and_every_command(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    top, version = run_all(env, [["--help"], ["--version"]])
    assert "dvid-store" in version.stdout
    usage = run(env, code=2)
    assert "required: COMMAND" in usage.stderr
    for command in ("info", "ls", "export", "import", "copy", "demo"):
        assert command in top.stdout
        with pytest.raises(SystemExit) as stop:  # each command's help, in process (same parser)
            main([command, "--help"])
        assert stop.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: dvid-store {command}") and "--quiet" in text and "--debug" in text


# ------------------------------------------------------------------ info / ls
def test_info_describes_server_node_and_instance(source: Source, env: dict[str, str]) -> None:
    server, node, gray, raw = (
        r.stdout for r in run_all(env, [
            ["info", source.host],
            ["info", source.url(ref=source.node.uuid[:10] + ":master")],
            ["info", source.url("gray")],
            ["info", source.url("seg"), "--json"],
        ])
    )
    assert "DVID v1.0.0" in server and source.node.uuid in server and "'cli-source'" in server
    assert f"node {source.node.uuid} [master] open" in node
    assert all(name in node for name in ("gray", "uint8blk", "seg", "labelmap", "notes", "keyvalue"))
    stop = tuple(a + n for a, n in zip(source.gray_start, source.gray.shape))
    assert f"extents: box {','.join(map(str, source.gray_start))}:{','.join(map(str, stop))}" in gray
    assert "voxel size: 40×8×4 nanometers" in gray and "blocks 32×32×32" in gray
    raw = json.loads(raw)
    assert raw["Base"]["TypeName"] == "labelmap" and raw["Extended"]["MaxPoint"] == [127, 127, 127]


def test_ls_lists_repos_instances_levels_and_keys(source: Source, env: dict[str, str]) -> None:
    repos, instances, levels, keys = (
        r.stdout for r in run_all(env, [
            ["ls", f"http://{source.host}"], ["ls", source.url()],
            ["ls", source.url("seg")], ["ls", source.url("notes")],
        ])
    )
    assert source.url() in repos
    assert [line.split()[0] for line in instances.splitlines()] == [source.url(n) for n in ("gray", "notes", "seg")]
    assert levels.split()[:2] == [source.url("seg") + "/0", "128×128×128"]
    assert keys.split() == ["alpha", "beta"]


# ------------------------------------------------------------------ export / import
def test_export_writes_an_ome_zarr_group_of_the_box(source: Source, env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "gray.zarr"
    box = ((-20, 8, 40), (50, 100, 150))
    result = run(env, "export", source.url("gray"), "--box=-20,8,40:50,100,150", str(out), "-j", "2")
    assert "exported" in result.stdout and "MB/s" in result.stdout
    group = zarr.open_group(str(out), mode="r")
    array = group["0"]
    local = tuple(slice(a - s, b - s) for a, b, s in zip(*box, source.gray_start))
    np.testing.assert_array_equal(array[:], source.gray[local])
    assert array.metadata.dimension_names == ("z", "y", "x")
    assert array.attrs["dvid"]["offset"] == list(box[0]) and array.attrs["dvid"]["uuid"] == source.node.uuid
    dataset = group.attrs["ome"]["multiscales"][0]["datasets"][0]
    assert dataset["path"] == "0"
    transforms = {t["type"]: t[t["type"]] for t in dataset["coordinateTransformations"]}
    assert transforms["scale"] == [40.0, 8.0, 4.0]
    assert transforms["translation"] == [a * v for a, v in zip(box[0], (40.0, 8.0, 4.0))]
    again = run(env, "export", source.url("gray"), str(out), code=1)
    assert "already exists" in error_line(again) and "--overwrite" in again.stderr

    # the export goes back to where it came from (its dvid offset), here into a new instance
    run(env, "import", str(out), source.url("gray-back"), "--create", "-q")
    back = BlockIO.open(source.node, "gray-back").read_box(box)
    np.testing.assert_array_equal(back, source.gray[local])
    assert source.node.typeinfo("gray-back")["Extended"]["VoxelSize"] == [4, 8, 40]


def test_import_npy_and_tiff_with_create(source: Source, env: dict[str, str], tmp_path: Path) -> None:
    import tifffile

    ids = np.array([0, 7, 2**40 + 3, 2**63 + 5], dtype=np.uint64)
    labels = np.random.default_rng(8).choice(ids, (40, 70, 90))
    np.save(tmp_path / "labels.npy", labels)
    image = np.random.default_rng(9).integers(0, 2**16, (64, 80), dtype=np.uint16)  # one 2-d slice
    tifffile.imwrite(tmp_path / "slice.tif", image)
    np.save(tmp_path / "floats.npy", np.ones((4, 4, 4), np.float32))
    np.save(tmp_path / "negative.npy", np.array([[[-1, 5]]], np.int64))
    npy, tif = run_all(env, [
        ["import", str(tmp_path / "labels.npy"), source.url("npy-labels"), "--create", "--offset=-5,3,70"],
        ["import", str(tmp_path / "slice.tif"), source.url("tif16"), "--create", "--offset", "7,0,0", "-q"],
    ])
    assert "imported" in npy.stdout and "created 'npy-labels'" in npy.stderr
    assert not tif.stdout and not tif.stderr  # --quiet: no summary, no progress bar
    back = BlockIO.open(source.node, "npy-labels").read_box(((-5, 3, 70), (35, 73, 160)))
    np.testing.assert_array_equal(back, labels)
    assert source.node.typeinfo("npy-labels")["Base"]["TypeName"] == "labelmap"
    np.testing.assert_array_equal(BlockIO.open(source.node, "tif16").read_box(((7, 0, 0), (8, 64, 80)))[0], image)

    exists, missing, lossy, floats, negative = run_all(env, [
        ["import", str(tmp_path / "slice.tif"), source.url("tif16"), "--create"],
        ["import", str(tmp_path / "slice.tif"), source.url("absent")],
        ["import", str(tmp_path / "labels.npy"), source.url("gray"), "--offset=-32,0,32"],
        ["import", str(tmp_path / "floats.npy"), source.url("tif16")],
        ["import", str(tmp_path / "negative.npy"), source.url("negative"), "--create", "--labels"],
    ], code=1)
    assert "already exists" in error_line(exists)
    assert "--create" in error_line(missing)
    assert "uint8" in error_line(lossy) and "cannot store" in lossy.stderr
    assert "without losing values" in error_line(floats)
    assert "-1..5" in error_line(negative) and "negative" not in source.node.instances()  # nothing created
    stop = tuple(a + n for a, n in zip(source.gray_start, source.gray.shape))
    np.testing.assert_array_equal(BlockIO.open(source.node, "gray").read_box((source.gray_start, stop)), source.gray)


# ------------------------------------------------------------------ copy
def test_copy_a_box_of_labels_to_another_repo(source: Source, env: dict[str, str], dvid_client: DvidClient) -> None:
    target = dvid_client.create_repo("cli-copy-target")
    result = run(
        env, "copy", source.url("seg"), f"dvid://{source.host}/{target.uuid}", "--create",
        "--box", "0,64,0:128,128,64", "--offset", "64,0,64",
    )
    assert "copied" in result.stdout
    assert target.typeinfo("seg")["Base"]["TypeName"] == "labelmap"
    copied = BlockIO.open(target, "seg").read_box(((64, 0, 64), (192, 64, 128)))
    np.testing.assert_array_equal(copied, source.seg[0:128, 64:128, 0:64])
    assert open_dask(target, "seg").shape == (128, 64, 64)


def test_interrupted_copy_resumes_without_sending_chunks_again(
    source: Source, env: dict[str, str], tmp_path: Path, dvid_fault_proxy: FaultProxy
) -> None:
    journal = tmp_path / "copy.jsonl"
    far = _far(source, dvid_fault_proxy)
    args = [
        "copy", far(source.url("gray")), far(source.url("gray-copy")), "--create", "--chunks", "32", "-j", "1",
        "--journal", str(journal),
    ]
    dvid_fault_proxy.latency = 0.1  # a far server: the copy lasts seconds, the signal lands mid-way
    first = _interrupt_when(args, env, lambda: _journal_entries(journal) > 0, signal.SIGINT)
    dvid_fault_proxy.latency = 0
    assert first.returncode == 130, first.stderr
    assert "run the same command again to resume" in first.stderr and str(journal) in first.stderr
    done = _journal_entries(journal)
    total = int(np.prod([n // 32 for n in source.gray.shape]))
    assert 1 <= done < total

    second = run(env, *args)
    assert f"skipped {done} chunks already copied" in second.stdout
    assert f"copied {total - done} chunks" in second.stdout
    assert not journal.exists()
    stop = tuple(a + n for a, n in zip(source.gray_start, source.gray.shape))
    np.testing.assert_array_equal(
        BlockIO.open(source.node, "gray-copy").read_box((source.gray_start, stop)), source.gray
    )


def test_export_stopped_by_sigterm_resumes_from_the_default_journal(
    source: Source, env: dict[str, str], tmp_path: Path, dvid_fault_proxy: FaultProxy
) -> None:
    out = tmp_path / "seg.zarr"
    far = _far(source, dvid_fault_proxy)
    args = ["export", far(source.url("seg")), str(out), "--chunks", "32", "--zarr-chunks", "32", "-j", "1"]
    journals = Path(env["XDG_CACHE_HOME"]) / "dvid_store" / "journals"

    def journalled() -> bool:
        return journals.exists() and any(_journal_entries(p) for p in journals.iterdir())

    dvid_fault_proxy.latency = 0.1  # a far server: the export lasts seconds, the signal lands mid-way
    first = _interrupt_when(args, env, journalled, signal.SIGTERM)
    dvid_fault_proxy.latency = 0
    assert first.returncode == 143 and "run the same command again to resume" in first.stderr
    (journal,) = journals.iterdir()
    done = _journal_entries(journal)
    second = run(env, *args)
    assert f"skipped {done} chunks already exported" in second.stdout
    assert not journal.exists()
    np.testing.assert_array_equal(zarr.open_array(str(out / "0"), mode="r")[:], source.seg)


# ------------------------------------------------------------------ errors
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_errors_are_one_line_with_exit_code_1(source: Source, env: dict[str, str], dvid_client: DvidClient) -> None:
    locked = dvid_client.create_repo("cli-locked")
    create_array(locked, "gray", (32, 32, 32), "uint8")
    locked.commit("read-only now")
    Path(env["XDG_CACHE_HOME"]).mkdir(parents=True, exist_ok=True)
    npy = Path(env["XDG_CACHE_HOME"]) / "block.npy"
    np.save(npy, np.ones((32, 32, 32), np.uint8))
    scheme, kind, node, instance, down, refused, debug = run_all(env, [
        ["info", "ftp://example.org/x"],
        ["export", source.url(), "out.zarr"],
        ["ls", source.url(ref="ffffffff0000")],
        ["info", source.url("no-such-instance")],
        ["info", f"127.0.0.1:{_free_port()}", "--retries", "1"],
        ["import", str(npy), f"dvid://{source.host}/{locked.uuid}/gray"],
        ["--debug", "info", source.url("no-such-instance")],
    ], code=1)
    assert "unknown scheme" in error_line(scheme)
    assert "needs an instance" in error_line(kind)
    assert "no node matches" in error_line(node)
    unknown = error_line(instance)
    assert "no-such-instance" in unknown and "has instances" in unknown
    assert "cannot reach DVID" in error_line(down)
    assert "committed (locked)" in error_line(refused)
    assert not BlockIO.open(locked, "gray").read_box(((0, 0, 0), (32, 32, 32))).any()
    assert "Traceback" in debug.stderr and debug.stderr.strip().splitlines()[-1].startswith("dvid-store: error:")
    usage = run(env, "export", source.url("gray"), "--box", "1,2", "x.zarr", code=2)
    assert "argument --box" in usage.stderr


# ------------------------------------------------------------------ demo
def test_demo_writes_reads_and_saves_a_png(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    result = run(env, "demo", "--out", str(out))
    text = result.stdout
    assert text.count("identical to what was written") == 2 and "MB/s" in text
    assert "writing to it is refused" in text and "branch 'proofreading'" in text
    image = decode_png(out.read_bytes())
    assert image.ndim == 3 and image.shape[2] == 3 and image.shape[0] == 256
    left, right = image[:, :256], image[:, 260:]
    assert np.array_equal(left[..., 0], left[..., 1])  # the grayscale half is grey
    assert not np.array_equal(right[..., 0], right[..., 1])  # the overlay half is coloured
    assert left.std() > 10
