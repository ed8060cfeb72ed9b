"""A labelmap's edit history across versions: mutation logs, affected bodies, merge chains.

DVID keeps one mutation log per labelmap instance and version (``GET /mutations``,
which needs a ``[mutations] jsonstore`` in the server's config). A version's log
holds only the edits made *in* that version; the history of what a version shows
is the logs of the version and all its ancestors. The functions here walk the
repo's version DAG (one ``/repo/info`` request) and read one log per version.

| neuclease | dvid_store |
| --- | --- |
| ``fetch_mutations`` / ``fetch_labelmap_mutations`` (``dag_filter='leaf-and-parents'``) | ``mutation_log()`` |
| the same with ``dag_filter='leaf-only'`` | ``mutation_log(seg, ancestors=False)`` |
| ``compute_affected_bodies`` | ``affected_bodies()`` |
| their ``userid=`` / ``action_filter=`` | ``mutation_log(seg, user=..., actions=...)`` |
| ``compute_merge_hierarchies`` + ``determine_owners`` / ``determine_merge_chains`` | ``merge_chains()`` |
| ``fetch_history`` (DVID's ``/history``) | not provided: v1.0.0 answers it with unusable JSON (below) |

What the v1.0.0 server does (checked against it by the tests)
--------------------------------------------------------------
* The log records only completed edits, with actions ``merge-complete``,
  ``cleave-complete``, ``split-complete``, ``split-supervoxel-complete`` and
  ``renumber-complete``; older servers logged them without the suffix. Both read
  as ``merge``, ``cleave``… here.
* ``GET /mutations?userid=`` is documented but ignored (every user's edits come
  back), so :func:`mutation_log` filters by user itself.
* Timestamps are Go's ``time.String()``: nanoseconds, the zone, and a monotonic
  clock reading (``"… +0000 UTC m=+0.097"``), which is dropped.
* ``GET /history/<label>/<from>/<to>`` answers JSON objects written one after
  another without a list around them, and only the requests (no mutation ids,
  users or times); it is not used.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..errors import BadRequestError, DvidInputError, UnsupportedError
from ._frames import pandas
from ._progress import map_threaded

if TYPE_CHECKING:
    from ..node import Node
    from ..repo import RepoInfo
    from .labelmap import Labelmap

__all__ = ["AffectedBodies", "affected_bodies", "ancestry", "merge_chains", "mutation_log"]

#: Columns of :func:`mutation_log`, in order.
LOG_COLUMNS = ("uuid", "mutation_id", "action", "target", "labels", "supervoxels", "user", "app", "timestamp", "record")

#: Versions whose logs :func:`mutation_log` reads at once.
_LOG_WORKERS = 8

_GO_TIME = re.compile(r"^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?) ([+-]\d{4})")


class AffectedBodies(NamedTuple):
    """Answer of :func:`affected_bodies`: sorted uint64 arrays of body and supervoxel ids.

    Attributes
    ----------
    new : numpy.ndarray
        Bodies that exist at the later version and did not at the earlier one
        (made by cleaves, splits and renumbers, and still there).
    changed : numpy.ndarray
        Bodies that exist at both versions but whose voxels or supervoxels differ
        (targets of merges, cleaves, splits and supervoxel splits).
    removed : numpy.ndarray
        Bodies that existed at the earlier version and are gone (merged into others
        or renumbered to another id).
    new_supervoxels, removed_supervoxels : numpy.ndarray
        Supervoxels made and removed by supervoxel splits.
    """

    new: np.ndarray
    changed: np.ndarray
    removed: np.ndarray
    new_supervoxels: np.ndarray
    removed_supervoxels: np.ndarray


def ancestry(node: Node, since: Node | str | None = None, *, info: RepoInfo | None = None) -> list[str]:
    """UUIDs of ``node`` and its ancestors, oldest first (each after all its parents).

    Parameters
    ----------
    node : Node
        The latest version.
    since : Node or str, optional
        Leave out this version and its ancestors (a Node, a full UUID or a unique
        prefix of one in the same repo): what remains are the versions whose edits
        separate ``since`` from ``node``.
    info : RepoInfo, optional
        The repo's metadata, if already at hand (else one ``/repo/info`` request).

    Raises
    ------
    DvidInputError
        ``since`` names no version of the repo, or several.
    """
    info = info if info is not None else node.repo_info()
    chain = _ancestors(info, node.uuid)
    if since is None:
        return chain
    earlier = set(_ancestors(info, _resolve(info, since)))
    return [uuid for uuid in chain if uuid not in earlier]


def mutation_log(
    labelmap: Labelmap,
    *,
    since: Node | str | None = None,
    ancestors: bool = True,
    user: str | None = None,
    actions: Iterable[str] | None = None,
) -> Any:
    """The labelmap's edits that the labelmap's node shows, one row per mutation.

    Reads ``GET /mutations`` of the node and, with ``ancestors=True``, of every
    ancestor version (one request each, several at a time); rows come oldest
    version first and, within a version, in the order DVID logged them.

    Parameters
    ----------
    labelmap : Labelmap
        The instance, at the latest version of interest.
    since : Node or str, optional
        Only versions after this one: those that are ancestors of the labelmap's
        node (or the node itself) and not of ``since`` (nor ``since`` itself).
    ancestors : bool
        ``False``: only the node's own log (DVID's ``/mutations`` as is).
    user : str, optional
        Only edits made by this user (DVID's ``u=``); DVID v1.0.0 ignores its own
        ``userid=`` filter, so this one is applied here.
    actions : iterable of str, optional
        Only these actions (``"merge"``, ``"cleave"``, ``"split"``,
        ``"split-supervoxel"``, ``"renumber"``).

    Returns
    -------
    pandas.DataFrame
        A default RangeIndex and the columns

        - ``uuid`` (str): the version the edit was made in.
        - ``mutation_id`` (uint64): DVID's mutation id (what the edit call returned).
        - ``action`` (str): ``merge``, ``cleave``, ``split``, ``split-supervoxel`` or
          ``renumber``.
        - ``target`` (uint64): the body edited: the merge target, the cleaved or
          split body, the body of the split supervoxel, renumber's new id.
        - ``labels`` (object, tuples of int): the other bodies: those merged into the
          target (sorted), the new cleaved or split body, renumber's old id; ``()``
          for supervoxel splits.
        - ``supervoxels`` (object, tuples of int): the cleaved supervoxels; for a
          supervoxel split the split supervoxel, then its new parts (split,
          remain); else ``()``.
        - ``user`` (str): who made it (``""`` when DVID got no ``u=``).
        - ``app`` (str): the app that made it (``""`` if none).
        - ``timestamp`` (datetime64[ns, UTC]): when DVID completed it (``NaT`` if
          unreadable).
        - ``record`` (object, dicts): DVID's JSON record as logged.

        str columns are pandas' ``str`` dtype (``object`` before pandas 3).

    Raises
    ------
    UnsupportedError
        The server keeps no mutation log (no ``[mutations] jsonstore``).
    ImportError
        pandas is not installed (``pip install 'dvid_store[dataframes]'``).
    """
    pd = pandas("mutation_log()")
    wanted = None if actions is None else {_plain_action(a) for a in _strings(actions, "actions")}
    if ancestors:
        versions = ancestry(labelmap.node, since)
    else:
        if since is not None:
            raise DvidInputError("since= selects among ancestors; it cannot be combined with ancestors=False")
        versions = [labelmap.node.uuid]
    # One small request per version: in parallel, each log kept in its version's place.
    logs = map_threaded(lambda uuid: _version_log(labelmap, uuid), versions, _LOG_WORKERS, "versions")
    rows: list[dict[str, Any]] = []
    for uuid, log in zip(versions, logs):
        for record in log:
            row = _row(uuid, record)
            if user is not None and row["user"] != user:
                continue
            if wanted is not None and row["action"] not in wanted:
                continue
            rows.append(row)
    return _log_frame(pd, rows)


def affected_bodies(source: Labelmap | Any, *, since: Node | str | None = None) -> AffectedBodies:
    """Bodies made, changed and removed by the edits between two versions.

    Parameters
    ----------
    source : Labelmap or pandas.DataFrame
        The labelmap at the later version, or a log from :func:`mutation_log`
        (already read; rows in the order the edits happened).
    since : Node or str, optional
        The earlier version (with a Labelmap only); default: before the repo's
        first edit.

    Returns
    -------
    AffectedBodies
        ``new``, ``changed``, ``removed``, ``new_supervoxels``, ``removed_supervoxels``.
        A body made and merged away again between the versions is in none of them;
        ``changed`` holds only bodies that exist at both versions.
    """
    log = _log_of(source, since, "affected_bodies()")
    new: set[int] = set()
    changed: set[int] = set()
    removed: set[int] = set()
    new_svs: set[int] = set()
    removed_svs: set[int] = set()
    for action, target, labels, supervoxels in zip(log["action"], log["target"], log["labels"], log["supervoxels"]):
        target = int(target)
        if action in ("merge", "renumber"):
            if action == "renumber":  # DVID renumbers only to an id no body has
                new.add(target)
            elif target not in new:
                changed.add(target)
            for label in labels:
                if label in new:
                    new.discard(label)  # made and gone again: never seen at either version
                else:
                    removed.add(label)
                changed.discard(label)
        elif action in ("cleave", "split"):
            if target not in new:
                changed.add(target)
            new.update(labels)
        elif action == "split-supervoxel":
            if target and target not in new:
                changed.add(target)
            old, *parts = supervoxels
            if old in new_svs:
                new_svs.discard(old)
            else:
                removed_svs.add(old)
            new_svs.update(parts)
    found = (new, changed, removed, new_svs, removed_svs)
    return AffectedBodies(*(np.array(sorted(ids), dtype=np.uint64) for ids in found))


def merge_chains(
    source: Labelmap | Any,
    bodies: Iterable[int] | None = None,
    *,
    since: Node | str | None = None,
) -> Any:
    """Which body each body was merged into, transitively (merges and renumbers).

    Body ``a`` merged into ``b``, and ``b`` later into ``c``: ``a``'s chain is
    ``(a, b, c)`` and its owner ``c``. Cleaves and splits are not followed: they
    give the cleaved part a new id and leave the body where it was.

    Parameters
    ----------
    source : Labelmap or pandas.DataFrame
        The labelmap at the version of interest, or a log from :func:`mutation_log`.
    bodies : iterable of int, optional
        The bodies to follow; default every body that a merge or renumber mentions,
        sorted. A body never merged is its own owner.
    since : Node or str, optional
        Only merges after this version (with a Labelmap only).

    Returns
    -------
    pandas.DataFrame
        Index ``body`` (uint64) and the columns ``owner`` (uint64: the body it is
        part of now, itself if never merged), ``merge_count`` (int64: merges along
        the chain) and ``chain`` (object: tuple of int from the body to its owner).
    """
    pd = pandas("merge_chains()")
    log = _log_of(source, since, "merge_chains()")
    merged_into: dict[int, int] = {}
    for action, target, labels in zip(log["action"], log["target"], log["labels"]):
        if action in ("merge", "renumber"):
            for label in labels:
                merged_into[int(label)] = int(target)
    if bodies is None:
        chosen = sorted(set(merged_into) | set(merged_into.values()))
    else:
        chosen = _body_list(bodies)
    chains = [_chain(body, merged_into) for body in chosen]
    frame = pd.DataFrame(
        {
            "owner": np.array([c[-1] for c in chains], dtype=np.uint64),
            "merge_count": np.array([len(c) - 1 for c in chains], dtype=np.int64),
            "chain": pd.Series(chains, dtype=object),
        }
    )
    frame.index = pd.Index(np.array(chosen, dtype=np.uint64), name="body")
    return frame


# ------------------------------------------------------------------ helpers
def _ancestors(info: RepoInfo, uuid: str) -> list[str]:
    """``uuid`` and its ancestors, each after all of its parents; ties oldest first."""
    seen: set[str] = set()
    stack = [uuid]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        version = info.versions.get(current)
        if version is None:
            raise DvidInputError(f"version {current} is not in repo {info.root} ({info.alias!r})")
        stack.extend(version.parents)
    order: list[str] = []
    placed: set[str] = set()
    pending = sorted(seen, key=lambda u: (info.versions[u].created, u))
    while pending:  # a DAG: each pass places at least the oldest version whose parents are placed
        rest = []
        for current in pending:
            if all(p in placed for p in info.versions[current].parents):
                order.append(current)
                placed.add(current)
            else:
                rest.append(current)
        pending = rest
    return order


def _resolve(info: RepoInfo, version: Node | str) -> str:
    uuid = version if isinstance(version, str) else version.uuid
    if uuid in info.versions:
        return uuid
    matches = [u for u in info.versions if u.startswith(uuid)] if uuid else []
    if len(matches) == 1:
        return matches[0]
    what = "no" if not matches else f"{len(matches)}"
    raise DvidInputError(
        f"since={uuid!r} matches {what} versions of repo {info.root[:8]} ({info.alias!r}); "
        "give a Node or a UUID (or unique prefix) of one of its versions"
    )


def _version_log(labelmap: Labelmap, uuid: str) -> list[dict[str, Any]]:
    node = labelmap.node if uuid == labelmap.node.uuid else type(labelmap.node)(labelmap.node.client, uuid)
    try:
        answer = labelmap.transport.get_json(node.path(labelmap.name, "mutations"))
    except BadRequestError as exc:
        if "jsonstore" in exc.message.lower():
            raise UnsupportedError(
                f"the server keeps no mutation log for {labelmap.name!r}: its config needs a [mutations] "
                f"section with jsonstore = <directory> ({exc.message})"
            ) from None
        raise
    return list(answer or [])


def _plain_action(action: str) -> str:
    return action.removesuffix("-complete")


def _row(uuid: str, record: dict[str, Any]) -> dict[str, Any]:
    action = _plain_action(str(record.get("Action", "")))
    target = 0
    labels: tuple[int, ...] = ()
    supervoxels: tuple[int, ...] = ()
    if action == "merge":
        target = record.get("Target", 0)
        labels = tuple(sorted(int(v) for v in record.get("Labels") or ()))
    elif action == "cleave":
        target = record.get("OrigLabel", 0)
        labels = (int(record.get("CleavedLabel", 0)),)
        supervoxels = tuple(int(v) for v in record.get("CleavedSupervoxels") or ())
    elif action == "split":
        target = record.get("Target", 0)
        labels = (int(record.get("NewLabel", 0)),)
    elif action == "split-supervoxel":
        target = record.get("Body", 0)
        supervoxels = tuple(
            int(record.get(k, 0)) for k in ("Supervoxel", "SplitSupervoxel", "RemainSupervoxel")
        )
    elif action == "renumber":
        target = record.get("NewLabel", 0)
        labels = (int(record.get("OrigLabel", 0)),)
    return {
        "uuid": str(record.get("UUID") or uuid),
        "mutation_id": int(record.get("MutationID", 0)),
        "action": action,
        "target": int(target or 0),
        "labels": labels,
        "supervoxels": supervoxels,
        "user": str(record.get("User") or ""),
        "app": str(record.get("App") or ""),
        "timestamp": _go_time(record.get("Timestamp")),
        "record": record,
    }


def _go_time(text: Any) -> str | None:
    """Go's ``time.String()`` as ISO 8601 (the monotonic reading and zone name dropped)."""
    match = _GO_TIME.match(text) if isinstance(text, str) else None
    if match is None:
        return None
    date, clock, zone = match.groups()
    return f"{date}T{clock}{zone[:3]}:{zone[3:]}"


def _log_frame(pd: Any, rows: list[dict[str, Any]]) -> Any:
    def column(name: str) -> list[Any]:
        return [row[name] for row in rows]

    return pd.DataFrame(
        {
            "uuid": pd.Series(column("uuid"), dtype="str"),
            "mutation_id": np.array(column("mutation_id"), dtype=np.uint64),
            "action": pd.Series(column("action"), dtype="str"),
            "target": np.array(column("target"), dtype=np.uint64),
            "labels": pd.Series(column("labels"), dtype=object),
            "supervoxels": pd.Series(column("supervoxels"), dtype=object),
            "user": pd.Series(column("user"), dtype="str"),
            "app": pd.Series(column("app"), dtype="str"),
            "timestamp": pd.to_datetime(pd.Series(column("timestamp"), dtype=object), utc=True).astype(
                "datetime64[ns, UTC]"
            ),
            "record": pd.Series(column("record"), dtype=object),
        },
        columns=list(LOG_COLUMNS),
    )


def _log_of(source: Any, since: Node | str | None, what: str) -> Any:
    pd = pandas(what)
    if isinstance(source, pd.DataFrame):
        if since is not None:
            raise DvidInputError(f"{what} takes since= only with a Labelmap; a log is already read")
        missing = {"action", "target", "labels", "supervoxels"} - set(source.columns)
        if missing:
            raise DvidInputError(
                f"{what} needs a log from mutation_log(); this DataFrame lacks the columns {sorted(missing)}"
            )
        return source
    return mutation_log(source, since=since)


def _chain(body: int, merged_into: dict[int, int]) -> tuple[int, ...]:
    chain = [body]
    seen = {body}
    while (nxt := merged_into.get(chain[-1])) is not None and nxt not in seen:
        chain.append(nxt)
        seen.add(nxt)
    return tuple(chain)


def _strings(values: Iterable[str], what: str) -> list[str]:
    if isinstance(values, str):
        return [values]
    out = list(values)
    if not all(isinstance(v, str) for v in out):
        raise DvidInputError(f"{what} are names such as 'merge' or 'cleave', got {out!r}")
    return out


def _body_list(bodies: Iterable[int] | np.ndarray) -> list[int]:
    if isinstance(bodies, np.ndarray):
        if bodies.dtype.kind not in "iu":
            raise DvidInputError(f"bodies are integers, got an array of {bodies.dtype}")
        values: list[Any] = bodies.ravel().tolist()
    else:
        values = [bodies] if isinstance(bodies, (int, np.integer)) else list(bodies)
    out = []
    for value in values:  # one by one: numpy turns ids above 2**63 mixed with small ones into floats
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 < value < 2**64:
            raise DvidInputError(f"bodies are integers from 1 to 2**64-1, got {value!r}")
        out.append(int(value))
    return out
