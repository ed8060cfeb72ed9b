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

This module gathers the public names; the code is split by concern:

* :mod:`~dvid_store.datatypes.label_volume` — boxes and points of labels (``/raw``,
  ``/label``, ``/labels``), shared by labelmap, labelarray and labelblk;
* :mod:`~dvid_store.datatypes.sparse_volumes` — sparse volumes of one label
  (``/sparsevol``, ``/sparsevol-coarse``);
* :mod:`~dvid_store.datatypes.label_index` — labelmap's label index: sizes, bounding
  boxes, supervoxels and bodies, label ids, label indices, label lists, whole
  mappings, supervoxel splits; :class:`SparsevolSize`, :class:`IndexingTimeoutError`;
* :mod:`~dvid_store.datatypes._label_proto` — :class:`LabelIndex` and DVID's
  label-index and mapping protobuf messages, decoded without a protobuf library;
* :mod:`~dvid_store.datatypes.label_mutations` — labelmap's edits: merge, cleave
  (also several and hierarchical), renumber, split; :class:`CleaveResult`,
  :class:`SplitResult`, :class:`SplitSupervoxelResult`;
* :mod:`~dvid_store.datatypes.labelmap` — :class:`Labelmap` itself, with its block
  writes and single-block reads;
* :mod:`~dvid_store.datatypes.legacy_labels` — :class:`Labelarray`,
  :class:`Labelblk`, :class:`Labelvol`.

DVID v1.0.0 behaviours these modules work around (checked against the server):

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

from ._label_proto import LabelIndex
from .label_index import IndexingTimeoutError, SparsevolSize
from .label_mutations import CleaveResult, SplitResult, SplitSupervoxelResult
from .labelmap import Labelmap
from .legacy_labels import Labelarray, Labelblk, Labelvol

__all__ = [
    "CleaveResult",
    "IndexingTimeoutError",
    "LabelIndex",
    "Labelarray",
    "Labelblk",
    "Labelmap",
    "Labelvol",
    "SparsevolSize",
    "SplitResult",
    "SplitSupervoxelResult",
]
