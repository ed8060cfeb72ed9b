"""dvid_store.compat.pydvid against the real server: pydvid's README example, ported, and the rest of its API.

pydvid's README example runs here as pydvid users wrote it, ported to Python 3 (its
``print`` statements become calls) with only its import lines changed; the server
address and the node (``'abcde'`` in the README) are the test server's, the way the
docs' examples get ``localhost:8000``. Its results are checked exactly, and what it
wrote is checked voxel by voxel through dvid_store's own node API.
"""

from __future__ import annotations

import http.client
import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from dvid_store import (
    DvidConnectionError,
    DvidHTTPError,
    DvidInputError,
    Node,
    RetryPolicy,
    ServerBusyError,
    UnsupportedError,
    Voxels,
)
from dvid_store.compat.pydvid import dvid_connection, errors, general, keyvalue, labelgraph, voxels
from dvid_store.compat.pydvid.errors import DvidHttpError, UnexpectedResponseError
from dvid_store.compat.pydvid.voxels import RoiMaskAccessor, VoxelsAccessor, VoxelsMetadata
from dvid_store.compat.pydvid.voxels.voxels_accessor import retry_policy
from dvid_store.testing import DvidServer, FaultProxy

MIGRATION_PAGE = Path(__file__).resolve().parents[1] / "docs" / "pages" / "migration.md"

#: pydvid's README example, ported to Python 3: the import lines and the print calls changed, nothing else.
README_EXAMPLE = """\
import json
import http.client as httplib
import numpy
from dvid_store.compat.pydvid import voxels, general
# Open a connection to DVID
connection = httplib.HTTPConnection( "localhost:8000", timeout=5.0 )
# Get detailed dataset info: /api/datasets/info
dataset_details = general.get_repos_info( connection )
print( json.dumps( dataset_details, indent=4 ) )
# Create a new remote volume
uuid = 'abcde'
voxels_metadata = voxels.VoxelsMetadata.create_default_metadata( (4,0,0,0), numpy.uint8, 'cxyz', 1.0, "" )
voxels.create_new( connection, uuid, "my_volume", voxels_metadata )
# Use the VoxelsAccessor convenience class to manipulate a particular data volume
dvid_volume = voxels.VoxelsAccessor( connection, uuid, "my_volume" )
print( dvid_volume.axiskeys, dvid_volume.dtype, dvid_volume.minindex, dvid_volume.shape )
# Add some data
updated_data = numpy.ones( (4,100,100,100), dtype=numpy.uint8 ) # Must include all channels.
dvid_volume[:, 10:110, 20:120, 30:130] = updated_data
# OR:
dvid_volume.post_ndarray( (0,10,20,30), (4,110,120,130), updated_data )
# Read from it (First axis is channel.)
cutout_array = dvid_volume[:, 10:110, 20:120, 30:130]
# OR:
cutout_array = dvid_volume.get_ndarray( (0,10,20,30), (4,110,120,130) )
assert isinstance(cutout_array, numpy.ndarray)
assert cutout_array.shape == (4,100,100,100)
"""

#: The README's second snippet, with its assertion's typo fixed (it subtracted stop from start).
README_WHOLE_VOLUME = """\
dvid_volume = voxels.VoxelsAccessor( connection, uuid, "my_volume" )
# Retrieve all stored voxels
start, stop = dvid_volume.minindex, dvid_volume.shape
cutout_array = dvid_volume.get_ndarray( start, stop )
# Note the shape of the result
assert (cutout_array.shape == numpy.array(stop) - start).all()
"""


def host_of(server: DvidServer) -> str:
    return server.url.split("://", 1)[1]


def new_volume(server: DvidServer, node: Node, name: str, channels: int, dtype, resolution=1.0, units="") -> None:
    """pydvid's way to make a volume: default metadata, then create_new."""
    meta = VoxelsMetadata.create_default_metadata((channels, 0, 0, 0), dtype, "cxyz", resolution, units)
    voxels.create_new(host_of(server), node.uuid, name, meta)


