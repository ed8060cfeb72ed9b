"""DVID's ``imagetile`` datatype: precomputed 2-D tiles of XY, XZ and YZ slices at several scales.

Coordinates
-----------
A tile is addressed by its plane (``"xy"``, ``"xz"`` or ``"yz"``), its scale (0 =
full resolution, each step halves it) and a (z, y, x) coordinate in which the two
in-plane axes are **tile indices** and the third is the **slice, in full-resolution
voxels**:

| plane | ``coord`` (z, y, x) | decoded array axes |
| --- | --- | --- |
| xy | (z voxel slice, y tile, x tile) | (y, x): TileSize y × x |
| xz | (z tile, y voxel slice, x tile) | (z, x): TileSize z × x |
| yz | (z tile, y tile, x voxel slice) | (z, y): TileSize z × y |

libdvid's ``get_tile_slice(instance, slice, scaling, tile_loc)`` takes the same
numbers in DVID's (x, y, z) order: ``coord == tuple(reversed(tile_loc))``.
:meth:`Tiles.get_tile_slice` and :meth:`Tiles.get_tile_slice_binary` keep libdvid's
argument order for ported code.

What the v1.0.0 server really does (checked against it by the tests)
-------------------------------------------------------------------
* Tiles are stored verbatim: DVID does not check that a posted tile is an image
  of the right size and format. :meth:`Tiles.post_tile` checks both first.
* ``GET`` of a tile that was never posted returns a blank (all-zero) PNG, even
  for a ``jpg`` instance; with ``noblanks=true`` it is a 404 (the help text says
  the opposite). Tiles at negative coordinates are never read back (always blank),
  so the client refuses negative coordinates.
* Every tile ``GET`` fails (400) until the metadata is set.
* New instances are versioned, although the help text says the default is not.
* Stitching arbitrary rectangles (``GET /raw``, :meth:`Tiles.stitch`) uses the
  scale-0 tiles but fails unless the instance was created with a ``source``.
* A ``lz4``-format instance expects tiles in DVID's internal serialized image
  format, which no client can produce; posting to it raises :class:`UnsupportedError`.

Decoding PNG needs nothing beyond numpy (:mod:`dvid_store.codecs.png`); decoding
or encoding JPEG needs the optional Pillow package.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..codecs.jpeg import JPEG_MAGIC, pillow_image
from ..codecs.png import decode_png, encode_png, is_png
from ..errors import BadRequestError, DvidInputError, NotFoundError, UnsupportedError
from ..geometry import as_box, as_zyx, xyz_string
from .base import Instance

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["PLANES", "TileLevel", "TileMetadata", "Tiles", "decode_tile"]

#: Plane names and the (row axis, column axis) of their images, as indices into (z, y, x).
PLANES: dict[str, tuple[int, int]] = {"xy": (1, 2), "xz": (0, 2), "yz": (0, 1)}
_PLANE_ALIASES = {"0_1": "xy", "0_2": "xz", "1_2": "yz"}
# imagetile's Extended.Encoding values
_FORMATS = {0: "lz4", 1: "png", 2: "jpg"}


@dataclass(frozen=True)
class TileLevel:
    """One scale of an imagetile pyramid.

    Attributes
    ----------
    resolution : (float, float, float)
        Voxel size at this scale, (z, y, x), in the instance's units.
    tile_size : (int, int, int)
        Tile extent in pixels along (z, y, x); a plane's tile uses its two axes.
    """

    resolution: tuple[float, float, float]
    tile_size: tuple[int, int, int]

    def __post_init__(self) -> None:
        res = tuple(float(v) for v in self.resolution)
        size = as_zyx(self.tile_size, "tile_size")
        if len(res) != 3 or not all(math.isfinite(v) and v > 0 for v in res):
            raise DvidInputError(f"resolution must be 3 positive numbers (z, y, x), got {self.resolution!r}")
        if any(v < 1 for v in size):
            raise DvidInputError(f"tile_size must be 3 positive integers (z, y, x), got {self.tile_size!r}")
        object.__setattr__(self, "resolution", res)
        object.__setattr__(self, "tile_size", size)


@dataclass(frozen=True)
class TileMetadata:
    """An imagetile's tiling: its scales and the extent of its tiles.

    Attributes
    ----------
    levels : dict of int to TileLevel
        Scales 0..n-1 (consecutive). Each scale's resolution must be a whole
        multiple (≥ 1) of the previous one's, per axis.
    min_tile_coord, max_tile_coord : (int, int, int)
        Smallest and largest tile coordinate (z, y, x), informational.
    """

    levels: Mapping[int, TileLevel]
    min_tile_coord: tuple[int, int, int] = (0, 0, 0)
    max_tile_coord: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        levels = {int(k): v for k, v in dict(self.levels).items()}
        if not levels or sorted(levels) != list(range(len(levels))):
            raise DvidInputError(f"tile levels must be the consecutive scales 0..n-1, got {sorted(levels)}")
        for scale in range(1, len(levels)):
            for axis, (lo, hi) in enumerate(zip(levels[scale - 1].resolution, levels[scale].resolution)):
                ratio = hi / lo
                if ratio < 0.99 or abs(ratio - round(ratio)) > 1e-3:
                    raise DvidInputError(
                        f"resolution of scale {scale} along {'zyx'[axis]} ({hi}) must be a whole multiple "
                        f"(>= 1) of scale {scale - 1}'s ({lo})"
                    )
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "min_tile_coord", as_zyx(self.min_tile_coord, "min_tile_coord"))
        object.__setattr__(self, "max_tile_coord", as_zyx(self.max_tile_coord, "max_tile_coord"))

    @classmethod
    def pyramid(
        cls,
        tile_size: int | Sequence[int],
        resolution: float | Sequence[float],
        num_levels: int = 1,
        *,
        min_tile_coord: Sequence[int] = (0, 0, 0),
        max_tile_coord: Sequence[int] = (0, 0, 0),
    ) -> TileMetadata:
        """The usual pyramid: same tile size at every scale, resolution doubling per scale.

        Parameters
        ----------
        tile_size : int or (z, y, x)
            Tile extent in pixels.
        resolution : float or (z, y, x)
            Full-resolution voxel size.
        num_levels : int
            Number of scales.
        """
        if num_levels < 1:
            raise DvidInputError(f"num_levels must be >= 1, got {num_levels}")
        res = (float(resolution),) * 3 if isinstance(resolution, (int, float)) else tuple(float(v) for v in resolution)
        size = as_zyx(tile_size, "tile_size")
        levels = {s: TileLevel(tuple(r * 2**s for r in res), size) for s in range(num_levels)}
        return cls(levels, as_zyx(min_tile_coord), as_zyx(max_tile_coord))

    def tile_shape(self, plane: str, scale: int) -> tuple[int, int]:
        """(rows, columns) of a decoded tile of ``plane`` at ``scale``."""
        rows, cols = PLANES[_plane(plane)]
        if scale not in self.levels:
            raise DvidInputError(f"scale {scale} is not among this imagetile's scales {sorted(self.levels)}")
        size = self.levels[scale].tile_size
        return size[rows], size[cols]

    def to_json(self) -> dict[str, Any]:
        """DVID's metadata JSON (every triple in x, y, z order)."""
        return {
            "MinTileCoord": list(self.min_tile_coord[::-1]),
            "MaxTileCoord": list(self.max_tile_coord[::-1]),
            "Levels": {
                str(s): {"Resolution": list(lvl.resolution[::-1]), "TileSize": list(lvl.tile_size[::-1])}
                for s, lvl in sorted(self.levels.items())
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TileMetadata:
        """Parse DVID's metadata JSON."""
        levels = {
            int(s): TileLevel(tuple(spec["Resolution"][::-1]), tuple(spec["TileSize"][::-1]))
            for s, spec in data["Levels"].items()
        }
        low, high = as_zyx(data["MinTileCoord"][::-1]), as_zyx(data["MaxTileCoord"][::-1])
        return cls(levels, low, high)


class Tiles(Instance):
    """An ``imagetile`` instance.

    Create one with ``Tiles.create(node, name, format="png")`` (``"png"`` default,
    ``"jpg"`` or ``"lz4"``; ``source=<uint8blk name>`` optional), then
    :meth:`set_metadata`, then :meth:`post_tile`.

    Parameters
    ----------
    node : Node
        The version to read from and write to.
    name : str
        The instance name.
    """

    typenames: ClassVar[tuple[str, ...]] = ("imagetile",)
    default_typename: ClassVar[str] = "imagetile"

    def __init__(self, node: Node, name: str) -> None:
        super().__init__(node, name)
        self._metadata: TileMetadata | None = None

    def refresh(self) -> None:
        """Forget the cached ``/info`` and metadata."""
        super().refresh()
        self._metadata = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._metadata = None

    @property
    def format(self) -> str:
        """How tiles are stored: ``"png"``, ``"jpg"`` or ``"lz4"``."""
        return _FORMATS.get(int(self.info["Extended"]["Encoding"]), "unknown")

    @property
    def source(self) -> str:
        """Name of the uint8blk instance the tiles were made from (``""`` if none)."""
        return str(self.info["Extended"].get("Source") or "")

    # --------------------------------------------------------------- metadata
    @property
    def metadata(self) -> TileMetadata:
        """The tiling (``GET /metadata``; cached, see :meth:`refresh`).

        Raises
        ------
        BadRequestError
            The metadata was never set.
        """
        if self._metadata is None:
            self._metadata = TileMetadata.from_json(self.transport.get_json(self.path("metadata")))
        return self._metadata

    def set_metadata(self, metadata: TileMetadata) -> None:
        """Set the tiling; required before any tile can be read.

        Example: ``tiles.set_metadata(TileMetadata.pyramid(512, (40, 8, 8), num_levels=4))``.
        """
        if not isinstance(metadata, TileMetadata):
            raise DvidInputError(
                f"set_metadata expects a TileMetadata (e.g. TileMetadata.pyramid(...)), got {type(metadata).__name__}"
            )
        self.require_writable("setting tile metadata")
        self.transport.request("POST", self.path("metadata"), json=metadata.to_json(), idempotent=True)
        self._metadata = metadata

    # ------------------------------------------------------------------ tiles
    def tile_binary(
        self, plane: str, scale: int, coord: Sequence[int], *, blank_missing: bool = True
    ) -> bytes:
        """A tile as stored (PNG or JPEG bytes); libdvid's ``get_tile_slice_binary``.

        Parameters
        ----------
        plane : {"xy", "xz", "yz"}
            Slice orientation.
        scale : int
            0 = full resolution.
        coord : (z, y, x)
            Tile coordinate, see the module notes.
        blank_missing : bool
            A tile that was never posted comes back as a blank PNG (DVID's
            default); with ``False`` it raises :class:`NotFoundError`.
        """
        path = self._tile_path(plane, scale, coord)
        if blank_missing:
            return self.transport.request("GET", path).content
        try:
            return self.transport.request("GET", path, params={"noblanks": "true"}).content
        except NotFoundError as exc:
            raise NotFoundError(
                exc.method, exc.url, exc.status,
                f"no {_plane(plane)} tile stored at scale {scale}, coordinate (z, y, x) {as_zyx(coord)} "
                f"in imagetile {self.name!r}",
            ) from None

    def tile(self, plane: str, scale: int, coord: Sequence[int], *, blank_missing: bool = True) -> np.ndarray:
        """A tile decoded to a 2-D array (3-D for color tiles); libdvid's ``get_tile_slice``.

        Axes are (y, x) for ``"xy"``, (z, x) for ``"xz"``, (z, y) for ``"yz"``.
        See :meth:`tile_binary` for the parameters and :func:`decode_tile` for dtypes.
        """
        return decode_tile(self.tile_binary(plane, scale, coord, blank_missing=blank_missing))

    def post_tile(
        self, plane: str, scale: int, coord: Sequence[int], data: bytes | bytearray | memoryview | np.ndarray
    ) -> None:
        """Store one tile.

        Parameters
        ----------
        plane, scale, coord
            As in :meth:`tile_binary`; ``scale`` must be one of the metadata's.
        data : bytes or numpy.ndarray
            An encoded image in the instance's format (PNG or JPEG bytes), or an
            array of the tile's shape (``metadata.tile_shape(plane, scale)``), uint8
            or uint16, which is encoded here (JPEG encoding needs Pillow).

        Raises
        ------
        DvidInputError
            Wrong format, wrong size, unknown scale, negative coordinate, or no
            metadata set yet.
        UnsupportedError
            The instance stores ``lz4`` tiles, or JPEG encoding without Pillow.
        """
        path = self._tile_path(plane, scale, coord)
        fmt = self.format
        if fmt not in ("png", "jpg"):
            raise UnsupportedError(
                f"imagetile {self.name!r} stores {fmt!r} tiles (DVID's internal serialized images), "
                "which clients cannot produce; create the instance with format='png' or 'jpg'"
            )
        expected = self._require_metadata().tile_shape(plane, scale)
        if isinstance(data, np.ndarray):
            body = _encode_tile(data, fmt, expected)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            body = bytes(data)
            _check_encoded(body, fmt, expected)
        else:
            raise DvidInputError(f"a tile is encoded bytes or a numpy array, got {type(data).__name__}")
        self.require_writable("posting a tile")
        self.transport.request("POST", path, data=body, idempotent=True)

    def stitch(self, plane: str, box: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
        """An arbitrary rectangle of one slice, stitched by DVID from the full-resolution tiles.

        Uses ``GET /raw/<plane>/...``, which DVID serves only for instances created
        with a ``source`` uint8blk instance (only its voxel size is used; the
        pixels come from the scale-0 tiles). Missing tiles read as 0.

        Parameters
        ----------
        plane : {"xy", "xz", "yz"}
            Slice orientation.
        box : ((z0, y0, x0), (z1, y1, x1))
            Half-open voxel box, one voxel thick across the plane (e.g. ``z1 == z0 + 1``
            for ``"xy"``), non-negative.

        Returns
        -------
        numpy.ndarray
            The decoded image, axes as in :meth:`tile` ((y, x) for ``"xy"``...).
        """
        name = _plane(plane)
        start, stop = as_box(box)
        rows, cols = PLANES[name]
        across = 3 - rows - cols
        if stop[across] - start[across] != 1:
            raise DvidInputError(
                f"a {name} image is one voxel thick along {'zyx'[across]}, but the box spans "
                f"{start[across]}..{stop[across]}"
            )
        if min(start) < 0:
            raise DvidInputError(f"box start {start} is negative: DVID v1.0.0 never reads tiles there")
        if not self.source:
            raise DvidInputError(
                f"imagetile {self.name!r} has no source instance, which DVID needs to stitch images; "
                "create it with source='<uint8blk name>'"
            )
        size = f"{stop[cols] - start[cols]}_{stop[rows] - start[rows]}"  # width_height
        path = self.path("raw", name, size, xyz_string(start), "png")
        return decode_png(self.transport.request("GET", path).content)

    # -------------------------------------------------------- libdvid names
    def get_tile_slice(self, slice: str, scaling: int, tile_loc: Sequence[int]) -> np.ndarray:
        """libdvid's ``get_tile_slice``: ``tile_loc`` in libdvid's (x, y, z) order."""
        return self.tile(slice, scaling, _reversed3(tile_loc))

    def get_tile_slice_binary(self, slice: str, scaling: int, tile_loc: Sequence[int]) -> bytes:
        """libdvid's ``get_tile_slice_binary``: ``tile_loc`` in libdvid's (x, y, z) order."""
        return self.tile_binary(slice, scaling, _reversed3(tile_loc))

    # --------------------------------------------------------------- helpers
    def _tile_path(self, plane: str, scale: int, coord: Sequence[int]) -> str:
        name = _plane(plane)
        if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or not 0 <= scale < 256:
            raise DvidInputError(f"tile scale must be an integer 0..255, got {scale!r}")
        zyx = as_zyx(coord, "tile coordinate")
        if min(zyx) < 0:
            raise DvidInputError(
                f"tile coordinate {zyx} is negative: DVID v1.0.0 never reads tiles at negative coordinates"
            )
        return self.path("tile", name, str(int(scale)), xyz_string(zyx))

    def _require_metadata(self) -> TileMetadata:
        try:
            return self.metadata
        except BadRequestError as exc:
            if "not set" not in exc.message:
                raise
            raise DvidInputError(
                f"imagetile {self.name!r} has no metadata yet; call set_metadata(...) before posting tiles"
            ) from None


def decode_tile(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode a PNG or JPEG tile (detected by its signature) into a numpy array.

    PNG needs only numpy (see :func:`dvid_store.codecs.png.decode_png` for the
    dtypes); JPEG needs Pillow and gives uint8 (2-D for grayscale).

    Raises
    ------
    UnsupportedError
        A JPEG tile and Pillow is not installed.
    DvidInputError
        Neither PNG nor JPEG.
    """
    buf = bytes(data)
    if is_png(buf):
        return decode_png(buf)
    if buf.startswith(JPEG_MAGIC):
        image = pillow_image("decode JPEG tiles").open(io.BytesIO(buf))
        return np.asarray(image)
    raise DvidInputError(f"tile data is neither PNG nor JPEG (starts with {buf[:8]!r})")


def _plane(plane: str) -> str:
    name = str(plane).lower()
    name = _PLANE_ALIASES.get(name, name)
    if name not in PLANES:
        raise DvidInputError(f"tile plane must be 'xy', 'xz' or 'yz', got {plane!r}")
    return name


def _reversed3(tile_loc: Sequence[int]) -> tuple[int, int, int]:
    items = list(tile_loc)
    if len(items) != 3:
        raise DvidInputError(f"libdvid's tile_loc needs 3 numbers (x, y, z), got {items}")
    return int(items[2]), int(items[1]), int(items[0])


def _encode_tile(image: np.ndarray, fmt: str, expected: tuple[int, int]) -> bytes:
    if image.shape[:2] != expected or image.ndim not in (2, 3):
        raise DvidInputError(
            f"tile array has shape {image.shape}; this plane and scale need {expected} (rows, columns)"
        )
    if fmt == "png":
        return encode_png(image)
    if image.dtype != np.uint8:
        raise DvidInputError(f"JPEG tiles must be uint8, got {image.dtype}")
    out = io.BytesIO()
    pillow_image("encode JPEG tiles").fromarray(image).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _check_encoded(body: bytes, fmt: str, expected: tuple[int, int]) -> None:
    if fmt == "png":
        if not is_png(body) or len(body) < 24 or body[12:16] != b"IHDR":
            raise DvidInputError("this imagetile stores PNG tiles, but the data is not a PNG image")
        width, height = struct.unpack(">II", body[16:24])
        if (height, width) != expected:
            raise DvidInputError(
                f"PNG tile is {height}×{width} (rows × columns); "
                f"this plane and scale need {expected[0]}×{expected[1]}"
            )
    elif not body.startswith(JPEG_MAGIC):
        raise DvidInputError("this imagetile stores JPEG tiles, but the data is not a JPEG image")
