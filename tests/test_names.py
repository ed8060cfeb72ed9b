"""Instance names: only names DVID can serve and every client can address get sent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dvid_store import DvidInputError, Node
from dvid_store.names import check_instance_name

GOOD = ["grayscale", "seg", "grayscale_1", "segmentation_annotations", "mito-v1.2", ".meta", "a.b", "_x", "42"]
BAD = {
    "": "empty",
    ".": "dot segment",
    "..": "dot segment",
    "...": "dot segment",
    "100%": "'%'",
    "a/b": "'/'",
    "gray/info": "'/'",
    "x/../gray": "'/'",
    "two words": "' '",
    "what?": "'?'",
    "a#b": "'#'",
    "line\nbreak": "'\\\\n'",
    "tab\tname": "'\\\\t'",
    "nul\x00": "'\\\\x00'",
    "quote\"d": "'\"'",
    "grün": "'ü'",
    "a\\b": "'\\\\\\\\'",
}


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass_unchanged(name: str) -> None:
    assert check_instance_name(name) == name
    assert check_instance_name(name, new=True) == name


@pytest.mark.parametrize("name,what", sorted(BAD.items()))
def test_bad_names_say_what_is_wrong_and_what_is_allowed(name: str, what: str) -> None:
    with pytest.raises(DvidInputError, match=r"ASCII letters, digits, '_', '-' and '\.'") as info:
        check_instance_name(name)
    assert what in str(info.value) or what.encode().decode("unicode_escape") in str(info.value)


def test_reserved_names_refused_only_when_creating() -> None:
    for name in ("log", "branch", "note", "commit", "newversion"):
        assert check_instance_name(name) == name  # node actions share the first path segment
        with pytest.raises(DvidInputError, match="reserved"):
            check_instance_name(name, new=True)
    with pytest.raises(DvidInputError, match="must be a string"):
        check_instance_name(7)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(BAD))
def test_create_instance_refuses_before_sending(dvid_node: Node, name: str) -> None:
    transport = dvid_node.transport
    before = transport.requests_sent
    with pytest.raises(DvidInputError):
        dvid_node.create_instance("keyvalue", name)
    assert transport.requests_sent == before
    # the server's listings stay valid JSON for every client
    listing = transport.request("GET", "/api/repos/info").text
    json.loads(listing)
    assert dvid_node.instances() == {}


def test_reserved_name_refused_before_sending(dvid_node: Node) -> None:
    before = dvid_node.transport.requests_sent
    with pytest.raises(DvidInputError, match="reserved"):
        dvid_node.create_instance("keyvalue", "commit")
    assert dvid_node.transport.requests_sent == before


def test_good_names_round_trip_through_the_server(dvid_node: Node) -> None:
    names = ["mito-v1.2", ".meta", "grayscale_1", "x.y.z"]
    for name in names:
        assert dvid_node.create_instance("keyvalue", name)["Base"]["Name"] == name
        kv = dvid_node.keyvalue(name)
        kv["k"] = name.encode()
        assert kv["k"] == name.encode()
        assert dvid_node.custom_request(f"{name}/key/k") == name.encode()
    assert set(dvid_node.instances()) == set(names)
    listed = json.loads(dvid_node.transport.request("GET", "/api/repos/info").text)
    assert set(listed[dvid_node.uuid]["DataInstances"]) == set(names)


def test_paths_that_would_address_another_instance_are_refused(dvid_node: Node) -> None:
    dvid_node.create_instance("uint8blk", "gray")
    dvid_node.voxels("gray").write(np.full((32, 32, 32), 3, np.uint8), (0, 0, 0))
    transport = dvid_node.transport
    before = transport.requests_sent
    for name in ("gray/info", "x/../gray", "..", "gray/raw"):
        with pytest.raises(DvidInputError, match="instance name"):
            dvid_node.voxels(name)
        with pytest.raises(DvidInputError, match="instance name"):
            dvid_node.typeinfo(name)
        with pytest.raises(DvidInputError, match="instance name"):
            dvid_node.path(name, "info")
    with pytest.raises(DvidInputError, match="instance name"):
        dvid_node.custom_request("gr ay/info")
    with pytest.raises(DvidInputError, match="redirect"):
        dvid_node.custom_request("gray/raw/../info")
    assert transport.requests_sent == before
    # node actions keep working through the same path builder
    assert dvid_node.path("commit").endswith("/commit") and dvid_node.path().endswith(dvid_node.uuid)
    assert dvid_node.typeinfo("gray")["Base"]["Name"] == "gray"
