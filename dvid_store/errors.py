"""The one exception hierarchy of dvid_store, and the one place HTTP answers become exceptions.

DVID answers almost every failure with ``400`` and a ``text/plain`` message of the
form ``<message> (<url path>).``; only lookups of missing things use ``404``. The
subclasses below tell the cases apart from the status *and* DVID's text, so that
callers can ``except LockedNodeError`` instead of parsing messages.

Every exception that names a URL names it without secrets (see
:func:`redact_url`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "AuthError",
    "BadRequestError",
    "ConcurrentWriteError",
    "DvidConnectionError",
    "DvidError",
    "DvidHTTPError",
    "DvidInputError",
    "DvidTimeoutError",
    "LockedNodeError",
    "MalformedAnswerError",
    "NotFoundError",
    "RedirectError",
    "ServerBusyError",
    "ServerError",
    "UnexpectedAnswerError",
    "UnknownInstanceError",
    "UnknownNodeError",
    "UnsupportedError",
    "error_from_response",
    "redact_text",
    "redact_url",
    "unchecked_if_read_back_fails",
]

#: Query parameters whose values are secrets and never leave the HTTP core.
SECRET_PARAMS = frozenset({"admintoken", "token", "jwt", "passcode"})


class DvidError(Exception):
    """Base class of every error raised by dvid_store.

    dvid_store raises these without a chained ``__cause__`` or ``__context__``, and
    they pickle without them: the HTTP library's exceptions hold the request, with
    its ``Authorization`` header and query string, which must never travel (e.g. from
    a dask worker back to the client).
    """

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.args, _public_state(self)))


class DvidInputError(DvidError, ValueError):
    """The caller asked for something the client refuses before sending anything.

    Examples: an unaligned write, a wrong dtype, a key that DVID cannot address.
    """


class UnsupportedError(DvidError, NotImplementedError):
    """The operation does not exist on this DVID server (e.g. the removed labelgraph type)."""


class DvidConnectionError(DvidError, ConnectionError):
    """The server could not be reached (down, wrong port, refused, timed out)."""

    def __init__(self, message: str, *, url: str, attempts: int) -> None:
        super().__init__(message)
        self.url = url
        self.attempts = attempts

    def __reduce__(self) -> Any:
        return (_rebuild_connection_error, (type(self), str(self.args[0]), self.url, self.attempts, _notes(self)))


class DvidTimeoutError(DvidConnectionError, TimeoutError):
    """A call did not complete within its deadline (``Transport(deadline=...)``)."""


class ConcurrentWriteError(DvidError):
    """Another writer changed blocks that this write had read, merged and written back.

    Raised where dvid_store can see it (the merged voxels read back differently);
    unaligned writes that share blocks must not run at once from independent processes.
    """


class DvidHTTPError(DvidError):
    """DVID answered with a non-2xx status.

    Attributes
    ----------
    method : str
        HTTP method of the request.
    url : str
        The request URL with secret query parameters masked.
    status : int or None
        HTTP status, or ``None`` when the client refused the request before sending it.
    message : str
        DVID's own error text (its response body), stripped.
    """

    def __init__(self, method: str, url: str, status: int | None, message: str) -> None:
        self.method = method.upper()
        self.url = redact_url(url)
        self.status = status
        self.message = message.strip()
        where = f"{self.method} {self.url}"
        head = f"HTTP {status}" if status is not None else "refused before sending"
        super().__init__(f"{head} for {where}: {self.message}")


class BadRequestError(DvidHTTPError):
    """DVID rejected the request (400): bad geometry, bad JSON, wrong body size, ..."""


class LockedNodeError(BadRequestError):
    """A write to a committed (locked) node. Branch or create a new version to write."""


class UnknownNodeError(BadRequestError, LookupError):
    """The UUID, prefix or branch does not name a node on this server."""


class UnknownInstanceError(BadRequestError, LookupError):
    """The data instance name does not exist in the node's repo."""


class NotFoundError(DvidHTTPError, LookupError):
    """The thing looked up does not exist (404): a key, a label, an endpoint."""


class AuthError(DvidHTTPError):
    """Missing or insufficient credentials (401/403, or DVID's admin-only 400)."""


class ServerBusyError(DvidHTTPError):
    """The server kept answering 503/504/429 until the retry budget ran out."""


class ServerError(DvidHTTPError):
    """The server failed internally (5xx other than busy), or its answer could not be used."""


class MalformedAnswerError(ServerError):
    """A 2xx answer that broke off, was shorter than it said, or could not be parsed.

    Safe requests are retried on it within the retry budget; this is raised when every
    attempt failed so.
    """


