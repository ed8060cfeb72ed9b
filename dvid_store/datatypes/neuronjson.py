"""Body annotations as JSON documents keyed by body id (DVID's ``neuronjson`` type).

Each annotation is a JSON object stored under a body id (an integer from 1 to
2**64-1). Writing one *updates* the fields sent and keeps the others (``replace=True``
replaces the whole object). DVID adds, for every field a write changes,
``<field>_user`` (the writer's ``u=``) and ``<field>_time`` (RFC 3339, seconds);
reads leave them out unless asked with ``show="user"``, ``"time"`` or ``"all"``.

| neuclease | dvid_store (``ann = node.neuronjson(name)``) |
| --- | --- |
| ``fetch_key(..., as_json=True)`` on a neuronjson instance | ``ann.get()`` |
| ``fetch_keyvalues(..., as_json=True)`` | ``ann.get_many()`` |
| ``post_key(..., json=...)`` / ``post_keyvalues`` | ``ann.put()`` / ``ann.put_many()`` |
| ``delete_key`` | ``ann.delete()`` |
| ``fetch_keys`` | ``ann.keys()`` |
| ``neuronjson.fetch_all`` (``format='json'`` / ``'pandas'``) | ``ann.all()`` / ``ann.to_frame()`` |
| ``neuronjson.fetch_query`` | ``ann.query()`` / ``ann.query_frame()`` |
| ``fetch_body_annotations`` | ``ann.to_frame()`` (all) or ``ann.get_many()`` (some bodies) |
| ``post_statuses`` | ``ann.put_many({body: {"status": s} for body, s in statuses.items()})`` |
| ``fetch_json_schema`` / ``post_json_schema`` | ``ann.schema()`` / ``ann.put_schema(schema)`` |
| ``fetch_schema`` / ``fetch_schema_batch`` | ``ann.schema("schema")`` / ``ann.schema("schema_batch")`` |

Queries
-------
:meth:`Neuronjson.query` sends DVID's query language: a JSON object whose fields
must all match (a list of objects matches any of them). A value matches a field
equal to it or, for list fields, holding it; a list of values matches any of them;
``"re/<regex>"`` matches strings by a regular expression anchored at the start;
``"exists/1"`` / ``"exists/0"`` ask that a field be set (not null) or not.

What the v1.0.0 server does (checked against it by the tests)
--------------------------------------------------------------
* Keys are body ids: any other key is refused by DVID (``strconv.ParseUint``), and
  0 is reserved. The client refuses them, and non-integers, before sending.
* ``GET /all`` lists only annotations that have a ``bodyid`` field and one field
  more; an annotation written without ``bodyid`` is invisible there, so
  :meth:`Neuronjson.put` always writes ``bodyid`` (and refuses a different one).
  A ``replace=True`` write then makes DVID add ``bodyid_user`` / ``bodyid_time``,
  which reads leave out.
* Only the newest version of the ``master`` branch is served from memory; there
  ``/all`` comes in no particular order. At other versions ``/query`` ignores
  ``fields=``, ``/fields`` fails, and ``/all`` and ``/query`` come in the order of
  the keys as strings (``"10"`` before ``"9"``). The client selects fields, lists
  fields and sorts by body itself, so reads answer the same at every version.
  With ``show`` and ``fields`` together DVID drops the ``_user`` / ``_time`` fields
  asked for; such reads select fields client-side.
* ``/query?onlyid=true`` is ignored (whole annotations come back);
  :meth:`Neuronjson.query_ids` reads the ids from them.
* ``POST /key`` takes ``conditionals=`` (the help text says ``conditional``).
* With a ``json_schema`` stored, writes are validated against it, and a string
  where the schema wants an integer is converted when it holds digits.
* Integers are kept exactly as fields from -2**63 to 2**64-1 and as items of a
  field's list from -2**63 to 2**63-1; elsewhere DVID keeps numbers as 64-bit floats
  and writes them back in the fewest digits, so an integer beyond 2**53 there comes
  back different (2**55 as 36028797018963970). Writes holding an integer DVID would
  change are refused before sending.
* Deleting a missing annotation succeeds silently. At the version kept in memory
  a deleted body stays in ``/keys`` (:meth:`Neuronjson.keys` checks them), and
  ``/query`` answers ``{}`` for it when the query asks for an unset field (left out).
* ``DELETE /json_schema`` leaves the compiled schema validating writes at the
  version kept in memory; :meth:`Neuronjson.delete_schema` stores an empty schema
  (which accepts everything) first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from ..errors import BadRequestError, DvidInputError, MalformedAnswerError, NotFoundError
from . import _protobuf
from ._frames import pandas
from .base import Instance

__all__ = ["Neuronjson"]

#: ``show=`` values DVID knows.
SHOW = (None, "user", "time", "all")
#: Schema documents an instance keeps besides the annotations.
SCHEMAS = ("json_schema", "schema", "schema_batch")
#: Fields DVID adds itself to ``bodyid`` on replacing writes; never shown.
_BODYID_STAMPS = ("bodyid_user", "bodyid_time")
_STAMPS = ("_user", "_time")
#: Integers up to this size are exact in float64.
_FLOAT_INTS = 2**53
_INT64 = (-(2**63), 2**63 - 1)
_UINT64_MAX = 2**64 - 1


class Neuronjson(Instance):
    """Body annotations as JSON documents keyed by body id (DVID's ``neuronjson`` type).

    Also usable like a small dict of body id → annotation: ``ann[body]`` (raises
    ``KeyError`` when missing), ``ann[body] = {...}`` (an update, as :meth:`put`),
    ``del ann[body]``, ``body in ann`` and ``for body in ann``.

    Parameters
    ----------
    node : Node
        The version to read from and write to.
    name : str
        The instance name.
    """

    typenames = ("neuronjson",)
    default_typename = "neuronjson"

    #: Bodies per ``GET /keyvalues`` request in :meth:`get_many`.
    GET_BATCH_KEYS: ClassVar[int] = 10_000
    #: Annotations per ``POST /keyvalues`` request in :meth:`put_many`.
    PUT_BATCH_KEYS: ClassVar[int] = 10_000

    # ------------------------------------------------------------ one body
    def get(self, body: int, *, show: str | None = None, fields: Iterable[str] | None = None) -> dict[str, Any]:
        """The annotation of ``body`` (``GET /key/<body>``).

        Parameters
        ----------
        body : int
            The body id.
        show : {None, "user", "time", "all"}
            Also return the ``<field>_user`` and/or ``<field>_time`` fields DVID keeps.
        fields : iterable of str, optional
            Only these fields (and ``bodyid``).

        Raises
        ------
        NotFoundError
            ``body`` has no annotation at this version.
        """
        key = _body_key(body)
        params, wanted = _read_params(show, fields)
        try:
            answer = self.transport.request_json("GET", self.path("key", key), params=params)
        except NotFoundError as exc:
            raise NotFoundError(
                exc.method, exc.url, exc.status,
                f"body {key} has no annotation in {self.name!r} at node {self.node.uuid[:8]}",
            ) from None
        return _select(_object(answer, key), wanted, show)

    def exists(self, body: int) -> bool:
        """Whether ``body`` has an annotation (one ``HEAD`` request)."""
        response = self.transport.request("HEAD", self.path("key", _body_key(body)), allow_status=(404,))
        return response.status_code == 200

    def put(
        self,
        body: int,
        annotation: Mapping[str, Any],
        *,
        replace: bool = False,
        conditional: Iterable[str] = (),
    ) -> None:
        """Write the annotation of ``body`` (``POST /key/<body>``).

        Parameters
        ----------
        body : int
            The body id.
        annotation : mapping of str to JSON values
            The fields to set. ``bodyid`` is added (it must equal ``body`` if given).
            numpy scalars and arrays are written as numbers and lists; NaN and
            infinities are refused (JSON has none).
        replace : bool
            Replace the whole annotation (fields not given are removed); default:
            update the fields given and keep the others.
        conditional : iterable of str
            Fields not to overwrite when they already hold a value.

        Raises
        ------
        DvidInputError
            A bad body id, an annotation that is not a JSON object, or a
            ``bodyid`` field that is not ``body``. Nothing is sent.
        LockedNodeError
            The node is committed.
        BadRequestError
            DVID refused the annotation, e.g. it does not satisfy the instance's
            ``json_schema`` (the message says so).
        """
        key = _body_key(body)
        payload = _encode(key, annotation)
        params = _write_params(replace, conditional)
        self.require_writable(f"annotating body {key}")
        try:
            self.transport.request(
                "POST", self.path("key", key), params=params, data=payload, idempotent=True, expect_empty=True
            )
        except BadRequestError as exc:
            raise _schema_refusal(exc, f"the annotation of body {key}") from None

    def delete(self, body: int) -> None:
        """Delete the annotation of ``body``; deleting a missing one is not an error."""
        key = _body_key(body)
        self.require_writable(f"deleting the annotation of body {key}")
        self.transport.request("DELETE", self.path("key", key), expect_empty=True)

    # -------------------------------------------------------------- batches
    def get_many(
        self, bodies: Iterable[int], *, show: str | None = None, fields: Iterable[str] | None = None
    ) -> dict[int, dict[str, Any]]:
        """Annotations of many bodies with few requests (``GET /keyvalues?json=true``).

        Parameters as in :meth:`get`.

        Returns
        -------
        dict of int to dict
            The bodies that have annotations, in the order asked (duplicates once).
        """
        keys = list(dict.fromkeys(_body_key(b) for b in _iter_bodies(bodies)))
        params, wanted = _read_params(show, fields)
        params["json"] = "true"
        found: dict[str, Any] = {}
        for i in range(0, len(keys), self.GET_BATCH_KEYS):
            batch = keys[i : i + self.GET_BATCH_KEYS]
            answer = self.transport.request_json(
                "GET", self.path("keyvalues"), params=params, data=json.dumps([int(k) for k in batch]).encode()
            )
            if not isinstance(answer, dict):
                raise MalformedAnswerError("GET", "", 200, f"keyvalues answered {type(answer).__name__}, not an object")
            found.update(answer)
        return {int(k): _select(_object(found[k], k), wanted, show) for k in keys if k in found}

    def put_many(
        self,
        annotations: Mapping[int, Mapping[str, Any]] | Any,
        *,
        replace: bool = False,
        conditional: Iterable[str] = (),
    ) -> None:
        """Write many annotations with few requests (``POST /keyvalues``), each as :meth:`put`.

        Every annotation is checked before the first byte is sent. DVID writes the
        annotations of one request in order and stops at the first refusal, so a
        failed call may have written some of them.

        Parameters
        ----------
        annotations : mapping of int to mapping, or pandas.DataFrame
            Body id → fields to set; or a DataFrame indexed by body id, one column
            per field (missing values — None, NaN — are not written).
        replace, conditional
            As in :meth:`put`, for every annotation.
        """
        items = _annotation_items(annotations)
        encoded = [(key, _encode(key, fields)) for key, fields in items]
        if not encoded:
            return
        params = _write_params(replace, conditional)
        self.require_writable(f"annotating {len(encoded)} bodies")
        for i in range(0, len(encoded), self.PUT_BATCH_KEYS):
            batch = encoded[i : i + self.PUT_BATCH_KEYS]
            try:
                self.transport.request(
                    "POST", self.path("keyvalues"), params=params, data=_protobuf.encode_key_values(batch),
                    idempotent=True, expect_empty=True,
                )
            except BadRequestError as exc:
                raise _schema_refusal(exc, f"one of the annotations of bodies {batch[0][0]} … {batch[-1][0]}") from None

    # ------------------------------------------------------------ listings
    def keys(self) -> np.ndarray:
        """Every annotated body id, sorted (uint64).

        DVID's ``/keys`` still lists deleted bodies at the version it keeps in
        memory, so the listed ids are checked with ``GET /keyvalues`` (asking for
        ``bodyid`` alone: a few bytes per body).
        """
        answer = self.transport.get_json(self.path("keys")) or []
        listed = sorted({int(k) for k in answer if str(k).isdigit()})
        present = self.get_many(listed, fields=["bodyid"])
        return np.array([b for b in listed if b in present], dtype=np.uint64)

    def fields(self) -> list[str]:
        """Every field name in the annotations, sorted (``GET /fields``).

        Includes the ``_user`` / ``_time`` fields. At the version DVID keeps in
        memory the list is DVID's, which keeps every field written since the server
        loaded the instance (also of annotations deleted or replaced since). Other
        versions cannot answer ``/fields``; there the annotations are read instead.
        """
        try:
            answer = self.transport.get_json(self.path("fields"))
        except BadRequestError as exc:
            if "in-memory" not in exc.message:
                raise
            names: set[str] = set()
            for record in self.all(show="all"):
                names.update(record)
            names.add("bodyid")
            return sorted(names - set(_BODYID_STAMPS))
        return sorted(set(answer or ()) - set(_BODYID_STAMPS))

    def all(self, *, show: str | None = None, fields: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Every annotation, sorted by body (``GET /all``).

        With ``fields``, only annotations holding at least one of them. Annotations
        holding nothing but ``bodyid``, or written without ``bodyid`` by other
        clients, are not listed (read them with :meth:`get`).
        """
        params, wanted = _read_params(show, fields)
        answer = self.transport.get_json(self.path("all"), params=params) or []
        return _sorted_records(answer, wanted, show, drop_bare=wanted is not None)

    def to_frame(self, *, show: str | None = None, fields: Iterable[str] | None = None) -> Any:
        """Every annotation as a DataFrame (:meth:`all` in a table).

        Returns
        -------
        pandas.DataFrame
            Index ``body`` (uint64), one column per field (``bodyid`` is the index):
            the ``fields`` asked for in that order (each followed by its ``_user`` /
            ``_time`` columns when shown), else every field sorted by name. Column
            dtypes are what pandas infers from the JSON values (``str`` for strings,
            ``int64`` / ``float64`` for numbers, ``object`` for lists, mixed values
            and fields some annotations lack are ``NaN`` / ``None``), except that a
            column pandas would make ``float64`` stays ``object`` (exact values,
            ``None`` where missing) when it holds an integer beyond 2**53, which
            float64 would round.
        """
        pd = pandas("Neuronjson.to_frame()")
        return _frame(pd, self.all(show=show, fields=fields), fields, show)

    def query(
        self,
        where: Mapping[str, Any] | Iterable[Mapping[str, Any]],
        *,
        show: str | None = None,
        fields: Iterable[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Annotations matching a query in DVID's query language (``POST /query``), sorted by body.

        Parameters
        ----------
        where : mapping, or iterable of mappings
            ``{"field": value, ...}``: every field must match (see the module notes
            for values). Several mappings: annotations matching any of them.
        show, fields
            As in :meth:`get`.

        Raises
        ------
        DvidInputError
            ``where`` is empty or not JSON objects.
        BadRequestError
            DVID could not parse the query.
        """
        body = _query_body(where)
        params, wanted = _read_params(show, fields)
        answer = self.transport.request_json(
            "POST", self.path("query"), params=params, data=body, idempotent=True
        )
        return _sorted_records(answer or [], wanted, show)

    def query_frame(
        self,
        where: Mapping[str, Any] | Iterable[Mapping[str, Any]],
        *,
        show: str | None = None,
        fields: Iterable[str] | None = None,
    ) -> Any:
        """:meth:`query` as a DataFrame, laid out as in :meth:`to_frame`."""
        pd = pandas("Neuronjson.query_frame()")
        return _frame(pd, self.query(where, show=show, fields=fields), fields, show)

    def query_ids(self, where: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> np.ndarray:
        """The body ids matching a query (as in :meth:`query`), sorted uint64."""
        records = self.query(where, fields=["bodyid"])
        return np.array(sorted(int(r["bodyid"]) for r in records if "bodyid" in r), dtype=np.uint64)

    # -------------------------------------------------------------- schemas
    def schema(self, kind: str = "json_schema") -> Any:
        """A schema document of the instance, or None if none is stored.

        Parameters
        ----------
        kind : {"json_schema", "schema", "schema_batch"}
            ``json_schema``: the JSON Schema DVID validates writes against;
            ``schema`` and ``schema_batch``: the documents NeuTu and Neu3 read.
        """
        kind = _schema_kind(kind)
        try:
            return self.transport.request_json("GET", self.path(kind))
        except NotFoundError:
            return None

    def put_schema(self, schema: Mapping[str, Any], kind: str = "json_schema") -> None:
        """Store a schema document; a ``json_schema`` validates every later write at this version."""
        kind = _schema_kind(kind)
        if not isinstance(schema, Mapping):
            raise DvidInputError(f"a {kind} is a JSON object (a mapping), got {type(schema).__name__}")
        payload = _dumps(schema, f"the {kind}")
        self.require_writable(f"storing the {kind}")
        self.transport.request("POST", self.path(kind), data=payload, idempotent=True, expect_empty=True)

    def delete_schema(self, kind: str = "json_schema") -> None:
        """Delete a schema document (deleting a missing one is not an error)."""
        kind = _schema_kind(kind)
        self.require_writable(f"deleting the {kind}")
        if kind == "json_schema":
            # DVID v1.0.0 keeps validating against a deleted json_schema (its compiled copy
            # stays in memory); an empty schema, which accepts everything, replaces it first.
            self.transport.request("POST", self.path(kind), data=b"{}", idempotent=True, expect_empty=True)
        self.transport.request("DELETE", self.path(kind), expect_empty=True)

    # -------------------------------------------------------- dict-like
    def __getitem__(self, body: int) -> dict[str, Any]:
        try:
            return self.get(body)
        except NotFoundError:
            raise KeyError(body) from None

    def __setitem__(self, body: int, annotation: Mapping[str, Any]) -> None:
        self.put(body, annotation)

    def __delitem__(self, body: int) -> None:
        self.delete(body)

    def __contains__(self, body: object) -> bool:
        if not _is_int(body) or not 0 < int(body) < 2**64:  # type: ignore[call-overload]
            return False
        return self.exists(int(body))  # type: ignore[call-overload]

    def __iter__(self) -> Iterator[int]:
        return (int(k) for k in self.keys())


# ------------------------------------------------------------------ helpers
def _body_key(body: Any) -> str:
    if isinstance(body, (bool, np.bool_)) or not isinstance(body, (int, np.integer)):
        hint = " (pass int(key) for a key held as a string)" if isinstance(body, str) else ""
        raise DvidInputError(
            f"neuronjson keys are body ids, integers from 1 to 2**64-1; got {body!r}{hint}"
        )
    value = int(body)
    if not 0 < value < 2**64:
        raise DvidInputError(f"neuronjson keys are body ids from 1 to 2**64-1 (0 is reserved); got {body!r}")
    return str(value)


def _iter_bodies(bodies: Iterable[int] | Any) -> Iterator[Any]:
    if isinstance(bodies, np.ndarray):
        if bodies.dtype.kind not in "iu":
            raise DvidInputError(f"body ids are integers, got an array of {bodies.dtype}")
        return iter(bodies.ravel().tolist())  # Python ints: ids above 2**63 stay exact
    if isinstance(bodies, (int, np.integer, str)):
        return iter([bodies])
    return iter(bodies)


def _read_params(show: str | None, fields: Iterable[str] | None) -> tuple[dict[str, Any], list[str] | None]:
    if show not in SHOW:
        raise DvidInputError(f"show is one of {', '.join(repr(s) for s in SHOW)}; got {show!r}")
    params: dict[str, Any] = {}
    if show:
        params["show"] = show
    if fields is None:
        return params, None
    wanted = [fields] if isinstance(fields, str) else list(fields)
    bad = [f for f in wanted if not isinstance(f, str) or not f or "," in f]
    if bad:
        raise DvidInputError(f"fields are non-empty field names without commas; got {bad!r}")
    if not show:  # with show=, DVID drops the stamps of the fields asked for: select them here
        params["fields"] = ",".join(wanted)
    return params, wanted


def _select(record: dict[str, Any], wanted: list[str] | None, show: str | None) -> dict[str, Any]:
    """One annotation as asked: ``bodyid``, the fields wanted, their stamps if shown."""
    out = {k: v for k, v in record.items() if k not in _BODYID_STAMPS}
    if not show or show == "user":
        out = {k: v for k, v in out.items() if not k.endswith("_time")}
    if not show or show == "time":
        out = {k: v for k, v in out.items() if not k.endswith("_user")}
    if wanted is None:
        return out
    keep = {"bodyid", *wanted, *(f + s for f in wanted for s in _STAMPS)}
    return {k: v for k, v in out.items() if k in keep}


def _object(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        problem = f"the annotation of body {key} is {type(value).__name__}, not an object"
        raise MalformedAnswerError("GET", "", 200, problem)
    return value


def _sorted_records(
    answer: Any, wanted: list[str] | None, show: str | None, *, drop_bare: bool = False
) -> list[dict[str, Any]]:
    if not isinstance(answer, list) or not all(isinstance(r, dict) for r in answer):
        raise MalformedAnswerError("GET", "", 200, "neuronjson answered something other than a list of objects")
    # Records without a bodyid cannot be placed: DVID's in-memory /query answers {} for
    # bodies deleted since it loaded them, and clients other than this one may omit bodyid.
    records = [_select(r, wanted, show) for r in answer if _is_id(r.get("bodyid"))]
    if drop_bare:  # as DVID's /all does itself when it selects the fields: only annotations holding one
        records = [r for r in records if any(k != "bodyid" for k in r)]
    return sorted(records, key=lambda r: int(r["bodyid"]))


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _dumps(value: Any, what: str) -> bytes:
    try:
        return json.dumps(value, default=_jsonable, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise DvidInputError(f"{what} is not JSON: {exc}") from None


def _encode(key: str, annotation: Any) -> bytes:
    if not isinstance(annotation, Mapping):
        raise DvidInputError(
            f"the annotation of body {key} is a JSON object (a mapping of field names), got {type(annotation).__name__}"
        )
    fields = dict(annotation)
    bad = [k for k in fields if not isinstance(k, str) or not k]
    if bad:
        raise DvidInputError(f"field names of the annotation of body {key} are non-empty strings; got {bad!r}")
    given = fields.get("bodyid")
    if given is not None and (not _is_int(given) or int(given) != int(key)):
        raise DvidInputError(f"the annotation of body {key} has bodyid {given!r}; it must be {key} or left out")
    fields["bodyid"] = int(key)  # DVID's /all lists only annotations with a bodyid
    rounded = next(_rounded_ints(fields), None)
    if rounded is not None:
        where, value = rounded
        raise DvidInputError(
            f"the annotation of body {key} holds the integer {value} at {where}, which DVID v1.0.0 would read "
            "back changed: it keeps a field's integers exactly from -2**63 to 2**64-1, the items of a field's "
            "list from -2**63 to 2**63-1, and deeper numbers as 64-bit floats (integers exact up to 2**53). "
            "Store it as a string"
        )
    return _dumps(fields, f"the annotation of body {key}")


def _rounded_ints(fields: Mapping[str, Any]) -> Iterator[tuple[str, int]]:
    """Integers DVID v1.0.0 would read back changed (see the module notes), with where they are."""
    for name, value in fields.items():
        if _is_int(value):
            if not _INT64[0] <= int(value) <= _UINT64_MAX:
                yield name, int(value)
        elif isinstance(value, (list, tuple, np.ndarray)):
            for i, item in enumerate(value):
                if _is_int(item):
                    if not _INT64[0] <= int(item) <= _INT64[1]:
                        yield f"{name}[{i}]", int(item)
                else:
                    yield from _deep_ints(item, f"{name}[{i}]")
        else:
            yield from _deep_ints(value, name)


def _deep_ints(value: Any, at: str) -> Iterator[tuple[str, int]]:
    if _is_int(value) and abs(int(value)) > _FLOAT_INTS:
        yield at, int(value)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _deep_ints(v, f"{at}.{k}")
    elif isinstance(value, (list, tuple, np.ndarray)):
        for i, v in enumerate(value):
            yield from _deep_ints(v, f"{at}[{i}]")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _write_params(replace: bool, conditional: Iterable[str]) -> dict[str, Any]:
    names = [conditional] if isinstance(conditional, str) else list(conditional)
    bad = [f for f in names if not isinstance(f, str) or not f or "," in f]
    if bad:
        raise DvidInputError(f"conditional fields are non-empty field names without commas; got {bad!r}")
    params: dict[str, Any] = {}
    if replace:
        params["replace"] = "true"
    if names:
        params["conditionals"] = ",".join(names)  # DVID reads this name, not the help text's "conditional"
    return params


def _annotation_items(annotations: Any) -> list[tuple[str, Mapping[str, Any]]]:
    if isinstance(annotations, Mapping):
        return [(_body_key(body), fields) for body, fields in annotations.items()]
    to_dict = getattr(annotations, "to_dict", None)
    index = getattr(annotations, "index", None)
    if to_dict is None or index is None or not hasattr(annotations, "columns"):
        raise DvidInputError(
            "annotations are a mapping of body id to fields, or a DataFrame indexed by body id; "
            f"got {type(annotations).__name__}"
        )
    rows = to_dict(orient="index")
    return [
        (_body_key(body), {k: v for k, v in fields.items() if not _missing(v)}) for body, fields in rows.items()
    ]


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return isinstance(value, (float, np.floating)) and math.isnan(value)
    except TypeError:
        return False


def _query_body(where: Any) -> bytes:
    queries = [where] if isinstance(where, Mapping) else list(where) if not isinstance(where, (str, bytes)) else None
    if not queries or not all(isinstance(q, Mapping) and q for q in queries):
        raise DvidInputError(
            "a query is a non-empty mapping of field → value, or a list of them (any may match); "
            f"got {where!r}"
        )
    payload = [dict(q) for q in queries]
    return _dumps(payload[0] if len(payload) == 1 else payload, "the query")


def _schema_kind(kind: str) -> str:
    if kind not in SCHEMAS:
        raise DvidInputError(f"schema kinds are {', '.join(SCHEMAS)}; got {kind!r}")
    return kind


def _schema_refusal(exc: BadRequestError, what: str) -> BadRequestError:
    text = exc.message
    if "jsonschema" in text or "ParseInt" in text:
        return BadRequestError(
            exc.method, exc.url, exc.status,
            f"{what} does not satisfy the instance's json_schema (see Neuronjson.schema()); DVID said: {text}",
        )
    return exc


def _frame(pd: Any, records: list[dict[str, Any]], fields: Iterable[str] | None, show: str | None) -> Any:
    placed = [r for r in records if _is_id(r.get("bodyid"))]
    index = pd.Index(np.array([int(r["bodyid"]) for r in placed], dtype=np.uint64), name="body")
    rows = [{k: v for k, v in r.items() if k != "bodyid"} for r in placed]
    if fields is not None:
        wanted = [fields] if isinstance(fields, str) else list(fields)
        columns = []
        for name in wanted:
            if name == "bodyid":
                continue
            columns.append(name)
            if show in ("user", "all"):
                columns.append(name + "_user")
            if show in ("time", "all"):
                columns.append(name + "_time")
    else:
        columns = sorted({k for r in rows for k in r})
    if not rows:
        return pd.DataFrame(index=index, columns=columns)
    frame = pd.DataFrame.from_records(rows, index=index, columns=columns)
    for name in columns:
        values = [r.get(name) for r in rows]
        rounded = any(v is not None and _is_int(v) and abs(int(v)) > _FLOAT_INTS for v in values)
        if rounded and frame[name].dtype.kind == "f":
            # float64 (pandas' choice for numbers with gaps or fractions) would round these
            exact = np.empty(len(values), dtype=object)
            exact[:] = values
            frame[name] = exact
    return frame
