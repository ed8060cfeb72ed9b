"""The fault matrix's machinery: fault kinds, outcomes, invariant checks, the trial runner.

The paths themselves are in the ``test_fault_matrix*.py`` modules; this module is their
shared floor (not collected: its name does not start with ``test_``).

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
session a fault kind × outcome table is printed and, when ``$DVID_STORE_FAULT_REPORT``
is set, written there as JSON with every trial.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pickle
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dvid_store import DvidClient, Node, RetryPolicy
from dvid_store.blocks import BlockIO
from dvid_store.errors import DvidError
from dvid_store.testing import DvidServer, FaultProxy

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


def report(terminal: Any) -> None:
    """The fault kind × outcome table of every trial of the session (and JSON, if asked).

    Called by ``conftest.pytest_terminal_summary``, so that the paths can live in several
    test modules and still make one table.
    """
    if not TRIALS:
        return
    terminal.section("fault matrix: trials per fault kind and outcome", sep="-")
    for line in summary_table().splitlines():
        terminal.write_line(line)
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


@dataclass
class CliRun:
    code: int
    out: str
    err: str


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
    #: The endpoint is a node's or repo's (``/api/node/<uuid>/commit``), not the instance's:
    #: the trial's own ``app=`` tells its requests apart.
    node_level: bool = False

    def match(self, instance: str, app: str) -> Callable[[str, str], bool]:
        """The FaultProxy matcher of one trial: the endpoint of its instance, with its ``app=``."""
        path = f"/{self.endpoint}" if self.node_level else f"/{instance}/{self.endpoint}"
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
def stored_judge(stored: Any, old: Any, new: Any, error: BaseException | None) -> tuple[str, list[str]]:
    """(b) for writes of whole values: ``new`` stored after success, ``old`` or ``new`` after a failure."""
    if error is None:
        if stored == new:
            return CORRECT, []
        return LOST, [f"the write returned, but the server holds {summarise(stored)}"]
    if stored in (old, new):
        return TYPED, []
    return LOST, [f"after the failed write the server holds {summarise(stored)}: neither old nor new"]


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


def write_outcome(stored: np.ndarray, state: WriteState, block: Sequence[int], origin: Sequence[int],
                  error: BaseException | None) -> tuple[str, list[str]]:
    """(b) for volume writes, from what the server holds: :func:`compare_write`'s problems are data lost."""
    problems = compare_write(stored, state.old, state.new, block, origin, returned=error is None)
    if problems:
        return LOST, problems
    return (CORRECT if error is None else TYPED), []


def write_judge(kind: str) -> Judge:
    """(b) for volume writes: the whole instance (the box and around it), read straight from the server."""

    def judge(env: Env, name: str, state: WriteState, result: Any, error: BaseException | None):
        if kind == "gray":
            stored, block, origin = env.node.voxels(name).read(GRAY_BOX), GRAY_BLOCK, GRAY_BOX[0]
        else:
            stored = env.node.labelmap(name).read(LABEL_BOX, supervoxels=True)
            block, origin = LABEL_BLOCK, LABEL_BOX[0]
        return write_outcome(stored, state, block, origin, error)

    return judge


def gray_setup(env: Env, name: str) -> np.ndarray:
    return make_gray(env.node, name)


def label_setup(env: Env, name: str) -> np.ndarray:
    return make_labels(env.node, name)


# ------------------------------------------------------------- whole values
@dataclass
class Change:
    """A write of whole values (keys, annotations, files...): ``old`` on the server before it,
    ``new`` after it."""

    old: Any
    new: Any


def change_judge(read: Callable[[Env, str, Any], Any]) -> Judge:
    """(b) for writes of whole values: ``read(env, name, state)`` straight from the server, judged by
    :func:`stored_judge`."""

    def judge(env: Env, name: str, state: Change, result: Any, error: BaseException | None):
        return stored_judge(read(env, name, state), state.old, state.new, error)

    return judge


# ------------------------------------------------------------- keyvalue


def kv_value(seed: int, size: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def kv_setup(env: Env, name: str) -> Change:
    """A keyvalue instance holding a large value, a small one and one that is an HTML page."""
    with GATE.creating():
        env.node.create_instance("keyvalue", name)
    old = {"big": kv_value(seed_of(name), 100_000), "small": b"s" * 10, "html": b"<html><body>user data</body></html>"}
    with GATE.writing():
        env.node.keyvalue(name).put_many(old)
    return Change(old, dict(old))


def kv_put_setup(env: Env, name: str) -> Change:
    """:func:`kv_setup`, and a new value for ``big`` to write."""
    state = kv_setup(env, name)
    state.new["big"] = kv_value(seed_of(name) + 1, 100_000)
    return state


#: (b) for keyvalue writes: every key, read straight from the server.
kv_write_judge = change_judge(lambda env, name, state: env.node.keyvalue(name).get_many(list(state.old)))
