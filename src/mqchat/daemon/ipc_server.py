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

MAX_BATCH = 256
"""Requests handled per batch; a pipelining client fills one quickly."""


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
        # Draining what is already queued and replying never block, so these go
        # through the plain socket under the asyncio wrapper, without futures.
        self._direct: zmq.Socket[bytes] = zmq.Socket.shadow(self._sock.underlying)
        self._service = service
        self._drops = drops
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        """Receive requests; handle all that are waiting as one batch (one commit)."""
        while True:
            batch = [await self._sock.recv_multipart()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._direct.recv_multipart(flags=zmq.NOBLOCK))
                except zmq.Again:
                    break
            self._handle_batch(batch)

    def _reply(self, envelope: list[bytes], body: bytes, *, kick: bool = True) -> None:
        try:
            self._direct.send_multipart([*envelope, body], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("could not reply to a client: %s", exc)
        if kick:
            # The send may have consumed the edge of ZeroMQ's edge-triggered
            # descriptor; this makes the asyncio wrapper check for requests.
            self._sock.get(zmq.EVENTS)

    def _handle_batch(self, batch: list[list[bytes]]) -> None:
        replies: list[tuple[list[bytes], Request | None, bytes]] = []
        try:
            with self._service.batch():
                for frames in batch:
                    if len(frames) < 2:
                        self._drops.drop("bad_request", "no routing envelope")
                        continue
                    answer = self._handle(frames[:-1], frames[-1])
                    if answer is not None:
                        replies.append(answer)
        except Exception:
            log.exception("could not store a batch of %d requests", len(batch))
            replies = [
                (
                    env,
                    req,
                    encode_error(
                        req.id if req else None, INTERNAL_ERROR, "chatd could not store the request"
                    ),
                )
                for env, req, _ in replies
            ]
        for envelope, _, body in replies:
            self._reply(envelope, body, kick=False)
        self._sock.get(zmq.EVENTS)

    def _handle(
        self, envelope: list[bytes], body: bytes
    ) -> tuple[list[bytes], Request | None, bytes] | None:
        """The reply to send once the batch is committed; None when a task replies."""
        try:
            req = decode_request(body)
        except IpcError as exc:
            self._drops.drop("bad_request", exc.message)
            req_id = exc.data if isinstance(exc.data, str | int) else None
            return envelope, None, encode_error(req_id, exc.code, exc.message)
        try:
            result = self._service.call(req)
        except Exception as exc:
            return envelope, req, self._error_reply(req, exc)
        if inspect.isawaitable(result):
            task = asyncio.create_task(self._finish(envelope, req, result), name=req.method)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return None
        return envelope, req, encode_result(req.id, result)

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