def run_example(code: str, server: DvidServer, node: Node, namespace: dict | None = None) -> dict:
    namespace = {} if namespace is None else namespace
    source = code.replace("localhost:8000", host_of(server)).replace("'abcde'", repr(node.uuid[:12]))
    exec(compile(source, "pydvid-readme", "exec"), namespace)
    return namespace


def test_the_readme_example_runs_and_gives_pydvids_results(dvid_server, dvid_node, capsys) -> None:
    listing = dvid_node.transport.get_json("/api/repos/info")  # what the example's first call must give
    ns = run_example(README_EXAMPLE, dvid_server, dvid_node)
    out = capsys.readouterr().out
    # general.get_repos_info: DVID's /api/repos/info JSON, as DVID sends it, printed as pydvid printed it
    printed_repos, axes_line = out.rsplit("}\n", 1)
    assert printed_repos + "}" == json.dumps(listing, indent=4)
    assert ns["dataset_details"] == listing and listing[dvid_node.uuid]["Root"] == dvid_node.uuid
    # the accessor of a new, empty volume: what pydvid printed (Size + Offset of DVID's metadata: 0 + 0)
    assert axes_line == "cxyz uint8 (0, 0, 0, 0) (4, 0, 0, 0)\n"
    # create_new made DVID's 4-channel type with pydvid's geometry (32³ blocks, voxel size 1.0)
    vol = dvid_node.voxels("my_volume")
    assert vol.typename == "rgba8blk" and vol.block_shape == (32, 32, 32)
    assert vol.voxel_size == (1.0, 1.0, 1.0) and vol.voxel_units == ("nanometers",) * 3
    # the cutouts: all ones, channel first, x-y-z (a Fortran-ordered view, as pydvid's arrays were)
    cutout = ns["cutout_array"]
    assert cutout.shape == (4, 100, 100, 100) and cutout.dtype == np.uint8 and (cutout == 1).all()
    assert cutout.flags.f_contiguous
    # exactly the box x 10..110, y 20..120, z 30..130 was written, all 4 channels; nothing around it
    stored = vol.read(((0, 0, 0), (160, 128, 128)))
    expected = np.zeros((160, 128, 128, 4), np.uint8)
    expected[30:130, 20:120, 10:110] = 1
    np.testing.assert_array_equal(stored, expected)
    # DVID keeps whole blocks, so the stored bounding box is the enclosing aligned box
    accessor = ns["dvid_volume"]
    assert accessor.minindex == (0, 0, 0, 0) and accessor.shape == (4, 128, 128, 160)
    # the second snippet of the README: the whole stored volume
    run_example(README_WHOLE_VOLUME, dvid_server, dvid_node, ns)
    assert ns["cutout_array"].shape == (4, 128, 128, 160)
    np.testing.assert_array_equal(ns["cutout_array"], expected.transpose(3, 2, 1, 0))


def test_the_migration_page_shows_this_port() -> None:
    page = MIGRATION_PAGE.read_text()
    shown = README_EXAMPLE.replace("uuid = 'abcde'\n", "uuid = abcde  # the README's 'abcde': a node of your server\n")
    assert shown in page


# ----------------------------------------------------------------------- connections
def test_every_connection_form_reaches_the_server(dvid_server, dvid_node) -> None:
    host = host_of(dvid_server)
    forms = [
        http.client.HTTPConnection(host, timeout=5.0),
        http.client.HTTPConnection(host),  # no timeout: the client's default
        host,
        f"http://{host}",
        dvid_connection.DvidConnection(host, timeout=5.0),
    ]
    for connection in forms:
        info = general.get_repos_info(connection)
        assert dvid_node.uuid in info, connection
    client = dvid_connection.client_for(forms[0])
    assert client.transport.timeout == (5.0, 5.0) and client.transport.app == "pydvid"
    assert dvid_connection.client_for(http.client.HTTPConnection(host, timeout=5.0)) is client  # one per address
    assert dvid_connection.client_for(forms[1]).transport.timeout == (5.0, 120.0)
    with pytest.raises(DvidInputError, match="HTTPConnection"):
        general.get_server_info(42)
    assert general.get_server_info(host)["DVID Version"]
    new_volume(dvid_server, dvid_node, "g", 1, np.uint8, 4.0, "micrometers")
    assert "uint8blk" in general.get_server_types(host)
    assert dvid_node.voxels("g").voxel_size == (4.0, 4.0, 4.0)
    assert dvid_node.voxels("g").voxel_units == ("micrometers",) * 3


