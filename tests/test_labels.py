"""Label volumes (labelmap, labelarray, labelblk + labelvol) against the real server.

DVID indexes labels after ``POST /raw`` answers, so tests wait for the real
condition (sizes, existence) with a bounded deadline, never a fixed sleep.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dvid_store import DvidInputError, LockedNodeError
from dvid_store.datatypes.labels import IndexingTimeoutError, Labelarray, Labelblk, Labelmap, Labelvol
from dvid_store.datatypes.sparsevol import decode_rles, encode_rles, runs_from_mask, runs_to_coords, runs_to_mask
from dvid_store.testing import wait_until

# ------------------------------------------------------------------ helpers


def segmentation(shape: tuple[int, int, int], seed: int, cell: int = 8, labels: int = 12) -> np.ndarray:
    """Labels 1..labels constant on cell³ cubes (so 2x downsampling is plain subsampling)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(1, labels + 1, size=tuple(n // cell for n in shape), dtype=np.uint64)
    return cells.repeat(cell, 0).repeat(cell, 1).repeat(cell, 2)


def sizes_of(volume: np.ndarray) -> dict[int, int]:
    ids, counts = np.unique(volume, return_counts=True)
    return {int(i): int(n) for i, n in zip(ids, counts) if i != 0}


def box_of(offset, volume: np.ndarray):
    return tuple(offset), tuple(o + n for o, n in zip(offset, volume.shape))


def written(seg: Labelmap, volume: np.ndarray, offset, **options) -> np.ndarray:
    """Write and wait until DVID's index has every label of ``volume``."""
    seg.write(volume, offset, **options)
    seg.wait_for_sizes(sizes_of(volume))
    return volume


# -------------------------------------------------------------- labelmap: voxels
def test_create_and_metadata(dvid_node) -> None:
    seg = Labelmap.create(dvid_node, "seg", block_size=(32, 64, 64), voxel_size=(40, 8, 8), max_downres_level=2)
    assert seg.typename == "labelmap"
    assert seg.dtype == np.uint64
    assert seg.block_shape == (32, 64, 64)
    assert seg.voxel_size == (40.0, 8.0, 8.0)
    assert seg.max_downres_level == 2
    assert seg.extents is None
    assert dvid_node.labelmap("seg") == seg
    with pytest.raises(DvidInputError, match="multiples of 16"):
        Labelmap.create(dvid_node, "bad", block_size=(24, 64, 64))


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip_at_signed_coordinates(dvid_node, compress: bool) -> None:
    seg = Labelmap.create(dvid_node, "seg")
    rng = np.random.default_rng(1)
    volume = segmentation((64, 128, 128), seed=1)
    volume[rng.random(volume.shape) < 0.01] = 2**63 + 5  # large ids survive the round trip
    offset = (-64, 0, -128)
    written(seg, volume, offset, compress=compress)
    np.testing.assert_array_equal(seg.read(box_of(offset, volume), compress=compress), volume)
    np.testing.assert_array_equal(
        seg.read(((-60, 3, -100), (-1, 127, -1)), compress=compress), volume[4:63, 3:127, 28:127]
    )
    assert seg.extents == box_of(offset, volume)


def test_never_written_blocks_read_as_zeros(dvid_node) -> None:
    """DVID fails a /raw read of exactly one missing aligned block; the client reads zeros."""
    seg = Labelmap.create(dvid_node, "seg", max_downres_level=1)
    for compress in (True, False):
        for options in ({}, {"supervoxels": True}, {"scale": 1}):
            block = seg.read(((0, 0, 0), (64, 64, 64)), compress=compress, **options)
            assert block.shape == (64, 64, 64) and not block.any()
    volume = written(seg, segmentation((64, 64, 128), seed=2), (0, 0, 0))
    for compress in (True, False):
        np.testing.assert_array_equal(seg.read(((0, 0, 64), (64, 64, 128)), compress=compress), volume[:, :, 64:])
        assert not seg.read(((64, 0, 0), (128, 64, 64)), compress=compress).any()


def test_lower_scales(dvid_node) -> None:
    seg = Labelmap.create(dvid_node, "seg", max_downres_level=2)
    volume = written(seg, segmentation((128, 128, 256), seed=3), (0, 0, 64))
    for scale in (1, 2):
        f = 2**scale
        expected = volume[::f, ::f, ::f]
        offset = (0, 0, 64 // f)
        np.testing.assert_array_equal(seg.read(box_of(offset, expected), scale=scale), expected)
        np.testing.assert_array_equal(seg.with_options(scale=scale)[...], expected)
        pts = np.array([[0, 0, 64 // f], [5, 7, 64 // f + 9], [127 // f, 127 // f, 64 // f + 255 // f]])
        rel = pts - offset
        np.testing.assert_array_equal(seg.labels_at(pts, scale=scale), expected[rel[:, 0], rel[:, 1], rel[:, 2]])
        assert seg.label_at(pts[1], scale=scale) == expected[tuple(rel[1])]
    assert not seg.read(((0, 0, 0), (8, 8, 8)), scale=3).any()  # no such level: zeros


def test_negative_writes_are_refused_when_dvid_builds_lower_scales(dvid_node) -> None:
    seg = Labelmap.create(dvid_node, "seg", max_downres_level=1)
    assert seg.info
    sent = dvid_node.transport.requests_sent
    with pytest.raises(DvidInputError, match="negative coordinates"):
        seg.write(np.ones((64, 64, 64), np.uint64), (0, -64, 0))
    assert dvid_node.transport.requests_sent == sent
    assert seg.extents is None


def test_writes_without_rebuilding_lower_scales(dvid_node) -> None:
    """downres=False: DVID's block ingestion; scale 1 stays as it was, labels are indexed at once."""
    seg = Labelmap.create(dvid_node, "seg", max_downres_level=1)
    first = segmentation((64, 64, 128), seed=14, labels=6)
    seg.write(first, (0, 0, 0))
    seg.wait_for_sizes(sizes_of(first))
    low = seg.read(((0, 0, 0), (32, 32, 64)), scale=1)
    np.testing.assert_array_equal(low, first[::2, ::2, ::2])

    fresh = np.full((64, 64, 64), 50, np.uint64)
    fresh[:, :, :8] = 51
    seg.write(fresh, (0, 0, 128), downres=False)
    expected = sizes_of(first) | sizes_of(fresh)
    np.testing.assert_array_equal(seg.body_sizes(list(expected)), list(expected.values()))  # no waiting
    np.testing.assert_array_equal(seg.read(((0, 0, 128), (64, 64, 192))), fresh)
    assert not seg.read(((0, 0, 64), (32, 32, 96)), scale=1).any()  # not built
    np.testing.assert_array_equal(seg.read(((0, 0, 0), (32, 32, 64)), scale=1), low)
    assert seg.extents == ((0, 0, 0), (64, 64, 192))

    # no lower scales are built, so negative coordinates are fine
    seg.write(fresh, (-64, 0, 0), downres=False)
    np.testing.assert_array_equal(seg.read(((-64, 0, 0), (0, 64, 64))), fresh)
    assert seg.body_size(50) == 2 * int((fresh == 50).sum())
    sent = dvid_node.transport.requests_sent
    with pytest.raises(DvidInputError, match="mutate"):
        seg.write(fresh, (0, 0, 0), downres=False, mutate=True)
    with pytest.raises(DvidInputError, match="ROI"):
        seg.write(fresh, (0, 0, 0), downres=False, roi="anything")
    with pytest.raises(DvidInputError, match="downres=False"):
        seg.write(fresh, (-64, 0, 0))
    assert dvid_node.transport.requests_sent == sent


def test_mutate_overwrites_keep_the_index_right(dvid_node) -> None:
    seg = Labelmap.create(dvid_node, "seg")
    first = written(seg, segmentation((64, 64, 128), seed=4, labels=5), (0, 0, 0))
    patch = np.full((64, 64, 64), 40, np.uint64)
    patch[:, :32] = 41
    seg.write(patch, (0, 0, 64), mutate=True)
    after = first.copy()
    after[:, :, 64:] = patch
    expected = {label: sizes_of(after).get(label, 0) for label in sizes_of(first) | sizes_of(after)}
    seg.wait_for_sizes(expected)
    np.testing.assert_array_equal(seg.read(((0, 0, 0), (64, 64, 128))), after)


def test_labels_at_points_with_negative_coordinates(dvid_node) -> None:
    """DVID's /label and /labels are wrong for negative coordinates; the client is not."""
    seg = Labelmap.create(dvid_node, "seg")
    offset = (-64, -64, -64)
    volume = written(seg, segmentation((128, 128, 128), seed=5, cell=4, labels=50), offset)
    rng = np.random.default_rng(5)
    pts = rng.integers(-70, 70, size=(300, 3))
    inside = ((pts >= -64) & (pts < 64)).all(axis=1)
    expected = np.zeros(len(pts), np.uint64)
    rel = pts[inside] + 64
    expected[inside] = volume[rel[:, 0], rel[:, 1], rel[:, 2]]
    np.testing.assert_array_equal(seg.labels_at(pts), expected)
    for p, e in list(zip(pts, expected))[:20]:
        assert seg.label_at(p) == e
    assert seg.labels_at(np.zeros((0, 3))).shape == (0,)
    with pytest.raises(DvidInputError, match=r"\(N, 3\)"):
        seg.labels_at([[1, 2]])


# ---------------------------------------------------------- labelmap: the index
@pytest.fixture
def three_bodies(dvid_node):
    """Supervoxels 1 (y < 64), 2 (y >= 64, x < 64), 3 (y >= 64, x >= 64) at a negative z offset."""
    seg = Labelmap.create(dvid_node, "seg")
    volume = np.zeros((64, 128, 128), np.uint64)
    volume[:, :64] = 1
    volume[:, 64:, :64] = 2
    volume[:, 64:, 64:] = 3
    volume[10:20, 70:80, 70:90] = 0  # a hole in 3
    offset = (-64, 0, 0)
    written(seg, volume, offset)
    return seg, volume, offset


def test_sparse_volumes(three_bodies) -> None:
    """Mixed blocks below 0: DVID's /sparsevol would crash the server here, the client must not ask it."""
    seg, volume, offset = three_bodies
    off = np.array(offset)
    for label in (1, 3):
        truth = np.argwhere(volume == label) + off
        coords = seg.sparsevol(label, format="coords")
        np.testing.assert_array_equal(coords, truth)
        runs = seg.sparsevol(label)
        assert runs.shape[1] == 4
        np.testing.assert_array_equal(runs_to_coords(runs), truth)
        assert seg.body_size(label) == len(truth) == int(runs[:, 3].sum())
        lo, hi = truth.min(axis=0), truth.max(axis=0) + 1
        assert seg.bounding_box(label) == (tuple(lo), tuple(hi))
        size = seg.sparsevol_size(label)
        assert size.voxels == len(truth)
        assert size.num_blocks == len(np.unique(truth // 64, axis=0))
        assert size.box == seg.bounding_box(label, exact=False)
        assert all(b % 64 == 0 for corner in size.box for b in corner)
        np.testing.assert_array_equal(seg.sparsevol_coarse(label), np.unique(truth // 64, axis=0))
    # a box with negative minimums (DVID's own bounds miss those blocks)
    box = ((-60, 60, 60), (-40, 75, 100))
    mask = seg.sparsevol(3, format="mask", box=box)
    np.testing.assert_array_equal(mask, volume[4:24, 60:75, 60:100] == 3)
    inside = seg.sparsevol(3, format="coords", box=box)
    np.testing.assert_array_equal(inside, np.argwhere(volume[4:24, 60:75, 60:100] == 3) + np.array(box[0]))
    # absent labels
    assert seg.sparsevol(77).shape == (0, 4) and seg.sparsevol(77, format="coords").shape == (0, 3)
    assert not seg.sparsevol(77, format="mask", box=box).any()
    assert seg.sparsevol_size(77) is None and seg.bounding_box(77) is None
    assert seg.body_size(77) == 0 and not seg.body_exists(77)
    assert seg.sparsevol_coarse(77).shape == (0, 3)
    assert seg.body_exists(1) and seg.body_exists(3)
    with pytest.raises(DvidInputError, match="box"):
        seg.sparsevol(3, format="mask")
    with pytest.raises(DvidInputError, match="format"):
        seg.sparsevol(3, format="blocks")


def test_sparse_volumes_from_dvid_at_scales(dvid_node) -> None:
    """Labels in the positive octant come straight from DVID's /sparsevol, at any scale."""
    seg = Labelmap.create(dvid_node, "seg", max_downres_level=1)
    volume = written(seg, segmentation((64, 128, 128), seed=13, labels=4), (0, 0, 0))
    for label in (1, 4):
        np.testing.assert_array_equal(seg.sparsevol(label, format="coords"), np.argwhere(volume == label))
        low = volume[::2, ::2, ::2]
        np.testing.assert_array_equal(seg.sparsevol(label, format="coords", scale=1), np.argwhere(low == label))
        assert seg.bounding_box(label, scale=1) == (
            tuple(np.argwhere(low == label).min(axis=0)), tuple(np.argwhere(low == label).max(axis=0) + 1)
        )
        box = ((-10, 5, 70), (30, 40, 200))  # reaches below 0 and beyond the data
        mask = seg.sparsevol(label, format="mask", box=box)
        expected = np.zeros(mask.shape, bool)
        expected[10:, :, :58] = volume[:30, 5:40, 70:] == label
        np.testing.assert_array_equal(mask, expected)


def test_bodies_and_supervoxels_after_merge(three_bodies) -> None:
    seg, volume, offset = three_bodies
    box = box_of(offset, volume)
    mutation = seg.merge(1, [2])
    bodies = np.where(volume == 2, 1, volume)
    np.testing.assert_array_equal(seg.read(box), bodies)
    np.testing.assert_array_equal(seg.read(box, supervoxels=True), volume)
    np.testing.assert_array_equal(seg.mapping([1, 2, 3, 99]), [1, 1, 3, 0])
    np.testing.assert_array_equal(seg.supervoxels(1), [1, 2])
    assert seg.supervoxels(2).size == 0
    counts = sizes_of(volume)
    np.testing.assert_array_equal(seg.body_sizes([1, 2, 3]), [counts[1] + counts[2], 0, counts[3]])
    np.testing.assert_array_equal(seg.body_sizes([1, 2], supervoxels=True), [counts[1], counts[2]])
    assert seg.supervoxel_sizes(1) == {1: counts[1], 2: counts[2]}
    assert not seg.body_exists(2) and seg.body_exists(2, supervoxels=True)
    pts = [[-64, 0, 0], [-1, 127, 0], [-1, 127, 127]]
    np.testing.assert_array_equal(seg.labels_at(pts), [1, 1, 3])
    np.testing.assert_array_equal(seg.labels_at(pts, supervoxels=True), [1, 2, 3])
    assert seg.label_at((-1, 127, 0), supervoxels=True) == 2
    np.testing.assert_array_equal(
        seg.sparsevol(2, format="coords", supervoxels=True), np.argwhere(volume == 2) + offset
    )
    log = seg.mutations()
    assert [m["MutationID"] for m in log if m["Action"] == "merge-complete"] == [mutation]
    merge = next(m for m in log if m["Action"] == "merge-complete")
    assert merge["Target"] == 1 and merge["Labels"] == [2]
    assert seg.last_modified(1)["mutation id"] == mutation


def test_cleave_and_splits(three_bodies) -> None:
    seg, volume, offset = three_bodies
    box = box_of(offset, volume)
    seg.merge(1, [2, 3])
    cleaved = seg.cleave(1, [3])
    np.testing.assert_array_equal(seg.mapping([1, 2, 3]), [1, 1, cleaved.cleaved_label])
    bodies = np.where(volume == 3, cleaved.cleaved_label, np.where(volume == 2, 1, volume))
    np.testing.assert_array_equal(seg.read(box), bodies)

    # split supervoxel 3: the part with x < 80 (inside its body, minus the hole)
    region = (volume == 3) & (np.arange(128) < 80)[None, None, :]
    result = seg.split_supervoxel(3, region, offset=offset)
    supervoxels = volume.copy()
    supervoxels[volume == 3] = result.remain_supervoxel
    supervoxels[region] = result.split_supervoxel
    np.testing.assert_array_equal(seg.read(box, supervoxels=True), supervoxels)
    np.testing.assert_array_equal(seg.read(box), bodies)  # the body keeps both parts
    np.testing.assert_array_equal(
        np.sort(seg.supervoxels(cleaved.cleaved_label)), sorted([result.split_supervoxel, result.remain_supervoxel])
    )

    # split a body: the voxels of body 1 with z < -32, given as runs
    part = (bodies == 1) & (np.arange(64) < 32)[:, None, None]
    runs = runs_from_mask(part, offset)
    split = seg.split(1, runs)
    bodies[part] = split.label
    np.testing.assert_array_equal(seg.read(box), bodies)
    actions = [m["Action"] for m in seg.mutations()]
    for action in ("merge-complete", "cleave-complete", "split-supervoxel-complete", "split-complete"):
        assert action in actions


def test_label_ids(three_bodies) -> None:
    seg, _, _ = three_bodies
    # DVID raises its max label per block after answering the write, apart from the label index
    wait_until(lambda: seg.max_label() == 3, "DVID's max label to reach 3 after the write")
    assert seg.next_label() == 4
    reserved = seg.reserve_labels(5)
    assert reserved == range(4, 9)
    assert seg.next_label() == 9 and seg.max_label() == 8
    seg.set_max_label(100)
    assert seg.max_label() == 100
    with pytest.raises(DvidInputError, match="at least 1"):
        seg.reserve_labels(0)


def test_max_label_of_an_empty_labelmap(dvid_node) -> None:
    seg = Labelmap.create(dvid_node, "seg")
    assert seg.max_label() == 0
    assert seg.next_label() == 1


def test_wait_for_sizes_times_out_with_the_last_answer(three_bodies) -> None:
    seg, _, _ = three_bodies
    with pytest.raises(IndexingTimeoutError, match="last answer"):
        seg.wait_for_sizes({1: 1}, timeout=0.2)


def test_committed_node_read_after_child_edits(three_bodies, dvid_node) -> None:
    seg, volume, offset = three_bodies
    box = box_of(offset, volume)
    dvid_node.commit("segmented")
    sent = dvid_node.transport.requests_sent
    with pytest.raises(LockedNodeError):
        seg.write(volume, offset, mutate=True)
    with pytest.raises(LockedNodeError):
        seg.merge(1, [2])
    with pytest.raises(LockedNodeError):
        seg.reserve_labels(1)
    assert dvid_node.transport.requests_sent == sent

    child = dvid_node.new_version("edits").labelmap("seg")
    child.merge(1, [3])
    patch = np.full((64, 64, 64), 7, np.uint64)
    child.write(patch, (-64, 0, 0), mutate=True)
    edited = np.where(volume == 3, 1, volume)
    edited[:, :64, :64] = 7
    wait_until(lambda: child.body_size(7) == 64**3, "the child's index")
    np.testing.assert_array_equal(child.read(box), edited)
    np.testing.assert_array_equal(seg.read(box), volume)  # the parent is untouched
    np.testing.assert_array_equal(seg.mapping([1, 2, 3]), [1, 2, 3])
    assert seg.body_size(7) == 0
    assert seg.mutations() == []


def test_roi_throttle_and_split_requests(dvid_node) -> None:
    for name, size in (("roi", 64), ("roi32", 32)):
        dvid_node.create_instance("roi", name, block_size=(size, size, size))
        dvid_node.custom_request(f"/{name}/roi", json.dumps([[0, 0, 1, 1]]), "POST")  # block x = 1
    seg = Labelmap.create(dvid_node, "seg")
    volume = written(seg, segmentation((64, 64, 128), seed=9), (0, 0, 0), throttle=True)
    masked = seg.read(((0, 0, 0), (64, 64, 128)), roi="roi")
    expected = np.zeros_like(volume)
    expected[:, :, 64:] = volume[:, :, 64:]
    np.testing.assert_array_equal(masked, expected)
    # DVID would read the 32³ roi's block coordinates as 64³ ones: refused
    with pytest.raises(DvidInputError, match="block size"):
        seg.read(((0, 0, 0), (64, 64, 128)), roi="roi32")
    with pytest.raises(DvidInputError, match="block size"):
        seg.write(volume, (0, 0, 0), roi="roi32", mutate=True)
    with pytest.raises(DvidInputError, match="not a roi"):
        seg.read(((0, 0, 0), (64, 64, 128)), roi="seg")
    np.testing.assert_array_equal(seg.read(((0, 0, 0), (64, 64, 128)), throttle=True), volume)

    seg.max_request_voxels = 20_000  # below one block: parts are single blocks, cut along x here
    before = dvid_node.transport.requests_sent
    np.testing.assert_array_equal(seg.read(((1, 2, 3), (63, 62, 125))), volume[1:63, 2:62, 3:125])
    assert dvid_node.transport.requests_sent - before == 2
    second = np.where(volume > 6, volume + 100, volume)
    seg.max_request_voxels = 64**3  # one block per part
    seg.write(second, (0, 0, 0), mutate=True)
    np.testing.assert_array_equal(seg.read(((0, 0, 0), (64, 64, 128))), second)


def test_input_errors_are_refused_before_sending(dvid_node) -> None:
    seg = Labelmap.create(dvid_node, "seg")
    assert seg.info
    sent = dvid_node.transport.requests_sent
    for bad in (0, -3, 2**64, 1.5, "x"):
        with pytest.raises(DvidInputError, match="label"):
            seg.body_exists(bad)
    with pytest.raises(DvidInputError, match="itself"):
        seg.merge(3, [3])
    with pytest.raises(DvidInputError, match="at least one"):
        seg.merge(3, [])
    with pytest.raises(DvidInputError, match="at least one"):
        seg.cleave(3, [])
    with pytest.raises(DvidInputError, match="empty"):
        seg.split_supervoxel(3, np.zeros((4, 4, 4), bool), offset=(0, 0, 0))
    with pytest.raises(DvidInputError, match="float64"):
        seg.write(np.zeros((64, 64, 64)), (0, 0, 0))
    with pytest.raises(DvidInputError, match="outside uint64"):
        seg.write(np.full((64, 64, 64), -1, np.int64), (0, 0, 0))
    with pytest.raises(DvidInputError, match=r"\(0, 0, 0\).*\(64, 64, 64\)"):
        seg.write(np.zeros((10, 10, 10), np.uint64), (0, 0, 0))
    with pytest.raises(DvidInputError, match="scale"):
        seg.read(((0, 0, 0), (1, 1, 1)), scale=-1)
    assert dvid_node.transport.requests_sent == sent
    seg.write(np.arange(64**3, dtype=np.int32).reshape(64, 64, 64) % 5, (0, 0, 0))  # ints that fit are fine
    np.testing.assert_array_equal(seg.read(((0, 0, 0), (1, 1, 5))), [[[0, 1, 2, 3, 4]]])


# ------------------------------------------------------------------ encodings
def test_sparsevol_encodings_round_trip() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((6, 7, 9)) < 0.4
    offset = (-3, 5, -7)
    runs = runs_from_mask(mask, offset)
    np.testing.assert_array_equal(decode_rles(encode_rles(runs)), runs)
    np.testing.assert_array_equal(runs_to_coords(runs), np.argwhere(mask) + offset)
    box = (offset, tuple(o + n for o, n in zip(offset, mask.shape)))
    np.testing.assert_array_equal(runs_to_mask(runs, box), mask)
    inner = ((-2, 6, -5), (2, 10, 0))
    np.testing.assert_array_equal(runs_to_mask(runs, inner), mask[1:5, 1:5, 2:7])


# ------------------------------------------------------------------ labelarray
def test_labelarray(dvid_node) -> None:
    arr = Labelarray.create(dvid_node, "la", max_downres_level=1)
    assert arr.typename == "labelarray" and arr.max_downres_level == 1
    volume = segmentation((64, 64, 128), seed=10, labels=4)
    arr.write(volume, (0, 0, 0))
    np.testing.assert_array_equal(arr.read(((0, 0, 0), (64, 64, 128))), volume)
    assert arr.extents == ((0, 0, 0), (64, 64, 128)) and arr.bounding_box(scale=1) == ((0, 0, 0), (32, 32, 64))
    wait_until(lambda: all(arr.body_exists(label) for label in (1, 2, 4)), "labelarray's index")
    np.testing.assert_array_equal(arr.read(((0, 0, 0), (32, 32, 64)), scale=1), volume[::2, ::2, ::2])
    truth = np.argwhere(volume == 4)
    np.testing.assert_array_equal(arr.sparsevol(4, format="coords"), truth)
    size = arr.sparsevol_size(4)
    assert size.voxels == len(truth) == arr.body_size(4)
    assert arr.bounding_box(4) == (tuple(truth.min(axis=0)), tuple(truth.max(axis=0) + 1))
    pts = np.array([[0, 0, 0], [63, 63, 127], [10, 20, 30]])
    np.testing.assert_array_equal(arr.labels_at(pts), volume[pts[:, 0], pts[:, 1], pts[:, 2]])
    assert arr.max_label() == 4 and arr.next_label() == 5
    arr.merge(1, [2])
    wait_until(lambda: not (arr.read(((0, 0, 0), (64, 64, 128))) == 2).any(), "labelarray's merge")
    np.testing.assert_array_equal(arr.read(((0, 0, 0), (64, 64, 128))), np.where(volume == 2, 1, volume))
    with pytest.raises(DvidInputError, match="supervoxels"):
        arr.read(((0, 0, 0), (1, 1, 1)), supervoxels=True)
    with pytest.raises(DvidInputError, match="negative"):
        arr.write(volume, (0, 0, -128))


def test_labelarray_negative_points(dvid_node) -> None:
    arr = Labelarray.create(dvid_node, "la")
    volume = segmentation((64, 64, 64), seed=11, cell=4, labels=30)
    arr.write(volume, (-64, -64, -64))
    pts = np.random.default_rng(11).integers(-64, 0, size=(50, 3))
    rel = pts + 64
    np.testing.assert_array_equal(arr.labels_at(pts), volume[rel[:, 0], rel[:, 1], rel[:, 2]])
    assert arr.label_at(pts[0]) == volume[tuple(rel[0])]


# -------------------------------------------------------------- labelblk + labelvol
def test_labelblk_with_synced_labelvol(dvid_node) -> None:
    blk = Labelblk.create(dvid_node, "labels", synced_labelvol="bodies")
    assert blk.typename == "labelblk" and blk.block_shape == (32, 32, 32)
    assert dvid_node.instances()["bodies"] == "labelvol"
    assert isinstance(blk.labelvol, Labelvol) and blk.labelvol.name == "bodies"
    assert blk.labelvol.block_shape == (32, 32, 32)
    volume = segmentation((64, 64, 64), seed=12, labels=6)
    offset = (-32, 0, -64)
    blk.write(volume, offset)
    np.testing.assert_array_equal(blk.read(box_of(offset, volume)), volume)
    np.testing.assert_array_equal(blk.read(box_of(offset, volume), compress=False), volume)
    assert blk.extents == box_of(offset, volume)
    np.testing.assert_array_equal(blk[...], volume)
    pts = np.array([[-32, 0, -64], [-1, 10, -1], [31, 63, -1]])
    rel = pts - offset
    np.testing.assert_array_equal(blk.labels_at(pts), volume[rel[:, 0], rel[:, 1], rel[:, 2]])
    assert blk.label_at(pts[1]) == volume[tuple(rel[1])]
    wait_until(lambda: all(blk.body_exists(label) for label in sizes_of(volume)), "the labelvol's sync")
    assert not blk.body_exists(99)
    truth = np.argwhere(volume == 3) + offset
    wait_until(lambda: len(blk.sparsevol(3, format="coords")) == len(truth), "the labelvol's sparse volume")
    np.testing.assert_array_equal(blk.sparsevol(3, format="coords"), truth)
    vol = blk.labelvol
    assert vol.body_size(3) == len(truth)
    assert vol.bounding_box(3) == (tuple(truth.min(axis=0)), tuple(truth.max(axis=0) + 1))
    assert vol.max_label() == max(sizes_of(volume))
    with pytest.raises(DvidInputError, match="no lower scales"):
        blk.read(((0, 0, 0), (1, 1, 1)), scale=1)


def test_labelblk_without_labelvol(dvid_node) -> None:
    blk = Labelblk.create(dvid_node, "labels", block_size=64)
    assert blk.block_shape == (64, 64, 64)
    with pytest.raises(DvidInputError, match="synced labelvol"):
        blk.body_exists(1)
    assert not blk.read(((0, 0, 0), (64, 64, 64))).any()
