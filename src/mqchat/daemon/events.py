"""events.sock: a ZeroMQ XPUB that every tail, chat and plain SUB reads (docs/ipc.md, "Events").

Each event is a message of two frames, [topic, JSON event] (mqchat.protocol.ipc_events),
so a ``zmq.SUB`` in any language filters rooms by topic. The same events also go
in a packed form, to whoever subscribes to it (chatctl does): under the room's
packed topic, the consecutive events of a room that one commit tells share a
message, one JSON object a line, up to PACK_BYTES. ZeroMQ's cost is per message,
on both ends and in libzmq's threads: a printing tail took 12 µs of CPU a line
read one a message, 4 to 5 packed (issue 24). chatd sends each form only while
someone holds a subscription that matches it (it enters every subscription
itself, below).

What a client can make chatd hold is bounded by ZeroMQ's own options and by what
chatd lets into the subscription table (mqchat.daemon.event_subscriptions):

- ZMQ_MAXMSGSIZE: a subscription longer than any topic chatd publishes
  disconnects its sender before it is buffered (a 10 MB one costs nothing);
- ZMQ_XPUB_MANUAL (+ VERBOSER): chatd sees every subscription and unsubscription
  and decides what enters the table that events are matched against;
- ZMQ_SNDHWM, which an XPUB keeps per subscriber: one that does not read loses
  events past it, while the others read on;
- ZMTP heartbeats: a subscriber that answers no ping (stopped, or too far behind
  to read one) is disconnected and its queue freed; its SUB connects again;
- ZMQ_XPUB_WELCOME_MSG: a client that gets a second welcome knows it was
  connected again and reads what it missed from the store.

An XPUB cannot say which subscriber lost what, so every message event carries its
room's seq and chatd repeats each active room's last seq (a ``head`` event) once
a second: a reader notices any gap, also at the end of a burst, and fills it from
the store (mqchat.client.room_feed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any, cast

import zmq

from mqchat.daemon.drops import DropCounter
from mqchat.daemon.event_subscriptions import SubscriptionBudget
from mqchat.daemon.store.records import StoredMessage
from mqchat.protocol.ipc_events import (
    EVERY_TOPIC,
    MAX_TOPIC_BYTES,
    NO_ROOM_TOPIC,
    PACKED_PREFIX,
    SYNC_PREFIX,
    WELCOME_TOPIC,
    encode_event,
    head_event,
    iso_ts,
    message_line,
    room_topic,
    sync_event,
    to_event,
    topic_kind,
)
from mqchat.zmq_plain import NOBLOCK, send_frames, waiting

# iso_ts and to_event are imported from here by other modules; the schema itself is
# in mqchat.protocol.ipc_events.
__all__ = ["Event", "EventPublisher", "iso_ts", "to_event"]

Event = dict[str, Any] | StoredMessage
"""An event to publish: its JSON object, or a stored message (its message event)."""

MAX_SUBSCRIPTION_BYTES = 2 * MAX_TOPIC_BYTES
"""ZMQ_MAXMSGSIZE (514): above the longest topic and its subscribe byte."""
SEND_HWM = 1000
"""ZMQ_SNDHWM: event messages queued for one subscriber; past it, that subscriber's
are dropped."""
PACK_BYTES = 8 * 1024
"""In the packed form, events of one room told together share a message up to this
many bytes (one event longer than this goes alone): 20 or so ordinary messages, so
that a subscriber's queue holds at most SEND_HWM x 8 KiB of them (docs/ipc.md,
"What a client can cost")."""
RECEIVE_HWM = 100
"""ZMQ_RCVHWM: subscriptions libzmq takes from one connection before chatd has seen
them (it records each one as it takes it, so this bounds what chatd cannot refuse)."""
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000
"""A subscriber that answers no ping within 3 s is disconnected."""
HEAD_INTERVAL_S = 1.0
HEAD_REPEAT_S = 60.0
"""A room's head is repeated every second for a minute after its last message..."""
HEAD_SLOW_EVERY = 30
"""...then every 30 s, so that a reader stuck longer still learns where the room is."""
DRAIN_BATCH = 1000
"""Subscription messages handled per turn of the loop."""
REBIND_WAIT_S = 1.0


