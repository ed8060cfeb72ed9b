"""Integrity rules of the read and write paths, each against the real server.

What a read returns is what the server holds; a write is stored or reported; no write
changes a voxel outside the box it was given; failures are typed, bounded in time and
carry no secret. The fault matrix (tests/test_fault_matrix.py) runs every path through
every fault kind; the tests here pin down the individual rules.
"""

from __future__ import annotations

import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

from dvid_store import DvidClient, Node, RetryPolicy
from dvid_store.blocks import BlockIO
from dvid_store.create import create_array
from dvid_store.dask import VolumeWriter, open_dask, to_dvid
from dvid_store.errors import (
    ConcurrentWriteError,
    DvidConnectionError,
    DvidError,
    DvidInputError,
    DvidTimeoutError,
    MalformedAnswerError,
    RedirectError,
    UnexpectedAnswerError,
)
from dvid_store.testing import FaultProxy
from dvid_store.zarr import DvidStore

SECRET = "SECRET-TOKEN-5f3a"
ADMIN_SECRET = "ADMIN-TOKEN-77c1"


def _proxied(proxy: FaultProxy, node: Node, **options: object) -> Node:
    client = DvidClient(proxy.address, app="pytest", **options)  # type: ignore[arg-type]
    return client.node(node.uuid)


def _url(address: str, node: Node, instance: str) -> str:
    return f"dvid://{address}/{node.uuid}/{instance}"


def _gray(node: Node, name: str = "gray", shape: tuple[int, int, int] = (64, 64, 128), seed: int = 1) -> np.ndarray:
    create_array(node, name, shape, "uint8")
    data = np.random.default_rng(seed).integers(1, 256, shape, dtype=np.uint8)
    BlockIO.open(node, name).write_box(data, (0, 0, 0))
    return data


# --------------------------------------------------------------- block streams
@pytest.mark.parametrize("kind", ["cut_records", "cut_chunked_clean", "cut_close"])
def test_a_block_stream_cut_on_a_record_boundary_is_never_read_as_absent_blocks(
    dvid_node: Node, dvid_fault_proxy: FaultProxy, kind: str
) -> None:
    data = _gray(dvid_node)
    node = _proxied(dvid_fault_proxy, dvid_node)
    params = {"records": 1} if kind == "cut_records" else {}
    dvid_fault_proxy.inject(kind, times=None, match="specificblocks", **params)
    got = open_dask(node, "gray").compute(scheduler="sync")
    np.testing.assert_array_equal(got, data)
    assert dvid_fault_proxy.faults_applied >= 1


def test_to_dvid_never_writes_back_blocks_it_did_not_receive(dvid_node: Node, dvid_fault_proxy: FaultProxy) -> None:
    """Edge blocks are merged from blocks actually received: a cut stream must not zero them."""
    data = _gray(dvid_node)
    node = _proxied(dvid_fault_proxy, dvid_node)
    dvid_fault_proxy.inject("cut_records", times=None, match="specificblocks", records=0)
    patch = np.full((20, 20, 20), 7, np.uint8)
    to_dvid(patch, node, "gray", offset=(10, 10, 10))
    expected = data.copy()
    expected[10:30, 10:30, 10:30] = 7
    np.testing.assert_array_equal(dvid_node.voxels("gray")[0:64, 0:64, 0:128], expected)


def test_labelmap_blocks_with_a_label_per_voxel_read_back_everywhere(dvid_server, dvid_node: Node) -> None:
    create_array(dvid_node, "seg", (64, 64, 64), "uint64")
    labels = np.random.default_rng(3).permutation(64**3).astype(np.uint64).reshape(64, 64, 64) + 1
    to_dvid(labels, dvid_node, "seg")
    np.testing.assert_array_equal(open_dask(dvid_node, "seg", supervoxels=True).compute(), labels)
    np.testing.assert_array_equal(open_dask(dvid_node, "seg").compute(), labels)
    store = DvidStore(dvid_node, "seg", supervoxels=True, read_only=True)
    np.testing.assert_array_equal(zarr.open_array(store, path="0", mode="r")[...], labels)
    np.testing.assert_array_equal(dvid_node.labelmap("seg")[0:64, 0:64, 0:64], labels)


