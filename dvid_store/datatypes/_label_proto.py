"""labelmap's protobuf messages (label indices, mapping ops), without a protobuf library.

DVID v1.0.0's ``datatype/common/proto/labelops.proto`` defines, among others::

    message SVCount      { map<uint64, uint32> counts = 1; }
    message LabelIndex   { map<uint64, SVCount> blocks = 1; uint64 label = 2;
                           uint64 last_mut_id = 3; string last_mod_time = 4;
                           string last_mod_user = 5; string last_mod_app = 6; }
    message LabelIndices { repeated LabelIndex indices = 1; }
    message MappingOp    { uint64 mutid = 1; uint64 mapped = 2; repeated uint64 original = 3; }
    message MappingOps   { repeated MappingOp mappings = 1; }

A protobuf ``map<K, V>`` is a repeated entry message ``{K key = 1; V value = 2;}``.
The block keys of a label index pack the block coordinate ``(bz, by, bx)`` into one
uint64 (``datatype/common/labels/index.go``): three 21-bit sign-magnitude fields,
z in bits 62-42, y in 41-21, x in 20-0, each a sign bit (bit 20) over a 20-bit
magnitude. Newer servers add fields (e.g. ``SVCount.surface_mutid``); the decoder
skips fields it does not know, as protobuf requires.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._protobuf import (
    LEN,
    VARINT,
    encode_varint,
    int_field,
    iter_fields,
    len_field,
    read_varint,
    str_field,
)

__all__ = [
    "LabelIndex",
    "decode_block_keys",
    "decode_label_index",
    "decode_label_indices",
    "decode_mapping_ops",
    "encode_block_keys",
    "encode_label_index",
    "encode_label_indices",
    "encode_mapping_ops",
]

_MAG = 0xFFFFF  # 20-bit magnitude of one block coordinate
_SIGN = 0x100000
_LIMIT = 1 << 20


def _packed_uint64(wire: int, value: Any, out: list[int]) -> None:
    """Append a repeated uint64 field's values: packed (one bytes field) or one varint."""
    if wire == VARINT:
        out.append(value)
        return
    pos = 0
    while pos < len(value):
        item, pos = read_varint(value, pos)
        out.append(item)


def _map_entry(entry: memoryview) -> tuple[int, Any]:
    key: int = 0
    value: Any = None
    for number, wire, item in iter_fields(entry):
        if number == 1 and wire == VARINT:
            key = item
        elif number == 2:
            value = item
    return key, value


# ------------------------------------------------------------------ block keys
def encode_block_keys(coords: Any) -> np.ndarray:
    """Pack ``(N, 3)`` block coordinates ``(bz, by, bx)`` into DVID's uint64 block keys.

    Raises
    ------
    ValueError
        A coordinate's magnitude does not fit DVID's 20 bits (±1048575 blocks).
    """
    zyx = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
    if len(zyx) and np.abs(zyx).max() >= _LIMIT:
        raise ValueError(f"block coordinates must lie within ±{_LIMIT - 1} to fit DVID's label index keys")
    keys = np.zeros(len(zyx), dtype=np.uint64)
    for column, shift in ((0, 42), (1, 21), (2, 0)):
        c = zyx[:, column]
        packed = np.abs(c).astype(np.uint64) | np.where(c < 0, np.uint64(_SIGN), np.uint64(0))
        keys |= packed << np.uint64(shift)
    return keys


def decode_block_keys(keys: Any) -> np.ndarray:
    """Unpack DVID's uint64 block keys into int32 ``(N, 3)`` block coordinates ``(bz, by, bx)``."""
    k = np.asarray(keys, dtype=np.uint64).reshape(-1)
    out = np.empty((len(k), 3), dtype=np.int32)
    for column, shift in ((0, 42), (1, 21), (2, 0)):
        part = (k >> np.uint64(shift)) & np.uint64(_MAG | _SIGN)
        magnitude = (part & np.uint64(_MAG)).astype(np.int32)
        out[:, column] = np.where(part & np.uint64(_SIGN), -magnitude, magnitude)
    return out


