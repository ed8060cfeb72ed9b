"""A region of a teravoxel instance costs what the region costs.

Run from the repository root::

    python benchmarks/bench_teravoxel.py [--size 512] [--repeats 3] [--json benchmarks/results/teravoxel.json]

For a uint64 labelmap (64³ blocks) and a uint8 grayscale instance (32³ blocks) it
creates, on a throwaway local DVID, a hemibrain-sized instance (34432 × 39552 × 41408
voxels: DVID stores nothing until written, so its size costs nothing) and a ``size``³
one, writes the same ``size``³ volume at the origin of both, and measures the
reduction of that box, ``[0:size, 0:size, 0:size].sum().compute()``:

* ``open_dask(url)[box]``, opening included (the baseline: the ``size``³ instance);
* ``open_dataarray(url, chunks={}).isel(box)``, the xarray equivalent;
* ``xr.open_dataset(url, engine="dvid", chunks=...)["name"].isel(box)`` with the
  default whole-block chunks spelled out, and with ``chunks={}``: xarray builds these
  dask arrays itself, over the whole level (with ``chunks={}`` in one chunk, as the
  engine's preferred chunks do not reach xarray);
* for reference, dask's own slicing of the ``open_dask`` array (what ``DvidArray``
  did before slices got graphs of their own).

Each time is a median of ``--repeats`` runs after a warm-up, except the rows whose
graphs span the whole instance (one run, no warm-up: they take seconds each). Peak
memory is the growth of the resident set of a fresh interpreter (imports excluded)
while it runs the same expression. Every figure of the hemibrain-sized instance is
given as a ratio to the same expression on the ``size``³ instance, in the same run:
"time x" and "memory x" say how many times the small instance's cost it took (1 is
the goal; within 2 is the target).
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import dask.array as da
import xarray as xr
from harness import Table, grayscale_volume, segmentation_volume, timed

import dvid_store
from dvid_store.blocks import BlockIO
from dvid_store.create import create_array
from dvid_store.dask import default_chunks, open_dask
from dvid_store.testing import DvidServer
from dvid_store.xarray_backend import open_dataarray

#: (z, y, x) voxels of the hemibrain labelmap (8,009,280 default dask chunks of uint64).
HEMIBRAIN = (34432, 39552, 41408)


def expressions(url: str, name: str, size: int, chunks: tuple[int, int, int]) -> dict[str, str]:
    """The measured expressions (Python source), by label; each evaluates to the box's sum."""
    box = f"[0:{size}, 0:{size}, 0:{size}]"
    isel = f"isel(z=slice(0, {size}), y=slice(0, {size}), x=slice(0, {size}))"
    whole_blocks = dict(zip("zyx", chunks))
    return {
        "open_dask(url)[box].sum()": f"open_dask({url!r}){box}.sum().compute()",
        "open_dataarray(url, chunks={}).isel(box).sum()": (
            f"open_dataarray({url!r}, chunks={{}}).{isel}.sum().compute()"
        ),
        f"xr.open_dataset(engine='dvid', chunks={chunks[0]}³).isel(box).sum()": (
            f"xr.open_dataset({url!r}, engine='dvid', chunks={whole_blocks!r})[{name!r}].{isel}.sum().compute()"
        ),
        "xr.open_dataset(engine='dvid', chunks={}).isel(box).sum()": (
            f"xr.open_dataset({url!r}, engine='dvid', chunks={{}})[{name!r}].{isel}.sum().compute()"
        ),
        "reference: dask's slicing of open_dask(url)": (
            f"da.Array.__getitem__(open_dask({url!r}), np.s_{box}).sum().compute()"
        ),
    }


def spans_the_instance(label: str) -> bool:
    """Whether the row's graph spans the whole hemibrain-sized instance (timed once: seconds a run)."""
    whole_level_chunks = label.startswith("xr.open_dataset") and "chunks={}" not in label
    return whole_level_chunks or label.startswith("reference:")

SETUP = (
    "import numpy as np\n"
    "import dask.array as da\n"
    "import xarray as xr\n"
    "from dvid_store.dask import open_dask\n"
    "from dvid_store.xarray_backend import open_dataarray\n"
)


