"""Many ROIs together: label volumes at any scale and the ROI of many points — against the real server."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dvid_store import DvidInputError, Node, UnknownInstanceError
from dvid_store.datatypes.roi import Roi
from dvid_store.datatypes.rois import (
    RoiLabels,
    point_roi_indices,
    point_rois,
    roi_label_volume,
    spans_contain,
)

NAMES = ["alpha", "beta", "gamma"]


@pytest.fixture
def rois(dvid_node: Node) -> dict[str, Roi]:
    """Three overlapping ROIs around the origin: two with 8³ blocks, one with 16³ blocks."""
    rng = np.random.default_rng(11)
    made = {}
    for name, block, count in (("alpha", 8, 60), ("beta", 8, 80), ("gamma", 16, 12)):
        roi = Roi.create(dvid_node, name, block_size=(block, block, block))
        span = 48 // block
        roi.post_blocks(rng.integers(-span, span, size=(count, 3)))
        made[name] = roi
    # beta shares some blocks with alpha, so the priority rule matters
    shared = np.unique(np.concatenate([made["alpha"].blocks()[:10], made["beta"].blocks()]), axis=0)
    made["beta"].post_blocks(shared)
    return made


def expected_labels(rois: dict[str, Roi], names: list[str], box) -> np.ndarray:
    """First listed wins, from the server's own /mask of each ROI."""
    out = np.zeros([b - a for a, b in zip(*box)], dtype=np.uint8)
    for index, name in enumerate(names, start=1):
        mask = rois[name].mask(box).astype(bool)
        out[mask & (out == 0)] = index
    return out


def test_scale_zero_matches_the_servers_masks_first_listed_wins(dvid_node: Node, rois) -> None:
    box = ((-37, -50, -29), (41, 33, 47))  # off the block grid on every side
    labels = roi_label_volume(dvid_node, NAMES, box)
    assert isinstance(labels, RoiLabels)
    assert labels.volume.dtype == np.uint8 and labels.volume.shape == (78, 83, 76)
    assert labels.box == box and labels.scale == 0
    assert labels.names == {1: "alpha", 2: "beta", 3: "gamma"}
    expected = expected_labels(rois, NAMES, box)
    assert set(np.unique(expected)) == {0, 1, 2, 3}
    assert np.array_equal(labels.volume, expected)
    # overlaps: alpha and beta share blocks, so the order changes the answer
    flipped = roi_label_volume(dvid_node, ["beta", "alpha", "gamma"], box)
    assert np.array_equal(flipped.volume, expected_labels(rois, ["beta", "alpha", "gamma"], box))
    assert not np.array_equal(flipped.volume == 1, labels.volume == 2)  # beta lost voxels to alpha


