"""labelmap's edits: merge and cleave bodies, split bodies and supervoxels, the mutation log.

DVID records each edit as a mutation with an id, which every call here returns.
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
        answer = self.transport.post_json(self.path("merge"), [target, *rest])
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
        answer = self.transport.post_json(self.path("cleave", str(body)), svs)
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
        answer = self.transport.request_json(
            "POST", self.path("split-supervoxel", str(supervoxel)), params=params, data=body
        )
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
        answer = self.transport.request_json("POST", self.path("split", str(body)), data=payload)
        return SplitResult(int(answer["label"]), int(answer["MutationID"]))

    def mutations(self) -> list[dict[str, Any]]:
        """The mutation log of this version (``GET /mutations``): merges, cleaves, splits…

        Each record is DVID's JSON object (``"Action"``, ``"MutationID"``, …).
        Needs a server with a ``[mutations] jsonstore``.
        """
        return list(self.transport.get_json(self.path("mutations")) or [])


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
