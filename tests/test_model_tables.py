"""Model-based tests of the connectomics tables: random sequences of writes, to DVID and to a model.

Hypothesis state machines against the real DVID server of the session:

* ``NeuronjsonModel``: a dict of body → annotation. Rules: ``put`` (an update: the
  fields given change, the others stay), ``put(replace=True)``, ``put`` with
  ``conditional=`` fields (kept where the stored annotation already has them),
  ``put_many`` and ``delete`` (also of bodies without an annotation); integers that DVID
  would read back changed (see the neuronjson module notes) are refused. After every step
  ``get_many``, ``get``, ``keys``, ``to_frame`` and ``query_frame`` are compared with
  the model.
* ``AnnotationModel``: elements by position (kind, tags, properties, relationships).
  Rules: synapses posted as DataFrames (``post_frame`` with their partners), notes
  posted or overwritten, the whole region read as frames, changed and posted back,
  ``delete`` and ``move`` (and both at points where no element is: NotFoundError,
  nothing changes). Synapses record their relationship on both ends, as DVID's
  loaders do; the model then follows DVID's deletes (references to the deleted
  element go) and moves (references follow it). The elements lie around a labelmap
  the instance is synced with, and the model keeps DVID's label index as v1.0.0 keeps
  it, two DVID bugs included (a move within one label leaves the index at the old
  position; elements just below zero are filed under the label across zero). After
  every step ``frame_in_box`` over the model's region (in several tiles or one,
  taking turns) and ``frame_for_body`` of one body (taking turns) are compared with
  the model; at the end of each example also ``partners_in_box``, every body's
  ``frame_for_body``, ``with_tag`` (DVID's tag index) and ``all()``.

As in ``test_write_model.py``, failures are not shrunk unless
``DVID_WRITE_MODEL_SHRINK=1``, and ``DVID_WRITE_MODEL_EXAMPLES=<factor>`` multiplies the
number of examples.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from test_write_model import _failing, _settings

from dvid_store import DvidInputError, Node, NotFoundError, ServerError
from dvid_store.datatypes.annotations import element, elements_frame, partners_frame

_names = itertools.count()


# ===================================================================== neuronjson
BODIES = st.sampled_from([1, 9, 300, 2**40 + 3, 2**63, 2**64 - 1])
#: One value strategy per field, so that a query on ``type`` has plain strings to match.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "status": st.sampled_from(["Traced", "Anchor", "Orphan", "", "<b>Roughly</b> traced"]),
    "type": st.sampled_from(["KC", "MBON", "PN"]),
    "size": st.one_of(st.integers(-(2**63), 2**64 - 1), st.sampled_from([0.5, 1.25, -3.75])),  # exact as fields
    "tags": st.lists(st.sampled_from(["a", "b", "ç"]), max_size=3),
    "ids": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),  # exact as items of a field's list
    "meta": st.dictionaries(st.sampled_from(["n", "m"]), st.integers(-(2**53), 2**53)),  # exact: up to 2**53
    "flag": st.booleans(),
}
FIELDS = st.sets(st.sampled_from(sorted(FIELD_VALUES)), max_size=3).flatmap(
    lambda names: st.fixed_dictionaries({name: FIELD_VALUES[name] for name in sorted(names)})
)


def _frame_rows(frame: pd.DataFrame) -> dict[int, dict[str, Any]]:
    """A to_frame()/query_frame() table back as body → fields (missing values dropped)."""
    assert frame.index.dtype == np.uint64 and frame.index.name == "body"
    assert frame.index.is_monotonic_increasing, "rows are sorted by body"
    rows: dict[int, dict[str, Any]] = {}
    for body, row in zip(frame.index.tolist(), frame.to_dict(orient="records")):
        rows[int(body)] = {"bodyid": int(body)} | {
            k: v for k, v in row.items() if not (v is None or (isinstance(v, float) and np.isnan(v)))
        }
    return rows


class NeuronjsonModel(RuleBasedStateMachine):
    """A neuronjson instance and its model, body → annotation (``bodyid`` included)."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.name = f"nj{next(_names)}"
        node.create_instance("neuronjson", self.name)
        self.ann = node.neuronjson(self.name)
        self.model: dict[int, dict[str, Any]] = {}
        self.steps = 0

    def _old(self, body: int) -> dict[str, Any]:
        return dict(self.model.get(body, {"bodyid": body}))

    @rule(body=BODIES, fields=FIELDS)
    def put_update(self, body: int, fields: dict[str, Any]) -> None:
        self.ann.put(body, fields)
        self.model[body] = self._old(body) | fields

    @rule(body=BODIES, fields=FIELDS)
    def put_replace(self, body: int, fields: dict[str, Any]) -> None:
        self.ann.put(body, fields, replace=True)
        self.model[body] = {"bodyid": body} | fields

    @rule(body=BODIES, fields=FIELDS, data=st.data())
    def put_conditional(self, body: int, fields: dict[str, Any], data: st.DataObject) -> None:
        kept = data.draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), min_size=1, max_size=3, unique=True),
                         label="conditional")
        self.ann.put(body, fields, conditional=kept)
        old = self._old(body)
        new = old | fields
        if body in self.model:  # DVID keeps a conditional field the stored annotation has (any value)
            new |= {k: old[k] for k in kept if k in old}
        self.model[body] = new

    @rule(annotations=st.dictionaries(BODIES, FIELDS, min_size=1, max_size=3))
    def put_many(self, annotations: dict[int, dict[str, Any]]) -> None:
        self.ann.put_many(annotations)
        for body, fields in annotations.items():
            self.model[body] = self._old(body) | fields

    @rule(body=BODIES, data=st.data())
    def put_changing_integer_is_refused(self, body: int, data: st.DataObject) -> None:
        """Integers DVID would read back changed are refused, and nothing is written."""
        fields = data.draw(st.one_of(
            st.integers(2**64, 2**70).map(lambda v: {"size": v}),
            st.integers(-(2**70), -(2**63) - 1).map(lambda v: {"size": v}),
            st.integers(2**63, 2**64 - 1).map(lambda v: {"ids": [1, v]}),
            st.integers(2**53 + 1, 2**64 - 1).map(lambda v: {"meta": {"n": -v}}),
            st.integers(2**53 + 1, 2**63).map(lambda v: {"ids": [[v]]}),
        ), label="fields")
        with pytest.raises(DvidInputError, match="would read back changed"):
            self.ann.put(body, {"status": "Traced", **fields})

    @rule(body=BODIES)
    def delete(self, body: int) -> None:
        self.ann.delete(body)  # also of a body without an annotation: no error
        self.model.pop(body, None)

    # ----------------------------------------------------------------- checks
    def listed(self) -> dict[int, dict[str, Any]]:
        """What DVID's /all lists: annotations with a field besides ``bodyid``."""
        return {b: r for b, r in sorted(self.model.items()) if len(r) > 1}

    @invariant()
    def dvid_matches_model(self) -> None:
        bodies = [1, 9, 300, 2**40 + 3, 2**63, 2**64 - 1]
        assert self.ann.get_many(bodies) == self.model
        body = bodies[self.steps % len(bodies)]
        self.steps += 1
        if body in self.model:
            assert self.ann.get(body) == self.model[body]
        else:
            with pytest.raises(NotFoundError, match=f"body {body} has no annotation"):
                self.ann.get(body)
        assert self.ann.keys().tolist() == sorted(self.model)
        assert _frame_rows(self.ann.to_frame()) == self.listed()
        kc = {b: r for b, r in self.listed().items() if r.get("type") == "KC"}
        assert _frame_rows(self.ann.query_frame({"type": "KC"})) == kc

    def teardown(self) -> None:
        if _failing():
            return
        frame = self.ann.to_frame(fields=["type", "status"])
        assert list(frame.columns) == ["type", "status"]
        wanted = {b: {k: v for k, v in r.items() if k in ("bodyid", "type", "status")}
                  for b, r in self.listed().items()}
        assert _frame_rows(frame) == {b: r for b, r in wanted.items() if len(r) > 1}


