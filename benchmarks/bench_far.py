"""Every read and write path, near and far: ratios to the raw transfer through the same modelled link.

Run from the repository root (``ci/bench`` runs it too)::

    python benchmarks/bench_far.py [--size 384] [--repeats 3] [--links 0,10,40,1gbit]

A throwaway local DVID sits behind :class:`linkproxy.LinkProxy` (a relay in a process of
its own), which adds a fixed delay to every request (one network round trip) or caps the
link's bandwidth. For
each link setting and each of a ``size``³ uint8 instance (32³ blocks) and a ``size``³
uint64 labelmap (64³ blocks), it measures, medians of ``--repeats`` runs:

* reads: one ``GET /raw`` streamed into an array (the baseline); ``open_dask(url)
  .compute()``; the xarray engine (``xr.open_dataset(url, chunks={})``); zarr through
  ``dvid://`` (``zarr.open_array(url + "/0")[...]``); ``xr.open_zarr(url)``;
  ``da.from_zarr(url + "/0")``;
* writes: one ``POST /raw`` of the box into a fresh instance (the baseline);
  ``to_dvid`` of a dask array; zarr ``array[...] = data`` through ``dvid://``.

Every path goes through the proxy, and every read is checked against what was written.
Ratios are baseline seconds / measured seconds: at or above 1, the path is as fast as
the raw transfer over the same link.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import dask.array as da
import xarray as xr
import zarr
from harness import Table, grayscale_volume, raw_url, segmentation_volume, stream_into, timed
from linkproxy import LinkProxy

import dvid_store
from dvid_store.dask import open_dask, to_dvid
from dvid_store.testing import DvidServer

LINKS = {"0": (0.0, None), "10": (0.010, None), "40": (0.040, None), "1gbit": (0.0, 125e6)}


def link_name(key: str) -> str:
    latency, bandwidth = LINKS[key]
    return "1 Gbit/s cap" if bandwidth else f"{latency * 1000:.0f} ms"


def post_raw(url: str, data: np.ndarray) -> None:
    response = requests.post(url, data=memoryview(data.reshape(-1).view(np.uint8)), timeout=600)
    response.raise_for_status()


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_note(run: Callable[[], Any], server: DvidServer, link: LinkProxy) -> str:
    """Where one more run's CPU goes: this process (client), DVID, the link proxy; and its wall time."""
    pids = (server.pid or 0, link.pid)
    before = (time.process_time(), *(process_cpu(p) for p in pids))
    start = time.perf_counter()
    run()
    wall = time.perf_counter() - start
    after = (time.process_time(), *(process_cpu(p) for p in pids))
    client, dvid, relay = (b - a for a, b in zip(before, after))
    return f"CPU s: client {client:.2f}, DVID {dvid:.2f}, link {relay:.2f}; wall {wall:.2f} s"


def checked(read: Callable[[], Any], expected: np.ndarray, what: str) -> Callable[[], Any]:
    """``read``, after one call that must return ``expected``."""
    got = np.asarray(read())
    if not np.array_equal(got, expected):
        raise AssertionError(f"{what} returned different voxels from those written")
    return read


