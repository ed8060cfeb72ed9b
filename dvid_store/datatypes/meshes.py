"""Body meshes and skeletons kept in keyvalue instances, as DVID's clients store them.

Conventions
-----------
Tools around DVID (NeuTu, neuclease, neuroglancer's DVID data source) keep one
file per body in two keyvalue instances named after the labelmap ``<seg>``:

| What | Instance | Key | Value |
| --- | --- | --- | --- |
| skeleton | ``<seg>_skeletons`` | ``<body>_swc`` | SWC text |
| mesh | ``<seg>_meshes`` | ``<body>.ngmesh`` | neuroglancer's legacy single-resolution mesh |

Every function taking ``seg`` also accepts the :class:`KeyValue` instance itself,
for stores that do not follow the naming.

Formats
-------
SWC
    Text, one node per line: ``rowId type x y z radius link`` separated by spaces
    or tabs; ``link`` is the parent's ``rowId``, ``-1`` for a root; lines starting
    with ``#`` are comments. :func:`swc_to_frame` and :func:`frame_to_swc` convert
    to and from a DataFrame with the columns

    | column | dtype | meaning |
    | --- | --- | --- |
    | ``rowId`` | int64 | node id (unique, positive) |
    | ``type`` | int32 | SWC structure type (0 undefined, 1 soma, 2 axon, 3 dendrite, ...) |
    | ``x``, ``y``, ``z`` | float64 | position, in SWC's x, y, z order and whatever unit was written |
    | ``radius`` | float64 | node radius |
    | ``link`` | int64 | the parent's ``rowId``, ``-1`` for a root |

    The comment lines are kept in ``frame.attrs["comments"]`` (without the ``#``)
    and written back by :func:`frame_to_swc`.
ngmesh
    Little-endian binary: ``uint32`` vertex count ``N``, ``N × 3`` ``float32``
    vertex positions (x, y, z), then ``uint32`` vertex indices, three per
    triangle, to the end. :func:`decode_ngmesh` gives ``(vertices, faces)``:
    ``float32 (N, 3)`` and ``uint32 (M, 3)``.

DataFrames need pandas (the ``dataframes`` extra); the mesh functions need only numpy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DvidInputError
from ..names import check_instance_name
from ._frames import pandas
from .keyvalue import KeyValue
from .label_volume import _label_id

if TYPE_CHECKING:
    from ..node import Node

__all__ = [
    "SWC_COLUMNS",
    "decode_ngmesh",
    "delete_mesh",
    "delete_skeleton",
    "encode_ngmesh",
    "frame_to_swc",
    "mesh_key",
    "meshes_instance",
    "read_mesh",
    "read_meshes",
    "read_skeleton",
    "read_skeletons",
    "skeleton_key",
    "skeletons_instance",
    "swc_to_frame",
    "write_mesh",
    "write_skeleton",
]

#: Columns of a skeleton DataFrame, in SWC's field order.
SWC_COLUMNS = ("rowId", "type", "x", "y", "z", "radius", "link")


# ------------------------------------------------------------------ SWC codec
def swc_to_frame(text: str | bytes) -> Any:
    """Parse SWC text into a skeleton DataFrame.

    Parameters
    ----------
    text : str or bytes
        SWC text (bytes are decoded as UTF-8).

    Returns
    -------
    pandas.DataFrame
        One row per node, in file order, with the columns of :data:`SWC_COLUMNS`:
        ``rowId`` int64, ``type`` int32, ``x``, ``y``, ``z``, ``radius`` float64,
        ``link`` int64 (``-1`` for roots). ``attrs["comments"]`` holds the comment
        lines without their ``#``.

    Raises
    ------
    DvidInputError
        A line without exactly 7 fields, or a field that is not a number (integer
        for ``rowId``, ``type`` and ``link``); the message names the line.
    """
    pd = pandas("swc_to_frame()")
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DvidInputError(f"SWC text must be UTF-8, byte {exc.start} is not ({exc.reason})") from None
    if not isinstance(text, str):
        raise DvidInputError(f"SWC text must be str or bytes, got {type(text).__name__}")
    comments: list[str] = []
    ints: list[tuple[int, int, int]] = []
    floats: list[tuple[float, float, float, float]] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comments.append(stripped[1:])
            continue
        fields = stripped.split()
        if len(fields) != 7:
            raise DvidInputError(
                f"SWC line {number} has {len(fields)} fields, SWC nodes have 7 "
                f"(rowId type x y z radius link): {line[:80]!r}"
            )
        try:
            ints.append((int(fields[0]), int(fields[1]), int(fields[6])))
        except ValueError:
            raise DvidInputError(
                f"SWC line {number}: rowId, type and link must be integers: {line[:80]!r}"
            ) from None
        try:
            x, y, z, r = (float(f) for f in fields[2:6])
        except ValueError:
            raise DvidInputError(f"SWC line {number}: x, y, z and radius must be numbers: {line[:80]!r}") from None
        floats.append((x, y, z, r))
    int_part = np.asarray(ints, dtype=np.int64).reshape(-1, 3)
    float_part = np.asarray(floats, dtype=np.float64).reshape(-1, 4)
    frame = pd.DataFrame(
        {
            "rowId": int_part[:, 0],
            "type": int_part[:, 1].astype(np.int32),
            "x": float_part[:, 0],
            "y": float_part[:, 1],
            "z": float_part[:, 2],
            "radius": float_part[:, 3],
            "link": int_part[:, 2],
        }
    )
    frame.attrs["comments"] = comments
    return frame


def frame_to_swc(frame: Any, *, comments: Iterable[str] | None = None) -> str:
    """SWC text of a skeleton DataFrame (the inverse of :func:`swc_to_frame`).

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns ``rowId``, ``type``, ``x``, ``y``, ``z``, ``radius``, ``link`` (other
        columns are ignored). ``rowId`` values must be unique positive integers and
        every ``link`` must be ``-1`` or another row's ``rowId``.
    comments : iterable of str, optional
        Comment lines to write first (each gets a ``#``); by default
        ``frame.attrs["comments"]``, if any.

    Returns
    -------
    str
        One line per row, in row order; floats written exactly (shortest repr).

    Raises
    ------
    DvidInputError
        Missing columns, non-integer ids, non-finite numbers, duplicate ``rowId``,
        or a ``link`` to no row.
    """
    pd = pandas("frame_to_swc()")
    if not isinstance(frame, pd.DataFrame):
        raise DvidInputError(f"a skeleton is a pandas DataFrame with columns {SWC_COLUMNS}, got {type(frame).__name__}")
    absent = [c for c in SWC_COLUMNS if c not in frame.columns]
    if absent:
        raise DvidInputError(
            f"the skeleton DataFrame lacks columns {absent}; it needs {list(SWC_COLUMNS)} "
            "(neuclease's 'node'/'kind'/'parent' names: rename them to 'rowId'/'type'/'link')"
        )
    row_id = _integer_column(frame, "rowId")
    kind = _integer_column(frame, "type")
    link = _integer_column(frame, "link")
    coords = {}
    for name in ("x", "y", "z", "radius"):
        values = frame[name].to_numpy()
        if values.dtype.kind not in "iuf" or not np.isfinite(values.astype(np.float64)).all():
            raise DvidInputError(f"skeleton column {name!r} must hold finite numbers (no NaN or inf)")
        coords[name] = values.astype(np.float64)
    if (row_id <= 0).any():
        raise DvidInputError(f"skeleton rowId values must be positive, found {int(row_id.min())}")
    unique, counts = np.unique(row_id, return_counts=True)
    if (counts > 1).any():
        raise DvidInputError(f"skeleton rowId values must be unique, {unique[counts > 1][:5].tolist()} repeat")
    dangling = link[(link != -1) & ~np.isin(link, row_id)]
    if dangling.size:
        raise DvidInputError(
            f"skeleton links {np.unique(dangling)[:5].tolist()} name no rowId; a link is a parent's rowId, "
            "or -1 for a root"
        )
    notes = frame.attrs.get("comments", ()) if comments is None else comments
    lines = [f"#{c}" for c in notes]
    for i in range(len(row_id)):
        fields = (_number(coords[n][i]) for n in ("x", "y", "z", "radius"))
        lines.append(f"{row_id[i]} {kind[i]} {' '.join(fields)} {link[i]}")
    return "\n".join(lines) + "\n"


def _integer_column(frame: Any, name: str) -> np.ndarray:
    values: np.ndarray = frame[name].to_numpy()
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "f" and np.isfinite(values).all() and (values == np.round(values)).all():
        return values.astype(np.int64)
    raise DvidInputError(f"skeleton column {name!r} must hold integers, got dtype {values.dtype}")


def _number(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


# --------------------------------------------------------------- ngmesh codec
def encode_ngmesh(
    vertices: np.ndarray | Sequence[Sequence[float]], faces: np.ndarray | Sequence[Sequence[int]]
) -> bytes:
    """Encode a triangle mesh in neuroglancer's legacy single-resolution format (``.ngmesh``).

    Parameters
    ----------
    vertices : array-like, (N, 3)
        Vertex positions (x, y, z), stored as float32.
    faces : array-like of int, (M, 3)
        Triangles as indices into ``vertices``, stored as uint32.

    Returns
    -------
    bytes
        ``4 + 12 N + 12 M`` bytes.

    Raises
    ------
    DvidInputError
        Wrong shapes, non-finite vertices, non-integer faces, or an index outside
        ``0 .. N-1``.
    """
    verts = np.asarray(vertices)
    if verts.size == 0:
        verts = verts.reshape(0, 3)
    if verts.ndim != 2 or verts.shape[1] != 3 or verts.dtype.kind not in "iuf":
        raise DvidInputError(f"mesh vertices must be a numeric (N, 3) array, got shape {verts.shape} of {verts.dtype}")
    if not np.isfinite(verts.astype(np.float64)).all():
        raise DvidInputError("mesh vertices must be finite (no NaN or inf)")
    if len(verts) >= 2**32:
        raise DvidInputError(f"an ngmesh holds at most 2**32-1 vertices, got {len(verts)}")
    tris = np.asarray(faces)
    if tris.size == 0:
        tris = tris.reshape(0, 3).astype(np.int64)
    if tris.ndim != 2 or tris.shape[1] != 3 or tris.dtype.kind not in "iu":
        raise DvidInputError(
            f"mesh faces must be an integer (M, 3) array of vertex indices, got shape {tris.shape} of {tris.dtype}"
        )
    if tris.size and (int(tris.min()) < 0 or int(tris.max()) >= len(verts)):
        raise DvidInputError(
            f"mesh faces index vertices {int(tris.min())}..{int(tris.max())}, but there are {len(verts)} vertices "
            f"(valid indices 0..{len(verts) - 1})"
        )
    return b"".join(
        (
            np.uint32(len(verts)).astype("<u4").tobytes(),
            np.ascontiguousarray(verts, dtype="<f4").tobytes(),
            np.ascontiguousarray(tris, dtype="<u4").tobytes(),
        )
    )


def decode_ngmesh(data: bytes | bytearray | memoryview) -> tuple[np.ndarray, np.ndarray]:
    """Decode neuroglancer's legacy single-resolution mesh (``.ngmesh``).

    Parameters
    ----------
    data : bytes-like
        The encoded mesh.

    Returns
    -------
    vertices : numpy.ndarray of float32, (N, 3)
        Vertex positions (x, y, z).
    faces : numpy.ndarray of uint32, (M, 3)
        Triangles as vertex indices.

    Raises
    ------
    DvidInputError
        The bytes are not an ngmesh: too short for the vertex count they declare,
        a face section that is not whole triangles, or an index beyond the vertices.
    """
    raw = memoryview(data).cast("B")
    if len(raw) < 4:
        raise DvidInputError(f"an ngmesh starts with a 4-byte vertex count, got {len(raw)} bytes")
    count = int(np.frombuffer(raw[:4], dtype="<u4")[0])
    end = 4 + 12 * count
    if len(raw) < end:
        raise DvidInputError(
            f"the ngmesh declares {count} vertices ({end} bytes with the count), but holds {len(raw)} bytes"
        )
    if (len(raw) - end) % 12:
        raise DvidInputError(
            f"the ngmesh's face section ({len(raw) - end} bytes after {count} vertices) is not whole triangles "
            "of three uint32 indices"
        )
    vertices = np.frombuffer(raw[4:end], dtype="<f4").astype(np.float32).reshape(count, 3)
    faces = np.frombuffer(raw[end:], dtype="<u4").astype(np.uint32).reshape(-1, 3)
    if faces.size and int(faces.max()) >= count:
        raise DvidInputError(f"the ngmesh's faces index vertex {int(faces.max())}, but it has {count} vertices")
    return vertices, faces


# ------------------------------------------------------------------ instances
def skeleton_key(body: int) -> str:
    """The key of a body's skeleton: ``"<body>_swc"``."""
    return f"{_label_id(body)}_swc"


def mesh_key(body: int) -> str:
    """The key of a body's mesh: ``"<body>.ngmesh"``."""
    return f"{_label_id(body)}.ngmesh"


def skeletons_instance(node: Node, seg: str | KeyValue, *, create: bool = False) -> KeyValue:
    """The keyvalue instance holding the skeletons of labelmap ``seg``: ``<seg>_skeletons``.

    Parameters
    ----------
    node : Node
        The version.
    seg : str or KeyValue
        The labelmap's name, or the keyvalue instance itself (then it is returned).
    create : bool
        Create the instance when it does not exist yet.

    Raises
    ------
    UnknownInstanceError
        No such instance (and ``create`` is false).
    """
    return _store(node, seg, "_skeletons", create)


def meshes_instance(node: Node, seg: str | KeyValue, *, create: bool = False) -> KeyValue:
    """The keyvalue instance holding the meshes of labelmap ``seg``: ``<seg>_meshes``.

    Same parameters as :func:`skeletons_instance`.
    """
    return _store(node, seg, "_meshes", create)


def _store(node: Node, seg: str | KeyValue, suffix: str, create: bool) -> KeyValue:
    if isinstance(seg, KeyValue):
        if seg.node != node:
            raise DvidInputError(
                f"the keyvalue instance {seg.name!r} belongs to node {seg.node.uuid[:8]}, not to node "
                f"{node.uuid[:8]} given with it; pass the node it belongs to"
            )
        return seg
    if not isinstance(seg, str):
        raise DvidInputError(f"seg is a labelmap name or a KeyValue instance, got {type(seg).__name__}")
    name = check_instance_name(seg + suffix)
    if create and name not in node.instances():
        KeyValue.create(node, name)
    return node.keyvalue(name)


# ---------------------------------------------------------------- skeletons
def read_skeleton(node: Node, seg: str | KeyValue, body: int) -> Any:
    """A body's skeleton from ``<seg>_skeletons``, key ``<body>_swc``.

    Returns
    -------
    pandas.DataFrame
        See :func:`swc_to_frame` for the columns and dtypes.

    Raises
    ------
    NotFoundError
        The body has no skeleton there.
    DvidInputError
        The stored value is not SWC (read it raw with ``kv.get(key)``).
    """
    kv = skeletons_instance(node, seg)
    key = skeleton_key(body)
    return _parse_swc(kv, key, kv.get(key))


def read_skeletons(node: Node, seg: str | KeyValue, bodies: Iterable[int]) -> dict[int, Any]:
    """Skeletons of many bodies with few requests; bodies without one are left out.

    Returns
    -------
    dict of int to pandas.DataFrame
        Body → skeleton (columns as in :func:`swc_to_frame`), in the order asked.
    """
    kv = skeletons_instance(node, seg)
    keys = {skeleton_key(b): int(b) for b in bodies}
    values = kv.get_many(keys)
    return {keys[key]: _parse_swc(kv, key, value) for key, value in values.items()}


def write_skeleton(node: Node, seg: str | KeyValue, body: int, skeleton: Any) -> None:
    """Store a body's skeleton in ``<seg>_skeletons`` under ``<body>_swc``.

    Parameters
    ----------
    skeleton : pandas.DataFrame or str
        A DataFrame as described in :func:`frame_to_swc`, or SWC text (checked by
        parsing it, then stored exactly as given).

    Raises
    ------
    DvidInputError
        Not a valid skeleton, or an empty one.
    UnknownInstanceError
        ``<seg>_skeletons`` does not exist: create it with
        ``skeletons_instance(node, seg, create=True)``.
    """
    kv = skeletons_instance(node, seg)
    key = skeleton_key(body)
    if isinstance(skeleton, str):
        swc_to_frame(skeleton)
        text = skeleton
    else:
        text = frame_to_swc(skeleton)
    kv.put(key, text.encode("utf-8"))


def delete_skeleton(node: Node, seg: str | KeyValue, body: int) -> None:
    """Delete a body's skeleton (no error when there is none)."""
    skeletons_instance(node, seg).delete(skeleton_key(body))


def _parse_swc(kv: KeyValue, key: str, value: bytes) -> Any:
    try:
        return swc_to_frame(value)
    except DvidInputError as exc:
        raise DvidInputError(
            f"the value of {key!r} in {kv.name!r} is not SWC ({exc}); read it raw with get()"
        ) from None


# ------------------------------------------------------------------- meshes
def read_mesh(node: Node, seg: str | KeyValue, body: int) -> tuple[np.ndarray, np.ndarray]:
    """A body's mesh from ``<seg>_meshes``, key ``<body>.ngmesh``.

    Returns
    -------
    vertices : numpy.ndarray of float32, (N, 3)
    faces : numpy.ndarray of uint32, (M, 3)

    Raises
    ------
    NotFoundError
        The body has no mesh there.
    DvidInputError
        The stored value is not an ngmesh.
    """
    kv = meshes_instance(node, seg)
    key = mesh_key(body)
    return _parse_mesh(kv, key, kv.get(key))


def read_meshes(node: Node, seg: str | KeyValue, bodies: Iterable[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Meshes of many bodies with few requests; bodies without one are left out.

    Returns
    -------
    dict of int to (vertices, faces)
        As :func:`read_mesh` returns them, in the order asked.
    """
    kv = meshes_instance(node, seg)
    keys = {mesh_key(b): int(b) for b in bodies}
    return {keys[key]: _parse_mesh(kv, key, value) for key, value in kv.get_many(keys).items()}


def write_mesh(
    node: Node,
    seg: str | KeyValue,
    body: int,
    vertices: np.ndarray | Sequence[Sequence[float]],
    faces: np.ndarray | Sequence[Sequence[int]],
) -> None:
    """Store a body's mesh in ``<seg>_meshes`` under ``<body>.ngmesh``.

    Parameters
    ----------
    vertices : array-like, (N, 3)
        Positions (x, y, z), stored as float32.
    faces : array-like of int, (M, 3)
        Triangles as vertex indices.

    Raises
    ------
    DvidInputError
        See :func:`encode_ngmesh`.
    UnknownInstanceError
        ``<seg>_meshes`` does not exist: create it with ``meshes_instance(node, seg, create=True)``.
    """
    kv = meshes_instance(node, seg)
    kv.put(mesh_key(body), encode_ngmesh(vertices, faces))


def delete_mesh(node: Node, seg: str | KeyValue, body: int) -> None:
    """Delete a body's mesh (no error when there is none)."""
    meshes_instance(node, seg).delete(mesh_key(body))


def _parse_mesh(kv: KeyValue, key: str, value: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        return decode_ngmesh(value)
    except DvidInputError as exc:
        raise DvidInputError(
            f"the value of {key!r} in {kv.name!r} is not an ngmesh ({exc}); read it raw with get()"
        ) from None

