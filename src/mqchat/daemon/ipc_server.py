"""The ROUTER side of local IPC: JSON-RPC 2.0 requests from chatctl (docs/ipc.md).

Accepts REQ and DEALER peers alike: the reply goes back with the routing
envelope it came with. Nothing a client sends can stop the daemon: bad input
gets a JSON-RPC error; a request of more frames or bytes than a request can
have is refused without being copied or echoed; a frame over MAX_FRAME_BYTES
makes ZeroMQ drop that client's connection (ZMQ_MAXMSGSIZE), and a request
that never ends is cut off by the memory watchdog (mqchat.daemon.ctl_guard).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import zmq

from mqchat.daemon.ctl_guard import CtlGuard
from mqchat.daemon.drops import DropCounter
from mqchat.daemon.methods import MethodTable
from mqchat.daemon.unit_of_work import UnitOfWork
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
    INVALID_REQUEST,
    MAX_REQUEST_BYTES,
    NOT_JOINED,
    REFUSED,
    TOO_LONG,
    Request,
    decode_request,
    encode_error,
    encode_result,
)
from mqchat.zmq_plain import NOBLOCK, send_frames, waiting

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


MAX_BATCH = 256
"""Requests handled per batch; then the loop gets a turn (PUBACKs, events, other clients)."""
MAX_BATCH_MESSAGES = 256
"""Messages sent per batch (a ``send`` of N texts counts N), for the same reason: a
message costs a signature, and the loop must not wait for thousands of them."""
MAX_BATCH_BYTES = 1024 * 1024
"""And requests of about this many bytes: a batch holds its texts in memory until its
commit."""
MAX_FRAME_BYTES = 512 * 1024
"""ZMQ_MAXMSGSIZE: a peer that sends a larger frame is disconnected by ZeroMQ. Above
MAX_REQUEST_BYTES so that a request a little too large still gets an error reply."""
MAX_FRAMES = 3
"""A request is [identity, (empty delimiter,) JSON]: anything longer is refused unread."""
RECEIVE_HWM = 1000
SEND_HWM = 10_000


class _Result(NamedTuple):
    """A method's result, encoded when its reply is sent (``IpcServer._encoded``)."""

    req: Request
    result: Any


