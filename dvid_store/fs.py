"""The ``dvid://`` protocol for fsspec: DVID instances as directories of zarr keys.

URL form::

    dvid://host:port/<uuid | unique prefix | prefix:branch>/<instance>[/<zarr key>]

``dvid://host:port/<node>/<instance>`` is the instance's multiscale zarr group
(``zarr.json``, ``0/zarr.json``, ``0/c/<z>/<y>/<x>``, ...) exactly as
:class:`~dvid_store.DvidStore` presents it; ``.../<instance>/0`` is its level-0 array.
So ``zarr.open("dvid://...")``, ``fsspec.get_mapper("dvid://...")`` and
``dask.array.from_zarr("dvid://.../0")`` work once the package is installed (the
protocol is registered by the ``fsspec.specs`` entry point).

Every byte goes through the store, hence through the node API client: chunk reads
issued together (``fs.cat([...])``, zarr's concurrent gets) become one multi-block
request. ``fs.get(url, local_dir, recursive=True)`` copies an instance's keys into a
local directory, which then opens as an ordinary zarr store.

Chunk values come back from ``cat`` as ``memoryview`` objects over the decoded
blocks (bytes-like, no copy; ``bytes(value)`` makes a copy); documents as ``bytes``.

Files cannot be created, copied, renamed or deleted except chunks. DVID has no block
delete: removing a chunk (``fs.rm``, or zarr writing a chunk of zeros) writes a zero
block, so the chunk reads as 0 afterwards but still ``exists()`` and is listed.
A missing node or instance is a missing path: ``exists`` is ``False`` and ``info``
raises :class:`FileNotFoundError` carrying DVID's message.

URLs are split by :func:`dvid_store.urls.parse_url` (``DvidURL`` and ``parse_url``
can also be imported from here).
"""

from __future__ import annotations

import asyncio
import errno
import io
import os
import threading
from typing import Any

from fsspec.asyn import AsyncFileSystem

from .client import FULL_UUID, DvidClient
from .errors import (
    DvidInputError,
    UnknownInstanceError,
    UnknownNodeError,
    UnsupportedError,
)
from .node import Node
from .transport import RetryPolicy, Secret
from .urls import DvidURL, parse_url
from .zarr.coalesce import io_executor
from .zarr.store import DvidStore

__all__ = ["DvidFileSystem", "DvidURL", "parse_url"]


