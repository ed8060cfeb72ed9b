"""labelmap's label index and mapping: sizes, bounding boxes, supervoxels and bodies, label ids,
the label indices themselves, label lists, whole mappings and supervoxel splits.

DVID keeps, per body, the blocks holding it and each supervoxel's voxel count in
each; these calls read that index instead of the voxels. labelmap ``POST /raw``
indexes labels *after* it answers: sizes, sparse volumes, merges etc. see the new
voxels a moment later (:meth:`~_LabelIndex.wait_for_sizes` waits for a known state).

* ``GET/POST /index``, ``GET/POST /indices``, ``GET /indices-compressed``:
  :meth:`~_LabelIndex.label_index`,
  :meth:`~_LabelIndex.label_indices`, :meth:`~_LabelIndex.write_label_index`,
  :meth:`~_LabelIndex.write_label_indices`, :meth:`~_LabelIndex.delete_label_indices`,
  decoded into :class:`~dvid_store.datatypes._label_proto.LabelIndex` by hand;
* ``GET /listlabels``: :meth:`~_LabelIndex.list_labels`, :meth:`~_LabelIndex.iter_labels`,
  :meth:`~_LabelIndex.list_label_sizes`;
* ``GET/POST /mappings``: :meth:`~_LabelIndex.mappings`, :meth:`~_LabelIndex.post_mappings`,
  :meth:`~_LabelIndex.copy_mappings`;
* ``GET /supervoxel-splits``: :meth:`~_LabelIndex.supervoxel_splits`,
  :meth:`~_LabelIndex.supervoxel_split_graph`, :meth:`~_LabelIndex.supervoxel_fragments`.

Binary answers (``/listlabels``, ``/mappings``, ``/index``, ``/indices*``) are parsed
inside the request attempt: a stream cut inside a record is asked again. A
``/listlabels`` page cut exactly on a record boundary with a clean end cannot be
told from the last page; DVID gives no count to check it against.

DVID v1.0.0 behaviours (checked against the server): ``GET /mappings`` lists only
supervoxels that do not map to themselves, retired ids (split, cleaved) mapping to
0; ``POST /mappings`` changes the mapping only, not the label indices;
``GET /indices`` answers a label without an index with an empty index naming it;
``/listlabels`` lists the labels that have an index (bodies, not merged-away
supervoxels).
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar, cast

import lz4.block
import numpy as np

from ..errors import DvidError, DvidInputError, MalformedAnswerError
from ..geometry import Box
from ._frames import pandas
from ._label_proto import (
    LabelIndex,
    decode_label_index,
    decode_label_indices,
    encode_label_index,
    encode_label_indices,
    encode_mapping_ops,
)
from ._progress import TextProgress
from .label_volume import _label_id, _label_list, _max_label
from .sparse_volumes import _SparseVolumes

T = TypeVar("T")

#: Labels DVID v1.0.0 answers at most per ``GET /indices``.
_INDICES_PER_REQUEST = 50_000
#: Labels DVID v1.0.0 lists at most per ``GET /listlabels``.
_LISTLABELS_MAX = 10_000_000


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

    # ----------------------------------------------------------- label indices
    def label_index(self, label: int, *, mutid: int | None = None) -> LabelIndex | None:
        """The label index of a body (``GET /index/<label>``), decoded; ``None`` if it has none.

        Parameters
        ----------
        label : int
            Body id (an unmerged supervoxel is its own body).
        mutid : int, optional
            The index as it was just before mutation ``mutid``. DVID keeps these
            only when the server configures a mutation cache for the instance
            (``[mutcache]`` in its TOML); otherwise, and for labels the mutation
            did not touch, the answer is ``None``.

        Returns
        -------
        LabelIndex or None
            Blocks → per-supervoxel voxel counts, plus the last mutation id, time,
            user and app. :attr:`LabelIndex.num_voxels`,
            :meth:`~LabelIndex.supervoxel_sizes` and :meth:`~LabelIndex.block_coords`
            (the coarse sparse volume) are computed from it without more requests.
        """
        label = _label_id(label)
        params: dict[str, Any] = {}
        if mutid is not None:
            params["mutid"] = int(mutid)
        path = self.path("index", str(label))
        return _checked_get(self, path, lambda body: _decoded_index(body, label, path), params=params, missing=True)

    def label_indices(self, labels: Iterable[int], *, compressed: bool = True) -> list[LabelIndex | None]:
        """The label indices of many bodies, 50 000 labels a request.

        Parameters
        ----------
        labels : iterable of int
            Body ids.
        compressed : bool
            ``True``: ``GET /indices-compressed``, DVID's stored (LZ4) indices sent
            as they are, one framed record per label (DVID decodes nothing; a
            missing or cut record is noticed). ``False``: ``GET /indices``, one
            ``LabelIndices`` message re-encoded by DVID.

        Returns
        -------
        list of LabelIndex or None
            In the order of ``labels``; ``None`` for labels without an index.
        """
        ids = _label_list(labels)
        out: list[LabelIndex | None] = []
        endpoint = "indices-compressed" if compressed else "indices"
        path = self.path(endpoint)
        for start in range(0, len(ids), _INDICES_PER_REQUEST):
            chunk = ids[start : start + _INDICES_PER_REQUEST]
            if compressed:
                def parse(body: bytes, chunk: list[int] = chunk) -> list[LabelIndex | None]:
                    return _compressed_indices(body, chunk, path)
            else:
                def parse(body: bytes, chunk: list[int] = chunk) -> list[LabelIndex | None]:
                    return _plain_indices(body, chunk, path)

            indices = _checked_get(self, path, parse, data=json.dumps(chunk).encode())
            assert indices is not None
            out.extend(indices)
        return out

    def coarse_blocks_from_index(self, label: int, *, supervoxels: bool = False) -> np.ndarray:
        """Block coordinates holding a body or supervoxel, from the label index (``GET /index``).

        The answer of :meth:`sparsevol_coarse`, computed here from the label index:
        for a supervoxel, from its body's index (found with :meth:`mapping`).

        Returns
        -------
        numpy.ndarray
            int32 ``(N, 3)`` block coordinates ``(bz, by, bx)``, sorted; empty if absent.
        """
        label = _label_id(label)
        body = int(self.mapping([label])[0]) if supervoxels else label
        index = self.label_index(body) if body else None
        if index is None:
            return np.zeros((0, 3), dtype=np.int32)
        return index.block_coords([label] if supervoxels else None)

    def sizes_from_indices(self, labels: Iterable[int], *, supervoxels: bool = False) -> Any:
        """Voxel counts summed from the label indices (``GET /indices``) instead of ``GET /sizes``.

        For supervoxels, their bodies are found with :meth:`mapping` and each body's
        index is read once, however many of its supervoxels are asked for.

        Returns
        -------
        pandas.Series
            uint64 voxel counts named ``"size"``, indexed by the uint64 labels in the
            order given (index named ``"sv"`` or ``"body"``); 0 for absent labels.
        """
        pd = pandas("Labelmap.sizes_from_indices()")
        ids = _label_list(labels)
        bodies = self.mapping(ids).tolist() if supervoxels else ids
        wanted = sorted({b for b in bodies if b})
        found = dict(zip(wanted, self.label_indices(wanted)))
        sizes: list[int] = []
        per_sv: dict[int, dict[int, int]] = {}
        for label, body in zip(ids, bodies):
            index = found.get(body)
            if index is None:
                sizes.append(0)
            elif supervoxels:
                if body not in per_sv:
                    per_sv[body] = index.supervoxel_sizes()
                sizes.append(per_sv[body].get(label, 0))
            else:
                sizes.append(index.num_voxels)
        return pd.Series(
            np.asarray(sizes, dtype=np.uint64),
            index=pd.Index(np.asarray(ids, dtype=np.uint64), name="sv" if supervoxels else "body"),
            name="size",
        )

    def copy_label_indices(self, dest: Any, labels: Iterable[int], *, batch_size: int = 10_000) -> int:
        """Copy the label indices of ``labels`` to another labelmap (``GET /indices`` → ``POST /indices``).

        Labels without an index here are left alone there.

        Returns
        -------
        int
            Number of indices copied.
        """
        ids = _label_list(labels)
        copied = 0
        for start in range(0, len(ids), max(int(batch_size), 1)):
            found = [i for i in self.label_indices(ids[start : start + batch_size]) if i is not None]
            if found:
                dest.write_label_indices(found, batch_size=batch_size)
            copied += len(found)
        return copied

    def write_label_index(self, index: LabelIndex) -> None:
        """Store a body's label index (``POST /index/<label>``); an index without blocks deletes it.

        DVID stores it as given: it does not check it against the voxels, and it
        does not change the supervoxel → body mapping (see :meth:`post_mappings`).
        """
        label = _label_id(index.label)
        self.require_writable("writing a label index")
        self.transport.request(
            "POST", self.path("index", str(label)), data=encode_label_index(index), idempotent=True
        )

    def write_label_indices(self, indices: Iterable[LabelIndex], *, batch_size: int = 10_000) -> None:
        """Store many label indices (``POST /indices``, ``batch_size`` a request).

        Indices without blocks delete the label's index. DVID raises the max label
        to the largest label written.
        """
        items = list(indices)
        for index in items:
            _label_id(index.label)
        self.require_writable("writing label indices")
        for start in range(0, len(items), max(int(batch_size), 1)):
            payload = encode_label_indices(items[start : start + batch_size])
            self.transport.request("POST", self.path("indices"), data=payload, idempotent=True)

    def delete_label_indices(self, labels: Iterable[int]) -> None:
        """Delete the label indices of ``labels`` (``POST /indices`` of empty indices).

        The voxels stay; sizes, sparse volumes and edits of these bodies then see nothing.
        """
        self.write_label_indices([LabelIndex(label) for label in _label_list(labels)])

    # ----------------------------------------------------------- label listing
    def list_labels(self, start: int = 0, number: int | None = None, *, batch_size: int = 1_000_000) -> np.ndarray:
        """Labels that have a label index, in increasing order (``GET /listlabels``).

        Parameters
        ----------
        start : int
            Smallest label to list.
        number : int, optional
            List at most this many; ``None`` lists all from ``start`` (several
            requests of ``batch_size``; see :meth:`iter_labels` to go page by page).

        Returns
        -------
        numpy.ndarray
            uint64 labels.
        """
        pages = list(self.iter_labels(start, number=number, batch_size=batch_size))
        return np.concatenate(pages) if pages else np.zeros(0, dtype=np.uint64)

    def list_label_sizes(self, start: int = 0, number: int | None = None, *, batch_size: int = 1_000_000) -> Any:
        """Labels and their voxel counts, in increasing label order (``GET /listlabels?sizes=true``).

        Parameters as in :meth:`list_labels`.

        Returns
        -------
        pandas.Series
            uint64 voxel counts named ``"size"``, indexed by the uint64 labels (index
            named ``"label"``).
        """
        pd = pandas("Labelmap.list_label_sizes()")
        pages = list(self.iter_labels(start, number=number, batch_size=batch_size, sizes=True))
        pairs = np.concatenate(pages) if pages else np.zeros((0, 2), dtype=np.uint64)
        return pd.Series(pairs[:, 1], index=pd.Index(pairs[:, 0], name="label"), name="size", dtype=np.uint64)

    def iter_labels(
        self,
        start: int = 0,
        *,
        number: int | None = None,
        batch_size: int = 1_000_000,
        sizes: bool = False,
    ) -> Iterator[np.ndarray]:
        """Page through the labels of a huge instance, one ``GET /listlabels`` per page.

        Parameters
        ----------
        start : int
            Smallest label to list.
        number : int, optional
            Stop after this many labels (default: all).
        batch_size : int
            Labels a page (DVID serves at most 10 million).
        sizes : bool
            Pages are ``(n, 2)`` arrays of ``(label, voxels)`` instead of labels.

        Yields
        ------
        numpy.ndarray
            uint64 labels (or label, size rows) of one page, increasing; no empty pages.

        Raises
        ------
        MalformedAnswerError
            DVID marked an error mid-stream (four zero words) or cut the stream.
        """
        if int(start) < 0 or (number is not None and int(number) < 0):
            raise DvidInputError(f"start and number are non-negative, got start={start}, number={number}")
        if not 0 < int(batch_size) <= _LISTLABELS_MAX:
            raise DvidInputError(f"batch_size is 1 … {_LISTLABELS_MAX} (DVID's most), got {batch_size}")
        remaining = None if number is None else int(number)
        nxt = int(start)
        width = 2 if sizes else 1
        while remaining is None or remaining > 0:
            ask = batch_size if remaining is None else min(batch_size, remaining)
            params: dict[str, Any] = {"start": nxt, "number": ask}
            if sizes:
                params["sizes"] = "true"
            page = _checked_get(self, self.path("listlabels"), lambda body: _records(body, width, "listlabels"),
                                params=params)
            assert page is not None
            if len(page) and (page[:, 0] == 0).any():
                # label 0 is never indexed: four zero words are DVID's mid-stream error marker
                raise MalformedAnswerError(
                    "GET", self.path("listlabels"), 200,
                    "DVID signalled an error while streaming the labels (see its log); "
                    "try again or with a smaller batch_size",
                )
            if len(page):
                yield page if sizes else page[:, 0]
            if len(page) < ask:
                return
            nxt = int(page[-1, 0]) + 1
            if remaining is not None:
                remaining -= len(page)

    # ----------------------------------------------------------- mappings
    def mappings(self, *, progress: bool = False) -> Any:
        """The whole supervoxel → body mapping of this version (``GET /mappings?format=binary``).

        DVID lists only ids that do not map to themselves: merged supervoxels,
        and, mapped to 0, ids that are no supervoxel (any more): supervoxels
        retired by splits, and the new body ids made by cleaves and renumbering,
        which DVID reserves. Any other supervoxel is its own body (so a body's own
        id, when it is one of its supervoxels, is not listed).

        DVID's answer is bare 16-byte pairs with no count or end mark: an answer cut
        inside a pair is asked again, but one that a proxy ends cleanly on a pair
        boundary, or a 200 answer of 16·n bytes from something other than DVID,
        cannot be told from a whole mapping.

        Returns
        -------
        pandas.Series
            uint64 body ids named ``"body"``, indexed by uint64 supervoxel ids (index
            named ``"sv"``), sorted by supervoxel.

        Parameters
        ----------
        progress : bool
            Show the pairs received so far on stderr (DVID does not say how many
            will come).
        """
        pd = pandas("Labelmap.mappings()")
        path = self.path("mappings")

        def consume(pieces: Iterator[bytes]) -> np.ndarray:
            bar = TextProgress(None, "mappings received", enabled=progress)
            parts: list[bytes] = []
            received = 0
            try:
                for piece in pieces:
                    parts.append(piece)
                    received += len(piece)
                    bar.update(received // 16 - bar.done)
            finally:
                if progress:
                    bar.close()
            return _records(b"".join(parts), 2, "mappings")

        pairs = self.transport.stream("GET", path, consume, params={"format": "binary"})
        pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
        return pd.Series(pairs[:, 1], index=pd.Index(pairs[:, 0], name="sv"), name="body", dtype=np.uint64)

    def post_mappings(
        self,
        mapping: Any,
        *,
        mutid: int = 0,
        batch_size: int = 1_000_000,
        progress: bool = False,
    ) -> None:
        """Set supervoxel → body mappings directly (``POST /mappings``, DVID's ``MappingOps``).

        Meant for loading an agglomeration after ingesting supervoxels (or copying
        one, see :meth:`copy_mappings`): DVID records the mapping only, it does
        **not** update the label indices of the bodies (write those with
        :meth:`write_label_indices`).

        Parameters
        ----------
        mapping : pandas.Series or mapping of int to int
            Supervoxel → body.
        mutid : int
            Mutation id DVID logs with the mappings.
        batch_size : int
            Supervoxels a request (bodies are never split between requests, so a
            request can hold more).
        progress : bool
            Show a text progress bar on stderr.
        """
        if hasattr(mapping, "index") and hasattr(mapping, "to_numpy"):
            svs = np.asarray(mapping.index.to_numpy(), dtype=np.uint64)
            bodies = np.asarray(mapping.to_numpy(), dtype=np.uint64)
        else:
            items = dict(mapping)
            svs = np.asarray(_label_list(list(items)), dtype=np.uint64)
            bodies = np.asarray([int(items[k]) for k in items], dtype=np.uint64)
        if len(svs) != len(np.unique(svs)):
            raise DvidInputError("the mapping names some supervoxels more than once; give each one body")
        if len(svs) and (svs == 0).any():
            raise DvidInputError("supervoxel 0 is background and cannot be mapped")
        self.require_writable("posting mappings")
        order = np.argsort(bodies, kind="stable")
        svs, bodies = svs[order], bodies[order]
        cuts = np.flatnonzero(np.diff(bodies)) + 1
        starts = np.concatenate(([0], cuts)).astype(np.int64)
        stops = np.concatenate((cuts, [len(bodies)])).astype(np.int64)
        bar = TextProgress(len(svs), "supervoxels", enabled=progress)
        try:
            group: dict[int, np.ndarray] = {}
            count = 0
            for a, b in zip(starts.tolist(), stops.tolist()):
                if a == b:
                    continue
                group[int(bodies[a])] = svs[a:b]
                count += b - a
                if count >= batch_size:
                    self._send_mapping_ops(group, mutid)
                    bar.update(count)
                    group, count = {}, 0
            if group:
                self._send_mapping_ops(group, mutid)
                bar.update(count)
        finally:
            if progress:
                bar.close()

    def _send_mapping_ops(self, group: Mapping[int, np.ndarray], mutid: int) -> None:
        payload = encode_mapping_ops({body: svs.tolist() for body, svs in group.items()}, int(mutid))
        self.transport.request("POST", self.path("mappings"), data=payload, idempotent=True)

    def copy_mappings(
        self, dest: Any, *, mutid: int | None = None, batch_size: int = 1_000_000, progress: bool = False
    ) -> int:
        """Copy this version's whole mapping to another labelmap (another instance, node or server).

        ``GET /mappings`` here, ``POST /mappings`` there (see :meth:`post_mappings`
        for what that does and does not change).

        Parameters
        ----------
        dest : Labelmap
            Where to copy to.
        mutid : int, optional
            Mutation id DVID logs with the copied mappings; default the larger of
            the two repos' current mutation ids (as neuclease's ``copy_mappings``).
        batch_size, progress
            As in :meth:`post_mappings`.

        Returns
        -------
        int
            Number of supervoxel mappings copied.
        """
        mapping = self.mappings()
        if mutid is None:
            mutid = max(_repo_mutation_id(self), _repo_mutation_id(dest))
        dest.post_mappings(mapping, mutid=mutid, batch_size=batch_size, progress=progress)
        return len(mapping)

    # ----------------------------------------------------------- supervoxel splits
    def supervoxel_splits(self) -> Any:
        """Every supervoxel split up to this version (``GET /supervoxel-splits``).

        Each split retires supervoxel ``old`` and gives its voxels two new ids:
        ``split`` (the voxels split off) and ``remain`` (the rest). Splits of
        bodies (:meth:`split`) split the supervoxels they cut, so they appear here too.

        Returns
        -------
        pandas.DataFrame
            One row per split, sorted by ``mutid``, with columns ``uuid`` (str, the
            version it was done in), ``mutid`` (uint64), ``old``, ``remain`` and
            ``split`` (uint64 supervoxel ids).
        """
        pd = pandas("Labelmap.supervoxel_splits()")
        answer = self.transport.get_json(self.path("supervoxel-splits")) or []
        rows: list[tuple[str, int, int, int, int]] = []
        if len(answer) % 2:
            raise MalformedAnswerError("GET", self.path("supervoxel-splits"), 200, "not (uuid, splits) pairs")
        for uuid, splits in zip(answer[0::2], answer[1::2]):
            for mutid, old, remain, split in splits:
                rows.append((str(uuid), int(mutid), int(old), int(remain), int(split)))
        rows.sort(key=lambda r: r[1])
        frame = pd.DataFrame(
            {
                "uuid": pd.Series([r[0] for r in rows], dtype=object),
                "mutid": np.asarray([r[1] for r in rows], dtype=np.uint64),
                "old": np.asarray([r[2] for r in rows], dtype=np.uint64),
                "remain": np.asarray([r[3] for r in rows], dtype=np.uint64),
                "split": np.asarray([r[4] for r in rows], dtype=np.uint64),
            }
        )
        return frame

    def supervoxel_split_graph(self) -> dict[int, tuple[int, int]]:
        """The supervoxel splits as a graph: retired supervoxel → ``(remain, split)`` ids.

        Follow it (see :meth:`supervoxel_fragments`) to find what a retired id
        became; ids that are not keys are current supervoxels.
        """
        frame = self.supervoxel_splits()
        return {
            int(old): (int(remain), int(split))
            for old, remain, split in zip(frame["old"], frame["remain"], frame["split"])
        }

    def supervoxel_fragments(self, supervoxel: int, graph: Mapping[int, tuple[int, int]] | None = None) -> np.ndarray:
        """The current supervoxels a (possibly retired) supervoxel's voxels now carry.

        Parameters
        ----------
        supervoxel : int
            Any supervoxel id, retired or current.
        graph : mapping, optional
            :meth:`supervoxel_split_graph`'s answer, to save fetching it again.

        Returns
        -------
        numpy.ndarray
            Sorted uint64 ids: ``[supervoxel]`` itself if it was never split.
        """
        edges = self.supervoxel_split_graph() if graph is None else graph
        leaves: list[int] = []
        todo = [_label_id(supervoxel)]
        while todo:
            sv = todo.pop()
            if sv in edges:
                todo.extend(edges[sv])
            else:
                leaves.append(sv)
        return np.asarray(sorted(leaves), dtype=np.uint64)


def _checked_get(
    instance: Any,
    path: str,
    parse: Callable[[bytes], T],
    *,
    params: Mapping[str, Any] | None = None,
    data: bytes | None = None,
    missing: bool = False,
) -> T | None:
    """GET ``path`` and ``parse`` its body inside the attempt.

    ``parse`` raises :class:`MalformedAnswerError` for a body that does not hold
    whole records or messages (a cut stream): the transport then asks again, as for a
    broken connection. With ``missing=True`` a 404 answers ``None``.
    """

    def consume(pieces: Iterator[bytes], head: Any) -> T | None:
        body = b"".join(pieces)
        if head.status_code == 404:
            return None
        return parse(body)

    return cast(
        "T | None",
        instance.transport.stream(
            "GET", path, consume, with_head=True, params=params, data=data, allow_status=(404,) if missing else (),
        ),
    )


def _repo_mutation_id(instance: Any) -> int:
    info = instance.transport.get_json(f"/api/repo/{instance.node.uuid}/info")
    return int(info.get("MutationID") or 0)


def _plain_indices(body: bytes, labels: list[int], path: str) -> list[LabelIndex | None]:
    """A ``LabelIndices`` answer: one message per asked label, empty for labels without an index."""
    try:
        found = decode_label_indices(body)
    except DvidError as exc:
        raise MalformedAnswerError("GET", path, 200, str(exc)) from None
    if len(found) != len(labels):
        raise MalformedAnswerError("GET", path, 200, f"{len(found)} label indices for {len(labels)} labels")
    out: list[LabelIndex | None] = []
    for label, index in zip(labels, found):
        if index.blocks and index.label not in (0, label):
            raise MalformedAnswerError("GET", path, 200, f"the index of label {index.label} in the place of {label}")
        if index.blocks:
            index.label = label
        out.append(index if index.blocks else None)
    return out


_RECORD_HEAD = struct.Struct("<QQ")  # stored size, label


def _compressed_indices(body: bytes, labels: list[int], path: str) -> list[LabelIndex | None]:
    """An ``/indices-compressed`` answer: per label ``u64 size, u64 label, size bytes`` of DVID's stored value."""
    view = memoryview(body)
    pos = 0
    out: list[LabelIndex | None] = []
    for label in labels:
        if pos + 16 > len(view):
            raise MalformedAnswerError("GET", path, 200, f"{len(out)} of {len(labels)} label index records")
        size, got = _RECORD_HEAD.unpack_from(view, pos)
        pos += 16
        if size == 0 and got == 0:
            raise MalformedAnswerError(
                "GET", path, 200, "DVID signalled an error while streaming the label indices (see its log)"
            )
        if got != label:
            raise MalformedAnswerError("GET", path, 200, f"the record of label {got} in the place of {label}")
        if size == 0:
            out.append(None)
            continue
        if pos + size > len(view):
            raise MalformedAnswerError("GET", path, 200, f"the record of label {label} is cut")
        index = _decoded_index(_unwrap_stored(view[pos : pos + size], path), label, path)
        pos += size
        out.append(index if index.blocks else None)
    if pos != len(view):
        raise MalformedAnswerError("GET", path, 200, f"{len(view) - pos} bytes after the last label index record")
    return out


