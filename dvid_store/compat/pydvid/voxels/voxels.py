"""pydvid's ``voxels`` functions: metadata, new volumes, and ``(c, x, y, z)`` subvolumes.

pydvid's arrays put the channel first and then DVID's axes in x, y, z order (numpy
indexes them ``a[c, x, y, z]``, Fortran order). dvid_store's node API works in
``(z, y, x)`` (plus a trailing channel for ``rgba8blk``); the arrays returned here are
transposed views of what the node API reads, so no voxel is copied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ....datatypes.labels import Labelarray, Labelblk, Labelmap
from ....datatypes.roi import Roi
from ....datatypes.volume import VolumeInstance
from ....datatypes.voxels import Voxels
from ....errors import DvidInputError, UnsupportedError
from ....geometry import Box
from ....node import Node
from ..dvid_connection import client_for, node_for
from ..errors import translated
from .voxels_metadata import VoxelsMetadata

__all__ = ["create_new", "get_metadata", "get_ndarray", "post_ndarray"]

_LABEL_TYPES: dict[str, type[VolumeInstance]] = {"labelmap": Labelmap, "labelarray": Labelarray, "labelblk": Labelblk}
_QUERY_ARGS = ("throttle", "roi")


# ------------------------------------------------------------------ public
def get_metadata(connection: Any, uuid: str, data_name: str) -> VoxelsMetadata:
    """The volume's metadata as DVID's ``/metadata`` JSON, channel first (pydvid's ``get_metadata``).

    Parameters
    ----------
    connection : http.client.HTTPConnection, DvidConnection or str
        The server.
    uuid : str
        The node: a UUID, a unique prefix, or ``prefix:branch``.
    data_name : str
        The voxel instance.
    """
    with translated("voxels metadata"):
        return metadata_of(open_volume(node_for(client_for(connection), uuid), data_name))


def create_new(connection: Any, uuid: str, data_name: str, voxels_metadata: VoxelsMetadata) -> None:
    """Create a voxel instance for ``voxels_metadata`` (pydvid's ``create_new``).

    The DVID type follows from the dtype and the number of channels (see
    :meth:`VoxelsMetadata.determine_dvid_typename`: 4 × uint8 is ``rgba8blk``, uint64
    is ``labelblk``); blocks are 32³ as pydvid made them; voxel size and units come
    from the metadata's axes (``Resolution``, and ``Units``, empty meaning nanometers).

    Raises
    ------
    DvidHttpError
        DVID refused (e.g. the name is taken: status 400).
    DvidInputError
        DVID has no type for the dtype and channels, or the volume is not 3-d.
    """
    typename = voxels_metadata.determine_dvid_typename()
    axes = list(voxels_metadata["Axes"])
    if len(axes) != 3:
        raise DvidInputError(f"DVID volumes have 3 axes (x, y, z); the metadata has {len(axes)}")
    voxel_size = tuple(float(a.get("Resolution") or 1.0) for a in reversed(axes))
    units = tuple(str(a.get("Units") or "nanometers") for a in reversed(axes))
    with translated("voxels.new"):
        node = node_for(client_for(connection), uuid)
        if typename == "labelblk":
            Labelblk.create(node, data_name, block_size=32, voxel_size=voxel_size, voxel_units=units)
        else:
            dtype = "rgba8" if typename == "rgba8blk" else voxels_metadata.dtype
            Voxels.create(node, data_name, dtype, block_size=32, voxel_size=voxel_size, voxel_units=units)


def get_ndarray(
    connection: Any,
    uuid: str,
    data_name: str,
    access_type: str,
    voxels_metadata: VoxelsMetadata,
    start: Sequence[int],
    stop: Sequence[int],
    query_args: Mapping[str, Any] | None = None,
    throttle: bool = False,
) -> np.ndarray:
    """The voxels of ``[start, stop)`` as a ``(c, x, y, z)`` array (pydvid's ``get_ndarray``).

    ``start`` and ``stop`` are channel first and cover all channels: ``(0, x0, y0, z0)``,
    ``(channels, x1, y1, z1)``; spatial coordinates may be negative. ``access_type``
    is ``"raw"`` (voxels) or ``"mask"`` (an roi instance as 0/1). ``query_args`` may
    hold ``roi`` (mask the read with that roi instance) and ``throttle``.
    """
    with translated("subvolume query"):
        node = node_for(client_for(connection), uuid)
        return read_cxyz(open_volume(node, data_name, access_type), voxels_metadata, start, stop, query_args, throttle)


def post_ndarray(
    connection: Any,
    uuid: str,
    data_name: str,
    access_type: str,
    voxels_metadata: VoxelsMetadata,
    start: Sequence[int],
    stop: Sequence[int],
    new_data: Any,
    throttle: bool = False,
) -> None:
    """Write a ``(c, x, y, z)`` array over ``[start, stop)`` (pydvid's ``post_ndarray``).

    Any box: blocks it covers only in part are read, merged and written back, so no
    voxel outside the box changes (:meth:`dvid_store.Voxels.write` with
    ``merge_edges=True``). Label volumes take block-aligned boxes only.
    """
    with translated("subvolume post"):
        node = node_for(client_for(connection), uuid)
        write_cxyz(open_volume(node, data_name, access_type), voxels_metadata, start, stop, new_data, throttle)


# ----------------------------------------------------------------- helpers
def open_volume(node: Node, data_name: str, access_type: str = "raw") -> VolumeInstance | Roi:
    """The node API object for pydvid's ``access_type`` of ``data_name``: ``"raw"`` voxels or an roi ``"mask"``."""
    if access_type == "mask":
        return node.roi(data_name)
    if access_type != "raw":
        raise DvidInputError(f"access_type must be 'raw' (voxels) or 'mask' (an roi), got {access_type!r}")
    typename = str(node.typeinfo(data_name)["Base"]["TypeName"])
    if typename in _LABEL_TYPES:
        return _LABEL_TYPES[typename](node, data_name)
    if typename in Voxels.typenames:
        return Voxels(node, data_name)
    raise DvidInputError(
        f"{data_name!r} is a {typename} instance; pydvid's voxel access reads imageblk types "
        f"({', '.join(Voxels.typenames)}) and labels (labelmap, labelarray, labelblk)"
    )


def metadata_of(volume: VolumeInstance | Roi) -> VoxelsMetadata:
    """DVID's ``/metadata`` form of a volume, built from its ``/info`` and stored bounding box."""
    if isinstance(volume, Roi):
        return mask_metadata()
    extents = volume.extents  # asks the server: other clients may have written
    properties = dict(volume.info["Extended"])
    sizes = properties.get("VoxelSize") or [1.0, 1.0, 1.0]
    units = properties.get("VoxelUnits") or ["nanometers"] * 3
    axes = []
    for i, label in enumerate("XYZ"):
        offset, size = 0, 0
        if extents is not None:
            offset = extents[0][2 - i]
            size = extents[1][2 - i] - offset
        axes.append({"Label": label, "Resolution": sizes[i], "Units": units[i], "Size": size, "Offset": offset})
    return VoxelsMetadata({"Axes": axes, "Properties": properties})


def mask_metadata() -> VoxelsMetadata:
    """pydvid's metadata of an roi mask: one uint8 channel, x, y, z, no size (an roi has no bounding box)."""
    axes = [{"Label": label, "Resolution": 1, "Units": "", "Size": None, "Offset": 0} for label in "XYZ"]
    return VoxelsMetadata({"Axes": axes, "Properties": {"Values": [{"DataType": "uint8", "Label": "roi-mask"}]}})


def zyx_box(metadata: VoxelsMetadata, start: Sequence[int], stop: Sequence[int]) -> Box:
    """pydvid's channel-first ``(start, stop)`` → dvid_store's ``((z0, y0, x0), (z1, y1, x1))``, checked."""
    channels = metadata.shape[0]
    start, stop = [int(v) for v in start], [int(v) for v in stop]
    if not len(start) == len(stop) == len(metadata.shape):
        raise DvidInputError(
            f"start {tuple(start)} and stop {tuple(stop)} need {len(metadata.shape)} values each "
            f"({metadata.axiskeys}: the channel first)"
        )
    if start[0] != 0 or stop[0] != channels:
        raise DvidInputError(
            f"a subvolume includes all channels: the channel axis runs 0..{channels}, "
            f"got {start[0]}..{stop[0]} (select channels from the array afterwards)"
        )
    if any(a >= b for a, b in zip(start[1:], stop[1:])):
        raise DvidInputError(f"the box {tuple(start)}..{tuple(stop)} is empty: every start must be below its stop")
    return (start[3], start[2], start[1]), (stop[3], stop[2], stop[1])


def read_cxyz(
    volume: VolumeInstance | Roi,
    metadata: VoxelsMetadata,
    start: Sequence[int],
    stop: Sequence[int],
    query_args: Mapping[str, Any] | None,
    throttle: bool,
) -> np.ndarray:
    """Read ``[start, stop)`` (channel first, x, y, z) through the node API; a Fortran-ordered ``(c, x, y, z)`` view."""
    box = zyx_box(metadata, start, stop)
    args = dict(query_args or {})
    unknown = sorted(set(args) - set(_QUERY_ARGS))
    if unknown:
        raise DvidInputError(
            f"query_args {unknown} are not supported: DVID's voxel reads take {', '.join(_QUERY_ARGS)} here"
        )
    if isinstance(volume, Roi):
        data = volume.mask(box)
    else:
        data = volume.read(box, throttle=throttle, roi=args.get("roi") or None)
    if data.ndim == 3:
        return data.T[np.newaxis]
    return data.transpose(3, 2, 1, 0)


def write_cxyz(
    volume: VolumeInstance | Roi,
    metadata: VoxelsMetadata,
    start: Sequence[int],
    stop: Sequence[int],
    new_data: Any,
    throttle: bool,
) -> None:
    """Write a ``(c, x, y, z)`` array over ``[start, stop)`` through the node API (edges merged for voxels)."""
    if isinstance(volume, Roi):
        raise UnsupportedError(
            f"roi {volume.name!r} is made of blocks, not voxels, so it cannot be written as a mask volume; "
            "write it with node.roi(name).post_mask(mask_zyx, offset_zyx) or post_blocks(blocks_zyx)"
        )
    box = zyx_box(metadata, start, stop)
    shape = tuple(int(b) - int(a) for a, b in zip(start, stop))
    data = np.asarray(new_data)
    if data.shape != shape:
        if data.size != int(np.prod(shape)):
            raise DvidInputError(
                f"the data has shape {data.shape} but the box {tuple(start)}..{tuple(stop)} has shape {shape}"
            )
        data = data.reshape(shape, order="F")  # pydvid sent the array's buffer in Fortran order
    zyx = data.transpose(3, 2, 1, 0)
    if not volume.channel_shape:
        zyx = zyx[..., 0]
    if isinstance(volume, Voxels):
        volume.write(zyx, box[0], throttle=throttle, merge_edges=True)
    elif isinstance(volume, (Labelmap, Labelarray)):
        volume.write(zyx, box[0], throttle=throttle, mutate=True)
    else:
        volume.write(zyx, box[0], throttle=throttle)
