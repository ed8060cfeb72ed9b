"""Segmentation volumes: labelmap (first), labelarray and labelblk, plus labelvol.

All of them store uint64 labels in blocks; arrays are ``(z, y, x)`` numpy
arrays, points are ``(z, y, x)`` voxel coordinates (any sign), boxes are
half-open ``((z0, y0, x0), (z1, y1, x1))``.

* :class:`Labelmap` — supervoxels in blocks plus a supervoxel → body mapping,
  a label index (sizes, sparse volumes), lower scales, merge / cleave / split.
* :class:`Labelarray` — labelmap's predecessor: scales and sparse volumes, no
  supervoxels.
* :class:`Labelblk` — the oldest type: voxels only; sparse volumes come from a
  synced :class:`Labelvol` (``Labelblk.create(..., synced_labelvol="bodies")``,
  like libdvid's ``create_labelblk(name, labelvol_name)``).

DVID v1.0.0 behaviours this module works around (checked against the server):

* labelmap ``GET /label`` and ``GET /labels`` put points with a negative
  coordinate into the wrong block (truncating division) and answer wrong
  labels; :meth:`Labelmap.label_at` / :meth:`~Labelmap.labels_at` read such
  points through ``/raw`` instead, which is right.
* labelmap ``GET /raw`` of exactly one aligned block that was never written
  fails (400 with compression, a server panic → 500 without); such reads go
  through ``/specificblocks``, where an absent block simply reads as 0.
* labelmap and labelarray ``POST /raw`` with lower scales configured
  (``MaxDownresLevel > 0``) panic or write the wrong low-resolution blocks for
  negative block coordinates; such writes are refused before sending.
* ``/sparsevol`` bounds with a negative minimum select the wrong blocks (the
  body is then "not found"); negative minimum bounds are applied here instead.
* labelmap and labelarray ``GET /sparsevol`` **crash the whole server** (an
  unrecovered panic in DVID's run-length writer) when a block holding the
  label has a mixed sub-block at negative coordinates. For labels whose
  indexed blocks reach below 0 the sparse volume is therefore built here, by
  reading those blocks (found with ``/sparsevol-coarse``) through ``/raw``.
* labelmap ``POST /raw`` indexes labels *after* it answers: sizes, sparse
  volumes, merges etc. see the new voxels a moment later
  (:meth:`Labelmap.wait_for_sizes` waits for a known state). ``POST /raw``
  always rebuilds the lower scales; only block ingestion
  (``Labelmap.write(..., downres=False)``) leaves them alone.
* labelarray has no ``POST /nextlabel`` ("not supported yet"), so it cannot
  reserve labels; ``/sparsevol-size`` of labelarray has no voxel count.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import lz4.block
import numpy as np

from ..errors import BadRequestError, DvidError, DvidInputError, MalformedAnswerError
from ..geometry import Box, ZYX, as_box, as_zyx, block_coords_in_box, box_shape, is_aligned, xyz_string
from .base import Instance
from .sparsevol import (
    clip_runs,
    decode_rles,
    encode_rles,
    runs_bounding_box,
    runs_from_coords,
    runs_from_mask,
    runs_to_coords,
    runs_to_mask,
    runs_voxel_count,
)
from .volume import VolumeInstance, post_retrying_busy

if TYPE_CHECKING:
    from ..node import Node

__all__ = [
    "CleaveResult",
    "IndexingTimeoutError",
    "Labelarray",
    "Labelblk",
    "Labelmap",
    "Labelvol",
    "SparsevolSize",
    "SplitResult",
    "SplitSupervoxelResult",
]

_SPARSEVOL_FORMATS = ("coords", "rles", "mask")
_BLOCK_RECORD = struct.Struct("<3iI")  # block x, y, z, payload bytes


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


# ------------------------------------------------------------------ sparse volumes
class _LabelOptions:
    """The ``scale`` / ``supervoxels`` options, checked against what the type has."""

    _has_scales: ClassVar[bool] = False
    _has_supervoxels: ClassVar[bool] = False

    def _check_label_options(self, scale: int = 0, supervoxels: bool = False) -> None:
        if scale and not self._has_scales:
            raise DvidInputError(f"{type(self).__name__} instances have no lower scales; use scale=0")
        if not isinstance(scale, (int, np.integer)) or not 0 <= scale <= 255:
            raise DvidInputError(f"scale must be an integer from 0 (full resolution) upwards, got {scale!r}")
        if supervoxels and not self._has_supervoxels:
            raise DvidInputError(
                f"{type(self).__name__} instances have no supervoxels (only labelmap does); use supervoxels=False"
            )

    def _label_params(self, scale: int = 0, supervoxels: bool = False) -> dict[str, Any]:
        self._check_label_options(scale, supervoxels)
        params: dict[str, Any] = {}
        if scale:
            params["scale"] = int(scale)
        if supervoxels:
            params["supervoxels"] = "true"
        return params


class _SparseVolumes(_LabelOptions):
    """Sparse-volume calls shared by labelmap, labelarray and labelvol (all via ``/sparsevol``)."""

    #: DVID's run-length writer for this type crashes on negative coordinates.
    _rles_fail_below_zero: ClassVar[bool] = False

    # provided by Instance
    name: str
    path: Any
    transport: Any

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


# ------------------------------------------------------------------- label volumes
class _LabelVolume(_LabelOptions, VolumeInstance):
    """Reads, writes and point queries shared by labelmap, labelarray and labelblk."""

    _negative_points_need_raw: ClassVar[bool] = False
    _read_only_options: ClassVar[tuple[str, ...]] = ("scale", "supervoxels")

    @property
    def dtype(self) -> np.dtype:
        """Always ``uint64``."""
        return np.dtype(np.uint64)

    @property
    def max_downres_level(self) -> int:
        """Number of lower scales DVID keeps (scales 1 … this); 0 without any."""
        return int(self.info["Extended"].get("MaxDownresLevel") or 0)

    def _extents_for(self, options: Mapping[str, Any]) -> Box | None:
        ext = self.extents
        scale = int(options.get("scale", 0) or 0)
        if ext is None or not scale:
            return ext
        f = 2**scale
        start = tuple(c // f for c in ext[0])
        stop = tuple(-((-c) // f) for c in ext[1])
        return start, stop  # type: ignore[return-value]

    # ----------------------------------------------------------------- reads
    def read(  # type: ignore[override]
        self,
        box: Box | Sequence[Sequence[int]],
        *,
        scale: int = 0,
        supervoxels: bool = False,
        roi: str | None = None,
        throttle: bool = False,
        compress: bool = True,
    ) -> np.ndarray:
        """Read the labels of a box (``GET /raw``; libdvid's ``get_labels3D``).

        Parameters
        ----------
        box : ((z0, y0, x0), (z1, y1, x1))
            Half-open box in voxels of the requested scale, any sign, aligned or not.
        scale : int
            Resolution level: 0 is full resolution, level s is downsampled 2^s
            (labelmap and labelarray; only levels up to :attr:`max_downres_level`
            hold data, others read as 0).
        supervoxels : bool
            Return supervoxel ids instead of body ids (labelmap only).
        roi : str, optional
            Name of a roi instance with this instance's block size: voxels outside
            it read as 0 (DVID masks whole blocks of this instance; a roi with other
            blocks is refused because DVID would mask the wrong voxels).
        throttle : bool
            Ask DVID to run this among its few throttled operations (a busy server
            answers 503 and the request is retried with back-off); the parts of a
            split request then run one after the other.
        compress : bool
            Transfer the labels LZ4-compressed (default, as libdvid did).

        Returns
        -------
        numpy.ndarray
            uint64 array of shape ``(z1-z0, y1-y0, x1-x0)``; never-written voxels are 0.
        """
        box = as_box(box)
        params = self._label_params(scale, supervoxels)
        self._check_roi(roi)
        if roi:
            params["roi"] = roi
        if throttle:
            params["throttle"] = "true"
        if compress:
            params["compression"] = "lz4"
        return self._read_volume(
            box,
            params,
            grid=self.block_shape,
            compressed=compress,
            sequential=throttle,
            read_part=lambda part, dest: self._read_part(part, dest, params, compress),
        )

    def _read_part(self, part: Box, dest: np.ndarray, params: Mapping[str, Any], compressed: bool) -> None:
        self._get_raw(part, dest, params, compressed=compressed)

    def label_at(self, point: Sequence[int], *, scale: int = 0, supervoxels: bool = False) -> int:
        """The label at one voxel (libdvid's ``get_label_by_location``).

        Parameters
        ----------
        point : (z, y, x)
            Voxel coordinate at ``scale``; any sign.

        Returns
        -------
        int
            The label, 0 where nothing was written.
        """
        z, y, x = as_zyx(point, "point")
        params = self._label_params(scale, supervoxels)
        if self._negative_points_need_raw and min(z, y, x) < 0:
            return int(self._labels_by_raw(np.array([[z, y, x]]), scale, supervoxels)[0])
        answer = self.transport.get_json(self.path("label", xyz_string((z, y, x))), params=params)
        return int(answer["Label"])

    def labels_at(
        self, points: Sequence[Sequence[int]] | np.ndarray, *, scale: int = 0, supervoxels: bool = False
    ) -> np.ndarray:
        """The labels at many voxels, in one request (``GET /labels`` with a JSON body).

        Parameters
        ----------
        points : (N, 3) array-like
            Voxel coordinates ``(z, y, x)`` at ``scale``; any sign.

        Returns
        -------
        numpy.ndarray
            uint64 array of N labels, in the order of ``points``.
        """
        pts = np.asarray(points, dtype=np.int64)
        if pts.size == 0:
            return np.zeros(0, dtype=np.uint64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise DvidInputError(f"points must be an (N, 3) array of (z, y, x), got shape {pts.shape}")
        params = self._label_params(scale, supervoxels)
        out = np.zeros(len(pts), dtype=np.uint64)
        negative = (pts < 0).any(axis=1) if self._negative_points_need_raw else np.zeros(len(pts), bool)
        batch = ~negative
        if batch.any():
            body = json.dumps(pts[batch][:, ::-1].tolist()).encode()
            answer = self.transport.request("GET", self.path("labels"), params=params, data=body).json()
            out[batch] = np.asarray(answer, dtype=np.uint64)
        if negative.any():
            out[negative] = self._labels_by_raw(pts[negative], scale, supervoxels)
        return out

    def _labels_by_raw(self, pts: np.ndarray, scale: int, supervoxels: bool) -> np.ndarray:
        """Labels at points read through ``/raw``: per block, the box spanning its points."""
        block = np.asarray(self.block_shape, dtype=np.int64)
        blocks = pts // block
        keys, inverse = np.unique(blocks, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        out = np.zeros(len(pts), dtype=np.uint64)
        for k in range(len(keys)):
            members = np.nonzero(inverse == k)[0]
            sub = pts[members]
            lo, hi = sub.min(axis=0), sub.max(axis=0) + 1
            values = self.read((as_zyx(lo), as_zyx(hi)), scale=scale, supervoxels=supervoxels)
            rel = sub - lo
            out[members] = values[rel[:, 0], rel[:, 1], rel[:, 2]]
        return out

    # ---------------------------------------------------------------- writes
    def write(  # type: ignore[override]
        self,
        array: Any,
        offset: Sequence[int],
        *,
        mutate: bool = False,
        roi: str | None = None,
        throttle: bool = False,
        compress: bool = True,
    ) -> None:
        """Write a block-aligned array of labels at full resolution (``POST /raw``; libdvid's ``put_labels3D``).

        Parameters
        ----------
        array : numpy.ndarray
            ``(z, y, x)`` uint64 labels (other integer dtypes are accepted when
            every value fits; floats never).
        offset : (z, y, x)
            Voxel coordinate of ``array[0, 0, 0]``; any sign, block-aligned.
        mutate : bool
            Set when overwriting voxels that already hold labels: DVID then
            updates its label index by difference instead of adding to it (without
            it, sizes and sparse volumes count the old voxels twice).
        roi : str, optional
            Only blocks inside this roi instance (same block size) are written.
        throttle : bool
            See :meth:`read`.
        compress : bool
            Send the labels LZ4-compressed (default, as libdvid did).

        Raises
        ------
        DvidInputError
            Wrong dtype or shape, or the box is not block-aligned (the message
            names the enclosing aligned box). Nothing is sent.
        LockedNodeError
            The node is committed. Nothing is sent.
        """
        arr, box = self._check_write(array, offset)
        self._check_write_box(box)
        self.require_writable("writing labels")
        self._check_roi(roi)
        params: dict[str, Any] = {}
        if mutate:
            params["mutate"] = "true"
        if roi:
            params["roi"] = roi
        if throttle:
            params["throttle"] = "true"
        if compress:
            params["compression"] = "lz4"
        # Sending the same labels twice is harmless with mutate=true only.
        self._write_volume(arr, box, params, compressed=compress, idempotent=mutate, sequential=throttle)

    def _check_write_box(self, box: Box) -> None:
        if self._has_scales and self.max_downres_level > 0 and min(box[0]) < 0:
            raise DvidInputError(
                f"DVID v1.0.0 cannot build the lower scales of {self.typename} {self.name!r} "
                f"(MaxDownresLevel {self.max_downres_level}) for negative coordinates: it fails or writes "
                f"wrong low-resolution blocks. The box {box[0]}–{box[1]} (z, y, x) starts below 0; write "
                "at non-negative coordinates, or use an instance without lower scales"
                + (", or write with downres=False" if self.typename == "labelmap" else "")
            )


class Labelmap(_SparseVolumes, _LabelVolume):
    """A labelmap instance: supervoxels, bodies, scales, label index and edits.

    Get one with ``node.labelmap(name)`` or create one with :meth:`create`.
    Reads return body ids unless ``supervoxels=True``; ``scale=s`` reads the
    2^s-downsampled level (coordinates in that level's grid). Slicing reads and
    writes like :meth:`read` / :meth:`write`; use :meth:`with_options` to slice
    with options, e.g. ``seg.with_options(scale=1)[0:32, 0:32, 0:32]``.
    """

    typenames: ClassVar[tuple[str, ...]] = ("labelmap",)
    default_typename: ClassVar[str] = "labelmap"
    _has_scales = True
    _has_supervoxels = True
    _negative_points_need_raw = True
    _rles_fail_below_zero = True

    @classmethod
    def create(  # type: ignore[override]
        cls,
        node: Node,
        name: str,
        *,
        block_size: int | Sequence[int] = (64, 64, 64),
        voxel_size: float | Sequence[float] = (8.0, 8.0, 8.0),
        voxel_units: str | Sequence[str] = "nanometers",
        max_downres_level: int = 0,
        indexed_labels: bool = True,
        **settings: Any,
    ) -> Labelmap:
        """Create a labelmap instance.

        Parameters
        ----------
        node : Node
            An uncommitted node.
        name : str
            Instance name.
        block_size : int or (z, y, x)
            Block size in voxels; each a multiple of 16 (DVID's default 64³).
        voxel_size : float or (z, y, x)
            Physical voxel size in ``voxel_units``.
        voxel_units : str or (z, y, x) of str
            Units of ``voxel_size``.
        max_downres_level : int
            Lower scales DVID keeps and rebuilds on every write (1 … this); 0 for none.
        indexed_labels : bool
            Keep the label index (needed for sizes, sparse volumes, merges…).
        **settings
            Other DVID settings (see :meth:`Node.create_instance`).
        """
        _create_labels(node, "labelmap", name, block_size, voxel_size, voxel_units, 16,
                       max_downres_level=int(max_downres_level), indexed_labels=bool(indexed_labels), **settings)
        return cls(node, name)

    def write(  # type: ignore[override]
        self,
        array: Any,
        offset: Sequence[int],
        *,
        mutate: bool = False,
        downres: bool = True,
        roi: str | None = None,
        throttle: bool = False,
        compress: bool = True,
    ) -> None:
        """Write a block-aligned array of supervoxel ids at full resolution (libdvid's ``put_labels3D``).

        Parameters
        ----------
        array : numpy.ndarray
            ``(z, y, x)`` uint64 labels (other integer dtypes are accepted when
            every value fits; floats never).
        offset : (z, y, x)
            Voxel coordinate of ``array[0, 0, 0]``; block-aligned. Negative
            coordinates need ``downres=False`` when the instance has lower scales
            (DVID v1.0.0 breaks building them there).
        mutate : bool
            Set when overwriting voxels that already hold labels: DVID then
            updates its label index by difference instead of adding to it (without
            it, sizes and sparse volumes count the old voxels twice).
        downres : bool
            ``True`` (default): ``POST /raw``; DVID rebuilds scales
            1 … :attr:`max_downres_level` of the written blocks before answering and
            indexes the labels *after* answering (see :meth:`wait_for_sizes`).
            ``False``: ``POST /blocks?downres=false`` with the blocks in DVID's
            compressed label format; the lower scales are left as they were and
            the labels are indexed before DVID answers. DVID ingests such blocks
            as new data, so ``mutate`` and ``roi`` are not available then.
        roi : str, optional
            Only blocks inside this roi instance (same block size) are written.
        throttle : bool
            Ask DVID to run this among its few throttled operations (a busy server
            answers 503 and the request is retried with back-off).
        compress : bool
            Send ``/raw`` labels LZ4-compressed (default, as libdvid did).
            ``/blocks`` are always sent in DVID's gzipped block format.

        Raises
        ------
        DvidInputError
            Wrong dtype or shape, an unaligned box (the message names the enclosing
            aligned box), negative coordinates with lower scales being built, or
            ``downres=False`` with ``mutate`` or ``roi``. Nothing is sent.
        LockedNodeError
            The node is committed. Nothing is sent.
        """
        if downres:
            super().write(array, offset, mutate=mutate, roi=roi, throttle=throttle, compress=compress)
            return
        if mutate:
            raise DvidInputError(
                "downres=False writes go through DVID's block ingestion (POST /blocks), which indexes every "
                "block as new data and cannot replace old labels: use downres=True for mutate=True"
            )
        if roi:
            raise DvidInputError("DVID's block ingestion (downres=False) has no ROI option; use downres=True")
        arr, box = self._check_write(array, offset)
        self.require_writable("writing labels")
        params: dict[str, Any] = {"downres": "false"}
        if throttle:
            params["throttle"] = "true"
        self._write_volume(
            arr, box, params, idempotent=False, sequential=throttle,
            write_part=lambda part, data: self._post_blocks(part, data, params),
        )

    def _post_blocks(self, part: Box, data: np.ndarray, params: Mapping[str, Any]) -> None:
        """``POST /blocks`` of the aligned ``part``: one record per block, DVID's gzipped label codec."""
        from ..codecs.labelblock import encode_gzipped_label_block

        block = np.asarray(self.block_shape)
        records: list[bytes] = []
        for coord in block_coords_in_box(part, self.block_shape):
            lo = coord * block - np.asarray(part[0])
            piece = np.ascontiguousarray(data[lo[0] : lo[0] + block[0], lo[1] : lo[1] + block[1], lo[2] : lo[2] + block[2]])
            payload = encode_gzipped_label_block(piece)
            records.append(_BLOCK_RECORD.pack(int(coord[2]), int(coord[1]), int(coord[0]), len(payload)))
            records.append(payload)
        post_retrying_busy(self.transport, self.path("blocks"), b"".join(records), params, idempotent=False)

    def _read_part(self, part: Box, dest: np.ndarray, params: Mapping[str, Any], compressed: bool) -> None:
        # DVID serves one whole aligned block by a shortcut that fails when the block
        # does not exist; /specificblocks returns nothing for it instead.
        block = self.block_shape
        if "roi" not in params and box_shape(part) == block and is_aligned(part, block):
            self._read_one_block(part, dest, params, compressed)
        else:
            self._get_raw(part, dest, params, compressed=compressed)

    def _read_one_block(self, part: Box, dest: np.ndarray, params: Mapping[str, Any], compressed: bool) -> None:
        coord = [c // b for c, b in zip(part[0], self.block_shape)]
        query = {k: v for k, v in params.items() if k in ("scale", "supervoxels")}
        query["blocks"] = ",".join(str(c) for c in reversed(coord))
        query["compression"] = "lz4" if compressed else "uncompressed"
        body = self.transport.request("GET", self.path("specificblocks"), params=query).content
        if not body:
            # Absent, or a block stream cut off before its one record: a GET /raw of the
            # block and one voxel more (DVID fails on exactly one absent block) settles it.
            wider = (part[0], (part[1][0], part[1][1], part[1][2] + 1))
            scratch = np.empty(box_shape(wider), np.uint64)
            self._get_raw(wider, scratch, params, compressed=compressed)
            dest[...] = scratch[..., : dest.shape[2]]
            return
        header = np.frombuffer(body, dtype="<i4", count=4)
        size = int(np.uint32(header[3]))
        payload = memoryview(body)[16 : 16 + size]
        url = self.transport.url(self.path("specificblocks"))
        if tuple(int(v) for v in header[:3][::-1]) != tuple(coord) or len(payload) != size:
            raise MalformedAnswerError("GET", url, 200, "unexpected block record")
        try:
            raw = lz4.block.decompress(payload, uncompressed_size=dest.nbytes) if compressed else payload
        except lz4.block.LZ4BlockError as exc:
            raise MalformedAnswerError("GET", url, 200, f"undecodable block ({exc})") from None
        if len(raw) != dest.nbytes:
            raise MalformedAnswerError("GET", url, 200, "block of unexpected size")
        dest[...] = np.frombuffer(raw, dtype=np.uint64).reshape(dest.shape)

    # ------------------------------------------------------------- the index
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
        answer = self.transport.request("GET", self.path("sizes"), params=params, data=json.dumps(ids).encode()).json()
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

    def bounding_box(  # type: ignore[override]
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
        answer = self.transport.request("GET", self.path("mapping"), data=json.dumps(ids).encode()).json()
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

    # --------------------------------------------------------------- edits
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
        answer = self.transport.request(
            "POST", self.path("split-supervoxel", str(supervoxel)), params=params, data=body
        ).json()
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
        answer = self.transport.request("POST", self.path("split", str(body)), data=payload).json()
        return SplitResult(int(answer["label"]), int(answer["MutationID"]))

    def mutations(self) -> list[dict[str, Any]]:
        """The mutation log of this version (``GET /mutations``): merges, cleaves, splits…

        Each record is DVID's JSON object (``"Action"``, ``"MutationID"``, …).
        Needs a server with a ``[mutations] jsonstore``.
        """
        return list(self.transport.get_json(self.path("mutations")) or [])


class Labelarray(_SparseVolumes, _LabelVolume):
    """A labelarray instance (labelmap's predecessor): labels, scales, sparse volumes.

    No supervoxels; merges rewrite the voxels. ``/label`` and ``/labels`` are
    right for negative coordinates on this type.
    """

    typenames: ClassVar[tuple[str, ...]] = ("labelarray",)
    default_typename: ClassVar[str] = "labelarray"
    _has_scales = True
    _rles_fail_below_zero = True

    @classmethod
    def create(  # type: ignore[override]
        cls,
        node: Node,
        name: str,
        *,
        block_size: int | Sequence[int] = (64, 64, 64),
        voxel_size: float | Sequence[float] = (8.0, 8.0, 8.0),
        voxel_units: str | Sequence[str] = "nanometers",
        max_downres_level: int = 0,
        **settings: Any,
    ) -> Labelarray:
        """Create a labelarray instance (parameters as :meth:`Labelmap.create`)."""
        _create_labels(node, "labelarray", name, block_size, voxel_size, voxel_units, 16,
                       max_downres_level=int(max_downres_level), **settings)
        return cls(node, name)

    def sparsevol_size(self, label: int) -> SparsevolSize | None:
        """Voxel count, block count and block-rounded box of a label; ``None`` if absent.

        DVID's labelarray ``/sparsevol-size`` has no voxel count, so it is summed
        here from the label's sparse volume.
        """
        label = _label_id(label)
        response = self.transport.request("GET", self.path("sparsevol-size", str(label)), allow_status=(404,))
        if response.status_code == 404:
            return None
        info = response.json()
        return _sparsevol_size(info, runs_voxel_count(self._sparsevol_runs(label, None, 0, False)))

    def body_size(self, label: int) -> int:
        """Voxel count of a body, summed from its sparse volume; 0 if absent."""
        return runs_voxel_count(self._sparsevol_runs(_label_id(label), None, 0, False))

    def bounding_box(  # type: ignore[override]
        self, label: int | None = None, *, scale: int = 0, exact: bool = True
    ) -> Box | None:
        """Bounding box of a label (see :meth:`Labelmap.bounding_box`), or the stored extents."""
        if label is None:
            return self._extents_for({"scale": scale})
        if exact:
            return self._exact_bounding_box(label, scale, False)
        size = self.sparsevol_size(label)
        return None if size is None else size.box

    def max_label(self) -> int:
        """Largest label stored (``GET /maxlabel``); 0 if none."""
        return _max_label(self)

    def next_label(self) -> int:
        """The next free label (``GET /nextlabel``). DVID v1.0.0's labelarray cannot reserve labels."""
        return int(self.transport.get_json(self.path("nextlabel"))["nextlabel"])

    def merge(self, target: int, others: Iterable[int]) -> None:
        """Merge bodies ``others`` into ``target`` (``POST /merge``); DVID relabels the voxels."""
        target = _label_id(target)
        rest = _label_list(others)
        if not rest or target in rest:
            raise DvidInputError("merge needs other bodies, different from the target")
        self.require_writable("merging bodies")
        self.transport.request("POST", self.path("merge"), data=json.dumps([target, *rest]).encode())


class Labelvol(_SparseVolumes, Instance):
    """A labelvol instance: the sparse volumes of a synced :class:`Labelblk`.

    DVID updates it asynchronously from the labelblk's writes.
    """

    typenames: ClassVar[tuple[str, ...]] = ("labelvol",)
    default_typename: ClassVar[str] = "labelvol"

    @property
    def block_shape(self) -> ZYX:
        """Block size in voxels, ``(z, y, x)``."""
        x, y, z = self.info["Extended"]["BlockSize"]
        return int(z), int(y), int(x)

    def bounding_box(self, label: int) -> Box | None:
        """Exact half-open bounding box of a label; ``None`` if absent."""
        return self._exact_bounding_box(label, 0, False)

    def body_size(self, label: int) -> int:
        """Voxel count of a label, summed from its sparse volume; 0 if absent."""
        return runs_voxel_count(self._sparsevol_runs(_label_id(label), None, 0, False))

    def max_label(self) -> int:
        """Largest label seen (``GET /maxlabel``); 0 if none."""
        return _max_label(self)

    def next_label(self) -> int:
        """The next free label (``GET /nextlabel``)."""
        return int(self.transport.get_json(self.path("nextlabel"))["nextlabel"])


class Labelblk(_LabelVolume):
    """A labelblk instance: uint64 labels in blocks, nothing else.

    Sparse volumes and :meth:`body_exists` need a synced :class:`Labelvol`
    (see :meth:`create`). No scales and no supervoxels.
    """

    typenames: ClassVar[tuple[str, ...]] = ("labelblk",)
    default_typename: ClassVar[str] = "labelblk"

    @classmethod
    def create(  # type: ignore[override]
        cls,
        node: Node,
        name: str,
        *,
        synced_labelvol: str | None = None,
        block_size: int | Sequence[int] = (32, 32, 32),
        voxel_size: float | Sequence[float] = (8.0, 8.0, 8.0),
        voxel_units: str | Sequence[str] = "nanometers",
        **settings: Any,
    ) -> Labelblk:
        """Create a labelblk instance, optionally with a synced labelvol (libdvid's ``create_labelblk``).

        Parameters
        ----------
        synced_labelvol : str, optional
            Also create a labelvol instance of this name, with the same block
            size, synced both ways with the labelblk (DVID sets syncs after
            creation, with ``POST /sync``).
        block_size, voxel_size, voxel_units, **settings
            As in :meth:`Labelmap.create` (labelblk's default block is 32³).
        """
        sizes = _create_labels(node, "labelblk", name, block_size, voxel_size, voxel_units, 1, **settings)
        if synced_labelvol:
            node.create_instance("labelvol", synced_labelvol, block_size=sizes)
            transport = node.transport
            transport.post_json(node.path(synced_labelvol, "sync"), {"sync": name})
            transport.post_json(node.path(name, "sync"), {"sync": synced_labelvol})
        return cls(node, name)

    @property
    def labelvol(self) -> Labelvol:
        """The labelvol instance synced with this labelblk.

        Raises
        ------
        DvidInputError
            No labelvol is synced with it.
        """
        self.refresh()
        syncs = self.info["Base"].get("Syncs") or []
        kinds = self.node.instances()
        for name in syncs:
            if kinds.get(name) == "labelvol":
                return Labelvol(self.node, name)
        raise DvidInputError(
            f"labelblk {self.name!r} has no synced labelvol, which DVID needs for sparse volumes; "
            f"create one with Labelblk.create(..., synced_labelvol=name)"
        )

    def body_exists(self, label: int) -> bool:
        """Whether ``label`` has voxels, asked from the synced labelvol (libdvid's ``body_exists``)."""
        return self.labelvol.body_exists(label)

    def sparsevol(self, label: int, **options: Any) -> np.ndarray:
        """The voxels of a label, from the synced labelvol; see :meth:`Labelmap.sparsevol`."""
        return self.labelvol.sparsevol(label, **options)


# ---------------------------------------------------------------------- helpers
def _label_id(label: Any) -> int:
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise DvidInputError(f"a label is an integer from 1 to 2**64-1, got {label!r}")
    value = int(label)
    if not 0 < value < 2**64:
        raise DvidInputError(f"a label is an integer from 1 to 2**64-1 (0 is background), got {label!r}")
    return value


def _label_list(labels: Iterable[int] | np.ndarray | int) -> list[int]:
    if isinstance(labels, (int, np.integer)):
        return [_label_id(labels)]
    if isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "iu":
            raise DvidInputError(f"labels are integers, got an array of {labels.dtype}")
        labels = labels.ravel().tolist()
    # element by element: numpy would turn ids above 2**63 mixed with small ones into floats
    return [_label_id(label) for label in labels]


def _max_label(instance: Any) -> int:
    try:
        return int(instance.transport.get_json(instance.path("maxlabel"))["maxlabel"])
    except BadRequestError as exc:
        if "no maximum label" in exc.message.lower():
            return 0
        raise


def _sorted_runs(runs: np.ndarray) -> np.ndarray:
    """Runs in (z, y, x) order (DVID sends them block by block)."""
    return runs[np.lexsort((runs[:, 2], runs[:, 1], runs[:, 0]))]


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


def _create_labels(
    node: Node,
    typename: str,
    name: str,
    block_size: Any,
    voxel_size: Any,
    voxel_units: Any,
    multiple: int,
    **settings: Any,
) -> tuple[int, int, int]:
    sizes = as_zyx(block_size, "block_size")
    if any(b < multiple or b % multiple for b in sizes):
        raise DvidInputError(f"{typename} block sizes must be multiples of {multiple}, got {sizes}")
    voxel = (float(voxel_size),) * 3 if isinstance(voxel_size, (int, float)) else tuple(float(v) for v in voxel_size)
    if len(voxel) != 3:
        raise DvidInputError(f"voxel_size needs 3 values in (z, y, x) order, got {voxel}")
    units = (voxel_units,) * 3 if isinstance(voxel_units, str) else tuple(voxel_units)
    node.create_instance(typename, name, block_size=sizes, voxel_size=voxel, voxel_units=units, **settings)
    return sizes

