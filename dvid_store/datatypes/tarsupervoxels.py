"""Per-supervoxel files (e.g. meshes) of a labelmap, and tars of whole bodies (DVID's ``tarsupervoxels`` type)."""

from __future__ import annotations

from .base import Instance

__all__ = ["Tarsupervoxels"]


class Tarsupervoxels(Instance):
    """Per-supervoxel files (e.g. meshes) of a labelmap, and tars of whole bodies (DVID's ``tarsupervoxels`` type).

    Parameters
    ----------
    node : Node
        The version to read from and write to.
    name : str
        The instance name.
    """

    typenames = ("tarsupervoxels",)
    default_typename = "tarsupervoxels"
