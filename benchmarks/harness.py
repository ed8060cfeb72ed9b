"""Shared machinery of the benchmarks: timing, ratios, tables, test volumes, raw-HTTP baselines.

Every figure is a median of several runs and is reported next to a baseline measured in
the same run on the same data, because the machine is shared and noisy: only ratios
carry over between runs.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests

from dvid_store.testing.samples import SAMPLE_VOLUMES, sample_volume


@dataclass
class Result:
    """One measured figure and its ratio to the baseline of its group."""

    group: str
    name: str
    seconds: float
    nbytes: int
    baseline: str
    ratio: float | None = None  # baseline seconds / these seconds: > 1 means faster than baseline
    runs: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / self.seconds / 1e6


def timed(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return runs


class Table:
    """Results grouped by what they compare, each group with its baseline first."""

    def __init__(self) -> None:
        self.results: list[Result] = []

    def add(self, group: str, name: str, runs: list[float], nbytes: int, baseline: str, note: str = "") -> Result:
        result = Result(group, name, statistics.median(runs), nbytes, baseline, runs=runs, note=note)
        base = next((r for r in self.results if r.group == group and r.name == baseline), None)
        result.ratio = (base.seconds / result.seconds) if base else 1.0
        self.results.append(result)
        print(f"  {group:<28} {name:<44} {result.mb_per_s:9.0f} MB/s  x{result.ratio:5.2f}  {note}", flush=True)
        return result

    def add_value(self, group: str, name: str, value: float, baseline_value: float, note: str = "") -> Result:
        """A non-time figure (e.g. peak memory / result size); ratio = value / baseline_value."""
        result = Result(group, name, value, 0, "", ratio=value / baseline_value, note=note)
        self.results.append(result)
        print(f"  {group:<28} {name:<44} {value / 1e6:9.0f} MB     x{result.ratio:5.2f}  {note}", flush=True)
        return result

    def markdown(self) -> str:
        lines = ["| group | measurement | MB/s | ratio to baseline | note |", "| --- | --- | ---: | ---: | --- |"]
        for r in self.results:
            rate = f"{r.mb_per_s:.0f}" if r.nbytes else f"{r.seconds / 1e6:.0f} MB"
            lines.append(f"| {r.group} | {r.name} | {rate} | {r.ratio:.2f} | {r.note} |")
        return "\n".join(lines)

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in self.results]}, indent=2))


# ------------------------------------------------------------------ test volumes


def grayscale_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """EM-like uint8 data: smooth structure plus noise (neither constant nor white noise)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    smooth = 96 + 48 * np.sin(x / 17.0) * np.cos(y / 23.0) + 32 * np.sin(z / 11.0)
    noise = rng.normal(0, 12, shape)
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def sample_blocks() -> list[np.ndarray]:
    """The real 64³ segmentation samples from shared/testdata."""
    return [sample_volume(name) for name in SAMPLE_VOLUMES]


def segmentation_volume(shape: tuple[int, int, int]) -> np.ndarray:
    """A label volume tiled from the real 64³ samples, relabelled so no label spans two tiles."""
    blocks = sample_blocks()
    out = np.empty(shape, np.uint64)
    grid = [s // 64 for s in shape]
    index = 0
    for bz in range(grid[0]):
        for by in range(grid[1]):
            for bx in range(grid[2]):
                block = blocks[index % len(blocks)]
                _, inverse = np.unique(block, return_inverse=True)
                relabelled = (inverse.reshape(block.shape) + 1 + index * 10_000).astype(np.uint64)
                out[bz * 64 : (bz + 1) * 64, by * 64 : (by + 1) * 64, bx * 64 : (bx + 1) * 64] = relabelled
                index += 1
    return out


# ------------------------------------------------------------- raw-HTTP baselines


def raw_url(server_url: str, uuid: str, instance: str, shape: tuple[int, ...], offset: tuple[int, ...]) -> str:
    size = "_".join(str(v) for v in reversed(shape))
    start = "_".join(str(v) for v in reversed(offset))
    return f"{server_url}/api/node/{uuid}/{instance}/raw/0_1_2/{size}/{start}"


def stream_into(url: str, out: np.ndarray, params: dict[str, str] | None = None) -> np.ndarray:
    """The cheapest raw GET: one request, body streamed into a preallocated array."""
    view = memoryview(out.reshape(-1).view(np.uint8))
    with requests.get(url, params=params, stream=True, timeout=600) as response:
        response.raise_for_status()
        pos = 0
        for chunk in response.iter_content(1 << 20):
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
    if pos != out.nbytes:
        raise RuntimeError(f"expected {out.nbytes} bytes, got {pos}")
    return out


def peak_memory_of(code: str) -> tuple[int, int]:
    """Run ``code`` in a fresh interpreter; return (peak RSS growth in bytes, result nbytes).

    ``code`` must set ``result`` (a numpy array). The growth is the peak resident set
    size during ``code`` (``VmHWM``, reset just before) minus the resident size just
    before it, so the interpreter and its imports are excluded.
    """
    # VmHWM (unlike ru_maxrss, which survives exec and so inherits the benchmark's own
    # peak) belongs to this process image; writing 5 to clear_refs resets it to VmRSS.
    wrapper = (
        "import re\n"
        "import numpy, dask.array, requests, zarr\n"
        "import dvid_store\n"
        "def status(key):\n"
        "    return int(re.search(key + r':\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) * 1024\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = status('VmRSS')\n"
        f"{code}\n"
        "after = status('VmHWM')\n"
        "print(after - before, result.nbytes)\n"
    )
    output = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, check=True).stdout
    grown, nbytes = output.split()[-2:]
    return int(grown), int(nbytes)
