"""Voxels (DVID's imageblk family) against the real server: create, metadata, read, write, options, errors."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from dvid_store import DvidInputError, LockedNodeError, UnsupportedError
from dvid_store.datatypes.voxels import RGBA8, Voxels
from dvid_store.geometry import aligned_box, block_coords_in_box

DTYPES = [np.uint8, np.uint16, np.uint32, np.uint64, np.float32, RGBA8]


def random_volume(shape: tuple[int, ...], dtype, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == RGBA8:
        return rng.integers(0, 256, size=shape + (4,), dtype=np.uint8)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(0, info.max, size=shape, dtype=dtype, endpoint=True)


def set_roi(node, name: str, block_spans: list[list[int]]) -> None:
    """Create a roi instance from (bz, by, bx0, bx1) block spans (DVID's own POST /roi)."""
    node.create_instance("roi", name)
    node.custom_request(f"/{name}/roi", json.dumps(block_spans), "POST")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(np.dtype(d)) if d != RGBA8 else "rgba8")
def test_create_metadata_and_round_trip_at_signed_coordinates(dvid_node, dtype) -> None:
    vol = Voxels.create(dvid_node, "v", dtype)
    expected_type = "rgba8blk" if dtype == RGBA8 else f"{np.dtype(dtype).name}blk"
    assert vol.typename == expected_type
    assert vol.dtype == (np.dtype(np.uint8) if dtype == RGBA8 else np.dtype(dtype))
    assert vol.block_shape == (32, 32, 32)
    assert vol.extents is None and vol.shape is None
    data = random_volume((64, 32, 96), dtype, seed=1)
    offset = (-32, 32, -64)
    vol.write(data, offset)

    assert vol.extents == ((-32, 32, -64), (32, 64, 32))
    assert vol.bounding_box() == vol.extents
    assert vol.shape == data.shape
    assert vol.ndim == data.ndim
    np.testing.assert_array_equal(vol.read((offset, (32, 64, 32))), data)
    # an unaligned box inside, and one reaching into never-written space (zeros)
    np.testing.assert_array_equal(vol.read(((-30, 33, -61), (5, 63, 17))), data[2:37, 1:31, 3:81])
    outside = vol.read(((20, 60, 20), (40, 70, 40)))
    np.testing.assert_array_equal(outside[:12, :4, :12], data[52:, 28:, 84:])
    assert not outside[12:].any() and not outside[:, 4:].any() and not outside[:, :, 12:].any()
    # LZ4 blocks as stored, decoded client-side
    np.testing.assert_array_equal(vol.read(((-30, 33, -61), (5, 63, 17)), compress=True), data[2:37, 1:31, 3:81])


def test_create_settings_in_zyx_order(dvid_node) -> None:
    vol = Voxels.create(
        dvid_node, "aniso", np.uint16, block_size=(16, 32, 64), voxel_size=(40.0, 8.0, 4.0),
        voxel_units=("micrometers", "nanometers", "nanometers"),
    )
    assert vol.block_shape == (16, 32, 64)
    assert vol.voxel_size == (40.0, 8.0, 4.0)
    assert vol.voxel_units == ("micrometers", "nanometers", "nanometers")
    data = random_volume((16, 32, 128), np.uint16, seed=2)
    vol.write(data, (16, -32, 64))
    np.testing.assert_array_equal(vol.read(((16, -32, 64), (32, 0, 192))), data)
    vol.set_voxel_size((30.0, 6.0, 6.0))
    assert dvid_node.voxels("aniso").voxel_size == (30.0, 6.0, 6.0)


def test_set_extents(dvid_node) -> None:
    vol = Voxels.create(dvid_node, "ext", np.uint8)
    vol.set_extents(((-5, 0, 3), (10, 20, 30)))
    assert vol.extents == ((-5, 0, 3), (10, 20, 30))


