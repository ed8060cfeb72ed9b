"""Sweep dvid_store's performance knobs against a throwaway local DVID.

Run from the repository root::

    python benchmarks/bench_tuning.py [--size 384] [--repeats 3] [--json benchmarks/results/tuning.json]

Each figure is the median of ``--repeats`` runs (after one warm-up) of one transfer of a
``size``³ region, reported as a ratio to the current default of the same knob measured
in the same run, the settings taking turns (above 1: faster than the default). The knobs:

a. blocks per request (``max_blocks``, with ``max_bytes`` raised so that it binds) of
   zarr-store reads, uint8 grayscale and uint64 labels;
b. read transfer encodings: labels ``blocks`` / ``lz4`` / ``uncompressed`` (bodies and
   supervoxels), grayscale ``uncompressed`` / ``stored`` (LZ4), through ``open_dask``;
c. the default dask chunk size (``chunk_bytes``: 16, 64, 256 MiB), reads and ``to_dvid``;
d. the zarr path's I/O threads (``DVID_STORE_IO_THREADS`` / ``set_io_threads``);
e. writes: labelmap body encoding (lz4 vs none) and the voxels per ``POST /raw``
   (``max_write_voxels``), through ``to_dvid``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import dask
import dask.array as da
import zarr
from harness import grayscale_volume, segmentation_volume

import dvid_store
import dvid_store.blocks as blocks
import dvid_store.dask as dvid_dask
from dvid_store.dask import default_chunks, open_dask, to_dvid
from dvid_store.testing import DvidServer
from dvid_store.zarr import coalesce

MiB = 1 << 20


def median_times(settings: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per setting; the settings take turns in each round, so that load
    from elsewhere on a shared machine falls on all of them alike."""
    for fn in settings.values():
        fn()
    runs: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(repeats):
        for name, fn in settings.items():
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in runs.items()}


