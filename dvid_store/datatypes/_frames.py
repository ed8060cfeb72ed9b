"""pandas, the optional dependency behind every DataFrame and Series the node API returns.

pandas is the ``dataframes`` extra (``pip install 'dvid_store[dataframes]'``); the
node API imports it on first use so that reading voxels never needs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["pandas"]


def pandas(what: str) -> ModuleType:
    """The ``pandas`` module, or an ImportError saying which call needs it and how to install it.

    Parameters
    ----------
    what : str
        The call that returns a DataFrame or Series, for the message (e.g. ``"Labelmap.mappings()"``).
    """
    try:
        return importlib.import_module("pandas")
    except ImportError as error:
        raise ImportError(
            f"{what} returns pandas objects, and pandas is not installed: "
            "pip install 'dvid_store[dataframes]' (or pip install pandas)"
        ) from error
