"""DVID instances as zarr v3 stores.

* :class:`DvidStore` — the store (a zarr chunk is a cube of DVID blocks).
* :mod:`dvid_store.zarr.metadata` — ``zarr.json`` and OME-Zarr synthesis.
* :mod:`dvid_store.zarr.coalesce` — batching of concurrent chunk gets into multi-block requests.

``Layout``, ``Level`` and ``discover_layout`` (an instance's levels, origins and shapes)
live in :mod:`dvid_store.layout` and are re-exported here.
"""

from ..layout import Layout, Level, discover_layout
from .store import DvidStore

__all__ = ["DvidStore", "Layout", "Level", "discover_layout"]
