"""xarray access to DVID: the ``engine="dvid"`` backend and :func:`open_dataarray`.

``xarray.open_dataset("dvid://host:port/<node>/<instance>", scale=1)`` (``engine="dvid"``
is picked automatically for ``dvid://`` URLs) gives a Dataset with one lazy variable,
named after the instance, with dimensions ``z, y, x``. Its coordinates are physical
positions (voxel size × level factor, offset by the level's origin; see
:mod:`dvid_store.zarr.metadata`), held by :class:`xarray.indexes.RangeIndex` so no
per-voxel array is ever built, and ``.sel(z=..., method="nearest")`` works in physical
units. Data are read on access through :class:`~dvid_store.blocks.BlockIO`, one box at
a time; with ``chunks=`` (``{}`` for the preferred whole-block chunks) they become
dask arrays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing
from xarray.indexes import RangeIndex

from .dask import DEFAULT_CHUNK_BYTES, VolumeReader, _level_io, default_chunks, open_dask, resolve_target
from .zarr.metadata import Layout, Level, discover_layout, normalise_unit, physical_axis

if TYPE_CHECKING:
    from .node import Node

__all__ = ["DvidBackendArray", "DvidBackendEntrypoint", "PhysicalIndex", "open_dataarray"]


class DvidBackendArray(BackendArray):
    """Lazy, picklable array of one level (basic indexing; reads whole boxes)."""

    def __init__(self, reader: VolumeReader) -> None:
        self.reader = reader
        self.shape = reader.shape
        self.dtype = reader.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self.reader.__getitem__
        )


class PhysicalIndex(RangeIndex):
    """A lazy :class:`~xarray.indexes.RangeIndex` that also selects by exact position.

    ``RangeIndex`` accepts only ``method="nearest"``; here ``.sel`` without a method
    works like a pandas index: a scalar must be a voxel position (else ``KeyError``),
    and a slice selects the voxels whose positions lie within it, both ends included.
    """

    def isel(self, indexers: Any) -> Any:
        result = super().isel(indexers)
        if type(result) is RangeIndex:
            return type(self)(result.transform)
        return result

    def sel(self, labels: dict[Any, Any], method: Any = None, tolerance: Any = None) -> Any:
        if method is not None:
            return super().sel(labels, method=method, tolerance=tolerance)
        from xarray.core.indexing import IndexSelResult

        label = labels[self.dim]
        start, step, size = self.start, self.step, self.size
        eps = 1e-9
        if isinstance(label, slice):
            if label.step is not None:
                raise KeyError(f"slice steps are not supported by {self.dim!r} selection; use .isel")
            lo = 0 if label.start is None else max(0, int(np.ceil((label.start - start) / step - eps)))
            hi = size if label.stop is None else min(size, int(np.floor((label.stop - start) / step + eps)) + 1)
            return IndexSelResult({self.dim: slice(lo, max(lo, hi))})
        values = np.asarray(label.values if hasattr(label, "values") else label, dtype=float)
        positions = (values - start) / step
        rounded = np.round(positions)
        if np.any(np.abs(positions - rounded) > 1e-6) or np.any((rounded < 0) | (rounded >= size)):
            raise KeyError(
                f"{label!r} is not a voxel position on {self.dim!r} (start {start}, step {step}, {size} voxels); "
                "use method='nearest'"
            )
        index = rounded.astype(np.intp)
        return IndexSelResult({self.dim: int(index) if index.ndim == 0 else index})


def _coords(layout: Layout, level: Level) -> xr.Coordinates:
    coords = None
    for axis, dim in enumerate("zyx"):
        start, step = physical_axis(layout, level, axis)
        n = level.shape[axis]
        index = PhysicalIndex.linspace(start, start + n * step, num=n, endpoint=False, dim=dim)
        part = xr.Coordinates.from_xindex(index)
        coords = part if coords is None else coords.merge(part).coords
    assert coords is not None
    return coords


def _attrs(layout: Layout, level: Level) -> dict[str, Any]:
    units = [normalise_unit(u) or u for u in layout.units]
    return {
        "dvid_server": layout.server,
        "dvid_uuid": layout.uuid,
        "dvid_instance": level.instance,
        "dvid_type": layout.typename,
        "scale": int(level.path),
        "supervoxels": int(layout.supervoxels),
        "voxel_size": [v * level.factor for v in layout.voxel_size],
        # Not "units": in xarray (and CF) that names the unit of the data values, and
        # plots would label grayscale intensities with a list of lengths. Each
        # coordinate carries its own "units".
        "voxel_units": units,
        "offset": list(level.origin),
        "block_size": list(level.block_shape),
    }


def _dataarray(
    node: Node, instance: str, scale: int, supervoxels: bool, compression: str | None, chunks: Any
) -> xr.DataArray:
    layout = discover_layout(node, instance, supervoxels=supervoxels)
    level = layout.level(scale)
    coords = _coords(layout, level)
    if chunks is None:
        io = _level_io(node, layout, level, supervoxels, compression)
        data: Any = indexing.LazilyIndexedArray(DvidBackendArray(VolumeReader(io, level.origin, level.shape)))
        variable = xr.Variable(("z", "y", "x"), data)
    else:
        dask_chunks = None if chunks in ({}, "auto") else chunks
        data = open_dask(node, instance, scale, supervoxels, dask_chunks, compression=compression)
        variable = xr.Variable(("z", "y", "x"), data)
    variable.encoding["preferred_chunks"] = dict(
        zip("zyx", default_chunks(level.shape, level.block_shape, np.dtype(layout.dtype).itemsize, DEFAULT_CHUNK_BYTES))
    )
    array = xr.DataArray(variable, coords=coords, name=instance, attrs=_attrs(layout, level))
    for dim, unit in zip("zyx", array.attrs["voxel_units"]):
        array[dim].attrs["units"] = unit
    return array


def open_dataarray(
    url_or_node: str | Node,
    instance: str | None = None,
    scale: int | None = None,
    supervoxels: bool = False,
    chunks: Any = None,
    *,
    compression: str | None = None,
    **conn: Any,
) -> xr.DataArray:
    """One level of a DVID instance as a lazy DataArray with physical coordinates.

    Parameters
    ----------
    url_or_node : str or Node
        ``dvid://host:port/<node>/<instance>[/<level>]`` or a node.
    instance : str, optional
        Instance name (with a node).
    scale : int, optional
        Pyramid level; default 0.
    supervoxels : bool
        labelmap: supervoxel ids.
    chunks : optional
        ``None``: lazy numpy-backed data; ``{}`` or ``"auto"``: dask with the default
        whole-block chunks; anything else: dask chunks as in :func:`dvid_store.open_dask`.
    compression : str, optional
        Transfer encoding of block reads.
    **conn
        ``user``, ``app``, ``token``, ``scheme`` for URLs.

    Returns
    -------
    xarray.DataArray
        Dims ``z, y, x``; coordinates in physical units (``units`` in each
        coordinate's attributes); attributes ``voxel_size``, ``voxel_units``, ``offset``,
        ``scale`` and the DVID source.
    """
    node, instance, scale = resolve_target(url_or_node, instance, scale, **conn)
    return _dataarray(node, instance, scale, supervoxels, compression, chunks)


class DvidBackendEntrypoint(BackendEntrypoint):
    """``xarray.open_dataset(url, engine="dvid", scale=..., supervoxels=...)`` for ``dvid://`` URLs."""

    description = "Open DVID voxel instances (dvid://host:port/<node>/<instance>) lazily"
    url = "https://github.com/janelia-flyem/dvid"
    open_dataset_parameters = (
        "filename_or_obj", "drop_variables", "scale", "supervoxels", "compression", "user", "app", "token", "scheme",
    )

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: Any = None,
        scale: int | None = None,
        supervoxels: bool = False,
        compression: str | None = None,
        user: str | None = None,
        app: str = "dvid_store",
        token: str | None = None,
        scheme: str = "http",
    ) -> xr.Dataset:
        conn = {"user": user, "app": app, "token": token, "scheme": scheme}
        node, instance, scale = resolve_target(str(filename_or_obj), None, scale, **conn)
        array = _dataarray(node, instance, scale, supervoxels, compression, None)
        dataset = array.to_dataset()
        dataset.attrs.update(array.attrs)
        drop = [drop_variables] if isinstance(drop_variables, str) else list(drop_variables or ())
        return dataset.drop_vars([v for v in drop if v in dataset.data_vars])

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        return isinstance(filename_or_obj, str) and filename_or_obj.startswith("dvid://")
