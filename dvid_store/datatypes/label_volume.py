"""What labelmap, labelarray and labelblk share: uint64 labels in blocks, boxes and points.

:class:`_LabelVolume` reads and writes boxes of labels through ``/raw`` and answers
point queries (``/label``, ``/labels``); :class:`_LabelOptions` checks the ``scale``
and ``supervoxels`` options against what a type has. The helpers check label ids and
create label instances. The public types are in :mod:`dvid_store.datatypes.labels`.

DVID v1.0.0 behaviours worked around here (checked against the server):

* labelmap ``GET /label`` and ``GET /labels`` put points with a negative
  coordinate into the wrong block (truncating division) and answer wrong labels;
  such points are read through ``/raw`` instead, which is right.
* labelmap and labelarray ``POST /raw`` with lower scales configured
  (``MaxDownresLevel > 0``) panic or write the wrong low-resolution blocks for
  negative block coordinates; such writes are refused before sending.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import BadRequestError, DvidInputError
from ..geometry import Box, as_box, as_zyx, xyz_string
from ._progress import TextProgress
from .volume import VolumeInstance

if TYPE_CHECKING:
    from ..node import Node


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
        return start, stop

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
            split request then run one after the other. A labelmap box that is
            exactly one aligned block goes to ``/specificblocks``, which DVID never
            throttles (its ``/raw`` fails for an absent block).
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
            body = _points_json(pts[batch])
            answer = self.transport.request_json("GET", self.path("labels"), params=params, data=body)
            out[batch] = np.asarray(answer, dtype=np.uint64)
        if negative.any():
            out[negative] = self._labels_by_raw(pts[negative], scale, supervoxels)
        return out

    def labels_at_points(
        self,
        points: Any,
        *,
        scale: int = 0,
        supervoxels: bool = False,
        batch_size: int = 10_000,
        max_workers: int | None = None,
        progress: bool = False,
    ) -> Any:
        """The labels at very many voxels: batches of :meth:`labels_at` sent in parallel.

        Points are sorted by block before batching, so each request touches few
        blocks; points with a negative coordinate take the same ``/raw`` route as
        in :meth:`labels_at` (DVID v1.0.0 answers them wrongly through ``/labels``).

        Parameters
        ----------
        points : pandas.DataFrame or (N, 3) array-like
            A DataFrame with integer columns ``z``, ``y``, ``x`` (its index is kept),
            or ``(z, y, x)`` rows; voxel coordinates at ``scale``, any sign.
        batch_size : int
            Points a request.
        max_workers : int, optional
            Requests at once (default :attr:`max_workers`).
        progress : bool
            Show a text progress bar on stderr.

        Returns
        -------
        pandas.Series
            uint64 labels named ``"label"``, indexed like ``points`` (its index for a
            DataFrame, 0 … N-1 otherwise), in the order of ``points``.
        """
        from ._frames import pandas

        pd = pandas("labels_at_points()")
        if isinstance(points, pd.DataFrame):
            missing = [c for c in "zyx" if c not in points.columns]
            if missing:
                raise DvidInputError(f"the points DataFrame needs columns z, y, x; missing {missing}")
            index = points.index
            pts = np.asarray(points[["z", "y", "x"]].to_numpy(), dtype=np.int64)
        else:
            pts = np.asarray(points, dtype=np.int64).reshape(-1, 3) if np.size(points) else np.zeros((0, 3), np.int64)
            index = pd.RangeIndex(len(pts))
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise DvidInputError(f"points must be (N, 3) rows of (z, y, x), got shape {pts.shape}")
        if int(batch_size) < 1:
            raise DvidInputError(f"batch_size must be at least 1, got {batch_size}")
        self._check_label_options(scale, supervoxels)
        out = np.zeros(len(pts), dtype=np.uint64)
        order = _block_order(pts, self.block_shape)
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        bar = TextProgress(len(pts), "points", enabled=progress)

        def fetch(rows: np.ndarray) -> None:
            out[rows] = self.labels_at(pts[rows], scale=scale, supervoxels=supervoxels)
            bar.update(len(rows))

        default_workers: int = getattr(self, "max_workers", 4)
        workers = min(len(batches), int(max_workers) if max_workers else default_workers)
        try:
            if workers > 1:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dvid-points") as pool:
                    for _ in pool.map(fetch, batches):
                        pass
            else:
                for rows in batches:
                    fetch(rows)
        finally:
            if progress:
                bar.close()
        return pd.Series(out, index=index, name="label", dtype=np.uint64)

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


# ---------------------------------------------------------------------- helpers
def _points_json(pts: np.ndarray) -> bytes:
    """``(z, y, x)`` rows as DVID's JSON ``[[x,y,z],...]`` (formatted directly: quicker than json.dumps)."""
    flat = np.asarray(pts, dtype=np.int64)[:, ::-1].ravel().tolist()
    triples = zip(flat[0::3], flat[1::3], flat[2::3])
    return ("[" + ",".join(f"[{x},{y},{z}]" for x, y, z in triples) + "]").encode()


def _block_order(pts: np.ndarray, block_shape: Sequence[int]) -> np.ndarray:
    """Order of ``pts`` that groups them by block (one integer key sorted: cheap for 10^6 points)."""
    if len(pts) == 0:
        return np.zeros(0, dtype=np.int64)
    blocks = pts // np.asarray(block_shape, dtype=np.int64)
    blocks -= blocks.min(axis=0)
    extent = blocks.max(axis=0) + 1
    if float(np.prod(extent.astype(np.float64))) >= 2**62:
        return np.lexsort((blocks[:, 2], blocks[:, 1], blocks[:, 0]))
    key = (blocks[:, 0] * extent[1] + blocks[:, 1]) * extent[2] + blocks[:, 2]
    return np.argsort(key, kind="stable")


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
