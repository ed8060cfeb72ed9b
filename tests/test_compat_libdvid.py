"""dvid_store.compat.libdvid against the real server: every DVIDNodeService method, with libdvid's results.

Each method of libdvid's Python documentation (the ``DVIDNodeService`` seed) is called
as libdvid users call it, positional arguments in libdvid's order, and its result is
checked exactly, also through dvid_store's own node API where it wrote something. The
labelgraph methods raise libdvid's ``DVIDException`` (status 400) with the explanation.
The other methods of libdvid's bindings, ``DVIDServerService`` and ``DVIDConnection``
follow.
"""

from __future__ import annotations

import inspect
import json
import pickle
from collections.abc import Callable

import lz4.block
import numpy as np
import pytest

from dvid_store import DvidInputError, MalformedAnswerError, Node, RetryPolicy, UnsupportedError
from dvid_store.codecs import encode_gzipped_label_block
from dvid_store.compat.libdvid import (
    BlockZYX,
    ConnectionMethod,
    DVIDConnection,
    DVIDException,
    DVIDNodeService,
    DVIDServerService,
    Edge,
    ErrMsg,
    PointZYX,
    Slice2D,
    SubstackZYX,
    Vertex,
    decode_label_block,
    encode_label_block,
)
from dvid_store.datatypes.tiles import TileLevel, TileMetadata
from dvid_store.testing import DvidServer, wait_until

#: The methods of libdvid's DVIDNodeService documentation (the seed), in its order.
SEED_METHODS = [
    "create_keyvalue", "put", "get", "get_json", "get_keys",
    "create_grayscale8", "get_gray3D", "put_gray3D",
    "create_labelblk", "get_labels3D", "get_label_by_location", "put_labels3D", "body_exists",
    "create_roi", "get_roi", "post_roi", "get_roi_partition", "roi_ptquery", "get_roi3D",
    "get_tile_slice", "get_tile_slice_binary",
    "create_graph", "update_vertices", "update_edges",
    "get_typeinfo", "custom_request",
]  # fmt: skip

#: Their Python signatures in libdvid's bindings: argument order and defaults.
SIGNATURES = {
    "__init__": (
        "(web_addr, uuid, user='anonymous', app='libdvid', resource_server='', resource_port=0, *, timeout=None, "
        "retry=None, deadline=None)"
    ),
    "create_keyvalue": "(instance_name)",
    "put": "(instance_name, key, value_bytes)",
    "get": "(instance_name, key)",
    "get_json": "(instance_name, key)",
    "get_keys": "(instance_name)",
    "create_grayscale8": "(instance_name, blocksize=32)",
    "get_gray3D": "(instance_name, shape_zyx, offset_zyx, throttle=True, compress=False, roi=None)",
    "put_gray3D": "(instance_name, grayscale_vol, offset_zyx, throttle=True, compress=False)",
    "create_labelblk": "(instance_name, labelvol_name=None, blocksize=32)",
    "get_labels3D": (
        "(instance_name, shape_zyx, offset_zyx, throttle=True, compress=True, roi=None, supervoxels=False)"
    ),
    "get_label_by_location": "(instance_name, point_zyx, supervoxels=False)",
    "put_labels3D": (
        "(instance_name, label_vol_zyx, offset_zyx, throttle=True, compress=True, roi=None, mutate=False)"
    ),
    "body_exists": "(labelvol_name, bodyid, supervoxels=False)",
    "create_roi": "(name)",
    "get_roi": "(roi)",
    "post_roi": "(roi_name, blocks_zyx)",
    "get_roi_partition": "(roi, partition_size)",
    "roi_ptquery": "(roi, point_list_zyx)",
    "get_roi3D": "(instance_name, dims_zyx, offset_zyx, throttle=True, compress=False)",
    "get_tile_slice": "(instance_name, slice_type, scaling, tile_numbers)",
    "get_tile_slice_binary": "(instance_name, slice_type, scaling, tile_numbers)",
    "create_graph": "(name)",
    "update_vertices": "(graph_name, vertices)",
    "update_edges": "(graph_name, vertices)",
    "get_typeinfo": "(datatype_name)",
    "custom_request": "(endpoint, payload, method, compress=False, datasize=1, timeout=None)",
}


def host_of(server: DvidServer) -> str:
    return server.url.split("://", 1)[1]




@pytest.fixture
def service(dvid_server: DvidServer, dvid_node: Node) -> DVIDNodeService:
    return DVIDNodeService(host_of(dvid_server), dvid_node.uuid, "foo@bar.com", "test_app")


