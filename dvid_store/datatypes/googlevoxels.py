"""DVID's ``googlevoxels`` datatype (a proxy to Google's BrainMaps API): not supported.

A ``googlevoxels`` instance stores nothing in DVID. It forwards every tile and
``raw`` request to Google's BrainMaps service, signed with a service account's
JSON Web Token that must sit in a file on the DVID server (the ``jwtfile``
setting), for the BrainMaps volume named by ``volumeid``. DVID v1.0.0 even calls
Google while *creating* the instance and refuses to create it when that call
fails. So it needs Google credentials and the outside network, neither of which
this package can provide, test or reach: :class:`GoogleVoxels` keeps the
datatype's operations so that code meeting such an instance fails at the first
call with an :class:`~dvid_store.errors.UnsupportedError` that says why and what
to do. No method sends a request.

What to use instead
-------------------
* Read the volume from BrainMaps directly with Google's own client and
  credentials, then write it into a DVID ``uint8blk`` instance
  (``node.voxels(name)``) if DVID should serve it.
* Or keep the data in any DVID voxel type (``uint8blk``, ``labelmap``...), which
  dvid_store reads and writes fully.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import UnsupportedError

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["GOOGLEVOXELS_UNSUPPORTED", "GoogleVoxels", "refuse_googlevoxels"]

GOOGLEVOXELS_UNSUPPORTED = (
    "{what}: googlevoxels instances are not supported by dvid_store. DVID does not store their "
    "voxels; it relays each request to Google's BrainMaps API with a service-account JSON Web Token "
    "kept on the DVID server, so using one needs Google credentials and the outside network. Read "
    "the volume with Google's BrainMaps client instead (and write it to a uint8blk instance with "
    "node.voxels(name) if DVID should serve it)."
)


def refuse_googlevoxels(typename: str, name: str) -> None:
    """Raise :class:`UnsupportedError` when ``typename`` is ``googlevoxels``; else do nothing.

    For the instance accessors, so that opening such an instance with any of them
    (``node.voxels(name)``, ``node.tiles(name)``...) says why it cannot work
    instead of suggesting another accessor.

    Parameters
    ----------
    typename : str
        The instance's DVID type name (from its ``/info``).
    name : str
        The instance name, for the message.
    """
    if typename == "googlevoxels":
        raise UnsupportedError(GOOGLEVOXELS_UNSUPPORTED.format(what=f"instance {name!r} is a googlevoxels"))


class GoogleVoxels:
    """Placeholder for a ``googlevoxels`` instance: every operation raises :class:`UnsupportedError`.

    Constructing it succeeds without contacting the server, so the error appears at
    the call that would have used the instance.

    Parameters
    ----------
    node : Node
        The version the instance belongs to.
    name : str
        The instance name.
    """

    typenames = ("googlevoxels",)
    default_typename = "googlevoxels"

    def __init__(self, node: Node, name: str) -> None:
        self.node = node
        self.name = name

    def __repr__(self) -> str:
        return f"GoogleVoxels({self.name!r}, node={self.node.uuid[:8]!r}) — unsupported: needs Google BrainMaps"

    @classmethod
    def create(cls, node: Node, name: str, **settings: Any) -> NoReturn:
        """Creating one: always raises :class:`UnsupportedError` (DVID would call Google to create it)."""
        raise UnsupportedError(GOOGLEVOXELS_UNSUPPORTED.format(what=f"creating googlevoxels instance {name!r}"))

    def _unsupported(self, call: str) -> NoReturn:
        raise UnsupportedError(GOOGLEVOXELS_UNSUPPORTED.format(what=f"{call} on {self.name!r}"))

    @property
    def info(self) -> NoReturn:
        """The instance's ``/info``: raises :class:`UnsupportedError`."""
        self._unsupported("info")

    def tile(self, *args: Any, **kwargs: Any) -> NoReturn:
        """DVID's ``GET /tile`` (BrainMaps tiles): raises :class:`UnsupportedError`."""
        self._unsupported("tile()")

    def read(self, *args: Any, **kwargs: Any) -> NoReturn:
        """DVID's ``GET /raw`` (BrainMaps subvolumes and slices): raises :class:`UnsupportedError`."""
        self._unsupported("read()")

    def write(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Writing: DVID offers no write for googlevoxels; raises :class:`UnsupportedError`."""
        self._unsupported("write()")
