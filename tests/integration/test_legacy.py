"""Issue 6: legacy rooms talk to the original program over a real broker.

``OriginalClient`` is the original script as its wire format documents it,
written here with plain paho-mqtt and ``cryptography.fernet`` and no mqchat
code: topic ``movantchat/<room>``; key = base64url of the passphrase padded
with "0" or cut to 32 characters; payload = the Fernet token of "name: text";
QoS 0, not retained. It speaks MQTT 3.1.1, as the original did, so it also
receives what it publishes itself; those payloads are skipped.

QoS 0 is not queued for anyone who has not subscribed yet, so nothing is
published to a subscriber before its SUBACK: the original client waits for its
own, and ``handshake`` proves the daemon's (chatd sends SUBSCRIBE before the
PUBLISH of a later ``send`` on the same connection, and the broker handles them
in order, so once the original client receives chatd's message, chatd's
subscription is in place).
"""

from __future__ import annotations

import base64
import json
import queue
import uuid
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from cryptography.fernet import Fernet
from paho.mqtt.enums import CallbackAPIVersion

from harness import DEADLINE_S, Broker, Daemon, Tail, Terminal, command

MakeDaemon = Callable[..., Daemon]
LEGACY_PASSPHRASE = "movant"  # short, as the original accepted; no --weak


class OriginalClient:
    """The original program, from its documented wire format only."""

    def __init__(self, port: int, room: str, passphrase: str, name: str) -> None:
        self.topic = f"movantchat/{room}"
        padded = passphrase[:32].ljust(32, "0")
        self.fernet = Fernet(base64.urlsafe_b64encode(padded.encode("utf-8")))
        self.name = name
        self.own: set[bytes] = set()
        self.received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        connected: queue.Queue[object] = queue.Queue()
        subscribed: queue.Queue[list[object]] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"original-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_connect = lambda c, u, flags, rc, props: connected.put(rc)
        self.client.on_subscribe = lambda c, u, mid, codes, props: subscribed.put(codes)
        self.client.on_message = lambda c, u, msg: self.received.put(msg)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        rc = connected.get(timeout=DEADLINE_S)
        assert not rc.is_failure, rc  # type: ignore[attr-defined]
        self.client.subscribe(self.topic, qos=0)
        codes = subscribed.get(timeout=DEADLINE_S)
        assert not codes[0].is_failure, codes  # type: ignore[attr-defined]

    def publish_token(self, token: bytes) -> None:
        self.own.add(token)
        info = self.client.publish(self.topic, token, qos=0, retain=False)
        info.wait_for_publish(DEADLINE_S)

    def publish_plain(self, plaintext: bytes) -> None:
        self.publish_token(self.fernet.encrypt(plaintext))

    def say(self, text: str) -> None:
        self.publish_plain(f"{self.name}: {text}".encode())

    def next_message(self) -> mqtt.MQTTMessage:
        """The next message someone else published (the original's own are skipped)."""
        while True:
            try:
                msg = self.received.get(timeout=DEADLINE_S)
            except queue.Empty:
                raise AssertionError(
                    f"the original client got nothing within {DEADLINE_S:g} s"
                ) from None
            if bytes(msg.payload) not in self.own:
                return msg

    def next_plaintext(self) -> bytes:
        return self.fernet.decrypt(bytes(self.next_message().payload))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def original(broker: Broker) -> Iterator[Callable[..., OriginalClient]]:
    made: list[OriginalClient] = []

    def make(
        room: str, passphrase: str = LEGACY_PASSPHRASE, name: str = "olduser"
    ) -> OriginalClient:
        c = OriginalClient(broker.port, room, passphrase, name)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def join_legacy(d: Daemon, room: str, passphrase: str = LEGACY_PASSPHRASE) -> str:
    result = d.ctl("join", room, "--legacy", input=passphrase + "\n")
    assert result.returncode == 0, result.stderr
    return result.stderr


def handshake(d: Daemon, orig: OriginalClient, room: str) -> None:
    """chatd sends, the original receives: both subscriptions are now in place."""
    d.ok("send", room, "ready")
    assert orig.next_plaintext() == f"{d.name}: ready".encode()


def connected_pair(
    make_daemon: MakeDaemon, original: Callable[..., OriginalClient], room: str
) -> tuple[Daemon, OriginalClient, Tail]:
    """alice's chatd and an original client in one legacy room, both ready, and
    alice's tail of what arrives from now on."""
    alice = make_daemon("alice")
    orig = original(room)
    join_legacy(alice, room)
    handshake(alice, orig, room)
    return alice, orig, tail_from_now(alice, room)