class DvidFileSystem(AsyncFileSystem):  # type: ignore[misc]  # fsspec has no type hints: AsyncFileSystem is Any
    """fsspec filesystem for ``dvid://`` URLs (asynchronous; zarr uses it directly).

    Parameters
    ----------
    user, app, token : str, optional
        Connection settings (see :class:`~dvid_store.DvidClient`). The token is never
        pickled: an unpickled filesystem reads ``$DVID_TOKEN``.
    scheme : str
        ``"http"`` (default) or ``"https"`` to reach the server.
    supervoxels : bool
        labelmap: serve supervoxel ids instead of body ids.
    compression : str, optional
        Transfer encoding of block reads (see :class:`~dvid_store.blocks.BlockIO`).
    throttle : bool
        Send DVID's ``throttle=true`` with every block request.
    chunk_blocks : int or (int, int, int), optional
        DVID blocks per zarr chunk (see :class:`~dvid_store.DvidStore`); default: chunks
        of about 8 MiB (64 MiB of labels). ``storage_options={"chunk_blocks": 1}`` gives a
        chunk per block.
    timeout, retry_seconds, deadline : optional
        The client's limits (see :class:`~dvid_store.DvidClient`): connect and read
        timeouts, how long a request is retried, and the wall-clock limit of one call.
        For ``zarr.open(url, storage_options={"deadline": 60})`` and the like.
    **kwargs
        fsspec options (``asynchronous``, ``loop``, ...).

    Notes
    -----
    A node reference is resolved once per filesystem instance (a branch name then
    stays on the node it named at first use), and each instance's layout is read
    once (see :class:`~dvid_store.DvidStore`); :meth:`invalidate_cache` forgets both,
    e.g. after extents grew. fsspec shares filesystem instances with equal settings
    within a process. The filesystem pickles as its settings.
    """

    protocol = ("dvid",)
    root_marker = ""
    async_impl = True
    cachable = True

    def __init__(
        self,
        *,
        user: str | None = None,
        app: str = "dvid_store",
        token: str | None = None,
        scheme: str = "http",
        supervoxels: bool = False,
        compression: str | None = None,
        throttle: bool = False,
        chunk_blocks: int | tuple[int, int, int] | list[int] | None = None,
        timeout: float | tuple[float, float] | None = None,
        retry_seconds: float | None = None,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.throttle = bool(throttle)
        self.chunk_blocks = chunk_blocks
        # Plain numbers (not a RetryPolicy): fsspec keeps constructor arguments as the
        # filesystem's identity and pickle.
        self._limits: dict[str, Any] = {}
        if timeout is not None:
            self._limits["timeout"] = timeout
        if retry_seconds is not None:
            self._limits["retry"] = RetryPolicy(total_seconds=float(retry_seconds))
        if deadline is not None:
            self._limits["deadline"] = float(deadline)
        self.user = user
        self.app = app
        self._token = Secret(token) if token else None
        self.scheme = scheme
        self.supervoxels = bool(supervoxels)
        self.compression = compression
        self._clients: dict[str, DvidClient] = {}
        self._uuids: dict[tuple[str, str], str] = {}
        self._stores: dict[tuple[str, str, str], DvidStore] = {}
        self._opening = threading.Lock()

    @property
    def storage_options(self) -> dict[str, Any]:
        """Constructor options, without the token."""
        return self._storage_options

    @storage_options.setter
    def storage_options(self, options: dict[str, Any]) -> None:
        # fsspec records the constructor arguments here and pickles the filesystem as
        # them: keep the token out. An unpickled filesystem (e.g. on a dask worker)
        # reads $DVID_TOKEN instead.
        self._storage_options = {k: v for k, v in options.items() if k != "token"}

    def invalidate_cache(self, path: str | None = None) -> None:
        """Forget resolved node references and opened stores (all of them, whatever ``path``)."""
        self._uuids.clear()
        self._stores.clear()

    # --------------------------------------------------------------- paths
    @classmethod
    def _strip_protocol(cls, path: str | list[str]) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        for prefix in ("dvid://", "dvid::"):
            path = path.removeprefix(prefix)
        return path.rstrip("/")

    def unstrip_protocol(self, name: str) -> str:
        return "dvid://" + name

    def _client(self, server: str) -> DvidClient:
        client = self._clients.get(server)
        if client is None:
            client = DvidClient(server, user=self.user, app=self.app, token=self._token, **self._limits)
            self._clients[server] = client
        return client

    def _open_store(self, parsed: DvidURL) -> DvidStore:
        """The store of (server, node, instance), made on first use (blocking: call in a thread).

        One at a time: zarr opens an array with several concurrent probes, and each
        would otherwise resolve the node and read the layout again (round trips that
        a far server makes expensive).
        """
        with self._opening:
            return self._open_store_locked(parsed)

    def _open_store_locked(self, parsed: DvidURL) -> DvidStore:
        uuid = self._uuids.get((parsed.server, parsed.ref))
        client = self._client(parsed.server)
        if uuid is None:
            # A full UUID needs no lookup: the store asks for the node's lock state and
            # the instance's /info at once, and an unknown node fails there.
            uuid = parsed.ref if FULL_UUID.match(parsed.ref) else client.resolve(parsed.ref)
            self._uuids[(parsed.server, parsed.ref)] = uuid
        key = (parsed.server, uuid, parsed.instance)
        store = self._stores.get(key)
        if store is None:
            store = DvidStore(
                Node(client, uuid), parsed.instance, supervoxels=self.supervoxels, compression=self.compression,
                throttle=self.throttle, chunk_blocks=self.chunk_blocks,
            )
            self._stores[key] = store
        return store

    async def _resolve(self, path: str) -> tuple[DvidStore, str]:
        parsed = parse_url(self._strip_protocol(path), scheme=self.scheme)
        cached = self._uuids.get((parsed.server, parsed.ref))
        store = self._stores.get((parsed.server, cached, parsed.instance)) if cached else None
        if store is None:
            loop = asyncio.get_running_loop()
            store = await loop.run_in_executor(io_executor(), self._open_store, parsed)
        return store, parsed.key

    # --------------------------------------------------------------- reads
    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes | memoryview:
        """A key's value: ``bytes`` for documents, a ``memoryview`` (no copy) for chunks."""
        from zarr.abc.store import (
            OffsetByteRequest,
            RangeByteRequest,
            SuffixByteRequest,
        )
        from zarr.core.buffer import default_buffer_prototype

        store, key = await self._resolve(path)
        byte_range: Any = None
        if start is not None or end is not None:
            start = start or 0
            if start < 0 and end is None:
                byte_range = SuffixByteRequest(-start)
            elif end is None:
                byte_range = OffsetByteRequest(start)
            else:
                if start < 0 or end < 0:  # fsspec counts negative positions from the end
                    size = await store.getsize(key)
                    start, end = (start + size if start < 0 else start), (end + size if end < 0 else end)
                byte_range = RangeByteRequest(start, max(start, end))
        value = await store.get(key, default_buffer_prototype(), byte_range)
        if value is None:
            if await self._isdir_key(store, key):
                raise IsADirectoryError(path)
            raise FileNotFoundError(path)
        if store.is_chunk(key):
            # A chunk is megabytes: hand over its memory (bytes-like, read-only
            # semantics) instead of copying it into a fresh ``bytes``, which costs as
            # much as receiving it. zarr and file writes take any bytes-like value.
            return value.as_numpy_array().data
        return value.to_bytes()

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """Name, size and type of a key or directory.

        Raises
        ------
        FileNotFoundError
            Nothing at ``path``: no such key, or no such node or instance (then the
            message is DVID's, and the DVID error is the ``__cause__``).
        """
        try:
            store, key = await self._resolve(path)
        except (UnknownNodeError, UnknownInstanceError) as exc:
            raise FileNotFoundError(errno.ENOENT, f"{path}: {exc}", path) from exc
        name = self._strip_protocol(path)
        size = await self._file_size(store, key)
        if size is not None:
            return {"name": name, "size": size, "type": "file"}
        if await self._isdir_key(store, key):
            return {"name": name, "size": 0, "type": "directory"}
        raise FileNotFoundError(errno.ENOENT, f"{path}: no such key in {store!r}", path)

    async def _file_size(self, store: DvidStore, key: str) -> int | None:
        if not key or store.key_size(key) is None:
            return None
        try:
            return await store.getsize(key)
        except FileNotFoundError:
            return None

    async def _isdir_key(self, store: DvidStore, key: str) -> bool:
        if not key:
            return True
        async for _ in store.list_dir(key):
            return True
        return False

    async def _exists(self, path: str, **kwargs: Any) -> bool:
        """Whether ``path`` names a key or directory; ``False`` for a missing node or instance too.

        A chunk removed with :meth:`rm` still exists: DVID has no block delete, so
        removing wrote a zero block.
        """
        try:
            await self._info(path)
        except FileNotFoundError:
            return False
        return True

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        try:
            store, key = await self._resolve(path)
        except (UnknownNodeError, UnknownInstanceError) as exc:
            raise FileNotFoundError(errno.ENOENT, f"{path}: {exc}", path) from exc
        base = self._strip_protocol(path)
        entries = []
        async for name in store.list_dir(key):
            child = f"{key}/{name}" if key else name
            full = f"{base}/{name}"
            size = store.key_size(child)
            if size is not None:
                entries.append({"name": full, "size": size, "type": "file"})
            else:
                entries.append({"name": full, "size": 0, "type": "directory"})
        if not entries and not await self._isdir_key(store, key):
            if await self._file_size(store, key) is not None:
                return [await self._info(path)] if detail else [base]
            raise FileNotFoundError(path)
        return entries if detail else [e["name"] for e in entries]

    # -------------------------------------------------------------- writes
    async def _pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        from zarr.core.buffer import default_buffer_prototype

        store, key = await self._resolve(path)
        await store.set(key, default_buffer_prototype().buffer.from_bytes(value))

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        """Write a zero block for one chunk (DVID has no block delete: it still exists afterwards)."""
        store, key = await self._resolve(path)
        if not store.is_chunk(key):
            raise UnsupportedError(
                f"cannot delete {path!r}: only chunks can be removed from a DVID store (that writes a zero block)"
            )
        await store.delete(key)

    async def _rm(
        self, path: str | list[str], recursive: bool = False, batch_size: int | None = None, **kwargs: Any
    ) -> None:
        """Write zero blocks for chunks; anything else is refused before a block is written.

        DVID has no block delete: a removed chunk reads as 0 but still exists and is
        listed. Deletes that zarr issues through a ``dvid://`` URL to change metadata
        (``resize``) are refused as :meth:`DvidStore.delete <dvid_store.DvidStore.delete>`
        refuses them.
        """
        paths = path if isinstance(path, list) else [path]
        targets = []
        for p in paths:
            store, key = await self._resolve(p)
            if not store.is_chunk(key):
                raise UnsupportedError(
                    f"refusing to delete {p!r}: dvid_store never wipes DVID data; only single chunks can be "
                    "removed (each becomes a zero block)"
                )
            # Here, not in the tasks below: the check reads this coroutine's await
            # chain, which a new task would not have.
            store.check_delete(key)
            targets.append((store, key))
        await asyncio.gather(*(store.delete(key) for store, key in targets))

    def mv(self, path1: Any, path2: Any, recursive: bool = False, maxdepth: int | None = None, **kwargs: Any) -> None:
        """Refused: DVID keys cannot be renamed (a chunk key is a block position, metadata is synthesised)."""
        raise UnsupportedError(
            f"cannot move {path1!r} to {path2!r}: keys of a DVID store cannot be renamed (a chunk key is the "
            "position of a DVID block and metadata is synthesised from the instance). Copy voxels by reading "
            "and writing them, e.g. dvid_store.to_dvid(dvid_store.open_dask(src_node, name), dst_node, "
            "new_name, offset=...) after dvid_store.create_array(dst_node, new_name, ...)"
        )

    async def _copy(self, path1: Any, path2: Any, recursive: bool = False, **kwargs: Any) -> None:
        """Refused: copies inside DVID go through arrays (see the message)."""
        raise UnsupportedError(
            f"cannot copy {path1!r} to {path2!r} inside DVID: chunk keys are block positions of one instance "
            "and metadata is synthesised, so there is no file to copy. Copy voxels by reading and writing them, "
            "e.g. dvid_store.create_array(dst_node, new_name, ...) then dvid_store.to_dvid("
            "dvid_store.open_dask(src_node, name), dst_node, new_name, offset=...); to copy out of DVID use "
            "fs.get(url, local_path, recursive=True)"
        )

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        await self._copy(path1, path2)

    async def _mv_file(self, path1: str, path2: str) -> None:
        self.mv(path1, path2)

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Directories are virtual; nothing to make."""

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Directories are virtual; nothing to make."""

    async def _put_file(self, lpath: str, rpath: str, **kwargs: Any) -> None:
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, _read_local, lpath)
        await self._pipe_file(rpath, data)

    async def _get_file(self, rpath: str, lpath: str, **kwargs: Any) -> None:
        """Copy a key to a local file; a directory (``get(..., recursive=True)``) becomes a local directory."""
        loop = asyncio.get_running_loop()
        store, key = await self._resolve(rpath)
        if await self._file_size(store, key) is None and await self._isdir_key(store, key):
            await loop.run_in_executor(None, lambda: os.makedirs(lpath, exist_ok=True))
            return
        data = await self._cat_file(rpath)
        await loop.run_in_executor(None, _write_local, lpath, data)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> io.BytesIO:
        if mode != "rb":
            raise DvidInputError(
                f"DVID files open for reading only ('rb'), not {mode!r}; write with fs.pipe(path, data)"
            )
        return io.BytesIO(self.cat_file(path))


def _read_local(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_local(path: str, data: bytes | memoryview) -> None:
    with open(path, "wb") as f:
        f.write(data)
