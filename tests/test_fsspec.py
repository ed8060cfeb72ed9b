"""The dvid:// fsspec protocol: zarr, fsspec mappers and dask through URLs, against the real server."""

from __future__ import annotations

import json
import pickle

import dask.array as da
import fsspec
import numpy as np
import pytest
import zarr

from dvid_store import (
    DvidInputError,
    LockedNodeError,
    Node,
    UnknownInstanceError,
    UnknownNodeError,
    UnsupportedError,
)
from dvid_store.blocks import BlockIO
from dvid_store.create import create_array
from dvid_store.fs import DvidFileSystem, parse_url
from dvid_store.zarr import DvidStore


def _host(server) -> str:
    return server.url.split("://", 1)[1]


@pytest.fixture
def gray(dvid_server, dvid_node: Node) -> tuple[str, np.ndarray, tuple[int, int, int]]:
    """A uint8 instance at negative coordinates: (URL, data, offset of data[0, 0, 0])."""
    start = (-40, 8, -70)
    data = np.random.default_rng(11).integers(1, 256, (72, 56, 90), dtype=np.uint8)
    box = (start, tuple(a + n for a, n in zip(start, data.shape)))
    array = create_array(dvid_node, "gray", box, "uint8")
    offset = array.attrs["dvid"]["offset"]
    array[tuple(slice(a - o, b - o) for a, b, o in zip(box[0], box[1], offset))] = data
    return f"dvid://{_host(dvid_server)}/{dvid_node.uuid[:12]}/gray", data, start


def _selection(array: zarr.Array, start, shape) -> tuple[slice, ...]:
    offset = array.attrs["dvid"]["offset"]
    return tuple(slice(a - o, a - o + n) for a, o, n in zip(start, offset, shape))


def test_protocol_is_registered_by_entry_point() -> None:
    assert fsspec.get_filesystem_class("dvid") is DvidFileSystem


def test_zarr_open_url(gray) -> None:
    url, data, start = gray
    group = zarr.open(url, mode="r")
    assert isinstance(group, zarr.Group) and list(group.array_keys()) == ["0"]
    level0 = group["0"]
    np.testing.assert_array_equal(level0[_selection(level0, start, data.shape)], data)
    assert group.attrs["ome"]["multiscales"][0]["datasets"][0]["path"] == "0"
    direct = zarr.open_array(url + "/0", mode="r")
    np.testing.assert_array_equal(direct[_selection(direct, start, data.shape)], data)


def test_zarr_writes_through_url(gray) -> None:
    url, data, start = gray
    array = zarr.open_array(url + "/0", mode="r+")
    sel = _selection(array, start, data.shape)
    array[sel] = 255 - data
    np.testing.assert_array_equal(zarr.open_array(url + "/0", mode="r")[sel], 255 - data)
    with pytest.raises(DvidInputError, match="synthesised"):
        array.attrs["x"] = 1


def test_dask_from_zarr_url(gray) -> None:
    url, data, start = gray
    array = da.from_zarr(url + "/0")
    level0 = zarr.open_array(url + "/0", mode="r")
    np.testing.assert_array_equal(array[_selection(level0, start, data.shape)].compute(), data)


def test_mapper_keys_and_documents(gray, dvid_node: Node) -> None:
    url, _data, _start = gray
    mapper = fsspec.get_mapper(url, chunk_blocks=1)
    store = DvidStore(dvid_node, "gray", chunk_blocks=1)
    assert json.loads(mapper["zarr.json"]) == json.loads(store._docs["zarr.json"])
    assert json.loads(mapper["0/zarr.json"]) == json.loads(store._docs["0/zarr.json"])
    keys = set(mapper)
    io = BlockIO.open(dvid_node, "gray")
    level = store.layout.levels[0]
    box = (level.origin, tuple(o + n for o, n in zip(level.origin, level.shape)))
    origin = level.origin_block
    chunks = {"0/c/" + "/".join(str(c - o) for c, o in zip(coord, origin)) for coord in io.stored_coords(box)}
    assert keys == {"zarr.json", "0/zarr.json"} | chunks
    some = min(chunks)
    assert len(mapper[some]) == 32**3
    with pytest.raises(KeyError):
        mapper["0/c/99/99/99"]


def test_cat_of_many_chunks_is_one_request(gray, dvid_node: Node) -> None:
    url, _data, _start = gray
    fs = DvidFileSystem(chunk_blocks=1)
    root = url[len("dvid://") :]
    paths = [f"{root}/0/c/{z}/{y}/{x}" for z in range(3) for y in range(2) for x in range(4)]
    fs.cat_file(paths[0])  # resolves the node and reads the layout once
    store = next(iter(fs._stores.values()))
    transport = store.node.transport
    before = transport.requests_sent
    out = fs.cat(paths)
    assert transport.requests_sent - before == 1
    array = zarr.open_array(DvidStore(dvid_node, "gray", scale=0), mode="r")
    for path, value in out.items():
        z, y, x = (int(v) for v in path.rsplit("/", 3)[1:])
        block = array[z * 32 : z * 32 + 32, y * 32 : y * 32 + 32, x * 32 : x * 32 + 32]
        assert value == block.tobytes()


