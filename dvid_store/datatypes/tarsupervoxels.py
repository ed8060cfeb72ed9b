"""Per-supervoxel files (e.g. meshes) of a labelmap, and tars of whole bodies (DVID's ``tarsupervoxels`` type).

A ``tarsupervoxels`` instance holds one file per supervoxel, all with the same
extension (e.g. ``drc`` for Draco meshes), and is synced with a labelmap so that it
can hand out the files of every supervoxel of a body as one tar.

neuclease equivalents (``neuclease.dvid.tarsupervoxels`` → here, with
``tsv = node.tarsupervoxels(name)``):

| neuclease | dvid_store |
| --- | --- |
| ``create_tarsupervoxel_instance(...)`` | ``Tarsupervoxels.create(node, name, labelmap=, extension=)`` |
| ``post_tarsupervoxel_sync`` | ``tsv.sync(labelmap)`` |
| ``post_supervoxel`` / ``fetch_supervoxel`` / ``delete_supervoxel`` | ``tsv.put`` / ``tsv.get`` / ``tsv.delete`` |
| ``fetch_tarfile(...)`` / ``fetch_tarfile(..., check_head=True)`` | ``tsv.tarfile(body)`` / ``tsv.complete(body)`` |
| ``tar_to_dict(fetch_tarfile(...))`` | ``tsv.files(body)`` (keys are supervoxel ids) |
| ``post_load(..., tar)`` (bytes or dict) | ``tsv.load(tar_bytes_or_dict)`` |
| ``fetch_exists`` | ``tsv.exists(supervoxels)`` |
| ``fetch_missing`` | ``tsv.missing(body)`` |

What the v1.0.0 server really does (checked against it by the tests)
-------------------------------------------------------------------
* The files are **not versioned**: DVID keeps them at the repo's root whatever
  node they are written through, so every version sees the same files. Which
  supervoxels make up a body, for :meth:`Tarsupervoxels.tarfile` and
  :meth:`Tarsupervoxels.missing`, does follow the node's version. Writes through
  a committed node are still refused.
* A supervoxel stored with an empty file counts as present for ``/exists`` and
  ``/missing``, but ``GET /supervoxel`` answers 404 for it and the tar of its body
  lists it as ``<id>.missing``, like a supervoxel without a file.
  :meth:`Tarsupervoxels.get` and :meth:`Tarsupervoxels.files` return ``b""`` for it
  (they ask ``/exists`` about the supervoxels DVID reported missing).
* The tar of a body lists supervoxels without a file as 0-byte members named
  ``<id>.missing``, in no particular order.
* ``POST /load`` stores the tar's files in order and stops at the first bad name,
  keeping the files before it; :meth:`Tarsupervoxels.load` checks every name first.
"""

from __future__ import annotations

import io
import re
import tarfile as _tarfile
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from ..errors import BadRequestError, DvidInputError, MalformedAnswerError, NotFoundError
from .base import Instance
from .label_volume import _label_id, _label_list

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["Tarsupervoxels"]

BytesLike = bytes | bytearray | memoryview

#: A tar ends with two 512-byte blocks of zeros; DVID's tar writer always writes them.
_TAR_END = bytes(1024)
_BLOCK = 512


