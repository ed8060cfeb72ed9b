"""The block layer (dvid_store.blocks) against the real server: batched block reads and writes."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dvid_store import (
    DvidClient,
    DvidInputError,
    LockedNodeError,
    Node,
    RetryPolicy,
    ServerError,
    UnsupportedError,
    Voxels,
)
from dvid_store.blocks import BlockIO, block_boxes
from dvid_store.geometry import block_coords_in_box
from dvid_store.testing import DvidServer


def _model_box(volume: np.ndarray, volume_start: tuple[int, int, int], box) -> np.ndarray:
    """What a read of ``box`` must return when ``volume`` sits at ``volume_start`` and all else is 0."""
    (z0, y0, x0), (z1, y1, x1) = box
    out = np.zeros((z1 - z0, y1 - y0, x1 - x0), volume.dtype)
    lo = np.maximum((z0, y0, x0), volume_start)
    hi = np.minimum((z1, y1, x1), np.add(volume_start, volume.shape))
    if np.all(hi > lo):
        dst = tuple(slice(a - b, c - b) for a, b, c in zip(lo, (z0, y0, x0), hi))
        src = tuple(slice(a - s, c - s) for a, s, c in zip(lo, volume_start, hi))
        out[dst] = volume[src]
    return out


def test_grayscale_round_trip_at_negative_coordinates(dvid_node: Node) -> None:
    dvid_node.create_instance("uint8blk", "gray")
    io = BlockIO.open(dvid_node, "gray")
    assert io.block_shape == (32, 32, 32) and io.dtype == np.uint8
    rng = np.random.default_rng(1)
    start = (-64, -32, 32)
    volume = rng.integers(0, 256, (64, 96, 64), dtype=np.uint8)
    assert io.write_box(volume, start) == 1
    transport = dvid_node.transport
    before = transport.requests_sent
    odd = ((-70, -40, 29), (3, 61, 101))  # unaligned, beyond the data on every side
    got = io.read_box(odd)
    # One block stream, and one sized GET /raw confirming the blocks it left out are absent.
    assert transport.requests_sent - before == 2
    np.testing.assert_array_equal(got, _model_box(volume, start, odd))


def test_read_omits_missing_blocks(dvid_node: Node) -> None:
    dvid_node.create_instance("uint8blk", "gray")
    io = BlockIO.open(dvid_node, "gray")
    block = np.full(io.block_shape, 9, np.uint8)
    io.write({(-1, 0, 2): block})
    found = io.read([(-1, 0, 2), (0, 0, 0), (5, 5, 5), (-1, 0, 2)])
    assert list(found) == [(-1, 0, 2)]
    np.testing.assert_array_equal(found[(-1, 0, 2)], block)


@pytest.mark.parametrize("compression", ["blocks", "lz4", "uncompressed", "gzip"])
def test_labelmap_transfer_encodings_agree(dvid_node: Node, compression: str) -> None:
    dvid_node.create_instance("labelmap", "seg", block_size=(32, 32, 32))
    rng = np.random.default_rng(2)
    # few distinct ids (DVID indexes every label in the background), some beyond 32 bits
    ids = np.array([0, 1, 7, 2**40 + 3, 2**63 + 5], dtype=np.uint64)
    labels = rng.choice(ids, (64, 32, 96))
    writer = BlockIO.open(dvid_node, "seg")
    writer.write_box(labels, (32, 0, -32))
    reader = BlockIO.open(dvid_node, "seg", compression=compression)
    np.testing.assert_array_equal(reader.read_box(((32, 0, -32), (96, 32, 64))), labels)


def test_labelmap_scale_blocks_are_written_with_the_label_codec(dvid_node: Node) -> None:
    dvid_node.create_instance("labelmap", "seg", block_size=(32, 32, 32), max_downres_level=1)
    level1 = BlockIO.open(dvid_node, "seg", scale=1)
    rng = np.random.default_rng(12)
    ids = np.array([0, 5, 2**45 + 9], dtype=np.uint64)
    data = rng.choice(ids, (32, 64, 32))
    transport = dvid_node.transport
    before = transport.requests_sent
    assert level1.write_box(data, (32, 0, 64)) == 1  # one POST /blocks?scale=1 for both blocks
    assert transport.requests_sent - before in (1, 2)  # plus perhaps a lock check
    np.testing.assert_array_equal(level1.read_box(((32, 0, 64), (64, 64, 96))), data)
    level1.write({(1, 0, 2): np.zeros(level1.block_shape, np.uint64)})  # zeros overwrite at scale > 0 too
    assert (1, 0, 2) in level1.read([(1, 0, 2)])
    expected = data.copy()
    expected[:, :32] = 0  # block (1, 0, 2) is y 0..31 of the box
    np.testing.assert_array_equal(level1.read_box(((32, 0, 64), (64, 64, 96))), expected)
    # scale 0 is untouched
    assert BlockIO.open(dvid_node, "seg").read([(2, 0, 4), (2, 1, 4)]) == {}


def test_grayscale_stored_encoding_agrees(dvid_node: Node) -> None:
    dvid_node.create_instance("uint8blk", "gray")
    rng = np.random.default_rng(3)
    volume = rng.integers(0, 256, (32, 64, 32), dtype=np.uint8)
    BlockIO.open(dvid_node, "gray").write_box(volume, (0, 0, 0))
    stored = BlockIO.open(dvid_node, "gray", compression="stored")
    np.testing.assert_array_equal(stored.read_box(((0, 0, 0), volume.shape)), volume)


@pytest.mark.parametrize(
    "storage,default",
    [("lz4", "stored"), ("none", "stored"), ("gzip", "stored"), ("jpeg", "uncompressed"), ("snappy", "uncompressed")],
)
def test_grayscale_read_encoding_follows_the_storage(dvid_node: Node, storage: str, default: str) -> None:
    Voxels.create(dvid_node, "gray", np.uint8, block_size=(32, 32, 32), compression=storage)
    smooth = np.add.outer(np.arange(64), np.add.outer(np.arange(64), np.arange(96))).astype(np.uint8)
    BlockIO.open(dvid_node, "gray").write_box(smooth, (0, 0, 0))
    box = ((0, 0, 0), smooth.shape)
    io = BlockIO.open(dvid_node, "gray")
    assert io.compression == default
    as_dvid_decodes = io.read_box(box)
    np.testing.assert_array_equal(as_dvid_decodes, Voxels(dvid_node, "gray").read(box))
    if storage == "snappy":
        with pytest.raises(UnsupportedError, match="compression='uncompressed'"):
            BlockIO.open(dvid_node, "gray", compression="stored")
        return
    stored = BlockIO.open(dvid_node, "gray", compression="stored").read_box(box)
    if storage == "jpeg":
        # lossy, and libjpeg's inverse DCT is not Go's: close to DVID's decoding, not equal
        assert np.abs(stored.astype(int) - smooth).max() > 0
        assert np.abs(stored.astype(int) - as_dvid_decodes).max() <= 1
    else:
        np.testing.assert_array_equal(stored, smooth)
        np.testing.assert_array_equal(as_dvid_decodes, smooth)


def test_jpeg_blocks_that_are_not_jpeg_are_reported(dvid_server: DvidServer, dvid_node: Node) -> None:
    from dvid_store.codecs.jpeg import decode_jpeg_block

    with pytest.raises(ValueError, match="not a JPEG"):
        decode_jpeg_block(b"\x00" * 64, (4, 4, 4))
    Voxels.create(dvid_node, "gray", np.uint8, block_size=(32, 32, 32), compression="jpeg")
    io = BlockIO.open(dvid_node, "gray", compression="stored")
    io.write_box(np.zeros((32, 32, 32), np.uint8), (0, 0, 0))
    # a short retry budget: an undecodable answer is asked again until the budget is spent
    impatient = DvidClient(dvid_server.url, retry=RetryPolicy(total_seconds=1)).node(dvid_node.uuid)
    wrong_shape = BlockIO(impatient, "gray", typename="uint8blk", block_shape=(32, 16, 64),
                          compression="stored", stored="jpeg")
    with pytest.raises(ServerError, match="could not be decoded"):
        wrong_shape.read([(0, 0, 0)])


@pytest.mark.parametrize(
    "typename,dtype", [("uint16blk", np.uint16), ("float32blk", np.float32), ("uint64blk", np.uint64)]
)
def test_other_voxel_types(dvid_node: Node, typename: str, dtype: type) -> None:
    dvid_node.create_instance(typename, "vox", block_size=(16, 16, 16))
    io = BlockIO.open(dvid_node, "vox")
    assert io.dtype == np.dtype(dtype)
    rng = np.random.default_rng(4)
    data = (rng.random((16, 32, 48)) * 60000).astype(dtype)
    io.write_box(data, (-16, 16, 0))
    np.testing.assert_array_equal(io.read_box(((-16, 16, 0), (0, 48, 48))), data)


@pytest.mark.parametrize("typename", ["uint8blk", "labelmap"])
def test_zero_blocks_overwrite_old_data(dvid_node: Node, typename: str) -> None:
    dvid_node.create_instance(typename, "vol", block_size=(32, 32, 32))
    io = BlockIO.open(dvid_node, "vol")
    ones = np.ones((32, 32, 64), io.dtype) * 7
    io.write_box(ones, (0, 0, 0))
    io.write({(0, 0, 1): np.zeros(io.block_shape, io.dtype)})
    got = io.read_box(((0, 0, 0), (32, 32, 64)))
    np.testing.assert_array_equal(got[..., :32], 7)
    np.testing.assert_array_equal(got[..., 32:], 0)
    # The zero block is stored, not dropped: DVID sends it back.
    assert (0, 0, 1) in io.read([(0, 0, 1)])


def test_write_groups_neighbouring_blocks_into_boxes(dvid_node: Node) -> None:
    dvid_node.create_instance("uint8blk", "gray", block_size=(16, 16, 16))
    io = BlockIO.open(dvid_node, "gray")
    coords = [tuple(int(v) for v in c) for c in block_coords_in_box(((0, 0, 0), (32, 32, 48)), io.block_shape)]
    coords += [(5, 5, 5), (5, 5, 6), (-3, 0, 0)]
    blocks = {c: np.full(io.block_shape, (sum(c) * 17) % 256, np.uint8) for c in coords}
    transport = dvid_node.transport
    before = transport.requests_sent
    sent = io.write(blocks)
    assert sent == len(block_boxes(coords, io.blocks_per_request)) == 3
    assert transport.requests_sent - before in (sent, sent + 1)  # plus perhaps a lock check of the node
    found = io.read(coords)
    assert set(found) == set(coords)
    for c in coords:
        np.testing.assert_array_equal(found[c], blocks[c])


def test_requests_are_capped(dvid_node: Node) -> None:
    dvid_node.create_instance("uint8blk", "gray", block_size=(16, 16, 16))
    io = BlockIO.open(dvid_node, "gray", max_blocks=5)
    box = ((0, 0, 0), (32, 32, 48))
    data = np.arange(np.prod((32, 32, 48)), dtype=np.uint64).astype(np.uint8).reshape(32, 32, 48)
    io.write_box(data, box[0])
    nblocks = len(block_coords_in_box(box, io.block_shape))
    transport = dvid_node.transport
    before = transport.requests_sent
    np.testing.assert_array_equal(io.read_box(box), data)
    assert transport.requests_sent - before == math.ceil(nblocks / 5)


def test_writes_are_capped_in_voxels(dvid_node: Node) -> None:
    dvid_node.create_instance("uint8blk", "gray", block_size=(16, 16, 16))
    block_voxels = 16**3
    io = BlockIO.open(dvid_node, "gray", max_write_voxels=3 * block_voxels + 1)
    assert io.blocks_per_write == 3 and io.blocks_per_request > 3
    box = ((0, 0, 0), (32, 32, 48))
    data = np.random.default_rng(3).integers(0, 256, box_shape_of(box), dtype=np.uint8)
    nblocks = len(block_coords_in_box(box, io.block_shape))
    transport = dvid_node.transport
    before = transport.requests_sent
    sent = io.write_box(data, box[0])
    assert sent == math.ceil(nblocks / 3) and transport.requests_sent - before in (sent, sent + 1)
    blocks = {c: np.full(io.block_shape, sum(c) % 256, np.uint8) for c in io.read(
        [tuple(int(v) for v in c) for c in block_coords_in_box(box, io.block_shape)])}
    assert io.write(blocks) == math.ceil(nblocks / 3)
    np.testing.assert_array_equal(io.read_box(box), np.concatenate(
        [np.concatenate([np.concatenate([blocks[(z, y, x)] for x in range(3)], 2) for y in range(2)], 1)
         for z in range(2)], 0))
    io.write_box(data, box[0])
    np.testing.assert_array_equal(io.read_box(box), data)
    with pytest.raises(DvidInputError, match="max_write_voxels"):
        BlockIO.open(dvid_node, "gray", max_write_voxels=0)


def box_shape_of(box) -> tuple[int, int, int]:
    return tuple(b - a for a, b in zip(*box))


def test_stored_coords_lists_exactly_the_written_blocks(dvid_node: Node) -> None:
    for typename in ("uint8blk", "labelmap"):
        name = f"vol_{typename}"
        dvid_node.create_instance(typename, name, block_size=(16, 16, 16))
        io = BlockIO.open(dvid_node, name, max_blocks=4)
        written = {(-1, 0, 0), (0, 2, -3), (3, 3, 3), (0, 0, 0)}
        io.write({c: np.ones(io.block_shape, io.dtype) for c in written})
        listed = list(io.stored_coords(((-32, -32, -64), (64, 64, 64))))
        assert set(listed) == written and len(listed) == len(written)


def wait_for_label_size(node: Node, instance: str, label: int, voxels: int, timeout: float = 30.0) -> None:
    """Poll DVID until its (asynchronous) label index reports ``voxels`` voxels for ``label``."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        response = node.transport.request("GET", node.path(instance, "size", str(label)), allow_status=(404,))
        if response.status_code == 200 and response.json().get("voxels") == voxels:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"label {label} of {instance!r} not indexed with {voxels} voxels in {timeout} s")
        time.sleep(0.05)  # polling DVID's background indexing, which has no completion signal