def test_every_seed_method_exists_with_libdvids_signature() -> None:
    assert sorted(SIGNATURES) == sorted(["__init__", *SEED_METHODS])
    for name, expected in SIGNATURES.items():
        parameters = list(inspect.signature(getattr(DVIDNodeService, name)).parameters.values())[1:]
        shown = "(" + ", ".join(("*, " if p.kind is p.KEYWORD_ONLY and p is next(
            q for q in parameters if q.kind is q.KEYWORD_ONLY) else "") + str(p).split(":")[0]
            + (f"={p.default!r}" if p.default is not p.empty else "") for p in parameters) + ")"
        assert shown == expected, name


# ------------------------------------------------------------------------- general
def test_constructor_and_general_methods(dvid_server, dvid_node, service) -> None:
    host = host_of(dvid_server)
    DVIDNodeService(host, dvid_node.uuid)  # user and app have defaults
    assert DVIDNodeService(host, dvid_node.uuid[:8]).get_uuid() == dvid_node.uuid  # a prefix names the node
    assert service._client.transport.user == "foo@bar.com" and service._client.transport.app == "test_app"
    with pytest.raises(DVIDException) as unknown:
        DVIDNodeService(host, "0" * 31 + "e")
    assert unknown.value.status == 400
    with pytest.warns(UserWarning, match="resource manager"):
        DVIDNodeService(host, dvid_node.uuid, "u", "a", "resources.example", 9000)
    assert service.create_keyvalue("kv") is True
    info = service.get_typeinfo("kv")
    assert info == dvid_node.typeinfo("kv") and info["Base"]["TypeName"] == "keyvalue"
    with pytest.raises(DVIDException) as missing:
        service.get_typeinfo("nothing")
    assert missing.value.status == 400 and "nothing" in missing.value.message


def test_custom_request(dvid_node, service) -> None:
    # GET, as libdvid's own test: the node's log, JSON
    assert json.loads(service.custom_request("log", b"", ConnectionMethod.GET)) == {"log": []}
    assert json.loads(service.custom_request("/log", b"", ConnectionMethod.GET)) == {"log": []}
    # POST a value, GET it back, DELETE it
    service.create_keyvalue("kv")
    assert service.custom_request("/kv/key/a", b"value", ConnectionMethod.POST) == b""
    assert service.custom_request("/kv/key/a", b"", ConnectionMethod.GET) == b"value"
    assert service.custom_request("/kv/key/a", b"", ConnectionMethod.HEAD) == b""
    service.custom_request("/kv/key/a", b"", ConnectionMethod.DELETE)
    assert dvid_node.keyvalue("kv").keys() == []
    # compress=True: the POST body travels LZ4-compressed, the GET answer is asked for in LZ4 and decompressed
    dvid_node.create_instance("labelmap", "seg")
    labels = np.random.default_rng(1).integers(1, 50, (64, 64, 64), dtype=np.uint64)
    service.custom_request("seg/raw/0_1_2/64_64_64/0_0_0", labels.tobytes(), ConnectionMethod.POST, True)
    raw = service.custom_request("seg/raw/0_1_2/64_64_64/0_0_0?supervoxels=true", b"", ConnectionMethod.GET, True)
    np.testing.assert_array_equal(np.frombuffer(raw, np.uint64).reshape(64, 64, 64), labels)
    # datasize (the resource manager's estimate) and timeout are accepted
    assert service.custom_request("log", None, ConnectionMethod.GET, False, 1000, 30) == b'{"log":[]}'
    # an error status raises libdvid's DVIDException with the status
    with pytest.raises(DVIDException) as caught:
        service.custom_request("/kv/key/missing", b"", ConnectionMethod.GET)
    assert caught.value.status == 404 and caught.value.args[0] == 404
    with pytest.raises(ErrMsg, match="ConnectionMethod"):
        service.custom_request("log", b"", "PATCH")


def test_node_custom_request_compress_on_get_asks_for_lz4_and_decompresses(dvid_node) -> None:
    dvid_node.create_instance("labelmap", "seg")
    labels = np.random.default_rng(2).integers(1, 9, (64, 64, 128), dtype=np.uint64)
    dvid_node.custom_request("seg/raw/0_1_2/128_64_64/0_0_0", labels.tobytes(), "POST", compress=True)
    got = dvid_node.custom_request("seg/raw/0_1_2/128_64_64/0_0_0", compress=True, params={"supervoxels": "true"})
    np.testing.assert_array_equal(np.frombuffer(got, np.uint64).reshape(labels.shape), labels)
    # what DVID sent was LZ4: the same request without compress=True but with compression=lz4 is that block
    lz4_params = {"supervoxels": "true", "compression": "lz4"}
    raw = dvid_node.custom_request("seg/raw/0_1_2/128_64_64/0_0_0", params=lz4_params)
    assert len(raw) < labels.nbytes and lz4.block.decompress(raw, uncompressed_size=labels.nbytes) == got
    # an endpoint that does not answer in LZ4: a clear error at once, not a retry loop
    sent = dvid_node.transport.requests_sent
    with pytest.raises(MalformedAnswerError, match="not an LZ4 block"):
        dvid_node.custom_request("seg/info", compress=True)
    assert dvid_node.transport.requests_sent == sent + 1


