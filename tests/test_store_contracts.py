"""zarr's own store contract (``zarr.testing.store.StoreTests``) run against DvidStore and a real DVID.

A DVID store holds exactly the keys of its array: the synthesised ``zarr.json`` and one
chunk ``c/<z>/<y>/<x>`` per DVID block, each chunk exactly one block of bytes. zarr's
tests that write arbitrary keys or values, delete, or expect an empty new store are
overridden below with the same check on keys a DVID store can hold, or, where a test
cannot hold for DVID by its nature, with a test of DvidStore's documented behaviour;
each override's docstring says why. Every other test of zarr's suite runs as zarr
wrote it.

zarr's suite is written for pytest-asyncio, which this project does not use: its
coroutine tests run here through :func:`asyncio.run` (see :func:`_run_coroutine_tests`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import pickle
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, cpu, default_buffer_prototype
from zarr.testing.store import StoreTests

from dvid_store import DvidInputError, Node, UnsupportedError
from dvid_store.blocks import BlockIO
from dvid_store.create import create_array
from dvid_store.zarr import DvidStore

BLOCK = 16
NBYTES = BLOCK**3
ALL_CHUNKS = [f"c/{z}/{y}/{x}" for z in range(2) for y in range(2) for x in range(2)]

C = TypeVar("C", bound=type)


def _run_coroutine_tests(cls: C) -> C:
    """Give every ``async def test_*`` of ``cls`` (inherited ones too) a synchronous twin.

    ``functools.wraps`` keeps the signature (fixtures) and the parametrize marks.
    """
    for name in dir(cls):
        test = getattr(cls, name)
        if name.startswith("test_") and inspect.iscoroutinefunction(test):
            setattr(cls, name, _synchronous(test))
    return cls


def _synchronous(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def _block(seed: int) -> bytes:
    return np.random.default_rng(seed).integers(1, 256, NBYTES, dtype=np.uint8).tobytes()


def _buffer(data: bytes) -> Buffer:
    return cpu.Buffer.from_bytes(data)


def _coord(key: str) -> tuple[int, int, int]:
    """Block coordinate of a chunk key of the test array (its origin is block 0, 0, 0)."""
    _, z, y, x = key.split("/")
    return int(z), int(y), int(x)


async def _collect(keys: AsyncIterator[str]) -> list[str]:
    return sorted([key async for key in keys])


@_run_coroutine_tests
class TestDvidStoreContract(StoreTests[DvidStore, cpu.Buffer]):
    """A uint8 instance of 2 x 2 x 2 blocks of 16³, opened as its level-0 array."""

    store_cls = DvidStore
    buffer_cls = cpu.Buffer

    # ------------------------------------------------------------ fixtures
    @pytest.fixture
    def store_kwargs(self, dvid_node: Node) -> dict[str, Any]:
        create_array(dvid_node, "gray", (2 * BLOCK, 2 * BLOCK, 2 * BLOCK), "uint8", block_size=BLOCK)
        # zarr's store tests write one block-sized value per key: a chunk per block
        return {"node": dvid_node, "instance": "gray", "scale": 0, "chunk_blocks": 1}

    @pytest.fixture
    def store(self, open_kwargs: dict[str, Any]) -> DvidStore:
        return asyncio.run(self.store_cls.open(**open_kwargs))

    @pytest.fixture
    def store_not_open(self, store_kwargs: dict[str, Any]) -> DvidStore:
        return self.store_cls(**store_kwargs)

    # Writes and reads that bypass the store: DVID's blocks through BlockIO.
    async def set(self, store: DvidStore, key: str, value: Buffer) -> None:
        data = np.frombuffer(value.to_bytes(), np.uint8).reshape(BLOCK, BLOCK, BLOCK)
        BlockIO.open(store.node, store.instance).write({_coord(key): data})

    async def get(self, store: DvidStore, key: str) -> Buffer:
        found = BlockIO.open(store.node, store.instance).read([_coord(key)])
        assert _coord(key) in found, f"DVID holds no block for {key}"
        return _buffer(found[_coord(key)].tobytes())

    def _document(self, store: DvidStore) -> bytes:
        return store._docs["zarr.json"]

    # ---------------------------------------------------- abstract in zarr
    def test_store_repr(self, store: DvidStore) -> None:
        head = f"DvidStore({store.layout.server!r}, {store.node.uuid[:8]!r}, 'gray'"
        expected = head + ", scale=0, chunk_blocks=(1, 1, 1))"
        assert repr(store) == expected

    def test_store_supports_writes(self, store: DvidStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: DvidStore) -> None:
        assert store.supports_listing

    # ----------------------------------------------------- opening, pickling
    async def test_store_context_manager(self, open_kwargs: dict[str, Any]) -> None:
        """A DvidStore is open from construction, and opening it again does not raise.

        It has nothing to open (connections belong to the node's transport; the layout
        is read by the constructor), and ``Store.open`` constructs and then opens, so
        zarr's "store is already open" would make ``DvidStore.open`` always fail.
        Closing marks it closed; zarr's ``_ensure_open`` opens it again.
        """
        with await self.store_cls.open(**open_kwargs) as store:
            assert store._is_open
            await store._open()
            assert store._is_open
        assert not store._is_open
        await store._ensure_open()
        assert store._is_open

    async def test_with_read_only_store(self, open_kwargs: dict[str, Any]) -> None:
        """zarr's test with whole blocks as values, and ``with_read_only`` returning an open store.

        zarr expects the copy unopened; a DvidStore is open from construction (see
        :meth:`test_store_context_manager`). A chunk deleted through the writable copy
        becomes a zero block (DVID has no block delete).
        """
        store = await self.store_cls.open(**{**open_kwargs, "read_only": True})
        assert store.read_only
        message = "store was opened in read-only mode and does not support writing"
        with pytest.raises(ValueError, match=message):
            await store.set("c/0/0/0", _buffer(_block(1)))
        writer = store.with_read_only(read_only=False)
        assert writer._is_open and not writer.read_only
        await writer.set("c/0/0/0", _buffer(_block(1)))
        await writer.delete("c/0/0/0")
        assert (await self.get(store, "c/0/0/0")).to_bytes() == bytes(NBYTES)
        for reader in (store, store.with_read_only(read_only=True)):
            assert reader.read_only and reader._is_open
            with pytest.raises(ValueError, match=message):
                await reader.set("c/0/0/0", _buffer(_block(2)))
            with pytest.raises(ValueError, match=message):
                await reader.delete("c/0/0/0")

    async def test_serializable_store(self, store: DvidStore) -> None:
        """zarr's test with a whole block written under a chunk key instead of ``foo``."""
        clone: DvidStore = pickle.loads(pickle.dumps(store))
        assert clone == store and clone.read_only == store.read_only
        await store.set("c/1/0/1", _buffer(_block(3)))
        observed = await clone.get("c/1/0/1", prototype=default_buffer_prototype())
        assert observed is not None and observed.to_bytes() == _block(3)

    # ---------------------------------------------------------------- reads
    @pytest.mark.parametrize("key", ["c/0/0/0", "c/1/0/1", "zarr.json"])
    @pytest.mark.parametrize(
        "byte_range",
        [None, RangeByteRequest(1, 4), OffsetByteRequest(1), SuffixByteRequest(1), RangeByteRequest(3, 10**6)],
    )
    async def test_get(self, store: DvidStore, key: str, byte_range: Any) -> None:
        """zarr's test on the keys a DVID store holds: chunks of one whole block, and ``zarr.json``.

        zarr's keys (``c/0``, ``foo/c/0.0``) and values (4 or 0 bytes) cannot be stored
        in DVID; a chunk is a block and the metadata is synthesised.
        """
        if key == "zarr.json":
            data = self._document(store)
        else:
            data = _block(sum(_coord(key)))
            await self.set(store, key, _buffer(data))
        observed = await store.get(key, prototype=default_buffer_prototype(), byte_range=byte_range)
        assert observed is not None
        if byte_range is None:
            expected = data
        elif isinstance(byte_range, RangeByteRequest):
            expected = data[byte_range.start : byte_range.end]
        elif isinstance(byte_range, OffsetByteRequest):
            expected = data[byte_range.offset :]
        else:
            expected = data[-byte_range.suffix :]
        assert observed.to_bytes() == expected

    async def test_get_not_open(self, store_not_open: DvidStore) -> None:
        """A new DvidStore is already open (see :meth:`test_store_context_manager`) and reads."""
        assert store_not_open._is_open
        await self.set(store_not_open, "c/0/0/0", _buffer(_block(4)))
        observed = await store_not_open.get("c/0/0/0", prototype=default_buffer_prototype())
        assert observed is not None and observed.to_bytes() == _block(4)

    async def test_get_raises(self, store: DvidStore) -> None:
        """zarr's test (its error text included) on a stored chunk and on the metadata; nothing is sent."""
        await self.set(store, "c/0/0/0", _buffer(_block(5)))
        transport = store.node.transport
        before = transport.requests_sent
        for key in ("c/0/0/0", "zarr.json"):
            with pytest.raises((ValueError, TypeError), match=r"Unexpected byte_range, got.*"):
                await store.get(key, prototype=default_buffer_prototype(), byte_range=(0, 2))  # type: ignore[arg-type]
        assert transport.requests_sent == before

    async def test_get_missing(self, store: DvidStore) -> None:
        """Not in zarr's suite: absent blocks and keys outside the grid read as ``None`` (fill value)."""
        for key in ("c/0/1/1", "c/2/0/0", "c/0/0", "foo", "zarr.json/x", ".zarray"):
            assert await store.get(key, prototype=default_buffer_prototype()) is None

    async def test_get_many(self, store: DvidStore) -> None:
        """zarr's test with the eight chunks of the array instead of keys ``"0"`` ... ``"9"``."""
        for i, key in enumerate(ALL_CHUNKS):
            await self.set(store, key, _buffer(_block(i)))
        requests = [(key, default_buffer_prototype(), None) for key in ALL_CHUNKS]
        observed = {key: value async for key, value in store._get_many(requests)}
        assert {k: v.to_bytes() for k, v in observed.items() if v is not None} == {
            key: _block(i) for i, key in enumerate(ALL_CHUNKS)
        }

    async def test_getsize(self, store: DvidStore) -> None:  # type: ignore[override]  # no key/data params
        """zarr's test on DVID's keys: a chunk is one block; the metadata is its document."""
        await self.set(store, "c/1/1/0", _buffer(_block(6)))
        assert await store.getsize("c/1/1/0") == NBYTES
        assert await store.getsize("zarr.json") == len(self._document(store))
        with pytest.raises(FileNotFoundError):
            await store.getsize("c/0/0/1")  # no block stored there

    async def test_getsize_prefix(self, store: DvidStore) -> None:
        """zarr's test with four whole blocks."""
        keys = ["c/0/0/0", "c/0/0/1", "c/1/0/0", "c/1/1/1"]
        await store._set_many([(key, _buffer(_block(i))) for i, key in enumerate(keys)])
        assert await store.getsize_prefix("c") == 4 * NBYTES

    async def test_get_partial_values(self, store: DvidStore) -> None:  # type: ignore[override]  # fixed ranges
        """zarr's test with chunks and ``zarr.json`` (the chunk reads share one request)."""
        keys = ["c/0/0/0", "c/0/0/1", "c/0/1/0"]
        for i, key in enumerate(keys):
            await self.set(store, key, _buffer(_block(10 + i)))
        key_ranges: list[tuple[str, ByteRequest | None]] = [
            ("c/0/0/0", RangeByteRequest(0, 2)),
            ("c/0/0/1", SuffixByteRequest(2)),
            ("c/0/1/0", OffsetByteRequest(2)),
            ("zarr.json", None),
        ]
        transport = store.node.transport
        before = transport.requests_sent
        observed = await store.get_partial_values(default_buffer_prototype(), key_ranges)
        assert transport.requests_sent - before == 1
        for (key, byte_range), value in zip(key_ranges, observed):
            expected = await store.get(key, prototype=default_buffer_prototype(), byte_range=byte_range)
            assert value is not None and expected is not None and value.to_bytes() == expected.to_bytes()

    async def test_exists(self, store: DvidStore) -> None:
        """zarr's test on DVID's keys: ``zarr.json`` exists from the start; a chunk once DVID holds its block."""
        assert not await store.exists("foo")
        assert not await store.exists("foo/zarr.json")
        assert await store.exists("zarr.json")
        assert not await store.exists("c/0/1/0")
        await store.set("c/0/1/0", _buffer(_block(7)))
        assert await store.exists("c/0/1/0")
        assert not await store.exists("c/5/0/0")  # outside the chunk grid

    async def test_get_bytes(self, store: DvidStore) -> None:
        """zarr's test reading the synthesised ``zarr.json`` (a DVID store's metadata cannot be written).

        Through zarr's ``Store._get_bytes`` helper where this zarr has it (3.1.6 and later), else
        through ``get``, which that helper wraps.
        """
        assert await _get_bytes(store, "zarr.json") == self._document(store)
        with pytest.raises(FileNotFoundError):
            await _get_bytes(store, "nonexistent_key")

    def test_get_bytes_sync(self, store: DvidStore) -> None:
        """Like :meth:`test_get_bytes`, through zarr's synchronous helper where it exists."""
        getter = getattr(store, "_get_bytes_sync", None)
        got = getter("zarr.json", prototype=default_buffer_prototype()) if getter else asyncio.run(
            _get_bytes(store, "zarr.json")
        )
        assert got == self._document(store)

    async def test_get_json(self, store: DvidStore) -> None:
        """zarr's test reading the synthesised ``zarr.json``."""
        document = json.loads(await _get_bytes(store, "zarr.json"))
        assert document == json.loads(self._document(store))
        assert document["node_type"] == "array" and document["shape"] == [2 * BLOCK] * 3

    def test_get_json_sync(self, store: DvidStore) -> None:
        """Like :meth:`test_get_json`, through zarr's synchronous helper where it exists."""
        getter = getattr(store, "_get_json_sync", None)
        got = getter("zarr.json", prototype=default_buffer_prototype()) if getter else json.loads(
            asyncio.run(_get_bytes(store, "zarr.json"))
        )
        assert got == json.loads(self._document(store))

    # --------------------------------------------------------------- writes
    async def test_set(self, store: DvidStore) -> None:  # type: ignore[override]  # no key/data params
        """zarr's test on DVID's keys; the values zarr writes there are refused, saying why.

        A chunk takes exactly one block of bytes; ``zarr.json`` takes only the document
        the store synthesises (rewriting it unchanged is allowed, as zarr does); other
        keys do not exist in a DVID store.
        """
        assert not store.read_only
        await store.set("c/1/1/1", _buffer(_block(8)))
        assert (await self.get(store, "c/1/1/1")).to_bytes() == _block(8)
        await store.set("zarr.json", _buffer(self._document(store)))
        with pytest.raises(DvidInputError, match="cannot be changed"):
            await store.set("zarr.json", _buffer(b'{"zarr_format": 3, "node_type": "group"}'))
        with pytest.raises(DvidInputError, match="whole chunk"):
            await store.set("c/0/0/0", _buffer(b"\x01\x02\x03\x04"))
        for key in ("c/0", "foo/c/0.0", "foo/0/0", "c/2/0/0"):
            with pytest.raises(DvidInputError, match="not a chunk"):
                await store.set(key, _buffer(_block(9)))

    async def test_set_not_open(self, store_not_open: DvidStore) -> None:
        """A new DvidStore is already open (see :meth:`test_store_context_manager`) and writes."""
        assert store_not_open._is_open
        await store_not_open.set("c/0/0/1", _buffer(_block(11)))
        assert (await self.get(store_not_open, "c/0/0/1")).to_bytes() == _block(11)

    async def test_set_many(self, store: DvidStore) -> None:
        """zarr's test with chunks and the unchanged ``zarr.json``; the chunks go in one request."""
        values = {key: _buffer(_block(20 + i)) for i, key in enumerate(ALL_CHUNKS)}
        transport = store.node.transport
        before = transport.requests_sent
        await store._set_many([("zarr.json", _buffer(self._document(store))), *values.items()])
        assert transport.requests_sent - before == 1
        for key, value in values.items():
            assert (await self.get(store, key)).to_bytes() == value.to_bytes()

    async def test_set_if_not_exists(self, store: DvidStore) -> None:
        """zarr's test with whole blocks; a zero block written by ``delete`` counts as existing."""
        await self.set(store, "c/0/0/0", _buffer(_block(30)))
        await store.set_if_not_exists("c/0/0/0", _buffer(_block(31)))
        assert (await self.get(store, "c/0/0/0")).to_bytes() == _block(30)
        await store.set_if_not_exists("c/0/1/1", _buffer(_block(31)))
        assert (await self.get(store, "c/0/1/1")).to_bytes() == _block(31)
        await store.delete("c/0/1/1")
        await store.set_if_not_exists("c/0/1/1", _buffer(_block(32)))
        assert (await self.get(store, "c/0/1/1")).to_bytes() == bytes(NBYTES)

    # -------------------------------------------------------------- deletes
    async def test_delete(self, store: DvidStore) -> None:
        """DVID cannot delete a block: deleting a chunk writes a zero block, which still exists.

        zarr expects the key gone. For a DVID store the chunk reads as 0 (the fill
        value) afterwards, as zarr needs when it deletes a chunk of zeros, but DVID
        still holds a block there. Metadata cannot be deleted.
        """
        await store.set("c/1/0/0", _buffer(_block(40)))
        await store.delete("c/1/0/0")
        assert await store.exists("c/1/0/0")
        observed = await store.get("c/1/0/0", prototype=default_buffer_prototype())
        assert observed is not None and observed.to_bytes() == bytes(NBYTES)
        with pytest.raises(DvidInputError, match="cannot be deleted"):
            await store.delete("zarr.json")
        await store.delete("foo/zarr.json")  # not a key of the store: nothing to do
        assert await store.exists("zarr.json")

    async def test_delete_dir(self, store: DvidStore) -> None:
        """Refused: deleting a directory would wipe DVID data, which dvid_store never does."""
        await store.set("c/0/0/0", _buffer(_block(41)))
        for prefix in ("c", "c/0", ""):
            with pytest.raises(UnsupportedError, match="never wipes"):
                await store.delete_dir(prefix)
        assert (await self.get(store, "c/0/0/0")).to_bytes() == _block(41)

    async def test_clear(self, store: DvidStore) -> None:
        """Refused like :meth:`test_delete_dir` (zarr's ``mode="w"`` clears the store)."""
        await store.set("c/0/0/0", _buffer(_block(42)))
        with pytest.raises(UnsupportedError, match="never wipes"):
            await store.clear()
        assert (await self.get(store, "c/0/0/0")).to_bytes() == _block(42)
        assert not await store.is_empty("")

    # -------------------------------------------------------------- listing
    async def test_is_empty(self, store: DvidStore) -> None:
        """A DVID store is never empty (its ``zarr.json`` is synthesised); ``c/`` is empty until a block is stored."""
        assert not await store.is_empty("")
        assert await store.is_empty("c/")
        assert await store.is_empty("c")
        await self.set(store, "c/1/0/1", _buffer(_block(50)))
        assert not await store.is_empty("c")
        assert not await store.is_empty("c/1/")
        assert await store.is_empty("c/0/")
        assert await store.is_empty("spam/")

    async def test_list(self, store: DvidStore) -> None:
        """zarr's test on DVID's keys: ``zarr.json`` from the start, then the stored blocks' chunks."""
        assert await _collect(store.list()) == ["zarr.json"]
        await store._set_many([(key, _buffer(_block(60))) for key in ALL_CHUNKS[:5]])
        assert await _collect(store.list()) == sorted(["zarr.json", *ALL_CHUNKS[:5]])

    async def test_list_prefix(self, store: DvidStore) -> None:
        """zarr's test with the prefixes of DVID's keys."""
        stored = ["c/0/0/0", "c/1/0/0", "c/1/0/1", "c/1/1/1"]
        await store._set_many([(key, _buffer(_block(61))) for key in stored])
        everything = ["zarr.json", *stored]
        for prefix in ("", "c/", "c/1/", "c/1/0/", "c/1/0/1", "zarr", "x/"):
            expected = sorted(k for k in everything if k.startswith(prefix))
            assert await _collect(store.list_prefix(prefix)) == expected, prefix

    async def test_list_empty_path(self, store: DvidStore) -> None:
        """zarr's test with DVID's keys: ``list()`` and ``list_prefix("")`` agree."""
        await store._set_many([(key, _buffer(_block(62))) for key in ("c/0/0/1", "c/1/1/0")])
        listed = await _collect(store.list())
        assert listed == await _collect(store.list_prefix("")) == ["c/0/0/1", "c/1/1/0", "zarr.json"]
        assert await _collect(store.list_prefix("c/0/")) == ["c/0/0/1"]

    async def test_list_dir(self, store: DvidStore) -> None:
        """zarr's test on DVID's directories: the root, ``c`` and the chunk index levels."""
        assert await _collect(store.list_dir("")) == ["zarr.json"]
        assert await _collect(store.list_dir("c")) == []
        await store._set_many([(key, _buffer(_block(63))) for key in ("c/0/1/0", "c/1/0/1", "c/1/1/1")])
        assert await _collect(store.list_dir("")) == ["c", "zarr.json"]
        for root in ("c", "c/"):
            assert await _collect(store.list_dir(root)) == ["0", "1"]
        assert await _collect(store.list_dir("c/1")) == ["0", "1"]
        assert await _collect(store.list_dir("c/1/1/")) == ["1"]
        assert await _collect(store.list_dir("spam")) == []

    # ---------------------------------------------- zarr's optional sync API
    _NO_SYNC = (
        "DvidStore implements only zarr's asynchronous API: concurrent chunk gets become one "
        "multi-block DVID request, which one-key-at-a-time synchronous calls would defeat"
    )

    def test_get_sync(self, store: DvidStore) -> None:
        """zarr's synchronous protocol is optional; DvidStore does not offer it (zarr then uses ``get``)."""
        assert not hasattr(store, "get_sync"), self._NO_SYNC

    def test_get_sync_missing(self, store: DvidStore) -> None:
        """See :meth:`test_get_sync`."""
        assert not hasattr(store, "get_sync"), self._NO_SYNC

    def test_set_sync(self, store: DvidStore) -> None:
        """See :meth:`test_get_sync`."""
        assert not hasattr(store, "set_sync"), self._NO_SYNC

    def test_delete_sync(self, store: DvidStore) -> None:
        """See :meth:`test_get_sync`."""
        assert not hasattr(store, "delete_sync"), self._NO_SYNC

    def test_delete_sync_missing(self, store: DvidStore) -> None:
        """See :meth:`test_get_sync`."""
        assert not hasattr(store, "delete_sync"), self._NO_SYNC


async def _get_bytes(store: DvidStore, key: str) -> bytes:
    """zarr's ``Store._get_bytes`` (zarr >= 3.1.6), or the ``get`` it wraps on older zarr."""
    helper = getattr(store, "_get_bytes", None)
    if helper is not None:
        return bytes(await helper(key, prototype=default_buffer_prototype()))
    buffer = await store.get(key, default_buffer_prototype())
    if buffer is None:
        raise FileNotFoundError(key)
    return buffer.to_bytes()
