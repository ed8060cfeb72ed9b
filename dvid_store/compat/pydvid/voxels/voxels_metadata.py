"""pydvid's ``VoxelsMetadata``: DVID's voxel metadata JSON with pydvid's channel-first shape.

The JSON is DVID's ``/metadata`` form: ``"Axes"`` (one entry per spatial axis, in
DVID's x, y, z order, with ``Label``, ``Resolution``, ``Units``, ``Size``,
``Offset``) and ``"Properties"`` (with ``"Values"``, one entry per channel). pydvid
reads it as an array whose first axis is always the channel: ``axiskeys``
``"cxyz"``, ``shape`` ``(channels, x_stop, y_stop, z_stop)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ....datatypes.voxels import STORABLE
from ....errors import DvidInputError

__all__ = ["VoxelsMetadata"]


class VoxelsMetadata(dict[str, Any]):
    """DVID's voxel metadata (a ``dict``) with pydvid's ``shape``, ``minindex``, ``dtype`` and ``axiskeys``.

    Parameters
    ----------
    metadata : dict or str
        DVID's metadata JSON (parsed, or as text).

    Raises
    ------
    DvidInputError
        Not valid JSON, or without the ``Axes`` and ``Properties.Values`` pydvid needs,
        or with channels of different types.
    """

    #: (dtype name, channels) → the DVID type that stores it. pydvid's own names were
    #: DVID's of its time: grayscale8 (now uint8blk), labels64 (now labelblk), rgba8 (now rgba8blk).
    TYPENAMES: ClassVar[dict[tuple[str, int], str]] = {
        ("uint8", 1): "uint8blk",
        ("uint16", 1): "uint16blk",
        ("uint32", 1): "uint32blk",
        ("uint64", 1): "labelblk",
        ("float32", 1): "float32blk",
        ("uint8", 4): "rgba8blk",
    }

    #: pydvid's (and DVID's old) type names, still understood.
    OLD_TYPENAMES: ClassVar[dict[str, tuple[str, int]]] = {
        "grayscale8": ("uint8", 1),
        "labels32": ("uint32", 1),
        "labels64": ("uint64", 1),
        "rgba8": ("uint8", 4),
    }

    def __init__(self, metadata: Mapping[str, Any] | str) -> None:
        if isinstance(metadata, str):
            try:
                metadata = json.loads(metadata)
            except ValueError as exc:
                raise DvidInputError(f"voxels metadata is not valid JSON: {exc}") from None
        if not isinstance(metadata, Mapping):
            raise DvidInputError(f"voxels metadata must be a dict or JSON text, got {type(metadata).__name__}")
        try:
            axes = list(metadata["Axes"])
            values = list(metadata["Properties"]["Values"])
            dtypes = [np.dtype(v["DataType"]) for v in values]
            spatial = [(a.get("Size"), a.get("Offset"), str(a["Label"])) for a in axes]
        except (KeyError, TypeError) as exc:
            raise DvidInputError(
                f"voxels metadata needs 'Axes' (Label, Size, Offset each) and 'Properties' → 'Values' "
                f"(DataType each), as DVID's /metadata gives them: missing {exc}"
            ) from None
        if not values:
            raise DvidInputError("voxels metadata lists no channels ('Properties' → 'Values' is empty)")
        if any(d != dtypes[0] for d in dtypes):
            raise DvidInputError(f"channels of different types are not supported: {[d.name for d in dtypes]}")
        super().__init__(metadata)
        self._dtype: np.dtype = dtypes[0]
        # The channel axis always comes first (DVID's axes follow in its x, y, z order).
        shape: list[int | None] = [len(values)]
        minindex: list[int | None] = [0]
        for size, offset, _ in spatial:
            minindex.append(None if size is None else int(offset or 0))
            # As pydvid: Size + Offset, so a volume with nothing stored (DVID's Size 0) has shape 0.
            shape.append(None if size is None else int(size) + int(offset or 0))
        self._shape = tuple(shape)
        self._minindex = tuple(minindex)
        self._axiskeys = "c" + "".join(label.lower() for _, _, label in spatial)

    # ----------------------------------------------------------- properties
    @property
    def shape(self) -> tuple[int | None, ...]:
        """The stop of the stored bounding box, channel first: ``(channels, x, y, z)``.

        As in pydvid, ``Size + Offset`` of each axis: 0 for a volume with nothing stored
        (DVID's ``Size`` 0); ``None`` where the metadata has no ``Size`` (an roi mask).
        """
        return self._shape

    @shape.setter
    def shape(self, new_shape: Sequence[int]) -> None:
        if new_shape[0] != self._shape[0]:
            raise DvidInputError("the number of channels cannot change")
        for axis, stop, start in zip(self["Axes"], new_shape[1:], self._minindex[1:]):
            axis["Size"] = int(stop) - int(start or 0)
        self._shape = tuple(int(n) for n in new_shape)

    @property
    def minindex(self) -> tuple[int | None, ...]:
        """The start of the stored bounding box, channel first: ``(0, x, y, z)``."""
        return self._minindex

    @minindex.setter
    def minindex(self, new_minindex: Sequence[int]) -> None:
        if new_minindex[0] != self._minindex[0]:
            raise DvidInputError("the channel axis always starts at 0")
        for axis, start, stop in zip(self["Axes"], new_minindex[1:], self._shape[1:]):
            axis["Offset"] = int(start)
            axis["Size"] = int(stop or 0) - int(start)
        self._minindex = tuple(int(n) for n in new_minindex)

    @property
    def dtype(self) -> np.dtype:
        """The voxel type of one channel, a ``numpy.dtype``."""
        return self._dtype

    @property
    def axiskeys(self) -> str:
        """The axis order, always channel first: ``"cxyz"`` for DVID's volumes (Fortran order)."""
        return self._axiskeys

    # ------------------------------------------------------------- methods
    def to_json(self) -> str:
        """The metadata as JSON text."""
        return json.dumps(self)

    @classmethod
    def create_default_metadata(
        cls, shape: Sequence[int], dtype: Any, axiskeys: str, resolution: float, units: str
    ) -> VoxelsMetadata:
        """Metadata for a new volume, to customise and pass to :func:`~dvid_store.compat.pydvid.voxels.create_new`.

        Parameters
        ----------
        shape : sequence of int
            Channel first, e.g. ``(4, 0, 0, 0)`` for 4 channels (0: no size yet).
        dtype : numpy dtype
            Type of each channel.
        axiskeys : str
            ``"cxyz"``: the channel axis first.
        resolution : float
            Voxel size along every axis.
        units : str
            Unit of ``resolution`` (``""``: DVID's default, nanometers).
        """
        if not axiskeys or axiskeys[0] != "c":
            raise DvidInputError(f"the channel axis must come first in axiskeys, got {axiskeys!r}")
        if len(axiskeys) != len(shape):
            raise DvidInputError(f"shape {tuple(shape)} and axiskeys {axiskeys!r} do not match")
        np_dtype = np.dtype(dtype)
        axes = [
            {"Label": key.upper(), "Resolution": resolution, "Units": units, "Size": size, "Offset": 0}
            for key, size in zip(axiskeys[1:], shape[1:])
        ]
        values = [{"DataType": np_dtype.name, "Label": ""} for _ in range(int(shape[0]))]
        return cls({"Axes": axes, "Properties": {"Values": values}})

    def determine_dvid_typename(self) -> str:
        """The DVID type that stores this volume: ``uint8blk``, ..., ``labelblk`` (uint64), ``rgba8blk`` (4 × uint8).

        Raises
        ------
        DvidInputError
            DVID has no type for this dtype and number of channels.
        """
        key = (self._dtype.name, int(self._shape[0] or 0))
        try:
            return self.TYPENAMES[key]
        except KeyError:
            raise DvidInputError(
                f"DVID has no datatype for {key[1]} channel(s) of {key[0]}: it stores {STORABLE}"
            ) from None

    @classmethod
    def determine_channels_from_dvid_typename(cls, typename: str) -> tuple[str, int]:
        """``(dtype name, channels)`` of a DVID type, current (``rgba8blk``) or pydvid's (``rgba8``)."""
        mapping = {v: k for k, v in cls.TYPENAMES.items()}
        mapping.update({"labelmap": ("uint64", 1), "labelarray": ("uint64", 1), "uint64blk": ("uint64", 1)})
        mapping.update(cls.OLD_TYPENAMES)
        try:
            return mapping[typename]
        except KeyError:
            raise DvidInputError(f"DVID type {typename!r} is not a voxel volume pydvid can read") from None
