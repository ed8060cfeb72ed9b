"""The fault matrix: every read and write path of dvid_store through every FaultProxy fault kind.

Each trial puts one fault rule on the test's :class:`~dvid_store.testing.FaultProxy`,
aimed at one kind of request of one path, runs the path through the proxy with short
client limits and checks the invariants:

(a) never wrong data: a read that returns equals the truth;
(b) never a write reported stored that is not: after a write returns, the written box
    *and the voxels around it* read back (straight from the server, not through the
    proxy) as they must; after a write raises, every block holds its old or its new
    voxels, nothing else (no zeros where data was);
(c) every failure is a :class:`~dvid_store.errors.DvidError` with a readable message;
(d) bounded time: each trial returns or raises within :data:`BOUND` seconds;
(e) no secret (bearer token, admin tokens) in the exception, its chain, notes or
    attributes, its pickle (also with tblib's pickling support, which distributed
    installs), nor in the command line's output;

and that a transient fault (``times=1``) of a kind the path's requests are retried on
is ridden through: the call returns the right data. Persistent faults (``times=None``)
may end either way, but only as above.

Trials of one test run side by side, each on its own instance (read-only paths share
one), with its own ``app=`` query value that its fault rule matches, so that no rule
touches another trial's requests. Every trial's outcome is recorded; at the end of the
module a fault kind × outcome table is printed and, when ``$DVID_STORE_FAULT_REPORT``
is set, written there as JSON with every trial.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import io
import json
import os
import pickle
import re
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import zarr

from dvid_store import DvidClient, Node, RetryPolicy
from dvid_store.blocks import BlockIO
from dvid_store.dask import open_dask, to_dvid
from dvid_store.errors import DvidError, UnsupportedError
from dvid_store.testing import DvidServer, FaultProxy
from dvid_store.zarr import DvidStore

# ------------------------------------------------------------------ settings
TOKEN = "SECRET-TOKEN-123"
ADMIN = "ADMIN-456"

#: Short client limits: connect and read timeout, retry budget, wall-clock deadline of one call.
#: Short, so that stalls and trickles end soon; not shorter, because CI runs two suites at
#: once on two cores and a read timeout must not fire on a request the fault never touched
#: (a CI run with (2, 1.5) s, 4 s and 6 s lost every trial of one path to a busy moment).
TIMEOUT = (3.0, 3.0)
RETRY_SECONDS = 8.0
DEADLINE = 12.0
#: Upper bound of one trial. A path sends several requests, each with its own deadline
#: (a trickled edge-block read, the write, a trickled read-back: three near-deadline
#: calls), hence 4x the deadline and a few seconds.
BOUND = 4 * DEADLINE + 6.0
#: Trials of one test that run at once. Most of a trial is waiting (timeouts, back-off,
#: stalls, trickles), so this is well above the machine's 2 cores.
WORKERS = 24


def short_client(address: str, **extra: Any) -> DvidClient:
    """A client of ``address`` (the proxy) with the short limits and both secrets."""
    options: dict[str, Any] = {
        "token": TOKEN, "admin_token": ADMIN, "timeout": TIMEOUT,
        "retry": RetryPolicy(total_seconds=RETRY_SECONDS), "deadline": DEADLINE, "app": "fault-matrix",
    }
    options.update(extra)
    return DvidClient(address, **options)


@contextlib.contextmanager
def short_defaults() -> Iterator[None]:
    """Clients made from ``dvid://`` URLs (zarr/fsspec, xarray) get the short limits too."""
    defaults = DvidClient.__init__.__kwdefaults__
    saved = dict(defaults)
    defaults.update(timeout=TIMEOUT, retry=RetryPolicy(total_seconds=RETRY_SECONDS), deadline=DEADLINE)
    try:
        yield
    finally:
        defaults.clear()
        defaults.update(saved)


# -------------------------------------------------------------------- faults
@dataclass(frozen=True)
class FaultCase:
    label: str
    kind: str
    params: tuple[tuple[str, Any], ...] = ()


