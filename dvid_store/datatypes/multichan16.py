"""DVID's ``multichan16`` datatype: multi-channel fluorescence volumes loaded from V3D raw files.

What DVID v1.0.0 really offers (checked against it by tests/test_multichan16.py)
-------------------------------------------------------------------------------
DVID marks this type as unmaintained, and on v1.0.0 only a narrow path works:

* **Writing** has no HTTP endpoint: ``POST`` of slices and of volumes both answer
  400 "DVID does not yet support POST". The only way in is the RPC command
  ``dvid node <uuid> <name> load local <file.v3draw>``, which makes the *server*
  open a V3D raw file by path, so the file must be on the server's machine. The
  file must cover whole blocks from the origin (else 400 "non-block aligned
  geometry", after the channel count was already recorded). Every load then
  panics while building the RGBA composite of the first channels (its buffer is
  sized for one channel); the channels themselves are stored before that.
* **Reading** is 2-D only: ``GET <name>/<xy|xz|yz>/<size>/<offset>[/png|jpg]``;
  3-D ``GET`` answers 400. Channel suffixes (``<name>1``, ``<name>2``) described by
  DVID's help are refused by the router ("invalid data instance name"), so only the
  instance's own name can be read.
* With **one 8-bit channel** those reads return the stored voxels. With 16-bit
  voxels or several channels the first read crashes the whole server process.

:class:`Multichan16` therefore writes and reads single-channel uint8 volumes
(:meth:`Multichan16.load`, :meth:`Multichan16.read`, :meth:`Multichan16.slice`) and
refuses, before contacting the server, everything that would crash it or that
DVID cannot do, with :class:`~dvid_store.errors.UnsupportedError`. For real
multi-channel 16-bit data use a ``uint16blk`` instance per channel
(``node.voxels(name)``), which DVID supports fully.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import numpy as np

from ..codecs.png import decode_png
from ..errors import DvidError, DvidInputError, UnsupportedError
from ..geometry import as_box, as_zyx, box_shape, check_allocation, xyz_string
from ._progress import check_workers, map_threaded
from .base import Instance

__all__ = ["PLANES", "Multichan16", "MultichanLoadError", "v3draw_bytes"]

#: Slice orientations DVID serves, with the (row, column) axes of the returned image.
PLANES = {"xy": ("y", "x"), "xz": ("z", "x"), "yz": ("z", "y")}

_V3D_MAGIC = b"raw_image_stack_by_hpeng"
#: DVID's function for the RGBA composite; its panic in the command's answer shows that
#: the channel's blocks were all stored before it.
_COMPOSITE_STEP = "storeComposite"
_CRASH = (
    "DVID v1.0.0 stores multichan16 data with {what}, but its first read of such data crashes the "
    "whole server process (only single-channel uint8 data reads back). Store each channel in a "
    "uint16blk instance instead (node.voxels(name)), which DVID reads and writes fully."
)


class MultichanLoadError(DvidError):
    """The ``dvid ... load local`` command did not store the volume (its output is in the message)."""


def v3draw_bytes(volume: np.ndarray) -> bytes:
    """A V3D raw file of ``volume``, as DVID's multichan16 loader reads it.

    Parameters
    ----------
    volume : numpy.ndarray
        (z, y, x) for one channel or (c, z, y, x), uint8 or uint16.

    Returns
    -------
    bytes
        The 24-byte magic, ``L`` (little-endian), the voxel size as uint16 (1 or
        2), width, height, depth and channel count as uint32, then each channel's
        voxels, x fastest.
    """
    arr = np.asarray(volume)
    if arr.ndim == 3:
        arr = arr[np.newaxis]
    if arr.ndim != 4 or arr.dtype not in (np.uint8, np.uint16):
        raise DvidInputError(
            f"a V3D raw volume is a (z, y, x) or (c, z, y, x) uint8 or uint16 array, got {arr.dtype} {arr.shape}"
        )
    c, z, y, x = arr.shape
    header = _V3D_MAGIC + b"L" + struct.pack("<H", arr.dtype.itemsize) + struct.pack("<4I", x, y, z, c)
    return header + np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


class Multichan16(Instance):
    """A ``multichan16`` instance (see the module docstring for what DVID v1.0.0 allows).

    Parameters
    ----------
    node : Node
        The version to read from and write to.
    name : str
        The instance name.
    """

    typenames: ClassVar[tuple[str, ...]] = ("multichan16",)
    default_typename: ClassVar[str] = "multichan16"

    #: Seconds the ``dvid`` RPC client may take for one load.
    LOAD_TIMEOUT = 600.0

    # ---------------------------------------------------------------- metadata
    @property
    def block_shape(self) -> tuple[int, int, int]:
        """Block size in voxels, (z, y, x); loaded volumes must be whole blocks."""
        x, y, z = self.info["Extended"]["BlockSize"]
        return int(z), int(y), int(x)

    @property
    def channels(self) -> int:
        """How many channels DVID recorded for the instance (0 before any load)."""
        return int(self.info["Extended"].get("NumChannels") or 0)

    @property
    def channel_dtypes(self) -> list[np.dtype]:
        """The numpy dtype of each recorded channel."""
        values = self.info["Extended"].get("Values") or []
        return [np.dtype(v["DataType"]) for v in values]

    # ----------------------------------------------------------------- writing
    def load(
        self,
        volume: np.ndarray,
        *,
        rpc_address: str | None = None,
        dvid_binary: str | os.PathLike[str] | None = None,
        directory: str | os.PathLike[str] | None = None,
    ) -> None:
        """Store a single-channel uint8 volume at the origin, the one way DVID v1.0.0 accepts.

        Writes ``volume`` as a V3D raw file into ``directory`` and runs
        ``dvid -rpc=<address> node <uuid> <name> load local <file>``, which makes the
        server read the file by its path: the server must see ``directory`` at the
        same path (a server on this machine does). The panic DVID raises while
        building its RGBA composite after storing the channel is expected; the load
        counts as done when the command's answer shows DVID reached that composite
        step (so every block of the channel was stored) and the instance's ``/info``
        shows the channel and extent. The ``dvid`` command gives up waiting after
        20 s while the server goes on storing; that is reported, never taken as done.

        Parameters
        ----------
        volume : numpy.ndarray
            (z, y, x) uint8, each extent a whole number of blocks
            (:attr:`block_shape`); it lands at voxel (0, 0, 0).
        rpc_address : str, optional
            The server's RPC ``host:port``; default: the ``RPC Address`` of
            ``/api/server/info`` (its host replaced by the HTTP URL's when missing).
        dvid_binary : path, optional
            The ``dvid`` executable to send the command with; default ``$DVID_BIN``,
            else ``dvid`` on ``PATH`` (:func:`dvid_store.testing.find_dvid_binary`
            finds a checkout's).
        directory : path, optional
            Where the temporary V3D file goes (default: the system's temporary
            folder); it is deleted afterwards.

        Raises
        ------
        UnsupportedError
            uint16 voxels or several channels (DVID v1.0.0 stores them, then crashes
            at the first read), or any dtype DVID's loader cannot take.
        DvidInputError
            Not 3-D, or extents that are not whole blocks.
        LockedNodeError
            The node is committed.
        MultichanLoadError
            The command failed and the instance does not show the volume.
        """
        arr = np.asarray(volume)
        if arr.ndim == 4 and arr.shape[0] != 1:
            raise UnsupportedError(_CRASH.format(what=f"{arr.shape[0]} channels"))
        if arr.ndim == 4:
            arr = arr[0]
        if arr.dtype == np.uint16:
            raise UnsupportedError(_CRASH.format(what="uint16 voxels"))
        if arr.ndim != 3:
            raise DvidInputError(f"load() takes a (z, y, x) uint8 volume, got shape {arr.shape}")
        if arr.dtype != np.uint8:
            raise UnsupportedError(
                f"multichan16 on DVID v1.0.0 stores readable data only as one uint8 channel, got {arr.dtype}; "
                "convert it (e.g. volume.astype(np.uint8) after scaling) or use a uint16blk instance"
            )
        block = self.block_shape
        if arr.size == 0 or any(n % b for n, b in zip(arr.shape, block)):
            raise DvidInputError(
                f"DVID loads multichan16 volumes only as whole blocks from the origin: shape {arr.shape} "
                f"(z, y, x) must be a positive multiple of the block shape {block}; pad it with zeros"
            )
        self.require_writable("loading a multichan16 volume")
        address = rpc_address or self._rpc_address()
        binary = Path(dvid_binary) if dvid_binary is not None else _find_dvid()
        folder = Path(directory) if directory is not None else Path(tempfile.gettempdir())
        handle, raw = tempfile.mkstemp(suffix=".v3draw", prefix=f"dvid-store-{self.name}-", dir=folder)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(v3draw_bytes(arr))
            os.chmod(raw, 0o644)  # the server may run as another user
            command = [str(binary), f"-rpc={address}", "node", self.node.uuid, self.name, "load", "local", raw]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=self.LOAD_TIMEOUT, check=False)
            except (OSError, subprocess.TimeoutExpired) as error:
                raise MultichanLoadError(f"could not run {' '.join(command)}: {error}") from error
        finally:
            Path(raw).unlink(missing_ok=True)
        self.refresh()
        shape_xyz = [n - 1 for n in arr.shape[::-1]]
        extended = self.info["Extended"]
        output = (done.stdout + done.stderr).strip()
        # DVID sets the extent before the blocks are in; only the composite step, which
        # follows the channel's last stored block, proves the whole channel is there.
        reached_composite = _COMPOSITE_STEP in output or done.returncode == 0
        if reached_composite and self.channels == 1 and list(extended.get("MaxPoint") or []) == shape_xyz:
            return
        if not reached_composite and "timeout" in output.lower():
            raise MultichanLoadError(
                f"DVID did not answer loading {arr.shape} into multichan16 {self.name!r} in time and may still "
                f"be storing it; read it back (read() or slice()) before relying on it. `{' '.join(command)}` "
                f"exited {done.returncode}: {output[:2000]}"
            )
        raise MultichanLoadError(
            f"loading {arr.shape} into multichan16 {self.name!r} did not store it (the instance shows "
            f"{self.channels} channel(s), MaxPoint {extended.get('MaxPoint')}); `{' '.join(command)}` "
            f"exited {done.returncode}: {output[:2000]}"
        )

    def _rpc_address(self) -> str:
        info = self.node.client.server_info()
        address = str(info.get("RPC Address") or "")
        if not address:
            raise DvidInputError(
                f"{self.node.client.url} does not report its RPC address; pass rpc_address='host:port'"
            )
        host, _, port = address.rpartition(":")
        if not host:
            host = urlsplit(self.node.client.url).hostname or "localhost"
        return f"{host}:{port}"

    # ----------------------------------------------------------------- reading
    def slice(self, plane: str, offset: Sequence[int], shape: Sequence[int]) -> np.ndarray:
        """One 2-D slice of the stored channel (``GET <name>/<plane>/<size>/<offset>/png``).

        Parameters
        ----------
        plane : {"xy", "xz", "yz"}
            Orientation.
        offset : (z, y, x)
            Voxel at the slice's first row and column.
        shape : (rows, columns)
            Size of the image: (y, x) for ``"xy"``, (z, x) for ``"xz"``, (z, y) for
            ``"yz"`` (see :data:`PLANES`).

        Returns
        -------
        numpy.ndarray
            uint8 array of ``shape``; voxels never loaded read 0.

        Raises
        ------
        DvidInputError
            Unknown plane, bad shape, or nothing loaded yet.
        UnsupportedError
            The stored data is uint16 or multi-channel (reading it crashes DVID v1.0.0).
        """
        self._check_readable(refresh=True)
        return self._slice(plane, as_zyx(offset, "slice offset"), shape)

    def read(self, box: Sequence[Sequence[int]] | np.ndarray, *, workers: int = 4) -> np.ndarray:
        """A (z, y, x) uint8 volume, one ``xy`` slice per plane (DVID has no 3-D read), in parallel.

        Parameters
        ----------
        box : ((z0, y0, x0), (z1, y1, x1))
            Half-open voxel box; anything, also outside the loaded extent (zeros there).
        workers : int
            Slices fetched at once.

        Returns
        -------
        numpy.ndarray
            uint8 array of the box's shape.

        Raises
        ------
        DvidInputError
            Nothing loaded yet, or a bad box.
        UnsupportedError
            The stored data is uint16 or multi-channel (reading it crashes DVID v1.0.0).
        """
        start, stop = as_box(box)
        shape = box_shape((start, stop))
        check_allocation(shape, np.uint8, f"multichan16 {self.name!r} box {start}-{stop}")
        check_workers(workers)  # before the request below
        self._check_readable(refresh=True)
        out = np.empty(shape, dtype=np.uint8)

        def plane(z: int) -> None:
            out[z - start[0]] = self._slice("xy", (z, start[1], start[2]), shape[1:])

        map_threaded(plane, range(start[0], stop[0]), workers, "planes")
        return out

    def _check_readable(self, *, refresh: bool) -> None:
        if refresh:
            self.refresh()
        dtypes = self.channel_dtypes
        if self.channels == 0 or not dtypes:
            raise DvidInputError(f"multichan16 {self.name!r} holds no data yet; load() a volume first")
        if len(dtypes) > 1:
            raise UnsupportedError(_CRASH.format(what=f"{len(dtypes)} channels"))
        if dtypes[0] != np.uint8:
            raise UnsupportedError(_CRASH.format(what=f"{dtypes[0]} voxels"))

    def _slice(self, plane: str, offset: tuple[int, int, int], shape: Sequence[int]) -> np.ndarray:
        if plane not in PLANES:
            raise DvidInputError(f"plane must be one of {', '.join(PLANES)}, got {plane!r}")
        dims = [int(v) for v in shape] if len(shape) == 2 else []
        if len(dims) != 2 or min(dims) < 1:
            raise DvidInputError(f"shape must be 2 positive sizes (rows, columns) for {plane!r}, got {shape!r}")
        rows, cols = dims
        size = f"{cols}_{rows}"  # DVID: width (first axis of the plane) then height
        answer = self.transport.request("GET", self.path(plane, size, xyz_string(offset), "png"))
        image = decode_png(answer.content)
        if image.shape != (rows, cols):
            raise DvidError(
                f"multichan16 {self.name!r} answered a {image.shape} image for a {plane} slice of {(rows, cols)}"
            )
        return np.ascontiguousarray(image, dtype=np.uint8)


def _find_dvid() -> Path:
    """``$DVID_BIN``, else ``dvid`` on ``PATH``: the node API does not reach up into the test support."""
    explicit = os.environ.get("DVID_BIN")
    found = explicit or shutil.which("dvid")
    if not found:
        raise DvidInputError(
            "loading a multichan16 volume runs the dvid command, which is neither $DVID_BIN nor on PATH; "
            "pass dvid_binary= (a checkout's is dvid_store.testing.find_dvid_binary())"
        )
    return Path(found)
