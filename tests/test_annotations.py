"""annotation: elements by box, label, tag and ROI; delete, move, syncs, refusals — against the real server."""

from __future__ import annotations

import numpy as np
import pytest

from dvid_store import BadRequestError, DvidInputError, LockedNodeError, Node, NotFoundError
from dvid_store.datatypes.annotations import Annotations, element, positions
from dvid_store.datatypes.roi import Roi
from dvid_store.testing import wait_until


def by_position(elements) -> dict[tuple[int, int, int], dict]:
    return {tuple(p): e for p, e in zip(positions(elements).tolist(), elements)}


@pytest.fixture
def labelled(dvid_node: Node) -> np.ndarray:
    """A 64³ labelmap "seg" at the origin, written with a plain POST /raw; returns the labels."""
    dvid_node.create_instance("labelmap", "seg", block_size=(64, 64, 64))
    labels = np.zeros((64, 64, 64), dtype=np.uint64)
    labels[:, :, 32:] = 7
    labels[:, 32:, :32] = 9
    labels[40:, :, :] = 2**40 + 3  # a label beyond 32 bits
    dvid_node.custom_request("/seg/raw/0_1_2/64_64_64/0_0_0", labels.tobytes(), "POST")
    # Labelmap writes finish after the response: wait until points read back right.
    probes = [(5, 5, 40), (5, 40, 5), (50, 5, 5), (5, 5, 5)]

    def readable() -> bool:
        for z, y, x in probes:
            answer = dvid_node.transport.get_json(f"/api/node/{dvid_node.uuid}/seg/label/{x}_{y}_{z}")
            if answer["Label"] != labels[z, y, x]:
                return False
        return True

    wait_until(readable, "the labelmap voxels to be readable")
    return labels


@pytest.fixture
def synapses(dvid_node: Node) -> Annotations:
    return Annotations.create(dvid_node, "synapses")


def sample_elements() -> list[dict]:
    return [
        element((5, 5, 40), "PreSyn", tags=["t1"], prop={"conf": "0.9"}, rels=[("PreSynTo", (5, 40, 5))]),
        element((5, 40, 5), "PostSyn", tags=["t1", "t2"], rels=[("PostSynTo", (5, 5, 40))]),
        element((50, 5, 5), "Note", prop={"text": "ünïcødé"}),
        element((5, 5, 5), "Gap"),
        element((-3, -20, -7), "Unknown", tags=["neg"]),
    ]


def test_element_helpers_use_zyx_outside_and_xyz_inside() -> None:
    e = element((1, 2, 3), "PreSyn", tags=["a"], prop={"k": "v"}, rels=[("PreSynTo", (4, 5, 6))])
    assert e == {"Pos": [3, 2, 1], "Kind": "PreSyn", "Tags": ["a"], "Prop": {"k": "v"},
                 "Rels": [{"Rel": "PreSynTo", "To": [6, 5, 4]}]}
    assert positions([e, element((-1, 0, 7))]).tolist() == [[1, 2, 3], [-1, 0, 7]]
    assert positions([]).shape == (0, 3)


def test_post_and_read_by_box(dvid_node: Node, synapses: Annotations) -> None:
    elements = sample_elements()
    synapses.post(elements)
    assert dvid_node.annotations("synapses") == synapses
    inside = synapses.in_box(((0, 0, 0), (64, 64, 64)))
    assert by_position(inside) == {p: e for p, e in by_position(elements).items() if min(p) >= 0}
    negative = synapses.in_box(((-10, -30, -10), (0, 0, 0)))
    assert positions(negative).tolist() == [[-3, -20, -7]]
    # Half-open: the start is in, the stop is out.
    assert positions(synapses.in_box(((5, 5, 5), (6, 6, 6)))).tolist() == [[5, 5, 5]]
    assert synapses.in_box(((4, 4, 4), (5, 5, 5))) == []
    assert synapses.in_box(((1000, 0, 0), (1010, 10, 10))) == []  # DVID says null
    assert by_position(synapses.all()) == by_position(elements)


def test_posting_again_replaces_the_element(synapses: Annotations) -> None:
    synapses.post([element((1, 1, 1), "Note", prop={"v": "1"})])
    synapses.post([element((1, 1, 1), "Note", prop={"v": "2"}, tags=["new"])])
    (only,) = synapses.all()
    assert only["Prop"] == {"v": "2"} and only["Tags"] == ["new"]


def test_by_tag(synapses: Annotations) -> None:
    elements = sample_elements()
    synapses.post(elements)
    for tag in ("t1", "t2", "neg"):
        expected = [p for p, e in by_position(elements).items() if tag in e["Tags"]]
        got = synapses.with_tag(tag)
        assert sorted(by_position(got)) == sorted(expected)
        assert all("Rels" not in e for e in got)
    with_rels = by_position(synapses.with_tag("t1", relationships=True))
    assert with_rels[(5, 5, 40)]["Rels"] == [{"Rel": "PreSynTo", "To": [5, 40, 5]}]
    assert synapses.with_tag("nobody") == []


def test_by_label_with_a_labelmap_sync(labelled: np.ndarray, synapses: Annotations) -> None:
    synapses.sync("seg")
    assert synapses.syncs == ["seg"]
    elements = sample_elements()
    synapses.post(elements)
    expected: dict[int, list] = {}
    for z, y, x in positions(elements).tolist():
        if min(z, y, x) >= 0:
            expected.setdefault(int(labelled[z, y, x]), []).append((z, y, x))
    assert len(expected) >= 3
    for label, points in expected.items():
        if label == 0:
            continue
        got = wait_until(lambda label=label: synapses.for_label(label), f"elements of label {label}")
        assert sorted(by_position(got)) == sorted(points)
    rels = by_position(synapses.for_label(7, relationships=True))
    assert rels[(5, 5, 40)]["Rels"] == [{"Rel": "PreSynTo", "To": [5, 40, 5]}]
    assert synapses.for_label(12345) == []


