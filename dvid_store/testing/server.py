"""Start and stop a throwaway DVID server for tests, demos and benchmarks."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import requests

from ..errors import DvidError

if TYPE_CHECKING:
    from ..client import DvidClient

__all__ = ["DVID_VERSION", "DvidServer", "DvidServerError", "cache_directory", "cached_dvid_binary", "find_dvid_binary"]

#: The DVID version that ``ci/install-dvid`` builds, and the one this package is tested against.
DVID_VERSION = "v1.0.0"


class DvidServerError(DvidError):
    """The test server could not be found, started or stopped."""


def cache_directory() -> Path:
    """dvid_store's folder in the user's cache, where ``ci/install-dvid`` keeps the DVID binary.

    ``$DVID_STORE_CACHE`` if set, else ``$XDG_CACHE_HOME/dvid_store``, else
    ``~/.cache/dvid_store`` (the same rule as ``ci/install-dvid``). The folder may not exist.

    Returns
    -------
    pathlib.Path
    """
    explicit = os.environ.get("DVID_STORE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "dvid_store"


def cached_dvid_binary() -> Path:
    """Where ``ci/install-dvid`` caches the ``dvid`` it builds: ``<cache>/dvid-v1.0.0/dvid``.

    Returns
    -------
    pathlib.Path
        The path, whether or not a binary is there; see :func:`cache_directory`.
    """
    return cache_directory() / f"dvid-{DVID_VERSION}" / "dvid"


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _install_hint() -> str:
    return (
        f"To get one, run `ci/install-dvid` in a dvid_store source checkout (it needs Go >= 1.21 and a C "
        f"compiler, and takes a few minutes the first time): it builds DVID {DVID_VERSION} into "
        f"{cached_dvid_binary()} (set DVID_STORE_CACHE or XDG_CACHE_HOME before running it to move that "
        "folder), where dvid_store finds it from any environment, also when installed from a wheel, and "
        "copies it to the checkout's .dvid/bin/dvid. Or set DVID_BIN to the path of a dvid executable."
    )


def find_dvid_binary() -> Path:
    """Locate the ``dvid`` executable.

    Looks, in this order, at

    1. ``$DVID_BIN`` (when set, it must be an executable: nothing else is tried);
    2. ``.dvid/bin/dvid`` in the source checkout this package was imported from
       (where ``ci/install-dvid`` puts it);
    3. ``dvid`` on ``PATH``;
    4. :func:`cached_dvid_binary`: ``<cache>/dvid-v1.0.0/dvid`` in the user's cache
       folder (``$DVID_STORE_CACHE``, else ``$XDG_CACHE_HOME/dvid_store``, else
       ``~/.cache/dvid_store``), where ``ci/install-dvid`` caches what it builds; so an
       installed (non-editable) dvid_store finds the binary a checkout built.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    DvidServerError
        No executable was found; the message lists where it looked and says how to
        get one.
    """
    explicit = os.environ.get("DVID_BIN")
    if explicit:
        path = Path(explicit).expanduser()
        if _is_executable(path):
            return path
        problem = "does not exist" if not path.exists() else "is not an executable file"
        raise DvidServerError(
            f"DVID_BIN is set to {explicit!r}, which {problem}. Point DVID_BIN at a dvid executable, "
            f"or unset it to use the one ci/install-dvid makes. {_install_hint()}"
        )
    looked: list[str] = []
    checkout = Path(__file__).resolve().parents[2] / ".dvid" / "bin" / "dvid"
    looked.append(f"{checkout} (a source checkout's copy)")
    if _is_executable(checkout):
        return checkout
    on_path = shutil.which("dvid")
    looked.append("dvid on PATH")
    if on_path:
        return Path(on_path)
    cached = cached_dvid_binary()
    looked.append(f"{cached} (the cache of ci/install-dvid)")
    if _is_executable(cached):
        return cached
    raise DvidServerError(
        "no DVID server executable found; DVID_BIN is not set and there is none at " + ", ".join(looked) + ". "
        + _install_hint()
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_CONFIG = """\
[server]
httpAddress = "127.0.0.1:{http_port}"
rpcAddress = "127.0.0.1:{rpc_port}"
shutdownDelay = 0
note = "dvid_store throwaway test server"
{extra}

[logging]
logfile = "{root}/dvid.log"

[mutations]
jsonstore = "{root}/mutations-json"

[backend]
  [backend.default]
  store = "kv"
  log = "labellog"

[store]
  [store.kv]
  engine = "badger"
  path = "{root}/badger"

  [store.labellog]
  engine = "filelog"
  path = "{root}/labellog"
