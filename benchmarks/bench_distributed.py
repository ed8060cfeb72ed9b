"""dvid_store on a dask.distributed cluster of worker processes against dask's threaded scheduler.

Run from the repository root::

    python benchmarks/bench_distributed.py [--size 384] [--repeats 3] [--workers 2] [--threads 1]
        [--chunk-bytes N] [--json benchmarks/results/distributed.json]

Against a throwaway local DVID, for a ``size``³ uint8 grayscale volume (32³ blocks) and a
``size``³ uint64 labelmap (64³ blocks), each a median of ``--repeats`` runs after one
untimed warm-up:

(a) a reduction over a region: ``open_dask(url)[region].sum().compute()``, where the
    region leaves one block off every face of the volume;
(b) ``to_dvid(array, url)`` of an array read with ``open_dask`` and persisted on the
    scheduler under test (the chunks are in its memory: threads' process or the
    workers), into a fresh instance per run (labelmaps without label indexing, so no
    background indexing runs into the next measurement);
(c) ``open_dask(url).compute()``: the whole volume into the client.

The baseline of every case is the same call on the threaded scheduler in the same run,
with as many threads as the cluster has (``--workers`` × ``--threads``). Ratios are the
baseline's median time over the measured one: above 1 means distributed is faster.
(c) has two more rows, probes of what a distributed read could reach. dask's own
assembly sends every chunk to one worker, concatenates them there, and the client
(unless made with ``direct_to_workers=True``) fetches the result through the
scheduler. The probes are: the same call with the client fetching straight from the
worker; and the chunk tasks persisted, gathered straight from the workers and copied
into one preallocated array on the client (no concatenation on a worker).

After the timed runs, each distributed case runs once more under distributed's task
stream, which splits its wall time into: the call until the first task starts (graph
building, optimisation, submission), the span on the workers (task compute time per
kind of task, worker-to-worker transfers, how busy the threads were), and the last
task's end until the call returns (for (c) that is the result's way to the client:
serialisation on the worker, the scheduler's relay, deserialisation). A line per case
says which of these limits it.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import dask
import dask.array as da
from dask.array.core import slices_from_chunks
from dask.core import flatten
from dask.utils import key_split
from distributed import Client, LocalCluster, futures_of, wait
from harness import Table, grayscale_volume, segmentation_volume, timed

import dvid_store
from dvid_store.dask import DEFAULT_CHUNK_BYTES, open_dask, to_dvid
from dvid_store.testing import DvidServer

BASELINE = "threads (baseline)"


@dataclass
class Profile:
    """Where one distributed call spent its wall time, from distributed's task stream."""

    case: str
    wall: float
    to_first_task: float  # the call until the first task starts on a worker
    on_workers: float  # first task start until the last task ends
    to_client: float  # last task end until the call returns
    task_seconds: dict[str, float]  # compute time summed per kind of task
    transfer_seconds: float  # worker-to-worker transfers of task inputs
    tasks: int
    chunks: int  # dask chunks of the array read or written: the tasks that carry the work
    threads: int
    baseline_seconds: float  # median of the same call on threads
    explanation: str = field(default="")

    @property
    def work(self) -> float:
        """The tasks' compute time spread evenly over the cluster's threads."""
        return sum(self.task_seconds.values()) / self.threads

    @property
    def idle(self) -> float:
        """Thread time inside the span not spent computing, per thread (waits, transfers, imbalance)."""
        return max(0.0, self.on_workers - self.work)


def task_kind(key: Any) -> str:
    """A readable name for a task; dask fuses the read of a chunk with what follows it."""
    prefix = str(key_split(key))
    if "write_chunk" in prefix:
        return "DVID writes"
    if prefix.startswith("finalize"):
        return "finalize (assembly)"
    if prefix == "sum" or ("dvid-" in prefix and "sum" in prefix):
        return "read+sum"
    if "dvid-" in prefix:
        return "DVID reads"
    return prefix


def _scheduler_delay(dask_worker: Any) -> float:
    return float(dask_worker.scheduler_delay)


def _stream_index(dask_scheduler: Any) -> int:
    return int(dask_scheduler.plugins["task-stream"].index)


