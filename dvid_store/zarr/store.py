"""``DvidStore``: a DVID voxel instance as a zarr v3 store (chunk = DVID block).

The store never speaks HTTP: metadata documents are synthesised from a pinned
:class:`~dvid_store.layout.Layout`, and chunk keys become block reads and
writes of :class:`~dvid_store.blocks.BlockIO`, batched by
:class:`~dvid_store.zarr.coalesce.Batcher` and run in a thread pool.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)

from ..blocks import (
    DEFAULT_MAX_BLOCKS,
    DEFAULT_MAX_BYTES,
    LABEL_TYPES,
    BlockIO,
    shared_node,
)
from ..errors import DvidInputError, LockedNodeError, UnsupportedError
from ..layout import Layout, Level, discover_layout
from ..node import meanwhile
from ..urls import parse_url
from .coalesce import Batcher, FailureScope, io_executor
from .metadata import chunk_shape_of, default_chunk_blocks, metadata_documents, normalised_document

if TYPE_CHECKING:
    from zarr.core.buffer import Buffer, BufferPrototype

    from ..node import Node

__all__ = ["DvidStore"]

ZYX = tuple[int, int, int]


class DvidStore(Store):
    """A DVID labelmap or imageblk instance as a zarr v3 store.

    With ``scale=None`` (the default) the store is a group whose arrays ``"0"``,
    ``"1"``, ... are the instance's scale levels (labelmap: scales
    0..MaxDownresLevel; grayscale: instances ``name``, ``name_1``, ...), with
    OME-Zarr 0.5 ``multiscales`` attributes and inline consolidated metadata. With
    ``scale=k`` the store's root is that level's array.

    Each array's chunk is ``chunk_blocks`` DVID blocks along z, y and x (by default
    the cube of blocks nearest 8 MiB, 64 MiB for labelmaps: 6³ blocks of 32³ uint8,
    3³ of 64³ labels; see
    :func:`~dvid_store.zarr.metadata.default_chunk_blocks`), with dimension names
    ``z, y, x``, fill value 0 and the plain little-endian ``bytes`` codec; index 0 is
    the block-aligned minimum point of the instance's extents (attribute
    ``dvid.offset``), so negative DVID coordinates are reachable. Missing blocks read
    as 0. A chunk read is one DVID request for its blocks, so zarr's ten concurrent
    chunk reads keep a far server's link busy, and ``da.from_zarr`` and
    ``xr.open_zarr`` get chunks of a useful size. ``chunk_blocks=1`` gives one chunk
    per block (for random access to small regions).

    Multichannel instances (``rgba8blk``) are 4-d ``uint8`` arrays ``(z, y, x, 4)``,
    channels R, G, B, A last, dimension names ``z, y, x, c`` (an OME-Zarr axis of
    type ``"channel"``; see :mod:`dvid_store.zarr.metadata`). Their chunks hold all 4
    channels (chunk keys ``c/<z>/<y>/<x>/0``), and everything below applies to them
    block for block as to single-channel instances.

    Writes: a chunk becomes writes of its blocks, and only of the blocks the caller
    changed. zarr writes a chunk whole: a write that covers part of a chunk reads
    it, changes the selection and writes all of it back. The store keeps what it
    served to that read and, when the chunk comes back, writes only the blocks that
    differ from it, so a block the caller did not touch is never written (another
    writer's change to it survives). Blocks beyond the instance's extents, which an
    edge chunk contains, are never written. This holds with zarr's default codec
    pipeline; under another one (``zarr.config["codec_pipeline.path"]``) writes of
    multi-block chunks are refused. Every write that would change
    metadata is refused before a single block is written: writing metadata that
    differs from the synthesised documents, ``resize`` (which would delete chunks
    first), ``mode="w"``, deleting metadata; DVID data is never wiped. Writes to a
    committed node raise :class:`~dvid_store.errors.LockedNodeError` before anything
    is sent (the store is not ``read_only`` for that: zarr would refuse its modes
    ``"r+"`` and ``"a"``, even for reading, with a ``ValueError``).

    Deleting: DVID has no block delete. A zarr ``delete`` of a chunk, which zarr issues
    when a written chunk is all zeros (the fill value), writes a zero block: the chunk
    reads as 0 afterwards but still *exists* and is listed (see :meth:`delete`).

    labelmap body view (``supervoxels=False``, the default): chunks show body ids,
    but DVID stores supervoxel ids, and zarr writes back whole chunks it read (a
    partial write reads the chunk, changes the selection and writes all of it). So a
    written chunk is stored as follows: where the incoming id equals the body id the
    voxel already shows, the voxel keeps its stored supervoxel id, bit for bit;
    elsewhere the incoming id is stored as the supervoxel id. Every voxel zarr did not
    change keeps its supervoxel (merges stay undoable), and the body view afterwards
    shows what was written, except where the id written is a supervoxel that DVID maps
    to another body (it then shows that body). Each such write first reads the
    blocks' supervoxels and bodies (two more requests per batch). With
    ``supervoxels=True`` chunks are stored as written.

    Reads that fail stop the rest of their zarr call: its remaining chunk requests
    are never sent (see :class:`~dvid_store.zarr.coalesce.FailureScope`).

    Parameters
    ----------
    node : Node
        The version.
    instance : str
        Instance name (labelmap or uint8blk/uint16blk/uint32blk/uint64blk/float32blk/rgba8blk).
    scale : int, optional
        Present one level as the root array instead of the multiscale group.
    supervoxels : bool
        labelmap: read supervoxel ids instead of body ids.
    read_only : bool, optional
        Refuse writes with zarr's ``ValueError`` (default ``False``). A committed node
        refuses them anyway, with :class:`~dvid_store.errors.LockedNodeError` (unless
        the instance is unversioned).
    compression : str, optional
        Transfer encoding of block reads (see :class:`~dvid_store.blocks.BlockIO`).
    max_blocks, max_bytes : int
        Caps of one DVID request (blocks, uncompressed bytes); gets beyond them are
        split over several requests.
    throttle : bool
        Send DVID's ``throttle=true`` with every block request (see
        :class:`~dvid_store.blocks.BlockIO`).
    chunk_blocks : int or (int, int, int), optional
        DVID blocks per zarr chunk along z, y, x (one int: the same along each);
        default: :func:`~dvid_store.zarr.metadata.default_chunk_blocks`.
    layout : Layout, optional
        A layout read before (skips the ``/info`` requests).

    Notes
    -----
    The layout (origin, shape, levels) is read when the store is made and then pinned,
    also across pickling, so chunk keys keep naming the same blocks. Open a new store
    to see extents that grew since.

    Gets of small chunks that zarr issues together share one ``/specificblocks``
    request (up to about 4 MiB); bigger chunks are a request each, so several are in
    flight at once.
    """

    supports_writes: bool = True
    supports_deletes: bool = True
    supports_listing: bool = True
    #: zarr < 3.1 declares partial writes in its Store ABC; a DVID block is written whole.
    supports_partial_writes: Literal[False] = False

    def __init__(
        self,
        node: Node,
        instance: str,
        *,
        scale: int | None = None,
        supervoxels: bool = False,
        read_only: bool | None = None,
        compression: str | None = None,
        max_blocks: int = DEFAULT_MAX_BLOCKS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        throttle: bool = False,
        chunk_blocks: int | Sequence[int] | None = None,
        layout: Layout | None = None,
        _locked: bool | None = None,
    ) -> None:
        lock_state = node.locked_meanwhile() if _locked is None else (lambda: bool(_locked))
        if layout is None:
            # The three questions before the first chunk (lock state, /info, and the
            # instance list for a grayscale pyramid) go out together.
            listing = meanwhile(node.instances)
            info = node.typeinfo(instance)
            layout = discover_layout(node, instance, supervoxels=supervoxels, info=info, instances=listing)
            versioned = bool(info["Base"].get("Versioned", True))
        else:
            versioned = True
            if layout.supervoxels != bool(supervoxels) or layout.instance != instance:
                raise DvidInputError(
                    f"the layout given is of {layout.instance!r} with supervoxels={layout.supervoxels}, "
                    f"not of {instance!r} with supervoxels={bool(supervoxels)}"
                )
        if scale is not None:
            layout.level(scale)  # validates
        locked = lock_state() and versioned
        # A committed node does not make the store read-only: zarr would then refuse
        # every mode but "r" with its own ValueError before the store is asked. Writes
        # are refused by _check_writable instead, with LockedNodeError.
        super().__init__(read_only=bool(read_only))
        self._node = node
        self._instance = instance
        self._scale = None if scale is None else int(scale)
        self._supervoxels = bool(supervoxels)
        self._compression = compression
        self._max_blocks = int(max_blocks)
        self._max_bytes = int(max_bytes)
        self._throttle = bool(throttle)
        self._layout = layout
        self._locked = locked
        self._chunk_blocks = _chunk_blocks(chunk_blocks, layout)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._docs = metadata_documents(self._layout, self._scale, self._chunk_blocks)
        self._doc_json = {k: json.loads(v) for k, v in self._docs.items()}
        self._io: dict[str, BlockIO] = {}
        self._sv_io: dict[str, BlockIO] = {}
        self._failures = FailureScope()
        self._readers: dict[str, Batcher[ZYX, np.ndarray | None]] = {}
        self._writers: dict[str, Batcher[tuple[ZYX, np.ndarray], None]] = {}
        self._served = _ServedChunks()
        self._is_open = True

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> DvidStore:
        """Open ``dvid://host:port/<uuid|prefix|uuid:branch>/<instance>[/<level>]``.

        A trailing level number is the same as ``scale=level``. ``kwargs`` go to the
        constructor, plus ``user``, ``app``, ``token`` and ``scheme`` for the connection.
        """
        parsed = parse_url(url)
        conn = {k: kwargs.pop(k) for k in ("user", "app", "token", "scheme") if k in kwargs}
        node = parsed.node(**conn)
        if parsed.key:
            if kwargs.get("scale") is not None or not parsed.key.isdigit():
                raise DvidInputError(f"{url!r}: after the instance only a level number may follow")
            kwargs["scale"] = int(parsed.key)
        return cls(node, parsed.instance, **kwargs)

    # ------------------------------------------------------------ properties
    @property
    def node(self) -> Node:
        return self._node

    @property
    def instance(self) -> str:
        return self._instance

    @property
    def layout(self) -> Layout:
        """The pinned layout (levels, origins, shapes)."""
        return self._layout

    @property
    def scale(self) -> int | None:
        return self._scale

    @property
    def supervoxels(self) -> bool:
        return self._supervoxels

    @property
    def chunk_blocks(self) -> ZYX:
        """DVID blocks per zarr chunk along z, y, x."""
        return self._chunk_blocks

    @property
    def locked(self) -> bool:
        """Whether writes are refused with LockedNodeError: the node was committed when the store was opened."""
        return self._locked

    def _config(self) -> tuple[Any, ...]:
        return (
            self._node, self._instance, self._scale, self._supervoxels, self.read_only,
            self._compression, self._max_blocks, self._max_bytes, self._throttle, self._layout,
            self._chunk_blocks,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DvidStore) and other._config() == self._config()

    def __hash__(self) -> int:
        return hash((self._node, self._instance, self._scale, self._supervoxels, self.read_only))

    def __repr__(self) -> str:
        extra = f", scale={self._scale}" if self._scale is not None else ""
        extra += ", supervoxels=True" if self._supervoxels else ""
        extra += ", read_only=True" if self.read_only else ""
        extra += f", chunk_blocks={self._chunk_blocks}"
        return f"DvidStore({self._layout.server!r}, {self._node.uuid[:8]!r}, {self._instance!r}{extra})"

    def __getstate__(self) -> dict[str, Any]:
        return {
            "node": self._node, "instance": self._instance, "scale": self._scale,
            "supervoxels": self._supervoxels, "read_only": self._read_only, "locked": self._locked,
            "compression": self._compression, "max_blocks": self._max_blocks, "max_bytes": self._max_bytes,
            "throttle": self._throttle, "layout": self._layout, "chunk_blocks": self._chunk_blocks,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._node = shared_node(state["node"])
        self._instance = state["instance"]
        self._scale = state["scale"]
        self._supervoxels = state["supervoxels"]
        self._read_only = state["read_only"]
        self._locked = state["locked"]
        self._compression = state["compression"]
        self._max_blocks = state["max_blocks"]
        self._max_bytes = state["max_bytes"]
        self._throttle = state.get("throttle", False)
        self._layout = state["layout"]
        self._chunk_blocks = tuple(state.get("chunk_blocks", (1, 1, 1)))
        self._init_runtime()

    def with_read_only(self, read_only: bool = False) -> DvidStore:
        """The same store, open, read-only or not (a committed node still refuses writes)."""
        return type(self)(
            self._node, self._instance, scale=self._scale, supervoxels=self._supervoxels,
            read_only=read_only, compression=self._compression, max_blocks=self._max_blocks,
            max_bytes=self._max_bytes, throttle=self._throttle, chunk_blocks=self._chunk_blocks,
            layout=self._layout, _locked=self._locked,
        )

    async def _open(self) -> None:
        """Mark the store open; it already is from construction, and opening again is fine.

        A DvidStore has nothing to open (the constructor reads the layout; connections
        belong to the node's transport), and ``Store.open`` constructs and then opens,
        so zarr's "store is already open" error would make ``DvidStore.open`` fail.
        """
        self._is_open = True

    def _check_writable(self) -> None:
        """Refuse a write before anything is sent: committed node first, then read-only.

        Raises
        ------
        LockedNodeError
            The node was committed when the store was opened (and the instance is versioned).
        ValueError
            The store was opened read-only (zarr's own message, which zarr's tests check).
        """
        if self._locked:
            raise LockedNodeError(
                "POST", self._node.transport.url(self._node.path(self._instance)), None,
                f"node {self._node.uuid} is committed (locked), so writing to {self._instance!r} is refused; "
                "make a new version and write there: child = node.new_version() (or node.branch(name)), "
                f"then DvidStore(child, {self._instance!r}) or create_array/zarr.open on the child",
            )
        if self.read_only:
            raise ValueError(
                f"store was opened in read-only mode and does not support writing: {self!r}; "
                "open it with read_only=False (zarr mode 'r+' or 'a') to write"
            )

    # ---------------------------------------------------------------- keys
    def is_chunk(self, key: str) -> bool:
        """Whether ``key`` names a chunk inside one of the store's chunk grids, stored or not (sends nothing)."""
        return self._chunk(key) is not None

    def key_size(self, key: str) -> int | None:
        """Size in bytes of a key's value, without asking DVID whether it is stored.

        Returns
        -------
        int or None
            The length of a metadata document; one whole chunk's bytes for a chunk
            key (whether or not DVID holds its blocks); ``None`` for any other key.
        """
        doc = self._docs.get(key)
        if doc is not None:
            return len(doc)
        parsed = self._chunk(key)
        return None if parsed is None else self._chunk_nbytes(parsed[0])

    def check_delete(self, key: str) -> None:
        """Raise what :meth:`delete` of ``key`` would raise before writing anything; send nothing.

        For callers that delete many keys in one call (``fs.rm`` of ``dvid://``
        chunks): checking every key first means a refused delete stops the call
        before a single zero block is written. Call it directly from the coroutine
        that zarr awaits, as :meth:`delete` does: the check of zarr's resize reads
        the caller's await chain.

        Raises
        ------
        LockedNodeError, ValueError, DvidInputError
            As :meth:`delete`.
        """
        self._check_writable()
        if key in self._docs:
            raise DvidInputError(f"refusing to delete {key!r}: the metadata of a DVID store cannot be deleted")
        if self._chunk(key) is not None:
            self._refuse_zarr_delete(key)

    def _levels(self) -> list[tuple[str, Level]]:
        """(key prefix, level) of every array in the store."""
        if self._scale is not None:
            return [("", self._layout.level(self._scale))]
        return [(f"{level.path}/", level) for level in self._layout.levels]

    def _chunk_grid(self, level: Level) -> ZYX:
        """Chunks per axis of a level's array."""
        return tuple(-(-g // k) for g, k in zip(level.grid, self._chunk_blocks))  # type: ignore[return-value]

    def _key_grid(self, level: Level) -> tuple[int, ...]:
        """Chunks per axis of a level's array, the channel axis (one chunk) included."""
        return self._chunk_grid(level) + (1,) * len(level.channel_shape)

    def _chunk_shape(self, level: Level) -> tuple[int, ...]:
        """The array shape of one chunk of a level (its channel axis included)."""
        return chunk_shape_of(level, self._chunk_blocks) + level.channel_shape

    def _chunk_nbytes(self, level: Level) -> int:
        return int(np.prod(self._chunk_shape(level))) * np.dtype(self._layout.dtype).itemsize

    def _chunk_box(self, level: Level, index: ZYX) -> tuple[ZYX, ZYX]:
        """The voxel box of a chunk's blocks that lie inside the level's grid (its extents)."""
        start, stop = [], []
        for i, k, g, o, b in zip(index, self._chunk_blocks, level.grid, level.origin_block, level.block_shape):
            first = i * k
            start.append((o + first) * b)
            stop.append((o + min(first + k, g)) * b)
        return tuple(start), tuple(stop)  # type: ignore[return-value]

    def _chunk_blocks_of(self, level: Level, index: ZYX) -> list[ZYX]:
        """Block coordinates of a chunk inside the level's grid, in C order."""
        (z0, y0, x0), (z1, y1, x1) = self._chunk_box(level, index)
        bz, by, bx = level.block_shape
        return [
            (z, y, x)
            for z in range(z0 // bz, z1 // bz)
            for y in range(y0 // by, y1 // by)
            for x in range(x0 // bx, x1 // bx)
        ]

    def _chunk(self, key: str) -> tuple[Level, ZYX] | None:
        """The (level, chunk index) of a chunk key inside its grid, else ``None``."""
        if self._scale is not None:
            head, rest = self._layout.level(self._scale), key
        else:
            path, sep, rest = key.partition("/")
            if not sep:
                return None
            try:
                head = self._layout.level(path)
            except DvidInputError:
                return None
        parts = rest.split("/")
        grid = self._key_grid(head)
        if len(parts) != 1 + len(grid) or parts[0] != "c":
            return None
        try:
            index = tuple(int(p) for p in parts[1:])
        except ValueError:
            return None
        if any(i < 0 or i >= n or str(i) != p for i, n, p in zip(index, grid, parts[1:])):
            return None
        return head, index[:3]  # type: ignore[return-value]

    def _key(self, prefix: str, level: Level, coord: ZYX) -> str:
        """The key of the chunk holding block ``coord`` (a channel axis is chunk 0)."""
        z, y, x = ((c - o) // k for c, o, k in zip(coord, level.origin_block, self._chunk_blocks))
        return f"{prefix}c/{z}/{y}/{x}" + "/0" * len(level.channel_shape)

    def _block_io(self, level: Level) -> BlockIO:
        io = self._io.get(level.path)
        if io is None:
            io = BlockIO(
                self._node, level.instance, typename=level.typename, block_shape=level.block_shape,
                scale=level.scale, supervoxels=self._supervoxels, compression=self._compression,
                stored=level.stored, max_blocks=self._max_blocks, max_bytes=self._max_bytes,
                throttle=self._throttle,
            )
            self._io[level.path] = io
        return io

    def _reader(self, level: Level) -> Batcher[ZYX, np.ndarray | None]:
        """Chunk reads of a level, by chunk index: small chunks issued together share a request."""
        reader = self._readers.get(level.path)
        if reader is None:
            io = self._block_io(level)
            shape = self._chunk_shape(level)
            # A whole chunk of lz4 or gzip blocks costs the client more to decode block by
            # block than DVID takes to assemble it; label blocks travel in DVID's compact
            # encoding, which the fast codec decodes, and an explicit encoding is obeyed.
            assembled = io.family == "imageblk" and self._compression is None

            def read(indices: list[ZYX]) -> list[np.ndarray | None]:
                if len(indices) == 1 and self._chunk_blocks != (1, 1, 1):
                    chunk = np.zeros(shape, io.dtype)
                    start, stop = self._chunk_box(level, indices[0])
                    inside = chunk[tuple(slice(0, b - a) for a, b in zip(start, stop))]
                    if assembled:
                        io.read_box_assembled((start, stop), out=inside)
                    else:
                        # One chunk of many blocks: decode them straight into it (no per-block copies).
                        io.read_box((start, stop), out=inside)
                    return [chunk]
                wanted = {index: self._chunk_blocks_of(level, index) for index in indices}
                found = io.read([c for coords in wanted.values() for c in coords])
                return [_assemble(shape, io.dtype, level, self._chunk_box(level, i)[0], wanted[i], found)
                        for i in indices]

            per_request = max(1, _SHARED_REQUEST_BYTES // self._chunk_nbytes(level))
            max_items = min(per_request, max(1, io.blocks_per_request // int(np.prod(self._chunk_blocks))))
            reader = self._readers[level.path] = Batcher(read, max_items=max_items, scope=self._failures)
        return reader

    def _writer(self, level: Level) -> Batcher[tuple[ZYX, np.ndarray], None]:
        writer = self._writers.get(level.path)
        if writer is None:
            io = self._block_io(level)
            supervoxel_io = self._supervoxel_io(level) if self._body_view(level) else None

            def write(items: list[tuple[ZYX, np.ndarray]]) -> list[None]:
                blocks: dict[Any, np.ndarray] = dict(items)
                if supervoxel_io is not None:
                    blocks = _keep_supervoxels(blocks, supervoxel_io, io)
                io.write(blocks)
                return [None] * len(items)

            writer = self._writers[level.path] = Batcher(
                write, max_items=io.blocks_per_request, scope=self._failures
            )
        return writer

    def _body_view(self, level: Level) -> bool:
        """Whether chunks of this level show body ids that DVID stores as supervoxel ids."""
        return level.typename in LABEL_TYPES and not self._supervoxels

    def _supervoxel_io(self, level: Level) -> BlockIO:
        """The level's blocks as stored (supervoxel ids), for writes through the body view."""
        io = self._sv_io.get(level.path)
        if io is None:
            io = BlockIO(
                self._node, level.instance, typename=level.typename, block_shape=level.block_shape,
                scale=level.scale, supervoxels=True, compression=self._compression,
                stored=level.stored, max_blocks=self._max_blocks, max_bytes=self._max_bytes,
                throttle=self._throttle,
            )
            self._sv_io[level.path] = io
        return io

    # ---------------------------------------------------------------- reads
    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        """The bytes of a metadata document or chunk; ``None`` if absent (missing block)."""
        _check_byte_range(byte_range)
        doc = self._docs.get(key)
        if doc is not None:
            return prototype.buffer.from_bytes(_byte_slice(doc, byte_range))
        parsed = self._chunk(key)
        if parsed is None:
            return None
        level, index = parsed
        for_rewrite = _zarr_rewrite_read()
        chunk = await self._reader(level).submit(index)
        if for_rewrite:
            self._served.keep(key, chunk)
        if chunk is None:
            return None
        data = chunk.reshape(-1).view(np.uint8)
        return prototype.buffer.from_array_like(_byte_slice(data, byte_range))

    async def set_partial_values(self, key_start_values: Iterable[tuple[str, int, bytes]]) -> None:
        """Refused: a DVID block is written whole (zarr < 3.1 declares this method)."""
        raise UnsupportedError("DVID stores whole blocks: a chunk cannot be written in part")

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        """Several (key, byte range) reads at once; the chunk reads share requests."""
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        """Metadata documents exist; a chunk exists when DVID holds its block.

        That includes a zero block written by :meth:`delete`: DVID cannot delete a
        block, so a deleted chunk still exists (and reads as 0).
        """
        if key in self._docs:
            return True
        parsed = self._chunk(key)
        if parsed is None:
            return False
        level, index = parsed
        async for _ in self._stored_in(level, self._chunk_box(level, index)):
            return True
        return False

    async def getsize(self, key: str) -> int:
        doc = self._docs.get(key)
        if doc is not None:
            return len(doc)
        if await self.exists(key):
            level, _ = self._chunk(key)  # type: ignore[misc]
            return self._chunk_nbytes(level)
        raise FileNotFoundError(key)

    # --------------------------------------------------------------- writes
    async def set(self, key: str, value: Buffer) -> None:
        """Write a whole chunk as a DVID block; metadata writes must match the synthesised documents."""
        self._check_writable()
        if key in self._docs:
            self._check_same_metadata(key, value.to_bytes())
            return
        parsed = self._chunk(key)
        if parsed is None:
            raise DvidInputError(
                f"{key!r} is not a chunk of {self!r}: a DVID store holds only the blocks of its "
                "arrays' chunk grids and its synthesised zarr.json documents"
            )
        level, index = parsed
        io = self._block_io(level)
        raw = value.as_numpy_array()
        nbytes = self._chunk_nbytes(level)
        if raw.nbytes != nbytes:
            raise DvidInputError(f"chunk {key!r} must be {nbytes} bytes (a whole chunk), got {raw.nbytes}")
        chunk = raw.reshape(-1).view(np.uint8).view(io.dtype).reshape(self._chunk_shape(level))
        await self._write_chunk(key, level, index, chunk)

    async def _write_chunk(self, key: str, level: Level, index: ZYX, chunk: np.ndarray) -> None:
        """Write the blocks of a chunk that the caller changed (see the class notes)."""
        served = self._served.take(key)
        if served is _NOT_SERVED and self._chunk_blocks != (1, 1, 1):
            _check_codec_pipeline()
        first, stop = self._chunk_box(level, index)
        in_grid = self._chunk_blocks_of(level, index)
        blocks = []
        for coord, region in _block_regions(level, first, in_grid):
            block = chunk[region]
            if served is not _NOT_SERVED:
                before = served[region] if isinstance(served, np.ndarray) else None
                unchanged = not block.any() if before is None else np.array_equal(block, before)
                if unchanged:
                    continue
            blocks.append((coord, block))
        io = self._block_io(level)
        if len(blocks) > 1 and len(blocks) == len(in_grid) and io.family == "imageblk":
            # Every block of the chunk changes: one POST /raw of the chunk's box, which DVID
            # cuts into blocks and compresses, costs the client a copy instead of per-block work.
            inside = chunk[tuple(slice(0, b - a) for a, b in zip(first, stop))]
            await asyncio.get_running_loop().run_in_executor(io_executor(), io.write_box, inside, first)
            return
        writer = self._writer(level)
        await asyncio.gather(*(writer.submit(item) for item in blocks))

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        if not await self.exists(key):
            await self.set(key, value)

    def _check_same_metadata(self, key: str, data: bytes) -> None:
        try:
            incoming = normalised_document(json.loads(data))
        except (ValueError, DvidInputError) as exc:
            raise DvidInputError(f"refusing to write {key!r}: {exc}") from None
        current = self._doc_json[key]
        if incoming != current:
            changed = sorted(k for k in set(incoming) | set(current) if incoming.get(k) != current.get(k))
            raise DvidInputError(
                f"refusing to write {key!r}: the metadata of a DVID store is synthesised from the "
                f"instance and cannot be changed (differs in: {', '.join(changed)}). Shape, dtype, chunks, "
                "codecs and attributes come from DVID; to make new data use dvid_store.create_array()"
            )

    async def delete(self, key: str) -> None:
        """Write a zero block for a chunk; refused when zarr deletes chunks to change metadata.

        DVID cannot delete a block, so deleting a chunk writes a block of zeros: the
        chunk reads as 0 (the fill value) afterwards, but :meth:`exists` stays true and
        listings keep it, because DVID then holds a (zero) block there. Zero blocks are
        what zarr's ``array[...] = 0`` needs: zarr deletes a chunk instead of storing
        it when all its values are the fill value.

        zarr's ``resize`` to a smaller shape deletes the chunks outside the new shape
        *before* it writes the new shape, which this store refuses (the shape comes from
        DVID). So a delete that zarr issues from anything but its chunk writer is
        refused before a single block is written. Direct calls (and ``fs.rm`` of a
        ``dvid://`` chunk) write the zero block.

        Raises
        ------
        DvidInputError
            ``key`` is a metadata document, or zarr is deleting chunks to resize.
        LockedNodeError
            The node is committed.
        """
        self.check_delete(key)
        parsed = self._chunk(key)
        if parsed is None:
            return
        level, index = parsed
        io = self._block_io(level)
        await self._write_chunk(key, level, index, np.zeros(self._chunk_shape(level), io.dtype))

    def _refuse_zarr_delete(self, key: str) -> None:
        """Raise if zarr deletes ``key`` for anything but writing a chunk of fill values (see :meth:`delete`).

        Call it directly from the coroutine that zarr awaits, before any task switch
        into a new task: it reads the caller's await chain.
        """
        operation = _zarr_delete_origin()
        if operation is None:
            return
        if "resize" in operation:
            what = "zarr's resize() (a smaller shape)"
        else:
            what = f"zarr ({operation})"
        raise DvidInputError(
            f"refusing to delete chunk {key!r} of {self!r} for {what}: the shape, like all metadata of a DVID "
            "store, comes from the instance and cannot be changed, and DVID cannot delete blocks (zarr would "
            "have overwritten them with zeros before its refused metadata write). Nothing was written. "
            "To zero a region write zeros (array[...] = 0); to make an array of another shape use "
            "dvid_store.create_array()"
        )

    async def delete_dir(self, prefix: str) -> None:
        """Refused: deleting a directory (zarr ``mode="w"``, ``clear``) would wipe DVID data."""
        self._check_writable()
        what = repr(prefix) if prefix else "the whole store"
        raise UnsupportedError(
            f"refusing to delete {what} of {self!r}: dvid_store never wipes DVID data. "
            "Open existing data with mode 'r+' or 'a' and write into it, or make a new instance with "
            "dvid_store.create_array() (zarr mode='w' is not supported)"
        )

    async def clear(self) -> None:
        await self.delete_dir("")

    # -------------------------------------------------------------- listing
    async def list(self) -> AsyncIterator[str]:
        """Every key: the metadata documents, then the chunks DVID holds (this reads them).

        Deleted chunks are listed too: deleting wrote a zero block (see :meth:`delete`).
        """
        async for key in self.list_prefix(""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        """Keys starting with ``prefix``; listing chunks streams the stored blocks (see BlockIO.stored_coords)."""
        for key in self._docs:
            if key.startswith(prefix):
                yield key
        for head, level in self._levels():
            chunk_dir = head + "c/"
            if chunk_dir.startswith(prefix):
                fixed: tuple[int, ...] | None = ()
            elif prefix.startswith(chunk_dir):
                fixed = _fixed_indices(prefix[len(chunk_dir) :].split("/")[:-1])
            else:
                continue
            if fixed is None:
                continue
            listed: set[str] = set()
            async for coord in self._stored(level, fixed):
                key = self._key(head, level, coord)
                if key.startswith(prefix) and key not in listed:
                    listed.add(key)
                    yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        """Names directly under ``prefix`` (documents, level directories, ``c`` and index directories)."""
        base = prefix.rstrip("/")
        base = base + "/" if base else ""
        seen: set[str] = set()
        for key in self._docs:
            if key.startswith(base):
                name = key[len(base) :].split("/", 1)[0]
                if name not in seen:
                    seen.add(name)
                    yield name
        for head, level in self._levels():
            if base == head:  # the array's own directory: "c" iff any block is stored
                async for _ in self._stored(level, ()):
                    seen.add("c")
                    yield "c"
                    break
            elif base.startswith(head + "c/"):
                fixed = _fixed_indices(base[len(head) + 2 :].split("/")[:-1])
                if fixed is None or len(fixed) >= len(self._key_grid(level)):
                    continue
                async for coord in self._stored(level, fixed):
                    key = self._key(head, level, coord)
                    name = key[len(base) :].split("/", 1)[0]
                    if name not in seen:
                        seen.add(name)
                        yield name

    async def _stored(self, level: Level, fixed: tuple[int, ...]) -> AsyncIterator[ZYX]:
        """Stored blocks of a level's grid whose leading chunk indices are ``fixed`` (in the I/O pool)."""
        grid = self._key_grid(level)
        if 0 in level.shape or len(fixed) > len(grid) or any(not 0 <= i < n for i, n in zip(fixed, grid)):
            return
        start = list(level.origin)
        stop = [o + s for o, s in zip(level.origin, level.shape)]
        for axis, index in enumerate(fixed[:3]):
            size = level.block_shape[axis] * self._chunk_blocks[axis]
            start[axis] = level.origin[axis] + index * size
            stop[axis] = min(stop[axis], start[axis] + size)
        async for coord in self._stored_in(level, (tuple(start), tuple(stop))):  # type: ignore[arg-type]
            yield coord

    async def _stored_in(self, level: Level, box: tuple[ZYX, ZYX]) -> AsyncIterator[ZYX]:
        """Stored blocks in a block-aligned box of a level (listed in the I/O pool)."""
        io = self._block_io(level)
        slabs = io.stored_slabs(box)
        loop = asyncio.get_running_loop()
        while True:
            slab = await loop.run_in_executor(io_executor(), next, slabs, None)
            if slab is None:
                return
            for coord in slab:
                yield coord

    def close(self) -> None:
        """Nothing to release: connections belong to the node's transport."""
        self._is_open = False


def _fixed_indices(parts: list[str]) -> tuple[int, ...] | None:
    """Chunk indices fixed by complete key components; ``None`` if one is not an index."""
    out = []
    for part in parts:
        if not part.isdigit() or str(int(part)) != part:
            return None
        out.append(int(part))
    return tuple(out)


def _check_byte_range(byte_range: object) -> None:
    if byte_range is not None and not isinstance(
        byte_range, (RangeByteRequest, OffsetByteRequest, SuffixByteRequest)
    ):
        # zarr's stores say "Unexpected byte_range, got ..."; zarr's store tests check that text.
        raise DvidInputError(
            f"Unexpected byte_range, got {byte_range!r}: use RangeByteRequest, OffsetByteRequest, "
            "SuffixByteRequest or None"
        )


def _byte_slice(data: Any, byte_range: object) -> Any:
    # ``object``, not ``ByteRequest | None``: the last line refuses any other kind at run time.
    if byte_range is None:
        return data
    n = len(data)
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : min(byte_range.end, n)]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[max(0, n - byte_range.suffix) :]
    _check_byte_range(byte_range)
    return data


def _keep_supervoxels(blocks: dict[ZYX, np.ndarray], stored_io: BlockIO, body_io: BlockIO) -> dict[ZYX, np.ndarray]:
    """Blocks to store for body-view chunks: the stored supervoxel id wherever the body is unchanged.

    zarr writes back whole chunks it read through the body view (a partial write
    reads the chunk, changes the selection and writes all of it). Storing those body
    ids as supervoxel ids would rewrite every voxel outside the selection and undo
    merges. So where the incoming id equals the body the voxel already shows, the
    stored supervoxel id is kept bit for bit; elsewhere the incoming id is stored.
    """
    coords = list(blocks)
    stored = stored_io.read(coords)
    shown = body_io.read(coords)
    out = {}
    for coord, block in blocks.items():
        supervoxels = stored.get(coord)
        if supervoxels is None:  # no block yet: every voxel shows 0 and stores 0
            out[coord] = block
            continue
        bodies = shown.get(coord)
        if bodies is None:
            bodies = np.zeros_like(supervoxels)
        out[coord] = np.where(block == bodies, supervoxels, block)
    return out


#: Small chunks that zarr asks for together share one request up to this many bytes;
#: bigger chunks are a request each, so that several requests are in flight at once.
_SHARED_REQUEST_BYTES = 4 * 1024 * 1024


def _chunk_blocks(chunk_blocks: int | Sequence[int] | None, layout: Layout) -> ZYX:
    """Normalise the ``chunk_blocks`` argument (``None``: the default for the layout)."""
    if chunk_blocks is None:
        labels = layout.typename in LABEL_TYPES
        voxel_bytes = np.dtype(layout.dtype).itemsize * int(np.prod(layout.channel_shape))
        return default_chunk_blocks(layout.block_shape, voxel_bytes, labels=labels)
    values = (chunk_blocks,) * 3 if isinstance(chunk_blocks, (int, np.integer)) else tuple(chunk_blocks)
    if len(values) != 3 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in values):
        raise DvidInputError(
            f"chunk_blocks must be a positive int or three of them (blocks per chunk along z, y, x), "
            f"got {chunk_blocks!r}"
        )
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def _block_regions(level: Level, first: ZYX, coords: list[ZYX]) -> Iterable[tuple[ZYX, tuple[slice, ...]]]:
    """(block coordinate, its slices in the chunk) for blocks of a chunk whose first voxel is ``first``."""
    for coord in coords:
        yield coord, tuple(
            slice(c * b - f, (c + 1) * b - f) for c, b, f in zip(coord, level.block_shape, first)
        )


def _assemble(
    shape: tuple[int, ...], dtype: np.dtype, level: Level, first: ZYX, coords: list[ZYX], found: dict[ZYX, np.ndarray]
) -> np.ndarray | None:
    """A chunk from its blocks (``None`` if DVID holds none of them)."""
    if not any(c in found for c in coords):
        return None
    chunk = np.zeros(shape, dtype)
    for coord, region in _block_regions(level, first, coords):
        block = found.get(coord)
        if block is not None:
            chunk[region] = block
    return chunk


class _NotServed:
    pass


_NOT_SERVED = _NotServed()


class _ServedChunks:
    """What the store served to zarr's reads for partial writes, until the chunk comes back.

    zarr writes part of a chunk by reading it, changing the selection and writing the
    whole chunk; a block of the written chunk equal to the one served to that read is
    one the caller did not change, and is not written (another writer's change to it
    survives). Only the reads that zarr's writer makes are kept (see
    :func:`_zarr_rewrite_read`), and each is taken by the next write of its key; one
    left behind by a write that failed in between expires.
    """

    EXPIRES = 600.0  # seconds: the longest a zarr write can take between its read and its write

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[str, list[tuple[float, np.ndarray | None]]] = {}

    def keep(self, key: str, chunk: np.ndarray | None) -> None:
        copy = None if chunk is None else chunk.copy()
        with self._lock:
            self._kept.setdefault(key, []).append((time.monotonic(), copy))

    def take(self, key: str) -> np.ndarray | _NotServed | None:
        """The oldest chunk served for a rewrite of ``key`` (``None``: it read as missing)."""
        with self._lock:
            kept = self._kept.get(key)
            now = time.monotonic()
            while kept:
                when, chunk = kept.pop(0)
                if now - when <= self.EXPIRES:
                    if not kept:
                        del self._kept[key]
                    return chunk
            self._kept.pop(key, None)
        return _NOT_SERVED


def _check_codec_pipeline() -> None:
    """Refuse a multi-block chunk write whose reads the store cannot tell apart from a whole write."""
    from zarr import config

    path = str(config.get("codec_pipeline.path", ""))
    if path and not path.endswith("BatchedCodecPipeline"):
        raise UnsupportedError(
            f"zarr's codec pipeline is {path!r}: under it, this store cannot tell which blocks of a chunk a "
            "write changed, and writing the others could undo another writer's changes. Use zarr's default "
            "(zarr.config.set({'codec_pipeline.path': 'zarr.core.codec_pipeline.BatchedCodecPipeline'})) "
            "or a store with chunk_blocks=1"
        )


_ZARR_READ_PASS_THROUGH = frozenset({
    ("zarr.storage._common", "StorePath.get"),
    ("zarr.storage._fsspec", "FsspecStore.get"),
    ("zarr.core.common", "concurrent_map.<locals>.run"),
})


def _zarr_rewrite_read() -> bool:
    """Whether the running chunk read is zarr's writer reading a chunk it will write back.

    zarr's codec pipeline reads a chunk for a partial write from a function of its
    write path (3.1: ``BatchedCodecPipeline.write_batch.<locals>._read_key``; 3.4:
    ``_async_write_fallback.<locals>._read_key``). Walks the caller's await chain
    past dvid_store's frames and zarr's pass-through frames, as
    :func:`_zarr_delete_origin` does.
    """
    caller = _first_caller(("dvid_store.", "fsspec."), _ZARR_READ_PASS_THROUGH)
    return caller is not None and caller[0] == "zarr.core.codec_pipeline" and "write" in caller[1].lower()


def _first_caller(own: tuple[str, ...], pass_through: frozenset[tuple[str, str]]) -> tuple[str, str] | None:
    """(module, qualified name) of the first frame on the caller's await chain that is not passed through.

    Walks the frames of the running call (an awaiting coroutine is the ``f_back`` of the
    one it awaits) past modules starting with ``own`` and the ``pass_through`` frames.
    """
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        name = frame.f_code.co_qualname
        if not module.startswith(own) and (module, name) not in pass_through:
            return module, name
        frame = frame.f_back
    return None


# zarr frames (module, qualified name) on the await chain of a chunk delete. Deletes
# from the chunk writer store a chunk whose values all equal the fill value; the
# pass-through frames only forward a delete. Any other zarr frame is an operation
# that deletes chunks for its own reasons (resize), which the store refuses. A zarr
# version that renames the writer fails closed: its zero writes are refused loudly,
# never a resize let through.
_ZARR_FILL_WRITERS = frozenset({
    ("zarr.core.codec_pipeline", "BatchedCodecPipeline.write_batch.<locals>._write_key"),
    ("zarr.abc.store", "set_or_delete"),
})
# The codec pipeline writes chunks; every delete it makes stores a chunk of fill values,
# whatever its functions are called in a given zarr release (3.1: write_batch's
# _write_key, 3.4: _async_write_fallback's _write_key).
_ZARR_FILL_MODULES = frozenset({"zarr.core.codec_pipeline"})
_ZARR_PASS_THROUGH = frozenset({
    ("zarr.storage._common", "StorePath.delete"),
    ("zarr.storage._fsspec", "FsspecStore.delete"),
    ("zarr.core.common", "concurrent_map.<locals>.run"),
})


def _zarr_delete_origin() -> str | None:
    """The zarr operation behind the running chunk delete if zarr is not writing fill values, else ``None``.

    Walks the caller's frames (an awaiting coroutine is the ``f_back`` of the one it
    awaits) past dvid_store's own frames and zarr's pass-through frames. ``None``
    when the first other frame is zarr's chunk writer or not zarr at all (a direct
    call, fsspec's ``rm``).
    """
    caller = _first_caller(("dvid_store.",), _ZARR_PASS_THROUGH)
    if caller is None:
        return None
    module, name = caller
    if (module, name) in _ZARR_FILL_WRITERS or (module in _ZARR_FILL_MODULES and "resize" not in name):
        return None
    if module == "zarr" or module.startswith("zarr."):
        return f"{module}.{name}"
    return None