def merge_labels(node: Node, instance: str, labels: np.ndarray, target: int, other: int) -> None:
    """Merge body ``other`` into ``target`` once DVID has indexed ``labels``."""
    for label in (target, other):
        wait_for_label_size(node, instance, label, int((labels == label).sum()))
    node.transport.post_json(node.path(instance, "merge"), [target, other])


def test_supervoxels_and_bodies(dvid_node: Node) -> None:
    dvid_node.create_instance("labelmap", "seg", block_size=(32, 32, 32))
    labels = np.zeros((32, 32, 64), np.uint64)
    labels[:, :16] = 11
    labels[:, 16:] = 22
    BlockIO.open(dvid_node, "seg").write_box(labels, (0, 0, 0))
    merge_labels(dvid_node, "seg", labels, 11, 22)
    bodies = BlockIO.open(dvid_node, "seg").read_box(((0, 0, 0), labels.shape))
    supervoxels = BlockIO.open(dvid_node, "seg", supervoxels=True).read_box(((0, 0, 0), labels.shape))
    np.testing.assert_array_equal(supervoxels, labels)
    np.testing.assert_array_equal(bodies, np.where(labels == 22, 11, labels))


def test_locked_node_refuses_writes_before_sending(dvid_node: Node) -> None:
    dvid_node.create_instance("uint8blk", "gray")
    io = BlockIO.open(dvid_node, "gray")
    dvid_node.commit()
    _ = dvid_node.locked  # the node now knows it is locked
    transport = dvid_node.transport
    before = transport.requests_sent
    with pytest.raises(LockedNodeError):
        io.write({(0, 0, 0): np.zeros(io.block_shape, np.uint8)})
    with pytest.raises(LockedNodeError):
        io.write_box(np.zeros((32, 32, 32), np.uint8), (0, 0, 0))
    assert transport.requests_sent == before


