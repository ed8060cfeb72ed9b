"""labelmap's edits: merge, cleave (one, several, hierarchically), renumber, split bodies and
supervoxels, the mutation log.

DVID records each edit as a mutation with an id, which the single edits return. An
edit is not safe to repeat: it is sent again only after a 503 or 429, which DVID (or a
proxy in front of it) gives before doing anything; after an answer lost on the wire the
error says the edit may or may not have been made
(:meth:`~dvid_store.transport.Transport.send_once`).
DVID v1.0.0's ``POST /renumber`` works pair by pair and stops at the first pair it
refuses, keeping the pairs before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..errors import DvidInputError
from .base import Instance
from .label_volume import _label_id, _label_list
from .sparsevol import encode_rles, runs_from_mask


class CleaveResult(NamedTuple):
    """Answer of :meth:`Labelmap.cleave`: the new body and the mutation id."""

    cleaved_label: int
    mutation_id: int


class SplitSupervoxelResult(NamedTuple):
    """Answer of :meth:`Labelmap.split_supervoxel`: the two new supervoxels and the mutation id."""

    split_supervoxel: int
    remain_supervoxel: int
    mutation_id: int


class SplitResult(NamedTuple):
    """Answer of :meth:`Labelmap.split`: the new body and the mutation id."""

    label: int
    mutation_id: int


class _LabelMutations(Instance):
    """The edits of :class:`~dvid_store.datatypes.labels.Labelmap` (``/merge``, ``/cleave``, ``/split``...)."""

    def merge(self, target: int, others: Iterable[int]) -> int:
        """Merge bodies ``others`` into body ``target`` (``POST /merge``).

        Returns
        -------
        int
            DVID's mutation id.
        """
        target = _label_id(target)
        rest = _label_list(others)
        if not rest:
            raise DvidInputError("merge needs at least one other body to merge into the target")
        if target in rest:
            raise DvidInputError(f"cannot merge body {target} into itself")
        self.require_writable("merging bodies")
        answer = self.transport.send_once(lambda: self.transport.post_json(self.path("merge"), [target, *rest]))
        return int(answer["MutationID"])

    def cleave(self, body: int, supervoxels: Iterable[int]) -> CleaveResult:
        """Move some supervoxels of a body into a new body (``POST /cleave``).

        Returns
        -------
        CleaveResult
            The new body id and the mutation id.
        """
        body = _label_id(body)
        svs = _label_list(supervoxels)
        if not svs:
            raise DvidInputError("cleave needs at least one supervoxel to move into the new body")
        self.require_writable("cleaving a body")
        answer = self.transport.send_once(lambda: self.transport.post_json(self.path("cleave", str(body)), svs))
        return CleaveResult(int(answer["CleavedLabel"]), int(answer["MutationID"]))

    def split_supervoxel(
        self,
        supervoxel: int,
        region: np.ndarray,
        *,
        offset: Sequence[int] | None = None,
        split_label: int | None = None,
        remain_label: int | None = None,
        downres: bool = True,
    ) -> SplitSupervoxelResult:
        """Split part of a supervoxel into a new supervoxel (``POST /split-supervoxel``).

        Both parts get new ids; the body keeps them both.

        Parameters
        ----------
        supervoxel : int
            The supervoxel to split.
        region : numpy.ndarray
            The voxels to split off: a 3-D boolean mask placed at ``offset``, or
            ``(N, 4)`` integer runs ``(z, y, x, length)`` (``offset`` then unused).
            They must belong to ``supervoxel``.
        offset : (z, y, x), optional
            Voxel coordinate of ``mask[0, 0, 0]`` (default the origin).
        split_label, remain_label : int, optional
            Ids to use for the two parts (DVID picks new ones otherwise).
        downres : bool
            Let DVID rebuild the lower scales afterwards.
        """
        supervoxel = _label_id(supervoxel)
        body = encode_rles(_region_runs(region, offset))
        params: dict[str, Any] = {}
        if split_label is not None:
            params["split"] = _label_id(split_label)
        if remain_label is not None:
            params["remain"] = _label_id(remain_label)
        if not downres:
            params["downres"] = "false"
        self.require_writable("splitting a supervoxel")
        answer = self.transport.send_once(lambda: self.transport.request_json(
            "POST", self.path("split-supervoxel", str(supervoxel)), params=params, data=body
        ))
        return SplitSupervoxelResult(
            int(answer["SplitSupervoxel"]), int(answer["RemainSupervoxel"]), int(answer["MutationID"])
        )

    def split(self, body: int, region: np.ndarray, *, offset: Sequence[int] | None = None) -> SplitResult:
        """Split voxels off a body into a new body (``POST /split``).

        ``region`` and ``offset`` as in :meth:`split_supervoxel`. DVID v1.0.0
        allows this unless the server runs with ``noLabelmapSplit``; newer DVIDs
        only with ``allowLabelmapSplit``.
        """
        body = _label_id(body)
        payload = encode_rles(_region_runs(region, offset))
        self.require_writable("splitting a body")
        answer = self.transport.send_once(
            lambda: self.transport.request_json("POST", self.path("split", str(body)), data=payload)
        )
        return SplitResult(int(answer["label"]), int(answer["MutationID"]))

    def mutations(self, *, user: str | None = None) -> list[dict[str, Any]]:
        """The mutation log of this version (``GET /mutations``): merges, cleaves, splits…

        Each record is DVID's JSON object (``"Action"``, ``"MutationID"``, …).
        Needs a server with a ``[mutations] jsonstore``.

        Parameters
        ----------
        user : str, optional
            Only the mutations made by this user (the records' ``"User"``). DVID
            v1.0.0 documents ``userid=`` but ignores it, so the records are
            filtered here (the parameter is still sent, for servers that filter).
        """
        params = {"userid": user} if user is not None else None
        records = list(self.transport.get_json(self.path("mutations"), params=params) or [])
        if user is not None:
            records = [r for r in records if r.get("User") == user]
        return records

    def renumber(self, renumbering: Any) -> None:
        """Give bodies new ids (``POST /renumber``): body ``old`` becomes body ``new``.

        Parameters
        ----------
        renumbering : mapping of int to int, or pandas.Series
            Old body id → new body id. Each new id must not be a body yet.

        Raises
        ------
        DvidInputError
            An id is not a label, an old or new id repeats, or an id is both old
            and new. Nothing is sent.
        BadRequestError
            DVID refused a pair (e.g. the new id exists, or the old body does not).
            DVID renumbers pair by pair and stops at the first failure: the pairs
            before it are done.
        """
        pairs = _renumber_pairs(renumbering)
        if not pairs:
            return
        self.require_writable("renumbering bodies")
        payload = [value for old, new in pairs for value in (new, old)]
        self.transport.send_once(lambda: self.transport.request("POST", self.path("renumber"), json=payload))

    def cleave_groups(self, body: int, groups: Iterable[Iterable[int]]) -> list[CleaveResult]:
        """Cleave several groups of supervoxels off one body, one ``POST /cleave`` each, in order.

        Each group becomes a new body; the body keeps the supervoxels in no group.
        For many groups of a big body :meth:`hierarchical_cleave` is much faster.

        Returns
        -------
        list of CleaveResult
            One per group, in order.

        Raises
        ------
        DvidInputError
            A group is empty, or a supervoxel is in two groups. Nothing is sent.
        """
        body = _label_id(body)
        lists = [_label_list(g) for g in groups]
        _check_groups(lists)
        return [self.cleave(body, svs) for svs in lists]

    def hierarchical_cleave(self, body: int, groups: Any) -> Any:
        """Leave each group of a body's supervoxels as a body of its own, in few, cheap cleaves.

        Cleaving many small groups off a big body one by one costs DVID a pass
        over the big body's label index each time. Instead the groups are halved
        recursively: cleave half of them off, then divide each half again, so
        every cleave works on a smaller body (like neuclease's
        ``post_hierarchical_cleaves``).

        If the groups hold every supervoxel of the body, the last group (in sorted
        group order) keeps the body's id; otherwise every group gets a new one and
        the body keeps the rest.

        Parameters
        ----------
        body : int
            The body to cleave.
        groups : pandas.Series or mapping of int to int
            Supervoxel id → group id (any integers); every supervoxel must belong
            to ``body``.

        Returns
        -------
        pandas.DataFrame
            Indexed by uint64 supervoxel id (named ``"sv"``), sorted, with columns
            ``group`` (int64, the given group) and ``body`` (uint64, the body it
            belongs to now).

        Raises
        ------
        DvidInputError
            A supervoxel is not part of ``body`` (nothing is sent), or no groups.
        """
        from ._frames import pandas

        pd = pandas("Labelmap.hierarchical_cleave()")
        body = _label_id(body)
        if hasattr(groups, "index") and hasattr(groups, "to_numpy"):
            svs = _label_list(np.asarray(groups.index.to_numpy()))
            group_ids = [int(g) for g in groups.to_numpy().tolist()]
        else:
            items = dict(groups)
            svs = _label_list(list(items))
            group_ids = [int(items[k]) for k in items]
        if not svs:
            raise DvidInputError("hierarchical_cleave needs at least one supervoxel in a group")
        if len(set(svs)) != len(svs):
            raise DvidInputError("a supervoxel appears more than once in the groups")
        mapped = self.mapping(svs)  # type: ignore[attr-defined]
        strangers = [sv for sv, b in zip(svs, mapped.tolist()) if b != body]
        if strangers:
            raise DvidInputError(
                f"supervoxels {strangers[:10]} are not part of body {body}; give only the body's own supervoxels"
            )
        members: dict[int, list[int]] = {}
        for sv, g in zip(svs, group_ids):
            members.setdefault(g, []).append(sv)
        ordered = [members[g] for g in sorted(members)]
        all_svs = set(self.supervoxels(body).tolist())  # type: ignore[attr-defined]
        result: dict[int, int] = {}
        if set(svs) != all_svs:
            # Move every grouped supervoxel away first, so the rest (maybe big) is
            # not dragged through every further cleave, and so every group gets a new id.
            body = self.cleave(body, svs).cleaved_label
        self._cleave_halves(body, ordered, result)
        frame = pd.DataFrame(
            {
                "group": np.asarray(group_ids, dtype=np.int64),
                "body": np.asarray([result[sv] for sv in svs], dtype=np.uint64),
            },
            index=pd.Index(np.asarray(svs, dtype=np.uint64), name="sv"),
        )
        return frame.sort_index()

    def _cleave_halves(self, body: int, groups: list[list[int]], result: dict[int, int]) -> None:
        """Split ``groups`` (all of ``body``) into two halves of about equal supervoxels; recurse."""
        if len(groups) == 1:
            result.update((sv, body) for sv in groups[0])
            return
        sizes = np.cumsum([len(g) for g in groups])
        cut = int(np.argmin(np.abs(sizes[:-1] - sizes[-1] / 2))) + 1
        first, rest = groups[:cut], groups[cut:]
        moved = self.cleave(body, [sv for g in first for sv in g]).cleaved_label
        self._cleave_halves(moved, first, result)
        self._cleave_halves(body, rest, result)


def _renumber_pairs(renumbering: Any) -> list[tuple[int, int]]:
    if hasattr(renumbering, "index") and hasattr(renumbering, "to_numpy"):
        olds = _label_list(np.asarray(renumbering.index.to_numpy()))
        news = _label_list(np.asarray(renumbering.to_numpy()))
    else:
        items = dict(renumbering)
        olds = _label_list(list(items))
        news = _label_list([items[k] for k in items])
    if len(set(olds)) != len(olds) or len(set(news)) != len(news):
        raise DvidInputError("each old and each new body id may appear only once in a renumbering")
    both = set(olds) & set(news)
    if both:
        raise DvidInputError(
            f"ids {sorted(both)[:10]} are both renumbered and renumbering targets; renumber in two steps"
        )
    return list(zip(olds, news))


def _check_groups(groups: list[list[int]]) -> None:
    seen: set[int] = set()
    for k, group in enumerate(groups):
        if not group:
            raise DvidInputError(f"group {k} is empty; every cleave moves at least one supervoxel")
        if seen.intersection(group):
            raise DvidInputError(f"group {k} repeats supervoxels of an earlier group; groups must not overlap")
        seen.update(group)


def _region_runs(region: np.ndarray, offset: Sequence[int] | None) -> np.ndarray:
    arr = np.asarray(region)
    if arr.dtype == bool or (arr.ndim == 3 and offset is not None):
        runs = runs_from_mask(arr, offset if offset is not None else (0, 0, 0))
    elif arr.ndim == 2 and arr.shape[1] == 4:
        runs = arr
    else:
        raise DvidInputError(
            "the region is a 3-D boolean mask (with offset=) or (N, 4) runs (z, y, x, length); "
            f"got an array of shape {arr.shape} and dtype {arr.dtype}"
        )
    if len(runs) == 0:
        raise DvidInputError("the region to split off is empty")
    return runs
