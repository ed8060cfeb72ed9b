"""neuronjson body annotations against the real server: writes, reads, queries, frames, schemas, versions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dvid_store import DvidInputError, LockedNodeError
from dvid_store.datatypes.neuronjson import Neuronjson
from dvid_store.errors import BadRequestError, NotFoundError

BIG = 2**64 - 1


@pytest.fixture
def ann(dvid_server):
    client = dvid_server.client(user="alice", app="pytest")
    root = client.create_repo("neuronjson-test")
    return Neuronjson.create(root, "ann")


@pytest.fixture
def annotated(ann):
    ann.put(9, {"status": "Traced", "type": "KC", "tags": ["a", "b"]})
    ann.put(10, {"status": "Anchor", "type": "MBON", "size": 1.5})
    ann.put(BIG, {"status": "Orphan"})
    ann.put(300, {"type": "KC", "notes": None})
    return ann


def test_put_updates_fields_and_stamps_them(ann) -> None:
    ann.put(5, {"status": "Traced", "type": "KC"})
    assert ann.get(5) == {"bodyid": 5, "status": "Traced", "type": "KC"}
    ann.put(5, {"status": "Anchor"})  # an update: type stays
    assert ann.get(5) == {"bodyid": 5, "status": "Anchor", "type": "KC"}
    full = ann.get(5, show="all")
    assert full["status_user"] == "alice" and full["type_user"] == "alice"
    assert full["status_time"].endswith("Z") and "bodyid_user" not in full
    assert set(ann.get(5, show="user")) == {"bodyid", "status", "type", "status_user", "type_user"}
    assert set(ann.get(5, show="time")) == {"bodyid", "status", "type", "status_time", "type_time"}
    assert ann.get(5, fields=["type"]) == {"bodyid": 5, "type": "KC"}
    assert ann.get(5, fields=["type"], show="user") == {"bodyid": 5, "type": "KC", "type_user": "alice"}

    ann.put(5, {"status": "Orphan", "class": "x"}, conditional=["status"])  # status is set: kept
    assert ann.get(5) == {"bodyid": 5, "status": "Anchor", "type": "KC", "class": "x"}
    ann.put(5, {"status": "Leaves"}, replace=True)
    assert ann.get(5) == {"bodyid": 5, "status": "Leaves"}
    assert set(ann.get(5, show="all")) == {"bodyid", "status", "status_user", "status_time"}


def test_get_exists_delete_and_dict_access(ann) -> None:
    assert not ann.exists(7) and 7 not in ann
    with pytest.raises(NotFoundError, match="body 7 has no annotation"):
        ann.get(7)
    with pytest.raises(KeyError):
        ann[7]
    ann[7] = {"status": "Traced"}
    ann.put(np.uint64(BIG), {"status": "Orphan"})
    assert ann.exists(7) and 7 in ann and BIG in ann and "7" not in ann
    assert ann[BIG] == {"bodyid": BIG, "status": "Orphan"}
    assert list(ann) == [7, BIG]
    del ann[7]
    assert not ann.exists(7)
    ann.delete(7)  # deleting a missing annotation is not an error
    keys = ann.keys()
    assert keys.dtype == np.uint64 and keys.tolist() == [BIG]


def test_refusals_send_nothing(ann) -> None:
    transport = ann.transport
    sent = transport.requests_sent
    for bad in ("5", 0, -1, 2**64, True, 1.0):
        with pytest.raises(DvidInputError, match="body ids"):
            ann.put(bad, {"a": 1})
    with pytest.raises(DvidInputError, match=r"int\(key\)"):
        ann.get("5")
    with pytest.raises(DvidInputError, match="JSON object"):
        ann.put(5, [1, 2])
    with pytest.raises(DvidInputError, match="bodyid 6"):
        ann.put(5, {"bodyid": 6})
    with pytest.raises(DvidInputError, match="not JSON"):
        ann.put(5, {"size": math.nan})
    with pytest.raises(DvidInputError, match="not JSON"):
        ann.put(5, {"when": object()})
    with pytest.raises(DvidInputError, match="show is one of"):
        ann.all(show="everything")
    with pytest.raises(DvidInputError, match="without commas"):
        ann.all(fields=["a,b"])
    with pytest.raises(DvidInputError, match="non-empty mapping"):
        ann.query({})
    with pytest.raises(DvidInputError, match="schema kinds"):
        ann.schema("other")
    with pytest.raises(DvidInputError, match="a mapping of body id"):
        ann.put_many([1, 2])
    assert transport.requests_sent == sent


def test_batches(ann) -> None:
    ann.put_many({1: {"status": "Traced"}, 2: {"status": "Anchor", "n": np.int64(3)}, BIG: {"v": np.arange(3)}})
    got = ann.get_many([BIG, 2, 404, 2, 1])
    assert list(got) == [BIG, 2, 1]  # in the order asked, missing and duplicates left out
    assert got[2] == {"bodyid": 2, "status": "Anchor", "n": 3} and got[BIG]["v"] == [0, 1, 2]
    assert ann.get_many(np.array([1, 2], dtype=np.uint64), fields=["status"]) == {
        1: {"bodyid": 1, "status": "Traced"}, 2: {"bodyid": 2, "status": "Anchor"},
    }
    frame = pd.DataFrame({"status": ["Orphan", None], "n": [math.nan, 4.0]}, index=pd.Index([1, 3], name="body"))
    ann.put_many(frame)  # missing values are not written
    assert ann.get(1) == {"bodyid": 1, "status": "Orphan"}
    assert ann.get(3) == {"bodyid": 3, "n": 4.0}
    ann.put_many({2: {"status": "Leaves"}}, replace=True)
    assert ann.get(2) == {"bodyid": 2, "status": "Leaves"}


def test_all_and_frames(annotated) -> None:
    records = annotated.all()
    assert [r["bodyid"] for r in records] == [9, 10, 300, BIG]  # by body, not as strings
    assert records[0] == {"bodyid": 9, "status": "Traced", "type": "KC", "tags": ["a", "b"]}
    assert [r["bodyid"] for r in annotated.all(fields=["status"])] == [9, 10, BIG]  # 300 has no status

    frame = annotated.to_frame()
    assert frame.index.name == "body" and frame.index.dtype == np.uint64
    assert frame.index.tolist() == [9, 10, 300, BIG]
    assert list(frame.columns) == ["notes", "size", "status", "tags", "type"]
    assert frame.loc[10, "size"] == 1.5 and frame.loc[9, "tags"] == ["a", "b"]
    assert frame.loc[BIG, "status"] == "Orphan" and pd.isna(frame.loc[BIG, "type"])

    typed = annotated.to_frame(fields=["type", "status"], show="user")
    assert list(typed.columns) == ["type", "type_user", "status", "status_user"]
    assert typed.index.tolist() == [9, 10, 300, BIG]
    assert set(typed["type_user"].dropna()) == {"alice"}

    empty = Neuronjson.create(annotated.node, "empty").to_frame(fields=["status"])
    assert empty.empty and list(empty.columns) == ["status"] and empty.index.dtype == np.uint64


def test_queries(annotated) -> None:
    def bodies(where):
        return [r["bodyid"] for r in annotated.query(where)]

    assert bodies({"type": "KC"}) == [9, 300]
    assert bodies({"type": "KC", "status": "Traced"}) == [9]  # all fields must match
    assert bodies([{"status": "Anchor"}, {"status": "Orphan"}]) == [10, BIG]  # any query may match
    assert bodies({"status": ["Anchor", "Traced"]}) == [9, 10]  # any value may match
    assert bodies({"tags": "b"}) == [9]  # a list field holding the value
    assert bodies({"type": "re/MB"}) == [10]
    assert bodies({"status": "exists/0"}) == [300]
    assert bodies({"notes": "exists/1"}) == []  # null counts as unset
    assert bodies({"type": "PN"}) == []
    assert annotated.query({"type": "KC"}, fields=["status"]) == [
        {"bodyid": 9, "status": "Traced"}, {"bodyid": 300},
    ]
    ids = annotated.query_ids({"status": "exists/1"})
    assert ids.dtype == np.uint64 and ids.tolist() == [9, 10, BIG]
    frame = annotated.query_frame({"type": "KC"}, fields=["status"], show="time")
    assert list(frame.columns) == ["status", "status_time"] and frame.index.tolist() == [9, 300]
    assert annotated.fields() == sorted(
        ["bodyid", "notes", "notes_time", "notes_user", "size", "size_time", "size_user", "status", "status_time",
         "status_user", "tags", "tags_time", "tags_user", "type", "type_time", "type_user"]
    )
    with pytest.raises(DvidInputError, match="non-empty mapping"):
        annotated.query("not json")  # type: ignore[arg-type]
    annotated.delete(300)
    assert bodies({"status": "exists/0"}) == []  # DVID answers {} for the deleted body
    assert annotated.keys().tolist() == [9, 10, BIG]  # DVID's /keys still lists 300


def test_older_versions_read_as_they_were(annotated) -> None:
    """The committed parent is served from DVID's store, not memory: same answers there."""
    root = annotated.node
    root.commit("first annotations")
    child = root.new_version("more")
    newer = child.neuronjson("ann")
    newer.put(9, {"status": "Orphan"})
    newer.put(11, {"type": "KC"})
    newer.delete(10)

    assert annotated.get(9)["status"] == "Traced" and newer.get(9)["status"] == "Orphan"
    assert annotated.exists(10) and not newer.exists(10)
    assert annotated.keys().tolist() == [9, 10, 300, BIG]
    assert [r["bodyid"] for r in annotated.all()] == [9, 10, 300, BIG]
    # DVID ignores fields= on /query away from memory: selected here
    assert annotated.query({"type": "KC"}, fields=["status"]) == [{"bodyid": 9, "status": "Traced"}, {"bodyid": 300}]
    assert newer.query({"type": "KC"}, fields=["status"]) == [
        {"bodyid": 9, "status": "Orphan"}, {"bodyid": 11}, {"bodyid": 300},
    ]
    assert annotated.query_ids({"type": "KC"}).tolist() == [9, 300]
    assert "status_user" in annotated.fields() and "size" in annotated.fields()  # /fields fails there: read
    assert annotated.to_frame().loc[9, "status"] == "Traced"

    sent = root.transport.requests_sent
    with pytest.raises(LockedNodeError):
        annotated.put(9, {"status": "Leaves"})
    with pytest.raises(LockedNodeError):
        annotated.put_many({9: {"status": "Leaves"}})
    with pytest.raises(LockedNodeError):
        annotated.delete(9)
    assert root.transport.requests_sent == sent


