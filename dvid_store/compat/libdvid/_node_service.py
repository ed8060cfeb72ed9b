"""libdvid's ``DVIDNodeService`` on dvid_store's node API.

Arrays and coordinates are ``(z, y, x)``, as in libdvid's Python bindings; arrays come
back C-contiguous. Every method translates dvid_store's errors into libdvid's:
:class:`DVIDException` (with ``.status``) for DVID's answers and lost connections,
:class:`ErrMsg` for what the client refuses before sending.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

from ...blocks import BlockIO
from ...client import DvidClient
from ...codecs import decode_gzipped_label_block
from ...datatypes.graph import LABELGRAPH_REMOVED
from ...datatypes.keyvalue import KeyValue
from ...datatypes.labels import Labelarray, Labelblk, Labelmap, Labelvol
from ...datatypes.roi import Roi
from ...datatypes.volume import VolumeInstance
from ...datatypes.voxels import Voxels
from ...errors import DvidError, DvidInputError, UnknownNodeError
from ...geometry import Box, as_zyx
from ...node import Node
from ...transport import RetryPolicy
from ._connection import client, method_name, payload_bytes
from ._errors import DVIDException, ErrMsg, LabelgraphRemovedError, libdvid_errors
from ._types import BlockZYX, Edge, Slice2D, SubstackZYX, Vertex

__all__ = ["DVIDNodeService"]

#: libdvid's default block size for new instances.
DEFBLOCKSIZE = 32

_LABELS: dict[str, type[VolumeInstance]] = {"labelmap": Labelmap, "labelarray": Labelarray, "labelblk": Labelblk}
_RECORD = struct.Struct("<4i")


class DVIDNodeService:
    """One version node of a DVID repo, with libdvid's Python methods.

    Parameters
    ----------
    web_addr : str
        The DVID server, e.g. ``"localhost:8000"``.
    uuid : str
        The node: a UUID, a unique prefix, or ``prefix:branch``. Checked here: an
        unknown node raises :class:`DVIDException` (status 400, as DVID answers).
    user, app : str
        Sent as ``u=`` and ``app=`` on every request.
    resource_server, resource_port
        libdvid's resource manager: not used (a warning says so).
    timeout, retry, deadline
        dvid_store's limits, keywords only (libdvid had none but its fixed 120 s
        timeout): the connect and read timeout (a number, or a ``(connect, read)``
        pair), the :class:`~dvid_store.RetryPolicy` of requests that are safe to
        repeat, and the seconds one call may take in all, retries included. Tokens
        come from ``$DVID_TOKEN`` and ``$DVID_ADMIN_TOKEN``.
    """

    @libdvid_errors
    def __init__(
        self,
        web_addr: str,
        uuid: str,
        user: str = "anonymous",
        app: str = "libdvid",
        resource_server: str = "",
        resource_port: int = 0,
        *,
        timeout: float | tuple[float, float] | None = None,
        retry: RetryPolicy | None = None,
        deadline: float | None = None,
    ) -> None:
        self._client = client(
            web_addr, user, app, resource_server, resource_port, timeout=timeout, retry=retry, deadline=deadline
        )
        self._blocksizes: dict[str, int] = {}
        self._node = _resolve(self._client, uuid)

    @property
    def node(self) -> Node:
        """The dvid_store :class:`~dvid_store.Node` behind this service."""
        return self._node

    def get_uuid(self) -> str:
        """The node's full UUID."""
        return self._node.uuid

    # ------------------------------------------------------------------ general
    @libdvid_errors
    def get_typeinfo(self, datatype_name: str) -> dict[str, Any]:
        """The instance's ``/info`` JSON, as a dict."""
        return self._node.typeinfo(datatype_name)

    @libdvid_errors
    def get_blocksize(self, datatype_name: str) -> int:
        """The instance's block edge in voxels (cubic blocks only, as libdvid; cached per instance)."""
        if datatype_name not in self._blocksizes:
            extended = self._node.typeinfo(datatype_name).get("Extended") or {}
            sizes = extended.get("BlockSize") if isinstance(extended, dict) else None
            if not sizes:
                raise ErrMsg(f"instance {datatype_name!r} has no block size")
            if len({int(v) for v in sizes}) != 1:
                raise ErrMsg(f"instance {datatype_name!r} has blocks {sizes} (x, y, z), not cubes")
            self._blocksizes[datatype_name] = int(sizes[0])
        return self._blocksizes[datatype_name]

    @libdvid_errors
    def custom_request(
        self,
        endpoint: str,
        payload: Any,
        method: Any,
        compress: bool = False,
        datasize: int = 1,
        timeout: float | None = None,
    ) -> bytes:
        """Any request to ``/api/node/<uuid><endpoint>``; returns the answer's body.

        ``compress=True`` adds ``compression=lz4``, compresses a POST/PUT payload and
        decompresses a GET answer, as libdvid did. ``datasize`` only served libdvid's
        resource manager and is ignored. ``timeout`` (seconds) is this request's
        connect and read timeout; default: the service's (libdvid's 120 s unless the
        service was given one). Statuses other than 2xx raise :class:`DVIDException`.

        The body of a 2xx answer is returned unchecked, as libdvid returned it: this
        call knows no format to check it against (a 200 answer from something other
        than DVID, such as a proxy's page, comes back as data).
        """
        name = method_name(method)
        body = payload_bytes(payload)
        if name in ("GET", "HEAD", "DELETE") and not body:
            body = None
        return self._node.custom_request(endpoint, body, name, compress, timeout=timeout)

    # ---------------------------------------------------------------- creating
    def _create(self, name: str, create: Any) -> bool:
        if name in self._node.instances():
            return False
        create()
        return True

    @libdvid_errors
    def create_keyvalue(self, instance_name: str) -> bool:
        """Create a keyvalue instance: ``True``, or ``False`` if the name exists."""
        return self._create(instance_name, lambda: KeyValue.create(self._node, instance_name))

    @libdvid_errors
    def create_grayscale8(self, instance_name: str, blocksize: int = DEFBLOCKSIZE) -> bool:
        """Create a uint8blk instance with cubic blocks: ``True``, or ``False`` if the name exists."""
        return self._create(
            instance_name, lambda: Voxels.create(self._node, instance_name, np.uint8, block_size=blocksize)
        )

    @libdvid_errors
    def create_labelblk(
        self, instance_name: str, labelvol_name: str | None = None, blocksize: int = DEFBLOCKSIZE
    ) -> bool:
        """Create a labelblk instance and, if ``labelvol_name`` is given, a labelvol synced with it both ways.

        Returns ``True`` if everything was created, ``False`` if either name existed
        (an existing labelvol is left as it is, unsynced, as in libdvid).
        """
        existing = self._node.instances()
        created = instance_name not in existing
        if created:
            Labelblk.create(self._node, instance_name, block_size=blocksize)
        if labelvol_name:
            if labelvol_name in existing:
                return False
            self._node.create_instance("labelvol", labelvol_name, block_size=(blocksize,) * 3)
            for source, target in ((labelvol_name, instance_name), (instance_name, labelvol_name)):
                self._node.custom_request(f"{source}/sync", json.dumps({"sync": target}), "POST")
        return created

    @libdvid_errors
    def create_labelarray(self, instance_name: str, blocksize: int = DEFBLOCKSIZE) -> bool:
        """Create a labelarray instance: ``True``, or ``False`` if the name exists."""
        return self._create(
            instance_name, lambda: Labelarray.create(self._node, instance_name, block_size=blocksize)
        )

    @libdvid_errors
    def create_labelmap(self, instance_name: str, blocksize: int = DEFBLOCKSIZE) -> bool:
        """Create a labelmap instance: ``True``, or ``False`` if the name exists."""
        return self._create(instance_name, lambda: Labelmap.create(self._node, instance_name, block_size=blocksize))

    @libdvid_errors
    def create_roi(self, name: str) -> bool:
        """Create an roi instance: ``True``, or ``False`` if the name exists."""
        return self._create(name, lambda: Roi.create(self._node, name))

    @libdvid_errors
    def create_graph(self, name: str) -> NoReturn:
        """Refused: DVID removed the labelgraph datatype (:class:`DVIDException`, status 400)."""
        _graph_removed("create_graph")

    # ---------------------------------------------------------------- keyvalue
    @libdvid_errors
    def put(self, instance_name: str, key: str, value_bytes: Any) -> None:
        """Store ``value_bytes`` at ``key``: bytes, or ``str`` (stored as UTF-8); anything else is :class:`ErrMsg`."""
        value = payload_bytes(value_bytes)
        if value is None:
            raise ErrMsg("the value must be bytes (or str), got None")
        self._node.keyvalue(instance_name).put(key, value)

    @libdvid_errors
    def get(self, instance_name: str, key: str) -> bytes:
        """The value at ``key`` (a missing key raises :class:`DVIDException` with status 404)."""
        return self._node.keyvalue(instance_name).get(key)

    @libdvid_errors
    def get_json(self, instance_name: str, key: str) -> Any:
        """The value at ``key``, parsed as JSON."""
        return self._node.keyvalue(instance_name).get_json(key)

    @libdvid_errors
    def get_keys(self, instance_name: str) -> list[str]:
        """Every key of the instance, sorted."""
        return self._node.keyvalue(instance_name).keys()

    # --------------------------------------------------------------- grayscale
    @libdvid_errors
    def get_gray3D(
        self,
        instance_name: str,
        shape_zyx: Sequence[int],
        offset_zyx: Sequence[int],
        throttle: bool = True,
        compress: bool = False,
        roi: str | None = None,
    ) -> np.ndarray:
        """A uint8 volume of ``shape_zyx`` at ``offset_zyx`` (z, y, x; any offset, any sign).

        ``compress`` reads the blocks as DVID stores them (LZ4) and decodes them here;
        with ``roi`` (voxels outside it read as 0) the voxels travel uncompressed,
        as DVID v1.0.0 has no compressed masked read.
        """
        gray = self._grayscale(instance_name, "get_gray3D")
        box = _box(shape_zyx, offset_zyx)
        if roi:
            return gray.read(box, throttle=throttle, roi=roi)
        return gray.read(box, throttle=throttle, compress=compress)

    @libdvid_errors
    def put_gray3D(
        self,
        instance_name: str,
        grayscale_vol: Any,
        offset_zyx: Sequence[int],
        throttle: bool = True,
        compress: bool = False,
    ) -> None:
        """Write a uint8 ``(z, y, x)`` volume at a block-aligned ``offset_zyx``.

        ``compress=True`` is accepted, and the voxels travel uncompressed: DVID
        v1.0.0's imageblk ``POST /raw`` takes no compressed form. An unaligned box
        raises :class:`ErrMsg` naming the enclosing aligned box.
        """
        gray = self._grayscale(instance_name, "put_gray3D")
        volume = _array(grayscale_vol, np.uint8, "grayscale_vol")
        gray.write(volume, as_zyx(offset_zyx, "offset_zyx"), throttle=throttle)

    @libdvid_errors
    def get_grayblocks3D_subvol(
        self, instance_name: str, shape_zyx: Sequence[int], offset_zyx: Sequence[int], throttle: bool = True
    ) -> np.ndarray:
        """The uint8 volume read through ``/subvolblocks`` (blocks as stored, decoded here)."""
        gray = self._grayscale(instance_name, "get_grayblocks3D_subvol")
        return gray.read(_box(shape_zyx, offset_zyx), throttle=throttle, compress=True)

    # ---------------------------------------------------------------- arrays
    def _get_array(self, instance_name: str, shape: Sequence[int], offset: Sequence[int], dtype: Any) -> np.ndarray:
        volume = self._volume(instance_name)
        _check_dtype(volume, np.dtype(dtype))
        return volume.read(_box(shape, offset))

    def _put_array(self, instance_name: str, volume: Any, offset: Sequence[int], dtype: Any) -> None:
        target = self._volume(instance_name)
        _check_dtype(target, np.dtype(dtype))
        array = _array(volume, np.dtype(dtype), "volume")
        if isinstance(target, (Labelmap, Labelarray)):
            target.write(array, as_zyx(offset, "offset_zyx"), mutate=True)
        else:
            target.write(array, as_zyx(offset, "offset_zyx"))

    @libdvid_errors
    def get_array8bit3D(
        self, instance_name: str, shape_zyx: Sequence[int], offset_zyx: Sequence[int], islabels: bool = False
    ) -> np.ndarray:
        """A uint8 volume of any 8-bit instance (``islabels`` is not needed: the type is asked)."""
        return self._get_array(instance_name, shape_zyx, offset_zyx, np.uint8)

    @libdvid_errors
    def get_array16bit3D(
        self, instance_name: str, shape_zyx: Sequence[int], offset_zyx: Sequence[int], islabels: bool = False
    ) -> np.ndarray:
        """A uint16 volume of a 16-bit instance."""
        return self._get_array(instance_name, shape_zyx, offset_zyx, np.uint16)

    @libdvid_errors
    def get_array32bit3D(
        self, instance_name: str, shape_zyx: Sequence[int], offset_zyx: Sequence[int], islabels: bool = False
    ) -> np.ndarray:
        """A uint32 volume of a 32-bit instance."""
        return self._get_array(instance_name, shape_zyx, offset_zyx, np.uint32)

    @libdvid_errors
    def get_array64bit3D(
        self, instance_name: str, shape_zyx: Sequence[int], offset_zyx: Sequence[int], islabels: bool = False
    ) -> np.ndarray:
        """A uint64 volume of a 64-bit instance (uint64blk or labels)."""
        return self._get_array(instance_name, shape_zyx, offset_zyx, np.uint64)

    @libdvid_errors
    def put_array8bit3D(
        self, instance_name: str, volume: Any, offset_zyx: Sequence[int], islabels: bool = False
    ) -> None:
        """Write a uint8 volume at a block-aligned offset."""
        self._put_array(instance_name, volume, offset_zyx, np.uint8)

    @libdvid_errors
    def put_array16bit3D(
        self, instance_name: str, volume: Any, offset_zyx: Sequence[int], islabels: bool = False
    ) -> None:
        """Write a uint16 volume at a block-aligned offset."""
        self._put_array(instance_name, volume, offset_zyx, np.uint16)

    @libdvid_errors
    def put_array32bit3D(
        self, instance_name: str, volume: Any, offset_zyx: Sequence[int], islabels: bool = False
    ) -> None:
        """Write a uint32 volume at a block-aligned offset."""
        self._put_array(instance_name, volume, offset_zyx, np.uint32)

    @libdvid_errors
    def put_array64bit3D(
        self, instance_name: str, volume: Any, offset_zyx: Sequence[int], islabels: bool = False
    ) -> None:
        """Write a uint64 volume at a block-aligned offset (labels with ``mutate``, so indices stay right)."""
        self._put_array(instance_name, volume, offset_zyx, np.uint64)

    # ------------------------------------------------------------------ labels
    @libdvid_errors
    def get_labels3D(
        self,
        instance_name: str,
        shape_zyx: Sequence[int],
        offset_zyx: Sequence[int],
        throttle: bool = True,
        compress: bool = True,
        roi: str | None = None,
        supervoxels: bool = False,
    ) -> np.ndarray:
        """A uint64 label volume of ``shape_zyx`` at ``offset_zyx`` (labelmap, labelarray, labelblk)."""
        seg = self._labels(instance_name)
        box = _box(shape_zyx, offset_zyx)
        options: dict[str, Any] = {"throttle": throttle, "compress": compress, "roi": roi or None}
        if supervoxels:
            options["supervoxels"] = True
        return seg.read(box, **options)

    @libdvid_errors
    def get_label_by_location(self, instance_name: str, point_zyx: Sequence[int], supervoxels: bool = False) -> int:
        """The label at one voxel ``(z, y, x)``; 0 where nothing was written."""
        seg = self._labels(instance_name)
        point = as_zyx(point_zyx, "point_zyx")
        if supervoxels:
            return int(seg.label_at(point, supervoxels=True))  # type: ignore[attr-defined]
        return int(seg.label_at(point))  # type: ignore[attr-defined]

    @libdvid_errors
    def put_labels3D(
        self,
        instance_name: str,
        label_vol_zyx: Any,
        offset_zyx: Sequence[int],
        throttle: bool = True,
        compress: bool = True,
        roi: str | None = None,
        mutate: bool = False,
    ) -> None:
        """Write a uint64 ``(z, y, x)`` label volume at a block-aligned offset.

        ``mutate=True`` when overwriting labels, so that DVID's label index stays right.
        """
        seg = self._labels(instance_name)
        labels = _array(label_vol_zyx, np.uint64, "label_vol_zyx")
        seg.write(
            labels, as_zyx(offset_zyx, "offset_zyx"), throttle=throttle, compress=compress, roi=roi or None,
            mutate=mutate,
        )

    @libdvid_errors
    def get_labelarray_blocks3D(
        self,
        instance_name: str,
        shape_zyx: Sequence[int],
        offset_zyx: Sequence[int],
        throttle: bool = True,
        scale: int = 0,
        supervoxels: bool = False,
    ) -> np.ndarray:
        """A label volume at ``scale`` (labelmap, labelarray); coordinates in that scale's voxels."""
        seg = self._labels(instance_name)
        options: dict[str, Any] = {"throttle": throttle, "scale": scale}
        if supervoxels:
            options["supervoxels"] = True
        return seg.read(_box(shape_zyx, offset_zyx), **options)

    @libdvid_errors
    def put_labelblocks3D(
        self,
        instance_name: str,
        label_vol_zyx: Any,
        offset_zyx: Sequence[int],
        throttle: bool = True,
        scale: int = 0,
        noindexing: bool = False,
    ) -> None:
        """Write whole label blocks at ``scale`` without rebuilding the lower scales (labelmap, labelarray).

        As in libdvid, the voxels are indexed as new data (DVID's block ingestion):
        meant for loading a volume, not for overwriting labels (``put_labels3D`` with
        ``mutate=True`` does that). ``noindexing=True`` is refused: DVID would leave its label index without the
        new voxels until indices are posted separately, which this client does not do.
        """
        if noindexing:
            raise ErrMsg(
                "noindexing=True is not supported: DVID's label index would miss these voxels until indices are "
                "posted separately; write with noindexing=False"
            )
        seg = self._labels(instance_name)
        labels = _array(label_vol_zyx, np.uint64, "label_vol_zyx")
        offset = as_zyx(offset_zyx, "offset_zyx")
        if isinstance(seg, Labelmap):
            if scale == 0:  # DVID's block ingestion, as libdvid's POST /blocks: indexed as new voxels
                seg.write(labels, offset, downres=False, throttle=throttle)
            else:
                BlockIO.open(self._node, instance_name, scale=scale, throttle=throttle).write_box(labels, offset)
        elif isinstance(seg, Labelarray) and scale == 0:
            seg.write(labels, offset, throttle=throttle)
        else:
            raise ErrMsg(
                f"put_labelblocks3D writes labelmap instances at any scale and labelarray at scale 0; "
                f"{instance_name!r} is a {seg.typename} and scale is {scale}"
            )

    @staticmethod
    @libdvid_errors
    def inflate_labelarray_blocks3D_from_raw(
        raw_block_data: Any, shape_zyx: Sequence[int], offset_zyx: Sequence[int], blocksize: int = 64
    ) -> np.ndarray:
        """Decode a labelmap/labelarray ``GET /blocks?compression=blocks`` answer into a volume.

        The volume has ``shape_zyx`` and starts at ``offset_zyx``; blocks the answer
        does not hold read as 0.
        """
        data = memoryview(payload_bytes(raw_block_data) or b"")
        start = as_zyx(offset_zyx, "offset_zyx")
        shape = as_zyx(shape_zyx, "shape_zyx")
        out = np.zeros(shape, np.uint64)
        pos = 0
        while pos < len(data):
            if pos + _RECORD.size > len(data):
                raise ErrMsg("the block data ends inside a record header")
            bx, by, bz, n = _RECORD.unpack_from(data, pos)
            pos += _RECORD.size
            block = decode_gzipped_label_block(data[pos : pos + n])
            pos += n
            origin = (bz * blocksize, by * blocksize, bx * blocksize)
            lo = [max(o, s) for o, s in zip(origin, start)]
            hi = [min(o + blocksize, s + n_) for o, s, n_ in zip(origin, start, shape)]
            if any(h <= low for low, h in zip(lo, hi)):
                continue
            out[tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))] = block[
                tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, origin))
            ]
        return out

    @libdvid_errors
    def get_mapping(self, instance: str, supervoxels: Sequence[int]) -> np.ndarray:
        """The body of each supervoxel (labelmap), uint64; 0 for unknown supervoxels."""
        seg = self._labels(instance)
        if not isinstance(seg, Labelmap):
            raise ErrMsg(f"{instance!r} is a {seg.typename}; only labelmap instances have a mapping")
        return seg.mapping([int(s) for s in supervoxels])

    @libdvid_errors
    def body_exists(self, labelvol_name: str, bodyid: int, supervoxels: bool = False) -> bool:
        """Whether the body has voxels (labelmap, labelarray, labelvol, or labelblk through its labelvol)."""
        typename = self._typename(labelvol_name)
        if typename == "labelvol":
            return Labelvol(self._node, labelvol_name).body_exists(int(bodyid), supervoxels=supervoxels)
        seg = self._labels(labelvol_name)
        if isinstance(seg, Labelblk):
            if supervoxels:
                raise ErrMsg("labelblk has no supervoxels; supervoxels=True needs a labelmap")
            return seg.body_exists(int(bodyid))
        return bool(seg.body_exists(int(bodyid), supervoxels=supervoxels))  # type: ignore[attr-defined]

    @libdvid_errors
    def get_sparselabelmask(
        self, bodyid: int, labelname: str, scale: int, supervoxels: bool = False
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """The body's voxels block by block: ``(block starts (N, 3) z, y, x in voxels, [bool mask per block])``.

        Blocks are the instance's, at ``scale``, sorted by z, y, x. A body without
        voxels raises :class:`DVIDException` (404).
        """
        seg = self._labels(labelname)
        options: dict[str, Any] = {"format": "coords", "scale": int(scale)}
        if supervoxels:
            options["supervoxels"] = True
        coords = seg.sparsevol(int(bodyid), **options)  # type: ignore[attr-defined]
        if len(coords) == 0:
            raise DVIDException(404, f"label {bodyid} has no voxels in {labelname!r} at scale {scale}")
        block = np.asarray(seg.block_shape, dtype=np.int64)
        blocks = coords // block
        keys, inverse = np.unique(blocks, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        masks = [np.zeros(seg.block_shape, dtype=bool) for _ in range(len(keys))]
        inside = coords - blocks * block
        for k in range(len(keys)):
            rows = inside[inverse == k]
            masks[k][rows[:, 0], rows[:, 1], rows[:, 2]] = True
        return (keys * block).astype(np.int32), masks

    @libdvid_errors
    def get_specificblocks3D(
        self,
        instance: str,
        gray: bool,
        blockcoords_zyx: Any,
        scale: int = 0,
        uncompressed: bool = False,
        supervoxels: bool = False,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Whole blocks by block coordinate: ``(block starts (N, 3) z, y, x in voxels, [block arrays])``.

        ``blockcoords_zyx`` is an ``(N, 3)`` array of block coordinates. Blocks DVID
        does not hold are left out; the rest are sorted by z, y, x. ``gray`` must say
        whether the instance is uint8 grayscale; ``uncompressed`` is accepted (blocks
        always come back decoded).
        """
        coords = np.asarray(blockcoords_zyx, dtype=np.int64).reshape(-1, 3)
        io = BlockIO.open(self._node, instance, scale=int(scale), supervoxels=bool(supervoxels))
        if bool(gray) != (io.dtype == np.uint8):
            raise ErrMsg(f"gray={gray} but {instance!r} holds {io.dtype} voxels")
        found = io.read(coords)
        order = sorted(found)
        starts = np.asarray([[c * b for c, b in zip(coord, io.block_shape)] for coord in order], dtype=np.int32)
        return starts.reshape(-1, 3), [np.ascontiguousarray(found[c]) for c in order]

    # ------------------------------------------------------------------- rois
    @libdvid_errors
    def get_roi(self, roi: str) -> list[BlockZYX]:
        """The ROI's blocks as ``BlockZYX`` tuples, sorted by z, y, x."""
        return [BlockZYX(*(int(v) for v in row)) for row in self._node.roi(roi).blocks()]

    @libdvid_errors
    def post_roi(self, roi_name: str, blocks_zyx: Any) -> None:
        """Add blocks ``(z, y, x)`` to the ROI, in any order, as libdvid documented (the ROI is extended).

        DVID v1.0.0's ``POST /roi`` replaces the ROI, so the blocks it already has are
        read and posted again with the new ones.
        """
        roi = self._node.roi(roi_name)
        new = np.asarray(blocks_zyx, dtype=np.int64).reshape(-1, 3)
        roi.post_blocks(np.concatenate([roi.blocks().astype(np.int64), new]))

    @libdvid_errors
    def get_roi_partition(self, roi: str, partition_size: int) -> tuple[list[SubstackZYX], float]:
        """Substacks of ``partition_size`` blocks covering the ROI, and the fraction of their blocks in it."""
        substacks, packing = self._node.roi(roi).partition(partition_size)
        return [SubstackZYX(*s) for s in substacks], float(packing)

    @libdvid_errors
    def roi_ptquery(self, roi: str, point_list_zyx: Any) -> list[bool]:
        """For each ``(z, y, x)`` point, whether it lies in the ROI."""
        return [bool(v) for v in self._node.roi(roi).contains(point_list_zyx)]

    @libdvid_errors
    def get_roi3D(
        self,
        instance_name: str,
        dims_zyx: Sequence[int],
        offset_zyx: Sequence[int],
        throttle: bool = True,
        compress: bool = False,
    ) -> np.ndarray:
        """The ROI as a uint8 ``(z, y, x)`` volume over the box: 1 inside, 0 outside."""
        return self._node.roi(instance_name).mask(_box(dims_zyx, offset_zyx))

    # ------------------------------------------------------------------ tiles
    @libdvid_errors
    def get_tile_slice(self, instance_name: str, slice_type: Slice2D, scaling: int, tile_numbers: Any) -> np.ndarray:
        """A decoded tile as a 2-D uint8 array; ``tile_numbers`` in libdvid's (x, y, z) order.

        A tile never stored comes back blank (DVID's answer), as in libdvid.
        """
        plane = _plane(slice_type)
        return self._node.tiles(instance_name).get_tile_slice(plane, int(scaling), list(tile_numbers))

    @libdvid_errors
    def get_tile_slice_binary(self, instance_name: str, slice_type: Slice2D, scaling: int, tile_numbers: Any) -> bytes:
        """A tile's stored bytes (PNG or JPEG); ``tile_numbers`` in libdvid's (x, y, z) order."""
        plane = _plane(slice_type)
        return self._node.tiles(instance_name).get_tile_slice_binary(plane, int(scaling), list(tile_numbers))

    # ------------------------------------------------------------------ graph
    @libdvid_errors
    def update_vertices(self, graph_name: str, vertices: Sequence[Vertex]) -> NoReturn:
        """Refused: DVID removed the labelgraph datatype (:class:`DVIDException`, status 400)."""
        _graph_removed("update_vertices")

    @libdvid_errors
    def update_edges(self, graph_name: str, vertices: Sequence[Edge]) -> NoReturn:
        """Refused: DVID removed the labelgraph datatype (:class:`DVIDException`, status 400)."""
        _graph_removed("update_edges")

    # ---------------------------------------------------------------- helpers
    def _typename(self, name: str) -> str:
        return str(self._node.typeinfo(name)["Base"]["TypeName"])

    def _volume(self, name: str) -> VolumeInstance:
        typename = self._typename(name)
        if typename in _LABELS:
            return _LABELS[typename](self._node, name)
        return Voxels(self._node, name)

    def _labels(self, name: str) -> VolumeInstance:
        typename = self._typename(name)
        if typename not in _LABELS:
            raise ErrMsg(f"{name!r} is a {typename} instance, not labels (labelmap, labelarray or labelblk)")
        return _LABELS[typename](self._node, name)

    def _grayscale(self, name: str, call: str) -> Voxels:
        gray = self._node.voxels(name)
        if gray.dtype != np.uint8 or gray.channel_shape:
            raise ErrMsg(
                f"{call} reads and writes uint8 grayscale; {name!r} is a {gray.typename} "
                "(use get_array16bit3D / put_array16bit3D ... for other voxel types)"
            )
        return gray


def _resolve(dvid: DvidClient, uuid: str) -> Node:
    """The node ``uuid`` names; an unknown one raises :class:`DVIDException` 400, as DVID answers for it."""
    failure: DvidError | None = None
    try:
        return dvid.node(uuid)
    except (UnknownNodeError, DvidInputError) as exc:
        failure = exc
    raise DVIDException(400, f"no node {uuid!r} on {dvid.url}: {failure}")


def _box(shape: Sequence[int], offset: Sequence[int]) -> Box:
    size = as_zyx(shape, "shape_zyx")
    start = as_zyx(offset, "offset_zyx")
    if min(size) < 1:
        raise ErrMsg(f"the shape {size} (z, y, x) must be at least 1 along every axis")
    return start, (start[0] + size[0], start[1] + size[1], start[2] + size[2])


def _array(value: Any, dtype: Any, what: str) -> np.ndarray:
    """A 3-D array of exactly ``dtype``, as libdvid's converters demanded."""
    array = np.asarray(value)
    if array.ndim != 3 or array.dtype != np.dtype(dtype):
        raise ErrMsg(f"{what} must be a 3-D (z, y, x) {np.dtype(dtype)} array, got {array.dtype} {array.shape}")
    return array


def _check_dtype(volume: VolumeInstance, dtype: np.dtype) -> None:
    if volume.dtype.itemsize != dtype.itemsize or volume.channel_shape:
        raise ErrMsg(f"{volume.name!r} is a {volume.typename} ({volume.dtype}), not {dtype.itemsize * 8}-bit voxels")


def _plane(slice_type: Any) -> str:
    if isinstance(slice_type, Slice2D):
        return slice_type.name
    if isinstance(slice_type, str) and slice_type.upper() in Slice2D.__members__:
        return slice_type.upper()
    raise ErrMsg(f"slice_type must be Slice2D.XY, XZ or YZ, got {slice_type!r}")


def _graph_removed(call: str) -> NoReturn:
    raise LabelgraphRemovedError(400, LABELGRAPH_REMOVED.format(call=call))
