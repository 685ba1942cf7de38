"""Issue 11 findings 2 and 3, issue 12 item 9: the event stream cannot exhaust chatd,
and a client that falls behind loses nothing for good.

Real mosquitto, real chatd, real chatctl; attackers are raw sockets. Memory is
chatd's VmRSS, sampled while the attack runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from harness import (
    DEADLINE_S,
    Daemon,
    PeakMemory,
    Terminal,
    command,
    memory_kib,
    stop_process,
    wait_until,
)

MakeDaemon = Callable[..., Daemon]
MB = 1024 * 1024
BIG = 16_000  # characters of text: a 16 KiB message
FLOOD = 1_600  # messages of 16 KiB: ~26 MB, far over one client's 4 MiB budget
SLOW_FLOOD = 3_200  # ~52 MB: a queue without a byte budget grows chatd by more than 50 MB


ZMQ_SUB_ATTACK = """
import sys, zmq
sub = zmq.Context().socket(zmq.SUB)
sub.connect(sys.argv[1])
sub.setsockopt(zmq.SUBSCRIBE, b"r:" + b"x" * 10 * 1024 * 1024)
print("subscribed", flush=True)
sys.stdin.read()
"""


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    return memory_kib(pid, field) / 1024


def dropped(d: Daemon, reason: str) -> int:
    return int(d.status()["dropped"].get(reason, 0))


def last_seq(d: Daemon, room: str) -> int:
    rooms = json.loads(d.ok("rooms", "--json"))
    return int(next(r["last_seq"] for r in rooms if r["name"] == room))


def flood_lines(prefix: str, count: int) -> str:
    return "".join(f"{prefix}{i:04d} {'x' * BIG}\n" for i in range(1, count + 1))


class EventConn:
    """A raw connection to events.sock, as any program could open one."""

    def __init__(self, d: Daemon) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(d.runtime_dir / "events.sock"))
        self.sock.settimeout(DEADLINE_S)
        self.buffer = b""

    def send(self, obj: Any) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def next_event(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("chatd closed the connection")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return dict(json.loads(line))

    def all_events(self) -> list[dict[str, Any]]:
        """Every event until chatd closes the connection (a reset, if it left our request
        unread: what it wrote before comes first)."""
        events = []
        while True:
            try:
                events.append(self.next_event())
            except (EOFError, ConnectionResetError):
                return events

    def closed_by_chatd(self) -> bool:
        """Read to EOF (what is left to read is discarded); True if chatd closed it."""
        try:
            while self.sock.recv(1 << 20):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


def subscribed(d: Daemon, rooms: list[str] | None, req_id: int = 1) -> EventConn:
    conn = EventConn(d)
    conn.send({"id": req_id, "subscribe": {"rooms": rooms, "notices": True}})
    assert conn.next_event() == {"type": "sync", "id": req_id}
    return conn


# ---------------------------------------------------------------------- requests


def test_huge_and_endless_subscriptions_cost_chatd_nothing(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    pid = alice.pid
    # The attack on the old XPUB, a 10 MB subscription from a ZeroMQ SUB, runs in
    # a process of its own: libzmq crashes when it closes such a socket.
    sub = subprocess.Popen(
        [sys.executable, "-c", ZMQ_SUB_ATTACK, f"ipc://{alice.runtime_dir / 'events.sock'}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        with PeakMemory(pid) as memory:
            assert sub.stdout is not None and sub.stdout.readline() == "subscribed\n"

            # A 10 MB request line: chatd closes the connection past 64 KiB.
            huge = EventConn(alice)
            with pytest.raises((BrokenPipeError, ConnectionResetError)):  # chatd closed it
                huge.sock.sendall(b'{"subscribe": {"rooms": ["' + b"a" * (10 * MB) + b'"]}}\n')
            assert huge.closed_by_chatd()
            huge.close()

            # 100,000 subscriptions on one connection: each replaces the last.
            many = EventConn(alice)
            answers: list[dict[str, Any]] = []
            reader = threading.Thread(
                target=lambda: answers.extend(many.next_event() for _ in range(100_000)),
                daemon=True,
            )
            reader.start()
            batch = []
            for i in range(100_000):
                batch.append(json.dumps({"id": i, "subscribe": {"rooms": [f"{room}-{i}"]}}))
                if len(batch) == 1000:
                    many.sock.sendall(("\n".join(batch) + "\n").encode())
                    batch = []
            reader.join(120)
            assert len(answers) == 100_000
            assert answers[-1] == {"type": "sync", "id": 99_999}

            # Too many rooms, a bad name, not JSON: refused with a reason, counted.
            before = dropped(alice, "bad_subscription")
            for bad in (
                {"subscribe": {"rooms": [f"r{i}" for i in range(1025)]}},
                {"subscribe": {"rooms": ["bad/room"]}},
                {"subscribe": {"rooms": "lobby"}},
                ["not", "an", "object"],
            ):
                many.send(bad)
                answer = many.next_event()
                assert answer["type"] == "error", answer
                assert "r1024" not in answer["error"] and "bad/room" not in answer["error"]
            assert dropped(alice, "bad_subscription") == before + 4

            # The connection still works, now for the room that has traffic.
            many.send({"id": "last", "subscribe": {"rooms": [room], "notices": False}})
            assert many.next_event() == {"type": "sync", "id": "last"}
            alice.ok("send", room, "still served")
            assert many.next_event()["text"] == "still served"
            many.close()
            assert alice.status()["name"] == "alice"
        assert memory.growth_mib < 50, f"chatd grew by {memory.growth_mib:.0f} MiB"
    finally:
        stop_process(sub, signal.SIGKILL)


def test_many_connections_are_bounded(make_daemon: MakeDaemon, room: str) -> None:
    from mqchat.daemon.event_clients import MAX_CLIENTS, MAX_ROOM_ENTRIES, MAX_ROOMS

    alice = make_daemon("alice")
    alice.join(room)
    pid = alice.pid
    conns: list[EventConn] = []
    with PeakMemory(pid) as memory:
        try:
            # More connections than chatd keeps, each with the most room names it
            # allows (long ones): the oldest are closed, and told why.
            for n in range(MAX_CLIENTS + 40):
                conn = EventConn(alice)
                rooms = [f"{n:04d}-{i:04d}-{'r' * 40}" for i in range(MAX_ROOMS)]
                conns.append(conn)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    conn.send({"id": n, "subscribe": {"rooms": rooms}})  # closed meanwhile
            # At most MAX_ROOM_ENTRIES room names stay subscribed: every other
            # connection is closed, the first ones for the number of connections.
            keep = MAX_ROOM_ENTRIES // MAX_ROOMS
            wait_until(
                lambda: dropped(alice, "events_client_evicted") == len(conns) - keep,
                "chatd to close the connections it cannot keep",
            )
            for conn in conns[:40]:
                events = conn.all_events()
                assert events[-1]["type"] == "error", events
                assert "at most" in events[-1]["error"]
            # A tail started now works.
            tail = alice.tail(room, "--since", "0")
            alice.ok("send", room, "after the crowd")
            assert tail.messages(1)[0]["text"] == "after the crowd"
        finally:
            for conn in conns:
                conn.close()
    assert memory.growth_mib < 50, f"chatd grew by {memory.growth_mib:.0f} MiB"


# ---------------------------------------------------------------------- slow readers


def test_a_stopped_tail_costs_chatd_little_and_then_misses_nothing(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    bob.ok("send", room, "before")
    tail = alice.tail(room, "--since", "0")
    assert tail.messages(1)[0]["text"] == "before"  # subscribed, history read
    pid = alice.pid
    os.kill(tail.proc.pid, signal.SIGSTOP)
    try:
        with PeakMemory(pid) as memory:
            bob.ok("send", room, input=flood_lines("f", SLOW_FLOOD))
            wait_until(
                lambda: last_seq(alice, room) == SLOW_FLOOD + 1, "alice to store the flood", 120
            )
        assert dropped(alice, "events_slow_reader") > 0  # the budget was reached
    finally:
        os.kill(tail.proc.pid, signal.SIGCONT)
    assert memory.growth_mib < 50, f"chatd grew by {memory.growth_mib:.0f} MiB"
    got = tail.messages(SLOW_FLOOD, timeout=120)
    assert [m["seq"] for m in got] == list(range(2, SLOW_FLOOD + 2))
    assert [m["text"][:5] for m in got] == [f"f{i:04d}" for i in range(1, SLOW_FLOOD + 1)]
    bob.ok("send", room, "after")
    assert [(m["seq"], m["text"]) for m in tail.messages(1)] == [(SLOW_FLOOD + 2, "after")]
    tail.assert_silent()


def test_a_tail_that_fell_behind_past_retention_says_how_many_it_cannot_show(
    make_daemon: MakeDaemon, room: str
) -> None:
    """A burst larger than a room's retention to a stopped tail: what the store no
    longer holds cannot be shown, and the tail says so, with the exact count."""
    alice = make_daemon("alice", start=False).write_config("[store]\nretention = 100\n")
    alice.start()
    bob = make_daemon("bob")
    alice.join(room)
    bob.join(room)
    bob.ok("send", room, "before")
    tail = alice.tail(room, "--since", "0")
    assert tail.messages(1)[0]["text"] == "before"
    os.kill(tail.proc.pid, signal.SIGSTOP)
    try:
        bob.ok("send", room, input=flood_lines("f", FLOOD))
        wait_until(lambda: last_seq(alice, room) == FLOOD + 1, "alice to store the flood", 120)
        assert dropped(alice, "events_slow_reader") > 0
    finally:
        os.kill(tail.proc.pid, signal.SIGCONT)
    shown: list[int] = []
    skipped = 0
    while not shown or shown[-1] < FLOOD + 1:
        event = tail.next_json(60)
        if event["type"] == "message":
            shown.append(event["seq"])
        elif event.get("kind") == "skipped":
            skipped += event["count"]
    assert shown == sorted(set(shown)) and shown[-1] == FLOOD + 1
    assert skipped > 0 and skipped + len(shown) == FLOOD  # every number once: shown or counted
    assert len(shown) >= 100  # at least what the store keeps


def test_tail_since_0_over_a_big_room_is_paged(make_daemon: MakeDaemon, room: str) -> None:
    from mqchat.client.ipc_client import Client

    alice = make_daemon("alice")
    alice.join(room)
    alice.ok("send", room, input=flood_lines("h", FLOOD))
    with Client(alice.runtime_dir, 10) as c:
        paged = "more" in c.call("history", {"room": room, "limit": 1})
    small = alice.tail(room, "--since", str(FLOOD))  # not -n 0: the marker could beat it
    alice.ok("send", room, "a marker")
    small.messages(1)
    chatctl_start = rss_mb(small.proc.pid, "VmHWM")
    small.stop()
    pid = alice.pid
    with PeakMemory(pid) as memory:
        tail = alice.tail(room, "--since", "0")
        got = tail.messages(FLOOD + 1, timeout=120)
        chatctl_peak = rss_mb(tail.proc.pid, "VmHWM")
    assert [m["seq"] for m in got] == list(range(1, FLOOD + 2))
    assert paged
    assert memory.growth_mib < 60, f"chatd grew by {memory.growth_mib:.0f} MiB"
    assert chatctl_peak - chatctl_start < 60, f"chatctl peaked at {chatctl_peak:.0f} MB"


def test_chat_fills_a_gap(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    alice.ok("send", room, "said before")
    term = Terminal([command("chatctl"), "chat", room], alice.env)
    count = 500  # 8 MB: past the 4 MiB budget and what the socket buffers hold
    try:
        term.read_until(f"{room}> ".encode())  # subscribed, history shown
        os.kill(term.pid, signal.SIGSTOP)
        try:
            before = dropped(alice, "events_slow_reader")
            alice.ok("send", room, input=flood_lines("g", count) + "the end\n")
            assert dropped(alice, "events_slow_reader") > before
        finally:
            os.kill(term.pid, signal.SIGCONT)
        screen = read_until_tail(term, b"<alice> the end")
        shown = [int(n) for n in re.findall(rb"<alice> g(\d{4}) ", screen)]
        assert shown == list(range(1, count + 1))
        term.type("/quit\n")
        term.read_until(None)
    finally:
        status = term.wait()
    assert status == 0
    assert b"Traceback" not in term.screen


def read_until_tail(term: Terminal, wanted: bytes, timeout: float = 120) -> bytes:
    """Like Terminal.read_until, for megabytes: looks for ``wanted`` in new output only."""
    import select

    deadline = time.monotonic() + timeout
    chunks = [term.screen]
    window = term.screen[-len(wanted) :]
    while wanted not in window:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([term.fd], [], [], left)[0]:
            raise AssertionError(f"no {wanted!r} on the terminal")
        chunk = os.read(term.fd, 1 << 16)
        if not chunk:
            raise AssertionError(f"the terminal closed before {wanted!r}")
        chunks.append(chunk)
        window = window[-len(wanted) :] + chunk
    term.screen = b"".join(chunks)
    return term.screen


# ---------------------------------------------------------------------- restarts


def test_tail_catches_up_after_chatd_restarts(make_daemon: MakeDaemon, room: str) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    alice.ok("send", room, "before")
    tail = bob.tail(room, "--since", "0")
    assert tail.messages(1)[0]["text"] == "before"
    bob.stop()
    texts = [f"while bob restarts {i}" for i in range(5)]
    alice.ok("send", room, input="".join(t + "\n" for t in texts))
    bob.start()
    # Printed without waiting for a later message: the tail noticed the restart.
    got = tail.messages(5, timeout=30)
    assert [(m["seq"], m["text"]) for m in got] == list(enumerate(texts, 2))
    alice.ok("send", room, "after")
    assert [(m["seq"], m["text"]) for m in tail.messages(1)] == [(7, "after")]
    tail.assert_silent()


def test_dropped_and_restarts_are_filled_from_the_store_by_the_client_library(
    make_daemon: MakeDaemon, room: str
) -> None:
    """Client.events() reports losses as ``dropped`` events; RoomFeed fills them."""
    from mqchat.client.ipc_client import Client
    from mqchat.client.room_feed import RoomFeed

    alice = make_daemon("alice")
    alice.join(room)
    with Client(alice.runtime_dir, 10) as c:
        c.subscribe([room])
        feed = RoomFeed(c, [room])
        assert list(feed.history(lines=10, since=None)) == []
        alice.stop()
        alice.start()
        events = c.events(timeout=DEADLINE_S)
        first = next(e for e in events if e is not None)
        assert first == {"type": "dropped", "count": None, "reason": "reconnected"}
        alice.ok("send", room, "one")
        follow = feed.follow(timeout=DEADLINE_S)
        message = next(e for e in follow if e is not None and e["type"] == "message")
        assert (message["seq"], message["text"]) == (1, "one")