# ------------------------------------------------------------------------ keyvalue
def test_keyvalue_methods(dvid_node, service) -> None:
    assert service.create_keyvalue("keyvalue_test") is True
    assert service.create_keyvalue("keyvalue_test") is False  # already exists
    service.put("keyvalue_test", "key1", b"val1")
    assert service.get("keyvalue_test", "key1") == b"val1"
    service.put("keyvalue_test", "key2", "text is stored as UTF-8 ✓")
    assert service.get("keyvalue_test", "key2") == "text is stored as UTF-8 ✓".encode()
    service.put("keyvalue_test", "key3", bytearray(json.dumps({"a": [1, 2]}).encode()))
    assert service.get_json("keyvalue_test", "key3") == {"a": [1, 2]}
    assert service.get_keys("keyvalue_test") == ["key1", "key2", "key3"]
    assert dvid_node.keyvalue("keyvalue_test").get("key1") == b"val1"
    with pytest.raises(ErrMsg):
        service.put("keyvalue_test", "key1", 123)  # not a buffer, as in libdvid's test
    with pytest.raises(DVIDException) as missing:
        service.get("keyvalue_test", "nothing")
    assert missing.value.status == 404


# ------------------------------------------------------------------------ grayscale
def test_grayscale_methods(dvid_node, service) -> None:
    assert service.create_grayscale8("gray") is True
    assert service.create_grayscale8("gray") is False
    assert service.create_grayscale8("gray64", 64) is True
    assert dvid_node.voxels("gray").block_shape == (32, 32, 32)
    assert dvid_node.voxels("gray64").block_shape == (64, 64, 64)
    data = np.random.default_rng(0).integers(0, 255, (128, 128, 128), dtype=np.uint8)
    service.put_gray3D("gray", data, (0, 0, 0))
    np.testing.assert_array_equal(dvid_node.voxels("gray").read(((0, 0, 0), (128, 128, 128))), data)
    got = service.get_gray3D("gray", (30, 31, 32), (20, 20, 20))  # libdvid's own test
    assert got.dtype == np.uint8 and got.shape == (30, 31, 32) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, data[20:50, 20:51, 20:52])
    np.testing.assert_array_equal(service.get_gray3D("gray", (30, 31, 32), (20, 20, 20), False, True), got)
    # negative offsets, and compress=True on the write (the voxels travel uncompressed)
    service.put_gray3D("gray", data[:32, :32, :32], (-32, 0, -32), True, True)
    np.testing.assert_array_equal(service.get_gray3D("gray", (32, 32, 32), (-32, 0, -32)), data[:32, :32, :32])
    # roi: voxels outside read as 0
    service.create_roi("corner")
    service.post_roi("corner", [(0, 0, 0)])
    masked = service.get_gray3D("gray", (64, 64, 64), (0, 0, 0), True, False, "corner")
    np.testing.assert_array_equal(masked[:32, :32, :32], data[:32, :32, :32])
    assert not masked[32:].any() and not masked[:, 32:].any() and not masked[:, :, 32:].any()
    np.testing.assert_array_equal(service.get_gray3D("gray", (64, 64, 64), (0, 0, 0), True, True, "corner"), masked)
    # libdvid's checks: uint8, 3-d, block-aligned
    with pytest.raises(ErrMsg, match="uint8"):
        service.put_gray3D("gray", data.astype(np.uint16), (0, 0, 0))
    with pytest.raises(ErrMsg, match="block-aligned"):
        service.put_gray3D("gray", data[:10], (0, 0, 0))
    service.create_keyvalue("kv")
    with pytest.raises(ErrMsg):
        service.get_gray3D("kv", (1, 1, 1), (0, 0, 0))


