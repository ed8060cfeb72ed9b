"""What every ``dvid-store`` command shares: the run context, URL targets, points and boxes."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from ..errors import DvidInputError
from ..geometry import Box, as_box

if TYPE_CHECKING:
    from ..client import DvidClient
    from ..node import Node

__all__ = [
    "Context",
    "Target",
    "format_box",
    "format_bytes",
    "format_rate",
    "format_zyx",
    "parse_box",
    "parse_target",
    "parse_zyx",
]

ZYX = tuple[int, int, int]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:\d{1,5})?$")

URL_FORMS = (
    "host:port or http://host:port (a server), dvid://host:port/<node> (a node: UUID, unique prefix "
    "or prefix:branch) or dvid://host:port/<node>/<instance>[/<level>] (an instance)"
)


@dataclass
class Context:
    """Settings shared by one run of a command.

    Attributes
    ----------
    quiet : bool
        No progress bars and no summaries (results and errors only).
    debug : bool
        Show tracebacks.
    user, app : str
        Sent to DVID as ``u=`` and ``app=``.
    timeout : float
        Longest silence while waiting for or reading an answer, in seconds.
    retry_seconds : float
        How long a request is retried when the server is busy, unreachable or its
        answer breaks off.
    retries : int, optional
        An extra cap on the attempts per request.
    deadline : float
        Wall-clock limit of one request, its retries included, in seconds.
    throttle : bool
        Send DVID's ``throttle=true`` with block transfers.
    out, err : text streams
        Where results and diagnostics go.
    """

    quiet: bool = False
    debug: bool = False
    user: str | None = None
    app: str = "dvid-store"
    timeout: float = 120.0
    retry_seconds: float = 30.0
    retries: int | None = None
    deadline: float = 600.0
    throttle: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def client(self, server: str) -> DvidClient:
        """A client of ``server`` with this run's connection settings."""
        from ..client import DvidClient
        from ..transport import RetryPolicy

        return DvidClient(
            server, user=self.user, app=self.app, timeout=(5.0, self.timeout), deadline=self.deadline,
            retry=RetryPolicy(total_seconds=self.retry_seconds, max_attempts=self.retries),
        )

    def say(self, *lines: str) -> None:
        """Print a report line to ``out`` unless quiet."""
        if not self.quiet:
            for line in lines:
                print(line, file=self.out, flush=True)

    def note(self, *lines: str) -> None:
        """Print a diagnostic line to ``err`` unless quiet."""
        if not self.quiet:
            for line in lines:
                print(line, file=self.err, flush=True)


@dataclass(frozen=True)
class Target:
    """What a command-line URL names: a server, a node, or an instance (at a level).

    Attributes
    ----------
    text : str
        The URL as given.
    server : str
        ``http://host:port`` (or ``https://``).
    ref : str or None
        Node reference as written (UUID, prefix, ``prefix:branch[~N]``).
    instance : str or None
        Instance name.
    level : int or None
        Pyramid level given after the instance (``.../grayscale/1``).
    """

    text: str
    server: str
    ref: str | None = None
    instance: str | None = None
    level: int | None = None

    @property
    def kind(self) -> str:
        """``"server"``, ``"node"`` or ``"instance"``."""
        if self.instance is not None:
            return "instance"
        return "node" if self.ref is not None else "server"

    @property
    def host(self) -> str:
        """``host:port``."""
        return self.server.split("://", 1)[1]

    def require(self, *kinds: str) -> Target:
        """Refuse a URL of another kind, saying which form is expected."""
        if self.kind not in kinds:
            wanted = " or ".join(
                {"server": "a server (host:port)", "node": "a node (dvid://host:port/<node>)",
                 "instance": "an instance (dvid://host:port/<node>/<instance>)"}[k]
                for k in kinds
            )
            raise DvidInputError(f"{self.text!r} names a {self.kind}; this command needs {wanted}")
        return self

    def node(self, ctx: Context) -> Node:
        """Resolve the node reference (``UnknownNodeError`` if nothing matches)."""
        if self.ref is None:
            raise DvidInputError(f"{self.text!r} names no node: use dvid://{self.host}/<node>")
        return ctx.client(self.server).node(self.ref)

    def instance_url(self, uuid: str, instance: str | None = None) -> str:
        """``dvid://host:port/<uuid>/<instance>`` of a resolved node."""
        return f"dvid://{self.host}/{uuid}/{instance or self.instance}"


