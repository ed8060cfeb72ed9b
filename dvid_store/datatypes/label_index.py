"""labelmap's label index: sizes, bounding boxes, supervoxels and bodies, label ids.

DVID keeps, per label, the blocks holding it and its voxel count in each; these
calls read that index instead of the voxels. labelmap ``POST /raw`` indexes labels
*after* it answers: sizes, sparse volumes, merges etc. see the new voxels a moment
later (:meth:`~_LabelIndex.wait_for_sizes` waits for a known state).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from ..errors import DvidError, DvidInputError
from ..geometry import Box
from .label_volume import _label_id, _label_list, _max_label
from .sparse_volumes import _SparseVolumes


class IndexingTimeoutError(DvidError, TimeoutError):
    """DVID's label index did not reach the expected state before the deadline."""


class SparsevolSize(NamedTuple):
    """What DVID's label index knows of a label without reading its voxels.

    Attributes
    ----------
    voxels : int
        Number of voxels.
    num_blocks : int
        Number of blocks holding some of them.
    box : ((z0, y0, x0), (z1, y1, x1))
        Half-open bounding box **rounded out to whole blocks** (DVID's answer);
        see :meth:`Labelmap.bounding_box` for the exact one.
    """

    voxels: int
    num_blocks: int
    box: Box