def test_the_node_may_be_a_uuid_a_prefix_or_a_branch(dvid_server, dvid_node) -> None:
    host = host_of(dvid_server)
    Voxels.create(dvid_node, "g", np.uint8).write(np.full((32, 32, 32), 3, np.uint8), (0, 0, 0))
    for ref in (dvid_node.uuid, dvid_node.uuid[:10], f"{dvid_node.uuid[:10]}:master"):
        assert VoxelsAccessor(host, ref, "g")[0, 0, 0, 0] == 3
    with pytest.raises(DvidHTTPError):
        VoxelsAccessor(host, "0" * 31 + "f", "g")


# --------------------------------------------------------------------- the accessor
@pytest.fixture
def rgba(dvid_server, dvid_node):
    """A 4-channel volume holding a known (c, x, y, z) array over x -32..32, y 0..64, z -64..32."""
    host = host_of(dvid_server)
    new_volume(dvid_server, dvid_node, "rgba", 4, np.uint8)
    data = np.random.default_rng(7).integers(0, 256, (4, 64, 64, 96), dtype=np.uint8)
    accessor = VoxelsAccessor(http.client.HTTPConnection(host), dvid_node.uuid, "rgba")
    accessor[:, -32:32, 0:64, -64:32] = data
    return accessor, data


def test_signed_coordinates_and_the_stored_bounding_box(rgba, dvid_node) -> None:
    accessor, data = rgba
    assert accessor.minindex == (0, -32, 0, -64) and accessor.shape == (4, 32, 64, 32)
    # the node API sees the same voxels in (z, y, x, c)
    zyxc = dvid_node.voxels("rgba").read(((-64, 0, -32), (32, 64, 32)))
    np.testing.assert_array_equal(zyxc, data.transpose(3, 2, 1, 0))
    # open bounds: the stored box (an open start is the stored minimum where it is below 0)
    np.testing.assert_array_equal(accessor[:], data)
    np.testing.assert_array_equal(accessor[...], data)
    np.testing.assert_array_equal(accessor.get_ndarray(accessor.minindex, accessor.shape), data)
    # negative bounds are coordinates, not "from the end"
    np.testing.assert_array_equal(accessor[:, -5:-1, 3:4, -64:-60], data[:, 27:31, 3:4, 0:4])


def test_read_slicing_follows_pydvid(rgba) -> None:
    accessor, data = rgba
    x0, y0, z0 = -32, 0, -64

    def at(x: slice, y: slice, z: slice):
        return (slice(x.start - x0, x.stop - x0, x.step), slice(y.start - y0, y.stop - y0, y.step),
                slice(z.start - z0, z.stop - z0, z.step))

    full = at(slice(-10, 20), slice(5, 40), slice(-50, 10))
    np.testing.assert_array_equal(accessor[0:4, -10:20, 5:40, -50:10], data[(slice(None), *full)])
    # channel slicing and indexing (integer indices drop their axis, as in numpy)
    np.testing.assert_array_equal(accessor[1:3, -10:20, 5:40, -50:10], data[(slice(1, 3), *full)])
    np.testing.assert_array_equal(accessor[2, -10:20, 5:40, -50:10], data[(2, *full)])
    np.testing.assert_array_equal(accessor[-1, -10:20, 5:40, -50:10], data[(3, *full)])
    assert accessor[:, 3, 5:40, -50:10].shape == (4, 35, 60)
    np.testing.assert_array_equal(accessor[:, 3, 5:40, -50:10], data[:, 35, 5:40, 14:74])
    # partial keys and an ellipsis
    np.testing.assert_array_equal(accessor[0:4, -10:20], data[:, 22:52])
    np.testing.assert_array_equal(accessor[..., -1], data[..., 63])
    np.testing.assert_array_equal(accessor[1, ..., 0:8], data[1, :, :, 64:72])
    # steps: the dense box is read, then stepped
    stepped = accessor[0:4:2, -30:20:3, 5:20:5, -60:30:10]
    np.testing.assert_array_equal(stepped, data[0:4:2, 2:52:3, 5:20:5, 4:94:10])
    # an empty selection is empty, as in numpy, and sends nothing
    sent = accessor._client.transport.requests_sent
    assert accessor[:, 5:5, 0:3, 0:3].shape == (4, 0, 3, 3)
    assert accessor._client.transport.requests_sent == sent


