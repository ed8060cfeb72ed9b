"""The DVID fixtures come from dvid_store's own pytest plugin (entry point ``pytest11``); the rest are here."""

import pytest

from dvid_store.blocks import BlockIO

pytest_plugins = ["pytester"]


@pytest.fixture
def written_blocks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Every block coordinate that BlockIO.write sends to DVID during the test."""
    sent: list[tuple[int, int, int]] = []
    write = BlockIO.write

    def recording(self: BlockIO, blocks, *args, **kwargs):
        sent.extend(tuple(int(v) for v in c) for c in dict(blocks))
        return write(self, blocks, *args, **kwargs)

    monkeypatch.setattr(BlockIO, "write", recording)
    return sent