def test_bad_input_is_refused_before_sending(dvid_node: Node) -> None:
    dvid_node.create_instance("uint8blk", "gray")
    dvid_node.create_instance("keyvalue", "kv")
    io = BlockIO.open(dvid_node, "gray")
    transport = dvid_node.transport
    before = transport.requests_sent
    with pytest.raises(DvidInputError, match="shape"):
        io.write({(0, 0, 0): np.zeros((32, 32, 16), np.uint8)})
    with pytest.raises(DvidInputError, match="losing values"):
        io.write({(0, 0, 0): np.full((32, 32, 32), 0.5)})
    with pytest.raises(DvidInputError, match="losing values"):
        io.write({(0, 0, 0): np.full((32, 32, 32), 300, np.int64)})
    with pytest.raises(DvidInputError, match="block aligned"):
        io.write_box(np.zeros((32, 32, 32), np.uint8), (0, 0, 5))
    assert transport.requests_sent == before
    with pytest.raises(UnsupportedError, match="keyvalue"):
        BlockIO.open(dvid_node, "kv")
    with pytest.raises(DvidInputError, match="scale"):
        BlockIO.open(dvid_node, "gray", scale=1)
    with pytest.raises(DvidInputError, match="compression"):
        BlockIO.open(dvid_node, "gray", compression="lz4")