def tail_from_now(d: Daemon, room: str) -> Tail:
    """A tail of what arrives from now on, with no race against its start: --since."""
    (info,) = [r for r in json.loads(d.ok("rooms", "--json")) if r["name"] == room]
    return d.tail(room, "--since", str(info["last_seq"]))


def next_from_others(tail: Tail) -> dict[str, object]:
    return tail.wait_for(lambda e: e["type"] == "message" and not e["own"])


def test_messages_flow_both_ways(
    make_daemon: MakeDaemon, original: Callable[..., OriginalClient], room: str
) -> None:
    alice = make_daemon("alice")
    orig = original(room)
    join_legacy(alice, room)
    tail = alice.tail(room)

    alice.ok("send", room, "hi from mqchat: with a colon")
    msg = orig.next_message()
    assert msg.topic == f"movantchat/{room}"
    assert msg.qos == 0 and msg.retain is False
    assert orig.fernet.decrypt(bytes(msg.payload)) == b"alice: hi from mqchat: with a colon"
    mine = tail.messages(1)[0]
    assert mine["own"] is True and mine["legacy"] is True

    orig.say("hello from the old script")
    got = next_from_others(tail)
    assert got["sender"] == "olduser"
    assert got["text"] == "hello from the old script"
    assert got["verified"] is False
    assert got["legacy"] is True
    assert got["fingerprint"] == ""
    assert got["room"] == room

    result = alice.ctl("chat", room, input="one\ntwo\n")
    assert result.returncode == 0, result.stderr
    assert [orig.next_plaintext() for _ in range(2)] == [b"alice: one", b"alice: two"]

    history = [
        json.loads(line) for line in alice.ok("tail", room, "--no-follow", "--json").splitlines()
    ]
    assert [(m["sender"], m["text"]) for m in history] == [
        ("alice", "hi from mqchat: with a colon"),
        ("olduser", "hello from the old script"),
        ("alice", "one"),
        ("alice", "two"),
    ]
    assert [m["seq"] for m in history] == [1, 2, 3, 4]
    assert all(m["legacy"] is True for m in history)
    plain = alice.ok("tail", room, "--no-follow", "-n", "3").splitlines()
    assert plain[0].endswith("<olduser?> hello from the old script")
    assert plain[1].endswith("<alice> one")