# --------------------------------------------------------------------------- labels
def test_label_methods(dvid_node, service) -> None:
    assert service.create_labelblk("labels") is True
    assert service.create_labelblk("labels") is False
    assert service.create_labelblk("labels64", "", 64) is True  # libdvid's test: no labelvol, 64³ blocks
    assert dvid_node.instances()["labels64"] == "labelblk" and dvid_node.labelblk("labels64").block_shape == (64,) * 3
    data = np.random.default_rng(3).integers(0, 2**63 - 1, (128, 128, 128), dtype=np.uint64)
    service.put_labels3D("labels", data, (0, 0, 0))
    got = service.get_labels3D("labels", (30, 31, 32), (20, 20, 20))
    assert got.dtype == np.uint64 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, data[20:50, 20:51, 20:52])
    np.testing.assert_array_equal(service.get_labels3D("labels", (30, 31, 32), (20, 20, 20), True, False), got)
    np.testing.assert_array_equal(dvid_node.labelblk("labels").read(((0, 0, 0), (128, 128, 128))), data)
    assert service.get_label_by_location("labels", (5, 6, 7)) == int(data[5, 6, 7])
    assert service.get_label_by_location("labels", PointZYX(127, 0, 64)) == int(data[127, 0, 64])
    assert service.get_label_by_location("labels", (500, 0, 0)) == 0
    # a labelblk with a labelvol synced both ways
    assert service.create_labelblk("synced", "synced_vol") is True
    assert set(dvid_node.typeinfo("synced")["Base"]["Syncs"]) == {"synced_vol"}
    assert set(dvid_node.typeinfo("synced_vol")["Base"]["Syncs"]) == {"synced"}
    bodies = np.zeros((32, 32, 64), np.uint64)
    bodies[:, :, 32:] = 9
    service.put_labels3D("synced", bodies, (0, 0, 0))
    wait_until(lambda: service.body_exists("synced_vol", 9), "the labelvol's sync")
    assert service.body_exists("synced_vol", 10) is False
    assert service.body_exists("synced", 9) is True  # a labelblk asks its labelvol


def test_labelmap_body_exists_supervoxels_mutate_and_roi(dvid_node, service) -> None:
    assert service.create_labelmap("seg", 64) is True
    seg = dvid_node.labelmap("seg")
    labels = np.zeros((64, 64, 128), np.uint64)
    labels[:, :, :64] = 1
    labels[:, :, 64:] = 2
    service.put_labels3D("seg", labels, (0, 0, 0))
    seg.wait_for_sizes({1: 64**3, 2: 64**3})
    assert service.body_exists("seg", 1) is True and service.body_exists("seg", 3) is False
    seg.merge(1, [2])
    np.testing.assert_array_equal(service.get_labels3D("seg", (64, 64, 128), (0, 0, 0)), np.ones_like(labels))
    np.testing.assert_array_equal(service.get_labels3D("seg", (64, 64, 128), (0, 0, 0), supervoxels=True), labels)
    assert service.get_label_by_location("seg", (0, 0, 100)) == 1
    assert service.get_label_by_location("seg", (0, 0, 100), True) == 2
    assert service.body_exists("seg", 2, True) is True and service.body_exists("seg", 2) is False
    np.testing.assert_array_equal(service.get_mapping("seg", [1, 2, 77]), [1, 1, 0])
    # mutate=True overwrites with the label index kept right
    service.put_labels3D("seg", np.full((64, 64, 64), 5, np.uint64), (0, 0, 64), True, True, None, True)
    seg.wait_for_sizes({5: 64**3})
    assert seg.body_size(1) == 64**3
    # roi: only blocks inside it are written
    dvid_node.create_instance("roi", "left", block_size=(64, 64, 64))  # an roi in the labelmap's blocks
    service.post_roi("left", [(0, 0, 0)])
    service.put_labels3D("seg", np.full((64, 64, 128), 6, np.uint64), (0, 0, 0), True, True, "left", True)
    after = service.get_labels3D("seg", (64, 64, 128), (0, 0, 0), True, True, None, True)
    assert (after[:, :, :64] == 6).all() and (after[:, :, 64:] == 5).all()