@pytest.mark.parametrize("compression", ["gzip:5", "none", "snappy", "jpeg"])
def test_stored_compressions_read_both_ways(dvid_node, compression: str) -> None:
    vol = Voxels.create(dvid_node, "c", np.uint8, compression=compression)
    if compression == "jpeg":
        data = np.full((32, 32, 64), 77, np.uint8)  # flat: JPEG keeps it exactly
    else:
        data = random_volume((32, 32, 64), np.uint8, seed=3)
    vol.write(data, (0, 0, -64))
    box = ((3, 1, -60), (30, 31, -2))
    plain = vol.read(box)
    np.testing.assert_array_equal(plain, data[3:30, 1:31, 4:62])
    np.testing.assert_array_equal(vol.read(box, compress=True), plain)


def test_create_refuses_what_dvid_would_refuse_or_misuse(dvid_node) -> None:
    sent = dvid_node.transport.requests_sent
    for dtype in (np.int8, np.float64, np.complex64, "labels"):
        with pytest.raises(DvidInputError, match="no voxel type"):
            Voxels.create(dvid_node, "bad", dtype)
    with pytest.raises(DvidInputError, match="uint8blk"):
        Voxels.create(dvid_node, "bad", np.uint16, compression="jpeg")
    with pytest.raises(DvidInputError, match="jpeg:N"):
        Voxels.create(dvid_node, "bad", np.uint8, compression="jpeg:80")
    with pytest.raises(DvidInputError, match="block_size"):
        Voxels.create(dvid_node, "bad", np.uint8, block_size=(32, 32))
    assert dvid_node.transport.requests_sent == sent
    assert "bad" not in dvid_node.instances()


def test_unaligned_write_fails_before_sending_and_names_the_aligned_box(dvid_node) -> None:
    vol = Voxels.create(dvid_node, "g", np.uint8)
    assert vol.info  # metadata cached, so the refusal below needs no request
    data = np.ones((10, 32, 40), np.uint8)
    sent = dvid_node.transport.requests_sent
    with pytest.raises(DvidInputError) as err:
        vol.write(data, (-3, 0, 30))
    enclosing = aligned_box(((-3, 0, 30), (7, 32, 70)), (32, 32, 32))
    assert str(enclosing[0]) in str(err.value) and str(enclosing[1]) in str(err.value)
    assert "block-aligned" in str(err.value)
    assert dvid_node.transport.requests_sent == sent
    assert vol.extents is None


def test_dtype_checks(dvid_node) -> None:
    vol = Voxels.create(dvid_node, "g", np.uint8)
    assert vol.info
    sent = dvid_node.transport.requests_sent
    with pytest.raises(DvidInputError, match=r"float64.*uint8|uint8.*float64"):
        vol.write(np.zeros((32, 32, 32)), (0, 0, 0))
    with pytest.raises(DvidInputError, match="outside uint8"):
        vol.write(np.full((32, 32, 32), 300, np.int64), (0, 0, 0))
    with pytest.raises(DvidInputError, match="shape"):
        vol.write(np.zeros((32, 32), np.uint8), (0, 0, 0))
    assert dvid_node.transport.requests_sent == sent
    # integers that fit are converted losslessly
    ints = np.arange(32 * 32 * 32, dtype=np.int64).reshape(32, 32, 32) % 256
    vol.write(ints, (0, 0, 0))
    np.testing.assert_array_equal(vol.read(((0, 0, 0), (32, 32, 32))), ints.astype(np.uint8))
    # rgba needs its channel axis
    rgba = Voxels.create(dvid_node, "rgba", RGBA8)
    with pytest.raises(DvidInputError, match="4"):
        rgba.write(np.zeros((32, 32, 32), np.uint8), (0, 0, 0))
    floats = Voxels.create(dvid_node, "f", np.float32)
    with pytest.raises(DvidInputError, match="float64"):
        floats.write(np.zeros((32, 32, 32), np.float64), (0, 0, 0))
    floats.write(np.full((32, 32, 32), 7, np.uint16), (0, 0, 0))  # uint16 -> float32 is exact
    assert floats.read(((0, 0, 0), (1, 1, 1)))[0, 0, 0] == 7.0


