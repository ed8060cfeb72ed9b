"""Server info, repos, the version DAG, node references, instances and custom requests."""

from __future__ import annotations

import pickle

import lz4.block
import numpy as np
import pytest

from dvid_store import (
    BadRequestError,
    DvidClient,
    DvidInputError,
    LockedNodeError,
    Node,
    UnknownInstanceError,
    UnknownNodeError,
)
from dvid_store.settings import dvid_settings


def test_server_info_and_types(dvid_client: DvidClient, dvid_node: Node) -> None:
    info = dvid_client.server_info()
    assert info["DVID Version"] == "v1.0.0"
    compiled = dvid_client.compiled_types()
    for typename in ("uint8blk", "labelmap", "keyvalue", "roi", "imagetile", "annotation"):
        assert typename in compiled
    assert "labelgraph" not in compiled  # removed from DVID in 2023
    dvid_node.create_instance("roi", "cells")
    assert "roi" in dvid_client.server_types()
    assert dvid_client.heartbeat()


def test_create_repo_and_list(dvid_client: DvidClient) -> None:
    node = dvid_client.create_repo("listed", "a description")
    repos = dvid_client.repos()
    assert node.uuid in repos
    repo = repos[node.uuid]
    assert (repo.alias, repo.description, repo.root) == ("listed", "a description", node.uuid)
    assert list(repo.versions) == [node.uuid]
    assert repo.versions[node.uuid].branch == "master"


def test_create_repo_with_chosen_root(dvid_client: DvidClient) -> None:
    uuid = "0123456789abcdef0123456789abcdef"
    node = dvid_client.create_repo("chosen", root=uuid)
    assert node.uuid == uuid


def test_version_dag_in_uuids(dvid_node: Node) -> None:
    assert not dvid_node.locked
    dvid_node.commit("root done", log=["first line"])
    assert dvid_node.locked
    child = dvid_node.new_version("child note")
    dvid_node_branch = dvid_node.branch("feature", "on a branch")
    repo = dvid_node.repo_info()
    root = repo.versions[dvid_node.uuid]
    assert root.locked and root.note == "root done"
    assert set(root.children) == {child.uuid, dvid_node_branch.uuid}
    assert repo.versions[child.uuid].parents == (dvid_node.uuid,)
    assert repo.versions[child.uuid].branch == "master"
    assert repo.versions[dvid_node_branch.uuid].branch == "feature"
    assert not repo.versions[child.uuid].locked
    assert child.parents == (dvid_node,)
    assert [line.split("  ", 1)[1] for line in dvid_node.log()] == ["first line"]
    assert set(repo.leaves) == {child.uuid, dvid_node_branch.uuid}


def test_branching_needs_a_committed_parent(dvid_node: Node) -> None:
    with pytest.raises(BadRequestError) as info:
        dvid_node.new_version("too early")
    assert "lock" in info.value.message.lower() or "commit" in info.value.message.lower()
    with pytest.raises(DvidInputError, match="reserved"):
        dvid_node.branch("master")


def test_log_and_note(dvid_node: Node) -> None:
    dvid_node.append_log("alpha", "beta")
    dvid_node.append_log("gamma")
    # DVID stamps each line: "2026-11-21T19:11:01Z  alpha".
    lines = dvid_node.log()
    assert [line.split("  ", 1)[1] for line in lines] == ["alpha", "beta", "gamma"]
    assert all(line[:4].isdigit() and line[19] == "Z" for line in lines)
    dvid_node.note = "working copy"
    assert dvid_node.note == "working copy"
    dvid_node.commit("done")
    with pytest.raises(LockedNodeError):
        dvid_node.note = "too late"
    assert dvid_node.note == "done"


def test_refs_full_prefix_branch_and_ancestors(dvid_client: DvidClient, dvid_node: Node) -> None:
    root = dvid_node
    root.commit("v0")
    v1 = root.new_version("v1")
    v1.commit("v1")
    v2 = v1.new_version("v2")
    feature = v1.branch("feature", "f0")
    feature.commit("f0")
    feature1 = feature.new_version("f1")

    assert dvid_client.resolve(root.uuid) == root.uuid
    assert dvid_client.node(v2.uuid[:12]) == v2
    assert dvid_client.resolve(f"{root.uuid[:10]}:master") == v2.uuid
    assert dvid_client.resolve(f"{feature.uuid[:10]}:master~1") == v1.uuid
    assert dvid_client.resolve(f"{root.uuid[:10]}:master~2") == root.uuid
    assert dvid_client.resolve(f"{root.uuid[:10]}:feature") == feature1.uuid
    assert dvid_client.resolve(f"{root.uuid[:10]}:feature~1") == feature.uuid
    # DVID's ancestry runs past the branch point, back to the root.
    assert dvid_client.resolve(f"{root.uuid[:10]}:feature~2") == v1.uuid

    with pytest.raises(UnknownNodeError, match="no branch 'nope'"):
        dvid_client.resolve(f"{root.uuid[:10]}:nope")
    with pytest.raises(UnknownNodeError, match="back to the root"):
        dvid_client.resolve(f"{root.uuid[:10]}:master~9")
    with pytest.raises(DvidInputError, match="not a node reference"):
        dvid_client.resolve("NOT-HEX")