# ----------------------------------------------------------------------------- rois
def test_roi_methods(dvid_node, service) -> None:
    assert service.create_roi("test_roi") is True
    assert service.create_roi("test_roi") is False
    service.post_roi("test_roi", [(1, 2, 3), (2, 3, 4), (4, 5, 6)])
    roi_blocks = service.get_roi("test_roi")
    assert roi_blocks == [(1, 2, 3), (2, 3, 4), (4, 5, 6)] and isinstance(roi_blocks[0], BlockZYX)
    # post_roi extends the ROI, as libdvid documents it (DVID v1.0.0 alone would replace it)
    service.post_roi("test_roi", np.array([[0, 0, 9], [2, 3, 4]]))
    assert service.get_roi("test_roi") == [(0, 0, 9), (1, 2, 3), (2, 3, 4), (4, 5, 6)]
    assert dvid_node.roi("test_roi").blocks().tolist() == [[0, 0, 9], [1, 2, 3], [2, 3, 4], [4, 5, 6]]
    assert service.roi_ptquery("test_roi", [(0, 0, 0), (32, 64, 32 * 3)]) == [False, True]
    assert service.roi_ptquery("test_roi", [(0, 0, 9 * 32 + 31), (-1, 0, 0)]) == [True, False]
    # get_roi3D: libdvid's upside-down L of the first four blocks
    service.create_roi("test_roi_3d")
    service.post_roi("test_roi_3d", [(0, 0, 0), (1, 0, 0), (0, 1, 0)])
    expected = np.ones((64, 64, 32), dtype=np.uint8)
    expected[32:, 32:] = 0
    got = service.get_roi3D("test_roi_3d", (64, 64, 32), (0, 0, 0))
    assert got.dtype == np.uint8 and got.shape == (64, 64, 32)
    np.testing.assert_array_equal(got, expected)
    larger = np.zeros((64, 96, 32), np.uint8)  # the ROI's blocks reach y = 64; beyond them: 0
    larger[:, :64] = expected
    unaligned = service.get_roi3D("test_roi_3d", (10, 40, 8), (28, 28, 20), False, True)
    np.testing.assert_array_equal(unaligned, larger[28:38, 28:68, 20:28])
    # get_roi_partition: libdvid's test
    service.create_roi("test_roi_partition")
    blocks = [(0, 0, 0), (1, 1, 1), (2, 2, 2), (3, 3, 3)]
    service.post_roi("test_roi_partition", blocks)
    substacks, packing_factor = service.get_roi_partition("test_roi_partition", 4)
    assert substacks == [SubstackZYX(4 * 32, 0, 0, 0)] and isinstance(substacks[0], SubstackZYX)
    assert packing_factor == len(blocks) / (len(substacks) * 4**3)
    service.post_roi("test_roi_partition", [(4, 0, 0)])
    substacks, _ = service.get_roi_partition("test_roi_partition", 4)
    assert substacks == [SubstackZYX(128, 0, 0, 0), SubstackZYX(128, 128, 0, 0)]


# ---------------------------------------------------------------------------- tiles
def test_tile_methods(dvid_node, service) -> None:
    dvid_node.create_instance("imagetile", "tiles", source="gray")
    tiles = dvid_node.tiles("tiles")
    tiles.set_metadata(TileMetadata({0: TileLevel((8, 8, 8), (16, 16, 16)), 1: TileLevel((16, 16, 16), (16, 16, 16))}))
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    tiles.post_tile("xy", 0, (3, 2, 1), image)  # dvid_store's (z, y, x) tile coordinate
    tiles.post_tile("xz", 1, (0, 5, 4), image.T.copy())
    # libdvid's tile_numbers are (x, y, z): x and y in tiles, z in voxels of the plane
    np.testing.assert_array_equal(service.get_tile_slice("tiles", Slice2D.XY, 0, (1, 2, 3)), image)
    np.testing.assert_array_equal(service.get_tile_slice("tiles", Slice2D.XZ, 1, [4, 5, 0]), image.T)
    binary = service.get_tile_slice_binary("tiles", Slice2D.XY, 0, (1, 2, 3))
    assert binary[:8] == b"\x89PNG\r\n\x1a\n" and binary == tiles.tile_binary("xy", 0, (3, 2, 1))
    # a tile never stored comes back blank, as DVID answers it
    assert not service.get_tile_slice("tiles", Slice2D.YZ, 0, (0, 0, 7)).any()
    with pytest.raises(DVIDException) as wrong_scale:
        service.get_tile_slice_binary("tiles", Slice2D.XY, 5, (0, 0, 0))
    assert wrong_scale.value.status == 400


# ---------------------------------------------------------------------------- graph
def test_graph_methods_raise_libdvids_error_with_the_explanation(dvid_node, service) -> None:
    sent = dvid_node.transport.requests_sent
    calls = {
        "create_graph": lambda: service.create_graph("graph"),
        "update_vertices": lambda: service.update_vertices("graph", [Vertex(1, 10.0), Vertex(2, 5.5)]),
        "update_edges": lambda: service.update_edges("graph", [Edge(1, 2, 3.0)]),
    }
    for name, call in calls.items():
        with pytest.raises(DVIDException) as caught:
            call()
        assert caught.value.status == 400 and caught.value.args[0] == 400
        assert "removed the labelgraph datatype" in caught.value.message and name in caught.value.message
        assert isinstance(caught.value, UnsupportedError)
    assert dvid_node.transport.requests_sent == sent  # refused before sending
    assert Vertex(1, 10.0) == Vertex(1, 10.0) and (Vertex(7, 2).id, Vertex(7, 2).weight) == (7, 2.0)
    assert (Edge(1, 2, 3).id1, Edge(1, 2, 3).id2, Edge(1, 2, 3).weight) == (1, 2, 3.0)


