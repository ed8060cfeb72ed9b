"""libdvid's Python bindings, on dvid_store: ``from dvid_store.compat.libdvid import DVIDNodeService``.

The names scripts import from ``libdvid``: :class:`DVIDNodeService`,
:class:`DVIDServerService`, :class:`DVIDConnection`, :class:`ConnectionMethod`,
:class:`Slice2D`, :class:`Vertex`, :class:`Edge`, the ``BlockZYX``, ``PointZYX`` and
``SubstackZYX`` tuples, the errors :class:`ErrMsg` and :class:`DVIDException`
(``.status``, ``.message``), and ``encode_label_block`` / ``decode_label_block``.

Signatures, argument order and defaults are libdvid's (``throttle=True`` for volume
calls, ``compress=True`` for labels); arrays and coordinates are ``(z, y, x)``.
Every call goes through dvid_store's node API. The labelgraph calls raise
:class:`DVIDException` (status 400) explaining that DVID removed the datatype; the
migration page of the documentation lists every method and what it maps to.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...codecs import decode_label_block as _decode
from ...codecs import encode_label_block as _encode
from ._connection import DVIDConnection, DVIDServerService
from ._errors import DVIDException, ErrMsg
from ._node_service import DVIDNodeService
from ._types import BlockZYX, ConnectionMethod, Edge, PointZYX, Slice2D, SubstackZYX, Vertex

__all__ = [
    "BlockZYX",
    "ConnectionMethod",
    "DVIDConnection",
    "DVIDException",
    "DVIDNodeService",
    "DVIDServerService",
    "Edge",
    "ErrMsg",
    "PointZYX",
    "Slice2D",
    "SubstackZYX",
    "Vertex",
    "decode_label_block",
    "encode_label_block",
]


def encode_label_block(label_vol_zyx: Any) -> bytes:
    """Encode a uint64 ``(z, y, x)`` block (edges multiples of 8, e.g. 64³) in DVID's label block format."""
    return _encode(np.asarray(label_vol_zyx))


def decode_label_block(label_vol_zyx: Any) -> np.ndarray:
    """Decode DVID's label block format (not gzipped) into a uint64 ``(z, y, x)`` block."""
    return _decode(bytes(memoryview(label_vol_zyx)))
