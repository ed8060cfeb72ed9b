"""DVID's ``annotation`` datatype: point annotations (synapses, notes) with tags and relationships.

Elements are DVID's own JSON objects, passed in and returned unchanged::

    {"Pos": [x, y, z], "Kind": "PreSyn", "Tags": ["t1"], "Prop": {"k": "v"},
     "Rels": [{"Rel": "PreSynTo", "To": [x, y, z]}]}

Note that ``"Pos"`` and ``"To"`` are in DVID's **x, y, z** order. Everything else
in this module takes points in (z, y, x): :func:`element` builds an element from a
(z, y, x) position, :func:`positions` turns elements into an (N, 3) (z, y, x)
array, and the methods' point and box arguments are (z, y, x).

What the v1.0.0 server really does (checked against it by the tests)
-------------------------------------------------------------------
* ``GET /label/<label>`` on an instance without a sync to label data answers
  ``[]`` rather than an error; :meth:`Annotations.for_label` refuses to ask
  instead. Elements posted *before* the sync was set are not indexed by label.
* Deleting or moving a point where no element exists is a 400 "Did not find
  element"; the client raises :class:`NotFoundError` for it.
* The label index behind :meth:`Annotations.for_label` and ``frame_for_body``
  goes stale in two cases (DVID bugs, not worked around here):
  moving an element to a point of the same label leaves it listed at its old
  position; and a posted element with a coordinate in (-block size, 0) is filed
  under the label of the block on the other side of zero (truncating division),
  where deleting or moving it does not look, so it stays listed there.
* ``POST /elements`` panics (500, nothing stored) when one element of the request
  carries a tag that the request takes off another element;
  :meth:`Annotations.post` then posts one request per set of tags.
* An empty box answers ``null``; returned here as ``[]``. Elements listed by label
  or tag carry ``"Rels"`` only with ``relationships=True``, and elements stored
  without ``"Prop"`` may come back with ``"Prop": null``.
* ``GET /blocks/<size>/<offset>`` returns every element of every block the box
  touches, keyed by block, without screening positions; the tiled readers ask for
  block-aligned tiles and screen positions themselves.

DataFrames (pandas, the optional ``dataframes`` extra)
------------------------------------------------------
:func:`elements_frame` and the ``frame_*`` methods give one row per element:

| column | dtype | meaning |
| --- | --- | --- |
| ``z``, ``y``, ``x`` | int32 | position (DVID stores int32 coordinates) |
| ``kind`` | category | one of :data:`KINDS` (all five are categories) |
| ``tags`` | object | tuple of tag strings (empty tuple when none) |
| one per ``"Prop"`` key | object | the value (a string), ``None`` where the element lacks the key (1) |
| ``body`` | uint64 | only from :meth:`Annotations.frame_for_bodies` |

(1) Sorted by key; a key named like a fixed column (``z``, ``kind``...) becomes
``prop_<key>``.

Property values stay strings, as DVID stores them (convert with e.g.
``df["conf"].astype(float)``); :func:`elements_from_frame` and
:meth:`Annotations.post_frame` go the other way. :func:`partners_frame` and the
``partners_*`` methods give one row per synaptic pair: ``pre_z, pre_y, pre_x, post_z, post_y, post_x``
(int32), read from ``PreSynTo`` relationships (the element is the presynaptic end)
and ``PostSynTo`` relationships (the element is the postsynaptic end), without
duplicates, sorted.

neuclease equivalents (``neuclease.dvid.annotation``)
-----------------------------------------------------
| neuclease | here (``ann = node.annotations(name)``) |
| --- | --- |
| ``fetch_elements(..., box, format='pandas')`` | ``ann.frame_in_box(box)`` (``ann.in_box`` for JSON) |
| ``fetch_blocks``, ``fetch_synapses_in_batches`` | ``ann.elements_in_box``, ``frame_in_box``, ``partners_in_box`` |
| ``fetch_all_elements`` | ``ann.all()``, ``ann.frame_all()`` |
| ``fetch_label``, ``fetch_elements_for_bodies`` | ``ann.for_label``, ``frame_for_body``, ``frame_for_bodies`` |
| ``fetch_relcounts_for_label(s)`` | ``ann.counts_for_bodies`` (PreSyn and PostSyn counts) |
| ``fetch_roi``, ``fetch_tag`` | ``ann.in_roi`` / ``frame_in_roi``, ``ann.with_tag`` |
| ``load_elements_as_dataframe`` | :func:`elements_frame`, :func:`partners_frame` |
| ``load_synapses_as_dataframes`` | :func:`elements_frame` + :func:`partners_frame` (positions, not point ids) |
| ``dataframe_to_elements``, ``compute_tbar_jsons`` | :func:`elements_from_frame`, ``ann.post_frame`` |
| ``post_elements``, ``post_sync`` | ``ann.post``, ``ann.sync`` |
| ``delete_element``, ``post_move`` | ``ann.delete``, ``ann.move`` |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from ..errors import (
    BadRequestError,
    DvidError,
    DvidInputError,
    MalformedAnswerError,
    NotFoundError,
    ServerError,
)
from ..geometry import Box, aligned_box, as_box, as_zyx, box_shape, xyz_string
from ._frames import pandas
from ._progress import map_threaded
from .base import Instance

__all__ = [
    "FRAME_COLUMNS",
    "KINDS",
    "PARTNER_COLUMNS",
    "RELATIONS",
    "Annotations",
    "element",
    "elements_frame",
    "elements_from_frame",
    "partners_frame",
    "positions",
]

#: Element kinds DVID accepts.
KINDS = ("PreSyn", "PostSyn", "Gap", "Note", "Unknown")
#: Relationship types DVID accepts.
RELATIONS = ("PreSynTo", "PostSynTo", "ConvergentTo", "GroupedWith", "UnknownRelationship")

_INT32 = (-(2**31), 2**31 - 1)
#: DVID v1.0.0's panic on a POST /elements that adds a tag to one element and removes it from another.
_TAG_PANIC = "assignment to entry in nil map"

#: The fixed leading columns of an element DataFrame; property columns follow.
FRAME_COLUMNS = ("z", "y", "x", "kind", "tags")
#: The columns of a synaptic-partner DataFrame.
PARTNER_COLUMNS = ("pre_z", "pre_y", "pre_x", "post_z", "post_y", "post_x")
#: Default tile of the tiled readers, in blocks (z, y, x): long in x because DVID keys
#: blocks in z, y, x order, so one tile row is one contiguous range on the server.
DEFAULT_TILE_BLOCKS = (4, 4, 64)


def element(
    pos: Sequence[int] | np.ndarray,
    kind: str = "Note",
    *,
    tags: Iterable[str] = (),
    prop: Mapping[str, str] | None = None,
    rels: Iterable[tuple[str, Sequence[int]]] = (),
) -> dict[str, Any]:
    """Build a DVID element from a (z, y, x) position.

    Parameters
    ----------
    pos : (z, y, x)
        Voxel position.
    kind : str
        One of :data:`KINDS`.
    tags : iterable of str
        Tags (indexed by DVID; see :meth:`Annotations.with_tag`).
    prop : mapping of str to str, optional
        Free properties (values must be strings).
    rels : iterable of (relation, (z, y, x))
        Relationships to other elements, e.g. ``[("PreSynTo", (z, y, x))]``.

    Returns
    -------
    dict
        The element in DVID's JSON form (positions in x, y, z).
    """
    out: dict[str, Any] = {
        "Pos": list(as_zyx(pos, "element position"))[::-1],
        "Kind": kind,
        "Tags": list(tags),
        "Prop": dict(prop or {}),
        "Rels": [{"Rel": rel, "To": list(as_zyx(to, "relationship target"))[::-1]} for rel, to in rels],
    }
    return _checked(out, 0)


def positions(elements: Iterable[Mapping[str, Any]]) -> np.ndarray:
    """The elements' positions as an (N, 3) int32 array in (z, y, x) order."""
    coords = [e["Pos"] for e in elements]
    if not coords:
        return np.zeros((0, 3), dtype=np.int32)
    return np.asarray(coords, dtype=np.int32).reshape(-1, 3)[:, ::-1].copy()


