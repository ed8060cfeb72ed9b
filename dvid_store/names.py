"""Which data instance names dvid_store sends to DVID.

DVID v1.0.0 itself accepts any string as an instance name (it refuses only its five
reserved node actions), but many names then break: a ``%`` goes through Go's
``Printf`` and makes ``/api/repos/info`` invalid JSON for every client of the server;
``/`` splits the URL path, so ``a/b`` is unreachable and ``gray/info`` addresses
instance ``gray``; ``.`` and ``..`` are dot segments that DVID answers with a 301 to
another path; spaces, ``?``, ``#``, quotes, control characters and non-ASCII letters
work only for clients that percent-encode every byte, which ``curl``, the DVID
console, neuroglancer and most scripts do not.

So dvid_store addresses and creates only names made of the characters that need no
escaping anywhere: ASCII letters, digits, ``_``, ``-`` and ``.``. That covers the
names DVID servers use in practice (``grayscale``, ``segmentation_annotations``,
``grayscale_1`` for a level of a grayscale pyramid, ``mito-v1.2`` and the DVID
console's ``.meta`` keyvalue).
"""

from __future__ import annotations

import re

from .errors import DvidInputError

__all__ = ["RESERVED_INSTANCE_NAMES", "check_instance_name"]

#: Node actions that DVID refuses as instance names (``datastore/datainstance.go``).
RESERVED_INSTANCE_NAMES = frozenset({"log", "branch", "note", "commit", "newversion"})

_ALLOWED = re.compile(r"[A-Za-z0-9_.\-]+")
_RULE = (
    "instance names may use ASCII letters, digits, '_', '-' and '.', and must not consist of dots alone"
)


def check_instance_name(name: str, *, new: bool = False) -> str:
    """Return ``name`` if DVID can serve it and it survives URLs and JSON unescaped.

    Parameters
    ----------
    name : str
        A data instance name.
    new : bool
        The name is for an instance about to be created: DVID's reserved node
        actions (``log``, ``branch``, ``note``, ``commit``, ``newversion``) are
        refused too. Addressing never refuses them, because ``Node.path`` builds the
        node actions' own paths with the same first segment.

    Returns
    -------
    str
        ``name``, unchanged.

    Raises
    ------
    DvidInputError
        The name is empty, not a string, made of dots alone (``.``/``..`` are URL dot
        segments), holds another character, or (``new=True``) is reserved. The message
        names the offending characters and the rule.

    Examples
    --------
    >>> check_instance_name("grayscale_1")
    'grayscale_1'
    >>> check_instance_name("gray/info")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dvid_store.errors.DvidInputError: instance name 'gray/info' contains '/': instance names may use ...
    """
    if not isinstance(name, str):
        raise DvidInputError(f"an instance name must be a string, got {type(name).__name__} {name!r}")
    if not name:
        raise DvidInputError(f"the instance name is empty: {_RULE}")
    if not _ALLOWED.fullmatch(name):
        bad = sorted({c for c in name if not _ALLOWED.fullmatch(c)})
        shown = ", ".join(repr(c) for c in bad)
        raise DvidInputError(
            f"instance name {name!r} contains {shown}: {_RULE} (other characters break DVID's URLs or "
            "its JSON listings, or need escaping that other DVID clients do not do)"
        )
    if not name.strip("."):
        raise DvidInputError(f"instance name {name!r} is a URL dot segment, which DVID redirects: {_RULE}")
    if new and name in RESERVED_INSTANCE_NAMES:
        raise DvidInputError(
            f"instance name {name!r} is reserved by DVID for a node action; reserved: "
            f"{', '.join(sorted(RESERVED_INSTANCE_NAMES))}"
        )
    return name
