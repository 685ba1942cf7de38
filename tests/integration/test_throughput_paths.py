"""Issue 14 items 3-5: the faster paths, and what they must not lose on the way.

A real mosquitto, real chatd processes, the real `chatctl` and real sockets:
chatd answers others while a client floods it with sends; `send` takes a list
of texts; `chatctl send` puts many stdin lines in one request without holding
back a line on an idle stream; new rooms use AES-256-GCM and still talk with
peers that use Fernet.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from harness import PASSPHRASE, Broker, Daemon, command
from mqchat.client.ipc_client import Client
from mqchat.client.sending import send_lines
from mqchat.errors import MessageTooLong
from mqchat.protocol.ipc import (
    INVALID_PARAMS,
    MAX_SEND_TEXTS,
    TOO_LONG,
    decode_reply,
    encode_request,
)
from mqchat.protocol.limits import MAX_TEXT_BYTES
from rawmqtt import RawClient

MakeDaemon = Callable[..., Daemon]

FLOOD = 20_000
PROMPT_S = 1.0
"""A status or a subscription answered within this while a flood runs is prompt: one
batch of the flood costs chatd tens of milliseconds; before chatd yielded between
batches, a new tail waited for the whole flood (and timed out)."""

DEALER_FLOOD = """
import sys, zmq
from mqchat.protocol.ipc import encode_request
endpoint, room, count, window = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sock = zmq.Context().socket(zmq.DEALER)
sock.setsockopt(zmq.SNDHWM, 0)
sock.connect(endpoint)
sent = answered = 0
while answered < count:
    while sent < count and sent - answered < window:
        sent += 1
        params = {"room": room, "text": f"flood {sent}"}
        sock.send_multipart([b"", encode_request(sent, "send", params)])
    if not sock.poll(20_000):
        sys.exit("chatd stopped answering")
    sock.recv_multipart()
    answered += 1
"""


class Ctl:
    """A DEALER on chatd's ctl.sock, as any local client could open one."""

    def __init__(self, d: Daemon) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"ipc://{d.runtime_dir / 'ctl.sock'}")
        self.ids = 0

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """(result, None) or (None, (code, message))."""
        self.ids += 1
        self.sock.send_multipart([b"", encode_request(self.ids, method, params or {})])
        if not self.sock.poll(20_000):
            raise AssertionError(f"no answer to {method}")
        reply = decode_reply(self.sock.recv_multipart()[-1])
        assert reply.id == self.ids
        if reply.error_code is not None:
            return None, (reply.error_code, reply.error_message)
        return reply.result, None

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def ctl_of() -> Iterator[Callable[[Daemon], Ctl]]:
    opened: list[Ctl] = []

    def make(d: Daemon) -> Ctl:
        opened.append(Ctl(d))
        return opened[-1]

    yield make
    for c in opened:
        c.close()


def subscribe_seconds(d: Daemon, room: str) -> float:
    """Seconds from a new events.sock subscription to chatd's sync answer."""
    from mqchat.client.event_subscriber import EventSubscriber

    sub = EventSubscriber(d.runtime_dir, 20, [room], notices=True)
    start = time.perf_counter()
    try:
        sub.open()  # returns once chatd's sync came
        return time.perf_counter() - start
    finally:
        sub.close()


def texts_of(d: Daemon, room: str) -> list[str]:
    out = d.ok("tail", room, "--no-follow", "--since", "0", "--format", "{text}")
    return out.splitlines()


# ---------------------------------------------------------------------- fair IPC (item 4)


