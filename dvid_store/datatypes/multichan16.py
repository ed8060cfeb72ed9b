"""Multi-channel 16-bit volumes (DVID's ``multichan16`` type)."""

from __future__ import annotations

from .base import Instance

__all__ = ["Multichan16"]


class Multichan16(Instance):
    """Multi-channel 16-bit volumes (DVID's ``multichan16`` type).

    Parameters
    ----------
    node : Node
        The version to read from and write to.
    name : str
        The instance name.
    """

    typenames = ("multichan16",)
    default_typename = "multichan16"
