"""DVID's compressed label block codec, vectorised with numpy.

DVID stores ``labelmap`` / ``labelarray`` blocks in its own compressed format
(``datatype/common/labels/compressed.go``) and ships them, gzip-wrapped, on
``GET /specificblocks?compression=blocks`` and ``POST /blocks``. The layout
(all integers little-endian)::

    uint32 gx, gy, gz          sub-blocks per axis (block = 8*gx x 8*gy x 8*gz voxels)
    uint32 N                   entries in the block label table (N >= 1)
    uint64 labels[N]           block label table (may hold duplicates or stale entries)
    --- only if N > 1; Nsb = gx*gy*gz ---
    uint16 ns[Nsb]             labels listed by each 8x8x8 sub-block
    uint32 idx[sum(ns)]        per sub-block, ns[i] indices into labels[]
    bytes  values              per sub-block with ns >= 2: 512 codes of
                               ceil(log2(ns)) bits each, MSB first, whole bytes

Sub-blocks are numbered x fastest, then y, then z, and so are the 512 voxels
inside a sub-block. ``ns == 1`` means the whole sub-block is one label and has
no code bits; ``ns == 0`` means the sub-block is label 0. ``N == 1`` is the
24-byte "solid" form of a one-label block.

Every function here is pure (no I/O) and loops over sub-blocks only through
numpy. Both directions work on 8-voxel x-runs ("segments"): a segment is
contiguous in DVID's sub-block order *and* in the ``(z, y, x)`` output order, and
in real segmentations almost all segments hold a single label. Decoding
therefore

* groups the sub-blocks with 2+ labels by code width (a handful of groups), and
  for each group finds, straight from the packed bytes, every segment's first
  code and which segments are split (for widths 1, 2, 4 and 8 a segment's codes
  are exactly one native integer, so nothing is unpacked for uniform segments);
* looks up one label per segment, reorders the segments into output order with
  one small transpose and repeats each 8 times along x (the only full-size
  pass);
* fills in the few split segments with one 64-byte ``put`` each.

On the shared 64^3 fib19/cx samples a block decodes faster than inflating the same
block stored as gzip'd raw uint64, and a good part of that time is the one
unavoidable full-size output pass; ``benchmarks/bench_codec.py`` measures it (the
figures are on the "Performance" page of the docs).
"""

from __future__ import annotations

import functools
import struct
import zlib
from typing import NamedTuple

import numpy as np

from ..errors import DvidError
from . import _labelblock_jit as _jit

__all__ = [
    "DEFAULT_GZIP_LEVEL",
    "MAX_BLOCK_SIZE",
    "SUBBLOCK_SIZE",
    "LabelBlockError",
    "decode_gzipped_label_block",
    "decode_label_block",
    "encode_gzipped_label_block",
    "encode_label_block",
    "label_block_labels",
    "label_block_shape",
    "load_label_block_decoder",
]

#: Edge length of DVID's sub-blocks, in voxels.
SUBBLOCK_SIZE = 8

#: Largest block edge DVID accepts (``labels.MaxBlockSize``); the decoder also uses it
#: to refuse corrupt headers that would otherwise ask for gigabytes of output.
MAX_BLOCK_SIZE = 1024

#: gzip level of :func:`encode_gzipped_label_block`. The DVID encoding has already
#: removed most redundancy, so deflate has little left to find and its effort buys
#: little: on the four 64^3 samples level 6 takes several times as long as level 1
#: for a small saving in bytes. Level 1 keeps gzip a small fraction of the encoder's
#: own time. (DVID returns POSTed bytes verbatim, so the level also sets later read
#: costs: level-1 streams inflate a little slower than level 6; pass ``level=6`` for
#: data that is written once and read very often.) The figures are on the
#: "Performance" page of the docs.
DEFAULT_GZIP_LEVEL = 1

_SB_VOXELS = SUBBLOCK_SIZE**3  # 512
_HEADER_BYTES = 16

# Code width for every possible uint16 sub-block label count: ceil(log2(n)) for
# n >= 2, else 0. frexp gives the exponent e with n - 1 = m * 2**e, 0.5 <= m < 1,
# i.e. the bit length of n - 1, exactly (no float log rounding).
_counts = np.arange(1 << 16, dtype=np.int64)
_BITS_FOR_COUNT = np.where(
    _counts >= 2, np.frexp(np.maximum(_counts - 1, 1).astype(np.float64))[1], 0
).astype(np.intp)
del _counts

_ONES_U8 = np.uint64(0x0101010101010101)
_ONES_U16 = np.uint64(0x0001000100010001)


class LabelBlockError(DvidError, ValueError):
    """A DVID compressed label block is malformed, or a block cannot be encoded.

    Subclasses :class:`ValueError`, so ``except ValueError`` catches it too.
    """


# --------------------------------------------------------------------------------------
# Parsing


