"""DvidStore: DVID instances as zarr v3 stores, against the real server."""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
import threading

import numpy as np
import pytest
import zarr
from zarr.core.buffer import default_buffer_prototype

from dvid_store import (
    DvidConnectionError,
    DvidInputError,
    LockedNodeError,
    Node,
    UnsupportedError,
)
from dvid_store.blocks import BlockIO
from dvid_store.create import create_array
from dvid_store.zarr import DvidStore
from dvid_store.zarr.coalesce import Batcher
from dvid_store.zarr.metadata import normalise_unit


def merge_labels(node: Node, instance: str, labels: np.ndarray, target: int, other: int) -> None:
    """Merge body ``other`` into ``target`` once DVID's asynchronous label index has caught up."""
    import time

    for label in (target, other):
        voxels = int((labels == label).sum())
        deadline = time.monotonic() + 30
        while True:
            answer = node.transport.request("GET", node.path(instance, "size", str(label)), allow_status=(404,))
            if answer.status_code == 200 and answer.json().get("voxels") == voxels:
                break
            assert time.monotonic() < deadline, f"label {label} was not indexed in time"
            time.sleep(0.05)  # polling DVID's background indexing, which has no completion signal
    node.transport.post_json(node.path(instance, "merge"), [target, other])


def downres(volume: np.ndarray) -> np.ndarray:
    """DVID's label down-sampling: per 2x2x2 cell the most frequent non-zero label, ties to the smaller."""
    z, y, x = volume.shape
    cells = volume.reshape(z // 2, 2, y // 2, 2, x // 2, 2).transpose(0, 2, 4, 1, 3, 5).reshape(-1, 8)
    ordered = np.sort(cells, axis=1)
    counts = (ordered[:, :, None] == ordered[:, None, :]).sum(axis=2)
    counts = np.where(ordered == 0, 0, counts)
    best = ordered[np.arange(len(ordered)), np.argmax(counts, axis=1)]
    return np.where(counts.max(axis=1) == 0, 0, best).reshape(z // 2, y // 2, x // 2)


def index_of(array: zarr.Array, box) -> tuple[slice, ...]:
    """The zarr selection of a DVID voxel box (index 0 is the array's ``dvid.offset``)."""
    offset = array.attrs["dvid"]["offset"]
    return tuple(slice(a - o, b - o) for a, b, o in zip(box[0], box[1], offset))


def test_group_metadata_ome_and_consolidated(dvid_node: Node) -> None:
    dvid_node.create_instance(
        "labelmap", "seg", max_downres_level=2, voxel_size=(40.0, 8.0, 4.0), block_size=(32, 32, 32)
    )
    io = BlockIO.open(dvid_node, "seg")
    io.write_box(np.ones((32, 64, 96), np.uint64), (32, 64, 96))  # extents 32..63, 64..127, 96..191
    store = DvidStore(dvid_node, "seg")
    transport = dvid_node.transport
    before = transport.requests_sent
    group = zarr.open_group(store, mode="r")
    arrays = {name: group[name] for name in ("0", "1", "2")}
    assert transport.requests_sent == before  # everything comes from consolidated metadata
    attrs = group.attrs.asdict()
    ms = attrs["ome"]["multiscales"][0]
    assert attrs["ome"]["version"] == "0.5"
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert all(a["unit"] == "nanometer" and a["type"] == "space" for a in ms["axes"])
    voxel = np.array([40.0, 8.0, 4.0])
    for level, dataset in enumerate(ms["datasets"]):
        f = 2**level
        origin = np.array(arrays[str(level)].attrs["dvid"]["offset"])
        scale, translation = (t[t["type"]] for t in dataset["coordinateTransformations"])
        np.testing.assert_allclose(scale, voxel * f)
        np.testing.assert_allclose(translation, (origin * f + (f - 1) / 2) * voxel)
        # the origin is the block-aligned minimum point of this level
        np.testing.assert_array_equal(origin, (np.array([32, 64, 96]) // f) // 32 * 32)
    dvid = attrs["dvid"]
    assert (dvid["uuid"], dvid["instance"], dvid["type"]) == (dvid_node.uuid, "seg", "labelmap")
    assert dvid["block_size"] == [32, 32, 32] and dvid["min_point"] == [32, 64, 96]
    a0 = arrays["0"]
    assert a0.shape == (32, 64, 96) and a0.chunks == tuple(32 * k for k in a0.attrs["dvid"]["chunk_blocks"])
    assert a0.dtype == np.uint64 and a0.fill_value == 0
    assert a0.metadata.dimension_names == ("z", "y", "x")
    codecs = [c.to_dict() for c in a0.metadata.codecs]
    assert codecs == [{"name": "bytes", "configuration": {"endian": "little"}}]
    for level in (1, 2):
        lo = np.array([32, 64, 96]) // 2**level // 32 * 32
        hi = -(-(np.array([63, 127, 191]) // 2**level + 1) // 32) * 32
        assert arrays[str(level)].shape == tuple(hi - lo)


def test_unit_names_are_normalised() -> None:
    assert normalise_unit("nanometers") == "nanometer"
    assert normalise_unit("Microns") == "micrometer"
    assert normalise_unit("furlongs") is None


@pytest.mark.parametrize("dtype", ["uint8", "uint64"])
@pytest.mark.parametrize(
    "start,shape",
    [((-64, -32, -96), (70, 45, 100)), ((0, 32, 64), (33, 31, 65))],
)
def test_round_trip(dvid_node: Node, dtype: str, start, shape) -> None:
    box = (start, tuple(a + n for a, n in zip(start, shape)))
    array = create_array(dvid_node, "vol", box, dtype)
    rng = np.random.default_rng(sum(shape))
    if dtype == "uint8":
        data = rng.integers(1, 256, shape, dtype=np.uint8)
    else:  # few distinct ids, some beyond 32 bits (DVID indexes each label)
        data = rng.choice(np.array([1, 9, 2**36 + 1, 2**64 - 3], np.uint64), shape)
    array[index_of(array, box)] = data
    reopened = zarr.open_array(DvidStore(dvid_node, "vol", scale=0), mode="r")
    full = reopened[:]
    model = np.zeros(reopened.shape, dtype)
    model[index_of(reopened, box)] = data
    np.testing.assert_array_equal(full, model)
    # an odd sub-box read
    sub = ((start[0] + 3, start[1] + 5, start[2] + 7), (start[0] + shape[0] - 2, start[1] + 9, start[2] + shape[2]))
    np.testing.assert_array_equal(reopened[index_of(reopened, sub)], data[3:-2, 5:9, 7:])


def test_labelmap_round_trip_and_scale_levels(dvid_node: Node) -> None:
    box = ((0, 32, 64), (128, 160, 192))
    array = create_array(dvid_node, "seg", box, "uint64", scales=2, block_size=32)
    assert array.dtype == np.uint64
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 5, (128, 128, 128)).astype(np.uint64)
    labels[:64] *= 2**40 + 1  # big ids too
    array[index_of(array, box)] = labels
    group = zarr.open_group(DvidStore(dvid_node, "seg"), mode="r")
    np.testing.assert_array_equal(group["0"][index_of(group["0"], box)], labels)
    expected = labels
    for level in (1, 2):
        expected = downres(expected)
        level_array = group[str(level)]
        level_box = tuple(tuple(c // 2**level for c in corner) for corner in box)
        np.testing.assert_array_equal(level_array[index_of(level_array, level_box)], expected)


def test_labelmap_lower_scale_written_through_zarr(dvid_node: Node) -> None:
    create_array(dvid_node, "seg", (128, 128, 128), "uint64", scales=1, block_size=32)
    group = zarr.open_group(DvidStore(dvid_node, "seg"), mode="r+")
    small = np.random.default_rng(13).choice(np.array([0, 8, 2**40], np.uint64), (64, 64, 64))
    group["1"][:] = small
    np.testing.assert_array_equal(zarr.open_group(DvidStore(dvid_node, "seg"), mode="r")["1"][:], small)
    np.testing.assert_array_equal(group["0"][:], 0)


def test_grayscale_pyramid_of_instances(dvid_node: Node) -> None:
    box = ((0, 0, 0), (64, 64, 128))
    level0 = create_array(dvid_node, "gray", box, "uint8", scales=1, voxel_size=(8, 4, 4))
    assert set(dvid_node.instances()) >= {"gray", "gray_1"}
    data = np.random.default_rng(6).integers(0, 256, (64, 64, 128), dtype=np.uint8)
    level0[:] = data
    group = zarr.open_group(DvidStore(dvid_node, "gray"), mode="r+")
    small = data[::2, ::2, ::2]
    group["1"][:] = small
    assert group["1"].shape == (32, 32, 64)
    np.testing.assert_array_equal(group["1"][:], small)
    datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
    assert [d["coordinateTransformations"][0]["scale"] for d in datasets] == [[8.0, 4.0, 4.0], [16.0, 8.0, 8.0]]


def test_supervoxels_and_bodies(dvid_node: Node) -> None:
    dvid_node.create_instance("labelmap", "seg", block_size=(32, 32, 32))
    labels = np.zeros((32, 64, 32), np.uint64)
    labels[:, :40] = 3
    labels[:, 40:] = 4
    BlockIO.open(dvid_node, "seg").write_box(labels, (0, 0, 0))
    merge_labels(dvid_node, "seg", labels, 3, 4)
    bodies = zarr.open_array(DvidStore(dvid_node, "seg", scale=0), mode="r")[:]
    supervoxels = zarr.open_array(DvidStore(dvid_node, "seg", scale=0, supervoxels=True), mode="r")[:]
    np.testing.assert_array_equal(supervoxels, labels)
    np.testing.assert_array_equal(bodies, np.where(labels == 4, 3, labels))


def test_versions_keep_old_data(dvid_node: Node) -> None:
    array = create_array(dvid_node, "gray", (64, 64, 64), "uint8")
    first = np.random.default_rng(7).integers(0, 256, (64, 64, 64), dtype=np.uint8)
    array[:] = first
    dvid_node.commit("first")
    child = dvid_node.new_version("second")
    second = 255 - first
    zarr.open_array(DvidStore(child, "gray", scale=0), mode="r+")[:32] = second[:32]
    np.testing.assert_array_equal(zarr.open_array(DvidStore(dvid_node, "gray", scale=0), mode="r")[:], first)
    np.testing.assert_array_equal(
        zarr.open_array(DvidStore(child, "gray", scale=0), mode="r")[:], np.concatenate([second[:32], first[32:]])
    )


def test_committed_node_refuses_writes_with_locked_node_error(dvid_node: Node) -> None:
    array = create_array(dvid_node, "gray", (32, 32, 64), "uint8")
    array[:] = 5
    dvid_node.commit()
    store = DvidStore(dvid_node, "gray", scale=0)
    # not read_only: zarr would refuse modes "r+"/"a" with its own ValueError before asking the store
    assert store.locked and not store.read_only
    assert store.with_read_only(False).locked
    transport = dvid_node.transport
    for opened in (
        zarr.open(store),
        zarr.open_array(DvidStore(dvid_node, "gray", scale=0), mode="r+"),
        zarr.open_group(DvidStore(dvid_node, "gray"), mode="a")["0"],
        zarr.open_group(DvidStore(dvid_node, "gray"))["0"],  # zarr's default mode "a"
    ):
        np.testing.assert_array_equal(opened[:], 5)
        before = transport.requests_sent
        with pytest.raises(LockedNodeError, match=r"committed.*make a new version.*new_version"):
            opened[:] = 1
        with pytest.raises(LockedNodeError):
            opened[:] = 0  # zarr deletes all-zero chunks
        assert transport.requests_sent == before
        with pytest.raises(LockedNodeError, match="new_version"):
            opened[:1, :1, :1] = 1  # a partial chunk: zarr reads it first, the write is refused
    np.testing.assert_array_equal(zarr.open(store, mode="r")[:], 5)
    with pytest.raises(LockedNodeError):
        zarr.open_group(DvidStore(dvid_node, "gray"), mode="w")


def test_read_only_store_refuses_writes_with_zarrs_message(dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (32, 32, 32), "uint8")
    array = zarr.open_array(DvidStore(dvid_node, "gray", scale=0), mode="r")
    with pytest.raises(ValueError, match="store was opened in read-only mode and does not support writing"):
        array[:] = 1
    with pytest.raises(ValueError, match="read_only=False"):
        asyncio.run(DvidStore(dvid_node, "gray", scale=0, read_only=True).delete("c/0/0/0"))


def test_zeros_overwrite_data(dvid_node: Node) -> None:
    for dtype, name in ((np.uint8, "gray"), (np.uint64, "seg")):
        array = create_array(dvid_node, name, ((0, 0, 0), (64, 64, 64)), dtype, block_size=32)
        array[:] = 9
        array[:32] = 0  # zarr deletes all-zero chunks: the store must write zero blocks
        array[32:, :, 40:50] = 0  # partial chunks: read-modify-write
        model = np.full((64, 64, 64), 9, dtype)
        model[:32] = 0
        model[32:, :, 40:50] = 0
        np.testing.assert_array_equal(array[:], model)
        io = BlockIO.open(dvid_node, name)
        np.testing.assert_array_equal(io.read_box(((0, 0, 0), (64, 64, 64))), model)


def test_metadata_changes_and_mode_w_are_refused(dvid_node: Node) -> None:
    array = create_array(dvid_node, "gray", (32, 32, 32), "uint8")
    array[:] = 3
    store = DvidStore(dvid_node, "gray")
    with pytest.raises(UnsupportedError, match="never wipes"):
        zarr.open_group(store, mode="w")
    with pytest.raises(UnsupportedError):
        zarr.open_array(DvidStore(dvid_node, "gray", scale=0), mode="w", shape=(32, 32, 32), dtype="uint8")
    level0 = zarr.open_group(store, mode="r+")["0"]
    with pytest.raises(DvidInputError, match="attributes"):
        level0.attrs["note"] = "x"
    with pytest.raises(DvidInputError, match="shape"):
        level0.resize((64, 64, 64))
    with pytest.raises(DvidInputError, match="cannot be deleted"):
        asyncio.run(store.delete("zarr.json"))
    with pytest.raises(DvidInputError, match="whole chunk"):
        asyncio.run(store.set("0/c/0/0/0", default_buffer_prototype().buffer.from_bytes(b"\0" * 10)))
    with pytest.raises(DvidInputError, match="not a chunk"):
        asyncio.run(store.set("0/other", default_buffer_prototype().buffer.from_bytes(b"x")))
    # rewriting identical metadata is fine
    same = asyncio.run(store.get("0/zarr.json", default_buffer_prototype()))
    asyncio.run(store.set("0/zarr.json", same))
    np.testing.assert_array_equal(zarr.open_array(store, path="0", mode="r")[:], 3)


def test_pickling_and_equality(dvid_node: Node) -> None:
    array = create_array(dvid_node, "seg", (64, 64, 64), "uint64")
    data = (np.arange(64**3, dtype=np.uint64).reshape(64, 64, 64) % 11) * np.uint64(2**35 + 1)
    array[:] = data
    store = DvidStore(dvid_node, "seg", scale=0)
    payload = pickle.dumps(store)
    assert b"Session" not in payload
    clone = pickle.loads(payload)
    assert clone == store and clone is not store
    assert clone != DvidStore(dvid_node, "seg", scale=0, supervoxels=True)
    assert store.with_read_only(True) != store and store.with_read_only(True).read_only
    np.testing.assert_array_equal(zarr.open_array(clone, mode="r")[:], data)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(zarr.open_array(store, mode="r")))[:], data)


def test_listing_is_consistent(dvid_node: Node) -> None:
    dvid_node.create_instance("uint8blk", "gray", block_size=(16, 16, 16))
    io = BlockIO.open(dvid_node, "gray")
    io.write_box(np.ones((32, 32, 48), np.uint8), (-16, 0, 16))  # extents -16..15, 0..31, 16..63
    io.write({(0, 1, 3): np.zeros(io.block_shape, np.uint8)})  # a stored zero block
    store = DvidStore(dvid_node, "gray", chunk_blocks=1)
    origin = store.layout.levels[0].origin_block

    async def collect():
        listed = [k async for k in store.list()]
        under_c = [k async for k in store.list_prefix("0/c/")]
        top = [k async for k in store.list_dir("")]
        level = [k async for k in store.list_dir("0")]
        rows = [k async for k in store.list_dir("0/c/1/")]
        exists = {k: await store.exists(k) for k in listed + ["0/c/1/1/0", "0/c/9/9/9", ".zarray", "0/.zarray"]}
        return listed, under_c, top, level, rows, exists

    listed, under_c, top, level, rows, exists = asyncio.run(collect())
    stored = set(io.stored_coords(((-16, 0, 16), (16, 32, 64))))
    chunk_keys = {"0/c/" + "/".join(str(c - o) for c, o in zip(coord, origin)) for coord in stored}
    assert set(listed) == {"zarr.json", "0/zarr.json"} | chunk_keys
    assert set(under_c) == chunk_keys
    assert sorted(top) == ["0", "zarr.json"] and sorted(level) == ["c", "zarr.json"]
    assert sorted(rows) == sorted({k.split("/")[3] for k in chunk_keys if k.startswith("0/c/1/")})
    assert all(exists[k] for k in listed)
    assert not exists["0/c/9/9/9"] and not exists[".zarray"] and not exists["0/.zarray"]


def test_zarr_v2_probes_need_no_requests(dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (32, 32, 32), "uint8")
    store = DvidStore(dvid_node, "gray")
    transport = dvid_node.transport
    before = transport.requests_sent
    for key in (".zgroup", ".zarray", ".zattrs", ".zmetadata", "0/.zarray", "0/.zattrs"):
        assert asyncio.run(store.get(key, default_buffer_prototype())) is None
    zarr.open(store, mode="r")  # probes v3 and v2 documents
    assert transport.requests_sent == before


def test_reading_256_cube_takes_a_request_per_chunk(dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (256, 256, 256), "uint8")
    data = np.random.default_rng(8).integers(0, 256, (256, 256, 256), dtype=np.uint8)
    BlockIO.open(dvid_node, "gray").write_box(data, (0, 0, 0))
    transport = dvid_node.transport
    array = zarr.open_array(DvidStore(dvid_node, "gray", scale=0), mode="r")
    chunks = int(np.prod([-(-256 // c) for c in array.chunks]))
    assert chunks > 1
    before = transport.requests_sent
    np.testing.assert_array_equal(array[:], data)
    assert transport.requests_sent - before == chunks  # multi-block chunks: one request each


def test_reading_256_cube_of_block_chunks_takes_few_requests(dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (256, 256, 256), "uint8")
    data = np.random.default_rng(8).integers(0, 256, (256, 256, 256), dtype=np.uint8)
    BlockIO.open(dvid_node, "gray").write_box(data, (0, 0, 0))
    array = zarr.open_array(DvidStore(dvid_node, "gray", scale=0, chunk_blocks=1), mode="r")
    nblocks = (256 // 32) ** 3
    transport = dvid_node.transport
    before = transport.requests_sent
    np.testing.assert_array_equal(array[:], data)
    default_requests = transport.requests_sent - before
    with zarr.config.set({"async.concurrency": 1024}):
        before = transport.requests_sent
        np.testing.assert_array_equal(array[:], data)
        wide_requests = transport.requests_sent - before
    # zarr keeps async.concurrency (10) gets in flight; each group is one request, and
    # groups stop at 4 MiB so that a big read is several requests in flight at once
    assert default_requests <= nblocks // 8
    assert wide_requests == data.nbytes // (4 * 1024 * 1024)


def test_request_caps_split_batches(dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (64, 64, 128), "uint8", block_size=16)
    data = np.random.default_rng(9).integers(0, 256, (64, 64, 128), dtype=np.uint8)
    BlockIO.open(dvid_node, "gray").write_box(data, (0, 0, 0))
    nblocks = 4 * 4 * 8
    transport = dvid_node.transport
    for caps, expected in (({"max_blocks": 8}, nblocks // 8), ({"max_bytes": 5 * 16**3}, -(-nblocks // 5))):
        array = zarr.open_array(DvidStore(dvid_node, "gray", scale=0, chunk_blocks=1, **caps), mode="r")
        with zarr.config.set({"async.concurrency": 1024}):
            before = transport.requests_sent
            np.testing.assert_array_equal(array[:], data)
        assert transport.requests_sent - before == expected


def test_decoding_runs_in_io_threads(dvid_node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    array = create_array(dvid_node, "seg", (64, 64, 128), "uint64")
    array[:] = 1
    threads: list[str] = []
    decode = BlockIO._decode

    def recording(self, payload, coord, **kwargs):
        threads.append(threading.current_thread().name)
        return decode(self, payload, coord, **kwargs)

    monkeypatch.setattr(BlockIO, "_decode", recording)
    np.testing.assert_array_equal(zarr.open_array(DvidStore(dvid_node, "seg", scale=0), mode="r")[:], 1)
    assert threads and all(name.startswith("dvid_store-io") for name in threads)


def test_batcher_gathers_concurrent_calls() -> None:
    seen: list[tuple[list[int], int]] = []

    def run(items: list[int]) -> list[int]:
        seen.append((list(items), threading.get_ident()))
        return [i * 2 for i in items]

    batcher: Batcher[int, int] = Batcher(run, max_items=4)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(10))))

    assert asyncio.run(main()) == [i * 2 for i in range(10)]
    # asyncio promises no order between the batches: they partition the calls, 4 at most each.
    batches = [items for items, _ in seen]
    assert sorted(i for batch in batches for i in batch) == list(range(10))
    assert len(batches) == 3 and all(len(batch) <= 4 for batch in batches)
    assert threading.get_ident() not in {thread for _, thread in seen}


def test_batcher_failure_reaches_every_caller() -> None:
    def run(items: list[int]) -> list[int]:
        raise DvidInputError("boom")

    batcher: Batcher[int, int] = Batcher(run, max_items=8)

    async def main() -> list[object]:
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True))

    results = asyncio.run(main())
    assert all(isinstance(r, DvidInputError) for r in results)


def test_create_array_checks(dvid_node: Node) -> None:
    array = create_array(dvid_node, "gray", ((-5, 7, 30), (40, 50, 70)), "uint16", block_size=16)
    assert array.dtype == np.uint16 and array.chunks == tuple(16 * k for k in array.attrs["dvid"]["chunk_blocks"])
    assert array.attrs["dvid"]["offset"] == [-16, 0, 16]
    assert array.shape == (64, 64, 64)
    info = dvid_node.typeinfo("gray")
    assert info["Extended"]["MinPoint"] == [30, 7, -5] and info["Extended"]["MaxPoint"] == [69, 49, 39]
    with pytest.raises(DvidInputError, match="already exist"):
        create_array(dvid_node, "gray", (16, 16, 16), "uint8")
    with pytest.raises(DvidInputError, match="no voxel type"):
        create_array(dvid_node, "bad", (16, 16, 16), "int8")
    with pytest.raises(DvidInputError, match="uint64"):
        create_array(dvid_node, "bad", (16, 16, 16), "uint8", labels=True)
    assert create_array(dvid_node, "big", (16, 16, 16), "uint64", labels=False).store.layout.typename == "uint64blk"
    dvid_node.commit()
    _ = dvid_node.locked
    before = dvid_node.transport.requests_sent
    with pytest.raises(LockedNodeError):
        create_array(dvid_node, "late", (16, 16, 16), "uint8")
    assert dvid_node.transport.requests_sent == before


def test_store_from_url(dvid_server, dvid_node: Node) -> None:
    array = create_array(dvid_node, "gray", (32, 32, 32), "uint8")
    array[:] = 4
    host = dvid_server.url.split("://", 1)[1]
    store = DvidStore.from_url(f"dvid://{host}/{dvid_node.uuid[:10]}/gray/0")
    assert store.scale == 0 and store.node.uuid == dvid_node.uuid
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[:], 4)
    doc = json.loads(asyncio.run(store.get("zarr.json", default_buffer_prototype())).to_bytes())
    assert doc["node_type"] == "array" and doc["dimension_names"] == ["z", "y", "x"]


@pytest.mark.parametrize("through_url", [False, True])
def test_shrinking_resize_is_refused_before_any_block_is_written(
    dvid_server, dvid_node: Node, through_url: bool
) -> None:
    create_array(dvid_node, "g", (64, 64, 64), "uint8")
    data = np.random.default_rng(21).integers(1, 256, (64, 64, 64), dtype=np.uint8)
    io = BlockIO.open(dvid_node, "g")
    io.write_box(data, (0, 0, 0))
    if through_url:
        host = dvid_server.url.split("://", 1)[1]
        array = zarr.open(f"dvid://{host}/{dvid_node.uuid}/g/0", mode="r+", storage_options={"chunk_blocks": 1})
    else:
        array = zarr.open(DvidStore(dvid_node, "g", scale=0, chunk_blocks=1), mode="r+")
    transport = dvid_node.transport
    before = transport.requests_sent
    with pytest.raises(DvidInputError, match=r"resize\(\).*shape.*Nothing was written"):
        array.resize((10, 10, 10))
    if not through_url:
        assert transport.requests_sent == before  # refused before any request
    np.testing.assert_array_equal(io.read_box(((0, 0, 0), (64, 64, 64))), data)
    with pytest.raises(DvidInputError, match="shape"):
        array.resize((64, 64, 96))  # growing only writes metadata: refused as before
    # zarr's deletes of all-zero chunks still write zero blocks
    array[:32] = 0
    expected = data.copy()
    expected[:32] = 0
    np.testing.assert_array_equal(io.read_box(((0, 0, 0), (64, 64, 64))), expected)


def test_direct_chunk_delete_writes_a_zero_block_that_still_exists(dvid_node: Node) -> None:
    create_array(dvid_node, "g", (64, 64, 64), "uint8")[:] = 7
    store = DvidStore(dvid_node, "g", scale=0, chunk_blocks=1)

    async def delete_and_look() -> tuple[bool, bytes]:
        await store.delete("c/1/1/1")
        value = await store.get("c/1/1/1", default_buffer_prototype())
        assert value is not None
        return await store.exists("c/1/1/1"), value.to_bytes()

    exists, value = asyncio.run(delete_and_look())
    assert exists and value == bytes(32**3)  # DVID has no block delete: a zero block is stored
    assert zarr.open_array(store, mode="r")[:32].min() == 7


def _read_after_failure(node: Node, dead: Node, store: DvidStore) -> tuple[zarr.Array, int]:
    array = zarr.open_array(
        DvidStore(dead, "gray", scale=0, layout=store.layout, chunk_blocks=store.chunk_blocks, _locked=False), mode="r"
    )
    with pytest.raises(DvidConnectionError):
        array[:]
    return array, dead.transport.requests_sent


def test_failed_read_sends_no_more_requests(dvid_node: Node) -> None:
    import time

    from dvid_store import DvidClient
    from dvid_store.transport import RetryPolicy

    create_array(dvid_node, "gray", (128, 128, 256), "uint8")[:] = 3
    store = DvidStore(dvid_node, "gray", scale=0, chunk_blocks=1)  # 128 chunks
    with socket.socket() as sock:  # a port nobody listens on: a stopped server
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = Node(DvidClient(f"127.0.0.1:{port}", retry=RetryPolicy(max_attempts=1)), dvid_node.uuid)
    with zarr.config.set({"async.concurrency": 4}):
        array, sent = _read_after_failure(dvid_node, dead, store)
        time.sleep(1.0)  # zarr's other chunk tasks of the failed read run on in the background
        # one request (zarr's first 4 chunks, one batch) failed; the other 124 chunks sent nothing
        assert dead.transport.requests_sent == sent == 1
        # a new read is a new call: it sends its own (failing) request
        with pytest.raises(DvidConnectionError):
            array[:]
        time.sleep(0.5)
        assert dead.transport.requests_sent == 2


def test_batcher_stops_the_rest_of_a_failed_call() -> None:
    calls: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        calls.append(items)
        raise DvidInputError("boom")

    batcher: Batcher[int, int] = Batcher(run, max_items=3)

    async def main() -> tuple[list[object], object]:
        sem = asyncio.Semaphore(3)

        async def one(i: int) -> int:  # zarr's concurrent_map: a task per chunk, at most 3 at a time
            async with sem:
                return await batcher.submit(i)

        results = await asyncio.gather(*(one(i) for i in range(12)), return_exceptions=True)
        await asyncio.sleep(0.01)  # a later call ...
        later = await asyncio.gather(batcher.submit(99), return_exceptions=True)
        return results, later[0]

    results, later = asyncio.run(main())
    assert all(isinstance(r, DvidInputError) for r in results)
    assert isinstance(later, DvidInputError)
    assert calls == [[0, 1, 2], [99]]  # ... is sent again; the rest of the failed one never was


def test_labelmap_body_view_writes_keep_supervoxels(dvid_node: Node) -> None:
    create_array(dvid_node, "seg", (64, 64, 128), "uint64", block_size=32)
    rng = np.random.default_rng(17)
    supervoxels = rng.choice(np.array([1, 2, 3, 2**40 + 5], np.uint64), (64, 64, 128))
    BlockIO.open(dvid_node, "seg").write_box(supervoxels, (0, 0, 0))
    merge_labels(dvid_node, "seg", supervoxels, 1, 2)
    bodies = np.where(supervoxels == 2, 1, supervoxels)
    view = zarr.open_array(DvidStore(dvid_node, "seg", scale=0), mode="r+")
    np.testing.assert_array_equal(view[:], bodies)
    box = (slice(5, 40), slice(10, 33), slice(20, 101))  # unaligned: partial chunks everywhere
    written = rng.choice(np.array([1, 3, 7, 2**50], np.uint64), bodies[box].shape)
    view[box] = written
    expected_bodies = bodies.copy()
    expected_bodies[box] = written
    after_sv = BlockIO.open(dvid_node, "seg", supervoxels=True).read_box(((0, 0, 0), (64, 64, 128)))
    outside = np.ones(supervoxels.shape, bool)
    outside[box] = False
    np.testing.assert_array_equal(after_sv[outside], supervoxels[outside])  # bit for bit
    assert (after_sv == 2).any()  # supervoxel 2 survives: the merge can still be undone
    # inside the box: the stored supervoxel where the written body was already shown
    inside_sv = np.where(written == bodies[box], supervoxels[box], written)
    np.testing.assert_array_equal(after_sv[box], inside_sv)
    np.testing.assert_array_equal(zarr.open_array(DvidStore(dvid_node, "seg", scale=0), mode="r")[:], expected_bodies)