class _LabelIndex(_SparseVolumes):
    """The label-index calls of :class:`~dvid_store.datatypes.labels.Labelmap`."""

    # provided by the label volume (_LabelVolume)
    _extents_for: Callable[[Mapping[str, Any]], Box | None]

    def body_size(self, label: int, *, supervoxels: bool = False) -> int:
        """Voxel count of a body (or supervoxel) from the label index (``GET /size``); 0 if absent."""
        label = _label_id(label)
        params = self._label_params(0, supervoxels)
        response = self.transport.request("GET", self.path("size", str(label)), params=params, allow_status=(404,))
        return 0 if response.status_code == 404 else int(response.json()["voxels"])

    def body_sizes(self, labels: Iterable[int], *, supervoxels: bool = False) -> np.ndarray:
        """Voxel counts of many bodies (or supervoxels) in one request (``GET /sizes``).

        Returns
        -------
        numpy.ndarray
            int64 counts in the order of ``labels``; 0 for absent labels.
        """
        ids = _label_list(labels)
        if not ids:
            return np.zeros(0, dtype=np.int64)
        params = self._label_params(0, supervoxels)
        answer = self.transport.request_json("GET", self.path("sizes"), params=params, data=json.dumps(ids).encode())
        return np.asarray(answer, dtype=np.int64)

    def sparsevol_size(self, label: int, *, supervoxels: bool = False) -> SparsevolSize | None:
        """Voxel count, block count and block-rounded box of a label (``GET /sparsevol-size``).

        Returns ``None`` if the label has no voxels.
        """
        label = _label_id(label)
        params = self._label_params(0, supervoxels)
        response = self.transport.request(
            "GET", self.path("sparsevol-size", str(label)), params=params, allow_status=(404,)
        )
        if response.status_code == 404:
            return None
        info = response.json()
        return _sparsevol_size(info, int(info["voxels"]))

    def bounding_box(
        self,
        label: int | None = None,
        *,
        supervoxels: bool = False,
        scale: int = 0,
        exact: bool = True,
    ) -> Box | None:
        """Bounding box of a label, or of the whole stored volume when ``label`` is None.

        Parameters
        ----------
        label : int, optional
            Body (or supervoxel) id; ``None`` gives :attr:`extents`.
        exact : bool
            ``True``: the exact half-open box, from the label's sparse volume (reads
            its runs). ``False``: the box rounded out to whole blocks, from the
            label index alone (cheap; scale 0 only).

        Returns
        -------
        ((z0, y0, x0), (z1, y1, x1)) or None
            ``None`` if the label (or the volume) is empty.
        """
        if label is None:
            return self._extents_for({"scale": scale})
        if exact:
            return self._exact_bounding_box(label, scale, supervoxels)
        if scale:
            raise DvidInputError("exact=False bounding boxes come from the scale-0 label index; use scale=0")
        size = self.sparsevol_size(label, supervoxels=supervoxels)
        return None if size is None else size.box

    def supervoxels(self, body: int) -> np.ndarray:
        """Supervoxel ids of a body (``GET /supervoxels``), sorted; empty if the body is absent."""
        body = _label_id(body)
        response = self.transport.request("GET", self.path("supervoxels", str(body)), allow_status=(404,))
        if response.status_code == 404:
            return np.zeros(0, dtype=np.uint64)
        return np.sort(np.asarray(response.json(), dtype=np.uint64))

    def supervoxel_sizes(self, body: int) -> dict[int, int]:
        """Voxel count of every supervoxel of a body (``GET /supervoxel-sizes``); empty if absent."""
        body = _label_id(body)
        response = self.transport.request("GET", self.path("supervoxel-sizes", str(body)), allow_status=(404,))
        if response.status_code == 404:
            return {}
        info = response.json()
        return {int(s): int(n) for s, n in zip(info["supervoxels"], info["sizes"])}

    def mapping(self, supervoxels: Iterable[int]) -> np.ndarray:
        """Body id of each supervoxel (``GET /mapping``); 0 for unknown supervoxels.

        Returns
        -------
        numpy.ndarray
            uint64 body ids in the order of ``supervoxels``.
        """
        ids = _label_list(supervoxels)
        if not ids:
            return np.zeros(0, dtype=np.uint64)
        answer = self.transport.request_json("GET", self.path("mapping"), data=json.dumps(ids).encode())
        return np.asarray(answer, dtype=np.uint64)

    def last_modified(self, label: int) -> dict[str, Any] | None:
        """DVID's last-modification record of a body (``GET /lastmod``); ``None`` if absent.

        Keys: ``"mutation id"``, ``"last mod user"``, ``"last mod app"``, ``"last mod time"``.
        """
        label = _label_id(label)
        response = self.transport.request("GET", self.path("lastmod", str(label)), allow_status=(404,))
        return None if response.status_code == 404 else response.json()

    def wait_for_sizes(
        self,
        expected: Mapping[int, int],
        *,
        supervoxels: bool = False,
        timeout: float = 60.0,
        interval: float = 0.05,
    ) -> None:
        """Wait until the label index reports exactly ``expected`` voxel counts.

        DVID indexes the labels of ``POST /raw`` after it has answered, so sizes,
        sparse volumes and edits see a write a moment later. Call this with the
        sizes you know the labels must reach.

        Parameters
        ----------
        expected : mapping of int to int
            Label → voxel count (0 for "absent").
        timeout : float
            Seconds before giving up.

        Raises
        ------
        IndexingTimeoutError
            The sizes did not match within ``timeout``; the message shows the last answer.
        """
        labels = list(expected)
        want = np.asarray([expected[label] for label in labels], dtype=np.int64)
        deadline = time.monotonic() + timeout
        while True:
            got = self.body_sizes(labels, supervoxels=supervoxels)
            if np.array_equal(got, want):
                return
            if time.monotonic() >= deadline:
                last = dict(zip(labels, got.tolist()))
                raise IndexingTimeoutError(
                    f"label index of {self.name!r} did not reach sizes {dict(expected)} within {timeout} s; "
                    f"last answer {last}"
                )
            time.sleep(interval)  # polling the server's real state; DVID gives no completion signal

    # ----------------------------------------------------------- label ids
    def max_label(self) -> int:
        """Largest label stored in this version (``GET /maxlabel``); 0 if none recorded yet."""
        return _max_label(self)

    def set_max_label(self, label: int) -> None:
        """Raise the recorded max label (``POST /maxlabel/<n>``; admin-only on newer DVIDs)."""
        label = _label_id(label)
        self.require_writable("setting the max label")
        self.transport.request("POST", self.path("maxlabel", str(label)), admin=True)

    def next_label(self) -> int:
        """The label :meth:`reserve_labels` would hand out next (``GET /nextlabel``); reserves nothing."""
        return int(self.transport.get_json(self.path("nextlabel"))["nextlabel"])

    def reserve_labels(self, count: int = 1) -> range:
        """Reserve ``count`` new, unused labels (``POST /nextlabel/<count>``).

        Returns
        -------
        range
            The reserved labels (DVID's inclusive ``start``…``end``).
        """
        return _reserve_labels(self, count)


def _reserve_labels(instance: Any, count: int) -> range:
    if int(count) < 1:
        raise DvidInputError(f"count must be at least 1, got {count}")
    instance.require_writable("reserving labels")
    answer = instance.transport.post_json(instance.path("nextlabel", str(int(count))))
    return range(int(answer["start"]), int(answer["end"]) + 1)


def _sparsevol_size(info: Mapping[str, Any], voxels: int) -> SparsevolSize:
    lo, hi = info["minvoxel"], info["maxvoxel"]
    box = (int(lo[2]), int(lo[1]), int(lo[0])), (int(hi[2]) + 1, int(hi[1]) + 1, int(hi[0]) + 1)
    return SparsevolSize(voxels, int(info["numblocks"]), box)
