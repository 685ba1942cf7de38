"""Replies are encoded once the batch committed (issue 24): a result that cannot be
encoded answers its own request with an internal error, and the other requests of
the batch get their results.

A real ROUTER (chatd's IpcServer) and a real DEALER on an ipc:// socket, on a real
store; the methods are stand-ins that return what the test needs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import zmq
import zmq.asyncio

from mqchat.daemon.drops import DropCounter
from mqchat.daemon.ipc_server import IpcServer
from mqchat.daemon.methods import MethodTable
from mqchat.daemon.store import Store
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.protocol.ipc import Request, encode_request


class NoEvents:
    listening = False

    def publish(self, room: str | None, event: Any) -> None:
        pass

    def publish_all(self, events: list[Any]) -> None:
        pass


class Methods:
    """``status`` answers with something JSON cannot encode; ``rooms`` with a list."""

    def call(self, req: Request) -> Any:
        return object() if req.method == "status" else [{"name": "lobby"}]


def test_a_result_that_cannot_be_encoded_fails_its_request_alone(tmp_path: Path) -> None:
    store = Store(tmp_path / "mqchat.db", retention=100)
    ctx: zmq.Context[Any] = zmq.Context()
    endpoint = f"ipc://{tmp_path / 'ctl.sock'}"
    drops = DropCounter()
    server = IpcServer(
        ctx, endpoint, cast(MethodTable, Methods()), UnitOfWork(store, cast(Any, NoEvents())), drops
    )

    async def exchange() -> list[dict[str, Any]]:
        client = zmq.asyncio.Context.shadow(ctx).socket(zmq.DEALER)
        client.setsockopt(zmq.LINGER, 0)
        client.connect(endpoint)
        server.start(asyncio.get_running_loop())
        try:
            await client.send_multipart([b"", encode_request(1, "status", {})])
            await client.send_multipart([b"", encode_request(2, "rooms", {})])
            return [
                json.loads((await asyncio.wait_for(client.recv_multipart(), 10))[-1])
                for _ in range(2)
            ]
        finally:
            client.close()

    loop = asyncio.new_event_loop()
    try:
        replies = loop.run_until_complete(exchange())
    finally:
        server.close()
        ctx.term()
        loop.close()
        store.close()
    by_id = {r["id"]: r for r in replies}
    assert by_id[1]["error"]["message"] == "internal error in status"
    assert by_id[2]["result"] == [{"name": "lobby"}]
    assert drops.as_dict() == {"internal_error": 1}
