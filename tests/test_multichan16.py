"""multichan16 (load through DVID's RPC, 2-D reads, the refusals) and the googlevoxels placeholder — real server."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import requests

from dvid_store import BadRequestError, DvidInputError, LockedNodeError, Node, UnsupportedError
from dvid_store.datatypes.googlevoxels import GoogleVoxels, refuse_googlevoxels
from dvid_store.datatypes.multichan16 import Multichan16, MultichanLoadError, v3draw_bytes
from dvid_store.testing import DvidServer, find_dvid_binary, wait_until


@pytest.fixture
def mc(dvid_node: Node) -> Multichan16:
    return Multichan16.create(dvid_node, "mc")


def volume(shape=(32, 64, 32)) -> np.ndarray:
    return (np.arange(np.prod(shape), dtype=np.int64).reshape(shape) * 7 % 251).astype(np.uint8)


def test_v3draw_layout() -> None:
    data = np.arange(2 * 2 * 3 * 4, dtype=np.uint16).reshape(2, 2, 3, 4)
    raw = v3draw_bytes(data)
    assert raw[:24] == b"raw_image_stack_by_hpeng" and raw[24:25] == b"L"
    assert struct.unpack("<H4I", raw[25:43]) == (2, 4, 3, 2, 2)  # voxel bytes; x, y, z, channels
    assert np.array_equal(np.frombuffer(raw[43:], "<u2").reshape(data.shape), data)
    assert len(v3draw_bytes(np.zeros((1, 2, 3), np.uint8))) == 43 + 6
    with pytest.raises(DvidInputError, match="uint8 or uint16"):
        v3draw_bytes(np.zeros((2, 2, 2), np.float32))


def test_load_then_read_slices_and_volumes(dvid_node: Node, mc: Multichan16) -> None:
    assert mc.channels == 0 and mc.block_shape == (32, 32, 32)
    with pytest.raises(DvidInputError, match="holds no data yet"):
        mc.read(((0, 0, 0), (1, 1, 1)))
    data = volume()
    mc.load(data, dvid_binary=find_dvid_binary())
    assert mc.channels == 1 and mc.channel_dtypes == [np.dtype(np.uint8)]
    assert dvid_node.multichan16("mc") == mc
    assert np.array_equal(mc.read(((0, 0, 0), data.shape)), data)
    # an unaligned box reaching outside what was loaded: zeros there
    got = mc.read(((-3, 5, 20), (7, 70, 40)), workers=3)
    expected = np.zeros((10, 65, 20), np.uint8)
    expected[3:, :59, :12] = data[0:7, 5:64, 20:32]
    assert np.array_equal(got, expected)
    assert np.array_equal(mc.slice("xy", (9, 2, 1), (5, 6)), data[9, 2:7, 1:7])
    assert np.array_equal(mc.slice("xz", (4, 11, 3), (8, 9)), data[4:12, 11, 3:12])
    assert np.array_equal(mc.slice("yz", (1, 2, 30), (6, 10)), data[1:7, 2:12, 30])
    with pytest.raises(DvidInputError, match="plane"):
        mc.slice("zx", (0, 0, 0), (2, 2))
    with pytest.raises(DvidInputError, match="rows, columns"):
        mc.slice("xy", (0, 0, 0), (2, 2, 2))


def test_what_dvid_cannot_do_is_refused_before_sending(dvid_node: Node, mc: Multichan16) -> None:
    assert mc.block_shape == (32, 32, 32)  # /info is cached from here on
    sent = mc.transport.requests_sent
    with pytest.raises(UnsupportedError, match="crashes the whole server"):
        mc.load(np.zeros((32, 32, 32), np.uint16))
    with pytest.raises(UnsupportedError, match="2 channels"):
        mc.load(np.zeros((2, 32, 32, 32), np.uint8))
    with pytest.raises(UnsupportedError, match="one uint8 channel"):
        mc.load(np.zeros((32, 32, 32), np.float32))
    with pytest.raises(DvidInputError, match="whole blocks"):
        mc.load(np.zeros((32, 32, 31), np.uint8))
    assert mc.transport.requests_sent == sent
    # DVID's own refusals: no HTTP write, no 3-D read, no channel suffix names
    for method, suffix in (("POST", "0_1_2/32_32_32/0_0_0"), ("GET", "0_1_2/32_32_32/0_0_0")):
        with pytest.raises(BadRequestError, match="does not yet support"):
            mc.transport.request(method, mc.path(*suffix.split("/")), data=b"")
    with pytest.raises(BadRequestError):
        mc.transport.request("GET", dvid_node.path("mc1", "xy", "8_8", "0_0_0"))


def test_a_load_the_dvid_command_gave_up_on_is_never_done(dvid_node: Node, mc: Multichan16, tmp_path: Path) -> None:
    """DVID's command stops waiting after 20 s while the server goes on storing, extent set first."""
    mc.load(volume(), dvid_binary=find_dvid_binary())  # the instance now shows the channel and extent
    gave_up = tmp_path / "dvid"
    gave_up.write_text(
        "#!/bin/sh\necho 'RPC error for \"node load local\": gorpc.Client: [127.0.0.1:1]. Cannot obtain response "
        "during timeout=20s' >&2\nexit 1\n"
    )
    gave_up.chmod(0o755)
    with pytest.raises(MultichanLoadError, match="may still be storing it"):
        mc.load(volume(), dvid_binary=gave_up)
    assert np.array_equal(mc.read(((0, 0, 0), (32, 64, 32))), volume())


