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
* An empty box answers ``null``; returned here as ``[]``. Elements listed by label
  or tag carry ``"Rels"`` only with ``relationships=True``, and elements stored
  without ``"Prop"`` may come back with ``"Prop": null``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from ..errors import BadRequestError, DvidInputError, NotFoundError
from ..geometry import as_box, as_zyx, box_shape, xyz_string
from .base import Instance

__all__ = ["KINDS", "RELATIONS", "Annotations", "element", "positions"]

#: Element kinds DVID accepts.
KINDS = ("PreSyn", "PostSyn", "Gap", "Note", "Unknown")
#: Relationship types DVID accepts.
RELATIONS = ("PreSynTo", "PostSynTo", "ConvergentTo", "GroupedWith", "UnknownRelationship")

_INT32 = (-(2**31), 2**31 - 1)


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
    @property
    def syncs(self) -> list[str]:
        """Names of the instances this one is synced with (asked from the server each time)."""
        self.refresh()
        return list(self.info["Base"].get("Syncs") or [])

    def sync(self, *names: str, replace: bool = False) -> None:
        """Sync with label data (labelmap, labelarray or labelblk) so elements are indexed by label.

        Set the sync before posting elements: DVID does not index elements that
        already exist. ``replace=True`` replaces the current syncs (with no names:
        removes them).
        """
        if not names and not replace:
            raise DvidInputError("name the label instance(s) to sync with, e.g. sync('segmentation')")
        self.require_writable("setting syncs")
        self.transport.request(
            "POST",
            self.path("sync"),
            json={"sync": ",".join(names)},
            params={"replace": "true"} if replace else None,
            idempotent=True,
        )
        self.refresh()

    # -------------------------------------------------------------- writing
    def post(self, elements: Iterable[Mapping[str, Any]]) -> None:
        """Add elements, replacing any element at the same position.

        Parameters
        ----------
        elements : iterable of dict
            DVID-shaped elements (see :func:`element`); all are checked before
            anything is sent.
        """
        batch = [_checked(e, i) for i, e in enumerate(elements)]
        if not batch:
            return
        self.require_writable("posting annotations")
        self.transport.request("POST", self.path("elements"), json=batch, idempotent=True)

    def delete(self, point: Sequence[int] | np.ndarray) -> None:
        """Delete the element at ``point`` (z, y, x), and references to it.

        Raises
        ------
        NotFoundError
            No element at that point.
        """
        zyx = as_zyx(point, "element position")
        self.require_writable("deleting an annotation")
        with _not_found_as_404(f"no element at (z, y, x) {zyx} in {self.name!r}"):
            self.transport.request("DELETE", self.path("element", xyz_string(zyx)))

    def move(self, source: Sequence[int] | np.ndarray, target: Sequence[int] | np.ndarray) -> None:
        """Move the element at ``source`` to ``target`` (both z, y, x), keeping its properties.

        Raises
        ------
        NotFoundError
            No element at ``source``.
        """
        src, dst = as_zyx(source, "source position"), as_zyx(target, "target position")
        self.require_writable("moving an annotation")
        with _not_found_as_404(f"no element at (z, y, x) {src} in {self.name!r} to move"):
            self.transport.request("POST", self.path("move", xyz_string(src), xyz_string(dst)))

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

        Raises
        ------
        DvidInputError
            The instance has no sync to label data (see :meth:`sync`), or label 0.
        """
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 < int(label) < 2**64:
            raise DvidInputError(f"label must be an integer in 1..2**64-1 (0 is background), got {label!r}")
        if not self.syncs:
            raise DvidInputError(
                f"annotation instance {self.name!r} is not synced with label data, so DVID cannot list "
                "elements by label; call .sync('<labelmap name>') before posting the elements"
            )
        params = {"relationships": "true"} if relationships else None
        return self.transport.get_json(self.path("label", str(int(label))), params=params) or []

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
