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
request. Files cannot be created, renamed or deleted except chunks: removing a chunk
writes a zero block.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fsspec.asyn import AsyncFileSystem

from .errors import DvidInputError, UnsupportedError
from .transport import Secret

if TYPE_CHECKING:
    from .node import Node
    from .zarr.store import DvidStore

__all__ = ["DvidFileSystem", "DvidURL", "parse_url"]


@dataclass(frozen=True)
class DvidURL:
    """The parts of a ``dvid://`` URL.

    Attributes
    ----------
    server : str
        ``http://host:port``.
    ref : str
        Node reference as written (UUID, prefix, ``prefix:branch[~N]``).
    instance : str
        Instance name.
    key : str
        The rest of the path (a zarr key, a level number or ``""``).
    """

    server: str
    ref: str
    instance: str
    key: str = ""

    def client(self, **conn: Any) -> Any:
        from .client import DvidClient

        return DvidClient(self.server, **conn)

    def node(self, **conn: Any) -> Node:
        """Resolve the node reference (one or two requests)."""
        scheme = conn.pop("scheme", None)
        server = self.server if scheme is None else f"{scheme}://{self.server.split('://', 1)[1]}"
        return DvidURL(server, self.ref, self.instance, self.key).client(**conn).node(self.ref)


def parse_url(url: str, scheme: str = "http") -> DvidURL:
    """Split ``dvid://host:port/<node>/<instance>[/key]`` (the ``dvid://`` may be missing).

    Raises
    ------
    DvidInputError
        Host, node or instance is missing.
    """
    text = url
    for prefix in ("dvid://", "dvid::"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    parts = [p for p in text.strip("/").split("/")]
    if len(parts) < 3 or not all(parts[:3]):
        raise DvidInputError(
            f"{url!r} is not a DVID URL: use dvid://host:port/<uuid or prefix or uuid:branch>/<instance>[/<key>]"
        )
    host, ref, instance = parts[:3]
    return DvidURL(f"{scheme}://{host}", ref, instance, "/".join(parts[3:]))


class DvidFileSystem(AsyncFileSystem):
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.user = user
        self.app = app
        self._token = Secret(token) if token else None
        self.scheme = scheme
        self.supervoxels = bool(supervoxels)
        self.compression = compression
        self._clients: dict[str, Any] = {}
        self._uuids: dict[tuple[str, str], str] = {}
        self._stores: dict[tuple[str, str, str], DvidStore] = {}

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
            if path.startswith(prefix):
                path = path[len(prefix) :]
        return path.rstrip("/")

    def unstrip_protocol(self, name: str) -> str:
        return "dvid://" + name

    def _client(self, server: str) -> Any:
        client = self._clients.get(server)
        if client is None:
            from .client import DvidClient

            client = DvidClient(server, user=self.user, app=self.app, token=self._token)
            self._clients[server] = client
        return client

    def _open_store(self, parsed: DvidURL) -> DvidStore:
        """The store of (server, node, instance), made on first use (blocking: call in a thread)."""
        from .zarr.store import DvidStore

        uuid = self._uuids.get((parsed.server, parsed.ref))
        client = self._client(parsed.server)
        if uuid is None:
            uuid = client.resolve(parsed.ref)
            self._uuids[(parsed.server, parsed.ref)] = uuid
        key = (parsed.server, uuid, parsed.instance)
        store = self._stores.get(key)
        if store is None:
            from .node import Node

            store = DvidStore(
                Node(client, uuid), parsed.instance, supervoxels=self.supervoxels, compression=self.compression
            )
            self._stores[key] = store
        return store

    async def _resolve(self, path: str) -> tuple[DvidStore, str]:
        parsed = parse_url(self._strip_protocol(path), scheme=self.scheme)
        cached = self._uuids.get((parsed.server, parsed.ref))
        store = self._stores.get((parsed.server, cached, parsed.instance)) if cached else None
        if store is None:
            from .zarr.coalesce import io_executor

            loop = asyncio.get_running_loop()
            store = await loop.run_in_executor(io_executor(), self._open_store, parsed)
        return store, parsed.key

    # --------------------------------------------------------------- reads
    async def _cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
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
        return value.to_bytes()

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        store, key = await self._resolve(path)
        name = self._strip_protocol(path)
        size = await self._file_size(store, key)
        if size is not None:
            return {"name": name, "size": size, "type": "file"}
        if await self._isdir_key(store, key):
            return {"name": name, "size": 0, "type": "directory"}
        raise FileNotFoundError(path)

    async def _file_size(self, store: DvidStore, key: str) -> int | None:
        if not key or store._chunk(key) is None and key not in store._docs:
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
        try:
            await self._info(path)
        except FileNotFoundError:
            return False
        return True

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        store, key = await self._resolve(path)
        base = self._strip_protocol(path)
        entries = []
        async for name in store.list_dir(key):
            child = f"{key}/{name}" if key else name
            full = f"{base}/{name}"
            if child in store._docs:
                entries.append({"name": full, "size": len(store._docs[child]), "type": "file"})
            elif store._chunk(child) is not None:
                level = store._chunk(child)[0]  # type: ignore[index]
                entries.append({"name": full, "size": store._block_io(level).block_nbytes, "type": "file"})
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
        store, key = await self._resolve(path)
        if store._chunk(key) is None:
            raise UnsupportedError(
                f"cannot delete {path!r}: only chunks can be removed from a DVID store (that writes a zero block)"
            )
        await store.delete(key)

    async def _rm(
        self, path: str | list[str], recursive: bool = False, batch_size: int | None = None, **kwargs: Any
    ) -> None:
        paths = path if isinstance(path, list) else [path]
        for p in paths:
            store, key = await self._resolve(p)
            if store._chunk(key) is None:
                raise UnsupportedError(
                    f"refusing to delete {p!r}: dvid_store never wipes DVID data; only single chunks can be "
                    "removed (each becomes a zero block)"
                )
        await asyncio.gather(*(self._rm_file(p) for p in paths))

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Directories are virtual; nothing to make."""

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Directories are virtual; nothing to make."""

    async def _put_file(self, lpath: str, rpath: str, **kwargs: Any) -> None:
        with open(lpath, "rb") as f:
            await self._pipe_file(rpath, f.read())

    async def _get_file(self, rpath: str, lpath: str, **kwargs: Any) -> None:
        data = await self._cat_file(rpath)
        with open(lpath, "wb") as f:
            f.write(data)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> io.BytesIO:
        if mode != "rb":
            raise DvidInputError(
                f"DVID files open for reading only ('rb'), not {mode!r}; write with fs.pipe(path, data)"
            )
        return io.BytesIO(self.cat_file(path))