def _stream_since(index: int, dask_scheduler: Any) -> list[dict[str, Any]]:
    """Task-stream records added after the plugin's ``index`` reached ``index``.

    By append count, not by time: older distributed selects records by comparing
    worker times (shifted by clock-offset estimates) with the client's, which lets
    another call's tasks in or this call's out.
    """
    plugin = dask_scheduler.plugins["task-stream"]
    new = plugin.index - index
    return list(plugin.buffer)[-new:] if new > 0 else []


def profile(
    case: str, call: Callable[[], Any], client: Client, chunks: int, threads: int, baseline_seconds: float
) -> Profile:
    """Run ``call`` once under the task stream and split its wall time."""
    client.get_task_stream(start=0, stop=0)  # installs the scheduler's task-stream plugin if missing
    before = client.run_on_scheduler(_stream_index)
    start = time.time()
    call()
    end = time.time()
    records = client.run_on_scheduler(_stream_since, before)
    # Workers shift the times they report by their estimate of the scheduler's clock
    # offset (from heartbeat round trips; tens of ms off on a busy machine). Here all
    # share one clock, so take the shift back out.
    shift = client.run(_scheduler_delay)
    compute: dict[str, float] = defaultdict(float)
    transfer = 0.0
    first, last = end, start
    for record in records:
        for step in record["startstops"]:
            delay = shift.get(record["worker"], 0.0)
            first, last = min(first, step["start"] - delay), max(last, step["stop"] - delay)
            if step["action"] == "compute":
                compute[task_kind(record["key"])] += step["stop"] - step["start"]
            elif step["action"] == "transfer":
                transfer += step["stop"] - step["start"]
    # What remains of the shift's jitter may place a task a few ms outside the call.
    first, last = max(first, start), min(last, end)
    if first > last:
        first = last = start
    result = Profile(
        case, end - start, first - start, last - first, end - last, dict(compute), transfer, len(records),
        chunks, threads, baseline_seconds,
    )
    result.explanation = explain(result)
    return result


def explain(p: Profile) -> str:
    """One line: where the wall time went and which part limits the call."""
    def share(seconds: float) -> str:
        return f"{seconds:.2f} s ({seconds / p.wall:.0%})"

    kinds = ", ".join(f"{k} {s:.2f}" for k, s in sorted(p.task_seconds.items(), key=lambda kv: -kv[1]))
    split = (
        f"wall {p.wall:.2f} s (threads median {p.baseline_seconds:.2f} s) = to first task {share(p.to_first_task)}"
        f" + task work {share(p.work)} + idle threads {share(p.idle)} + last task to result {share(p.to_client)}"
        f" | task-s: {kinds or 'none'}; worker-to-worker transfer {p.transfer_seconds:.2f} s;"
        f" {p.tasks} tasks, {p.chunks} chunk(s), {p.threads} threads"
    )
    parts = {"start": p.to_first_task, "work": p.work, "idle": p.idle, "result": p.to_client}
    worst = max(parts, key=lambda k: parts[k])
    if worst == "result":
        limit = (
            f"moving the result to the client (serialise on a worker, send, deserialise): {p.to_client:.2f} s, "
            f"{p.to_client / p.baseline_seconds:.1f}x the whole threaded run"
        )
    elif worst == "start":
        limit = "building and submitting the graph before any task runs"
    elif worst == "idle" and p.chunks < p.threads:
        limit = f"parallelism: {p.chunks} chunk(s) for {p.threads} threads, so threads idle"
    elif worst == "idle" and p.transfer_seconds > p.idle / 2:
        limit = f"moving chunks between workers ({p.transfer_seconds:.2f} s of transfers)"
    elif worst == "idle":
        limit = "gaps between tasks (scheduling, uneven tasks)"
    else:
        heaviest = max(p.task_seconds, key=lambda k: p.task_seconds[k])
        limit = f"the tasks' own work, mostly {heaviest} ({p.task_seconds[heaviest]:.2f} task-s)"
    return f"{split}. Limit: {limit}; overhead beyond task work {p.wall - p.work:.2f} s"


def assemble_on_client(client: Client, array: da.Array) -> np.ndarray:
    """Probe: compute the chunks on the workers, gather them directly and copy them into one array."""
    persisted = client.persist(array)
    by_key = {future.key: future for future in futures_of(persisted)}
    keys = list(flatten(persisted.__dask_keys__()))
    out = np.empty(array.shape, array.dtype)
    chunks = client.gather([by_key[k] for k in keys], direct=True)
    for region, chunk in zip(slices_from_chunks(array.chunks), chunks):
        out[region] = chunk
    return out


