"""The entry point: a DVID server, its repos, and nodes resolved from any reference form."""

from __future__ import annotations

import re
import time
from typing import Any

from .errors import DvidInputError, UnknownNodeError
from .node import Node
from .repo import RepoInfo
from .transport import RetryPolicy, Secret, Transport

__all__ = ["DvidClient"]

#: A node's whole UUID (needs no lookup to name one node).
FULL_UUID = re.compile(r"^[0-9a-f]{32}$")
_REF = re.compile(r"^(?P<prefix>[0-9a-f]*)(?::(?P<branch>[^~]+)(?:~(?P<back>\d+))?)?$")


class DvidClient:
    """A connection to one DVID server.

    Parameters
    ----------
    url : str
        Server address, e.g. ``"http://localhost:8000"`` or ``"localhost:8000"``.
    user : str, optional
        Sent as ``u=`` on every request (default ``$DVID_USER`` or the login name).
    app : str
        Sent as ``app=`` on every request.
    token : str, optional
        Bearer token for servers with authentication (default ``$DVID_TOKEN``).
    admin_token : str, optional
        DVID admin token (default ``$DVID_ADMIN_TOKEN``), used only for admin-only calls.
    timeout : float or (float, float)
        Connect timeout, and the longest silence while waiting for or reading an
        answer, in seconds.
    retry : RetryPolicy, optional
        Retry behaviour for 503/504, connection errors and broken answers (default:
        retry for up to 30 s).
    deadline : float
        Wall-clock limit of one call, its retries included, in seconds.

    Examples
    --------
    >>> client = DvidClient("localhost:8000")           # doctest: +SKIP
    >>> node = client.node("a3f9:master")               # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        app: str = "dvid_store",
        token: str | Secret | None = None,
        admin_token: str | Secret | None = None,
        timeout: float | tuple[float, float] = (5.0, 120.0),
        retry: RetryPolicy | None = None,
        deadline: float = 600.0,
    ) -> None:
        self.transport = Transport(
            url, user=user, app=app, token=token, admin_token=admin_token, timeout=timeout, retry=retry,
            deadline=deadline,
        )
        self._commit_seen: dict[str, tuple[float, bool]] = {}

    @classmethod
    def from_transport(cls, transport: Transport) -> DvidClient:
        client = cls.__new__(cls)
        client.transport = transport
        client._commit_seen = {}
        return client

    def commit_seen(self, uuid: str) -> tuple[float, bool] | None:
        """(monotonic time, locked) of the last commit status :meth:`resolve` read for ``uuid``."""
        return self._commit_seen.get(uuid)

    @property
    def url(self) -> str:
        """The server root URL."""
        return self.transport.base_url

    def __repr__(self) -> str:
        return f"DvidClient({self.url!r}, user={self.transport.user!r}, app={self.transport.app!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DvidClient) and other.transport == self.transport

    def __hash__(self) -> int:
        return hash(self.transport)

    # ----------------------------------------------------------------- server
    def heartbeat(self) -> bool:
        """``True`` if the server answers ``/api/heartbeat``."""
        return self.transport.request("GET", "/api/heartbeat").text.strip() == "OK"

    def server_info(self) -> dict[str, str]:
        """DVID's server information (version, cores, storage backends, ...)."""
        answer: dict[str, str] = self.transport.get_json("/api/server/info")
        return answer

    def server_types(self) -> dict[str, str]:
        """Datatypes that have at least one instance on the server: name → type URL."""
        answer: dict[str, str] = self.transport.get_json("/api/server/types")
        return answer

    def compiled_types(self) -> dict[str, str]:
        """All datatypes compiled into the server: name → type URL."""
        answer: dict[str, str] = self.transport.get_json("/api/server/compiled-types")
        return answer

    # ------------------------------------------------------------------ repos
    def repos(self) -> dict[str, RepoInfo]:
        """Every repo on the server, by root UUID."""
        data = self.transport.get_json("/api/repos/info") or {}
        return {root: RepoInfo.from_json(info) for root, info in data.items()}

    def create_repo(self, alias: str, description: str = "", *, root: str | None = None) -> Node:
        """Create a repo and return its root node.

        Parameters
        ----------
        alias : str
            Short name of the repo.
        description : str
            Free text.
        root : str, optional
            A 32-hex-digit UUID for the root node (DVID makes one otherwise).

        Notes
        -----
        Recent DVID servers allow this only with the admin token.
        """
        payload = {"alias": alias, "description": description}
        if root is not None:
            payload["root"] = root
        # Not safe to repeat (a second repo): sent again only after a 503 or 429.
        answer = self.transport.send_once(lambda: self.transport.post_json("/api/repos", payload, admin=True))
        return self._node(answer["root"])

    def repo_info(self, ref: str) -> RepoInfo:
        """The repo that contains the node ``ref`` (any reference form, see :meth:`node`)."""
        uuid = self.resolve(ref)
        return RepoInfo.from_json(self.transport.get_json(f"/api/repo/{uuid}/info"))

    def resolve(self, ref: str) -> str:
        """Resolve a node reference to a full UUID.

        Accepted forms: a full UUID; any prefix that matches exactly one node;
        ``prefix:branch`` (the newest node of that branch; ``master`` is DVID's
        default branch); ``prefix:branch~N`` (N nodes back along the branch).

        Raises
        ------
        UnknownNodeError
            Nothing, or more than one node, matches.
        DvidInputError
            ``ref`` is not of one of the forms above.
        """
        if FULL_UUID.match(ref.strip()):
            # A full UUID needs no list of every repo on the server (megabytes on a big
            # one, a round trip either way): the node's tiny commit status proves it
            # exists, and tells its Node whether it is locked.
            uuid = ref.strip()
            try:
                status = self.transport.get_json(f"/api/node/{uuid}/commit")
            except UnknownNodeError:
                status = None
            if status is None:  # raised here, not in the handler: no chained context
                raise UnknownNodeError("RESOLVE", self.url, None, f"no node matches {ref!r} on {self.url}")
            self._commit_seen[uuid] = (time.monotonic(), bool(status.get("Locked")))
            return uuid
        match = _REF.match(ref.strip())
        if not match or (not match["prefix"] and not match["branch"]):
            raise DvidInputError(
                f"{ref!r} is not a node reference: use a UUID or prefix (lowercase hex), "
                "'prefix:branch' or 'prefix:branch~N'"
            )
        repos = self.repos()
        if match["prefix"]:
            hits = [(r, u) for r in repos.values() for u in r.versions if u.startswith(match["prefix"])]
        else:
            hits = [(r, r.root) for r in repos.values()]
        if match["branch"] and match["prefix"]:
            hits = list({r.root: (r, u) for r, u in hits}.values())  # a prefix names one repo
        if not hits:
            raise UnknownNodeError("RESOLVE", self.url, None, f"no node matches {ref!r} on {self.url}")
        if len(hits) > 1:
            sample = ", ".join(sorted(u for _, u in hits)[:5])
            what = "repo" if match["branch"] else "node"
            raise UnknownNodeError(
                "RESOLVE", self.url, None, f"{ref!r} matches more than one {what} ({sample}); give more digits"
            )
        repo, uuid = hits[0]
        if not match["branch"]:
            return uuid
        branch = match["branch"]
        # DVID's own ancestry list (leaf first, back to the root) gives ``~N`` its meaning.
        ancestry: list[str] = self.transport.get_json(f"/api/repo/{repo.root}/branch-versions/{branch}") or []
        back = int(match["back"] or 0)
        if not ancestry:
            known = ", ".join(sorted({v.branch for v in repo.versions.values()}))
            raise UnknownNodeError(
                "RESOLVE", self.url, None, f"repo {repo.root} has no branch {branch!r} (branches: {known})"
            )
        if back >= len(ancestry):
            raise UnknownNodeError(
                "RESOLVE", self.url, None,
                f"{ref!r}: branch {branch!r} has only {len(ancestry)} node(s) back to the root",
            )
        return ancestry[back]

    def node(self, ref: str) -> Node:
        """A :class:`~dvid_store.Node` for any reference form accepted by :meth:`resolve`."""
        return self._node(self.resolve(ref))

    def _node(self, uuid: str) -> Node:
        return Node(self, uuid)

    def __getstate__(self) -> dict[str, Any]:
        return {"transport": self.transport}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.transport = state["transport"]
        self._commit_seen = {}