def parse_target(text: str) -> Target:
    """Read a command-line URL (see :data:`URL_FORMS`).

    ``http(s)://host:port/api/node/<uuid>/<instance>`` (DVID's own paths) are accepted
    too. Instance URLs are split by :func:`dvid_store.urls.parse_url`.

    Raises
    ------
    DvidInputError
        Not one of the accepted forms.
    """
    from ..urls import parse_url

    raw = text.strip()
    scheme = "http"
    rest = raw
    match = _SCHEME.match(raw)
    if match:
        given = match.group(1).lower()
        if given in ("http", "https"):
            scheme = given
        elif given != "dvid":
            raise DvidInputError(f"{text!r}: unknown scheme {given!r}; use {URL_FORMS}")
        rest = raw[match.end() :]
    parts = rest.strip("/").split("/") if rest.strip("/") else []
    if len(parts) >= 3 and parts[1] == "api" and parts[2] in ("node", "repo"):
        parts = [parts[0], *parts[3:]]
    if not parts or not all(parts) or not _HOST.match(parts[0]):
        raise DvidInputError(f"{text!r} is not a DVID URL: use {URL_FORMS}")
    server = f"{scheme}://{parts[0]}"
    if len(parts) == 1:
        return Target(text, server)
    if len(parts) == 2:
        return Target(text, server, parts[1])
    parsed = parse_url("dvid://" + "/".join(parts), scheme=scheme)
    level = None
    if parsed.key:
        if not parsed.key.isdigit():
            raise DvidInputError(f"{text!r}: after the instance only a level number may follow, not {parsed.key!r}")
        level = int(parsed.key)
    return Target(text, parsed.server, parsed.ref, parsed.instance, level)


def parse_zyx(text: str, what: str = "point") -> ZYX:
    """``"z,y,x"`` (or one number for all axes) → three integers."""
    try:
        values = [int(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise DvidInputError(f"{what} {text!r}: give integers z,y,x (or one integer for all axes)") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise DvidInputError(f"{what} {text!r}: give three integers z,y,x (or one for all axes)")
    return values[0], values[1], values[2]


def parse_box(text: str) -> Box:
    """A half-open box from ``"z0,y0,x0:z1,y1,x1"`` or per-axis ``"z0:z1,y0:y1,x0:x1"``.

    Raises
    ------
    DvidInputError
        Neither form, or an empty box.
    """
    cleaned = text.replace(" ", "")
    try:
        if cleaned.count(":") == 1:
            a, b = cleaned.split(":")
            start, stop = parse_zyx(a, "box start"), parse_zyx(b, "box stop")
            if len(a.split(",")) != 3 or len(b.split(",")) != 3:
                raise ValueError
        elif cleaned.count(":") == 3 and cleaned.count(",") == 2:
            pairs = [tuple(int(v) for v in axis.split(":")) for axis in cleaned.split(",")]
            start = (pairs[0][0], pairs[1][0], pairs[2][0])
            stop = (pairs[0][1], pairs[1][1], pairs[2][1])
        else:
            raise ValueError
    except (ValueError, DvidInputError):
        raise DvidInputError(
            f"box {text!r}: write z0,y0,x0:z1,y1,x1 (start and stop corners, stop excluded) "
            "or z0:z1,y0:y1,x0:x1; for a negative start use --box=..."
        ) from None
    return as_box((start, stop))


def format_zyx(values: Sequence[float]) -> str:
    """``(z, y, x)`` as ``"z×y×x"`` (integers without decimals)."""
    return "×".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def format_box(box: Box) -> str:
    """A box as ``"z0,y0,x0:z1,y1,x1"`` (the form ``--box`` takes)."""
    return f"{','.join(map(str, box[0]))}:{','.join(map(str, box[1]))}"


def format_bytes(n: float) -> str:
    """Bytes in decimal units (``"16.8 MB"``), like the MB/s of :func:`format_rate`."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def format_rate(nbytes: float, seconds: float) -> str:
    """Throughput in MB/s (10**6 bytes per second, as network tools report it)."""
    return f"{nbytes / max(seconds, 1e-9) / 1e6:.1f} MB/s"