def test_errors_carry_the_status_and_pickle() -> None:
    error = DVIDException(503, "busy")
    assert (error.status, error.message, error.args) == (503, "busy", (503, "busy"))
    assert isinstance(error, ErrMsg)
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is DVIDException and restored.status == 503


# ------------------------------------------------------------- the rest of the bindings
def test_server_service_and_connection(dvid_server, dvid_node, monkeypatch) -> None:
    host = host_of(dvid_server)
    monkeypatch.setenv("DVID_ADMIN_TOKEN", dvid_server.admin_token)  # DVID v1.0.0 creates repos with it only
    uuid = DVIDServerService(host).create_new_repo("libdvid-port", "made by DVIDServerService")
    assert len(uuid) == 32 and DVIDNodeService(host, uuid).get_uuid() == uuid
    with pytest.raises(DVIDException) as unreachable:  # bounded: no retry of the refused connection
        DVIDServerService("127.0.0.1:9", retry=RetryPolicy(total_seconds=0))
    assert unreachable.value.status == 0
    connection = DVIDConnection(host, "me@foo.com", "myapp")
    assert connection.get_addr() == host and connection.get_uri_root() == host + "/api"
    status, body, error_message = connection.make_request("/server/info", ConnectionMethod.GET)
    assert (status, error_message) == (200, "") and "DVID Version" in json.loads(body)
    unchecked = connection.make_request("/does/not/exist", ConnectionMethod.GET, checkHttpErrors=False)
    status, body, error_message = unchecked
    assert status == 404 and body != b"" and error_message == ""
    with pytest.raises(DVIDException) as caught:
        connection.make_request("/does/not/exist", ConnectionMethod.GET)
    assert caught.value.status == 404
    assert connection.make_head_request(f"/node/{dvid_node.uuid}/log") == 200
    kv = f"/node/{dvid_node.uuid}/kv"
    DVIDNodeService(host, dvid_node.uuid).create_keyvalue("kv")
    assert connection.make_request(f"{kv}/key/a", ConnectionMethod.POST, b"x")[0] == 200
    assert connection.make_request(f"{kv}/keys?", ConnectionMethod.GET)[1] == b'["a"]'