class EventPublisher:
    """Binds events.sock at once (before READY); reads subscriptions once the loop runs."""

    def __init__(self, path: Path, drops: DropCounter, ctx: zmq.Context[Any] | None = None) -> None:
        self._path = path
        self._ctx: zmq.Context[Any] = ctx if ctx is not None else zmq.Context.instance()
        self._drops = drops
        self._budget = SubscriptionBudget()
        self._sock = self._open()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_scheduled = False
        self._heads: dict[str, tuple[int, float]] = {}  # room -> (last seq, when it moved)
        self._ticks = 0

    def _open(self) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.XPUB)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
            sock.setsockopt(zmq.SNDHWM, SEND_HWM)
            sock.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
            sock.setsockopt(zmq.XPUB_MANUAL, 1)
            sock.setsockopt(zmq.XPUB_VERBOSER, 1)
            sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
            sock.setsockopt(zmq.XPUB_WELCOME_MSG, WELCOME_TOPIC)
            sock.bind(f"ipc://{self._path}")
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        return sock

    @property
    def listening(self) -> bool:
        """False while nobody subscribed to any room or notice: an event need not be built."""
        return self._budget.entered > 0

    async def serve_subscriptions(self) -> None:
        """Read subscriptions and repeat the rooms' heads, until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock, self._woken)
        self._schedule_drain()
        try:
            while True:
                await asyncio.sleep(HEAD_INTERVAL_S)
                self._publish_heads()
        finally:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock)
            self._loop = None

    # ------------------------------------------------------------ subscriptions
    def _woken(self) -> None:
        """ZeroMQ's descriptor woke the loop (after nearly every send): look now, not
        a loop pass later (unless a drain is already due)."""
        if not self._drain_scheduled:
            self._drain()

    def _schedule_drain(self) -> None:
        if self._loop is not None and not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _readable(self) -> bool:
        # ZeroMQ's descriptor is edge-triggered: ask the socket what is waiting.
        return waiting(self._sock)

    def _drain(self) -> None:
        self._drain_scheduled = False
        for _ in range(DRAIN_BATCH):
            try:
                frame = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._take(frame)
        self._schedule_drain()  # more may wait: after the loop's other work

    def _take(self, frame: bytes) -> None:
        """One subscription or unsubscription (a subscriber never sends anything else)."""
        if not frame or frame[0] > 1:
            self._drops.drop("bad_subscription", "a message that is not a subscription")
            return
        subscribe, topic = frame[0] == 1, frame[1:]
        kind = topic_kind(topic)
        if not subscribe:
            self._budget.removed(topic, kind)
            self._sock.setsockopt(zmq.UNSUBSCRIBE, topic)
            return
        if not self._budget.added(topic, kind):
            self._reopen()
            return
        if kind is None:
            self._drops.drop("bad_subscription", "a topic chatd never publishes")
        elif kind == "sync":
            # In force now, with everything this subscriber sent before it: say so on
            # this connection only, then take the entry out again.
            self._sock.setsockopt(zmq.SUBSCRIBE, topic)
            token = topic[len(SYNC_PREFIX) :].decode()
            self._send(topic, encode_event(sync_event(token)))
            self._sock.setsockopt(zmq.UNSUBSCRIBE, topic)
        elif kind != "welcome":  # ZeroMQ sends the welcome itself, to every connection
            self._sock.setsockopt(zmq.SUBSCRIBE, topic)

    def _reopen(self) -> None:
        """Over the subscription budget: close the socket, which frees every table libzmq
        keeps for it, and bind a new one. Every subscriber connects again by itself and,
        welcomed again, reads what it missed from the store."""
        self._drops.drop(
            "events_subscriptions_over_budget",
            f"more than {self._budget.max_count} subscriptions or {self._budget.max_bytes} "
            "bytes of them; events.sock reopened",
        )
        if self._loop is not None:
            self._loop.remove_reader(self._sock)
        self._sock.close(linger=0)
        # libzmq removes the old socket file from its I/O thread; bind once it has,
        # or it could remove the new one.
        deadline = time.monotonic() + REBIND_WAIT_S
        while os.path.lexists(self._path) and time.monotonic() < deadline:
            time.sleep(0.001)  # a wait for the file to go, bounded by the deadline
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        self._budget = SubscriptionBudget()
        self._sock = self._open()
        if self._loop is not None:
            self._loop.add_reader(self._sock, self._schedule_drain)
            self._schedule_drain()

    # ------------------------------------------------------------ publishing
    def publish(self, room: str | None, event: Event) -> None:
        self.publish_all([(room, event)])

    def publish_all(self, events: list[tuple[str | None, Event]]) -> None:
        """Send events in order (a committed batch's: mqchat.daemon.unit_of_work): each
        alone under its room's topic, and the consecutive ones of a room packed into
        messages of up to PACK_BYTES under its packed topic, each form while someone
        holds a subscription to it. A stored message is its message event
        (ipc_events.message_line)."""
        if not self.listening or not events:
            return  # nobody listens: batches run on the loop, so nobody can start to
        now = time.monotonic()
        run_room: str | None = None
        run: list[bytes] = []
        for room, event in events:
            if type(event) is dict:
                if room is not None and event.get("type") == "message":
                    self._heads[room] = (int(event["seq"]), now)
                line = encode_event(event)
            else:
                message = cast(StoredMessage, event)
                self._heads[message.room] = (message.seq, now)
                line = message_line(message)
            if run and room != run_room:
                self._tell(run_room, run)
                run = []
            run_room = room
            run.append(line)
        self._tell(run_room, run)
        self._after_sends()

    def _tell(self, room: str | None, lines: list[bytes]) -> None:
        """A room's events (or notices of no room), in the forms someone reads."""
        budget = self._budget
        if room is None:
            for line in lines:
                self._send(NO_ROOM_TOPIC, line)
            return
        topic = room_topic(room)
        if budget.holds(topic) or budget.holds(EVERY_TOPIC):
            for line in lines:
                self._send(topic, line)
        packed = PACKED_PREFIX + topic
        if budget.holds(packed) or budget.holds(PACKED_PREFIX):
            pack: list[bytes] = []
            size = 0
            for line in lines:
                if pack and size + len(line) >= PACK_BYTES:
                    self._send(packed, b"\n".join(pack))
                    pack, size = [], 0
                pack.append(line)
                size += len(line) + 1
            self._send(packed, b"\n".join(pack))

    def _publish_heads(self) -> None:
        self._ticks += 1
        if not self.listening or not self._heads:
            return
        now = time.monotonic()
        for room, (seq, moved) in self._heads.items():
            if now - moved <= HEAD_REPEAT_S or self._ticks % HEAD_SLOW_EVERY == 0:
                self._tell(room, [encode_event(head_event(room, seq))])
        self._after_sends()

    def _send(self, topic: bytes, payload: bytes) -> None:
        # An XPUB never blocks: a subscriber at its high-water mark loses this one.
        try:
            send_frames(self._sock, (topic, payload), NOBLOCK)
        except zmq.ZMQError as exc:
            self._drops.drop("events_not_sent", exc.strerror)

    def _after_sends(self) -> None:
        # A send may have taken the descriptor's edge for waiting subscriptions.
        if self._loop is not None and self._readable():
            self._schedule_drain()

    def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock)
        self._sock.close(linger=0)