class Tarsupervoxels(Instance):
    """Per-supervoxel files (e.g. meshes) of a labelmap, and tars of whole bodies (DVID's ``tarsupervoxels`` type).

    Parameters
    ----------
    node : Node
        The version to read from and write to.
    name : str
        The instance name.
    """

    typenames: ClassVar[tuple[str, ...]] = ("tarsupervoxels",)
    default_typename: ClassVar[str] = "tarsupervoxels"

    #: Supervoxels per ``GET /exists`` request in :meth:`exists`.
    EXISTS_BATCH = 100_000

    @classmethod
    def create(
        cls,
        node: Node,
        name: str,
        *,
        labelmap: str | None = None,
        extension: str | None = None,
        **settings: Any,
    ) -> Tarsupervoxels:
        """Create a tarsupervoxels instance synced with a labelmap.

        Parameters
        ----------
        node : Node
            An uncommitted node.
        name : str
            Instance name (by convention ``<labelmap>_sv_meshes`` for meshes).
        labelmap : str
            The labelmap whose supervoxels and bodies the files belong to (required).
        extension : str
            The extension of every file, e.g. ``"drc"`` or ``"obj"`` (required by DVID;
            a leading ``.`` is dropped).
        **settings
            Other DVID settings (see :meth:`Node.create_instance`), e.g. ``versioned=False``.

        Raises
        ------
        DvidInputError
            ``labelmap`` or ``extension`` missing or unusable (nothing is created).
        UnknownInstanceError
            No instance named ``labelmap``.
        """
        if extension is None:
            raise DvidInputError(
                "a tarsupervoxels instance needs extension=, the extension of its files (e.g. 'drc'); "
                "DVID refuses to create one without"
            )
        ext = _check_extension(extension)
        if labelmap is None:
            raise DvidInputError(
                "a tarsupervoxels instance needs labelmap=, the labelmap whose supervoxels its files belong to "
                "(its tars of bodies and missing-file lists come from that labelmap)"
            )
        node.labelmap(labelmap)  # exists and is a labelmap: checked before anything is created
        node.create_instance(cls.default_typename, name, Extension=ext, **settings)
        instance = cls(node, name)
        instance.sync(labelmap)
        return instance

    # ---------------------------------------------------------------- settings
    @property
    def extension(self) -> str:
        """The extension of every file (``"drc"``, ``"obj"``, ...)."""
        return str(self.info["Extended"]["Extension"])

    def sync(self, labelmap: str, *, replace: bool = False) -> None:
        """Sync with the labelmap whose bodies :meth:`tarfile` and :meth:`missing` look up.

        ``replace=True`` replaces the current sync instead of adding to it.
        """
        if not isinstance(labelmap, str) or not labelmap:
            raise DvidInputError(f"name the labelmap to sync with, got {labelmap!r}")
        self._post_sync([labelmap], replace=replace)

    # ---------------------------------------------------------- one supervoxel
    def put(self, supervoxel: int, data: BytesLike) -> None:
        """Store the file of one supervoxel (replacing any previous one).

        Parameters
        ----------
        supervoxel : int
            Supervoxel id (1 .. 2**64-1).
        data : bytes, bytearray or memoryview
            The file's bytes. An empty file is stored and counts as present (e.g.
            to mark a supervoxel too small to mesh).

        Raises
        ------
        LockedNodeError
            The node is committed.
        """
        sv = _label_id(supervoxel)
        body = _check_bytes(data, f"the file of supervoxel {sv}")
        self.require_writable(f"storing the file of supervoxel {sv}")
        self.transport.request("POST", self.path("supervoxel", str(sv)), data=body, idempotent=True)

    def get(self, supervoxel: int) -> bytes:
        """The file of one supervoxel.

        Returns
        -------
        bytes
            The file (``b""`` for a supervoxel stored with an empty file).

        Raises
        ------
        NotFoundError
            The supervoxel has no file.
        """
        sv = _label_id(supervoxel)
        answer = self.transport.request("GET", self.path("supervoxel", str(sv)), allow_status=(404,))
        if answer.status_code == 200:
            return answer.content
        # DVID answers 404 for empty files too; /exists tells them apart.
        if self.exists([sv])[0]:
            return b""
        raise NotFoundError(
            "GET", answer.url, 404, f"supervoxel {sv} has no file in {self.name!r} ({answer.text.strip()})"
        )

    def delete(self, supervoxel: int) -> None:
        """Delete the file of one supervoxel (no error when it has none)."""
        sv = _label_id(supervoxel)
        self.require_writable(f"deleting the file of supervoxel {sv}")
        self.transport.request("DELETE", self.path("supervoxel", str(sv)))

    # ------------------------------------------------------------- many at once
    def exists(self, supervoxels: Iterable[int] | np.ndarray | int) -> np.ndarray:
        """Whether each supervoxel has a file (``GET /exists``).

        Parameters
        ----------
        supervoxels : int or iterable of int
            Supervoxel ids.

        Returns
        -------
        numpy.ndarray of bool
            One entry per supervoxel asked, in the order asked.
        """
        svs = _label_list(supervoxels)
        out = np.zeros(len(svs), dtype=bool)
        for i in range(0, len(svs), self.EXISTS_BATCH):
            batch = svs[i : i + self.EXISTS_BATCH]
            answer = self.transport.request_json("GET", self.path("exists"), json=batch)
            if not isinstance(answer, list) or len(answer) != len(batch):
                raise MalformedAnswerError(
                    "GET", self.transport.url(self.path("exists")), 200,
                    f"asked about {len(batch)} supervoxels, the answer is {str(answer)[:100]}",
                )
            out[i : i + len(batch)] = [bool(a) for a in answer]
        return out

    def load(self, files: Mapping[int, BytesLike] | BytesLike) -> int:
        """Store many supervoxel files in one request (``POST /load``).

        Parameters
        ----------
        files : mapping of int to bytes, or bytes
            Supervoxel id → file, or a ready tar whose members are named
            ``<supervoxel>.<extension>`` (no directories).

        Returns
        -------
        int
            The number of files sent.

        Raises
        ------
        DvidInputError
            A bad supervoxel id, a member name that is not ``<supervoxel>.<extension>``
            with this instance's extension, or bytes that are not a tar. Every name is
            checked before anything is sent (DVID would keep the files before a bad one).
        """
        ext = self.extension
        if isinstance(files, Mapping):
            members = [(_label_id(sv), _check_bytes(data, f"the file of supervoxel {sv}"))
                       for sv, data in files.items()]
            body = _make_tar((f"{sv}.{ext}", data) for sv, data in members)
            count = len(members)
        elif isinstance(files, (bytes, bytearray, memoryview)):
            body = bytes(files)
            count = _check_tar(body, ext)
        else:
            raise DvidInputError(
                f"load() takes a mapping of supervoxel id to bytes, or the bytes of a tar; got {type(files).__name__}"
            )
        if count:
            self.require_writable(f"loading {count} supervoxel files")
            self.transport.request("POST", self.path("load"), data=body, idempotent=True)
        return count

    # ------------------------------------------------------------------ bodies
    def tarfile(self, body: int) -> bytes:
        """The tar of every supervoxel file of a body (``GET /tarfile``).

        Members are named ``<supervoxel>.<extension>``; supervoxels without a file
        (and those stored with an empty one) appear as 0-byte members
        ``<supervoxel>.missing``. The tar is checked to be whole, header by header
        (a cut answer is asked again).

        Raises
        ------
        NotFoundError
            The body does not exist at this version.
        DvidInputError
            The instance is not synced with a labelmap.
        """
        label = self._body(body)

        def whole(pieces: Iterator[bytes]) -> bytes:
            data = b"".join(pieces)
            problem = _tar_problem(data)
            if problem is not None:
                raise MalformedAnswerError("GET", "", 200, f"the tar of body {label} is not whole: {problem}")
            return data

        with self._body_errors(label):
            return self.transport.stream("GET", self.path("tarfile", str(label)), whole)

    def files(self, body: int) -> dict[int, bytes]:
        """The files of a body's supervoxels, read from its tar.

        Returns
        -------
        dict of int to bytes
            Supervoxel id → file, sorted by id; ``b""`` for a supervoxel stored with
            an empty file. Supervoxels without a file are left out (:meth:`missing`
            lists them).

        Raises
        ------
        NotFoundError
            The body does not exist at this version.
        """
        out: dict[int, bytes] = {}
        ext = self.extension
        data = self.tarfile(body)
        url = self.transport.url(self.path("tarfile", str(body)))
        try:
            members = _read_tar(data)
        except _tarfile.TarError as exc:
            raise MalformedAnswerError("GET", url, 200, f"the tar of body {body} does not read: {exc}") from None
        reported_missing = []
        for name, content in members:
            stem, _, member_ext = name.partition(".")
            if not _DIGITS.fullmatch(stem) or member_ext not in (ext, "missing"):
                raise MalformedAnswerError("GET", url, 200, f"the tar holds {name!r}, not a <supervoxel>.{ext} file")
            if member_ext == ext:
                out[int(stem)] = content
            else:
                reported_missing.append(int(stem))
        if reported_missing:
            # DVID's tar marks empty files "missing" too; /exists tells them apart.
            for sv, present in zip(reported_missing, self.exists(reported_missing)):
                if present:
                    out[sv] = b""
        return dict(sorted(out.items()))

    def missing(self, body: int) -> np.ndarray:
        """Supervoxels of a body that have no file (``GET /missing``).

        Returns
        -------
        numpy.ndarray of uint64
            Sorted supervoxel ids; empty when every supervoxel has a file.

        Raises
        ------
        NotFoundError
            The body does not exist at this version.
        DvidInputError
            The instance is not synced with a labelmap.
        """
        label = self._body(body)
        with self._body_errors(label):
            answer = self.transport.get_json(self.path("missing", str(label))) or []
        return np.sort(np.asarray(answer, dtype=np.uint64))

    def complete(self, body: int) -> bool:
        """Whether every supervoxel of a body has a file (empty files count).

        Asks ``GET /missing`` rather than DVID's ``HEAD /tarfile``: that answers the
        same bare 400 for "incomplete" and for "no such body", and its 400 declares a
        body length that a HEAD answer never carries.

        Raises
        ------
        NotFoundError
            The body does not exist at this version.
        """
        return self.missing(body).size == 0

    # ----------------------------------------------------------------- helpers
    def _body(self, body: int) -> int:
        label = _label_id(body)
        if not self.info["Base"].get("Syncs") and not self.syncs:
            raise DvidInputError(
                f"tarsupervoxels instance {self.name!r} is not synced with a labelmap, so DVID cannot find the "
                "supervoxels of a body; call .sync('<labelmap name>')"
            )
        return label

    def _body_errors(self, body: int) -> _BodyErrors:
        return _BodyErrors(body, self)


