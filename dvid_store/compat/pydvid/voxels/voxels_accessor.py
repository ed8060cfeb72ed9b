"""pydvid's ``VoxelsAccessor`` and ``RoiMaskAccessor``: numpy slicing of a DVID volume, channel first.

``accessor[c, x, y, z]``: the channel axis first, then DVID's axes in x, y, z order,
as pydvid had it. Slice bounds are DVID coordinates and may be negative (pydvid had
no negative coordinates); an open start means 0, or the stored minimum where that is
below 0, and an open stop the stored maximum (:attr:`VoxelsAccessor.shape`). Reads
take steps and integer indices (which drop their axis); writes take whole boxes of
all channels, at any offset (edge blocks are merged, no voxel outside the box changes).

DVID answering 503 (busy or throttled) is retried until ``retry_timeout``, waiting up
to ``retry_interval`` between attempts: the accessor's client gets
``RetryPolicy(total_seconds=retry_timeout, backoff_base=retry_interval,
backoff_cap=retry_interval)``, and no retries at all when ``retry_timeout <=
retry_interval``, as in pydvid. Then :class:`VoxelsAccessor.ThrottleTimeoutException`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ....errors import DvidInputError, ServerBusyError
from ....transport import RetryPolicy
from ..dvid_connection import client_for, node_for
from ..errors import DvidHttpError, translated
from .voxels import mask_metadata, metadata_of, open_volume, read_cxyz, write_cxyz
from .voxels_metadata import VoxelsMetadata

__all__ = ["AccessorIndexError", "RoiMaskAccessor", "ThrottleTimeoutException", "VoxelsAccessor", "retry_policy"]


class ThrottleTimeoutException(DvidHttpError, ServerBusyError):
    """DVID stayed busy (503) past ``retry_timeout`` (pydvid's ``VoxelsAccessor.ThrottleTimeoutException``)."""


class AccessorIndexError(DvidInputError, IndexError):
    """An index that does not fit the accessor's axes: too many, or a channel that does not exist."""


def retry_policy(retry_timeout: float, retry_interval: float) -> RetryPolicy:
    """pydvid's ``retry_timeout`` and ``retry_interval`` as a :class:`~dvid_store.RetryPolicy`.

    ``retry_timeout`` bounds the retrying (``total_seconds``); each wait is up to
    ``retry_interval`` (``backoff_base`` = ``backoff_cap``; dvid_store jitters the
    waits so that many clients do not retry in step). ``retry_timeout <=
    retry_interval`` means no retry, as in pydvid.
    """
    timeout, interval = float(retry_timeout), float(retry_interval)
    if not (timeout >= 0 and interval >= 0) or math.isinf(interval):
        raise DvidInputError(
            f"retry_timeout and retry_interval are seconds >= 0, got {retry_timeout!r} and {retry_interval!r}"
        )
    total = timeout if timeout > interval else 0.0
    return RetryPolicy(total_seconds=total, backoff_base=interval, backoff_cap=interval)


class VoxelsAccessor:
    """numpy slicing and subvolume access of one DVID voxel volume, channel first (pydvid's ``VoxelsAccessor``).

    Parameters
    ----------
    connection : http.client.HTTPConnection, DvidConnection or str
        The server (``"host:port"`` works too); only its address and timeout are used.
    uuid : str
        The node: a UUID, a unique prefix, or ``prefix:branch``.
    data_name : str
        The voxel instance (imageblk types, rgba8blk, or labels).
    query_args : dict, optional
        ``{"throttle": "on"}`` / ``"off"`` and ``{"roi": name}`` (reads masked by that roi).
    throttle : bool, optional
        Send DVID's ``throttle`` with every read and write.
    retry_timeout, retry_interval : float
        How long to retry a busy (503) server, and the longest wait between attempts.
    warning_interval : float
        Accepted for pydvid's signature; the retries are logged (``dvid_store.transport``
        logger, INFO) instead of warned.
    """

    ThrottleTimeoutException = ThrottleTimeoutException

    def __init__(
        self,
        connection: Any,
        uuid: str,
        data_name: str,
        query_args: Mapping[str, Any] | None = None,
        throttle: bool | None = None,
        retry_timeout: float = 60.0,
        retry_interval: float = 1.0,
        warning_interval: float = 30.0,
        _metadata: VoxelsMetadata | None = None,
        _access_type: str = "raw",
    ) -> None:
        self.uuid = uuid
        self.data_name = data_name
        self._connection = connection
        self._retry_timeout = retry_timeout
        self._retry_interval = retry_interval
        self._warning_interval = warning_interval
        self._query_args = dict(query_args or {})
        self._access_type = _access_type
        self._throttle = _resolve_throttle(self._query_args, throttle)
        self._client = client_for(connection, retry_policy(retry_timeout, retry_interval))
        with translated("voxels metadata", busy=ThrottleTimeoutException):
            self._node = node_for(self._client, uuid)
            self._volume = open_volume(self._node, data_name, _access_type)
            self.voxels_metadata = _metadata if _metadata is not None else metadata_of(self._volume)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._client.url!r}, {self.uuid!r}, {self.data_name!r})"

    # ------------------------------------------------------------ metadata
    @property
    def shape(self) -> tuple[int | None, ...]:
        """The stop of the stored bounding box, ``(channels, x, y, z)``; 0s before anything is stored, as in pydvid."""
        return self.voxels_metadata.shape

    @property
    def minindex(self) -> tuple[int | None, ...]:
        """The start of the stored bounding box, ``(0, x, y, z)``."""
        return self.voxels_metadata.minindex

    @property
    def dtype(self) -> np.dtype:
        """The voxel type of one channel."""
        return self.voxels_metadata.dtype

    @property
    def axiskeys(self) -> str:
        """``"cxyz"``: the channel axis first, then DVID's x, y, z."""
        return self.voxels_metadata.axiskeys

    # --------------------------------------------------------- subvolumes
    def get_ndarray(self, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
        """The voxels of ``[start, stop)``: a ``(c, x, y, z)`` array of all channels.

        ``start`` and ``stop`` are channel first: ``(0, x0, y0, z0)``,
        ``(channels, x1, y1, z1)``; coordinates may be negative.
        """
        with translated("subvolume query", busy=ThrottleTimeoutException):
            return read_cxyz(
                self._volume, self.voxels_metadata, start, stop, self._query_args, self._throttle
            )

    def post_ndarray(self, start: Sequence[int], stop: Sequence[int], new_data: Any) -> None:
        """Overwrite ``[start, stop)`` with a ``(c, x, y, z)`` array of all channels; any offset.

        Blocks the box covers only in part are read, merged and written back: no
        voxel outside the box changes. Afterwards the metadata is asked again if the
        write reached beyond the stored bounding box (which DVID grows to whole blocks).
        """
        with translated("subvolume post", busy=ThrottleTimeoutException):
            write_cxyz(self._volume, self.voxels_metadata, start, stop, new_data, self._throttle)
            shape, minindex = self.shape, self.minindex
            grown = any(
                hi is None or lo is None or b > hi or a < lo
                for a, b, lo, hi in zip(start[1:], stop[1:], minindex[1:], shape[1:])
            )
            if grown:
                self.voxels_metadata = metadata_of(self._volume)

    # -------------------------------------------------------------- slicing
    def __getitem__(self, slicing: Any) -> np.ndarray:
        """``accessor[c, x, y, z]``: basic numpy indexing, bounds in DVID coordinates (see the module)."""
        request, result = self._resolve(slicing, writing=False)
        shape = [b - a for a, b in request]
        if min(shape[1:]) <= 0:  # an empty selection, as numpy allows
            data = np.zeros(shape, dtype=self.dtype, order="F")
        else:
            data = self.get_ndarray([a for a, _ in request], [b for _, b in request])
        selected: np.ndarray = data[result]
        return selected

    def __setitem__(self, slicing: Any, array_data: Any) -> None:
        """``accessor[:, x0:x1, y0:y1, z0:z1] = data``: a box of all channels, steps not allowed."""
        request, _ = self._resolve(slicing, writing=True)
        shape = tuple(b - a for a, b in request)
        data = np.asarray(array_data)
        if data.size != math.prod(shape):
            raise DvidInputError(
                f"the data (shape {data.shape}) does not fill the selection {slicing!r}, of shape {shape}"
            )
        if min(shape[1:]) <= 0:
            return
        self.post_ndarray([a for a, _ in request], [b for _, b in request], data)

    def _resolve(self, slicing: Any, *, writing: bool) -> tuple[list[tuple[int, int]], tuple[Any, ...]]:
        """A key → the box to request (channel first) and the index into what comes back."""
        shape = self.shape
        items = _expand(slicing, len(shape))
        channels = int(shape[0] or 0)
        request: list[tuple[int, int]] = [(0, channels)]
        result: list[Any] = [_channel_key(items[0], channels, writing)]
        for axis, item in enumerate(items[1:], start=1):
            name = self.axiskeys[axis]
            if isinstance(item, slice):
                step = 1 if item.step is None else _integer(item.step, f"the step along {name}")
                if step <= 0 or (writing and step != 1):
                    what = "writes take whole boxes (no steps)" if writing else "steps must be positive"
                    raise DvidInputError(f"{what}: axis {name} has step {item.step}")
                start = self._open_start(axis) if item.start is None else _integer(item.start, f"a {name} bound")
                stop = self._open_stop(axis) if item.stop is None else _integer(item.stop, f"a {name} bound")
                request.append((start, max(start, stop)))
                result.append(slice(0, max(0, stop - start), None if step == 1 else step))
            else:
                index = _integer(item, f"the {name} index")
                request.append((index, index + 1))
                result.append(0)
        return request, tuple(result)

    def _open_start(self, axis: int) -> int:
        low = self.minindex[axis]
        return low if low is not None and low < 0 else 0

    def _open_stop(self, axis: int) -> int:
        high = self.shape[axis]
        if high is None:
            raise DvidInputError(
                f"{self.data_name!r} has no bounding box along {self.axiskeys[axis]}, so an open stop "
                "(':' or 'a:') cannot be resolved; give the stop coordinate"
            )
        return int(high)


class RoiMaskAccessor(VoxelsAccessor):
    """An roi instance read as a ``(1, x, y, z)`` uint8 volume: 1 inside, 0 outside (pydvid's ``RoiMaskAccessor``).

    It has no bounding box: give explicit coordinates. It cannot be written (an roi is
    made of blocks: ``node.roi(name).post_mask`` / ``post_blocks``).
    """

    def __init__(self, connection: Any, uuid: str, data_name: str, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("_metadata") is not None or kwargs.get("_access_type", "mask") != "mask":
            raise DvidInputError("RoiMaskAccessor sets its own metadata and access type")
        kwargs["_metadata"] = mask_metadata()
        kwargs["_access_type"] = "mask"
        super().__init__(connection, uuid, data_name, *args, **kwargs)


# --------------------------------------------------------------- helpers
def _resolve_throttle(query_args: Mapping[str, Any], throttle: bool | None) -> bool:
    """pydvid's rule: ``throttle`` may be given as the keyword or as ``query_args["throttle"]``, consistently."""
    if "throttle" not in query_args:
        return bool(throttle)
    given = str(query_args["throttle"]).lower()
    if given not in ("on", "off"):
        raise DvidInputError(f"query_args['throttle'] is 'on' or 'off', got {query_args['throttle']!r}")
    wanted = given == "on"
    if throttle is not None and bool(throttle) != wanted:
        raise DvidInputError(f"throttle={throttle!r} contradicts query_args['throttle']={query_args['throttle']!r}")
    return wanted


def _expand(slicing: Any, ndim: int) -> list[Any]:
    """A key as exactly ``ndim`` items (Ellipsis and missing trailing axes filled with ':')."""
    if isinstance(slicing, list):
        slicing = tuple(slicing)  # pydvid read a list as a tuple of indices
    items = list(slicing) if isinstance(slicing, tuple) else [slicing]
    if any(item is None for item in items):
        raise DvidInputError("np.newaxis / None is not supported; add axes to the result instead")
    ellipses = sum(item is Ellipsis for item in items)
    if ellipses > 1:
        raise AccessorIndexError("an index can only have a single ellipsis ('...')")
    if ellipses:
        at = next(i for i, item in enumerate(items) if item is Ellipsis)
        items[at : at + 1] = [slice(None)] * max(ndim - (len(items) - 1), 0)
    if len(items) > ndim:
        raise AccessorIndexError(
            f"too many indices: the accessor has {ndim} axes (c, x, y, z: the channel first), got {len(items)}"
        )
    return items + [slice(None)] * (ndim - len(items))


def _channel_key(item: Any, channels: int, writing: bool) -> Any:
    """The channel part of a key, applied to the all-channel array that comes back."""
    if writing:
        whole = isinstance(item, slice) and item.step in (None, 1)
        if whole and item.start in (None, 0) and item.stop in (None, channels):
            return slice(None)
        raise DvidInputError(
            f"writes include all {channels} channel(s): index the channel axis with ':' (got {item!r})"
        )
    if isinstance(item, slice):
        for bound in (item.start, item.stop):
            if bound is not None and not -channels <= _integer(bound, "a channel bound") <= channels:
                raise AccessorIndexError(
                    f"channel bound {bound} is outside the {channels} channel(s) (the first index is the channel)"
                )
        return item
    index = _integer(item, "the channel index")
    if not -channels <= index < channels:
        raise AccessorIndexError(f"channel index {index} is out of range for {channels} channel(s)")
    return index


def _integer(value: Any, what: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise DvidInputError(f"{what} must be an integer, not a boolean")
    try:
        return operator.index(value)
    except TypeError:
        raise DvidInputError(
            f"{what} must be an integer (a DVID coordinate), got {value!r}; fancy and float indices are not supported"
        ) from None
