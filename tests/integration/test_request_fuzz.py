"""Issue 11: every JSON-RPC parameter, thrown at a real chatd with generated values.

Whatever a local client sends, chatd answers with a result or a documented error
code, never an internal error (-32603), and keeps serving.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import Daemon
from mqchat.protocol.ipc import METHODS

MakeDaemon = Callable[..., Daemon]
DOCUMENTED = {-32700, -32600, -32601, -32602, -32000, -32001, -32002, -32003}
HOSTILE_TEXT = ["\ud800", "a\udfff", "x" * 70, "", " ", "+", "#", "/", "\x00", "\u202e", "é"]
HOSTILE_INTS = [0, -1, 2**63 - 1, 2**63, -(2**63) - 1, 2**70, 10**30]


def values_for(kind: type, room: str) -> st.SearchStrategy[Any]:
    if kind is bool:
        return st.booleans() | st.integers(0, 1)
    if kind is int:
        return st.integers() | st.sampled_from(HOSTILE_INTS) | st.booleans()
    return (
        st.sampled_from([room, *HOSTILE_TEXT])
        | st.text(max_size=30)
        | st.integers()
        | st.lists(st.text(max_size=3), max_size=2)
    )


def requests(room: str) -> st.SearchStrategy[dict[str, Any]]:
    def for_method(method: str) -> st.SearchStrategy[dict[str, Any]]:
        spec = METHODS[method]
        params = st.fixed_dictionaries(
            {},
            optional={name: values_for(kind, room) for name, (kind, _, _) in spec.items()},
        )
        return st.fixed_dictionaries(
            {"jsonrpc": st.just("2.0"), "id": st.integers(0, 2**31), "method": st.just(method)},
            optional={"params": params | st.none()},
        )

    return st.sampled_from(sorted(METHODS)).flatmap(for_method)


def test_generated_requests_get_documented_answers(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{alice.runtime_dir / 'ctl.sock'}")

    @settings(
        max_examples=250,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(requests(room))
    def one(request: dict[str, Any]) -> None:
        params = request.get("params") or {}
        if request["method"] == "join" and isinstance(params.get("passphrase"), str):
            params["passphrase"] = params["passphrase"][:8]  # refused fast: no Argon2id run
            params.pop("weak", None)
        if request["method"] == "leave" and params.get("room") == room:
            return  # the other requests need the room
        sock.send_multipart([b"", json.dumps(request).encode()])
        assert sock.poll(10_000), f"no answer to {request}"
        reply = json.loads(sock.recv_multipart()[-1])
        assert reply["id"] == request["id"]
        if "error" in reply:
            assert reply["error"]["code"] in DOCUMENTED, (request, reply)

    try:
        one()
    finally:
        sock.close()
    assert alice.status()["name"] == "alice"
    assert "Traceback" not in alice.log()
