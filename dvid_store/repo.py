"""Repo and version metadata as plain, typed Python objects (UUIDs, not DVID's version ids)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RepoInfo", "VersionInfo"]


@dataclass(frozen=True)
class VersionInfo:
    """One node of a repo's version DAG.

    Attributes
    ----------
    uuid : str
        Full UUID of the node.
    branch : str
        Branch name; ``"master"`` for DVID's unnamed default branch.
    parents, children : tuple of str
        UUIDs of the neighbouring nodes.
    """

    uuid: str
    branch: str
    note: str
    locked: bool
    parents: tuple[str, ...]
    children: tuple[str, ...]
    created: str
    updated: str
    log: tuple[str, ...] = ()


@dataclass(frozen=True)
class RepoInfo:
    """A repo: alias, description, data instances and version DAG.

    Attributes
    ----------
    root : str
        UUID of the root node.
    instances : dict of str to str
        Data instance name → DVID type name (e.g. ``{"segmentation": "labelmap"}``).
    versions : dict of str to VersionInfo
        Every node of the DAG by UUID.
    raw : dict
        DVID's JSON as received, for anything not mapped here.
    """

    root: str
    alias: str
    description: str
    instances: dict[str, str]
    versions: dict[str, VersionInfo]
    log: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def leaves(self) -> list[str]:
        """UUIDs of nodes without children, oldest first."""
        return [v.uuid for v in self._by_age() if not v.children]

    def _by_age(self) -> list[VersionInfo]:
        return sorted(self.versions.values(), key=lambda v: (v.created, v.uuid))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RepoInfo:
        """Build from DVID's repo JSON, mapping integer version ids to UUIDs."""
        nodes = (data.get("DAG") or {}).get("Nodes") or {}
        by_version = {int(n["VersionID"]): n["UUID"] for n in nodes.values()}
        versions = {
            n["UUID"]: VersionInfo(
                uuid=n["UUID"],
                branch=n.get("Branch") or "master",
                note=n.get("Note") or "",
                locked=bool(n.get("Locked")),
                parents=tuple(by_version[p] for p in n.get("Parents") or () if p in by_version),
                children=tuple(by_version[c] for c in n.get("Children") or () if c in by_version),
                created=n.get("Created") or "",
                updated=n.get("Updated") or "",
                log=tuple(n.get("Log") or ()),
            )
            for n in nodes.values()
        }
        instances = {
            name: ((info.get("Base") or {}).get("TypeName") or "")
            for name, info in (data.get("DataInstances") or {}).items()
        }
        return cls(
            root=data.get("Root") or "",
            alias=data.get("Alias") or "",
            description=data.get("Description") or "",
            instances=instances,
            versions=versions,
            log=tuple(data.get("Log") or ()),
            raw=data,
        )
