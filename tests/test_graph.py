"""labelgraph: DVID removed the type in 2023; every graph call says so instead of pretending."""

from __future__ import annotations

import json

import pytest

from dvid_store import BadRequestError, DvidClient, Node, UnsupportedError
from dvid_store.datatypes.graph import LabelGraph
from dvid_store.datatypes.keyvalue import KeyValue

CALLS = {
    "update_vertices": lambda g: g.update_vertices([(1, 10.0)]),
    "update_edges": lambda g: g.update_edges([(1, 2, 3.0)]),
    "get_subgraph": lambda g: g.get_subgraph(),
    "get_vertex_neighbors": lambda g: g.get_vertex_neighbors(1),
    "neighbors": lambda g: g.neighbors(1),
    "get_properties": lambda g: g.get_properties([1], "size"),
    "set_properties": lambda g: g.set_properties([1], "size", [b"x"]),
    "delete": lambda g: g.delete(),
    "info": lambda g: g.info,
}


def test_the_server_has_no_labelgraph_type(dvid_client: DvidClient, dvid_node: Node) -> None:
    assert "labelgraph" not in dvid_client.compiled_types()
    with pytest.raises(BadRequestError, match='"labelgraph" is not supported'):
        dvid_node.create_instance("labelgraph", "graph")


def test_create_graph_is_refused_before_sending(dvid_node: Node) -> None:
    sent = dvid_node.transport.requests_sent
    with pytest.raises(UnsupportedError, match="removed the labelgraph datatype in 2023") as info:
        LabelGraph.create(dvid_node, "graph")
    assert "create_graph" in str(info.value) and "keyvalue" in str(info.value)
    assert isinstance(info.value, NotImplementedError)
    assert dvid_node.transport.requests_sent == sent


@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_graph_call_explains_what_to_use(dvid_node: Node, call: str) -> None:
    graph = dvid_node.graph("graph")  # constructing works, without a request
    assert "removed labelgraph" in repr(graph)
    sent = dvid_node.transport.requests_sent
    with pytest.raises(UnsupportedError) as info:
        CALLS[call](graph)
    message = str(info.value)
    assert "v1.0.0" in message and "keyvalue" in message and "labelmap" in message and "neuPrint" in message
    assert dvid_node.transport.requests_sent == sent


def test_the_suggested_replacement_works(dvid_node: Node) -> None:
    """The advice is real: a graph as one JSON document per vertex in a keyvalue instance."""
    edges = {1: {2: 3.0, 3: 1.5}, 2: {1: 3.0}, 3: {1: 1.5}}
    store = KeyValue.create(dvid_node, "graph-store")
    store.put_many({str(v): json.dumps({"edges": nbrs}).encode() for v, nbrs in edges.items()})
    documents = store.get_many(str(v) for v in edges)
    loaded = {int(v): {int(n): w for n, w in json.loads(doc)["edges"].items()} for v, doc in documents.items()}
    assert loaded == edges
