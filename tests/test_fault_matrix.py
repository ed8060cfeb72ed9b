"""The fault matrix, part one: the array paths (dask, xarray, CLI, zarr, to_dvid), keyvalue,
the node API and exceptions from dask.distributed workers.

The machinery (fault kinds, invariants, the runner) and what each trial checks are
described in ``fault_matrix.py``; the table of every trial is printed at the end of
the session.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import io
import pickle
import re
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import pytest
import zarr
from fault_matrix import (
    ADMIN,
    BOUND,
    CORRECT,
    DEADLINE,
    FAULT,
    GATE,
    GRAY_ALIGNED,
    GRAY_BOX,
    GRAY_UNALIGNED,
    LABEL_ALIGNED,
    LABEL_BOX,
    LABEL_IDS,
    LABEL_UNALIGNED,
    LOST,
    PLAIN_POST_RIDES,
    READ_KINDS,
    RETRY_SECONDS,
    SOME_PERSISTENT,
    SOME_PERSISTENT_WRITES,
    TIMEOUT,
    TOKEN,
    TYPED,
    UNSAFE_WRITE_RIDES,
    UNTYPED,
    WRITE_RIDES,
    WRONG,
    Change,
    CliRun,
    Env,
    Judge,
    Op,
    WriteState,
    create,
    gray_setup,
    inside,
    kv_put_setup,
    kv_setup,
    kv_value,
    kv_write_judge,
    label_setup,
    make_labels,
    message_problems,
    read_judge,
    run_matrix,
    secret_problems,
    shape_of,
    short_client,
    short_defaults,
    summarise,
    truth,
    write_judge,
    write_outcome,
    write_setup,
)

from dvid_store import Node
from dvid_store.blocks import BlockIO
from dvid_store.dask import open_dask, to_dvid
from dvid_store.errors import DvidError, UnsupportedError
from dvid_store.zarr import DvidStore


# ================================================================ the paths
# ---- block-stream reads: open_dask -------------------------------------------------------------
def _dask(env: Env, name: str, state: Any) -> np.ndarray:
    return open_dask(env.pnode, name, chunks=(64, 64, 64)).compute()


DASK_OPS = [
    Op("open_dask(uint8blk).compute [specificblocks]", "dg", gray_setup, _dask, read_judge(truth),
       "specificblocks", faults=READ_KINDS, shared=True),
    Op("open_dask(uint8blk).compute [absent-block GET /raw]", "dgc", gray_setup, _dask, read_judge(truth),
       "raw", frozenset({"GET"}), faults=READ_KINDS, persistent=SOME_PERSISTENT, shared=True),
    Op("open_dask(labelmap).compute [specificblocks]", "dl", label_setup, _dask, read_judge(truth),
       "specificblocks", faults=READ_KINDS, shared=True),
    Op("open_dask(labelmap).compute [absent-block GET /raw]", "dlc", label_setup, _dask, read_judge(truth),
       "raw", frozenset({"GET"}), faults=READ_KINDS, persistent=SOME_PERSISTENT, shared=True),
]


def test_block_stream_reads(env: Env) -> None:
    run_matrix(env, DASK_OPS)


# ---- xarray --------------------------------------------------------------------------------------
def _xarray_read(env: Env, name: str, state: Any) -> np.ndarray:
    import xarray as xr

    return xr.open_dataset(env.url(name), engine="dvid", token=TOKEN, app=env.app)[name].values


def test_xarray(env: Env) -> None:
    pytest.importorskip("xarray")
    with short_defaults():
        run_matrix(env, [
            Op('xr.open_dataset("dvid://…", engine="dvid")', "xr", gray_setup, _xarray_read, read_judge(truth),
               "specificblocks", faults=READ_KINDS, persistent=SOME_PERSISTENT, shared=True),
        ])


# ---- the command line: dvid-store export / import (in-process, side by side) -------------------
class _ThreadStreams(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` that each thread can redirect for itself."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback
        self.local = threading.local()

    @contextlib.contextmanager
    def capture(self) -> Iterator[io.StringIO]:
        self.local.buffer = io.StringIO()
        try:
            yield self.local.buffer
        finally:
            self.local.buffer = None

    def _target(self) -> Any:
        buffer = getattr(self.local, "buffer", None)
        return self.fallback if buffer is None else buffer

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        target = self._target()
        if not target.closed:  # finalised at exit, after pytest has closed the stream it stood in for
            target.flush()

    def isatty(self) -> bool:
        return False


class _Leaks:
    """ResourceWarnings about files under ``prefix`` (raised in ``__del__``: unraisable under ``-W error``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.found: list[str] = []
        self.hook = sys.unraisablehook
        self.show = warnings.showwarning

    def _note(self, text: str) -> None:
        if self.prefix in text and ("ResourceWarning" in text or "unclosed" in text):
            self.found.append(" ".join(text.split())[:300])

    def unraisablehook(self, unraisable: Any) -> None:
        self._note(f"{unraisable.exc_value!r}")
        self.hook(unraisable)

    def showwarning(self, message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        self._note(f"{category.__name__}: {message}")
        self.show(message, category, *args, **kwargs)


CLI_LIMITS = ["--timeout", str(TIMEOUT[1]), "--retry-seconds", str(RETRY_SECONDS), "--deadline", str(DEADLINE)]
EXPORT_BOX = ((-30, 3, 33), (31, 60, 127))
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*): ", re.MULTILINE)


def _cli(env: Env, *args: str) -> CliRun:
    """``dvid-store args...`` in this process, in this thread, with the trial's app and the short limits."""
    from dvid_store.cli import main

    out, err = sys.stdout, sys.stderr
    assert isinstance(out, _ThreadStreams) and isinstance(err, _ThreadStreams)
    journal = env.tmp / f"{env.app}.journal"
    with out.capture() as captured_out, err.capture() as captured_err:
        code = main([*args, "--journal", str(journal), "-q", "--debug", "--app", env.app, *CLI_LIMITS])
    return CliRun(code, captured_out.getvalue(), captured_err.getvalue())


def _export(env: Env, name: str, state: Any) -> CliRun:
    box = "--box=" + ",".join(map(str, EXPORT_BOX[0])) + ":" + ",".join(map(str, EXPORT_BOX[1]))
    return _cli(env, "export", env.url(name), str(env.tmp / f"{env.app}.zarr"), box)


def _export_judge(env: Env, name: str, state: np.ndarray, run: Any, error: BaseException | None):
    if error is not None:
        return TYPED, []
    exported = zarr.open_group(str(env.tmp / f"{env.app}.zarr"), mode="r")["0"][...]
    want = state[inside(EXPORT_BOX, GRAY_BOX)]
    if exported.dtype == want.dtype and np.array_equal(exported, want):
        return CORRECT, []
    return WRONG, [f"exported {summarise(exported)} instead of {summarise(want)}"]


def _import_setup(env: Env, name: str) -> WriteState:
    state = write_setup("gray", GRAY_UNALIGNED)(env, name)
    np.save(env.tmp / f"{name}.npy", state.data)
    return state


def _import(env: Env, name: str, state: WriteState) -> CliRun:
    offset = "--offset=" + ",".join(map(str, state.box[0]))
    return _cli(env, "import", str(env.tmp / f"{name}.npy"), env.url(name), offset)


def _raised_class(err: str) -> type[BaseException] | None:
    """The exception class that ended the command, from its ``--debug`` traceback (the last one shown)."""
    found = None
    for name in _EXCEPTION_LINE.findall(err.split("dvid-store: error:")[0]):
        module, _, attr = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module or "builtins"), attr, None)
        except ImportError:
            continue
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found = cls
    return found