def test_other_binding_methods(dvid_node, service) -> None:
    # get_blocksize, create_labelarray / create_labelmap
    assert service.create_labelarray("arr", 64) is True and service.create_labelarray("arr") is False
    assert service.create_labelmap("lm", 64) is True
    assert (service.get_blocksize("arr"), service.get_blocksize("lm")) == (64, 64)
    service.create_grayscale8("gray")
    assert service.get_blocksize("gray") == 32
    # the array interface: any voxel type by size
    dvid_node.create_instance("uint16blk", "u16")
    values = np.arange(32**3, dtype=np.uint16).reshape(32, 32, 32)
    service.put_array16bit3D("u16", values, (0, 0, 0))
    np.testing.assert_array_equal(service.get_array16bit3D("u16", (32, 32, 32), (0, 0, 0)), values)
    gray = np.full((32, 32, 32), 4, np.uint8)
    service.put_array8bit3D("gray", gray, (0, 0, 0))
    np.testing.assert_array_equal(service.get_array8bit3D("gray", (2, 2, 2), (0, 0, 0)), gray[:2, :2, :2])
    dvid_node.create_instance("uint32blk", "u32")
    service.put_array32bit3D("u32", values.astype(np.uint32), (0, 0, 0))
    assert service.get_array32bit3D("u32", (1, 1, 1), (0, 1, 2))[0, 0, 0] == values[0, 1, 2]
    labels = np.arange(64**3, dtype=np.uint64).reshape(64, 64, 64)
    service.put_array64bit3D("lm", labels, (0, 0, 0))
    np.testing.assert_array_equal(service.get_array64bit3D("lm", (64, 64, 64), (0, 0, 0), True), labels)
    with pytest.raises(ErrMsg, match="16-bit"):
        service.get_array16bit3D("gray", (1, 1, 1), (0, 0, 0))
    # labels at a scale, whole blocks, /specificblocks, /blocks answers, sparse masks
    assert service.create_labelmap("multi", 64) is True
    seg = np.zeros((128, 128, 128), np.uint64)
    seg[:64, :64, :64] = 3
    seg[64:, 64:, 64:] = 4
    service.put_labelblocks3D("multi", seg, (0, 0, 0))
    service.put_labelblocks3D("multi", seg[::2, ::2, ::2].copy(), (0, 0, 0), True, 1)
    np.testing.assert_array_equal(service.get_labelarray_blocks3D("multi", (128, 128, 128), (0, 0, 0)), seg)
    np.testing.assert_array_equal(
        service.get_labelarray_blocks3D("multi", (64, 64, 64), (0, 0, 0), True, 1), seg[::2, ::2, ::2]
    )
    with pytest.raises(ErrMsg, match="noindexing"):
        service.put_labelblocks3D("multi", seg, (0, 0, 0), True, 0, True)
    dvid_node.labelmap("multi").wait_for_sizes({3: 64**3, 4: 64**3})
    starts, masks = service.get_sparselabelmask(4, "multi", 0)
    assert starts.tolist() == [[64, 64, 64]] and len(masks) == 1 and masks[0].dtype == bool and masks[0].all()
    starts, masks = service.get_sparselabelmask(3, "multi", 1)
    assert starts.tolist() == [[0, 0, 0]] and masks[0][:32, :32, :32].all() and masks[0].sum() == 32**3
    with pytest.raises(DVIDException) as absent:
        service.get_sparselabelmask(99, "multi", 0)
    assert absent.value.status == 404
    coords, blocks = service.get_specificblocks3D("multi", False, np.array([[1, 1, 1], [0, 0, 0], [5, 5, 5]]))
    assert coords.tolist() == [[0, 0, 0], [64, 64, 64]]
    assert (blocks[0] == 3).all() and (blocks[1] == 4).all()
    coords, blocks = service.get_specificblocks3D("gray", True, [[0, 0, 0]])
    assert coords.tolist() == [[0, 0, 0]] and (blocks[0] == 4).all()
    answer = b"".join(
        np.array([x, y, z, len(p)], "<i4").tobytes() + p
        for (z, y, x), p in [((1, 1, 1), encode_gzipped_label_block(seg[64:, 64:, 64:]))]
    )
    inflated = DVIDNodeService.inflate_labelarray_blocks3D_from_raw(answer, (128, 128, 128), (0, 0, 0))
    expected = np.zeros_like(seg)
    expected[64:, 64:, 64:] = 4
    np.testing.assert_array_equal(inflated, expected)
    # grayscale through /subvolblocks, and the label codec
    np.testing.assert_array_equal(service.get_grayblocks3D_subvol("gray", (32, 32, 32), (0, 0, 0)), gray)
    block = np.random.default_rng(5).integers(0, 7, (64, 64, 64), dtype=np.uint64)
    np.testing.assert_array_equal(decode_label_block(encode_label_block(block)), block)


def test_refusals_before_sending(dvid_node, service) -> None:
    service.create_labelmap("seg", 64)
    assert service.get_typeinfo("seg")  # metadata cached below
    with pytest.raises(ErrMsg, match="uint64"):
        service.put_labels3D("seg", np.zeros((64, 64, 64), np.uint32), (0, 0, 0))
    with pytest.raises(ErrMsg, match="block-aligned"):
        service.put_labels3D("seg", np.zeros((64, 64, 60), np.uint64), (0, 0, 0))
    with pytest.raises(ErrMsg, match="at least 1"):
        service.get_labels3D("seg", (0, 1, 1), (0, 0, 0))
    with pytest.raises(ErrMsg, match="Slice2D"):
        service.get_tile_slice("tiles", "diagonal", 0, (0, 0, 0))
    service.create_keyvalue("kv")
    with pytest.raises(ErrMsg, match="not labels"):
        service.get_labels3D("kv", (1, 1, 1), (0, 0, 0))
    assert isinstance(ErrMsg("x"), Exception) and not isinstance(ErrMsg("x"), DvidInputError)


