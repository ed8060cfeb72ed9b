"""The xarray backend (engine="dvid") and open_dataarray, against the real server."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from dvid_store import Node
from dvid_store.create import create_array
from dvid_store.dask import to_dvid
from dvid_store.dask_array import DvidArray
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
    url, data, _, _ = gray
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
    url, data, _, _ = gray
    ds = xr.open_dataset(url)
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone["gray"][3:5, 10:20, 7].values, data[3:5, 10:20, 7])


# ----------------------------------------------------- chunked coordinates (xarray bug)
# xarray (at least up to 2026.9.0) chunks RangeIndex-backed coordinates into dask arrays
# on .chunk() and open_dataset(chunks=...), and a scalar selection of one of them then
# computes to shape (1,) instead of (): .compute() raised "replacement data must match
# the Variable's shape" and float(coordinate) raised TypeError. The backend's coordinates
# are numpy-backed index variables, which xarray never chunks; these tests fail with
# RangeIndex coordinates on the affected versions.
OPENERS: dict[str, Callable[[str], xr.DataArray]] = {
    "open_dataset(chunks={})": lambda url: xr.open_dataset(url, engine="dvid", chunks={})["gray"],
    "open_dataset().chunk()": lambda url: xr.open_dataset(url, engine="dvid").chunk()["gray"],
    "open_dataset(chunks=(32, 64, 32))": lambda url: xr.open_dataset(
        url, engine="dvid", chunks={"z": 32, "y": 64, "x": 32}
    )["gray"],
    "open_dataarray(chunks={})": lambda url: open_dataarray(url, chunks={}),
    "open_dataarray().chunk()": lambda url: open_dataarray(url).chunk({"z": 16}),
}


@pytest.mark.parametrize("opener", list(OPENERS), ids=list(OPENERS))
def test_chunked_data_keep_in_memory_physical_coordinates(gray, opener: str) -> None:
    url, data, start, voxel = gray
    array = OPENERS[opener](url)
    assert isinstance(array.data, da.Array)
    z, y, x = 5, 17, 40
    position = {d: (start[i] + v) * voxel[i] for i, (d, v) in enumerate(zip("zyx", (z, y, x)))}

    # a scalar selection computes to a scalar, with scalar coordinates
    value = array.sel(**position).compute()
    assert value.shape == () and int(value) == data[z, y, x]
    assert all(value[d].shape == () and float(value[d]) == position[d] for d in "zyx")
    assert int(array.sel({d: p + 1.0 for d, p in position.items()}, method="nearest").compute()) == data[z, y, x]

    # the coordinate of a selected plane converts to float
    plane = array.sel(z=position["z"] + 0.3 * voxel[0], method="nearest")
    assert float(plane.z) == position["z"]
    np.testing.assert_array_equal(plane.compute().values, data[z])
    assert float(array.isel(z=3).z) == (start[0] + 3) * voxel[0]
    assert float(array.isel(y=-1).y) == (start[1] + data.shape[1] - 1) * voxel[1]

    # reductions keep their coordinates, as numbers
    profile = array.mean(["y", "x"]).compute()
    assert float(profile.sel(z=position["z"])) == pytest.approx(data[z].mean())
    part = array.sel(z=slice(position["z"], position["z"] + voxel[0]), x=slice(None, position["x"])).compute()
    np.testing.assert_array_equal(part.values, data[z : z + 2, :, : x + 1])

    # the cause: the coordinates stay numpy-backed indexes, never dask arrays
    for dim in "zyx":
        assert array[dim].chunks is None, f"coordinate {dim!r} became a dask array"
        assert isinstance(array.xindexes[dim], PhysicalIndex)


def test_selection_by_position_tolerates_rounding_only(gray) -> None:
    url, data, start, voxel = gray
    array = xr.open_dataset(url, engine="dvid")["gray"]
    z = 7
    exact = (start[0] + z) * voxel[0]
    # positions computed another way (e.g. 0.1 * 3 != 0.3) still name their voxel
    assert int(array.sel(z=exact * (1 + 1e-12), y=0.0, x=(start[2] + 0.1 * 30) * voxel[2])) == data[z, 0, 3]
    with pytest.raises(KeyError, match=r"is not a voxel position on 'z'.*method='nearest'"):
        array.sel(z=exact + 0.01 * voxel[0])
    with pytest.raises(KeyError, match="not a voxel position"):
        array.sel(z=[exact, exact + 0.5 * voxel[0]])
    positions = array.sel(z=[exact, exact + voxel[0]]).z.values
    np.testing.assert_array_equal(positions, [exact, exact + voxel[0]])
    # slices include both ends, within rounding, and nothing beyond
    assert array.sel(z=slice(exact * (1 + 1e-12), (exact + 2 * voxel[0]) * (1 - 1e-12))).sizes["z"] == 3
    assert array.sel(z=slice(exact + 0.01 * voxel[0], exact + 1.99 * voxel[0])).sizes["z"] == 1
    assert array.sel(z=slice(exact + 0.5 * voxel[0], exact + 0.6 * voxel[0])).sizes["z"] == 0
    # selections keep the index type, so exact selection keeps working on them
    part = array.isel(z=slice(2, None, 2)).sel(y=slice(0.0, 8.0 * 3))
    assert isinstance(part.xindexes["z"], PhysicalIndex) and isinstance(part.xindexes["y"], PhysicalIndex)
    assert int(part.sel(z=(start[0] + 4) * voxel[0], y=8.0, x=(start[2] + 1) * voxel[2])) == data[4, 1, 1]
    with pytest.raises(KeyError, match="not a voxel position"):
        part.sel(z=(start[0] + 3) * voxel[0])  # a voxel the selection skipped


def test_physical_index_on_its_own() -> None:
    index = PhysicalIndex.regular(-2.5, 0.5, 4, "x")
    np.testing.assert_array_equal(index.index.to_numpy(), [-2.5, -2.0, -1.5, -1.0])
    array = xr.DataArray(np.arange(4), dims="x", coords=xr.Coordinates(index.create_variables(), indexes={"x": index}))
    assert int(array.sel(x=-1.5)) == 2 and float(array.chunk().sel(x=-1.4, method="nearest").x) == -1.5
    with pytest.raises(ValueError, match="must be positive"):
        PhysicalIndex.regular(0.0, 0.0, 4, "x")


# ------------------------------------------------ selections of teravoxel instances
#: (z, y, x) voxels of a hemibrain-sized labelmap: 8,009,280 default (192³) dask chunks.
HEMIBRAIN = (34432, 39552, 41408)


def _graph_size(array: da.Array) -> int:
    """Tasks in ``array``'s graph, counted per layer (``len`` of a lazy dask layer does not build it)."""
    return sum(len(layer) for layer in array.__dask_graph__().layers.values())


