"""libdvid's exception types, and the translation of dvid_store's errors into them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from ...errors import DvidConnectionError, DvidError, DvidHTTPError, UnsupportedError

__all__ = ["DVIDException", "ErrMsg", "LabelgraphRemovedError", "libdvid_errors"]

P = ParamSpec("P")
T = TypeVar("T")


class ErrMsg(DvidError):
    """libdvid's base error: the client refused or could not do something (``libdvid.ErrMsg``)."""


class DVIDException(ErrMsg):
    """DVID answered with an error status, or could not be reached (status 0), as libdvid raised it.

    ``args`` is ``(status, message)``, as in libdvid's bindings.

    Attributes
    ----------
    status : int
        The HTTP status; 0 when no answer came (libdvid's curl error).
    message : str
        What went wrong, with DVID's own text.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)

    @property
    def status(self) -> int:
        status: int = self.args[0]
        return status

    @property
    def message(self) -> str:
        message: str = self.args[1]
        return message


class LabelgraphRemovedError(DVIDException, UnsupportedError):
    """A labelgraph call: DVID removed the datatype (status 400, as DVID answers creating one)."""


def translate(error: DvidError) -> ErrMsg:
    """dvid_store's error as libdvid's.

    :class:`DVIDException` for DVID's answers and lost connections (status 0), else
    :class:`ErrMsg` (refused before sending).
    """
    if isinstance(error, ErrMsg):
        return error
    result: ErrMsg
    if isinstance(error, DvidHTTPError) and error.status is not None:
        result = DVIDException(error.status, f"DVIDException for {error.method} {error.url}\n{error.message}")
    elif isinstance(error, DvidConnectionError):
        result = DVIDException(0, f"DVIDConnection error: {error}")
    else:
        result = ErrMsg(str(error))
    for note in getattr(error, "__notes__", ()):
        result.add_note(note)
    return result


def libdvid_errors(function: Callable[P, T]) -> Callable[P, T]:
    """Decorate a method so that dvid_store's errors leave it as libdvid's."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        failure: DvidError | None = None
        try:
            return function(*args, **kwargs)
        except DvidError as exc:
            failure = exc
        raise translate(failure) from None

    return wrapper
