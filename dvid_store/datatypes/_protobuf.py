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

from collections.abc import Iterable

from ..errors import DvidError

__all__ = ["ProtobufError", "decode_key_values", "decode_keys", "encode_key_values", "encode_keys"]

_LEN = 2  # wire type "length-delimited"
_TAG_1 = (1 << 3) | _LEN  # field 1, length-delimited: 0x0a
_TAG_2 = (2 << 3) | _LEN  # field 2, length-delimited: 0x12


class ProtobufError(DvidError):
    """A protobuf message from the server could not be decoded."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(payload)) + payload


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated protobuf message (varint runs past the end)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("malformed protobuf varint (longer than 10 bytes)")


def _fields(data: bytes | bytearray | memoryview) -> Iterable[tuple[int, memoryview]]:
    """Yield ``(field number, payload)`` of the length-delimited fields; skip the others."""
    buf = memoryview(data)
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _LEN:
            size, pos = _read_varint(buf, pos)
            if pos + size > len(buf):
                raise ProtobufError("truncated protobuf message (field runs past the end)")
            yield number, buf[pos : pos + size]
            pos += size
        elif wire == 0:
            _, pos = _read_varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ProtobufError(f"unsupported protobuf wire type {wire} (field {number})")
    if pos != len(buf):
        raise ProtobufError("truncated protobuf message (fixed-size field runs past the end)")


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