def test_bad_keys_are_refused_clearly(rgba) -> None:
    accessor, _ = rgba
    sent = accessor._client.transport.requests_sent
    with pytest.raises(IndexError, match="too many indices"):
        accessor[:, 0:1, 0:1, 0:1, 0:1]
    with pytest.raises(IndexError, match="out of range for 4 channel"):
        accessor[4, 0:1, 0:1, 0:1]
    with pytest.raises(IndexError, match="outside the 4 channel"):
        accessor[0:9, 0:1, 0:1, 0:1]
    with pytest.raises(DvidInputError, match="newaxis"):
        accessor[None, 0:1]
    with pytest.raises(DvidInputError, match="fancy"):
        accessor[:, np.array([1, 2]), 0:1, 0:1]
    with pytest.raises(DvidInputError, match="positive"):
        accessor[:, 10:0:-1, 0:1, 0:1]
    with pytest.raises(DvidInputError, match="all 4 channel"):
        accessor[1, 0:32, 0:32, 0:32] = np.zeros((32, 32, 32), np.uint8)
    with pytest.raises(DvidInputError, match="no steps"):
        accessor[:, 0:32:2, 0:32, 0:32] = np.zeros((4, 16, 32, 32), np.uint8)
    with pytest.raises(DvidInputError, match="does not fill"):
        accessor[:, 0:32, 0:32, 0:32] = np.zeros((4, 32, 32, 31), np.uint8)
    with pytest.raises(DvidInputError, match="all channels"):
        accessor.get_ndarray((1, 0, 0, 0), (4, 1, 1, 1))
    with pytest.raises(DvidInputError, match="4 values each"):
        accessor.get_ndarray((0, 0, 0), (4, 1, 1))
    with pytest.raises(DvidInputError, match="empty"):
        accessor.get_ndarray((0, 5, 0, 0), (4, 5, 1, 1))
    assert accessor._client.transport.requests_sent == sent


def test_writes_at_any_offset_change_only_their_box(rgba, dvid_node) -> None:
    accessor, data = rgba
    patch = np.full((4, 10, 3, 5), 200, np.uint8)
    accessor[:, -7:3, 60:63, 1:6] = patch
    expected = data.copy()
    expected[:, 25:35, 60:63, 65:70] = 200
    np.testing.assert_array_equal(accessor[:], expected)
    # a reduced-dimension write: an integer index keeps its place, the data fills the box in pydvid's order
    accessor[:, 0, 0:2, 0:3] = np.arange(24, dtype=np.uint8).reshape(4, 2, 3)
    expected[:, 32, 0:2, 64:67] = np.arange(24, dtype=np.uint8).reshape(4, 2, 3)
    np.testing.assert_array_equal(accessor[:], expected)
    # writing past the stored box grows it (DVID grows it block by block); the metadata follows
    accessor.post_ndarray((0, 40, 0, 0), (4, 41, 1, 1), np.full((4, 1, 1, 1), 9, np.uint8))
    assert accessor.shape == (4, 64, 64, 32) and accessor[0, 40, 0, 0] == 9