def peak_rss_growth(code: str) -> int:
    """Peak resident-set growth (bytes) of a fresh interpreter while it runs ``code`` after :data:`SETUP`.

    The peak is ``VmHWM`` (reset to the current size just before ``code`` by writing 5
    to ``clear_refs``) minus ``VmRSS`` at that moment, so imports are excluded.
    """
    wrapper = (
        f"{SETUP}"
        "import re\n"
        "def status(key):\n"
        "    return int(re.search(key + r':\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) * 1024\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = status('VmRSS')\n"
        f"{code}\n"
        "print('growth', status('VmHWM') - before)\n"
    )
    output = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, check=True).stdout
    found = re.search(r"growth (\d+)", output)
    if found is None:
        raise RuntimeError(f"no memory figure in the output: {output!r}")
    return int(found.group(1))


def bench_dtype(
    table: Table, server: DvidServer, kind: str, size: int, repeats: int, ratios: list[tuple[str, str, float, float]]
) -> None:
    node = server.client().create_repo(f"bench-teravoxel-{kind}")
    shape = (size, size, size)
    if kind == "labels":
        dtype, data = "uint64", segmentation_volume(shape)
    else:
        dtype, data = "uint8", grayscale_volume(shape)
    names = {"huge": f"{kind}_huge", "small": f"{kind}_small"}
    for which, extent in (("huge", HEMIBRAIN), ("small", shape)):
        create_array(node, names[which], extent, dtype)
        if kind == "labels":
            # POST /blocks indexes labels synchronously: no background indexing competes with the reads
            node.labelmap(names[which]).write(data, (0, 0, 0), downres=False)
        else:
            BlockIO.open(node, names[which]).write_box(data, (0, 0, 0))
    host = server.url.split("://", 1)[1]
    urls = {which: f"dvid://{host}/{node.uuid}/{name}" for which, name in names.items()}
    block = 64 if kind == "labels" else 32
    chunks = default_chunks(HEMIBRAIN, (block,) * 3, np.dtype(dtype).itemsize)
    huge_array = open_dask(urls["huge"])
    print(f"\n{kind}: hemibrain-sized {dtype} instance, {huge_array.npartitions:,} dask chunks of {chunks}")
    expected = int(data.sum(dtype=np.uint64))
    namespace: dict[str, Any] = {"np": np, "da": da, "xr": xr, "open_dask": open_dask, "open_dataarray": open_dataarray}

    for label in expressions(urls["small"], names["small"], size, chunks):
        slow = spans_the_instance(label)
        group = f"{kind}: {label}"
        measured: dict[str, float] = {}
        memory: dict[str, int] = {}
        for which in ("small", "huge"):
            source = expressions(urls[which], names[which], size, chunks)[label]
            # the same source is timed here and run in a fresh interpreter for its memory
            run: Callable[[], Any] = eval(compile(f"lambda: {source}", label, "eval"), namespace)
            total = int(run())
            if total != expected:
                raise RuntimeError(f"{label} on the {which} instance summed to {total}, expected {expected}")
            runs = timed(run, 1, warmup=0) if slow and which == "huge" else timed(run, repeats)
            base = f"{size}^3 instance"
            row = table.add(group, base if which == "small" else "hemibrain-sized instance", runs,
                            data.nbytes, "" if which == "small" else base)
            measured[which] = row.seconds
            memory[which] = peak_rss_growth(source)
        table.add_value(f"{group} peak memory", "hemibrain-sized / small", memory["huge"], memory["small"],
                        note=f"{memory['small'] / 1e6:.0f} MB on the small instance")
        ratios.append((kind, label, measured["huge"] / measured["small"], memory["huge"] / max(memory["small"], 1)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="edge of the cubic box, a multiple of 64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "teravoxel.json")
    parser.add_argument("--only", choices=("labels", "grayscale"), help="run one half")
    args = parser.parse_args(argv)
    table = Table()
    ratios: list[tuple[str, str, float, float]] = []
    with DvidServer() as server:
        for kind in ("labels", "grayscale"):
            if args.only in (None, kind):
                bench_dtype(table, server, kind, args.size, args.repeats, ratios)
    print()
    print(table.markdown())
    print(f"\nhemibrain-sized instance / {args.size}^3 instance, same box, same run:\n")
    print("| volume | expression | time x | memory x |\n| --- | --- | ---: | ---: |")
    for kind, label, time_ratio, memory_ratio in ratios:
        print(f"| {kind} | {label} | {time_ratio:.2f} | {memory_ratio:.2f} |")
    meta = {"size": args.size, "repeats": args.repeats, "python": sys.version.split()[0],
            "machine": platform.machine(), "dvid_store": dvid_store.__version__,
            "ratios": [{"volume": k, "expression": e, "time": t, "memory": m} for k, e, t, m in ratios]}
    table.save(args.json, meta)
    print(f"\nsaved {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
