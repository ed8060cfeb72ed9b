"""What every data-instance wrapper shares: its node, its name, its ``/info``, its paths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import DvidInputError
from .googlevoxels import refuse_googlevoxels

if TYPE_CHECKING:
    from ..node import Node
    from ..transport import Transport

__all__ = ["Instance"]


class Instance:
    """A data instance of one DVID datatype on one node.

    Subclasses set :attr:`typenames` (the DVID types they wrap) and
    :attr:`default_typename` (what :meth:`create` makes).

    Parameters
    ----------
    node : Node
        The version to read from and write to.
    name : str
        The instance name.

    Raises
    ------
    UnknownInstanceError
        No instance of that name exists.
    DvidInputError
        The instance exists but is of another datatype.
    """

    typenames: ClassVar[tuple[str, ...]] = ()
    default_typename: ClassVar[str] = ""

    def __init__(self, node: Node, name: str) -> None:
        self.node = node
        self.name = name
        self._info: dict[str, Any] | None = None
        typename = self.typename
        refuse_googlevoxels(typename, name)
        if self.typenames and typename not in self.typenames:
            raise DvidInputError(
                f"instance {name!r} is a {typename}, not a {' or '.join(self.typenames)}; "
                f"open it with the matching accessor (e.g. node.{_accessor_hint(typename)}({name!r}))"
            )

    @classmethod
    def create(cls, node: Node, name: str, **settings: Any) -> Instance:
        """Create the instance on ``node`` and return its wrapper.

        ``settings`` are Python-style instance settings, see :meth:`Node.create_instance`;
        ``typename=`` picks another DVID type of the same family.
        """
        typename = settings.pop("typename", cls.default_typename)
        node.create_instance(typename, name, **settings)
        return cls(node, name)

    # ---------------------------------------------------------------- basics
    @property
    def transport(self) -> Transport:
        return self.node.transport

    @property
    def info(self) -> dict[str, Any]:
        """DVID's ``/info`` JSON (fetched once; see :meth:`refresh`)."""
        if self._info is None:
            self._info = self.node.typeinfo(self.name)
        return self._info

    def refresh(self) -> None:
        """Forget the cached ``/info`` (e.g. after another client changed the extents)."""
        self._info = None

    @property
    def typename(self) -> str:
        name: str = self.info["Base"]["TypeName"]
        return name

    @property
    def versioned(self) -> bool:
        return bool(self.info["Base"].get("Versioned", True))

    def path(self, *parts: str) -> str:
        """``/api/node/<uuid>/<name>/<parts...>`` (each part percent-encoded)."""
        return self.node.path(self.name, *parts)

    @property
    def syncs(self) -> list[str]:
        """Names of the instances this one is synced with (asked from the server each time)."""
        self.refresh()
        return list(self.info["Base"].get("Syncs") or [])

    def _post_sync(self, names: Sequence[str], *, replace: bool) -> None:
        """``POST /sync`` of ``names`` (comma-joined), adding to the syncs or replacing them."""
        self.require_writable("setting syncs")
        self.transport.request(
            "POST", self.path("sync"), json={"sync": ",".join(names)},
            params={"replace": "true"} if replace else None, idempotent=True,
        )
        self.refresh()

    def require_writable(self, what: str = "write") -> None:
        """Refuse, before sending, a write to a committed node (unversioned instances excepted)."""
        if self.versioned:
            self.node.require_writable(f"{what} to {self.name!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, node={self.node.uuid[:8]!r}, server={self.node.client.url!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.node == self.node and other.name == self.name

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.node, self.name))

    def __getstate__(self) -> dict[str, Any]:
        return {"node": self.node, "name": self.name, "info": self._info}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.node = state["node"]
        self.name = state["name"]
        self._info = state["info"]


_ACCESSORS = {
    "keyvalue": "keyvalue",
    "labelmap": "labelmap",
    "labelblk": "labelblk",
    "labelarray": "labelarray",
    "labelvol": "labelvol",
    "roi": "roi",
    "imagetile": "tiles",
    "annotation": "annotations",
    "neuronjson": "neuronjson",
    "tarsupervoxels": "tarsupervoxels",
    "labelsz": "labelsz",
    "multichan16": "multichan16",
}


def _accessor_hint(typename: str) -> str:
    return _ACCESSORS.get(typename, "voxels")
