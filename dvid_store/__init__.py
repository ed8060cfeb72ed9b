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
from .datatypes.labels import (
    CleaveResult,
    IndexingTimeoutError,
    Labelarray,
    Labelblk,
    Labelmap,
    Labelvol,
    SparsevolSize,
    SplitResult,
    SplitSupervoxelResult,
)
from .datatypes.roi import Roi, Substack
from .datatypes.tiles import TileLevel, TileMetadata, Tiles
from .datatypes.volume import VolumeInstance
from .datatypes.voxels import RGBA8, Voxels
from .node import Node
from .repo import RepoInfo, VersionInfo
from .transport import RetryPolicy

__all__ = [
    "Annotations",
    "AuthError",
    "BadRequestError",
    "CleaveResult",
    "DvidClient",
    "DvidConnectionError",
    "DvidError",
    "DvidHTTPError",
    "DvidInputError",
    "IndexingTimeoutError",
    "KeyValue",
    "LabelGraph",
    "Labelarray",
    "Labelblk",
    "Labelmap",
    "Labelvol",
    "LockedNodeError",
    "Node",
    "NotFoundError",
    "RGBA8",
    "RepoInfo",
    "RetryPolicy",
    "Roi",
    "ServerBusyError",
    "ServerError",
    "SparsevolSize",
    "SplitResult",
    "SplitSupervoxelResult",
    "Substack",
    "TileLevel",
    "TileMetadata",
    "Tiles",
    "UnknownInstanceError",
    "UnknownNodeError",
    "UnsupportedError",
    "VersionInfo",
    "VolumeInstance",
    "Voxels",
    "__version__",
]
