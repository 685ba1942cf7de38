"""The PUB side of local IPC: events to every tail and chat (docs/ipc.md, "Events").

The socket is an XPUB, which is a PUB on the wire. It lets a client confirm
that its subscriptions are in place before it reads history: the client
subscribes to its rooms, then to a one-off ``sync:<token>`` topic, and the
daemon answers that subscription at once with a ``sync`` event. Subscriptions
on one connection are applied in order, so the answer proves the rooms are
subscribed too, and the tail has no gap (DESIGN.md, "Gap-free tail").
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import zmq
import zmq.asyncio

from mqchat.daemon.store import StoredMessage
from mqchat.protocol.ipc import NOTICE_TOPIC, SYNC_TOPIC_PREFIX, message_event, room_topic

log = logging.getLogger(__name__)

SEND_HWM = 100_000


def iso_ts(ms: int) -> str:
    stamp = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def to_event(m: StoredMessage) -> dict[str, Any]:
    return message_event(
        room=m.room,
        seq=m.seq,
        message_id=m.id,
        ts=iso_ts(m.ts_ms),
        sender=m.sender,
        fingerprint=m.fingerprint,
        verified=m.verified,
        own=m.own,
        text=m.text,
        legacy=m.legacy,
    )


class EventPublisher:
    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str) -> None:
        self._sock = ctx.socket(zmq.XPUB)
        self._sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(endpoint)
        # Sends never block (NOBLOCK), so they skip the asyncio wrapper's futures.
        self._out: zmq.Socket[bytes] = zmq.Socket.shadow(self._sock.underlying)
        self._held: list[list[bytes]] | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep events back until the block ends; drop them if it fails.

        A batch of requests publishes only what its transaction committed.
        """
        if self._held is not None:
            yield
            return
        self._held = []
        try:
            yield
            held = self._held
        finally:
            self._held = None
        for frames in held:
            self._send(frames, kick=False)
        self._kick()

    def publish(self, room: str | None, event: dict[str, Any]) -> None:
        topic = NOTICE_TOPIC if room is None else room_topic(room)
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        if self._held is not None:
            self._held.append([topic, body])
        else:
            self._send([topic, body])

    def _send(self, frames: list[bytes], *, kick: bool = True) -> None:
        try:
            self._out.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("event queue full; a slow subscriber missed an event")
        if kick:
            self._kick()

    def _kick(self) -> None:
        # ZeroMQ's descriptor is edge-triggered: a send through the plain socket
        # can consume the edge that announced a subscription, and the asyncio
        # reader would then sleep on it. Reading EVENTS through the asyncio
        # socket makes it look again (pyzmq schedules the pending receive).
        self._sock.get(zmq.EVENTS)

    async def serve_subscriptions(self) -> None:
        """Answer each ``sync:`` subscription with a sync event on that topic."""
        while True:
            frames = await self._sock.recv_multipart()
            msg = frames[0]
            if len(frames) == 1 and msg[:1] == b"\x01" and msg[1:].startswith(SYNC_TOPIC_PREFIX):
                body = json.dumps({"type": "sync"}).encode()
                self._send([msg[1:], body])

    def close(self) -> None:
        self._sock.close(linger=0)  # the shadow does not own the socket