@pytest.mark.parametrize("flooder", ["chatctl send", "a DEALER of single sends"])
def test_status_and_a_new_tail_are_answered_during_a_send_flood(
    make_daemon: MakeDaemon,
    room: str,
    ctl_of: Callable[[Daemon], Ctl],
    flooder: str,
    tmp_path: Path,
) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    watcher = alice.tail(room, "--since", "0")
    if flooder == "chatctl send":
        lines = tmp_path / "lines"
        lines.write_text("".join(f"flood {i}\n" for i in range(1, FLOOD + 1)))
        with lines.open("rb") as stdin:
            flood = subprocess.Popen(
                [command("chatctl"), "send", room],
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=alice.env,
            )
    else:
        endpoint = f"ipc://{alice.runtime_dir / 'ctl.sock'}"
        flood = subprocess.Popen(
            [sys.executable, "-c", DEALER_FLOOD, endpoint, room, str(FLOOD), str(FLOOD)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=alice.env,
        )
    try:
        watcher.messages(500, timeout=60)  # the flood is stored and published by now
        ctl = ctl_of(alice)
        start = time.perf_counter()
        status, error = ctl.call("status")
        status_s = time.perf_counter() - start
        assert error is None and status["name"] == "alice"
        sync_s = subscribe_seconds(alice, room)
        still_flooding = flood.poll() is None
        last_seq = ctl.call("history", {"room": room, "limit": 0})[0]["last_seq"]
    finally:
        _, err = flood.communicate(timeout=120)
    assert flood.returncode == 0, err
    # Answered while the flood went on, not once it had been handled (the bug of old).
    assert still_flooding and last_seq < FLOOD, "status and tail waited for the flood's end"
    assert status_s < PROMPT_S, f"status took {status_s:.2f} s during the flood"
    assert sync_s < PROMPT_S, f"a new subscription took {sync_s:.2f} s during the flood"
    # And the flood itself lost nothing, in order.
    events = watcher.messages(FLOOD - 500, timeout=120)
    assert [e["text"] for e in events][-1] == f"flood {FLOOD}"
    assert events[-1]["seq"] == FLOOD


# ---------------------------------------------------------------------- send of many texts (item 5)


def test_send_takes_a_list_of_texts_in_order(
    make_daemon: MakeDaemon, room: str, ctl_of: Callable[[Daemon], Ctl]
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room)
    ctl = ctl_of(alice)
    one, error = ctl.call("send", {"room": room, "text": "one"})
    assert error is None and one["seq"] == 1 and set(one) == {"room", "seq", "id", "queued"}
    many, error = ctl.call("send", {"room": room, "texts": ["two", "three", "four"]})
    assert error is None
    assert many["count"] == 3 and many["seqs"] == [2, 3, 4] and many["room"] == room
    assert len(many["ids"]) == 3 and many["queued"] is False
    assert [m["text"] for m in tail.messages(4)] == ["one", "two", "three", "four"]

    refusals = [
        ({"room": room, "text": "a", "texts": ["b"]}, INVALID_PARAMS, "one of the params"),
        ({"room": room}, INVALID_PARAMS, "one of the params"),
        ({"room": room, "texts": []}, INVALID_PARAMS, f"1 to {MAX_SEND_TEXTS} texts"),
        ({"room": room, "texts": ["x"] * (MAX_SEND_TEXTS + 1)}, INVALID_PARAMS, "texts"),
        ({"room": room, "texts": ["ok", 5]}, INVALID_PARAMS, "must be of type str"),
        ({"room": room, "texts": ["ok", "x" * (MAX_TEXT_BYTES + 1)]}, TOO_LONG, "texts[1]: "),
    ]
    for params, code, says in refusals:
        result, error = ctl.call("send", params)
        assert result is None and error is not None, params
        assert error[0] == code and says in error[1], (params, error)
    # Nothing of a refused request was stored or sent.
    assert ctl.call("history", {"room": room, "limit": 0})[0]["last_seq"] == 4
    bob.ok("send", room, "from bob")
    assert [m["text"] for m in tail.messages(1)] == ["from bob"]
    tail.assert_silent()


class CountingClient(Client):
    """The real client; it counts the requests it sends."""

    requests = 0

    def submit(self, method: str, params: dict[str, Any] | None = None) -> int:
        self.requests += 1
        return super().submit(method, params)


def test_chatctl_send_puts_many_lines_in_a_request_and_keeps_their_order(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    lines = [f"line {i}\n" for i in range(1, 3001)]
    notes: list[str] = []
    with CountingClient(alice.runtime_dir, 20) as c:
        sent = send_lines(c, room, iter(lines), notes.append)
        requests = c.requests
    assert sent == 3000 and notes == []
    assert requests <= 3000 // 20, f"{requests} requests for 3000 lines"
    assert texts_of(alice, room) == [line.strip() for line in lines]


def test_a_line_on_an_idle_stream_is_sent_at_once(make_daemon: MakeDaemon, room: str) -> None:
    """No timer and no waiting for a full request: each line below is only read once
    the one before it has reached a tail, so any holding back would never end."""
    alice = make_daemon("alice")
    alice.join(room)
    tail = alice.tail(room)

    def one_at_a_time() -> Iterator[str]:
        for i in range(1, 6):
            yield f"paced {i}\n"
            assert tail.messages(1)[0]["text"] == f"paced {i}"

    with Client(alice.runtime_dir, 20) as c:
        assert send_lines(c, room, one_at_a_time(), lambda _: None) == 5


def test_a_long_line_mid_stream_is_refused_by_its_number(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    lines = [f"l{i}" for i in range(1, 1001)]
    lines[599] = "x" * (MAX_TEXT_BYTES + 1)
    result = alice.ctl("send", room, input="".join(f"{t}\n" for t in lines))
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"ERROR: line 600: message is {MAX_TEXT_BYTES + 1} bytes")
    assert "nothing after it was sent" in result.stderr
    assert texts_of(alice, room) == lines[:599]
    with Client(alice.runtime_dir, 20) as c, pytest.raises(MessageTooLong):
        send_lines(c, room, iter(["fine\n", "y" * (MAX_TEXT_BYTES + 1)]), lambda _: None)


# ---------------------------------------------------------- AES-256-GCM by default (item 3)


def test_new_rooms_use_aes_gcm_and_still_talk_with_fernet_peers(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    with RawClient(broker) as raw:
        assert "(aes-256-gcm)" in alice.join(room)
        assert "(fernet)" in bob.join(room, PASSPHRASE, "--cipher", "fernet")
        to_bob, to_alice = bob.tail(room), alice.tail(room)
        alice.ok("send", room, "sealed with AES-GCM")
        assert to_bob.messages(1)[0]["text"] == "sealed with AES-GCM"
        bob.ok("send", room, "sealed with Fernet")
        assert [m["text"] for m in to_alice.messages(2)] == [
            "sealed with AES-GCM",
            "sealed with Fernet",
        ]
        ciphers = [p[1] for p in raw.wait_texts(room, PASSPHRASE, 2)]
        assert ciphers == [2, 1]  # docs/protocol.md: 1 fernet, 2 aes-256-gcm
    # Joined again without --cipher, a room keeps its cipher; with one, it changes.
    assert "(aes-256-gcm)" in alice.join(room)
    assert "(fernet)" in bob.join(room)
    assert "(chacha20-poly1305)" in alice.join(room, PASSPHRASE, "--cipher", "chacha20-poly1305")
    info = json.loads(alice.ok("rooms", "--json"))
    assert [(r["name"], r["cipher"]) for r in info] == [(room, "chacha20-poly1305")]