@pytest.fixture
def huge(dvid_server, dvid_node: Node):
    """A hemibrain-sized labelmap of 8 nm voxels holding labels in one box: (URL, node, model of [0:256]³)."""
    create_array(dvid_node, "huge", HEMIBRAIN, "uint64", voxel_size=8.0)
    model = np.zeros((256, 256, 256), np.uint64)
    model[64:192, 128:256, 0:128] = np.random.default_rng(4).integers(1, 2**40, (128, 128, 128), dtype=np.uint64)
    to_dvid(model[64:192, 128:256, 0:128], dvid_node, "huge", offset=(64, 128, 0))
    url = f"dvid://{dvid_server.url.split('://', 1)[1]}/{dvid_node.uuid}/huge"
    return url, dvid_node, model


def _assert_region_graph(selected: xr.DataArray) -> None:
    """The selection's dask graph, and a reduction's optimised graph, grow with the selection only."""
    data = selected.data
    assert isinstance(data, da.Array)
    chunks = data.npartitions
    assert _graph_size(data) < 3 * chunks + 10  # checked without building the graph
    (optimized,) = dask.optimize(selected.sum().data)
    assert len(dict(optimized.__dask_graph__())) < 4 * chunks + 10


def test_selections_of_a_chunked_huge_instance_read_the_region_alone(huge) -> None:
    url, _, model = huge
    array = open_dataarray(url, chunks={})
    assert isinstance(array.data, DvidArray) and array.data.npartitions == 8_009_280
    box = np.s_[40:230, 100:250, 20:180]

    by_index = array.isel(z=slice(40, 230), y=slice(100, 250), x=slice(20, 180))
    assert isinstance(by_index.data, DvidArray)
    assert _graph_size(by_index.data) == by_index.data.npartitions + 1  # a task per chunk and the reader
    _assert_region_graph(by_index)
    np.testing.assert_array_equal(by_index.values, model[box])
    assert int(by_index.sum().compute()) == int(model[box].sum())

    # physical positions (8 nm voxels from 0): both ends included
    by_position = array.sel(z=slice(40 * 8.0, 229 * 8.0), y=slice(100 * 8.0, 249 * 8.0), x=slice(20 * 8.0, 179 * 8.0))
    assert by_position.data.name == by_index.data.name  # the same box: the same graph
    np.testing.assert_array_equal(by_position.values, model[box])

    plane = array.isel(z=150, y=slice(100, 250), x=slice(0, 200))  # an integer drops an axis: plain dask
    _assert_region_graph(plane)
    np.testing.assert_array_equal(plane.values, model[150, 100:250, :200])
    point = array.sel(z=150 * 8.0 + 3.0, y=130 * 8.0 - 2.0, x=100 * 8.0, method="nearest")
    _assert_region_graph(point)
    assert int(point.values) == model[150, 130, 100]
    profile = by_index.mean(["y", "x"])
    _assert_region_graph(profile)
    np.testing.assert_allclose(profile.values, model[box].mean(axis=(1, 2)))

    dataset = array.to_dataset().isel(z=slice(40, 230), y=slice(100, 250), x=slice(20, 180))
    _assert_region_graph(dataset["huge"])
    np.testing.assert_array_equal(dataset["huge"].values, model[box])


def test_selecting_before_chunking_the_engine_gives_region_graphs(huge) -> None:
    url, _, model = huge
    # xarray builds the dask array of open_dataset(chunks=...) itself, over the whole level;
    # selecting lazily first and chunking the selection keeps the graph to the region
    selected = xr.open_dataset(url, engine="dvid")["huge"].sel(z=slice(40 * 8.0, 229 * 8.0)).isel(
        y=slice(100, 250), x=slice(20, 180)
    ).chunk({"z": 64, "y": 64, "x": 64})
    _assert_region_graph(selected)
    np.testing.assert_array_equal(selected.values, model[40:230, 100:250, 20:180])


def test_engine_chunks_default_to_the_preferred_whole_block_chunks(dvid_server, dvid_node: Node) -> None:
    create_array(dvid_node, "big", (512, 512, 512), "uint8", block_size=32)  # no data needed
    url = f"dvid://{dvid_server.url.split('://', 1)[1]}/{dvid_node.uuid}/big"
    ds = xr.open_dataset(url, engine="dvid", chunks={})
    preferred = ds["big"].encoding["preferred_chunks"]
    assert ds["big"].data.chunksize == tuple(preferred[d] for d in "zyx")
    assert ds["big"].data.npartitions > 1  # not the whole level as one task