FAULTS: list[FaultCase] = [
    FaultCase("latency", "latency", (("seconds", 0.3),)),
    FaultCase("stall", "stall"),  # until the proxy stops: only the read timeout ends it
    FaultCase("reset_before", "reset_before"),
    FaultCase("reset_after", "reset_after"),
    FaultCase("cut_length", "cut_length"),
    FaultCase("cut_chunked_broken", "cut_chunked_broken"),
    FaultCase("cut_chunked_clean", "cut_chunked_clean"),
    FaultCase("cut_records", "cut_records"),
    FaultCase("cut_close", "cut_close"),
    FaultCase("status_503", "status_503"),
    FaultCase("status_500", "status_500"),
    FaultCase("html_503", "html_503"),
    FaultCase("html_200", "html_200"),
    FaultCase("garbage", "garbage", (("seed", 20240611),)),
    FaultCase("redirect_301", "redirect", (("status", 301),)),
    FaultCase("redirect_307", "redirect", (("status", 307),)),
    FaultCase("trickle", "trickle", (("rate", 64.0),)),
    # reads also get bodies shorter than one block-record header (16 bytes)
    FaultCase("cut_close@8B", "cut_close", (("at", 8),)),
    FaultCase("garbage@8B", "garbage", (("size", 8), ("seed", 7))),
]
FAULT = {f.label: f for f in FAULTS}
KINDS = tuple(f.label for f in FAULTS if "@" not in f.label)  # every FaultProxy kind, both redirects
READ_KINDS = tuple(f.label for f in FAULTS)

#: Transient faults a safe (idempotent) request rides through: it is retried on 503s,
#: connection failures, stalls (read timeout) and broken or malformed bodies.
READ_RIDES = frozenset(
    {"latency", "stall", "reset_before", "reset_after", "cut_length", "cut_chunked_broken", "cut_chunked_clean",
     "cut_records", "cut_close", "status_503", "html_503", "garbage", "cut_close@8B", "garbage@8B"}
)
#: An idempotent write, which DVID answers with an empty body, rides through the same,
#: except a non-empty 200 answer (garbage): not DVID's answer, so refused, by design.
WRITE_RIDES = READ_RIDES - {"garbage", "garbage@8B"}
#: A write that is not safe to repeat is sent again only after a 503 (DVID refuses before
#: reading the body); answers that end cleanly are fine.
UNSAFE_WRITE_RIDES = frozenset(
    {"latency", "status_503", "html_503", "cut_length", "cut_chunked_clean", "cut_records", "cut_close"}
)
#: A plain POST (not marked idempotent): not even a 503 is sent again.
PLAIN_POST_RIDES = UNSAFE_WRITE_RIDES - {"status_503", "html_503"}

TRANSIENT, PERSISTENT = "transient", "persistent"
#: The persistent faults of the secondary paths (the block-stream reads, zarr, to_dvid and
#: keyvalue get every kind, transient and persistent; the others every kind transient).
SOME_PERSISTENT = ("latency", "reset_after", "cut_records", "status_500", "html_200", "garbage", "redirect_301",
                   "trickle")
SOME_PERSISTENT_WRITES = ("latency", "stall", "reset_after", "status_503", "status_500", "html_200", "garbage",
                          "redirect_307")

# ----------------------------------------------------------------- outcomes
CORRECT = "correct"
TYPED = "typed DvidError"
HUNG = "hung"
WRONG = "wrong data"
LOST = "data lost"
UNTYPED = "untyped exception"
OUTCOMES = (CORRECT, TYPED, HUNG, WRONG, LOST, UNTYPED)

#: fault -> outcome -> trials, over the whole module.
MATRIX: dict[str, dict[str, int]] = {f.label: dict.fromkeys(OUTCOMES, 0) for f in FAULTS}
#: One entry per trial.
TRIALS: list[dict[str, Any]] = []
_record_lock = threading.Lock()