def test_unknown_and_ambiguous_prefixes(dvid_client: DvidClient) -> None:
    with pytest.raises(UnknownNodeError, match="no node matches"):
        dvid_client.resolve("f" * 31 + "e")
    # 17 nodes share some first hex digit (pigeonhole), so a 1-digit prefix is ambiguous.
    nodes = [dvid_client.create_repo(f"ambiguity-{i}") for i in range(17)]
    digits = [n.uuid[0] for n in nodes]
    shared = next(d for d in digits if digits.count(d) > 1)
    with pytest.raises(UnknownNodeError, match="more than one"):
        dvid_client.resolve(shared)


def test_instances_typeinfo_and_settings(dvid_node: Node) -> None:
    info = dvid_node.create_instance(
        "uint8blk", "gray", block_size=(16, 32, 64), voxel_size=(40.0, 8.0, 4.0),
        voxel_units=("nanometers", "nanometers", "micrometers"),
    )
    extended = info["Extended"]
    assert extended["BlockSize"] == [64, 32, 16]  # DVID reports x, y, z
    assert extended["VoxelSize"] == [4.0, 8.0, 40.0]
    assert extended["VoxelUnits"] == ["micrometers", "nanometers", "nanometers"]
    seg = dvid_node.create_instance("labelmap", "seg", max_downres_level=3, block_size=(64, 64, 64))
    assert seg["Extended"]["MaxDownresLevel"] == 3
    unversioned = dvid_node.create_instance("keyvalue", "kv", versioned=False)
    assert unversioned["Base"]["Versioned"] is False
    assert dvid_node.instances() == {"gray": "uint8blk", "seg": "labelmap", "kv": "keyvalue"}
    assert dvid_node.typeinfo("seg")["Base"]["TypeName"] == "labelmap"
    with pytest.raises(UnknownInstanceError, match="gray"):  # the error lists what exists
        dvid_node.typeinfo("grey")
    with pytest.raises(BadRequestError):
        dvid_node.create_instance("uint8blk", "gray")  # duplicate name


def test_settings_conversion() -> None:
    assert dvid_settings({"block_size": (64, 32, 16), "max_downres_level": 2, "versioned": False}) == {
        "BlockSize": "16,32,64", "MaxDownresLevel": "2", "versioned": "false",
    }
    assert dvid_settings({"Compression": "jpeg", "tags": {"a": 1}}) == {"Compression": "jpeg", "Tags": "a=1"}


def test_custom_request_with_lz4_body(dvid_node: Node) -> None:
    dvid_node.create_instance("labelmap", "seg")
    labels = np.random.default_rng(1).integers(1, 50, (64, 64, 64), dtype=np.uint64)
    dvid_node.custom_request("seg/raw/0_1_2/64_64_64/0_0_0", labels.tobytes(), method="POST", compress=True)
    raw = dvid_node.custom_request("/seg/raw/0_1_2/64_64_64/0_0_0?supervoxels=true")
    np.testing.assert_array_equal(np.frombuffer(raw, np.uint64).reshape(labels.shape), labels)
    lz4_body = dvid_node.custom_request(
        "seg/raw/0_1_2/64_64_64/0_0_0", params={"compression": "lz4", "supervoxels": "true"}
    )
    decoded = np.frombuffer(lz4.block.decompress(lz4_body, uncompressed_size=labels.nbytes), np.uint64)
    np.testing.assert_array_equal(decoded.reshape(labels.shape), labels)
    assert dvid_node.custom_request("seg/info").startswith(b"{")
    with pytest.raises(DvidInputError, match="unsupported method"):
        dvid_node.custom_request("seg/info", method="PATCH")


def test_committed_node_still_reads_after_child_writes(dvid_node: Node) -> None:
    dvid_node.create_instance("keyvalue", "kv")
    dvid_node.custom_request("kv/key/k", b"old", method="POST")
    dvid_node.commit("v0")
    child = dvid_node.new_version("v1")
    child.custom_request("kv/key/k", b"new", method="POST")
    assert dvid_node.custom_request("kv/key/k") == b"old"
    assert child.custom_request("kv/key/k") == b"new"


def test_node_pickles_as_configuration(dvid_node: Node) -> None:
    clone = pickle.loads(pickle.dumps(dvid_node))
    assert clone == dvid_node and hash(clone) == hash(dvid_node)
    assert clone.instances() == dvid_node.instances()
    assert repr(clone).startswith("Node(")


def test_full_uuid_resolves_without_listing_every_repo(dvid_fault_proxy, dvid_node: Node) -> None:
    from dvid_store import DvidClient

    client = DvidClient(dvid_fault_proxy.address)
    assert client.resolve(dvid_node.uuid) == dvid_node.uuid
    paths = [record.path.split("?")[0] for record in dvid_fault_proxy.log]
    assert paths == [f"/api/node/{dvid_node.uuid}/commit"]  # not /api/repos/info
    assert not Node(client, dvid_node.uuid).locked  # the status read by resolve is reused
    assert len(dvid_fault_proxy.log) == 1
