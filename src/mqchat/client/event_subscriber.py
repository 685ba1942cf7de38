"""chatctl's end of events.sock: a ZeroMQ SUB, kept across chatd restarts.

Subscribes to its rooms' packed topics (mqchat.protocol.ipc_events: a commit's
events of a room come in one message, one JSON object a line) and to the welcome
topic, then to a fresh sync topic: chatd answers it once every earlier
subscription of this connection is in force, which is what makes a tail
gap-free (docs/ipc.md, "Gap-free tail"). ZeroMQ connects again by itself when
chatd restarts or closed this connection for not reading; the welcome message
then comes a second time, the stream syncs again and reports ``{"type":
"dropped", "count": null, "reason": "reconnected"}``: whatever happened
meanwhile is in the store, and the reader fills it in from there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq

from mqchat.client.ipc_client import EVENTS_SOCKET, check_runtime_dir, check_socket_file
from mqchat.errors import DaemonUnavailable
from mqchat.protocol.ipc_events import (
    CONTROL,
    EVERY_TOPIC,
    NO_ROOM_TOPIC,
    PACKED_PREFIX,
    SYNC_PREFIX,
    WELCOME_TOPIC,
    decode_events,
    packed_topic,
    reconnected_event,
    room_topic,
    sync_topic,
)
from mqchat.protocol.limits import normalize_room
from mqchat.zmq_plain import waiting

MAX_EVENT_BYTES = 1024 * 1024
"""chatd's longest event is about 100 KiB (16 KiB of text, escaped); a longer frame
makes ZeroMQ drop the connection, which then connects again."""
RECEIVE_HWM = 1_000
"""Event messages this client's ZeroMQ thread takes in ahead of it: chatd packs up to
8 KiB of a room's events into one, so ~20,000 ordinary messages (~8 MB). A reader
that is slow, not stopped, holds that backlog itself and loses less; chatd's memory
stays bounded by its own 1,000 messages for this subscriber."""
RECONNECT_FIRST_MS = 50
RECONNECT_MAX_MS = 1000
CHATD_AWAY = "chatd_away"
CHATD_BACK = "chatd_back"
AWAY_TEXT = (
    "chatd went away (stopped or restarting): waiting for it to come back; "
    "nothing is lost, what arrives meanwhile is shown then"
)
BACK_TEXT = "chatd is back: showing what arrived meanwhile, then new messages"


class EventSubscriber:
    """One subscription on events.sock."""

    def __init__(
        self,
        runtime_dir: Path,
        timeout: float,
        rooms: list[str] | None,
        *,
        notices: bool,
        say_away: bool = False,
    ) -> None:
        self._runtime_dir = runtime_dir
        self._say_away = say_away
        """Yield a notice when chatd goes away and when it is back (tail and chat): the
        socket monitor says when the connection drops; the next welcome, that it is back."""
        self._monitor: zmq.Socket[bytes] | None = None
        self._timeout = timeout
        self._notices = notices
        # The packed form (docs/ipc.md, "Packed events"): a commit's events of a room
        # in one message, far cheaper to read than a message an event (issue 24).
        if rooms is None:
            self._topics = [PACKED_PREFIX, NO_ROOM_TOPIC]
            self._plain_topics = [EVERY_TOPIC]
        else:
            names = [normalize_room(r) for r in rooms]
            self._topics = [packed_topic(name) for name in names]
            self._plain_topics = [room_topic(name) for name in names]
            if notices:
                self._topics.append(NO_ROOM_TOPIC)
                self._plain_topics.append(NO_ROOM_TOPIC)
        self._sock: zmq.Socket[bytes] | None = None
        self._sync: bytes | None = None  # the sync topic awaited, while one is
        self._welcomed = False

    def open(self) -> None:
        """Connect and subscribe; return once chatd confirms (DaemonUnavailable if it does not)."""
        check_runtime_dir(self._runtime_dir)
        path = self._runtime_dir / EVENTS_SOCKET
        check_socket_file(path)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_EVENT_BYTES)
        sock.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_FIRST_MS)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
        sock.setsockopt(zmq.SUBSCRIBE, WELCOME_TOPIC)
        for topic in self._topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        if self._say_away:
            self._monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        sock.connect(f"ipc://{path}")
        self._sock = sock
        self._start_sync()
        deadline = time.monotonic() + self._timeout
        while self._sync is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000) + 1):
                raise DaemonUnavailable(
                    f"chatd did not confirm the subscription on {path} within "
                    f"{self._timeout:g} s; is it running?"
                )
            self._read_control(sock.recv_multipart())
        self._welcomed = True  # a welcome from now on means: connected again

    def close(self) -> None:
        if self._monitor is not None and self._sock is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any] | None]:
        """Yield events as they come; yield None once nothing more is waiting after some
        came (a reader may write out what it holds: one write a burst, not one a line),
        and after ``timeout`` s of silence."""
        if self._sock is None:
            raise RuntimeError("open first")
        wait_ms = None if timeout is None else int(timeout * 1000)
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        gave = False  # events yielded since the last None
        while self._sock is not None:
            # During a burst, take what is there without a poll per event. ZMQ_EVENTS
            # says whether a message waits, at a third of an Again exception's cost.
            if waiting(self._sock):
                frames = self._sock.recv_multipart()
            else:
                if gave:
                    gave = False
                    yield None  # the end of a burst: nothing more waits now
                    continue  # more may have come meanwhile
                ready = dict(poller.poll(wait_ms))
                if self._monitor is not None and self._monitor in ready:
                    self._monitor.recv_multipart()  # the connection to chatd dropped
                    gave = True
                    yield own_notice(CHATD_AWAY, AWAY_TEXT)
                elif not ready:
                    yield None
                continue
            if frames[0].startswith(CONTROL) and not frames[0].startswith(PACKED_PREFIX):
                if self._read_control(frames):
                    gave = True
                    if self._say_away:
                        yield own_notice(CHATD_BACK, BACK_TEXT)
                    yield reconnected_event()
                continue
            if self._sync is not None or len(frames) != 2:
                continue  # before the sync, history covers it
            for event in decode_events(frames[1]):
                if event is None:
                    continue
                if not self._notices and event.get("room") is None:
                    continue
                gave = True
                yield event

    # ------------------------------------------------------------------ internals
    def _start_sync(self) -> None:
        if self._sock is None:
            return
        if self._sync is not None:
            self._sock.setsockopt(zmq.UNSUBSCRIBE, self._sync)
        self._sync = sync_topic(os.urandom(16).hex())
        self._sock.setsockopt(zmq.SUBSCRIBE, self._sync)

    def _read_control(self, frames: list[bytes]) -> bool:
        """Handle a welcome or a sync; True when a sync completes a re-subscription."""
        topic = frames[0]
        if topic == WELCOME_TOPIC:
            if self._welcomed:
                self._start_sync()  # connected again: chatd has our subscriptions anew
            return False
        if topic.startswith(SYNC_PREFIX) and topic == self._sync and self._sock is not None:
            self._sock.setsockopt(zmq.UNSUBSCRIBE, topic)
            self._sync = None
            if self._topics != self._plain_topics and not _says_packed(frames):
                self._use_plain_topics()  # a chatd older than the packed form
                return False
            return self._welcomed
        return False

    def _use_plain_topics(self) -> None:
        """Read one event a message, under the rooms' own topics, and sync again: what a
        chatd from before the packed form sends (a daemon not restarted since an
        upgrade). Its events read the same (decode_events)."""
        if self._sock is None:
            return
        for topic in self._topics:
            self._sock.setsockopt(zmq.UNSUBSCRIBE, topic)
        self._topics = self._plain_topics
        for topic in self._topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic)
        self._start_sync()


def _says_packed(frames: list[bytes]) -> bool:
    """Whether a sync answer says that chatd sends the packed form."""
    events = decode_events(frames[1]) if len(frames) == 2 else []
    return bool(events and events[0] and events[0].get("packed") is True)


def own_notice(kind: str, text: str) -> dict[str, Any]:
    """A notice of chatctl's own (docs/ipc.md): no room, no seq."""
    return {"type": "notice", "room": None, "kind": kind, "text": text}