def cli_judge(judge_effect: Judge) -> Judge:
    """(b)-(e) for a command: exit code 0 and the effect judged, or 1, a DvidError, and no secret."""

    def judge(env: Env, name: str, state: Any, run: CliRun | None, error: BaseException | None):
        if run is None:
            return UNTYPED, [f"the command raised instead of exiting: {error!r}"]
        problems = [f"a secret ({s[:3]}…) shows in the command's output"
                    for s in (TOKEN, ADMIN, env.server.admin_token) if s in run.out + run.err]
        if run.code == 0:
            outcome, more = judge_effect(env, name, state, run, None)
            return outcome, problems + more
        if run.code != 1 or "dvid-store: error:" not in run.err:
            problems.append(f"exit code {run.code}; stderr ends {run.err[-400:]!r}")
        raised = _raised_class(run.err)
        typed = raised is not None and issubclass(raised, DvidError) and "(unexpected;" not in run.err
        if not typed:
            problems.append(f"the command failed with {raised}, not a DvidError: {run.err[-2500:]}")
        outcome, more = judge_effect(env, name, state, None, DvidError("the command failed"))
        if outcome in (LOST, WRONG):
            return outcome, problems + more
        return (TYPED if typed else UNTYPED), problems + more

    return judge


CLI_OPS = [
    Op("dvid-store export", "ce", gray_setup, _export, cli_judge(_export_judge), "specificblocks",
       faults=READ_KINDS, persistent=SOME_PERSISTENT, shared=True),
    Op("dvid-store import (unaligned .npy) [POST /raw]", "ci", _import_setup, _import, cli_judge(write_judge("gray")),
       "raw", frozenset({"POST"}), WRITE_RIDES, persistent=SOME_PERSISTENT_WRITES),
]