# ------------------------------------------------------------ labelmap merges
def test_to_dvid_through_the_body_view_keeps_every_supervoxel_outside_the_box(dvid_node: Node) -> None:
    create_array(dvid_node, "seg", (128, 64, 64), "uint64")
    supervoxels = np.ones((128, 64, 64), np.uint64)
    supervoxels[:, :, 32:] = 2
    to_dvid(supervoxels, dvid_node, "seg")
    seg = dvid_node.labelmap("seg")
    seg.wait_for_sizes({1: 128 * 64 * 32, 2: 128 * 64 * 32})  # DVID indexes labels after answering the write
    seg.merge(1, [2])
    to_dvid(np.full((10, 10, 10), 9, np.uint64), dvid_node, "seg", offset=(60, 27, 27))
    expected = supervoxels.copy()
    expected[60:70, 27:37, 27:37] = 9
    np.testing.assert_array_equal(open_dask(dvid_node, "seg", supervoxels=True).compute(), expected)
    bodies = np.where(expected == 2, 1, expected)
    np.testing.assert_array_equal(open_dask(dvid_node, "seg").compute(), bodies)


# ------------------------------------------------------------- concurrency
def test_tasks_of_one_process_merging_shared_blocks_lose_nothing(dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (32, 32, 96), "uint8")
    node = dvid_node
    for trial in range(6):
        boxes = [(0, 40), (40, 80)] if trial % 2 == 0 else [(40, 80), (0, 40)]
        value = {b: 10 * trial + i + 1 for i, b in enumerate(boxes)}

        def write(box: tuple[int, int], node: Node = node, value: dict[tuple[int, int], int] = value) -> None:
            with dask.config.set(scheduler="sync"):
                to_dvid(np.full((32, 32, box[1] - box[0]), value[box], np.uint8), node, "gray", offset=(0, 0, box[0]))

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(write, boxes))
        got = node.voxels("gray")[0:32, 0:32, 0:80]
        for box in boxes:
            assert (got[..., box[0] : box[1]] == value[box]).all(), f"trial {trial}: voxels of {box} lost"


def test_a_merge_overwritten_by_another_writer_is_reported(dvid_node: Node) -> None:
    """An independent process that writes a stale copy of a shared block is caught by the read-back."""
    create_array(dvid_node, "gray", (32, 32, 64), "uint8")
    io = BlockIO.open(dvid_node, "gray")
    stale = np.zeros((32, 32, 32), np.uint8)

    class Racing(BlockIO):
        def write_box(self, data: np.ndarray, start) -> int:  # type: ignore[no-untyped-def]
            sent = super().write_box(data, start)
            BlockIO.open(dvid_node, "gray").write({(0, 0, 0): stale})  # the other writer's stale block
            return sent

    racing = Racing.open(dvid_node, "gray")
    writer = VolumeWriter(racing, (0, 0, 0), (32, 32, 64))
    with pytest.raises(ConcurrentWriteError, match="another writer"):
        writer[0:32, 0:32, 10:20] = np.full((32, 32, 10), 5, np.uint8)
    assert io.read_box(((0, 0, 0), (32, 32, 32))).max() == 0


def _fail_reads_after_the_write(proxy: FaultProxy, instance: str) -> None:
    """Answer 500 to every read of ``instance`` sent after its first write (the read-back)."""
    sent: list[str] = []

    def after_the_write(method: str, target: str) -> bool:
        if f"/{instance}/" not in target:
            return False
        if method == "POST":
            sent.append(target)
            return False
        return bool(sent)

    proxy.inject("status_500", times=None, match=after_the_write)


@pytest.mark.parametrize("path", ["node API write(merge_edges=True)", "VolumeWriter (to_dvid, DvidArray)"])
def test_a_failed_read_back_says_the_write_went_through(
    dvid_node: Node, dvid_fault_proxy: FaultProxy, path: str
) -> None:
    """The read-back after an edge merge fails: the error says the write itself was stored, and what to do."""
    old = _gray(dvid_node, shape=(32, 32, 64))
    patch = np.full((20, 20, 30), 9, np.uint8)
    node = _proxied(dvid_fault_proxy, dvid_node, retry=RetryPolicy(total_seconds=0))
    _fail_reads_after_the_write(dvid_fault_proxy, "gray")
    with pytest.raises(DvidError) as failed:
        if path.startswith("node"):
            node.voxels("gray").write(patch, (6, 6, 17), merge_edges=True)
        else:
            VolumeWriter(BlockIO.open(node, "gray"), (0, 0, 0), (32, 32, 64))[6:26, 6:26, 17:47] = patch
    assert not isinstance(failed.value, ConcurrentWriteError)
    notes = " ".join(getattr(failed.value, "__notes__", ()))
    assert "was sent and DVID answered it" in notes and "write it again" in notes
    assert notes in " ".join(getattr(pickle.loads(pickle.dumps(failed.value)), "__notes__", ()))
    want = old.copy()
    want[6:26, 6:26, 17:47] = 9
    assert np.array_equal(dvid_node.voxels("gray")[0:32, 0:32, 0:64], want)  # stored, and nothing else changed


