"""Model-based write tests of the compat layers: pydvid's VoxelsAccessor and libdvid's DVIDNodeService.

Hypothesis state machines (as in ``test_write_model.py``) write random boxes through
the compat layers to the real DVID server and to a numpy model, and compare after
every step:

* ``PydvidModel`` (a ``uint8blk`` made by pydvid's ``create_new`` with one uint8
  channel, or an ``rgba8blk`` with four) writes channel-first ``(c, x, y, z)`` arrays
  through slice assignment, ``VoxelsAccessor.post_ndarray`` and the module function
  ``voxels.post_ndarray``, at any offset and sign (blocks covered in part are merged:
  nothing outside the box may change), and for one channel also through libdvid's
  ``put_gray3D``, which takes block-aligned boxes only (libdvid's rule: an unaligned
  one is refused with ``ErrMsg`` and changes nothing).
* ``LabelModel`` (a ``labelmap`` made by libdvid's ``create_labelmap``) writes through
  ``put_labels3D`` (compressed or not, ``mutate`` or not) and pydvid's accessor; both
  take block-aligned boxes only, and unaligned ones are refused, changing nothing.

The model region starts below zero on every axis. After each step one read path
(taking turns among pydvid's ``get_ndarray``, pydvid slicing with steps, libdvid's
``get_gray3D`` / ``get_labels3D`` and dvid_store's node API) is compared with the
whole model; at the end of each example all of them are.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from test_write_model import _failing, _settings, assert_model, boxes

from dvid_store import DvidInputError, Node
from dvid_store.compat.libdvid import DVIDNodeService, ErrMsg
from dvid_store.compat.pydvid import voxels
from dvid_store.compat.pydvid.voxels import VoxelsAccessor, VoxelsMetadata

ZYX = tuple[int, int, int]
Box = tuple[ZYX, ZYX]

SEEDS = st.integers(0, 2**32 - 1)
_names = itertools.count()


def _shape(box: Box) -> ZYX:
    return tuple(b - a for a, b in zip(box[0], box[1]))  # type: ignore[return-value]


def _local(box: Box, origin: ZYX) -> tuple[slice, slice, slice]:
    return tuple(slice(a - o, b - o) for a, b, o in zip(box[0], box[1], origin))  # type: ignore[return-value]


def _cxyz(box: Box) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A (z, y, x) box as pydvid's channel-first start and stop, without the channel."""
    return tuple(reversed(box[0])), tuple(reversed(box[1]))


def _assert_model(got: np.ndarray, want: np.ndarray, origin: ZYX, what: str) -> None:
    """``assert_model`` for (z, y, x) and (z, y, x, c) arrays (the channel's index 0 is channel 0)."""
    assert_model(got, want, origin + (0,) * (want.ndim - 3), what)  # type: ignore[arg-type]


def _host(node: Node) -> str:
    return node.transport.base_url.split("://", 1)[1]


def _to_cxyz(zyx: np.ndarray) -> np.ndarray:
    """A (z, y, x[, c]) array as pydvid's (c, x, y, z)."""
    return zyx.T[np.newaxis] if zyx.ndim == 3 else zyx.transpose(3, 2, 1, 0)


def _from_cxyz(cxyz: np.ndarray) -> np.ndarray:
    return cxyz[0].T if cxyz.shape[0] == 1 else cxyz.transpose(3, 2, 1, 0)


# ------------------------------------------------------------------ pydvid volumes
GRAY_BLOCK: ZYX = (32, 32, 32)  # pydvid's create_new makes 32³ blocks
GRAY_REGION: Box = ((-32, -32, -32), (32, 32, 64))
STEPS = st.tuples(*(st.integers(1, 4),) * 3)