def test_single_channel_and_label_volumes(dvid_server, dvid_node) -> None:
    host = host_of(dvid_server)
    new_volume(dvid_server, dvid_node, "gray", 1, np.uint16)
    gray = VoxelsAccessor(host, dvid_node.uuid, "gray")
    assert dvid_node.voxels("gray").typename == "uint16blk"
    assert (gray.axiskeys, gray.dtype, gray.shape) == ("cxyz", np.dtype(np.uint16), (1, 0, 0, 0))
    values = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(1, 5, 6, 7)
    gray[:, 1:6, 2:8, 3:10] = values
    np.testing.assert_array_equal(gray[:, 1:6, 2:8, 3:10], values)
    np.testing.assert_array_equal(dvid_node.voxels("gray").read(((3, 2, 1), (10, 8, 6))), values[0].T)
    # uint64: pydvid's labels64, today's labelblk; label volumes take block-aligned boxes
    new_volume(dvid_server, dvid_node, "labels", 1, np.uint64)
    assert dvid_node.instances()["labels"] == "labelblk"
    labels = VoxelsAccessor(host, dvid_node.uuid, "labels")
    block = np.arange(32**3, dtype=np.uint64).reshape(1, 32, 32, 32)
    labels[:, 0:32, 32:64, 0:32] = block
    np.testing.assert_array_equal(labels[:, 0:32, 32:64, 0:32], block)
    with pytest.raises(DvidInputError, match="block-aligned"):
        labels[:, 0:10, 0:10, 0:10] = np.zeros((1, 10, 10, 10), np.uint64)


def test_open_bounds_of_an_empty_volume(dvid_server, dvid_node) -> None:
    """Nothing stored: pydvid's shape is 0 on every axis, so open stops select nothing, as numpy would."""
    new_volume(dvid_server, dvid_node, "empty", 1, np.uint8)
    empty = VoxelsAccessor(host_of(dvid_server), dvid_node.uuid, "empty")
    assert (empty.minindex, empty.shape) == ((0, 0, 0, 0), (1, 0, 0, 0))
    sent = empty._client.transport.requests_sent
    assert empty[:].shape == (1, 0, 0, 0) and empty[:, 5:, 0:1, 0:1].shape == (1, 0, 1, 1)
    assert empty._client.transport.requests_sent == sent  # empty selections send nothing
    assert empty[:, :2, 0:3, 0:4].shape == (1, 2, 3, 4)  # an open start is 0; never written: zeros
    assert not empty[:, 0:2, 0:3, 0:4].any()
    empty[:, 0:2, 0:3, 0:4] = np.full((1, 2, 3, 4), 7, np.uint8)
    assert empty.shape == (1, 32, 32, 32) and (empty[:, 0:2, 0:3, 0:4] == 7).all()  # DVID stores whole blocks


def test_query_args_throttle_and_roi(dvid_server, dvid_node) -> None:
    host = host_of(dvid_server)
    Voxels.create(dvid_node, "g", np.uint8).write(np.full((64, 64, 64), 5, np.uint8), (0, 0, 0))
    dvid_node.create_instance("roi", "half")
    dvid_node.roi("half").post_blocks([(0, 0, 0)])
    masked = VoxelsAccessor(host, dvid_node.uuid, "g", query_args={"roi": "half", "throttle": "on"})
    assert masked._throttle
    cut = masked[0, 0:64, 0:64, 0:64]
    assert (cut[:32, :32, :32] == 5).all() and not cut[32:].any() and not cut[:, 32:].any()
    assert VoxelsAccessor(host, dvid_node.uuid, "g", throttle=True)._throttle
    assert not VoxelsAccessor(host, dvid_node.uuid, "g", query_args={"throttle": "off"})._throttle
    with pytest.raises(DvidInputError, match="contradicts"):
        VoxelsAccessor(host, dvid_node.uuid, "g", query_args={"throttle": "off"}, throttle=True)
    with pytest.raises(DvidInputError, match="attenuation"):
        VoxelsAccessor(host, dvid_node.uuid, "g", query_args={"attenuation": 5}).get_ndarray((0, 0, 0, 0), (1, 1, 1, 1))
    # the roi itself, as pydvid's RoiMaskAccessor reads it: 1 inside, 0 outside
    mask = RoiMaskAccessor(host, dvid_node.uuid, "half")
    assert (mask.axiskeys, mask.dtype, mask.shape) == ("cxyz", np.dtype(np.uint8), (1, None, None, None))
    got = mask[:, 0:64, 0:40, -8:8]
    assert got.shape == (1, 64, 40, 16)
    assert (got[:, :32, :32, 8:] == 1).all() and not got[:, :32, :32, :8].any() and not got[:, 32:].any()
    with pytest.raises(DvidInputError, match="no bounding box"):
        mask[:]
    with pytest.raises(UnsupportedError, match="post_mask"):
        mask[:, 0:32, 0:32, 0:32] = np.ones((1, 32, 32, 32), np.uint8)


