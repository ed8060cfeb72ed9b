"""pydvid's ``keyvalue`` package."""

from .keyvalue import create_new, del_value, get_keys, get_value, get_value_response, put_value

__all__ = ["create_new", "del_value", "get_keys", "get_value", "get_value_response", "put_value"]
