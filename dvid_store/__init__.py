"""dvid_store: DVID volumes as zarr v3 stores, dask arrays and xarray objects.

The public API is re-exported here; see ``__all__``.
"""

from typing import Any

from ._version import __version__
from .client import DvidClient
from .datatypes.annotations import Annotations, elements_frame, elements_from_frame, partners_frame
from .datatypes.googlevoxels import GoogleVoxels
from .datatypes.graph import LabelGraph
from .datatypes.keyvalue import KeyValue
from .datatypes.label_history import AffectedBodies, affected_bodies, ancestry, merge_chains, mutation_log
from .datatypes.labels import (
    CleaveResult,
    IndexingTimeoutError,
    Labelarray,
    Labelblk,
    LabelIndex,
    Labelmap,
    Labelvol,
    SparsevolSize,
    SplitResult,
    SplitSupervoxelResult,
)
from .datatypes.labelsz import Labelsz
from .datatypes.meshes import (
    decode_ngmesh,
    encode_ngmesh,
    frame_to_swc,
    read_mesh,
    read_skeleton,
    swc_to_frame,
    write_mesh,
    write_skeleton,
)
from .datatypes.multichan16 import Multichan16, MultichanLoadError
from .datatypes.neuronjson import Neuronjson
from .datatypes.roi import Roi, Substack
from .datatypes.rois import RoiLabels, point_roi_indices, point_rois, roi_label_volume
from .datatypes.tarsupervoxels import Tarsupervoxels
from .datatypes.tiles import TileLevel, TileMetadata, Tiles
from .datatypes.volume import VolumeInstance
from .datatypes.voxels import RGBA8, Voxels
from .errors import (
    AuthError,
    BadRequestError,
    ConcurrentWriteError,
    DvidConnectionError,
    DvidError,
    DvidHTTPError,
    DvidInputError,
    DvidTimeoutError,
    LockedNodeError,
    MalformedAnswerError,
    NotFoundError,
    RedirectError,
    ServerBusyError,
    ServerError,
    UnexpectedAnswerError,
    UnknownInstanceError,
    UnknownNodeError,
    UnsupportedError,
)
from .node import Node
from .repo import RepoInfo, VersionInfo
from .transport import RetryPolicy

# The array front ends pull in zarr, dask, fsspec (and xarray, an optional dependency):
# import them on first use, so that the node API and the command line start fast.
_LAZY = {
    "DvidStore": "zarr",
    "DvidFileSystem": "fs",
    "DvidArray": "dask_array",
    "create_array": "create",
    "open_dask": "dask",
    "to_dvid": "dask",
    "open_dataarray": "xarray_backend",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dvid_store' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "RGBA8",
    "AffectedBodies",
    "Annotations",
    "AuthError",
    "BadRequestError",
    "CleaveResult",
    "ConcurrentWriteError",
    "DvidArray",
    "DvidClient",
    "DvidConnectionError",
    "DvidError",
    "DvidFileSystem",
    "DvidHTTPError",
    "DvidInputError",
    "DvidStore",
    "DvidTimeoutError",
    "GoogleVoxels",
    "IndexingTimeoutError",
    "KeyValue",
    "LabelGraph",
    "LabelIndex",
    "Labelarray",
    "Labelblk",
    "Labelmap",
    "Labelsz",
    "Labelvol",
    "LockedNodeError",
    "MalformedAnswerError",
    "Multichan16",
    "MultichanLoadError",
    "Neuronjson",
    "Node",
    "NotFoundError",
    "RedirectError",
    "RepoInfo",
    "RetryPolicy",
    "Roi",
    "RoiLabels",
    "ServerBusyError",
    "ServerError",
    "SparsevolSize",
    "SplitResult",
    "SplitSupervoxelResult",
    "Substack",
    "Tarsupervoxels",
    "TileLevel",
    "TileMetadata",
    "Tiles",
    "UnexpectedAnswerError",
    "UnknownInstanceError",
    "UnknownNodeError",
    "UnsupportedError",
    "VersionInfo",
    "VolumeInstance",
    "Voxels",
    "__version__",
    "affected_bodies",
    "ancestry",
    "create_array",
    "decode_ngmesh",
    "elements_frame",
    "elements_from_frame",
    "encode_ngmesh",
    "frame_to_swc",
    "merge_chains",
    "mutation_log",
    "open_dask",
    "open_dataarray",
    "partners_frame",
    "point_roi_indices",
    "point_rois",
    "read_mesh",
    "read_skeleton",
    "roi_label_volume",
    "swc_to_frame",
    "to_dvid",
    "write_mesh",
    "write_skeleton",
]
