"""Issue 3: two people chat through their own chatd over a real broker."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from harness import PASSPHRASE, Broker, Daemon, Terminal, command, wait_until

MakeDaemon = Callable[..., Daemon]


def test_two_users_talk(make_daemon: MakeDaemon, room: str) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    bob_tail = bob.tail(room, "--since", "0")
    alice_tail = alice.tail(room, "--since", "0")
    alice.ok("send", room, "hello", "bob")
    got = bob_tail.messages(1)[0]
    assert got["text"] == "hello bob"
    assert got["sender"] == "alice"
    assert got["verified"] is True
    assert got["own"] is False
    assert got["room"] == room
    assert got["seq"] == 1
    mine = alice_tail.messages(1)[0]
    assert mine["own"] is True and mine["verified"] is True
    assert mine["id"] == got["id"]
    bob.ok("send", room, "hi alice")
    assert alice_tail.messages(1)[0]["text"] == "hi alice"


def test_wrong_passphrase_sees_nothing(make_daemon: MakeDaemon, room: str) -> None:
    alice, bob, carol = make_daemon("alice"), make_daemon("bob"), make_daemon("carol")
    alice.join(room)
    bob.join(room)
    carol.join(room, "not the right passphrase at all")
    bob_tail = bob.tail(room, "--since", "0")
    alice.ok("send", room, "for members only")
    assert bob_tail.messages(1)[0]["text"] == "for members only"
    assert carol.ok("tail", room, "--no-follow", "--json") == ""
    assert carol.status()["dropped"] == {}


def test_two_tails_of_one_user_both_receive(make_daemon: MakeDaemon, room: str) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    first, second = bob.tail(room, "--since", "0"), bob.tail(room, "--since", "0")
    alice.ok("send", room, "to both terminals")
    assert first.messages(1)[0]["text"] == "to both terminals"
    assert second.messages(1)[0]["text"] == "to both terminals"


def test_stdin_lines_arrive_in_order(make_daemon: MakeDaemon, room: str) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    lines = [f"line {i:03d}" for i in range(200)]
    alice.ok("send", room, input="\n".join(lines[:100]) + "\n\n   \n" + "\n".join(lines[100:]))
    got = tail.messages(200)
    assert [m["text"] for m in got] == lines
    assert [m["seq"] for m in got] == list(range(1, 201))


def test_chat_with_piped_stdin_sends_each_line(make_daemon: MakeDaemon, room: str) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    result = alice.ctl("chat", room, input="one\ntwo\n")
    assert result.returncode == 0, result.stderr
    assert [m["text"] for m in tail.messages(2)] == ["one", "two"]


def test_leave_stops_delivery_and_later_sends_fail(make_daemon: MakeDaemon, room: str) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    assert bob.ok("leave", room).strip() == f"left {room}"
    result = bob.ctl("send", room, "still here?")
    assert result.returncode == 1
    assert "not joined" in result.stderr and "Traceback" not in result.stderr
    assert bob.ctl("tail", room, "--no-follow").returncode == 1
    assert room not in bob.status()["rooms"]


def test_rooms_lists_joined_rooms(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    alice.join(room + "-b", PASSPHRASE, "--cipher", "aes-256-gcm")
    listed = alice.ok("rooms")
    assert room in listed and "aes-256-gcm" in listed
    import json

    names = [r["name"] for r in json.loads(alice.ok("rooms", "--json"))]
    assert names == sorted([room, room + "-b"])


def test_every_cipher_talks(make_daemon: MakeDaemon, room: str) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    for cipher in ("fernet", "aes-256-gcm", "chacha20-poly1305"):
        name = f"{room}-{cipher}"
        alice.join(name, PASSPHRASE, "--cipher", cipher)
        bob.join(name)
        tail = bob.tail(name, "--since", "0")
        alice.ok("send", name, f"via {cipher}")
        assert tail.messages(1)[0]["text"] == f"via {cipher}"


def test_broker_sees_no_plaintext_names_or_passphrase(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    captured: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            captured.append((msg.topic, bytes(msg.payload)))

    spy = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="spy")
    spy.on_message = on_message
    subscribed = threading.Event()
    spy.on_subscribe = lambda *a: subscribed.set()
    spy.connect("127.0.0.1", broker.port)
    spy.subscribe("#", qos=1)
    spy.loop_start()
    try:
        assert subscribed.wait(10)
        alice, bob = make_daemon("alicewonder"), make_daemon("bobbinson")
        alice.join(room)
        bob.join(room)
        tail = bob.tail(room, "--since", "0")
        texts = ["the plaintext secret", "another confidential line"]
        for text in texts:
            alice.ok("send", room, text)
        bob.ok("send", room, "bob speaks plainly")
        tail.messages(3)
        wait_until(lambda: len(captured) >= 3, "the spy to capture three payloads")
    finally:
        spy.loop_stop()
        spy.disconnect()
    with lock:
        blob = b"\n".join(t.encode() + b" " + p for t, p in captured)
    for secret in [*texts, "bob speaks plainly", room, "alicewonder", "bobbinson", PASSPHRASE]:
        assert secret.encode() not in blob, secret
    topics = {t for t, _ in captured}
    assert all(t.startswith("mqchat/v1/") and len(t.split("/")[-1]) == 26 for t in topics)


def test_no_daemon_exits_3_naming_chatd(make_daemon: MakeDaemon) -> None:
    ghost = make_daemon("ghost", start=False)
    result = ghost.ctl("send", "lobby", "anyone?")
    assert result.returncode == 3
    assert "chatd" in result.stderr and "Traceback" not in result.stderr


def test_too_long_message_is_refused_clearly(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    result = alice.ctl("send", room, "x" * (16 * 1024 + 1))
    assert result.returncode == 1
    assert "16 KiB" in result.stderr and "Traceback" not in result.stderr
    result = alice.ctl("send", room, input="ok\n" + "y" * 20000 + "\n")
    assert result.returncode == 1
    assert "line 2" in result.stderr
    assert alice.ctl("send", room, "x" * (16 * 1024)).returncode == 0


def test_short_passphrase_needs_weak(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    result = alice.ctl("join", room, input="short\n")
    assert result.returncode == 1
    assert "12 characters" in result.stderr
    assert alice.ctl("join", room, "--weak", input="short\n").returncode == 0


def test_joins_at_the_same_time_all_complete(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    joins = [
        subprocess.Popen(
            [command("chatctl"), "join", f"{room}-{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=alice.env,
        )
        for i in range(3)
    ]
    for proc in joins:
        _, stderr = proc.communicate(PASSPHRASE + "\n", timeout=30)
        assert proc.returncode == 0, stderr
    assert alice.status()["rooms"] == sorted(f"{room}-{i}" for i in range(3))
    assert alice.stop() == 0


def test_chat_on_a_terminal(make_daemon: MakeDaemon, room: str) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    bob.ok("send", room, "said before")
    bob_tail = bob.tail(room, "--since", "1")
    term = Terminal([command("chatctl"), "chat", room], alice.env)
    try:
        term.read_until(b"said before")  # history first
        term.read_until(f"{room}> ".encode())
        bob.ok("send", room, "live from bob")
        term.read_until(b"<bob> live from bob")  # printed above the input line
        term.type("hello from a terminal\n")
        got = bob_tail.wait_for(lambda e: e.get("sender") == "alice")
        assert got["text"] == "hello from a terminal"
        term.read_until(b"<alice> hello from a terminal")  # own echo
        term.type("/quit\n")
        term.read_until(None)
    finally:
        status = term.wait()
    assert status == 0
    assert b"Traceback" not in term.screen


def test_tails_started_during_a_flood_all_start(make_daemon: MakeDaemon, room: str) -> None:
    """Each new tail's subscription is confirmed even while events stream out."""
    from mqchat.client.ipc_client import Client

    alice = make_daemon("alice")
    alice.join(room)
    stop = threading.Event()

    def flood() -> None:
        with Client(alice.runtime_dir, 10) as sender:
            while not stop.is_set():
                for i in range(50):
                    sender.submit("send", {"room": room, "text": f"flood {i}"})
                for _ in range(50):
                    sender.receive()

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        for _ in range(60):
            with Client(alice.runtime_dir, 5) as tail:
                tail.subscribe([room])  # raises DaemonUnavailable if chatd never confirms
    finally:
        stop.set()
        flooder.join(15)
