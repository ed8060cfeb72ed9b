"""The README's main job: a throwaway local DVID server, and what dvid_store does with it.

Run with ``ci/demo`` (installs everything first) or ``python -m dvid_store.demo``.
"""

from __future__ import annotations

import argparse
import json
import sys

from .testing import DvidServer


def run(out=sys.stdout) -> None:
    """Start a server, create a repo and versions, and print what the server reports."""
    with DvidServer() as server:
        client = server.client(app="dvid_store-demo")
        info = client.server_info()
        print(f"DVID {info['DVID Version']} is up at {server.url} "
              f"(storage: {info['Storage backend']}, {info['Cores']} cores)", file=out)
        node = client.create_repo("demo", "throwaway repo made by dvid_store's demo")
        node.create_instance("uint8blk", "grayscale", block_size=(32, 32, 32), voxel_size=(8, 8, 8))
        node.create_instance("labelmap", "segmentation", max_downres_level=2)
        node.commit("initial instances")
        child = node.new_version("first edits")
        repo = client.repo_info(child.uuid)
        print(f"repo {repo.alias!r}: root {repo.root}, instances {json.dumps(repo.instances)}", file=out)
        for version in repo.versions.values():
            state = "committed" if version.locked else "open"
            print(f"  version {version.uuid} [{version.branch}] {state}: {version.note!r}"
                  f" parents={list(version.parents)}", file=out)
        print(f"'{repo.root[:6]}:master' resolves to {client.resolve(repo.root[:6] + ':master')}", file=out)
    print("server stopped; its data directory is gone", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dvid_store.demo", description=__doc__)
    parser.parse_args(argv)
    run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
