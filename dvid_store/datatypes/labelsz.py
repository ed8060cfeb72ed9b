"""Annotation counts per label, ranked (DVID's ``labelsz`` type).

A ``labelsz`` instance is synced with an ``annotation`` instance (itself synced
with a labelmap) and keeps, for every label, how many elements of each kind lie
on it, optionally only those inside a fixed ROI. DVID updates the counts after
each annotation change, a moment after the change's request has been answered.
Elements that existed before the sync are counted only after :meth:`Labelsz.reload`
(DVID v1.0.0's help says the sync counts them; it does not).

Index types (:data:`INDEX_TYPES`, spelled exactly so):

| index type | counts |
| --- | --- |
| ``PreSyn``, ``PostSyn``, ``Gap``, ``Note`` | elements of that kind |
| ``AllSyn`` | ``PreSyn`` + ``PostSyn`` + ``Gap`` elements (not ``Note``; see :meth:`Labelsz.reload`) |
| ``Voxels`` | accepted by DVID v1.0.0 but never counted (always 0 / empty) |

Every ranked answer is a pandas Series named after the index type: index ``body``
(uint64 labels), values int64 counts. pandas is the ``dataframes`` extra.

neuclease equivalents (``neuclease.dvid.labelsz`` → here, with ``sz = node.labelsz(name)``):

| neuclease | dvid_store |
| --- | --- |
| ``create_labelsz_instance(..., ROI=)`` + ``post_sync`` | ``Labelsz.create(node, name, annotation=, roi=)`` |
| ``post_sync`` | ``sz.sync(annotation)`` |
| ``fetch_count`` | ``sz.count(label, index_type)`` |
| ``fetch_counts`` | ``sz.counts(labels, index_type)`` (and ``sz.counts_table`` for several types) |
| ``fetch_top`` | ``sz.top(n, index_type)`` |
| ``fetch_threshold`` | ``sz.threshold(minimum, index_type, offset=, n=)`` |
| ``post_reload`` | ``sz.reload()`` |
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import DvidInputError, MalformedAnswerError
from ..names import check_instance_name
from ._frames import pandas
from .base import Instance
from .label_volume import _label_id

if TYPE_CHECKING:
    from ..node import Node
    from .roi import Roi

__all__ = ["INDEX_TYPES", "Labelsz"]

#: The index types DVID's labelsz knows, spelled as DVID wants them.
INDEX_TYPES = ("PostSyn", "PreSyn", "Gap", "Note", "AllSyn", "Voxels")


class Labelsz(Instance):
    """Annotation counts per label, ranked (DVID's ``labelsz`` type).

    Parameters
    ----------
    node : Node
        The version to read from and write to.
    name : str
        The instance name.
    """

    typenames: ClassVar[tuple[str, ...]] = ("labelsz",)
    default_typename: ClassVar[str] = "labelsz"

    #: Labels per request in :meth:`threshold` and :meth:`counts` (DVID's page size).
    PAGE = 10_000

    @classmethod
    def create(
        cls,
        node: Node,
        name: str,
        *,
        annotation: str | None = None,
        roi: Roi | str | tuple[str, str] | None = None,
        **settings: Any,
    ) -> Labelsz:
        """Create a labelsz instance, synced with an annotation instance.

        Parameters
        ----------
        node : Node
            An uncommitted node.
        name : str
            Instance name.
        annotation : str, optional
            The annotation instance to count (synced right away; see :meth:`sync`).
            That instance must itself be synced with label data before its elements
            are posted. Elements it already holds are counted only after :meth:`reload`.
        roi : Roi, str or (str, str), optional
            Count only elements inside this ROI: a :class:`Roi`, ``"<roi name>,<uuid>"``
            or ``(roi name, uuid)``. DVID reads the ROI once and keeps it, so it
            should be a committed version; it cannot be changed later.
        **settings
            Other DVID settings (see :meth:`Node.create_instance`).

        Raises
        ------
        DvidInputError
            ``annotation`` is not an annotation instance, or ``roi`` is malformed
            (nothing is created).
        UnknownInstanceError
            No such annotation or ROI instance.
        """
        spec = _roi_spec(node, roi) if roi is not None else None
        if annotation is not None:
            node.annotations(annotation)  # exists and is an annotation instance, before creating anything
        node.create_instance(cls.default_typename, name, ROI=spec, **settings)
        instance = cls(node, name)
        if annotation is not None:
            instance.sync(annotation)
        return instance

    # ---------------------------------------------------------------- settings
    @property
    def roi(self) -> str | None:
        """The ROI elements are counted in, as ``"<roi name>,<uuid>"``; ``None`` for everywhere."""
        spec = self.info.get("Extended", {}).get("StaticROI") or ""
        return str(spec) or None

    def sync(self, *annotations: str, replace: bool = False) -> None:
        """Count the elements of these annotation instances.

        DVID counts every element posted, deleted or relabelled from then on; the
        elements already there are counted only after :meth:`reload`.
        ``replace=True`` replaces the current syncs.
        """
        if not annotations and not replace:
            raise DvidInputError("name the annotation instance(s) to count, e.g. sync('synapses')")
        for name in annotations:
            check_instance_name(name)
        self._post_sync(annotations, replace=replace)

    def reload(self) -> None:
        """Recount everything from the synced annotation instance (``POST /reload``).

        DVID recounts in the background; until it has finished, queries fail with
        a :class:`BadRequestError` "stats not available". Note that DVID v1.0.0's
        recount includes ``Note`` elements in ``AllSyn``, which its incremental
        counting does not.
        """
        self._require_sync()
        self.require_writable("reloading counts")
        self.transport.request("POST", self.path("reload"))

    # ------------------------------------------------------------------ counts
    def count(self, label: int, index_type: str = "PostSyn") -> int:
        """How many elements of ``index_type`` lie on ``label`` (0 when none)."""
        kind = _index_type(index_type)
        value = _label_id(label)
        self._require_sync()
        answer = self.transport.get_json(self.path("count", str(value), kind))
        if not isinstance(answer, dict) or answer.get("Label") != value or kind not in answer:
            raise MalformedAnswerError(
                "GET", self.transport.url(self.path("count", str(value), kind)), 200,
                f"expected {{'Label': {value}, {kind!r}: <count>}}, got {str(answer)[:200]}",
            )
        return int(answer[kind])

    def counts(self, labels: Iterable[int] | np.ndarray, index_type: str = "PostSyn") -> Any:
        """Counts of ``index_type`` for many labels (``GET /counts``, in pages).

        Parameters
        ----------
        labels : iterable of int
            Labels (1 .. 2**64-1); repeats are answered as asked.
        index_type : str
            One of :data:`INDEX_TYPES`.

        Returns
        -------
        pandas.Series
            Named ``index_type``, index ``body`` (uint64) in the order asked, values
            int64 counts (0 for labels without any).
        """
        pd = pandas("Labelsz.counts()")
        kind = _index_type(index_type)
        wanted = _labels(labels)
        self._require_sync()
        values = np.zeros(len(wanted), dtype=np.int64)
        path = self.path("counts", kind)
        for start in range(0, len(wanted), self.PAGE):
            page = wanted[start : start + self.PAGE]
            answer = self.transport.request_json("GET", path, json=page) or []
            got = [entry.get("Label") for entry in answer if isinstance(entry, dict)]
            if got != page or not all(kind in entry for entry in answer):
                raise MalformedAnswerError(
                    "GET", self.transport.url(path), 200,
                    f"asked for the counts of {len(page)} labels, the answer holds {len(got)} others",
                )
            values[start : start + len(page)] = [int(entry[kind]) for entry in answer]
        return pd.Series(values, index=pd.Index(np.asarray(wanted, dtype=np.uint64), name="body"), name=kind)

    def counts_table(
        self,
        labels: Iterable[int] | np.ndarray,
        index_types: Sequence[str] = ("PreSyn", "PostSyn", "Gap", "Note", "AllSyn"),
    ) -> Any:
        """Counts of several index types for many labels, one column per type.

        Returns
        -------
        pandas.DataFrame
            Index ``body`` (uint64) in the order asked; one int64 column per entry of
            ``index_types``, named after it.
        """
        pd = pandas("Labelsz.counts_table()")
        kinds = [_index_type(k) for k in index_types]
        if not kinds or len(set(kinds)) != len(kinds):
            raise DvidInputError(f"index_types must name each index type once, got {list(index_types)}")
        wanted = _labels(labels)
        columns = {kind: self.counts(wanted, kind) for kind in kinds}
        index = pd.Index(np.asarray(wanted, dtype=np.uint64), name="body")
        return pd.DataFrame({kind: series.to_numpy() for kind, series in columns.items()}, index=index)

    # ----------------------------------------------------------------- ranking
    def top(self, n: int, index_type: str = "PostSyn") -> Any:
        """The ``n`` labels with the most elements of ``index_type`` (``GET /top``).

        Returns
        -------
        pandas.Series
            Named ``index_type``, index ``body`` (uint64), values int64 counts; largest
            first, ties by increasing label. Labels with no such element are not listed.
        """
        kind = _index_type(index_type)
        number = _count_arg(n, "n")
        self._require_sync()
        answer = self.transport.get_json(self.path("top", str(number), kind)) if number else []
        return _ranked(answer or [], kind, "Labelsz.top()")

    def threshold(
        self, minimum: int, index_type: str = "PostSyn", *, offset: int = 0, n: int | None = None
    ) -> Any:
        """Labels with at least ``minimum`` elements of ``index_type`` (``GET /threshold``).

        Parameters
        ----------
        minimum : int
            The least count listed (0 .. 2**32-1).
        index_type : str
            One of :data:`INDEX_TYPES`.
        offset : int
            Skip this many of the ranked labels first (0-based rank).
        n : int, optional
            List at most this many; by default every one, fetched in pages of
            :attr:`PAGE` labels.

        Returns
        -------
        pandas.Series
            As :meth:`top`: index ``body`` (uint64), int64 counts, largest first.
        """
        kind = _index_type(index_type)
        least = _count_arg(minimum, "minimum")
        start = _count_arg(offset, "offset", limit=2**62)
        remaining = None if n is None else _count_arg(n, "n", limit=2**62)
        self._require_sync()
        entries: list[Any] = []
        while remaining is None or remaining > 0:
            size = self.PAGE if remaining is None else min(self.PAGE, remaining)
            page = self.transport.get_json(
                self.path("threshold", str(least), kind), params={"offset": start, "n": size}
            ) or []
            entries.extend(page)
            if len(page) < size:
                break
            start += size
            if remaining is not None:
                remaining -= size
        return _ranked(entries, kind, "Labelsz.threshold()")

    # ----------------------------------------------------------------- helpers
    def _require_sync(self) -> None:
        if not self.info["Base"].get("Syncs") and not self.syncs:
            raise DvidInputError(
                f"labelsz instance {self.name!r} is not synced with an annotation instance, so DVID counts "
                "nothing (every count would read 0); call .sync('<annotation name>')"
            )


def _index_type(index_type: object) -> str:
    if isinstance(index_type, str) and index_type in INDEX_TYPES:
        return index_type
    hint = ""
    if isinstance(index_type, str):
        close = [t for t in INDEX_TYPES if t.lower() == index_type.lower()]
        hint = f" (DVID is case-sensitive: did you mean {close[0]!r}?)" if close else ""
    raise DvidInputError(f"unknown labelsz index type {index_type!r}{hint}; DVID knows {', '.join(INDEX_TYPES)}")


def _count_arg(value: object, what: str, limit: int = 2**32) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) < limit:
        raise DvidInputError(f"{what} must be an integer from 0 to {limit - 1}, got {value!r}")
    return int(value)


def _labels(labels: Iterable[int] | np.ndarray) -> list[int]:
    if isinstance(labels, (int, np.integer)):
        raise DvidInputError("counts() takes a list of labels; for one label use count(label)")
    if isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "iu":
            raise DvidInputError(f"labels are integers, got an array of {labels.dtype}")
        labels = labels.ravel().tolist()
    return [_label_id(label) for label in labels]


def _ranked(entries: list[Any], kind: str, what: str) -> Any:
    pd = pandas(what)
    try:
        bodies = np.asarray([int(e["Label"]) for e in entries], dtype=np.uint64)
        sizes = np.asarray([int(e["Size"]) for e in entries], dtype=np.int64)
    except (KeyError, TypeError, ValueError):
        raise MalformedAnswerError(
            "GET", "", 200, f"expected [{{'Label': ..., 'Size': ...}}, ...], got {str(entries)[:200]}"
        ) from None
    return pd.Series(sizes, index=pd.Index(bodies, name="body"), name=kind)


def _roi_spec(node: Node, roi: object) -> str:
    from .roi import Roi

    if isinstance(roi, Roi):
        return f"{roi.name},{roi.node.uuid}"
    if isinstance(roi, str):
        parts = roi.split(",")
    elif isinstance(roi, tuple):
        parts = list(roi)
    else:
        parts = []
    if len(parts) != 2 or not all(isinstance(p, str) and p.strip() for p in parts):
        raise DvidInputError(
            f"roi must be a Roi, '<roi name>,<uuid>' or (roi name, uuid), got {roi!r}"
        )
    name, uuid = (p.strip() for p in parts)
    source = node.client.node(uuid)
    source.roi(name)  # the ROI exists at that version (DVID would silently count nothing)
    return f"{name},{source.uuid}"
