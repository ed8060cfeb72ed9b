"""DVID instances as zarr v3 stores.

* :class:`DvidStore` — the store (one DVID block per zarr chunk).
* :mod:`dvid_store.zarr.metadata` — layouts, ``zarr.json`` and OME-Zarr synthesis.
* :mod:`dvid_store.zarr.coalesce` — batching of concurrent chunk gets into multi-block requests.
"""

from .metadata import Layout, Level, discover_layout
from .store import DvidStore

__all__ = ["DvidStore", "Layout", "Level", "discover_layout"]