def elements_frame(elements: Iterable[Mapping[str, Any]]) -> Any:
    """DVID elements as a DataFrame, one row per element, in the order given.

    Parameters
    ----------
    elements : iterable of dict
        Elements as DVID returns them (``"Pos"`` in x, y, z).

    Returns
    -------
    pandas.DataFrame
        Columns ``z, y, x`` (int32), ``kind`` (category of :data:`KINDS`), ``tags``
        (tuples of str), then one object column per property key, sorted (see the
        module docstring for the naming rule).
    """
    pd = pandas("elements_frame()")
    items = list(elements)
    zyx = positions(items)
    props: list[Mapping[str, Any]] = [e.get("Prop") or {} for e in items]
    keys = sorted({k for p in props for k in p})
    columns: dict[str, Any] = {
        "z": zyx[:, 0],
        "y": zyx[:, 1],
        "x": zyx[:, 2],
        "kind": pd.Categorical([e.get("Kind", "Unknown") for e in items], categories=list(KINDS)),
        "tags": pd.Series(_object_column([tuple(e.get("Tags") or ()) for e in items]), dtype=object),
    }
    for key in keys:
        name = key
        while name in columns:
            name = f"prop_{name}"
        # dtype=object keeps None for missing values (pandas 3 would infer str and NaN).
        columns[name] = pd.Series(_object_column([p.get(key) for p in props]), dtype=object)
    return pd.DataFrame(columns)