def test_rgba_channels_are_a_trailing_axis(dvid_node) -> None:
    vol = Voxels.create(dvid_node, "color", RGBA8)
    data = random_volume((32, 32, 32), RGBA8, seed=4)
    data[..., 3] = 255
    vol[0:32, 0:32, 0:32] = data
    np.testing.assert_array_equal(vol[0:32, 0:32, 0:32], data)
    np.testing.assert_array_equal(vol[0:32, 5:9, 0:32, 0], data[:, 5:9, :, 0])
    assert (vol[0:2, 0:2, 0:2, 3] == 255).all()


def test_large_requests_split_into_parallel_parts(dvid_node) -> None:
    vol = Voxels.create(dvid_node, "big", np.uint16)
    z, y, x = np.meshgrid(np.arange(96), np.arange(64), np.arange(128), indexing="ij")
    data = ((z * 7 + y * 3 + x) % 65536).astype(np.uint16)
    vol.max_request_voxels = 32**3  # forces block-aligned parts of one block each
    transport = dvid_node.transport
    before = transport.requests_sent
    vol.write(data, (-32, 0, 64))
    written = transport.requests_sent - before
    assert written >= len(block_coords_in_box(((-32, 0, 64), (64, 64, 192)), vol.block_shape))
    before = transport.requests_sent
    got = vol.read(((-30, 1, 65), (60, 63, 190)))
    assert transport.requests_sent - before > 1
    np.testing.assert_array_equal(got, data[2:92, 1:63, 1:126])
    # parts cut along y and x too (slabs bigger than the limit) land in the right place
    vol.max_request_voxels = 1000
    np.testing.assert_array_equal(vol.read(((-30, 1, 65), (60, 63, 190))), data[2:92, 1:63, 1:126])
    np.testing.assert_array_equal(vol.read(((-30, 1, 65), (60, 63, 190)), compress=True), data[2:92, 1:63, 1:126])
    fresh = dvid_node.voxels("big")  # the limit is per object
    assert fresh.max_request_voxels > 10**8
    np.testing.assert_array_equal(fresh.read(((-32, 0, 64), (64, 64, 192))), data)


def test_part_limits_follow_dvid_and_lz4_byte_caps(dvid_node) -> None:
    """Parts stay under DVID's 3 GiB request limit and LZ4's block limit, whatever max_request_voxels says."""
    from dvid_store.datatypes.volume import DVID_MAX_REQUEST_BYTES, LIBDVID_MAX_VOXELS, LZ4_MAX_BYTES

    vol = Voxels.create(dvid_node, "g", RGBA8)
    assert vol._part_voxels(4, False) == LIBDVID_MAX_VOXELS  # 2**28 voxels * 4 B = 1 GiB < 3 GiB
    vol.max_request_voxels = 2**40
    assert vol._part_voxels(4, False) * 4 <= DVID_MAX_REQUEST_BYTES
    assert vol._part_voxels(8, True) * 8 <= LZ4_MAX_BYTES
    assert vol._part_voxels(8, False) * 8 <= DVID_MAX_REQUEST_BYTES


