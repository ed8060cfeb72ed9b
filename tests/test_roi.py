"""roi: block lists, masks, point queries, partitions and mask volumes — against the real server."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dvid_store import DvidInputError, LockedNodeError, Node
from dvid_store.datatypes.roi import Roi, Substack, blocks_to_spans, spans_to_blocks

BLOCK = 8


def expected_mask(blocks: np.ndarray, start, stop, block: int = BLOCK) -> np.ndarray:
    """The 0/1 volume an ROI made of ``blocks`` covers in [start, stop)."""
    grids = np.meshgrid(*[np.arange(a, b) // block for a, b in zip(start, stop)], indexing="ij")
    voxel_blocks = np.stack([g.ravel() for g in grids], axis=1)
    inside = (voxel_blocks[:, None, :] == blocks[None, :, :]).all(axis=2).any(axis=1)
    return inside.reshape([b - a for a, b in zip(start, stop)]).astype(np.uint8)


@pytest.fixture
def roi(dvid_node: Node) -> Roi:
    return Roi.create(dvid_node, "cells", block_size=(BLOCK, BLOCK, BLOCK))


@pytest.fixture
def random_blocks() -> np.ndarray:
    rng = np.random.default_rng(3)
    # Unsorted, with duplicates, around the origin (negative coordinates included).
    return rng.integers(-3, 4, size=(90, 3))


def test_create_and_block_size(dvid_node: Node, roi: Roi) -> None:
    assert roi.block_shape == (BLOCK, BLOCK, BLOCK)
    assert dvid_node.roi("cells") == roi
    default = Roi.create(dvid_node, "default")
    assert default.block_shape == (32, 32, 32)
    assert roi.blocks().shape == (0, 3)


def test_blocks_round_trip_in_libdvid_order(roi: Roi, random_blocks: np.ndarray) -> None:
    roi.post_blocks(random_blocks)
    got = roi.blocks()
    expected = np.unique(random_blocks, axis=0)  # sorted by z, then y, then x
    assert got.dtype == np.int32 and np.array_equal(got, expected)
    assert np.array_equal(roi.spans(), blocks_to_spans(random_blocks))
    # A list of tuples works as well as an array.
    roi.post_blocks([tuple(b) for b in random_blocks[:5].tolist()])
    assert np.array_equal(roi.blocks(), np.unique(random_blocks[:5], axis=0))


def test_post_replaces_the_whole_roi(roi: Roi) -> None:
    roi.post_blocks([(0, 0, 0), (0, 0, 1)])
    roi.post_blocks([(5, 5, 5)])
    assert roi.blocks().tolist() == [[5, 5, 5]]
    roi.post_blocks([])
    assert roi.blocks().shape == (0, 3)


def test_overlapping_spans_from_other_clients_are_deduplicated(dvid_node: Node, roi: Roi) -> None:
    dvid_node.custom_request("/cells/roi", json.dumps([[0, 0, 0, 3], [0, 0, 2, 5], [1, 0, 0, 0]]), "POST")
    assert roi.spans().tolist() == [[0, 0, 0, 3], [0, 0, 2, 5], [1, 0, 0, 0]]
    assert roi.blocks().tolist() == [[0, 0, x] for x in range(6)] + [[1, 0, 0]]


def test_post_mask_marks_blocks_with_any_true_voxel(roi: Roi) -> None:
    rng = np.random.default_rng(5)
    mask = rng.random((21, 19, 30)) > 0.995
    offset = (-11, 3, -17)  # not on the block grid
    written = roi.post_mask(mask, offset=offset)
    expected = np.unique((np.argwhere(mask) + np.asarray(offset)) // BLOCK, axis=0)
    assert np.array_equal(written, expected)
    assert np.array_equal(roi.blocks(), expected)
    # Non-boolean masks: nonzero means inside.
    labels = np.zeros((8, 8, 8), dtype=np.uint64)
    labels[7, 0, 0] = 42
    assert roi.post_mask(labels, offset=(1, 0, 0)).tolist() == [[1, 0, 0]]
    assert roi.post_mask(np.zeros((4, 4, 4), dtype=bool)).shape == (0, 3)
    assert roi.blocks().shape == (0, 3)


def test_contains_points(dvid_node: Node, roi: Roi, random_blocks: np.ndarray) -> None:
    roi.post_blocks(random_blocks)
    rng = np.random.default_rng(11)
    points = rng.integers(-40, 40, size=(300, 3))
    inside = roi.contains(points)
    block_set = {tuple(b) for b in random_blocks.tolist()}
    expected = np.array([tuple(p) in block_set for p in (points // BLOCK).tolist()])
    assert inside.dtype == bool and np.array_equal(inside, expected)
    assert roi.contains([]).shape == (0,)
    assert roi.contains(points[:3].astype(float)).tolist() == expected[:3].tolist()
    dvid_node.commit("read-only now")
    assert np.array_equal(roi.contains(points), expected)  # ptquery is allowed on locked nodes


@pytest.mark.parametrize(
    "box",
    [
        ((0, 0, 0), (24, 24, 24)),
        ((3, 5, 7), (16, 16, 16)),
        ((-24, -24, -24), (0, 0, 0)),
        ((-20, -13, -5), (-7, -2, 4)),
        ((-5, -5, -5), (5, 5, 5)),
        ((-29, 2, -4), (-21, 30, 17)),
    ],
)
def test_mask_volume_matches_blocks(roi: Roi, random_blocks: np.ndarray, box) -> None:
    roi.post_blocks(random_blocks)
    volume = roi.mask(box)
    start, stop = box
    assert volume.dtype == np.uint8
    assert volume.shape == tuple(b - a for a, b in zip(start, stop))
    assert np.array_equal(volume, expected_mask(np.unique(random_blocks, axis=0), start, stop))


def test_server_mask_is_wrong_for_unaligned_negative_boxes(dvid_node: Node, roi: Roi) -> None:
    # Why Roi.mask always asks for block-aligned boxes.
    roi.post_blocks([(-1, -1, -1), (0, 0, 0)])
    raw = dvid_node.custom_request("/cells/mask/0_1_2/10_10_10/-5_-5_-5")
    server = np.frombuffer(raw, dtype=np.uint8).reshape(10, 10, 10)
    truth = expected_mask(roi.blocks(), (-5, -5, -5), (5, 5, 5))
    assert not np.array_equal(server, truth)
    assert np.array_equal(roi.mask(((-5, -5, -5), (5, 5, 5))), truth)


def test_partition_like_libdvid(dvid_node: Node, roi: Roi, random_blocks: np.ndarray) -> None:
    roi.post_blocks(random_blocks)
    blocks = roi.blocks()
    substacks, packing = roi.partition(2)
    size = 2 * BLOCK
    assert substacks and all(isinstance(s, Substack) and s.size == size for s in substacks)
    assert substacks == sorted(substacks, key=lambda s: (s.z, s.y, s.x))
    # Every ROI block lies in exactly one substack, and every substack holds ROI blocks.
    starts = np.array([(s.z, s.y, s.x) for s in substacks])
    voxel = blocks * BLOCK
    within = ((voxel[:, None, :] >= starts[None]) & (voxel[:, None, :] < starts[None] + size)).all(axis=2)
    assert (within.sum(axis=1) == 1).all()
    assert within.any(axis=0).all()
    # The packing factor is DVID's active / total block count (as in libdvid) ...
    raw = json.loads(dvid_node.custom_request("/cells/partition?batchsize=2"))
    assert raw["NumActiveBlocks"] == len(blocks)
    assert packing == pytest.approx(len(blocks) / raw["NumTotalBlocks"])
    # ... whose total also counts substacks it dropped for being empty.
    assert raw["NumTotalBlocks"] >= len(substacks) * 2**3
    assert 0 < packing <= len(blocks) / (len(substacks) * 2**3)
    assert substacks[0].box == ((starts[0][0], starts[0][1], starts[0][2]), tuple(starts[0] + size))


def test_partition_of_a_single_block_and_of_nothing(roi: Roi) -> None:
    assert roi.partition(4)[0] == []
    assert math.isnan(roi.partition(4)[1])
    roi.post_blocks([(1, 2, 3)])
    substacks, packing = roi.partition(1)
    assert substacks == [Substack(BLOCK, 1 * BLOCK, 2 * BLOCK, 3 * BLOCK)]
    assert packing == 1.0


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "2"])
def test_partition_refuses_bad_sizes_before_sending(dvid_node: Node, roi: Roi, size) -> None:
    sent = dvid_node.transport.requests_sent
    with pytest.raises(DvidInputError, match="partition_size"):
        roi.partition(size)
    assert dvid_node.transport.requests_sent == sent


def test_partition_needs_cubic_blocks(dvid_node: Node) -> None:
    flat = Roi.create(dvid_node, "flat", block_size=(8, 16, 16))
    flat.post_blocks([(0, 0, 0)])
    with pytest.raises(DvidInputError, match="non-cubic"):
        flat.partition(2)


def test_delete(roi: Roi) -> None:
    roi.post_blocks([(0, 0, 0)])
    roi.delete()
    assert roi.blocks().shape == (0, 3)


def test_writes_to_locked_nodes_are_refused_before_sending(dvid_node: Node, roi: Roi) -> None:
    roi.post_blocks([(0, 0, 0)])
    dvid_node.commit("done")
    sent = dvid_node.transport.requests_sent
    for call in (
        lambda: roi.post_blocks([(1, 1, 1)]),
        lambda: roi.post_mask(np.ones((1, 1, 1), dtype=bool)),
        roi.delete,
    ):
        with pytest.raises(LockedNodeError):
            call()
    assert dvid_node.transport.requests_sent == sent
    assert roi.blocks().tolist() == [[0, 0, 0]]


def test_bad_inputs_are_refused(dvid_node: Node, roi: Roi) -> None:
    sent = dvid_node.transport.requests_sent
    with pytest.raises(DvidInputError, match=r"\(N, 3\)"):
        roi.contains([1, 2, 3])
    with pytest.raises(DvidInputError, match="integers"):
        roi.contains([[0.5, 1, 2]])
    with pytest.raises(DvidInputError, match=r"\(N, 3\)"):
        roi.post_blocks([[1, 2]])
    with pytest.raises(DvidInputError, match="3-D"):
        roi.post_mask(np.ones((4, 4), dtype=bool))
    with pytest.raises(DvidInputError, match="empty or inverted"):
        roi.mask(((0, 0, 0), (0, 5, 5)))
    assert dvid_node.transport.requests_sent == sent


def test_run_length_helpers() -> None:
    rng = np.random.default_rng(1)
    blocks = rng.integers(-5, 5, size=(200, 3))
    spans = blocks_to_spans(blocks)
    assert (spans[:, 3] >= spans[:, 2]).all()
    assert np.array_equal(spans_to_blocks(spans), np.unique(blocks, axis=0))
    # Runs are maximal: two runs on one row never touch.
    same_row = (spans[1:, :2] == spans[:-1, :2]).all(axis=1)
    assert (spans[1:, 2][same_row] > spans[:-1, 3][same_row] + 1).all()
    assert spans_to_blocks(np.zeros((0, 4))).shape == (0, 3)
    assert blocks_to_spans(np.zeros((0, 3))).shape == (0, 4)