# -------------------------------------------------------------- small rules
def test_float_coordinates_are_refused_not_truncated(dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (32, 32, 32), "uint8")
    with pytest.raises(DvidInputError, match="whole numbers"):
        to_dvid(np.ones((4, 4, 4), np.uint8), dvid_node, "gray", offset=(0.5, 0, 0))
    with pytest.raises(DvidInputError, match="whole numbers"):
        BlockIO.open(dvid_node, "gray").read_box(((0, 0, 0), (1.5, 2, 2)))
    assert dvid_node.voxels("gray")[0:32, 0:32, 0:32].max() == 0


def test_an_empty_write_sends_nothing(dvid_node: Node, dvid_fault_proxy: FaultProxy) -> None:
    create_array(dvid_node, "gray", (32, 32, 32), "uint8")
    node = _proxied(dvid_fault_proxy, dvid_node)
    to_dvid(np.zeros((0, 4, 4), np.uint8), node, "gray")
    to_dvid(da.zeros((4, 0, 4), dtype=np.uint8, chunks=4), node, "gray")
    assert dvid_fault_proxy.log and not [r for r in dvid_fault_proxy.log if r.method == "POST"]


def test_an_enormous_read_is_refused_before_allocating(dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (32, 32, 32), "uint8")
    with pytest.raises(DvidInputError, match="memory"):
        BlockIO.open(dvid_node, "gray").read_box(((0, 0, 0), (2**20, 2**20, 2**20)))
    with pytest.raises(DvidInputError, match="memory"):
        dvid_node.voxels("gray")[0 : 2**20, 0 : 2**20, 0 : 2**20]


def test_to_dvid_says_which_chunks_were_stored(dvid_node: Node, dvid_fault_proxy: FaultProxy) -> None:
    create_array(dvid_node, "gray", (32, 32, 128), "uint8")
    node = _proxied(dvid_fault_proxy, dvid_node, retry=RetryPolicy(total_seconds=0))
    dvid_fault_proxy.inject("status_500", times=None, match="32_0_0", methods={"POST"})  # x offset 32: chunk 2
    array = da.from_array(np.full((32, 32, 128), 3, np.uint8), chunks=(32, 32, 32))
    with pytest.raises(DvidError) as caught, dask.config.set(scheduler="sync"):
        to_dvid(array, node, "gray")
    notes = "\n".join(caught.value.__notes__)
    assert "chunks were stored" in notes and "(0, 0, 32)–(32, 32, 64)" in notes
    stored = dvid_node.voxels("gray")[0:32, 0:32, 0:128]
    assert (stored[..., 32:64] == 0).all()
    # chunks written before the failure are stored whole; none is half-written
    for x in range(0, 128, 32):
        part = stored[..., x : x + 32]
        assert (part == 0).all() or (part == 3).all()


# -------------------------------------------------------------- the wire
def test_redirects_are_errors_that_name_the_location(dvid_node: Node, dvid_fault_proxy: FaultProxy) -> None:
    dvid_node.create_instance("keyvalue", "kv")
    node = _proxied(dvid_fault_proxy, dvid_node)
    for status in (301, 302, 307):
        dvid_fault_proxy.inject("redirect", status=status, location="http://elsewhere.example/api", methods={"POST"})
        with pytest.raises(RedirectError, match=r"elsewhere\.example"):
            node.keyvalue("kv").put("k", b"value")
    assert "k" not in dvid_node.keyvalue("kv")


def test_an_html_page_answered_200_is_not_a_stored_write(dvid_node: Node, dvid_fault_proxy: FaultProxy) -> None:
    create_array(dvid_node, "gray", (32, 32, 32), "uint8")
    node = _proxied(dvid_fault_proxy, dvid_node)
    dvid_fault_proxy.inject("html_200", times=None, methods={"POST"})
    with pytest.raises(UnexpectedAnswerError, match="HTML"):
        to_dvid(np.ones((32, 32, 32), np.uint8), node, "gray")
    dvid_node.create_instance("keyvalue", "kv")
    with pytest.raises(UnexpectedAnswerError):
        node.keyvalue("kv").put("k", b"v")


