"""Sources and targets of transfers: DVID levels, local zarr stores, ``.npy`` and TIFF files.

Each is a :class:`Volume`: a numpy-like object indexed with ``(z, y, x)`` slices
relative to the transferred region, plus what the transfer engine must know to cut
the region into chunks that never share a block (or a zarr chunk) of the target.
Multichannel volumes (rgba8blk levels, their exports, ``(z, y, x, 4)`` local arrays
and RGBA TIFF stacks) have a trailing channel axis, which chunks keep whole.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ..errors import DvidInputError
from ..geometry import Box
from .common import Context, Target, format_box

if TYPE_CHECKING:

    from ..blocks import BlockIO
    from ..layout import Layout, Level
    from ..node import Node

__all__ = [
    "DvidLevel",
    "Volume",
    "check_castable",
    "check_channels",
    "open_local",
    "open_zarr_output",
]

ZYX = tuple[int, int, int]


@dataclass
class Volume:
    """A 3-d region to read or write, indexed from 0 at the region's start.

    Attributes
    ----------
    array : numpy-like
        Supports ``array[z0:z1, y0:y1, x0:x1]`` (sources) or assignment to it (targets).
    shape : (int, int, int) or (int, int, int, int)
        Region shape, (z, y, x), plus the channel axis of a multichannel volume.
    dtype : numpy.dtype
        Voxel type.
    label : str
        For messages.
    identity : dict
        JSON-ready description (part of the transfer's journal identity).
    grid_origin : (int, int, int)
        Target only: coordinate of region index 0 on the target's block grid.
    grid : (int, int, int)
        Target only: the block (or zarr chunk) size; chunk edges fall on multiples of it.
    attrs : dict
        Hints read from a local source: ``offset`` and ``voxel_size`` (z, y, x).
    """

    array: Any
    shape: tuple[int, ...]
    dtype: np.dtype
    label: str
    identity: dict[str, Any]
    grid_origin: ZYX = (0, 0, 0)
    grid: ZYX = (1, 1, 1)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def spatial_shape(self) -> ZYX:
        """``(z, y, x)`` of :attr:`shape`."""
        return cast(ZYX, tuple(self.shape[:3]))

    @property
    def channel_shape(self) -> tuple[int, ...]:
        """The axes after ``(z, y, x)``: ``(4,)`` for RGBA volumes, else ``()``."""
        return tuple(self.shape[3:])

    @property
    def voxel_bytes(self) -> int:
        """Bytes of one voxel, all its channels."""
        return int(np.prod(self.channel_shape)) * self.dtype.itemsize


def check_channels(source: Volume, target_channels: tuple[int, ...], what: str) -> None:
    """Refuse a transfer between volumes whose voxels have different channels."""
    if source.channel_shape == target_channels:
        return
    if target_channels:
        raise DvidInputError(
            f"{what} has {target_channels[0]} channels per voxel (R, G, B, A) but {source.label} has "
            f"shape {source.shape}: give a (z, y, x, {target_channels[0]}) array"
        )
    raise DvidInputError(
        f"{source.label} has {source.channel_shape[0]} channels per voxel (shape {source.shape}) but {what} holds "
        "one value per voxel: import into an rgba8blk instance (--create makes one from uint8 data)"
    )


def check_castable(source: np.dtype, target: np.dtype, what: str) -> None:
    """Refuse a transfer whose dtypes cannot convert without loss (integers are checked per chunk)."""
    if np.can_cast(source, target, "safe") or source.kind == "b" or (source.kind in "iu" and target.kind in "iu"):
        return
    raise DvidInputError(f"cannot write {source} data into {what} ({target}) without losing values; convert it first")


# ------------------------------------------------------------------- DVID
@dataclass
class DvidLevel:
    """One level of a DVID voxel instance, resolved: node, layout and level."""

    target: Target
    node: Node
    layout: Layout
    level: Level
    supervoxels: bool = False
    throttle: bool = False

    @classmethod
    def open(
        cls, ctx: Context, target: Target, scale: int, supervoxels: bool = False, *, node: Node | None = None
    ) -> DvidLevel:
        """Resolve the node (unless given) and read the instance's layout (``UnknownInstanceError`` if missing)."""
        from ..layout import discover_layout

        node = node if node is not None else target.node(ctx)
        assert target.instance is not None
        layout = discover_layout(node, target.instance, supervoxels=supervoxels)
        return cls(target, node, layout, layout.level(scale), supervoxels, ctx.throttle)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.layout.dtype)

    @property
    def channel_shape(self) -> tuple[int, ...]:
        """``(4,)`` for an rgba8blk level, else ``()``."""
        return self.level.channel_shape

    @property
    def url(self) -> str:
        suffix = f"/{self.level.path}" if self.level.path != "0" else ""
        return self.target.instance_url(self.node.uuid, self.layout.instance) + suffix

    def identity(self) -> dict[str, Any]:
        return {
            "server": self.node.transport.base_url,
            "uuid": self.node.uuid,
            "instance": self.layout.instance,
            "level": int(self.level.path),
            "supervoxels": self.supervoxels,
        }

    def io(self) -> BlockIO:
        from ..blocks import BlockIO

        level = self.level
        return BlockIO(
            self.node, level.instance, typename=level.typename, block_shape=level.block_shape,
            scale=level.scale, supervoxels=self.supervoxels, stored=level.stored, throttle=self.throttle,
        )

    def extents(self) -> Box:
        """The level's voxel extents (exact at level 0 and for labelmap scales).

        Raises
        ------
        DvidInputError
            The instance has no extents yet (nothing written, none set).
        """
        layout, level = self.layout, self.level
        if layout.min_point is None or layout.max_point is None or 0 in level.shape:
            raise DvidInputError(f"{self.url} has no extents yet (no data); give the region with --box")
        if level.instance == layout.instance:
            f = level.factor
            start = tuple(lo // f for lo in layout.min_point)
            stop = tuple(hi // f + 1 for hi in layout.max_point)
            return start, stop  # type: ignore[return-value]
        # grayscale pyramid instance: its own (block-aligned) layout is what we know
        return level.origin, tuple(o + n for o, n in zip(level.origin, level.shape))  # type: ignore[return-value]

    def reader(self, box: Box) -> Volume:
        """A source reading ``box`` (this level's voxel coordinates)."""
        from ..level_io import VolumeReader

        reader = VolumeReader(self.io(), box[0], tuple(b - a for a, b in zip(*box)))
        return Volume(
            reader, reader.shape, self.dtype,
            f"{self.url} box {format_box(box)}",
            {**self.identity(), "box": [list(box[0]), list(box[1])]},
        )

    def writer(self, start: ZYX, shape: Sequence[int]) -> Volume:
        """A target writing a region of ``shape`` (z, y, x) whose first voxel lands at ``start``."""
        from ..level_io import VolumeWriter

        self.node.require_writable(f"writing to {self.layout.instance!r}")
        writer = VolumeWriter(self.io(), start, shape[:3])
        return Volume(
            writer, writer.shape, self.dtype,
            f"{self.url} at {','.join(map(str, start))}",
            {**self.identity(), "offset": list(start)},
            grid_origin=start, grid=self.level.block_shape,
        )


# ------------------------------------------------------------------ local
def _file_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _as_3d(array: Any, path: Path, samples: bool = False) -> Any:
    """``array`` as (z, y, x), or (z, y, x, 4) for RGBA data; a 2-d image becomes one z slice.

    A 4-d array with 4 values last is read as RGBA voxels; ``samples`` says that the
    last axis is one of colour samples (a TIFF's), so a 3-d array is one RGBA image.
    """
    if samples and array.ndim in (3, 4) and array.shape[-1] != 4:
        raise DvidInputError(
            f"{path}: its images have {array.shape[-1]} colour samples per pixel; DVID's multichannel type "
            "(rgba8blk) holds 4 (R, G, B, A): convert the stack to RGBA first"
        )
    channels = 1 if samples or (array.ndim == 4 and array.shape[-1] == 4) else 0
    if array.ndim == 2 + channels:
        return array[None]
    if array.ndim != 3 + channels:
        raise DvidInputError(
            f"{path}: DVID volumes are 3-d (z, y, x), 4-d (z, y, x, 4) for RGBA, or 2-d slices; this array has "
            f"shape {array.shape}"
        )
    return array


def _is_zarr(path: Path) -> bool:
    return path.suffix == ".zarr" or (path.is_dir() and (path / "zarr.json").exists()) or (
        path.is_dir() and ((path / ".zarray").exists() or (path / ".zgroup").exists())
    )


def open_local(path_text: str, dataset: str | None = None) -> Volume:
    """Open a local source: a ``.npy`` file, a TIFF stack or a zarr array or group.

    Parameters
    ----------
    path_text : str
        The file or directory. 2-d images become one z slice.
    dataset : str, optional
        Array inside a zarr group; default the first OME-Zarr ``multiscales`` dataset,
        else ``"0"``.

    Returns
    -------
    Volume
        With ``attrs`` ``offset`` and ``voxel_size`` when the zarr array has the
        ``dvid`` attributes of a ``dvid-store export``.

    Raises
    ------
    FileNotFoundError
        No such path.
    DvidInputError
        Unknown format, wrong dimensionality, a group without the dataset.
    """
    path = Path(path_text)
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = _as_3d(np.load(path, mmap_mode="r"), path)
        return Volume(array, tuple(array.shape), array.dtype, str(path), {"file": _file_identity(path)})
    if suffix in (".tif", ".tiff"):
        try:
            import tifffile
        except ImportError:
            raise DvidInputError(
                f"reading {path} needs the tifffile package: pip install tifffile (or dvid_store[test])"
            ) from None
        try:
            data: np.ndarray = tifffile.memmap(path, mode="r")
        except (ValueError, OSError):  # compressed or tiled: read it whole
            data = tifffile.imread(path)
        with tifffile.TiffFile(path) as tif:
            samples = tif.series[0].axes.endswith("S")  # colour samples (RGB, RGBA) last
        array = _as_3d(data, path, samples)
        return Volume(array, tuple(array.shape), array.dtype, str(path), {"file": _file_identity(path)})
    if _is_zarr(path):
        return _open_zarr_source(path, dataset)
    raise DvidInputError(
        f"cannot tell the format of {path}: give a .npy file, a .tif/.tiff stack or a zarr store (a directory)"
    )


def _open_zarr_source(path: Path, dataset: str | None) -> Volume:
    import zarr

    node = zarr.open(str(path), mode="r")
    name = ""
    if isinstance(node, zarr.Group):
        if dataset is None:
            # attributes are JSON of any shape; a malformed document fails here as it always did
            ome: Any = node.attrs.get("ome") or {}
            multiscales: Any = ome.get("multiscales") or node.attrs.get("multiscales") or []
            dataset = multiscales[0]["datasets"][0]["path"] if multiscales else "0"
        members = sorted(k for k, _ in node.arrays())
        if dataset not in members:
            raise DvidInputError(
                f"zarr group {path} has no array {dataset!r}; arrays: {', '.join(members) or 'none'} (use --dataset)"
            )
        name = dataset
        node = node[dataset]
    elif dataset is not None:
        raise DvidInputError(f"{path} is a zarr array, not a group; drop --dataset")
    array = _as_3d(node, path)
    attrs: dict[str, Any] = {}
    dvid: dict[str, Any] = dict(cast(Any, node.attrs.get("dvid")) or {})
    if "offset" in dvid:
        attrs["offset"] = tuple(int(v) for v in dvid["offset"])
    if "level_voxel_size" in dvid or "voxel_size" in dvid:
        attrs["voxel_size"] = tuple(float(v) for v in dvid.get("level_voxel_size") or dvid["voxel_size"])
    if "voxel_units" in dvid:
        attrs["voxel_units"] = tuple(dvid["voxel_units"])
    identity = {"zarr": str(path.resolve()), "dataset": name, "shape": list(array.shape), "dtype": str(array.dtype)}
    label = f"{path}" + (f" [{name}]" if name else "")
    return Volume(array, tuple(array.shape), np.dtype(array.dtype), label, identity, attrs=attrs)


def open_zarr_output(
    path_text: str,
    level: DvidLevel,
    box: Box,
    chunks: ZYX,
    *,
    reopen: bool,
    overwrite: bool,
    journalled: int = 0,
) -> Volume:
    """Create (or reopen, to resume) the OME-Zarr v3 group an export writes.

    The group holds one array ``"0"`` of the exported box, with zarr chunks
    ``chunks``, zstd-compressed, and the OME-Zarr 0.5 ``multiscales`` and ``dvid``
    attributes of :mod:`dvid_store.zarr.metadata` (physical scale and translation of
    the box; the source server, node, instance and level; ``offset`` = the box start).

    ``reopen`` (a journal of this export exists) opens the array there instead;
    ``journalled`` is the number of chunks that journal lists as written.

    Raises
    ------
    DvidInputError
        The path exists and ``overwrite`` is false, or it is not a zarr store and
        would be wiped; or, when reopening, the array there is not this export's, or
        it is gone although the journal lists written chunks.
    """
    import zarr

    from ..zarr.metadata import array_document, group_document

    path = Path(path_text)
    channels = level.channel_shape
    shape = tuple(b - a for a, b in zip(*box)) + channels
    dtype = level.dtype
    array_chunks = tuple(chunks) + channels
    if reopen and not path.exists() and journalled:
        raise DvidInputError(
            f"the journal of this export lists {journalled} chunks written to {path}, which is gone; "
            "delete the journal (or pass another --journal) to start over"
        )
    if reopen and path.exists():
        try:
            array = zarr.open_array(str(path / "0"), mode="r+")
        except Exception as exc:  # zarr raises several kinds for "not there"
            raise DvidInputError(f"cannot reopen {path}/0 to resume the export: {exc}") from None
        if tuple(array.shape) != shape or np.dtype(array.dtype) != dtype or tuple(array.chunks) != array_chunks:
            raise DvidInputError(
                f"{path}/0 (shape {array.shape}, {array.dtype}, chunks {array.chunks}) is not the array this export "
                "writes; remove it or its journal to start over"
            )
    else:
        if path.exists():
            if not overwrite:
                raise DvidInputError(f"{path} already exists; add --overwrite to replace it")
            if not (path.is_dir() and ((path / "zarr.json").exists() or not any(path.iterdir()))):
                raise DvidInputError(f"{path} exists and is not a zarr store; refusing to overwrite it")
        sub = dataclasses.replace(level.level, path="0", origin=box[0], shape=cast(ZYX, shape[:3]))
        layout = dataclasses.replace(level.layout, levels=(sub,))
        group_attrs = group_document(layout)["attributes"]
        array_attrs = array_document(layout, sub)["attributes"]
        array_attrs["dvid"]["level"] = int(level.level.path)
        group_attrs["dvid"]["level"] = int(level.level.path)
        group = zarr.open_group(str(path), mode="w", zarr_format=3, attributes=json.loads(json.dumps(group_attrs)))
        array = group.create_array(
            "0", shape=shape, dtype=dtype, chunks=array_chunks, fill_value=0,
            dimension_names=("z", "y", "x") + ("c",) * len(channels), attributes=array_attrs,
        )
    return Volume(
        array, shape, dtype, str(path),
        {"zarr": os.path.abspath(path)}, grid_origin=(0, 0, 0), grid=chunks,
    )