def test_cli(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("dvid_store.cli", "dvid_store.cli_commands.transfer", "dask.diagnostics"):
        importlib.import_module(module)  # the command imports these lazily: not first from many threads at once
    monkeypatch.setenv("DVID_TOKEN", TOKEN)  # the command line takes its tokens from the environment
    monkeypatch.setenv("DVID_ADMIN_TOKEN", ADMIN)
    monkeypatch.setattr(sys, "stdout", _ThreadStreams(sys.stdout))
    monkeypatch.setattr(sys, "stderr", _ThreadStreams(sys.stderr))
    leaks = _Leaks(str(env.tmp))
    monkeypatch.setattr(sys, "unraisablehook", leaks.unraisablehook)
    monkeypatch.setattr(warnings, "showwarning", leaks.showwarning)
    run_matrix(env, CLI_OPS)
    gc.collect()
    if leaks.found:  # a failed command must close what it opened, as a successful one does
        pytest.fail(f"failed commands left {len(leaks.found)} files to the garbage collector:\n"
                    + "\n".join(sorted(leaks.found)), pytrace=False)


# ---- zarr: dvid:// URLs and DvidStore, reads and slice assignment -------------------------------
def _zarr_url_read(env: Env, name: str, state: Any) -> np.ndarray:
    options = {"token": TOKEN, "app": env.app, "skip_instance_cache": True}
    return zarr.open(env.url(name), mode="r", storage_options=options)["0"][...]


def _zarr_store_read(env: Env, name: str, state: Any) -> np.ndarray:
    return zarr.open_array(DvidStore(env.pnode, name, scale=0), mode="r")[...]


def _zarr_write(env: Env, name: str, state: WriteState) -> None:
    array = zarr.open_array(DvidStore(env.pnode, name, scale=0), mode="r+")
    array[inside(state.box, GRAY_BOX)] = state.data  # partial chunks: zarr reads, merges, writes them


ZARR_OPS = [
    # a whole chunk of a uint8blk instance is one GET /raw (DVID assembles it), label chunks are block streams
    Op('zarr.open("dvid://…")["0"][...] (uint8blk)', "zu", gray_setup, _zarr_url_read, read_judge(truth),
       "raw", frozenset({"GET"}), faults=READ_KINDS, shared=True),
    Op("zarr.open_array(DvidStore)[...] (labelmap)", "zs", label_setup, _zarr_store_read, read_judge(truth),
       "specificblocks", faults=READ_KINDS, shared=True),
    Op("zarr slice assignment, unaligned (DvidStore) [partial-chunk reads]", "zwr",
       write_setup("gray", GRAY_UNALIGNED), _zarr_write, write_judge("gray"), "raw", frozenset({"GET"}),
       faults=READ_KINDS),
    Op("zarr slice assignment, unaligned (DvidStore) [POST /raw]", "zww", write_setup("gray", GRAY_UNALIGNED),
       _zarr_write, write_judge("gray"), "raw", frozenset({"POST"}), WRITE_RIDES),
]


def test_zarr(env: Env) -> None:
    with short_defaults():
        run_matrix(env, ZARR_OPS)


# ---- to_dvid -------------------------------------------------------------------------------------
def _to_dvid(env: Env, name: str, state: WriteState) -> Any:
    # dask chunks that split blocks: to_dvid rechunks them to the block grid
    return to_dvid(da.from_array(state.data, chunks=(24, 32, 40)), env.pnode, name, offset=state.box[0])


def _to_dvid_one_chunk(env: Env, name: str, state: WriteState) -> Any:
    # a numpy array is one chunk: edge-block reads, one POST /raw, then the read-back check
    return to_dvid(state.data, env.pnode, name, offset=state.box[0])


TO_DVID_OPS = [
    Op("to_dvid aligned (uint8blk) [POST /raw]", "ta", write_setup("gray", GRAY_ALIGNED), _to_dvid,
       write_judge("gray"), "raw", frozenset({"POST"}), WRITE_RIDES),
    Op("to_dvid unaligned (uint8blk) [edge-block reads]", "tur", write_setup("gray", GRAY_UNALIGNED), _to_dvid,
       write_judge("gray"), "specificblocks", frozenset({"GET"}), faults=READ_KINDS),
    Op("to_dvid unaligned (uint8blk) [POST /raw]", "tuw", write_setup("gray", GRAY_UNALIGNED), _to_dvid,
       write_judge("gray"), "raw", frozenset({"POST"}), WRITE_RIDES),
    Op("to_dvid unaligned (uint8blk) [read-back check after the write]", "tuv", write_setup("gray", GRAY_UNALIGNED),
       _to_dvid_one_chunk, write_judge("gray"), "specificblocks", frozenset({"GET"}), faults=READ_KINDS,
       persistent=SOME_PERSISTENT, first=2),
    Op("to_dvid unaligned (labelmap) [edge-block reads]", "tlr", write_setup("labels", LABEL_UNALIGNED), _to_dvid,
       write_judge("labels"), "specificblocks", frozenset({"GET"}), faults=READ_KINDS),
    Op("to_dvid unaligned (labelmap) [POST /raw]", "tlw", write_setup("labels", LABEL_UNALIGNED), _to_dvid,
       write_judge("labels"), "raw", frozenset({"POST"}), WRITE_RIDES),
]


def test_to_dvid(env: Env) -> None:
    run_matrix(env, TO_DVID_OPS)


# ---- keyvalue ------------------------------------------------------------------------------------
def _kv_delete_setup(env: Env, name: str) -> Change:
    state = kv_setup(env, name)
    del state.new["big"]
    return state


def _range_judge(env: Env, name: str, state: Change, result: Any, error: BaseException | None):
    """DVID v1.0.0 answers a ranged GET with the whole value (200, not 206), so the one
    right outcome is UnsupportedError; a value returned is an answer that only looked ranged."""
    if isinstance(error, UnsupportedError):
        return CORRECT, []
    if error is not None:
        return TYPED, []
    return WRONG, [f"a byte range of a server without ranges returned {summarise(result)}"]


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b and (not isinstance(a, dict) or list(a) == list(b))


def _kv_put_many_setup(env: Env, name: str) -> Change:
    state = kv_put_setup(env, name)
    state.new["small"] = b"t" * 12
    return state


KV_OPS = [
    Op("keyvalue put (100 kB)", "kp", kv_put_setup,
       lambda env, name, state: env.pnode.keyvalue(name).put("big", state.new["big"]),
       kv_write_judge, "key/big", frozenset({"POST"}), WRITE_RIDES),
    Op("keyvalue get (100 kB)", "kg", kv_setup, lambda env, name, state: env.pnode.keyvalue(name).get("big"),
       read_judge(lambda state: state.old["big"], _same), "keyvalues", faults=READ_KINDS, shared=True),
    Op("keyvalue get (a value that is HTML)", "kh", kv_setup,
       lambda env, name, state: env.pnode.keyvalue(name).get("html"),
       read_judge(lambda state: state.old["html"], _same), "keyvalues", persistent=SOME_PERSISTENT, shared=True),
    Op("keyvalue get(key, byte_range) [GET /key; DVID v1.0.0 ignores ranges]", "kr", kv_setup,
       lambda env, name, state: env.pnode.keyvalue(name).get("html", byte_range=(0, 4096)),
       _range_judge, "key/html", frozenset({"GET"}), faults=READ_KINDS, shared=True),
    Op("keyvalue get_many", "km", kv_setup,
       lambda env, name, state: env.pnode.keyvalue(name).get_many(["html", "missing", "big", "small"]),
       read_judge(lambda state: {k: state.old[k] for k in ("html", "big", "small")}, _same),
       "keyvalues", faults=READ_KINDS, shared=True),
    Op("keyvalue put_many (two values) [POST /keyvalues, idempotent]", "kw", _kv_put_many_setup,
       lambda env, name, state: env.pnode.keyvalue(name).put_many({k: state.new[k] for k in ("big", "small")}),
       kv_write_judge, "keyvalues", frozenset({"POST"}), WRITE_RIDES, persistent=SOME_PERSISTENT_WRITES),
    Op("keyvalue delete", "kd", _kv_delete_setup, lambda env, name, state: env.pnode.keyvalue(name).delete("big"),
       kv_write_judge, "key/big", frozenset({"DELETE"}), WRITE_RIDES),
]


def test_keyvalue(env: Env) -> None:
    run_matrix(env, KV_OPS)


# ---- the node API: voxels and labelmap -----------------------------------------------------------
GRAY_READ_BOX = ((-30, 3, 33), (31, 60, 127))
LABEL_READ_BOX = ((0, 5, 0), (32, 64, 90))
LABEL_ONE_BLOCK = ((0, 32, 64), (32, 64, 96))


def _slices(box: Any) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in zip(box[0], box[1]))


