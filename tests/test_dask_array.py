"""DvidArray: compute() straight into one result on local schedulers, dask's way elsewhere."""

from __future__ import annotations

import pickle
import tracemalloc
from collections.abc import Callable

import dask
import dask.array as da
import numpy as np
import pytest

from dvid_store import DvidConnectionError, Node
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
        node = server.client().create_repo("down")
        create_array(node, "gray", (64, 64, 64), "uint8")
        array = open_dask(node, "gray")
    with pytest.raises(DvidConnectionError):
        array.compute()