def test_pickles_as_configuration(dvid_node: Node) -> None:
    dvid_node.create_instance("labelmap", "seg")
    io = BlockIO.open(dvid_node, "seg", scale=0)
    data = (np.arange(64**3, dtype=np.uint64).reshape(64, 64, 64) % 7) * np.uint64(2**33)
    io.write_box(data, (0, 0, 64))
    payload = pickle.dumps(io)
    assert b"Session" not in payload
    clone = pickle.loads(payload)
    assert clone == io
    np.testing.assert_array_equal(clone.read([(0, 0, 1)])[(0, 0, 1)], data)


@settings(max_examples=60, deadline=None)
@given(
    coords=st.sets(st.tuples(*(st.integers(-3, 3),) * 3), min_size=1, max_size=60),
    cap=st.integers(1, 20),
)
def test_block_boxes_cover_each_block_once(coords: set[tuple[int, int, int]], cap: int) -> None:
    boxes = block_boxes(coords, cap)
    covered: list[tuple[int, int, int]] = []
    for (z, y, x), (nz, ny, nx) in boxes:
        assert nz * ny * nx <= cap
        covered += [(z + a, y + b, x + c) for a in range(nz) for b in range(ny) for c in range(nx)]
    assert sorted(covered) == sorted(coords)


def test_parts_raise_the_first_failure_after_the_running_ones_end() -> None:
    import threading

    from dvid_store.blocks import run_parts

    started: list[int] = []
    ended: list[int] = []
    lock = threading.Lock()
    failed = threading.Event()

    def run(part: int) -> None:
        with lock:
            started.append(part)
        if part == 0:
            failed.set()
            raise DvidInputError("part 0 failed")
        failed.wait()  # still running when part 0 fails
        with lock:
            ended.append(part)

    with pytest.raises(DvidInputError, match="part 0 failed"):
        run_parts(run, list(range(10)), in_flight=3)
    # every part that started had ended when the call returned: nothing runs on behind the caller
    assert sorted(ended + [0]) == sorted(started) and 1 in ended and 2 in ended