def _voxels_write(env: Env, name: str, state: WriteState) -> None:
    env.pnode.voxels(name)[_slices(state.box)] = state.data


def _labels_write(env: Env, name: str, state: WriteState) -> None:
    env.pnode.labelmap(name)[_slices(state.box)] = state.data


def _labels_write_mutate(env: Env, name: str, state: WriteState) -> None:
    env.pnode.labelmap(name).write(state.data, state.box[0], mutate=True)


def _labels_ingest(env: Env, name: str, state: WriteState) -> None:
    env.pnode.labelmap(name).write(state.data, state.box[0], downres=False)


#: One whole scale-1 block: DVID takes lower-scale labels only as ``POST /blocks?scale=1``.
LEVEL1_BOX = ((0, 0, 0), (32, 32, 32))


def _level1_setup(env: Env, name: str) -> WriteState:
    create(env.node, "labelmap", name, LABEL_BOX, block_size=(32, 32, 32), max_downres_level=1)
    rng = np.random.default_rng(len(name))
    old = np.array([5, 2**40 + 1], np.uint64)[rng.integers(0, 2, shape_of(LEVEL1_BOX))]
    with GATE.writing():
        BlockIO.open(env.node, name, scale=1).write_box(old, LEVEL1_BOX[0])
    data = np.array([9, 2**62 + 3, 0], np.uint64)[rng.integers(0, 3, shape_of(LEVEL1_BOX))]
    return WriteState(old=old, new=data.copy(), box=LEVEL1_BOX, data=data)


