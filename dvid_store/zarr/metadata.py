"""The zarr v3 documents of a DVID voxel instance: ``zarr.json`` and OME-Zarr attributes.

Everything here is pure: the documents are synthesised from a
:class:`~dvid_store.layout.Layout` (the instance's levels, origins and shapes, read
once from DVID and pinned; see :mod:`dvid_store.layout`, where the conventions of
indices and physical coordinates are described).

* Array ``"<level>"`` of the group is the layout's level ``"<level>"``; its chunk
  shape is a whole number of DVID blocks per axis (``chunk_blocks``; see
  :func:`default_chunk_blocks`), its codec the plain little-endian ``bytes``.
* A multichannel level (``rgba8blk``) is a 4-d ``uint8`` array ``(z, y, x, 4)``
  whose chunks hold all 4 channels (``chunk_shape`` ends in 4), with dimension names
  ``z, y, x, c`` and an OME-Zarr axis ``c`` of type ``"channel"`` listed last, after
  the space axes, as the data lie (OME-Zarr 0.5 orders a channel axis before the
  space axes, so validators that enforce the order refuse these arrays; readers
  that go by the axis names and types read them). The channels are R, G, B, A
  (``dvid.channels``).
* The group carries OME-Zarr 0.5 ``multiscales`` (physical ``scale`` and
  ``translation`` of every level, from :func:`~dvid_store.layout.level_transform`),
  a ``dvid`` block of DVID's own attributes, and inline consolidated metadata.

``Layout``, ``Level``, ``discover_layout``, ``normalise_unit`` and ``physical_axis``
moved to :mod:`dvid_store.layout`; they can still be imported from here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..blocks import LABEL_TYPES
from ..errors import DvidInputError
from ..layout import CHANNEL_NAMES, Layout, Level, level_transform, normalise_unit

# The instance geometry moved to dvid_store.layout; these names stay importable from here.
from ..layout import discover_layout as discover_layout
from ..layout import physical_axis as physical_axis

__all__ = [
    "CHUNK_TARGET_BYTES",
    "array_document",
    "default_chunk_blocks",
    "group_document",
    "metadata_documents",
    "normalised_document",
]

ZYX = tuple[int, int, int]

#: What :func:`default_chunk_blocks` aims a zarr chunk at, in voxel bytes...
CHUNK_TARGET_BYTES = 8 * 1024 * 1024

#: ... times this for labels, whose blocks travel compressed (a small fraction of
#: their voxel bytes), so that a chunk still moves megabytes per request.
LABEL_CHUNK_FACTOR = 8


def default_chunk_blocks(
    block_shape: ZYX, itemsize: int, target_bytes: int = CHUNK_TARGET_BYTES, *, labels: bool = False
) -> ZYX:
    """DVID blocks per zarr chunk along each axis: the cube of blocks nearest ``target_bytes``.

    For labels (``labels=True``) the target is :data:`LABEL_CHUNK_FACTOR` times as
    big (64 MiB: 3³ blocks of 64³ uint64).

    A zarr chunk read is one DVID request, and zarr and dask take the array's chunks
    as their unit of work (``da.from_zarr`` makes one task per chunk, ``xr.open_zarr``
    starts from them), so chunks of one small block leave a far server's link idle
    behind ten requests in flight and give dask millions of tasks. Chunks of a few
    MiB keep the link busy with zarr's default concurrency; a smaller read still
    fetches whole chunks, so random access to tiny regions is better served by
    ``chunk_blocks=1``.
    """
    block_bytes = int(np.prod(block_shape)) * int(itemsize)
    if labels:
        target_bytes *= LABEL_CHUNK_FACTOR
    per_axis = max(1, round((target_bytes / max(1, block_bytes)) ** (1 / 3)))
    return (per_axis, per_axis, per_axis)


def chunk_shape_of(level: Level, chunk_blocks: ZYX) -> ZYX:
    """A level's zarr chunk shape in voxels."""
    return tuple(b * k for b, k in zip(level.block_shape, chunk_blocks))  # type: ignore[return-value]


def _dvid_attributes(layout: Layout, level: Level | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "server": layout.server,
        "uuid": layout.uuid,
        "instance": layout.instance,
        "type": layout.typename,
        "block_size": list(layout.block_shape),
        "min_point": list(layout.min_point) if layout.min_point is not None else None,
        "max_point": list(layout.max_point) if layout.max_point is not None else None,
        "voxel_size": list(layout.voxel_size),
        "voxel_units": list(layout.units),
        "supervoxels": layout.supervoxels,
        "axes": ["z", "y", "x"],
    }
    if layout.channel_shape:
        attrs["axes"].append("c")
        attrs["channels"] = list(CHANNEL_NAMES[layout.typename])
    if level is not None:
        scale, translation = level_transform(layout, level)
        attrs.update(
            level=int(level.path),
            level_instance=level.instance,
            scale=level.scale,
            block_size=list(level.block_shape),
            offset=list(level.origin),
            level_voxel_size=scale,
            translation=translation,
        )
    return attrs