def test_roi_masks_reads_and_limits_writes(dvid_node) -> None:
    set_roi(dvid_node, "roi", [[0, 0, 0, 0], [1, 1, 1, 1]])  # blocks (0,0,0) and (1,1,1)
    vol = Voxels.create(dvid_node, "g", np.uint8)
    data = random_volume((64, 64, 64), np.uint8, seed=5) | 1
    vol.write(data, (0, 0, 0))
    masked = vol.read(((0, 0, 0), (64, 64, 64)), roi="roi")
    inside = np.zeros((64, 64, 64), bool)
    inside[:32, :32, :32] = inside[32:, 32:, 32:] = True
    np.testing.assert_array_equal(masked[inside], data[inside])
    assert not masked[~inside].any()

    other = Voxels.create(dvid_node, "h", np.uint8)
    other.write(data, (0, 0, 0), roi="roi")
    stored = other.read(((0, 0, 0), (64, 64, 64)))
    np.testing.assert_array_equal(stored[inside], data[inside])
    assert not stored[~inside].any()
    with pytest.raises(DvidInputError, match="ROI"):
        vol.read(((0, 0, 0), (8, 8, 8)), roi="roi", compress=True)
    # DVID reads roi block coordinates in the volume's own blocks: other sizes are refused
    dvid_node.create_instance("roi", "roi16", block_size=(16, 16, 16))
    with pytest.raises(DvidInputError, match="block size"):
        vol.read(((0, 0, 0), (64, 64, 64)), roi="roi16")
    with pytest.raises(DvidInputError, match="block size"):
        other.write(data, (0, 0, 0), roi="roi16")


def test_throttle_option(dvid_node) -> None:
    vol = Voxels.create(dvid_node, "g", np.uint8)
    data = random_volume((64, 32, 32), np.uint8, seed=6)
    vol.max_request_voxels = 32**3
    vol.write(data, (0, 0, 0), throttle=True)
    np.testing.assert_array_equal(vol.read(((0, 0, 0), (64, 32, 32)), throttle=True), data)
    np.testing.assert_array_equal(vol.read(((0, 0, 0), (64, 32, 32)), throttle=True, compress=True), data)


def test_throttled_requests_wait_for_a_busy_server(dvid_server, dvid_node) -> None:
    """DVID runs one throttled request at a time and answers 503 to others; the client retries them."""
    from concurrent.futures import ThreadPoolExecutor

    from dvid_store import RetryPolicy, ServerBusyError
    from dvid_store.datatypes.labels import Labelmap

    vol = Voxels.create(dvid_node, "g", np.uint8)
    seg = Labelmap.create(dvid_node, "seg")
    data = random_volume((64, 64, 64), np.uint8, seed=9)
    impatient = dvid_server.client(retry=RetryPolicy(max_attempts=2, total_seconds=0.2)).node(dvid_node.uuid)

    # Hold DVID's only throttle slot: a throttled 64 MiB read whose body we leave unread
    # keeps its handler blocked in the middle of writing the response.
    transport = dvid_node.transport
    started, release = threading.Event(), threading.Event()

    def hold_slot(pieces):
        first = next(pieces)
        started.set()
        release.wait(60)
        return len(first) + sum(len(p) for p in pieces)

    with ThreadPoolExecutor(3) as pool:
        hold = pool.submit(
            transport.stream, "GET", vol.path("raw", "0_1_2", "1024_256_256", "0_0_0"), hold_slot,
            params={"throttle": "true"},
        )
        try:
            assert started.wait(60)
            with pytest.raises(ServerBusyError) as busy:
                impatient.voxels("g").write(data, (0, 0, 0), throttle=True)
            assert busy.value.status == 503 and "throttled" in busy.value.message
            with pytest.raises(ServerBusyError):
                impatient.labelmap("seg").write(data.astype(np.uint64), (0, 0, 0), throttle=True)
            voxels = pool.submit(vol.write, data, (0, 0, 0), throttle=True)
            labels = pool.submit(seg.write, data.astype(np.uint64) + 1, (0, 0, 0), throttle=True)
        finally:
            release.set()  # read the rest of the body: DVID frees the slot
        assert hold.result(timeout=60) == 1024 * 256 * 256
        voxels.result(timeout=60)
        labels.result(timeout=60)
    np.testing.assert_array_equal(vol.read(((0, 0, 0), (64, 64, 64)), throttle=True), data)
    np.testing.assert_array_equal(seg.read(((0, 0, 0), (64, 64, 64)), throttle=True), data.astype(np.uint64) + 1)


def test_compressed_writes_are_refused(dvid_node) -> None:
    vol = Voxels.create(dvid_node, "g", np.uint8)
    with pytest.raises(UnsupportedError, match="uncompressed"):
        vol.write(np.zeros((32, 32, 32), np.uint8), (0, 0, 0), compress=True)


