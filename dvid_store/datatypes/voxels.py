"""Grayscale and other plain voxel volumes: DVID's imageblk family.

``uint8blk``, ``uint16blk``, ``uint32blk``, ``uint64blk``, ``float32blk`` and
``rgba8blk`` instances, as :class:`Voxels`: numpy arrays in ``(z, y, x)`` order
(``rgba8blk`` adds a trailing axis of 4 uint8 channels R, G, B, A).

What DVID v1.0.0 does, and so what this module does:

* ``GET /raw`` returns uncompressed voxels; missing blocks read as 0 (not the
  instance's ``Background``). It has no compression option, so ``compress=True``
  reads through ``GET /subvolblocks`` instead, which sends every block as DVID
  stored it (LZ4 or gzip) and is decoded here.
* ``POST /raw`` takes uncompressed voxels only, and only block-aligned boxes.
* ``roi=`` masks reads (voxels outside the ROI read as 0) and limits writes to
  the blocks inside the ROI; the ROI must use the volume's block size.
* DVID accepts ``Compression: jpeg`` for any imageblk type at creation, but
  only 8-bit grayscale can be JPEG-encoded: :meth:`Voxels.create` refuses it
  for other dtypes, and ``jpeg:N`` (DVID's quality is fixed at 80).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import lz4.block
import numpy as np

from ..errors import DvidInputError, MalformedAnswerError, UnsupportedError
from ..geometry import Box, aligned_box, as_box, box_shape, is_aligned, xyz_string
from .volume import VolumeInstance

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["RGBA8", "STORABLE", "VOXEL_TYPES", "Voxels", "is_rgba8"]

#: Pass as ``dtype`` to :meth:`Voxels.create` for an ``rgba8blk`` instance.
RGBA8 = "rgba8"

#: numpy dtype (or ``"rgba8"``) → DVID type name.
VOXEL_TYPES: dict[Any, str] = {
    np.dtype(np.uint8): "uint8blk",
    np.dtype(np.uint16): "uint16blk",
    np.dtype(np.uint32): "uint32blk",
    np.dtype(np.uint64): "uint64blk",
    np.dtype(np.float32): "float32blk",
    RGBA8: "rgba8blk",
}

_COMPRESSIONS = ("none", "snappy", "lz4", "gzip", "jpeg")
_RECORD = struct.Struct("<4i")


class Voxels(VolumeInstance):
    """An imageblk-family instance (``uint8blk`` … ``rgba8blk``) on one node.

    Get one with ``node.voxels(name)`` or create one with :meth:`create`.
    Read with :meth:`read` or ``vol[z0:z1, y0:y1, x0:x1]``; write block-aligned
    arrays with :meth:`write` or ``vol[...] = array``. Slice bounds are absolute,
    signed DVID coordinates (see :mod:`dvid_store.datatypes.volume`).

    Examples
    --------
    >>> gray = Voxels.create(node, "grayscale", np.uint8)         # doctest: +SKIP
    >>> gray[0:64, 0:64, 0:64] = np.zeros((64, 64, 64), np.uint8)  # doctest: +SKIP
    >>> gray[10:20, 0:64, -32:32].shape                           # doctest: +SKIP
    (10, 64, 64)
    """

    typenames: ClassVar[tuple[str, ...]] = tuple(VOXEL_TYPES.values())
    default_typename: ClassVar[str] = "uint8blk"
    _read_transfer_options: ClassVar[tuple[str, ...]] = ("compress",)
    _write_only_options: ClassVar[tuple[str, ...]] = ("merge_edges",)
    _unaligned_hint: ClassVar[str] = (
        "; or pass merge_edges=True (slicing: vol.with_options(merge_edges=True)) to have those blocks "
        "read, merged and written back"
    )

    @property
    def channel_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        """``(4,)`` for rgba8blk (channels R, G, B, A), else ``()``."""
        return (4,) if self.typename == "rgba8blk" else ()

    # ---------------------------------------------------------------- create
    @classmethod
    def create(
        cls,
        node: Node,
        name: str,
        dtype: Any = np.uint8,
        *,
        block_size: int | Sequence[int] = (32, 32, 32),
        voxel_size: float | Sequence[float] = (8.0, 8.0, 8.0),
        voxel_units: str | Sequence[str] = "nanometers",
        compression: str | None = None,
        background: int | None = None,
        **settings: Any,
    ) -> Voxels:
        """Create an imageblk-family instance whose DVID type follows from ``dtype``.

        Parameters
        ----------
        node : Node
            An uncommitted node.
        name : str
            Instance name.
        dtype : numpy dtype or ``"rgba8"``
            ``uint8`` → uint8blk, ``uint16`` → uint16blk, ``uint32``, ``uint64``,
            ``float32`` → float32blk; ``"rgba8"`` or numpy's ``(uint8, 4)`` →
            rgba8blk (4 uint8 channels R, G, B, A).
        block_size : int or (z, y, x)
            Block size in voxels (DVID's default is 32³).
        voxel_size : float or (z, y, x)
            Physical voxel size, in ``voxel_units``.
        voxel_units : str or (z, y, x) of str
            Units of ``voxel_size``.
        compression : str, optional
            How DVID stores blocks: ``"lz4"`` (DVID's default), ``"gzip"``,
            ``"gzip:N"`` (N = 1…9), ``"snappy"``, ``"none"``, or ``"jpeg"`` (lossy,
            quality 80, uint8blk only).
        background : int, optional
            DVID's ``Background`` value (used by its block endpoints, not by ``/raw``).
        **settings
            Other DVID settings (see :meth:`Node.create_instance`), e.g. ``versioned=False``.

        Raises
        ------
        DvidInputError
            Unsupported dtype, or a compression DVID would refuse or misuse.
        """
        typename = _typename_for(dtype)
        sizes = _three(block_size, "block_size")
        if compression is not None:
            base = compression.split(":", 1)[0].lower()
            if base not in _COMPRESSIONS or (":" in compression and base != "gzip"):
                raise DvidInputError(
                    f"compression {compression!r} is not one of DVID's: none, snappy, lz4, gzip, gzip:1…gzip:9, jpeg "
                    "(jpeg has a fixed quality of 80, so 'jpeg:N' is refused)"
                )
            if base == "jpeg" and typename != "uint8blk":
                raise DvidInputError(
                    f"jpeg compression needs 8-bit grayscale (uint8blk); a {typename} instance cannot use it"
                )
        units = (voxel_units,) * 3 if isinstance(voxel_units, str) else tuple(voxel_units)
        node.create_instance(
            typename,
            name,
            block_size=sizes,
            voxel_size=tuple(float(v) for v in _three(voxel_size, "voxel_size")),
            voxel_units=units,
            compression=compression,
            background=background,
            **settings,
        )
        return cls(node, name)

    # ----------------------------------------------------------------- reads
    def read(  # type: ignore[override]
        self,
        box: Box | Sequence[Sequence[int]],
        *,
        roi: str | None = None,
        throttle: bool = False,
        compress: bool = False,
    ) -> np.ndarray:
        """Read the voxels of a box.

        Parameters
        ----------
        box : ((z0, y0, x0), (z1, y1, x1))
            Half-open box in voxels, any sign, aligned or not.
        roi : str, optional
            Name of a roi instance with this instance's block size: voxels outside
            it read as 0 (a roi with other blocks is refused: DVID would mask the
            wrong voxels).
        throttle : bool
            Ask DVID to run this among its few throttled operations; a busy server
            answers 503 and the request is retried with back-off. The parts of a
            split request then run one after the other.
        compress : bool
            Transfer the blocks as DVID stores them (LZ4 or gzip) through
            ``/subvolblocks`` and decode them here; instances stored as jpeg or
            snappy are sent uncompressed. Cannot be combined with ``roi``.

        Returns
        -------
        numpy.ndarray
            Shape ``(z1-z0, y1-y0, x1-x0)`` (plus 4 channels for rgba8blk), the
            instance's dtype. Voxels never written read as 0.
        """
        box = as_box(box)
        params: dict[str, Any] = {}
        self._check_roi(roi)
        if roi:
            params["roi"] = roi
        if throttle:
            params["throttle"] = "true"
        if compress:
            if roi:
                raise DvidInputError(
                    "compress=True reads through /subvolblocks, which has no ROI masking; drop one of the two"
                )
            return self._read_volume(
                box,
                params,
                grid=self.block_shape,
                sequential=throttle,
                read_part=lambda part, dest: self._read_stored_blocks(part, dest, params),
            )
        return self._read_volume(box, params, grid=self.block_shape, sequential=throttle)

    def _read_stored_blocks(self, part: Box, dest: np.ndarray, params: dict[str, Any]) -> None:
        """Fill ``dest`` (the voxels of ``part``) from ``GET /subvolblocks`` of the enclosing aligned box."""
        block = self.block_shape
        outer = aligned_box(part, block)
        stored = self._stored_format()
        query = dict(params)
        if stored is None:
            query["compression"] = "uncompressed"
        path = self.path("subvolblocks", xyz_string(box_shape(outer)), xyz_string(outer[0]))
        voxel_shape = block + self.channel_shape
        nbytes = int(np.prod(voxel_shape)) * self.dtype.itemsize
        expected = {
            (z, y, x)
            for z in range(outer[0][0] // block[0], outer[1][0] // block[0])
            for y in range(outer[0][1] // block[1], outer[1][1] // block[1])
            for x in range(outer[0][2] // block[2], outer[1][2] // block[2])
        }

        def consume(pieces: Iterator[bytes]) -> set[tuple[int, int, int]]:
            dest[...] = 0
            body = memoryview(b"".join(pieces))
            received: set[tuple[int, int, int]] = set()
            pos = 0
            while pos < len(body):
                if pos + _RECORD.size > len(body):
                    raise MalformedAnswerError("GET", "", 200, "the block stream ends inside a record header")
                bx, by, bz, n = _RECORD.unpack_from(body, pos)
                pos += _RECORD.size
                payload = body[pos : pos + n]
                pos += n
                if len(payload) != n or n <= 0 or (bz, by, bx) not in expected:
                    raise MalformedAnswerError("GET", "", 200, f"implausible or cut record for block {bx},{by},{bz}")
                received.add((bz, by, bx))
                voxels = np.frombuffer(_decode_block(payload, stored, nbytes), dtype=self.dtype).reshape(voxel_shape)
                origin = (bz * block[0], by * block[1], bx * block[2])
                lo = tuple(max(o, p) for o, p in zip(origin, part[0]))
                hi = tuple(min(o + b, p) for o, b, p in zip(origin, block, part[1]))
                if any(h <= l for l, h in zip(lo, hi)):
                    continue
                src = tuple(slice(l - o, h - o) for l, h, o in zip(lo, hi, origin))
                dst = tuple(slice(l - p, h - p) for l, h, p in zip(lo, hi, part[0]))
                dest[dst] = voxels[src]
            return received

        received = self.transport.stream("GET", path, consume, params=query)
        if received != expected:
            # A block stream has no end marker: blocks it left out may be absent or may
            # have been cut off. GET /raw has a known length and settles it.
            self._get_raw(part, dest, {k: v for k, v in params.items() if k != "compression"}, compressed=False)

    def _stored_format(self) -> str | None:
        """How ``/subvolblocks`` sends this instance's blocks unasked.

        "lz4", "gzip", "none", or None (ask uncompressed).
        """
        text = str(self.info["Base"].get("Compression", "")).lower()
        if text.startswith("lz4"):
            return "lz4"
        if text.startswith("gzip"):
            return "gzip"
        if text.startswith("no compression"):
            return "none"
        return None

    # ---------------------------------------------------------------- writes
    def write(  # type: ignore[override]
        self,
        array: Any,
        offset: Sequence[int],
        *,
        roi: str | None = None,
        throttle: bool = False,
        compress: bool = False,
        merge_edges: bool = False,
    ) -> None:
        """Write an array (``POST /raw``): block-aligned, or any box with ``merge_edges=True``.

        Parameters
        ----------
        array : numpy.ndarray
            ``(z, y, x)`` voxels (``(z, y, x, 4)`` for rgba8blk) of the instance's
            dtype, or of a dtype that converts losslessly (an integer array whose
            values all fit; never floats into integers).
        offset : (z, y, x)
            Voxel coordinate of ``array[0, 0, 0]``; any sign.
        roi : str, optional
            Only blocks inside this roi instance (same block size) are written.
        throttle : bool
            See :meth:`read`; a 503 from a busy server is retried with back-off.
        compress : bool
            Must stay ``False``: DVID v1.0.0's imageblk ``POST /raw`` takes
            uncompressed voxels only.
        merge_edges : bool
            Accept a box that is not block-aligned (DVID stores whole blocks only):
            the blocks it covers in part are read, ``array`` is merged in, and they
            are written back whole, so every voxel outside the box keeps its value.
            The merge holds per-block locks (per process, and cluster-wide on a
            dask.distributed worker) and reads the merged blocks back afterwards:
            :class:`~dvid_store.errors.ConcurrentWriteError` if an independent writer
            overwrote this write's voxels meanwhile. DVID's stored bounding box then
            grows to the enclosing aligned box. Aligned boxes are written directly.

        Raises
        ------
        DvidInputError
            Wrong dtype or shape, or the box is not block-aligned and
            ``merge_edges`` is not set (the message names the enclosing aligned
            box). Nothing is sent.
        LockedNodeError
            The node is committed. Nothing is sent.
        UnsupportedError
            ``compress=True``.
        ConcurrentWriteError
            ``merge_edges=True`` and another process wrote over this write's voxels
            in a shared block (write the box again).
        """
        if compress:
            raise UnsupportedError(
                "DVID's imageblk POST /raw only takes uncompressed voxels (it has no compression option); "
                "write with compress=False"
            )
        arr, box = self._check_write(array, offset, aligned=not merge_edges)
        self.require_writable("writing voxels")
        self._check_roi(roi)
        params: dict[str, Any] = {}
        if roi:
            params["roi"] = roi
        if throttle:
            params["throttle"] = "true"
        if is_aligned(box, self.block_shape):
            self._write_volume(arr, box, params, idempotent=True, sequential=throttle)
        else:
            self._write_merging_edges(arr, box, params, sequential=throttle)


#: What DVID's imageblk types can store, for error messages.
STORABLE = (
    "uint8, uint16, uint32, uint64 or float32 (one channel), or 4 uint8 channels R, G, B, A "
    "('rgba8', or numpy's (uint8, 4))"
)


def is_rgba8(dtype: Any) -> bool:
    """Whether ``dtype`` asks for DVID's ``rgba8blk``.

    ``"rgba8"`` (also ``"rgba8blk"``, ``"rgba"``) or numpy's ``(uint8, 4)`` do.
    """
    if isinstance(dtype, str) and dtype.lower() in (RGBA8, "rgba8blk", "rgba"):
        return True
    try:
        key = np.dtype(dtype)
    except (TypeError, ValueError):
        return False
    return key.subdtype is not None and key.subdtype[0] == np.uint8 and key.subdtype[1] == (4,)


def _typename_for(dtype: Any) -> str:
    """The imageblk type storing ``dtype``; :class:`DvidInputError` naming what DVID can store otherwise."""
    if is_rgba8(dtype):
        return "rgba8blk"
    try:
        key = np.dtype(dtype)
    except (TypeError, ValueError):
        key = None
    if key is None or key not in VOXEL_TYPES:
        shown = dtype if key is None else key
        channels = ""
        if key is not None and key.subdtype is not None:
            channels = f" ({int(np.prod(key.subdtype[1]))} channels of {key.subdtype[0]})"
        raise DvidInputError(
            f"DVID has no voxel type for dtype {shown!r}{channels}: its voxel types store {STORABLE} "
            "(labels go in a labelmap: Labelmap.create)"
        )
    return VOXEL_TYPES[key]


def _three(value: Any, what: str) -> tuple[Any, Any, Any]:
    if isinstance(value, (int, float, np.integer, np.floating)):
        return (value,) * 3
    items = tuple(value)
    if len(items) != 3:
        raise DvidInputError(f"{what} needs 3 values in (z, y, x) order, got {items}")
    return items


def _decode_block(payload: memoryview, stored: str | None, nbytes: int) -> bytes | memoryview:
    """One block payload of ``/subvolblocks`` → raw voxel bytes."""
    try:
        if stored == "lz4":
            (size,) = struct.unpack_from("<I", payload)
            if size == 0:  # DVID's legacy "stored uncompressed" marker
                raw: bytes | memoryview = payload[4:]
            else:
                raw = lz4.block.decompress(payload[4:], uncompressed_size=size)
        elif stored == "gzip":
            raw = zlib.decompress(payload, 31)
        else:
            raw = payload
    except (lz4.block.LZ4BlockError, zlib.error, struct.error) as exc:
        raise MalformedAnswerError("GET", "", 200, f"undecodable block ({exc})") from None
    if len(raw) != nbytes:
        raise MalformedAnswerError("GET", "", 200, f"a block holds {len(raw)} bytes, expected {nbytes}")
    return raw
