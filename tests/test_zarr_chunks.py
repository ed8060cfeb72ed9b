"""DvidStore chunks of many DVID blocks: one request per chunk read, and writes of changed blocks only."""

from __future__ import annotations

import threading

import fsspec
import numpy as np
import pytest
import zarr
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.registry import register_pipeline

from dvid_store import DvidClient, Node, UnsupportedError
from dvid_store.blocks import BlockIO
from dvid_store.create import create_array
from dvid_store.testing import FaultProxy
from dvid_store.zarr import DvidStore
from dvid_store.zarr.metadata import default_chunk_blocks
from dvid_store.zarr.store import _ServedChunks


class RenamedPipeline(BatchedCodecPipeline):
    """zarr's own pipeline under another name: the store cannot vouch for its reads."""


register_pipeline(RenamedPipeline)


def _filled(node: Node, name: str, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    create_array(node, name, shape, "uint8", block_size=32)
    data = np.random.default_rng(seed).integers(1, 256, shape, dtype=np.uint8)
    BlockIO.open(node, name).write_box(data, (0, 0, 0))
    return data


def test_default_chunks_are_cubes_of_blocks_of_a_few_mib(dvid_node: Node) -> None:
    assert default_chunk_blocks((32, 32, 32), 1) == (6, 6, 6)
    assert default_chunk_blocks((64, 64, 64), 8) == (2, 2, 2)
    assert default_chunk_blocks((64, 64, 64), 8, labels=True) == (3, 3, 3)
    assert default_chunk_blocks((256, 256, 256), 8) == (1, 1, 1)
    _filled(dvid_node, "gray", (96, 96, 160), 1)
    array = zarr.open_array(DvidStore(dvid_node, "gray", scale=0), mode="r")
    assert array.chunks == (192, 192, 192) and array.attrs["dvid"]["chunk_blocks"] == [6, 6, 6]
    narrow = zarr.open_array(DvidStore(dvid_node, "gray", scale=0, chunk_blocks=(1, 2, 3)), mode="r")
    assert narrow.chunks == (32, 64, 96)
    with pytest.raises(Exception, match="chunk_blocks must be a positive int"):
        DvidStore(dvid_node, "gray", chunk_blocks=0)


@pytest.mark.parametrize("chunk_blocks", [(2, 2, 2), (1, 3, 2), (6, 6, 6)])
def test_reads_equal_the_server_in_any_chunking(dvid_node: Node, chunk_blocks) -> None:
    data = _filled(dvid_node, "gray", (96, 96, 160), 2)
    array = zarr.open_array(DvidStore(dvid_node, "gray", scale=0, chunk_blocks=chunk_blocks), mode="r")
    np.testing.assert_array_equal(array[:], data)
    np.testing.assert_array_equal(array[5:70, 33:34, 17:150], data[5:70, 33:34, 17:150])


def test_chunk_read_is_one_request(dvid_node: Node) -> None:
    data = _filled(dvid_node, "gray", (128, 128, 128), 3)
    array = zarr.open_array(DvidStore(dvid_node, "gray", scale=0, chunk_blocks=4), mode="r")
    transport = dvid_node.transport
    before = transport.requests_sent
    np.testing.assert_array_equal(array[:], data)  # one chunk of 64 blocks
    assert transport.requests_sent - before == 1


@pytest.mark.parametrize(("instance", "compression", "endpoint"), [
    ("gray", None, "raw"),  # DVID assembles a whole uint8 chunk: the client only copies
    ("gray", "stored", "specificblocks"),  # an encoding asked for is obeyed
    ("labels", None, "specificblocks"),  # label blocks travel in DVID's compact encoding
])
def test_whole_chunk_reads_ask_for_the_cheaper_encoding(
    dvid_node: Node, dvid_fault_proxy: FaultProxy, instance: str, compression: str | None, endpoint: str
) -> None:
    # chunks of 2.6 MB: each above half the bytes that small chunks share a request up to
    data = _filled(dvid_node, "gray", (128, 128, 320), 4)
    create_array(dvid_node, "labels", (128, 128, 320), "uint64", block_size=32)
    BlockIO.open(dvid_node, "labels").write_box(data.astype(np.uint64) << 33, (0, 0, 0))
    expected = data if instance == "gray" else data.astype(np.uint64) << 33
    node = DvidClient(dvid_fault_proxy.url).node(dvid_node.uuid)
    store = DvidStore(node, instance, scale=0, compression=compression, chunk_blocks=(4, 4, 5))
    dvid_fault_proxy.clear(log=True)
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[:], expected)
    reads = [r.path.split("?")[0].rsplit("/", 4) for r in dvid_fault_proxy.log if r.method == "GET"]
    assert len(reads) == 2  # one request per chunk
    assert {endpoint} == {parts[1] if endpoint == "raw" else parts[-1] for parts in reads}