def test_two_daemons_and_the_original_share_a_room(
    make_daemon: MakeDaemon, original: Callable[..., OriginalClient], room: str
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    orig = original(room)
    join_legacy(alice, room)
    join_legacy(bob, room)
    handshake(alice, orig, room)
    handshake(bob, orig, room)
    bob_tail = tail_from_now(bob, room)
    orig.say("one at a time")
    assert next_from_others(bob_tail)["text"] == "one at a time"
    alice.ok("send", room, "moved over")
    got = next_from_others(bob_tail)
    assert (got["sender"], got["text"], got["verified"]) == ("alice", "moved over", False)
    assert orig.next_plaintext() == b"alice: moved over"


def test_other_key_garbage_and_duplicates_are_dropped(
    make_daemon: MakeDaemon, original: Callable[..., OriginalClient], room: str
) -> None:
    alice, orig, tail = connected_pair(make_daemon, original, room)
    stranger = Fernet(base64.urlsafe_b64encode(b"another passphrase".ljust(32, b"0")))
    orig.publish_token(stranger.encrypt(b"eve: you cannot read this"))
    orig.publish_token(b"not a fernet token at all")
    good = orig.fernet.encrypt(b"olduser: after the noise")
    orig.publish_token(good)
    orig.publish_token(good)  # an exact replay
    orig.say("last")
    assert [m["text"] for m in tail.messages(2)] == ["after the noise", "last"]
    dropped = alice.status()["dropped"]
    assert dropped == {"undecryptable": 2, "duplicate": 1}
    assert "you cannot read this" not in alice.ok("tail", room, "--no-follow", "--json")


def test_odd_plaintexts_are_shown_safely(
    make_daemon: MakeDaemon, original: Callable[..., OriginalClient], room: str
) -> None:
    alice, orig, tail = connected_pair(make_daemon, original, room)
    odd = [
        b"mallory: caf\xe9 \xff\xfe end",  # not UTF-8
        b"no colon here \x1b[2J\x07\x9b31m",  # no "name: ", terminal controls
        b"ev\x1b]0;pwned\x07il: \x1b[31mred\r\x08",  # controls in name and text
        b"x" * 65 + b": long name",  # name over 64 bytes
        b"two\nlines: text",  # line break in the name
        b": blank name",
    ]
    for plain in odd:
        orig.publish_plain(plain)
    got = tail.messages(len(odd))
    assert (got[0]["sender"], got[0]["text"]) == ("mallory", "caf\ufffd \ufffd\ufffd end")
    assert (got[1]["sender"], got[1]["text"]) == ("?", "no colon here \x1b[2J\x07\ufffd31m")
    assert got[2]["sender"] == "ev\x1b]0;pwned\x07il"
    assert [m["sender"] for m in got[3:]] == ["?", "?", "?"]
    assert got[4]["text"] == "two\nlines: text"
    assert all(m["verified"] is False and m["legacy"] is True for m in got)

    for line in tail.seen:  # the --json tail: controls are escaped, not raw
        assert line.isprintable(), repr(line)
    plain_out = alice.ok("tail", room, "--no-follow", "-n", str(len(odd)))
    lines = plain_out.splitlines()
    assert len(lines) == len(odd)
    for line in lines:
        assert line.isprintable(), repr(line)
    assert "<??> no colon here \\x1b[2J\\x07\ufffd31m" in lines[1]
    assert "<mallory?> caf\ufffd" in lines[0]
    assert "<??> two\\nlines: text" in lines[4]


def test_join_warns_and_rooms_shows_it(
    make_daemon: MakeDaemon, original: Callable[..., OriginalClient], room: str
) -> None:
    alice = make_daemon("alice")
    stderr = join_legacy(alice, room, "abc")  # 3 characters, no --weak: the original's rules
    assert stderr.startswith("WARNING:")
    for part in ("anyone who knows or guesses the passphrase", "constant", "unverified"):
        assert part in stderr, stderr
    listed = alice.ok("rooms")
    assert "legacy" in listed
    assert "anyone who knows or guesses the passphrase" in listed
    (info,) = json.loads(alice.ok("rooms", "--json"))
    assert info["name"] == room and info["legacy"] is True and info["cipher"] == "fernet"
    assert "unverified" in info["warning"]

    again = alice.ctl("join", room, "--legacy", input="abc\n")
    assert again.returncode == 0 and "already in" in again.stdout
    assert "WARNING" in again.stderr
    other = alice.ctl("join", room, "--legacy", input="abd\n")
    assert other.returncode != 0 and "another passphrase" in other.stderr

    orig = original(room, "abc")
    handshake(alice, orig, room)
    orig.say("short keys still talk")
    tail = alice.tail(room)
    assert next_from_others(tail)["text"] == "short keys still talk"


def test_join_legacy_on_a_terminal_prompts_twice(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    term = Terminal([command("chatctl"), "join", room, "--legacy"], alice.env)
    try:
        term.read_until(b"Passphrase: ")
        term.type("qzq\n")
        term.read_until(b"Repeat passphrase: ")
        term.type("qzq\n")
        screen = term.read_until(None)
    finally:
        status = term.wait()
    assert status == 0, screen
    assert b"WARNING: legacy room" in screen and b"qzq" not in screen  # no echo
    assert json.loads(alice.ok("rooms", "--json"))[0]["legacy"] is True


def test_long_passphrase_is_cut_to_32_characters(
    make_daemon: MakeDaemon, original: Callable[..., OriginalClient], room: str
) -> None:
    alice = make_daemon("alice")
    long = "a passphrase of exactly 32 chars and then some more"
    join_legacy(alice, room, long)
    orig = original(room, long[:32])  # a copy that required exactly 32 characters
    handshake(alice, orig, room)


def test_legacy_refuses_bad_options_clearly(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    result = alice.ctl("join", room, "--legacy", "--cipher", "aes-256-gcm", input="movant\n")
    assert result.returncode != 0
    assert "fernet" in result.stderr and "Traceback" not in result.stderr
    non_ascii = alice.ctl("join", room, "--legacy", input="lösenord\n")
    assert non_ascii.returncode != 0
    assert "ASCII" in non_ascii.stderr and "Traceback" not in non_ascii.stderr
    empty = alice.ctl("join", room, "--legacy", input="\n")
    assert empty.returncode != 0 and "empty" in empty.stderr
    assert alice.status()["rooms"] == []


def test_legacy_room_survives_a_restart(
    make_daemon: MakeDaemon, original: Callable[..., OriginalClient], room: str
) -> None:
    alice, orig, tail = connected_pair(make_daemon, original, room)
    orig.say("before the restart")
    next_from_others(tail)
    tail.stop()
    alice.stop()
    alice.start()
    assert json.loads(alice.ok("rooms", "--json"))[0]["legacy"] is True
    handshake(alice, orig, room)
    tail = tail_from_now(alice, room)
    orig.say("after the restart")
    assert next_from_others(tail)["text"] == "after the restart"
    texts = [
        json.loads(line)["text"]
        for line in alice.ok("tail", room, "--no-follow", "--json").splitlines()
    ]
    assert texts == ["ready", "before the restart", "ready", "after the restart"]