# ------------------------------------------------------------------ label index
@dataclass
class LabelIndex:
    """DVID's label index of one body: which blocks hold which of its supervoxels, and how much.

    Attributes
    ----------
    label : int
        The body (or, for an unmerged supervoxel, supervoxel) id.
    blocks : dict of (bz, by, bx) to dict of int to int
        For each block coordinate holding the label, the voxel count of each
        supervoxel in it.
    last_mutid : int
        Id of the last mutation that changed the label (0 for never).
    last_mod_time : str
        RFC 3339 time of that change ("" when unknown).
    last_mod_user, last_mod_app : str
        Who and what made it ("" when unknown).
    """

    label: int
    blocks: dict[tuple[int, int, int], dict[int, int]] = field(default_factory=dict)
    last_mutid: int = 0
    last_mod_time: str = ""
    last_mod_user: str = ""
    last_mod_app: str = ""

    @property
    def num_voxels(self) -> int:
        """Voxels of the label: the sum of every count."""
        return sum(sum(counts.values()) for counts in self.blocks.values())

    def supervoxel_sizes(self) -> dict[int, int]:
        """Voxel count of each supervoxel, keyed by supervoxel id in increasing order."""
        sizes: dict[int, int] = {}
        for counts in self.blocks.values():
            for sv, n in counts.items():
                sizes[sv] = sizes.get(sv, 0) + n
        return dict(sorted(sizes.items()))

    def supervoxels(self) -> np.ndarray:
        """Sorted uint64 ids of the supervoxels in the index."""
        return np.asarray(sorted({sv for counts in self.blocks.values() for sv in counts}), dtype=np.uint64)

    def block_coords(self, supervoxels: Iterable[int] | None = None) -> np.ndarray:
        """int32 ``(N, 3)`` block coordinates ``(bz, by, bx)`` holding the label, sorted.

        The coarse sparse volume, like ``GET /sparsevol-coarse`` answers it.

        Parameters
        ----------
        supervoxels : iterable of int, optional
            Only blocks holding one of these supervoxels.
        """
        wanted = None if supervoxels is None else {int(s) for s in supervoxels}
        coords = [c for c, counts in self.blocks.items() if wanted is None or not wanted.isdisjoint(counts)]
        arr = np.asarray(coords, dtype=np.int32).reshape(-1, 3)
        return arr[np.lexsort((arr[:, 2], arr[:, 1], arr[:, 0]))]

    def to_frame(self) -> Any:
        """The index as a table, one row per (block, supervoxel).

        Returns
        -------
        pandas.DataFrame
            Columns ``bz``, ``by``, ``bx`` (int32 block coordinates), ``sv`` (uint64
            supervoxel id) and ``count`` (uint32 voxels of that supervoxel in that
            block), sorted by block then supervoxel.
        """
        from ._frames import pandas

        pd = pandas("LabelIndex.to_frame()")
        rows = [(c[0], c[1], c[2], sv, n) for c, counts in self.blocks.items() for sv, n in counts.items()]
        frame = pd.DataFrame(
            {
                "bz": np.asarray([r[0] for r in rows], dtype=np.int32),
                "by": np.asarray([r[1] for r in rows], dtype=np.int32),
                "bx": np.asarray([r[2] for r in rows], dtype=np.int32),
                "sv": np.asarray([r[3] for r in rows], dtype=np.uint64),
                "count": np.asarray([r[4] for r in rows], dtype=np.uint32),
            }
        )
        return frame.sort_values(["bz", "by", "bx", "sv"], ignore_index=True)

    @classmethod
    def from_frame(
        cls,
        frame: Any,
        label: int,
        *,
        last_mutid: int = 0,
        last_mod_time: str = "",
        last_mod_user: str = "",
        last_mod_app: str = "",
    ) -> LabelIndex:
        """Build an index from a table like :meth:`to_frame`'s (columns ``bz``, ``by``, ``bx``, ``sv``, ``count``).

        Rows of the same block and supervoxel add up.
        """
        missing = [c for c in ("bz", "by", "bx", "sv", "count") if c not in frame.columns]
        if missing:
            raise ValueError(f"a label index table needs columns bz, by, bx, sv, count; missing {missing}")
        index = cls(int(label), last_mutid=last_mutid, last_mod_time=last_mod_time,
                    last_mod_user=last_mod_user, last_mod_app=last_mod_app)
        columns = [frame[c].to_numpy().tolist() for c in ("bz", "by", "bx", "sv", "count")]
        for bz, by, bx, sv, n in zip(*columns):
            counts = index.blocks.setdefault((int(bz), int(by), int(bx)), {})
            counts[int(sv)] = counts.get(int(sv), 0) + int(n)
        return index

    def encode(self) -> bytes:
        """This index as DVID's ``LabelIndex`` protobuf message."""
        return encode_label_index(self)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> LabelIndex:
        """Parse DVID's ``LabelIndex`` protobuf message."""
        return decode_label_index(data)