def _unwrap_stored(value: memoryview, path: str) -> bytes:
    """The payload of a value in DVID's storage envelope: format byte, optional CRC32, payload.

    Format byte: bits 7-5 the compression (0 none, 4 LZ4 with a uint32 size prefix),
    bits 4-3 the checksum (1: a CRC32 follows the format byte).
    """
    if not len(value):
        raise MalformedAnswerError("GET", path, 200, "an empty stored label index")
    fmt = value[0]
    compression, checksum = fmt >> 5, (fmt >> 3) & 3
    payload = value[1:]
    if checksum == 1:
        if len(payload) < 4:
            raise MalformedAnswerError("GET", path, 200, "a stored label index shorter than its checksum")
        crc = struct.unpack_from("<I", payload)[0]
        payload = payload[4:]
        if zlib.crc32(payload) != crc and zlib.crc32(bytes(payload)) != crc:
            raise MalformedAnswerError("GET", path, 200, "a stored label index fails its CRC32 check")
    elif checksum:
        raise MalformedAnswerError("GET", path, 200, f"unknown checksum kind {checksum} in a stored label index")
    if compression == 0:
        return bytes(payload)
    if compression != 4:
        raise MalformedAnswerError(
            "GET", path, 200,
            f"a stored label index compressed with DVID's kind {compression} (only none and LZ4 are read); "
            "use compressed=False",
        )
    if len(payload) < 4:
        raise MalformedAnswerError("GET", path, 200, "an LZ4 label index shorter than its size prefix")
    size = struct.unpack_from("<I", payload)[0]
    if size == 0:  # DVID's legacy form: stored uncompressed after a zero size
        return bytes(payload[4:])
    try:
        raw = lz4.block.decompress(payload[4:], uncompressed_size=size)
    except lz4.block.LZ4BlockError as exc:
        raise MalformedAnswerError("GET", path, 200, f"an undecodable LZ4 label index ({exc})") from None
    if len(raw) != size:
        raise MalformedAnswerError("GET", path, 200, "an LZ4 label index of the wrong size")
    return bytes(raw)


