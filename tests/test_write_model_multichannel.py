"""Model-based write tests of multichannel volumes (rgba8blk), and of unaligned node-API writes.

Like the machines of ``test_write_model.py`` (whose helpers this module uses), a
hypothesis state machine writes random boxes through every write path, to the real
DVID server and to a numpy model, and compares them after every step:

* ``VoxelModel`` over an ``rgba8blk`` instance, seen as ``(z, y, x, 4)`` uint8 arrays
  (channels R, G, B, A): ``to_dvid`` with numpy and dask arrays (dask chunks that
  split blocks and the channel axis, node or ``dvid://`` URL, explicit or default
  offset, source dtypes that convert losslessly), zarr slice assignment through a
  :class:`~dvid_store.DvidStore` and through ``dvid://`` URLs (whole voxels, one
  value, and one channel or a range of channels alone, which must leave the other
  channels as they were), ``dvid-store import`` of a ``(z, y, x, 4)`` ``.npy``,
  aligned node-API writes, unaligned node-API writes with ``merge_edges=True`` (the
  edge blocks are read, merged and written whole; every voxel outside the box keeps
  its value), both through ``write()`` and slicing (which also broadcasts one value or
  one voxel's channels), and unaligned node-API writes without it and one-channel
  node-API writes, which must be refused with :class:`~dvid_store.DvidInputError`
  and change nothing.
* The same machine over a ``uint8blk`` instance: ``test_write_model.GrayModel`` takes
  unaligned node-API writes only as refusals; here they are also written with
  ``merge_edges=True``, between all the other write paths.

zarr itself broadcasts only scalars (``z[box] = [r, g, b, a]`` fails inside zarr, for
any store), so one voxel's channels repeated over a box go through node-API slicing.

The instance's extents (the model region) start below zero on every axis. Each example
first stores random voxels in half, most or all of its blocks (straight through
``BlockIO``), leaving the others absent, and every comparison covers the whole region,
so the voxels around each written box, stored or absent, are checked too. After every
step one read path (taking turns: ``open_dask().compute()``, zarr through a
``DvidStore``, the node API's ``GET /raw``) is compared with the whole model; at the
end of each example all of them are, plus zarr through a ``dvid://`` URL, the node
API's ``/subvolblocks`` transfer, and each channel alone through zarr and dask.

``DVID_WRITE_MODEL_SHRINK=1`` and ``DVID_WRITE_MODEL_EXAMPLES=<factor>`` work as in
``test_write_model.py``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from test_write_model import (
    DASK_CHUNKS,
    SEEDS,
    SOURCE_DTYPES,
    ZYX,
    Box,
    VoxelReads,
    _cli_import,
    _failing,
    _local,
    _settings,
    _shape,
    _slices,
    _unique,
    _url,
    boxes,
)

from dvid_store import DvidInputError, Node
from dvid_store.blocks import BlockIO
from dvid_store.create import create_array
from dvid_store.dask import open_dask, to_dvid
from dvid_store.zarr import DvidStore

REGION: Box = ((-24, -16, -32), (8, 32, 32))  # 32 x 48 x 64 voxels
RGBA = "rgba8"
#: What node-API slicing assigns: whole voxels, one value, or one voxel (its channels) repeated.
WHOLE = ("array", "scalar", "pixel")
#: Channel keys of one-channel writes: one channel, or a range of them.
CHANNEL_KEYS = st.sampled_from([0, 1, 2, 3, slice(1, 3), slice(0, 3), slice(2, 4)])


def fills(channels: int) -> st.SearchStrategy[Any]:
    """None: random voxels; an int: every value; a tuple (rgba): one pixel, repeated."""
    constant = st.integers(0, 255)
    if channels == 1:
        return st.one_of(st.none(), constant)
    return st.one_of(st.none(), constant, st.tuples(*(constant,) * channels))


def assert_voxels(got: np.ndarray, want: np.ndarray, origin: ZYX, what: str) -> None:
    """``got`` equals the model ``want`` (channels last, if any; index 0 at DVID voxel ``origin``)."""
    assert got.shape == want.shape, f"{what}: shape {got.shape}, model {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, model {want.dtype}"
    if np.array_equal(got, want):
        return
    differs = got != want
    if differs.ndim > 3:  # a voxel differs if any of its channels does
        differs = differs.any(axis=tuple(range(3, differs.ndim)))
    diff = np.argwhere(differs)
    at = np.asarray(origin)
    lo, hi = diff.min(axis=0) + at, diff.max(axis=0) + at + 1
    samples = ", ".join(
        f"{tuple(int(c) for c in d + at)}: {got[tuple(d)].tolist()} (model {want[tuple(d)].tolist()})"
        for d in diff[:6]
    )
    raise AssertionError(
        f"{what}: {len(diff)} of {differs.size} voxels differ from the model, all within "
        f"{tuple(int(v) for v in lo)}–{tuple(int(v) for v in hi)} (z, y, x, DVID coordinates); e.g. {samples}"
    )


def voxel_machine(dtype: str, block: ZYX, compression: str) -> type[RuleBasedStateMachine]:
    """A state machine over a new instance of ``dtype`` ("rgba8" or "uint8") per example."""
    region = REGION
    channels = 4 if dtype == RGBA else 1
    trailing: tuple[int, ...] = (channels,) if dtype == RGBA else ()
    any_box = boxes(region, block)
    fill = fills(channels)

    def broadcast(data: np.ndarray, how: str) -> np.ndarray:
        """What node-API slicing is given: the voxels, one value, or one voxel's channels to repeat."""
        if how == "scalar":
            return data.reshape(-1)[0]
        if how == "pixel":
            return data.reshape((-1, *trailing))[0]
        return data

    def voxels(shape: ZYX, seed: int, value: Any) -> np.ndarray:
        if value is not None:
            return np.full(shape + trailing, value, np.uint8)
        return np.random.default_rng(seed).integers(0, 256, shape + trailing, dtype=np.uint8)

    class VoxelModel(VoxelReads, RuleBasedStateMachine):
        """An instance and its numpy model; each rule is one write path."""

        def __init__(self, node: Node, folder: Path) -> None:
            super().__init__()
            self.node = node
            self.folder = folder
            self.name = _unique("rgba" if channels > 1 else "gray")
            self.region = region
            self.origin = region[0]
            array = create_array(node, self.name, region, dtype, block_size=block, compression=compression)
            assert node.instances()[self.name] == ("rgba8blk" if channels > 1 else "uint8blk")
            assert tuple(array.attrs["dvid"]["offset"]) == self.origin
            assert array.shape == _shape(region) + trailing
            self.model = np.zeros(_shape(region) + trailing, np.uint8)
            self.steps = 0

        def _apply(self, box: Box, data: np.ndarray) -> None:
            self.model[_local(box, self.origin)] = data

        @initialize(seed=SEEDS, share=st.sampled_from([0.5, 0.8, 1.0]))
        def fill_blocks(self, seed, share) -> None:
            """Random voxels in a share of the blocks (straight through BlockIO), the others never written.

            So every write has stored voxels around it that must keep their values, and
            absent blocks (which read as 0) next to them.
            """
            rng = np.random.default_rng(seed)
            grid = [range(a // b, c // b) for a, c, b in zip(region[0], region[1], block)]
            blocks = {}
            for coord in itertools.product(*grid):
                if rng.random() < share:
                    blocks[coord] = rng.integers(1, 256, block + trailing, dtype=np.uint8)
                    start = tuple(c * b for c, b in zip(coord, block))
                    self._apply((start, tuple(s + b for s, b in zip(start, block))), blocks[coord])  # type: ignore[arg-type]
            BlockIO.open(self.node, self.name).write(blocks)

        # ------------------------------------------------------- writes
        @rule(box=any_box, seed=SEEDS, value=fill, through_url=st.booleans(), source=SOURCE_DTYPES)
        def to_dvid_numpy(self, box, seed, value, through_url, source) -> None:
            data = voxels(_shape(box), seed, value)
            target = (_url(self.node, self.name),) if through_url else (self.node, self.name)
            to_dvid(data.astype(source), *target, offset=box[0])
            self._apply(box, data)

        @rule(box=any_box, seed=SEEDS, value=fill, chunks=DASK_CHUNKS, channel_chunk=st.integers(1, channels))
        def to_dvid_dask(self, box, seed, value, chunks, channel_chunk) -> None:
            """Chunks that split blocks, and for rgba the channel axis: to_dvid rechunks them."""
            data = voxels(_shape(box), seed, value)
            source = da.from_array(data, chunks=chunks + ((channel_chunk,) if trailing else ()))
            to_dvid(source, self.node, self.name, offset=box[0])
            self._apply(box, data)

        @rule(
            shape=st.tuples(*(st.integers(1, b - a) for a, b in zip(*region))),
            seed=SEEDS, value=fill, chunks=DASK_CHUNKS,
        )
        def to_dvid_default_offset(self, shape, seed, value, chunks) -> None:
            """No offset: array[0, 0, 0] lands on index 0 of the level (its block-aligned minimum point)."""
            data = voxels(shape, seed, value)
            to_dvid(da.from_array(data, chunks=chunks + trailing), _url(self.node, self.name))
            self._apply((self.origin, tuple(o + n for o, n in zip(self.origin, shape))), data)  # type: ignore[arg-type]

        @rule(box=any_box, seed=SEEDS, value=fill, scalar=st.booleans())
        def zarr_store(self, box, seed, value, scalar) -> None:
            array = zarr.open_array(DvidStore(self.node, self.name, scale=0), mode="r+")
            data = voxels(_shape(box), seed, value)
            if scalar:  # zarr fills the selection with one value, every channel (it broadcasts scalars only)
                data = np.full_like(data, data.flat[0])
                array[_local(box, self.origin)] = data.flat[0]
            else:
                array[_local(box, self.origin)] = data
            self._apply(box, data)

        @rule(box=any_box, seed=SEEDS, value=fill)
        def zarr_url(self, box, seed, value) -> None:
            array = zarr.open_array(_url(self.node, self.name) + "/0", mode="r+")
            data = voxels(_shape(box), seed, value)
            array[_local(box, self.origin)] = data
            self._apply(box, data)

        @precondition(lambda self: channels > 1)
        @rule(box=any_box, seed=SEEDS, channel=CHANNEL_KEYS, through_url=st.booleans())
        def zarr_channels(self, box, seed, channel, through_url) -> None:
            """Some channels of a box: zarr merges them into the stored voxels; the others keep their values."""
            if through_url:
                array = zarr.open_array(_url(self.node, self.name) + "/0", mode="r+")
            else:
                array = zarr.open_array(DvidStore(self.node, self.name, scale=0), mode="r+")
            key = (*_local(box, self.origin), channel)
            data = voxels(_shape(box), seed, None)[..., channel]
            array[key] = data
            self.model[key] = data

        @rule(box=any_box, seed=SEEDS, value=fill)
        def cli_import(self, box, seed, value) -> None:
            data = voxels(_shape(box), seed, value)
            _cli_import(self.folder, data, _url(self.node, self.name), box[0])
            self._apply(box, data)

        @rule(box=boxes(region, block, aligned=True), seed=SEEDS, value=fill, how=st.sampled_from(WHOLE))
        def node_api_aligned(self, box, seed, value, how) -> None:
            data = voxels(_shape(box), seed, value)
            self.node.voxels(self.name)[_slices(box)] = broadcast(data, how)
            self._apply(box, data if how == "array" else np.broadcast_to(broadcast(data, how), data.shape))

        @rule(box=any_box, seed=SEEDS, value=fill, slicing=st.booleans(), how=st.sampled_from(WHOLE))
        def node_api_merge_edges(self, box, seed, value, slicing, how) -> None:
            """Any box, aligned or not: the blocks it covers in part are read, merged and written whole."""
            data = voxels(_shape(box), seed, value)
            volume = self.node.voxels(self.name)
            if how != "array":  # slicing broadcasts the value over the box
                volume.with_options(merge_edges=True)[_slices(box)] = broadcast(data, how)
                data = np.broadcast_to(broadcast(data, how), data.shape)
            elif slicing:
                volume.with_options(merge_edges=True)[_slices(box)] = data
            else:
                volume.write(data, box[0], merge_edges=True)
            self._apply(box, data)

        @rule(box=boxes(region, block, aligned=False), seed=SEEDS, value=fill)
        def node_api_unaligned_is_refused(self, box, seed, value) -> None:
            data = voxels(_shape(box), seed, value)
            with pytest.raises(DvidInputError, match="aligned"):
                self.node.voxels(self.name)[_slices(box)] = data
            # the model stays as it was; the invariant checks that DVID does too

        @precondition(lambda self: channels > 1)
        @rule(box=boxes(region, block, aligned=True), seed=SEEDS, channel=CHANNEL_KEYS)
        def node_api_one_channel_is_refused(self, box, seed, channel) -> None:
            """The node API writes whole voxels: a channel alone would have to be merged, and it does not."""
            data = voxels(_shape(box), seed, None)[..., channel]
            with pytest.raises(DvidInputError, match="writes cover all channels"):
                self.node.voxels(self.name).with_options(merge_edges=True)[(*_slices(box), channel)] = data

        # -------------------------------------------------------- reads
        def _read_channels(self) -> np.ndarray:
            """Each channel alone, through zarr (even channels) and dask (odd ones), stacked again."""
            array = zarr.open_array(DvidStore(self.node, self.name, scale=0), mode="r")
            lazy = open_dask(self.node, self.name)
            return np.stack([array[..., c] if c % 2 == 0 else lazy[..., c].compute() for c in range(channels)], -1)

        READS = ("_read_dask", "_read_zarr", "_read_raw")
        FINAL_READS = (*READS, "_read_zarr_url", "_read_subvolblocks", *(("_read_channels",) if trailing else ()))

        @invariant()
        def dvid_matches_model(self) -> None:
            """After every step, one read path (taking turns) returns the model's whole region."""
            reader = self.READS[self.steps % len(self.READS)]
            self.steps += 1
            assert_voxels(getattr(self, reader)(), self.model, self.origin, f"{dtype} read by {reader}")

        def teardown(self) -> None:
            if _failing():
                return
            for reader in self.FINAL_READS:
                assert_voxels(getattr(self, reader)(), self.model, self.origin, f"{dtype} read by {reader} at the end")

    return VoxelModel


@pytest.mark.parametrize(
    ("block", "compression"), [((8, 8, 8), "lz4"), ((8, 16, 32), "gzip")], ids=["8x8x8-lz4", "8x16x32-gzip"]
)
def test_rgba_writes_match_model(dvid_node: Node, tmp_path: Path, block: ZYX, compression: str) -> None:
    machine = voxel_machine(RGBA, block, compression)
    run_state_machine_as_test(lambda: machine(dvid_node, tmp_path), settings=_settings(max_examples=12, steps=8))


def test_grayscale_unaligned_node_api_writes_merge_edges_and_match_model(dvid_node: Node, tmp_path: Path) -> None:
    machine = voxel_machine("uint8", (8, 16, 16), "lz4")
    run_state_machine_as_test(lambda: machine(dvid_node, tmp_path), settings=_settings(max_examples=12, steps=8))
