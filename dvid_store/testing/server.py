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

import requests

from ..errors import DvidError

__all__ = ["DvidServer", "DvidServerError", "find_dvid_binary"]

_INSTALL_HINT = "run `ci/install-dvid` from a dvid_store checkout, or set DVID_BIN to a dvid executable"


class DvidServerError(DvidError):
    """The test server could not be found, started or stopped."""


def find_dvid_binary() -> Path:
    """Locate the ``dvid`` executable.

    Looks at ``$DVID_BIN``, then ``.dvid/bin/dvid`` in the source checkout this
    package was imported from (where ``ci/install-dvid`` puts it), then ``PATH``.

    Raises
    ------
    DvidServerError
        No executable was found; the message says how to install one.
    """
    candidates: list[Path] = []
    if os.environ.get("DVID_BIN"):
        candidates.append(Path(os.environ["DVID_BIN"]))
    candidates.append(Path(__file__).resolve().parents[2] / ".dvid" / "bin" / "dvid")
    on_path = shutil.which("dvid")
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise DvidServerError(f"no DVID server executable found (tried {tried}): {_INSTALL_HINT}")


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

    def client(self, **kwargs):
        """A :class:`dvid_store.DvidClient` for this server holding its admin token."""
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
            console = open(self._dir / "console.txt", "wb")
            try:
                self._process = subprocess.Popen(
                    [str(self.binary), "serve", str(config)],
                    cwd=self._dir,
                    env=env,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C in the terminal reaches pytest, which stops us cleanly
                )
            finally:
                console.close()
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