def test_versions_committed_node_reads_old_data_and_refuses_writes(dvid_node) -> None:
    vol = Voxels.create(dvid_node, "g", np.uint8)
    first = random_volume((32, 32, 32), np.uint8, seed=7)
    vol.write(first, (0, 0, 0))
    dvid_node.commit("first")
    sent = dvid_node.transport.requests_sent
    with pytest.raises(LockedNodeError):
        vol.write(first, (0, 0, 0))
    assert dvid_node.transport.requests_sent == sent  # refused before sending

    child = dvid_node.new_version("second")
    second = random_volume((32, 32, 32), np.uint8, seed=8)
    child.voxels("g").write(second, (0, 0, 0))
    child.voxels("g").write(second, (32, 0, 0))
    np.testing.assert_array_equal(vol.read(((0, 0, 0), (32, 32, 32))), first)
    assert not vol.read(((32, 0, 0), (64, 32, 32))).any()
    assert vol.extents == ((0, 0, 0), (32, 32, 32))
    np.testing.assert_array_equal(child.voxels("g").read(((0, 0, 0), (64, 32, 32))), np.concatenate([second, second]))
    assert child.voxels("g").extents == ((0, 0, 0), (64, 32, 32))


def test_accessor_checks_the_type(dvid_node) -> None:
    dvid_node.create_instance("labelmap", "seg")
    with pytest.raises(DvidInputError, match="labelmap"):
        dvid_node.voxels("seg")


# ------------------------------------------------------------ multichannel and edge merges
def test_rgba8_is_created_from_the_name_or_numpys_subarray_dtype(dvid_node) -> None:
    for name, dtype in (("by_name", "rgba8"), ("by_numpy", np.dtype((np.uint8, 4))), ("by_type", "rgba8blk")):
        vol = Voxels.create(dvid_node, name, dtype)
        assert vol.typename == "rgba8blk"
        assert vol.dtype == np.uint8 and vol.channel_shape == (4,) and vol.ndim == 4
    assert dvid_node.typeinfo("by_numpy")["Extended"]["Values"][3]["Label"] == "alpha"


def test_other_multichannel_dtypes_are_refused_naming_what_dvid_stores(dvid_node) -> None:
    sent = dvid_node.transport.requests_sent
    for dtype in (np.dtype((np.uint8, 3)), np.dtype((np.uint16, 4)), "rgb", np.int16):
        with pytest.raises(DvidInputError) as err:
            Voxels.create(dvid_node, "bad", dtype)
        message = str(err.value)
        assert "uint8, uint16, uint32, uint64 or float32" in message and "(uint8, 4)" in message and "rgba8" in message
    with pytest.raises(DvidInputError, match="3 channels of uint8"):
        Voxels.create(dvid_node, "bad", np.dtype((np.uint8, 3)))
    assert dvid_node.transport.requests_sent == sent


@pytest.mark.parametrize("dtype", [RGBA8, np.uint8, np.uint64], ids=["rgba8", "uint8", "uint64"])
def test_merge_edges_writes_an_unaligned_box_and_keeps_every_voxel_outside_it(dvid_node, dtype) -> None:
    vol = Voxels.create(dvid_node, "v", dtype)
    outer = ((-32, 0, 0), (128, 128, 128))
    before = random_volume((160, 128, 128), dtype, seed=5)
    vol.write(before, outer[0])
    # pydvid's example box: x 10..110, y 20..120, z 30..130 (here shifted to negative z)
    patch = random_volume((100, 100, 100), dtype, seed=6)
    start = (-2, 20, 10)
    sent = dvid_node.transport.requests_sent
    with pytest.raises(DvidInputError, match="merge_edges=True"):
        vol.write(patch, start)
    assert dvid_node.transport.requests_sent == sent
    vol.write(patch, start, merge_edges=True)
    expected = before.copy()
    expected[30:130, 20:120, 10:110] = patch
    np.testing.assert_array_equal(vol.read(outer), expected)
    # on fresh space the blocks around the box stay zero, and the bounding box grows block-wise
    fresh = Voxels.create(dvid_node, "fresh", dtype)
    fresh.write(patch[:5, :6, :7], (1, -2, 3), merge_edges=True)
    got = fresh.read(((0, -32, 0), (32, 0, 32)))
    assert fresh.extents == ((0, -32, 0), (32, 32, 32))
    np.testing.assert_array_equal(got[1:6, 30:32, 3:10], patch[:5, :2, :7])
    np.testing.assert_array_equal(fresh.read(((1, 0, 3), (6, 4, 10))), patch[:5, 2:6, :7])
    got[1:6, 30:32, 3:10] = 0
    assert not got.any()