def block_max(volume: np.ndarray, factor: int) -> np.ndarray:
    z, y, x = (n // factor for n in volume.shape)
    return volume.reshape(z, factor, y, factor, x, factor).max(axis=(1, 3, 5))


@pytest.mark.parametrize("scale", [1, 3, 4, 5])
def test_coarser_scales_mark_a_voxel_when_any_roi_block_overlaps_it(dvid_node: Node, rois, scale: int) -> None:
    factor = 2**scale
    full = ((-64, -64, -64), (64, 64, 64))
    # one ROI at a time, so "any block overlaps" is a max over each factor³ cube of the full-res mask
    for name in NAMES:
        fine = roi_label_volume(dvid_node, [name], full).volume
        coarse = roi_label_volume(dvid_node, [name], tuple(tuple(v // factor for v in c) for c in full), scale=scale)
        assert coarse.scale == scale
        assert np.array_equal(coarse.volume, block_max(fine, factor)), name
    # all together: first listed wins wherever several overlap a coarse voxel
    masks = [block_max(roi_label_volume(dvid_node, [n], full).volume, factor) for n in NAMES]
    expected = np.zeros_like(masks[0])
    for index, mask in enumerate(masks, start=1):
        expected[(mask > 0) & (expected == 0)] = index
    together = roi_label_volume(dvid_node, NAMES, tuple(tuple(v // factor for v in c) for c in full), scale=scale)
    assert np.array_equal(together.volume, expected)


def test_default_box_is_the_union_of_the_rois(dvid_node: Node, rois) -> None:
    blocks = {n: rois[n].blocks() for n in NAMES}
    low = np.min([blocks[n].min(axis=0) * rois[n].block_shape[0] for n in NAMES], axis=0)
    high = np.max([(blocks[n].max(axis=0) + 1) * rois[n].block_shape[0] for n in NAMES], axis=0)
    labels = roi_label_volume(dvid_node, NAMES)
    assert labels.box == (tuple(low.tolist()), tuple(high.tolist()))
    assert np.array_equal(labels.volume, expected_labels(rois, NAMES, labels.box))
    coarse = roi_label_volume(dvid_node, NAMES, scale=4)
    assert coarse.box == (tuple((low // 16).tolist()), tuple((-(-high // 16)).tolist()))


def test_points_by_roi_match_the_servers_point_queries(dvid_node: Node, rois) -> None:
    rng = np.random.default_rng(4)
    points = rng.integers(-70, 70, size=(3000, 3))
    inside = {n: rois[n].contains(points) for n in NAMES}  # POST /ptquery, per ROI
    expected = np.zeros(len(points), dtype=np.uint8)
    for index, name in enumerate(NAMES, start=1):
        expected[inside[name] & (expected == 0)] = index
    assert set(np.unique(expected)) == {0, 1, 2, 3}
    indices = point_roi_indices(dvid_node, NAMES, points)
    assert indices.dtype == np.uint8 and np.array_equal(indices, expected)

    series = point_rois(dvid_node, NAMES, points)
    assert series.name == "roi" and isinstance(series.dtype, pd.CategoricalDtype)
    assert list(series.cat.categories) == NAMES
    assert series.isna().to_numpy().tolist() == (expected == 0).tolist()
    names = np.array([None, *NAMES], dtype=object)[expected]
    assert series.astype(object).where(series.notna(), None).tolist() == names.tolist()

    frame = pd.DataFrame(points, columns=["z", "y", "x"], index=pd.RangeIndex(100, 100 + len(points)))
    frame["roi"] = point_rois(dvid_node, NAMES, frame)
    assert frame["roi"].isna().sum() == int((expected == 0).sum())
    assert frame.loc[100 + int(np.argmax(expected == 3)), "roi"] == "gamma"
    assert len(point_rois(dvid_node, NAMES, np.zeros((0, 3), dtype=int))) == 0


def test_spans_contain_with_overlapping_and_negative_runs() -> None:
    spans = np.array([[0, 0, 0, 5], [0, 0, 2, 3], [0, 0, 8, 8], [-1, -2, -3, -1], [0, 1, 4, 4]])
    block = (4, 4, 4)
    points = np.array([
        [0, 0, 0], [3, 3, 23], [0, 0, 24], [0, 0, 31], [0, 0, 32], [0, 0, 35], [0, 0, 36],
        [-1, -5, -12], [-1, -5, -13], [-4, -8, -1], [-5, -5, -5], [0, 4, 16], [0, 4, 15],
    ])
    assert spans_contain(spans, block, points).tolist() == [
        True, True, False, False, True, True, False, True, False, True, False, True, False,
    ]
    assert spans_contain(np.zeros((0, 4)), block, points).tolist() == [False] * len(points)


def test_refusals(dvid_node: Node, rois) -> None:
    dvid_node.create_instance("labelmap", "seg")
    with pytest.raises(DvidInputError, match="single name"):
        roi_label_volume(dvid_node, "alpha")  # type: ignore[arg-type]
    with pytest.raises(DvidInputError, match="distinct"):
        point_rois(dvid_node, ["alpha", "alpha"], [[0, 0, 0]])
    with pytest.raises(DvidInputError, match="non-empty"):
        roi_label_volume(dvid_node, [])
    with pytest.raises(DvidInputError, match="labelmap, not a roi"):
        roi_label_volume(dvid_node, ["alpha", "seg"], ((0, 0, 0), (8, 8, 8)))
    with pytest.raises(UnknownInstanceError):
        point_roi_indices(dvid_node, ["nope"], [[0, 0, 0]])
    with pytest.raises(DvidInputError, match="scale"):
        roi_label_volume(dvid_node, NAMES, scale=-1)
    with pytest.raises(DvidInputError, match="whole voxel"):
        point_rois(dvid_node, NAMES, [[0.5, 0, 0]])
    with pytest.raises(DvidInputError, match="columns z, y, x"):
        point_rois(dvid_node, NAMES, pd.DataFrame({"x": [1], "y": [2]}))
    empty = Roi.create(dvid_node, "empty")
    with pytest.raises(DvidInputError, match="all empty"):
        roi_label_volume(dvid_node, ["empty"])
    zeros = roi_label_volume(dvid_node, ["empty"], ((0, 0, 0), (4, 4, 4)))
    assert zeros.volume.shape == (4, 4, 4) and not zeros.volume.any()
    assert empty.blocks().shape == (0, 3)
