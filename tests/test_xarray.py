"""The xarray backend (engine="dvid") and open_dataarray, against the real server."""

from __future__ import annotations

import pickle

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from dvid_store import Node
from dvid_store.create import create_array
from dvid_store.xarray_backend import DvidBackendEntrypoint, PhysicalIndex, open_dataarray


@pytest.fixture
def gray(dvid_server, dvid_node: Node):
    """uint8 data at negative coordinates with anisotropic voxels: (URL, data, start, voxel size)."""
    voxel = (40.0, 8.0, 4.0)
    start = (-64, 0, 32)
    data = np.random.default_rng(21).integers(0, 256, (64, 96, 96), dtype=np.uint8)
    box = (start, tuple(a + n for a, n in zip(start, data.shape)))
    create_array(dvid_node, "gray", box, "uint8", voxel_size=voxel)[:] = data  # the box is block aligned
    url = f"dvid://{dvid_server.url.split('://', 1)[1]}/{dvid_node.uuid}/gray"
    return url, data, start, voxel


def test_open_dataset_with_and_without_engine(gray) -> None:
    url, data, start, voxel = gray
    for ds in (xr.open_dataset(url), xr.open_dataset(url, engine="dvid")):
        array = ds["gray"]
        assert array.dims == ("z", "y", "x") and array.shape == data.shape
        for axis, dim in enumerate("zyx"):
            expected = (start[axis] + np.arange(data.shape[axis])) * voxel[axis]
            np.testing.assert_allclose(ds[dim].values, expected)
            assert isinstance(ds.xindexes[dim], PhysicalIndex)
            assert ds[dim].attrs["units"] == "nanometer"
        assert ds.attrs["voxel_size"] == list(voxel) and ds.attrs["offset"] == list(start)
        assert ds.attrs["voxel_units"] == ["nanometer"] * 3
        assert "units" not in array.attrs  # the values (intensities) have no length unit
        np.testing.assert_array_equal(array.values, data)
    assert DvidBackendEntrypoint().guess_can_open(url)
    assert not DvidBackendEntrypoint().guess_can_open("data.zarr")


def test_lazy_reads_and_physical_selection(gray, dvid_node: Node) -> None:
    url, data, start, voxel = gray
    array = open_dataarray(dvid_node, "gray")  # on the test's transport, to count its requests
    transport = dvid_node.transport
    z, y, x = 5, 17, 40
    position = {d: (start[i] + v) * voxel[i] for i, (d, v) in enumerate(zip("zyx", (z, y, x)))}
    before = transport.requests_sent
    assert int(array.sel(**position).values) == data[z, y, x]
    assert transport.requests_sent - before == 1  # one small box, not the volume
    ds = xr.open_dataset(url)
    assert int(ds["gray"].sel({k: v + 1.0 for k, v in position.items()}, method="nearest").values) == data[z, y, x]
    with pytest.raises(KeyError, match="nearest"):
        ds["gray"].sel(z=position["z"] + 1.0)
    part = ds["gray"].sel(z=slice(position["z"], position["z"] + 2 * voxel[0]), x=slice(position["x"], None))
    np.testing.assert_array_equal(part.values, data[z : z + 3, :, x:])


def test_chunks_give_dask_arrays_of_whole_blocks(gray) -> None:
    url, data, start, voxel = gray
    ds = xr.open_dataset(url, chunks={})
    assert isinstance(ds["gray"].data, da.Array)
    assert all(c % 32 == 0 for axis in ds["gray"].data.chunks for c in axis)
    np.testing.assert_array_equal(ds["gray"].values, data)
    array = open_dataarray(url, chunks=(32, 64, 96))
    assert array.data.chunksize == (32, 64, 96)
    np.testing.assert_array_equal(array.compute().values, data)


def test_labelmap_levels_and_supervoxels(dvid_node: Node) -> None:
    box = ((0, 64, 128), (128, 192, 256))
    create_array(dvid_node, "seg", box, "uint64", scales=1, voxel_size=8, block_size=32)[:] = 7
    level0 = open_dataarray(dvid_node, "seg")
    level1 = open_dataarray(dvid_node, "seg", scale=1, supervoxels=True)
    assert level1.shape == tuple(n // 2 for n in level0.shape)  # the box halves to whole 32-blocks
    assert level1.attrs["offset"] == [c // 2 for c in box[0]]
    # a level-1 voxel sits at the centre of the two level-0 voxels it covers
    np.testing.assert_allclose(level1["x"].values[:2], [(128 + 0.5) * 8, (130 + 0.5) * 8])
    assert level1.attrs["voxel_size"] == [16.0, 16.0, 16.0] and level1.attrs["supervoxels"] == 1
    np.testing.assert_array_equal(level1.values, 7)
    np.testing.assert_array_equal(level0.values, 7)


def test_lazy_dataset_pickles(gray) -> None:
    url, data, start, voxel = gray
    ds = xr.open_dataset(url)
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone["gray"][3:5, 10:20, 7].values, data[3:5, 10:20, 7])
