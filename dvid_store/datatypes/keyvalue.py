"""DVID's ``keyvalue`` datatype: named byte strings, read and written one by one or in batches.

libdvid equivalents (``DVIDNodeService`` → here, with ``kv = node.keyvalue(name)``):

| libdvid | dvid_store |
| --- | --- |
| ``create_keyvalue(name)`` | ``KeyValue.create(node, name)`` |
| ``put(name, key, value)`` | ``kv.put(key, value)`` |
| ``get(name, key)`` | ``kv.get(key)`` |
| ``get_json(name, key)`` | ``kv.get_json(key)`` |
| ``get_keys(name)`` | ``kv.get_keys()`` (same as ``kv.keys()``) |

Keys
----
A key is a non-empty ``str``. It travels as one percent-encoded URL path segment,
so spaces, ``?``, ``#``, ``%``, ``&``, ``+`` and any Unicode round-trip exactly.
DVID splits the *decoded* path on ``/``, so a key containing ``/`` cannot be
addressed at all; ``"."`` and ``".."`` are removed from URLs by HTTP clients as
dot segments. Such keys, and empty keys, are refused before anything is sent.

What the v1.0.0 server really does (checked against it by the tests)
-------------------------------------------------------------------
* A zero-length value is stored, and ``HEAD`` and the key listing report the
  key, but ``GET`` answers 404 "not found". The client therefore refuses to
  store empty values.
* ``GET /keys`` and ``GET /keyrange`` print their JSON through Go's ``Printf``, so
  every key containing ``%`` comes back mangled (``"p%x"`` → ``"p%!x(MISSING)"``).
  :meth:`KeyValue.keys` and :meth:`KeyValue.keys_in_range` repair this: for each
  such key they re-read the exact names with the protobuf
  ``GET /keyrangevalues`` over the keys sharing the prefix before the ``%``
  (this transfers those keys' values too). A key ending in ``%``, or with ``%``
  before ``"`` or ``\\``, even makes the listing invalid JSON; then the whole
  listed range is re-read that way.
* There are no byte ranges (no ``Range`` support, no ``byte_start``); see
  :meth:`KeyValue.get`.
* ``DELETE`` of a missing key succeeds silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar, cast

from ..errors import DvidInputError, MalformedAnswerError, NotFoundError, UnsupportedError
from ..transport import Answer
from . import _protobuf
from .base import Instance

__all__ = ["KeyValue"]

BytesLike = bytes | bytearray | memoryview


class KeyValue(Instance):
    """A ``keyvalue`` instance: ``str`` keys → ``bytes`` values.

    Also usable like a small dict: ``kv[key]`` (raises ``KeyError`` when missing),
    ``kv[key] = value``, ``del kv[key]``, ``key in kv`` and ``for key in kv``.
    It is not a full ``Mapping``: :meth:`get` raises instead of returning ``None``.

    Parameters
    ----------
    node : Node
        The version to read from and write to.
    name : str
        The instance name.
    """

    typenames: ClassVar[tuple[str, ...]] = ("keyvalue",)
    default_typename: ClassVar[str] = "keyvalue"

    #: Keys per ``GET /keyvalues`` request in :meth:`get_many`.
    GET_BATCH_KEYS = 10_000
    #: Approximate body size per ``POST /keyvalues`` request in :meth:`put_many`.
    PUT_BATCH_BYTES = 64 * 2**20

    # ------------------------------------------------------------ one key
    def put(self, key: str, value: BytesLike) -> None:
        """Store ``value`` under ``key`` (replacing any previous value).

        Parameters
        ----------
        key : str
            See the module notes for which keys DVID can address.
        value : bytes, bytearray or memoryview
            The bytes to store; must not be empty (DVID v1.0.0 reads empty values
            back as missing).

        Raises
        ------
        DvidInputError
            Bad key, or a value that is not bytes-like or is empty.
        LockedNodeError
            The node is committed (and the instance versioned).
        """
        self._check_key(key)
        body = _check_value(key, value)
        self.require_writable(f"storing key {key!r}")
        self.transport.request("POST", self.path("key", key), data=body, idempotent=True, expect_empty=True)

    def get(self, key: str, *, byte_range: tuple[int, int] | None = None) -> bytes:
        """The value stored under ``key``.

        Parameters
        ----------
        key : str
            The key.
        byte_range : (int, int), optional
            Half-open ``(start, stop)`` byte offsets to read only part of the value,
            sent as an HTTP ``Range`` header. Only DVID servers newer than v1.0.0
            support ranges (they answer 206). A server that ignores the header
            answers with the whole value; the client then stops reading and raises
            :class:`UnsupportedError` rather than download the whole value
            silently. Use ``kv.get(key)[start:stop]`` on such servers.

        Raises
        ------
        NotFoundError
            No such key.
        UnsupportedError
            A ``byte_range`` was asked from a server without range support.
        DvidHTTPError
            Status 416: the range starts beyond the end of the value.
        """
        self._check_key(key)
        if byte_range is None:
            # Through GET /keyvalues, not GET /key: DVID sends a large value as a chunked
            # body with no length, which a proxy can end early without a trace; in the
            # protobuf answer every value carries its length.
            value = self._fetch_values([key]).get(key, b"")
            if not value:
                raise NotFoundError("GET", self.transport.url(self.path("key", key)), 404, f"key {key!r} not found")
            return value
        start, stop = _check_range(byte_range)

        def read_range(pieces: Iterator[bytes], head: Answer) -> bytes | None:
            if head.status_code != 206:
                return None  # the whole value (or not DVID's answer): stop reading, it may be huge
            first, last, _ = _content_range(head.headers.get("Content-Range", ""))
            if first != start or last > stop - 1:
                raise MalformedAnswerError(
                    "GET", "", 206, f"asked for bytes {start}-{stop - 1}, the answer holds {first}-{last}"
                )
            body = b"".join(pieces)
            if len(body) != last - first + 1:
                raise MalformedAnswerError(
                    "GET", "", 206, f"the answer holds {len(body)} bytes of the range {first}-{last}"
                )
            return body

        body = self.transport.stream(
            "GET", self.path("key", key), read_range, with_head=True,
            headers={"Range": f"bytes={start}-{stop - 1}"}, allow_html=True,
        )
        if body is None:
            raise UnsupportedError(
                f"the DVID server at {self.node.client.url} ignored the byte range for key {key!r} "
                "(it answered with the whole value: DVID v1.0.0 has no keyvalue byte ranges); "
                "read the whole value with get(key) and slice it instead"
            )
        return body

    def put_json(self, key: str, value: Any) -> None:
        """Store ``value`` encoded as JSON (UTF-8) under ``key``."""
        self.put(key, json.dumps(value).encode("utf-8"))

    def get_json(self, key: str) -> Any:
        """The value under ``key`` decoded as JSON (libdvid's ``get_json``).

        Raises
        ------
        NotFoundError
            No such key.
        DvidInputError
            The value is not valid JSON.
        """
        raw = self.get(key)
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise DvidInputError(f"the value of key {key!r} is not JSON ({exc}); read it with get()") from None

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored (one ``HEAD`` request)."""
        self._check_key(key)
        response = self.transport.request("HEAD", self.path("key", key), allow_status=(404,))
        return response.status_code == 200

    def delete(self, key: str) -> None:
        """Delete ``key``. Deleting a missing key is not an error (DVID answers 200)."""
        self._check_key(key)
        self.require_writable(f"deleting key {key!r}")
        self.transport.request("DELETE", self.path("key", key), expect_empty=True)

    # ------------------------------------------------------------ listings
    def keys(self) -> list[str]:
        """Every key, in DVID's order (byte order of the UTF-8 keys)."""
        text = self.transport.request("GET", self.path("keys")).text
        return self._exact_listing(text, None, None)

    #: libdvid's name for :meth:`keys`.
    get_keys = keys

    def keys_in_range(self, first: str, last: str) -> list[str]:
        """Keys ``k`` with ``first <= k <= last`` (inclusive, UTF-8 byte order)."""
        self._check_key(first, "range start")
        self._check_key(last, "range end")
        text = self.transport.request("GET", self.path("keyrange", first, last)).text
        return self._exact_listing(text, first, last)

    def values_in_range(self, first: str, last: str) -> dict[str, bytes]:
        """Keys and values with ``first <= key <= last``, in key order (one request).

        Uses ``GET /keyrangevalues`` in DVID's protobuf ``KeyValues`` format, so keys
        and values come back exactly.
        """
        self._check_key(first, "range start")
        self._check_key(last, "range end")
        return dict(self._range_pairs(first, last))

    # -------------------------------------------------------------- batches
    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Values of many keys with few requests (``GET /keyvalues``, protobuf).

        Parameters
        ----------
        keys : iterable of str
            The keys (duplicates are fetched once).

        Returns
        -------
        dict of str to bytes
            The keys that exist, in the order asked. Missing keys are left out
            (DVID sends them with an empty value, like keys holding empty values,
            which DVID itself reads as missing).
        """
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            self._check_key(key)
        out: dict[str, bytes] = {}
        for i in range(0, len(wanted), self.GET_BATCH_KEYS):
            out.update((k, v) for k, v in self._fetch_values(wanted[i : i + self.GET_BATCH_KEYS]).items() if v)
        return out

    def _fetch_values(self, keys: list[str]) -> dict[str, bytes]:
        """One ``GET /keyvalues``: the value of every key asked for (``b""`` when missing).

        DVID answers every key asked for, in order, so an answer with other keys was
        cut short (it is asked again) or is not DVID's.
        """

        def consume(pieces: Iterator[bytes]) -> dict[str, bytes]:
            try:
                pairs = _protobuf.decode_key_values(b"".join(pieces))
            except _protobuf.ProtobufError as exc:
                problem = f"the keyvalues answer does not parse: {exc}"
            else:
                if [k for k, _ in pairs] == keys:
                    return dict(pairs)
                problem = f"the keyvalues answer holds {len(pairs)} of the {len(keys)} keys asked for"
            raise MalformedAnswerError("GET", "", 200, problem)

        return self.transport.stream("GET", self.path("keyvalues"), consume, data=_protobuf.encode_keys(keys))

    def put_many(self, items: Mapping[str, BytesLike] | Iterable[tuple[str, BytesLike]]) -> None:
        """Store many values with few requests (``POST /keyvalues``, protobuf).

        Every key and value is checked before the first byte is sent. Large
        batches are split into bodies of about :attr:`PUT_BATCH_BYTES`; DVID
        stores the keys of one body in order and stops at the first failure, so a
        failed call may have stored some of the values.

        Parameters
        ----------
        items : mapping or iterable of (key, value)
            Keys and non-empty bytes-like values.
        """
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        checked = []
        for key, value in pairs:
            self._check_key(key)
            checked.append((key, _check_value(key, value)))
        if not checked:
            return
        self.require_writable(f"storing {len(checked)} keys")
        batch: list[tuple[str, BytesLike]] = []
        size = 0
        for key, value in checked:
            batch.append((key, value))
            size += len(value) + len(key) + 16
            if size >= self.PUT_BATCH_BYTES:
                self._post_batch(batch)
                batch, size = [], 0
        if batch:
            self._post_batch(batch)

    def _post_batch(self, batch: list[tuple[str, BytesLike]]) -> None:
        self.transport.request(
            "POST", self.path("keyvalues"), data=_protobuf.encode_key_values(batch), idempotent=True,
            expect_empty=True,
        )

    # -------------------------------------------------------- dict-like
    def __getitem__(self, key: str) -> bytes:
        try:
            return self.get(key)
        except NotFoundError:
            raise KeyError(key) from None

    def __setitem__(self, key: str, value: BytesLike) -> None:
        self.put(key, value)

    def __delitem__(self, key: str) -> None:
        self.delete(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.exists(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    # ------------------------------------------------------------ helpers
    def _check_key(self, key: object, what: str = "key") -> None:
        if not isinstance(key, str):
            raise DvidInputError(f"a keyvalue {what} must be a str, got {type(key).__name__} {key!r}")
        if not key:
            raise DvidInputError(f"empty keyvalue {what}: DVID cannot address an empty key; use a non-empty string")
        if "/" in key:
            raise DvidInputError(
                f"keyvalue {what} {key!r} contains '/': DVID splits URL paths on '/' (even when sent "
                "as %2F), so it cannot address this key; replace the '/' (e.g. with '|' or ':')"
            )
        if key in (".", ".."):
            raise DvidInputError(
                f"keyvalue {what} {key!r} is a URL dot segment, which HTTP clients remove from the path; "
                "choose another key"
            )
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DvidInputError(f"keyvalue {what} {key!r} is not valid Unicode text ({exc.reason})") from None

    def _range_pairs(self, first: str, last: str) -> list[tuple[str, bytes]]:
        def consume(pieces: Iterator[bytes]) -> list[tuple[str, bytes]]:
            try:
                return _protobuf.decode_key_values(b"".join(pieces))
            except _protobuf.ProtobufError as exc:
                problem = f"the keyrangevalues answer does not parse: {exc}"
            raise MalformedAnswerError("GET", "", 200, problem)

        return self.transport.stream("GET", self.path("keyrangevalues", first, last), consume)

    def _exact_listing(self, text: str, first: str | None, last: str | None) -> list[str]:
        """Parse a key listing, replacing the keys DVID's Printf mangled by their exact names.

        Every mangled key contains ``%`` and nothing before its first ``%`` is
        changed, so each such key is re-read, exactly, among the keys that share
        that prefix. When a mangled ``%`` swallowed a JSON quote the listing does
        not parse at all; then the whole range is re-read.
        """
        lo_all, hi_all = first or _LOWEST_KEY, last or _HIGHEST_KEY
        try:
            listed = json.loads(text) or []
        except ValueError:
            return [key for key, _ in self._range_pairs(lo_all, hi_all)]
        exact = [k for k in listed if "%" not in k]
        # Go's Printf copies text up to the first '%' verbatim, so that prefix is exact.
        for prefix in dict.fromkeys(k[: k.index("%")] for k in listed if "%" in k):
            lo = max(prefix + "%", lo_all, key=_utf8)
            hi = min(prefix + "&", hi_all, key=_utf8)
            exact.extend(
                key
                for key, _ in self._range_pairs(lo, hi)
                if key.startswith(prefix + "%") and _utf8(lo_all) <= _utf8(key) <= _utf8(hi_all)
            )
        return sorted(dict.fromkeys(exact), key=_utf8)


#: Bounds of the whole key space for range reads: "\x00" sorts first; a key sorts
#: after the upper bound only if it starts with four U+10FFFF (non)characters.
_LOWEST_KEY = "\x00"
_HIGHEST_KEY = "\U0010ffff" * 4


def _utf8(key: str) -> bytes:
    return key.encode("utf-8")


def _check_value(key: str, value: object) -> BytesLike:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        hint = "use put_json() for Python objects" if not isinstance(value, str) else "encode the str first"
        raise DvidInputError(
            f"the value for key {key!r} must be bytes, bytearray or memoryview, got {type(value).__name__}; {hint}"
        )
    if isinstance(value, memoryview):
        value = value.tobytes()  # any shape or item size: its bytes in C order
    if len(value) == 0:
        raise DvidInputError(
            f"empty value for key {key!r}: DVID stores it but then reads it back as missing (404); "
            "store at least one byte, or delete the key"
        )
    return value


def _content_range(text: str) -> tuple[int, int, int | None]:
    """``(first, last, total)`` of a ``Content-Range: bytes first-last/total`` header."""
    unit, _, spec = text.strip().partition(" ")
    span, _, total = spec.partition("/")
    first, _, last = span.partition("-")
    if unit != "bytes" or not first.isdigit() or not last.isdigit():
        raise MalformedAnswerError("GET", "", 206, f"a 206 answer without a usable Content-Range ({text!r})")
    return int(first), int(last), int(total) if total.isdigit() else None


def _check_range(byte_range: object) -> tuple[int, int]:
    try:
        first, last = cast(Any, byte_range)  # anything else fails here or in int()
        start, stop = int(first), int(last)
    except (TypeError, ValueError):
        raise DvidInputError(f"byte_range must be (start, stop) integers, got {byte_range!r}") from None
    if start < 0 or stop <= start:
        raise DvidInputError(f"byte_range {byte_range!r} must satisfy 0 <= start < stop (half-open, in bytes)")
    return start, stop