def record(path: str, fault: str, persistence: str, outcome: str, seconds: float, error: str,
           problems: list[str]) -> None:
    with _record_lock:
        MATRIX[fault][outcome] += 1
        TRIALS.append({"path": path, "fault": fault, "persistence": persistence, "outcome": outcome,
                       "seconds": round(seconds, 3), "error": error, "problems": problems})


def summary_table() -> str:
    width = max(len(f) for f in MATRIX) + 2
    lines = ["fault kind".ljust(width) + "  ".join(OUTCOMES) + "  total"]
    totals = dict.fromkeys(OUTCOMES, 0)
    for fault, counts in [*MATRIX.items(), ("total", totals)]:
        if fault != "total":
            for outcome in OUTCOMES:
                totals[outcome] += counts[outcome]
        cells = "  ".join(str(counts[o]).rjust(len(o)) for o in OUTCOMES)
        lines.append(f"{fault.ljust(width)}{cells}  {sum(counts.values()):5d}")
    broken = sum(1 for t in TRIALS if t["problems"])
    lines.append(f"{len(TRIALS)} trials, {broken} broke an invariant")
    return "\n".join(lines)


@pytest.fixture(scope="module", autouse=True)
def fault_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """At the end of the module: the fault kind × outcome table (terminal, and JSON if asked)."""
    yield
    if not TRIALS:
        return
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line("")
            reporter.section("fault matrix: trials per fault kind and outcome", sep="-")
            for line in summary_table().splitlines():
                reporter.write_line(line)
    target = os.environ.get("DVID_STORE_FAULT_REPORT")
    if target:
        Path(target).write_text(json.dumps({
            "settings": {"timeout": TIMEOUT, "retry_seconds": RETRY_SECONDS, "deadline": DEADLINE, "bound": BOUND},
            "outcomes": list(OUTCOMES),
            "matrix": MATRIX,
            "trials": sorted(TRIALS, key=lambda t: (t["path"], t["fault"], t["persistence"])),
        }, indent=1))


# ------------------------------------------------------------------ checks
def secret_problems(exc: BaseException, secrets: Sequence[str]) -> list[str]:
    """(e): where a secret shows in ``exc``, its cause/context chain, notes, attributes, pickles."""
    problems: list[str] = []
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts = [str(current), repr(current), *map(str, getattr(current, "__notes__", ()))]
        texts += [repr(a) for a in current.args] + [repr(v) for v in getattr(current, "__dict__", {}).values()]
        problems += [f"a secret ({s[:3]}…) shows in a {type(current).__name__} of the exception chain"
                     for s in secrets if any(s in t for t in texts)]
        stack += [current.__cause__, current.__context__, *getattr(current, "exceptions", ())]
    for how, dumps in _pickles():
        try:
            data = dumps(exc)
        except Exception as failure:  # an exception that does not pickle is a finding too
            problems.append(f"{type(exc).__name__} does not pickle ({how}): {failure!r}")
            continue
        problems += [f"a secret ({s[:3]}…) is in the {how} of the {type(exc).__name__}"
                     for s in secrets if s.encode() in data]
    return problems


def _pickles() -> list[tuple[str, Callable[[BaseException], bytes]]]:
    out: list[tuple[str, Callable[[BaseException], bytes]]] = [("pickle", pickle.dumps)]
    try:
        import tblib.pickling_support
    except ImportError:
        return out

    def with_tblib(exc: BaseException) -> bytes:
        tblib.pickling_support.install()  # what distributed does in every process
        return pickle.dumps(exc) + pickle.dumps(exc.__traceback__)

    out.append(("pickle with tblib", with_tblib))
    return out


def message_problems(exc: BaseException) -> list[str]:
    """(c): a message a person can read."""
    text = str(exc).strip()
    if not text:
        return [f"{type(exc).__name__} has an empty message"]
    if len(text) > 6000:
        return [f"{type(exc).__name__} has a message of {len(text)} characters"]
    return []