def pydvid_machine(channels: int) -> type[RuleBasedStateMachine]:
    region = GRAY_REGION
    any_box = boxes(region, GRAY_BLOCK)
    aligned = boxes(region, GRAY_BLOCK, aligned=True)
    unaligned = boxes(region, GRAY_BLOCK, aligned=False)

    class PydvidModel(RuleBasedStateMachine):
        """A volume made and written by pydvid (and libdvid, for one channel) and its numpy model."""

        def __init__(self, node: Node) -> None:
            super().__init__()
            self.node = node
            self.host = _host(node)
            self.name = f"pyd{channels}c{next(_names)}"
            meta = VoxelsMetadata.create_default_metadata((channels, 0, 0, 0), np.uint8, "cxyz", 1.0, "")
            voxels.create_new(self.host, node.uuid, self.name, meta)
            self.accessor = VoxelsAccessor(self.host, node.uuid, self.name)
            self.service = DVIDNodeService(self.host, node.uuid)
            self.origin = region[0]
            extra = () if channels == 1 else (channels,)
            self.model = np.zeros(_shape(region) + extra, np.uint8)
            self.steps = 0

        def data(self, box: Box, seed: int) -> np.ndarray:
            """The voxels of a write, (z, y, x[, c])."""
            extra = () if channels == 1 else (channels,)
            return np.random.default_rng(seed).integers(0, 256, _shape(box) + extra, dtype=np.uint8)

        def _apply(self, box: Box, data: np.ndarray) -> None:
            self.model[_local(box, self.origin)] = data

        # ------------------------------------------------------- writes
        @rule(box=any_box, seed=SEEDS)
        def slice_assignment(self, box: Box, seed: int) -> None:
            data = self.data(box, seed)
            (x0, y0, z0), (x1, y1, z1) = _cxyz(box)
            self.accessor[:, x0:x1, y0:y1, z0:z1] = _to_cxyz(data)
            self._apply(box, data)

        @rule(box=any_box, seed=SEEDS)
        def accessor_post_ndarray(self, box: Box, seed: int) -> None:
            data = self.data(box, seed)
            start, stop = _cxyz(box)
            self.accessor.post_ndarray((0, *start), (channels, *stop), _to_cxyz(data))
            self._apply(box, data)

        @rule(box=any_box, seed=SEEDS)
        def module_post_ndarray(self, box: Box, seed: int) -> None:
            data = self.data(box, seed)
            start, stop = _cxyz(box)
            meta = voxels.get_metadata(self.host, self.node.uuid, self.name)
            voxels.post_ndarray(self.host, self.node.uuid, self.name, "raw", meta, (0, *start), (channels, *stop),
                                _to_cxyz(data))
            self._apply(box, data)

        @rule(box=aligned, seed=SEEDS, throttle=st.booleans())
        def libdvid_put_gray3D(self, box: Box, seed: int, throttle: bool) -> None:
            data = self.data(box, seed)
            if channels != 1:  # libdvid's grayscale calls are uint8 grayscale only
                with pytest.raises(ErrMsg, match="uint8 grayscale"):
                    self.service.put_gray3D(self.name, data[..., 0].copy(), box[0], throttle)
                return
            self.service.put_gray3D(self.name, data, box[0], throttle)
            self._apply(box, data)

        @rule(box=unaligned, seed=SEEDS)
        def libdvid_put_gray3D_unaligned_is_refused(self, box: Box, seed: int) -> None:
            if channels != 1:
                return
            with pytest.raises(ErrMsg, match="block-aligned"):
                self.service.put_gray3D(self.name, self.data(box, seed), box[0])

        # -------------------------------------------------------- reads
        def _read_get_ndarray(self) -> np.ndarray:
            start, stop = _cxyz(region)
            return _from_cxyz(self.accessor.get_ndarray((0, *start), (channels, *stop)))

        def _read_node_api(self) -> np.ndarray:
            return self.node.voxels(self.name).read(region)

        def _read_libdvid(self) -> np.ndarray:
            if channels != 1:
                return self._read_node_api()
            return self.service.get_gray3D(self.name, _shape(region), region[0])

        def _read_libdvid_compressed(self) -> np.ndarray:
            if channels != 1:
                return self._read_get_ndarray()
            return self.service.get_gray3D(self.name, _shape(region), region[0], True, True)

        READS = ("_read_get_ndarray", "_read_libdvid", "_read_node_api")

        @invariant()
        def dvid_matches_model(self) -> None:
            reader = self.READS[self.steps % len(self.READS)]
            self.steps += 1
            _assert_model(getattr(self, reader)(), self.model, self.origin, f"read by {reader}")

        @rule(box=any_box, steps=STEPS, channel=st.integers(0, channels - 1))
        def sliced_read_matches_model(self, box: Box, steps: ZYX, channel: int) -> None:
            """pydvid's slicing with steps and a channel index: the model sliced the same way."""
            (x0, y0, z0), (x1, y1, z1) = _cxyz(box)
            sz, sy, sx = steps
            got = self.accessor[channel, x0:x1:sx, y0:y1:sy, z0:z1:sz]
            want = self.model[_local(box, self.origin)]
            want = (want if channels == 1 else want[..., channel]).T[::sx, ::sy, ::sz]
            assert got.shape == want.shape and np.array_equal(got, want), f"accessor[{channel}, {box}, steps {steps}]"

        def teardown(self) -> None:
            self.accessor._client.transport.close()
            if _failing():
                return
            for reader in (*self.READS, "_read_libdvid_compressed"):
                _assert_model(getattr(self, reader)(), self.model, self.origin, f"read by {reader} at the end")

    return PydvidModel


@pytest.mark.parametrize("channels", [1, 4], ids=["uint8", "rgba8"])
def test_pydvid_and_libdvid_gray_writes_match_model(dvid_node: Node, channels: int) -> None:
    machine = pydvid_machine(channels)
    run_state_machine_as_test(lambda: machine(dvid_node), settings=_settings(max_examples=15, steps=10))


# ------------------------------------------------------------------ labels
LABEL_BLOCK: ZYX = (16, 16, 16)
LABEL_REGION: Box = ((-32, -16, 0), (16, 32, 48))


