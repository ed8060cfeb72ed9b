"""Labels at many points: batched and threaded (``labels_at_points``) vs one request (``labels_at``).

Run from the repository root::

    .venv/bin/python benchmarks/bench_points.py [--points 100000] [--repeats 3] [--size 256]

Starts a throwaway DVID server, writes a ``size``³ labelmap, draws ``--points``
random voxels inside it and times, in the same run on the same points:

* baseline: :meth:`Labelmap.labels_at`, all points in one ``GET /labels``;
* :meth:`Labelmap.labels_at_points` with a few batch sizes and worker counts.

Each figure is the median of ``--repeats`` runs, as points per second, with its
ratio to the baseline (above 1 is faster). Both forms must give the same labels.
``--latency`` adds a delay to every request through a loopback FaultProxy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from harness import segmentation_volume, timed

import dvid_store
from dvid_store.datatypes.labels import Labelmap
from dvid_store.testing import DvidServer, FaultProxy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=256, help="edge of the labelmap cube, a multiple of 64")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    args = parser.parse_args(argv)

    with DvidServer() as server, FaultProxy(server.url) as proxy:
        proxy.latency = args.latency
        node = server.client().create_repo("bench-points")
        Labelmap.create(node, "seg")
        shape = (args.size,) * 3
        volume = segmentation_volume(shape)
        Labelmap(node, "seg").write(volume, (0, 0, 0), downres=False)

        seg = Labelmap(dvid_store.DvidClient(proxy.address).node(node.uuid), "seg")
        rng = np.random.default_rng(0)
        pts = rng.integers(0, args.size, size=(args.points, 3))
        expected = volume[pts[:, 0], pts[:, 1], pts[:, 2]]

        print(f"{args.points} points in a {args.size}³ labelmap, latency {args.latency} s, "
              f"{os.cpu_count()} cores, median of {args.repeats}")
        one = seg.labels_at(pts)
        if not np.array_equal(one, expected):
            raise SystemExit("labels_at answered wrong labels")
        base_runs = timed(lambda: seg.labels_at(pts), repeats=args.repeats)
        base = statistics.median(base_runs)
        print(f"  {'labels_at (one request)':<44} {args.points / base:12,.0f} points/s  x 1.00")
        for batch, workers in ((10_000, 4), (5_000, 4), (10_000, 8), (2_000, 8), (10_000, 1)):
            got = seg.labels_at_points(pts, batch_size=batch, max_workers=workers)
            if not np.array_equal(got.to_numpy(), expected):
                raise SystemExit("labels_at_points answered wrong labels")
            runs = timed(lambda b=batch, w=workers: seg.labels_at_points(pts, batch_size=b, max_workers=w),
                         repeats=args.repeats)
            t = statistics.median(runs)
            name = f"labels_at_points batch {batch}, {workers} workers"
            print(f"  {name:<44} {args.points / t:12,.0f} points/s  x{base / t:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