def test_retry_timeout_and_interval_are_the_clients_retry_policy(
    dvid_server, dvid_node, dvid_fault_proxy: FaultProxy
) -> None:
    assert retry_policy(60.0, 1.0) == RetryPolicy(total_seconds=60.0, backoff_base=1.0, backoff_cap=1.0)
    assert retry_policy(1.0, 1.0).total_seconds == 0  # pydvid: timeout <= interval disables retrying
    assert retry_policy(0, 0.5).total_seconds == 0
    with pytest.raises(DvidInputError, match="seconds"):
        retry_policy(-1, 1)
    Voxels.create(dvid_node, "g", np.uint8).write(np.full((32, 32, 32), 8, np.uint8), (0, 0, 0))
    proxied = dvid_fault_proxy.url.split("://", 1)[1]
    accessor = VoxelsAccessor(proxied, dvid_node.uuid, "g", retry_timeout=30.0, retry_interval=0.01)
    assert accessor._client.transport.retry == RetryPolicy(total_seconds=30.0, backoff_base=0.01, backoff_cap=0.01)
    # a server busy for a while is ridden through
    rule = dvid_fault_proxy.inject("status_503", times=3, match="/raw/")
    assert (accessor[0, 0:32, 0:32, 0:32] == 8).all() and rule.applied == 3
    # busy for longer than retry_timeout: pydvid's ThrottleTimeoutException, also a ServerBusyError
    dvid_fault_proxy.inject("status_503", times=None, match="/raw/")
    impatient = VoxelsAccessor(proxied, dvid_node.uuid, "g", retry_timeout=0.2, retry_interval=0.01)
    with pytest.raises(VoxelsAccessor.ThrottleTimeoutException) as caught:
        impatient[0, 0:32, 0:32, 0:32]
    assert isinstance(caught.value, ServerBusyError) and isinstance(caught.value, DvidHttpError)
    assert caught.value.status_code == 503 and caught.value.attempted_action_name == "subvolume query"
    with pytest.raises(VoxelsAccessor.ThrottleTimeoutException):  # writes too
        impatient[:, 0:32, 0:32, 0:32] = np.zeros((1, 32, 32, 32), np.uint8)
    # no retry at all when retry_timeout <= retry_interval
    once = VoxelsAccessor(proxied, dvid_node.uuid, "g", retry_timeout=1.0, retry_interval=1.0)
    sent = once._client.transport.requests_sent
    with pytest.raises(VoxelsAccessor.ThrottleTimeoutException):
        once.get_ndarray((0, 0, 0, 0), (1, 32, 32, 32))
    assert once._client.transport.requests_sent == sent + 1


