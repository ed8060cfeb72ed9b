"""DvidArray: compute() straight into one result on local schedulers, dask's way elsewhere."""

from __future__ import annotations

import pickle
import tracemalloc
from collections.abc import Callable

import dask
import dask.array as da
import numpy as np
import pytest

from dvid_store import DvidConnectionError, Node, RetryPolicy
from dvid_store.blocks import BlockIO
from dvid_store.create import create_array
from dvid_store.dask import open_dask, to_dvid
from dvid_store.dask_array import DvidArray
from dvid_store.testing import DvidServer


def _labels(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A few dozen ids, some beyond 32 bits, and background."""
    rng = np.random.default_rng(seed)
    ids = np.concatenate([[0], rng.integers(1, 2**40, 40, dtype=np.uint64)]).astype(np.uint64)
    return ids[rng.integers(0, len(ids), shape)]


def _peak_traced_bytes(fn: Callable[[], np.ndarray]) -> tuple[int, np.ndarray]:
    """Peak bytes allocated (numpy arrays are traced) while ``fn`` runs, and its result."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, result


@pytest.fixture
def labels_node(dvid_node: Node) -> tuple[Node, np.ndarray]:
    """A 128x128x192 labelmap of 32³ blocks at a negative origin, written whole."""
    start = (-64, 0, 32)
    data = _labels((128, 128, 192), 3)
    create_array(dvid_node, "seg", (start, tuple(s + n for s, n in zip(start, data.shape))), "uint64", block_size=32)
    to_dvid(data, dvid_node, "seg", offset=start)
    return dvid_node, data


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_compute_reads_into_one_result_with_a_request_per_chunk(labels_node, scheduler: str) -> None:
    node, data = labels_node
    array = open_dask(node, "seg", chunks=64)
    assert isinstance(array, DvidArray) and isinstance(array, da.Array)
    before = node.transport.requests_sent
    with dask.config.set(scheduler=scheduler):
        result = array.compute()
    np.testing.assert_array_equal(result, data)
    assert result.flags.c_contiguous and result.flags.writeable and result.flags.owndata
    assert node.transport.requests_sent - before == array.npartitions


def test_compute_holds_one_result_not_chunks_plus_result(labels_node) -> None:
    node, data = labels_node
    array = open_dask(node, "seg", chunks=32)  # 96 chunks: dask's assembly would hold them all
    peak, result = _peak_traced_bytes(lambda: array.compute(scheduler="threads"))
    np.testing.assert_array_equal(result, data)
    assert peak < 1.3 * data.nbytes
    # dask's own assembly of the same chunks (what DvidArray avoids) holds about two results
    dask_peak, dask_result = _peak_traced_bytes(lambda: dask.compute(array, scheduler="threads")[0])
    np.testing.assert_array_equal(dask_result, data)
    assert dask_peak > 1.8 * data.nbytes


def test_asarray_and_scheduler_options_take_the_same_path(labels_node) -> None:
    node, data = labels_node
    array = open_dask(node, "seg")
    np.testing.assert_array_equal(np.asarray(array), data)
    np.testing.assert_array_equal(array.compute(scheduler="threads", num_workers=1), data)
    with dask.config.set(scheduler="processes"):
        np.testing.assert_array_equal(array[:, :64].compute(), data[:, :64])  # dask's assembly, in processes


def test_absent_blocks_read_as_zeros(dvid_node: Node) -> None:
    create_array(dvid_node, "gray", (128, 128, 128), "uint8")
    io = BlockIO.open(dvid_node, "gray")
    block = np.full((32, 32, 32), 7, np.uint8)
    io.write({(1, 2, 3): block})
    model = np.zeros((128, 128, 128), np.uint8)
    model[32:64, 64:96, 96:128] = 7
    array = open_dask(dvid_node, "gray")
    np.testing.assert_array_equal(array.compute(), model)
    # the result starts as np.empty: each task must zero what DVID does not hold
    out = np.full(model.shape, 255, np.uint8)
    array.reader.read_into(np.s_[0:128, 0:128, 0:128], out[:, :, :])
    np.testing.assert_array_equal(out, model)


@pytest.mark.parametrize(
    "key",
    [
        np.s_[10:100, :, 40:],
        np.s_[..., 33:161],
        np.s_[:0],
        np.s_[-20:],
        np.s_[5:70, 0:128:1],
    ],
)
def test_slices_of_step_one_stay_dvid_arrays(labels_node, key) -> None:
    node, data = labels_node
    array = open_dask(node, "seg", chunks=64)
    part = array[key]
    assert isinstance(part, DvidArray)
    assert part.chunks == da.from_array(data, chunks=64)[key].chunks
    np.testing.assert_array_equal(part.compute(), data[key])
    np.testing.assert_array_equal(part[3:40, 1:].compute(), data[key][3:40, 1:])


@pytest.mark.parametrize(
    "operation",
    [lambda a: a[::2, 5:9], lambda a: a[5], lambda a: a[[1, 3]], lambda a: a + 1, lambda a: a.T],
)
def test_other_operations_are_plain_dask(labels_node, operation) -> None:
    node, data = labels_node
    result = operation(open_dask(node, "seg", chunks=64))
    assert type(result) is da.Array
    np.testing.assert_array_equal(result.compute(), operation(data))


def test_pickles_as_a_dvid_array(labels_node) -> None:
    node, data = labels_node
    part = open_dask(node, "seg")[20:90]
    restored = pickle.loads(pickle.dumps(part))
    assert isinstance(restored, DvidArray) and restored.start == part.start and restored.name == part.name
    np.testing.assert_array_equal(restored.compute(), data[20:90])


def test_server_down_raises_connection_error() -> None:
    with DvidServer() as server:
        # a short retry budget: what is tested is the error, not the default 30 s of patience
        node = server.client(retry=RetryPolicy(total_seconds=2)).create_repo("down")
        create_array(node, "gray", (64, 64, 64), "uint8")
        array = open_dask(node, "gray")
    with pytest.raises(DvidConnectionError):
        array.compute()


# ------------------------------------------- slices of teravoxel instances: region-sized graphs
#: (z, y, x) voxels of a hemibrain-sized labelmap: 8,009,280 default (192³) dask chunks.
HEMIBRAIN = (34432, 39552, 41408)


def _graph_size(array: da.Array) -> int:
    """Tasks in ``array``'s graph, counted per layer (``len`` of a lazy dask layer does not build it)."""
    return sum(len(layer) for layer in array.__dask_graph__().layers.values())


@pytest.fixture
def hemibrain(dvid_node: Node) -> tuple[Node, np.ndarray]:
    """A hemibrain-sized labelmap (DVID stores nothing for it) with labels in one box.

    Returns the node and a model of ``[0:384, 0:384, 0:384]``: the labels at
    ``[128:256, 64:192, 192:320]``, zeros elsewhere.
    """
    create_array(dvid_node, "huge", HEMIBRAIN, "uint64")
    model = np.zeros((384, 384, 384), np.uint64)
    model[128:256, 64:192, 192:320] = _labels((128, 128, 128), 7)
    to_dvid(model[128:256, 64:192, 192:320], dvid_node, "huge", offset=(128, 64, 192))
    return dvid_node, model


@pytest.mark.parametrize(
    ("chunks", "key"),
    [
        (None, np.s_[100:260, 50:200, 180:330]),  # default 192³ chunks, cut at both ends
        (64, np.s_[120:264, 60:200, 150:340]),  # 215 million chunks in the instance
    ],
)
def test_slices_of_a_huge_instance_have_graphs_of_the_region(hemibrain, chunks, key) -> None:
    node, model = hemibrain
    array = open_dask(node, "huge", chunks=chunks)
    part = array[key]
    assert isinstance(part, DvidArray)
    assert part.chunks == da.zeros(HEMIBRAIN, chunks=array.chunksize)[key].chunks  # dask's chunks of the slice
    # one task per chunk and the reader: checked without building any graph, then built
    assert _graph_size(part) == part.npartitions + 1
    assert len(dict(part.__dask_graph__())) == part.npartitions + 1
    total = part.sum()
    assert _graph_size(total) < 3 * part.npartitions + 10
    (optimized,) = dask.optimize(total)
    assert len(dict(optimized.__dask_graph__())) < 3 * part.npartitions + 10
    np.testing.assert_array_equal(part.compute(), model[key])
    assert total.compute() == model[key].sum()


def test_slices_of_slices_integers_and_steps_keep_region_graphs(hemibrain) -> None:
    node, model = hemibrain
    array = open_dask(node, "huge")
    outer = array[100:300, 40:240, 150:350]
    inner = outer[20:130, 10:160, 30:180]
    assert isinstance(inner, DvidArray) and inner.start == (120, 50, 180)
    assert _graph_size(inner) == inner.npartitions + 1
    np.testing.assert_array_equal(inner.compute(), model[120:230, 50:200, 180:330])
    # integers and steps: the box's graph, then dask's indexing of it (a plain dask array)
    for key in (np.s_[150, 60:200, 200:330], np.s_[130:250:7, 100, 190:330:3], np.s_[140:150, 70:80, 250]):
        picked = array[key]
        assert type(picked) is da.Array
        assert _graph_size(picked) < 3 * picked.npartitions + 10
        np.testing.assert_array_equal(picked.compute(), model[key])
    assert int(array[200, 100, 250].compute()) == model[200, 100, 250]


def test_equal_slices_have_equal_names(hemibrain) -> None:
    node, _ = hemibrain
    array = open_dask(node, "huge")
    key = np.s_[100:300, 40:240, 150:350]
    assert array[key].name == open_dask(node, "huge")[key].name  # deterministic across opens
    assert array[100:300][:, 40:240][..., 150:350].name == array[key].name  # however the box was reached
    assert array[key].name != array[100:300, 40:240, 150:351].name
    assert array[key].name != open_dask(node, "huge", chunks=64)[key].name
    assert array[key].name != open_dask(node, "huge", supervoxels=True)[key].name
    assert array[:, :, :] is array and array[...] is array
    slab = array[..., 200:300]  # whole along z and y: the slab's 180 x 206 chunks, not the instance's 8 million
    assert slab.npartitions == 180 * 206 and _graph_size(slab) == slab.npartitions + 1


def test_region_of_a_huge_instance_computes_into_one_result(hemibrain, monkeypatch) -> None:
    node, model = hemibrain
    import dvid_store.dask_array as dask_array

    fast_reads: list[tuple[int, ...]] = []
    read_into_result = dask_array.read_into_result

    def counting(reader, start, chunks, get, **options):  # type: ignore[no-untyped-def]
        fast_reads.append(tuple(sum(c) for c in chunks))
        return read_into_result(reader, start, chunks, get, **options)

    monkeypatch.setattr(dask_array, "read_into_result", counting)
    part = open_dask(node, "huge", chunks=64)[100:260, 50:200, 180:330]
    result = part.compute(scheduler="threads")
    assert fast_reads == [(160, 150, 150)]  # the box's own chunks, read into one result
    np.testing.assert_array_equal(result, model[100:260, 50:200, 180:330])
    np.testing.assert_array_equal(np.asarray(part), model[100:260, 50:200, 180:330])
    assert len(fast_reads) == 2


def test_region_of_a_huge_instance_pickles_small(hemibrain) -> None:
    node, model = hemibrain
    part = open_dask(node, "huge")[100:260, 50:200, 180:330]
    payload = pickle.dumps(part)
    assert len(payload) < 50_000  # the box's graph, not the instance's
    restored = pickle.loads(payload)
    assert isinstance(restored, DvidArray) and restored.name == part.name and restored.start == part.start
    assert restored[10:20].name == part[10:20].name  # slices of the copy keep deterministic names
    np.testing.assert_array_equal(restored.compute(), model[100:260, 50:200, 180:330])