def decode_label_index(data: bytes | bytearray | memoryview) -> LabelIndex:
    """Parse a ``LabelIndex`` message (see :class:`LabelIndex`)."""
    index = LabelIndex(label=0)
    keys: list[int] = []
    counts_of: list[dict[int, int]] = []
    for number, wire, value in iter_fields(data):
        if number == 1 and wire == LEN:
            key, svcount = _map_entry(value)
            counts: dict[int, int] = {}
            if svcount is not None:
                for sub, sub_wire, entry in iter_fields(svcount):
                    if sub == 1 and sub_wire == LEN:
                        sv, n = _map_entry(entry)
                        counts[sv] = counts.get(sv, 0) + int(n or 0)
            keys.append(key)
            counts_of.append(counts)
        elif number == 2 and wire == VARINT:
            index.label = value
        elif number == 3 and wire == VARINT:
            index.last_mutid = value
        elif number in (4, 5, 6) and wire == LEN:
            text = bytes(value).decode("utf-8", errors="replace")
            setattr(index, ("last_mod_time", "last_mod_user", "last_mod_app")[number - 4], text)
    coords = decode_block_keys(np.asarray(keys, dtype=np.uint64)).tolist()
    for coord, counts in zip(coords, counts_of):
        index.blocks.setdefault((coord[0], coord[1], coord[2]), {}).update(counts)
    return index


def encode_label_index(index: LabelIndex) -> bytes:
    """Serialize a :class:`LabelIndex` as DVID's ``LabelIndex`` message.

    Raises
    ------
    ValueError
        A supervoxel count does not fit uint32, or a block coordinate does not fit
        DVID's block keys.
    """
    coords = list(index.blocks)
    keys = encode_block_keys(np.asarray(coords, dtype=np.int64).reshape(-1, 3)).tolist()
    parts: list[bytes] = []
    for key, coord in zip(keys, coords):
        entries = []
        for sv, n in sorted(index.blocks[coord].items()):
            if not 0 <= int(n) < 2**32:
                raise ValueError(f"supervoxel {sv} has {n} voxels in block {coord}: a count is a uint32")
            entries.append(len_field(1, int_field(1, int(sv)) + int_field(2, int(n))))
        svcount = b"".join(entries)
        parts.append(len_field(1, int_field(1, key) + len_field(2, svcount)))
    parts.append(int_field(2, int(index.label)))
    parts.append(int_field(3, int(index.last_mutid)))
    parts.append(str_field(4, index.last_mod_time))
    parts.append(str_field(5, index.last_mod_user))
    parts.append(str_field(6, index.last_mod_app))
    return b"".join(parts)


def decode_label_indices(data: bytes | bytearray | memoryview) -> list[LabelIndex]:
    """Parse a ``LabelIndices`` message, in message order."""
    return [decode_label_index(value) for number, wire, value in iter_fields(data) if number == 1 and wire == LEN]


def encode_label_indices(indices: Iterable[LabelIndex]) -> bytes:
    """Serialize ``LabelIndices``."""
    return b"".join(len_field(1, encode_label_index(index)) for index in indices)


# ------------------------------------------------------------------ mappings
def encode_mapping_ops(groups: Mapping[int, Iterable[int]], mutid: int = 0) -> bytes:
    """Serialize ``MappingOps``: one ``MappingOp`` per body, its supervoxels packed.

    Parameters
    ----------
    groups : mapping of int to iterable of int
        Body id → the supervoxel ids mapped to it.
    mutid : int
        Mutation id recorded with every op.
    """
    parts = []
    for body, svs in groups.items():
        packed = b"".join(encode_varint(int(sv)) for sv in svs)
        op = int_field(1, int(mutid)) + int_field(2, int(body))
        if packed:
            op += len_field(3, packed)
        parts.append(len_field(1, op))
    return b"".join(parts)


def decode_mapping_ops(data: bytes | bytearray | memoryview) -> list[tuple[int, int, list[int]]]:
    """Parse ``MappingOps`` into ``(mutid, mapped, originals)`` triples."""
    out = []
    for number, wire, value in iter_fields(data):
        if number != 1 or wire != LEN:
            continue
        mutid = mapped = 0
        originals: list[int] = []
        for sub, sub_wire, item in iter_fields(value):
            if sub == 1 and sub_wire == VARINT:
                mutid = item
            elif sub == 2 and sub_wire == VARINT:
                mapped = item
            elif sub == 3:
                _packed_uint64(sub_wire, item, originals)
        out.append((mutid, mapped, originals))
    return out