def _level1_write(env: Env, name: str, state: WriteState) -> None:
    BlockIO.open(env.pnode, name, scale=1).write_box(state.data, state.box[0])


def _level1_judge(env: Env, name: str, state: WriteState, result: Any, error: BaseException | None):
    stored = BlockIO.open(env.node, name, scale=1).read_box(LEVEL1_BOX)
    return write_outcome(stored, state, (32, 32, 32), LEVEL1_BOX[0], error)


# ---- label edits: merge, cleave, renumber (not safe to repeat: resent only after a 503) --------
EDIT_RIDES = frozenset({"latency", "status_503", "html_503"})
SV = [int(v) for v in LABEL_IDS]  # the supervoxels of make_labels, each its own body at first


@dataclass
class EditState:
    before: list[int]  # the body of each of SV before the edit
    done: Callable[[Any], list[int]]  # the bodies after the edit, given the call's result (None after an error)


def _indexed_labels(env: Env, name: str) -> None:
    data = make_labels(env.node, name)
    sizes = {sv: int((data == sv).sum()) for sv in SV}
    env.node.labelmap(name).wait_for_sizes(sizes, timeout=60)  # DVID indexes after answering the write


def _merge_setup(env: Env, name: str) -> EditState:
    _indexed_labels(env, name)
    return EditState(list(SV), lambda result: [SV[0], SV[0], SV[2], SV[3]])


def _cleave_setup(env: Env, name: str) -> EditState:
    _indexed_labels(env, name)
    with GATE.writing():
        env.node.labelmap(name).merge(SV[0], [SV[1]])
    return EditState([SV[0], SV[0], SV[2], SV[3]],
                     lambda result: [SV[0], None if result is None else result.cleaved_label, SV[2], SV[3]])


def _renumber_setup(env: Env, name: str) -> EditState:
    _indexed_labels(env, name)
    return EditState(list(SV), lambda result: [SV[0], SV[1], 2**50 + 5, SV[3]])


def _edit_judge(env: Env, name: str, state: EditState, result: Any, error: BaseException | None):
    """After success the edit's bodies; after a failure the bodies before it, or after it."""
    bodies = [int(b) for b in env.node.labelmap(name).mapping(SV)]
    after = state.done(result)
    if error is None:
        if bodies == after:
            return CORRECT, []
        return LOST, [f"the edit returned, but the supervoxels {SV} map to {bodies}, not {after}"]
    if bodies == state.before or all(a is None or a == b for a, b in zip(after, bodies)):
        return TYPED, []
    return LOST, [f"after the failed edit the supervoxels {SV} map to {bodies}: neither {state.before} nor {after}"]