def gathering_direct(client: Client, fn: Callable[[], Any]) -> Callable[[], Any]:
    """Probe: ``fn`` with the client fetching results from the workers, as ``Client(direct_to_workers=True)``."""
    def run() -> Any:
        before = client.direct_to_workers
        client.direct_to_workers = True
        try:
            with dask.config.set(scheduler="dask.distributed"):
                return fn()
        finally:
            client.direct_to_workers = before

    return run


class Case:
    """One volume on the server: its data, a URL to read and fresh instances to write."""

    def __init__(self, server: DvidServer, kind: str, size: int) -> None:
        shape = (size, size, size)
        self.kind = kind
        self.node = server.client().create_repo(f"bench-distributed-{kind}")
        if kind == "uint8":
            self.data = grayscale_volume(shape)
            self.block = 32
            dvid_store.Voxels.create(self.node, "source", np.uint8, block_size=(32, 32, 32))
            self.node.voxels("source").write(self.data, (0, 0, 0))
        else:
            self.data = segmentation_volume(shape)
            self.block = 64
            dvid_store.Labelmap.create(self.node, "source")
            # POST /blocks indexes synchronously: no background indexing during the timings.
            self.node.labelmap("source").write(self.data, (0, 0, 0), downres=False)
        self.host = server.url.split("://")[1]
        self.url = self.url_of("source")
        self._names = count()

    def url_of(self, instance: str) -> str:
        return f"dvid://{self.host}/{self.node.uuid}/{instance}"

    def fresh_urls(self, n: int) -> Iterator[str]:
        """``n`` new empty instances, created up front so that creating them is not timed."""
        urls = []
        for _ in range(n):
            name = f"w{next(self._names)}"
            if self.kind == "uint8":
                dvid_store.Voxels.create(self.node, name, np.uint8, block_size=(32, 32, 32))
            else:
                dvid_store.Labelmap.create(self.node, name, indexed_labels=False)
            urls.append(self.url_of(name))
        return iter(urls)


def on(scheduler: str, fn: Callable[[], Any], **config: Any) -> Callable[[], Any]:
    def run() -> Any:
        with dask.config.set(scheduler=scheduler, **config):
            return fn()

    return run