def partners_frame(elements: Iterable[Mapping[str, Any]]) -> Any:
    """Synaptic pairs named by the relationships of ``elements``.

    A ``PreSynTo`` relationship makes its element the presynaptic end and its
    target the postsynaptic one; ``PostSynTo`` the other way round. Other
    relationship types are ignored. A pair recorded on both of its elements is
    listed once.

    Parameters
    ----------
    elements : iterable of dict
        Elements with their ``"Rels"`` (as from :meth:`Annotations.in_box`, or
        ``for_label(..., relationships=True)``).

    Returns
    -------
    pandas.DataFrame
        Columns ``pre_z, pre_y, pre_x, post_z, post_y, post_x`` (int32), sorted by
        the presynaptic then the postsynaptic position, index 0..n-1.
    """
    pd = pandas("partners_frame()")
    rows: list[list[int]] = []
    for e in elements:
        x, y, z = e["Pos"]
        for rel in e.get("Rels") or ():
            tx, ty, tz = rel["To"]
            if rel["Rel"] == "PreSynTo":
                rows.append([z, y, x, tz, ty, tx])
            elif rel["Rel"] == "PostSynTo":
                rows.append([tz, ty, tx, z, y, x])
    pairs = np.unique(np.asarray(rows, dtype=np.int32).reshape(-1, 6), axis=0)
    return pd.DataFrame(pairs, columns=list(PARTNER_COLUMNS))


def elements_from_frame(points: Any, partners: Any = None) -> list[dict[str, Any]]:
    """DVID elements from a DataFrame shaped like :func:`elements_frame`'s, ready to post.

    Parameters
    ----------
    points : pandas.DataFrame
        Columns ``z``, ``y``, ``x`` (integers); optional ``kind`` (default
        ``"Note"``) and ``tags`` (a tuple or list of strings, or a single
        string); every other column is a property, written where the value is
        not missing (``None``/NaN) and converted with ``str``, except
        ``body``, which is never a property. A ``prop_<key>`` column is written
        as ``<key>``.
    partners : pandas.DataFrame, optional
        Columns ``pre_z, pre_y, pre_x, post_z, post_y, post_x`` (see
        :func:`partners_frame`): each pair adds ``PreSynTo`` to the element at its
        presynaptic position and ``PostSynTo`` to the one at its postsynaptic
        position. Both positions must be rows of ``points``.

    Returns
    -------
    list of dict
        One element per row, in row order (checked as :meth:`Annotations.post` does).

    Raises
    ------
    DvidInputError
        Missing z, y, x columns, duplicate positions, or a partner position that is
        not a row of ``points``.
    """
    pd = pandas("elements_from_frame()")
    missing = [c for c in ("z", "y", "x") if c not in points.columns]
    if missing:
        raise DvidInputError(f"the points DataFrame needs columns z, y, x; missing {missing}")
    zyx = np.asarray(points[["z", "y", "x"]].to_numpy())
    if zyx.dtype.kind not in "iu":
        raise DvidInputError(f"columns z, y, x must hold integers, got {zyx.dtype}")
    keys = [tuple(int(v) for v in row) for row in zyx.tolist()]
    row_of = {key: i for i, key in enumerate(keys)}
    if len(row_of) != len(keys):
        repeated = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise DvidInputError(f"positions must be unique (DVID keeps one element per voxel); repeated: {repeated}")
    kinds = points["kind"].astype(object).tolist() if "kind" in points.columns else ["Note"] * len(keys)
    tags = points["tags"].tolist() if "tags" in points.columns else [()] * len(keys)
    prop_columns = [c for c in points.columns if c not in (*FRAME_COLUMNS, "body")]
    props: list[dict[str, str]] = [{} for _ in keys]
    for column in prop_columns:
        name = str(column)[5:] if str(column).startswith("prop_") else str(column)
        for i, value in enumerate(points[column].tolist()):
            if value is not None and not (isinstance(value, float) and np.isnan(value)) and value is not pd.NA:
                props[i][name] = str(value)
    rels: list[list[tuple[str, Sequence[int]]]] = [[] for _ in keys]
    if partners is not None:
        absent = [c for c in PARTNER_COLUMNS if c not in partners.columns]
        if absent:
            raise DvidInputError(f"the partners DataFrame needs columns {', '.join(PARTNER_COLUMNS)}; missing {absent}")
        for row in np.asarray(partners[list(PARTNER_COLUMNS)].to_numpy()).tolist():
            pre, post = tuple(int(v) for v in row[:3]), tuple(int(v) for v in row[3:])
            for end in (pre, post):
                if end not in row_of:
                    raise DvidInputError(f"partner position {end} (z, y, x) is not a row of the points DataFrame")
            rels[row_of[pre]].append(("PreSynTo", post))
            rels[row_of[post]].append(("PostSynTo", pre))
    out = []
    for i, key in enumerate(keys):
        tag = tags[i]
        tag_list = [tag] if isinstance(tag, str) else list(tag) if tag is not None else []
        out.append(element(key, str(kinds[i]), tags=tag_list, prop=props[i], rels=rels[i]))
    return out