def test_neuronjson_matches_model(dvid_server: Any) -> None:
    # neuronjson serves the newest version of master from memory: a repo of its own, its root node
    node = dvid_server.client(user="model", app="pytest").create_repo("neuronjson-model")
    run_state_machine_as_test(lambda: NeuronjsonModel(node), settings=_settings(max_examples=12, steps=12))


# ===================================================================== annotations
REGION = ((-70, -70, -70), (130, 130, 130))  # 32³ blocks (the labels'): eight a side, three below zero
LABEL_BLOCK = 32
LABEL_BOX = ((0, 0, 0), (64, 64, 64))  # labels 1..8, one per 32³ octant; 0 (no body) elsewhere in the region
LABELS = (1 + (np.indices((64, 64, 64)) // 32 * np.array([1, 2, 4]).reshape(3, 1, 1, 1)).sum(axis=0)).astype(
    np.uint64
)


def body_at(pos: tuple[int, int, int]) -> int:
    """The label under ``pos`` (the model's own LABELS, not the server's); 0 off the labels."""
    if all(0 <= c < 64 for c in pos):
        return int(LABELS[pos])
    return 0


def filed_at(pos: tuple[int, int, int]) -> int:
    """The label DVID v1.0.0 files a posted element under: found by truncating division, so a
    coordinate in (-32, 0) lands in block 0, on the other side of zero (a DVID bug; its deletes
    and moves look the label up rightly, so they miss such an entry). LABELS is constant on each
    block, so the block alone decides."""
    return body_at(tuple(int(c / LABEL_BLOCK) * LABEL_BLOCK for c in pos))  # type: ignore[arg-type]


POSITIONS = st.one_of(  # half of them on the labels, where frame_for_body finds them
    st.tuples(*(st.integers(a, b - 1) for a, b in zip(*REGION))),
    st.tuples(*(st.integers(a, b - 1) for a, b in zip(*LABEL_BOX))),
)
TAGS = st.lists(st.sampled_from(["auto", "checked", "t-1"]), max_size=2, unique=True)
PROPS = st.dictionaries(st.sampled_from(["conf", "user", "z"]), st.sampled_from(["0.5", "ann", "", "é"]),
                        max_size=2)
ZYX = tuple[int, int, int]


def _zyx(e: dict[str, Any]) -> ZYX:
    x, y, z = e["Pos"]
    return z, y, x


class AnnotationModel(RuleBasedStateMachine):
    """An annotation instance and its model: position (z, y, x) → kind, tags, properties, relationships."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.name = f"syn{next(_names)}"
        node.create_instance("labelmap", f"{self.name}-seg", block_size=(LABEL_BLOCK,) * 3)
        node.create_instance("annotation", self.name)
        self.ann = node.annotations(self.name)
        self.ann.sync(f"{self.name}-seg")  # before any element: DVID indexes only elements posted after
        node.labelmap(f"{self.name}-seg").write(LABELS, LABEL_BOX[0], downres=False)  # indexed before it answers
        #: position → (kind, tags, props, rels); rels: set of (relation, target position)
        self.model: dict[ZYX, tuple[str, tuple[str, ...], dict[str, str], set[tuple[str, ZYX]]]] = {}
        #: DVID's label index as v1.0.0 keeps it: label → position → (kind, tags, props). A move
        #: within one label leaves the entry at the old position (DVID skips the index when both
        #: ends have the same label), and see filed_at for positions just below zero.
        self.index: dict[int, dict[ZYX, tuple[str, tuple[str, ...], dict[str, str]]]] = {}
        self.steps = 0

    def indexed(self, pos: ZYX, label: int) -> None:
        """DVID files the element now at ``pos`` under ``label``."""
        if label:
            kind, tags, props, _ = self.model[pos]
            self.index.setdefault(label, {})[pos] = (kind, tags, dict(props))

    def free(self, data: st.DataObject, label: str, taken: set[ZYX] = frozenset()) -> ZYX:  # type: ignore[assignment]
        return data.draw(POSITIONS.filter(lambda p: p not in self.model and p not in taken), label=label)

    def elements(self) -> list[dict[str, Any]]:
        """The model as DVID elements, sorted by z, y, x."""
        return [element(pos, kind, tags=tags, prop=props, rels=sorted(rels))
                for pos, (kind, tags, props, rels) in sorted(self.model.items())]

    # ------------------------------------------------------------------ writes
    @rule(data=st.data(), posts=st.integers(1, 3), tags=TAGS, props=PROPS)
    def post_synapse(self, data: st.DataObject, posts: int, tags: list[str], props: dict[str, str]) -> None:
        """A T-bar and its PSDs, posted as a points frame and a partners frame."""
        pre = self.free(data, "pre")
        ends: list[ZYX] = []
        for i in range(posts):
            ends.append(self.free(data, f"post {i}", {pre, *ends}))
        new = [element(pre, "PreSyn", tags=tags, prop=props)] + [element(p, "PostSyn") for p in ends]
        pairs = pd.DataFrame([[*pre, *p] for p in ends], columns=["pre_z", "pre_y", "pre_x", "post_z", "post_y",
                                                                   "post_x"])
        self.ann.post_frame(elements_frame(new), pairs)
        self.model[pre] = ("PreSyn", tuple(tags), props, {("PreSynTo", p) for p in ends})
        for p in ends:
            self.model[p] = ("PostSyn", (), {}, {("PostSynTo", pre)})
        for p in (pre, *ends):
            self.indexed(p, filed_at(p))

    @rule(data=st.data(), kind=st.sampled_from(["Note", "Gap", "Unknown"]), tags=TAGS, props=PROPS)
    def post_note(self, data: st.DataObject, kind: str, tags: list[str], props: dict[str, str]) -> None:
        """An element without relationships, at a free point or over one that has none (replacing it)."""
        lonely = sorted(p for p, value in self.model.items() if not value[3])
        if lonely and data.draw(st.booleans(), label="overwrite"):
            pos = data.draw(st.sampled_from(lonely), label="position")
        else:
            pos = self.free(data, "position")
        self.ann.post([element(pos, kind, tags=tags, prop=props)])
        self.model[pos] = (kind, tuple(tags), props, set())
        self.indexed(pos, filed_at(pos))

    @precondition(lambda self: self.model)
    @rule(data=st.data(), tag=st.sampled_from(["retagged", "auto"]), value=st.sampled_from(["1", "x"]))
    def frame_round_trip(self, data: st.DataObject, tag: str, value: str) -> None:
        """Read the region as frames, change some rows' tags and one property, post it all back."""
        points = self.ann.frame_in_box(REGION)
        partners = self.ann.partners_in_box(REGION)
        rows = data.draw(st.sets(st.integers(0, len(points) - 1), min_size=1), label="rows")
        tags = points["tags"].tolist()
        column = np.empty(len(tags), dtype=object)
        for i, old in enumerate(tags):  # one by one: equal-length tuples would make a 2-D array
            column[i] = (tag,) if i in rows else old
        points["tags"] = column
        if "conf" not in points.columns:
            points["conf"] = pd.Series([None] * len(points), dtype=object)
        points.loc[sorted(rows), "conf"] = value
        self.ann.post_frame(points, partners)
        for i in rows:
            pos = tuple(int(v) for v in points.loc[i, ["z", "y", "x"]])
            kind, _, props, rels = self.model[pos]  # type: ignore[index]
            self.model[pos] = (kind, tuple(points.at[i, "tags"]), props | {"conf": value}, rels)  # type: ignore[index]
        for pos in list(self.model):  # every element was posted again
            self.indexed(pos, filed_at(pos))

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        pos = data.draw(st.sampled_from(sorted(self.model)), label="position")
        self.ann.delete(pos)
        del self.model[pos]
        self.index.get(body_at(pos), {}).pop(pos, None)
        for value in self.model.values():
            value[3].difference_update({r for r in value[3] if r[1] == pos})

    @rule(data=st.data())
    def delete_missing(self, data: st.DataObject) -> None:
        pos = self.free(data, "position")
        with pytest.raises(NotFoundError, match="no element at"):
            self.ann.delete(pos)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        source = data.draw(st.sampled_from(sorted(self.model)), label="source")
        target = self.free(data, "target")
        self.ann.move(source, target)
        self.model[target] = self.model.pop(source)
        if body_at(source) != body_at(target):
            self.index.get(body_at(source), {}).pop(source, None)
            self.indexed(target, body_at(target))
        for value in self.model.values():
            moved = {r for r in value[3] if r[1] == source}
            value[3].difference_update(moved)
            value[3].update((rel, target) for rel, _ in moved)

    @rule(data=st.data())
    def move_missing(self, data: st.DataObject) -> None:
        source = self.free(data, "source")
        target = self.free(data, "target", {source})
        with pytest.raises(NotFoundError, match="no element at"):
            self.ann.move(source, target)

    # ------------------------------------------------------------------ checks
    @invariant()
    def dvid_matches_model(self) -> None:
        # taking turns: DVID's 4 default tiles of the region, or one tile holding it all
        tile = None if self.steps % 2 else (320, 320, 320)
        self.steps += 1
        got = self.ann.frame_in_box(REGION, tile_shape=tile)
        pd.testing.assert_frame_equal(got, elements_frame(self.elements()), obj="frame_in_box over the model region")
        self.check_body(1 + self.steps % 8)

    def check_body(self, body: int) -> None:
        """frame_for_body: DVID's label index of the elements, as the model keeps it (see ``index``)."""
        want = elements_frame([element(pos, kind, tags=tags, prop=props)
                               for pos, (kind, tags, props) in sorted(self.index.get(body, {}).items())])
        pd.testing.assert_frame_equal(self.ann.frame_for_body(body), want, obj=f"frame_for_body({body})")

    def teardown(self) -> None:
        if _failing():
            return
        pd.testing.assert_frame_equal(self.ann.partners_in_box(REGION), partners_frame(self.elements()),
                                      obj="partners_in_box over the model region")
        for body in range(1, 9):
            self.check_body(body)
        for tag in ("auto", "checked", "t-1", "retagged"):  # DVID's tag index follows posts, deletes and moves
            tagged = sorted(tuple(e["Pos"][::-1]) for e in self.ann.with_tag(tag))
            assert tagged == sorted(p for p, value in self.model.items() if tag in value[1]), f"with_tag({tag!r})"
        stored = {tuple(e["Pos"][::-1]): (e["Kind"], tuple(e.get("Tags") or ()), e.get("Prop") or {},
                                          {(r["Rel"], tuple(r["To"][::-1])) for r in e.get("Rels") or ()})
                  for e in self.ann.all()}
        assert stored == self.model


def test_annotations_match_model(dvid_node: Node) -> None:
    run_state_machine_as_test(lambda: AnnotationModel(dvid_node), settings=_settings(max_examples=10, steps=15))


def test_a_frame_posted_back_with_some_rows_retagged(dvid_node: Node) -> None:
    """DVID v1.0.0 panics on a POST /elements that adds a tag to one element and takes it off
    another (nothing is stored); post_frame stores such a frame all the same."""
    dvid_node.create_instance("annotation", "retag")
    ann = dvid_node.annotations("retag")
    # one block: DVID takes a block's tags added before those removed, and panics on that order
    ann.post([element((1, 2, 3), "Note", tags=["auto"]), element((9, 2, 3), "Note", tags=["auto"])])
    frame = ann.frame_in_box(REGION)
    retagged = [element((1, 2, 3), "Note", tags=["auto"]), element((9, 2, 3), "Note", tags=["checked"])]
    with pytest.raises(ServerError, match="nil map"):  # the panic, on one request
        ann.transport.request("POST", ann.path("elements"), json=retagged)
    assert ann.frame_in_box(REGION).equals(frame)  # nothing stored
    frame.at[1, "tags"] = ("checked",)
    ann.post_frame(frame)
    assert ann.frame_in_box(REGION).equals(frame)
    assert [e["Pos"] for e in ann.with_tag("auto")] == [[3, 2, 1]]
    assert [e["Pos"] for e in ann.with_tag("checked")] == [[3, 2, 9]]
