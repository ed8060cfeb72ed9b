"""The pytest plugin as a user of dvid_store meets it in their own test suite."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_user_suite_gets_fixtures_from_the_entry_point(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        """
        import os

        def test_fresh_repo_per_test(dvid_node, dvid_server):
            dvid_node.create_instance("keyvalue", "kv")
            assert set(dvid_node.instances()) == {"kv"}
            assert dvid_node.client.url == dvid_server.url
            with open(os.environ["RECORD"], "a") as out:
                out.write(f"{dvid_node.uuid} {dvid_server.directory}\\n")

        def test_second_test_gets_another_repo(dvid_node):
            assert dvid_node.instances() == {}
        """
    )
    record = pytester.path / "record.txt"
    monkeypatch.setenv("RECORD", str(record))
    # A subprocess, so that only the entry point (no conftest) can provide the fixtures.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    uuid, directory = record.read_text().split()
    assert len(uuid) == 32
    assert not Path(directory).exists(), "the session's server data outlived the session"