def test_a_chunk_written_whole_is_one_post_raw(dvid_node: Node, dvid_fault_proxy: FaultProxy) -> None:
    create_array(dvid_node, "gray", (64, 64, 96), "uint8", block_size=32)
    node = DvidClient(dvid_fault_proxy.url).node(dvid_node.uuid)
    array = zarr.open_array(DvidStore(node, "gray", scale=0, chunk_blocks=2), mode="r+")
    data = np.random.default_rng(8).integers(1, 256, (64, 64, 96), dtype=np.uint8)
    dvid_fault_proxy.clear(log=True)
    array[...] = data  # one whole chunk, and an edge chunk of 4 blocks inside the grid
    posts = sorted(r.path.split("?")[0].split("/gray/")[1] for r in dvid_fault_proxy.log if r.method == "POST")
    assert posts == ["raw/0_1_2/32_64_64/64_0_0", "raw/0_1_2/64_64_64/0_0_0"]
    np.testing.assert_array_equal(BlockIO.open(dvid_node, "gray").read_box(((0, 0, 0), (64, 64, 96))), data)


def test_partial_write_sends_only_the_blocks_it_changed(dvid_node: Node, written_blocks) -> None:
    data = _filled(dvid_node, "gray", (128, 128, 128), 4)
    array = zarr.open_array(DvidStore(dvid_node, "gray", scale=0, chunk_blocks=4), mode="r+")
    written_blocks.clear()
    array[40:41, 70:72, 100] = 9  # inside block (1, 2, 3) only
    assert written_blocks == [(1, 2, 3)]
    expected = data.copy()
    expected[40:41, 70:72, 100] = 9
    np.testing.assert_array_equal(BlockIO.open(dvid_node, "gray").read_box(((0, 0, 0), (128, 128, 128))), expected)
    written_blocks.clear()
    array[0:64, 0:32, 0:32] = 0  # zarr keeps the chunk (not all zero): two blocks of zeros
    assert sorted(written_blocks) == [(0, 0, 0), (1, 0, 0)]


