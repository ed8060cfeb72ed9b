"""JPEG through the optional Pillow package: imagetile tiles and jpeg-stored uint8blk blocks.

DVID stores a jpeg-compressed block as one 8-bit grayscale image ``X`` wide and
``Y * Z`` rows high (rows ordered z, then y). Reading the stored JPEGs and decoding
them with Pillow (libjpeg) is faster than having DVID send the blocks uncompressed
(figures on the "Performance" page of the docs), but libjpeg's inverse DCT is not
Go's: decoded voxels can differ from DVID's own decoding (``GET /raw``) by one grey
level.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ..errors import UnsupportedError

__all__ = ["JPEG_MAGIC", "decode_jpeg_block", "pillow_image"]

#: First bytes of every JPEG stream (start-of-image marker).
JPEG_MAGIC = b"\xff\xd8\xff"


def pillow_image(why: str) -> Any:
    """``PIL.Image``, or an :class:`~dvid_store.UnsupportedError` saying how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise UnsupportedError(
            f"dvid_store needs the optional Pillow package to {why} "
            "(pip install pillow, or the dvid_store[jpeg] extra)"
        ) from None
    return Image


def decode_jpeg_block(payload: bytes | bytearray | memoryview, block_shape: tuple[int, int, int]) -> np.ndarray:
    """Decode one jpeg-stored uint8 block into a ``(z, y, x)`` array.

    Raises
    ------
    ValueError
        The payload is not a JPEG image of ``block_shape``.
    """
    if bytes(payload[:3]) != JPEG_MAGIC:
        raise ValueError(f"not a JPEG stream (starts with {bytes(payload[:8])!r})")
    image = pillow_image("decode jpeg-stored blocks").open(io.BytesIO(payload))
    z, y, x = block_shape
    if image.mode != "L" or image.size != (x, y * z):
        raise ValueError(f"JPEG of mode {image.mode} and size {image.size}, expected mode L and size {(x, y * z)}")
    return np.asarray(image).reshape(block_shape)