class _BodyErrors:
    """Turn DVID's 400 "label X has no supervoxels" into :class:`NotFoundError`."""

    def __init__(self, body: int, instance: Tarsupervoxels) -> None:
        self.body = body
        self.instance = instance

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> Literal[False]:
        if isinstance(exc, BadRequestError) and "has no supervoxels" in exc.message:
            syncs = ", ".join(repr(s) for s in self.instance.info["Base"].get("Syncs") or [])
            raise NotFoundError(
                exc.method, exc.url, exc.status,
                f"body {self.body} does not exist in {syncs} at node {self.instance.node.uuid[:8]} ({exc.message})",
            ) from None
        return False


_EXTENSION = re.compile(r"[^\s/\\]+")
_DIGITS = re.compile(r"[0-9]+")


def _check_extension(extension: object) -> str:
    if not isinstance(extension, str):
        raise DvidInputError(f"extension must be a str such as 'drc', got {type(extension).__name__}")
    ext = extension[1:] if extension.startswith(".") else extension
    if not _EXTENSION.fullmatch(ext) or ext == "missing":
        raise DvidInputError(
            f"extension {extension!r} cannot name supervoxel files: use a non-empty extension without spaces or "
            "slashes, such as 'drc' or 'obj' ('missing' is what DVID calls absent files)"
        )
    return ext


