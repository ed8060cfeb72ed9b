"""The two protobuf messages of DVID's keyvalue batch endpoints, without a protobuf library.

DVID's ``datatype/common/proto/keyvalue.proto`` (v1.0.0)::

    message KeyValue  { string key = 1; bytes value = 2; }
    message Keys      { repeated string keys = 1; }
    message KeyValues { repeated KeyValue kvs = 1; }

Every field is length-delimited (wire type 2), so the wire format is a sequence of
``tag varint, length varint, bytes``. The decoder skips fields it does not know
(newer servers add e.g. ``Keys.key_ranges = 2``), as protobuf requires.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import DvidError

__all__ = [
    "ProtobufError",
    "decode_key_values",
    "decode_keys",
    "encode_key_values",
    "encode_keys",
    "encode_varint",
    "int_field",
    "iter_fields",
    "len_field",
    "read_varint",
    "str_field",
]



class ProtobufError(DvidError):
    """A protobuf message from the server could not be decoded."""


# ------------------------------------------------------------------ wire format
# Shared with the labelmap messages (:mod:`._label_proto`).
VARINT, I64, LEN, I32 = 0, 1, 2, 5
_TAG_1 = (1 << 3) | LEN  # field 1, length-delimited: 0x0a
_TAG_2 = (2 << 3) | LEN  # field 2, length-delimited: 0x12


def encode_varint(value: int) -> bytes:
    """An unsigned varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_key(number: int, wire: int) -> bytes:
    return encode_varint((number << 3) | wire)


def len_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (bytes, string, sub-message, packed numbers)."""
    return field_key(number, LEN) + encode_varint(len(payload)) + payload


def int_field(number: int, value: int) -> bytes:
    """A varint field; proto3 leaves zeros out."""
    return field_key(number, VARINT) + encode_varint(value) if value else b""


def str_field(number: int, value: str) -> bytes:
    """A string field; proto3 leaves empty strings out."""
    return len_field(number, value.encode("utf-8")) if value else b""


def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """The unsigned 64-bit varint at ``pos`` and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated protobuf message (varint runs past the end)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("malformed protobuf varint (longer than 10 bytes)")


def iter_fields(data: bytes | bytearray | memoryview) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(field number, wire type, value)``: an int for varints, a memoryview for
    length-delimited fields; fixed-size fields are skipped (no message here has any)."""
    buf = memoryview(data)
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
            yield number, wire, value
        elif wire == LEN:
            size, pos = read_varint(buf, pos)
            if pos + size > end:
                raise ProtobufError("truncated protobuf message (field runs past the end)")
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire in (I64, I32):
            pos += 8 if wire == I64 else 4
            if pos > end:
                raise ProtobufError("truncated protobuf message (fixed-size field runs past the end)")
        else:
            raise ProtobufError(f"unsupported protobuf wire type {wire} (field {number})")


def _field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + encode_varint(len(payload)) + payload


def _fields(data: bytes | bytearray | memoryview) -> Iterator[tuple[int, memoryview]]:
    """Yield ``(field number, payload)`` of the length-delimited fields; skip the others."""
    for number, wire, value in iter_fields(data):
        if wire == LEN:
            yield number, value


def encode_keys(keys: Iterable[str]) -> bytes:
    """Serialize a ``Keys`` message."""
    return b"".join(_field(_TAG_1, key.encode("utf-8")) for key in keys)


def decode_keys(data: bytes | bytearray | memoryview) -> list[str]:
    """Parse a ``Keys`` message."""
    return [bytes(payload).decode("utf-8") for number, payload in _fields(data) if number == 1]


def encode_key_values(items: Iterable[tuple[str, bytes | bytearray | memoryview]]) -> bytes:
    """Serialize a ``KeyValues`` message from ``(key, value)`` pairs, in order."""
    parts = []
    for key, value in items:
        body = _field(_TAG_1, key.encode("utf-8"))
        if len(value):  # proto3 leaves empty fields out
            body += _field(_TAG_2, bytes(value))
        parts.append(_field(_TAG_1, body))
    return b"".join(parts)


def decode_key_values(data: bytes | bytearray | memoryview) -> list[tuple[str, bytes]]:
    """Parse a ``KeyValues`` message into ``(key, value)`` pairs, in message order.

    A pair whose value field is absent (proto3's encoding of an empty value) gets ``b""``.
    """
    out: list[tuple[str, bytes]] = []
    for number, entry in _fields(data):
        if number != 1:
            continue
        key, value = "", b""
        for sub, payload in _fields(entry):
            if sub == 1:
                key = bytes(payload).decode("utf-8")
            elif sub == 2:
                value = bytes(payload)
        out.append((key, value))
    return out
