"""find_dvid_binary: $DVID_BIN, the checkout's .dvid/bin/dvid, PATH, then the user's cache.

An installed (non-editable) dvid_store has no checkout next to it: it must find the
binary that ``ci/install-dvid`` cached in
``${DVID_STORE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/dvid_store}/dvid-v1.0.0/dvid``.
Each test runs in a fake world: HOME, PATH and the cache variables point into a temporary
directory, and the module believes it was imported from outside any checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import dvid_store.testing.server as server_module
from dvid_store.testing import DvidServer, DvidServerError, find_dvid_binary

REAL_BINARY = find_dvid_binary()  # the suite's own server needs it anyway


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No DVID_BIN, no dvid on PATH, no checkout, HOME in tmp_path; returns that HOME."""
    home = tmp_path / "home"
    home.mkdir()
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    for name in ("DVID_BIN", "DVID_STORE_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(empty_path))
    # as if installed from a wheel: site-packages/dvid_store/testing/server.py
    installed = tmp_path / "site-packages" / "dvid_store" / "testing" / "server.py"
    monkeypatch.setattr(server_module, "__file__", str(installed))
    return home


def _place(path: Path, how: str = "symlink") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "symlink":
        path.symlink_to(REAL_BINARY)
    elif how == "copy":
        path.write_bytes(REAL_BINARY.read_bytes())
        path.chmod(0o755)
    else:  # a file that is not executable
        path.write_bytes(b"not a program")
        path.chmod(0o644)
    return path


def test_an_installed_package_finds_the_binary_cached_by_install_dvid(world: Path) -> None:
    cached = _place(world / ".cache" / "dvid_store" / "dvid-v1.0.0" / "dvid", "copy")
    assert find_dvid_binary() == cached
    with DvidServer() as server:  # and it is a working server
        assert server.binary == cached
        assert server.client().server_info()["DVID Version"] == "v1.0.0"


def test_the_cache_folder_follows_xdg_cache_home_and_dvid_store_cache(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _place(world / ".cache" / "dvid_store" / "dvid-v1.0.0" / "dvid")
    xdg = _place(tmp_path / "xdg" / "dvid_store" / "dvid-v1.0.0" / "dvid")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert find_dvid_binary() == xdg
    own = _place(tmp_path / "own" / "dvid-v1.0.0" / "dvid")
    monkeypatch.setenv("DVID_STORE_CACHE", str(tmp_path / "own"))
    assert find_dvid_binary() == own
    assert server_module.cache_directory() == tmp_path / "own"
    monkeypatch.setenv("DVID_STORE_CACHE", "")  # empty counts as unset, as in ci/install-dvid
    assert find_dvid_binary() == xdg


def test_dvid_bin_then_checkout_then_path_then_cache(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = _place(world / ".cache" / "dvid_store" / "dvid-v1.0.0" / "dvid")
    assert find_dvid_binary() == cached
    on_path = _place(tmp_path / "bin" / "dvid")
    assert find_dvid_binary() == on_path
    checkout = tmp_path / "checkout"
    monkeypatch.setattr(server_module, "__file__", str(checkout / "dvid_store" / "testing" / "server.py"))
    in_checkout = _place(checkout / ".dvid" / "bin" / "dvid")
    assert find_dvid_binary() == in_checkout
    explicit = _place(tmp_path / "elsewhere" / "dvid-custom")
    monkeypatch.setenv("DVID_BIN", str(explicit))
    assert find_dvid_binary() == explicit


def test_a_file_that_cannot_run_is_not_taken(world: Path) -> None:
    _place(world / ".cache" / "dvid_store" / "dvid-v1.0.0" / "dvid", "not executable")
    with pytest.raises(DvidServerError, match="no DVID server executable found"):
        find_dvid_binary()


def test_nothing_found_says_exactly_how_to_get_one(world: Path) -> None:
    with pytest.raises(DvidServerError) as info:
        find_dvid_binary()
    message = str(info.value)
    cached = world / ".cache" / "dvid_store" / "dvid-v1.0.0" / "dvid"
    for needed in (
        "ci/install-dvid",  # the command
        "dvid_store source checkout",  # where to run it
        "Go >= 1.21 and a C compiler",  # what it needs
        f"builds DVID v1.0.0 into {cached}",  # where it puts the binary
        "DVID_STORE_CACHE",
        ".dvid/bin/dvid",
        "set DVID_BIN to the path of a dvid executable",
        "dvid on PATH",
    ):
        assert needed in message, f"{needed!r} is missing from: {message}"
    with pytest.raises(DvidServerError, match="install-dvid"):
        DvidServer()  # the same error, from the class users meet first


def test_a_dvid_bin_that_does_not_run_is_an_error_not_a_fallback(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _place(world / ".cache" / "dvid_store" / "dvid-v1.0.0" / "dvid")
    monkeypatch.setenv("DVID_BIN", str(tmp_path / "missing" / "dvid"))
    with pytest.raises(DvidServerError, match=r"DVID_BIN is set to .*missing/dvid', which does not exist"):
        find_dvid_binary()
    monkeypatch.setenv("DVID_BIN", str(_place(tmp_path / "plain" / "dvid", "not executable")))
    with pytest.raises(DvidServerError, match=r"is not an executable file.*ci/install-dvid"):
        find_dvid_binary()
    assert os.environ["HOME"] == str(world)
