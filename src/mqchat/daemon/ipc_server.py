"""The ROUTER side of local IPC: JSON-RPC 2.0 requests from chatctl (docs/ipc.md).

Accepts REQ and DEALER peers alike: the reply goes back with the routing
envelope it came with. Nothing a client sends can stop the daemon: bad input
gets a JSON-RPC error, an oversized message is cut off by ZMQ_MAXMSGSIZE.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import zmq
import zmq.asyncio

from mqchat.daemon.drops import DropCounter
from mqchat.daemon.service import ChatService
from mqchat.errors import (
    IpcError,
    MessageTooLong,
    MqchatError,
    NotJoined,
    UsageError,
    WeakPassphrase,
)
from mqchat.protocol.ipc import (
    BAD_PASSPHRASE,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    MAX_REQUEST_BYTES,
    NOT_JOINED,
    REFUSED,
    TOO_LONG,
    Request,
    decode_request,
    encode_error,
    encode_result,
)

log = logging.getLogger(__name__)


def error_code(exc: MqchatError) -> int:
    if isinstance(exc, NotJoined):
        return NOT_JOINED
    if isinstance(exc, MessageTooLong):
        return TOO_LONG
    if isinstance(exc, WeakPassphrase):
        return BAD_PASSPHRASE
    if isinstance(exc, UsageError):
        return INVALID_PARAMS
    return REFUSED


class IpcServer:
    def __init__(
        self, ctx: zmq.asyncio.Context, endpoint: str, service: ChatService, drops: DropCounter
    ) -> None:
        self._sock = ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES * 4)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 100_000)
        self._sock.setsockopt(zmq.RCVHWM, 100_000)
        self._sock.bind(endpoint)
        self._service = service
        self._drops = drops
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        while True:
            frames = await self._sock.recv_multipart()
            if len(frames) < 2:
                self._drops.drop("bad_request", "no routing envelope")
                continue
            self._handle(frames[:-1], frames[-1])

    def _reply(self, envelope: list[bytes], body: bytes) -> None:
        try:
            self._sock.send_multipart([*envelope, body], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("could not reply to a client: %s", exc)

    def _handle(self, envelope: list[bytes], body: bytes) -> None:
        try:
            req = decode_request(body)
        except IpcError as exc:
            self._drops.drop("bad_request", exc.message)
            req_id = exc.data if isinstance(exc.data, str | int) else None
            self._reply(envelope, encode_error(req_id, exc.code, exc.message))
            return
        try:
            result = self._service.call(req)
        except Exception as exc:
            self._reply(envelope, self._error_reply(req, exc))
            return
        if inspect.isawaitable(result):
            task = asyncio.create_task(self._finish(envelope, req, result), name=req.method)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._reply(envelope, encode_result(req.id, result))

    async def _finish(self, envelope: list[bytes], req: Request, pending: Any) -> None:
        try:
            result = await pending
        except Exception as exc:
            self._reply(envelope, self._error_reply(req, exc))
            return
        self._reply(envelope, encode_result(req.id, result))

    def _error_reply(self, req: Request, exc: Exception) -> bytes:
        if isinstance(exc, MqchatError):
            return encode_error(req.id, error_code(exc), exc.message)
        log.exception("internal error in %s", req.method)
        return encode_error(req.id, INTERNAL_ERROR, f"internal error in {req.method}")

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._sock.close(linger=0)