def test_a_garbage_answer_to_a_write_is_not_success(dvid_node: Node, dvid_fault_proxy: FaultProxy) -> None:
    dvid_node.create_instance("keyvalue", "kv")
    node = _proxied(dvid_fault_proxy, dvid_node, retry=RetryPolicy(total_seconds=0))
    dvid_fault_proxy.inject("garbage", times=None, methods={"POST"})
    with pytest.raises(UnexpectedAnswerError, match="empty body"):
        node.keyvalue("kv").put("k", b"v")


def test_a_trickling_answer_ends_at_the_deadline(dvid_node: Node, dvid_fault_proxy: FaultProxy) -> None:
    dvid_node.create_instance("keyvalue", "kv")
    dvid_node.keyvalue("kv").put("big", b"x" * 200_000)
    node = _proxied(dvid_fault_proxy, dvid_node, deadline=2.0, timeout=(2.0, 30.0))
    dvid_fault_proxy.inject("trickle", times=None, rate=256)
    started = time.monotonic()
    with pytest.raises(DvidTimeoutError, match="deadline"):
        node.keyvalue("kv").get("big")
    assert time.monotonic() - started < 10


def test_a_stalled_answer_is_retried_within_the_deadline(dvid_node: Node, dvid_fault_proxy: FaultProxy) -> None:
    dvid_node.create_instance("keyvalue", "kv")
    dvid_node.keyvalue("kv").put("k", b"value")
    node = _proxied(dvid_fault_proxy, dvid_node, timeout=(2.0, 1.0), deadline=20.0)
    dvid_fault_proxy.inject("stall", times=1, seconds=30)
    started = time.monotonic()
    assert node.keyvalue("kv").get("k") == b"value"
    assert time.monotonic() - started < 10


def test_a_server_back_within_the_retry_budget_is_ridden_through(dvid_node: Node, dvid_fault_proxy: FaultProxy) -> None:
    data = _gray(dvid_node)
    node = _proxied(dvid_fault_proxy, dvid_node)
    dvid_fault_proxy.inject("reset_before", times=None)
    back = threading.Timer(1.5, dvid_fault_proxy.clear)  # the fault schedule: down for 1.5 s
    back.start()
    try:
        np.testing.assert_array_equal(open_dask(node, "gray").compute(scheduler="sync"), data)
        to_dvid(data[:, :, ::-1].copy(), node, "gray")
    finally:
        back.cancel()
    np.testing.assert_array_equal(dvid_node.voxels("gray")[0:64, 0:64, 0:128], data[:, :, ::-1])


def test_block_writes_are_retried_after_a_503_or_a_reset(dvid_node: Node, dvid_fault_proxy: FaultProxy) -> None:
    create_array(dvid_node, "gray", (32, 32, 64), "uint8")
    node = _proxied(dvid_fault_proxy, dvid_node)
    data = np.random.default_rng(5).integers(0, 256, (32, 32, 64), dtype=np.uint8)
    dvid_fault_proxy.inject("status_503", times=2, methods={"POST"})
    dvid_fault_proxy.inject("reset_after", times=1, methods={"POST"})
    to_dvid(data, node, "gray")
    np.testing.assert_array_equal(dvid_node.voxels("gray")[0:32, 0:32, 0:64], data)
    assert dvid_fault_proxy.faults_applied == 3


def test_many_throttled_readers_all_get_their_data(dvid_server, dvid_node: Node) -> None:
    data = _gray(dvid_node, shape=(64, 64, 64))
    client = dvid_server.client(app="pytest")

    def read(i: int) -> bool:
        array = open_dask(client.node(dvid_node.uuid), "gray", throttle=True)
        return bool(np.array_equal(array.compute(scheduler="sync"), data))

    with ThreadPoolExecutor(32) as pool:
        assert all(pool.map(read, range(32)))


# --------------------------------------------------------------- secrets
def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    stack = [error]
    while stack:
        e = stack.pop()
        if e in seen:
            continue
        seen.append(e)
        stack.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return seen


def _assert_no_secret(error: BaseException) -> None:
    for e in _chain(error):
        text = f"{e!s} {e!r} {getattr(e, '__notes__', '')}"
        assert SECRET not in text and ADMIN_SECRET not in text
    blob = pickle.dumps(error)
    assert SECRET.encode() not in blob and ADMIN_SECRET.encode() not in blob


