"""``dvid-store demo``: the README's main job, on a throwaway local DVID server.

It starts :class:`~dvid_store.testing.DvidServer`, makes a repo, synthesises an EM-like
grayscale volume and a matching segmentation (numpy only), writes both through dask
(:func:`~dvid_store.to_dvid` into instances made by :func:`~dvid_store.create_array`),
reads them back lazily with :func:`~dvid_store.open_dask` and
:func:`~dvid_store.open_dataarray`, checks every voxel, commits, shows that the
committed node refuses writes, branches and edits the branch, prints throughput
figures, and saves an XY slice with the labels overlaid as a PNG (written by
:mod:`dvid_store.codecs.png`).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from ..errors import DvidError, LockedNodeError
from .common import Context, format_bytes, format_rate, format_zyx

__all__ = ["label_colours", "overlay_slice", "run_demo", "synthetic_em"]

#: Seed cells per axis are this many voxels apart (full resolution).
CELL_SPACING = 48


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise (FFT, periodic), scaled to unit standard deviation, float32."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    spectrum = np.fft.rfftn(noise)
    freqs = np.meshgrid(
        *[np.fft.fftfreq(n) for n in shape[:-1]], np.fft.rfftfreq(shape[-1]), indexing="ij", sparse=True
    )
    k2 = sum(f.astype(np.float32) ** 2 for f in freqs)
    spectrum *= np.exp(-2.0 * (np.pi * sigma) ** 2 * k2)
    field = np.fft.irfftn(spectrum, s=shape).astype(np.float32)
    field /= max(float(field.std()), 1e-6)
    return field


def _upsample2(a: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Nearest-neighbour ×2 on every axis, cropped to ``shape``."""
    up = np.broadcast_to(a[:, None, :, None, :, None], (a.shape[0], 2, a.shape[1], 2, a.shape[2], 2))
    return up.reshape(a.shape[0] * 2, a.shape[1] * 2, a.shape[2] * 2)[: shape[0], : shape[1], : shape[2]]