def test_by_label_needs_a_sync(dvid_node: Node, labelled: np.ndarray, synapses: Annotations) -> None:
    synapses.post(sample_elements())
    # The server itself just answers [] without a sync ...
    assert dvid_node.transport.get_json(synapses.path("label", "7")) == []
    # ... so the client refuses to ask.
    with pytest.raises(DvidInputError, match="not synced"):
        synapses.for_label(7)
    # A sync made after the elements were posted does not index them.
    synapses.sync("seg")
    assert synapses.for_label(7) == []
    for bad in (0, -1, 2**64, 1.5, True):
        with pytest.raises(DvidInputError, match="label"):
            synapses.for_label(bad)


def test_sync_replace_and_validation(dvid_node: Node, labelled: np.ndarray, synapses: Annotations) -> None:
    dvid_node.create_instance("labelmap", "other", block_size=(64, 64, 64))
    synapses.sync("seg")
    synapses.sync("other", replace=True)
    assert synapses.syncs == ["other"]
    synapses.sync(replace=True)
    assert synapses.syncs == []
    with pytest.raises(DvidInputError, match="name the label"):
        synapses.sync()
    with pytest.raises(BadRequestError):
        synapses.sync("no-such-instance")


def test_in_roi(dvid_node: Node, synapses: Annotations) -> None:
    synapses.post(sample_elements())
    roi = Roi.create(dvid_node, "corner", block_size=(64, 64, 64))  # must match the annotation blocks
    roi.post_blocks([(0, 0, 0)])
    expected = sorted(p for p in by_position(sample_elements()) if all(0 <= c < 64 for c in p))
    assert sorted(by_position(synapses.in_roi("corner"))) == expected
    assert sorted(by_position(synapses.in_roi("corner", dvid_node.uuid))) == expected
    Roi.create(dvid_node, "fine")  # 32³ blocks
    with pytest.raises(BadRequestError, match="same block size"):
        synapses.in_roi("fine")


def test_delete_and_move(synapses: Annotations) -> None:
    synapses.post(sample_elements())
    synapses.move((5, 5, 5), (6, 7, 8))
    moved = by_position(synapses.all())
    assert (5, 5, 5) not in moved and moved[(6, 7, 8)]["Kind"] == "Gap"
    synapses.move((6, 7, 8), (200, 200, 200))  # into another block
    assert by_position(synapses.in_box(((190, 190, 190), (210, 210, 210))))[(200, 200, 200)]["Kind"] == "Gap"
    synapses.delete((200, 200, 200))
    synapses.delete((5, 40, 5))
    remaining = by_position(synapses.all())
    assert (200, 200, 200) not in remaining and (5, 40, 5) not in remaining
    # Deleting an element also drops references to it.
    assert remaining[(5, 5, 40)]["Rels"] == []
    with pytest.raises(NotFoundError, match="no element"):
        synapses.delete((5, 40, 5))
    with pytest.raises(NotFoundError, match="to move"):
        synapses.move((1, 1, 1), (2, 2, 2))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"Pos": [1, 2]}, "Pos"),
        ({"Pos": [1.5, 2, 3]}, "Pos"),
        ({"Pos": [1, 2, 2**31]}, "int32"),
        ({"Kind": "Note"}, "no 'Pos'"),
        ({"Pos": [1, 2, 3], "Kind": "Synapse"}, "Kind"),
        ({"Pos": [1, 2, 3], "Tags": "t1"}, "Tags"),
        ({"Pos": [1, 2, 3], "Prop": {"n": 1}}, "Prop"),
        ({"Pos": [1, 2, 3], "Rels": [{"Rel": "Likes", "To": [0, 0, 0]}]}, "relationship"),
        ({"Pos": [1, 2, 3], "Rels": [{"Rel": "PreSynTo", "To": [0, 0]}]}, "To"),
        ({"Pos": [1, 2, 3], "Colour": "red"}, "unknown fields"),
        ([1, 2, 3], "must be a dict"),
    ],
)
def test_bad_elements_are_refused_before_sending(dvid_node: Node, synapses: Annotations, bad, message: str) -> None:
    sent = dvid_node.transport.requests_sent
    with pytest.raises(DvidInputError, match=message):
        synapses.post([element((0, 0, 0)), bad])
    assert dvid_node.transport.requests_sent == sent
    assert synapses.all() == []  # the good element was not sent either


def test_bad_queries_are_refused(dvid_node: Node, synapses: Annotations) -> None:
    sent = dvid_node.transport.requests_sent
    for tag in ("", "a/b", "..", 3):
        with pytest.raises(DvidInputError, match="tag"):
            synapses.with_tag(tag)
    with pytest.raises(DvidInputError):
        synapses.in_box(((0, 0, 0), (0, 1, 1)))
    with pytest.raises(DvidInputError):
        synapses.delete((1, 2))
    assert dvid_node.transport.requests_sent == sent


def test_locked_node_refuses_writes(dvid_node: Node, synapses: Annotations) -> None:
    synapses.post([element((1, 2, 3))])
    dvid_node.commit("done")
    sent = dvid_node.transport.requests_sent
    for call in (
        lambda: synapses.post([element((4, 5, 6))]),
        lambda: synapses.delete((1, 2, 3)),
        lambda: synapses.move((1, 2, 3), (2, 2, 2)),
        lambda: synapses.sync("seg"),
    ):
        with pytest.raises(LockedNodeError):
            call()
    assert dvid_node.transport.requests_sent == sent
    assert positions(synapses.all()).tolist() == [[1, 2, 3]]
