"""open_dask and to_dvid against the real server (dask's local scheduler)."""

from __future__ import annotations

import itertools

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

from dvid_store import DvidInputError, LockedNodeError, Node
from dvid_store.blocks import PART_BYTES, BlockIO
from dvid_store.create import create_array
from dvid_store.dask import DEFAULT_CHUNK_BYTES, default_chunks, open_dask, to_dvid
from dvid_store.zarr import DvidStore


def _url(server, node: Node, instance: str, suffix: str = "") -> str:
    return f"dvid://{server.url.split('://', 1)[1]}/{node.uuid}/{instance}{suffix}"


def test_default_chunks_are_whole_blocks_of_sensible_size() -> None:
    cases = [((1024,) * 3, (32,) * 3, 1), ((512, 512, 512), (64,) * 3, 8), ((64, 4096, 4096), (32,) * 3, 1)]
    for shape, block, itemsize in cases:
        chunks = default_chunks(shape, block, itemsize)
        assert all(c % b == 0 for c, b in zip(chunks, block))
        nbytes = int(np.prod(chunks)) * itemsize
        assert int(np.prod(block)) * itemsize < nbytes <= DEFAULT_CHUNK_BYTES
    assert default_chunks((32, 32, 32), (32, 32, 32), 1) == (32, 32, 32)


