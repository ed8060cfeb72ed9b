"""The fault matrix, multichannel part: rgba8blk volumes through dask, zarr and to_dvid, and
the node API's unaligned writes (``merge_edges=True``) of uint8blk and rgba8blk.

An rgba8blk voxel is 4 uint8 channels; every path here presents the volume as a
``(z, y, x, 4)`` uint8 array. The set-up is the grayscale one of ``fault_matrix.py``
with 4 channels and 16³ blocks (the same block layout in a quarter of the bytes of a
32³ uint8 one, as every trial's requests pass through the Python proxy): extents of
2 x 2 x 3 blocks starting below zero in z, some blocks never written (they read as 0).

The requests each path sends (from the proxy's log) are what the faults aim at:

* ``open_dask``: ``GET /specificblocks``, and ``GET /raw`` of the blocks a stream left
  out (absent, or cut off: a block stream has no end marker);
* zarr with the default chunks (one chunk holds the whole instance): one ``GET /raw``
  per chunk; with one block per chunk (``chunk_blocks=1``) the chunks of one event-loop
  turn are fetched together as ``GET /specificblocks``, the blocks missing from the
  stream by ``GET /raw``; a slice assignment reads the partly written chunks
  (``GET /raw``) and writes them back (``POST /raw``);
* ``to_dvid`` of an unaligned box: ``GET /specificblocks`` of the edge blocks (and ``GET
  /raw`` of those the stream left out), ``POST /raw``, and ``GET /specificblocks`` again
  to check the write;
* ``node.voxels(name).write(..., merge_edges=True)`` of an unaligned box: ``GET /raw``
  of each one-block-thick edge slab, one ``POST /raw`` of the enclosing aligned box,
  then ``GET /raw`` of each slab again (the read-back that catches another writer).

The machinery and the invariants are described in ``fault_matrix.py``; the table of
every trial is printed at the end of the session.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
import zarr
from fault_matrix import (
    CORRECT,
    GRAY_ABSENT,
    GRAY_BLOCK,
    LOST,
    READ_KINDS,
    SOME_PERSISTENT,
    SOME_PERSISTENT_WRITES,
    TOKEN,
    WRITE_RIDES,
    Env,
    Judge,
    Op,
    WriteState,
    create,
    fill,
    inside,
    read_judge,
    run_matrix,
    seed_of,
    shape_of,
    short_defaults,
    truth,
    write_judge,
    write_outcome,
    write_setup,
)

from dvid_store.dask import open_dask, to_dvid
from dvid_store.zarr import DvidStore

CHANNELS = 4
RGBA_BLOCK = (16, 16, 16)
RGBA_BOX = ((-16, 0, 16), (16, 32, 64))  # 2 x 2 x 3 blocks, z below zero
RGBA_ABSENT = GRAY_ABSENT  # the same block coordinates as the grayscale set-up's
RGBA_UNALIGNED = ((-13, 3, 23), (10, 30, 58))  # no face on the block grid
#: Unaligned boxes whose start is off the grid in y and x, their stop in x only, and whose
#: z faces are on it: three edge slabs of different shapes, and a column of blocks (block
#: coordinates y = 1, x = 2) wholly inside the box, which a merge has no need to read.
GRAY_NODE_UNALIGNED = ((-32, 7, 40), (32, 64, 100))
RGBA_NODE_UNALIGNED = ((-16, 4, 20), (16, 32, 50))


# ------------------------------------------------------------ rgba8 on the server
def make_rgba(env: Env, name: str) -> np.ndarray:
    """An rgba8blk instance over ``RGBA_BOX``, random voxels, the ``RGBA_ABSENT`` blocks never written."""
    create(env.node, "rgba8blk", name, RGBA_BOX, block_size=RGBA_BLOCK, voxel_size=(40, 8, 4))
    shape = shape_of(RGBA_BOX) + (CHANNELS,)
    data = np.random.default_rng(seed_of(name)).integers(1, 256, shape, dtype=np.uint8)
    return fill(env.node, name, data, RGBA_BOX, RGBA_BLOCK, RGBA_ABSENT)


def rgba_write_setup(box: Any) -> Callable[[Env, str], WriteState]:
    """Old rgba voxels on the server, and the ``(z, y, x, 4)`` voxels a write of ``box`` is to store."""

    def setup(env: Env, name: str) -> WriteState:
        old = make_rgba(env, name)
        data = np.random.default_rng(seed_of(name) + 1).integers(1, 256, shape_of(box) + (CHANNELS,), dtype=np.uint8)
        new = old.copy()
        new[inside(box, RGBA_BOX)] = data
        return WriteState(old, new, box, data)

    return setup


def rgba_write_judge(
    env: Env, name: str, state: WriteState, result: Any, error: BaseException | None
) -> tuple[str, list[str]]:
    """(b): the whole instance, every channel, read straight from the server (not through the proxy)."""
    stored = env.node.voxels(name).read(RGBA_BOX)
    if stored.shape != state.old.shape or stored.dtype != np.uint8:
        return LOST, [f"the server's instance reads as {stored.shape} {stored.dtype}, not {state.old.shape} uint8"]
    return write_outcome(stored, state, RGBA_BLOCK, RGBA_BOX[0], error)


# ================================================================ the paths
# ---- reads: open_dask and zarr -------------------------------------------------------------------
def _dask(env: Env, name: str, state: Any) -> np.ndarray:
    return open_dask(env.pnode, name, chunks=(32, 32, 32)).compute()


def _zarr_url_read(env: Env, name: str, state: Any) -> np.ndarray:
    options = {"token": TOKEN, "app": env.app, "skip_instance_cache": True}
    return zarr.open(env.url(name), mode="r", storage_options=options)["0"][...]


def _zarr_blocks_read(env: Env, name: str, state: Any) -> np.ndarray:
    return zarr.open_array(DvidStore(env.pnode, name, scale=0, chunk_blocks=1), mode="r")[...]


READ_OPS = [
    Op("open_dask(rgba8blk).compute [specificblocks]", "mdg", make_rgba, _dask, read_judge(truth),
       "specificblocks", faults=READ_KINDS, persistent=SOME_PERSISTENT, shared=True),
    Op("open_dask(rgba8blk).compute [absent-block GET /raw]", "mdc", make_rgba, _dask, read_judge(truth),
       "raw", frozenset({"GET"}), faults=READ_KINDS, persistent=SOME_PERSISTENT, shared=True),
    # the default chunk holds the whole instance: one GET /raw, which DVID assembles
    Op('zarr.open("dvid://…")["0"][...] (rgba8blk) [GET /raw]', "mzu", make_rgba, _zarr_url_read,
       read_judge(truth), "raw", frozenset({"GET"}), faults=READ_KINDS, persistent=SOME_PERSISTENT, shared=True),
    Op("zarr.open_array(DvidStore(chunk_blocks=1))[...] (rgba8blk) [specificblocks]", "mzs", make_rgba,
       _zarr_blocks_read, read_judge(truth), "specificblocks", frozenset({"GET"}), faults=READ_KINDS,
       persistent=SOME_PERSISTENT, shared=True),
    Op("zarr.open_array(DvidStore(chunk_blocks=1))[...] (rgba8blk) [absent-block GET /raw]", "mzc", make_rgba,
       _zarr_blocks_read, read_judge(truth), "raw", frozenset({"GET"}), faults=READ_KINDS,
       persistent=SOME_PERSISTENT, shared=True),
]




# ---- writes: zarr slice assignment and to_dvid ---------------------------------------------------
def _zarr_write(env: Env, name: str, state: WriteState) -> None:
    array = zarr.open_array(DvidStore(env.pnode, name, scale=0), mode="r+")
    array[inside(state.box, RGBA_BOX)] = state.data  # a partial chunk: zarr reads, merges, writes it


def _zarr_channel_setup(env: Env, name: str) -> WriteState:
    """A write of one channel (green) of an unaligned box: the other channels keep their values."""
    state = rgba_write_setup(RGBA_UNALIGNED)(env, name)
    state.new = state.old.copy()
    state.new[(*inside(RGBA_UNALIGNED, RGBA_BOX), 1)] = state.data[..., 1]
    return state


def _zarr_channel_write(env: Env, name: str, state: WriteState) -> None:
    array = zarr.open_array(DvidStore(env.pnode, name, scale=0), mode="r+")
    array[(*inside(state.box, RGBA_BOX), 1)] = state.data[..., 1]


def _to_dvid(env: Env, name: str, state: WriteState) -> Any:
    # dask chunks that split blocks and the channel axis: to_dvid rechunks them to whole blocks
    return to_dvid(da.from_array(state.data, chunks=(12, 16, 20, 3)), env.pnode, name, offset=state.box[0])


def _to_dvid_one_chunk(env: Env, name: str, state: WriteState) -> Any:
    # a numpy array is one chunk: edge-block reads, one POST /raw, then the read-back check
    return to_dvid(state.data, env.pnode, name, offset=state.box[0])


RGBA_UNALIGNED_SETUP = rgba_write_setup(RGBA_UNALIGNED)

WRITE_OPS = [
    Op("zarr slice assignment, unaligned (rgba8blk) [partial-chunk reads]", "mzwr", RGBA_UNALIGNED_SETUP, _zarr_write,
       rgba_write_judge, "raw", frozenset({"GET"}), faults=READ_KINDS, persistent=SOME_PERSISTENT),
    Op("zarr slice assignment, unaligned (rgba8blk) [POST /raw]", "mzww", RGBA_UNALIGNED_SETUP, _zarr_write,
       rgba_write_judge, "raw", frozenset({"POST"}), WRITE_RIDES, persistent=SOME_PERSISTENT_WRITES),
    Op("zarr one-channel assignment z[..., 1] = (rgba8blk) [POST /raw]", "mzcw", _zarr_channel_setup,
       _zarr_channel_write, rgba_write_judge, "raw", frozenset({"POST"}), WRITE_RIDES,
       persistent=SOME_PERSISTENT_WRITES),
    Op("to_dvid unaligned (rgba8blk) [edge-block reads]", "mtr", RGBA_UNALIGNED_SETUP, _to_dvid, rgba_write_judge,
       "specificblocks", frozenset({"GET"}), faults=READ_KINDS, persistent=SOME_PERSISTENT),
    Op("to_dvid unaligned (rgba8blk) [absent edge-block GET /raw]", "mtc", RGBA_UNALIGNED_SETUP, _to_dvid,
       rgba_write_judge, "raw", frozenset({"GET"}), faults=READ_KINDS, persistent=SOME_PERSISTENT),
    Op("to_dvid unaligned (rgba8blk) [POST /raw]", "mtw", RGBA_UNALIGNED_SETUP, _to_dvid, rgba_write_judge, "raw",
       frozenset({"POST"}), WRITE_RIDES, persistent=SOME_PERSISTENT_WRITES),
    Op("to_dvid unaligned (rgba8blk) [read-back check after the write]", "mtv", RGBA_UNALIGNED_SETUP,
       _to_dvid_one_chunk, rgba_write_judge, "specificblocks", frozenset({"GET"}), faults=READ_KINDS,
       persistent=SOME_PERSISTENT, first=2),
]




# ---- the node API: unaligned writes that merge their edge blocks --------------------------------
#: GET /raw requests of one merge before its POST: one per edge slab of the *_NODE_UNALIGNED boxes.
EDGE_SLABS = 3


def _merge_write(env: Env, name: str, state: WriteState) -> None:
    env.pnode.voxels(name).write(state.data, state.box[0], merge_edges=True)


def _merge_ops(kind: str, tag: str, setup: Callable[[Env, str], WriteState], judge: Judge) -> list[Op]:
    what = f"node.voxels().write(unaligned, merge_edges=True) ({kind})"
    return [
        Op(f"{what} [edge-slab reads]", f"{tag}r", setup, _merge_write, judge, "raw", frozenset({"GET"}),
           faults=READ_KINDS, persistent=SOME_PERSISTENT),
        Op(f"{what} [POST /raw]", f"{tag}w", setup, _merge_write, judge, "raw", frozenset({"POST"}), WRITE_RIDES,
           persistent=SOME_PERSISTENT_WRITES),
        Op(f"{what} [read-back after the write]", f"{tag}v", setup, _merge_write, judge, "raw", frozenset({"GET"}),
           faults=READ_KINDS, persistent=SOME_PERSISTENT, first=EDGE_SLABS + 1),
    ]


MERGE_OPS = [
    *_merge_ops("uint8blk", "nmg", write_setup("gray", GRAY_NODE_UNALIGNED), write_judge("gray")),
    *_merge_ops("rgba8blk", "nmc", rgba_write_setup(RGBA_NODE_UNALIGNED), rgba_write_judge),
]


def test_rgba_and_merge_edges(env: Env) -> None:
    # one run for all three groups: the trials overlap, instead of each group waiting for its slowest
    with short_defaults():
        run_matrix(env, [*READ_OPS, *WRITE_OPS, *MERGE_OPS])


# ---- what the faults aim at ---------------------------------------------------------------------
_RAW = re.compile(r"/raw/0_1_2/(-?\d+)_(-?\d+)_(-?\d+)/(-?\d+)_(-?\d+)_(-?\d+)")


def _sent(env: Env, name: str) -> list[tuple[str, str, Any]]:
    """The requests of instance ``name`` in the proxy's log: (method, endpoint, box of a /raw or None)."""
    out: list[tuple[str, str, Any]] = []
    for record in env.proxy.log:
        path = record.path.split("?")[0]
        if f"/{name}/" not in path:
            continue
        endpoint = path.split(f"/{name}/", 1)[1].split("/")[0]
        raw = _RAW.search(path)
        box = None
        if raw:
            sx, sy, sz, ox, oy, oz = map(int, raw.groups())
            box = ((oz, oy, ox), (oz + sz, oy + sy, ox + sx))
        out.append((record.method, endpoint, box))
    return out


