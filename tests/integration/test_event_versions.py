"""A chatctl newer than the chatd it talks to (upgraded, daemon not restarted yet):
its tail reads the events an older chatd sends, one a message under the rooms' own
topics, when the sync answer does not say that chatd sends the packed form.

The older chatd is played by a real ZeroMQ XPUB on a socket in a private runtime
directory: it answers syncs as chatd did before the packed form, and publishes a
room's event as chatd then did.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import zmq

from mqchat.client.event_subscriber import EventSubscriber
from mqchat.protocol.ipc_events import (
    PACKED_PREFIX,
    SYNC_PREFIX,
    WELCOME_TOPIC,
    room_topic,
)

ROOM = "lobby"
EVENT = {
    "type": "message", "room": ROOM, "seq": 1, "id": "ab" * 16,
    "ts": "2026-12-08T00:00:00.000Z", "sender": "bob", "fingerprint": "f" * 64,
    "verified": True, "own": False, "legacy": False, "text": "from an older chatd",
}  # fmt: skip


def _older_chatd(xpub: zmq.Socket[bytes], stop: threading.Event, seen: list[bytes]) -> None:
    """Answer each sync without "packed"; once the room's own topic is subscribed and
    a sync answered after it, publish the room's event under that topic."""
    room_subscribed = sent = False
    while not stop.is_set():
        if not xpub.poll(50):
            continue
        frame = xpub.recv()
        if not frame or frame[0] != 1:
            continue
        topic = frame[1:]
        seen.append(topic)
        if topic == room_topic(ROOM):
            room_subscribed = True
        elif topic.startswith(SYNC_PREFIX):
            token = topic[len(SYNC_PREFIX) :].decode()
            xpub.send_multipart([topic, json.dumps({"type": "sync", "token": token}).encode()])
            if room_subscribed and not sent:
                xpub.send_multipart([room_topic(ROOM), json.dumps(EVENT).encode()])
                sent = True


def test_a_tail_reads_the_plain_events_of_a_chatd_from_before_the_packed_form(
    tmp_path: Path,
) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    xpub = ctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    xpub.setsockopt(zmq.XPUB_VERBOSER, 1)
    xpub.setsockopt(zmq.XPUB_WELCOME_MSG, WELCOME_TOPIC)
    xpub.bind(f"ipc://{runtime / 'events.sock'}")
    stop, seen = threading.Event(), []
    server = threading.Thread(target=_older_chatd, args=(xpub, stop, seen), daemon=True)
    server.start()
    sub = EventSubscriber(runtime, 10.0, [ROOM], notices=False)
    try:
        sub.open()  # confirmed: the second sync, on the plain topics, was answered
        got = None
        for event in sub.events(timeout=10.0):
            got = event  # the first event, or None after 10 s of silence
            break
        assert got == EVENT
        assert PACKED_PREFIX + room_topic(ROOM) in seen  # it asked for the packed form first
    finally:
        sub.close()
        stop.set()
        server.join(5)
        xpub.close(linger=0)
        ctx.term()
