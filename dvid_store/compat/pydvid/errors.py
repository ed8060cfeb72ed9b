"""pydvid's exception names, as subclasses of dvid_store's.

:class:`DvidHttpError` keeps pydvid's attributes (``status_code``, ``reason``,
``response_body``, ``method``, ``request_uri``, ...) and is a
:class:`~dvid_store.errors.DvidHTTPError`, so code written for either catches it.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from contextlib import contextmanager

from ...errors import DvidHTTPError, MalformedAnswerError, UnsupportedError

__all__ = ["DvidHttpError", "LabelgraphRemovedError", "UnexpectedResponseError", "translated"]


class DvidHttpError(DvidHTTPError):
    """DVID answered a request with an HTTP error (pydvid's ``DvidHttpError``).

    Parameters
    ----------
    attempted_action_name : str
        What pydvid was doing, e.g. ``"subvolume query"``.
    status_code : int or None
        The HTTP status (``None``: refused before sending).
    reason : str
        The status's reason phrase.
    response_body : str
        DVID's error text.
    method, request_uri : str
        The request.
    request_body, request_headers : str
        As pydvid kept them (``"<unspecified>"`` here: dvid_store never keeps bodies or
        headers, which may hold secrets).
    """

    def __init__(
        self,
        attempted_action_name: str,
        status_code: int | None,
        reason: str,
        response_body: str,
        method: str,
        request_uri: str,
        request_body: str = "<unspecified>",
        request_headers: str = "<unspecified>",
    ) -> None:
        super().__init__(method, request_uri, status_code, response_body)
        self.attempted_action_name = attempted_action_name
        self.status_code = status_code
        self.reason = reason
        self.response_body = self.message
        self.request_uri = self.url
        self.request_body = request_body
        self.request_headers = request_headers
        self.args = (f'while attempting "{attempted_action_name}": {self.args[0]}',)

    @classmethod
    def from_error(cls, action: str, error: DvidHTTPError) -> DvidHttpError:
        """The same failure as a :class:`DvidHttpError` (or subclass ``cls``), notes kept."""
        status = error.status
        reason = http.client.responses.get(status, "") if status is not None else "refused before sending"
        translated = cls(action, status, reason, error.message, error.method, error.url)
        for note in getattr(error, "__notes__", ()):
            translated.add_note(note)
        return translated


class UnexpectedResponseError(MalformedAnswerError):
    """DVID answered without an HTTP error, but not as expected (pydvid's ``UnexpectedResponseError``)."""


class LabelgraphRemovedError(DvidHttpError, UnsupportedError):
    """A labelgraph call: DVID removed the datatype, so it is refused before sending."""


@contextmanager
def translated(action: str, busy: type[DvidHttpError] | None = None) -> Iterator[None]:
    """Raise dvid_store's HTTP errors as pydvid's :class:`DvidHttpError` (``busy`` for 503s, if given).

    The new error is raised outside the ``except`` block and ``from None``: at most
    dvid_store's own (redacted) error is its context.
    """
    failure: DvidHTTPError | None = None
    try:
        yield
    except DvidHttpError:
        raise
    except DvidHTTPError as exc:
        failure = exc
    if failure is None:
        return
    kind = busy if busy is not None and failure.status in (429, 503, 504) else DvidHttpError
    if isinstance(failure, MalformedAnswerError) and kind is DvidHttpError:
        kind = _UnexpectedHttpAnswer
    raise kind.from_error(action, failure) from None


class _UnexpectedHttpAnswer(DvidHttpError, UnexpectedResponseError):
    """A broken or unusable 2xx answer: both pydvid names catch it."""