def test_limits_bound_every_call(dvid_server, dvid_node, dvid_fault_proxy) -> None:
    """libdvid had a fixed 120 s timeout; the keyword-only timeout, retry and deadline bound a port's calls."""
    host = host_of(dvid_server)
    default = DVIDNodeService(host, dvid_node.uuid)
    transport = default._client.transport
    assert transport.timeout == (5.0, 120.0) and transport.retry == RetryPolicy()  # libdvid's timeout by default
    policy = RetryPolicy(total_seconds=0)
    bounded = DVIDNodeService(dvid_fault_proxy.address, dvid_node.uuid, "u", "a", timeout=3.0, retry=policy,
                              deadline=8.0)
    transport = bounded._client.transport
    assert (transport.timeout, transport.retry, transport.deadline) == ((3.0, 3.0), policy, 8.0)
    # set up straight to the server: a 3 s limit with no retries is for the stalled calls, not a busy machine's
    dvid_node.create_instance("keyvalue", "kv")
    dvid_node.keyvalue("kv").put("a", b"value")
    # a stalled answer ends at the service's read timeout, for custom_request too (libdvid waited 120 s)
    dvid_fault_proxy.inject("stall", times=None, match="/kv/key")
    with pytest.raises(DVIDException) as stalled:
        bounded.custom_request("/kv/key/a", b"", ConnectionMethod.GET)
    assert stalled.value.status == 0 and "timed out" in stalled.value.message.lower()
    with pytest.raises(DVIDException):
        bounded.custom_request("/kv/key/a", b"", ConnectionMethod.GET, timeout=0.5)  # a call's own timeout
    connection = DVIDConnection(dvid_fault_proxy.address, timeout=(1.0, 2.0), retry=policy, deadline=5.0)
    assert (connection._client.transport.timeout, connection._client.transport.deadline) == ((1.0, 2.0), 5.0)
    with pytest.raises(DVIDException) as also_stalled:
        connection.make_request(f"/node/{dvid_node.uuid}/kv/key/a", ConnectionMethod.GET)
    assert also_stalled.value.status == 0
    server = DVIDServerService(host, timeout=2.0, retry=policy, deadline=5.0)
    assert (server._client.transport.timeout, server._client.transport.deadline) == ((2.0, 2.0), 5.0)


def test_seed_defaults_reach_dvid(dvid_node, dvid_fault_proxy) -> None:
    """The seed's defaults, as DVID receives them: throttle=True on volume calls, LZ4 for labels, raw gray."""
    service = DVIDNodeService(dvid_fault_proxy.address, dvid_node.uuid)
    service.create_grayscale8("gray")
    service.create_labelblk("labels")
    gray = np.random.default_rng(4).integers(0, 255, (32, 32, 32), dtype=np.uint8)
    labels = np.random.default_rng(5).integers(1, 2**40, (32, 32, 32), dtype=np.uint64)

    def sent(call: Callable[[], object]) -> list[str]:
        dvid_fault_proxy.clear(log=True)
        call()
        return [f"{r.method} {r.path}" for r in dvid_fault_proxy.log if "/info" not in r.path]

    def query(line: str) -> set[str]:
        return set(line.partition("?")[2].split("&"))

    (put,) = sent(lambda: service.put_gray3D("gray", gray, (0, 0, 0)))
    assert put.startswith("POST ") and "/gray/raw/0_1_2/32_32_32/0_0_0" in put and "throttle=true" in query(put)
    (get,) = sent(lambda: np.testing.assert_array_equal(service.get_gray3D("gray", (32, 32, 32), (0, 0, 0)), gray))
    assert "/gray/raw/" in get and "throttle=true" in query(get)  # compress=False: uncompressed voxels
    (get,) = sent(lambda: service.get_gray3D("gray", (32, 32, 32), (0, 0, 0), True, True))
    assert "/gray/subvolblocks/" in get and "throttle=true" in query(get)  # compress=True: the stored blocks
    (put,) = sent(lambda: service.put_labels3D("labels", labels, (0, 0, 0)))
    assert "/labels/raw/" in put and {"throttle=true", "compression=lz4"} <= query(put)
    assert "mutate=true" not in query(put)  # mutate=False by default
    (get,) = sent(lambda: np.testing.assert_array_equal(
        service.get_labels3D("labels", (30, 31, 32), (1, 1, 0)), labels[1:31, 1:32, :]))
    assert "/labels/raw/" in get and {"throttle=true", "compression=lz4"} <= query(get)
    (get,) = sent(lambda: service.get_labels3D("labels", (30, 31, 32), (1, 1, 0), True, False))
    assert "compression=lz4" not in query(get)
    # one whole aligned labelmap block: DVID throttles GET /blocks but not /specificblocks
    assert service.create_labelmap("seg", 32) is True
    service.put_labels3D("seg", labels, (0, 0, 0))
    (get,) = sent(lambda: np.testing.assert_array_equal(service.get_labels3D("seg", (32, 32, 32), (0, 0, 0)), labels))
    assert "/seg/blocks/32_32_32/0_0_0" in get and {"throttle=true", "compression=lz4"} <= query(get)
    (get,) = sent(lambda: service.get_labels3D("seg", (32, 32, 32), (0, 0, 0), False))
    assert "/seg/specificblocks" in get and "throttle=true" not in query(get)
    gets = sent(lambda: np.testing.assert_array_equal(  # an absent block: GET /blocks answers nothing
        service.get_labels3D("seg", (32, 32, 32), (32, 0, 0)), np.zeros((32, 32, 32), np.uint64)))
    assert "/seg/blocks/" in gets[0] and all("throttle=true" in query(get) for get in gets)