def _reserve_setup(env: Env, name: str) -> int:
    with GATE.creating():
        env.node.create_instance("labelmap", name)
    with GATE.writing():
        env.node.labelmap(name).set_max_label(1000)
    return env.node.labelmap(name).next_label()


def _reserve_judge(env: Env, name: str, state: int, result: Any, error: BaseException | None):
    """After success the labels from the old next label on, and the next label past them; after a
    failure the next label where it was, or past the labels the lost answer reserved."""
    now = env.node.labelmap(name).next_label()
    if error is None:
        if result == range(state, state + 5) and now == state + 5:
            return CORRECT, []
        return LOST, [f"reserve_labels(5) returned {result} with the next label {state}; the server's is now {now}"]
    if now in (state, state + 5):
        return TYPED, []
    return LOST, [f"after the failed reserve_labels(5) the next label is {now}, not {state} or {state + 5}"]


# ---- versions and instances: a repo of its own per trial -----------------------------------
def _repo_setup(env: Env, name: str) -> str:
    return env.node.client.create_repo(name).uuid


def _committed_repo_setup(env: Env, name: str) -> str:
    uuid = _repo_setup(env, name)
    Node(env.node.client, uuid).commit("the parent")
    return uuid


def _commit_judge(env: Env, name: str, uuid: str, result: Any, error: BaseException | None):
    locked = Node(env.node.client, uuid).locked
    if error is None:
        return (CORRECT, []) if locked else (LOST, ["commit() returned, but the node is not locked"])
    return TYPED, []  # committed or not: a commit is all or nothing


def _children(env: Env, uuid: str) -> list[str]:
    return [v for v, info in env.node.client.repo_info(uuid).versions.items() if uuid in info.parents]


def _branch_judge(env: Env, name: str, uuid: str, result: Any, error: BaseException | None):
    children = _children(env, uuid)
    if error is None:
        if children == [result.uuid]:
            return CORRECT, []
        return LOST, [f"branch() returned {result.uuid}, but the node's children are {children}"]
    if len(children) <= 1:
        return TYPED, []
    return LOST, [f"after the failed branch() the node has {len(children)} children: {children}"]


def _create_judge(env: Env, name: str, uuid: str, result: Any, error: BaseException | None):
    instances = env.node.client.repo_info(uuid).instances
    if error is None:
        if instances.get("kv") == "keyvalue" and result["Base"]["Name"] == "kv":
            return CORRECT, []
        return LOST, [f"create_instance returned, but the repo has instances {instances}"]
    return TYPED, []  # created or not


#: A commit or instance creation whose answer is lost is checked on the server, so it rides
#: through everything that loses or breaks an answer, as well as the 503s.
CHECKED_RIDES = UNSAFE_WRITE_RIDES | {"reset_after", "cut_chunked_broken"}


def _max_label_setup(env: Env, name: str) -> tuple[int, int]:
    with GATE.creating():
        env.node.create_instance("labelmap", name)
    with GATE.writing():
        env.node.labelmap(name).set_max_label(100)
    return 100, 5000  # old, new


def _set_max_label(env: Env, name: str, state: tuple[int, int]) -> None:
    Node(env.admin, env.node.uuid).labelmap(name).set_max_label(state[1])


def _max_label_judge(env: Env, name: str, state: tuple[int, int], result: Any, error: BaseException | None):
    stored = env.node.labelmap(name).max_label()
    if error is None:
        if stored == state[1]:
            return CORRECT, []
        return LOST, [f"set_max_label({state[1]}) returned, but the server's max label is {stored}"]
    if stored in state:
        return TYPED, []
    return LOST, [f"after the failed set_max_label the server's max label is {stored}"]


def _crop(box: Any, region: Any) -> Callable[[np.ndarray], np.ndarray]:
    return lambda data: data[inside(box, region)]


