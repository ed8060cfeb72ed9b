"""dvid_store: DVID volumes as zarr v3 stores, dask arrays and xarray objects.

The public API is re-exported here; see ``__all__``.
"""

from ._version import __version__
from .client import DvidClient
from .errors import (
    AuthError,
    BadRequestError,
    DvidConnectionError,
    DvidError,
    DvidHTTPError,
    DvidInputError,
    LockedNodeError,
    NotFoundError,
    ServerBusyError,
    ServerError,
    UnknownInstanceError,
    UnknownNodeError,
    UnsupportedError,
)
from .datatypes.annotations import Annotations
from .datatypes.graph import LabelGraph
from .datatypes.keyvalue import KeyValue
from .datatypes.roi import Roi, Substack
from .datatypes.tiles import TileLevel, TileMetadata, Tiles
from .node import Node
from .repo import RepoInfo, VersionInfo
from .transport import RetryPolicy

__all__ = [
    "Annotations",
    "KeyValue",
    "LabelGraph",
    "Roi",
    "Substack",
    "TileLevel",
    "TileMetadata",
    "Tiles",
    "AuthError",
    "BadRequestError",
    "DvidClient",
    "DvidConnectionError",
    "DvidError",
    "DvidHTTPError",
    "DvidInputError",
    "LockedNodeError",
    "Node",
    "NotFoundError",
    "RepoInfo",
    "RetryPolicy",
    "ServerBusyError",
    "ServerError",
    "UnknownInstanceError",
    "UnknownNodeError",
    "UnsupportedError",
    "VersionInfo",
    "__version__",
]
