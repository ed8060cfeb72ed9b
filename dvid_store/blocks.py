"""Whole-block reads and writes of DVID voxel instances: the block layer of the node API client.

One :class:`BlockIO` reads and writes the blocks of one voxel instance (imageblk family
or labelmap) at one scale, many blocks per HTTP request:

* **reads** use ``GET /specificblocks?blocks=x,y,z,...``. The answer is a stream of
  records ``int32 bx, by, bz, int32 n, n bytes``, in any order, absent blocks left out.
  Records are parsed straight from the response stream (1 MiB pieces, no ``.content``)
  and decoded in the calling thread.
* blocks of ``rgba8blk`` (DVID's one multichannel imageblk type) are 4 bytes per
  voxel, R, G, B, A, x fastest, in ``/specificblocks``, ``/subvolblocks`` and
  ``/raw`` alike (checked against the server: a ``POST /raw`` of known voxels reads
  back byte for byte from each). They are uint8 arrays with a trailing channel axis,
  shape ``(z, y, x, 4)``: :attr:`BlockIO.dtype` is ``uint8`` and
  :attr:`BlockIO.channel_shape` ``(4,)``, so every layer above slices, compares and
  merges them as plain numpy arrays.
* **writes** are grouped into block-aligned boxes (one box per run of neighbouring
  blocks) and sent as ``POST /raw`` (labelmap: ``?mutate=true``, so label indices stay
  right when data is overwritten), or, for labelmap scales above 0, ``POST /blocks``.

What DVID v1.0.0 really does here (checked against the server):

* imageblk ``/specificblocks`` exists and takes ``compression=uncompressed`` (raw
  voxels) or nothing (the stored payload: ``uint32 size`` + LZ4 block for the default
  LZ4 instances). Zero-length stored values are skipped like absent blocks.
* labelmap ``/specificblocks`` takes ``compression=lz4`` (raw LZ4 block of the uint64
  volume, no size prefix), ``gzip``, ``uncompressed`` and ``blocks`` (gzip of DVID's
  compressed label block; DVID's default, sent as stored unless a body mapping must
  be applied). Records come in completion order.
* Writing an all-zero block through ``POST /raw`` stores a zero block (imageblk and
  labelmap alike), so zeros really overwrite older data.
* labelmap ``POST /blocks`` at scale 0 indexes the received blocks as *new* data
  (DVID's ingest path), so overwriting existing blocks that way would double-count
  label sizes; scale-0 writes therefore use ``POST /raw?mutate=true``. Scales above 0
  carry no label index, and ``POST /blocks?scale=s`` is the only way to write them.
* labelmap ``POST /raw`` recomputes scales 1..MaxDownresLevel synchronously; label
  indexing finishes asynchronously after the answer.
* labelmap down-resolution in v1.0.0 mishandles negative block coordinates: a
  ``POST /raw`` of blocks at negative coordinates into an instance with
  MaxDownresLevel ≥ 1 often answers HTTP 500 ("index out of range [-1]"; e.g. any
  lone block at index -1, or block -2 once MaxDownresLevel ≥ 2) after storing the
  scale-0 blocks, and the lower scales are then missing. Keep multi-scale labelmaps in
  the positive octant.

Which transfer encoding a read uses is the one parameter ``compression`` (defaults in
:data:`DEFAULT_READ_COMPRESSION`); labelmap writes send their bodies as
:data:`DEFAULT_LABEL_WRITE_COMPRESSION`.

Knobs; their defaults were chosen with ``benchmarks/bench_tuning.py``, and a default
changed only where another setting won in every run (the figures are on the
"Performance" page of the docs, "Tuning knobs and the measured defaults"):

* ``max_blocks`` (:data:`DEFAULT_MAX_BLOCKS`, 1024) and ``max_bytes``
  (:data:`DEFAULT_MAX_BYTES`, 128 MiB) per request, reads and writes: fewer or more
  blocks per request were no faster.
* ``max_write_voxels`` (:data:`DEFAULT_MAX_WRITE_VOXELS`, 512³, i.e. no cap beyond
  the two above) per ``POST /raw``: smaller caps were slower or inconsistent.
* read ``compression``: labelmap "blocks", imageblk "stored" (see
  :data:`DEFAULT_READ_COMPRESSION`).
* labelmap write body :data:`DEFAULT_LABEL_WRITE_COMPRESSION`: "lz4".
* one call's reads and writes are split into parts of about :data:`PART_BYTES`
  (8 MiB), of which :data:`PARTS_IN_FLIGHT` (``$DVID_STORE_PARTS_IN_FLIGHT``, default
  4) are requests in flight at once. The number is set by what a far link needs, not
  by the cores: a link's throughput is the bytes in flight over its round trip, and
  4 × 8 MiB in flight keep a 40 ms round trip busy up to about 800 MB/s, more than
  DVID serves one client; on loopback they let the server use its cores.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lz4.block
import numpy as np

from .client import DvidClient
from .codecs.jpeg import decode_jpeg_block
from .codecs.labelblock import decode_gzipped_label_block, encode_gzipped_label_block
from .datatypes.volume import bytes_into, lz4_into
from .errors import DvidInputError, MalformedAnswerError, UnsupportedError
from .geometry import (
    Box,
    aligned_box,
    as_box,
    as_zyx,
    block_coords_in_box,
    box_shape,
    check_allocation,
    split_box,
    xyz_string,
)
from .node import Node

if TYPE_CHECKING:
    from .transport import Transport

__all__ = [
    "CHANNELS",
    "DEFAULT_LABEL_WRITE_COMPRESSION",
    "DEFAULT_MAX_BLOCKS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_WRITE_VOXELS",
    "DEFAULT_READ_COMPRESSION",
    "LABEL_TYPES",
    "PARTS_IN_FLIGHT",
    "PART_BYTES",
    "VOXEL_TYPES",
    "BlockIO",
    "block_boxes",
    "shared_node",
    "stored_kind",
]

ZYX = tuple[int, int, int]

#: imageblk datatypes and the dtype of their values (little-endian, as DVID sends
#: them); a voxel of a multichannel type is :data:`CHANNELS` such values.
VOXEL_TYPES: dict[str, np.dtype] = {
    "uint8blk": np.dtype("u1"),
    "uint16blk": np.dtype("<u2"),
    "uint32blk": np.dtype("<u4"),
    "uint64blk": np.dtype("<u8"),
    "float32blk": np.dtype("<f4"),
    "rgba8blk": np.dtype("u1"),
}

#: Multichannel imageblk types and the trailing axes of their arrays: ``rgba8blk``
#: voxels are 4 uint8 values R, G, B, A (the only multichannel imageblk type DVID
#: v1.0.0 serves; its ``multichan16`` is a separate datatype without block access).
CHANNELS: dict[str, tuple[int, ...]] = {"rgba8blk": (4,)}

#: Label datatypes with ``scale`` and ``supervoxels`` block access.
LABEL_TYPES: dict[str, np.dtype] = {"labelmap": np.dtype("<u8")}

#: The transfer encoding of block reads, per family: the one place to change it.
#: imageblk "stored": DVID sends the stored LZ4 payloads as they are and the client
#: decompresses them in parallel tasks, faster than "uncompressed" (DVID decompresses
#: on its side) in every run of ``benchmarks/bench_tuning.py``; gzip-stored instances
#: likewise (same voxels). jpeg-stored instances are read "uncompressed" by default:
#: decoding their stored JPEGs here with Pillow is faster, but libjpeg and DVID's Go
#: decoder disagree by one grey level on some voxels, and a dask read should show the
#: voxels ``GET /raw`` shows; ask for ``compression="stored"`` to trade that for speed.
#: Other storage ("snappy") is always read "uncompressed".
#: labelmap "blocks": gzip'd DVID label blocks, sent by DVID as stored (no transcoding)
#: and decoded by :mod:`dvid_store.codecs.labelblock`; faster than "lz4" (which DVID
#: must transcode) and, for smooth segmentations, than "uncompressed".
#: The figures are on the "Performance" page of the docs.
DEFAULT_READ_COMPRESSION: dict[str, str] = {"imageblk": "stored", "labelmap": "blocks"}

#: Body encoding of labelmap ``POST /raw`` writes: "lz4" (raw LZ4 block) or "none".
#: Compressing costs the client some time but spares DVID reading several times more
#: bytes; sending uncompressed (zero-copy memoryview) bodies was slower in
#: ``benchmarks/bench_tuning.py`` (figures on the "Performance" page of the docs).
DEFAULT_LABEL_WRITE_COMPRESSION = "lz4"

#: At most this many blocks per request (keeps the ``blocks=`` query string < ~20 kB).
DEFAULT_MAX_BLOCKS = 1024

#: One call's transfer is split into requests of about this many bytes (at least a block)...
PART_BYTES = 8 << 20

#: labelmap blocks are sized as this fraction of their voxel bytes on the wire (see
#: :attr:`BlockIO.blocks_per_part`).
LABEL_WIRE_FRACTION = 16

#: ... of which this many are in flight at once (see the module notes).
PARTS_IN_FLIGHT = max(1, int(os.environ.get("DVID_STORE_PARTS_IN_FLIGHT", "4")))

#: At most this many uncompressed bytes per request.
DEFAULT_MAX_BYTES = 128 << 20

#: At most this many voxels per ``POST /raw`` (on top of the block and byte caps).
#: DVID v1.0.0 serialises imageblk requests of more than 256³ voxels through one
#: server-wide mutex (``server.LargeMutationMutex``), so concurrent writers with bigger
#: boxes queue behind each other. On a 2-core machine a 256³ cap nevertheless gained
#: nothing for many-chunk writes and was slower for one-chunk writes (fewer, bigger
#: requests are cheaper; DVID has no spare cores to run more at once; figures on the
#: "Performance" page of the docs). So the default, 512³, adds no cap beyond 1024
#: blocks; set ``max_write_voxels=256**3`` where many writers share a DVID with many
#: cores.
DEFAULT_MAX_WRITE_VOXELS = 512**3

_READ_CHOICES = {
    "imageblk": ("uncompressed", "stored"),
    "labelmap": ("lz4", "uncompressed", "gzip", "blocks"),
}
_STREAM_PIECE = 1 << 20
_HEADER = struct.Struct("<iiii")


def _family(typename: str) -> str:
    if typename in VOXEL_TYPES:
        return "imageblk"
    if typename in LABEL_TYPES:
        return "labelmap"
    supported = ", ".join([*VOXEL_TYPES, *LABEL_TYPES])
    raise UnsupportedError(
        f"block access to DVID type {typename!r} is not supported; supported types: {supported}"
    )


@dataclass(frozen=True)
class _Stored:
    """How an imageblk instance stores its blocks (from ``Base.Compression``)."""

    kind: str  # "lz4", "gzip", "jpeg", "none", "other"

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> _Stored:
        text = str(info.get("Base", {}).get("Compression", "")).lower()
        for kind in ("lz4", "gzip", "jpeg"):
            if kind in text:
                return cls(kind)
        if text.startswith("no compression") or not text:
            return cls("none")
        return cls("other")


def stored_kind(info: Mapping[str, Any]) -> str:
    """How an instance stores its blocks, read from its ``/info``.

    Returns
    -------
    str
        ``"lz4"``, ``"gzip"``, ``"jpeg"``, ``"none"`` or ``"other"``.
    """
    return _Stored.from_info(info).kind


class BlockIO:
    """Read and write whole blocks of one DVID voxel instance at one scale.

    Block coordinates are ``(z, y, x)`` in units of blocks of this scale's grid and may
    be negative. Blocks are numpy arrays of shape :attr:`block_array_shape`
    (:attr:`block_shape`, plus a trailing axis of 4 channels R, G, B, A for
    ``rgba8blk``) and dtype :attr:`dtype`; boxes likewise carry the channel axis.
    Instances are cheap, thread-safe (each thread uses its own HTTP session) and
    pickle as configuration.

    Parameters
    ----------
    node : Node
        The version to read and write.
    instance : str
        Instance name.
    typename : str
        DVID type of the instance (``"uint8blk"``, ..., ``"labelmap"``).
    block_shape : (int, int, int)
        DVID block size in voxels, (z, y, x).
    scale : int
        labelmap scale level (0 = full resolution); must be 0 for imageblk.
    supervoxels : bool
        labelmap only: read supervoxel ids instead of mapped body ids.
    compression : str, optional
        Transfer encoding of reads; default from :data:`DEFAULT_READ_COMPRESSION`
        (imageblk: "stored" for LZ4, gzip or uncompressed storage, else "uncompressed").
        imageblk: ``"uncompressed"`` or ``"stored"``; labelmap: ``"blocks"``,
        ``"lz4"``, ``"uncompressed"`` or ``"gzip"``.
    stored : str
        imageblk storage compression (``"lz4"``, ``"gzip"``, ``"jpeg"``, ``"none"``,
        ``"other"``) as :meth:`open` reads it from ``/info``; it decides how "stored"
        payloads decode. jpeg-stored blocks are read "uncompressed" unless
        ``compression="stored"`` is asked for: then Pillow decodes them here, faster,
        but up to one grey level away from DVID's own decoding.
    max_blocks, max_bytes : int
        Caps per request (blocks, uncompressed bytes); defaults
        :data:`DEFAULT_MAX_BLOCKS`, :data:`DEFAULT_MAX_BYTES`.
    max_write_voxels : int
        Cap on the voxels of one ``POST /raw`` (on top of the two above); default
        :data:`DEFAULT_MAX_WRITE_VOXELS`. Never less than one block per request.
    throttle : bool
        Send DVID's ``throttle=true`` with every request: DVID then runs only a few
        such requests at once and answers the others 503, which the transport
        retries within its retry budget (pydvid's and libdvid's ``throttle``).

    Examples
    --------
    >>> io = BlockIO.open(node, "grayscale")                 # doctest: +SKIP
    >>> blocks = io.read([(0, 0, 0), (0, 0, 1)])             # doctest: +SKIP
    """

    def __init__(
        self,
        node: Node,
        instance: str,
        *,
        typename: str,
        block_shape: Sequence[int],
        scale: int = 0,
        supervoxels: bool = False,
        compression: str | None = None,
        stored: str = "lz4",
        max_blocks: int = DEFAULT_MAX_BLOCKS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_write_voxels: int = DEFAULT_MAX_WRITE_VOXELS,
        throttle: bool = False,
    ) -> None:
        self.family = _family(typename)
        self.throttle = bool(throttle)
        self.node = node
        self.instance = instance
        self.typename = typename
        self.dtype = VOXEL_TYPES.get(typename) or LABEL_TYPES[typename]
        self.channel_shape: tuple[int, ...] = CHANNELS.get(typename, ())
        self.block_shape: ZYX = as_zyx(block_shape, "block_shape")
        self.scale = int(scale)
        self.supervoxels = bool(supervoxels)
        self.compression = compression or DEFAULT_READ_COMPRESSION[self.family]
        if compression is None and self.compression == "stored" and stored not in ("lz4", "gzip", "none"):
            self.compression = "uncompressed"  # DVID decodes what the client would do slower or not at all
        self.stored = stored
        self.max_blocks = int(max_blocks)
        self.max_bytes = int(max_bytes)
        self.max_write_voxels = int(max_write_voxels)
        if self.family == "imageblk" and (self.scale != 0 or self.supervoxels):
            raise DvidInputError(
                f"{typename} instance {instance!r} has no scale levels or supervoxels "
                "(each grayscale scale is its own instance, e.g. 'name_1'); use scale=0, supervoxels=False"
            )
        if not 0 <= self.scale <= 255:
            raise DvidInputError(f"scale must be in 0..255, got {scale}")
        if self.compression not in _READ_CHOICES[self.family]:
            raise DvidInputError(
                f"compression {self.compression!r} is not available for {typename}; "
                f"choose one of {', '.join(_READ_CHOICES[self.family])}"
            )
        if self.compression == "stored" and stored not in ("lz4", "gzip", "jpeg", "none"):
            raise UnsupportedError(
                f"{instance!r} stores its blocks as {stored!r}, which dvid_store does not decode; "
                "use compression='uncompressed'"
            )
        if self.max_blocks < 1 or self.max_bytes < 1 or self.max_write_voxels < 1:
            raise DvidInputError("max_blocks, max_bytes and max_write_voxels must be positive")
        self.block_nbytes = int(np.prod(self.block_array_shape)) * self.dtype.itemsize

    @classmethod
    def open(
        cls,
        node: Node,
        instance: str,
        *,
        scale: int = 0,
        supervoxels: bool = False,
        compression: str | None = None,
        info: Mapping[str, Any] | None = None,
        **limits: Any,
    ) -> BlockIO:
        """A :class:`BlockIO` configured from the instance's ``/info`` (fetched unless given)."""
        info = info if info is not None else node.typeinfo(instance)
        _family(info["Base"]["TypeName"])  # other types have no block size to read
        extended = info["Extended"]
        return cls(
            node,
            instance,
            typename=info["Base"]["TypeName"],
            block_shape=tuple(reversed(extended["BlockSize"])),
            scale=scale,
            supervoxels=supervoxels,
            compression=compression,
            stored=stored_kind(info),
            **limits,
        )

    # ----------------------------------------------------------------- basics
    def __repr__(self) -> str:
        extra = f", scale={self.scale}" if self.scale else ""
        extra += ", supervoxels=True" if self.supervoxels else ""
        return (
            f"BlockIO({self.instance!r}, {self.typename}, block_shape={self.block_shape}{extra}, "
            f"node={self.node.uuid[:8]!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.node = shared_node(self.node)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BlockIO) and other.__dict__ == self.__dict__

    def __hash__(self) -> int:
        return hash((self.node, self.instance, self.scale, self.supervoxels))

    @property
    def block_array_shape(self) -> tuple[int, ...]:
        """Shape of one block's array: :attr:`block_shape` plus :attr:`channel_shape`."""
        return self.block_shape + self.channel_shape

    @property
    def blocks_per_request(self) -> int:
        """Blocks sent or asked for in one request at most (both caps applied)."""
        return max(1, min(self.max_blocks, self.max_bytes // self.block_nbytes))

    @property
    def blocks_per_part(self) -> int:
        """Blocks per request when a call is split into parts run at once (about :data:`PART_BYTES` sent).

        labelmap blocks travel compressed (DVID's label blocks to readers, LZ4 from
        writers), typically a sixteenth of their voxel bytes or much less, so their
        parts hold sixteen times as many blocks: what fills a far link is bytes on
        the wire, and a round trip per few small bodies would leave it idle.
        """
        wire = self.block_nbytes
        if self.family == "labelmap" and self.compression != "uncompressed":
            wire = max(1, wire // LABEL_WIRE_FRACTION)
        return max(1, min(self.blocks_per_request, PART_BYTES // wire))

    @property
    def blocks_per_write(self) -> int:
        """Blocks sent in one ``POST /raw`` at most (:attr:`blocks_per_request` and ``max_write_voxels``)."""
        return max(1, min(self.blocks_per_request, self.max_write_voxels // int(np.prod(self.block_shape))))

    def _path(self, *parts: str) -> str:
        return self.node.path(self.instance, *parts)

    def _params(self, **params: Any) -> dict[str, Any]:
        if self.throttle:
            params["throttle"] = "true"
        return params

    # ------------------------------------------------------------------ reads
    def read(self, coords: Iterable[Sequence[int]] | np.ndarray) -> dict[ZYX, np.ndarray]:
        """Fetch blocks by block coordinate.

        Parameters
        ----------
        coords : iterable of (z, y, x) or (n, 3) array
            Block coordinates in this scale's block grid. Duplicates are fetched once.

        Returns
        -------
        dict
            ``(z, y, x)`` → block array, for the blocks DVID holds; absent blocks are
            left out (they read as 0). Arrays may be read-only views of the response.

        Notes
        -----
        A block stream has no end marker: an answer cut short on a record boundary
        looks exactly like one whose last blocks are absent. So a block counts as
        absent only once a ``GET /raw`` of it, whose length is known in advance, reads
        as zeros (see :meth:`_confirm_absent`).
        """
        wanted = _unique_coords(coords)
        found: dict[ZYX, np.ndarray] = {}

        def keep(coord: ZYX, payload: memoryview) -> None:
            found[coord] = self._decode(payload, coord)

        def read_part(part: list[ZYX]) -> None:
            received = self._fetch(part, keep)
            missing = [c for c in part if c not in received]
            for coord, block in self._confirm_absent(missing):
                if block.any():
                    found[coord] = block

        run_parts(read_part, list(_batches(wanted, self.blocks_per_part)))
        return found

    def read_box(self, box: Box | Sequence[Sequence[int]], out: np.ndarray | None = None) -> np.ndarray:
        """Read any box of voxels (this scale's grid), absent blocks as 0.

        Parameters
        ----------
        box : ((z0, y0, x0), (z1, y1, x1))
            Half-open voxel box; need not be block aligned.
        out : numpy.ndarray, optional
            Destination of the box's shape (plus :attr:`channel_shape`) and
            :attr:`dtype`; may be a strided view (e.g. the box's part of a larger
            array), which is filled in place.

        Returns
        -------
        numpy.ndarray
            The voxels, ``(z, y, x)`` (``(z, y, x, 4)`` for rgba8blk). Blocks missing from the block stream are
            confirmed absent as in :meth:`read` before they read as 0.
        """
        box = as_box(box)
        out = self._destination(box, out)
        bs = self.block_shape
        target = out

        def place(coord: ZYX, payload: memoryview) -> None:
            dst, src = _overlap(box, coord, bs)
            if all(s.stop - s.start == n for s, n in zip(src, bs)):
                # Decode straight into the result: no block-sized temporary to
                # allocate (page faults cost as much as decoding) and copy.
                self._decode(payload, coord, out=target[dst])
            else:
                target[dst] = self._decode(payload, coord)[src]

        coords: list[ZYX] = [(int(c[0]), int(c[1]), int(c[2])) for c in block_coords_in_box(box, bs)]

        def read_part(part: list[ZYX]) -> None:
            received = self._fetch(part, place)
            missing = [c for c in part if c not in received]
            for coord, block in self._confirm_absent(missing):
                dst, src = _overlap(box, coord, bs)
                out[dst] = block[src]

        run_parts(read_part, list(_batches(coords, self.blocks_per_part)))
        return out

    def _fetch(self, coords: list[ZYX], sink: Callable[[ZYX, memoryview], None]) -> set[ZYX]:
        """One ``/specificblocks`` request: ``sink(coord, payload)`` for every block received.

        Returns the coordinates received. A payload is valid only during its call. If
        the answer breaks off and is asked for again, blocks may reach ``sink`` twice.
        """
        if not coords:
            return set()
        params: dict[str, Any] = self._params(blocks=",".join(xyz_string(c, ",") for c in coords))
        if self.compression != "stored":
            params["compression"] = self.compression
        if self.family == "labelmap":
            if self.scale:
                params["scale"] = self.scale
            if self.supervoxels:
                params["supervoxels"] = "true"
        path = self._path("specificblocks")
        transport = self.node.transport
        url = transport.url(path)
        wanted = set(coords)

        def consume(pieces: Iterator[bytes]) -> set[ZYX]:
            received: set[ZYX] = set()
            stream = _Stream(pieces)
            for coord, payload in _records(stream, self._max_payload(), url):
                if coord not in wanted or coord in received:
                    what = "a block it did not ask for" if coord not in wanted else "a block twice"
                    raise _stream_error(url, f"the answer holds {what}: {coord} (z, y, x)", stream)
                sink(coord, payload)
                received.add(coord)
            return received

        return transport.stream("GET", path, consume, params=params)

    def _confirm_absent(self, coords: Sequence[ZYX]) -> Iterator[tuple[ZYX, np.ndarray]]:
        """Read blocks that a block stream left out through sized ``GET /raw`` requests.

        ``GET /raw`` has a length known before it is sent, so unlike a block stream it
        cannot end early unnoticed. Yields ``(coord, block)``; a block DVID does not
        hold reads as zeros. Neighbouring blocks share a request.
        """
        if not coords:
            return
        asked = set(coords)
        bs = self.block_shape
        lo_block = tuple(min(c[i] for c in asked) for i in range(3))
        span = tuple(max(c[i] for c in asked) - lo_block[i] + 1 for i in range(3))
        if int(np.prod(span)) <= self.blocks_per_request:
            # One request for all of them, present neighbours included: on a far
            # server a round trip costs more than the extra bytes.
            boxes: list[tuple[ZYX, ZYX]] = [(lo_block, span)]  # type: ignore[list-item]
        else:
            boxes = block_boxes(asked, self.blocks_per_request)
        for start, count in boxes:
            lo = tuple(c * b for c, b in zip(start, bs))
            hi = tuple(a + n * b for a, n, b in zip(lo, count, bs))
            data = self._get_raw((lo, hi))  # type: ignore[arg-type]
            for dz in range(count[0]):
                for dy in range(count[1]):
                    for dx in range(count[2]):
                        coord = (start[0] + dz, start[1] + dy, start[2] + dx)
                        if coord in asked:
                            block = data[
                                dz * bs[0] : (dz + 1) * bs[0],
                                dy * bs[1] : (dy + 1) * bs[1],
                                dx * bs[2] : (dx + 1) * bs[2],
                            ]
                            yield coord, block

    def read_box_assembled(self, box: Box | Sequence[Sequence[int]], out: np.ndarray | None = None) -> np.ndarray:
        """Read any box as DVID assembles it: one sized ``GET /raw``, absent blocks as 0.

        The server decompresses and places the blocks, so the client only copies the
        body into ``out``. That is the cheaper side on a machine where the client's
        per-block work costs more than the extra bytes, i.e. for block types whose
        stored encoding is general-purpose (lz4 or gzip, not DVID's label encoding),
        and for boxes of a few megabytes (one request, one deadline).

        Parameters
        ----------
        box : ((z0, y0, x0), (z1, y1, x1))
            Half-open voxel box of this level.
        out : numpy.ndarray, optional
            Destination, as for :meth:`read_box`.

        Returns
        -------
        numpy.ndarray
            The voxels.
        """
        box = as_box(box)
        return self._get_raw(box, self._destination(box, out))

    def _destination(self, box: Box, out: np.ndarray | None) -> np.ndarray:
        """``out`` checked against the box, or a new array for it."""
        shape = box_shape(box) + self.channel_shape
        if out is None:
            check_allocation(shape, self.dtype, f"a read of {self.instance!r}")
            return np.empty(shape, self.dtype)
        if out.shape != shape or out.dtype != self.dtype:
            raise DvidInputError(f"out must have shape {shape} and dtype {self.dtype}, got {out.shape} {out.dtype}")
        return out

    def _get_raw(self, box: Box, dest: np.ndarray | None = None) -> np.ndarray:
        """``GET /raw`` of a box of this level, its length checked, into ``dest`` if given."""
        params: dict[str, Any] = self._params()
        query_box = box
        if self.family == "labelmap":
            params["compression"] = "lz4"
            if self.scale:
                params["scale"] = self.scale
            if self.supervoxels:
                params["supervoxels"] = "true"
            if box_shape(box) == self.block_shape:
                # DVID v1.0.0 fails (500, or 400 with lz4) on a GET /raw of exactly one
                # absent labelmap block; one voxel more takes its general path.
                query_box = (box[0], (box[1][0], box[1][1], box[1][2] + 1))
        shape = box_shape(query_box)
        path = self._path("raw", "0_1_2", xyz_string(shape), xyz_string(query_box[0]))
        out = dest if dest is not None and query_box is box else np.empty(shape + self.channel_shape, self.dtype)
        consume = lz4_into(out) if self.family == "labelmap" else bytes_into(out)
        self.node.transport.stream("GET", path, consume, params=params)
        result = out if query_box is box else out[:, :, : box_shape(box)[2]]
        if dest is not None and result is not dest:
            dest[...] = result
            return dest
        return result

    def _max_payload(self) -> int:
        """The largest payload a record can plausibly hold (a guard against garbage).

        Compressed payloads can exceed the raw size slightly (incompressible data).
        A DVID label block with a distinct label in (nearly) every voxel is larger
        still: 8 bytes per label, plus per 8³ sub-block up to 512 4-byte label
        indices and 9 bits per voxel, about 1.65x the raw block.
        """
        if self.family == "labelmap" and self.compression == "blocks":
            return 2 * self.block_nbytes + 65536
        return self.block_nbytes + self.block_nbytes // 8 + 4096

    def _decode(self, payload: memoryview, coord: ZYX, out: np.ndarray | None = None) -> np.ndarray:
        """Decode one block payload, into ``out`` (a block-shaped view) when given."""
        nbytes = self.block_nbytes
        kind = self.compression
        try:
            if kind == "stored":
                kind = self.stored
                if kind == "lz4":
                    (size,) = struct.unpack_from("<I", payload)
                    payload = payload[4:]
                    if size != nbytes:
                        raise ValueError(f"stored LZ4 block holds {size} bytes, expected {nbytes}")
            if kind in ("uncompressed", "none"):
                raw: Any = payload
            elif kind == "lz4":
                raw = lz4.block.decompress(payload, uncompressed_size=nbytes, return_bytearray=True)
            elif kind == "gzip":
                raw = zlib.decompress(payload, 31)
            elif kind == "jpeg":
                raw = decode_jpeg_block(payload, self.block_shape).reshape(-1)
            else:  # "blocks"
                if out is not None:
                    return decode_gzipped_label_block(payload, out=out)
                return decode_gzipped_label_block(payload).reshape(self.block_array_shape)
        except UnsupportedError:
            raise
        except Exception as exc:  # lz4/zlib/codec errors all mean a corrupt payload
            raise MalformedAnswerError(
                "GET", self.node.transport.url(self._path("specificblocks")), 200,
                f"block {coord} of {self.instance!r} could not be decoded ({kind}): {exc}",
            ) from None
        if len(raw) != nbytes:
            raise MalformedAnswerError(
                "GET", self.node.transport.url(self._path("specificblocks")), 200,
                f"block {coord} of {self.instance!r} has {len(raw)} bytes, expected {nbytes}",
            )
        block = np.frombuffer(raw, self.dtype).reshape(self.block_array_shape)
        if out is None:
            return block
        np.copyto(out, block)
        return out

    def stored_coords(self, box: Box | Sequence[Sequence[int]]) -> Iterator[ZYX]:
        """Coordinates of the blocks DVID holds inside a box, sorted (z, y, x) within each slab.

        DVID has no way to list blocks without sending them, so this streams the stored
        (compressed) payloads slab by slab and keeps only the record headers.

        Parameters
        ----------
        box : ((z0, y0, x0), (z1, y1, x1))
            Voxel box in this scale's grid (aligned out to blocks).
        """
        for slab in self.stored_slabs(box):
            yield from slab

    def stored_slabs(self, box: Box | Sequence[Sequence[int]]) -> Iterator[list[ZYX]]:
        """Like :meth:`stored_coords`, one sorted list per request (slab of the box)."""
        box = aligned_box(as_box(box), self.block_shape)
        slab_voxels = self.blocks_per_request * int(np.prod(self.block_shape))
        transport = self.node.transport
        for part in split_box(box, slab_voxels, self.block_shape):
            size, offset = xyz_string(box_shape(part)), xyz_string(part[0])
            params: dict[str, Any] = self._params()
            if self.family == "labelmap":
                path = self._path("blocks", size, offset)
                params["compression"] = "blocks"
                if self.scale:
                    params["scale"] = self.scale
            else:
                path = self._path("subvolblocks", size, offset)
            url = transport.url(path)

            def consume(pieces: Iterator[bytes], url: str = url) -> set[ZYX]:
                return {c for c, _ in _records(_Stream(pieces), self._max_payload(), url)}

            listed = transport.stream("GET", path, consume, params=params)
            # As for reads: a block the stream left out is confirmed absent by GET /raw.
            unlisted = [c for c in _box_coords(part, self.block_shape) if c not in listed]
            listed.update(c for c, block in self._confirm_absent(unlisted) if block.any())
            yield sorted(listed)

    # ----------------------------------------------------------------- writes
    def write(self, blocks: Mapping[Sequence[int], np.ndarray]) -> int:
        """Store whole blocks; an all-zero block overwrites whatever was there.

        Neighbouring blocks are sent together, one block-aligned box per request.

        Parameters
        ----------
        blocks : mapping
            ``(z, y, x)`` block coordinate → array of :attr:`block_array_shape` (any
            dtype castable to :attr:`dtype` without loss).

        Returns
        -------
        int
            Requests sent.

        Raises
        ------
        LockedNodeError
            The node is committed (nothing is sent).
        DvidInputError
            A block has the wrong shape or a dtype that does not fit.
        """
        if not blocks:
            return 0
        prepared: dict[ZYX, np.ndarray] = {}
        for coord, block in blocks.items():
            prepared[as_zyx(coord, "block coordinate")] = self._check_block(block)
        self.node.require_writable(f"writing blocks to {self.instance!r}")
        if self.family == "labelmap" and self.scale > 0:
            return self._post_label_blocks(prepared)
        boxes = list(block_boxes(prepared, min(self.blocks_per_write, self.blocks_per_part)))
        run_parts(lambda part: self._post_box(part[0], part[1], prepared), boxes)
        return len(boxes)

    def write_box(self, data: np.ndarray, start: Sequence[int]) -> int:
        """Store a block-aligned box of voxels (this scale's grid) at ``start`` (z, y, x).

        ``data`` is ``(z, y, x)``, plus :attr:`channel_shape` (rgba8blk: ``(z, y, x, 4)``).
        Returns the number of requests sent.
        """
        start = as_zyx(start, "start")
        data = np.asarray(data)
        self._check_channels(data, "the box")
        box = (start, tuple(s + n for s, n in zip(start, data.shape)))
        bs = self.block_shape
        if any(v % b for corner in box for v, b in zip(corner, bs)):
            raise DvidInputError(
                f"a write must cover whole DVID blocks of {bs} (z, y, x): box {box[0]}–{box[1]} is not "
                "block aligned; read the surrounding blocks, modify them and write them back"
            )
        data = self._check_dtype(data)
        self.node.require_writable(f"writing to {self.instance!r}")
        if self.family == "labelmap" and self.scale > 0:
            grid = block_coords_in_box(box, bs)
            blocks: dict[ZYX, np.ndarray] = {}
            for c in grid:
                coord = (int(c[0]), int(c[1]), int(c[2]))
                dst, _ = _overlap(box, coord, bs)
                blocks[coord] = data[dst]
            return self._post_label_blocks(blocks)
        per_request = min(self.blocks_per_write, self.blocks_per_part) * int(np.prod(bs))
        parts = list(split_box(box, per_request, bs))

        def post(part: Box) -> None:
            local = tuple(slice(a - s, b - s) for a, b, s in zip(part[0], part[1], start))
            self._post_raw(part[0], np.ascontiguousarray(data[local]))

        run_parts(post, parts)
        return len(parts)

    def _check_dtype(self, data: np.ndarray) -> np.ndarray:
        if data.dtype == self.dtype:
            return data
        if data.dtype == bool or np.can_cast(data.dtype, self.dtype, casting="safe") or (
            data.dtype.kind in "iu" and self.dtype.kind in "iu" and data.size and _fits(data, self.dtype)
        ):
            return data.astype(self.dtype)
        raise DvidInputError(
            f"cannot store {data.dtype} voxels in {self.typename} instance {self.instance!r} ({self.dtype}) "
            "without losing values; convert the data first"
        )

    def _check_channels(self, data: np.ndarray, what: str) -> None:
        """Refuse an array that is not ``(z, y, x)`` plus this instance's channel axis."""
        ndim = 3 + len(self.channel_shape)
        if data.ndim == ndim and data.shape[3:] == self.channel_shape:
            return
        if self.channel_shape:
            raise DvidInputError(
                f"{what} must have shape (z, y, x, {', '.join(map(str, self.channel_shape))}) for {self.typename} "
                f"{self.instance!r} (channels R, G, B, A last), got {data.shape}"
            )
        raise DvidInputError(f"{what} must be 3-d (z, y, x) for {self.typename} {self.instance!r}, got {data.shape}")

    def _check_block(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block)
        if block.shape != self.block_array_shape:
            axes = "(z, y, x)" if not self.channel_shape else "(z, y, x, channel)"
            raise DvidInputError(
                f"a block of {self.instance!r} must have shape {self.block_array_shape} {axes}, got {block.shape}"
            )
        return self._check_dtype(block)

    def _post_box(self, start_block: ZYX, nblocks: ZYX, blocks: Mapping[ZYX, np.ndarray]) -> None:
        bs = self.block_shape
        shape = tuple(n * b for n, b in zip(nblocks, bs))
        if nblocks == (1, 1, 1):
            data = np.ascontiguousarray(blocks[start_block])
        else:
            data = np.empty(shape + self.channel_shape, self.dtype)
            # one copy per block (a handful to ~1000 per request), never per voxel
            view = data.reshape(nblocks[0], bs[0], nblocks[1], bs[1], nblocks[2], bs[2], *self.channel_shape)
            for dz in range(nblocks[0]):
                for dy in range(nblocks[1]):
                    for dx in range(nblocks[2]):
                        coord = (start_block[0] + dz, start_block[1] + dy, start_block[2] + dx)
                        view[dz, :, dy, :, dx, :] = blocks[coord]
        self._post_raw(tuple(c * b for c, b in zip(start_block, bs)), data)  # type: ignore[arg-type]

    def _post_raw(self, start: ZYX, data: np.ndarray) -> None:
        """``POST /raw`` of a block-aligned, C-contiguous box (the dtype already checked)."""
        path = self._path("raw", "0_1_2", xyz_string(data.shape[:3]), xyz_string(start))
        body: Any = np.ascontiguousarray(data, dtype=self.dtype.newbyteorder("<")).data.cast("B")
        params: dict[str, Any] = self._params()
        if self.family == "labelmap":
            # Overwrites must go through DVID's mutation path so label indices stay right.
            params["mutate"] = "true"
            if DEFAULT_LABEL_WRITE_COMPRESSION == "lz4":
                body = lz4.block.compress(body, store_size=False)
                params["compression"] = "lz4"
        # A whole-block write is safe to repeat: it is retried like a read.
        self.node.transport.request("POST", path, params=params, data=body, idempotent=True, expect_empty=True)

    def _post_label_blocks(self, blocks: Mapping[ZYX, np.ndarray]) -> int:
        """labelmap ``POST /blocks?scale=s`` of gzip'd DVID label blocks (supervoxel ids), batched."""
        coords = sorted(blocks)
        sent = 0
        for part in _batches(coords, self.blocks_per_request):
            pieces: list[bytes] = []
            for coord in part:
                payload = encode_gzipped_label_block(np.ascontiguousarray(blocks[coord], dtype=np.uint64))
                pieces.append(_HEADER.pack(coord[2], coord[1], coord[0], len(payload)))
                pieces.append(payload)
            params = self._params(scale=self.scale) if self.scale else self._params()
            self.node.transport.request(
                "POST", self._path("blocks"), params=params, data=b"".join(pieces), idempotent=True, expect_empty=True
            )
            sent += 1
        return sent


# --------------------------------------------------------------------- helpers
_shared_transports: dict[Transport, Transport] = {}
_shared_lock = threading.Lock()


def shared_node(node: Node) -> Node:
    """``node`` on this process's one transport for its server settings.

    Objects unpickled in a worker (a dask task's store or reader) each bring a fresh
    :class:`~dvid_store.transport.Transport`; routing them through one shared transport
    per process and server configuration lets every task of a worker reuse its pooled
    connections. The shared transports close their sessions at interpreter exit.
    """
    transport = node.transport
    with _shared_lock:
        shared = _shared_transports.setdefault(transport, transport)
    if shared is transport:
        return node
    return Node(DvidClient.from_transport(shared), node.uuid)



def _fits(data: np.ndarray, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return bool(data.min() >= info.min and data.max() <= info.max)


def _unique_coords(coords: Iterable[Sequence[int]] | np.ndarray) -> list[ZYX]:
    seen: dict[ZYX, None] = {}
    for c in np.asarray(coords, dtype=np.int64).reshape(-1, 3) if isinstance(coords, np.ndarray) else coords:
        seen[as_zyx(c, "block coordinate")] = None
    return list(seen)


_parts_pool: ThreadPoolExecutor | None = None
_parts_pool_pid: int | None = None
_parts_lock = threading.Lock()


def _parts_executor() -> ThreadPoolExecutor:
    """The process's pool for the parts of one call (a new one after a fork)."""
    global _parts_pool, _parts_pool_pid
    with _parts_lock:
        if _parts_pool is None or _parts_pool_pid != os.getpid():
            _parts_pool = ThreadPoolExecutor(4 * PARTS_IN_FLIGHT, thread_name_prefix="dvid_store-part")
            _parts_pool_pid = os.getpid()
        return _parts_pool


def run_parts(run: Callable[[Any], None], parts: Sequence[Any], in_flight: int | None = None) -> None:
    """``run(part)`` for every part, :data:`PARTS_IN_FLIGHT` at a time; the first failure is raised.

    After a failure no new part starts, and the call returns only when the running
    ones have ended, so nothing writes into the caller's buffers afterwards.
    Called from a part itself, parts run one after another (the pool never waits on
    itself).
    """
    limit = PARTS_IN_FLIGHT if in_flight is None else in_flight
    if len(parts) <= 1 or limit <= 1 or threading.current_thread().name.startswith("dvid_store-part"):
        for part in parts:
            run(part)
        return
    pool = _parts_executor()
    waiting = iter(parts)
    running: set[Future[None]] = set()
    error: BaseException | None = None

    def start_next() -> None:
        part = next(waiting, _DONE)
        if part is not _DONE:
            running.add(pool.submit(run, part))

    for _ in range(limit):
        start_next()
    while running:
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        running -= done
        for future in done:
            failure = future.exception()
            if failure is not None and error is None:
                error = failure
        if error is None:
            for _ in done:
                start_next()
    if error is not None:
        raise error


_DONE = object()


def _batches(items: list[ZYX], size: int) -> Iterator[list[ZYX]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _overlap(box: Box, coord: ZYX, block_shape: ZYX) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices of (destination box, block) where block ``coord`` and ``box`` overlap."""
    dst, src = [], []
    for (a, b), c, n in zip(zip(box[0], box[1]), coord, block_shape):
        lo, hi = max(a, c * n), min(b, (c + 1) * n)
        dst.append(slice(lo - a, hi - a))
        src.append(slice(lo - c * n, hi - c * n))
    return tuple(dst), tuple(src)


def block_boxes(coords: Iterable[ZYX], max_blocks: int) -> list[tuple[ZYX, ZYX]]:
    """Cover a set of block coordinates with few disjoint boxes of whole blocks.

    Runs along x are merged across y where their x extents match, then across z
    where their (y, x) extents match; no box exceeds ``max_blocks`` blocks.

    Returns
    -------
    list of (start, count)
        First block ``(z, y, x)`` and number of blocks per axis of each box.
    """
    by_row: dict[tuple[int, int], list[int]] = {}
    for z, y, x in sorted(set(coords)):
        by_row.setdefault((z, y), []).append(x)
    # 1. x runs, each at most max_blocks long
    runs: dict[tuple[int, int, int], list[int]] = {}  # (z, x0, nx) -> list of y
    for (z, y), xs in by_row.items():
        start = prev = xs[0]
        for nxt in [*xs[1:], None]:
            if nxt is not None and nxt == prev + 1 and nxt - start < max_blocks:
                prev = nxt
                continue
            runs.setdefault((z, start, prev - start + 1), []).append(y)
            if nxt is not None:
                start = prev = nxt
    # 2. merge consecutive y of equal runs
    slabs: dict[tuple[int, int, int, int], list[int]] = {}  # (y0, ny, x0, nx) -> list of z
    for (z, x0, nx), ys in runs.items():
        ys.sort()
        start = prev = ys[0]
        for nxt in [*ys[1:], None]:
            if nxt is not None and nxt == prev + 1 and (nxt - start + 1) * nx <= max_blocks:
                prev = nxt
                continue
            slabs.setdefault((start, prev - start + 1, x0, nx), []).append(z)
            if nxt is not None:
                start = prev = nxt
    # 3. merge consecutive z of equal slabs
    boxes: list[tuple[ZYX, ZYX]] = []
    for (y0, ny, x0, nx), zs in slabs.items():
        zs.sort()
        start = prev = zs[0]
        for nxt in [*zs[1:], None]:
            if nxt is not None and nxt == prev + 1 and (nxt - start + 1) * ny * nx <= max_blocks:
                prev = nxt
                continue
            boxes.append(((start, y0, x0), (prev - start + 1, ny, nx)))
            if nxt is not None:
                start = prev = nxt
    boxes.sort()
    return boxes


class _Stream:
    """Exact-size reads from an iterator of byte pieces, without copying when possible."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._view = memoryview(b"")
        self._pos = 0

    def take(self, n: int) -> memoryview:
        """The next ``n`` bytes (fewer only at the end of the stream)."""
        end = self._pos + n
        if end <= len(self._view):
            out = self._view[self._pos : end]
            self._pos = end
            return out
        buf = bytearray(self._view[self._pos :])
        self._view, self._pos = memoryview(b""), 0
        while len(buf) < n:
            piece = next(self._pieces, None)
            if piece is None:
                return memoryview(buf)
            need = n - len(buf)
            if len(piece) <= need:
                buf += piece
            else:
                buf += piece[:need]
                self._view, self._pos = memoryview(piece), need
        return memoryview(buf)

    def rest(self, limit: int = 2000) -> bytes:
        """Up to ``limit`` bytes of what is left (for error messages)."""
        return bytes(self.take(limit))


def _records(stream: _Stream, max_payload: int, url: str) -> Iterator[tuple[ZYX, memoryview]]:
    """Parse ``int32 x, y, z, n; n bytes`` records into ((z, y, x), payload)."""
    while True:
        header = stream.take(16)
        if not header:
            return
        if len(header) < 16:
            raise _stream_error(url, "the block stream ended inside a record header", stream, bytes(header))
        x, y, z, n = _HEADER.unpack(header)
        if not 0 < n <= max_payload:
            raise _stream_error(url, f"implausible record (block {x},{y},{z} of {n} bytes)", stream, bytes(header))
        payload = stream.take(n)
        if len(payload) < n:
            raise _stream_error(url, f"the block stream ended inside block {x},{y},{z}", stream)
        yield (z, y, x), payload


def _stream_error(url: str, what: str, stream: _Stream, head: bytes = b"") -> MalformedAnswerError:
    text = (head + stream.rest()).decode("utf-8", "replace").strip()
    detail = f"; the rest of the answer begins: {text[:300]!r}" if text else ""
    return MalformedAnswerError("GET", url, 200, f"{what}{detail}")


def _box_coords(box: Box, block_shape: ZYX) -> list[ZYX]:
    return [tuple(int(v) for v in c) for c in block_coords_in_box(box, block_shape)]  # type: ignore[misc]