NODE_API_OPS = [
    Op("node.voxels()[box] [GET /raw]", "vr", gray_setup,
       lambda env, name, state: env.pnode.voxels(name)[_slices(GRAY_READ_BOX)],
       read_judge(_crop(GRAY_READ_BOX, GRAY_BOX)), "raw", frozenset({"GET"}), faults=READ_KINDS,
       persistent=SOME_PERSISTENT, shared=True),
    Op("node.voxels().read(box, compress=True) [subvolblocks]", "vc", gray_setup,
       lambda env, name, state: env.pnode.voxels(name).read(GRAY_READ_BOX, compress=True),
       read_judge(_crop(GRAY_READ_BOX, GRAY_BOX)), "subvolblocks", frozenset({"GET"}), faults=READ_KINDS,
       persistent=SOME_PERSISTENT, shared=True),
    Op("node.voxels()[box] = aligned [POST /raw]", "vw", write_setup("gray", GRAY_ALIGNED), _voxels_write,
       write_judge("gray"), "raw", frozenset({"POST"}), WRITE_RIDES, persistent=SOME_PERSISTENT_WRITES),
    Op("node.labelmap()[box] [GET /raw lz4]", "lr", label_setup,
       lambda env, name, state: env.pnode.labelmap(name)[_slices(LABEL_READ_BOX)],
       read_judge(_crop(LABEL_READ_BOX, LABEL_BOX)), "raw", frozenset({"GET"}), faults=READ_KINDS,
       persistent=SOME_PERSISTENT, shared=True),
    Op("node.labelmap()[one aligned block] [specificblocks]", "lb", label_setup,
       lambda env, name, state: env.pnode.labelmap(name)[_slices(LABEL_ONE_BLOCK)],
       read_judge(_crop(LABEL_ONE_BLOCK, LABEL_BOX)), "specificblocks", frozenset({"GET"}), faults=READ_KINDS,
       persistent=(*SOME_PERSISTENT, "garbage@8B"), shared=True),
    Op("node.labelmap(throttle=True)[one aligned block] [GET /blocks]", "lt", label_setup,
       lambda env, name, state: env.pnode.labelmap(name).with_options(throttle=True)[_slices(LABEL_ONE_BLOCK)],
       read_judge(_crop(LABEL_ONE_BLOCK, LABEL_BOX)), "blocks/", frozenset({"GET"}), faults=READ_KINDS,
       persistent=(*SOME_PERSISTENT, "garbage@8B"), shared=True),
    Op("node.labelmap()[box] = aligned [POST /raw, not idempotent]", "lw", write_setup("labels", LABEL_ALIGNED),
       _labels_write, write_judge("labels"), "raw", frozenset({"POST"}), UNSAFE_WRITE_RIDES,
       persistent=SOME_PERSISTENT_WRITES),
    Op("node.labelmap().write(mutate=True) [POST /raw]", "lm", write_setup("labels", LABEL_ALIGNED),
       _labels_write_mutate, write_judge("labels"), "raw", frozenset({"POST"}), WRITE_RIDES,
       persistent=SOME_PERSISTENT_WRITES),
    Op("node.labelmap().write(downres=False) [POST /blocks, not idempotent]", "li",
       write_setup("labels", LABEL_ALIGNED), _labels_ingest, write_judge("labels"), "blocks", frozenset({"POST"}),
       UNSAFE_WRITE_RIDES, persistent=SOME_PERSISTENT_WRITES),
    Op("BlockIO(labelmap, scale=1).write_box [POST /blocks?scale=1]", "l1", _level1_setup, _level1_write,
       _level1_judge, "blocks", frozenset({"POST"}), WRITE_RIDES, persistent=SOME_PERSISTENT_WRITES),
    Op("labelmap.merge [POST /merge, sent once]", "em", _merge_setup,
       lambda env, name, state: env.pnode.labelmap(name).merge(SV[0], [SV[1]]), _edit_judge, "merge",
       frozenset({"POST"}), EDIT_RIDES, persistent=SOME_PERSISTENT_WRITES),
    Op("labelmap.cleave [POST /cleave, sent once]", "ec", _cleave_setup,
       lambda env, name, state: env.pnode.labelmap(name).cleave(SV[0], [SV[1]]), _edit_judge, "cleave",
       frozenset({"POST"}), EDIT_RIDES, persistent=SOME_PERSISTENT_WRITES),
    Op("labelmap.renumber [POST /renumber, sent once]", "er", _renumber_setup,
       lambda env, name, state: env.pnode.labelmap(name).renumber({SV[2]: 2**50 + 5}), _edit_judge, "renumber",
       frozenset({"POST"}), EDIT_RIDES, persistent=SOME_PERSISTENT_WRITES),
    Op("labelmap.reserve_labels [POST /nextlabel, sent once]", "rv", _reserve_setup,
       lambda env, name, state: env.pnode.labelmap(name).reserve_labels(5), _reserve_judge, "nextlabel/",
       frozenset({"POST"}), EDIT_RIDES, persistent=SOME_PERSISTENT_WRITES),
    Op("node.commit [POST /commit, sent once, a lost answer checked]", "nc", _repo_setup,
       lambda env, name, uuid: Node(env.client, uuid).commit("through the matrix"), _commit_judge, "commit",
       frozenset({"POST"}), CHECKED_RIDES, persistent=SOME_PERSISTENT_WRITES, node_level=True),
    Op("node.branch [POST /branch, sent once]", "nb", _committed_repo_setup,
       lambda env, name, uuid: Node(env.client, uuid).branch("side"), _branch_judge, "branch",
       frozenset({"POST"}), EDIT_RIDES, persistent=SOME_PERSISTENT_WRITES, node_level=True),
    Op("node.create_instance [POST /instance, sent once, a lost answer checked]", "ni", _repo_setup,
       lambda env, name, uuid: Node(env.client, uuid).create_instance("keyvalue", "kv"), _create_judge,
       "instance", frozenset({"POST"}), CHECKED_RIDES, persistent=SOME_PERSISTENT_WRITES, node_level=True),
    Op("labelmap.set_max_label [POST with the admin token]", "mx", _max_label_setup, _set_max_label,
       _max_label_judge, "maxlabel/", frozenset({"POST"}), PLAIN_POST_RIDES, persistent=SOME_PERSISTENT_WRITES),
]


