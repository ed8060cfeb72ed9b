"""A compiled decoder for DVID label blocks, used when numba is installed (``dvid_store[fast]``).

The numpy decoder in :mod:`dvid_store.codecs.labelblock` is bound by numpy's per-call
overhead and by its full-size passes, and it holds the GIL for much of its time, so
two threads decode little faster than one. This kernel walks the sub-blocks once,
writes each voxel straight into the destination (any strides) and releases the GIL,
so dask's threads decode in parallel. It takes the arrays that
``labelblock._parse`` has already checked against the header; it checks the voxel
codes itself, before writing anything.

Set ``DVID_STORE_NO_JIT=1`` to use the numpy decoder even when numba is present.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable

import numpy as np

__all__ = ["AVAILABLE", "decode_into"]

# numba takes a noticeable fraction of a second to import: look, but import it (and
# compile, or load the cached kernels) only when the first block is decoded.
AVAILABLE = not os.environ.get("DVID_STORE_NO_JIT") and importlib.util.find_spec("numba") is not None


def _first_bad_subblock(ns: np.ndarray, bits: np.ndarray, values: np.ndarray) -> int:
    """Index of the first sub-block with a code not below its label count, else -1."""
    nv = values.shape[0]
    pos: int | np.int64 = 0  # numba types it int64 throughout
    for sb in range(ns.shape[0]):
        k = np.uint32(ns[sb])
        b = np.uint32(bits[sb])
        if b and k < (np.uint32(1) << b):  # only then can a code point past the sub-block's list
            mask = (np.uint32(1) << b) - np.uint32(1)
            bitpos = np.uint32(pos * 8)
            for _ in range(512):
                byte = bitpos >> 3
                window = np.uint32(values[byte]) << 16
                if byte + 1 < nv:  # a code spans up to 3 bytes; guards bite only at the end
                    window |= np.uint32(values[byte + 1]) << 8
                    if byte + 2 < nv:
                        window |= np.uint32(values[byte + 2])
                if ((window >> (np.uint32(24) - (bitpos & 7) - b)) & mask) >= k:
                    return sb
                bitpos += b
        pos += 64 * np.int64(bits[sb])
    return -1


def _decode(
    gz: int,
    gy: int,
    gx: int,
    labels: np.ndarray,
    ns: np.ndarray,
    start: np.ndarray,
    idx: np.ndarray,
    bits: np.ndarray,
    values: np.ndarray,
    out: np.ndarray,
) -> int:
    bad = _first_bad_subblock(ns, bits, values)
    if bad >= 0:
        return bad
    nv = values.shape[0]
    lut = np.empty(65536, np.uint64)
    pos: int | np.int64 = 0  # numba types it int64 throughout
    sb = 0
    for sz in range(gz):
        for sy in range(gy):
            for sx in range(gx):
                k = np.int64(ns[sb])
                b = np.uint32(bits[sb])
                x0 = sx * 8
                if b == 0:
                    label = np.uint64(0) if k == 0 else labels[idx[start[sb]]]
                    for vz in range(8):
                        for vy in range(8):
                            row = out[sz * 8 + vz, sy * 8 + vy]
                            for vx in range(8):
                                row[x0 + vx] = label
                    sb += 1
                    continue
                s0 = start[sb]
                for c in range(k):
                    lut[c] = labels[idx[s0 + c]]
                mask = (np.uint32(1) << b) - np.uint32(1)
                bitpos = np.uint32(pos * 8)
                if b == 1 or b == 2 or b == 4 or b == 8:
                    # These widths never straddle a byte.
                    for vz in range(8):
                        for vy in range(8):
                            row = out[sz * 8 + vz, sy * 8 + vy]
                            for vx in range(8):
                                byte = np.uint32(values[bitpos >> 3])
                                row[x0 + vx] = lut[(byte >> (np.uint32(8) - (bitpos & 7) - b)) & mask]
                                bitpos += b
                else:
                    for vz in range(8):
                        for vy in range(8):
                            row = out[sz * 8 + vz, sy * 8 + vy]
                            for vx in range(8):
                                byte = bitpos >> 3
                                window = np.uint32(values[byte]) << 16
                                if byte + 1 < nv:  # guards bite only at the end of the buffer
                                    window |= np.uint32(values[byte + 1]) << 8
                                    if byte + 2 < nv:
                                        window |= np.uint32(values[byte + 2])
                                row[x0 + vx] = lut[(window >> (np.uint32(24) - (bitpos & 7) - b)) & mask]
                                bitpos += b
                pos += 64 * np.int64(b)
                sb += 1
    return -1


@functools.cache
def _compiled() -> Callable[..., int]:
    import numba

    global _first_bad_subblock  # _decode calls it by this global name
    # boundscheck stays off: labelblock._parse has checked every length and index
    # against the header, and _first_bad_subblock every code, before anything is read.
    _first_bad_subblock = numba.njit(nogil=True, cache=True, boundscheck=False)(_first_bad_subblock)
    return numba.njit(nogil=True, cache=True, boundscheck=False)(_decode)


def decode_into(
    grid: tuple[int, int, int],
    labels: np.ndarray,
    ns: np.ndarray,
    start: np.ndarray,
    idx: np.ndarray,
    bits: np.ndarray,
    values: np.ndarray,
    out: np.ndarray,
) -> int:
    """Decode a parsed multi-label block into ``out``; return -1, or the first bad sub-block.

    When a sub-block has an out-of-range code nothing at all is written.
    """
    gz, gy, gx = grid
    return int(_compiled()(gz, gy, gx, labels, ns, start, idx, bits, values, out))
