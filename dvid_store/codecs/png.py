"""A small PNG decoder and encoder built on zlib and numpy (no image library needed).

Decoding supports every non-interlaced PNG: grayscale (1, 2, 4, 8, 16 bits),
gray+alpha, RGB, RGBA (8 and 16 bits) and palette images (1–8 bits, with
``tRNS`` transparency), and all five row filters. Row filters are undone with
numpy: rows that use only None/Sub/Up are undone row by row; when a row uses
Average or Paeth (which depend on the already decoded left neighbour) the image
is undone along anti-diagonals, so the Python loop runs ``height + width`` times,
never once per pixel. Interlaced (Adam7) images raise :class:`UnsupportedError`.

The encoder writes 8- or 16-bit grayscale, gray+alpha, RGB and RGBA images,
with one filter type for all rows (default 0, None) or one per row.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np

from ..errors import DvidError, DvidInputError, UnsupportedError

__all__ = ["PNG_SIGNATURE", "PngError", "decode_png", "encode_png", "is_png"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# color type -> samples per pixel
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ALLOWED_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


class PngError(DvidError, ValueError):
    """The bytes are not a valid PNG image."""


def is_png(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` starts with the PNG signature."""
    return bytes(data[:8]) == PNG_SIGNATURE


# --------------------------------------------------------------------- decode
def decode_png(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode a PNG image into a numpy array.

    Parameters
    ----------
    data : bytes-like
        The PNG file.

    Returns
    -------
    numpy.ndarray
        (height, width) for grayscale, (height, width, 2) gray+alpha,
        (height, width, 3) RGB, (height, width, 4) RGBA. dtype uint8, or uint16 for
        16-bit images (native byte order). Sub-byte grayscale is expanded to
        uint8 sample values 0..2**depth-1 (not rescaled). Palette images become RGB,
        or RGBA when the PNG has a ``tRNS`` chunk.

    Raises
    ------
    PngError
        Not a PNG, or a corrupt one (bad CRC, truncated data).
    UnsupportedError
        An interlaced (Adam7) PNG.
    """
    buf = bytes(data)
    if not is_png(buf):
        raise PngError("not a PNG image (the 8-byte PNG signature is missing)")
    header: tuple[int, ...] | None = None
    palette: np.ndarray | None = None
    transparency: bytes | None = None
    idat: list[bytes] = []
    pos = 8
    while pos < len(buf):
        if pos + 8 > len(buf):
            raise PngError("truncated PNG chunk header")
        length, kind = struct.unpack(">I4s", buf[pos : pos + 8])
        body = buf[pos + 8 : pos + 8 + length]
        crc = buf[pos + 8 + length : pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise PngError(f"truncated PNG chunk {kind!r}")
        if zlib.crc32(kind + body) != struct.unpack(">I", crc)[0]:
            raise PngError(f"PNG chunk {kind!r} fails its CRC check (corrupt data)")
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
        elif kind == b"tRNS":
            transparency = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise PngError("PNG has no IHDR chunk")
    width, height, depth, color, _compression, _filter, interlace = header
    if color not in _CHANNELS or depth not in _ALLOWED_DEPTHS[color]:
        raise PngError(f"invalid PNG color type {color} with bit depth {depth}")
    if interlace:
        raise UnsupportedError("interlaced (Adam7) PNG images are not supported by dvid_store's PNG decoder")
    channels = _CHANNELS[color]
    bits_per_pixel = depth * channels
    row_bytes = (width * bits_per_pixel + 7) // 8
    bpp = max(1, bits_per_pixel // 8)  # filter stride in bytes
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise PngError(f"PNG image data does not inflate: {exc}") from None
    if len(raw) < height * (row_bytes + 1):
        raise PngError(f"PNG image data is {len(raw)} bytes, expected {height * (row_bytes + 1)}")
    rows = np.frombuffer(raw, dtype=np.uint8, count=height * (row_bytes + 1)).reshape(height, row_bytes + 1)
    filters = rows[:, 0]
    if filters.size and filters.max() > 4:
        raise PngError(f"invalid PNG row filter type {int(filters.max())}")
    pixels = _unfilter(rows[:, 1:], filters, bpp)

    if depth == 16:
        samples = pixels.view(">u2").astype(np.uint16).reshape(height, width, channels)
    elif depth == 8:
        samples = pixels.reshape(height, width, channels)
    else:
        unpacked = _unpack_bits(pixels, depth)
        samples = unpacked[:, :width].reshape(height, width, 1)
    if color == 3:
        if palette is None:
            raise PngError("palette PNG without a PLTE chunk")
        index = samples[..., 0]
        if index.size and int(index.max()) >= len(palette):
            raise PngError("palette PNG uses an index beyond its palette")
        if transparency is not None:
            alpha = np.full(len(palette), 255, dtype=np.uint8)
            alpha[: len(transparency)] = np.frombuffer(transparency, dtype=np.uint8)[: len(palette)]
            return np.concatenate([palette, alpha[:, None]], axis=1)[index]
        return palette[index]
    return samples[..., 0] if channels == 1 else samples


def _unpack_bits(pixels: np.ndarray, depth: int) -> np.ndarray:
    """Split each byte into 8/depth samples, most significant first."""
    per_byte = 8 // depth
    shifts = np.arange(per_byte - 1, -1, -1, dtype=np.uint8) * depth
    mask = np.uint8((1 << depth) - 1)
    return ((pixels[:, :, None] >> shifts) & mask).reshape(pixels.shape[0], -1)


def _unfilter(data: np.ndarray, filters: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG row filters on (height, row_bytes) bytes."""
    height, row_bytes = data.shape
    if height == 0 or row_bytes == 0:
        return data.copy()
    if not np.isin(filters, (3, 4)).any():
        return _unfilter_rows(data, filters, bpp)
    return _unfilter_diagonals(data, filters, bpp)


def _unfilter_rows(data: np.ndarray, filters: np.ndarray, bpp: int) -> np.ndarray:
    """None/Sub/Up only: each row is a vector operation."""
    out = np.empty_like(data)
    prev = np.zeros(data.shape[1], dtype=np.uint8)
    for r, kind in enumerate(filters.tolist()):
        row = data[r]
        if kind == 0:
            cur = row.copy()
        elif kind == 2:
            cur = row + prev  # uint8 arithmetic wraps modulo 256, as PNG requires
        else:  # Sub: running sum of each byte lane (row_bytes is a multiple of bpp)
            cur = np.cumsum(row.reshape(-1, bpp), axis=0, dtype=np.uint8).ravel()
        out[r] = cur
        prev = cur
    return out


def _unfilter_diagonals(data: np.ndarray, filters: np.ndarray, bpp: int) -> np.ndarray:
    """Any filters: pixel (r, x) needs (r, x-1), (r-1, x), (r-1, x-1), all on earlier anti-diagonals."""
    height, row_bytes = data.shape
    width = -(-row_bytes // bpp)
    padded_in = np.zeros((height, width * bpp), dtype=np.int16)
    padded_in[:, :row_bytes] = data
    raw = padded_in.reshape(height, width, bpp)
    # One row and one column of zeros above and left: the "outside" neighbours are 0.
    out = np.zeros((height + 1, width + 1, bpp), dtype=np.int16)
    kinds = filters.astype(np.int8)
    for d in range(height + width - 1):
        r = np.arange(max(0, d - width + 1), min(d, height - 1) + 1)
        x = d - r
        a = out[r + 1, x]  # left
        b = out[r, x + 1]  # up
        c = out[r, x]  # up-left
        kind = kinds[r][:, None]
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = np.select(
            [kind == 1, kind == 2, kind == 3, kind == 4],
            [a, b, (a + b) >> 1, paeth],
            0,
        )
        out[r + 1, x + 1] = (raw[r, x] + pred) & 0xFF
    return out[1:, 1:].reshape(height, width * bpp)[:, :row_bytes].astype(np.uint8)


# --------------------------------------------------------------------- encode
def encode_png(image: np.ndarray, *, filters: int | Sequence[int] | np.ndarray = 0, level: int = 6) -> bytes:
    """Encode an image as PNG.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 or uint16 array of shape (height, width) (grayscale),
        (height, width, 2) (gray+alpha), (height, width, 3) (RGB) or
        (height, width, 4) (RGBA). bool arrays are written as 0/255 grayscale.
    filters : int or sequence of int
        PNG row filter (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth) for all rows, or
        one per row.
    level : int
        zlib compression level, 0–9.

    Returns
    -------
    bytes
        The PNG file.

    Raises
    ------
    DvidInputError
        An unsupported shape or dtype, or bad filter types.
    """
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * np.uint8(255)
    if arr.dtype not in (np.uint8, np.uint16):
        raise DvidInputError(f"PNG images must be uint8 or uint16, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DvidInputError(
            "PNG images are (height, width) or (height, width, 2|3|4) with height, width >= 1; "
            f"got shape {np.asarray(image).shape}"
        )
    height, width, channels = arr.shape
    color = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    depth = 16 if arr.dtype == np.uint16 else 8
    row_data = np.ascontiguousarray(arr.astype(">u2") if depth == 16 else arr).view(np.uint8).reshape(height, -1)
    bpp = channels * depth // 8
    kinds = np.broadcast_to(np.asarray(filters, dtype=np.int64), (height,))
    if kinds.min() < 0 or kinds.max() > 4:
        raise DvidInputError(f"PNG filter types are 0..4, got {sorted(set(kinds.tolist()))}")
    filtered = _filter(row_data, kinds, bpp)
    stream = np.concatenate([kinds.astype(np.uint8)[:, None], filtered], axis=1)
    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"".join(
        [
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(stream.tobytes(), level)),
            _chunk(b"IEND", b""),
        ]
    )


def _filter(rows: np.ndarray, kinds: np.ndarray, bpp: int) -> np.ndarray:
    """Apply per-row PNG filters; all neighbours are original bytes, so this is fully vectorised."""
    x = rows.astype(np.int16)
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    b = np.zeros_like(x)
    b[1:] = x[:-1]
    c = np.zeros_like(x)
    c[1:, bpp:] = x[:-1, :-bpp]
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    kind = kinds[:, None]
    pred = np.select([kind == 1, kind == 2, kind == 3, kind == 4], [a, b, (a + b) >> 1, paeth], 0)
    filtered: np.ndarray = ((x - pred) & 0xFF).astype(np.uint8)
    return filtered


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