def test_listing_info_and_exists(gray) -> None:
    url, _data, _start = gray
    fs = fsspec.filesystem("dvid", chunk_blocks=1)
    root = url[len("dvid://") :]
    assert sorted(fs.ls(root, detail=False)) == [f"{root}/0", f"{root}/zarr.json"]
    assert sorted(fs.ls(f"{root}/0", detail=False)) == [f"{root}/0/c", f"{root}/0/zarr.json"]
    rows = fs.ls(f"{root}/0/c", detail=True)
    assert rows and all(r["type"] == "directory" for r in rows)
    chunk = fs.find(f"{root}/0/c")[0]
    assert fs.info(chunk) == {"name": chunk, "size": 32**3, "type": "file"}
    assert fs.isdir(root) and fs.isdir(f"{root}/0/c") and fs.isfile(f"{root}/zarr.json")
    assert fs.exists(chunk) and not fs.exists(f"{root}/0/c/50/50/50") and not fs.exists(f"{root}/0/.zarray")
    with fs.open(f"{root}/zarr.json") as f:
        assert json.load(f)["node_type"] == "group"
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{root}/nothing")


def test_byte_ranges(gray) -> None:
    url, _data, _start = gray
    fs = fsspec.filesystem("dvid")
    root = url[len("dvid://") :]
    for path in (f"{root}/zarr.json", fs.find(f"{root}/0/c")[0]):
        whole = fs.cat_file(path)
        assert fs.cat_file(path, start=10, end=20) == whole[10:20]
        assert fs.cat_file(path, start=-7) == whole[-7:]
        assert fs.cat_file(path, start=5) == whole[5:]
        assert fs.cat_file(path, start=3, end=-4) == whole[3:-4]
        assert fs.cat_ranges([path, path], [0, 8], [4, 16]) == [whole[:4], whole[8:16]]


def test_rm_writes_zero_chunks_only(gray, dvid_node: Node) -> None:
    url, _data, _start = gray
    fs = fsspec.filesystem("dvid", chunk_blocks=1)
    root = url[len("dvid://") :]
    chunk = fs.find(f"{root}/0/c")[0]
    fs.rm(chunk)
    assert fs.cat_file(chunk) == bytes(32**3)
    with pytest.raises(UnsupportedError):
        fs.rm(f"{root}/0", recursive=True)
    with pytest.raises(UnsupportedError):
        fs.rm(f"{root}/zarr.json")
    assert fs.exists(f"{root}/zarr.json")


def test_branch_reference_and_locked_node(dvid_server, dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (32, 32, 32), "uint8")[:] = 6
    dvid_node.commit()
    url = f"dvid://{_host(dvid_server)}/{dvid_node.uuid[:8]}:master/gray/0"
    array = zarr.open_array(url, mode="r+")
    np.testing.assert_array_equal(array[:], 6)
    with pytest.raises(LockedNodeError):
        array[:] = 1
    np.testing.assert_array_equal(array[:], 6)


def test_supervoxels_storage_option(dvid_server, dvid_node: Node) -> None:
    import time

    labels = np.full((64, 64, 64), 5, np.uint64)
    labels[32:] = 6
    create_array(dvid_node, "seg", (64, 64, 64), "uint64")[:] = labels
    deadline = time.monotonic() + 30
    for label in (5, 6):  # DVID indexes labels in the background; merging needs the index
        while True:
            answer = dvid_node.transport.request("GET", dvid_node.path("seg", "size", str(label)), allow_status=(404,))
            if answer.status_code == 200 and answer.json()["voxels"] == int((labels == label).sum()):
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)  # polling DVID's background indexing, which has no completion signal
    dvid_node.transport.post_json(dvid_node.path("seg", "merge"), [5, 6])
    url = f"dvid://{_host(dvid_server)}/{dvid_node.uuid}/seg/0"
    supervoxels = zarr.open_array(url, mode="r", storage_options={"supervoxels": True})
    np.testing.assert_array_equal(supervoxels[:], labels)
    np.testing.assert_array_equal(zarr.open_array(url, mode="r")[:], 5)


def test_invalidate_cache_sees_new_extents(dvid_server, dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (32, 32, 32), "uint8")
    fs = DvidFileSystem(skip_instance_cache=True)
    url = f"dvid://{_host(dvid_server)}/{dvid_node.uuid}/gray"

    def shape() -> list[int]:
        return json.loads(fs.cat_file(url + "/0/zarr.json"))["shape"]

    assert shape() == [32, 32, 32]
    BlockIO.open(dvid_node, "gray").write_box(np.ones((32, 32, 32), np.uint8), (32, 0, 0))
    assert shape() == [32, 32, 32]  # the layout is pinned ...
    fs.invalidate_cache()
    assert shape() == [64, 32, 32]  # ... until the cache is dropped


def test_filesystem_pickles_as_settings(gray) -> None:
    url, _data, _start = gray
    fs = DvidFileSystem(app="pickled", supervoxels=False)
    root = url[len("dvid://") :]
    first = fs.cat_file(f"{root}/zarr.json")
    clone = pickle.loads(pickle.dumps(fs))
    assert clone.app == "pickled" and clone.cat_file(f"{root}/zarr.json") == first