class _Parsed(NamedTuple):
    """The validated pieces of an encoded block (views into the input where possible)."""

    grid: tuple[int, int, int]  # (gz, gy, gx)
    labels: np.ndarray  # (N,) little-endian uint64 label table
    ns: np.ndarray | None  # (Nsb,) uint16 labels per sub-block; None for the solid form
    start: np.ndarray | None  # (Nsb,) intp offset of each sub-block's list in idx
    idx: np.ndarray | None  # (T,) uint32 indices into labels
    bits: np.ndarray | None  # (Nsb,) intp code width per sub-block
    values: np.ndarray | None  # (V,) uint8 packed codes


def _as_bytes_array(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """A 1-D uint8 view of ``data`` (no copy unless an array is non-contiguous)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"label block data must be bytes-like or a numpy array, not {type(data).__name__}"
        ) from exc


_HEADER = struct.Struct("<4I")


def _parse(data: bytes | bytearray | memoryview | np.ndarray) -> _Parsed:
    """Split an encoded block into its arrays, checking every length against the header."""
    buf = _as_bytes_array(data)
    size = buf.size
    if size < _HEADER_BYTES:
        raise LabelBlockError(
            f"label block is only {size} bytes; its header alone needs {_HEADER_BYTES}"
        )
    gx, gy, gz, n = _HEADER.unpack_from(buf.data)
    max_grid = MAX_BLOCK_SIZE // SUBBLOCK_SIZE
    if not (1 <= gx <= max_grid and 1 <= gy <= max_grid and 1 <= gz <= max_grid):
        raise LabelBlockError(
            f"label block header gives {gx}x{gy}x{gz} (x,y,z) sub-blocks; each count must be "
            f"between 1 and {max_grid} (blocks are 8..{MAX_BLOCK_SIZE} voxels per axis)"
        )
    if n == 0:
        raise LabelBlockError("label block header says N=0 labels; a block has at least one")
    pos = _HEADER_BYTES + 8 * n
    if size < pos:
        raise LabelBlockError(
            f"label block header says {n} labels ({8 * n} bytes) but only "
            f"{size - _HEADER_BYTES} bytes follow the {_HEADER_BYTES}-byte header"
        )
    labels = buf[_HEADER_BYTES:pos].view("<u8")
    if not labels.dtype.isnative:  # big-endian hosts only
        labels = labels.astype(np.uint64)
    if n == 1:
        if size != pos:
            raise LabelBlockError(
                f"solid label block (N=1) must be {pos} bytes but is {size} "
                f"({size - pos} unexpected trailing bytes)"
            )
        return _Parsed((gz, gy, gx), labels, None, None, None, None, None)

    nsb = gx * gy * gz
    if size - pos < 2 * nsb:
        raise LabelBlockError(
            f"label block header says {nsb} sub-blocks ({2 * nsb} bytes of per-sub-block label "
            f"counts) but only {size - pos} bytes follow the {n}-entry label table"
        )
    ns = buf[pos : pos + 2 * nsb].view("<u2")
    pos += 2 * nsb
    start = ns.cumsum(dtype=np.intp)
    total = int(start[-1])
    start -= ns
    if size - pos < 4 * total:
        raise LabelBlockError(
            f"sub-block label counts add up to {total} label indices ({4 * total} bytes) but "
            f"only {size - pos} bytes follow"
        )
    idx = buf[pos : pos + 4 * total].view("<u4")
    pos += 4 * total
    bits = _BITS_FOR_COUNT.take(ns)
    value_bytes = 64 * int(bits.sum())
    if size - pos != value_bytes:
        what = "truncated" if size - pos < value_bytes else "has trailing bytes"
        raise LabelBlockError(
            f"label block {what}: its sub-block code widths need {value_bytes} value bytes "
            f"but {size - pos} bytes follow the index table"
        )
    if total and int(idx.max()) >= n:
        raise LabelBlockError(
            f"sub-block index table refers to label entry {int(idx.max())} but the label "
            f"table has only {n} entries"
        )
    return _Parsed((gz, gy, gx), labels, ns, start, idx, bits, buf[pos:])


def label_block_shape(data: bytes | bytearray | memoryview | np.ndarray) -> tuple[int, int, int]:
    """The ``(nz, ny, nx)`` voxel shape of an encoded block, from its header.

    Parameters
    ----------
    data
        The uncompressed DVID encoding (at least its 16-byte header).

    Returns
    -------
    tuple of int
        ``(8*gz, 8*gy, 8*gx)``.

    Raises
    ------
    LabelBlockError
        If fewer than 16 bytes are given.
    """
    buf = _as_bytes_array(data)
    if buf.size < _HEADER_BYTES:
        raise LabelBlockError(
            f"label block is only {buf.size} bytes; its header alone needs {_HEADER_BYTES}"
        )
    gx, gy, gz, _ = _HEADER.unpack_from(buf.data)
    return (gz * SUBBLOCK_SIZE, gy * SUBBLOCK_SIZE, gx * SUBBLOCK_SIZE)


# --------------------------------------------------------------------------------------
# Code unpacking / packing


def _window_tables(bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Byte offset and right shift that extract each of the 512 codes of width ``bits``."""
    start = np.arange(_SB_VOXELS, dtype=np.int64) * bits
    window, dtype = (16, np.uint16) if bits <= 8 else (24, np.uint32)
    return start >> 3, (window - (start & 7) - bits).astype(dtype)


_WINDOWS = {b: _window_tables(b) for b in range(1, 17)}


def _byte_to_codes(bits: int) -> np.ndarray:
    """Table byte -> its 8/bits codes (MSB first), each row viewed as one integer."""
    per_byte = 8 // bits
    shifts = np.arange(per_byte - 1, -1, -1) * bits
    table = ((np.arange(256)[:, None] >> shifts) & ((1 << bits) - 1)).astype(np.uint8)
    return np.ascontiguousarray(table).view(f"u{per_byte}").reshape(256)


_BYTE_TO_CODES = {b: _byte_to_codes(b) for b in (2, 4)}


def _unpack_codes(rows: np.ndarray, bits: int) -> np.ndarray:
    """Unpack ``(m, 64*bits)`` MSB-first packed bytes into ``(m, 512)`` codes.

    Codes come back as uint8 for widths up to 8 and uint16 above (DVID itself never
    exceeds 9 bits, but a hand-made count up to 65535 is still well defined). The
    decoder needs this only for widths other than 1, 2, 4 and 8, whose segments it
    reads straight from the packed bytes.

    Every code lies inside a 2-byte (<= 8 bits) or 3-byte window starting at its first
    byte: build the big-endian window at every byte offset once (64*bits per row), pick
    the 512 windows and shift each code down.
    """
    offsets, shifts = _WINDOWS[bits]
    mask = (1 << bits) - 1
    if bits <= 8:
        win = rows.astype(np.uint16) << 8
        win[:, :-1] |= rows[:, 1:]
        picked = np.take(win, offsets, axis=1)
        picked >>= shifts
        picked &= np.uint16(mask)
        return picked.astype(np.uint8)
    wide = rows.astype(np.uint32)
    win = wide << 16
    win[:, :-1] |= wide[:, 1:] << 8
    win[:, :-2] |= wide[:, 2:]
    picked = np.take(win, offsets, axis=1)
    picked >>= shifts
    picked &= np.uint32(mask)
    return picked.astype(np.uint16)


def _pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``(m, 512)`` codes into ``(m, 64*bits)`` bytes, MSB first."""
    m = codes.shape[0]
    if bits <= 8:
        codes = codes.astype(np.uint8, copy=False)
        if bits == 8:
            return codes
        if bits == 1:
            return np.packbits(codes.reshape(-1)).reshape(m, 64)
        if bits in (2, 4):
            # 8/bits codes per byte: shift each into its field and OR them together.
            per_byte = 8 // bits
            fields = codes.reshape(-1, per_byte)
            packed = fields[:, 0] << (8 - bits)
            for j in range(1, per_byte):
                packed |= fields[:, j] << (8 - bits * (j + 1))
            return packed.reshape(m, 64 * bits)
        # One flat unpackbits/packbits pair is far faster than per-row bit loops.
        planes = np.unpackbits(codes.reshape(-1)).reshape(m, _SB_VOXELS, 8)[:, :, 8 - bits :]
    else:
        be = codes.astype(">u2").view(np.uint8)
        planes = np.unpackbits(be.reshape(-1)).reshape(m, _SB_VOXELS, 16)[:, :, 16 - bits :]
    return np.packbits(planes.reshape(-1)).reshape(m, 64 * bits)


# --------------------------------------------------------------------------------------
# Decoding

_SEGMENT = np.dtype((np.void, 64))  # one 8-voxel x-segment of uint64 labels
_CHUNK_RANGES = {b: np.arange(b, dtype=np.intp) for b in range(1, 17)}


def _check_out(out: np.ndarray, shape: tuple[int, int, int]) -> None:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, not {type(out).__name__}")
    if out.dtype != np.uint64 or not out.dtype.isnative:
        raise TypeError(f"out must have dtype uint64 (native byte order), not {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape} but the encoded block is {shape} (z, y, x)")
    if not out.flags.writeable:
        raise ValueError("out is read-only")


def _segment_view(arr: np.ndarray) -> np.ndarray:
    """``(nz, ny, nx)`` -> ``(nz, ny, nx//8, 8)`` view, also for strided arrays.

    Splitting an axis never needs a copy, but ``reshape`` would silently return one for
    some strided inputs; building the view from strides guarantees writes reach ``arr``.
    """
    nz, ny, nx = arr.shape
    s0, s1, s2 = arr.strides
    return np.lib.stride_tricks.as_strided(
        arr, shape=(nz, ny, nx // 8, 8), strides=(s0, s1, 8 * s2, s2)
    )


@functools.lru_cache(maxsize=16)
def _segment_order(gz: int, gy: int, gx: int) -> np.ndarray:
    """Output segment index ``(z*ny + y)*gx + sx`` of each sub-block-order segment."""
    sz, sy, sx = np.meshgrid(np.arange(gz), np.arange(gy), np.arange(gx), indexing="ij")
    vz, vy = np.divmod(np.arange(64), 8)
    z = sz.reshape(-1, 1) * 8 + vz
    y = sy.reshape(-1, 1) * 8 + vy
    order = ((z * (gy * 8) + y) * gx + sx.reshape(-1, 1)).reshape(-1).astype(np.intp)
    order.flags.writeable = False
    return order


# For widths 1, 2, 4 and 8 an x-segment's 8 codes are exactly `bits` whole bytes, i.e.
# one native integer, and 8 equal codes c pack to c times a constant (c repeated in
# every bit field): segments are tested without unpacking any codes.
_SEGMENT_INTS = {
    1: (np.uint8, np.uint8(0xFF)),
    2: (np.uint16, np.uint16(0x5555)),
    4: (np.uint32, np.uint32(0x11111111)),
    8: (np.uint64, _ONES_U8),
}


class _Segments(NamedTuple):
    """Segment-level view of the sub-blocks with 2+ labels, in some sub-block order."""

    sel: np.ndarray  # (m,) sub-block numbers
    first: np.ndarray  # (m, 64) code of the first voxel of each segment
    split: np.ndarray  # (k,) flat index (row * 64 + segment) of non-uniform segments
    codes: np.ndarray  # (k, 8) codes of the non-uniform segments


def _check_codes(
    sel: np.ndarray, counts: np.ndarray, rows: np.ndarray, bits: int, full: np.ndarray | None
) -> None:
    """Raise if a sub-block has a voxel code not below its label count.

    Such codes would read another sub-block's labels (or run past the table). Only
    counts below ``2**bits`` leave room for them, so only those rows are examined, with
    whole-array byte tests: reductions along rows are left to the error path.
    """
    short = (counts < (1 << bits)).nonzero()[0]
    if not short.size:
        return
    if short.size < sel.size:
        rows = rows.take(short, axis=0)
        full = None if full is None else full.take(short, axis=0)
    limit = counts.take(short)[:, None]
    bad: np.ndarray
    if full is not None:
        bad = full >= limit
    elif bits == 2:
        # 3 is the only count below 4 with 2-bit codes: code 3 is a pair of set bits.
        bad = ((rows & (rows >> 1)) & 0x55) != 0
    elif bits == 4:
        bad = np.maximum(rows >> 4, rows & 0x0F) >= limit
    else:  # 8 bits: the bytes are the codes
        bad = rows >= limit
    if bad.any():
        i = int(short[np.nonzero(bad.any(axis=1))[0][0]])
        raise LabelBlockError(
            f"sub-block {int(sel[i])} lists {int(counts[i])} labels but has voxel codes "
            f"beyond them"
        )


def _segments_of_width(
    sel: np.ndarray, rows: np.ndarray, bits: int, counts: np.ndarray
) -> _Segments:
    """Segment view of sub-blocks ``sel`` whose packed values are ``rows``.

    ``counts`` are the sub-blocks' label counts, against which codes are checked.
    """
    m = sel.size
    if bits == 1:
        # One byte per segment: uniform iff 0x00 or 0xFF (the +1 wraps both below 2).
        # Two labels use both 1-bit codes, so no code can be out of range.
        seg = rows.reshape(-1)
        first = rows >> 7
        split = ((seg + np.uint8(1)) > 1).nonzero()[0]
        codes = np.unpackbits(seg.take(split)).reshape(-1, 8)
        return _Segments(sel, first, split, codes)
    if bits in _SEGMENT_INTS:
        _check_codes(sel, counts, rows, bits, None)
        int_type, repeat = _SEGMENT_INTS[bits]
        seg = rows.view(int_type).reshape(-1)
        # MSB-first packing: a segment's first code is in the top bits of its first byte.
        first = rows[:, ::bits] >> (8 - bits)
        split = (seg != first.astype(int_type).reshape(-1) * repeat).nonzero()[0]
        raw = rows.reshape(m * 64, bits).take(split, axis=0)
        if bits == 8:
            codes = raw
        else:
            codes = _BYTE_TO_CODES[bits].take(raw.reshape(-1)).view(np.uint8).reshape(-1, 8)
        return _Segments(sel, first, split, codes)
    # Other widths: unpack every code, then view each segment's 8 codes as one 64-bit
    # word (two for uint16 codes); a segment is uniform iff it repeats its first code.
    full = _unpack_codes(rows, bits)
    _check_codes(sel, counts, rows, bits, full)
    words = full.view(np.uint64)
    if full.dtype == np.uint8:
        lead = words & np.uint64(0xFF)
        split = (words != lead * _ONES_U8).reshape(-1).nonzero()[0]
    else:
        pairs = words.reshape(m, 64, 2)
        lo, hi = pairs[..., 0], pairs[..., 1]
        lead = lo & np.uint64(0xFFFF)
        split = ((lo != hi) | (lo != lead * _ONES_U16)).reshape(-1).nonzero()[0]
    codes = words.reshape(m * 64, -1).take(split, axis=0).view(full.dtype).reshape(-1, 8)
    return _Segments(sel, full[:, ::8], split, codes)


def _mixed_segments(bits: np.ndarray, ns: np.ndarray, values: np.ndarray) -> _Segments:
    """Segment view of every sub-block with 2+ labels, grouped by code width."""
    widths = np.bincount(bits).nonzero()[0].tolist()
    if widths[0] == 0:
        del widths[0]
    # Each sub-block's values are whole 64-byte chunks (512 codes * bits / 8), so a
    # group's bytes are gathered as 64-byte rows: far cheaper than byte indices.
    chunk_off = bits.cumsum()
    chunk_off -= bits
    chunks = values.reshape(-1, 64)
    parts = []
    rows_before = 0
    for b in widths:
        sel = (bits == b).nonzero()[0]
        first_chunk = chunk_off.take(sel)
        if b > 1:
            first_chunk = (first_chunk[:, None] + _CHUNK_RANGES[b]).reshape(-1)
        rows = chunks.take(first_chunk, axis=0).reshape(sel.size, 64 * b)
        part = _segments_of_width(sel, rows, b, ns.take(sel))
        if rows_before:
            part = part._replace(split=part.split + rows_before * 64)
        rows_before += sel.size
        parts.append(part)
    if len(parts) == 1:
        return parts[0]
    code_dtype = np.uint8 if widths[-1] <= 8 else np.uint16
    return _Segments(
        np.concatenate([p.sel for p in parts]),
        np.concatenate([p.first for p in parts], dtype=code_dtype),
        np.concatenate([p.split for p in parts]),
        np.concatenate([p.codes for p in parts], dtype=code_dtype),
    )


def decode_label_block(
    data: bytes | bytearray | memoryview | np.ndarray,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode one DVID compressed label block into a uint64 ``(z, y, x)`` array.

    Parameters
    ----------
    data
        The *uncompressed* DVID encoding (what is inside the gzip stream of the wire
        form): bytes, bytearray, memoryview or a numpy array whose memory holds it.
    out
        Optional preallocated ``uint64`` array of the block's shape to decode into; it
        may be a strided view of a larger volume (no intermediate block is allocated).

    Returns
    -------
    numpy.ndarray
        ``uint64`` array of shape ``(8*gz, 8*gy, 8*gx)`` (``out`` itself if given).

    Raises
    ------
    LabelBlockError
        (a :class:`ValueError`) if the data is truncated, has trailing bytes, or is
        internally inconsistent (an index or a code pointing past its table).
    TypeError
        If ``out`` is not a native ``uint64`` array (wrong shape: ``ValueError``).

    Notes
    -----
    Duplicate and unused entries in the label table are harmless: voxels are resolved
    through each sub-block's index list, whatever else the table holds.
    """
    grid, labels, ns, start, idx, bits, values = _parse(data)
    gz, gy, gx = grid
    shape = (gz * SUBBLOCK_SIZE, gy * SUBBLOCK_SIZE, gx * SUBBLOCK_SIZE)
    if out is not None:
        _check_out(out, shape)
    if ns is None:
        label = labels[0]
        if out is None:
            return np.full(shape, label, dtype=np.uint64)
        out[...] = label
        return out
    assert start is not None and idx is not None and bits is not None and values is not None
    if _jit.AVAILABLE:
        result = out if out is not None else np.empty(shape, np.uint64)
        bad = _jit.decode_into(grid, labels, ns, start, idx, bits, values, result)
        if bad >= 0:
            raise LabelBlockError(
                f"sub-block {bad} lists {int(ns[bad])} labels but has voxel codes beyond them"
            )
        return result
    nsb = gz * gy * gx
    total = idx.size

    # lut[start[s] + code] is the label of code `code` in sub-block s. A trailing 0
    # serves the (non-DVID) ns == 0 "empty" sub-blocks, whose start is redirected to it.
    lut = np.empty(total + 1, dtype=np.uint64)
    labels.take(idx, out=lut[:total])
    lut[total] = 0
    if not ns.all():
        start[ns == 0] = total

    # Label of the first voxel of every 8-voxel x-segment, in sub-block order
    # [sub-block, z*8 + y]; final for single-label sub-blocks.
    seg_first = lut.take(start).repeat(64).reshape(nsb, 64)

    patch = None
    if bits.any():
        mixed, first, split, seg_codes = _mixed_segments(bits, ns, values)
        mstart = start.take(mixed)
        first_idx = first.astype(np.intp)
        first_idx += mstart[:, None]
        seg_first[mixed] = lut.take(first_idx)
        k = split.size
        if k:
            # Segments holding several labels: look up all 8 voxels.
            row = split >> 6
            seg_idx = mstart.take(row).repeat(8).reshape(k, 8)
            seg_idx += seg_codes
            order = _segment_order(gz, gy, gx)
            patch = (order.take((mixed.take(row) << 6) | (split & 63)), lut.take(seg_idx))

    # Segments from [sz, sy, sx, vz, vy] to output order [z, y, sx] = [sz, vz, sy, vy,
    # sx], then each repeated 8 times along x.
    seg_out = seg_first.reshape(gz, gy, gx, 8, 8).transpose(0, 3, 1, 4, 2)
    if out is None:
        result = np.ascontiguousarray(seg_out).reshape(-1).repeat(8).reshape(shape)
    else:
        result = out
        np.copyto(_segment_view(result), seg_out.reshape(shape[0], shape[1], gx)[..., None])
    if patch is not None:
        out_seg, vals = patch
        if result.flags.c_contiguous:
            # One 64-byte element per segment: put() moves whole segments at once.
            np.put(result.reshape(-1).view(_SEGMENT), out_seg, vals.reshape(-1).view(_SEGMENT))
        else:
            y, sx = np.divmod(out_seg, gx)
            z, y = np.divmod(y, shape[1])
            _segment_view(result)[z, y, sx] = vals
    return result


def load_label_block_decoder() -> str:
    """Load the label-block decoder now rather than on the first block; return its name.

    With numba installed (``dvid_store[fast]``) the first decode of a process imports
    numba and loads the compiled kernel, which takes a noticeable part of a second;
    call this before timing reads.

    Returns
    -------
    str
        ``"numba"`` (the compiled kernel) or ``"numpy"`` (the vectorised decoder).
    """
    if _jit.AVAILABLE:
        two_labels = np.zeros((SUBBLOCK_SIZE,) * 3, np.uint64)
        two_labels[0, 0, 0] = 1
        decode_label_block(encode_label_block(two_labels))
        return "numba"
    return "numpy"


def label_block_labels(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """The distinct labels of an encoded block, from its tables only (no voxel decoding).

    Parameters
    ----------
    data
        The uncompressed DVID encoding.

    Returns
    -------
    numpy.ndarray
        Sorted unique ``uint64`` labels. This is the header's label table restricted to
        the entries that some sub-block's index list refers to (stale entries left by
        merges are dropped, duplicates collapse), plus 0 if a sub-block is marked empty
        (``ns == 0``). A label that a sub-block lists but none of its voxel codes uses
        would still be reported; DVID's encoder never writes such lists.

    Raises
    ------
    LabelBlockError
        If the block is malformed (same header checks as :func:`decode_label_block`).
    """
    _, labels, ns, _, idx, _, _ = _parse(data)
    if ns is None:
        return labels.astype(np.uint64)
    assert idx is not None
    used = np.zeros(labels.size, dtype=bool)
    used[idx] = True
    found = labels[used].astype(np.uint64)
    if not ns.all():
        found = np.append(found, np.uint64(0))
    return np.unique(found)


# --------------------------------------------------------------------------------------
# Encoding


def _as_label_array(block: np.ndarray) -> np.ndarray:
    """Validate shape/dtype and return a C-contiguous native uint64 array."""
    arr = np.asarray(block)
    if arr.ndim != 3:
        raise LabelBlockError(
            f"a label block must be a 3-D (z, y, x) array; got shape {arr.shape}"
        )
    if any(d <= 0 or d % SUBBLOCK_SIZE for d in arr.shape):
        raise LabelBlockError(
            f"cannot encode a label block of shape {arr.shape} (z, y, x): every dimension "
            f"must be a positive multiple of {SUBBLOCK_SIZE} (DVID's sub-blocks are 8x8x8)"
        )
    if any(d > MAX_BLOCK_SIZE for d in arr.shape):
        raise LabelBlockError(
            f"cannot encode a label block of shape {arr.shape} (z, y, x): DVID blocks are at "
            f"most {MAX_BLOCK_SIZE} voxels per axis"
        )
    kind = arr.dtype.kind
    if kind == "i":
        if arr.size and int(arr.min()) < 0:
            raise LabelBlockError("label blocks hold unsigned labels; got negative values")
    elif kind not in "ub":
        raise TypeError(f"label blocks hold unsigned integer labels, not {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.uint64)


def _solid(grid: tuple[int, int, int], label: np.uint64) -> bytes:
    gz, gy, gx = grid
    return _HEADER.pack(gx, gy, gz, 1) + struct.pack("<Q", int(label))


def _exclusive_cumsum(a: np.ndarray) -> np.ndarray:
    out = np.zeros(a.size, dtype=np.int64)
    np.cumsum(a[:-1], out=out[1:])
    return out


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort + neighbour test: cheaper than ``np.unique`` here)."""
    ordered = np.sort(values)
    keep = np.empty(ordered.size, dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


# Largest (mixed sub-blocks x labels) table the encoder marks label pairs in; above it
# (blocks with very many labels) it sorts the pairs instead.
_PRESENCE_LIMIT = 1 << 21

# Bytes 0..6 of a word of 8 "voxel differs from the next one" flags: the comparisons
# inside one 8-voxel segment (byte 7 compares with the next segment). Built from bytes
# so that it is right on either byte order.
_INNER_FLAGS = np.array([0xFF] * 7 + [0], dtype=np.uint8).view(np.uint64)[0]


def encode_label_block(block: np.ndarray) -> bytes:
    """Encode a uint64 ``(z, y, x)`` label block in DVID's compressed label format.

    Parameters
    ----------
    block
        3-D array of unsigned (or non-negative signed) integer labels whose dimensions
        are positive multiples of 8 and at most 1024.

    Returns
    -------
    bytes
        The uncompressed DVID encoding: the 24-byte solid form if the block holds one
        label, else the full form with the block label table sorted ascending and each
        sub-block's index list sorted by label.

    Raises
    ------
    LabelBlockError
        (a :class:`ValueError`) if the shape is not 3-D with dimensions that are positive
        multiples of 8 (at most 1024), or if signed input holds negative values.
    TypeError
        If the array does not hold integers.

    Notes
    -----
    Like the decoder, the encoder works on 8-voxel x-segments: most are uniform, so
    labels and per-sub-block label lists are found from one value per segment plus the
    voxels of the few segments that hold several labels.
    """
    a = _as_label_array(block)
    nz, ny, nx = a.shape
    gz, gy, gx = nz // 8, ny // 8, nx // 8
    nsb = gz * gy * gx
    flat = a.reshape(-1)

    # differs[p]: voxel p+1 has another label than voxel p. Viewed 8 flags per word, a
    # segment is split (several labels) iff one of its 7 inner flags is set.
    differs = np.zeros(flat.size, dtype=bool)
    np.not_equal(flat[1:], flat[:-1], out=differs[:-1])
    if not differs.any():
        return _solid((gz, gy, gx), flat[0])
    seg_split = (differs.view(np.uint64) & _INNER_FLAGS) != 0
    seg_first = flat[::8].copy()
    segments = flat.reshape(-1, 8)

    # Every label starts a run of segment-first values or sits in a split segment.
    split_out = seg_split.nonzero()[0]
    split_vals = segments.take(split_out, axis=0)
    first_changes = (seg_first[1:] != seg_first[:-1]).nonzero()[0] + 1
    labels = _sorted_unique(
        np.concatenate((seg_first[:1], seg_first.take(first_changes), split_vals.reshape(-1)))
    )
    n = labels.size

    # Segment data in sub-block order [sub-block, z*8 + y].
    def to_subblock_order(seg: np.ndarray) -> np.ndarray:
        return seg.reshape(gz, 8, gy, 8, gx).transpose(0, 2, 4, 1, 3).reshape(nsb, 64)

    first_sb = to_subblock_order(seg_first)
    split_sb = to_subblock_order(seg_split)
    is_mixed = split_sb.any(axis=1)
    is_mixed |= (first_sb != first_sb[:, :1]).any(axis=1)
    mixed = is_mixed.nonzero()[0]
    single = (~is_mixed).nonzero()[0]

    ns = np.ones(nsb, dtype=np.int64)
    codes = None
    if mixed.size:
        m = mixed.size
        # Block-level label number of each segment's first voxel and of every voxel of
        # the split segments, as keys row * n + label; a sub-block's codes number its
        # distinct keys in label order.
        first_label = np.searchsorted(labels, first_sb.take(mixed, axis=0))  # (m, 64)
        split_flat = split_sb.take(mixed, axis=0).reshape(-1).nonzero()[0]  # row*64 + j
        order = _segment_order(gz, gy, gx)
        split_seg = (mixed.take(split_flat >> 6) << 6) | (split_flat & 63)
        split_label = np.searchsorted(labels, segments.take(order.take(split_seg), axis=0))
        first_keys = first_label + (np.arange(m) * n)[:, None]
        split_keys = split_label + ((split_flat >> 6) * n)[:, None]
        if m * n <= _PRESENCE_LIMIT:
            # Few labels: mark (sub-block, label) pairs in an m x n table; a pair's
            # code is the number of marked labels before it in its row.
            present = np.zeros(m * n, dtype=bool)
            present[first_keys.reshape(-1)] = True
            present[split_keys.reshape(-1)] = True
            rank = present.reshape(m, n).cumsum(axis=1, dtype=np.int16)  # <= 512
            rank -= 1
            rank = rank.reshape(-1)
            pairs = present.nonzero()[0]
            first_code = rank.take(first_keys)
            split_code = rank.take(split_keys)
        else:
            pairs, inverse = np.unique(
                np.concatenate((first_keys.reshape(-1), split_keys.reshape(-1))),
                return_inverse=True,
            )
            first_code = inverse[: first_keys.size].reshape(m, 64)
            split_code = inverse[first_keys.size :].reshape(-1, 8)
        pair_row, pair_label = np.divmod(pairs, n)
        ns_mixed = np.bincount(pair_row, minlength=m)
        first_pair = _exclusive_cumsum(ns_mixed)
        code_dtype = np.uint8 if int(ns_mixed.max()) <= 256 else np.uint16
        if m * n > _PRESENCE_LIMIT:
            first_code -= first_pair[:, None]
            split_code -= first_pair.take(split_flat >> 6)[:, None]
        codes = first_code.astype(code_dtype).repeat(8, axis=1).reshape(m, _SB_VOXELS)
        codes.reshape(m * 64, 8)[split_flat] = split_code
        ns[mixed] = ns_mixed

    start = _exclusive_cumsum(ns)
    total = int(ns.sum())
    idx = np.empty(total, dtype="<u4")
    idx[start.take(single)] = np.searchsorted(labels, first_sb[single, 0])
    bits = _BITS_FOR_COUNT.take(ns)
    voff = _exclusive_cumsum(64 * bits)
    values = np.empty(64 * int(bits.sum()), dtype=np.uint8)
    if codes is not None:
        within = np.arange(pairs.size) - first_pair.take(pair_row)
        idx[start.take(mixed).take(pair_row) + within] = pair_label
        mixed_bits = bits.take(mixed)
        for b in np.bincount(mixed_bits).nonzero()[0].tolist():
            rows = (mixed_bits == b).nonzero()[0]
            packed = _pack_codes(codes.take(rows, axis=0), b)
            values.reshape(-1, 64)[
                ((voff.take(mixed.take(rows)) >> 6)[:, None] + _CHUNK_RANGES[b]).reshape(-1)
            ] = packed.reshape(-1, 64)

    return b"".join(
        (
            _HEADER.pack(gx, gy, gz, n),
            labels.astype("<u8").tobytes(),
            ns.astype("<u2").tobytes(),
            idx.tobytes(),
            values.tobytes(),
        )
    )


# --------------------------------------------------------------------------------------
# Wire form (gzip)


def _gunzip(data: bytes | bytearray | memoryview | np.ndarray) -> bytes:
    """Inflate a gzip stream, refusing truncated streams and trailing garbage.

    ``zlib.decompress(data, 31)`` is the fastest inflate but silently ignores anything
    after the first gzip member; a decompress object costs the same and lets us check.
    Concatenated members are legal gzip (Go's reader, hence DVID, accepts them) and are
    joined.
    """
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8).data
    parts: list[bytes] = []
    rest: bytes | bytearray | memoryview = data
    while True:
        inflater = zlib.decompressobj(31)
        try:
            parts.append(inflater.decompress(rest))
        except zlib.error as exc:
            raise LabelBlockError(f"wire-form label block is not valid gzip: {exc}") from None
        if not inflater.eof:
            raise LabelBlockError("wire-form label block: gzip stream is truncated")
        rest = inflater.unused_data
        if not rest:
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


def decode_gzipped_label_block(
    data: bytes | bytearray | memoryview | np.ndarray,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode the wire form (gzip of a DVID compressed label block).

    This is the payload of ``GET /specificblocks?compression=blocks`` records and of
    ``POST /blocks``.

    Parameters
    ----------
    data
        The gzip stream.
    out
        Optional preallocated ``uint64`` destination, as in :func:`decode_label_block`.

    Returns
    -------
    numpy.ndarray
        The ``uint64`` ``(z, y, x)`` block.

    Raises
    ------
    LabelBlockError
        If the gzip stream is invalid or truncated, or the block inside is malformed.
    """
    return decode_label_block(_gunzip(data), out=out)


def encode_gzipped_label_block(block: np.ndarray, level: int = DEFAULT_GZIP_LEVEL) -> bytes:
    """Encode a block in the wire form DVID's ``POST /blocks`` expects: gzip(encoding).

    Parameters
    ----------
    block
        The ``(z, y, x)`` label block, as for :func:`encode_label_block`.
    level
        gzip level 0-9. The default 1 (see :data:`DEFAULT_GZIP_LEVEL`) is chosen because
        the label encoding is already compact: higher levels shrink it a little at
        several times the time.

    Returns
    -------
    bytes
        A gzip stream (header timestamp 0, so the output is deterministic).
    """
    if not 0 <= level <= 9:
        raise ValueError(f"gzip level must be 0..9, got {level}")
    deflater = zlib.compressobj(level, zlib.DEFLATED, 31)
    return deflater.compress(encode_label_block(block)) + deflater.flush()
