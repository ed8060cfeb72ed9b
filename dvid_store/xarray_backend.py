"""xarray access to DVID: the ``engine="dvid"`` backend and :func:`open_dataarray`.

``xarray.open_dataset("dvid://host:port/<node>/<instance>", scale=1)`` (``engine="dvid"``
is picked automatically for ``dvid://`` URLs) gives a Dataset with one lazy variable,
named after the instance, with dimensions ``z, y, x``. Its coordinates are physical
positions (voxel size × level factor, offset by the level's origin; see
:mod:`dvid_store.zarr.metadata`), held by :class:`PhysicalIndex`, and
``.sel(z=..., method="nearest")`` works in physical units. Data are read on access
through :class:`~dvid_store.blocks.BlockIO`, one box at a time; with ``chunks=`` (``{}``
for the preferred whole-block chunks) they become dask arrays.

Multichannel instances (``rgba8blk``) have a fourth dimension ``c`` after ``z, y, x``,
whose coordinate holds the channel names ``"r", "g", "b", "a"``: ``.sel(c="g")``
picks green, ``.isel(c=1)`` the same. Chunked data keep the 4 channels in one chunk.

Selections of chunked data on large instances: :func:`open_dataarray` with ``chunks=``
holds a :class:`~dvid_store.dask_array.DvidArray`, so ``isel``/``sel`` with slices and
positions give dask arrays whose graphs cover the selection alone, and computing on a
region costs what the region costs however large the instance. ``xarray.open_dataset(url,
engine="dvid", chunks=...)`` and ``.chunk()`` of lazy data are different: xarray builds
those dask arrays itself, with ``dask.array.from_array`` over the whole level (a backend
returns lazy arrays and never sees ``chunks``), and their selections keep that
whole-level graph, whose cost grows with the number of chunks in the instance. On
teravoxel instances select before chunking (``xr.open_dataset(url).sel(...).chunk(...)``)
or use :func:`open_dataarray`.

The coordinates are plain numpy-backed (pandas) index variables: one float64 per voxel
along each axis, a few kilobytes to megabytes however large the volume. They used to be
lazy :class:`xarray.indexes.RangeIndex` coordinates, but xarray (at least up to
2026.9.0) turns those into dask arrays on ``.chunk()`` and on ``open_dataset(...,
chunks=...)``, and a scalar selection of such a coordinate then computes to shape
``(1,)`` instead of ``()``: ``.sel(z=..., y=..., x=...).compute()`` raised "replacement
data must match the Variable's shape" and ``float(array.sel(z=..., method="nearest").z)``
raised ``TypeError``. Index variables backed by pandas are never chunked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing
from xarray.core.indexing import IndexSelResult
from xarray.indexes import PandasIndex

from .dask import DEFAULT_CHUNK_BYTES, VolumeReader, _level_io, default_chunks, open_dask, resolve_target
from .layout import CHANNEL_NAMES, Layout, Level, discover_layout, normalise_unit, physical_axis
from .transport import RetryPolicy

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
        return np.asarray(
            indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self.reader.__getitem__)
        )


class PhysicalIndex(PandasIndex):
    """The physical positions of the voxels along one axis, selectable exactly despite rounding.

    A :class:`xarray.indexes.PandasIndex` over ``start + i × step`` (float64, one value
    per voxel along the axis). ``.sel`` with a ``method`` works as on any pandas index.
    Without one:

    * a scalar (or an array of them) must be voxel positions, up to a millionth of a
      voxel of rounding, else ``KeyError`` (which suggests ``method="nearest"``);
    * a slice selects the voxels whose positions lie within it, both ends included, up
      to the same rounding.

    A selection keeps the index a ``PhysicalIndex`` (``isel`` and ``sel`` return one).
    Built on pandas rather than :class:`xarray.indexes.RangeIndex` to work around an
    xarray bug with chunked ``RangeIndex`` coordinates (see the module docstring).
    """

    @classmethod
    def regular(cls, start: float, step: float, size: int, dim: str) -> PhysicalIndex:
        """The index of ``size`` voxels at ``start, start + step, ...`` along ``dim``.

        Parameters
        ----------
        start : float
            Position of the first voxel.
        step : float
            Distance between neighbouring voxels (positive).
        size : int
            Number of voxels.
        dim : str
            Dimension (and coordinate) name.

        Returns
        -------
        PhysicalIndex
        """
        if not step > 0:
            raise ValueError(f"the voxel step along {dim!r} must be positive, got {step}")
        values = float(start) + np.arange(int(size), dtype=np.float64) * float(step)
        return cls(values, dim, np.dtype(np.float64))

    def _rounding(self) -> float:
        """How far a label may be from a voxel position and still name it."""
        values = self.index.to_numpy(dtype=np.float64)
        if values.size >= 2:
            return 1e-6 * float(np.min(np.abs(np.diff(values))))
        if values.size == 1:
            return 1e-9 * max(1.0, abs(float(values[0])))
        return 0.0

    def _describe(self) -> str:
        values = self.index.to_numpy(dtype=np.float64)
        if values.size >= 2:
            return f"start {values[0]:g}, step {values[1] - values[0]:g}, {values.size} voxels"
        return f"positions {values.tolist()}"

    def sel(self, labels: dict[Any, Any], method: Any = None, tolerance: Any = None) -> IndexSelResult:
        """Positions of the voxels that ``labels`` select (see the class docstring)."""
        if method is not None or not (self.index.is_monotonic_increasing and self.index.is_unique):
            return super().sel(labels, method=method, tolerance=tolerance)
        label = next(iter(labels.values()))
        eps = self._rounding()
        if isinstance(label, slice):
            if label.step is not None:
                raise KeyError(f"slice steps are not supported by {self.dim!r} selection; use .isel")
            values = self.index.to_numpy(dtype=np.float64)
            lo = 0 if label.start is None else int(np.searchsorted(values, float(label.start) - eps, "left"))
            hi = values.size if label.stop is None else int(np.searchsorted(values, float(label.stop) + eps, "right"))
            return IndexSelResult({self.dim: slice(lo, max(lo, hi))})
        try:
            return super().sel(labels, method="nearest", tolerance=eps)
        except KeyError:
            raise KeyError(
                f"{label!r} is not a voxel position on {self.dim!r} ({self._describe()}); use method='nearest'"
            ) from None


def _dims(level: Level) -> tuple[str, ...]:
    """``z, y, x``, and ``c`` for a multichannel level."""
    return ("z", "y", "x") + ("c",) * len(level.channel_shape)


def _coords(layout: Layout, level: Level) -> xr.Coordinates:
    indexes: dict[str, PandasIndex] = {}
    variables: dict[str, Any] = {}
    for axis, dim in enumerate("zyx"):
        start, step = physical_axis(layout, level, axis)
        indexes[dim] = PhysicalIndex.regular(start, step, level.shape[axis], dim)
        variables.update(indexes[dim].create_variables())
    if level.channel_shape:
        indexes["c"] = PandasIndex(np.array(CHANNEL_NAMES[level.typename]), "c")
        variables.update(indexes["c"].create_variables())
    return xr.Coordinates(variables, indexes=indexes)


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
        variable = xr.Variable(_dims(level), data)
    else:
        dask_chunks = None if chunks in ({}, "auto") else chunks
        data = open_dask(node, instance, scale, supervoxels, dask_chunks, compression=compression)
        variable = xr.Variable(_dims(level), data)
    array = xr.DataArray(variable, coords=coords, name=instance, attrs=_attrs(layout, level))
    # Set on the DataArray: building it from the variable drops the variable's encoding,
    # and without preferred chunks xarray's chunks={} makes the whole level one chunk.
    voxel_bytes = np.dtype(layout.dtype).itemsize * int(np.prod(level.channel_shape))
    preferred = default_chunks(level.shape, level.block_shape, voxel_bytes, DEFAULT_CHUNK_BYTES) + level.channel_shape
    array.encoding["preferred_chunks"] = dict(zip(_dims(level), preferred))
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
        Chunked data are a :class:`~dvid_store.dask_array.DvidArray`: selections with
        slices have graphs of the selection alone (see the module docstring).
    compression : str, optional
        Transfer encoding of block reads.
    **conn
        ``user``, ``app``, ``token``, ``scheme`` for URLs.

    Returns
    -------
    xarray.DataArray
        Dims ``z, y, x`` (rgba8blk: ``z, y, x, c``, with ``c`` = ``"r", "g", "b",
        "a"``); coordinates in physical units (``units`` in each
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
        "timeout", "retry", "deadline",
    )

    def open_dataset(
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
        timeout: float | tuple[float, float] | None = None,
        retry: RetryPolicy | None = None,
        deadline: float | None = None,
    ) -> xr.Dataset:
        conn: dict[str, Any] = {"user": user, "app": app, "token": token, "scheme": scheme, "retry": retry}
        if timeout is not None:
            conn["timeout"] = timeout
        if deadline is not None:
            conn["deadline"] = deadline
        node, instance, scale = resolve_target(str(filename_or_obj), None, scale, **conn)
        array = _dataarray(node, instance, scale, supervoxels, compression, None)
        dataset = array.to_dataset()
        dataset.attrs.update(array.attrs)
        drop = [drop_variables] if isinstance(drop_variables, str) else list(drop_variables or ())
        return dataset.drop_vars([v for v in drop if v in dataset.data_vars])

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        return isinstance(filename_or_obj, str) and filename_or_obj.startswith("dvid://")
