"""``info`` and ``ls``: what a server, a node or an instance holds.

``info`` describes the thing a URL names (a server and its repos; a node, its repo's
instances and version DAG; an instance's type, geometry and pyramid). ``ls`` lists
what is inside it, one entry per line, as URLs that other commands take.
``--json`` prints DVID's own JSON instead.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from ..blocks import LABEL_TYPES, VOXEL_TYPES
from ..errors import UnsupportedError
from ..repo import RepoInfo
from .common import Context, Target, format_box, format_zyx, parse_target

__all__ = ["run_info", "run_ls"]


def _dump(ctx: Context, data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str), file=ctx.out)


def _out(ctx: Context, *lines: str) -> None:
    for line in lines:
        print(line, file=ctx.out)


def run_info(ctx: Context, args: argparse.Namespace) -> int:
    """``dvid-store info URL``."""
    target = parse_target(args.url)
    if target.kind == "server":
        _server_info(ctx, target, args.json)
    elif target.kind == "node":
        _node_info(ctx, target, args.json)
    else:
        _instance_info(ctx, target, args.json)
    return 0


def _server_info(ctx: Context, target: Target, as_json: bool) -> None:
    client = ctx.client(target.server)
    info = client.server_info()
    repos = client.repos()
    if as_json:
        _dump(ctx, {"server": info, "repos": {root: repo.raw for root, repo in repos.items()}})
        return
    _out(
        ctx,
        f"server {client.url}: DVID {info.get('DVID Version', '?')}, {info.get('Cores', '?')} cores, "
        f"storage: {info.get('Storage backend', '?')}, up {info.get('Server uptime', '?')}",
    )
    if info.get("Note"):
        _out(ctx, f"  note: {info['Note']}")
    _out(ctx, f"{len(repos)} repo(s):")
    for root, repo in sorted(repos.items(), key=lambda item: item[1].alias):
        _out(
            ctx,
            f"  {root}  {repo.alias!r}: {len(repo.versions)} version(s), {len(repo.instances)} instance(s)"
            + (f" — {repo.description}" if repo.description else ""),
        )


def _node_info(ctx: Context, target: Target, as_json: bool) -> None:
    node = target.node(ctx)
    repo = node.repo_info()
    if as_json:
        _dump(ctx, repo.raw)
        return
    version = repo.versions[node.uuid]
    state = "committed (read-only)" if version.locked else "open (writable)"
    _out(
        ctx,
        f"node {node.uuid} [{version.branch}] {state} in repo {repo.alias!r} (root {repo.root})",
    )
    if version.note:
        _out(ctx, f"  note: {version.note}")
    if repo.description:
        _out(ctx, f"  repo description: {repo.description}")
    _out(ctx, f"instances ({len(repo.instances)}):")
    width = max((len(n) for n in repo.instances), default=0)
    for name, typename in sorted(repo.instances.items()):
        _out(ctx, f"  {name:<{width}}  {typename}")
    _out(ctx, f"versions ({len(repo.versions)}, oldest first; * = this node):")
    _versions(ctx, repo, node.uuid)


def _versions(ctx: Context, repo: RepoInfo, current: str) -> None:
    for version in sorted(repo.versions.values(), key=lambda v: (v.created, v.uuid)):
        mark = "*" if version.uuid == current else " "
        state = "committed" if version.locked else "open"
        parents = ", ".join(p[:8] for p in version.parents) or "-"
        note = f"  {version.note!r}" if version.note else ""
        _out(ctx, f" {mark} {version.uuid}  [{version.branch}] {state:<9} parents: {parents}{note}")


def _instance_info(ctx: Context, target: Target, as_json: bool) -> None:
    from ..layout import CHANNEL_NAMES, discover_layout

    node = target.node(ctx)
    assert target.instance is not None
    info = node.typeinfo(target.instance)
    if as_json:
        _dump(ctx, info)
        return
    base, extended = info.get("Base", {}), info.get("Extended", {}) or {}
    typename = base.get("TypeName", "?")
    _out(ctx, f"instance {target.instance!r}: {typename} on node {node.uuid} at {node.transport.base_url}")
    _out(ctx, f"  stored with: {base.get('Compression', '?')}; versioned: {base.get('Versioned', '?')}")
    if base.get("Syncs"):
        _out(ctx, f"  syncs: {', '.join(base['Syncs'])}")
    if base.get("Tags"):
        _out(ctx, f"  tags: {json.dumps(base['Tags'])}")
    if typename not in VOXEL_TYPES and typename not in LABEL_TYPES:
        for key, value in sorted(extended.items()):
            _out(ctx, f"  {key}: {json.dumps(value)}")
        return
    layout = discover_layout(node, target.instance, info=info)
    dtype = np.dtype(layout.dtype).name
    if layout.channel_shape:
        dtype += f" × {layout.channel_shape[0]} channels ({', '.join(CHANNEL_NAMES[layout.typename])})"
    _out(ctx, f"  voxels: {dtype}; blocks {format_zyx(layout.block_shape)} (z×y×x)")
    units = layout.units[0] if len(set(layout.units)) == 1 else "/".join(layout.units)
    _out(ctx, f"  voxel size: {format_zyx(layout.voxel_size)} {units}")
    if layout.min_point is None or layout.max_point is None:
        _out(ctx, "  extents: none yet (no data written)")
    else:
        stop = tuple(v + 1 for v in layout.max_point)
        shape = tuple(b - a for a, b in zip(layout.min_point, stop))
        box = format_box((layout.min_point, stop))  # type: ignore[arg-type]
        _out(ctx, f"  extents: box {box} (z,y,x, stop excluded), shape {format_zyx(shape)}")
    if typename in LABEL_TYPES:
        downres = extended.get("MaxDownresLevel", 0)
        _out(ctx, f"  max label: {extended.get('MaxRepoLabel', '?')}; downres levels: {downres}")
    _out(ctx, f"  levels ({len(layout.levels)}):")
    for level in layout.levels:
        where = f" (instance {level.instance!r})" if level.instance != layout.instance else ""
        _out(
            ctx,
            f"    {level.path}: ×{level.factor}{where} array shape {format_zyx(level.array_shape)} "
            f"from {','.join(map(str, level.origin))}",
        )
    _out(ctx, f"  open with: dvid_store.open_dask({target.instance_url(node.uuid)!r})")


def run_ls(ctx: Context, args: argparse.Namespace) -> int:
    """``dvid-store ls URL``."""
    target = parse_target(args.url)
    if target.kind == "server":
        client = ctx.client(target.server)
        for root, repo in sorted(client.repos().items(), key=lambda item: item[1].alias):
            leaves = ", ".join(u[:8] for u in repo.leaves)
            _out(ctx, f"dvid://{target.host}/{root}  {repo.alias}  ({len(repo.versions)} versions; leaves {leaves})")
        return 0
    node = target.node(ctx)
    if target.kind == "node":
        instances = node.instances()
        width = max((len(target.instance_url(node.uuid, n)) for n in instances), default=0)
        for name, typename in sorted(instances.items()):
            _out(ctx, f"{target.instance_url(node.uuid, name):<{width}}  {typename}")
        return 0
    assert target.instance is not None
    info = node.typeinfo(target.instance)
    typename = info["Base"]["TypeName"]
    if typename in VOXEL_TYPES or typename in LABEL_TYPES:
        from ..layout import discover_layout

        layout = discover_layout(node, target.instance, info=info)
        for level in layout.levels:
            url = target.instance_url(node.uuid) + f"/{level.path}"
            _out(ctx, f"{url}  {format_zyx(level.array_shape)} {np.dtype(layout.dtype).name} ×{level.factor}")
        return 0
    if typename == "keyvalue":
        keys = node.keyvalue(target.instance).keys()  # a KeyValue instance's keys, read from DVID
        for key in keys:
            _out(ctx, key)
        return 0
    raise UnsupportedError(
        f"{target.instance!r} is a {typename} instance; ls lists keyvalue keys and voxel levels — "
        f"use `dvid-store info {target.text}`"
    )