class UnexpectedAnswerError(MalformedAnswerError):
    """A 2xx answer that is not DVID's: an HTML page, or a body where DVID sends none.

    Typically a sign-in page, captive portal or misconfigured proxy answered instead
    of DVID. A write answered so is not stored as far as anyone can tell.
    """


class RedirectError(DvidHTTPError):
    """A 3xx answer. dvid_store never follows redirects: a redirected POST becomes a GET
    (the write would be lost while "succeeding"). Use the final address as the server URL."""

    def __init__(self, method: str, url: str, status: int | None, message: str) -> None:
        location = message.strip()
        if location and not location.startswith("redirect"):
            message = (
                f"redirect to {redact_url(location)!r}, which dvid_store does not follow (a redirected write would "
                "be lost). Use the address it points to as the server URL, or fix the instance name or path "
                "(DVID redirects paths with '.' or '..' segments)"
            )
        super().__init__(method, url, status, message)


_LOCKED = re.compile(r"locked node", re.IGNORECASE)
_UNKNOWN_NODE = re.compile(
    r"could not find UUID|no node with UUID|ambiguous|branch .* not found|UUID must be specified",
    re.IGNORECASE,
)
_UNKNOWN_INSTANCE = re.compile(r"invalid data instance name|no data instance|data instance .* not found", re.I)
_AUTH = re.compile(
    r"admin privileges|requires admin|JWT|bearer not in proper format|is not authorized", re.IGNORECASE
)


@contextlib.contextmanager
def unchecked_if_read_back_fails(what: str) -> Iterator[None]:
    """Mark a :class:`DvidError` raised while reading back a write DVID already answered.

    An edge-merging write reads its partly covered blocks again to catch another
    writer; if that read fails, the raw error alone would not say that the write
    itself went through. The note says so, and what to do.
    """
    try:
        yield
    except DvidError as error:
        error.add_note(
            f"The write of {what} was sent and DVID answered it; only the read-back that checks "
            "its merged edge blocks failed, so another writer's change there cannot be ruled out. "
            "Read the box to check it, or write it again (the write is idempotent)."
        )
        raise


def error_from_response(method: str, url: str, status: int, text: str) -> DvidHTTPError:
    """Map one failed HTTP answer to the most specific exception class.

    Parameters
    ----------
    method, url : str
        The request (the URL is redacted here).
    status : int
        The HTTP status.
    text : str
        The response body; DVID puts its error message there.
    """
    cls: type[DvidHTTPError]
    if status == 400:
        if _LOCKED.search(text):
            cls = LockedNodeError
        elif _UNKNOWN_INSTANCE.search(text):
            cls = UnknownInstanceError
        elif _UNKNOWN_NODE.search(text):
            cls = UnknownNodeError
        elif _AUTH.search(text):
            cls = AuthError
        else:
            cls = BadRequestError
    elif status == 404:
        cls = NotFoundError
    elif status in (401, 403):
        cls = AuthError
    elif status in (429, 503, 504):
        cls = ServerBusyError
    elif status >= 500:
        cls = ServerError
    else:
        cls = DvidHTTPError
    return cls(method, url, status, text or f"(empty body, status {status})")


_SECRET_IN_TEXT = re.compile(
    r"\b(" + "|".join(sorted(SECRET_PARAMS)) + r")=[^&\s'\")]*", re.IGNORECASE
)


def redact_text(text: str) -> str:
    """``text`` with the value of every ``<secret param>=value`` replaced by ``***``.

    For free text that embeds URLs (library messages, log lines); whole URLs go
    through :func:`redact_url`.
    """
    return _SECRET_IN_TEXT.sub(r"\1=***", text)


def redact_url(url: str) -> str:
    """Return ``url`` with the values of secret query parameters replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(k.lower() in SECRET_PARAMS for k, _ in pairs):
        return url
    query = urlencode([(k, "***" if k.lower() in SECRET_PARAMS else v) for k, v in pairs], safe="*")
    return urlunsplit(parts._replace(query=query))


def _public_state(error: BaseException) -> dict[str, Any]:
    state = {k: v for k, v in vars(error).items() if not k.startswith("__")}
    notes = _notes(error)
    if notes:
        state["__notes__"] = notes
    return state


def _notes(error: BaseException) -> list[str]:
    return [str(n) for n in getattr(error, "__notes__", ())]


def _rebuild(cls: type[DvidError], args: tuple[Any, ...], state: dict[str, Any]) -> DvidError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


def _rebuild_connection_error(
    cls: type[DvidConnectionError], message: str, url: str, attempts: int, notes: list[str]
) -> DvidConnectionError:
    error = cls(message, url=url, attempts=attempts)
    for note in notes:
        error.add_note(note)
    return error
