"""The fault matrix, compat part: pydvid's and libdvid's drop-in layers (dvid_store.compat).

The machinery (fault kinds, invariants, the runner) and what each trial checks are
described in ``fault_matrix.py``; the table of every trial is printed at the end of
the session.

Each trial builds its compat object on the proxy's address, bounded the way a user
bounds it: pydvid through a ``DvidConnection`` (timeout, retry policy, deadline, app)
and the accessor's ``retry_timeout``; libdvid through ``DVIDNodeService``'s
keyword-only ``timeout``, ``retry`` and ``deadline``. Both take the bearer and admin
tokens from ``$DVID_TOKEN`` and ``$DVID_ADMIN_TOKEN``, set here to the matrix's secrets.

The libdvid volume calls run with ``throttle=False``: DVID serves one throttled
request at a time and answers the others 503, so libdvid's default would make the
trials, which run side by side on one server, queue behind each other until their
retry budgets ran out, which says nothing about the faults.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fault_matrix import (
    ADMIN,
    DEADLINE,
    GRAY_ALIGNED,
    GRAY_BOX,
    GRAY_UNALIGNED,
    KINDS,
    LABEL_ALIGNED,
    LABEL_BOX,
    PLAIN_POST_RIDES,
    READ_KINDS,
    READ_RIDES,
    RETRY_SECONDS,
    SOME_PERSISTENT,
    SOME_PERSISTENT_WRITES,
    TIMEOUT,
    TOKEN,
    UNSAFE_WRITE_RIDES,
    WRITE_RIDES,
    Change,
    Env,
    Judge,
    Op,
    WriteState,
    gray_setup,
    inside,
    kv_put_setup,
    kv_setup,
    kv_write_judge,
    label_setup,
    read_judge,
    run_matrix,
    write_judge,
    write_setup,
)

from dvid_store import RetryPolicy
from dvid_store.compat import libdvid
from dvid_store.compat.pydvid import keyvalue as pydvid_keyvalue
from dvid_store.compat.pydvid.dvid_connection import DvidConnection, client_for
from dvid_store.compat.pydvid.voxels import VoxelsAccessor
from dvid_store.errors import DvidError

#: HTTP-only paths: their fault handling is the transport's, the same in every environment.
pytestmark = pytest.mark.one_environment

GRAY_READ_BOX = ((-30, 3, 33), (31, 60, 127))  # (z, y, x): below zero, unaligned on every side
LABEL_READ_BOX = ((0, 5, 0), (32, 64, 90))
#: pydvid waits up to retry_interval between attempts; shorter than its default 1 s, for the trials' budget.
RETRY_INTERVAL = 0.5


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both compat layers take the tokens from the environment, as every dvid_store client does."""
    monkeypatch.setenv("DVID_TOKEN", TOKEN)
    monkeypatch.setenv("DVID_ADMIN_TOKEN", ADMIN)


def test_compat_errors_are_dvid_errors() -> None:
    """(c) for the compat layers: the types their users catch are dvid_store's DvidError."""
    from dvid_store.compat.pydvid import errors as pydvid_errors
    from dvid_store.compat.pydvid.voxels.voxels_accessor import ThrottleTimeoutException

    for error_type in (pydvid_errors.DvidHttpError, pydvid_errors.UnexpectedResponseError, ThrottleTimeoutException,
                       pydvid_errors.LabelgraphRemovedError, libdvid.ErrMsg, libdvid.DVIDException):
        assert issubclass(error_type, DvidError), error_type


# ------------------------------------------------------------------ compat objects, bounded
def pydvid_connection(env: Env) -> DvidConnection:
    """A pydvid connection to the proxy with the matrix's limits and the trial's app."""
    return DvidConnection(env.proxy.address, timeout=TIMEOUT[1], retry=RetryPolicy(total_seconds=RETRY_SECONDS),
                          deadline=DEADLINE, app=env.app)


@contextlib.contextmanager
def accessor(env: Env, name: str) -> Iterator[VoxelsAccessor]:
    """pydvid's accessor of ``name`` through the proxy: ``retry_timeout`` and the connection bound it."""
    made = VoxelsAccessor(pydvid_connection(env), env.node.uuid, name, retry_timeout=RETRY_SECONDS,
                          retry_interval=RETRY_INTERVAL)
    try:
        yield made
    finally:
        made._client.transport.close()


