"""Mutation logs across a version's ancestry, affected bodies and merge chains, against the real server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from dvid_store import DvidInputError
from dvid_store.datatypes.label_history import affected_bodies, ancestry, merge_chains, mutation_log
from dvid_store.datatypes.labels import Labelmap

#: x ranges of supervoxels 1..6 in the one 64³ block
SLABS = {1: (0, 10), 2: (10, 20), 3: (20, 30), 4: (30, 40), 5: (40, 52), 6: (52, 64)}


def slabs() -> np.ndarray:
    volume = np.zeros((64, 64, 64), np.uint64)
    for label, (lo, hi) in SLABS.items():
        volume[:, :, lo:hi] = label
    return volume


@pytest.fixture
def edited(dvid_server, dvid_client):
    """Root: alice merges 2 into 1. Child: alice merges 3 into 1, bob merges 5 into 4, alice cleaves
    supervoxel 3 off body 1, splits supervoxel 4, renumbers 6 to 100 and merges 1 into 4."""
    started = datetime.now(UTC)
    alice = dvid_server.client(user="alice", app="proofread")
    bob = dvid_server.client(user="bob", app="proofread")
    root = alice.create_repo(f"history-{started.timestamp()}")
    seg = Labelmap.create(root, "seg")
    seg.write(slabs(), (0, 0, 0), downres=False)  # indexed before DVID answers
    ids = {"m1": seg.merge(1, [2])}
    root.commit("first pass")
    child = root.new_version("second pass")
    seg2 = child.labelmap("seg")
    ids["m2"] = seg2.merge(1, [3])
    ids["m3"] = bob.node(child.uuid).labelmap("seg").merge(4, [5])
    ids["cleaved"], ids["m4"] = seg2.cleave(1, [3])
    region = np.zeros((64, 64, 64), bool)
    region[:, :, 30:35] = True
    split = seg2.split_supervoxel(4, region, offset=(0, 0, 0))
    ids["split_sv"], ids["remain_sv"], ids["m5"] = split
    child.custom_request("/seg/renumber", json.dumps([100, 6]), "POST")
    ids["m7"] = seg2.merge(4, [1])
    return {"root": root, "child": child, "seg": seg, "seg2": seg2, "ids": ids, "started": started}


def test_mutation_log_walks_the_ancestry(edited) -> None:
    root, child, seg2, ids = edited["root"], edited["child"], edited["seg2"], edited["ids"]
    log = mutation_log(seg2)
    assert list(log.columns) == [
        "uuid", "mutation_id", "action", "target", "labels", "supervoxels", "user", "app", "timestamp", "record",
    ]
    assert list(log["uuid"]) == [root.uuid] + [child.uuid] * 6
    assert list(log["action"]) == ["merge", "merge", "merge", "cleave", "split-supervoxel", "renumber", "merge"]
    assert list(log["target"]) == [1, 1, 4, 1, 4, 100, 4]
    assert list(log["labels"]) == [(2,), (3,), (5,), (ids["cleaved"],), (), (6,), (1,)]
    assert log["supervoxels"][3] == (3,)
    assert log["supervoxels"][4] == (4, ids["split_sv"], ids["remain_sv"])
    logged = [int(v) for v in log["mutation_id"]]
    assert [logged[i] for i in (0, 1, 2, 3, 4, 6)] == [ids[k] for k in ("m1", "m2", "m3", "m4", "m5", "m7")]
    assert logged == sorted(logged)  # the renumber's id (DVID does not return it) falls in between
    assert list(log["user"]) == ["alice", "alice", "bob", "alice", "alice", "alice", "alice"]
    assert set(log["app"]) == {"proofread"}
    assert log["record"][0]["Action"] == "merge-complete"  # DVID's record, untouched

    # dtypes as documented, timestamps in UTC, in order, from this test's time on
    assert log["mutation_id"].dtype == np.uint64 and log["target"].dtype == np.uint64
    assert str(log["timestamp"].dtype) == "datetime64[ns, UTC]"
    stamps = list(log["timestamp"])
    assert stamps == sorted(stamps)
    assert pd.Timestamp(edited["started"] - timedelta(seconds=1)) <= stamps[0]
    assert stamps[-1] <= pd.Timestamp(datetime.now(UTC) + timedelta(seconds=1))

    # the parent shows only its own edit; the child's own log has the rest
    assert list(mutation_log(edited["seg"])["mutation_id"]) == [ids["m1"]]
    own = mutation_log(seg2, ancestors=False)
    assert list(own["uuid"]) == [child.uuid] * 6
    pd.testing.assert_frame_equal(mutation_log(seg2, since=root), own)
    pd.testing.assert_frame_equal(mutation_log(seg2, since=root.uuid[:6]), own)


def test_mutation_log_filters(edited) -> None:
    seg2, ids = edited["seg2"], edited["ids"]
    by_bob = mutation_log(seg2, user="bob")  # DVID's own userid= filter is ignored by v1.0.0
    assert list(by_bob["mutation_id"]) == [ids["m3"]]
    assert mutation_log(seg2, user="carol").empty
    merges = mutation_log(seg2, actions=["merge-complete", "renumber"])
    assert list(merges["action"]) == ["merge", "merge", "merge", "renumber", "merge"]
    assert list(mutation_log(seg2, actions="cleave")["target"]) == [1]


def test_an_empty_log_keeps_its_columns_and_dtypes(dvid_node) -> None:
    seg = Labelmap.create(dvid_node, "seg")
    log = mutation_log(seg)
    assert log.empty and len(log.columns) == 10
    assert log["mutation_id"].dtype == np.uint64 and str(log["timestamp"].dtype) == "datetime64[ns, UTC]"
    found = affected_bodies(seg)
    assert all(a.dtype == np.uint64 and a.size == 0 for a in found)
    assert merge_chains(seg).empty


def test_an_instance_made_in_a_later_version(dvid_node) -> None:
    """The versions before the instance existed have empty logs, not errors."""
    dvid_node.commit("before the segmentation")
    child = dvid_node.new_version("segmented")
    seg = Labelmap.create(child, "seg")
    seg.write(slabs(), (0, 0, 0), downres=False)
    mutation = seg.merge(1, [2])
    log = mutation_log(seg)
    assert list(log["mutation_id"]) == [mutation] and list(log["uuid"]) == [child.uuid]


def test_affected_bodies_match_the_server(edited) -> None:
    root, seg, seg2, ids = edited["root"], edited["seg"], edited["seg2"], edited["ids"]
    found = affected_bodies(seg2, since=root)
    np.testing.assert_array_equal(found.new, sorted([ids["cleaved"], 100]))
    np.testing.assert_array_equal(found.changed, [4])
    np.testing.assert_array_equal(found.removed, [1, 3, 5, 6])
    np.testing.assert_array_equal(found.new_supervoxels, sorted([ids["split_sv"], ids["remain_sv"]]))
    np.testing.assert_array_equal(found.removed_supervoxels, [4])
    assert found.new.dtype == np.uint64
    # what the two versions hold agrees
    for body in found.new:
        assert seg2.body_exists(int(body)) and not seg.body_exists(int(body))
    for body in found.removed:
        assert seg.body_exists(int(body)) and not seg2.body_exists(int(body))
    for body in found.changed:
        assert seg.body_exists(int(body)) and seg2.body_exists(int(body))
        assert set(seg.supervoxels(int(body)).tolist()) != set(seg2.supervoxels(int(body)).tolist())

    # over the whole history, the root's merge of 2 into 1 counts too; a log already read gives the same
    whole = affected_bodies(seg2)
    np.testing.assert_array_equal(whole.removed, [1, 2, 3, 5, 6])
    log = mutation_log(seg2)
    for a, b in zip(affected_bodies(log), whole):
        np.testing.assert_array_equal(a, b)


def test_a_body_made_and_merged_away_is_not_reported(dvid_node) -> None:
    seg = Labelmap.create(dvid_node, "seg")
    seg.write(slabs(), (0, 0, 0), downres=False)
    seg.merge(1, [2])
    cleaved = seg.cleave(1, [2]).cleaved_label
    seg.merge(3, [cleaved])
    found = affected_bodies(seg)
    assert found.new.size == 0
    np.testing.assert_array_equal(found.changed, [1, 3])
    np.testing.assert_array_equal(found.removed, [2])


def test_merge_chains_follow_merges_transitively(edited) -> None:
    seg2 = edited["seg2"]
    chains = merge_chains(seg2)
    assert chains.index.name == "body" and chains.index.dtype == np.uint64
    assert list(chains.index) == [1, 2, 3, 4, 5, 6, 100]
    assert chains.loc[2, "chain"] == (2, 1, 4)
    assert chains.loc[2, "owner"] == 4 and chains.loc[2, "merge_count"] == 2
    assert chains.loc[5, "chain"] == (5, 4)
    assert chains.loc[6, "chain"] == (6, 100)
    assert chains.loc[4, "chain"] == (4,) and chains.loc[4, "merge_count"] == 0
    assert chains["owner"].dtype == np.uint64 and chains["merge_count"].dtype == np.int64
    # the owners are where the server maps those supervoxels now
    np.testing.assert_array_equal(seg2.mapping([1, 2, 5, 6]), chains.loc[[1, 2, 5, 6], "owner"].to_numpy())

    picked = merge_chains(mutation_log(seg2), [2, 42])
    assert list(picked["owner"]) == [4, 42] and picked.loc[42, "chain"] == (42,)
    # only the merges after the root: 2's merge into 1 happened before
    assert merge_chains(seg2, [2], since=edited["root"]).loc[2, "chain"] == (2,)


def test_ancestry_orders_a_branching_dag(dvid_node) -> None:
    dvid_node.commit("root")
    a = dvid_node.new_version("a")
    a.commit("a")
    b = dvid_node.branch("side", "b")
    a2 = a.new_version("a2")
    assert ancestry(a2) == [dvid_node.uuid, a.uuid, a2.uuid]
    assert ancestry(b) == [dvid_node.uuid, b.uuid]
    assert ancestry(b, since=a) == [b.uuid]  # the edits on the side branch alone
    assert ancestry(a2, since=a2) == []


def test_refusals(edited) -> None:
    seg2 = edited["seg2"]
    with pytest.raises(DvidInputError, match="matches no versions"):
        mutation_log(seg2, since="ffffffffff")
    with pytest.raises(DvidInputError, match="cannot be combined"):
        mutation_log(seg2, since=edited["root"], ancestors=False)
    with pytest.raises(DvidInputError, match="names such as"):
        mutation_log(seg2, actions=[1])
    with pytest.raises(DvidInputError, match="lacks the columns"):
        affected_bodies(pd.DataFrame({"action": []}))
    with pytest.raises(DvidInputError, match="only with a Labelmap"):
        merge_chains(mutation_log(seg2), since=edited["root"])
    with pytest.raises(DvidInputError, match="integers"):
        merge_chains(seg2, [0])