def describe(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {' '.join(str(exc).split())[:300]}"


def summarise(value: Any) -> str:
    if isinstance(value, np.ndarray):
        zeros = int((value == 0).sum())
        return f"array {value.shape} {value.dtype} (sum {int(value.astype(np.float64).sum())}, {zeros} zeros)"
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} bytes starting {bytes(value[:24])!r}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {summarise(v)}" for k, v in value.items()) + "}"
    return repr(value)[:200]


def compare_write(stored: np.ndarray, old: np.ndarray, new: np.ndarray, block: Sequence[int], origin: Sequence[int],
                  *, returned: bool) -> list[str]:
    """(b): after success every voxel as it must be; after a failure each block old or new."""
    if returned:
        if np.array_equal(stored, new):
            return []
        bad = np.argwhere(stored != new)
        lost = int(np.count_nonzero((stored == 0) & (new != 0)))
        first = tuple(int(o + i) for o, i in zip(origin, bad[0]))
        return [f"the write returned, but {len(bad)} voxels differ from what must be stored "
                f"(the first at {first} (z, y, x); {lost} zeros where data belongs)"]
    problems = []
    for index in np.ndindex(*(-(-n // b) for n, b in zip(stored.shape, block))):
        sl = tuple(slice(i * b, (i + 1) * b) for i, b in zip(index, block))
        if np.array_equal(stored[sl], old[sl]) or np.array_equal(stored[sl], new[sl]):
            continue
        corner = tuple(o + i * b for o, i, b in zip(origin, index, block))
        zeros = int(np.count_nonzero((stored[sl] == 0) & (old[sl] != 0)))
        problems.append(f"after the failed write the block at {corner} is neither old nor new "
                        f"({zeros} zeros where data was)")
    return problems


# ------------------------------------------------------ data on the server
GRAY_BLOCK = (32, 32, 32)
GRAY_BOX = ((-32, 0, 32), (32, 64, 128))  # 2 x 2 x 3 blocks, z below zero
GRAY_ABSENT = {(-1, 1, 3), (0, 0, 2), (0, 1, 1)}  # blocks never written: they read as 0
LABEL_BLOCK = (32, 32, 32)
LABEL_BOX = ((0, 0, 0), (32, 64, 96))  # 1 x 2 x 3 blocks
LABEL_ABSENT = {(0, 0, 2), (0, 1, 0)}
LABEL_IDS = np.array([1, 7, 2**33 + 1, 2**62 + 7], dtype=np.uint64)


class RepoGate:
    """Keeps instance creation apart from data writes while trials set up side by side.

    DVID v1.0.0 deadlocks a repo (every later request to it hangs) when an instance is
    created in it while a labelmap ``POST /raw`` runs there: ``PutLabels`` holds the
    repo's read lock while its block goroutines ask for it again, and the creation's
    pending write lock blocks them. So set-ups create under the exclusive side and
    write under the shared side, and the trials start once every set-up is done.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._creating = False
        self._writing = 0

    @contextlib.contextmanager
    def creating(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._creating and not self._writing)
            self._creating = True
        try:
            yield
        finally:
            with self._cond:
                self._creating = False
                self._cond.notify_all()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._creating)
            self._writing += 1
        try:
            yield
        finally:
            with self._cond:
                self._writing -= 1
                self._cond.notify_all()


GATE = RepoGate()


def shape_of(box: Any) -> tuple[int, int, int]:
    return tuple(b - a for a, b in zip(box[0], box[1]))  # type: ignore[return-value]


def inside(box: Any, region: Any) -> tuple[slice, ...]:
    """Slices of ``box`` in an array that covers ``region`` (both DVID boxes)."""
    return tuple(slice(a - o, b - o) for a, b, o in zip(box[0], box[1], region[0]))


def block_box(coord: Sequence[int], block: Sequence[int]) -> Any:
    return tuple(c * n for c, n in zip(coord, block)), tuple((c + 1) * n for c, n in zip(coord, block))


def seed_of(text: str) -> int:
    return sum(ord(c) * (i + 1) for i, c in enumerate(text)) % (2**31)


def create(node: Node, typename: str, name: str, box: Any, **settings: Any) -> None:
    """Create an instance whose extents are ``box`` (what create_array does, in fewer requests)."""
    with GATE.creating():
        node.create_instance(typename, name, **settings)
        extents = {"MinPoint": list(reversed(box[0])), "MaxPoint": [c - 1 for c in reversed(box[1])]}
        node.transport.post_json(node.path(name, "extents"), extents)


def fill(node: Node, name: str, data: np.ndarray, box: Any, block: Sequence[int], absent: set) -> np.ndarray:
    """Store ``data`` (covering ``box``) straight to the server, leaving the ``absent`` blocks out."""
    ranges = [range(a // n, b // n) for a, b, n in zip(box[0], box[1], block)]
    blocks = {}
    for coord in ((z, y, x) for z in ranges[0] for y in ranges[1] for x in ranges[2]):
        if coord in absent:
            data[inside(block_box(coord, block), box)] = 0
        else:
            blocks[coord] = data[inside(block_box(coord, block), box)]
    with GATE.writing():
        BlockIO.open(node, name).write(blocks)
    return data


def make_gray(node: Node, name: str) -> np.ndarray:
    create(node, "uint8blk", name, GRAY_BOX, block_size=GRAY_BLOCK, voxel_size=(40, 8, 4))
    data = np.random.default_rng(seed_of(name)).integers(1, 256, shape_of(GRAY_BOX), dtype=np.uint8)
    return fill(node, name, data, GRAY_BOX, GRAY_BLOCK, GRAY_ABSENT)


def make_labels(node: Node, name: str) -> np.ndarray:
    create(node, "labelmap", name, LABEL_BOX, block_size=LABEL_BLOCK)
    z, y, x = np.indices(shape_of(LABEL_BOX))
    data = LABEL_IDS[(z // 8 + y // 16 + x // 12 + seed_of(name)) % 4]
    return fill(node, name, data, LABEL_BOX, LABEL_BLOCK, LABEL_ABSENT)


# ---------------------------------------------------------------- the runner
@dataclass
class Env:
    """What a trial works with: the server, straight and through the proxy."""

    server: DvidServer
    node: Node  # straight to the server: set-ups and the truth
    proxy: FaultProxy
    tmp: Path
    #: The trial's own ``app=`` value: every request of the trial carries it.
    app: str = "fault-matrix"

    @functools.cached_property
    def client(self) -> DvidClient:
        """Through the proxy: short limits, a bearer token and a (fake) admin token."""
        return short_client(self.proxy.address, app=self.app)

    @functools.cached_property
    def admin(self) -> DvidClient:
        """Through the proxy, with the server's real admin token."""
        return short_client(self.proxy.address, app=self.app, admin_token=self.server.admin_token)

    @property
    def pnode(self) -> Node:
        """The test's node, through the proxy."""
        return Node(self.client, self.node.uuid)

    def url(self, name: str) -> str:
        return f"dvid://{self.proxy.address}/{self.node.uuid}/{name}"

    def for_trial(self, app: str) -> Env:
        return Env(self.server, self.node, self.proxy, self.tmp, app)

    def close(self) -> None:
        for name in ("client", "admin"):
            if name in self.__dict__:
                self.__dict__[name].transport.close()


@pytest.fixture
def env(dvid_server: DvidServer, dvid_node: Node, dvid_fault_proxy: FaultProxy, tmp_path: Path) -> Env:
    return Env(dvid_server, dvid_node, dvid_fault_proxy, tmp_path)


Judge = Callable[[Env, str, Any, Any, "BaseException | None"], "tuple[str, list[str]]"]


@dataclass
class Op:
    """One path: its set-up on the server, its call through the proxy, and its judge."""

    name: str  # shown in the report
    tag: str  # short, in instance names
    setup: Callable[[Env, str], Any]  # (env, instance) -> state
    run: Callable[[Env, str, Any], Any]  # (env, instance, state) -> result
    judge: Judge  # (env, instance, state, result, error) -> (outcome, problems); result None after an error
    endpoint: str  # the requests the faults hit: ".../<instance>/<endpoint>..."
    methods: frozenset[str] | None = None
    rides: frozenset[str] = READ_RIDES  # transient faults the call must ride through
    faults: Sequence[str] = KINDS
    persistent: Sequence[str] | None = None  # the persistent faults tried; default: all of ``faults``
    shared: bool = False  # a read-only path: its trials share one instance, set up once
    first: int = 1  # the fault applies from the ``first``-th matching request on

    def match(self, instance: str, app: str) -> Callable[[str, str], bool]:
        """The FaultProxy matcher of one trial: the endpoint of its instance, with its ``app=``."""
        path = f"/{instance}/{self.endpoint}"
        mine = re.compile(rf"[?&]app={re.escape(app)}(&|$)")
        seen = 0
        lock = threading.Lock()

        def match(method: str, target: str) -> bool:
            nonlocal seen
            if path not in target or not mine.search(target):
                return False
            with lock:
                seen += 1
                return seen >= self.first

        later = f", from the request #{self.first} on" if self.first > 1 else ""
        match.__qualname__ = f"{path} with app={app}{later}"
        return match


def trial_id(op: Op, fault: FaultCase, persistence: str) -> str:
    return f"{op.tag}-{re.sub(r'[^a-z0-9]+', '-', fault.label)}-{persistence[0]}"


def instance_name(op: Op, fault: FaultCase, persistence: str) -> str:
    return op.tag if op.shared else trial_id(op, fault, persistence)


def run_trial(env: Env, op: Op, fault: FaultCase, persistence: str, state: Any) -> list[str]:
    """Inject the fault, run the path through the proxy, check every invariant, record the outcome.

    Returns the broken invariants.
    """
    instance = instance_name(op, fault, persistence)
    env = env.for_trial(trial_id(op, fault, persistence))
    match = op.match(instance, env.app)
    times = 1 if persistence == TRANSIENT else None
    rule = env.proxy.inject(fault.kind, times=times, match=match, methods=op.methods, **dict(fault.params))
    result: Any = None
    error: BaseException | None = None
    started = time.monotonic()
    try:
        result = op.run(env, instance, state)
    except BaseException as exc:  # every failure is judged
        error = exc
    finally:
        seconds = time.monotonic() - started
        env.close()
    problems: list[str] = []
    if rule.applied == 0:
        problems.append(f"the fault never hit a request ({match.__qualname__}): a bug of this test")
    try:
        outcome, found = op.judge(env, instance, state, result, error)
    except Exception as exc:
        outcome, found = (TYPED if error is not None else WRONG), [f"judging failed: {describe(exc)}"]
    problems += found
    if error is not None:
        if not isinstance(error, DvidError):
            outcome = UNTYPED if outcome in (CORRECT, TYPED) else outcome
            problems.append("untyped exception: " + "".join(traceback.format_exception(error))[-2500:])
        problems += message_problems(error) + secret_problems(error, (TOKEN, ADMIN, env.server.admin_token))
    if seconds > BOUND:
        problems.append(f"took {seconds:.1f} s, more than the bound of {BOUND:.0f} s")
        outcome = HUNG if outcome in (CORRECT, TYPED) else outcome
    if persistence == TRANSIENT and fault.label in op.rides and outcome != CORRECT:
        problems.append(f"a transient {fault.label} fault was not ridden through ({outcome})")
    text = describe(error) if error is not None else ""
    if isinstance(result, CliRun) and result.code:
        text = (result.err.strip().splitlines() or [f"exit code {result.code}"])[-1][:400]
    record(op.name, fault.label, persistence, outcome, seconds, text, problems)
    if problems:
        head = f"{op.name} / {fault.label} / {persistence}: {outcome} after {seconds:.2f} s"
        return [head + (f" [{text}]" if text else "") + "\n    " + "\n    ".join(problems)]
    return []


def run_matrix(env: Env, ops: Sequence[Op]) -> None:
    """Set every (op, fault, persistence) trial up, then run them side by side; fail listing every
    broken invariant."""
    cases = [(op, FAULT[f], p) for op in ops for f in op.faults for p in (TRANSIENT, PERSISTENT)
             if p == TRANSIENT or op.persistent is None or f in op.persistent]
    failures: list[str] = []
    setups: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="fault-setup") as pool:
        for op, fault, p in cases:
            name = instance_name(op, fault, p)
            if name not in setups:
                setups[name] = pool.submit(op.setup, env, name)
    ready = []
    for op, fault, p in cases:
        future = setups[instance_name(op, fault, p)]
        if future.exception() is None:
            ready.append((op, fault, p, future.result()))
        else:  # a bug of this test, or the server failed with no fault at all
            failures.append(f"{op.name} / {fault.label} / {p}: the set-up failed:\n"
                            + "".join(traceback.format_exception(future.exception()))[-2000:])
    pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="fault-trial")
    trials = {pool.submit(run_trial, env, *case): case for case in ready}
    _, pending = wait(trials, timeout=len(ready) / WORKERS * (BOUND + 10) + 60)
    pool.shutdown(wait=not pending, cancel_futures=True)
    for future, (op, fault, p, _) in trials.items():
        if future in pending:
            record(op.name, fault.label, p, HUNG, float("nan"), "", ["never returned"])
            failures.append(f"{op.name} / {fault.label} / {p}: hung (never returned)")
        elif future.exception() is not None:
            failures.append(f"{op.name} / {fault.label} / {p}: the trial itself failed:\n"
                            + "".join(traceback.format_exception(future.exception()))[-2000:])
        else:
            failures += future.result()
    if failures:
        pytest.fail(f"{len(failures)} of {len(cases)} trials broke an invariant:\n" + "\n".join(sorted(failures)),
                    pytrace=False)


# ------------------------------------------------------------- judges
def read_judge(expected: Callable[[Any], Any], same: Callable[[Any, Any], bool] | None = None) -> Judge:
    """(a) for reads: a returned value must equal ``expected(state)``."""

    def judge(env: Env, name: str, state: Any, result: Any, error: BaseException | None) -> tuple[str, list[str]]:
        if error is not None:
            return TYPED, []
        want = expected(state)
        if same(result, want) if same else (
            isinstance(result, np.ndarray) and result.dtype == want.dtype and np.array_equal(result, want)
        ):
            return CORRECT, []
        return WRONG, [f"the read returned wrong data: {summarise(result)} instead of {summarise(want)}"]

    return judge


def truth(state: np.ndarray) -> np.ndarray:
    return state


@dataclass
class WriteState:
    old: np.ndarray  # the whole checked region before the write
    new: np.ndarray  # the whole checked region as it must be after a successful write
    box: Any  # the written box (DVID coordinates)
    data: np.ndarray  # the written voxels


GRAY_ALIGNED = ((-32, 32, 64), (32, 64, 128))
GRAY_UNALIGNED = ((-27, 5, 45), (20, 61, 117))
LABEL_ALIGNED = ((0, 32, 32), (32, 64, 96))
LABEL_UNALIGNED = ((3, 10, 20), (29, 50, 90))


def write_setup(kind: str, box: Any) -> Callable[[Env, str], WriteState]:
    """Old data on the server, and the voxels a write of ``box`` is to store."""

    def setup(env: Env, name: str) -> WriteState:
        rng = np.random.default_rng(seed_of(name) + 1)
        if kind == "gray":
            old, region = make_gray(env.node, name), GRAY_BOX
            data = rng.integers(1, 256, shape_of(box), dtype=np.uint8)
        else:
            old, region = make_labels(env.node, name), LABEL_BOX
            data = LABEL_IDS[rng.integers(0, 4, shape_of(box))]
            data[: shape_of(box)[0] // 2] = np.uint64(2**40 + 3)
        new = old.copy()
        new[inside(box, region)] = data
        return WriteState(old, new, box, data)

    return setup


def write_judge(kind: str) -> Judge:
    """(b) for volume writes: the whole instance (the box and around it), read straight from the server."""

    def judge(env: Env, name: str, state: WriteState, result: Any, error: BaseException | None):
        if kind == "gray":
            stored, block, origin = env.node.voxels(name).read(GRAY_BOX), GRAY_BLOCK, GRAY_BOX[0]
        else:
            stored = env.node.labelmap(name).read(LABEL_BOX, supervoxels=True)
            block, origin = LABEL_BLOCK, LABEL_BOX[0]
        problems = compare_write(stored, state.old, state.new, block, origin, returned=error is None)
        if problems:
            return LOST, problems
        return (CORRECT if error is None else TYPED), []

    return judge


def gray_setup(env: Env, name: str) -> np.ndarray:
    return make_gray(env.node, name)


def label_setup(env: Env, name: str) -> np.ndarray:
    return make_labels(env.node, name)


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
        self._target().flush()

    def isatty(self) -> bool:
        return False


@dataclass
class CliRun:
    code: int
    out: str
    err: str


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
@dataclass
class KvState:
    old: dict[str, bytes]
    new: dict[str, bytes]


def _kv_value(seed: int, size: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def kv_setup(env: Env, name: str) -> KvState:
    with GATE.creating():
        env.node.create_instance("keyvalue", name)
    old = {"big": _kv_value(seed_of(name), 100_000), "small": b"s" * 10, "html": b"<html><body>user data</body></html>"}
    with GATE.writing():
        env.node.keyvalue(name).put_many(old)
    return KvState(old, dict(old))


def _kv_put_setup(env: Env, name: str) -> KvState:
    state = kv_setup(env, name)
    state.new["big"] = _kv_value(seed_of(name) + 1, 100_000)
    return state


def _kv_delete_setup(env: Env, name: str) -> KvState:
    state = kv_setup(env, name)
    del state.new["big"]
    return state


def kv_write_judge(env: Env, name: str, state: KvState, result: Any, error: BaseException | None):
    stored = env.node.keyvalue(name).get_many(["big", "small", "html"])
    if error is None:
        if stored == state.new:
            return CORRECT, []
        return LOST, [f"the write returned, but the server holds {summarise(stored)}"]
    if stored in (state.old, state.new):
        return TYPED, []
    return LOST, [f"after the failed write the server holds {summarise(stored)}: neither old nor new"]


def _range_judge(env: Env, name: str, state: KvState, result: Any, error: BaseException | None):
    """DVID v1.0.0 answers a ranged GET with the whole value (200, not 206), so the one
    right outcome is UnsupportedError; a value returned is an answer that only looked ranged."""
    if isinstance(error, UnsupportedError):
        return CORRECT, []
    if error is not None:
        return TYPED, []
    return WRONG, [f"a byte range of a server without ranges returned {summarise(result)}"]


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b and (not isinstance(a, dict) or list(a) == list(b))


KV_OPS = [
    Op("keyvalue put (100 kB)", "kp", _kv_put_setup,
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
    Op("node.labelmap()[box] = aligned [POST /raw, not idempotent]", "lw", write_setup("labels", LABEL_ALIGNED),
       _labels_write, write_judge("labels"), "raw", frozenset({"POST"}), UNSAFE_WRITE_RIDES,
       persistent=SOME_PERSISTENT_WRITES),
    Op("node.labelmap().write(mutate=True) [POST /raw]", "lm", write_setup("labels", LABEL_ALIGNED),
       _labels_write_mutate, write_judge("labels"), "raw", frozenset({"POST"}), WRITE_RIDES,
       persistent=SOME_PERSISTENT_WRITES),
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
        env.node.keyvalue(name).put("big", _kv_value(2, 100_000))
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
