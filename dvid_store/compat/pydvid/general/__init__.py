"""pydvid's ``general`` package: ``from dvid_store.compat.pydvid.general import get_repos_info``."""

from .general import get_repos_info, get_server_info, get_server_types

__all__ = ["get_repos_info", "get_server_info", "get_server_types"]
