"""keyvalue: single keys, listings, ranges, batches, awkward keys, refusals — against the real server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dvid_store import (
    DvidInputError,
    LockedNodeError,
    Node,
    NotFoundError,
    UnsupportedError,
)
from dvid_store.datatypes import _protobuf
from dvid_store.datatypes.keyvalue import KeyValue

#: Keys that need percent-encoding, that DVID's Printf mangles in listings, or both.
AWKWARD_KEYS = [
    "with space",
    "question?mark",
    "hash#tag",
    "per%cent",
    "p%%double",
    "width%5dverb",
    "trailing%",
    'quote%"mark',
    "back%\\slash",
    "amp&ersand",
    "plus+sign",
    "ünïcødé €",
    "emoji 😀",
    'plain"quote',
    "back\\slash",
    "tab\tand\nnewline",
    "semi;colon=equals",
    "a.",
    "..x",
]


def utf8_sorted(keys):
    return sorted(keys, key=lambda k: k.encode("utf-8"))


def random_keys(count: int, seed: int) -> list[str]:
    pool = list("abcXYZ019 ?#%&+=;:.,'\"\\-_~!$()*@[]{}|^`<>") + ["ü", "€", "😀", "中", "\t"]
    rng = np.random.default_rng(seed)
    keys = set()
    while len(keys) < count:
        key = "".join(rng.choice(pool, size=int(rng.integers(1, 12))))
        if key not in (".", ".."):
            keys.add(key)
    return sorted(keys)


@pytest.fixture
def kv(dvid_node: Node) -> KeyValue:
    return KeyValue.create(dvid_node, "kv")


# --------------------------------------------------------------- single keys
def test_put_get_exists_delete(dvid_node: Node, kv: KeyValue) -> None:
    value = bytes(range(256)) * 3
    kv.put("blob", value)
    assert dvid_node.keyvalue("kv") == kv
    assert kv.get("blob") == value
    assert kv.exists("blob") and "blob" in kv
    assert not kv.exists("other") and "other" not in kv
    kv.delete("blob")
    assert not kv.exists("blob")
    with pytest.raises(NotFoundError, match="not found"):
        kv.get("blob")
    kv.delete("blob")  # DVID: deleting a missing key is fine


def test_put_accepts_bytearray_and_memoryview(kv: KeyValue) -> None:
    array = np.arange(10, dtype=np.uint16)
    kv.put("view", memoryview(array))
    kv.put("ba", bytearray(b"xyz"))
    assert np.array_equal(np.frombuffer(kv.get("view"), dtype=np.uint16), array)
    assert kv.get("ba") == b"xyz"


def test_json_round_trip(kv: KeyValue) -> None:
    doc = {"name": "body 17", "sizes": [1, 2, 3], "nested": {"ok": True, "none": None}, "text": "ünï"}
    kv.put_json("doc", doc)
    assert kv.get_json("doc") == doc
    assert json.loads(kv.get("doc")) == doc
    kv.put("raw", b"\xff not json")
    with pytest.raises(DvidInputError, match="not JSON"):
        kv.get_json("raw")


def test_dict_like_access(kv: KeyValue) -> None:
    kv["a"] = b"1"
    kv["b"] = b"2"
    assert kv["a"] == b"1"
    assert list(kv) == ["a", "b"]
    del kv["a"]
    assert "a" not in kv
    with pytest.raises(KeyError):
        kv["a"]
    assert 42 not in kv  # not a str key: no request, just False


def test_libdvid_names(kv: KeyValue) -> None:
    kv.put("k2", b"b")
    kv.put("k1", b"a")
    assert kv.get_keys() == kv.keys() == ["k1", "k2"]


# ---------------------------------------------------------------- odd keys
def test_awkward_keys_round_trip_exactly(dvid_node: Node, kv: KeyValue) -> None:
    for key in AWKWARD_KEYS:
        kv.put(key, key.encode("utf-8") + b"!")
    for key in AWKWARD_KEYS:
        assert kv.get(key) == key.encode("utf-8") + b"!"
        assert kv.exists(key)
    # The server's own listing mangles every key with '%' (Go Printf) ...
    raw = dvid_node.custom_request("/kv/keys").decode("utf-8")
    assert "%!" in raw
    # ... and the client repairs it.
    assert kv.keys() == utf8_sorted(AWKWARD_KEYS)
    assert kv.get_many(AWKWARD_KEYS) == {k: k.encode("utf-8") + b"!" for k in AWKWARD_KEYS}
    assert kv.values_in_range("\x00", "\U0010ffff") == {
        k: k.encode("utf-8") + b"!" for k in utf8_sorted(AWKWARD_KEYS)
    }
    kv.delete("per%cent")
    assert not kv.exists("per%cent")


def test_random_keys_round_trip_in_batches(kv: KeyValue) -> None:
    keys = random_keys(300, seed=7)
    values = {k: f"value of {k}".encode() for k in keys}
    kv.put_many(values)
    assert kv.keys() == utf8_sorted(keys)
    assert kv.get_many(keys) == values
    for key in keys[:25]:
        assert kv.get(key) == values[key]


def test_listing_that_is_not_even_json_is_repaired(dvid_node: Node, kv: KeyValue) -> None:
    keys = ["a", "ends with%", "m", "x%y", "z"]
    kv.put_many({k: b"v" for k in keys})
    raw = dvid_node.custom_request("/kv/keys").decode("utf-8")
    with pytest.raises(ValueError):
        json.loads(raw)  # '%"' became '%!"(MISSING)': the server's JSON is broken
    assert kv.keys() == utf8_sorted(keys)
    assert kv.keys_in_range("b", "y") == ["ends with%", "m", "x%y"]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("a/b", "contains '/'"),
        ("", "empty"),
        (".", "dot segment"),
        ("..", "dot segment"),
        ("\ud800", "not valid Unicode"),
        (b"bytes", "must be a str"),
        (7, "must be a str"),
    ],
)
def test_unaddressable_keys_are_refused_before_sending(dvid_node: Node, kv: KeyValue, key, reason: str) -> None:
    sent = dvid_node.transport.requests_sent
    for call in (
        lambda: kv.put(key, b"x"),
        lambda: kv.get(key),
        lambda: kv.exists(key),
        lambda: kv.delete(key),
        lambda: kv.get_many(["fine", key]),
        lambda: kv.put_many({"fine": b"x", key: b"x"}),
        lambda: kv.keys_in_range(key, "z"),
    ):
        with pytest.raises(DvidInputError, match=reason):
            call()
    assert dvid_node.transport.requests_sent == sent
    assert kv.keys() == []  # nothing was half-written by the batch calls


def test_slash_really_cannot_be_addressed(dvid_node: Node, kv: KeyValue) -> None:
    # What the refusal protects from: DVID stores "%2F" keys under the first segment only.
    dvid_node.custom_request("/kv/key/a%2Fb", b"x", "POST")
    assert kv.keys() == ["a"]


# ------------------------------------------------------------------- values
def test_empty_values_are_refused_because_dvid_reads_them_as_missing(dvid_node: Node, kv: KeyValue) -> None:
    sent = dvid_node.transport.requests_sent
    with pytest.raises(DvidInputError, match="empty value"):
        kv.put("k", b"")
    with pytest.raises(DvidInputError, match="empty value"):
        kv.put_many({"a": b"1", "k": b""})
    assert dvid_node.transport.requests_sent == sent
    # The server behaviour behind the refusal:
    dvid_node.custom_request("/kv/key/empty", b"", "POST")
    assert kv.exists("empty") and kv.keys() == ["empty"]
    with pytest.raises(NotFoundError):
        kv.get("empty")
    assert kv.get_many(["empty"]) == {}


@pytest.mark.parametrize("value", ["text", 3, [1, 2], None])
def test_non_bytes_values_are_refused(kv: KeyValue, value) -> None:
    with pytest.raises(DvidInputError, match="must be bytes"):
        kv.put("k", value)


# ------------------------------------------------------------------- ranges
def test_key_ranges_are_inclusive_in_byte_order(kv: KeyValue) -> None:
    keys = ["a", "b", "ba", "bz", "c", "é", "z"]
    kv.put_many({k: k.encode("utf-8") * 2 for k in keys})
    assert kv.keys_in_range("b", "c") == ["b", "ba", "bz", "c"]
    assert kv.keys_in_range("bb", "by") == []
    assert kv.keys_in_range("c", "\U0010ffff") == ["c", "z", "é"]  # UTF-8 byte order
    assert kv.values_in_range("ba", "bz") == {"ba": b"baba", "bz": b"bzbz"}
    assert kv.values_in_range("x", "y") == {}


def test_byte_range_reads_are_unsupported_on_v1(dvid_node: Node, kv: KeyValue) -> None:
    kv.put("long", b"0123456789")
    with pytest.raises(UnsupportedError, match="byte range"):
        kv.get("long", byte_range=(2, 5))
    assert kv.get("long")[2:5] == b"234"
    sent = dvid_node.transport.requests_sent
    for bad in [(5, 5), (-1, 3), (4, 2), ("a", 3), (1,)]:
        with pytest.raises(DvidInputError, match="byte_range"):
            kv.get("long", byte_range=bad)
    assert dvid_node.transport.requests_sent == sent


# ----------------------------------------------------------------- batches
def test_batches_use_one_request_each(dvid_node: Node, kv: KeyValue) -> None:
    values = {f"key{i:04d}": np.random.default_rng(i).bytes(int(i % 50) + 1) for i in range(500)}
    sent = dvid_node.transport.requests_sent
    kv.put_many(values)
    assert dvid_node.transport.requests_sent - sent <= 2  # the POST (+ at most one lock check)
    sent = dvid_node.transport.requests_sent
    got = kv.get_many(list(values) + ["absent-1", "absent-2"])
    assert dvid_node.transport.requests_sent - sent == 1
    assert got == values
    assert list(got) == list(values)  # asked order


def test_batches_are_split_by_size(dvid_node: Node, kv: KeyValue) -> None:
    kv.GET_BATCH_KEYS = 40
    kv.PUT_BATCH_BYTES = 1000
    values = {f"k{i:03d}": bytes([i % 256]) * 90 for i in range(100)}
    kv.put_many(values.items())
    assert kv.keys() == sorted(values)
    sent = dvid_node.transport.requests_sent
    assert kv.get_many(values) == values
    assert dvid_node.transport.requests_sent - sent == 3  # 100 keys in batches of 40
    kv.put_many({})  # nothing to do, nothing sent
    assert kv.get_many([]) == {}


def test_get_many_skips_duplicates(kv: KeyValue) -> None:
    kv.put("a", b"1")
    assert kv.get_many(["a", "a", "b", "a"]) == {"a": b"1"}


# ---------------------------------------------------------------- versions
def test_locked_nodes_refuse_writes_before_sending(dvid_node: Node, kv: KeyValue) -> None:
    kv.put("k", b"v1")
    dvid_node.commit("done")
    sent = dvid_node.transport.requests_sent
    for call in (
        lambda: kv.put("k", b"v2"),
        lambda: kv.put_json("j", {}),
        lambda: kv.put_many({"k": b"v2"}),
        lambda: kv.delete("k"),
    ):
        with pytest.raises(LockedNodeError):
            call()
    assert dvid_node.transport.requests_sent == sent
    assert kv.get("k") == b"v1"  # reads still work
    child = dvid_node.new_version()
    child_kv = child.keyvalue("kv")
    child_kv.put("k", b"v2")
    assert child_kv.get("k") == b"v2" and kv.get("k") == b"v1"


def test_unversioned_instances_take_writes_on_committed_nodes(dvid_node: Node) -> None:
    kv = KeyValue.create(dvid_node, "scratch", versioned=False)
    dvid_node.commit("done")
    kv.put("k", b"v")
    assert kv.get("k") == b"v"


def test_wrong_type_is_refused(dvid_node: Node) -> None:
    dvid_node.create_instance("roi", "cells")
    with pytest.raises(DvidInputError, match="is a roi"):
        dvid_node.keyvalue("cells")


# ---------------------------------------------------------------- protobuf
def test_protobuf_round_trips_and_skips_unknown_fields() -> None:
    pairs = [("a", b"1"), ("ünï", bytes(300)), ("empty", b""), ("k" * 200, b"\x00\xff")]
    encoded = _protobuf.encode_key_values(pairs)
    assert _protobuf.decode_key_values(encoded) == pairs
    keys = ["x", "ü", "z" * 130]
    assert _protobuf.decode_keys(_protobuf.encode_keys(keys)) == keys
    # Fields of newer DVIDs (varint, fixed64, fixed32 and length-delimited) are skipped.
    extra = b"\x10\x96\x01" + b"\x19" + bytes(8) + b"\x25" + bytes(4) + b"\x12\x02hi"
    assert _protobuf.decode_keys(extra + _protobuf.encode_keys(keys)) == keys
    for broken in (encoded[:-1], b"\x0a\x05ab", b"\x80", b"\x0b"):
        with pytest.raises(_protobuf.ProtobufError):
            _protobuf.decode_key_values(broken)
