"""The geometry of a DVID voxel instance: its levels, their origins and shapes, and physical units.

A :class:`Layout` is read once from DVID (``/info`` of the instance and, for
grayscale pyramids, of its ``name_1``, ``name_2``... instances) and then pinned: a
zarr store, a dask array or an xarray object made from it keeps mapping indices to the
same blocks even if the instance's extents grow later. Every array front end
(:class:`~dvid_store.DvidStore`, :func:`~dvid_store.open_dask`,
:func:`~dvid_store.open_dataarray`, the command line) presents an instance through it.

Conventions
-----------
* Arrays are ``(z, y, x)``; a multichannel type (``rgba8blk``) adds a trailing
  channel axis (:attr:`Layout.channel_shape`, ``(4,)``: R, G, B, A) that every front
  end keeps whole: a chunk holds all channels of its voxels, as a DVID block does.
* Level ``"<level>"`` is pyramid level ``level`` (labelmap: DVID ``scale=level``;
  grayscale: instance ``name`` for level 0, ``name_<level>`` above), each a 2**level
  down-sampling of level 0.
* Index 0 of a level sits at the block-aligned minimum point of its extents; its
  shape reaches the block-aligned maximum point. Coordinates may be negative.
* Physical position of array index ``i`` on an axis of level ``l`` (factor
  ``f = 2**l``, level-0 voxel size ``v``) is ``((origin + i) * f + (f - 1) / 2) * v``:
  the centre of the level-0 voxels it covers. That is OME-Zarr's ``scale = f * v`` and
  ``translation = (origin * f + (f - 1) / 2) * v`` (see :func:`level_transform`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .blocks import CHANNELS, LABEL_TYPES, VOXEL_TYPES, stored_kind
from .errors import DvidInputError, UnsupportedError
from .node import meanwhile

if TYPE_CHECKING:
    from .node import Node

__all__ = [
    "CHANNEL_NAMES",
    "Layout",
    "Level",
    "discover_layout",
    "level_transform",
    "normalise_unit",
    "physical_axis",
]

ZYX = tuple[int, int, int]

#: Names of the channels of a multichannel type: the ``c`` coordinate of the xarray
#: engine and the zarr arrays' ``dvid.channels`` attribute.
CHANNEL_NAMES: dict[str, tuple[str, ...]] = {"rgba8blk": ("r", "g", "b", "a")}

#: DVID unit spellings → OME-Zarr (UDUNITS-2) unit names.
_UNITS = {
    "nanometer": "nanometer", "nanometers": "nanometer", "nm": "nanometer",
    "micrometer": "micrometer", "micrometers": "micrometer", "micron": "micrometer",
    "microns": "micrometer", "um": "micrometer", "µm": "micrometer",
    "millimeter": "millimeter", "millimeters": "millimeter", "mm": "millimeter",
    "centimeter": "centimeter", "centimeters": "centimeter", "cm": "centimeter",
    "meter": "meter", "meters": "meter", "m": "meter",
    "angstrom": "angstrom", "angstroms": "angstrom", "å": "angstrom",
    "picometer": "picometer", "picometers": "picometer", "pm": "picometer",
}


def normalise_unit(unit: str | None) -> str | None:
    """DVID's unit name (``"nanometers"``) → OME-Zarr's (``"nanometer"``); ``None`` if unknown."""
    if not unit:
        return None
    return _UNITS.get(unit.strip().lower())


@dataclass(frozen=True)
class Level:
    """One pyramid level: which DVID data it is and where its array sits.

    Attributes
    ----------
    path : str
        Name of the level (``"0"``, ``"1"``, ...): its array's name in a zarr group.
    instance : str
        DVID instance holding the level.
    scale : int
        DVID ``scale`` parameter (labelmap levels); 0 for grayscale level instances.
    factor : int
        Down-sampling relative to level 0 (``2**level``).
    origin : (int, int, int)
        Voxel coordinate of array index 0 in this level's grid, block aligned.
    shape : (int, int, int)
        Array shape in voxels (a whole number of blocks).
    block_shape : (int, int, int)
        DVID block size (the chunk shape of the level's zarr array).
    typename : str
        DVID type of ``instance``.
    stored : str
        How ``instance`` stores blocks (``"lz4"``, ``"gzip"``, ``"none"``, ``"other"``).
    """

    path: str
    instance: str
    scale: int
    factor: int
    origin: ZYX
    shape: ZYX
    block_shape: ZYX
    typename: str
    stored: str

    @property
    def origin_block(self) -> ZYX:
        """Block coordinate of array index 0 (chunk (0, 0, 0))."""
        return tuple(o // b for o, b in zip(self.origin, self.block_shape))  # type: ignore[return-value]

    @property
    def grid(self) -> ZYX:
        """Blocks (chunks) per axis."""
        return tuple(s // b for s, b in zip(self.shape, self.block_shape))  # type: ignore[return-value]

    @property
    def channel_shape(self) -> tuple[int, ...]:
        """Trailing axes of a voxel: ``(4,)`` for rgba8blk (R, G, B, A), else ``()``."""
        return CHANNELS.get(self.typename, ())

    @property
    def array_shape(self) -> tuple[int, ...]:
        """The level's array shape: :attr:`shape` plus :attr:`channel_shape`."""
        return self.shape + self.channel_shape


@dataclass(frozen=True)
class Layout:
    """A DVID voxel instance's geometry: its pyramid levels, pinned when it was read.

    Attributes
    ----------
    server : str
        Server root URL.
    uuid : str
        Full node UUID.
    instance : str
        Instance name (level 0).
    typename : str
        DVID type (``"uint8blk"``, ``"labelmap"``, ...).
    dtype : str
        numpy dtype string (little-endian) of one value: ``"|u1"`` for rgba8blk,
        whose voxels are :attr:`channel_shape` values.
    voxel_size : (float, float, float)
        Level-0 voxel size, (z, y, x).
    units : (str, str, str)
        DVID's unit names, (z, y, x).
    min_point, max_point : (int, int, int) or None
        Level-0 extents (inclusive voxel corners) when the layout was read.
    supervoxels : bool
        labelmap: supervoxel ids instead of body ids.
    levels : tuple of Level
        The pyramid, level 0 first.
    """

    server: str
    uuid: str
    instance: str
    typename: str
    dtype: str
    voxel_size: tuple[float, float, float]
    units: tuple[str, str, str]
    min_point: ZYX | None
    max_point: ZYX | None
    supervoxels: bool
    levels: tuple[Level, ...]

    @property
    def block_shape(self) -> ZYX:
        return self.levels[0].block_shape

    @property
    def channel_shape(self) -> tuple[int, ...]:
        """Trailing axes of a voxel: ``(4,)`` for rgba8blk (R, G, B, A), else ``()``."""
        return CHANNELS.get(self.typename, ())

    def level(self, path_or_index: str | int) -> Level:
        """The level by array path (``"1"``) or index (``1``)."""
        key = str(path_or_index)
        for level in self.levels:
            if level.path == key:
                return level
        raise DvidInputError(
            f"{self.instance!r} has no scale {key!r}; available: {', '.join(level.path for level in self.levels)}"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _zyx(values: Any) -> ZYX | None:
    if values is None:
        return None
    x, y, z = (int(v) for v in values)
    return z, y, x


def _extent_box(min_point: ZYX | None, max_point: ZYX | None, factor: int, block: ZYX) -> tuple[ZYX, ZYX]:
    """Block-aligned (origin, shape) of inclusive level-0 extents seen at ``factor``."""
    if min_point is None or max_point is None:
        return (0, 0, 0), (0, 0, 0)
    origin, shape = [], []
    for lo, hi, b in zip(min_point, max_point, block):
        lo_s, hi_s = lo // factor, hi // factor
        start = (lo_s // b) * b
        stop = -((-(hi_s + 1)) // b) * b
        origin.append(start)
        shape.append(max(stop - start, 0))
    return tuple(origin), tuple(shape)  # type: ignore[return-value]


def discover_layout(
    node: Node,
    instance: str,
    *,
    supervoxels: bool = False,
    info: Mapping[str, Any] | None = None,
    max_scale: int | None = None,
    instances: Callable[[], Mapping[str, str]] | None = None,
) -> Layout:
    """Read an instance's layout from DVID.

    Parameters
    ----------
    node : Node
        The version.
    instance : str
        A labelmap or imageblk-family instance.
    supervoxels : bool
        labelmap only.
    info : mapping, optional
        The instance's ``/info`` if already fetched.
    max_scale : int, optional
        Look for grayscale pyramid levels (instances ``name_1``, ...) up to this scale
        only; ``0`` skips the repo's instance list, a round trip. Default: all.
    instances : callable, optional
        Returns the node's instances (name → type), e.g. a :func:`~dvid_store.node.meanwhile`
        already under way; default: asked while ``/info`` is.

    Raises
    ------
    UnsupportedError
        The instance is of another type.
    DvidInputError
        ``supervoxels`` for a non-labelmap instance.
    """
    # A grayscale pyramid's levels are other instances: list them while /info is asked.
    wants_levels = max_scale is None or max_scale > 0
    listing = instances
    if listing is None and info is None and wants_levels:
        listing = meanwhile(node.instances)
    info = info if info is not None else node.typeinfo(instance)
    typename = info["Base"]["TypeName"]
    if typename not in VOXEL_TYPES and typename not in LABEL_TYPES:
        supported = ", ".join([*VOXEL_TYPES, *LABEL_TYPES])
        raise UnsupportedError(
            f"instance {instance!r} is a {typename}; only these types open as arrays: {supported}"
        )
    if supervoxels and typename not in LABEL_TYPES:
        raise DvidInputError(f"supervoxels=True applies to labelmap instances; {instance!r} is a {typename}")
    extended = info["Extended"]
    block = tuple(int(v) for v in reversed(extended["BlockSize"]))
    voxel_size = tuple(float(v) for v in reversed(extended.get("VoxelSize") or (1, 1, 1)))
    units = tuple(str(u) for u in reversed(extended.get("VoxelUnits") or ("", "", "")))
    min_point, max_point = _zyx(extended.get("MinPoint")), _zyx(extended.get("MaxPoint"))
    dtype = (VOXEL_TYPES.get(typename) or LABEL_TYPES[typename]).str
    stored = stored_kind(info)
    levels: list[Level] = []
    if typename in LABEL_TYPES and listing is not None:
        # Not needed for labels (their scales are in /info), but waited for: every request
        # of an open has ended when it returns.
        with contextlib.suppress(Exception):
            listing()
    if typename in LABEL_TYPES:
        for s in range(int(extended.get("MaxDownresLevel") or 0) + 1):
            origin, shape = _extent_box(min_point, max_point, 2**s, block)  # type: ignore[arg-type]
            levels.append(Level(str(s), instance, s, 2**s, origin, shape, block, typename, stored))  # type: ignore[arg-type]
    else:
        origin, shape = _extent_box(min_point, max_point, 1, block)  # type: ignore[arg-type]
        levels.append(Level("0", instance, 0, 1, origin, shape, block, typename, stored))  # type: ignore[arg-type]
        names = (listing() if listing is not None else node.instances()) if wants_levels else {}
        s = 1
        while (max_scale is None or s <= max_scale) and names.get(f"{instance}_{s}") == typename:
            name = f"{instance}_{s}"
            linfo = node.typeinfo(name)
            lext = linfo["Extended"]
            lblock = tuple(int(v) for v in reversed(lext["BlockSize"]))
            lmin, lmax = _zyx(lext.get("MinPoint")), _zyx(lext.get("MaxPoint"))
            origin, shape = _extent_box(lmin, lmax, 1, lblock)  # type: ignore[arg-type]
            levels.append(
                Level(str(s), name, 0, 2**s, origin, shape, lblock, typename, stored_kind(linfo))  # type: ignore[arg-type]
            )
            s += 1
    return Layout(
        server=node.transport.base_url,
        uuid=node.uuid,
        instance=instance,
        typename=typename,
        dtype=dtype,
        voxel_size=voxel_size,  # type: ignore[arg-type]
        units=units,  # type: ignore[arg-type]
        min_point=min_point,
        max_point=max_point,
        supervoxels=bool(supervoxels),
        levels=tuple(levels),
    )


def level_transform(layout: Layout, level: Level) -> tuple[list[float], list[float]]:
    """OME-Zarr (scale, translation) of a level, (z, y, x), physical units (see the conventions above)."""
    f = level.factor
    scale = [v * f for v in layout.voxel_size]
    translation = [(o * f + (f - 1) / 2) * v for o, v in zip(level.origin, layout.voxel_size)]
    return scale, translation


def physical_axis(layout: Layout, level: Level, axis: int) -> tuple[float, float]:
    """(start, step) of the physical coordinate of array indices along ``axis`` (0=z)."""
    scale, translation = level_transform(layout, level)
    return translation[axis], scale[axis]
