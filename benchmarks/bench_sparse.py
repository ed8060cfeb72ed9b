"""What confirming absent blocks costs on sparse volumes.

A block stream (``/specificblocks``) leaves absent blocks out and has no end marker, so
dvid_store confirms every block missing from an answer with a sized ``GET /raw``
before it reads as zeros (see ``BlockIO.read``). This measures that cost.

Run from the repository root::

    python benchmarks/bench_sparse.py [--size 256] [--repeats 3] [--latency 0,0.01]

For a uint8 (32³ blocks) and a labelmap (64³ blocks) instance with 100 %, 50 %, 10 % and
0 % of the blocks of a ``size``³ box present (chosen at random), each a median of
``--repeats`` runs of ``open_dask(...).compute()``:

* baseline: one ``GET /raw`` of the box (through the same proxy), streamed;
* ``open_dask`` as shipped (absent blocks confirmed);
* ``open_dask`` trusting the stream (confirmation switched off, the unsafe behaviour
  before it existed), to show what the confirmation itself costs.

Ratios are the baseline's median time over the measured one: above 1 is faster.
``--latency`` adds a delay to every request through a loopback FaultProxy.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import dask
import dask.array as da
from harness import Table, grayscale_volume, raw_url, segmentation_volume, stream_into, timed

import dvid_store
from dvid_store.blocks import BlockIO
from dvid_store.create import create_array
from dvid_store.dask import open_dask
from dvid_store.testing import DvidServer, FaultProxy


@contextmanager
def trusting_streams() -> Iterator[None]:
    """Blocks missing from a stream read as absent without confirmation (unsafe; for comparison)."""
    original = BlockIO._confirm_absent
    def assume_absent(
        self: BlockIO, coords: list[tuple[int, int, int]]
    ) -> Iterator[tuple[tuple[int, int, int], np.ndarray]]:
        zeros = np.zeros(self.block_shape, self.dtype)
        return ((c, zeros) for c in coords)

    BlockIO._confirm_absent = assume_absent  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        BlockIO._confirm_absent = original  # type: ignore[method-assign]


def sparse(data: np.ndarray, block: int, fraction: float, seed: int = 0) -> np.ndarray:
    """``data`` with all but ``fraction`` of its blocks zeroed (those are never written)."""
    grid = tuple(n // block for n in data.shape)
    keep = np.random.default_rng(seed).random(grid) < fraction
    mask = np.kron(keep, np.ones((block,) * 3, bool))
    return np.where(mask, data, 0).astype(data.dtype)


def bench(table: Table, server: DvidServer, proxy: FaultProxy, kind: str, size: int, repeats: int,
          latency: float) -> None:
    shape = (size, size, size)
    if kind == "uint8":
        full, block, dtype = grayscale_volume(shape), 32, "uint8"
    else:
        full, block, dtype = segmentation_volume(shape), 64, "uint64"
    direct = server.client().create_repo(f"bench-sparse-{kind}-{latency}")
    through_proxy = dvid_store.DvidClient(proxy.address).node(direct.uuid)
    for fraction in (1.0, 0.5, 0.1, 0.0):
        name = f"{kind}_{int(fraction * 100)}"
        create_array(direct, name, shape, dtype)
        data = sparse(full, block, fraction)
        io = BlockIO.open(direct, name)
        present = {
            (z, y, x): data[z * block : (z + 1) * block, y * block : (y + 1) * block, x * block : (x + 1) * block]
            for z in range(size // block) for y in range(size // block) for x in range(size // block)
            if data[z * block : (z + 1) * block, y * block : (y + 1) * block, x * block : (x + 1) * block].any()
        }
        io.write(present)
        group = f"{kind} {int(fraction * 100)}% +{latency * 1000:.0f}ms"
        out = np.empty(shape, data.dtype)
        url = raw_url(proxy.url, direct.uuid, name, shape, (0, 0, 0))
        table.add(group, "GET /raw (baseline)", timed(lambda url=url, out=out: stream_into(url, out), repeats),
                  data.nbytes, "GET /raw (baseline)")
        np.testing.assert_array_equal(out, data)
        array = open_dask(through_proxy, name, supervoxels=kind != "uint8")

        def read(array: da.Array = array, data: np.ndarray = data) -> None:
            np.testing.assert_array_equal(array.compute(), data)

        proxy.clear(log=True)
        table.add(group, "open_dask, absent blocks confirmed", timed(read, repeats), data.nbytes,
                  "GET /raw (baseline)", note=f"{len(proxy.log) // (repeats + 1)} requests per read")
        with trusting_streams():
            proxy.clear(log=True)
            table.add(group, "open_dask, stream trusted (unsafe)", timed(read, repeats), data.nbytes,
                      "GET /raw (baseline)", note=f"{len(proxy.log) // (repeats + 1)} requests per read")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="edge of the cubic region, a multiple of 64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency", default="0,0.01", help="comma-separated added latencies in seconds")
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "sparse.json")
    args = parser.parse_args(argv)
    table = Table()
    with DvidServer() as server, FaultProxy(server.url) as proxy, dask.config.set(scheduler="threads"):
        for latency in (float(v) for v in args.latency.split(",")):
            proxy.latency = latency
            for kind in ("uint8", "labels"):
                bench(table, server, proxy, kind, args.size, args.repeats, latency)
    print()
    print(table.markdown())
    meta = {"size": args.size, "repeats": args.repeats, "latency": args.latency,
            "python": sys.version.split()[0], "machine": platform.machine(), "dvid_store": dvid_store.__version__}
    table.save(args.json, meta)
    print(f"\nsaved {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
