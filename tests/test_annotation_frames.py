"""annotation as DataFrames: tiled box reads, partner pairs, per-body frames and counts — against the real server."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from dvid_store import DvidInputError, Node
from dvid_store.datatypes.annotations import (
    FRAME_COLUMNS,
    PARTNER_COLUMNS,
    Annotations,
    element,
    elements_frame,
    elements_from_frame,
    partners_frame,
)
from dvid_store.geometry import box_shape
from dvid_store.testing import wait_until

BLOCK = 64  # DVID's annotation block without a synced label instance




def synapse_set(seed: int = 5, tbars: int = 25, low: int = -20, high: int = 60):
    """T-bars with 1-3 PSDs each at distinct random points; relationships on both ends.

    Returns the elements and the expected (pre zyx, post zyx) pairs.
    """
    rng = np.random.default_rng(seed)
    points = set()
    while len(points) < tbars * 4:
        points.add(tuple(int(v) for v in rng.integers(low, high, 3)))
    pool = sorted(points)
    rng.shuffle(pool)
    elements, pairs = [], []
    for i in range(tbars):
        pre = pool.pop()
        posts = [pool.pop() for _ in range(int(rng.integers(1, 4)))]
        elements.append(element(pre, "PreSyn", tags=["auto"] if i % 2 else [],
                                prop={"conf": f"0.{i:02d}", "user": "ann"},
                                rels=[("PreSynTo", p) for p in posts]))
        for p in posts:
            elements.append(element(p, "PostSyn", prop={"conf": "0.5"}, rels=[("PostSynTo", pre)]))
            pairs.append(pre + p)
    return elements, pairs


def inside(zyx, box) -> bool:
    return all(a <= v < b for v, a, b in zip(zyx, box[0], box[1]))


@pytest.fixture
def synapses(dvid_node: Node) -> Annotations:
    return Annotations.create(dvid_node, "synapses")


def test_element_frame_columns_dtypes_and_properties() -> None:
    frame = elements_frame([
        element((1, 2, 3), "PreSyn", tags=["a", "b"], prop={"conf": "0.9", "z": "clash"}),
        element((-4, 5, 6), "Note", prop={"text": "hi"}),
        {"Pos": [7, 8, 9], "Kind": "PostSyn", "Prop": None},  # DVID may send "Prop": null
    ])
    assert list(frame.columns) == [*FRAME_COLUMNS, "conf", "text", "prop_z"]  # sorted by key
    assert [str(frame[c].dtype) for c in "zyx"] == ["int32"] * 3
    assert frame[["z", "y", "x"]].to_numpy().tolist() == [[1, 2, 3], [-4, 5, 6], [9, 8, 7]]
    assert isinstance(frame["kind"].dtype, pd.CategoricalDtype)
    assert list(frame["kind"].cat.categories) == ["PreSyn", "PostSyn", "Gap", "Note", "Unknown"]
    assert frame["kind"].tolist() == ["PreSyn", "Note", "PostSyn"]
    assert frame["tags"].tolist() == [("a", "b"), (), ()]
    assert frame["conf"].tolist() == ["0.9", None, None]
    assert frame["prop_z"].tolist() == ["clash", None, None]
    assert frame["text"].tolist() == [None, "hi", None]

    empty = elements_frame([])
    assert list(empty.columns) == list(FRAME_COLUMNS) and len(empty) == 0
    assert str(empty["z"].dtype) == "int32"


def test_partners_frame_reads_both_directions_once() -> None:
    pre, post, other = (1, 2, 3), (4, 5, 6), (7, 8, 9)
    frame = partners_frame([
        element(pre, "PreSyn", rels=[("PreSynTo", post)]),
        element(post, "PostSyn", rels=[("PostSynTo", pre)]),  # the same pair, seen from its other end
        element(other, "PostSyn", rels=[("PostSynTo", pre), ("GroupedWith", post)]),
    ])
    assert list(frame.columns) == list(PARTNER_COLUMNS)
    assert all(str(t) == "int32" for t in frame.dtypes)
    assert frame.to_numpy().tolist() == [[*pre, *post], [*pre, *other]]
    assert len(partners_frame([])) == 0


@pytest.mark.parametrize("tile_shape", [None, (64, 64, 64), (5, 17, 130), (64, 1, 1)])
def test_frame_in_box_is_every_element_inside_once_for_any_tiling(
    synapses: Annotations, tile_shape
) -> None:
    elements, _ = synapse_set()
    synapses.post(elements)
    box = ((-13, -5, 2), (47, 51, 33))  # not on the block grid, across blocks -1 and 0
    expected = sorted(
        (tuple(e["Pos"][::-1]), e["Kind"]) for e in elements if inside(tuple(e["Pos"][::-1]), box)
    )
    assert len(synapses.tiles(box, tile_shape)) > 1 or tile_shape is None
    frame = synapses.frame_in_box(box, tile_shape=tile_shape, workers=3)
    got = [(tuple(r[:3]), r[3]) for r in frame[["z", "y", "x", "kind"]].itertuples(index=False)]
    assert got == expected  # sorted by z, y, x and no element twice
    assert not frame.duplicated(["z", "y", "x"]).any()
    # the same elements as the single-request /elements read
    assert sorted(tuple(e["Pos"]) for e in synapses.in_box(box)) == sorted(
        tuple(e["Pos"]) for e in synapses.elements_in_box(box, tile_shape=tile_shape)
    )
    pre_rows = frame[frame["kind"] == "PreSyn"]
    assert set(pre_rows["user"]) == {"ann"} and pre_rows["conf"].str.startswith("0.").all()


def test_tiles_are_block_aligned_disjoint_and_cover_the_box(synapses: Annotations) -> None:
    box = ((-13, -5, 2), (47, 51, 33))
    assert synapses.block_shape == (BLOCK, BLOCK, BLOCK)
    tiles = synapses.tiles(box, (10, 70, 64))  # rounded up to (64, 128, 64)
    assert len(tiles) == 2  # two in z, one in y (128 voxels), one in x
    covered = np.zeros((128, 128, 64), dtype=int)  # the aligned box (-64, -64, 0)..(64, 64, 64)
    for start, stop in tiles:
        assert all(v % BLOCK == 0 for v in (*start, *stop))
        assert box_shape((start, stop)) in ((64, 128, 64),)
        covered[start[0] + 64 : stop[0] + 64, start[1] + 64 : stop[1] + 64, start[2] : stop[2]] += 1
    assert (covered == 1).all()
    with pytest.raises(DvidInputError, match="tile_shape"):
        synapses.tiles(box, (0, 8, 8))


def test_progress_bar_counts_tiles(synapses: Annotations, capsys: pytest.CaptureFixture[str]) -> None:
    synapses.post(synapse_set()[0])
    box = ((-1, -1, -1), (1, 1, 1))
    synapses.frame_in_box(box, tile_shape=(64, 64, 64), progress=True)
    assert "8/8 tiles" in capsys.readouterr().err
    synapses.frame_in_box(box, tile_shape=(64, 64, 64))
    assert capsys.readouterr().err == ""


def test_empty_box_gives_an_empty_frame(synapses: Annotations) -> None:
    synapses.post(synapse_set()[0])
    frame = synapses.frame_in_box(((1000, 1000, 1000), (1100, 1100, 1100)))
    assert len(frame) == 0 and list(frame.columns) == list(FRAME_COLUMNS)
    assert len(synapses.partners_in_box(((1000, 1000, 1000), (1100, 1100, 1100)))) == 0


def test_partners_in_box_has_every_pair_with_an_end_inside(synapses: Annotations) -> None:
    elements, pairs = synapse_set()
    synapses.post(elements)
    box = ((-5, 0, -20), (30, 60, 60))
    expected = sorted(p for p in pairs if inside(p[:3], box) or inside(p[3:], box))
    got = synapses.partners_in_box(box, tile_shape=(64, 32, 64), workers=2)
    assert [tuple(r) for r in got.to_numpy().tolist()] == expected
    everything = ((-20, -20, -20), (60, 60, 60))
    assert len(synapses.partners_in_box(everything)) == len(pairs)
    assert len(synapses.frame_all()) == len(elements)


@pytest.fixture
def labelled(dvid_node: Node) -> np.ndarray:
    """A 32³ labelmap "seg": label 10 where x < 16, 20 where x >= 16 (y < 16), else 0."""
    dvid_node.create_instance("labelmap", "seg", block_size=(64, 64, 64))
    labels = np.zeros((64, 64, 64), dtype=np.uint64)
    labels[:32, :32, :16] = 10
    labels[:32, :16, 16:32] = 20
    dvid_node.custom_request("/seg/raw/0_1_2/64_64_64/0_0_0", labels.tobytes(), "POST")

    def readable() -> bool:
        answer = dvid_node.transport.get_json(f"/api/node/{dvid_node.uuid}/seg/label/20_5_5")
        return answer["Label"] == 20

    wait_until(readable, "the labelmap voxels to be readable")
    return labels


def test_frames_and_counts_for_bodies(labelled: np.ndarray, synapses: Annotations) -> None:
    synapses.sync("seg")
    elements, pairs = synapse_set(seed=9, tbars=12, low=0, high=32)
    synapses.post(elements)
    where = {tuple(e["Pos"][::-1]): e["Kind"] for e in elements}
    body_of = {p: int(labelled[p]) for p in where}
    expect = {b: sorted(p for p in where if body_of[p] == b) for b in (10, 20)}
    assert expect[10] and expect[20]
    wait_until(lambda: len(synapses.for_label(10)) == len(expect[10])
               and len(synapses.for_label(20)) == len(expect[20]), "label indexing")

    frame = synapses.frame_for_bodies([20, 10, 20, 999], workers=2)
    assert str(frame["body"].dtype) == "uint64"
    assert [int(b) for b in frame["body"]] == [10] * len(expect[10]) + [20] * len(expect[20])
    assert [tuple(r) for r in frame[["z", "y", "x"]].to_numpy().tolist()] == expect[10] + expect[20]
    single = synapses.frame_for_body(10)
    assert single[["z", "y", "x"]].to_numpy().tolist() == [list(p) for p in expect[10]]

    counts = synapses.counts_for_bodies([20, 10, 999], workers=3)
    assert counts.index.name == "body" and str(counts.index.dtype) == "uint64"
    assert counts.index.tolist() == [20, 10, 999]
    for body in (10, 20):
        assert counts.loc[body, "PreSyn"] == sum(where[p] == "PreSyn" for p in expect[body])
        assert counts.loc[body, "PostSyn"] == sum(where[p] == "PostSyn" for p in expect[body])
    assert counts.loc[999].tolist() == [0, 0]
    assert all(str(t) == "int64" for t in counts.dtypes)

    got = synapses.partners_for_body(20)
    on_20 = sorted(p for p in pairs if body_of[p[:3]] == 20 or body_of[p[3:]] == 20)
    assert [tuple(r) for r in got.to_numpy().tolist()] == on_20


def test_refusals(dvid_node: Node, synapses: Annotations) -> None:
    with pytest.raises(DvidInputError, match="not synced"):
        synapses.counts_for_bodies([1, 2])
    with pytest.raises(DvidInputError, match="not synced"):
        synapses.frame_for_bodies([1])
    with pytest.raises(DvidInputError, match="single id"):
        synapses.counts_for_bodies(5)  # type: ignore[arg-type]
    with pytest.raises(DvidInputError, match="0 is background"):
        synapses.frame_for_bodies([3, 0])
    with pytest.raises(DvidInputError, match="workers"):
        synapses.frame_in_box(((0, 0, 0), (8, 8, 8)), workers=0)
    with pytest.raises(DvidInputError, match="empty or inverted"):
        synapses.frame_in_box(((0, 0, 0), (0, 8, 8)))


def normalized(elements) -> list:
    return sorted(
        (tuple(e["Pos"]), e["Kind"], tuple(e.get("Tags") or ()), sorted((e.get("Prop") or {}).items()),
         sorted((r["Rel"], tuple(r["To"])) for r in e.get("Rels") or ()))
        for e in elements
    )


def test_frames_post_back_unchanged(dvid_node: Node, synapses: Annotations) -> None:
    elements, _ = synapse_set(seed=2)
    elements.append(element((3, 4, 5), "Note", tags=["a", "b"], prop={"z": "clash", "text": "t"}))
    synapses.post(elements)
    box = ((-20, -20, -20), (60, 60, 60))
    frame, partners = synapses.frame_in_box(box), synapses.partners_in_box(box)
    copy = Annotations.create(dvid_node, "copy")
    copy.post_frame(frame, partners)
    assert normalized(copy.all()) == normalized(elements)
    # without partners: the same elements, no relationships
    bare = Annotations.create(dvid_node, "bare")
    bare.post_frame(frame.assign(conf=frame["conf"].where(frame["kind"] == "PreSyn", None)))
    got = {tuple(e["Pos"]): e for e in bare.all()}
    assert len(got) == len(elements) and not any(e.get("Rels") for e in got.values())
    some_psd = next(e for e in elements if e["Kind"] == "PostSyn")
    assert (got[tuple(some_psd["Pos"])].get("Prop") or {}) == {}  # a missing value is no property


def test_elements_from_frame_refusals() -> None:
    points = pd.DataFrame({"z": [1, 1], "y": [2, 2], "x": [3, 3]})
    with pytest.raises(DvidInputError, match="unique"):
        elements_from_frame(points)
    with pytest.raises(DvidInputError, match="missing"):
        elements_from_frame(pd.DataFrame({"z": [1], "y": [2]}))
    one = pd.DataFrame({"z": [1], "y": [2], "x": [3], "kind": ["PreSyn"]})
    pairs = pd.DataFrame([[1, 2, 3, 7, 7, 7]], columns=list(PARTNER_COLUMNS))
    with pytest.raises(DvidInputError, match=r"\(7, 7, 7\).*not a row"):
        elements_from_frame(one, pairs)
    with pytest.raises(DvidInputError, match="Kind 'Synapse'"):
        elements_from_frame(one.assign(kind="Synapse"))
    assert elements_from_frame(one.assign(tags="solo"))[0]["Tags"] == ["solo"]


def test_without_pandas_the_error_names_the_call(monkeypatch: pytest.MonkeyPatch, synapses: Annotations) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    sent = synapses.transport.requests_sent
    with pytest.raises(ImportError, match=r"Annotations\.frame_in_box\(\).*dvid_store\[dataframes\]"):
        synapses.frame_in_box(((0, 0, 0), (8, 8, 8)))
    assert synapses.transport.requests_sent == sent  # refused before reading anything
