"""Create a new DVID voxel instance with its extents and open it as a writable zarr array."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .blocks import CHANNELS, LABEL_TYPES, VOXEL_TYPES
from .datatypes.voxels import STORABLE, is_rgba8
from .errors import DvidInputError
from .geometry import Box, as_box, as_zyx

if TYPE_CHECKING:
    import zarr

    from .node import Node

__all__ = ["create_array"]


def _as_box(shape_or_box: Sequence[int] | Sequence[Sequence[int]] | np.ndarray, offset: Sequence[int] | None) -> Box:
    arr = np.asarray(shape_or_box)
    if arr.shape == (2, 3):
        if offset is not None:
            raise DvidInputError("give either a box ((z0, y0, x0), (z1, y1, x1)) or a shape with offset=, not both")
        return as_box(arr)
    # not a (2, 3) box, so a shape; as_zyx refuses anything else
    shape = as_zyx(cast("Sequence[int] | np.ndarray", shape_or_box), "shape")
    start = as_zyx(offset if offset is not None else (0, 0, 0), "offset")
    return as_box((start, tuple(a + n for a, n in zip(start, shape))))


def _typename(dtype: Any, labels: bool | None) -> str:
    """The DVID type for ``dtype``: labelmap, an imageblk type, or rgba8blk ("rgba8" or numpy's (uint8, 4))."""
    if is_rgba8(dtype):
        if labels:
            raise DvidInputError("label volumes (labelmap) are uint64, not 4 uint8 channels (rgba8)")
        return "rgba8blk"
    try:
        np_dtype = np.dtype(dtype)
    except (TypeError, ValueError):
        raise DvidInputError(f"DVID has no voxel type for dtype {dtype!r}: its voxel types store {STORABLE}") from None
    if labels is None:
        labels = np_dtype == np.uint64
    if labels:
        if np_dtype != np.uint64:
            raise DvidInputError(f"label volumes (labelmap) are uint64, got dtype {np_dtype}")
        return "labelmap"
    for typename, voxel_dtype in VOXEL_TYPES.items():
        if voxel_dtype == np_dtype and typename not in CHANNELS:
            return typename
    shown = str(np_dtype)
    if np_dtype.subdtype is not None:
        shown = f"{np_dtype.subdtype[0]} × {int(np.prod(np_dtype.subdtype[1]))} channels"
    raise DvidInputError(
        f"DVID has no voxel type for dtype {shown}: its voxel types store {STORABLE} "
        "(uint64 labels: labels=True)"
    )


def create_array(
    node: Node,
    name: str,
    shape: Sequence[int] | Sequence[Sequence[int]] | np.ndarray,
    dtype: Any = "uint8",
    *,
    offset: Sequence[int] | None = None,
    labels: bool | None = None,
    scales: int = 0,
    block_size: int | Sequence[int] | None = None,
    voxel_size: float | Sequence[float] = 8.0,
    voxel_units: str | Sequence[str] = "nanometers",
    **settings: Any,
) -> zarr.Array:
    """Create a DVID instance covering a box and return its level-0 zarr array (writable).

    Parameters
    ----------
    node : Node
        An uncommitted node.
    name : str
        New instance name.
    shape : (nz, ny, nx) or ((z0, y0, x0), (z1, y1, x1))
        The voxels the data will cover: a shape (placed at ``offset``) or a
        half-open box. Coordinates may be negative.
    dtype : dtype or ``"rgba8"``
        ``uint8``, ``uint16``, ``uint32``, ``float32`` → grayscale (``uint8blk``...);
        ``uint64`` → ``labelmap`` unless ``labels=False`` (then ``uint64blk``);
        ``"rgba8"`` or numpy's ``(uint8, 4)`` → ``rgba8blk`` (4 uint8 channels R, G,
        B, A: the zarr array is ``(z, y, x, 4)`` uint8). Any other dtype is refused
        before anything is sent, naming what DVID can store.
    offset : (z, y, x), optional
        Start of the box when ``shape`` is a shape (default the origin).
    labels : bool, optional
        Force (``True``) or forbid (``False``) a labelmap.
    scales : int
        Number of down-sampled levels. labelmap: ``MaxDownresLevel`` (DVID computes
        them from every scale-0 write). Grayscale: instances ``name_1`` ..
        ``name_<scales>`` with halved extents and doubled voxel sizes, to be written
        by the caller.
    block_size : int or (z, y, x), optional
        DVID block size (default: DVID's, 32³ grayscale, 64³ labelmap).
    voxel_size : float or (z, y, x)
        Physical voxel size of level 0.
    voxel_units : str or (z, y, x)
        DVID unit names, e.g. ``"nanometers"``.
    **settings
        More instance settings (see :meth:`Node.create_instance`), e.g. ``compression``.

    Returns
    -------
    zarr.Array
        Level 0 on a :class:`~dvid_store.DvidStore`, opened ``r+``. Its shape is the
        box rounded out to whole blocks, and index 0 sits at the block-aligned start
        (``array.attrs["dvid"]["offset"]``): write a box at
        ``array[start - offset : stop - offset]``. The multiscale group is
        ``zarr.open_group(DvidStore(node, name))``. An rgba8blk array has a trailing
        axis of 4 channels R, G, B, A.

    Raises
    ------
    LockedNodeError
        The node is committed (nothing is created).
    DvidInputError
        Bad shape, dtype or settings (checked before anything is sent).
    BadRequestError
        DVID refused the instance (e.g. the name is taken).
    """
    import zarr

    from .zarr.store import DvidStore

    box = _as_box(shape, offset)
    typename = _typename(dtype, labels)
    scales = int(scales)
    if scales < 0:
        raise DvidInputError(f"scales must be >= 0, got {scales}")
    try:
        voxel = tuple(float(v) for v in np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,)))
    except ValueError:
        raise DvidInputError(f"voxel_size needs one value or three (z, y, x), got {voxel_size!r}") from None
    units = (voxel_units,) * 3 if isinstance(voxel_units, str) else tuple(voxel_units)
    if len(units) != 3:
        raise DvidInputError(f"voxel_units needs one name or three (z, y, x), got {voxel_units!r}")
    if block_size is not None:
        settings["block_size"] = as_zyx(block_size, "block_size")
    if typename in LABEL_TYPES and scales and min(box[0]) < 0:
        warnings.warn(
            "DVID v1.0.0 fails (HTTP 500) to down-resolve labelmap blocks at negative coordinates; "
            "writes to this instance may error. Keep multi-scale labelmaps in the positive octant.",
            UserWarning,
            stacklevel=2,
        )
    node.require_writable(f"creating instance {name!r}")
    existing = node.instances()
    names = [name] + ([f"{name}_{s}" for s in range(1, scales + 1)] if typename not in LABEL_TYPES else [])
    taken = [n for n in names if n in existing]
    if taken:
        raise DvidInputError(
            f"instance(s) {', '.join(map(repr, taken))} already exist on node {node.uuid[:8]}; choose another name"
        )

    common = {"voxel_units": units, **settings}
    if typename in LABEL_TYPES:
        node.create_instance(typename, name, voxel_size=voxel, max_downres_level=scales, **common)
        _post_extents(node, name, box)
    else:
        for s, instance in enumerate(names):
            factor = 2**s
            node.create_instance(typename, instance, voxel_size=tuple(v * factor for v in voxel), **common)
            level_box = (
                tuple(a // factor for a in box[0]),
                tuple(-((-b) // factor) for b in box[1]),
            )
            _post_extents(node, instance, level_box)
    store = DvidStore(node, name, scale=0)
    return zarr.open_array(store, mode="r+")


def _post_extents(node: Node, instance: str, box: Box) -> None:
    """Set the instance's extents (inclusive corners, DVID x,y,z order)."""
    start, stop = box
    payload = {"MinPoint": list(reversed(start)), "MaxPoint": [c - 1 for c in reversed(stop)]}
    node.transport.post_json(node.path(instance, "extents"), payload)

