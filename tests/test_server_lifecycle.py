"""The throwaway DVID server: start, readiness, stop, side by side, failures, interruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests

from dvid_store import DvidConnectionError, RetryPolicy
from dvid_store.testing import DvidServer, DvidServerError, find_dvid_binary


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes once reaped or defunct.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_start_answers_and_stop_leaves_nothing_behind() -> None:
    server = DvidServer()
    with server:
        assert server.running
        assert requests.get(server.url + "/api/heartbeat", timeout=5).text.strip() == "OK"
        info = server.client().server_info()
        assert info["DVID Version"] == "v1.0.0"
        assert "badger" in info["Storage backend"] and "filelog" in info["Storage backend"]
        pid = server._process.pid  # type: ignore[union-attr]
        directory = server.directory
        assert directory is not None and (directory / "config.toml").exists()
    assert not server.running
    assert not _process_alive(pid)
    assert not directory.exists()
    with pytest.raises(DvidServerError, match="not running"):
        _ = server.url


def test_two_servers_side_by_side_are_independent() -> None:
    with DvidServer() as first, DvidServer() as second:
        assert first.url != second.url
        first.client().create_repo("only-on-first")
        first_aliases = {r.alias for r in first.client().repos().values()}
        second_aliases = {r.alias for r in second.client().repos().values()}
        assert "only-on-first" in first_aliases
        assert "only-on-first" not in second_aliases


def test_failed_start_raises_with_the_server_log() -> None:
    # A store engine the binary does not have: DVID exits and says so in its output.
    broken = DvidServer(extra_toml='[store.other]\nengine = "no-such-engine"\npath = "x"\n')
    with pytest.raises(DvidServerError) as info:
        broken.start()
    message = str(info.value)
    assert "exited" in message
    assert "no-such-engine" in message or "engine" in message.lower()
    assert broken.directory is None and not broken.running


def test_missing_binary_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVID_BIN", str(tmp_path / "no-dvid-here"))
    monkeypatch.setenv("PATH", str(tmp_path))
    import dvid_store.testing.server as server_module

    monkeypatch.setattr(server_module, "__file__", str(tmp_path / "a" / "b" / "server.py"))
    with pytest.raises(DvidServerError, match="install-dvid"):
        find_dvid_binary()


def test_stopped_server_gives_connection_error_within_bounded_time() -> None:
    server = DvidServer().start()
    client = server.client(retry=RetryPolicy(max_attempts=4, total_seconds=2.0, backoff_base=0.05))
    assert client.heartbeat()
    url = server.url
    server.stop()
    with pytest.raises(DvidConnectionError) as info:
        client.server_info()
    assert url in str(info.value)
    assert "4 attempt" in str(info.value) or "attempt(s)" in str(info.value)
    assert info.value.attempts >= 2


def test_interrupted_run_leaves_no_server_behind(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import signal, sys
        from dvid_store.testing import DvidServer
        # Ctrl-C as in a terminal, also where this runs as a background job that ignores SIGINT
        signal.signal(signal.SIGINT, signal.default_int_handler)
        server = DvidServer().start()
        print(server._process.pid, server.directory, flush=True)
        sys.stdin.read()  # blocks until the parent interrupts us
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            pid_text, directory = child.stdout.readline().split()
            assert _process_alive(int(pid_text))
            child.send_signal(signal.SIGINT)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
    assert child.returncode != 0  # KeyboardInterrupt
    assert not _process_alive(int(pid_text))
    assert not Path(directory).exists()