def array_document(layout: Layout, level: Level, chunk_blocks: ZYX = (1, 1, 1)) -> dict[str, Any]:
    """The ``zarr.json`` of one level's array, as JSON-ready data (zarr-normalised)."""
    dtype = np.dtype(layout.dtype)
    attributes = _dvid_attributes(layout, level)
    attributes["chunk_blocks"] = list(chunk_blocks)
    channels = list(level.channel_shape)
    chunk_shape = list(chunk_shape_of(level, chunk_blocks)) + channels
    doc = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(level.shape) + channels,
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk_shape}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": {"dvid": attributes},
        "dimension_names": ["z", "y", "x"] + ["c"] * len(channels),
    }
    return normalised_document(doc)


def _ome(layout: Layout) -> dict[str, Any]:
    axes = []
    for name, unit in zip("zyx", layout.units):
        axis: dict[str, Any] = {"name": name, "type": "space"}
        if normalise_unit(unit):
            axis["unit"] = normalise_unit(unit)
        axes.append(axis)
    channels = len(layout.channel_shape)
    if channels:
        axes.append({"name": "c", "type": "channel"})
    datasets = []
    for level in layout.levels:
        scale, translation = level_transform(layout, level)
        scale, translation = scale + [1.0] * channels, translation + [0.0] * channels
        datasets.append(
            {
                "path": level.path,
                "coordinateTransformations": [
                    {"type": "scale", "scale": scale},
                    {"type": "translation", "translation": translation},
                ],
            }
        )
    kind = "labels" if layout.typename in LABEL_TYPES else "image"
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": layout.instance,
                "axes": axes,
                "datasets": datasets,
                "type": "mode" if kind == "labels" else "mean",
                "metadata": {"source": "DVID", "kind": kind},
            }
        ],
    }


def group_document(layout: Layout, chunk_blocks: ZYX = (1, 1, 1)) -> dict[str, Any]:
    """The group's ``zarr.json``: OME-Zarr 0.5 ``multiscales``, a ``dvid`` block, inline consolidated metadata."""
    doc = {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {"ome": _ome(layout), "dvid": _dvid_attributes(layout, None)},
        "consolidated_metadata": {
            "kind": "inline",
            "must_understand": False,
            "metadata": {level.path: array_document(layout, level, chunk_blocks) for level in layout.levels},
        },
    }
    return normalised_document(doc)


def normalised_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A ``zarr.json`` document as zarr itself would write it (for equality tests).

    Raises
    ------
    DvidInputError
        Not a valid zarr v3 document.
    """
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.group import GroupMetadata
    from zarr.core.metadata.v3 import ArrayV3Metadata

    try:
        if doc.get("node_type") == "array":
            meta: Any = ArrayV3Metadata.from_dict(dict(doc))
        elif doc.get("node_type") == "group":
            meta = GroupMetadata.from_dict(dict(doc))
        else:
            raise ValueError(f"node_type {doc.get('node_type')!r}")
    except Exception as exc:
        raise DvidInputError(f"not a zarr v3 metadata document: {exc}") from None
    data = meta.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()
    normalised: dict[str, Any] = json.loads(data)
    return normalised


def metadata_documents(layout: Layout, scale: int | None, chunk_blocks: ZYX = (1, 1, 1)) -> dict[str, bytes]:
    """Every metadata key of the store and its bytes.

    Parameters
    ----------
    layout : Layout
        The instance.
    scale : int or None
        ``None``: the multiscale group (``zarr.json``, ``"<level>/zarr.json"``);
        an int: that level alone as the root array (``zarr.json``).
    chunk_blocks : (int, int, int)
        DVID blocks per zarr chunk along z, y, x.
    """
    if scale is None:
        docs = {"zarr.json": group_document(layout, chunk_blocks)}
        for level in layout.levels:
            docs[f"{level.path}/zarr.json"] = array_document(layout, level, chunk_blocks)
    else:
        docs = {"zarr.json": array_document(layout, layout.level(scale), chunk_blocks)}
    return {key: json.dumps(doc, indent=2).encode() for key, doc in docs.items()}