# ---------------------------------------------------------------------- metadata
def test_voxels_metadata_as_pydvid_had_it() -> None:
    meta = VoxelsMetadata.create_default_metadata((3, 100, 200, 300), np.uint8, "cxyz", 1.5, "micrometers")
    assert meta["Axes"][2] == {"Label": "Z", "Resolution": 1.5, "Units": "micrometers", "Size": 300, "Offset": 0}
    assert meta["Properties"]["Values"] == [{"DataType": "uint8", "Label": ""}] * 3
    assert (meta.shape, meta.minindex) == ((3, 100, 200, 300), (0, 0, 0, 0))
    assert (meta.dtype, meta.axiskeys) == (np.uint8, "cxyz")
    assert VoxelsMetadata(meta.to_json()) == meta
    assert pickle.loads(pickle.dumps(meta)).shape == meta.shape
    meta.minindex = (0, 10, 20, 30)
    assert meta["Axes"][0]["Offset"] == 10 and meta["Axes"][0]["Size"] == 90
    meta.shape = (3, 110, 220, 330)
    assert meta["Axes"][1]["Size"] == 200 and meta.shape == (3, 110, 220, 330)
    with pytest.raises(DvidInputError, match="channels"):
        meta.shape = (4, 1, 1, 1)
    with pytest.raises(DvidInputError, match="no datatype for 3 channel"):
        meta.determine_dvid_typename()
    types = {
        (np.uint8, 4): "rgba8blk", (np.uint8, 1): "uint8blk", (np.uint16, 1): "uint16blk",
        (np.uint32, 1): "uint32blk", (np.uint64, 1): "labelblk", (np.float32, 1): "float32blk",
    }
    for (dtype, channels), typename in types.items():
        made = VoxelsMetadata.create_default_metadata((channels, 0, 0, 0), dtype, "cxyz", 1.0, "")
        assert made.determine_dvid_typename() == typename
        assert VoxelsMetadata.determine_channels_from_dvid_typename(typename) == (np.dtype(dtype).name, channels)
    assert VoxelsMetadata.determine_channels_from_dvid_typename("rgba8") == ("uint8", 4)  # pydvid's old name
    with pytest.raises(DvidInputError, match="first"):
        VoxelsMetadata.create_default_metadata((1, 0, 0, 0), np.uint8, "xyzc", 1.0, "")
    with pytest.raises(DvidInputError, match="Axes"):
        VoxelsMetadata({"Properties": {"Values": [{"DataType": "uint8"}]}})
    with pytest.raises(DvidInputError, match="JSON"):
        VoxelsMetadata("{not json")


def test_metadata_from_the_server_matches_dvids_own(dvid_server, dvid_node, rgba) -> None:
    meta = voxels.get_metadata(host_of(dvid_server), dvid_node.uuid, "rgba")
    dvid = dvid_node.transport.get_json(f"/api/node/{dvid_node.uuid}/rgba/metadata")
    assert meta == dvid
    assert meta.shape == (4, 32, 64, 32) and meta.minindex == (0, -32, 0, -64)


def test_module_functions_get_and_post_ndarray(dvid_server, dvid_node, rgba) -> None:
    host = host_of(dvid_server)
    accessor, data = rgba
    meta = accessor.voxels_metadata
    got = voxels.get_ndarray(host, dvid_node.uuid, "rgba", "raw", meta, (0, -32, 0, -64), (4, 32, 64, 32))
    np.testing.assert_array_equal(got, data)
    ones = np.full((4, 1, 1, 1), 1, np.uint8)
    voxels.post_ndarray(host, dvid_node.uuid, "rgba", "raw", meta, (0, 0, 0, 0), (4, 1, 1, 1), ones)
    assert (accessor[:, 0, 0, 0] == 1).all()
    with pytest.raises(DvidInputError, match="access_type"):
        voxels.get_ndarray(host, dvid_node.uuid, "rgba", "grayscale", meta, (0, 0, 0, 0), (4, 1, 1, 1))


# ------------------------------------------------------------- keyvalue, labelgraph, errors
def test_keyvalue(dvid_server, dvid_node) -> None:
    host = host_of(dvid_server)
    keyvalue.create_new(host, dvid_node.uuid, "kv")
    keyvalue.put_value(host, dvid_node.uuid, "kv", "bytes", b"\x00\x01")
    keyvalue.put_value(host, dvid_node.uuid, "kv", "text", "hello")
    keyvalue.put_value(host, dvid_node.uuid, "kv", "file", io.BytesIO(b"from a file"))
    assert keyvalue.get_value(host, dvid_node.uuid, "kv", "bytes") == b"\x00\x01"
    assert keyvalue.get_value(host, dvid_node.uuid, "kv", "text") == b"hello"
    assert keyvalue.get_value_response(host, dvid_node.uuid, "kv", "file").read() == b"from a file"
    assert keyvalue.get_keys(host, dvid_node.uuid, "kv") == ["bytes", "file", "text"]
    keyvalue.del_value(host, dvid_node.uuid, "kv", "text", None)
    assert keyvalue.get_keys(host, dvid_node.uuid, "kv") == ["bytes", "file"]
    with pytest.raises(DvidHttpError) as missing:
        keyvalue.get_value(host, dvid_node.uuid, "kv", "text")
    assert missing.value.status_code == 404 and missing.value.reason == "Not Found"
    assert missing.value.attempted_action_name == "keyvalue request"
    with pytest.raises(DvidHttpError) as taken:
        keyvalue.create_new(host, dvid_node.uuid, "kv")
    assert taken.value.status_code == 400 and "kv" in taken.value.response_body


