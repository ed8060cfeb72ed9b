"""pydvid's ``keyvalue`` functions, through dvid_store's :class:`~dvid_store.KeyValue`."""

from __future__ import annotations

import io
from typing import Any

from ....datatypes.keyvalue import KeyValue
from ..dvid_connection import client_for, node_for
from ..errors import translated

__all__ = ["create_new", "del_value", "get_keys", "get_value", "get_value_response", "put_value"]


def _kv(connection: Any, uuid: str, data_name: str) -> KeyValue:
    return node_for(client_for(connection), uuid).keyvalue(data_name)


def create_new(connection: Any, uuid: str, data_name: str) -> None:
    """Create a keyvalue instance; :class:`DvidHttpError` (400) if the name is taken."""
    with translated("keyvalue.create_new"):
        KeyValue.create(node_for(client_for(connection), uuid), data_name)


def get_value(connection: Any, uuid: str, data_name: str, key: str) -> bytes:
    """The value at ``key``; :class:`DvidHttpError` with status 404 if there is none."""
    with translated("keyvalue request"):
        return _kv(connection, uuid, data_name).get(key)


def get_value_response(connection: Any, uuid: str, data_name: str, key: str) -> io.BytesIO:
    """The value at ``key`` as a readable stream (``.read()``), like pydvid's raw response."""
    return io.BytesIO(get_value(connection, uuid, data_name, key))


def put_value(connection: Any, uuid: str, data_name: str, key: str, value: Any) -> None:
    """Store ``value`` at ``key``: bytes, a ``str`` (stored as UTF-8) or a file-like object (its ``read()``)."""
    if hasattr(value, "read"):
        value = value.read()
    if isinstance(value, str):
        value = value.encode()
    with translated("keyvalue post"):
        _kv(connection, uuid, data_name).put(key, value)


def del_value(connection: Any, uuid: str, data_name: str, key: str, value: Any = None) -> None:
    """Delete ``key`` (pydvid declared this function but never implemented it; ``value`` is ignored)."""
    with translated("keyvalue delete"):
        _kv(connection, uuid, data_name).delete(key)


def get_keys(connection: Any, uuid: str, data_name: str) -> list[str]:
    """Every key of the instance, sorted."""
    with translated("keyvalue keys"):
        return _kv(connection, uuid, data_name).keys()