@contextmanager
def patched(module: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


class Sweep:
    """Rows of (knob, setting, seconds, ratio to the default setting of that knob)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def run(self, knob: str, settings: dict[str, Callable[[], Any]], default: str, nbytes: int, repeats: int) -> None:
        times = median_times(settings, repeats)
        for name, seconds in times.items():
            row = {"knob": knob, "setting": name, "default": name == default, "seconds": seconds,
                   "mb_per_s": nbytes / seconds / 1e6, "ratio": times[default] / seconds}
            self.rows.append(row)
            mark = "*" if row["default"] else " "
            print(f"  {knob:<40} {mark}{name:<22} {row['mb_per_s']:8.0f} MB/s  x{row['ratio']:5.2f}", flush=True)

    def markdown(self) -> str:
        lines = ["| knob | setting | MB/s | ratio to default |", "| --- | --- | ---: | ---: |"]
        for r in self.rows:
            name = f"**{r['setting']}** (default)" if r["default"] else r["setting"]
            lines.append(f"| {r['knob']} | {name} | {r['mb_per_s']:.0f} | {r['ratio']:.2f} |")
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=384, help="edge of the cubic region, a multiple of 64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "tuning.json")
    args = parser.parse_args(argv)
    size, repeats = args.size, args.repeats
    shape = (size, size, size)
    gray = grayscale_volume(shape)
    labels = segmentation_volume(shape)
    sweep = Sweep()
    started = time.perf_counter()
    with DvidServer() as server:
        node = server.client().create_repo("tuning")
        dvid_store.Voxels.create(node, "gray", np.uint8, block_size=(32, 32, 32))
        blocks.BlockIO.open(node, "gray").write_box(gray, (0, 0, 0))
        dvid_store.Labelmap.create(node, "seg")
        node.labelmap("seg").write(labels, (0, 0, 0), downres=False)
        volumes = {"uint8": ("gray", gray), "labels": ("seg", labels)}

        # a. blocks per request, zarr reads
        for kind, (name, data) in volumes.items():
            block_nbytes = (32**3 if kind == "uint8" else 64**3) * data.itemsize

            def zarr_read(n: int, name: str = name, block_nbytes: int = block_nbytes) -> Callable[[], Any]:
                store = dvid_store.DvidStore(node, name, scale=0, read_only=True, max_blocks=n,
                                             max_bytes=max(blocks.DEFAULT_MAX_BYTES, n * block_nbytes))
                array = zarr.open_array(store, mode="r")
                return lambda: array[...]

            default = blocks.BlockIO.open(node, name).blocks_per_request
            counts = sorted({16, 64, 256, 1024, 4096, default})
            sweep.run(f"zarr read {kind}: blocks per request", {str(n): zarr_read(n) for n in counts},
                      str(default), data.nbytes, repeats)

        # b. read transfer encodings, open_dask
        for sv in (False, True):
            what = "supervoxels" if sv else "bodies"
            sweep.run(f"dask read labels ({what}): compression",
                      {c: open_dask(node, "seg", supervoxels=sv, compression=c).compute
                       for c in ("blocks", "lz4", "uncompressed")},
                      blocks.DEFAULT_READ_COMPRESSION["labelmap"], labels.nbytes, repeats)
        sweep.run("dask read uint8: compression",
                  {c: open_dask(node, "gray", compression=c).compute for c in ("uncompressed", "stored")},
                  blocks.DEFAULT_READ_COMPRESSION["imageblk"], gray.nbytes, repeats)
        # uint8 stored as gzip or jpeg: DVID decompresses ("uncompressed") or sends its
        # stored payload for the client to decode ("stored").
        for stored in ("gzip", "jpeg"):
            name = f"gray_{stored}"
            dvid_store.Voxels.create(node, name, np.uint8, block_size=(32, 32, 32), compression=stored)
            blocks.BlockIO.open(node, name).write_box(gray, (0, 0, 0))
            sweep.run(f"dask read uint8 stored as {stored}: compression",
                      {c: open_dask(node, name, compression=c).compute for c in ("uncompressed", "stored")},
                      blocks.BlockIO.open(node, name).compression, gray.nbytes, repeats)

        # c. default dask chunk size, reads and writes
        counter = iter(range(100_000))

        def fresh(kind: str) -> str:
            name = f"w{next(counter)}"
            if kind == "uint8":
                dvid_store.Voxels.create(node, name, np.uint8, block_size=(32, 32, 32))
            else:
                dvid_store.Labelmap.create(node, name, indexed_labels=False)
            return name

        def writer(kind: str, chunk_bytes: int = dvid_dask.DEFAULT_CHUNK_BYTES) -> Callable[[], Any]:
            data = volumes[kind][1]
            bs = (32,) * 3 if kind == "uint8" else (64,) * 3
            array = da.from_array(data, chunks=default_chunks(shape, bs, data.itemsize, chunk_bytes), name=False)
            return lambda: to_dvid(array, node, fresh(kind), offset=(0, 0, 0))

        chunk_choices = {f"{n} MiB": n * MiB for n in (16, 64, 256)}
        default_chunk = f"{dvid_dask.DEFAULT_CHUNK_BYTES // MiB} MiB"
        for kind, (name, data) in volumes.items():
            sweep.run(f"dask read {kind}: chunk_bytes",
                      {k: open_dask(node, name, chunk_bytes=v).compute for k, v in chunk_choices.items()},
                      default_chunk, data.nbytes, repeats)
            sweep.run(f"to_dvid {kind}: chunk_bytes", {k: writer(kind, v) for k, v in chunk_choices.items()},
                      default_chunk, data.nbytes, repeats)

        # d. zarr io threads
        default_threads = coalesce.io_threads()
        for kind, (name, data) in volumes.items():
            array = zarr.open_array(dvid_store.DvidStore(node, name, scale=0, read_only=True), mode="r")

            def zarr_threads(n: int, array: Any = array) -> Callable[[], Any]:
                def run() -> Any:
                    coalesce.set_io_threads(n)
                    try:
                        return array[...]
                    finally:
                        coalesce.set_io_threads(None)
                return run

            sweep.run(f"zarr read {kind}: io threads",
                      {str(n): zarr_threads(n) for n in sorted({1, 2, 4, 8, 16, default_threads})},
                      str(default_threads), data.nbytes, repeats)

        # e. writes: label body encoding, voxels per POST /raw, dask threads
        def with_setting(module: Any, attr: str, value: Any, fn: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> Any:
                with patched(module, attr, value):
                    return fn()
            return run

        label_write = writer("labels")
        sweep.run("to_dvid labels: body compression",
                  {c: with_setting(blocks, "DEFAULT_LABEL_WRITE_COMPRESSION", c, label_write) for c in ("lz4", "none")},
                  blocks.DEFAULT_LABEL_WRITE_COMPRESSION, labels.nbytes, repeats)
        # BlockIO reads the default at construction: patch it around each to_dvid call
        init_defaults = blocks.BlockIO.__init__.__kwdefaults__
        for kind, (_, data) in volumes.items():
            fn = writer(kind)

            def capped(voxels: int, fn: Callable[[], Any] = fn) -> Callable[[], Any]:
                def run() -> Any:
                    old = init_defaults["max_write_voxels"]
                    init_defaults["max_write_voxels"] = voxels
                    try:
                        return fn()
                    finally:
                        init_defaults["max_write_voxels"] = old
                return run

            sweep.run(f"to_dvid {kind}: max_write_voxels",
                      {f"{v}^3": capped(v**3) for v in (128, 256, 512)},
                      f"{round(blocks.DEFAULT_MAX_WRITE_VOXELS ** (1 / 3))}^3", data.nbytes, repeats)

            def threads(n: int, fn: Callable[[], Any] = fn) -> Callable[[], Any]:
                def run() -> Any:
                    with dask.config.set(scheduler="threads", num_workers=n):
                        return fn()
                return run

            cores = os.cpu_count() or 1
            sweep.run(f"to_dvid {kind}: dask threads", {str(n): threads(n) for n in sorted({1, 2, 4, 8, cores})},
                      str(cores), data.nbytes, repeats)

    elapsed = time.perf_counter() - started
    print()
    print(sweep.markdown())
    meta = {"size": size, "repeats": repeats, "python": sys.version.split()[0], "machine": platform.machine(),
            "cores": os.cpu_count(), "seconds": round(elapsed, 1), "dvid_store": dvid_store.__version__}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": sweep.rows}, indent=2))
    print(f"\nsaved {args.json} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
