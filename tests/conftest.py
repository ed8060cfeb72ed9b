"""The DVID fixtures come from dvid_store's own pytest plugin (entry point ``pytest11``); the rest are here."""

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dvid_store import Node
from dvid_store.blocks import BlockIO
from dvid_store.datatypes.labelmap import Labelmap
from dvid_store.testing import DvidServer, FaultProxy

pytest_plugins = ["pytester"]


@pytest.fixture
def written_blocks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Every block coordinate that BlockIO.write or BlockIO.write_box sends to DVID during the test."""
    sent: list[tuple[int, int, int]] = []
    write, write_box = BlockIO.write, BlockIO.write_box

    def recording(self: BlockIO, blocks, *args, **kwargs):
        sent.extend(tuple(int(v) for v in c) for c in dict(blocks))
        return write(self, blocks, *args, **kwargs)

    def recording_box(self: BlockIO, data, start, *args, **kwargs):
        first = [s // b for s, b in zip(start, self.block_shape)]
        count = [n // b for n, b in zip(np.shape(data)[:3], self.block_shape)]
        sent.extend(tuple(f + i for f, i in zip(first, offset)) for offset in np.ndindex(*count))
        return write_box(self, data, start, *args, **kwargs)

    monkeypatch.setattr(BlockIO, "write", recording)
    monkeypatch.setattr(BlockIO, "write_box", recording_box)
    return sent


@pytest.fixture
def seg(dvid_node: Node) -> Labelmap:
    """Labelmap "seg" with supervoxels 7 (x >= 32), 9 (y >= 32, x < 32) and 11 (z, y, x < 32), each its own
    body, indexed; 0 elsewhere."""
    labels = np.zeros((64, 64, 64), np.uint64)
    labels[:, :, 32:] = 7
    labels[:, 32:, :32] = 9
    labels[:32, :32, :32] = 11
    seg = Labelmap.create(dvid_node, "seg")
    seg.write(labels, (0, 0, 0))
    seg.wait_for_sizes({label: int((labels == label).sum()) for label in (7, 9, 11)})
    return seg


@pytest.fixture
def env(dvid_server: DvidServer, dvid_node: Node, dvid_fault_proxy: FaultProxy, tmp_path: Path) -> Any:
    """A fault-matrix trial's world (``fault_matrix.Env``): the server, straight and through the proxy."""
    from fault_matrix import Env

    return Env(dvid_server, dvid_node, dvid_fault_proxy, tmp_path)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One fault kind × outcome table for every fault-matrix trial of the session."""
    matrix = sys.modules.get("fault_matrix")
    if matrix is not None:
        matrix.report(terminalreporter)
