"""Reads and writes through dvid_store against the cheapest raw HTTP transfer of the same data.

Run from the repository root (or use ``ci/bench``)::

    python benchmarks/bench_transfers.py [--size 512] [--repeats 3] [--json benchmarks/results/transfers.json]

Against a throwaway local DVID it measures, each a median of ``--repeats`` runs:

1. a ``size``³ uint8 grayscale region read with ``open_dask(...).compute()`` and through
   the zarr store, vs one ``GET /raw`` streamed into a preallocated array (baseline),
   vs intern's ``DVIDRemote.get_cutout`` (when intern is installed);
2. a ``size``³ uint64 segmentation region (tiled from the real sample blocks, relabelled
   so labels differ between blocks) read through dask as bodies and as supervoxels, vs
   ``GET /raw`` uncompressed (baseline) and ``GET /raw?compression=lz4`` + decompression;
3. both volumes written with ``to_dvid`` vs one block-aligned ``POST /raw`` of the data;
4. peak memory of each dask read as a ratio to the size of the result.

Ratios are the baseline's median time over the measured one: above 1 is faster.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import lz4.block
import numpy as np
import requests

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import dask
from harness import (
    Table,
    grayscale_volume,
    peak_memory_of,
    raw_url,
    segmentation_volume,
    stream_into,
    timed,
)

import dvid_store
from dvid_store.dask import open_dask, to_dvid
from dvid_store.testing import DvidServer


def post_raw(url: str, data: np.ndarray, params: dict[str, str] | None = None) -> None:
    response = requests.post(url, data=memoryview(data.reshape(-1).view(np.uint8)), params=params, timeout=600)
    response.raise_for_status()


def bench_grayscale(table: Table, server: DvidServer, size: int, repeats: int) -> None:
    shape = (size, size, size)
    gray = grayscale_volume(shape)
    node = server.client().create_repo("bench-gray")
    dvid_store.Voxels.create(node, "grayscale", np.uint8, block_size=(32, 32, 32))
    url = raw_url(server.url, node.uuid, "grayscale", shape, (0, 0, 0))
    post_raw(url, gray)
    group = f"read {size}^3 uint8"
    out = np.empty(shape, np.uint8)
    table.add(group, "GET /raw streamed (baseline)", timed(lambda: stream_into(url, out), repeats), gray.nbytes, "")
    base = "GET /raw streamed (baseline)"
    dvid_url = f"dvid://{server.url.split('://')[1]}/{node.uuid}/grayscale"
    array = open_dask(dvid_url)
    assert np.array_equal(array.compute(), gray), "dask read differs from what was written"
    table.add(group, "open_dask(...).compute()", timed(array.compute, repeats), gray.nbytes, base,
              note=f"dask chunks {array.chunksize}")
    import zarr

    zarray = zarr.open_array(dvid_store.DvidStore(node, "grayscale", scale=0, read_only=True), mode="r")
    table.add(group, "zarr array [...] (DvidStore)", timed(lambda: zarray[...], repeats), gray.nbytes, base)
    try:
        from intern.remote.dvid import DVIDRemote
    except ImportError:
        print("  (intern is not installed: pip install intern, or the bench extra)")
    else:
        remote = DVIDRemote({"protocol": "http", "host": server.url.split("://")[1]})
        resource = remote.get_instance(node.uuid, "grayscale", datatype="uint8")
        cutout = lambda: remote.get_cutout(resource, 0, [0, size], [0, size], [0, size])  # noqa: E731
        assert np.array_equal(cutout(), gray)
        intern_result = table.add(group, "intern DVIDRemote.get_cutout", timed(cutout, repeats), gray.nbytes, base)
        dask_result = next(r for r in table.results if r.group == group and r.name.startswith("open_dask"))
        intern_result.note = f"open_dask is x{intern_result.seconds / dask_result.seconds:.2f} intern's throughput"

    write_group = f"write {size}^3 uint8"
    counter = iter(range(10_000))

    def fresh_instance() -> str:
        name = f"w{next(counter)}"
        dvid_store.Voxels.create(node, name, np.uint8, block_size=(32, 32, 32))
        return name

    def raw_write() -> None:
        post_raw(raw_url(server.url, node.uuid, fresh_instance(), shape, (0, 0, 0)), gray)

    # The dask array is built once, outside the timer, as a user's array would exist
    # already (from_array would otherwise hash the whole input on every run).
    gray_source = dask.array.from_array(gray, chunks=array.chunksize, name=False)

    def dask_write() -> None:
        to_dvid(gray_source, node, fresh_instance(), offset=(0, 0, 0))

    table.add(write_group, "POST /raw (baseline)", timed(raw_write, repeats), gray.nbytes, "")
    table.add(write_group, "to_dvid(dask array)", timed(dask_write, repeats), gray.nbytes, "POST /raw (baseline)")

    code = (
        "from dvid_store.dask import open_dask\n"
        f"result = open_dask({dvid_url!r}).compute()\n"
    )
    grown, nbytes = peak_memory_of(code)
    table.add_value(f"peak memory, read {size}^3 uint8", "open_dask(...).compute() / result size", grown, nbytes)


def bench_labels(table: Table, server: DvidServer, size: int, repeats: int) -> None:
    shape = (size, size, size)
    labels = segmentation_volume(shape)
    node = server.client().create_repo("bench-labels")
    dvid_store.Labelmap.create(node, "segmentation")
    url = raw_url(server.url, node.uuid, "segmentation", shape, (0, 0, 0))
    # Ingest through the client (POST /blocks: synchronous indexing), so that no
    # background label indexing competes with the timed reads.
    seg = node.labelmap("segmentation")
    seg.write(labels, (0, 0, 0), downres=False)
    group = f"read {size}^3 uint64 labels"
    out = np.empty(shape, np.uint64)
    base = "GET /raw uncompressed (baseline)"
    table.add(group, base, timed(lambda: stream_into(url, out), repeats), labels.nbytes, "")

    def raw_lz4() -> np.ndarray:
        response = requests.get(url, params={"compression": "lz4"}, timeout=600)
        response.raise_for_status()
        return np.frombuffer(lz4.block.decompress(response.content, uncompressed_size=labels.nbytes), np.uint64)

    table.add(group, "GET /raw?compression=lz4 + lz4", timed(raw_lz4, repeats), labels.nbytes, base)
    dvid_url = f"dvid://{server.url.split('://')[1]}/{node.uuid}/segmentation"
    bodies = open_dask(dvid_url)
    svs = open_dask(dvid_url, supervoxels=True)
    assert np.array_equal(bodies.compute(), labels), "dask label read differs from what was written"
    table.add(group, "open_dask(...).compute() bodies", timed(bodies.compute, repeats), labels.nbytes, base,
              note=f"dask chunks {bodies.chunksize}")
    table.add(group, "open_dask(..., supervoxels=True)", timed(svs.compute, repeats), labels.nbytes, base)

    write_group = f"write {size}^3 uint64 labels"
    counter = iter(range(10_000))

    def fresh_instance() -> str:
        name = f"w{next(counter)}"
        dvid_store.Labelmap.create(node, name, indexed_labels=False)
        return name

    def raw_write() -> None:
        post_raw(raw_url(server.url, node.uuid, fresh_instance(), shape, (0, 0, 0)), labels)

    label_source = dask.array.from_array(labels, chunks=bodies.chunksize, name=False)

    def dask_write() -> None:
        to_dvid(label_source, node, fresh_instance(), offset=(0, 0, 0))

    table.add(write_group, "POST /raw (baseline)", timed(raw_write, repeats, warmup=0), labels.nbytes, "",
              note="instances without label indexing")
    table.add(write_group, "to_dvid(dask array)", timed(dask_write, repeats, warmup=0), labels.nbytes,
              "POST /raw (baseline)")

    for name, extra in (("bodies", ""), ("supervoxels", ", supervoxels=True")):
        code = "from dvid_store.dask import open_dask\n" f"result = open_dask({dvid_url!r}{extra}).compute()\n"
        grown, nbytes = peak_memory_of(code)
        table.add_value(f"peak memory, read {size}^3 labels", f"{name} / result size", grown, nbytes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="edge of the cubic region, a multiple of 64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "transfers.json")
    parser.add_argument("--only", choices=("grayscale", "labels"), help="run one half")
    args = parser.parse_args(argv)
    table = Table()
    with DvidServer() as server:
        if args.only in (None, "grayscale"):
            bench_grayscale(table, server, args.size, args.repeats)
        if args.only in (None, "labels"):
            bench_labels(table, server, args.size, args.repeats)
    print()
    print(table.markdown())
    meta = {"size": args.size, "repeats": args.repeats, "python": sys.version.split()[0],
            "machine": platform.machine(), "dvid_store": dvid_store.__version__}
    table.save(args.json, meta)
    print(f"\nsaved {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