def _records(body: bytes, width: int, what: str) -> np.ndarray:
    """A body of little-endian uint64 records of ``width`` words, as an ``(n, width)`` array."""
    if len(body) % (8 * width):
        raise MalformedAnswerError("GET", what, 200, f"{len(body)} bytes, not whole {8 * width}-byte records")
    return np.frombuffer(body, dtype="<u8").astype(np.uint64).reshape(-1, width)


def _decoded_index(content: bytes, label: int, path: str) -> LabelIndex:
    try:
        index = decode_label_index(content)
    except DvidError as exc:
        raise MalformedAnswerError("GET", path, 200, str(exc)) from None
    if index.label == 0:
        index.label = label  # older indices were stored without their label
    return index


def _reserve_labels(instance: Any, count: int) -> range:
    if int(count) < 1:
        raise DvidInputError(f"count must be at least 1, got {count}")
    instance.require_writable("reserving labels")
    # Not safe to repeat (each answer reserves labels): sent again only after a 503 or 429.
    path = instance.path("nextlabel", str(int(count)))
    answer = instance.transport.send_once(lambda: instance.transport.post_json(path))
    return range(int(answer["start"]), int(answer["end"]) + 1)


def _sparsevol_size(info: Mapping[str, Any], voxels: int) -> SparsevolSize:
    lo, hi = info["minvoxel"], info["maxvoxel"]
    box = (int(lo[2]), int(lo[1]), int(lo[0])), (int(hi[2]) + 1, int(hi[1]) + 1, int(hi[0]) + 1)
    return SparsevolSize(voxels, int(info["numblocks"]), box)
