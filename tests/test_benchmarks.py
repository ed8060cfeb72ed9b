"""The benchmark tools keep working: the link proxy models its link faithfully, and bench_far runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests

from dvid_store import Node
from dvid_store.create import create_array

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from linkproxy import LinkProxy  # noqa: E402


def _raw(base: str, node: Node, name: str, shape: tuple[int, int, int]) -> str:
    size = "_".join(str(v) for v in reversed(shape))
    return f"{base}/api/node/{node.uuid}/{name}/raw/0_1_2/{size}/0_0_0"


def test_link_proxy_relays_every_byte_and_holds_each_request(dvid_server, dvid_node: Node) -> None:
    shape = (64, 64, 128)
    data = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    create_array(dvid_node, "gray", shape, "uint8")
    with LinkProxy(dvid_server.url, latency=0.05) as link, requests.Session() as session:
        url = _raw(link.url, dvid_node, "gray", shape)
        session.post(url, data=data.tobytes(), timeout=30).raise_for_status()  # a request body relayed
        start = time.monotonic()
        answers = [session.get(url, timeout=30) for _ in range(3)]  # one kept-alive connection
        elapsed = time.monotonic() - start
    for answer in answers:
        answer.raise_for_status()
        assert answer.content == data.tobytes()
    assert elapsed >= 3 * 0.05  # every request waited its round trip, also on a reused connection


def test_link_proxy_caps_the_bandwidth_of_all_connections_together(dvid_server, dvid_node: Node) -> None:
    shape = (64, 128, 128)  # 1 MiB
    create_array(dvid_node, "gray", shape, "uint8")
    rate = 4e6
    with LinkProxy(dvid_server.url, bandwidth=rate) as link:
        url = _raw(link.url, dvid_node, "gray", shape)
        start = time.monotonic()
        sizes = [len(requests.get(url, timeout=30).content) for _ in range(2)]
        elapsed = time.monotonic() - start
    assert sizes == [64 * 128 * 128] * 2
    assert elapsed >= 0.9 * sum(sizes) / rate  # the cap is a lower bound on the time


def test_bench_far_runs_and_checks_what_it_reads(tmp_path: Path) -> None:
    results = tmp_path / "far.json"
    subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_far.py"), "--size", "64", "--repeats", "1", "--links", "0",
         "--json", str(results)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    saved = json.loads(results.read_text())
    names = {r["name"] for r in saved["results"]}
    assert {"GET /raw streamed (baseline)", "zarr.open_array(url)[...]", "to_dvid(dask array, url)"} <= names
    assert all(r["ratio"] > 0 for r in saved["results"])