def label_machine() -> type[RuleBasedStateMachine]:
    region = LABEL_REGION
    aligned = boxes(region, LABEL_BLOCK, aligned=True)
    unaligned = boxes(region, LABEL_BLOCK, aligned=False)

    class LabelModel(RuleBasedStateMachine):
        """A labelmap made by libdvid's create_labelmap, written by libdvid and pydvid, and its model."""

        def __init__(self, node: Node) -> None:
            super().__init__()
            self.node = node
            self.host = _host(node)
            self.name = f"lbl{next(_names)}"
            self.service = DVIDNodeService(self.host, node.uuid)
            assert self.service.create_labelmap(self.name, LABEL_BLOCK[0]) is True
            self.accessor = VoxelsAccessor(self.host, node.uuid, self.name)
            self.origin = region[0]
            self.model = np.zeros(_shape(region), np.uint64)
            self.counter = itertools.count(1)
            self.steps = 0

        def data(self, box: Box, seed: int, base: int) -> np.ndarray:
            """Fresh labels (and zeros): small ids, ids above 2**32, ids with the top bits set."""
            labels = np.array([0] + [base + next(self.counter) for _ in range(3)], np.uint64)
            return np.random.default_rng(seed).choice(labels, _shape(box))

        # ------------------------------------------------------- writes
        @rule(box=aligned, seed=SEEDS, base=st.sampled_from([0, 2**33, 2**63 + 2**62]), compress=st.booleans(),
              mutate=st.booleans())
        def libdvid_put_labels3D(self, box: Box, seed: int, base: int, compress: bool, mutate: bool) -> None:
            data = self.data(box, seed, base)
            self.service.put_labels3D(self.name, data, box[0], True, compress, None, mutate)
            self.model[_local(box, self.origin)] = data

        @rule(box=aligned, seed=SEEDS, base=st.sampled_from([0, 2**33, 2**63 + 2**62]), throttle=st.booleans())
        def libdvid_put_labelblocks3D(self, box: Box, seed: int, base: int, throttle: bool) -> None:
            data = self.data(box, seed, base)
            self.service.put_labelblocks3D(self.name, data, box[0], throttle)  # POST /blocks, DVID's block ingestion
            self.model[_local(box, self.origin)] = data

        @rule(box=unaligned, seed=SEEDS)
        def libdvid_put_labels3D_unaligned_is_refused(self, box: Box, seed: int) -> None:
            with pytest.raises(ErrMsg, match="block-aligned"):
                self.service.put_labels3D(self.name, self.data(box, seed, 0), box[0])

        @rule(box=aligned, seed=SEEDS)
        def pydvid_slice_assignment(self, box: Box, seed: int) -> None:
            data = self.data(box, seed, 2**40)
            (x0, y0, z0), (x1, y1, z1) = _cxyz(box)
            self.accessor[:, x0:x1, y0:y1, z0:z1] = _to_cxyz(data)
            self.model[_local(box, self.origin)] = data

        @rule(box=unaligned, seed=SEEDS)
        def pydvid_unaligned_is_refused(self, box: Box, seed: int) -> None:
            (x0, y0, z0), (x1, y1, z1) = _cxyz(box)
            with pytest.raises(DvidInputError, match="block-aligned"):
                self.accessor[:, x0:x1, y0:y1, z0:z1] = _to_cxyz(self.data(box, seed, 0))

        # -------------------------------------------------------- reads
        def _read_libdvid(self) -> np.ndarray:
            return self.service.get_labels3D(self.name, _shape(region), region[0])

        def _read_libdvid_uncompressed(self) -> np.ndarray:
            return self.service.get_labels3D(self.name, _shape(region), region[0], True, False, None, True)

        def _read_pydvid(self) -> np.ndarray:
            start, stop = _cxyz(region)
            return _from_cxyz(self.accessor.get_ndarray((0, *start), (1, *stop)))

        def _read_node_api(self) -> np.ndarray:
            return self.node.labelmap(self.name).read(region, supervoxels=True)

        READS = ("_read_libdvid", "_read_pydvid", "_read_node_api", "_read_libdvid_uncompressed")

        @invariant()
        def dvid_matches_model(self) -> None:
            reader = self.READS[self.steps % len(self.READS)]
            self.steps += 1
            assert_model(getattr(self, reader)(), self.model, self.origin, f"labels read by {reader}")

        @rule(point=st.tuples(*(st.integers(a, b - 1) for a, b in zip(*region))))
        def label_by_location(self, point: ZYX) -> None:
            want = int(self.model[tuple(p - o for p, o in zip(point, self.origin))])
            assert self.service.get_label_by_location(self.name, point, True) == want

        def teardown(self) -> None:
            self.accessor._client.transport.close()
            if _failing():
                return
            for reader in self.READS:
                assert_model(getattr(self, reader)(), self.model, self.origin, f"labels read by {reader} at the end")

    return LabelModel


def test_libdvid_and_pydvid_label_writes_match_model(dvid_node: Node) -> None:
    machine = label_machine()
    run_state_machine_as_test(lambda: machine(dvid_node), settings=_settings(max_examples=15, steps=10))