def test_schemas(ann) -> None:
    assert ann.schema() is None and ann.schema("schema_batch") is None
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"size": {"type": "integer"}, "status": {"type": "string"}},
    }
    ann.put_schema(schema)
    assert ann.schema() == schema
    with pytest.raises(BadRequestError, match="json_schema"):
        ann.put(5, {"status": 3})
    with pytest.raises(BadRequestError, match="json_schema"):
        ann.put(5, {"size": "big"})
    with pytest.raises(BadRequestError, match="json_schema"):
        ann.put_many({5: {"status": 3}})
    ann.put(5, {"size": "12"})  # DVID turns digits into the integer the schema asks for
    assert ann.get(5) == {"bodyid": 5, "size": 12}
    ann.delete_schema()
    assert ann.schema() is None
    ann.put(6, {"status": 3})  # no schema: anything goes (DVID alone would still validate)

    ann.put_schema({"fields": ["status"]}, "schema")
    assert ann.schema("schema") == {"fields": ["status"]}
    ann.delete_schema("schema")
    assert ann.schema("schema") is None


def test_the_wrong_accessor_names_the_right_one(ann) -> None:
    # node.keyvalue() on a neuronjson instance used to suggest node.voxels(...)
    with pytest.raises(DvidInputError, match=r"node\.neuronjson\('ann'\)"):
        ann.node.keyvalue("ann")
    assert ann.node.neuronjson("ann") == ann
