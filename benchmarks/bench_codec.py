"""Throughput of the DVID label block codec on the shared 64^3 sample volumes.

Run from the repository root::

    python benchmarks/bench_codec.py [--repeats 15] [--number 50] [--json results.json]

For every sample volume it times, per 64^3 block:

* ``baseline``: ``zlib.decompress(gzip_level6(raw uint64 block), 31)``, i.e. what reading
  the same block as gzip'd raw voxels would cost;
* ``decode``: :func:`decode_label_block` of the (uncompressed) DVID encoding;
* ``decode_out``: the same into a preallocated strided view of a larger volume;
* ``decode_wire``: gunzip + decode of the wire form (``compression=blocks`` payloads)
  as this package writes it (gzip level :data:`DEFAULT_GZIP_LEVEL`); DVID stores and
  returns POSTed bytes verbatim, so this is what reads of such data cost;
* ``decode_wire6``: the same for a level-6 gzip wrapper, as DVID's own Go encoder
  writes (e.g. blocks it computes itself);
* ``encode`` and ``encode_wire`` (encoding plus gzip at the default level).

Figures are the median over ``--repeats`` runs of ``--number`` calls each, reported as
microseconds per block, MB/s of uint64 voxels (decoded or encoded), and the speed-up
over the baseline measured in the same run. This is a script, not a test.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dvid_store.codecs import (
    DEFAULT_GZIP_LEVEL,
    decode_gzipped_label_block,
    decode_label_block,
    encode_gzipped_label_block,
    encode_label_block,
)
from dvid_store.testing.samples import SAMPLE_VOLUMES, sample_volume

CASES = (
    "baseline",
    "decode",
    "decode_out",
    "decode_wire",
    "decode_wire6",
    "encode",
    "encode_wire",
)
def median_seconds(func: Callable[[], object], repeats: int, number: int) -> float:
    """Median wall time of one call, over ``repeats`` batches of ``number`` calls."""
    func()  # warm caches and allocator
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            func()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times)


def bench_sample(sample: str, repeats: int, number: int) -> dict[str, object]:
    raw = sample_volume(sample)
    nbytes = raw.nbytes
    baseline_gz = gzip.compress(raw.tobytes(), compresslevel=6)
    encoded = encode_label_block(raw)
    wire = encode_gzipped_label_block(raw)
    wire6 = encode_gzipped_label_block(raw, level=6)
    big = np.zeros((128, 128, 128), dtype=np.uint64)
    view = big[64:, 32:96, 64:]
    assert np.array_equal(decode_label_block(encoded), raw)
    assert np.array_equal(decode_gzipped_label_block(wire), raw)

    cases: dict[str, Callable[[], object]] = {
        "baseline": lambda: zlib.decompress(baseline_gz, 31),
        "decode": lambda: decode_label_block(encoded),
        "decode_out": lambda: decode_label_block(encoded, out=view),
        "decode_wire": lambda: decode_gzipped_label_block(wire),
        "decode_wire6": lambda: decode_gzipped_label_block(wire6),
        "encode": lambda: encode_label_block(raw),
        "encode_wire": lambda: encode_gzipped_label_block(raw),
    }
    # Interleave the cases round-robin so that machine noise hits them alike.
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, func in cases.items():
            n = number if not name.startswith("encode") else max(1, number // 4)
            samples[name].append(median_seconds(func, 1, n))
    timings = {name: statistics.median(values) for name, values in samples.items()}
    base = timings["baseline"]
    result: dict[str, object] = {
        "sample": f"{sample}.dat.gz",
        "labels": int(np.unique(raw).size),
        "encoded_bytes": len(encoded),
        "wire_bytes": len(wire),
        "baseline_gzip_bytes": len(baseline_gz),
    }
    for name, seconds in timings.items():
        result[name] = {
            "us": seconds * 1e6,
            "MB_per_s": nbytes / seconds / 1e6,
            "speedup_vs_baseline": base / seconds,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed batches per case")
    parser.add_argument("--number", type=int, default=40, help="calls per batch")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)

    results = []
    print(
        f"{'sample':26s} {'case':12s} {'us/block':>9s} {'MB/s':>8s} {'x baseline':>10s}"
    )
    for name in SAMPLE_VOLUMES:
        res = bench_sample(name, args.repeats, args.number)
        results.append(res)
        for case in CASES:
            r = res[case]
            assert isinstance(r, dict)
            print(
                f"{name:26s} {case:12s} {r['us']:9.0f} {r['MB_per_s']:8.0f} "
                f"{r['speedup_vs_baseline']:10.2f}"
            )
        print(
            f"{'':26s} sizes: DVID {res['encoded_bytes']} B, wire {res['wire_bytes']} B "
            f"(gzip level {DEFAULT_GZIP_LEVEL}), gzip-6 raw {res['baseline_gzip_bytes']} B"
        )
    if args.json:
        payload = {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "machine": platform.machine(),
            "repeats": args.repeats,
            "number": args.number,
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