def test_merge_edges_through_slicing_and_aligned_boxes_go_straight(dvid_node) -> None:
    vol = Voxels.create(dvid_node, "v", RGBA8)
    merging = vol.with_options(merge_edges=True)
    merging[3:5, 0:64, 7:8] = np.full((2, 64, 1, 4), 9, np.uint8)
    assert (vol[3:5, 0:64, 7:8] == 9).all()
    assert not vol[0:3, 0:64, 0:32].any() and not vol[3:5, 0:64, 8:32].any()
    np.testing.assert_array_equal(merging[3:5, 0:2, 6:9, 0], [[[0, 9, 0]] * 2] * 2)  # reads ignore the option
    sent = dvid_node.transport.requests_sent
    vol.write(np.ones((32, 32, 32, 4), np.uint8), (32, 0, 0), merge_edges=True)
    assert dvid_node.transport.requests_sent - sent <= 2  # one POST (plus the lock check), no edge reads


def test_merge_edges_reports_a_writer_that_overwrote_its_voxels(dvid_node, monkeypatch) -> None:
    from dvid_store import ConcurrentWriteError

    vol = Voxels.create(dvid_node, "v", np.uint8)
    other = dvid_node.client.node(dvid_node.uuid).voxels("v")
    original = Voxels._write_volume

    def write_then_clobber(self, array, box, params, **kwargs):
        original(self, array, box, params, **kwargs)
        if self is vol:  # an independent writer lands between the merge and its check
            original(other, np.full((32, 32, 32), 200, np.uint8), ((0, 0, 0), (32, 32, 32)), {})

    monkeypatch.setattr(Voxels, "_write_volume", write_then_clobber)
    with pytest.raises(ConcurrentWriteError, match="another writer"):
        vol.write(np.ones((10, 10, 10), np.uint8), (5, 5, 5), merge_edges=True)


def test_create_array_takes_rgba8_by_name_or_numpy_dtype_and_names_what_dvid_stores(dvid_node) -> None:
    from dvid_store import create_array
    from dvid_store.blocks import VOXEL_TYPES as ZARR_READY

    sent = dvid_node.transport.requests_sent
    for dtype in (np.dtype((np.uint16, 3)), "int8", "rgb"):
        with pytest.raises(DvidInputError, match=r"uint8, uint16, uint32, uint64 or float32.*\(uint8, 4\)"):
            create_array(dvid_node, "bad", (32, 32, 32), dtype)
    assert dvid_node.transport.requests_sent == sent
    for name, dtype in (("by_name", "rgba8"), ("by_numpy", np.dtype((np.uint8, 4)))):
        if "rgba8blk" in ZARR_READY:  # the zarr store opens rgba8blk: a zarr array over a new instance
            create_array(dvid_node, name, (32, 32, 32), dtype)
            assert dvid_node.voxels(name).typename == "rgba8blk"
        else:  # refused before anything is created, pointing at the node API
            with pytest.raises(UnsupportedError, match=r"Voxels.create\(node, name, 'rgba8'\)"):
                create_array(dvid_node, name, (32, 32, 32), dtype)
            assert name not in dvid_node.instances()