def test_load_on_a_committed_node_is_refused(dvid_node: Node, mc: Multichan16) -> None:
    dvid_node.commit("frozen")
    with pytest.raises(LockedNodeError):
        mc.load(volume(), dvid_binary=find_dvid_binary())


def _raw_loaded(server: DvidServer, uuid: str, name: str, data: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "data.v3draw"
    path.write_bytes(v3draw_bytes(data))
    subprocess.run([str(server.binary), f"-rpc={server.rpc_address}", "node", uuid, name, "load", "local",
                    str(path)], capture_output=True, timeout=120, check=False)


def test_the_refused_reads_do_crash_dvid(tmp_path: Path) -> None:
    """Why uint16 data is refused: on a throwaway server, reading it back kills DVID."""
    with DvidServer() as server:
        node = server.client().create_repo("crash")
        mc = Multichan16.create(node, "mc")
        _raw_loaded(server, node.uuid, "mc", np.ones((32, 32, 32), np.uint16), tmp_path)
        # The RPC client gives up after 20 s, before a loaded server may have stored the
        # channel; DVID builds the composite (and panics there) only once it has.
        wait_until(lambda: "storeComposite" in server.log_tail(400), "DVID to store the uint16 channel")
        mc.refresh()
        assert mc.channel_dtypes == [np.dtype(np.uint16)]
        with pytest.raises(UnsupportedError, match="crashes the whole server"):
            mc.read(((0, 0, 0), (1, 32, 32)))
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{server.url}{mc.path('xy', '32_32', '0_0_0', 'png')}", timeout=30)
        process = server._process  # the server exits on its own: wait for it, no timing involved
        assert process is not None and process.wait(timeout=60) != 0
        assert "panic" in server.log_tail(200).lower()


# ----------------------------------------------------------------- googlevoxels
def test_googlevoxels_placeholder_says_why(dvid_node: Node) -> None:
    sent = dvid_node.transport.requests_sent
    gv = GoogleVoxels(dvid_node, "gv")
    assert "unsupported" in repr(gv)
    for call in (lambda: gv.info, lambda: gv.read(((0, 0, 0), (1, 1, 1))), lambda: gv.tile("xy", 0, (0, 0, 0)),
                 lambda: gv.write(np.zeros(1)), lambda: GoogleVoxels.create(dvid_node, "gv")):
        with pytest.raises(UnsupportedError, match="Google credentials and the outside network"):
            call()
    assert dvid_node.transport.requests_sent == sent
    with pytest.raises(UnsupportedError, match="instance 'gv' is a googlevoxels"):
        refuse_googlevoxels("googlevoxels", "gv")
    refuse_googlevoxels("uint8blk", "grayscale")  # other types pass


def test_dvid_itself_cannot_create_googlevoxels_without_google(dvid_node: Node) -> None:
    with pytest.raises(BadRequestError, match="volumeid"):
        dvid_node.create_instance("googlevoxels", "gv")


def test_every_accessor_says_why_a_googlevoxels_instance_cannot_be_read(
    dvid_node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No DVID without Google settings can hold one (above), so the instance's /info is
    # stood in for at the one place the accessors read it.
    info = {"Base": {"TypeName": "googlevoxels", "Name": "gv", "Versioned": False}}
    monkeypatch.setattr(Node, "typeinfo", lambda self, name: info)
    for accessor in (dvid_node.voxels, dvid_node.tiles, dvid_node.labelmap, dvid_node.keyvalue):
        with pytest.raises(UnsupportedError, match="instance 'gv' is a googlevoxels"):
            accessor("gv")
    with pytest.raises(UnsupportedError, match="Google credentials"):
        dvid_node.googlevoxels("gv").read(((0, 0, 0), (1, 1, 1)))