def test_another_writers_change_between_zarrs_read_and_write_survives(
    dvid_node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _filled(dvid_node, "gray", (128, 128, 128), 5)
    io = BlockIO.open(dvid_node, "gray")
    theirs = np.full((32, 32, 32), 77, np.uint8)
    keep = _ServedChunks.keep

    def keep_then_other_writer(self: _ServedChunks, key: str, chunk) -> None:
        keep(self, key, chunk)
        io.write({(3, 3, 3): theirs})  # lands after zarr read the chunk, before it writes it back

    monkeypatch.setattr(_ServedChunks, "keep", keep_then_other_writer)
    array = zarr.open_array(DvidStore(dvid_node, "gray", scale=0, chunk_blocks=4), mode="r+")
    array[0:10, 0:10, 0:10] = 5
    expected = data.copy()
    expected[96:, 96:, 96:] = 77
    expected[0:10, 0:10, 0:10] = 5
    np.testing.assert_array_equal(io.read_box(((0, 0, 0), (128, 128, 128))), expected)


def test_edge_chunks_never_write_beyond_the_extents(dvid_node: Node, written_blocks) -> None:
    create_array(dvid_node, "gray", (96, 64, 160), "uint8", block_size=32)
    array = zarr.open_array(DvidStore(dvid_node, "gray", scale=0, chunk_blocks=(2, 3, 4)), mode="r+")
    data = np.random.default_rng(6).integers(1, 256, (96, 64, 160), dtype=np.uint8)
    array[...] = data
    grid = (3, 2, 5)
    assert sorted(written_blocks) == sorted(np.ndindex(*grid))
    io = BlockIO.open(dvid_node, "gray")
    assert set(io.stored_coords(((0, 0, 0), (256, 256, 256)))) == set(np.ndindex(*grid))
    np.testing.assert_array_equal(array[:], data)


def test_zero_writes_store_zero_blocks_only_where_data_was(dvid_node: Node, written_blocks) -> None:
    create_array(dvid_node, "gray", (64, 64, 64), "uint8", block_size=32)
    io = BlockIO.open(dvid_node, "gray")
    io.write({(0, 0, 1): np.full((32, 32, 32), 3, np.uint8)})
    array = zarr.open_array(DvidStore(dvid_node, "gray", scale=0, chunk_blocks=2), mode="r+")
    written_blocks.clear()
    array[0:64, 0:64, 32:64] = 0  # part of the chunk, which becomes all zero: zarr deletes it
    assert written_blocks == [(0, 0, 1)]
    assert not io.read_box(((0, 0, 0), (64, 64, 64))).any()


def test_writes_under_another_codec_pipeline_are_refused(dvid_node: Node, written_blocks) -> None:
    data = _filled(dvid_node, "gray", (64, 64, 64), 7)
    written_blocks.clear()
    path = f"{RenamedPipeline.__module__}.RenamedPipeline"
    with zarr.config.set({"codec_pipeline.path": path}):
        array = zarr.open_array(DvidStore(dvid_node, "gray", scale=0, chunk_blocks=2), mode="r+")
        with pytest.raises(UnsupportedError, match="codec pipeline"):
            array[...] = 1
        assert written_blocks == []
        per_block = zarr.open_array(DvidStore(dvid_node, "gray", scale=0, chunk_blocks=1), mode="r+")
        per_block[0:32, 0:32, 0:32] = 1  # a chunk is one block: nothing to tell apart
    expected = data.copy()
    expected[0:32, 0:32, 0:32] = 1
    np.testing.assert_array_equal(BlockIO.open(dvid_node, "gray").read_box(((0, 0, 0), (64, 64, 64))), expected)


def test_fsspec_chunk_blocks_option(dvid_server, dvid_node: Node) -> None:
    data = _filled(dvid_node, "gray", (64, 64, 96), 8)
    url = f"dvid://{dvid_server.url.split('://', 1)[1]}/{dvid_node.uuid}/gray/0"
    assert zarr.open_array(url, mode="r").chunks == (192, 192, 192)
    narrow = zarr.open_array(url, mode="r", storage_options={"chunk_blocks": [1, 1, 3]})
    assert narrow.chunks == (32, 32, 96)
    np.testing.assert_array_equal(narrow[:], data)
    fs = fsspec.filesystem("dvid", chunk_blocks=2)
    assert fs.info(url.removeprefix("dvid://") + "/c/0/0/1")["size"] == 64**3


def test_fsspec_chunks_come_as_memoryviews_documents_as_bytes(dvid_server, dvid_node: Node) -> None:
    data = _filled(dvid_node, "gray", (32, 32, 64), 9)
    base = f"{dvid_server.url.split('://', 1)[1]}/{dvid_node.uuid}/gray/0"
    fs = fsspec.filesystem("dvid", chunk_blocks=(1, 1, 2))
    chunk = fs.cat(base + "/c/0/0/0")
    assert isinstance(chunk, memoryview) and bytes(chunk) == data.tobytes()
    assert isinstance(fs.cat(base + "/zarr.json"), bytes)


@pytest.mark.parametrize("opener", ["DvidStore(node)", "zarr.open(url)", "to_dvid(url)"])
def test_questions_before_a_transfer_are_asked_at_once(
    dvid_server, dvid_node: Node, monkeypatch: pytest.MonkeyPatch, opener: str
) -> None:
    # The instance's /info, the node's lock state and the repo's instance list (for a
    # grayscale pyramid's levels) all come before the first byte of a transfer; on a far
    # server each costs a round trip unless they overlap. The first one sent is held
    # until another is sent too: asked one after the other, none comes while it is held.
    from dvid_store.dask import to_dvid
    from dvid_store.transport import Transport

    create_array(dvid_node, "gray", (64, 64, 64), "uint8", block_size=32)
    questions = (f"/{dvid_node.uuid}/gray/info", f"/{dvid_node.uuid}/commit", f"/repo/{dvid_node.uuid}/info")
    another_sent = threading.Event()
    first: list[str] = []
    overlapped: list[bool] = []
    get_json = Transport.get_json

    def holding_first(self: Transport, path: str, **kwargs):
        if path.endswith(questions):
            if not first:
                first.append(path)
                overlapped.append(another_sent.wait(10))
            else:
                another_sent.set()
        return get_json(self, path, **kwargs)

    node = DvidClient(dvid_node.client.url).node(dvid_node.uuid)  # asks for the lock state now
    monkeypatch.setattr(Transport, "get_json", holding_first)
    url = f"dvid://{dvid_server.url.split('://')[1]}/{dvid_node.uuid}/gray"
    if opener == "DvidStore(node)":
        DvidStore(node, "gray", scale=0)
    elif opener == "zarr.open(url)":
        zarr.open_array(url + "/0", mode="r")
    else:
        to_dvid(np.ones((32, 32, 32), np.uint8), url)
    assert overlapped == [True]