def test_labelgraph_is_refused_with_the_explanation(dvid_server, dvid_node) -> None:
    host = host_of(dvid_server)
    sent = dvid_node.transport.requests_sent
    calls = [
        lambda: labelgraph.create_new(host, dvid_node.uuid, "graph"),
        lambda: labelgraph.update_vertices(host, dvid_node.uuid, "graph", [(1, 1.0)]),
        lambda: labelgraph.update_vertex(host, dvid_node.uuid, "graph", 1, 1.0),
        lambda: labelgraph.update_edges(host, dvid_node.uuid, "graph", [(1, 2, 1.0)]),
        lambda: labelgraph.update_edge(host, dvid_node.uuid, "graph", 1, 2, 1.0),
    ]
    for call in calls:
        with pytest.raises(errors.DvidHttpError, match="removed the labelgraph datatype") as caught:
            call()
        assert isinstance(caught.value, UnsupportedError) and caught.value.status_code is None
    assert dvid_node.transport.requests_sent == sent


def test_errors_are_pydvids_and_dvid_stores(dvid_server, dvid_node) -> None:
    host = host_of(dvid_server)
    with pytest.raises(DvidHttpError) as caught:
        VoxelsAccessor(host, dvid_node.uuid, "nothing-here")
    error = caught.value
    assert isinstance(error, DvidHTTPError)  # dvid_store's own base class catches it too
    assert error.status_code == 400 and error.method == "GET" and "/nothing-here/info" in error.request_uri
    assert re.search(r"nothing-here", error.response_body)
    assert str(error).startswith('while attempting "voxels metadata"')
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is DvidHttpError and restored.status_code == 400
    assert issubclass(UnexpectedResponseError, DvidHTTPError)


def test_a_dvid_connection_bounds_every_call(dvid_server, dvid_node, dvid_fault_proxy: FaultProxy) -> None:
    """pydvid bounded calls only by the connection's timeout; a DvidConnection also takes a retry policy,
    a deadline and the app name, for the module functions and the accessor alike."""
    policy = RetryPolicy(total_seconds=0)
    connection = dvid_connection.DvidConnection(dvid_fault_proxy.address, 1.0, retry=policy, deadline=5.0,
                                                app="my-script")
    client = dvid_connection.client_for(connection)
    assert (client.transport.timeout, client.transport.retry, client.transport.deadline) == ((1.0, 1.0), policy, 5.0)
    assert client.transport.app == "my-script"
    assert dvid_connection.client_for(dvid_connection.DvidConnection(dvid_fault_proxy.address, 1.0)) is not client
    keyvalue.create_new(connection, dvid_node.uuid, "kv")
    keyvalue.put_value(connection, dvid_node.uuid, "kv", "a", b"value")
    dvid_fault_proxy.inject("stall", times=None, match="/kv/keyvalues")
    # ends at the read timeout (no retry in the policy); a lost connection is an OSError, as pydvid's socket errors
    with pytest.raises(DvidConnectionError, match="timed out") as stalled:
        keyvalue.get_value(connection, dvid_node.uuid, "kv", "a")
    assert isinstance(stalled.value, OSError)
    # the accessor: the connection's timeout, deadline and app; its retry policy from retry_timeout
    Voxels.create(dvid_node, "g", np.uint8).write(np.full((32, 32, 32), 8, np.uint8), (0, 0, 0))
    accessor = VoxelsAccessor(connection, dvid_node.uuid, "g", retry_timeout=2.0, retry_interval=0.1)
    transport = accessor._client.transport
    assert (transport.timeout, transport.deadline, transport.app) == ((1.0, 1.0), 5.0, "my-script")
    assert transport.retry == RetryPolicy(total_seconds=2.0, backoff_base=0.1, backoff_cap=0.1)
    assert (accessor[0, 0:32, 0:32, 0:32] == 8).all()
