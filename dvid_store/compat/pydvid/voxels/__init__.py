"""pydvid's ``voxels`` package: ``from dvid_store.compat.pydvid.voxels import VoxelsAccessor, VoxelsMetadata``."""

from .voxels import create_new, get_metadata, get_ndarray, post_ndarray
from .voxels_accessor import RoiMaskAccessor, VoxelsAccessor
from .voxels_metadata import VoxelsMetadata

__all__ = [
    "RoiMaskAccessor",
    "VoxelsAccessor",
    "VoxelsMetadata",
    "create_new",
    "get_metadata",
    "get_ndarray",
    "post_ndarray",
]