@contextlib.contextmanager
def pydvid_client_closed(env: Env) -> Iterator[DvidConnection]:
    """A connection for pydvid's module functions; its client's sessions are closed afterwards."""
    connection = pydvid_connection(env)
    try:
        yield connection
    finally:
        client_for(connection).transport.close()


@contextlib.contextmanager
def service(env: Env) -> Iterator[libdvid.DVIDNodeService]:
    """libdvid's node service through the proxy, bounded by its keyword-only limits."""
    made = libdvid.DVIDNodeService(env.proxy.address, env.node.uuid, "fault-matrix", env.app, timeout=TIMEOUT,
                                   retry=RetryPolicy(total_seconds=RETRY_SECONDS), deadline=DEADLINE)
    try:
        yield made
    finally:
        made._client.transport.close()


def xyz(box: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A (z, y, x) box as pydvid's channel-first (c, x, y, z) start and stop, one channel."""
    return (0, *reversed(box[0])), (1, *reversed(box[1]))


def cxyz(zyx: np.ndarray) -> np.ndarray:
    return zyx.T[np.newaxis]


def crop(box: Any, region: Any) -> Callable[[np.ndarray], np.ndarray]:
    return lambda data: data[inside(box, region)]


# ================================================================ pydvid
def _get_ndarray(env: Env, name: str, state: Any) -> np.ndarray:
    with accessor(env, name) as volume:
        return volume.get_ndarray(*xyz(GRAY_READ_BOX))


def _sliced(env: Env, name: str, state: Any) -> np.ndarray:
    (z0, y0, x0), (z1, y1, x1) = GRAY_READ_BOX
    with accessor(env, name) as volume:
        return volume[0, x0:x1:3, y0:y1, z0:z1]  # the channel index drops its axis; a step along x


def _sliced_truth(state: np.ndarray) -> np.ndarray:
    result: np.ndarray = crop(GRAY_READ_BOX, GRAY_BOX)(state).T[::3]
    return result


def _accessor_assign(env: Env, name: str, state: WriteState) -> None:
    (z0, y0, x0), (z1, y1, x1) = state.box
    with accessor(env, name) as volume:
        volume[:, x0:x1, y0:y1, z0:z1] = cxyz(state.data)  # unaligned: edge blocks read, merged, written


def _post_ndarray(env: Env, name: str, state: WriteState) -> None:
    with accessor(env, name) as volume:
        volume.post_ndarray(*xyz(state.box), cxyz(state.data))


PYDVID_VOLUME_OPS = [
    Op("pydvid VoxelsAccessor.get_ndarray (uint8blk) [GET /raw]", "pg", gray_setup, _get_ndarray,
       read_judge(lambda s: cxyz(crop(GRAY_READ_BOX, GRAY_BOX)(s))), "raw", frozenset({"GET"}), faults=READ_KINDS,
       persistent=SOME_PERSISTENT, shared=True),
    Op("pydvid VoxelsAccessor[c, x::3, y, z] [GET /raw]", "ps", gray_setup, _sliced, read_judge(_sliced_truth),
       "raw", frozenset({"GET"}), faults=READ_KINDS, persistent=SOME_PERSISTENT, shared=True),
    Op("pydvid VoxelsAccessor[...] = unaligned [edge-block reads and read-back, GET /raw]", "pwr",
       write_setup("gray", GRAY_UNALIGNED), _accessor_assign, write_judge("gray"), "raw", frozenset({"GET"}),
       faults=READ_KINDS, persistent=SOME_PERSISTENT),
    Op("pydvid VoxelsAccessor.post_ndarray unaligned [POST /raw]", "pww", write_setup("gray", GRAY_UNALIGNED),
       _post_ndarray, write_judge("gray"), "raw", frozenset({"POST"}), WRITE_RIDES,
       persistent=SOME_PERSISTENT_WRITES),
]


def test_pydvid_voxels(env: Env) -> None:
    run_matrix(env, PYDVID_VOLUME_OPS)


# ---- keyvalue (pydvid and libdvid) -----------------------------------------------------------------
def _same_bytes(a: Any, b: Any) -> bool:
    return type(a) is bytes and a == b


def _pydvid_get(env: Env, name: str, state: Change) -> bytes:
    with pydvid_client_closed(env) as connection:
        return pydvid_keyvalue.get_value(connection, env.node.uuid, name, "big")


def _pydvid_put(env: Env, name: str, state: Change) -> None:
    with pydvid_client_closed(env) as connection:
        pydvid_keyvalue.put_value(connection, env.node.uuid, name, "big", state.new["big"])


def _libdvid_get(env: Env, name: str, state: Change) -> bytes:
    with service(env) as node:
        return node.get(name, "big")


def _libdvid_put(env: Env, name: str, state: Change) -> None:
    with service(env) as node:
        node.put(name, "big", state.new["big"])


def _custom_get(env: Env, name: str, state: Change) -> bytes:
    with service(env) as node:
        return node.custom_request(f"/{name}/key/big", b"", libdvid.ConnectionMethod.GET)


def _custom_post(env: Env, name: str, state: Change) -> bytes:
    with service(env) as node:
        return node.custom_request(f"/{name}/key/big", state.new["big"], libdvid.ConnectionMethod.POST)


def recorded(judge: Judge) -> Judge:
    """The outcome of ``judge``, recorded in the table, but not counted as a broken invariant.

    For the answers a raw request (libdvid's ``custom_request``) cannot tell from DVID's,
    documented in its docstring: it returns any 2xx body as it came, as libdvid did.
    """

    def outcome_only(env: Env, name: str, state: Any, result: Any, error: BaseException | None):
        outcome, _ = judge(env, name, state, result, error)
        return outcome, []

    return outcome_only


#: Answers to a raw GET that look complete and DVID's: a 200 with other content, and bodies
#: cut where HTTP's framing cannot show it (a clean chunked end, a close-delimited body;
#: DVID sends a large value chunked, without a length).
UNCHECKABLE_GET = ("garbage", "html_200", "garbage@8B", "cut_chunked_clean", "cut_records", "cut_close",
                   "cut_close@8B")
#: A raw POST's answer may be anything (some endpoints answer JSON), so a 200 that is not
#: DVID's is taken as success. An HTML 200, which DVID never sends to a write, is refused.
UNCHECKABLE_POST = ("garbage",)


def _without(kinds: Any, left_out: Any) -> list[str]:
    return [k for k in kinds if k not in left_out]


KV_OPS = [
    Op("pydvid keyvalue.get_value (100 kB) [GET /keyvalues]", "pkg", kv_setup, _pydvid_get,
       read_judge(lambda s: s.old["big"], _same_bytes), "keyvalues", faults=READ_KINDS, persistent=SOME_PERSISTENT,
       shared=True),
    Op("pydvid keyvalue.put_value (100 kB) [POST /key]", "pkp", kv_put_setup, _pydvid_put, kv_write_judge,
       "key/big", frozenset({"POST"}), WRITE_RIDES, persistent=SOME_PERSISTENT_WRITES),
    Op("libdvid get (100 kB) [GET /keyvalues]", "lkg", kv_setup, _libdvid_get,
       read_judge(lambda s: s.old["big"], _same_bytes), "keyvalues", faults=READ_KINDS, persistent=SOME_PERSISTENT,
       shared=True),
    Op("libdvid put (100 kB) [POST /key]", "lkp", kv_put_setup, _libdvid_put, kv_write_judge, "key/big",
       frozenset({"POST"}), WRITE_RIDES, persistent=SOME_PERSISTENT_WRITES),
    Op("libdvid custom_request GET /key", "lcg", kv_setup, _custom_get,
       read_judge(lambda s: s.old["big"], _same_bytes), "key/big", frozenset({"GET"}),
       READ_RIDES - set(UNCHECKABLE_GET), faults=_without(READ_KINDS, UNCHECKABLE_GET),
       persistent=_without(SOME_PERSISTENT, UNCHECKABLE_GET), shared=True),
    Op("libdvid custom_request GET /key [answers that look complete and DVID's]", "lcu", kv_setup, _custom_get,
       recorded(read_judge(lambda s: s.old["big"], _same_bytes)), "key/big", frozenset({"GET"}), frozenset(),
       faults=UNCHECKABLE_GET, persistent=("garbage", "cut_records"), shared=True),
    Op("libdvid custom_request POST /key [a plain POST]", "lcp", kv_put_setup, _custom_post, kv_write_judge,
       "key/big", frozenset({"POST"}), PLAIN_POST_RIDES, faults=_without(KINDS, UNCHECKABLE_POST),
       persistent=_without(SOME_PERSISTENT_WRITES, UNCHECKABLE_POST)),
    Op("libdvid custom_request POST /key [200 answers not from DVID]", "lcx", kv_put_setup, _custom_post,
       recorded(kv_write_judge), "key/big", frozenset({"POST"}), frozenset(), faults=UNCHECKABLE_POST,
       persistent=UNCHECKABLE_POST),
]


def test_keyvalue_and_custom_request(env: Env) -> None:
    run_matrix(env, KV_OPS)


# ================================================================ libdvid volumes
def _shape_offset(box: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(b - a for a, b in zip(*box)), tuple(box[0])


def _get_gray(env: Env, name: str, state: Any) -> np.ndarray:
    with service(env) as node:
        return node.get_gray3D(name, *_shape_offset(GRAY_READ_BOX), False)


def _get_gray_compressed(env: Env, name: str, state: Any) -> np.ndarray:
    with service(env) as node:
        return node.get_gray3D(name, *_shape_offset(GRAY_READ_BOX), False, True)


def _put_gray(env: Env, name: str, state: WriteState) -> None:
    with service(env) as node:
        node.put_gray3D(name, state.data, state.box[0], False)


def _get_labels(env: Env, name: str, state: Any) -> np.ndarray:
    with service(env) as node:
        return node.get_labels3D(name, *_shape_offset(LABEL_READ_BOX), False)  # compress=True: libdvid's default


def _put_labels(env: Env, name: str, state: WriteState) -> None:
    with service(env) as node:
        node.put_labels3D(name, state.data, state.box[0], False)  # compress=True, mutate=False: the defaults


def _put_labels_mutate(env: Env, name: str, state: WriteState) -> None:
    with service(env) as node:
        node.put_labels3D(name, state.data, state.box[0], False, True, None, True)


def _put_labelblocks(env: Env, name: str, state: WriteState) -> None:
    with service(env) as node:
        node.put_labelblocks3D(name, state.data, state.box[0], False)


LIBDVID_VOLUME_OPS = [
    Op("libdvid get_gray3D [GET /raw]", "lgg", gray_setup, _get_gray, read_judge(crop(GRAY_READ_BOX, GRAY_BOX)),
       "raw", frozenset({"GET"}), faults=READ_KINDS, persistent=SOME_PERSISTENT, shared=True),
    Op("libdvid get_gray3D(compress=True) [GET /subvolblocks]", "lgc", gray_setup, _get_gray_compressed,
       read_judge(crop(GRAY_READ_BOX, GRAY_BOX)), "subvolblocks", frozenset({"GET"}), faults=READ_KINDS,
       persistent=SOME_PERSISTENT, shared=True),
    Op("libdvid put_gray3D aligned [POST /raw]", "lpg", write_setup("gray", GRAY_ALIGNED), _put_gray,
       write_judge("gray"), "raw", frozenset({"POST"}), WRITE_RIDES, persistent=SOME_PERSISTENT_WRITES),
    Op("libdvid get_labels3D (labelmap) [GET /raw lz4]", "lgl", label_setup, _get_labels,
       read_judge(crop(LABEL_READ_BOX, LABEL_BOX)), "raw", frozenset({"GET"}), faults=READ_KINDS,
       persistent=SOME_PERSISTENT, shared=True),
    Op("libdvid put_labels3D aligned (labelmap) [POST /raw, not idempotent]", "lpl",
       write_setup("labels", LABEL_ALIGNED), _put_labels, write_judge("labels"), "raw", frozenset({"POST"}),
       UNSAFE_WRITE_RIDES, persistent=SOME_PERSISTENT_WRITES),
    Op("libdvid put_labelblocks3D aligned (labelmap) [POST /blocks, not idempotent]", "lpb",
       write_setup("labels", LABEL_ALIGNED), _put_labelblocks, write_judge("labels"), "blocks", frozenset({"POST"}),
       UNSAFE_WRITE_RIDES, persistent=SOME_PERSISTENT_WRITES),
    Op("libdvid put_labels3D(mutate=True) aligned (labelmap) [POST /raw]", "lpm",
       write_setup("labels", LABEL_ALIGNED), _put_labels_mutate, write_judge("labels"), "raw", frozenset({"POST"}),
       WRITE_RIDES, persistent=SOME_PERSISTENT_WRITES),
]


def test_libdvid_volumes(env: Env) -> None:
    run_matrix(env, LIBDVID_VOLUME_OPS)