def test_parse_url() -> None:
    parsed = parse_url("dvid://localhost:8000/a3f9:master/grayscale/0/c/1/2/3")
    assert (parsed.server, parsed.ref, parsed.instance, parsed.key) == (
        "http://localhost:8000", "a3f9:master", "grayscale", "0/c/1/2/3"
    )
    assert parse_url("localhost:8000/abc/seg").key == ""
    with pytest.raises(DvidInputError, match="not a DVID URL"):
        parse_url("dvid://localhost:8000/abc")


def test_token_stays_out_of_pickles_and_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    from dvid_store import DvidFileSystem

    monkeypatch.delenv("DVID_TOKEN", raising=False)
    fs = DvidFileSystem(token="fs-secret-token", user="dana", skip_instance_cache=True)
    data = pickle.dumps(fs)
    assert b"fs-secret-token" not in data
    assert "fs-secret-token" not in repr(fs) and "fs-secret-token" not in str(fs.storage_options)
    assert fs._client("127.0.0.1:1").transport.session().headers["Authorization"] == "Bearer fs-secret-token"
    monkeypatch.setenv("DVID_TOKEN", "from-the-environment")
    clone = pickle.loads(data)
    assert clone.user == "dana"
    assert clone._client("127.0.0.1:1").transport.session().headers["Authorization"] == "Bearer from-the-environment"


def test_missing_node_or_instance_is_a_missing_path(dvid_server, dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (32, 32, 32), "uint8")
    fs = DvidFileSystem(skip_instance_cache=True)
    host = _host(dvid_server)
    missing = {
        f"{host}/{dvid_node.uuid}/nothing": "nothing",  # no such instance
        f"{host}/{dvid_node.uuid}/nothing/0/zarr.json": "nothing",
        f"{host}/ffffffffffff/gray": "ffffffffffff",  # no such node
    }
    for path, named in missing.items():
        assert not fs.exists(path) and not fs.exists("dvid://" + path)
        assert not fs.isdir(path) and not fs.isfile(path)
        with pytest.raises(FileNotFoundError, match=named) as info:
            fs.info(path)
        assert isinstance(info.value.__cause__, UnknownInstanceError | UnknownNodeError)
        with pytest.raises(FileNotFoundError):
            fs.ls(path)
    assert fs.exists(f"{host}/{dvid_node.uuid}/gray") and fs.exists(f"{host}/{dvid_node.uuid}/gray/zarr.json")
    with pytest.raises(FileNotFoundError, match="no such key"):
        fs.info(f"{host}/{dvid_node.uuid}/gray/0/c/9/9/9")


def test_recursive_get_copies_the_store_into_a_directory(gray, tmp_path) -> None:
    url, data, start = gray
    fs = fsspec.filesystem("dvid")
    target = tmp_path / "copy"
    fs.get(url, str(target), recursive=True)
    assert (target / "zarr.json").is_file() and (target / "0" / "zarr.json").is_file()
    remote = zarr.open_group(url, mode="r")
    local = zarr.open_group(str(target), mode="r")
    assert local.attrs.asdict() == remote.attrs.asdict()
    level = local["0"]
    np.testing.assert_array_equal(level[:], remote["0"][:])
    np.testing.assert_array_equal(level[_selection(level, start, data.shape)], data)
    chunks = sorted(p.relative_to(target).as_posix() for p in (target / "0" / "c").rglob("*") if p.is_file())
    assert chunks == sorted(k.split("/gray/", 1)[1] for k in fs.find(url + "/0/c"))


def test_copy_and_move_say_what_to_do_instead(gray) -> None:
    url, _data, _start = gray
    fs = fsspec.filesystem("dvid")
    root = url[len("dvid://") :]
    chunk = fs.find(f"{root}/0/c")[0]
    before = fs.cat_file(chunk)
    for call in (
        lambda: fs.copy(chunk, f"{root}/0/c/9/9/9"),
        lambda: fs.cp_file(chunk, f"{root}/0/c/9/9/9"),
        lambda: fs.copy(root, root + "_copy", recursive=True),
    ):
        with pytest.raises(NotImplementedError, match="to_dvid") as info:
            call()
        assert isinstance(info.value, UnsupportedError)
    for call in (lambda: fs.mv(chunk, f"{root}/0/c/9/9/9"), lambda: fs.rename(root, root + "_new")):
        with pytest.raises(NotImplementedError, match=r"cannot be renamed.*to_dvid"):
            call()
    assert fs.cat_file(chunk) == before  # nothing was removed


def test_removed_chunk_still_exists_as_zero_block(gray) -> None:
    url, _data, _start = gray
    fs = fsspec.filesystem("dvid", chunk_blocks=1)
    root = url[len("dvid://") :]
    chunk = fs.find(f"{root}/0/c")[0]
    fs.rm(chunk)
    assert fs.exists(chunk) and fs.info(chunk)["size"] == 32**3  # DVID has no block delete
    assert chunk in fs.find(f"{root}/0/c")
    assert fs.cat_file(chunk) == bytes(32**3)