def test_the_requests_the_faults_aim_at(env: Env) -> None:
    """Without faults, each path sends the requests its ops aim at, in the order their ``first`` assumes."""
    merges = (
        (write_setup("gray", GRAY_NODE_UNALIGNED), write_judge("gray"), GRAY_NODE_UNALIGNED, GRAY_BLOCK, "seqg"),
        (rgba_write_setup(RGBA_NODE_UNALIGNED), rgba_write_judge, RGBA_NODE_UNALIGNED, RGBA_BLOCK, "seqc"),
    )
    for setup, judge, box, block, name in merges:
        state = setup(env, name)
        _merge_write(env, name, state)
        assert judge(env, name, state, None, None) == (CORRECT, [])
        sent = [(m, e) for m, e, _ in _sent(env, name) if e != "info"]
        assert sent == [("GET", "raw")] * EDGE_SLABS + [("POST", "raw")] + [("GET", "raw")] * EDGE_SLABS, sent
        reads = [b for m, e, b in _sent(env, name) if m == "GET" and e == "raw"]
        assert reads[:EDGE_SLABS] == reads[EDGE_SLABS:]  # the read-back reads the same slabs again
        inner = (box[0][0], block[1], 2 * block[2]), (box[1][0], 2 * block[1], 3 * block[2])  # wholly written
        assert all(a <= c and d <= b for a, b, c, d in zip(box[0], box[1], inner[0], inner[1]))
        assert not any(all(a < d and c < b for a, b, c, d in zip(r[0], r[1], inner[0], inner[1])) for r in reads)

    state = RGBA_UNALIGNED_SETUP(env, "seqt")
    _to_dvid_one_chunk(env, "seqt", state)
    # the edge blocks' stream lacks the absent ones, which GET /raw settles (absent, not cut off)
    assert [(m, e) for m, e, _ in _sent(env, "seqt") if e != "info"] == [
        ("GET", "specificblocks"), ("GET", "raw"), ("POST", "raw"), ("GET", "specificblocks")]

    make_rgba(env, "seqz")
    with short_defaults():
        data = _zarr_url_read(env, "seqz", None)
    assert data.shape == shape_of(RGBA_BOX) + (CHANNELS,)
    assert [(m, e, b) for m, e, b in _sent(env, "seqz") if e == "raw" or e == "specificblocks"] == [
        ("GET", "raw", RGBA_BOX)]  # one chunk holds the whole instance
