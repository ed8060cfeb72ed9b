"""numpy-style slicing of DVID volumes (reads and writes) against the real server.

The rule under test: slice bounds are absolute, signed DVID coordinates; open
bounds mean the stored bounding box; steps, newaxis and fancy indices are refused.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from dvid_store import DvidInputError
from dvid_store.datatypes.labels import Labelmap
from dvid_store.datatypes.voxels import RGBA8, Voxels

ORIGIN = (-32, -32, 0)
SHAPE = (64, 64, 96)


@pytest.fixture
def filled(dvid_node):
    """A uint16 volume holding a known array at a signed offset."""
    vol = Voxels.create(dvid_node, "g", np.uint16)
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    data = (z * 1000 + y * 10 + x % 10).astype(np.uint16)
    vol.write(data, ORIGIN)
    return vol, data


def local(z: slice, y: slice, x: slice) -> tuple[slice, slice, slice]:
    """DVID-coordinate slices → index slices into the reference array."""
    return tuple(slice(s.start - o, s.stop - o) for s, o in zip((z, y, x), ORIGIN))  # type: ignore[return-value]


def test_slices_are_absolute_signed_coordinates(filled) -> None:
    vol, data = filled
    got = vol[-10:5, -32:-20, 3:50]
    np.testing.assert_array_equal(got, data[local(slice(-10, 5), slice(-32, -20), slice(3, 50))])
    np.testing.assert_array_equal(got, vol.read(((-10, -32, 3), (5, -20, 50))))
    # a negative bound is a coordinate, not "from the end"
    assert vol[-1:0, -1:0, 0:1].shape == (1, 1, 1)
    assert vol[-1:0, -1:0, 0:1][0, 0, 0] == data[31, 31, 0]
    # step 1 is allowed
    np.testing.assert_array_equal(vol[0:4:1, 0:4, 0:4], data[32:36, 32:36, 0:4])


def test_open_bounds_use_the_stored_bounding_box(filled) -> None:
    vol, data = filled
    np.testing.assert_array_equal(vol[:, :, :], data)
    np.testing.assert_array_equal(vol[...], data)
    np.testing.assert_array_equal(vol[0:10], data[32:42])
    np.testing.assert_array_equal(vol[..., 90:], data[:, :, 90:])
    np.testing.assert_array_equal(vol[:-30, 20:, :5], data[:2, 52:, :5])
    np.testing.assert_array_equal(vol[5], data[37])


def test_integer_indices_drop_their_axis(filled) -> None:
    vol, data = filled
    assert vol[-32, 0:10, 0:10].shape == (10, 10)
    np.testing.assert_array_equal(vol[-32, 0:10, 0:10], data[0, 32:42, 0:10])
    np.testing.assert_array_equal(vol[0:3, -5, 7], data[32:35, 27, 7])
    assert vol[np.int64(3), np.int32(4), 5] == data[35, 36, 5]


def test_beyond_the_bounding_box_reads_zeros(filled) -> None:
    vol, data = filled
    got = vol[20:40, 20:40, 90:100]
    np.testing.assert_array_equal(got[:12, :12, :6], data[52:, 52:, 90:])
    assert not got[12:].any() and not got[:, 12:].any() and not got[:, :, 6:].any()


def test_empty_selections_behave_like_numpy(filled) -> None:
    vol, _ = filled
    assert vol[5:5, 0:3, 0:3].shape == (0, 3, 3)
    assert vol[5:2, 0:3, 0:3].shape == (0, 3, 3)
    sent = vol.transport.requests_sent
    vol[5:5, 0:32, 0:32] = np.zeros((0, 32, 32), np.uint16)  # nothing to write, nothing sent
    assert vol.transport.requests_sent == sent


def test_unsupported_indices_are_refused_clearly(filled) -> None:
    vol, _ = filled
    with pytest.raises(DvidInputError, match="step"):
        vol[0:10:2, 0:10, 0:10]
    with pytest.raises(DvidInputError, match="step"):
        vol[::-1]
    with pytest.raises(DvidInputError, match="newaxis"):
        vol[None, 0:10, 0:10]
    with pytest.raises(DvidInputError, match="ellipsis"):
        vol[..., 0:3, ...]
    with pytest.raises(DvidInputError, match="too many indices"):
        vol[0:1, 0:1, 0:1, 0:1]
    with pytest.raises(DvidInputError, match="fancy"):
        vol[[1, 2], 0:3, 0:3]
    with pytest.raises(DvidInputError, match="fancy"):
        vol[np.array([1, 2]), 0:3, 0:3]
    with pytest.raises(DvidInputError, match="integer"):
        vol[0.5:3, 0:3, 0:3]
    with pytest.raises(DvidInputError, match="boolean"):
        vol[True, 0:3, 0:3]
    with pytest.raises(DvidInputError, match="32-bit"):
        vol[2**31 : 2**31 + 2, 0:3, 0:3]


def test_open_bounds_need_a_bounding_box(dvid_node) -> None:
    vol = Voxels.create(dvid_node, "empty", np.uint8)
    with pytest.raises(DvidInputError, match="no stored bounding box"):
        vol[:, 0:10, 0:10]
    assert vol[0:2, 0:2, 0:2].shape == (2, 2, 2)


def test_setitem_writes_the_same_box(dvid_node) -> None:
    vol = Voxels.create(dvid_node, "g", np.uint8)
    data = np.random.default_rng(0).integers(0, 255, (32, 64, 32), dtype=np.uint8)
    vol[-32:0, 0:64, 32:64] = data
    np.testing.assert_array_equal(vol.read(((-32, 0, 32), (0, 64, 64))), data)
    # open bounds resolve against the bounding box, scalars broadcast
    vol[:, 0:32, :] = 9
    assert (vol[-32:0, 0:32, 32:64] == 9).all()
    np.testing.assert_array_equal(vol[-32:0, 32:64, 32:64], data[:, 32:])
    # a (1, y, x) value broadcasts over z, as numpy does
    vol[-32:0, 32:64, 32:64] = data[:1, 32:]
    np.testing.assert_array_equal(vol[-32:0, 32:64, 32:64], np.broadcast_to(data[:1, 32:], (32, 32, 32)))


def test_setitem_errors(dvid_node) -> None:
    vol = Voxels.create(dvid_node, "g", np.uint8)
    with pytest.raises(DvidInputError, match="shape"):
        vol[0:32, 0:32, 0:32] = np.zeros((16, 16, 16), np.uint8)
    with pytest.raises(DvidInputError, match="aligned"):
        vol[3, 0:32, 0:32] = np.zeros((32, 32), np.uint8)  # one plane is never block-aligned
    with pytest.raises(DvidInputError, match="uint8"):
        vol[0:32, 0:32, 0:32] = np.zeros((32, 32, 32), np.float32)
    rgba = Voxels.create(dvid_node, "c", RGBA8)
    with pytest.raises(DvidInputError, match="channel"):
        rgba[0:32, 0:32, 0:32, 0] = np.zeros((32, 32, 32), np.uint8)
    rgba[0:32, 0:32, 0:32, :] = np.full((32, 32, 32, 4), 3, np.uint8)
    assert (rgba[0:32, 0:32, 0:32, 1] == 3).all()


def test_with_options_slices_labels_at_a_scale_and_as_supervoxels(dvid_node) -> None:
    seg = Labelmap.create(dvid_node, "seg", max_downres_level=1)
    labels = np.zeros((64, 64, 128), np.uint64)
    labels[:, :, :64] = 1
    labels[:, :, 64:] = 2
    seg[0:64, 0:64, 0:128] = labels
    seg.wait_for_sizes({1: 64**3, 2: 64**3})
    seg.merge(1, [2])
    assert (seg[0:64, 0:64, 0:128] == 1).all()
    sv = seg.with_options(supervoxels=True)
    np.testing.assert_array_equal(sv[0:64, 0:64, 0:128], labels)
    low = seg.with_options(scale=1, supervoxels=True)
    assert low[...].shape == (32, 32, 64)  # the bounding box at scale 1
    np.testing.assert_array_equal(low[...], labels[::2, ::2, ::2])
    restored = pickle.loads(pickle.dumps(low))
    np.testing.assert_array_equal(restored[0:4, 0:4, 28:36], labels[:8:2, :8:2, 56:72:2])
    assert seg._slice_options == {}
    with pytest.raises(DvidInputError, match="scale=1"):
        low[0:64, 0:64, 0:64] = np.zeros((64, 64, 64), np.uint64)
    with pytest.raises(DvidInputError, match="supervoxels=True"):
        sv[0:64, 0:64, 0:64] = labels[:, :, :64]
    # transfer options apply to writes too where they exist (labels travel LZ4-compressed or not)
    plain = seg.with_options(compress=False)
    plain[0:64, 0:64, 0:64] = labels[:, :, 64:]
    np.testing.assert_array_equal(plain.with_options(supervoxels=True)[0:64, 0:64, 0:64], labels[:, :, 64:])


def test_read_only_transfer_options_do_not_block_voxel_writes(dvid_node) -> None:
    vol = Voxels.create(dvid_node, "g", np.uint8).with_options(compress=True)
    vol[0:32, 0:32, 0:32] = 5
    assert (vol[0:32, 0:32, 0:32] == 5).all()


def test_pydvid_style_keys_raise_index_error_instead_of_an_empty_axis(filled, dvid_node) -> None:
    vol, _ = filled
    sent = vol.transport.requests_sent
    # pydvid's [c, x, y, z] pasted as is: one index too many for (z, y, x)
    with pytest.raises(IndexError, match=r"too many indices.*vol\[30:130, 20:120, 10:110\]"):
        vol[:, 10:110, 20:120, 30:130]
    with pytest.raises(IndexError, match="too many indices"):
        vol[:, 10:110, 20:120, 30:130] = np.ones((1, 100, 100, 100), np.uint16)
    with pytest.raises(DvidInputError):  # still a DvidInputError: nothing was sent
        vol[0, 0, 0, 0]
    assert vol.transport.requests_sent == sent
    # on an rgba8 volume the 4th index is the channel: a slice past the 4 channels is refused
    rgba = Voxels.create(dvid_node, "c", RGBA8)
    rgba[0:64, 0:32, 0:32] = np.full((64, 32, 32, 4), 5, np.uint8)
    with pytest.raises(IndexError, match=r"selects none of them.*pydvid"):
        rgba[:, 10:110, 20:120, 30:130]
    with pytest.raises(IndexError, match="out of range for 4 channels"):
        rgba[0:2, 0:2, 0:2, 4]
    with pytest.raises(DvidInputError, match="integer or a slice"):
        rgba[0:2, 0:2, 0:2, [0, 1]]
    assert rgba[0:2, 0:2, 0:2, 1:3].shape == (2, 2, 2, 2)
    assert rgba[0:2, 0:2, 0:2, -1].shape == (2, 2, 2)
    assert rgba[0:2, 0:2, 0:2, -4:].shape == (2, 2, 2, 4)
