"""numcodecs wrapper of DVID's compressed label block codec.

Importing this module registers :class:`DvidLabelBlockCodec` under the id
``"dvid_labelblock"``, so ``numcodecs.get_codec({"id": "dvid_labelblock", ...})``
works once ``dvid_store.codecs`` has been imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray, ensure_ndarray_like, ndarray_copy
from numcodecs.registry import register_codec

from .labelblock import (
    DEFAULT_GZIP_LEVEL,
    SUBBLOCK_SIZE,
    LabelBlockError,
    _gunzip,
    decode_label_block,
    encode_gzipped_label_block,
    encode_label_block,
    label_block_shape,
)

__all__ = ["DvidLabelBlockCodec"]


# numcodecs ships no type information (no py.typed), so mypy sees Codec as Any.
class DvidLabelBlockCodec(Codec):  # type: ignore[misc]
    """Encode ``uint64`` label chunks as DVID compressed label blocks.

    Parameters
    ----------
    block_shape
        Chunk shape in ``(z, y, x)`` order; each dimension a positive multiple of 8.
    gzip
        Wrap the encoding in gzip, as DVID's ``POST /blocks`` and
        ``GET /specificblocks?compression=blocks`` do (default). Without it the bytes are
        the bare DVID encoding.
    level
        gzip level used when encoding with ``gzip=True``.

    Notes
    -----
    ``encode`` accepts the chunk as an integer array of ``block_shape`` (any shape with
    that many elements is reshaped) or as raw little-endian ``uint64`` bytes of that
    size. ``decode`` returns a ``uint64`` array of ``block_shape`` and, given ``out``,
    decodes straight into it when it is a ``uint64`` array of the right size.
    """

    codec_id = "dvid_labelblock"

    def __init__(
        self,
        block_shape: Sequence[int] = (64, 64, 64),
        gzip: bool = True,
        level: int = DEFAULT_GZIP_LEVEL,
    ) -> None:
        shape = tuple(int(d) for d in block_shape)
        if len(shape) != 3 or any(d <= 0 or d % SUBBLOCK_SIZE for d in shape):
            raise ValueError(
                f"block_shape must be 3 positive multiples of {SUBBLOCK_SIZE} in (z, y, x) "
                f"order, got {tuple(block_shape)}"
            )
        if not 0 <= int(level) <= 9:
            raise ValueError(f"gzip level must be 0..9, got {level}")
        self.block_shape = shape
        self.gzip = bool(gzip)
        self.level = int(level)

    def get_config(self) -> dict[str, Any]:
        """JSON-compatible configuration (``block_shape`` as a list)."""
        return {
            "id": self.codec_id,
            "block_shape": list(self.block_shape),
            "gzip": self.gzip,
            "level": self.level,
        }

    def _as_block(self, buf: Any) -> np.ndarray:
        arr = ensure_ndarray_like(buf)
        n = int(np.prod(self.block_shape))
        if arr.size == n and arr.dtype.kind in "uib":
            return np.asarray(arr).reshape(self.block_shape)
        if arr.nbytes == 8 * n:
            # Raw little-endian uint64 voxels handed over as bytes.
            raw: np.ndarray = ensure_contiguous_ndarray(arr).view("<u8")
            return raw.reshape(self.block_shape)
        raise ValueError(
            f"cannot encode a chunk of {arr.size} {arr.dtype} values as a DVID label block "
            f"of shape {self.block_shape} ({n} uint64 voxels)"
        )

    def encode(self, buf: Any) -> bytes:
        """Encode one chunk; returns gzip(DVID encoding) or the bare encoding."""
        block = self._as_block(buf)
        if self.gzip:
            return encode_gzipped_label_block(block, level=self.level)
        return encode_label_block(block)

    def decode(self, buf: Any, out: Any = None) -> np.ndarray:
        """Decode one chunk into a ``uint64`` array of ``block_shape`` (or into ``out``)."""
        data = ensure_contiguous_ndarray(buf)
        raw = _gunzip(data) if self.gzip else data
        shape = label_block_shape(raw)
        if shape != self.block_shape:
            raise LabelBlockError(
                f"encoded block is {shape} (z, y, x) but the codec's block_shape is "
                f"{self.block_shape}"
            )
        if out is None:
            return decode_label_block(raw)
        if (
            isinstance(out, np.ndarray)
            and out.dtype == np.uint64
            and out.size == int(np.prod(shape))
            and out.flags.c_contiguous
        ):
            decode_label_block(raw, out=out.reshape(shape))
            return out
        copied: np.ndarray = ndarray_copy(decode_label_block(raw), out)
        return copied


register_codec(DvidLabelBlockCodec)