def test_read_round_trip_with_few_requests(dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (256, 256, 256), "uint8")
    data = np.random.default_rng(1).integers(0, 256, (256, 256, 256), dtype=np.uint8)
    BlockIO.open(dvid_node, "gray").write_box(data, (0, 0, 0))
    array = open_dask(dvid_node, "gray")
    assert array.shape == data.shape and array.dtype == np.uint8
    assert all(c % 32 == 0 for axis in array.chunks for c in axis)
    assert array.npartitions < (256 // 32) ** 3
    transport = dvid_node.transport
    before = transport.requests_sent
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(array.compute(), data)
    # each chunk is read in parts of PART_BYTES, requests in flight at once
    parts = sum(-(-int(np.prod(shape)) // PART_BYTES) for shape in itertools.product(*array.chunks))
    assert transport.requests_sent - before == parts
    assert array.npartitions * 8 <= (256 // 32) ** 3


def test_explicit_chunks_are_rounded_or_refused(dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (64, 64, 128), "uint8")
    with pytest.warns(UserWarning, match="rounded"):
        rounded = open_dask(dvid_node, "gray", chunks=40)
    assert rounded.chunks == ((32, 32), (32, 32), (32, 32, 32, 32))
    fine = open_dask(dvid_node, "gray", chunks=(64, 32, 128))
    assert fine.chunks == ((64,), (32, 32), (128,))
    with pytest.raises(DvidInputError, match="split DVID blocks"):
        open_dask(dvid_node, "gray", chunks=((20, 44), (64,), (128,)))


def test_to_dvid_round_trip_at_negative_coordinates(dvid_node: Node) -> None:
    box = ((-96, -32, -64), (32, 64, 64))
    create_array(dvid_node, "seg", box, "uint64", block_size=32)
    ids = np.array([0, 3, 2**50 + 1, 2**64 - 2], dtype=np.uint64)
    labels = np.random.default_rng(2).choice(ids, (128, 96, 128))
    to_dvid(da.from_array(labels, chunks=(64, 32, 64)), dvid_node, "seg", offset=box[0])
    back = open_dask(dvid_node, "seg")
    assert back.shape == labels.shape
    np.testing.assert_array_equal(back.compute(), labels)


def test_to_dvid_unaligned_region_keeps_neighbours(dvid_server, dvid_node: Node) -> None:
    box = ((0, 0, 0), (96, 96, 96))
    create_array(dvid_node, "gray", box, "uint8")
    background = np.random.default_rng(3).integers(0, 256, (96, 96, 96), dtype=np.uint8)
    BlockIO.open(dvid_node, "gray").write_box(background, (0, 0, 0))
    region = np.random.default_rng(4).integers(0, 256, (37, 50, 45), dtype=np.uint8)
    start = (5, 20, 33)
    to_dvid(da.from_array(region, chunks=(20, 25, 30)), _url(dvid_server, dvid_node, "gray"), offset=start)
    model = background.copy()
    model[5:42, 20:70, 33:78] = region
    np.testing.assert_array_equal(open_dask(dvid_node, "gray", chunks=32).compute(), model)


def test_to_dvid_lazy_and_checked_first(dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (64, 64, 64), "uint8")
    ones = da.ones((64, 64, 64), dtype=np.uint8, chunks=32)
    delayed = to_dvid(ones, dvid_node, "gray", compute=False)
    np.testing.assert_array_equal(open_dask(dvid_node, "gray").compute(), 0)
    delayed.compute()
    np.testing.assert_array_equal(open_dask(dvid_node, "gray").compute(), 1)
    with pytest.raises(DvidInputError, match="3-d"):
        to_dvid(da.ones((64, 64), dtype=np.uint8), dvid_node, "gray")
    with pytest.raises(DvidInputError, match="losing values"):
        to_dvid(da.ones((32, 32, 32), dtype=np.float64), dvid_node, "gray")
    dvid_node.commit()
    with pytest.raises(LockedNodeError):
        to_dvid(ones, dvid_node, "gray")
    np.testing.assert_array_equal(open_dask(dvid_node, "gray").compute(), 1)


def test_dask_to_zarr_region(dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (64, 64, 96), "uint8")
    target = zarr.open_array(DvidStore(dvid_node, "gray", scale=0), mode="r+")
    data = np.random.default_rng(5).integers(1, 256, (32, 64, 64), dtype=np.uint8)
    da.to_zarr(da.from_array(data, chunks=32), target, region=(slice(32, 64), slice(0, 64), slice(16, 80)))
    model = np.zeros((64, 64, 96), np.uint8)
    model[32:, :, 16:80] = data
    np.testing.assert_array_equal(open_dask(dvid_node, "gray").compute(), model)
    np.testing.assert_array_equal(da.from_zarr(target).compute(), model)


def test_url_levels_and_supervoxels(dvid_server, dvid_node: Node) -> None:
    create_array(dvid_node, "seg", ((0, 0, 0), (128, 128, 128)), "uint64", scales=1, block_size=32)
    labels = np.random.default_rng(6).integers(1, 4, (128, 128, 128)).astype(np.uint64)
    to_dvid(labels, dvid_node, "seg")
    level1 = open_dask(_url(dvid_server, dvid_node, "seg", "/1"))
    assert level1.shape == (64, 64, 64)
    assert open_dask(dvid_node, "seg", scale=1).name == level1.name
    sv = open_dask(_url(dvid_server, dvid_node, "seg"), supervoxels=True)
    np.testing.assert_array_equal(sv.compute(), labels)
    with pytest.raises(DvidInputError, match="level"):
        open_dask(_url(dvid_server, dvid_node, "seg", "/1"), scale=0)
    with pytest.raises(DvidInputError, match="no scale"):
        open_dask(dvid_node, "seg", scale=5)


def test_zarr_io_pool_can_be_resized(dvid_node: Node) -> None:
    from dvid_store.zarr import coalesce

    create_array(dvid_node, "gray", (64, 64, 64), "uint8")
    data = np.random.default_rng(7).integers(0, 256, (64, 64, 64), dtype=np.uint8)
    BlockIO.open(dvid_node, "gray").write_box(data, (0, 0, 0))
    array = zarr.open_array(DvidStore(dvid_node, "gray", scale=0, read_only=True), mode="r")
    default = coalesce.io_threads()
    try:
        coalesce.set_io_threads(1)
        assert coalesce.io_threads() == 1 and coalesce.io_executor()._max_workers == 1
        np.testing.assert_array_equal(array[...], data)
    finally:
        coalesce.set_io_threads(None)
    assert coalesce.io_threads() == default
    np.testing.assert_array_equal(array[...], data)
    with pytest.raises(DvidInputError, match="at least 1"):
        coalesce.set_io_threads(0)


def test_to_dvid_numpy_input_uses_whole_block_chunks(dvid_node: Node) -> None:
    create_array(dvid_node, "gray", ((0, 0, 0), (64, 64, 128)), "uint8", block_size=32)
    data = np.random.default_rng(8).integers(0, 256, (64, 64, 128), dtype=np.uint8)
    transport = dvid_node.transport
    before = transport.requests_sent
    to_dvid(data, dvid_node, "gray")
    # a few metadata requests plus one POST /raw per default chunk; no read-merge-write
    assert transport.requests_sent - before <= 6
    np.testing.assert_array_equal(open_dask(dvid_node, "gray").compute(), data)
    region = data[:40, 3:50, 7:99]
    to_dvid(region[::-1], dvid_node, "gray", offset=(10, 3, 7))
    model = data.copy()
    model[10:50, 3:50, 7:99] = region[::-1]
    np.testing.assert_array_equal(open_dask(dvid_node, "gray").compute(), model)


def test_to_dvid_refuses_values_that_do_not_fit_even_in_edge_blocks(dvid_node: Node) -> None:
    import dask.array as da

    from dvid_store import DvidInputError
    from dvid_store.create import create_array

    create_array(dvid_node, "gray", (64, 64, 64), "uint8")
    data = np.full((10, 20, 30), 300, dtype=np.int64)  # 300 does not fit in uint8
    with pytest.raises(DvidInputError, match="without losing values"):
        to_dvid(da.from_array(data, chunks=(10, 20, 30)), dvid_node, "gray", offset=(3, 5, 7))
    assert not open_dask(dvid_node, "gray").compute().any()  # nothing was written


def test_opening_by_full_uuid_costs_one_round_trip(dvid_fault_proxy, dvid_node: Node) -> None:
    from dvid_store import UnknownNodeError

    create_array(dvid_node, "gray", (64, 64, 64), "uint8")
    url = f"dvid://{dvid_fault_proxy.address}/{dvid_node.uuid}/gray"
    open_dask(url)
    # the instance's /info alone: no repo listing, no node check, no pyramid search at scale 0
    assert [r.path.split("?")[0] for r in dvid_fault_proxy.log] == [f"/api/node/{dvid_node.uuid}/gray/info"]
    with pytest.raises(UnknownNodeError):
        open_dask(f"dvid://{dvid_fault_proxy.address}/{'f' * 32}/gray")