def _object_column(values: list[Any]) -> np.ndarray:
    # np.asarray would turn a list of equal-length tuples into a 2-D array.
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class Annotations(Instance):
    """An ``annotation`` instance.

    Parameters
    ----------
    node : Node
        The version to read from and write to.
    name : str
        The instance name.
    """

    typenames: ClassVar[tuple[str, ...]] = ("annotation",)
    default_typename: ClassVar[str] = "annotation"

    # ---------------------------------------------------------------- syncs
    def sync(self, *names: str, replace: bool = False) -> None:
        """Sync with label data (labelmap, labelarray or labelblk) so elements are indexed by label.

        Set the sync before posting elements: DVID does not index elements that
        already exist. ``replace=True`` replaces the current syncs (with no names:
        removes them).
        """
        if not names and not replace:
            raise DvidInputError("name the label instance(s) to sync with, e.g. sync('segmentation')")
        self._post_sync(names, replace=replace)

    # -------------------------------------------------------------- writing
    def post(self, elements: Iterable[Mapping[str, Any]]) -> None:
        """Add elements, replacing any element at the same position.

        Parameters
        ----------
        elements : iterable of dict
            DVID-shaped elements (see :func:`element`); all are checked before
            anything is sent.

        Notes
        -----
        One request, which DVID stores all or nothing. Where DVID v1.0.0 panics on
        it because it adds a tag to one element and removes that tag from another
        (nothing is stored then), the elements are posted again in one request per
        set of tags; should one of those fail, its error says how many elements
        were stored.
        """
        batch = [_checked(e, i) for i, e in enumerate(elements)]
        if not batch:
            return
        self.require_writable("posting annotations")
        try:
            self.transport.request("POST", self.path("elements"), json=batch, idempotent=True)
            return
        except ServerError as exc:
            if isinstance(exc, MalformedAnswerError) or _TAG_PANIC not in exc.message:
                raise
        # Outside the except block: the panic is not chained to what the groups raise.
        self._post_by_tag_set(batch)

    def _post_by_tag_set(self, batch: list[dict[str, Any]]) -> None:
        """Post ``batch`` in one request per set of tags, after DVID v1.0.0's tag panic.

        DVID panics ("assignment to entry in nil map", a 500, nothing stored) on a
        ``POST /elements`` in which one element carries a tag that the request takes
        off another (e.g. a frame posted back with some rows retagged). Elements that
        all carry the same tags cannot do that to each other.
        """
        groups: dict[frozenset[str], list[dict[str, Any]]] = {}
        for e in batch:
            groups.setdefault(frozenset(e["Tags"]), []).append(e)
        stored = 0
        failure: DvidError | None = None
        for group in groups.values():
            try:
                self.transport.request("POST", self.path("elements"), json=group, idempotent=True)
            except DvidError as exc:
                failure = exc
                break
            stored += len(group)
        if failure is None:
            return
        if stored:
            failure.add_note(
                f"posted in {len(groups)} requests, one per set of tags (DVID v1.0.0 panics on a request "
                f"that adds a tag to one element and removes it from another): {stored} of the {len(batch)} "
                "elements are stored and the others are not; post them all again"
            )
        raise failure

    def post_frame(self, points: Any, partners: Any = None) -> None:
        """Add the elements of a DataFrame (and their synaptic relationships); see :func:`elements_from_frame`.

        A frame read with a ``frame_*`` method posts back unchanged, its properties
        included; pass the matching ``partners_*`` frame to keep the relationships.
        """
        self.post(elements_from_frame(points, partners))

    def delete(self, point: Sequence[int] | np.ndarray) -> None:
        """Delete the element at ``point`` (z, y, x), and references to it.

        Raises
        ------
        NotFoundError
            No element at that point.
        """
        zyx = as_zyx(point, "element position")
        self.require_writable("deleting an annotation")
        path = self.path("element", xyz_string(zyx))
        with _not_found_as_404(f"no element at (z, y, x) {zyx} in {self.name!r}"):
            # DVID refuses a repeated delete (the element is gone): resent only if not done
            self.transport.send_once(
                lambda: self.transport.request("DELETE", path, idempotent=False),
                carried_out=lambda: not self._holds(zyx),
            )

    def move(self, source: Sequence[int] | np.ndarray, target: Sequence[int] | np.ndarray) -> None:
        """Move the element at ``source`` to ``target`` (both z, y, x), keeping its properties.

        Raises
        ------
        NotFoundError
            No element at ``source``.
        """
        src, dst = as_zyx(source, "source position"), as_zyx(target, "target position")
        self.require_writable("moving an annotation")
        path = self.path("move", xyz_string(src), xyz_string(dst))
        with _not_found_as_404(f"no element at (z, y, x) {src} in {self.name!r} to move"):
            self.transport.send_once(
                lambda: self.transport.request("POST", path, idempotent=False),
                carried_out=lambda: not self._holds(src) and self._holds(dst),
            )

    def _holds(self, zyx: tuple[int, int, int]) -> bool:
        """Whether an element is at ``zyx`` (``GET /elements`` of its voxel)."""
        return bool(self.in_box((zyx, tuple(c + 1 for c in zyx))))

    # -------------------------------------------------------------- reading
    def in_box(self, box: Sequence[Sequence[int]] | np.ndarray) -> list[dict[str, Any]]:
        """Elements inside a half-open (z, y, x) voxel box, with relationships."""
        start, stop = as_box(box)
        path = self.path("elements", xyz_string(box_shape((start, stop))), xyz_string(start))
        return self.transport.get_json(path) or []

    def all(self) -> list[dict[str, Any]]:
        """Every element of the instance, with relationships (``GET /all-elements``)."""
        by_block = self.transport.get_json(self.path("all-elements")) or {}
        return [e for block in by_block.values() for e in (block or [])]

    def for_label(self, label: int, *, relationships: bool = False) -> list[dict[str, Any]]:
        """Elements on voxels of ``label`` in the synced label instance.

        As DVID's label index has them: see the module notes for the two cases in
        which DVID v1.0.0 lists an element at an old position or under a wrong label.

        Raises
        ------
        DvidInputError
            The instance has no sync to label data (see :meth:`sync`), or label 0.
        """
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 < int(label) < 2**64:
            raise DvidInputError(f"label must be an integer in 1..2**64-1 (0 is background), got {label!r}")
        self._require_label_sync()
        return self._label_elements(int(label), relationships)

    def _require_label_sync(self) -> None:
        if not self.syncs:
            raise DvidInputError(
                f"annotation instance {self.name!r} is not synced with label data, so DVID cannot list "
                "elements by label; call .sync('<labelmap name>') before posting the elements"
            )

    def _label_elements(self, label: int, relationships: bool = False) -> list[dict[str, Any]]:
        params = {"relationships": "true"} if relationships else None
        return self.transport.get_json(self.path("label", str(label)), params=params) or []

    def with_tag(self, tag: str, *, relationships: bool = False) -> list[dict[str, Any]]:
        """Elements carrying ``tag``."""
        if not isinstance(tag, str) or not tag or "/" in tag or tag in (".", ".."):
            raise DvidInputError(
                f"tag {tag!r} cannot be queried: it must be a non-empty string without '/' (DVID reads "
                "it from one URL path segment)"
            )
        params = {"relationships": "true"} if relationships else None
        return self.transport.get_json(self.path("tag", tag), params=params) or []

    def in_roi(self, roi: str, uuid: str | None = None) -> list[dict[str, Any]]:
        """Elements inside the ROI instance ``roi`` (of this node, or of version ``uuid``).

        DVID requires the ROI's block size to equal this instance's.
        """
        spec = roi if uuid is None else f"{roi},{uuid}"
        return self.transport.get_json(self.path("roi", spec)) or []

    # ------------------------------------------------------------ DataFrames
    @property
    def block_shape(self) -> tuple[int, int, int]:
        """The block size DVID files this instance's elements under, (z, y, x).

        DVID takes it from the synced label instance, else uses 64³ (it shows it
        nowhere in ``/info``). The tiled readers align their tiles to it; their
        results do not depend on it being right, only their speed.
        """
        for name in self.syncs:
            try:
                size = self.node.typeinfo(name)["Extended"]["BlockSize"]
            except (KeyError, TypeError):
                continue
            x, y, z = size
            return int(z), int(y), int(x)
        return (64, 64, 64)

    def tiles(self, box: Sequence[Sequence[int]] | np.ndarray, tile_shape: Sequence[int] | None = None) -> list[Box]:
        """The block-aligned tiles that the tiled readers fetch to cover ``box``.

        Parameters
        ----------
        box : ((z0, y0, x0), (z1, y1, x1))
            Half-open voxel box.
        tile_shape : (z, y, x), optional
            Tile size in voxels, rounded up to whole blocks; default
            :data:`DEFAULT_TILE_BLOCKS` blocks.

        Returns
        -------
        list of Box
            Disjoint block-aligned boxes that together hold every block ``box``
            touches, in z, y, x order.
        """
        block = self.block_shape
        if tile_shape is None:
            tile = tuple(n * b for n, b in zip(DEFAULT_TILE_BLOCKS, block))
        else:
            wanted = as_zyx(tile_shape, "tile_shape")
            if min(wanted) < 1:
                raise DvidInputError(f"tile_shape must be positive voxel counts (z, y, x), got {wanted}")
            tile = tuple(-(-w // b) * b for w, b in zip(wanted, block))
        start, stop = aligned_box(as_box(box), block)
        edges = [range(a, c, t) for a, c, t in zip(start, stop, tile)]
        return [
            ((z, y, x), (min(z + tile[0], stop[0]), min(y + tile[1], stop[1]), min(x + tile[2], stop[2])))
            for z in edges[0]
            for y in edges[1]
            for x in edges[2]
        ]

    def elements_in_box(
        self,
        box: Sequence[Sequence[int]] | np.ndarray,
        *,
        tile_shape: Sequence[int] | None = None,
        workers: int = 4,
        progress: bool = False,
    ) -> list[dict[str, Any]]:
        """Elements inside a (possibly large) box, read tile by tile in parallel.

        Like :meth:`in_box` (same elements, with relationships) but the box is cut
        into block-aligned tiles (see :meth:`tiles`) fetched with ``GET /blocks`` on
        a thread pool, so no single answer has to hold the whole box. Each block is
        kept once, so no element appears twice; elements of edge blocks that lie
        outside ``box`` are dropped.

        Parameters
        ----------
        box : ((z0, y0, x0), (z1, y1, x1))
            Half-open voxel box; need not be block-aligned.
        tile_shape : (z, y, x), optional
            Tile size in voxels (rounded up to whole blocks).
        workers : int
            Tiles fetched at once.
        progress : bool
            Show a text progress bar (tiles done) on stderr.

        Returns
        -------
        list of dict
            DVID elements sorted by z, y, x.
        """
        start, stop = as_box(box)
        tiles = self.tiles((start, stop), tile_shape)

        def fetch(tile: Box) -> dict[str, list[dict[str, Any]]]:
            path = self.path("blocks", xyz_string(box_shape(tile)), xyz_string(tile[0]))
            answer: dict[str, list[dict[str, Any]]] = self.transport.get_json(path) or {}
            return answer

        # Keyed by DVID's block: should its blocks not match the tiles, a block that
        # two tiles touch comes back twice and is kept once.
        by_block: dict[str, list[dict[str, Any]]] = {}
        for part in map_threaded(fetch, tiles, workers, "tiles", progress):
            by_block.update(part)
        found = [
            e
            for elements in by_block.values()
            for e in (elements or ())
            if all(a <= v < b for v, a, b in zip(e["Pos"][::-1], start, stop))
        ]
        found.sort(key=lambda e: (e["Pos"][2], e["Pos"][1], e["Pos"][0]))
        return found

    def frame_in_box(
        self,
        box: Sequence[Sequence[int]] | np.ndarray,
        *,
        tile_shape: Sequence[int] | None = None,
        workers: int = 4,
        progress: bool = False,
    ) -> Any:
        """Elements inside a box as a DataFrame (tiled and parallel, see :meth:`elements_in_box`).

        Returns
        -------
        pandas.DataFrame
            One row per element sorted by z, y, x; columns as in :func:`elements_frame`.
        """
        pandas("Annotations.frame_in_box()")
        return elements_frame(
            self.elements_in_box(box, tile_shape=tile_shape, workers=workers, progress=progress)
        )

    def partners_in_box(
        self,
        box: Sequence[Sequence[int]] | np.ndarray,
        *,
        tile_shape: Sequence[int] | None = None,
        workers: int = 4,
        progress: bool = False,
    ) -> Any:
        """Synaptic pairs with at least one end inside ``box`` (tiled and parallel).

        A pair is found from the relationships of its elements inside the box, so a
        pair whose only end inside the box does not record the relationship is
        missed; DVID's synapse loaders record it on both ends.

        Returns
        -------
        pandas.DataFrame
            Columns ``pre_z, pre_y, pre_x, post_z, post_y, post_x`` (int32); see
            :func:`partners_frame`.
        """
        pandas("Annotations.partners_in_box()")
        return partners_frame(
            self.elements_in_box(box, tile_shape=tile_shape, workers=workers, progress=progress)
        )

    def frame_all(self) -> Any:
        """Every element of the instance as a DataFrame (``GET /all-elements``), sorted by z, y, x."""
        pandas("Annotations.frame_all()")
        return _sorted(elements_frame(self.all()))

    def frame_in_roi(self, roi: str, uuid: str | None = None) -> Any:
        """Elements inside the ROI instance ``roi`` as a DataFrame (see :meth:`in_roi`), sorted by z, y, x."""
        pandas("Annotations.frame_in_roi()")
        return _sorted(elements_frame(self.in_roi(roi, uuid)))

    def frame_for_body(self, body: int) -> Any:
        """Elements on voxels of ``body`` as a DataFrame (see :meth:`for_label`), sorted by z, y, x."""
        pandas("Annotations.frame_for_body()")
        return _sorted(elements_frame(self.for_label(body)))

    def frame_for_bodies(
        self, bodies: Iterable[int], *, workers: int = 4, progress: bool = False
    ) -> Any:
        """Elements of many bodies in one DataFrame, with a ``body`` column (one request per body, in parallel).

        Parameters
        ----------
        bodies : iterable of int
            Body ids (labels of the synced label instance); duplicates are read once.
        workers : int
            Bodies fetched at once.
        progress : bool
            Show a text progress bar (bodies done) on stderr.

        Returns
        -------
        pandas.DataFrame
            Columns as in :func:`elements_frame` plus ``body`` (uint64), sorted by
            body, then z, y, x.

        Raises
        ------
        DvidInputError
            No sync to label data, or a body id that is not a positive integer.
        """
        pd = pandas("Annotations.frame_for_bodies()")
        ids = self._body_ids(bodies)
        self._require_label_sync()
        lists = map_threaded(self._label_elements, ids, workers, "bodies", progress)
        frame = elements_frame([e for found in lists for e in found])
        frame["body"] = np.repeat(np.asarray(ids, dtype=np.uint64), [len(found) for found in lists])
        return pd.DataFrame(frame.sort_values(["body", "z", "y", "x"], kind="stable").reset_index(drop=True))

    def partners_for_body(self, body: int) -> Any:
        """Synaptic pairs with an end on ``body`` (``GET /label/<body>?relationships=true``).

        Returns
        -------
        pandas.DataFrame
            Columns ``pre_z, pre_y, pre_x, post_z, post_y, post_x`` (int32); see
            :func:`partners_frame`.
        """
        pandas("Annotations.partners_for_body()")
        return partners_frame(self.for_label(body, relationships=True))

    def counts_for_bodies(
        self, bodies: Iterable[int], *, workers: int = 4, progress: bool = False
    ) -> Any:
        """How many PreSyn and PostSyn elements lie on each body.

        One ``GET /label/<body>`` per body, in parallel. For counts kept up to date
        by the server, sync a ``labelsz`` instance to this one instead.

        Parameters
        ----------
        bodies : iterable of int
            Body ids; duplicates are counted once.
        workers : int
            Bodies fetched at once.
        progress : bool
            Show a text progress bar (bodies done) on stderr.

        Returns
        -------
        pandas.DataFrame
            Index ``body`` (uint64, in the order given), columns ``PreSyn`` and
            ``PostSyn`` (int64); bodies without elements have zeros.
        """
        pd = pandas("Annotations.counts_for_bodies()")
        ids = self._body_ids(bodies)
        self._require_label_sync()
        lists = map_threaded(self._label_elements, ids, workers, "bodies", progress)
        counts = {
            kind: np.asarray([sum(e.get("Kind") == kind for e in found) for found in lists], dtype=np.int64)
            for kind in ("PreSyn", "PostSyn")
        }
        return pd.DataFrame(counts, index=pd.Index(np.asarray(ids, dtype=np.uint64), name="body"))

    def _body_ids(self, bodies: Iterable[int]) -> list[int]:
        if isinstance(bodies, (int, np.integer)):
            raise DvidInputError(f"bodies must be a list of body ids, got the single id {bodies!r}: pass [{bodies}]")
        ids: list[int] = []
        for body in bodies:
            if isinstance(body, (bool, np.bool_)) or not isinstance(body, (int, np.integer)) or not 0 < body < 2**64:
                raise DvidInputError(f"body ids must be integers in 1..2**64-1 (0 is background), got {body!r}")
            ids.append(int(body))
        return list(dict.fromkeys(ids))


def _sorted(frame: Any) -> Any:
    return frame.sort_values(["z", "y", "x"], kind="stable").reset_index(drop=True)


class _not_found_as_404:
    """Turn DVID's 400 "Did not find element" into :class:`NotFoundError`."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> Literal[False]:
        if isinstance(exc, BadRequestError) and "did not find" in exc.message.lower():
            raise NotFoundError(exc.method, exc.url, exc.status, f"{self.message} ({exc.message})") from None
        return False


def _int3(value: object, what: str) -> list[int]:
    items = list(value) if isinstance(value, (list, tuple, np.ndarray)) else None
    if (
        items is None
        or len(items) != 3
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items)
        or not all(_INT32[0] <= int(v) <= _INT32[1] for v in items)
    ):
        raise DvidInputError(f"{what} must be 3 int32 integers [x, y, z], got {value!r}")
    return [int(v) for v in items]


def _checked(elem: object, index: int) -> dict[str, Any]:
    """Validate one DVID element and return a JSON-ready copy."""
    where = f"element {index}"
    if not isinstance(elem, Mapping):
        raise DvidInputError(f"{where} must be a dict like {{'Pos': [x, y, z], 'Kind': 'Note'}}, got {elem!r}")
    unknown = set(elem) - {"Pos", "Kind", "Tags", "Prop", "Rels"}
    if unknown:
        raise DvidInputError(
            f"{where} has unknown fields {sorted(unknown)}; DVID elements have Pos, Kind, Tags, Prop, Rels"
        )
    if "Pos" not in elem:
        raise DvidInputError(f"{where} has no 'Pos' ([x, y, z]; element() builds one from (z, y, x))")
    out: dict[str, Any] = {"Pos": _int3(elem["Pos"], f"{where} 'Pos'")}
    kind = elem.get("Kind", "Unknown")
    if kind not in KINDS:
        raise DvidInputError(f"{where} has Kind {kind!r}; DVID knows {', '.join(KINDS)}")
    out["Kind"] = kind
    tags = elem.get("Tags") or []
    if isinstance(tags, str) or not all(isinstance(t, str) and t for t in tags):
        raise DvidInputError(f"{where} 'Tags' must be a list of non-empty strings, got {tags!r}")
    out["Tags"] = list(tags)
    prop = elem.get("Prop") or {}
    if not isinstance(prop, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prop.items()):
        raise DvidInputError(f"{where} 'Prop' must map strings to strings, got {prop!r}")
    out["Prop"] = dict(prop)
    rels = elem.get("Rels") or []
    checked_rels = []
    for j, rel in enumerate(rels):
        if not isinstance(rel, Mapping) or rel.get("Rel") not in RELATIONS or "To" not in rel:
            raise DvidInputError(
                f"{where} relationship {j} must be {{'Rel': one of {', '.join(RELATIONS)}, "
                f"'To': [x, y, z]}}, got {rel!r}"
            )
        checked_rels.append({"Rel": rel["Rel"], "To": _int3(rel["To"], f"{where} relationship {j} 'To'")})
    out["Rels"] = checked_rels
    return out
