"""labelmap's whole-instance calls against the real server: label indices, label lists,
mappings, supervoxel splits, renumbering, batched cleaves, many points, tags.

Volumes are written with ``downres=False`` (``POST /blocks``), which DVID indexes
before it answers, so no test waits for indexing.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from dvid_store import BadRequestError, DvidClient, DvidInputError, LockedNodeError
from dvid_store.datatypes._label_proto import (
    LabelIndex,
    decode_block_keys,
    decode_label_index,
    decode_label_indices,
    decode_mapping_ops,
    encode_block_keys,
    encode_label_index,
    encode_label_indices,
    encode_mapping_ops,
)
from dvid_store.datatypes._progress import TextProgress
from dvid_store.datatypes.labels import Labelmap
from dvid_store.testing import DvidServer

SHAPE = (64, 128, 128)
OFFSET = (-64, 0, 0)  # one block layer below z = 0, so negative block keys are exercised


def cells(seed: int = 3, labels: int = 6, cell: int = 16) -> np.ndarray:
    """Labels 1..labels, each present, constant on cell³ cubes."""
    rng = np.random.default_rng(seed)
    grid = tuple(n // cell for n in SHAPE)
    ids = rng.integers(1, labels + 1, size=grid, dtype=np.uint64)
    ids.flat[:labels] = np.arange(1, labels + 1, dtype=np.uint64)
    return ids.repeat(cell, 0).repeat(cell, 1).repeat(cell, 2)


def sizes_of(volume: np.ndarray) -> dict[int, int]:
    ids, counts = np.unique(volume, return_counts=True)
    return {int(i): int(n) for i, n in zip(ids, counts) if i}


def blocks_of(volume: np.ndarray, label: int, offset=OFFSET, block: int = 64) -> np.ndarray:
    zyx = np.argwhere(volume == label) + np.asarray(offset)
    coords = np.unique(zyx // block, axis=0)
    return coords[np.lexsort((coords[:, 2], coords[:, 1], coords[:, 0]))]


@pytest.fixture
def seg6(dvid_node):
    seg = Labelmap.create(dvid_node, "seg")
    volume = cells()
    seg.write(volume, OFFSET, downres=False)
    return seg, volume


# ------------------------------------------------------------------ protobuf
def test_block_keys_pack_sign_and_magnitude() -> None:
    coords = np.array([[0, 0, 0], [1, -2, 3], [-1048575, 1048575, -1], [5, 0, -7]])
    keys = encode_block_keys(coords)
    # z in bits 62-42, y in 41-21, x in 20-0, sign at bit 20 of each field
    assert int(keys[1]) == (1 << 42) | ((0x100000 | 2) << 21) | 3
    assert int(keys[2]) == ((0x100000 | 0xFFFFF) << 42) | (0xFFFFF << 21) | (0x100000 | 1)
    np.testing.assert_array_equal(decode_block_keys(keys), coords)
    with pytest.raises(ValueError, match="1048575"):
        encode_block_keys([[1 << 20, 0, 0]])


def test_label_index_messages_round_trip() -> None:
    index = LabelIndex(
        label=2**63 + 5,
        blocks={(0, 0, 0): {7: 10, 2**64 - 1: 2**32 - 1}, (-3, 4, -5): {7: 1}},
        last_mutid=42,
        last_mod_time="2026-12-05T10:00:00Z",
        last_mod_user="ann",
        last_mod_app="tests",
    )
    assert decode_label_index(encode_label_index(index)) == index
    assert index.num_voxels == 10 + 2**32 - 1 + 1
    assert index.supervoxel_sizes() == {7: 11, 2**64 - 1: 2**32 - 1}
    np.testing.assert_array_equal(index.block_coords(), [[-3, 4, -5], [0, 0, 0]])
    np.testing.assert_array_equal(index.block_coords([2**64 - 1]), [[0, 0, 0]])
    both = decode_label_indices(encode_label_indices([index, LabelIndex(9)]))
    assert both == [index, LabelIndex(9)]
    with pytest.raises(ValueError, match="uint32"):
        encode_label_index(LabelIndex(1, {(0, 0, 0): {1: 2**32}}))
    ops = encode_mapping_ops({10: [1, 2, 2**64 - 2], 11: [3]}, mutid=8)
    assert decode_mapping_ops(ops) == [(8, 10, [1, 2, 2**64 - 2]), (8, 11, [3])]


def test_text_progress_draws_counts() -> None:
    out = io.StringIO()
    bar = TextProgress(4, "points", stream=out)
    bar.update(2)
    bar.close()
    assert out.getvalue().splitlines()[-1].endswith("50% 2/4 points")
    out = io.StringIO()
    unknown = TextProgress(None, "pairs", stream=out)
    unknown.update(7)
    assert out.getvalue().endswith("\r7 pairs")


# ------------------------------------------------------------------ label indices
def test_label_index_matches_the_voxels(seg6) -> None:
    seg, volume = seg6
    sizes = sizes_of(volume)
    for label in (1, 4):
        index = seg.label_index(label)
        assert index is not None and index.label == label
        assert index.num_voxels == sizes[label] == seg.body_size(label)
        assert index.supervoxel_sizes() == {label: sizes[label]}
        np.testing.assert_array_equal(index.block_coords(), blocks_of(volume, label))
        np.testing.assert_array_equal(index.block_coords(), seg.sparsevol_coarse(label))
        frame = index.to_frame()
        assert list(frame.columns) == ["bz", "by", "bx", "sv", "count"]
        assert [str(t) for t in frame.dtypes] == ["int32", "int32", "int32", "uint64", "uint32"]
        assert int(frame["count"].sum()) == sizes[label]
    assert seg.label_index(99) is None

    mutation = seg.merge(1, [2])
    merged = seg.label_index(1)
    assert merged is not None and merged.last_mutid == mutation
    assert merged.supervoxel_sizes() == {1: sizes[1], 2: sizes[2]}
    assert merged.last_mod_app == "pytest"
    assert merged.last_mod_time  # RFC 3339 text from the server
    rebuilt = LabelIndex.from_frame(merged.to_frame(), 1, last_mutid=merged.last_mutid,
                                    last_mod_time=merged.last_mod_time, last_mod_user=merged.last_mod_user,
                                    last_mod_app=merged.last_mod_app)
    assert rebuilt == merged
    np.testing.assert_array_equal(seg.coarse_blocks_from_index(2, supervoxels=True), blocks_of(volume, 2))
    np.testing.assert_array_equal(seg.coarse_blocks_from_index(2, supervoxels=True),
                                  seg.sparsevol_coarse(2, supervoxels=True))
    np.testing.assert_array_equal(seg.coarse_blocks_from_index(1), seg.sparsevol_coarse(1))
    assert seg.coarse_blocks_from_index(2).shape == (0, 3)  # merged away: no body 2
    by_body = seg.sizes_from_indices([1, 2, 3, 99])
    assert by_body.index.name == "body" and by_body.name == "size" and by_body.dtype == np.uint64
    assert by_body.to_dict() == {1: sizes[1] + sizes[2], 2: 0, 3: sizes[3], 99: 0}
    by_sv = seg.sizes_from_indices([2, 1, 3, 99], supervoxels=True)
    assert by_sv.index.name == "sv" and by_sv.index.tolist() == [2, 1, 3, 99]
    assert by_sv.tolist() == [sizes[2], sizes[1], sizes[3], 0]
    np.testing.assert_array_equal(by_sv.to_numpy(), seg.body_sizes([2, 1, 3, 99], supervoxels=True))


def test_label_indices_write_read_delete(seg6) -> None:
    seg, volume = seg6
    sizes = sizes_of(volume)
    got = seg.label_indices([3, 99, 5])
    assert got[1] is None
    assert [i.label for i in got if i is not None] == [3, 5]
    assert got == seg.label_indices([3, 99, 5], compressed=False) == [seg.label_index(3), None, seg.label_index(5)]

    copy = got[0]
    assert copy is not None
    copy.label = 7000
    copy.last_mod_user = "copier"
    seg.write_label_index(copy)
    assert seg.label_index(7000) == copy
    assert seg.body_size(7000) == sizes[3]

    again = [LabelIndex(8000 + k, dict(got[2].blocks), last_mutid=k) for k in range(3)]  # type: ignore[union-attr]
    seg.write_label_indices(again, batch_size=2)
    assert seg.label_indices([8000, 8001, 8002]) == again == seg.label_indices([8000, 8001, 8002], compressed=False)
    assert seg.max_label() >= 8002

    other = Labelmap.create(seg.node, "other")
    assert seg.copy_label_indices(other, [3, 99, 8002], batch_size=1) == 2
    assert other.label_indices([3, 99, 8002]) == [seg.label_index(3), None, again[2]]

    seg.delete_label_indices([7000, 8001])
    assert seg.label_index(7000) is None
    assert seg.label_indices([8000, 8001]) == [again[0], None]
    with pytest.raises(DvidInputError):
        seg.write_label_index(LabelIndex(0))


# ------------------------------------------------------------------ label lists
def test_list_labels_pages(seg6) -> None:
    seg, volume = seg6
    sizes = sizes_of(volume)
    everything = np.array(sorted(sizes), dtype=np.uint64)
    listed = seg.list_labels()
    assert listed.dtype == np.uint64
    np.testing.assert_array_equal(listed, everything)
    np.testing.assert_array_equal(seg.list_labels(batch_size=4), everything)
    np.testing.assert_array_equal(seg.list_labels(number=3), everything[:3])
    np.testing.assert_array_equal(seg.list_labels(start=3, number=2, batch_size=1), [3, 4])
    pages = list(seg.iter_labels(batch_size=4))
    assert [len(p) for p in pages] == [4, 2]
    assert list(seg.iter_labels(start=100)) == []

    table = seg.list_label_sizes(batch_size=5)
    assert table.name == "size" and table.index.name == "label"
    assert table.dtype == np.uint64 and table.index.dtype == np.uint64
    assert table.to_dict() == sizes
    with pytest.raises(DvidInputError, match="batch_size"):
        seg.list_labels(batch_size=0)

    seg.merge(1, [6])  # the merged body's index goes away
    np.testing.assert_array_equal(seg.list_labels(), everything[:-1])


def test_cut_label_lists_mappings_and_indices_are_asked_again(seg6, dvid_fault_proxy) -> None:
    """A stream cut inside a record (a clean chunked end: only the content shows it) is sent again."""
    seg, _ = seg6
    seg.merge(1, [2, 3])
    far = Labelmap(DvidClient(dvid_fault_proxy.address).node(seg.node.uuid), "seg")
    rules = [
        dvid_fault_proxy.inject("cut_chunked_clean", match="/listlabels", at=13),
        dvid_fault_proxy.inject("cut_chunked_clean", match="/mappings", at=9),
        dvid_fault_proxy.inject("cut_chunked_clean", match="/indices-compressed", at=0.6),
        dvid_fault_proxy.inject("cut_length", match="/indices-compressed", at=16),
    ]
    np.testing.assert_array_equal(far.list_labels(), [1, 4, 5, 6])
    assert far.mappings().to_dict() == {2: 1, 3: 1}
    assert far.label_indices([4, 1]) == [seg.label_index(4), seg.label_index(1)]
    assert [r.applied for r in rules] == [1, 1, 1, 1]


# ------------------------------------------------------------------ mappings
def test_mappings_follow_merges_and_copy_to_another_node(seg6, dvid_client, dvid_server, capsys) -> None:
    seg, volume = seg6
    empty = seg.mappings()
    assert len(empty) == 0 and empty.dtype == np.uint64 and empty.index.dtype == np.uint64
    seg.merge(1, [2, 3])
    alice = Labelmap(dvid_server.client(user="alice").node(seg.node.uuid), "seg")
    second = alice.merge(4, [5])
    mapping = seg.mappings(progress=True)
    assert capsys.readouterr().err.rstrip().endswith("3 mappings received")
    assert [m["Action"] for m in seg.mutations()] == ["merge-complete", "merge-complete"]
    # DVID v1.0.0 ignores userid=; the records are filtered client-side
    assert [m["MutationID"] for m in seg.mutations(user="alice")] == [second]
    assert seg.mutations(user="nobody") == []
    assert mapping.name == "body" and mapping.index.name == "sv"
    assert mapping.to_dict() == {2: 1, 3: 1, 5: 4}

    other = dvid_client.create_repo("mapping-copy-dest")
    dest = Labelmap.create(other, "seg")
    dest.write(volume, OFFSET, downres=False)
    assert seg.copy_mappings(dest) == 3
    assert dest.mappings().to_dict() == {2: 1, 3: 1, 5: 4}
    np.testing.assert_array_equal(dest.mapping([1, 2, 3, 4, 5, 6]), [1, 1, 1, 4, 4, 6])
    box = (OFFSET, tuple(o + n for o, n in zip(OFFSET, SHAPE)))
    expected = np.where(np.isin(volume, [2, 3]), 1, np.where(volume == 5, 4, volume))
    np.testing.assert_array_equal(dest.read(box), expected)


def test_post_mappings_from_a_series_in_batches(seg6) -> None:
    seg, _ = seg6
    wanted = pd.Series([10, 10, 20], index=np.array([1, 2, 3], np.uint64), dtype=np.uint64)
    seg.post_mappings(wanted, mutid=5, batch_size=1)
    assert seg.mappings().to_dict() == {1: 10, 2: 10, 3: 20}
    np.testing.assert_array_equal(seg.mapping([1, 2, 3, 4]), [10, 10, 20, 4])
    seg.post_mappings({4: 20})
    assert seg.mappings().to_dict() == {1: 10, 2: 10, 3: 20, 4: 20}
    with pytest.raises(DvidInputError, match="background"):
        seg.post_mappings({0: 1})


# ------------------------------------------------------------------ supervoxel splits
def test_supervoxel_splits_table_and_graph(seg6) -> None:
    seg, volume = seg6
    assert seg.supervoxel_splits().empty
    region = (volume == 1) & (np.arange(128) < 64)[None, None, :]
    first = seg.split_supervoxel(1, region, offset=OFFSET)
    rest = (volume == 1) & ~region
    part = rest & (np.arange(64) < 32)[:, None, None]
    second = seg.split_supervoxel(first.remain_supervoxel, part, offset=OFFSET)

    table = seg.supervoxel_splits()
    assert list(table.columns) == ["uuid", "mutid", "old", "remain", "split"]
    assert [str(t) for t in table.dtypes] == ["object", "uint64", "uint64", "uint64", "uint64"]
    assert table[["mutid", "old", "remain", "split"]].values.tolist() == [
        [first.mutation_id, 1, first.remain_supervoxel, first.split_supervoxel],
        [second.mutation_id, first.remain_supervoxel, second.remain_supervoxel, second.split_supervoxel],
    ]
    assert set(table["uuid"]) == {seg.node.uuid}

    graph = seg.supervoxel_split_graph()
    assert graph == {
        1: (first.remain_supervoxel, first.split_supervoxel),
        first.remain_supervoxel: (second.remain_supervoxel, second.split_supervoxel),
    }
    leaves = sorted([first.split_supervoxel, second.remain_supervoxel, second.split_supervoxel])
    np.testing.assert_array_equal(seg.supervoxel_fragments(1), leaves)
    np.testing.assert_array_equal(seg.supervoxel_fragments(1, graph), leaves)
    np.testing.assert_array_equal(seg.supervoxel_fragments(4, graph), [4])
    assert seg.mappings()[1] == 0  # the retired id maps to nothing


# ------------------------------------------------------------------ renumber
def test_renumber_bodies(seg6) -> None:
    seg, volume = seg6
    sizes = sizes_of(volume)
    seg.merge(1, [2])
    seg.renumber({1: 5001, 3: 5003})
    np.testing.assert_array_equal(seg.body_sizes([1, 3, 5001, 5003]), [0, 0, sizes[1] + sizes[2], sizes[3]])
    np.testing.assert_array_equal(seg.mapping([1, 2, 3]), [5001, 5001, 5003])
    box = (OFFSET, tuple(o + n for o, n in zip(OFFSET, SHAPE)))
    expected = np.where(np.isin(volume, [1, 2]), 5001, np.where(volume == 3, 5003, volume))
    np.testing.assert_array_equal(seg.read(box), expected)
    seg.renumber(pd.Series([6004], index=[4]))
    assert seg.body_size(6004) == sizes[4]
    cleaved = seg.cleave(5001, [2]).cleaved_label
    # DVID lists the new body ids of renumbers and cleaves as reserved ids mapping to 0
    assert seg.mappings().to_dict() == {1: 5001, 2: cleaved, 3: 5003, 4: 6004, 5001: 0, 5003: 0, 6004: 0, cleaved: 0}
    with pytest.raises(BadRequestError):
        seg.renumber({6: 7006, 4: 7004})  # body 4 is gone: DVID stops there, after doing 6 → 7006
    assert seg.body_size(7006) == sizes[6] and seg.body_size(7004) == 0
    with pytest.raises(DvidInputError, match="two steps"):
        seg.renumber({5: 6, 6: 7})
    with pytest.raises(DvidInputError, match="only once"):
        seg.renumber({5: 9000, 6: 9000})


# ------------------------------------------------------------------ cleaves
def test_cleave_groups_in_sequence(seg6) -> None:
    seg, _ = seg6
    seg.merge(1, [2, 3, 4, 5])
    results = seg.cleave_groups(1, [[2, 3], [5]])
    assert len({r.cleaved_label for r in results}) == 2
    np.testing.assert_array_equal(
        seg.mapping([1, 2, 3, 4, 5]),
        [1, results[0].cleaved_label, results[0].cleaved_label, 1, results[1].cleaved_label],
    )
    with pytest.raises(DvidInputError, match="overlap"):
        seg.cleave_groups(1, [[4], [4]])
    with pytest.raises(DvidInputError, match="empty"):
        seg.cleave_groups(1, [[]])


@pytest.mark.parametrize("whole", [True, False])
def test_hierarchical_cleave(seg6, whole: bool) -> None:
    seg, volume = seg6
    seg.merge(1, [2, 3, 4, 5, 6])
    groups = {1: 10, 2: 10, 3: 20, 4: 30, 5: 30, 6: 40} if whole else {2: 10, 3: 20, 5: 20}
    requests_before = seg.transport.requests_sent
    table = seg.hierarchical_cleave(1, pd.Series(groups))
    assert table.index.name == "sv" and table.index.dtype == np.uint64
    assert list(table.columns) == ["group", "body"]
    assert table["group"].dtype == np.int64 and table["body"].dtype == np.uint64
    assert table.index.tolist() == sorted(groups)
    assert table["group"].to_dict() == groups
    now = dict(zip(table.index.tolist(), seg.mapping(table.index.to_numpy()).tolist()))
    assert table["body"].to_dict() == now
    by_group = table.groupby("group")["body"].nunique()
    assert (by_group == 1).all()
    assert table.drop_duplicates("group")["body"].nunique() == len(set(groups.values()))
    if whole:
        assert 1 in set(now.values())  # the last group keeps the body id
    else:
        assert 1 not in set(now.values())
        np.testing.assert_array_equal(seg.mapping([1, 4, 6]), [1, 1, 1])
    box = (OFFSET, tuple(o + n for o, n in zip(OFFSET, SHAPE)))
    bodies = seg.read(box)
    for sv, body in now.items():
        assert (bodies[volume == sv] == body).all()
    assert seg.transport.requests_sent > requests_before
    cleaves = [m for m in seg.mutations() if m["Action"] == "cleave-complete"]
    cleaves.sort(key=lambda m: m["MutationID"])
    if whole:
        # halving: the first cleave takes groups 10 and 20 (3 of 6 supervoxels), then one cleave per half
        assert len(cleaves) == 3
        assert sorted(cleaves[0]["CleavedSupervoxels"]) == [1, 2, 3]
    else:
        # all grouped supervoxels leave the body first, then the two groups part
        assert len(cleaves) == 2
        assert sorted(cleaves[0]["CleavedSupervoxels"]) == [2, 3, 5]
    with pytest.raises(DvidInputError, match="not part of body"):
        seg.hierarchical_cleave(1, {99: 1})


# ------------------------------------------------------------------ many points
def test_labels_at_points_batched_and_threaded(seg6) -> None:
    seg, volume = seg6
    rng = np.random.default_rng(0)
    n = 100_000
    lo = np.asarray(OFFSET) - 16  # include never-written voxels around the data
    hi = np.asarray(OFFSET) + np.asarray(SHAPE) + 16
    pts = rng.integers(lo, hi, size=(n, 3))
    inside = ((pts >= OFFSET) & (pts < np.asarray(OFFSET) + SHAPE)).all(axis=1)
    expected = np.zeros(n, np.uint64)
    rel = pts[inside] - OFFSET
    expected[inside] = volume[rel[:, 0], rel[:, 1], rel[:, 2]]
    assert (pts[:, 0] < 0).mean() > 0.5  # most go through the negative-coordinate route

    frame = pd.DataFrame(pts, columns=["z", "y", "x"], index=pd.Index(np.arange(n)[::-1] * 3, name="point"))
    got = seg.labels_at_points(frame, batch_size=7_500, max_workers=3)
    assert got.name == "label" and got.dtype == np.uint64
    assert got.index.equals(frame.index)
    np.testing.assert_array_equal(got.to_numpy(), expected)

    seg.merge(1, [2])
    plain = seg.labels_at_points(pts[:500], supervoxels=True)
    assert isinstance(plain.index, pd.RangeIndex)
    np.testing.assert_array_equal(plain.to_numpy(), expected[:500])
    bodies = seg.labels_at_points(pts[:500], batch_size=7)
    np.testing.assert_array_equal(bodies.to_numpy(), np.where(expected[:500] == 2, 1, expected[:500]))
    with pytest.raises(DvidInputError, match="z, y, x"):
        seg.labels_at_points(pd.DataFrame({"a": [1]}))


def test_labels_at_points_progress(seg6, capsys) -> None:
    seg, volume = seg6
    got = seg.labels_at_points([[-64, 0, 0], [-1, 5, 5], [-30, 127, 127], [0, 0, 0]], batch_size=3, progress=True)
    np.testing.assert_array_equal(got.to_numpy(), [volume[0, 0, 0], volume[63, 5, 5], volume[34, 127, 127], 0])
    assert capsys.readouterr().err.rstrip().endswith("100% 4/4 points")


# ------------------------------------------------------------------ tags
def test_instance_tags(dvid_node) -> None:
    seg = Labelmap.create(dvid_node, "seg")
    assert seg.tags() == {}
    seg.set_tags({"type": "segmentation", "source": "test"})
    seg.set_tags({"stage": "proofread"})
    assert seg.tags() == {"type": "segmentation", "source": "test", "stage": "proofread"}
    seg.set_tags({"only": "this"}, replace=True)
    assert seg.tags() == {"only": "this"}
    dvid_node.commit()
    child = dvid_node.new_version()
    mine = child.labelmap("seg")
    assert mine.tags() == {"only": "this"}
    with pytest.raises(LockedNodeError):
        seg.set_tags({"late": "no"})
    mine.set_tags({}, replace=True)
    assert mine.tags() == {}
    assert seg.tags() == {}  # not versioned: the committed parent sees the child's change
    with pytest.raises(DvidInputError, match="str"):
        seg.set_tags({"n": 1})  # type: ignore[dict-item]


# ------------------------------------------------------------------ index before a mutation
def test_label_index_before_a_mutation(tmp_path) -> None:
    """With a ``[mutcache]`` store DVID keeps each index as it was before every mutation."""
    with DvidServer(extra_toml=f'[mutcache]\n  [mutcache.seg]\n  path = "{tmp_path}/mutcache"\n') as server:
        node = server.client(app="pytest").create_repo("mutcache")
        seg = Labelmap.create(node, "seg")
        volume = cells()
        seg.write(volume, OFFSET, downres=False)
        sizes = sizes_of(volume)
        before = seg.label_index(1)
        mutation = seg.merge(1, [2])
        after = seg.label_index(1)
        assert after is not None and after.supervoxel_sizes() == {1: sizes[1], 2: sizes[2]}
        assert seg.label_index(1, mutid=mutation) == before
        assert seg.label_index(2, mutid=mutation) is not None
        assert seg.label_index(3, mutid=mutation) is None  # untouched: nothing cached


def test_label_index_before_a_mutation_needs_a_mutcache(seg6) -> None:
    seg, _ = seg6
    mutation = seg.merge(1, [2])
    assert seg.label_index(1, mutid=mutation) is None
