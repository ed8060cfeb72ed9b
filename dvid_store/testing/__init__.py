"""Helpers for testing code that uses DVID: a real throwaway server and pytest fixtures.

The pytest fixtures (``dvid_server``, ``dvid_node``) are registered automatically
through the ``pytest11`` entry point once dvid_store is installed.
"""

from .samples import SAMPLE_VOLUMES, labels_testdata, sample_path, sample_volume
from .server import DvidServer, DvidServerError, find_dvid_binary

__all__ = [
    "SAMPLE_VOLUMES",
    "DvidServer",
    "DvidServerError",
    "find_dvid_binary",
    "labels_testdata",
    "sample_path",
    "sample_volume",
]
