"""Sparse volumes of labels (``/sparsevol``): the voxels of one label as runs, coordinates or a mask.

:class:`_SparseVolumes` holds the calls that labelmap, labelarray and labelvol share:
:meth:`~_SparseVolumes.sparsevol`, :meth:`~_SparseVolumes.sparsevol_coarse`,
:meth:`~_SparseVolumes.body_exists` and exact bounding boxes. DVID's run-length
encoding itself is :mod:`dvid_store.datatypes.sparsevol`.

DVID v1.0.0 behaviours worked around here (checked against the server):

* ``/sparsevol`` bounds with a negative minimum select the wrong blocks (the body
  is then "not found"); negative minimum bounds are applied here instead.
* labelmap and labelarray ``GET /sparsevol`` **crash the whole server** (an
  unrecovered panic in DVID's run-length writer) when a block holding the label
  has a mixed sub-block at negative coordinates. For labels whose indexed blocks
  reach below 0 the sparse volume is therefore built here, by reading those blocks
  (found with ``/sparsevol-coarse``) through ``/raw``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..errors import DvidInputError
from ..geometry import ZYX, Box, as_box, as_zyx
from .base import Instance
from .label_volume import _label_id, _LabelOptions
from .sparsevol import (
    clip_runs,
    decode_rles,
    runs_bounding_box,
    runs_from_coords,
    runs_from_mask,
    runs_to_coords,
    runs_to_mask,
)

_SPARSEVOL_FORMATS = ("coords", "rles", "mask")


class _SparseVolumes(_LabelOptions, Instance):
    """Sparse-volume calls shared by labelmap, labelarray and labelvol (all via ``/sparsevol``)."""

    #: DVID's run-length writer for this type crashes on negative coordinates.
    _rles_fail_below_zero: ClassVar[bool] = False

    if TYPE_CHECKING:
        # Every concrete class (labelarray, labelvol) defines it.
        @property
        def block_shape(self) -> ZYX: ...

    def body_exists(self, label: int, *, supervoxels: bool = False) -> bool:
        """Whether ``label`` has any voxel (``HEAD /sparsevol``; libdvid's ``body_exists``).

        Parameters
        ----------
        label : int
            Body id (or supervoxel id with ``supervoxels=True``, labelmap only).
        """
        label = _label_id(label)
        params = self._label_params(0, supervoxels)
        response = self.transport.request(
            "HEAD", self.path("sparsevol", str(label)), params=params, allow_status=(204, 404)
        )
        return response.status_code == 200

    def _sparsevol_runs(
        self, label: int, box: Box | None, scale: int, supervoxels: bool
    ) -> np.ndarray:
        label = _label_id(label)
        params = self._label_params(scale, supervoxels)
        if self._rles_fail_below_zero:
            blocks = self._index_block_box(label, supervoxels)
            if blocks is None:
                return np.zeros((0, 4), dtype=np.int32)
            if min(blocks[0]) < 0:
                return self._runs_by_reading(label, box, scale, supervoxels)
        if box is not None:
            (z0, y0, x0), (z1, y1, x1) = box
            # DVID's bounds are inclusive; its block screening truncates negative
            # minimums towards 0 and then misses blocks, so those are clipped here.
            for key, value in (("minz", z0), ("miny", y0), ("minx", x0)):
                if value >= 0:
                    params[key] = value
            params.update(maxz=z1 - 1, maxy=y1 - 1, maxx=x1 - 1)
        response = self.transport.request(
            "GET", self.path("sparsevol", str(label)), params=params, allow_status=(404,)
        )
        if response.status_code == 404 or not response.content:
            return np.zeros((0, 4), dtype=np.int32)
        runs = decode_rles(response.content)
        if box is not None:
            runs = clip_runs(runs, box)
        return _sorted_runs(runs)

    def _index_block_box(self, label: int, supervoxels: bool) -> Box | None:
        """The label's box rounded out to blocks, from the label index (``/sparsevol-size``)."""
        params = self._label_params(0, supervoxels)
        response = self.transport.request(
            "GET", self.path("sparsevol-size", str(label)), params=params, allow_status=(404,)
        )
        if response.status_code == 404:
            return None
        lo, hi = response.json()["minvoxel"], response.json()["maxvoxel"]
        return (int(lo[2]), int(lo[1]), int(lo[0])), (int(hi[2]) + 1, int(hi[1]) + 1, int(hi[0]) + 1)

    def _runs_by_reading(self, label: int, box: Box | None, scale: int, supervoxels: bool) -> np.ndarray:
        """Runs of ``label`` found by reading the blocks that hold it.

        DVID v1.0.0's run-length writer indexes sub-blocks with Go's truncating
        ``%`` and crashes the *whole server* on a mixed sub-block at negative
        coordinates, so labels reaching below 0 are never asked from ``/sparsevol``.
        The blocks come from the label index (``/sparsevol-coarse``).
        """
        response = self.transport.request(
            "GET", self.path("sparsevol-coarse", str(label)), params=self._label_params(0, supervoxels),
            allow_status=(404,),
        )
        if response.status_code == 404 or not response.content:
            return np.zeros((0, 4), dtype=np.int32)
        blocks = runs_to_coords(decode_rles(response.content)).astype(np.int64)
        if scale:
            blocks = np.unique(blocks // 2**scale, axis=0)  # a scale-s block holds 2^s x 2^s x 2^s old ones
        size = np.asarray(self.block_shape, dtype=np.int64)
        boxes: list[Box] = []
        for bz, by, bx, n in _sorted_runs(runs_from_coords(blocks)).tolist():
            start = (bz * size[0], by * size[1], bx * size[2])
            stop = ((bz + 1) * size[0], (by + 1) * size[1], (bx + n) * size[2])
            if box is not None:
                start = tuple(max(a, b) for a, b in zip(start, box[0]))
                stop = tuple(min(a, b) for a, b in zip(stop, box[1]))
                if any(b <= a for a, b in zip(start, stop)):
                    continue
            boxes.append((as_zyx(start), as_zyx(stop)))

        def runs_in(part: Box) -> np.ndarray:
            data = self.read(part, scale=scale, supervoxels=supervoxels)  # type: ignore[attr-defined]
            return runs_from_mask(data == np.uint64(label), part[0])

        if not boxes:
            return np.zeros((0, 4), dtype=np.int32)
        workers = min(len(boxes), int(getattr(self, "max_workers", 1)))
        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dvid-sparsevol") as pool:
                pieces = list(pool.map(runs_in, boxes))
        else:
            pieces = [runs_in(part) for part in boxes]
        return _sorted_runs(np.concatenate(pieces).astype(np.int32))

    def sparsevol(
        self,
        label: int,
        *,
        format: str = "rles",
        box: Box | Sequence[Sequence[int]] | None = None,
        scale: int = 0,
        supervoxels: bool = False,
    ) -> np.ndarray:
        """The voxels of one label (``GET /sparsevol``), as runs, coordinates or a mask.

        Parameters
        ----------
        label : int
            Body id (or supervoxel id with ``supervoxels=True``).
        format : {"rles", "coords", "mask"}
            ``"rles"``: int32 ``(N, 4)`` runs along x, rows ``(z, y, x, length)``
            sorted by z, y, x;
            ``"coords"``: int32 ``(N, 3)`` voxel coordinates ``(z, y, x)``, sorted;
            ``"mask"``: a boolean array of ``box``'s shape (``box`` required).
        box : ((z0, y0, x0), (z1, y1, x1)), optional
            Only voxels in this half-open box (at ``scale``).
        scale : int
            Resolution level (labelmap/labelarray); coordinates are in that level's grid.
        supervoxels : bool
            ``label`` is a supervoxel id (labelmap only).

        Returns
        -------
        numpy.ndarray
            Empty (or an all-false mask) if the label has no voxels there.
        """
        if format not in _SPARSEVOL_FORMATS:
            raise DvidInputError(f"format must be one of {', '.join(_SPARSEVOL_FORMATS)}, got {format!r}")
        bounds = as_box(box) if box is not None else None
        if format == "mask" and bounds is None:
            raise DvidInputError(
                "format='mask' needs the box the mask covers, e.g. box=vol.bounding_box(label)"
            )
        runs = self._sparsevol_runs(label, bounds, scale, supervoxels)
        if format == "rles":
            return runs
        if format == "coords":
            return runs_to_coords(runs)
        assert bounds is not None
        return runs_to_mask(runs, bounds)

    def sparsevol_coarse(self, label: int, *, supervoxels: bool = False) -> np.ndarray:
        """Block coordinates of the blocks holding ``label`` (``GET /sparsevol-coarse``).

        Returns
        -------
        numpy.ndarray
            int32 ``(N, 3)`` rows of block coordinates ``(bz, by, bx)`` (multiply by
            :attr:`block_shape` for voxels); empty if the label is absent.
        """
        label = _label_id(label)
        params = self._label_params(0, supervoxels)
        response = self.transport.request(
            "GET", self.path("sparsevol-coarse", str(label)), params=params, allow_status=(404,)
        )
        if response.status_code == 404 or not response.content:
            return np.zeros((0, 3), dtype=np.int32)
        return runs_to_coords(decode_rles(response.content))

    def _exact_bounding_box(self, label: int, scale: int, supervoxels: bool) -> Box | None:
        return runs_bounding_box(self._sparsevol_runs(label, None, scale, supervoxels))


def _sorted_runs(runs: np.ndarray) -> np.ndarray:
    """Runs in (z, y, x) order (DVID sends them block by block)."""
    return runs[np.lexsort((runs[:, 2], runs[:, 1], runs[:, 0]))]