def _check_bytes(data: object, what: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        hint = "encode the str first" if isinstance(data, str) else "pass the file's bytes"
        raise DvidInputError(f"{what} must be bytes, bytearray or memoryview, got {type(data).__name__}; {hint}")
    return bytes(data) if not isinstance(data, bytes) else data


def _tar_problem(data: bytes) -> str | None:
    """What makes ``data`` not a whole tar, or None.

    Walks the member headers by their sizes to the end marker, so a tar cut inside a
    member is caught even where the member's bytes are zeros that look like the end
    marker (checking only the last 1024 bytes would take such a cut for the end).
    """
    pos = 0
    while True:
        header = data[pos : pos + _BLOCK]
        if len(header) < _BLOCK:
            return f"it ends inside the header at byte {pos} ({len(data)} bytes)"
        if header == bytes(_BLOCK):
            if data[pos : pos + len(_TAR_END)] != _TAR_END or data[pos + len(_TAR_END) :].strip(b"\0"):
                return f"its end marker at byte {pos} is not two zero blocks and nothing else"
            return None
        if _octal(header[148:156]) not in _header_sums(header):
            return f"the header at byte {pos} has a wrong checksum"
        size_field = header[124:136]
        if size_field[0] & 0x80:  # base-256 for sizes of 8 GiB and more
            size = int.from_bytes(size_field[1:], "big")
        else:
            octal = _octal(size_field)
            if octal is None:
                return f"the header at byte {pos} has no octal size"
            size = octal
        pos += _BLOCK + -(-size // _BLOCK) * _BLOCK
        if pos > len(data):
            return f"it ends inside a member's bytes ({len(data)} of at least {pos + len(_TAR_END)} bytes)"


def _octal(field: bytes) -> int | None:
    """A tar header's octal number field, or None if it holds something else."""
    digits = field.strip(b" \0")
    if not digits or not all(48 <= c <= 55 for c in digits):
        return None
    return int(digits, 8)


def _header_sums(header: bytes) -> tuple[int, int]:
    """A header's checksums, unsigned and signed (old writers), its checksum field counted as spaces."""
    rest = header[:148] + b" " * 8 + header[156:]
    return sum(rest), sum(c - 256 if c > 127 else c for c in rest)


def _make_tar(members: Iterable[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with _tarfile.open(fileobj=buffer, mode="w", format=_tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = _tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _read_tar(data: bytes) -> list[tuple[str, bytes]]:
    """Members of a tar in order (raises ``tarfile.TarError`` for a broken one)."""
    out = []
    with _tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        # Reading each member as the iteration reaches it: getmembers() first and
        # extractfile() after would seek back and forth through the whole tar.
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            out.append((member.name, handle.read() if handle is not None else b""))
    return out


def _check_tar(data: bytes, ext: str) -> int:
    """Number of files in a tar for ``/load``, after checking each member's name and kind."""
    count = 0
    try:
        with _tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                stem, dot, member_ext = member.name.partition(".")
                if not member.isfile():
                    raise DvidInputError(
                        f"tar member {member.name!r} is not a regular file; /load takes only files named "
                        f"<supervoxel>.{ext}, with no directories"
                    )
                if not (dot and _DIGITS.fullmatch(stem) and member_ext == ext and 0 < int(stem) < 2**64):
                    raise DvidInputError(
                        f"tar member {member.name!r} is not named <supervoxel>.{ext} (a supervoxel id from 1 to "
                        f"2**64-1 and this instance's extension {ext!r}, no directories); rename it before loading"
                    )
                count += 1
    except _tarfile.TarError as exc:
        raise DvidInputError(f"the bytes given to load() are not a tar ({exc}); pass a tar or a dict") from None
    return count