@pytest.mark.parametrize("kind", ["reset_before", "cut_length", "cut_chunked_broken", "status_500", "garbage"])
def test_no_exception_carries_a_token(dvid_node: Node, dvid_fault_proxy: FaultProxy, kind: str) -> None:
    pytest.importorskip("tblib")
    import tblib.pickling_support

    tblib.pickling_support.install()  # as distributed does: exceptions pickle with their context
    create_array(dvid_node, "gray", (32, 32, 32), "uint8")
    client = DvidClient(dvid_fault_proxy.address, token=SECRET, admin_token=ADMIN_SECRET,
                        retry=RetryPolicy(total_seconds=0))
    node = client.node(dvid_node.uuid)
    dvid_fault_proxy.inject(kind, times=None)
    with pytest.raises(DvidError) as caught:
        node.voxels("gray")[0:32, 0:32, 0:32]
    _assert_no_secret(caught.value)
    for admin_fault in ("reset_before", "status_500"):
        dvid_fault_proxy.clear()
        dvid_fault_proxy.inject(admin_fault, times=None)
        with pytest.raises(DvidError) as caught_admin:
            client.transport.request("POST", "/api/server/settings", json={}, admin=True)
        _assert_no_secret(caught_admin.value)


def test_errors_are_typed_and_pickle_with_their_notes(dvid_node: Node, dvid_fault_proxy: FaultProxy) -> None:
    dvid_node.create_instance("keyvalue", "kv")
    dvid_node.keyvalue("kv").put("k", b"x" * 50_000)
    node = _proxied(dvid_fault_proxy, dvid_node, retry=RetryPolicy(total_seconds=0.5))
    dvid_fault_proxy.inject("cut_chunked_broken", times=None)
    with pytest.raises(MalformedAnswerError) as caught:
        node.keyvalue("kv").get("k")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is MalformedAnswerError and str(copy) == str(caught.value)
    assert copy.__notes__ == caught.value.__notes__
    dvid_fault_proxy.clear()
    dvid_fault_proxy.stop()
    with pytest.raises(DvidConnectionError) as down:
        node.keyvalue("kv").get("k")
    assert isinstance(pickle.loads(pickle.dumps(down.value)), DvidConnectionError)


def test_throttle_reaches_the_wire_on_every_front_end(
    dvid_server, dvid_node: Node, dvid_fault_proxy: FaultProxy
) -> None:
    """open_dask, to_dvid, DvidStore and dvid:// URLs send DVID's throttle=true when asked."""
    data = _gray(dvid_node, shape=(32, 32, 64))
    node = _proxied(dvid_fault_proxy, dvid_node)
    url = _url(dvid_fault_proxy.address, dvid_node, "gray")
    np.testing.assert_array_equal(open_dask(node, "gray", throttle=True).compute(), data)
    to_dvid(data, node, "gray", throttle=True)
    store = DvidStore(node, "gray", scale=0, throttle=True)
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)
    np.testing.assert_array_equal(zarr.open_array(url + "/0", mode="r", storage_options={"throttle": True})[...], data)
    blocks = [r for r in dvid_fault_proxy.log if "specificblocks" in r.path or "/raw/" in r.path]
    assert blocks and all("throttle=true" in r.path for r in blocks)


def test_url_front_ends_take_the_clients_limits(dvid_node: Node, dvid_fault_proxy: FaultProxy) -> None:
    """zarr through dvid:// URLs and the xarray engine take timeout, retry and deadline."""
    import xarray as xr

    from dvid_store.fs import DvidFileSystem
    from dvid_store.urls import parse_url

    data = _gray(dvid_node, shape=(32, 32, 32))
    url = _url(dvid_fault_proxy.address, dvid_node, "gray")
    fs = DvidFileSystem(retry_seconds=0, deadline=30, timeout=(2, 2), skip_instance_cache=True)
    store = fs._open_store(parse_url(url))
    assert store.node.transport.retry.total_seconds == 0 and store.node.transport.deadline == 30
    dataset = xr.open_dataset(url, engine="dvid", retry=RetryPolicy(total_seconds=0), deadline=30)
    dvid_fault_proxy.inject("status_503", times=1)
    with pytest.raises(DvidError):  # no retry: the one 503 fails the read
        _ = dataset["gray"].values
    np.testing.assert_array_equal(dataset["gray"].values, data)
