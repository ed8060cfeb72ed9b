"""tarsupervoxels: per-supervoxel files, tars of bodies, /load, /missing, /exists — against the real server."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from dvid_store import DvidClient, DvidInputError, LockedNodeError, Node, NotFoundError, UnknownInstanceError
from dvid_store.datatypes.labelmap import Labelmap
from dvid_store.datatypes.tarsupervoxels import Tarsupervoxels
from dvid_store.testing import DvidServer, FaultProxy


def make_tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


@pytest.fixture
def tsv(dvid_node: Node, seg: Labelmap) -> Tarsupervoxels:
    return Tarsupervoxels.create(dvid_node, "seg_sv_meshes", labelmap="seg", extension=".drc")


def test_create_syncs_and_sets_the_extension(dvid_node: Node, tsv: Tarsupervoxels) -> None:
    assert tsv.extension == "drc"  # the leading dot is dropped
    assert tsv.syncs == ["seg"]
    assert dvid_node.tarsupervoxels("seg_sv_meshes") == tsv
    assert tsv.typename == "tarsupervoxels"


def test_create_refusals_create_nothing(dvid_node: Node, seg: Labelmap) -> None:
    with pytest.raises(DvidInputError, match="needs extension="):
        Tarsupervoxels.create(dvid_node, "a", labelmap="seg")
    with pytest.raises(DvidInputError, match="needs labelmap="):
        Tarsupervoxels.create(dvid_node, "a", extension="drc")
    for bad in ("", ".", "d rc", "a/b", ".missing"):
        with pytest.raises(DvidInputError, match="cannot name supervoxel files"):
            Tarsupervoxels.create(dvid_node, "a", labelmap="seg", extension=bad)
    with pytest.raises(UnknownInstanceError):
        Tarsupervoxels.create(dvid_node, "a", labelmap="nothere", extension="drc")
    dvid_node.create_instance("keyvalue", "kv")
    with pytest.raises(DvidInputError, match="is a keyvalue, not a labelmap"):
        Tarsupervoxels.create(dvid_node, "a", labelmap="kv", extension="drc")
    assert "a" not in dvid_node.instances()


def test_one_supervoxel_put_get_delete(tsv: Tarsupervoxels) -> None:
    payload = bytes(range(256)) * 40
    tsv.put(7, payload)
    assert tsv.get(7) == payload
    tsv.put(7, b"replaced")
    assert tsv.get(7) == b"replaced"
    with pytest.raises(NotFoundError, match="supervoxel 9 has no file"):
        tsv.get(9)
    # An empty file is stored and present; DVID's GET answers 404 for it, get() returns b"".
    tsv.put(9, b"")
    assert tsv.get(9) == b""
    np.testing.assert_array_equal(tsv.exists([7, 9, 11, 2**64 - 1]), [True, True, False, False])
    tsv.delete(7)
    tsv.delete(12345)  # nothing there: not an error
    np.testing.assert_array_equal(tsv.exists(np.array([7, 9], np.uint64)), [False, True])
    assert tsv.exists([]).shape == (0,)
    with pytest.raises(DvidInputError, match="background"):
        tsv.put(0, b"x")
    with pytest.raises(DvidInputError, match="encode the str first"):
        tsv.put(7, "text")  # type: ignore[arg-type]


def test_exists_in_batches(tsv: Tarsupervoxels, monkeypatch: pytest.MonkeyPatch) -> None:
    tsv.load({5: b"a", 9: b"b"})
    monkeypatch.setattr(Tarsupervoxels, "EXISTS_BATCH", 2)
    before = tsv.transport.requests_sent
    got = tsv.exists([1, 5, 9, 3, 9])
    assert tsv.transport.requests_sent - before == 3
    np.testing.assert_array_equal(got, [False, True, True, False, True])


def test_tar_of_a_body_missing_and_complete(seg: Labelmap, tsv: Tarsupervoxels) -> None:
    seg.merge(7, [11])
    tsv.put(7, b"mesh of 7")
    assert tar_members(tsv.tarfile(7)) == {"7.drc": b"mesh of 7", "11.missing": b""}
    assert tsv.files(7) == {7: b"mesh of 7"}
    np.testing.assert_array_equal(tsv.missing(7), np.array([11], np.uint64))
    assert tsv.missing(7).dtype == np.uint64
    assert not tsv.complete(7)
    tsv.put(11, b"")
    assert tar_members(tsv.tarfile(7)) == {"7.drc": b"mesh of 7", "11.missing": b""}  # DVID: empty looks missing
    assert tsv.files(7) == {7: b"mesh of 7", 11: b""}
    assert tsv.missing(7).size == 0
    assert tsv.complete(7)
    assert tsv.complete(9) is False
    tsv.put(9, b"nine")
    assert tsv.complete(9) is True
    with pytest.raises(NotFoundError, match="body 11 does not exist in 'seg'"):
        tsv.tarfile(11)  # merged away
    with pytest.raises(NotFoundError, match="body 123 does not exist"):
        tsv.missing(123)
    with pytest.raises(NotFoundError, match="body 123 does not exist"):
        tsv.complete(123)


def test_body_queries_need_a_sync(dvid_node: Node, seg: Labelmap) -> None:
    dvid_node.create_instance("tarsupervoxels", "loose", extension="obj")
    tsv = dvid_node.tarsupervoxels("loose")
    tsv.put(7, b"x")  # files work without a sync
    assert tsv.get(7) == b"x"
    with pytest.raises(DvidInputError, match=r"not synced with a labelmap.*\.sync"):
        tsv.missing(7)
    with pytest.raises(DvidInputError, match="not synced"):
        tsv.files(7)
    tsv.sync("seg")
    assert tsv.files(7) == {7: b"x"}


def test_load_a_dict_and_a_tar(tsv: Tarsupervoxels) -> None:
    assert tsv.load({7: b"seven", np.uint64(9): bytearray(b"nine"), 11: b""}) == 3
    assert [tsv.get(sv) for sv in (7, 9, 11)] == [b"seven", b"nine", b""]
    assert tsv.load(make_tar({"7.drc": b"new seven", "2.drc": b"two"})) == 2
    assert tsv.get(7) == b"new seven" and tsv.get(2) == b"two"
    assert tsv.load({}) == 0


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ({"5.drc": b"a", "6.obj": b"b"}, "'6.obj' is not named <supervoxel>.drc"),
        ({"5.drc": b"a", "meshes/6.drc": b"b"}, "'meshes/6.drc' is not named"),
        ({"0.drc": b"a"}, "'0.drc' is not named"),
        ({"x5.drc": b"a"}, "'x5.drc' is not named"),
    ],
)
def test_load_checks_every_name_before_sending(tsv: Tarsupervoxels, members: dict, problem: str) -> None:
    with pytest.raises(DvidInputError, match=problem.replace(".", r"\.")):
        tsv.load(make_tar(members))
    assert not tsv.exists([5]).any()  # DVID would have kept 5.drc


def test_load_refuses_what_is_not_a_tar(tsv: Tarsupervoxels) -> None:
    with pytest.raises(DvidInputError, match="not a tar"):
        tsv.load(b"\x01" * 700)
    with pytest.raises(DvidInputError, match="mapping of supervoxel id to bytes"):
        tsv.load([(5, b"x")])  # type: ignore[arg-type]
    with pytest.raises(DvidInputError, match="background"):
        tsv.load({0: b"x"})


def test_files_are_shared_by_every_version(dvid_node: Node, seg: Labelmap, tsv: Tarsupervoxels) -> None:
    tsv.put(7, b"root")
    dvid_node.commit("meshes")
    with pytest.raises(LockedNodeError):
        tsv.put(9, b"x")
    child = dvid_node.new_version("child")
    child_tsv = child.tarsupervoxels("seg_sv_meshes")
    assert child_tsv.get(7) == b"root"
    child_tsv.put(9, b"child")
    assert tsv.get(9) == b"child"  # DVID keeps the files at the root, unversioned
    # ... but bodies follow each version's labelmap
    child.labelmap("seg").merge(7, [9])
    assert child_tsv.files(7) == {7: b"root", 9: b"child"}
    assert tsv.files(7) == {7: b"root"}


@pytest.mark.parametrize("fault", ["cut_chunked_clean", "cut_chunked_broken", "cut_close"])
def test_a_cut_tar_is_read_again(
    dvid_server: DvidServer, dvid_fault_proxy: FaultProxy, dvid_node: Node, seg: Labelmap, tsv: Tarsupervoxels,
    fault: str,
) -> None:
    """DVID streams the tar with no length: a cut that still ends the HTTP body cleanly is caught by the tar's end."""
    seg.merge(7, [9, 11])
    files = {7: bytes(range(256)) * 30, 9: b"nine" * 500, 11: b"x"}
    tsv.load(files)
    far = DvidClient(dvid_fault_proxy.url, admin_token=dvid_server.admin_token).node(dvid_node.uuid)
    rule = dvid_fault_proxy.inject(fault, match="/tarfile/7", at=0.5)
    assert far.tarsupervoxels("seg_sv_meshes").files(7) == files
    assert rule.applied == 1
