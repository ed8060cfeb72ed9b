"""A node (one version) of a DVID repo: version operations, instances, custom requests."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import quote

import lz4.block

from .datatypes.annotations import Annotations
from .datatypes.googlevoxels import GoogleVoxels
from .datatypes.graph import LabelGraph
from .datatypes.keyvalue import KeyValue
from .datatypes.labels import Labelarray, Labelblk, Labelmap, Labelvol
from .datatypes.labelsz import Labelsz
from .datatypes.multichan16 import Multichan16
from .datatypes.neuronjson import Neuronjson
from .datatypes.roi import Roi
from .datatypes.tarsupervoxels import Tarsupervoxels
from .datatypes.tiles import Tiles
from .datatypes.voxels import Voxels
from .errors import DvidInputError, LockedNodeError, MalformedAnswerError, UnknownInstanceError
from .names import check_instance_name
from .repo import RepoInfo
from .settings import dvid_settings

if TYPE_CHECKING:
    from .client import DvidClient
    from .transport import Transport

__all__ = ["Node", "meanwhile"]


T = TypeVar("T")


def meanwhile(call: Callable[[], T]) -> Callable[[], T]:
    """Run ``call`` in a thread now; the function returned waits for its result.

    For the few questions a transfer asks the server before it starts (the instance's
    ``/info``, the node's lock state, the repo's instance list): asked at once, they
    cost one round trip instead of one each, which counts on a far server. The
    result's call raises what ``call`` raised; a result never asked for is dropped.
    """
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed to whoever asks for the result
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="dvid_store-meanwhile", daemon=True)
    thread.start()

    def result() -> T:
        thread.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        return cast("T", value)

    return result


class Node:
    """One version (a UUID) of a DVID repo.

    Get one from :meth:`DvidClient.node` or :meth:`DvidClient.create_repo`.
    Committed nodes are read-only: writes to them raise :class:`LockedNodeError`,
    before any byte is sent where the client already knows the node is locked.

    Parameters
    ----------
    client : DvidClient
        The server connection.
    uuid : str
        The node's full UUID.
    """

    #: How long an "unlocked" answer from the server is trusted.
    LOCK_RECHECK_SECONDS = 2.0

    def __init__(self, client: DvidClient, uuid: str) -> None:
        self.client = client
        self.uuid = uuid
        self._known_locked = False
        self._unlocked_seen_at = -math.inf
        seen = client.commit_seen(uuid)
        if seen is not None:
            self._unlocked_seen_at, self._known_locked = seen

    # ----------------------------------------------------------------- basics
    @property
    def transport(self) -> Transport:
        return self.client.transport

    def __repr__(self) -> str:
        return f"Node({self.uuid!r}, server={self.client.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and other.uuid == self.uuid and other.client == self.client

    def __hash__(self) -> int:
        return hash((self.uuid, self.client))

    def __getstate__(self) -> dict[str, Any]:
        return {"client": self.client, "uuid": self.uuid}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.client = state["client"]
        self.uuid = state["uuid"]
        self._known_locked = False
        self._unlocked_seen_at = -math.inf

    def path(self, *parts: str) -> str:
        """``/api/node/<uuid>/<parts...>`` with each part percent-encoded.

        The first part is an instance name or a node action (``commit``, ``note``,
        ...); it is checked with :func:`~dvid_store.names.check_instance_name`, so a
        name such as ``"gray/info"`` or ``".."`` never reaches DVID as some other path.

        Raises
        ------
        DvidInputError
            The first part is not a name DVID can serve.
        """
        if parts:
            check_instance_name(parts[0])
        return "/api/node/" + "/".join([self.uuid, *(quote(p, safe="") for p in parts)])

    # ---------------------------------------------------------------- status
    @property
    def locked(self) -> bool:
        """Whether the node is committed.

        A commit is final, so a locked answer is kept; an unlocked one is asked
        again after :attr:`LOCK_RECHECK_SECONDS` (another client may commit). Writes
        that slip through that window are still refused by the server, with the
        same :class:`LockedNodeError`.
        """
        if not self._lock_state_known():
            now = time.monotonic()
            self._known_locked = bool(self.transport.get_json(self.path("commit")).get("Locked"))
            self._unlocked_seen_at = now
        return self._known_locked

    def _lock_state_known(self) -> bool:
        """Whether :attr:`locked` can answer without asking: locked for good, or unlocked lately."""
        return self._known_locked or time.monotonic() - self._unlocked_seen_at <= self.LOCK_RECHECK_SECONDS

    def locked_meanwhile(self) -> Callable[[], bool]:
        """Start finding out :attr:`locked` in a thread; call the result for the answer.

        For callers that need the lock state and other answers from the server before
        they start (an instance's ``/info``): the round trips overlap. Asks nothing when
        the state is known.
        """
        if self._lock_state_known():
            known = self._known_locked
            return lambda: known
        return meanwhile(lambda: self.locked)

    def require_writable(self, what: str = "write") -> None:
        """Raise :class:`LockedNodeError` if the node is committed; send nothing then.

        Parameters
        ----------
        what : str
            What was about to be written, for the error message.
        """
        if self.locked:
            raise LockedNodeError(
                "POST",
                self.transport.url(self.path()),
                None,
                f"node {self.uuid} is committed (locked), so {what} is refused; "
                "write to a new version instead: node.new_version() or node.branch(name)",
            )

    def repo_info(self) -> RepoInfo:
        """The repo this node belongs to, with its version DAG."""
        return RepoInfo.from_json(self.transport.get_json(f"/api/repo/{self.uuid}/info"))

    @property
    def parents(self) -> tuple[Node, ...]:
        """The parent node(s) in the version DAG."""
        version = self.repo_info().versions[self.uuid]
        return tuple(Node(self.client, p) for p in version.parents)

    @property
    def branch_name(self) -> str:
        """Branch of this node (``"master"`` for DVID's default branch)."""
        return self.repo_info().versions[self.uuid].branch

    # ------------------------------------------------------------- versions
    def _committed_now(self) -> bool:
        self._unlocked_seen_at = float("-inf")  # ask the server, not the cache
        return self.locked

    def commit(self, note: str = "", log: Iterable[str] = ()) -> None:
        """Commit (lock) this node. Afterwards it is read-only.

        Parameters
        ----------
        note : str
            Commit note.
        log : iterable of str
            Lines appended to the node's log.
        """
        if self._known_locked:
            self.require_writable("commit")
        payload = {"note": note, "log": list(log)}
        # Sent again after a 503; after a lost answer, a node found locked counts as committed.
        self.transport.send_once(lambda: self.transport.post_json(self.path("commit"), payload),
                                 carried_out=self._committed_now)
        self._known_locked = True

    def new_version(self, note: str = "", *, uuid: str | None = None) -> Node:
        """Create a child on the same branch. The node must be committed first."""
        payload: dict[str, str] = {"note": note}
        if uuid:
            payload["uuid"] = uuid
        answer = self.transport.send_once(lambda: self.transport.post_json(self.path("newversion"), payload))
        return Node(self.client, answer["child"])

    def branch(self, name: str, note: str = "", *, uuid: str | None = None) -> Node:
        """Create a child on a new branch ``name``. The node must be committed first."""
        if not name or name == "master":
            raise DvidInputError(f"branch name {name!r} is reserved; choose another name")
        payload: dict[str, str] = {"branch": name, "note": note}
        if uuid:
            payload["uuid"] = uuid
        answer = self.transport.send_once(lambda: self.transport.post_json(self.path("branch"), payload))
        return Node(self.client, answer["child"])

    def log(self) -> list[str]:
        """The node's log lines, as DVID stores them: ``"<UTC timestamp>  <text>"``."""
        return list(self.transport.get_json(self.path("log")).get("log") or [])

    def append_log(self, *lines: str) -> None:
        """Append lines to the node's log."""
        self.require_writable("appending to the log")
        self.transport.send_once(lambda: self.transport.post_json(self.path("log"), {"log": list(lines)}))

    @property
    def note(self) -> str:
        """The node's note (settable while the node is not committed)."""
        return self.transport.get_json(self.path("note")).get("note") or ""

    @note.setter
    def note(self, text: str) -> None:
        self.require_writable("setting the note")
        self.transport.post_json(self.path("note"), {"note": text}, idempotent=True)  # sets, so safe to repeat

    # ------------------------------------------------------------- instances
    def instances(self) -> dict[str, str]:
        """Data instances of the repo: name → DVID type name."""
        return self.repo_info().instances

    def typeinfo(self, name: str) -> dict[str, Any]:
        """DVID's ``/info`` JSON of the instance ``name`` (libdvid's ``get_typeinfo``).

        Raises
        ------
        UnknownInstanceError
            No instance of that name exists.
        """
        try:
            info: dict[str, Any] = self.transport.get_json(self.path(name, "info"))
            return info
        except UnknownInstanceError as exc:
            raise UnknownInstanceError(
                exc.method, exc.url, exc.status,
                f"{exc.message} — node {self.uuid[:8]} has instances: {', '.join(sorted(self.instances())) or 'none'}",
            ) from None

    def create_instance(self, typename: str, name: str, **settings: Any) -> dict[str, Any]:
        """Create a data instance and return its ``/info``.

        Parameters
        ----------
        typename : str
            DVID datatype, e.g. ``"uint8blk"``, ``"labelmap"``, ``"keyvalue"``, ``"roi"``.
        name : str
            Instance name, unique in the repo: ASCII letters, digits, ``_``, ``-`` and
            ``.``, not dots alone, not one of DVID's reserved node actions (see
            :func:`~dvid_store.names.check_instance_name`).
        **settings
            Python-style settings converted by :func:`dvid_store.settings.dvid_settings`:
            ``block_size=(64, 64, 64)`` and ``voxel_size`` in (z, y, x),
            ``max_downres_level=3``, ``compression="jpeg"``, ``versioned=False``...

        Raises
        ------
        DvidInputError
            The name is not one DVID can serve (nothing is sent).
        LockedNodeError
            The node is committed.
        BadRequestError
            DVID rejected the settings (its message says which).
        """
        check_instance_name(name, new=True)
        self.require_writable(f"creating instance {name!r}")
        payload = {"typename": typename, "dataname": name, **dvid_settings(settings)}
        self.transport.send_once(
            lambda: self.transport.post_json(f"/api/repo/{self.uuid}/instance", payload),
            carried_out=lambda: name in self.instances(),  # after a lost answer: created, or sent again
        )
        return self.typeinfo(name)

    # ------------------------------------------------------------- accessors
    def keyvalue(self, name: str) -> KeyValue:
        """The keyvalue instance ``name``."""
        return KeyValue(self, check_instance_name(name))

    def voxels(self, name: str) -> Voxels:
        """The imageblk-family instance ``name`` (uint8blk, uint16blk, ..., rgba8blk)."""
        return Voxels(self, check_instance_name(name))

    def labelmap(self, name: str) -> Labelmap:
        """The labelmap instance ``name``."""
        return Labelmap(self, check_instance_name(name))

    def labelblk(self, name: str) -> Labelblk:
        """The (legacy) labelblk instance ``name``."""
        return Labelblk(self, check_instance_name(name))

    def labelarray(self, name: str) -> Labelarray:
        """The (legacy) labelarray instance ``name``."""
        return Labelarray(self, check_instance_name(name))

    def labelvol(self, name: str) -> Labelvol:
        """The (legacy) labelvol instance ``name``: sparse volumes of a synced labelblk."""
        return Labelvol(self, check_instance_name(name))

    def roi(self, name: str) -> Roi:
        """The roi instance ``name``."""
        return Roi(self, check_instance_name(name))

    def tiles(self, name: str) -> Tiles:
        """The imagetile instance ``name``."""
        return Tiles(self, check_instance_name(name))

    def annotations(self, name: str) -> Annotations:
        """The annotation instance ``name``."""
        return Annotations(self, check_instance_name(name))

    def neuronjson(self, name: str) -> Neuronjson:
        """The neuronjson instance ``name``: JSON annotations of bodies."""
        return Neuronjson(self, check_instance_name(name))

    def tarsupervoxels(self, name: str) -> Tarsupervoxels:
        """The tarsupervoxels instance ``name``: per-supervoxel files and tars of bodies."""
        return Tarsupervoxels(self, check_instance_name(name))

    def labelsz(self, name: str) -> Labelsz:
        """The labelsz instance ``name``: annotation counts per label."""
        return Labelsz(self, check_instance_name(name))

    def multichan16(self, name: str) -> Multichan16:
        """The multichan16 instance ``name``: multi-channel 16-bit volumes."""
        return Multichan16(self, check_instance_name(name))

    def googlevoxels(self, name: str) -> GoogleVoxels:
        """A ``googlevoxels`` instance: it needs Google credentials and the outside network, so every call says so."""
        return GoogleVoxels(self, check_instance_name(name))

    def graph(self, name: str) -> LabelGraph:
        """The labelgraph instance ``name``: DVID removed that type; every call says so."""
        return LabelGraph(self, check_instance_name(name))

    # ---------------------------------------------------------------- general
    def custom_request(
        self,
        endpoint: str,
        payload: bytes | bytearray | memoryview | str | None = None,
        method: str = "GET",
        compress: bool = False,
        *,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Send any request to an endpoint under this node (libdvid's ``custom_request``).

        Parameters
        ----------
        endpoint : str
            Path after ``/api/node/<uuid>``, e.g. ``"/segmentation/sparsevol/42"``;
            a query string may be included.
        payload : bytes or str, optional
            Request body.
        method : str
            ``GET``, ``POST``, ``PUT``, ``DELETE`` or ``HEAD``.
        compress : bool
            As libdvid did: add ``compression=lz4`` to the query; compress a
            ``POST``/``PUT`` payload with LZ4 (DVID's raw block flavour, no size
            prefix); decompress a ``GET`` answer, which the endpoint must then send
            as LZ4 (labelmap and labelarray ``/raw`` do, for example).
        params : dict, optional
            Extra query parameters.
        timeout : float, optional
            Seconds to wait for the connection and for each part of the answer, for
            this call only (default: the client's).

        Returns
        -------
        bytes
            The response body (decompressed for ``GET`` with ``compress=True``).

        Raises
        ------
        DvidInputError
            The method is not one of the above, the first path segment is not an
            instance name or node action DVID can serve, or the path holds a ``.`` or
            ``..`` segment (DVID would redirect it elsewhere). Nothing is sent.
        MalformedAnswerError
            ``compress=True`` on a ``GET`` whose answer is not LZ4 (not asked
            again: such an endpoint answers the same every time); an HTML page in
            answer to a write (a proxy's sign-in or error page: DVID sends none).

        Notes
        -----
        The answer has no format the client knows, so a ``200`` body that a proxy
        made up, or one cut where HTTP's framing cannot show it, comes back as data.
        Use the typed methods where one exists: they check what they receive.
        """
        method = method.upper()
        if method not in {"GET", "POST", "PUT", "DELETE", "HEAD"}:
            raise DvidInputError(f"unsupported method {method!r}: use GET, POST, PUT, DELETE or HEAD")
        body = payload.encode() if isinstance(payload, str) else payload
        query = dict(params or {})
        if compress:
            query["compression"] = "lz4"
            if body is not None and method in ("POST", "PUT"):
                body = lz4.block.compress(bytes(body), store_size=False)
        path, _, query_string = endpoint.partition("?")
        segments = path.lstrip("/").split("/")
        check_instance_name(segments[0])
        if any(seg in (".", "..") for seg in segments):
            raise DvidInputError(
                f"endpoint {endpoint!r} holds a '.' or '..' segment, which DVID answers with a redirect "
                "to another path; write the path without it"
            )
        for item in filter(None, query_string.split("&")):
            key, _, value = item.partition("=")
            query.setdefault(key, value)
        full = f"/api/node/{self.uuid}/{path.lstrip('/')}"
        limits = None if timeout is None else (float(timeout), float(timeout))
        if method == "HEAD":
            # A HEAD answer has no body even where it declares the length of the GET's;
            # reading none (the body reader is never started) keeps that from counting as cut.
            self.transport.stream(
                "HEAD", full, lambda pieces: None, params=query, data=body, expect_empty=False, timeout=limits
            )
            return b""
        # A GET's answer may be the caller's own data, HTML included (keyvalue values); DVID
        # never answers a write with HTML, so such an answer is a proxy's page, not a success.
        answer = self.transport.request(
            method, full, params=query, data=body, expect_empty=False, allow_html=method == "GET", timeout=limits
        )
        if compress and method == "GET":
            # Decoded after the exchange, not inside it: an endpoint that ignores
            # compression=lz4 answers the same on every attempt, so retrying is useless.
            return _inflate_lz4(answer.content, answer.url)
        return answer.content


#: libdvid's ceiling for a decompressed answer (it decompressed into at most INT_MAX bytes).
_LZ4_ANSWER_LIMIT = 2**31 - 1


def _inflate_lz4(raw: bytes, url: str) -> bytes:
    """A raw LZ4 block of unknown decompressed size → its bytes.

    LZ4 expands at most 255-fold, so growing output buffers (up to that bound and
    libdvid's ``INT_MAX``) find the size without allocating the worst case first.
    """
    if not raw:
        return b""
    bound = min(255 * len(raw) + 64, _LZ4_ANSWER_LIMIT)
    size = min(max(1 << 16, 8 * len(raw)), bound)
    while True:
        try:
            data: bytes = lz4.block.decompress(raw, uncompressed_size=size)
            return data
        except lz4.block.LZ4BlockError:
            if size >= bound:
                break
            size = min(size * 4, bound)
    raise MalformedAnswerError(
        "GET", url, 200,
        f"compress=True, but the answer ({len(raw)} bytes) is not an LZ4 block; ask without compress "
        "(this endpoint does not answer compression=lz4 with LZ4)",
    )
