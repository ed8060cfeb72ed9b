"""The HTTP core against the real server: error mapping, retries, sessions, secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import multiprocessing
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from dvid_store import (
    AuthError,
    BadRequestError,
    DvidClient,
    DvidConnectionError,
    DvidHTTPError,
    LockedNodeError,
    Node,
    NotFoundError,
    RetryPolicy,
    ServerBusyError,
    ServerError,
    UnknownInstanceError,
    UnknownNodeError,
)
from dvid_store.errors import error_from_response, redact_url
from dvid_store.testing import DvidServer, FaultProxy
from dvid_store.transport import Transport

# ------------------------------------------------------------------ error mapping


def test_404_is_not_found_with_dvid_message(dvid_node: Node) -> None:
    dvid_node.create_instance("keyvalue", "kv")
    with pytest.raises(NotFoundError) as info:
        dvid_node.transport.request("GET", dvid_node.path("kv", "key", "absent-key"))
    error = info.value
    assert error.status == 404
    assert error.method == "GET"
    assert "absent-key" in error.message  # DVID's own words survive
    assert isinstance(error, LookupError)


def test_bad_geometry_is_bad_request_with_dvid_message(dvid_node: Node) -> None:
    dvid_node.create_instance("uint8blk", "gray")
    with pytest.raises(BadRequestError) as info:
        dvid_node.transport.request("GET", dvid_node.path("gray", "raw", "0_1_2", "10_10", "0_0_0"))
    assert info.value.status == 400
    assert info.value.message  # DVID explains itself
    assert not isinstance(info.value, (LockedNodeError, UnknownInstanceError, UnknownNodeError))


def test_write_to_locked_node_is_told_apart_by_the_server(dvid_node: Node) -> None:
    dvid_node.create_instance("uint8blk", "gray")
    dvid_node.commit("lock it")
    # Go around the client-side check: the server's own answer must map to the same class.
    with pytest.raises(LockedNodeError) as info:
        dvid_node.transport.request(
            "POST", dvid_node.path("gray", "raw", "0_1_2", "32_32_32", "0_0_0"), data=bytes(32**3)
        )
    assert info.value.status == 400
    assert "locked" in info.value.message


def test_write_to_locked_node_is_refused_before_sending(dvid_node: Node) -> None:
    dvid_node.commit("lock it")
    with pytest.raises(LockedNodeError) as info:
        dvid_node.create_instance("keyvalue", "late")
    assert info.value.status is None  # the client refused; nothing was sent
    assert "new_version" in str(info.value)
    with pytest.raises(LockedNodeError):
        dvid_node.append_log("more")
    assert "late" not in dvid_node.instances()


def test_unknown_node_and_unknown_instance(dvid_node: Node) -> None:
    with pytest.raises(UnknownNodeError) as info:
        dvid_node.transport.request("GET", "/api/node/ffffffffffffffffffff/whatever/info")
    assert "ffffffffffffffffffff" in info.value.message
    with pytest.raises(UnknownInstanceError) as info2:
        dvid_node.typeinfo("no-such-instance")
    assert "no-such-instance" in str(info2.value)


def test_panic_in_handler_is_server_error(dvid_node: Node) -> None:
    # DVID v1.0.0 panics (HTTP 500) on a single-block labelmap /raw read of a missing block.
    dvid_node.create_instance("labelmap", "seg")
    with pytest.raises(ServerError) as info:
        dvid_node.transport.request("GET", dvid_node.path("seg", "raw", "0_1_2", "64_64_64", "0_0_0"))
    assert info.value.status == 500


def test_mapping_table_covers_statuses() -> None:
    # The single mapping function, fed real DVID message shapes.
    assert isinstance(error_from_response("GET", "http://h/x", 401, "no"), AuthError)
    assert isinstance(error_from_response("GET", "http://h/x", 403, "no"), AuthError)
    assert isinstance(error_from_response("GET", "http://h/x", 503, "busy"), ServerBusyError)
    assert isinstance(error_from_response("GET", "http://h/x", 400, "JWT required via Authorization"), AuthError)
    assert type(error_from_response("GET", "http://h/x", 418, "teapot")) is DvidHTTPError


def test_errors_pickle_with_their_fields() -> None:
    error = error_from_response("POST", "http://h/api?admintoken=s3cret", 400, "Cannot do POST on locked node x")
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is LockedNodeError
    assert (clone.status, clone.method, clone.message) == (400, "POST", error.message)
    assert "s3cret" not in clone.url


# ------------------------------------------------------------------------ retries


def test_throttled_requests_are_ridden_through(dvid_node: Node, caplog: pytest.LogCaptureFixture) -> None:
    # throttle=true lets one heavy operation run at a time (DVID's default limit is 1);
    # the rest get 503 and must be retried until they succeed.
    gray = dvid_node.create_instance("uint8blk", "gray")
    assert gray["Base"]["TypeName"] == "uint8blk"
    volume = np.random.default_rng(0).integers(0, 255, (128, 128, 128), dtype=np.uint8)
    dvid_node.transport.request(
        "POST", dvid_node.path("gray", "raw", "0_1_2", "128_128_128", "0_0_0"), data=volume.tobytes()
    )
    client = DvidClient(dvid_node.client.url, retry=RetryPolicy(max_attempts=200, total_seconds=120))
    transport = client.transport
    path = dvid_node.path("gray", "raw", "0_1_2", "128_128_128", "0_0_0")

    def read(_: int) -> bytes:
        return transport.request("GET", path, params={"throttle": "true"}).content

    caplog.set_level(logging.INFO, logger="dvid_store.http")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(read, range(32)))
    assert all(r == volume.tobytes() for r in results)
    retries = [r for r in caplog.records if "HTTP 503" in r.getMessage()]
    assert retries, "8 concurrent throttled reads never met a 503: the retry path was not exercised"


def test_busy_error_after_retry_budget(dvid_node: Node) -> None:
    dvid_node.create_instance("uint8blk", "gray")
    volume = np.zeros((256, 256, 256), np.uint8)
    dvid_node.transport.request(
        "POST", dvid_node.path("gray", "raw", "0_1_2", "256_256_256", "0_0_0"), data=volume.tobytes()
    )
    impatient = DvidClient(dvid_node.client.url, retry=RetryPolicy(max_attempts=1)).transport
    path = dvid_node.path("gray", "raw", "0_1_2", "256_256_256", "0_0_0")
    barrier = threading.Barrier(6)
    errors: list[Exception] = []

    def read() -> None:
        barrier.wait()
        try:
            impatient.request("GET", path, params={"throttle": "true"})
        except ServerBusyError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors, "six simultaneous throttled reads all ran: DVID did not throttle"
    assert errors[0].status == 503
    assert "throttled" in errors[0].message


def test_post_is_not_retried_unless_idempotent() -> None:
    transport = Transport("127.0.0.1:9", retry=RetryPolicy(max_attempts=5, total_seconds=5))
    from dvid_store import DvidConnectionError

    with pytest.raises(DvidConnectionError) as info:
        transport.request("POST", "/api/repos", json={})
    assert info.value.attempts == 1
    with pytest.raises(DvidConnectionError) as info:
        transport.request("POST", "/api/repos", json={}, idempotent=True)
    assert info.value.attempts == 5


# ----------------------------------------------------------------------- sessions


def test_one_session_per_thread(dvid_client: DvidClient) -> None:
    transport = dvid_client.transport
    sessions: list[object] = []
    # All three threads stay alive until each has its session: a finished thread's id
    # may be reused by the next one, which would then (rightly) inherit its session.
    together = threading.Barrier(3)

    def grab() -> None:
        transport.request("GET", "/api/heartbeat")
        sessions.append(transport.session())
        together.wait()

    threads = [threading.Thread(target=grab) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in sessions}) == 3
    assert transport.session() is transport.session()


def _child_heartbeat(transport: Transport, parent_session_id: int, queue: multiprocessing.Queue) -> None:
    ok = transport.request("GET", "/api/heartbeat").text.strip() == "OK"
    queue.put((ok, id(transport.session()) != parent_session_id))


# Python 3.12+ warns that fork() in a process with threads (the test server's log
# readers, urllib3's pools) may deadlock; this test is about exactly that situation, which
# multiprocessing's "fork" start method (still available on Linux) creates for users.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_uses_its_own_session(dvid_client: DvidClient) -> None:
    transport = dvid_client.transport
    transport.request("GET", "/api/heartbeat")
    parent_session = transport.session()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_heartbeat, args=(transport, id(parent_session), queue))
    child.start()
    ok, fresh = queue.get(timeout=30)
    child.join(30)
    assert ok and fresh
    assert transport.session() is parent_session


# ------------------------------------------------------------------------ secrets


def _jwt(secret: str, user: str) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({"user": user}).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


@pytest.fixture(scope="module")
def auth_server():
    server = DvidServer(
        extra_toml='[auth]\nproxy_address = "127.0.0.1:1"\nenforce = "token"\n',
        env={"DVID_JWT_SECRET_KEY": "jwt-signing-secret"},
    )
    with server:
        yield server


def test_bearer_token_is_sent_and_auth_failures_map(auth_server: DvidServer) -> None:
    root = auth_server.client().create_repo("guarded")
    path = f"/api/node/{root.uuid}/note"
    anonymous = DvidClient(auth_server.url, token=None)
    with pytest.raises(AuthError) as info:
        anonymous.transport.request("GET", path)
    assert "JWT" in info.value.message
    token = _jwt("jwt-signing-secret", "alice")
    authorised = DvidClient(auth_server.url, token=token)
    assert authorised.transport.request("GET", path).status_code == 200
    forged = DvidClient(auth_server.url, token=_jwt("wrong-secret", "mallory"))
    with pytest.raises(AuthError) as info:
        forged.transport.request("GET", path)
    for text in (repr(authorised), repr(authorised.transport), str(info.value)):
        assert token not in text


def test_tokens_never_leak(
    dvid_server: DvidServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DVID_TOKEN", raising=False)
    monkeypatch.delenv("DVID_ADMIN_TOKEN", raising=False)
    admin = dvid_server.admin_token
    bearer = "bearer-secret-value-123"
    client = DvidClient(dvid_server.url, token=bearer, admin_token=admin)
    caplog.set_level(logging.DEBUG)
    node = client.create_repo("secretive")  # admin request: admintoken= on the wire
    with pytest.raises(DvidHTTPError) as info:
        client.transport.request("GET", "/api/node/0000000000/x/info", admin=True)
    pickled = pickle.dumps(client) + pickle.dumps(node) + pickle.dumps(client.transport)
    texts = [repr(client), repr(client.transport), repr(node), str(info.value), info.value.url]
    texts += [record.getMessage() for record in caplog.records]
    assert any("admintoken=***" in record.getMessage() for record in caplog.records), "urllib3 logged no URL"
    for secret in (admin, bearer):
        assert secret.encode() not in pickled
        for text in texts:
            assert secret not in text
    assert "***" in redact_url(f"http://h/api?admintoken={admin}&u=x")


def test_unpickled_client_reads_tokens_from_environment(
    dvid_server: DvidServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = DvidClient(dvid_server.url, admin_token=dvid_server.admin_token, user="carol", app="tests")
    monkeypatch.setenv("DVID_ADMIN_TOKEN", dvid_server.admin_token)
    clone = pickle.loads(pickle.dumps(client))
    assert clone == client
    assert clone.transport.user == "carol" and clone.transport.app == "tests"
    assert clone.transport.has_admin_token
    assert clone.create_repo("from-a-clone").uuid


def test_requests_sent_counts_every_attempt(dvid_client: DvidClient) -> None:
    transport = DvidClient(dvid_client.url).transport
    before = transport.requests_sent
    for _ in range(3):
        transport.request("GET", "/api/heartbeat")
    assert transport.requests_sent - before == 3
    dead = Transport("127.0.0.1:9", retry=RetryPolicy(max_attempts=3, total_seconds=5))
    from dvid_store import DvidConnectionError

    with pytest.raises(DvidConnectionError):
        dead.request("GET", "/api/heartbeat")
    assert dead.requests_sent == 3


def test_redact_text_masks_every_secret_parameter() -> None:
    from dvid_store.errors import redact_text

    line = "GET /api/repos?u=ann&admintoken=a1&token=t2&jwt=j3&passcode=p4&app=x HTTP/1.1"
    masked = redact_text(line)
    assert all(secret not in masked for secret in ("a1", "t2", "j3", "p4"))
    assert "u=ann" in masked and "app=x" in masked


def test_head_answer_with_a_declared_length_is_complete(dvid_node: Node) -> None:
    # Go answers HEAD with the Content-Length its GET body would have, and no body;
    # that is a whole answer, not one cut short (it used to be retried, then refused).
    transport = dvid_node.transport
    answer = transport.request("HEAD", "/api/server/info")
    assert answer.status_code == 200 and answer.content == b""
    assert int(answer.headers["Content-Length"]) > 0
    refused = transport.request("HEAD", dvid_node.path("no-such-instance", "info"), allow_status=(400,))
    assert refused.status_code == 400 and refused.content == b""


# ------------------------------------------------------------ writes sent once
@pytest.mark.parametrize(
    ("fault", "done_on_server", "sent"),
    [
        ("status_503", True, 2),  # refused before anything was done: sent again
        ("reset_after", True, 1),  # done, answer lost: the check confirms it, not sent again
        ("reset_before", False, 2),  # never arrived: the check says so, sent again
    ],
)
def test_a_write_sent_once_is_resent_only_when_not_carried_out(
    dvid_node: Node, dvid_fault_proxy: FaultProxy, fault: str, done_on_server: bool, sent: int
) -> None:
    proxy = dvid_fault_proxy
    dvid_node.create_instance("keyvalue", "once")
    transport = DvidClient(proxy.address, retry=RetryPolicy(total_seconds=10)).node(dvid_node.uuid).transport
    path = f"/api/node/{dvid_node.uuid}/once/key/k"
    checks: list[bool] = []

    def carried_out() -> bool:
        checks.append(dvid_node.keyvalue("once").exists("k"))
        return checks[-1]

    proxy.inject(fault, times=1, match="/once/key/k", methods={"POST"})
    transport.send_once(
        lambda: transport.request("POST", path, data=b"v", idempotent=False), carried_out=carried_out
    )
    assert dvid_node.keyvalue("once").get("k") == b"v"
    assert sum(1 for r in proxy.log if r.method == "POST" and "/once/key/k" in r.path) == sent
    assert checks == ([] if fault == "status_503" else [done_on_server])


def test_a_write_sent_once_without_a_check_reports_a_lost_answer(
    dvid_node: Node, dvid_fault_proxy: FaultProxy
) -> None:
    dvid_node.create_instance("keyvalue", "once")
    transport = DvidClient(dvid_fault_proxy.address, retry=RetryPolicy(total_seconds=10)).node(dvid_node.uuid).transport
    dvid_fault_proxy.inject("reset_after", times=1, match="/once/key/k", methods={"POST"})
    path = f"/api/node/{dvid_node.uuid}/once/key/k"
    with pytest.raises(DvidConnectionError, match="may or may not have been carried out"):
        transport.send_once(lambda: transport.request("POST", path, data=b"v", idempotent=False))
    assert sum(1 for r in dvid_fault_proxy.log if r.method == "POST") == 1