class Bench:
    """The three cases on one volume, each on threads (baseline) and on the cluster."""

    def __init__(self, table: Table, profiles: list[Profile], client: Client, case: Case,
                 args: argparse.Namespace) -> None:
        self.table, self.profiles, self.client, self.case = table, profiles, client, case
        self.repeats = args.repeats
        self.threads = args.workers * args.threads
        self.distributed = f"distributed {args.workers} procs x {args.threads} thread{'s' * (args.threads > 1)}"
        self.label = f"{case.kind} {args.size}^3"
        self.source = open_dask(case.url, chunk_bytes=args.chunk_bytes)
        self.chunks = self.source.npartitions

    def threaded(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        return on("threads", fn, num_workers=self.threads)

    def add(self, group: str, name: str, fn: Callable[[], Any], nbytes: int, note: str = "") -> float:
        baseline = "" if name == BASELINE else BASELINE
        return self.table.add(group, name, timed(fn, self.repeats), nbytes, baseline, note).seconds

    def compare(self, case: str, group: str, fn: Callable[[], Any], nbytes: int, note: str = "") -> None:
        """Time ``fn`` on threads, then on the cluster; profile one more run on the cluster."""
        base = self.add(group, BASELINE, self.threaded(fn), nbytes, note)
        self.add(group, self.distributed, on("dask.distributed", fn), nbytes)
        self.profiles.append(profile(case, on("dask.distributed", fn), self.client, self.chunks, self.threads, base))

    def reduce(self) -> None:
        """(a) the sum of the volume less one block on every face."""
        data, size, b = self.case.data, self.case.data.shape[0], self.case.block
        region = (slice(b, size - b),) * 3
        expected = int(data[region].sum(dtype=np.uint64))
        source = self.source

        def total() -> int:
            return int(source[region].sum().compute())

        for run in (self.threaded(total), on("dask.distributed", total)):
            if run() != expected:
                raise RuntimeError(f"(a) {self.case.kind}: a dask sum differs from numpy's")
        note = f"dask chunks {source.chunksize}, {source.npartitions} chunk(s)"
        self.compare(f"(a) {self.case.kind}", f"(a) sum of {self.label} region", total, data[region].nbytes, note)

    def write(self) -> None:
        """(b) to_dvid of an array persisted on the scheduler under test, into fresh instances."""
        urls = self.case.fresh_urls(2 * self.repeats + 6)  # warm-ups, the check and the profiled run included
        on_threads = self.source.persist(scheduler="threads", num_workers=self.threads)  # type: ignore[no-untyped-call]
        on_cluster = self.client.persist(self.source)
        wait(on_cluster)
        checked = next(urls)
        on("dask.distributed", lambda: to_dvid(on_cluster, checked))()
        if not np.array_equal(open_dask(checked).compute(scheduler="threads"), self.case.data):
            raise RuntimeError(f"(b) {self.case.kind}: what to_dvid wrote on distributed differs from the source")
        group, nbytes = f"(b) to_dvid {self.label}", self.case.data.nbytes
        # The baseline writes the chunks persisted in this process, the cluster those on its workers.
        base = self.add(group, BASELINE, self.threaded(lambda: to_dvid(on_threads, next(urls))), nbytes,
                        "fresh instance per run")
        on_workers = on("dask.distributed", lambda: to_dvid(on_cluster, next(urls)))
        self.add(group, self.distributed, on_workers, nbytes)
        self.profiles.append(
            profile(f"(b) {self.case.kind}", on_workers, self.client, self.chunks, self.threads, base)
        )

    def read(self) -> None:
        """(c) the whole volume into the client, plus two probes of faster distributed reads."""
        source, data = self.source, self.case.data
        for run in (self.threaded(source.compute), on("dask.distributed", source.compute),
                    gathering_direct(self.client, source.compute), lambda: assemble_on_client(self.client, source)):
            if not np.array_equal(run(), data):
                raise RuntimeError(f"(c) {self.case.kind}: a read differs from what was written")
        group = f"(c) compute {self.label} to client"
        self.compare(f"(c) {self.case.kind}", group, source.compute, data.nbytes,
                     "DvidArray fast path on threads; dask's assembly on distributed")
        self.add(group, "probe: Client(direct_to_workers=True)", gathering_direct(self.client, source.compute),
                 data.nbytes, "dask's assembly, result fetched from the worker, not relayed by the scheduler")
        self.add(group, "probe: chunks gathered direct, assembled on client",
                 lambda: assemble_on_client(self.client, source), data.nbytes, "not what dvid_store does today")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=384, help="edge of the cubic volume, a multiple of 64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the LocalCluster")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    parser.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES, help="open_dask's chunk_bytes")
    parser.add_argument("--only", choices=("uint8", "uint64"), help="run one volume")
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "distributed.json")
    args = parser.parse_args(argv)
    # Older dask warns whenever a local scheduler runs while a client exists; here that
    # is the point (the threaded baseline).
    warnings.filterwarnings("ignore", "Running on a single-machine scheduler", UserWarning)
    if args.size % 64 or args.size < 192:
        parser.error("--size must be a multiple of 64, at least 192")
    table = Table()
    profiles: list[Profile] = []
    with (
        DvidServer() as server,
        LocalCluster(
            n_workers=args.workers, threads_per_worker=args.threads, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        for kind in ("uint8", "uint64"):
            if args.only in (None, kind):
                bench = Bench(table, profiles, client, Case(server, kind, args.size), args)
                bench.reduce()
                bench.write()
                bench.read()
    print()
    print(table.markdown())
    print("\nWhat limits each case on distributed (one profiled run each, distributed task stream):")
    for p in profiles:
        print(f"  {p.case}: {p.explanation}")
    meta = {
        "size": args.size, "repeats": args.repeats, "workers": args.workers, "threads_per_worker": args.threads,
        "chunk_bytes": args.chunk_bytes, "python": sys.version.split()[0], "machine": platform.machine(),
        "dvid_store": dvid_store.__version__, "dask": version("dask"), "distributed": version("distributed"),
        "profiles": [asdict(p) for p in profiles],
    }
    table.save(args.json, meta)
    print(f"\nsaved {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
