"""Reading and writing DVID from a dask.distributed LocalCluster with worker processes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster

from dvid_store import Node
from dvid_store.create import create_array
from dvid_store.dask import open_dask, to_dvid
from dvid_store.zarr import DvidStore


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    ) as cluster, Client(cluster) as client:
        yield client


def _worker_connections() -> dict[str, object]:
    """Runs on a worker: which processes own its dvid_store sessions, and unclosed-resource warnings."""
    import gc
    import warnings

    from dvid_store.blocks import _shared_transports

    owners = {key[0] for transport in _shared_transports for key in transport._sessions}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    return {"pid": os.getpid(), "owners": sorted(owners), "transports": len(_shared_transports), "leaks": leaks}


def _labels_block(block_info: dict | None = None) -> np.ndarray:
    """A deterministic block of a few label ids (some beyond 32 bits), seeded by its position."""
    info = block_info[None]
    (z0, _), (y0, _), (x0, _) = info["array-location"]
    rng = np.random.default_rng([z0, y0, x0])
    ids = np.array([0, 1, 2**33 + 1, 2**62 + 7], dtype=np.uint64)
    return rng.choice(ids, info["chunk-shape"])


def test_read_on_workers(client: Client, dvid_node: Node) -> None:
    start = (-64, 0, 32)
    data = np.random.default_rng(31).integers(0, 256, (96, 64, 128), dtype=np.uint8)
    array = create_array(dvid_node, "gray", (start, tuple(a + n for a, n in zip(start, data.shape))), "uint8")
    array[:] = data
    lazy = open_dask(dvid_node, "gray", chunks=(32, 64, 64))
    np.testing.assert_array_equal(client.compute(lazy).result(), data)
    # with a client as the default scheduler, compute() runs on the workers too (dask's assembly)
    before = dvid_node.transport.requests_sent
    np.testing.assert_array_equal(lazy.compute(), data)
    np.testing.assert_array_equal(np.asarray(lazy[10:90]), data[10:90])
    assert dvid_node.transport.requests_sent == before  # no request left this process
    # through zarr too: the store travels to the workers as configuration
    via_zarr = da.from_zarr(zarr.open_array(DvidStore(dvid_node, "gray", scale=0), mode="r"), chunks=(32, 64, 64))
    np.testing.assert_array_equal(client.compute(via_zarr).result(), data)
    reports = client.run(_worker_connections)
    assert len(reports) == 2
    for report in reports.values():
        assert report["owners"] == [report["pid"]]  # each worker made its own connections
        assert report["transports"] == 1  # shared by all tasks of the worker
        assert report["leaks"] == []


def test_many_workers_write_disjoint_regions(client: Client, dvid_node: Node) -> None:
    box = ((0, 0, 0), (128, 128, 128))
    create_array(dvid_node, "seg", box, "uint64", block_size=32)
    source = da.map_blocks(
        _labels_block, dtype=np.uint64, chunks=((32,) * 4, (64,) * 2, (32,) * 4), meta=np.empty((0, 0, 0), np.uint64)
    )  # 32 tasks over 2 workers, made on the workers
    client.compute(to_dvid(source, dvid_node, "seg", compute=False)).result()
    labels = source.compute(scheduler="threads")
    assert len(np.unique(labels)) > 1
    np.testing.assert_array_equal(open_dask(dvid_node, "seg").compute(scheduler="threads"), labels)


def test_zarr_writes_from_workers(client: Client, dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (64, 64, 128), "uint8")
    target = zarr.open_array(DvidStore(dvid_node, "gray", scale=0), mode="r+")
    data = np.random.default_rng(33).integers(0, 256, (64, 64, 128), dtype=np.uint8)
    stored = da.to_zarr(da.from_array(data, chunks=(32, 32, 64)), target, compute=False)
    client.compute(stored).result()
    np.testing.assert_array_equal(target[:], data)
    for report in client.run(_worker_connections).values():
        assert report["leaks"] == []


def test_writes_sharing_blocks_on_one_cluster_lose_nothing(client: Client, dvid_node: Node) -> None:
    """Two to_dvid of adjacent unaligned boxes (x in [0,40) and [40,80)) share edge blocks: the
    cluster-wide block locks serialise their merges, so neither loses voxels."""
    create_array(dvid_node, "gray", (32, 32, 96), "uint8")
    for trial in range(4):
        left = to_dvid(np.full((32, 32, 40), 2 * trial + 1, np.uint8), dvid_node, "gray", compute=False)
        right = to_dvid(np.full((32, 32, 40), 2 * trial + 2, np.uint8), dvid_node, "gray", offset=(0, 0, 40),
                        compute=False)
        client.gather(client.compute([left, right]))
        got = dvid_node.voxels("gray")[0:32, 0:32, 0:80]
        assert (got[..., :40] == 2 * trial + 1).all() and (got[..., 40:] == 2 * trial + 2).all(), f"trial {trial}"


def test_an_error_from_a_worker_carries_no_token(client: Client, dvid_server, dvid_node: Node) -> None:
    import pickle

    from dvid_store import DvidClient
    from dvid_store.errors import DvidError
    from dvid_store.testing import FaultProxy
    from dvid_store.transport import RetryPolicy

    create_array(dvid_node, "gray", (32, 32, 32), "uint8")
    with FaultProxy(dvid_server.url) as proxy:
        node = DvidClient(
            proxy.address, token="SECRET-TOKEN-9d2e", admin_token="ADMIN-TOKEN-41aa", retry=RetryPolicy(total_seconds=0)
        ).node(dvid_node.uuid)
        array = open_dask(node, "gray")
        proxy.inject("reset_before", times=None)
        future = client.compute(array)
        with pytest.raises(DvidError) as caught:
            future.result()
    blob = pickle.dumps(caught.value)
    text = repr(caught.value) + str(caught.value.__context__) + str(caught.value.__cause__)
    for secret in ("SECRET-TOKEN-9d2e", "ADMIN-TOKEN-41aa"):
        assert secret.encode() not in blob and secret not in text


def test_compute_on_a_client_gathers_chunks_into_one_result(
    client: Client, dvid_server, dvid_node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dvid_store import DvidClient, dask_array
    from dvid_store.errors import DvidError
    from dvid_store.testing import FaultProxy
    from dvid_store.transport import RetryPolicy

    data = np.random.default_rng(32).integers(0, 256, (64, 64, 128), dtype=np.uint8)
    create_array(dvid_node, "gray", data.shape, "uint8")[:] = data
    gathered: list[int] = []
    gather = dask_array.gather_into_result

    def counting(the_client, array):
        gathered.append(array.npartitions)
        return gather(the_client, array)

    monkeypatch.setattr(dask_array, "gather_into_result", counting)
    lazy = open_dask(dvid_node, "gray", chunks=(32, 32, 64))
    np.testing.assert_array_equal(lazy.compute(), data)
    np.testing.assert_array_equal(lazy[5:60, :, 3:100].compute(), data[5:60, :, 3:100])
    assert gathered == [8, 8]  # the chunks were copied into the result on the client, not joined by dask
    with FaultProxy(dvid_server.url) as proxy:
        node = DvidClient(proxy.address, token="SECRET-TOKEN-77aa", retry=RetryPolicy(total_seconds=0)).node(
            dvid_node.uuid
        )
        failing = open_dask(node, "gray", chunks=(32, 32, 64))
        proxy.inject("reset_before", times=None)
        with pytest.raises(DvidError) as caught:
            failing.compute()
    assert "SECRET-TOKEN-77aa" not in repr(caught.value) + str(caught.value)