class IpcServer:
    """The ROUTER socket, driven by the event loop's reader callback.

    ZeroMQ's descriptor is edge-triggered: it says "something changed", not "a
    message is waiting". So each wake-up drains what ``EVENTS`` reports, and
    every send is followed by the same check, since a send can consume the edge.
    """

    def __init__(
        self,
        ctx: zmq.Context[Any],
        endpoint: str,
        methods: MethodTable,
        work: UnitOfWork,
        drops: DropCounter,
        kdf_busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self._sock: zmq.Socket[bytes] = zmq.Socket(ctx, zmq.ROUTER)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        self._sock.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        self._sock.bind(endpoint)
        self.guard = CtlGuard(self._sock, Path(endpoint.removeprefix("ipc://")), drops, kdf_busy)
        self._methods = methods
        self._work = work
        self._drops = drops
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_scheduled = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._sock, self._woken)
        self._schedule_drain()

    def _woken(self) -> None:
        """ZeroMQ's descriptor woke the loop: handle what came now, not a loop pass
        later (unless a drain is already due)."""
        if not self._drain_scheduled:
            self._drain()

    def _schedule_drain(self) -> None:
        if self._loop is not None and not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Handle waiting requests as one batch (one commit), then yield to the loop.

        A batch ends after MAX_BATCH requests, MAX_BATCH_MESSAGES messages sent or
        MAX_BATCH_BYTES of requests, so PUBACKs, received payloads and other clients
        get a turn in between.
        """
        self._drain_scheduled = False
        if not self._readable():
            return  # a wake-up of ZeroMQ's descriptor with no request: no empty transaction
        self._handle_batch()
        if self._readable():
            self._schedule_drain()  # more waiting: after the loop's other work

    def _readable(self) -> bool:
        return waiting(self._sock)

    def _receive(self) -> list[bytes] | None:
        """One request's frames, or None (counted) for one that breaks the limits.

        Frames are taken one at a time, so an oversized request is never copied
        whole into Python, and never echoed back.
        """
        frames: list[bytes] = []
        count = size = 0
        while True:
            frame = self._sock.recv(zmq.NOBLOCK, copy=False)
            count += 1
            size += len(frame.buffer)
            if count <= MAX_FRAMES:
                frames.append(frame.bytes)
            if not frame.more:
                break
        if count > MAX_FRAMES or size > MAX_FRAME_BYTES:
            self._drops.drop("bad_request", f"{count} frames, {size} bytes")
            delimited = len(frames) > 1 and not frames[1]
            self._reply(
                frames[:2] if delimited else frames[:1],
                encode_error(
                    None,
                    INVALID_REQUEST,
                    f"a request is one JSON frame of at most {MAX_REQUEST_BYTES} bytes",
                ),
                in_drain=True,
            )
            return None
        return frames

    def _reply(self, envelope: list[bytes], body: bytes, *, in_drain: bool = False) -> None:
        """Send a reply. Sending can take ZeroMQ's edge-triggered wake-up for a request
        that came meanwhile: outside ``_drain`` (which looks once it is done), look now."""
        if not envelope:
            return
        try:
            send_frames(self._sock, [*envelope, body], NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("could not reply to a client: %s", exc)
        if not in_drain and self._readable():
            self._schedule_drain()

    def _handle_batch(self) -> None:
        replies: list[tuple[list[bytes], Request | None, bytes | _Result]] = []
        try:
            with self._work.batch():
                requests = messages = size = 0
                while (
                    requests < MAX_BATCH
                    and messages < MAX_BATCH_MESSAGES
                    and size < MAX_BATCH_BYTES
                    and (requests == 0 or self._readable())  # _drain looked for the first
                ):
                    requests += 1
                    frames = self._receive()
                    if frames is None:
                        continue
                    size += len(frames[-1])
                    if len(frames) < 2:
                        self._drops.drop("bad_request", "no routing envelope")
                        continue
                    answer, weight = self._handle(frames[:-1], frames[-1])
                    messages += weight
                    if answer is not None:
                        replies.append(answer)
        except Exception:
            log.exception("could not store a batch of %d requests", len(replies))
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
            self._reply(envelope, self._encoded(body), in_drain=True)

    def _encoded(self, body: bytes | _Result) -> bytes:
        """A reply's bytes. A result is encoded only now, once the batch went to the
        store and the broker: a sent message leaves ~14 us sooner (issue 24)."""
        if isinstance(body, bytes):
            return body
        try:
            return encode_result(body.req.id, body.result)
        except (TypeError, ValueError) as exc:  # a bug: the result is not JSON
            return self._error_reply(body.req, exc)

    def _handle(
        self, envelope: list[bytes], body: bytes
    ) -> tuple[tuple[list[bytes], Request | None, bytes | _Result] | None, int]:
        """(the reply to send once the batch is committed, or None when a task
        replies; how many messages the request sent, at least 1)."""
        try:
            req = decode_request(body)
        except IpcError as exc:
            self._drops.drop("bad_request", exc.message)
            req_id = exc.data if isinstance(exc.data, str | int) else None
            return (envelope, None, encode_error(req_id, exc.code, exc.message)), 1
        texts = req.params.get("texts") if req.method == "send" else None
        weight = len(texts) if texts else 1
        try:
            # A part of the batch: if the request fails, nothing it wrote stays.
            with self._work.part():
                result = self._methods.call(req)
        except Exception as exc:
            return (envelope, req, self._error_reply(req, exc)), weight
        if inspect.isawaitable(result):
            task = asyncio.create_task(self._finish(envelope, req, result), name=req.method)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return None, weight
        return (envelope, req, _Result(req, result)), weight

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
        if self._drops.drop("internal_error", req.method):
            log.error("internal error in %s", req.method, exc_info=exc)
        return encode_error(req.id, INTERNAL_ERROR, f"internal error in {req.method}")

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._loop is not None:
            self._loop.remove_reader(self._sock)
        self.guard.close()
        self._sock.close(linger=0)
