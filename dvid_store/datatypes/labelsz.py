"""Annotation counts per label, ranked (DVID's ``labelsz`` type)."""

from __future__ import annotations

from .base import Instance

__all__ = ["Labelsz"]


class Labelsz(Instance):
    """Annotation counts per label, ranked (DVID's ``labelsz`` type).

    Parameters
    ----------
    node : Node
        The version to read from and write to.
    name : str
        The instance name.
    """

    typenames = ("labelsz",)
    default_typename = "labelsz"
