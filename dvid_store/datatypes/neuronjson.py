"""Body annotations as JSON documents keyed by body id (DVID's ``neuronjson`` type)."""

from __future__ import annotations

from .base import Instance

__all__ = ["Neuronjson"]


class Neuronjson(Instance):
    """Body annotations as JSON documents keyed by body id (DVID's ``neuronjson`` type).

    Parameters
    ----------
    node : Node
        The version to read from and write to.
    name : str
        The instance name.
    """

    typenames = ("neuronjson",)
    default_typename = "neuronjson"
