"""Helpers for testing code that uses DVID: a real throwaway server and pytest fixtures.

The pytest fixtures (``dvid_server``, ``dvid_node``, ``dvid_fault_proxy``) are
registered automatically through the ``pytest11`` entry point once dvid_store is
installed. :class:`FaultProxy` puts real network and server failures between a
client and a real server.
"""

from .faultproxy import Fault, FaultProxy
from .samples import SAMPLE_VOLUMES, labels_testdata, sample_path, sample_volume
from .server import DvidServer, DvidServerError, find_dvid_binary
from .waiting import wait_until

__all__ = [
    "SAMPLE_VOLUMES",
    "DvidServer",
    "DvidServerError",
    "Fault",
    "FaultProxy",
    "find_dvid_binary",
    "labels_testdata",
    "sample_path",
    "sample_volume",
    "wait_until",
]