def _voronoi(shape: tuple[int, int, int], spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Cell index of every voxel: nearest seed of a jittered seed grid, on domain-warped coordinates.

    Only the 27 grid cells around a voxel can hold its nearest seed, so the loop runs
    27 times over whole arrays, never per voxel.
    """
    grid = tuple(int(np.ceil(n / spacing)) + 2 for n in shape)  # one spare cell on each side
    seeds = (np.stack(np.meshgrid(*[np.arange(g) - 1 for g in grid], indexing="ij"), -1)
             + rng.uniform(0.15, 0.85, (*grid, 3))) * spacing
    seed_axes = [np.ascontiguousarray(seeds[..., i].ravel(), dtype=np.float32) for i in range(3)]
    warp = [_smooth_noise(rng, shape, sigma=spacing / 3) * np.float32(spacing / 5) for _ in range(3)]
    coords = [
        np.arange(n, dtype=np.float32).reshape([-1 if a == i else 1 for a in range(3)]) for i, n in enumerate(shape)
    ]
    q = [coords[i] + warp[i] for i in range(3)]
    cell = [np.clip(np.floor(q[i] / np.float32(spacing)).astype(np.int32) + 1, 1, grid[i] - 2) for i in range(3)]
    home = (cell[0] * grid[1] + cell[1]) * grid[2] + cell[2]  # flat index of the voxel's own cell
    best = np.full(shape, np.inf, dtype=np.float32)
    owner = np.zeros(shape, dtype=np.int32)
    for dz in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                flat = home + ((dz * grid[1] + dy) * grid[2] + dx)
                d = np.square(q[0] - np.take(seed_axes[0], flat))
                d += np.square(q[1] - np.take(seed_axes[1], flat))
                d += np.square(q[2] - np.take(seed_axes[2], flat))
                closer = d < best
                np.minimum(best, d, out=best)
                np.copyto(owner, flat, where=closer)
    return owner


def synthetic_em(shape: tuple[int, int, int], seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """An EM-like grayscale volume and its segmentation, from numpy alone.

    Cells are a Voronoi tessellation of a jittered seed grid on domain-warped
    coordinates (so boundaries curve), computed at half resolution and upsampled.
    Grayscale: bright cytoplasm with per-cell tone and smooth texture, dark
    membranes on cell boundaries, dark vesicles, a light blur and shot-like noise.

    Parameters
    ----------
    shape : (nz, ny, nx)
        Volume shape in voxels.
    seed : int
        Random seed (the same seed gives the same volumes).

    Returns
    -------
    grayscale : numpy.ndarray
        uint8, ``shape``.
    labels : numpy.ndarray
        uint64, ``shape``; every cell a distinct id below 2**40, no background.
    """
    rng = np.random.default_rng(seed)
    half = tuple((n + 1) // 2 for n in shape)
    owner_half = _voronoi(half, CELL_SPACING / 2, rng)  # type: ignore[arg-type]
    cells, compact = np.unique(owner_half, return_inverse=True)
    compact = compact.reshape(half)
    # distinct random ids up to 2**40: uint64 labels, not just small integers
    ids = rng.permutation(np.unique(rng.integers(1, 2**40, size=2 * len(cells), dtype=np.uint64)))[: len(cells)]
    labels = _upsample2(ids[compact], shape)

    # membranes: voxels whose label differs from a neighbour's (2 voxels thick)
    membrane = np.zeros(shape, dtype=bool)
    for axis in range(3):
        front = [slice(None)] * 3
        back = [slice(None)] * 3
        front[axis], back[axis] = slice(1, None), slice(None, -1)
        edge = labels[tuple(front)] != labels[tuple(back)]
        membrane[tuple(front)] |= edge
        membrane[tuple(back)] |= edge
    tone = (rng.normal(0, 14, len(cells)).astype(np.float32))[compact]
    texture = _smooth_noise(rng, half, sigma=2.0) * 10
    gray_half = 168 + tone + texture
    gray = np.ascontiguousarray(_upsample2(gray_half, shape), dtype=np.float32)
    gray[membrane] = 55
    _vesicles(gray, rng)
    for axis in range(3):  # [1, 2, 1] / 4 blur along each axis softens edges like a point spread
        g = gray.swapaxes(0, axis)
        g[1:-1] = 0.25 * g[:-2] + 0.5 * g[1:-1] + 0.25 * g[2:]
    gray += rng.standard_normal(shape, dtype=np.float32) * 11
    return np.clip(gray, 0, 255).astype(np.uint8), np.ascontiguousarray(labels)


def _vesicles(gray: np.ndarray, rng: np.random.Generator) -> None:
    """Darken small balls (vesicles and organelle cross-sections), each on its own bounding box."""
    count = max(1, int(gray.size / 25_000))
    centres = rng.uniform(0, 1, (count, 3)) * np.array(gray.shape)
    radii = rng.uniform(2.0, 5.5, count)
    for c, r in zip(centres, radii):
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, gray.shape)
        if np.any(hi <= lo):
            continue
        zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        d2 = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
        view = gray[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        ring = (d2 <= r * r) & (d2 >= (r - 1.4) ** 2)
        view[ring] = 70
        view[d2 < (r - 1.4) ** 2] -= 30


def label_colours(labels: np.ndarray) -> np.ndarray:
    """A bright, stable RGB colour (uint8) per label id, from a 64-bit hash of the id."""
    h = labels.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):  # splitmix64 relies on wrap-around
        h += np.uint64(0x9E3779B97F4A7C15)
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(255) for s in (0, 21, 42)], -1).astype(np.float32)
    rgb = 70 + rgb * (185 / 255)  # keep colours away from black
    return rgb.astype(np.uint8)


def overlay_slice(gray: np.ndarray, labels: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """An XY slice as RGB: grayscale with each label's colour blended in (label 0 left grey).

    Parameters
    ----------
    gray : numpy.ndarray
        2-d uint8 slice (y, x).
    labels : numpy.ndarray
        2-d label ids (y, x), same shape.
    alpha : float
        Opacity of the label colours.

    Returns
    -------
    numpy.ndarray
        (y, x, 3) uint8.
    """
    base = np.repeat(gray[..., None].astype(np.float32), 3, axis=-1)
    colour = label_colours(labels).astype(np.float32)
    mix = np.where((labels != 0)[..., None], (1 - alpha) * base + alpha * colour, base)
    return np.clip(mix + 0.5, 0, 255).astype(np.uint8)


def _merge(labels: np.ndarray, keep: int, gone: int, block: int) -> tuple[np.ndarray, tuple]:
    """The block-aligned box around label ``gone``, with ``gone`` relabelled ``keep``."""
    where = np.nonzero(labels == gone)
    start = tuple(int(w.min()) // block * block for w in where)
    stop = tuple(min(n, -(-(int(w.max()) + 1) // block) * block) for w, n in zip(where, labels.shape))
    part = labels[tuple(slice(a, b) for a, b in zip(start, stop))]
    return np.where(part == gone, keep, part), (start, stop)


def run_demo(ctx: Context, args: argparse.Namespace) -> int:
    """``dvid-store demo``."""
    import dask
    import dask.array as da

    from .. import create_array, open_dask, to_dvid
    from ..codecs.labelblock import load_label_block_decoder
    from ..codecs.png import encode_png
    from ..testing import DvidServer
    from ..xarray_backend import open_dataarray

    say = ctx.say
    n = int(args.size)
    if n < 64:
        raise DvidError(f"--size {n} is too small for a meaningful demo; use 64 or more")
    shape = (n, n, n)
    workers = args.workers or os.cpu_count() or 1
    started = time.perf_counter()

    t = time.perf_counter()
    gray, labels = synthetic_em(shape, seed=args.seed)
    n_cells = len(np.unique(labels))
    say(f"synthesised a {format_zyx(shape)} EM-like grayscale volume and a {n_cells}-cell segmentation "
        f"with numpy in {time.perf_counter() - t:.2f} s")

    with DvidServer() as server, dask.config.set(scheduler="threads", num_workers=workers):
        client = server.client(app="dvid-store-demo", user=ctx.user)
        info = client.server_info()
        say(f"DVID {info['DVID Version']} is up at {server.url} (throwaway; {info['Cores']} cores, "
            f"data in {server.directory})")
        node = client.create_repo("demo", "throwaway repo made by dvid-store demo")
        host = server.url.split("://", 1)[1]
        gray_url = f"dvid://{host}/{node.uuid}/grayscale"
        seg_url = f"dvid://{host}/{node.uuid}/segmentation"
        create_array(node, "grayscale", shape, "uint8", voxel_size=8.0)
        create_array(node, "segmentation", shape, "uint64", scales=2, voxel_size=8.0)
        say(f"repo 'demo', root node {node.uuid}: uint8blk 'grayscale' (32³ blocks) and labelmap "
            f"'segmentation' (64³ blocks, 2 lower scales), 8 nm voxels")

        # ---------------------------------------------------------------- writes
        chunks = (64, n, n)
        t = time.perf_counter()
        to_dvid(da.from_array(gray, chunks=chunks), gray_url)
        dt = time.perf_counter() - t
        say(f"wrote grayscale    {format_bytes(gray.nbytes):>9} through dask in {dt:5.2f} s: "
            f"{format_rate(gray.nbytes, dt)} ({workers} threads)")
        t = time.perf_counter()
        to_dvid(da.from_array(labels, chunks=chunks), seg_url)
        dt = time.perf_counter() - t
        say(f"wrote segmentation {format_bytes(labels.nbytes):>9} through dask in {dt:5.2f} s: "
            f"{format_rate(labels.nbytes, dt)} (DVID also built scales 1 and 2)")

        # ---------------------------------------------------------------- lazy reads
        t = time.perf_counter()
        decoder = load_label_block_decoder()
        say(f"label-block decoder: {decoder}, loaded in {time.perf_counter() - t:.2f} s (once per process)")
        g = open_dask(gray_url)
        s = open_dask(seg_url)
        say(f"open_dask: grayscale {g.dtype} {format_zyx(g.shape)} in {g.npartitions} chunk(s) of "
            f"{format_zyx(g.chunksize)}; segmentation {s.dtype} in {s.npartitions} chunk(s) — nothing read yet")
        for name, lazy, expected in (("grayscale", g, gray), ("segmentation", s, labels)):
            t = time.perf_counter()
            back = lazy.compute()
            dt = time.perf_counter() - t
            if not np.array_equal(back, expected):
                raise DvidError(f"{name} read back differs from what was written")
            say(f"read {name:<12} {format_bytes(back.nbytes):>9} back in {dt:5.2f} s: "
                f"{format_rate(back.nbytes, dt)} — identical to what was written")
        low = open_dask(seg_url, scale=2)
        say(f"segmentation scale 2 (DVID's down-sampling): {format_zyx(low.shape)}, "
            f"{len(np.unique(low.compute()))} labels")

        xa = open_dataarray(gray_url)
        zc = float(xa.z[n // 2])
        plane = xa.sel(z=zc)
        t = time.perf_counter()
        values = plane.values
        dt = time.perf_counter() - t
        if not np.array_equal(values, gray[n // 2]):
            raise DvidError("the xarray slice differs from what was written")
        seg_xa = open_dataarray(seg_url, chunks={})
        region = seg_xa.sel(y=slice(0, 392), x=slice(0, 392))  # nanometers, both ends in: voxels 0..49
        if not np.array_equal(region.values, labels[:, :50, :50]):
            raise DvidError("the xarray selection of the segmentation differs from what was written")
        say(f"open_dataarray: {xa.name} {dict(xa.sizes)}, z from {float(xa.z[0]):g} to {float(xa.z[-1]):g} "
            f"{xa.z.attrs.get('units', '')}; .sel(z={zc:g}) read one XY plane in {dt * 1000:.0f} ms")
        say(f"open_dataarray(chunks={{}}): segmentation as {seg_xa.data.npartitions} dask chunks; "
            f".sel(y=slice(0, 392), x=slice(0, 392)) (nm) matches the written labels")

        # ---------------------------------------------------------------- versions
        node.commit("synthetic grayscale and segmentation")
        try:
            to_dvid(labels[:64, :64, :64], seg_url)
            raise DvidError("DVID accepted a write to a committed node")
        except LockedNodeError:
            say(f"committed node {node.uuid[:8]}: writing to it is refused (LockedNodeError), nothing sent")
        branch = node.branch("proofreading", "merge two cells")
        branch_url = f"dvid://{host}/{branch.uuid}/segmentation"
        z = n // 2
        row = labels[z, n // 2]
        a = row[n // 2]
        b = row[row != a][0]
        edit, box = _merge(labels, a, b, block=64)
        changed = int(np.count_nonzero(edit != labels[tuple(slice(lo, hi) for lo, hi in zip(*box))]))
        t = time.perf_counter()
        to_dvid(da.from_array(edit, chunks=64), branch_url, offset=box[0])
        dt = time.perf_counter() - t
        on_branch = open_dask(branch_url)[z].compute()
        on_master = open_dask(f"dvid://{host}/{node.uuid[:8]}:master/segmentation")[z].compute()
        if not (np.array_equal(on_master, labels[z]) and np.all(on_branch[labels[z] == b] == a)):
            raise DvidError("the branch and the committed node do not hold what was written")
        say(f"branch 'proofreading' (node {branch.uuid[:8]}): merged cell {b} into {a} by writing the "
            f"{format_zyx(edit.shape)} box at {','.join(map(str, box[0]))} ({changed} voxels changed) in "
            f"{dt:.2f} s; the committed node still has both cells")

        # ---------------------------------------------------------------- picture
        plain = np.repeat(values[..., None], 3, axis=-1)
        gap = np.full((n, 4, 3), 255, dtype=np.uint8)
        picture = np.concatenate([plain, gap, overlay_slice(values, on_master)], axis=1)
        if args.out:
            out = Path(args.out).expanduser().resolve()
        else:  # not the current directory: for ci/demo that is the checkout, where it would be an untracked file
            from ..testing.server import cache_directory

            out = cache_directory() / "demo" / "demo-xy.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(encode_png(picture))
        say(f"saved {out} ({picture.shape[1]}×{picture.shape[0]} RGB): XY slice z={z} of the grayscale as "
            f"read back, alone and with its {len(np.unique(on_master))} labels overlaid (--out PATH saves "
            "it elsewhere)")
    say(f"server stopped, its data directory removed; demo took {time.perf_counter() - started:.1f} s")
    return 0