def bench_volume(table: Table, server: DvidServer, link: LinkProxy, label: str, kind: str, size: int,
                 repeats: int, data: np.ndarray, fresh: Callable[[], str], name: str, node: Any) -> None:
    shape = data.shape
    host = link.address
    url = f"dvid://{host}/{node.uuid}/{name}"
    group = f"{label}: read {size}^3 {kind}"
    out = np.empty(shape, data.dtype)
    base = "GET /raw streamed (baseline)"
    raw = raw_url(link.url, node.uuid, name, shape, (0, 0, 0))
    array = open_dask(url)
    engine = xr.open_dataset(url, engine="dvid", chunks={})[name]
    zarray = zarr.open_array(url + "/0", mode="r")
    opened = xr.open_zarr(url, consolidated=False)["0"]
    from_zarr = da.from_zarr(url + "/0")
    reads: list[tuple[str, Callable[[], Any], str]] = [
        (base, lambda: stream_into(raw, out), ""),
        ("open_dask(url).compute()", array.compute, f"dask chunks {array.chunksize}"),
        ("xr.open_dataset(url, chunks={}).load()", lambda: engine.compute().values,
         f"dask chunks {engine.data.chunksize}"),
        ("zarr.open_array(url)[...]", lambda: zarray[...], f"zarr chunks {zarray.chunks}"),
        ("xr.open_zarr(url).load()", lambda: opened.compute().values, f"dask chunks {opened.data.chunksize}"),
        ("da.from_zarr(url).compute()", from_zarr.compute, f"dask chunks {from_zarr.chunksize}"),
        # dask runs one task per core: what the same array gives with more requests in flight
        ("da.from_zarr(url).compute(num_workers=8)", lambda: from_zarr.compute(num_workers=8),
         "dask's threads are the limit of the row above"),
    ]
    for what, read, note in reads:
        runs = timed(checked(read, data, what), repeats)
        table.add(group, what, runs, data.nbytes, "" if what == base else base,
                  note="; ".join(n for n in (note, cpu_note(read, server, link)) if n))

    write_group = f"{label}: write {size}^3 {kind}"
    table.add(write_group, "POST /raw (baseline)",
              timed(lambda: post_raw(raw_url(link.url, node.uuid, fresh(), shape, (0, 0, 0)), data), repeats, 0),
              data.nbytes, "")
    source = da.from_array(data, chunks=array.chunksize, name=False)
    table.add(write_group, "to_dvid(dask array, url)",
              timed(lambda: to_dvid(source, f"dvid://{host}/{node.uuid}/{fresh()}"), repeats, 0),
              data.nbytes, "POST /raw (baseline)")

    def zarr_write() -> None:
        target = zarr.open_array(f"dvid://{host}/{node.uuid}/{fresh()}/0", mode="r+")
        target[...] = data

    table.add(write_group, "zarr array[...] = data", timed(zarr_write, repeats, 0), data.nbytes,
              "POST /raw (baseline)")


def pivot(table: Table, links: list[str]) -> str:
    """Ratios as one row per volume and path, one column per link (the performance page's table)."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for r in table.results:
        link, _, what = r.group.partition(": ")
        key = (what.split(" ", 2)[2] + (" write" if what.startswith("write") else ""), r.name)
        rows.setdefault(key, {})[link] = r.ratio or 0.0
    lines = ["| volume | path | " + " | ".join(links) + " |", "| --- | --- |" + " ---: |" * len(links)]
    for (volume, name), ratios in rows.items():
        cells = " | ".join(f"{ratios[link]:.2f}" if link in ratios else "" for link in links)
        lines.append(f"| {volume} | {name} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=384, help="edge of the cubic region, a multiple of 64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--links", default="0,10,40,1gbit", help=f"comma-separated, of {', '.join(LINKS)}")
    parser.add_argument("--only", choices=("grayscale", "labels"), help="run one volume")
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "far.json")
    args = parser.parse_args(argv)
    links = args.links.split(",")
    shape = (args.size,) * 3
    table = Table()
    counter = count()
    with DvidServer() as server:
        node = server.client().create_repo("bench-far")
        volumes = []
        if args.only in (None, "grayscale"):
            gray = grayscale_volume(shape)
            dvid_store.create_array(node, "grayscale", shape, np.uint8, block_size=32)
            post_raw(raw_url(server.url, node.uuid, "grayscale", shape, (0, 0, 0)), gray)

            def fresh_gray() -> str:
                name = f"g{next(counter)}"
                dvid_store.create_array(node, name, shape, np.uint8, block_size=32)
                return name

            volumes.append(("uint8 (32^3 blocks)", gray, fresh_gray, "grayscale"))
        if args.only in (None, "labels"):
            labels = segmentation_volume(shape)
            dvid_store.create_array(node, "segmentation", shape, np.uint64, labels=True)
            node.labelmap("segmentation").write(labels, (0, 0, 0), downres=False)

            def fresh_labels() -> str:
                name = f"s{next(counter)}"
                dvid_store.create_array(node, name, shape, np.uint64, labels=True, indexed_labels=False)
                return name

            volumes.append(("uint64 labelmap (64^3 blocks)", labels, fresh_labels, "segmentation"))
        for key in links:
            latency, bandwidth = LINKS[key]
            with LinkProxy(server.url, latency=latency, bandwidth=bandwidth) as link:
                for kind, data, fresh, name in volumes:
                    bench_volume(table, server, link, link_name(key), kind, args.size, args.repeats, data, fresh,
                                 name, node)
    print()
    print(table.markdown())
    print()
    print(pivot(table, [link_name(k) for k in links]))
    meta = {"size": args.size, "repeats": args.repeats, "links": links, "python": sys.version.split()[0],
            "machine": platform.machine(), "dvid_store": dvid_store.__version__, "zarr": zarr.__version__}
    table.save(args.json, meta)
    print(f"\nsaved {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
