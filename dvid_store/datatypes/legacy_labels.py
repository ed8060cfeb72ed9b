"""The label types before labelmap: labelarray, labelblk and labelvol.

* :class:`Labelarray` — labelmap's predecessor: scales and sparse volumes, no
  supervoxels; merges rewrite the voxels.
* :class:`Labelblk` — the oldest type: voxels only; sparse volumes come from a
  synced :class:`Labelvol` (``Labelblk.create(..., synced_labelvol="bodies")``,
  like libdvid's ``create_labelblk(name, labelvol_name)``).

DVID v1.0.0's labelarray has no ``POST /nextlabel`` ("not supported yet"), so it
cannot reserve labels, and its ``/sparsevol-size`` has no voxel count (it is summed
here from the sparse volume).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import DvidInputError
from ..geometry import ZYX, Box
from .base import Instance
from .label_index import SparsevolSize, _sparsevol_size
from .label_volume import _create_labels, _label_id, _label_list, _LabelVolume, _max_label
from .sparse_volumes import _SparseVolumes
from .sparsevol import runs_voxel_count

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["Labelarray", "Labelblk", "Labelvol"]


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
    def create(
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

    def bounding_box(
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
    def create(
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