"""

# Servers still running at interpreter exit (e.g. after Ctrl-C in a test run).
_live_servers: weakref.WeakSet[DvidServer] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_live_servers):
        server.stop()


class DvidServer:
    """A DVID server on free loopback ports with its data in a temporary directory.

    Parameters
    ----------
    binary : path, optional
        The ``dvid`` executable; default from :func:`find_dvid_binary`.
    admin_token : str, optional
        Admin token given to the server via ``DVID_ADMIN_TOKEN``; random by default.
    startup_timeout : float
        Seconds to wait for ``/api/heartbeat`` before giving up.
    server_settings : str
        TOML lines added to the ``[server]`` section (e.g. ``"noLabelmapSplit = true"``).
    extra_toml : str
        TOML sections appended to the config (e.g. an ``[auth]`` section).
    env : mapping, optional
        Extra environment variables for the server process.

    Examples
    --------
    >>> with DvidServer() as server:                       # doctest: +SKIP
    ...     client = server.client()
    ...     node = client.create_repo("scratch")
    """

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        *,
        admin_token: str | None = None,
        startup_timeout: float = 60.0,
        server_settings: str = "",
        extra_toml: str = "",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.binary = Path(binary) if binary is not None else find_dvid_binary()
        self._admin_token = admin_token or secrets.token_hex(16)
        self.startup_timeout = startup_timeout
        self.server_settings = server_settings
        self.extra_toml = extra_toml
        self.env = dict(env or {})
        self.http_port: int | None = None
        self.rpc_port: int | None = None
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # ---------------------------------------------------------------- info
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running server."""
        if self.http_port is None:
            raise DvidServerError("the DVID server is not running; call start() first")
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def rpc_address(self) -> str:
        return f"127.0.0.1:{self.rpc_port}"

    @property
    def admin_token(self) -> str:
        """The admin token the server was started with (keep it out of logs)."""
        return self._admin_token

    @property
    def directory(self) -> Path | None:
        """Temporary directory holding the config, data and log (``None`` when stopped)."""
        return self._dir

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running server (``None`` when stopped): for CPU accounting."""
        return self._process.pid if self.running and self._process is not None else None

    def __repr__(self) -> str:
        state = f"url={self.url!r}" if self.running else "stopped"
        return f"DvidServer({state})"

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log and console output."""
        if self._dir is None:
            return ""
        chunks = []
        for name in ("console.txt", "dvid.log"):
            path = self._dir / name
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(chunks)

    def client(self, **kwargs: Any) -> DvidClient:
        """A :class:`dvid_store.DvidClient` for this server holding its admin token.

        Parameters
        ----------
        **kwargs
            Keyword arguments of :class:`~dvid_store.DvidClient` (``user``, ``app``, ...).
        """
        from ..client import DvidClient

        kwargs.setdefault("admin_token", self._admin_token)
        return DvidClient(self.url, **kwargs)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> DvidServer:
        """Write a config, launch ``dvid serve`` and wait until it answers.

        Raises
        ------
        DvidServerError
            The process exited or did not answer in time; the message holds the
            tail of its log.
        """
        if self.running:
            return self
        self._dir = Path(tempfile.mkdtemp(prefix="dvid-store-server-"))
        for attempt in range(3):  # a free port can be taken between probe and bind
            self.http_port, self.rpc_port = _free_port(), _free_port()
            config = self._dir / "config.toml"
            config.write_text(
                _CONFIG.format(
                    http_port=self.http_port, rpc_port=self.rpc_port, root=self._dir, extra=self.server_settings
                )
                + "\n"
                + self.extra_toml
            )
            env = {**os.environ, **self.env, "DVID_ADMIN_TOKEN": self._admin_token}
            with open(self._dir / "console.txt", "wb") as console:  # the child keeps its own descriptor
                self._process = subprocess.Popen(
                    [str(self.binary), "serve", str(config)],
                    cwd=self._dir,
                    env=env,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C in the terminal reaches pytest, which stops us cleanly
                )
            _live_servers.add(self)
            try:
                self._wait_ready()
                return self
            except DvidServerError:
                tail = self.log_tail()
                port_clash = "address already in use" in tail.lower()
                self._terminate()
                if not port_clash or attempt == 2:
                    self._cleanup_dir()
                    raise
        raise AssertionError("unreachable")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"http://127.0.0.1:{self.http_port}/api/heartbeat"
        delay = 0.02
        while time.monotonic() < deadline:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                raise DvidServerError(f"DVID exited with code {code} during start-up.\n{self.log_tail()}")
            try:
                if requests.get(url, timeout=1.0).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(delay)  # polling a process that gives no readiness signal
            delay = min(delay * 1.5, 0.25)
        raise DvidServerError(
            f"DVID did not answer {url} within {self.startup_timeout:.0f} s.\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout``) and delete its data."""
        self._terminate(timeout)
        self._cleanup_dir()

    def _terminate(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        _live_servers.discard(self)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _cleanup_dir(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self.http_port = self.rpc_port = None

    def __enter__(self) -> DvidServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        if getattr(self, "_process", None) is not None:
            self.stop()
