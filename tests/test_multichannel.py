"""Multichannel volumes (DVID's rgba8blk) through every layer, against the real server.

An rgba8blk voxel is 4 uint8 values R, G, B, A; every layer presents it as a
trailing channel axis: blocks and boxes ``(z, y, x, 4)`` uint8, dask and zarr arrays
``(z, y, x, 4)`` chunked whole along the channels, xarray dims ``z, y, x, c``.
Every round trip is checked voxel for voxel against numpy, and unaligned writes
against what was there before.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from dvid_store import DvidInputError, Node, create_array, open_dask, to_dvid
from dvid_store.blocks import BlockIO
from dvid_store.cli import main
from dvid_store.dask_array import DvidArray
from dvid_store.xarray_backend import open_dataarray
from dvid_store.zarr import DvidStore
from dvid_store.zarr.store import _ServedChunks

RGBA = np.dtype((np.uint8, 4))


def _url(server, node: Node, instance: str) -> str:
    return f"dvid://{server.url.split('://', 1)[1]}/{node.uuid}/{instance}"


def _random(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _filled(node: Node, name: str, box: tuple[tuple[int, int, int], tuple[int, int, int]], seed: int) -> np.ndarray:
    """A new rgba8blk instance covering ``box`` (block aligned), written with random voxels."""
    create_array(node, name, box, "rgba8")
    data = _random(tuple(b - a for a, b in zip(*box)) + (4,), seed)
    node.voxels(name).write(data, box[0])
    return data


def _stored(node: Node, name: str, box) -> np.ndarray:
    """What DVID holds, through the node API (GET /raw), independent of the layers under test."""
    return node.voxels(name).read(box)


# ------------------------------------------------------------------ create_array
def test_create_array_makes_rgba8blk_from_its_name_or_numpys_uint8_times_4(dvid_node: Node) -> None:
    for name, dtype in (("by_name", "rgba8"), ("by_numpy", RGBA)):
        array = create_array(dvid_node, name, ((-32, 0, 16), (40, 64, 100)), dtype)
        assert dvid_node.instances()[name] == "rgba8blk"
        assert array.shape == (96, 64, 128, 4) and array.dtype == np.uint8
        assert array.chunks[3] == 4 and all(c % 32 == 0 for c in array.chunks[:3])
        assert array.metadata.dimension_names == ("z", "y", "x", "c")
        assert array.attrs["dvid"]["offset"] == [-32, 0, 0] and array.attrs["dvid"]["channels"] == list("rgba")


@pytest.mark.parametrize(
    ("dtype", "shown"),
    [(np.dtype((np.uint16, 4)), "uint16 × 4 channels"), (np.dtype((np.uint8, 3)), "uint8 × 3 channels"),
     ("rgb", "'rgb'"), (np.complex64, "complex64"), (np.int16, "int16")],
)
def test_dtypes_dvid_cannot_store_are_refused_naming_what_it_can(dvid_node: Node, dtype, shown) -> None:
    sent = dvid_node.transport.requests_sent
    with pytest.raises(DvidInputError) as caught:
        create_array(dvid_node, "bad", (32, 32, 32), dtype)
    message = str(caught.value)
    assert f"no voxel type for dtype {shown}" in message
    assert "uint8, uint16, uint32, uint64 or float32 (one channel), or 4 uint8 channels R, G, B, A" in message
    assert "'rgba8', or numpy's (uint8, 4)" in message
    assert dvid_node.transport.requests_sent == sent  # refused before anything was sent


# ------------------------------------------------------------------ blocks
def test_block_payloads_are_4_bytes_per_voxel_r_g_b_a_x_fastest(dvid_node: Node) -> None:
    create_array(dvid_node, "rgb", (64, 32, 64), "rgba8")
    z, y, x = np.meshgrid(np.arange(64), np.arange(32), np.arange(64), indexing="ij")
    known = np.stack([z, y, x, (z + 3 * y + 5 * x) % 256], axis=-1).astype(np.uint8)  # each voxel names itself
    dvid_node.voxels("rgb").write(known, (0, 0, 0))  # POST /raw through the node API
    for compression in ("stored", "uncompressed"):  # DVID's stored LZ4 payloads, and raw ones
        io = BlockIO.open(dvid_node, "rgb", compression=compression)
        assert io.dtype == np.uint8 and io.channel_shape == (4,) and io.block_nbytes == 32**3 * 4
        blocks = io.read([(0, 0, 0), (1, 0, 1), (5, 5, 5)])
        assert sorted(blocks) == [(0, 0, 0), (1, 0, 1)]
        np.testing.assert_array_equal(blocks[(0, 0, 0)], known[:32, :, :32])
        np.testing.assert_array_equal(blocks[(1, 0, 1)], known[32:, :, 32:])
        padded = np.pad(known, ((0, 0), (5, 0), (0, 0), (0, 0)))  # y < 0 was never written: zeros
        np.testing.assert_array_equal(io.read_box(((3, -5, 7), (60, 30, 64))), padded[3:60, 0:35, 7:64])


def test_block_writes_store_whole_rgba_voxels(dvid_node: Node) -> None:
    data = _filled(dvid_node, "rgb", ((-32, 0, 0), (32, 64, 64)), 1)
    io = BlockIO.open(dvid_node, "rgb")
    block = _random((32, 32, 32, 4), 2)
    assert io.write({(0, 1, 1): block}) == 1
    box = _random((32, 64, 32, 4), 3)
    io.write_box(box, (-32, 0, 32))
    expected = data.copy()
    expected[32:, 32:, 32:] = block
    expected[:32, :, 32:] = box
    np.testing.assert_array_equal(_stored(dvid_node, "rgb", ((-32, 0, 0), (32, 64, 64))), expected)
    with pytest.raises(DvidInputError, match=r"shape \(z, y, x, 4\).*got \(32, 32, 32\)"):
        io.write_box(block[..., 0], (0, 0, 0))
    with pytest.raises(DvidInputError, match=r"must have shape \(32, 32, 32, 4\)"):
        io.write({(0, 0, 0): block[..., :3]})
    np.testing.assert_array_equal(_stored(dvid_node, "rgb", ((-32, 0, 0), (32, 64, 64))), expected)


# ------------------------------------------------------------------ dask
def test_open_dask_reads_rgba_with_the_channels_in_every_chunk(dvid_server, dvid_node: Node) -> None:
    data = _filled(dvid_node, "rgb", ((-32, 0, 0), (64, 96, 128)), 4)
    array = open_dask(_url(dvid_server, dvid_node, "rgb"), chunks=(64, 64, 64))
    assert isinstance(array, DvidArray) and array.dtype == np.uint8
    assert array.shape == (96, 96, 128, 4) and array.chunks[3] == (4,)
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(array.compute(), data)
    with dask.config.set(scheduler="sync"):
        np.testing.assert_array_equal(np.asarray(array[3:70, 5:6, 17:120]), data[3:70, 5:6, 17:120])
    region = array[40:50, 10:20, 30:40]
    assert isinstance(region, DvidArray) and region.npartitions == 1  # a graph of its own box
    np.testing.assert_array_equal(region.compute(), data[40:50, 10:20, 30:40])
    green = array[..., 1]
    assert green.shape == (96, 96, 128)
    np.testing.assert_array_equal(green.compute(), data[..., 1])
    np.testing.assert_array_equal(array[5, 3:90:7, ::5, 1:3].compute(), data[5, 3:90:7, ::5, 1:3])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(array[:40, :40, :40])).compute(), data[:40, :40, :40])
    assert open_dask(dvid_node, "rgb", chunks=(32, 64, 64, 4)).chunks[3] == (4,)
    assert open_dask(dvid_node, "rgb", chunks={0: 32, 3: -1}).chunks[:1] == ((32, 32, 32),)
    with pytest.raises(DvidInputError, match="split the channel axis"):
        open_dask(dvid_node, "rgb", chunks=(32, 64, 64, 2))


def test_to_dvid_writes_unaligned_boxes_leaving_every_voxel_outside_unchanged(dvid_node: Node) -> None:
    whole = ((-32, 0, 0), (64, 96, 128))
    data = _filled(dvid_node, "rgb", whole, 5)
    inside = _random((37, 50, 61, 4), 6)
    start = (-27, 9, 40)  # no face on the block grid
    # chunks that split blocks and the channel axis: rechunked, edge blocks merged
    to_dvid(da.from_array(inside, chunks=(9, 17, 20, 3)), dvid_node, "rgb", offset=start)
    expected = data.copy()
    local = tuple(slice(s - o, s - o + n) for s, o, n in zip(start, whole[0], inside.shape))
    expected[local] = inside
    np.testing.assert_array_equal(_stored(dvid_node, "rgb", whole), expected)
    # a numpy array at index 0 of the level, as open_dask presents it
    small = _random((5, 6, 7, 4), 7)
    to_dvid(small, dvid_node, "rgb")
    expected[:5, :6, :7] = small
    np.testing.assert_array_equal(open_dask(dvid_node, "rgb").compute(), expected)


def test_to_dvid_refuses_arrays_without_the_levels_channels(dvid_node: Node) -> None:
    data = _filled(dvid_node, "rgb", ((0, 0, 0), (32, 32, 32)), 8)
    create_array(dvid_node, "gray", (32, 32, 32), "uint8")
    with pytest.raises(DvidInputError, match=r"4-d \(z, y, x, 4: channels R, G, B, A last\).*give all 4 channels"):
        to_dvid(np.zeros((8, 8, 8), np.uint8), dvid_node, "rgb")
    with pytest.raises(DvidInputError, match=r"3-d \(z, y, x\).*rgba8 data needs an rgba8blk instance"):
        to_dvid(np.zeros((8, 8, 8, 4), np.uint8), dvid_node, "gray")
    with pytest.raises(DvidInputError, match="without losing values"):
        to_dvid(np.zeros((8, 8, 8, 4), np.float32), dvid_node, "rgb")
    np.testing.assert_array_equal(_stored(dvid_node, "rgb", ((0, 0, 0), (32, 32, 32))), data)  # nothing written
    assert not dvid_node.voxels("gray").read(((0, 0, 0), (32, 32, 32))).any()


# ------------------------------------------------------------------ zarr store
def test_zarr_group_has_a_trailing_channel_axis_in_its_metadata(dvid_node: Node) -> None:
    create_array(dvid_node, "rgb", ((-32, 0, 0), (64, 96, 128)), "rgba8", voxel_size=(40, 8, 4))
    group = zarr.open_group(DvidStore(dvid_node, "rgb"), mode="r")
    array = group["0"]
    assert array.shape == (96, 96, 128, 4) and array.chunks == (128, 128, 128, 4)  # 4³ blocks: 8 MiB
    assert array.metadata.dimension_names == ("z", "y", "x", "c")
    assert array.attrs["dvid"]["axes"] == ["z", "y", "x", "c"] and array.attrs["dvid"]["type"] == "rgba8blk"
    multiscale = group.attrs["ome"]["multiscales"][0]
    assert multiscale["axes"][3] == {"name": "c", "type": "channel"}
    assert [axis["type"] for axis in multiscale["axes"][:3]] == ["space"] * 3
    transforms = {t["type"]: t[t["type"]] for t in multiscale["datasets"][0]["coordinateTransformations"]}
    assert transforms == {"scale": [40.0, 8.0, 4.0, 1.0], "translation": [-1280.0, 0.0, 0.0, 0.0]}


@pytest.mark.parametrize("chunk_blocks", [1, (2, 1, 3), None])
def test_zarr_round_trip_and_unaligned_writes_keep_every_voxel_outside(dvid_node: Node, chunk_blocks) -> None:
    whole = ((-32, 0, 0), (64, 96, 128))
    data = _filled(dvid_node, "rgb", whole, 9)
    array = zarr.open_array(DvidStore(dvid_node, "rgb", scale=0, chunk_blocks=chunk_blocks), mode="r+")
    np.testing.assert_array_equal(array[...], data)
    np.testing.assert_array_equal(array[3:70, 33:34, 17:120, 2], data[3:70, 33:34, 17:120, 2])
    expected = data.copy()
    patch = _random((45, 50, 70, 4), 10)
    array[5:50, 7:57, 11:81] = patch
    expected[5:50, 7:57, 11:81] = patch
    array[60:61, 90:96, 100:101, 1] = 200  # one channel of a few voxels: the others keep their values
    expected[60:61, 90:96, 100:101, 1] = 200
    np.testing.assert_array_equal(_stored(dvid_node, "rgb", whole), expected)
    np.testing.assert_array_equal(array[...], expected)


def test_zarr_chunk_keys_and_listing_name_the_channel_chunk(dvid_node: Node) -> None:
    import asyncio

    create_array(dvid_node, "rgb", (64, 32, 32), "rgba8")
    dvid_node.voxels("rgb").write(_random((32, 32, 32, 4), 11), (32, 0, 0))
    store = DvidStore(dvid_node, "rgb", chunk_blocks=1)
    assert store.is_chunk("0/c/1/0/0/0") and not store.is_chunk("0/c/1/0/0") and not store.is_chunk("0/c/1/0/0/1")
    assert store.key_size("0/c/1/0/0/0") == 32**3 * 4

    async def listed() -> tuple[list[str], list[str], list[str]]:
        keys = [k async for k in store.list_prefix("0/c/")]
        below_x = [k async for k in store.list_dir("0/c/1/0/0/")]
        below_c = [k async for k in store.list_dir("0/c/1/0/0/0/")]
        return keys, below_x, below_c

    assert asyncio.run(listed()) == (["0/c/1/0/0/0"], ["0"], [])


def test_zarr_rewrites_only_the_blocks_that_changed(dvid_node: Node, written_blocks) -> None:
    whole = ((0, 0, 0), (128, 128, 128))
    data = _filled(dvid_node, "rgb", whole, 12)
    array = zarr.open_array(DvidStore(dvid_node, "rgb", scale=0, chunk_blocks=4), mode="r+")
    written_blocks.clear()
    array[40:41, 70:72, 100, 3] = 9  # alpha of voxels inside block (1, 2, 3) only
    assert written_blocks == [(1, 2, 3)]
    written_blocks.clear()
    array[0:64, 0:32, 0:32] = 0  # zeros in two blocks of a chunk that keeps other data
    assert sorted(written_blocks) == [(0, 0, 0), (1, 0, 0)]
    expected = data.copy()
    expected[40:41, 70:72, 100, 3] = 9
    expected[0:64, 0:32, 0:32] = 0
    np.testing.assert_array_equal(_stored(dvid_node, "rgb", whole), expected)


def test_another_writers_block_between_zarrs_read_and_write_survives(
    dvid_node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = ((0, 0, 0), (128, 128, 128))
    data = _filled(dvid_node, "rgb", whole, 13)
    io = BlockIO.open(dvid_node, "rgb")
    theirs = np.full((32, 32, 32, 4), 77, np.uint8)
    keep = _ServedChunks.keep

    def keep_then_other_writer(self: _ServedChunks, key: str, chunk) -> None:
        keep(self, key, chunk)
        io.write({(3, 3, 3): theirs})  # lands after zarr read the chunk, before it writes it back

    monkeypatch.setattr(_ServedChunks, "keep", keep_then_other_writer)
    array = zarr.open_array(DvidStore(dvid_node, "rgb", scale=0, chunk_blocks=4), mode="r+")
    array[0:10, 0:10, 0:10] = 5
    expected = data.copy()
    expected[96:, 96:, 96:] = 77
    expected[0:10, 0:10, 0:10] = 5
    np.testing.assert_array_equal(_stored(dvid_node, "rgb", whole), expected)


def test_zarr_edge_chunks_never_write_beyond_the_extents(dvid_node: Node, written_blocks) -> None:
    array = create_array(dvid_node, "rgb", (96, 64, 160), "rgba8")
    assert array.chunks == (128, 128, 128, 4)  # one chunk reaches past the extents on every axis
    data = _random((96, 64, 160, 4), 14)
    array[...] = data
    assert sorted(written_blocks) == sorted(np.ndindex(3, 2, 5))
    np.testing.assert_array_equal(_stored(dvid_node, "rgb", ((0, 0, 0), (96, 64, 160))), data)


# ------------------------------------------------------------------ xarray
def test_xarray_engine_has_a_channel_dimension_named_by_colour(dvid_server, dvid_node: Node) -> None:
    data = _filled(dvid_node, "rgb", ((-32, 0, 0), (64, 64, 96)), 15)
    url = _url(dvid_server, dvid_node, "rgb")
    variable = xr.open_dataset(url)["rgb"]
    assert variable.dims == ("z", "y", "x", "c") and list(variable.c.values) == ["r", "g", "b", "a"]
    np.testing.assert_array_equal(variable.values, data)
    np.testing.assert_array_equal(variable.sel(c="g").values, data[..., 1])
    np.testing.assert_array_equal(variable.isel(z=slice(3, 9), c=[0, 3]).values, data[3:9][..., [0, 3]])
    assert float(variable.z[0]) == -32 * 8.0
    chunked = open_dataarray(url, chunks={})
    assert isinstance(chunked.data, DvidArray) and chunked.chunks[3] == (4,)
    selection = chunked.sel(c="b").isel(x=slice(5, 70), y=7)
    assert selection.dims == ("z", "x")
    np.testing.assert_array_equal(selection.values, data[:, 7, 5:70, 2])
    assert xr.open_dataset(url, chunks={})["rgb"].chunks[3] == (4,)


# ------------------------------------------------------------------ CLI
def test_cli_exports_imports_and_copies_rgba(
    dvid_server, dvid_node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DVID_STORE_JOURNAL_DIR", str(tmp_path / "journals"))
    data = _filled(dvid_node, "rgb", ((-32, 0, 0), (64, 96, 128)), 16)
    url = lambda name: _url(dvid_server, dvid_node, name)  # noqa: E731
    box = ((-20, 8, 40), (50, 90, 120))
    part = data[12:82, 8:90, 40:120]

    out = tmp_path / "rgb.zarr"
    assert main(["export", url("rgb"), "--box=-20,8,40:50,90,120", str(out), "-q"]) == 0
    group = zarr.open_group(str(out), mode="r")
    exported = group["0"]
    assert exported.metadata.dimension_names == ("z", "y", "x", "c") and exported.chunks[3] == 4
    np.testing.assert_array_equal(exported[...], part)
    assert group.attrs["ome"]["multiscales"][0]["axes"][3] == {"name": "c", "type": "channel"}

    assert main(["import", str(out), url("back"), "--create", "-q"]) == 0  # lands at its dvid offset
    assert dvid_node.instances()["back"] == "rgba8blk"
    np.testing.assert_array_equal(_stored(dvid_node, "back", box), part)

    assert main(["copy", url("rgb"), url("copy"), "--create", "--offset=1,2,3", "-q"]) == 0
    assert dvid_node.instances()["copy"] == "rgba8blk"
    np.testing.assert_array_equal(_stored(dvid_node, "copy", ((1, 2, 3), (97, 98, 131))), data)

    # an unaligned .npy into the existing instance: every voxel around it unchanged
    np.save(tmp_path / "rgba.npy", data[:40, :50, :60])
    assert main(["import", str(tmp_path / "rgba.npy"), url("rgb"), "--offset=-31,1,2", "-q"]) == 0
    expected = data.copy()
    expected[1:41, 1:51, 2:62] = data[:40, :50, :60]
    np.testing.assert_array_equal(_stored(dvid_node, "rgb", ((-32, 0, 0), (64, 96, 128))), expected)

    capsys.readouterr()
    create_array(dvid_node, "gray", (64, 64, 64), "uint8")
    assert main(["import", str(tmp_path / "rgba.npy"), url("gray"), "-q"]) == 1
    assert "has 4 channels per voxel" in capsys.readouterr().err
    np.save(tmp_path / "one.npy", data[:8, :8, :8, 0])
    assert main(["import", str(tmp_path / "one.npy"), url("rgb"), "-q"]) == 1
    assert "give a (z, y, x, 4) array" in capsys.readouterr().err
    np.save(tmp_path / "wide.npy", data[:8, :8, :8].astype(np.uint16))
    assert main(["import", str(tmp_path / "wide.npy"), url("wide"), "--create", "-q"]) == 1
    assert "no voxel type for dtype uint16 × 4 channels" in capsys.readouterr().err
    assert "wide" not in dvid_node.instances()


def test_cli_imports_an_rgba_tiff_stack(dvid_server, dvid_node: Node, tmp_path: Path, monkeypatch) -> None:
    import tifffile

    monkeypatch.setenv("DVID_STORE_JOURNAL_DIR", str(tmp_path / "journals"))
    stack = _random((5, 40, 30, 4), 17)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="rgb", extrasamples=["unassalpha"])
    tifffile.imwrite(tmp_path / "one.tif", stack[0], photometric="rgb", extrasamples=["unassalpha"])
    assert main(["import", str(tmp_path / "stack.tif"), _url(dvid_server, dvid_node, "stack"), "--create", "-q"]) == 0
    np.testing.assert_array_equal(_stored(dvid_node, "stack", ((0, 0, 0), (5, 40, 30))), stack)
    assert main(["import", str(tmp_path / "one.tif"), _url(dvid_server, dvid_node, "one"), "--create", "-q"]) == 0
    np.testing.assert_array_equal(_stored(dvid_node, "one", ((0, 0, 0), (1, 40, 30))), stack[:1])
    assert dvid_node.instances()["one"] == "rgba8blk"