def test_node_api(env: Env) -> None:
    run_matrix(env, NODE_API_OPS)


# ---- an exception raised on a dask.distributed worker -----------------------------------------
def _fail_on_worker(address: str, uuid: str, name: str, admin_token: str, admin: bool, pickled: bool) -> Any:
    """On a worker: a transport-level call through a faulty proxy. Raises, or returns the pickled error."""
    client = short_client(address, admin_token=admin_token)
    node = Node(client, uuid)
    try:
        if admin:  # the admin token travels as admintoken= in the query string
            client.transport.request("POST", node.path(name, "maxlabel", "5000"), admin=True)
        else:
            client.transport.request("GET", node.path(name, "key", "big"))
    except DvidError as exc:
        if pickled:
            return pickle.dumps(exc)
        raise
    finally:
        client.transport.close()
    return None


WORKER_FAULTS = ("reset_before", "stall", "cut_length", "cut_chunked_broken", "status_503", "status_500", "html_503",
                 "html_200", "redirect_307", "trickle")


def test_exceptions_from_distributed_workers(env: Env) -> None:
    """(e) across processes: what a worker raises reaches the client without secrets, pickled with tblib."""
    distributed = pytest.importorskip("distributed")
    calls = [("wseg", True)]
    env.node.create_instance("labelmap", "wseg")
    env.proxy.inject("status_500", times=None, match="/wseg/maxlabel/")
    for label in WORKER_FAULTS:  # one keyvalue per fault, so that the rules do not share requests
        name = f"w-{re.sub(r'[^a-z0-9]+', '-', label)}"
        env.node.create_instance("keyvalue", name)
        env.node.keyvalue(name).put("big", kv_value(2, 100_000))
        env.proxy.inject(FAULT[label].kind, times=None, match=f"/{name}/key/", **dict(FAULT[label].params))
        calls.append((name, False))
    secrets = (TOKEN, ADMIN, env.server.admin_token)
    problems = []
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2 * len(calls), processes=True,
                                  dashboard_address=":0", silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        started = time.monotonic()
        args = [(env.proxy.address, env.node.uuid, name, env.server.admin_token, admin) for name, admin in calls]
        raised = [client.submit(_fail_on_worker, *a, False, pure=False) for a in args]
        returned = [client.submit(_fail_on_worker, *a, True, pure=False) for a in args]
        distributed.wait(raised + returned, timeout=BOUND + 30)
        seconds = time.monotonic() - started
        for (name, _), future, pickled in zip(calls, raised, returned):
            exc = future.exception()
            if not isinstance(exc, DvidError):
                problems.append(f"{name}: the worker's exception arrived as {exc!r}, not a DvidError")
                continue
            problems += [f"{name}: {p}" for p in secret_problems(exc, secrets) + message_problems(exc)]
            shown = "".join(traceback.format_exception(exc))
            problems += [f"{name}: a secret ({s[:3]}…) in the formatted traceback" for s in secrets if s in shown]
            data = pickled.result()  # another call of the same kind, pickled on the worker
            problems += [f"{name}: a secret ({s[:3]}…) in the worker's pickle" for s in secrets if s.encode() in data]
            if type(pickle.loads(data)) is not type(exc):
                problems.append(f"{name}: the worker's pickle holds a {type(pickle.loads(data))}, not a {type(exc)}")
    assert seconds < BOUND + 10, f"the calls on the worker took {seconds:.1f} s"
    assert not problems, "\n".join(problems)
