"""Python values to DVID's instance settings, which must all be strings in x,y,z order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["dvid_settings"]

#: Settings whose sequence values are per-axis: given in (z, y, x), sent as "x,y,z".
AXIS_SETTINGS = frozenset({"BlockSize", "VoxelSize", "VoxelUnits", "MinPoint", "MaxPoint"})

# Keys whose CamelCase is not the plain conversion of their snake_case.
_SPECIAL_KEYS = {"versioned": "versioned", "typename": "typename", "dataname": "dataname"}


def setting_key(name: str) -> str:
    """``"max_downres_level"`` → ``"MaxDownresLevel"``; CamelCase names pass through."""
    if name in _SPECIAL_KEYS:
        return _SPECIAL_KEYS[name]
    if "_" not in name and name[:1].isupper():
        return name
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def setting_value(key: str, value: Any) -> str:
    """Render one setting as the string DVID expects."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):  # Tags
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, Sequence) or hasattr(value, "__array__"):
        items = [setting_value(key, v) for v in list(value)]
        if key in AXIS_SETTINGS:
            items.reverse()
        return ",".join(items)
    return str(value)


def dvid_settings(settings: Mapping[str, Any]) -> dict[str, str]:
    """Convert keyword settings to DVID's instance-creation JSON.

    Parameters
    ----------
    settings : mapping
        Python-style settings such as ``block_size=(64, 64, 64)``,
        ``voxel_size=(40, 8, 8)`` (z, y, x), ``max_downres_level=3``,
        ``compression="jpeg"``, ``versioned=False``. CamelCase DVID names are
        accepted too. ``None`` values are left out.

    Returns
    -------
    dict of str to str
        DVID's keys with string values; per-axis settings reversed to x,y,z.

    Examples
    --------
    >>> dvid_settings({"block_size": (64, 32, 16), "max_downres_level": 2})
    {'BlockSize': '16,32,64', 'MaxDownresLevel': '2'}
    """
    out: dict[str, str] = {}
    for name, value in settings.items():
        if value is None:
            continue
        key = setting_key(name)
        out[key] = setting_value(key, value)
    return out
