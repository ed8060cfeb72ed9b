"""Model-based write tests: random sequences of writes, to DVID and to a numpy model.

Hypothesis state machines run against the real DVID server of the session:

* ``GrayModel`` (a ``uint8blk``) writes through every write path: ``to_dvid`` with
  numpy and with dask arrays (node or ``dvid://`` URL, explicit or default offset),
  zarr slice assignment through :class:`~dvid_store.DvidStore` and through
  ``dvid://`` URLs, ``dvid-store import`` of a ``.npy`` file, aligned node-API
  writes, and unaligned node-API writes, which must be refused with
  :class:`~dvid_store.DvidInputError` and change nothing.
* ``LabelModel`` (a ``labelmap``) writes fresh supervoxel ids through ``to_dvid``
  (numpy, dask), zarr (body-id and supervoxel views, store and URL), ``dvid-store
  import`` and the node API, and merges bodies. The model keeps the supervoxel
  volume and the supervoxel → body mapping. The semantics asserted: a write stores
  the values given, as supervoxel ids, inside the written box; every voxel outside
  the box keeps its supervoxel id bit for bit, whichever view the write went
  through; the body view is the supervoxels mapped through the merges.

Each machine runs with a cubic and a non-cubic block shape (small blocks, so boxes
span several of them; grayscale stored as LZ4 and as gzip). The model region is the
instance's whole extents, which start below zero on every axis, so every comparison
also covers the voxels outside each written box. After every step one read path
(taking turns: ``open_dask().compute()``, zarr through a ``DvidStore``, the node
API's ``GET /raw``) is compared with the whole model, for labelmaps in both views;
at the end of each example all read paths are (plus zarr through a ``dvid://`` URL
and a second node-API transfer encoding).

Hypothesis does not shrink failures here by default (every step talks to DVID, and
shrinking could take minutes); ``DVID_WRITE_MODEL_SHRINK=1`` turns shrinking on to
get a minimal failing sequence of steps, and ``DVID_WRITE_MODEL_EXAMPLES=<factor>``
multiplies the number of examples for a longer search.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from dvid_store import DvidInputError, Node
from dvid_store.cli import main as dvid_store_cli
from dvid_store.create import create_array
from dvid_store.dask import open_dask, to_dvid
from dvid_store.zarr import DvidStore

ZYX = tuple[int, int, int]
Box = tuple[ZYX, ZYX]

_SHRINK = os.environ.get("DVID_WRITE_MODEL_SHRINK") == "1"
_PHASES = tuple(Phase) if _SHRINK else (Phase.explicit, Phase.reuse, Phase.generate)
#: Multiplies the number of examples, for a longer search (``DVID_WRITE_MODEL_EXAMPLES=10``).
_MORE = float(os.environ.get("DVID_WRITE_MODEL_EXAMPLES", "1"))


def _settings(max_examples: int, steps: int) -> settings:
    return settings(
        max_examples=max(1, round(max_examples * _MORE)),
        stateful_step_count=steps,
        deadline=None,
        phases=_PHASES,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        print_blob=True,
    )


_names = itertools.count()


def _unique(prefix: str) -> str:
    """A new instance name (one instance per example, all on the test's node)."""
    return f"{prefix}{next(_names)}"


# ------------------------------------------------------------------ geometry
def _shape(box: Box) -> ZYX:
    return tuple(b - a for a, b in zip(box[0], box[1]))  # type: ignore[return-value]


def _aligned(box: Box, block: ZYX) -> bool:
    return all(c % b == 0 for corner in box for c, b in zip(corner, block))


def _local(box: Box, origin: ZYX) -> tuple[slice, slice, slice]:
    """Index of a DVID box in an array whose index 0 is the voxel ``origin``."""
    return tuple(slice(a - o, b - o) for a, b, o in zip(box[0], box[1], origin))  # type: ignore[return-value]


def _slices(box: Box) -> tuple[slice, slice, slice]:
    """The node API's index of a box: absolute DVID coordinates."""
    return tuple(slice(a, b) for a, b in zip(box[0], box[1]))  # type: ignore[return-value]


@st.composite
def boxes(draw, region: Box, block: ZYX, aligned: bool | None = None) -> Box:
    """A non-empty box inside ``region``: block aligned (True), anything (None) or not aligned (False)."""
    if aligned is None:
        aligned = draw(st.booleans())
    start, stop = [], []
    for r0, r1, b in zip(region[0], region[1], block):
        if aligned:
            n = (r1 - r0) // b
            i = draw(st.integers(0, n - 1))
            j = draw(st.integers(i + 1, n))
            start.append(r0 + i * b)
            stop.append(r0 + j * b)
        else:
            a = draw(st.integers(r0, r1 - 1))
            start.append(a)
            stop.append(draw(st.integers(a + 1, r1)))
    box: Box = (tuple(start), tuple(stop))  # type: ignore[assignment]
    if aligned is False and _aligned(box, block):  # move one corner off the grid
        axis = draw(st.integers(0, 2))
        lo = list(box[0])
        lo[axis] += 1 if lo[axis] + 1 < box[1][axis] else -1
        box = (tuple(lo), box[1])  # type: ignore[assignment]
    return box


def assert_model(got: np.ndarray, want: np.ndarray, origin: ZYX, what: str) -> None:
    """``got`` equals the model ``want`` (index 0 at DVID voxel ``origin``); else say where not."""
    assert got.shape == want.shape, f"{what}: shape {got.shape}, model {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, model {want.dtype}"
    if np.array_equal(got, want):
        return
    diff = np.argwhere(got != want)
    at = np.asarray(origin)
    lo, hi = diff.min(axis=0) + at, diff.max(axis=0) + at + 1
    samples = ", ".join(f"{tuple(int(c) for c in d + at)}: {got[tuple(d)]} (model {want[tuple(d)]})" for d in diff[:6])
    raise AssertionError(
        f"{what}: {len(diff)} of {want.size} voxels differ from the model, all within "
        f"{tuple(int(v) for v in lo)}–{tuple(int(v) for v in hi)} (z, y, x, DVID coordinates); e.g. {samples}"
    )


def _url(node: Node, instance: str) -> str:
    return f"dvid://{node.transport.base_url.split('://', 1)[1]}/{node.uuid}/{instance}"


def _cli_import(folder: Path, data: np.ndarray, url: str, start: ZYX) -> None:
    """``dvid-store import <file>.npy URL --offset z,y,x``, in this process."""
    path = folder / f"import{next(_names)}.npy"
    np.save(path, data)
    offset = ",".join(str(c) for c in start)
    code = dvid_store_cli(["import", str(path), url, f"--offset={offset}", "-q", "--journal", str(path) + ".journal"])
    assert code == 0, f"dvid-store import exited with {code}"
    path.unlink()


def _failing() -> bool:
    """Whether teardown runs because a step or check raised (then let that error be the one reported)."""
    return sys.exc_info()[1] is not None


SEEDS = st.integers(0, 2**32 - 1)
#: dask chunk shapes of the source array (to_dvid rechunks those that split blocks)
DASK_CHUNKS = st.tuples(*(st.integers(4, 40),) * 3)


# ------------------------------------------------------------------ grayscale
GRAY_REGION: Box = ((-16, -16, -32), (16, 32, 32))  # 32 x 48 x 64 voxels
GRAY_FILL = st.one_of(st.none(), st.integers(0, 255))  # None: random voxels, else a constant
#: dtypes of the source array: integers whose values fit are accepted and cast
SOURCE_DTYPES = st.sampled_from(["uint8", "uint16", "int64"])


def gray_data(shape: ZYX, seed: int, fill: int | None) -> np.ndarray:
    if fill is not None:
        return np.full(shape, fill, np.uint8)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


class VoxelReads:
    """The read paths of a uint8blk-family instance (``name`` on ``node``), each of the whole ``region``."""

    node: Node
    name: str
    origin: ZYX
    region: Box

    def _read_dask(self) -> np.ndarray:
        return open_dask(self.node, self.name).compute()

    def _read_zarr(self) -> np.ndarray:
        array = zarr.open_array(DvidStore(self.node, self.name, scale=0), mode="r")
        assert tuple(array.attrs["dvid"]["offset"]) == self.origin
        return array[:]

    def _read_zarr_url(self) -> np.ndarray:
        return zarr.open_array(_url(self.node, self.name) + "/0", mode="r")[:]

    def _read_raw(self) -> np.ndarray:  # GET /raw
        return self.node.voxels(self.name)[_slices(self.region)]

    def _read_subvolblocks(self) -> np.ndarray:  # GET /subvolblocks, decoded here
        return self.node.voxels(self.name).read(self.region, compress=True)


def gray_machine(block: ZYX, compression: str) -> type[RuleBasedStateMachine]:
    region = GRAY_REGION
    any_box = boxes(region, block)

    class GrayModel(VoxelReads, RuleBasedStateMachine):
        """A uint8blk instance and its numpy model; each rule is one write path."""

        def __init__(self, node: Node, folder: Path) -> None:
            super().__init__()
            self.node = node
            self.folder = folder
            self.name = _unique("gray")
            self.region = region
            self.origin = region[0]
            array = create_array(node, self.name, region, "uint8", block_size=block, compression=compression)
            assert tuple(array.attrs["dvid"]["offset"]) == self.origin
            assert array.chunks == tuple(b * k for b, k in zip(block, array.attrs["dvid"]["chunk_blocks"]))
            self.model = np.zeros(_shape(region), np.uint8)
            self.steps = 0

        def _apply(self, box: Box, data: np.ndarray) -> None:
            self.model[_local(box, self.origin)] = data

        # ------------------------------------------------------- writes
        @rule(box=any_box, seed=SEEDS, fill=GRAY_FILL, through_url=st.booleans(), dtype=SOURCE_DTYPES)
        def to_dvid_numpy(self, box, seed, fill, through_url, dtype) -> None:
            data = gray_data(_shape(box), seed, fill)
            if through_url:
                to_dvid(data.astype(dtype), _url(self.node, self.name), offset=box[0])
            else:
                to_dvid(data.astype(dtype), self.node, self.name, offset=box[0])
            self._apply(box, data)

        @rule(box=any_box, seed=SEEDS, fill=GRAY_FILL, chunks=DASK_CHUNKS, dtype=SOURCE_DTYPES)
        def to_dvid_dask(self, box, seed, fill, chunks, dtype) -> None:
            data = gray_data(_shape(box), seed, fill)
            to_dvid(da.from_array(data.astype(dtype), chunks=chunks), self.node, self.name, offset=box[0])
            self._apply(box, data)

        @rule(
            shape=st.tuples(*(st.integers(1, b - a) for a, b in zip(*region))),
            seed=SEEDS, fill=GRAY_FILL, chunks=DASK_CHUNKS,
        )
        def to_dvid_default_offset(self, shape, seed, fill, chunks) -> None:
            """No offset: array[0, 0, 0] lands on index 0 of the level (its block-aligned minimum point)."""
            data = gray_data(shape, seed, fill)
            to_dvid(da.from_array(data, chunks=chunks), _url(self.node, self.name))
            self._apply((self.origin, tuple(o + n for o, n in zip(self.origin, shape))), data)  # type: ignore[arg-type]

        @rule(box=any_box, seed=SEEDS, fill=GRAY_FILL, scalar=st.booleans())
        def zarr_store(self, box, seed, fill, scalar) -> None:
            array = zarr.open_array(DvidStore(self.node, self.name, scale=0), mode="r+")
            data = gray_data(_shape(box), seed, fill)
            if scalar:  # zarr fills the selection with one value
                array[_local(box, self.origin)] = data.flat[0]
                data = np.full(_shape(box), data.flat[0], np.uint8)
            else:
                array[_local(box, self.origin)] = data
            self._apply(box, data)

        @rule(box=any_box, seed=SEEDS, fill=GRAY_FILL)
        def zarr_url(self, box, seed, fill) -> None:
            array = zarr.open_array(_url(self.node, self.name) + "/0", mode="r+")
            data = gray_data(_shape(box), seed, fill)
            array[_local(box, self.origin)] = data
            self._apply(box, data)

        @rule(box=any_box, seed=SEEDS, fill=GRAY_FILL)
        def cli_import(self, box, seed, fill) -> None:
            data = gray_data(_shape(box), seed, fill)
            _cli_import(self.folder, data, _url(self.node, self.name), box[0])
            self._apply(box, data)

        @rule(box=boxes(region, block, aligned=True), seed=SEEDS, fill=GRAY_FILL)
        def node_api_aligned(self, box, seed, fill) -> None:
            data = gray_data(_shape(box), seed, fill)
            self.node.voxels(self.name)[_slices(box)] = data
            self._apply(box, data)

        @rule(box=boxes(region, block, aligned=False), seed=SEEDS, fill=GRAY_FILL)
        def node_api_unaligned_is_refused(self, box, seed, fill) -> None:
            data = gray_data(_shape(box), seed, fill)
            with pytest.raises(DvidInputError, match="aligned"):
                self.node.voxels(self.name)[_slices(box)] = data
            # the model stays as it was; the invariant checks that DVID does too

        # -------------------------------------------------------- reads
        READS = ("_read_dask", "_read_zarr", "_read_raw")

        @invariant()
        def dvid_matches_model(self) -> None:
            """After every step, one read path (taking turns) returns the model's whole region."""
            reader = self.READS[self.steps % len(self.READS)]
            self.steps += 1
            assert_model(getattr(self, reader)(), self.model, self.origin, f"grayscale read by {reader}")

        def teardown(self) -> None:
            if _failing():
                return
            for reader in (*self.READS, "_read_zarr_url", "_read_subvolblocks"):
                assert_model(getattr(self, reader)(), self.model, self.origin, f"grayscale read by {reader} at the end")

    return GrayModel


@pytest.mark.parametrize(
    ("block", "compression"), [((8, 8, 8), "lz4"), ((8, 16, 32), "gzip")], ids=["8x8x8-lz4", "8x16x32-gzip"]
)
def test_grayscale_writes_match_model(dvid_node: Node, tmp_path: Path, block: ZYX, compression: str) -> None:
    machine = gray_machine(block, compression)
    run_state_machine_as_test(lambda: machine(dvid_node, tmp_path), settings=_settings(max_examples=12, steps=8))


# ------------------------------------------------------------------ labelmap
LABEL_REGION: Box = ((-16, -32, -32), (16, 32, 16))  # 32 x 64 x 48 voxels
#: Where fresh ids start: small ids, ids above 2**32, ids with the top bits set.
ID_BASES = st.sampled_from([0, 2**33, 2**63 + 2**62])
LABEL_VALUES = st.fixed_dictionaries(
    {"seed": SEEDS, "count": st.integers(1, 3), "zeros": st.booleans(), "base": ID_BASES}
)
INDEX_TIMEOUT = 30.0


def label_machine(block: ZYX) -> type[RuleBasedStateMachine]:
    region = LABEL_REGION
    any_box = boxes(region, block)

    class LabelModel(RuleBasedStateMachine):
        """A labelmap instance and its model: supervoxel ids per voxel and the supervoxel → body mapping."""

        def __init__(self, node: Node, folder: Path) -> None:
            super().__init__()
            self.node = node
            self.folder = folder
            self.name = _unique("seg")
            self.origin = region[0]
            array = create_array(node, self.name, region, "uint64", block_size=block)
            assert tuple(array.attrs["dvid"]["offset"]) == self.origin
            assert array.chunks == tuple(b * k for b, k in zip(block, array.attrs["dvid"]["chunk_blocks"]))
            self.supervoxels = np.zeros(_shape(region), np.uint64)
            self.body_of: dict[int, int] = {}  # supervoxel -> body, for merged supervoxels only
            self.counter = itertools.count(1)
            self.steps = 0

        # -------------------------------------------------------- model
        def bodies(self) -> np.ndarray:
            """The model's body view: supervoxels mapped through the merges."""
            ids, inverse = np.unique(self.supervoxels, return_inverse=True)
            mapped = np.array([self.body_of.get(int(i), int(i)) for i in ids], dtype=np.uint64)
            return mapped[inverse.reshape(self.supervoxels.shape)]

        def body_sizes(self) -> dict[int, int]:
            ids, counts = np.unique(self.bodies(), return_counts=True)
            return {int(i): int(n) for i, n in zip(ids, counts) if i != 0}

        def make_data(self, shape: ZYX, values) -> np.ndarray:
            """Voxels of new supervoxel ids, never used before in this instance (and 0 if asked)."""
            labels = [values["base"] + next(self.counter) for _ in range(values["count"])]
            labels += [0] if values["zeros"] else []
            return np.random.default_rng(values["seed"]).choice(np.array(labels, np.uint64), shape)

        def _apply(self, box: Box, data: np.ndarray) -> None:
            self.supervoxels[_local(box, self.origin)] = data

        # ------------------------------------------------------- writes
        @rule(box=any_box, values=LABEL_VALUES, through_url=st.booleans())
        def to_dvid_numpy(self, box, values, through_url) -> None:
            data = self.make_data(_shape(box), values)
            if through_url:
                to_dvid(data, _url(self.node, self.name), offset=box[0])
            else:
                to_dvid(data, self.node, self.name, offset=box[0])
            self._apply(box, data)

        @rule(box=any_box, values=LABEL_VALUES, chunks=DASK_CHUNKS)
        def to_dvid_dask(self, box, values, chunks) -> None:
            data = self.make_data(_shape(box), values)
            to_dvid(da.from_array(data, chunks=chunks), self.node, self.name, offset=box[0])
            self._apply(box, data)

        @rule(box=any_box, values=LABEL_VALUES, supervoxel_view=st.booleans())
        def zarr_store(self, box, values, supervoxel_view) -> None:
            store = DvidStore(self.node, self.name, scale=0, supervoxels=supervoxel_view)
            array = zarr.open_array(store, mode="r+")
            data = self.make_data(_shape(box), values)
            array[_local(box, self.origin)] = data
            self._apply(box, data)

        @rule(box=any_box, values=LABEL_VALUES, supervoxel_view=st.booleans())
        def zarr_url(self, box, values, supervoxel_view) -> None:
            options = {"supervoxels": True} if supervoxel_view else {}
            array = zarr.open_array(_url(self.node, self.name) + "/0", mode="r+", storage_options=options)
            data = self.make_data(_shape(box), values)
            array[_local(box, self.origin)] = data
            self._apply(box, data)

        @rule(box=any_box, values=LABEL_VALUES)
        def cli_import(self, box, values) -> None:
            data = self.make_data(_shape(box), values)
            _cli_import(self.folder, data, _url(self.node, self.name), box[0])
            self._apply(box, data)

        @rule(box=boxes(region, block, aligned=True), values=LABEL_VALUES)
        def node_api_aligned(self, box, values) -> None:
            data = self.make_data(_shape(box), values)
            # mutate=True: overwrites update DVID's label index by difference (merges rely on it)
            self.node.labelmap(self.name).with_options(mutate=True)[_slices(box)] = data
            self._apply(box, data)

        @rule(box=boxes(region, block, aligned=False), values=LABEL_VALUES)
        def node_api_unaligned_is_refused(self, box, values) -> None:
            data = self.make_data(_shape(box), values)
            with pytest.raises(DvidInputError, match="aligned"):
                self.node.labelmap(self.name).with_options(mutate=True)[_slices(box)] = data

        @rule(box=boxes(region, block, aligned=True), values=LABEL_VALUES)
        def node_api_ingest(self, box, values) -> None:
            """``POST /blocks`` (downres=False): DVID indexes the blocks as new data, so only where none is."""
            if self.supervoxels[_local(box, self.origin)].any():
                return  # overwriting labels this way would leave DVID's sizes (which merges wait on) wrong
            data = self.make_data(_shape(box), values)
            self.node.labelmap(self.name).write(data, box[0], downres=False)
            self._apply(box, data)

        @precondition(lambda self: len(self.body_sizes()) >= 2)
        @rule(data=st.data())
        def merge(self, data) -> None:
            sizes = self.body_sizes()
            bodies = sorted(sizes)
            target = data.draw(st.sampled_from(bodies), label="target")
            others = data.draw(
                st.lists(st.sampled_from([b for b in bodies if b != target]), min_size=1, max_size=2, unique=True),
                label="others",
            )
            seg = self.node.labelmap(self.name)
            # DVID indexes labels after a write has answered; a merge needs its bodies indexed.
            seg.wait_for_sizes({b: sizes[b] for b in [target, *others]}, timeout=INDEX_TIMEOUT)
            seg.merge(target, others)
            for sv in np.unique(self.supervoxels).tolist():
                if self.body_of.get(sv, sv) in others:
                    self.body_of[sv] = target

        def _bodies_of_many(self) -> dict[int, list[int]]:
            """Bodies of two or more supervoxels in the volume, with those supervoxels."""
            groups: dict[int, list[int]] = {}
            for sv in np.unique(self.supervoxels).tolist():
                if sv:
                    groups.setdefault(self.body_of.get(sv, sv), []).append(sv)
            return {body: svs for body, svs in groups.items() if len(svs) >= 2}

        @precondition(lambda self: bool(self._bodies_of_many()))
        @rule(data=st.data())
        def cleave(self, data) -> None:
            groups = self._bodies_of_many()
            body = data.draw(st.sampled_from(sorted(groups)), label="body")
            moved = data.draw(
                st.lists(st.sampled_from(groups[body]), min_size=1, max_size=len(groups[body]) - 1, unique=True),
                label="moved",
            )
            seg = self.node.labelmap(self.name)
            seg.wait_for_sizes({body: self.body_sizes()[body]}, timeout=INDEX_TIMEOUT)
            new_body = seg.cleave(body, moved).cleaved_label
            assert new_body not in self.body_sizes()
            for sv in moved:
                self.body_of[sv] = new_body

        # -------------------------------------------------------- reads
        def _read_dask(self, supervoxels: bool) -> np.ndarray:
            return open_dask(self.node, self.name, supervoxels=supervoxels).compute()

        def _read_zarr(self, supervoxels: bool) -> np.ndarray:
            array = zarr.open_array(DvidStore(self.node, self.name, scale=0, supervoxels=supervoxels), mode="r")
            assert tuple(array.attrs["dvid"]["offset"]) == self.origin
            return array[:]

        def _read_zarr_url(self, supervoxels: bool) -> np.ndarray:
            options = {"supervoxels": True} if supervoxels else {}
            return zarr.open_array(_url(self.node, self.name) + "/0", mode="r", storage_options=options)[:]

        def _read_raw(self, supervoxels: bool) -> np.ndarray:  # GET /raw, LZ4
            return self.node.labelmap(self.name).with_options(supervoxels=supervoxels)[_slices(region)]

        def _read_raw_uncompressed(self, supervoxels: bool) -> np.ndarray:  # GET /raw, uncompressed
            return self.node.labelmap(self.name).read(region, supervoxels=supervoxels, compress=False)

        READS = ("_read_dask", "_read_zarr", "_read_raw")

        def _check(self, reader: str, when: str = "") -> None:
            read = getattr(self, reader)
            assert_model(read(True), self.supervoxels, self.origin, f"supervoxels read by {reader}{when}")
            assert_model(read(False), self.bodies(), self.origin, f"bodies read by {reader}{when}")

        @invariant()
        def dvid_matches_model(self) -> None:
            """After every step, one read path (taking turns) returns both views of the whole region."""
            reader = self.READS[self.steps % len(self.READS)]
            self.steps += 1
            self._check(reader)

        def teardown(self) -> None:
            if _failing():
                return
            for reader in (*self.READS, "_read_zarr_url", "_read_raw_uncompressed"):
                self._check(reader, " at the end")

    return LabelModel


@pytest.mark.parametrize("block", [(16, 16, 16), (16, 32, 16)], ids=["16x16x16", "16x32x16"])
def test_labelmap_writes_and_merges_match_model(dvid_node: Node, tmp_path: Path, block: ZYX) -> None:
    machine = label_machine(block)
    run_state_machine_as_test(lambda: machine(dvid_node, tmp_path), settings=_settings(max_examples=12, steps=8))
