"""Issue 5: hostile input from the broker, from local sockets and from peers' text.

Whatever arrives, chatd counts and drops it, keeps serving, and the terminal of
the person reading never sees a raw control character.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
import zmq

from harness import PASSPHRASE, Broker, Daemon, Tail, command, wait_until
from mqchat.protocol import envelope
from mqchat.protocol.kdf import derive_room_keys
from mqchat.protocol.signing import SigningIdentity
from rawmqtt import RawClient, first_payload, room_topic, text_topic

MakeDaemon = Callable[..., Daemon]
FLOOD = 300
# Anything below 0x20 but newline, DEL and the C1 controls can drive a terminal.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def dropped(d: Daemon) -> dict[str, int]:
    return dict(d.status()["dropped"])


def log_lines(d: Daemon, needle: str) -> list[str]:
    return [line for line in d.log().splitlines() if needle in line]


def assert_no_secrets_logged(d: Daemon, secrets: list[str]) -> None:
    text = d.log()
    assert "DEBUG" in text  # the harness runs chatd at --log-level debug
    for secret in secrets:
        assert secret not in text, f"{secret!r} is in {d.name}'s log"


# ---------------------------------------------------------------------- the broker side


def test_hostile_payloads_are_dropped_counted_and_the_next_message_arrives(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    topic = text_topic(room, PASSPHRASE)
    with RawClient(broker) as raw:
        alice, bob = make_daemon("alice"), make_daemon("bob")
        tail, real = first_payload(raw, alice, bob, room, "a real message")

        flipped = bytearray(real)
        flipped[len(real) // 2] ^= 0x01
        stranger = SigningIdentity.generate(os.urandom)
        _, other_key = envelope.seal(
            derive_room_keys("a different passphrase entirely", room),
            stranger,
            name="mallory",
            text="sealed under another key",
            seq=1,
            timestamp_ms=time.time_ns() // 1_000_000,
            random=os.urandom,
        )
        undecryptable = [
            b"",
            b"\x01",
            b"garbage that is not a payload at all",
            real[:2],
            real[: len(real) // 2],
            real[:-1],
            bytes(flipped),
            other_key,
            b"\x09\x01" + real[2:],  # unknown wire version
            b"\x01\x7f" + real[2:],  # unknown cipher
            b"\x02\x7f" + real[2:],  # unknown cipher, version 2
        ]
        for payload in undecryptable:
            raw.publish(topic, payload)
        raw.publish(topic, b"\x01\x01" + b"A" * (64 * 1024 + 1))
        raw.publish(topic, real)
        for i in range(FLOOD):
            raw.publish(topic, f"flood {i}".encode())

        alice.ok("send", room, "still delivered")
        after = tail.messages(1)[0]
        assert after["text"] == "still delivered" and after["verified"] is True

    counts = wait_until(
        lambda: (c := dropped(bob)).get("undecryptable") == len(undecryptable) + FLOOD and c,
        "bob to count every undecryptable payload",
    )
    assert counts == {
        "undecryptable": len(undecryptable) + FLOOD,
        "oversized": 1,
        "duplicate": 1,
    }
    # Rate limited: one line per reason per 10 s, so a flood is a line or two.
    assert 1 <= len(log_lines(bob, "dropped undecryptable")) <= 3
    assert len(log_lines(bob, "dropped oversized")) == 1
    assert len(log_lines(bob, "dropped duplicate")) == 1
    history = [
        json.loads(line) for line in bob.ok("tail", room, "--json", "--no-follow").splitlines()
    ]
    assert [m["text"] for m in history] == ["a real message", "still delivered"]
    for d in (alice, bob):
        assert_no_secrets_logged(
            d, [PASSPHRASE, "a real message", "still delivered", "sealed under another key"]
        )
        assert real not in (d.home / "chatd.log").read_bytes()  # binary under AES-GCM


# ---------------------------------------------------------------------- the local side


def rpc(sock: zmq.Socket[bytes], body: bytes) -> dict[str, Any]:
    sock.send_multipart([b"", body])
    if not sock.poll(10_000):
        raise AssertionError(f"no reply to {body[:40]!r}")
    return dict(json.loads(sock.recv_multipart()[-1]))


def test_hostile_local_requests_get_json_rpc_errors(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    endpoint = f"ipc://{alice.runtime_dir / 'ctl.sock'}"
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)

        def code(body: bytes) -> int:
            return int(rpc(sock, body)["error"]["code"])

        assert code(b"{not json") == -32700
        assert code(b"\xff\xfe\x00") == -32700
        assert code(b"[1, 2, 3]") == -32600
        assert code(b'"a string"') == -32600
        assert code(b"null") == -32600
        assert code(b'{"jsonrpc": "2.0", "id": 1}') == -32600
        unknown = rpc(sock, b'{"jsonrpc": "2.0", "id": 7, "method": "rm -rf"}')
        assert unknown["id"] == 7 and unknown["error"]["code"] == -32601
        for params in (
            {"room": 5, "text": "x"},
            {"room": room, "text": ["x"]},
            {"room": room},
            {"room": room, "text": "x", "extra": True},
        ):
            body = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "send", "params": params})
            assert code(body.encode()) == -32602, params
        assert code(b'{"jsonrpc": "2.0", "id": 3, "method": "send", "params": [1]}') == -32602
        history = {"room": room, "limit": True}
        body = json.dumps({"jsonrpc": "2.0", "id": 4, "method": "history", "params": history})
        assert code(body.encode()) == -32602
        # Over the request limit but under ZMQ_MAXMSGSIZE: parsed no further, answered.
        big = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "status", "pad": "x" * 300_000})
        assert code(big.encode()) == -32600

        # A REQ peer gets the same answers.
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(endpoint)
        req.send(b"][")
        assert req.poll(10_000)
        assert json.loads(req.recv())["error"]["code"] == -32700
        req.close()

        # Above ZMQ_MAXMSGSIZE the connection is cut; the daemon carries on.
        huge = ctx.socket(zmq.DEALER)
        huge.setsockopt(zmq.LINGER, 0)
        huge.connect(endpoint)
        huge.send_multipart([b"", b"{" + b" " * (2 * 1024 * 1024)])
        assert not huge.poll(500)
        huge.close()

        ok = rpc(sock, b'{"jsonrpc": "2.0", "id": 9, "method": "status"}')
        assert ok["id"] == 9 and ok["result"]["name"] == "alice"
        sock.close()
    finally:
        ctx.term()
    status = alice.status()
    assert status["dropped"].get("bad_request", 0) >= 10
    tail = alice.tail(room)
    alice.ok("send", room, "still serving")
    assert tail.messages(1)[0]["text"] == "still serving"


def run_chatd(d: Daemon) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command("chatd")],
        env=d.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_runtime_dir_open_to_others_is_refused(make_daemon: MakeDaemon) -> None:
    dave = make_daemon("dave", start=False)
    dave.runtime_dir.mkdir()
    dave.runtime_dir.chmod(0o755)
    result = run_chatd(dave)
    assert result.returncode != 0
    assert "0755" in result.stderr and "chmod 700" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (dave.runtime_dir / "ctl.sock").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_runtime_dir_and_socket_of_another_user_are_refused(make_daemon: MakeDaemon) -> None:
    erin = make_daemon("erin", start=False)
    erin.runtime_dir.mkdir(mode=0o700)
    os.chown(erin.runtime_dir, 65534, 65534)
    result = run_chatd(erin)
    assert result.returncode != 0
    assert "uid 65534" in result.stderr and "Traceback" not in result.stderr

    os.chown(erin.runtime_dir, 0, 0)
    erin.start()
    ctl = erin.runtime_dir / "ctl.sock"
    os.chown(ctl, 65534, 65534)
    refused = erin.ctl("status")
    assert refused.returncode != 0
    assert "uid 65534" in refused.stderr and "Traceback" not in refused.stderr
    os.chown(ctl, 0, 0)
    assert erin.status()["name"] == "erin"


def test_second_daemon_on_one_runtime_dir_fails_and_the_first_keeps_working(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice = make_daemon("alice")
    result = run_chatd(alice)
    assert result.returncode != 0
    assert "already running" in result.stderr and "Traceback" not in result.stderr
    assert alice.proc is not None and str(alice.proc.pid) in result.stderr
    assert alice.status()["name"] == "alice"
    alice.join(room)
    tail = alice.tail(room)
    alice.ok("send", room, "the first one still works")
    assert tail.messages(1)[0]["text"] == "the first one still works"


def test_passphrase_file_must_be_private(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    secret = alice.home / "passphrase"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, (PASSPHRASE + "\n").encode())
    os.close(fd)
    secret.chmod(0o644)
    result = alice.ctl("join", room, "--passphrase-file", str(secret))
    assert result.returncode != 0
    assert "chmod 600" in result.stderr and "Traceback" not in result.stderr
    assert room not in alice.status()["rooms"]
    secret.chmod(0o600)
    assert "joined" in alice.ok("join", room, "--passphrase-file", str(secret))
    assert room in alice.status()["rooms"]
    # No option puts a passphrase on argv, where `ps` would show it.
    for argv in (["join", room, "--passphrase", PASSPHRASE], ["join", room, "-p", PASSPHRASE]):
        refused = alice.ctl(*argv, input="")
        assert refused.returncode == 2, refused
    assert_no_secrets_logged(alice, [PASSPHRASE])


def test_chatd_takes_no_secret_on_argv(make_daemon: MakeDaemon) -> None:
    alice = make_daemon("alice", start=False)
    helptext = subprocess.run(
        [command("chatd"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--password" not in helptext and "--passphrase" not in helptext
    result = subprocess.run(
        [command("chatd"), "--password", "hunter2hunter2"],
        env=alice.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2


# ---------------------------------------------------------------------- terminal safety


def test_control_characters_from_peers_never_reach_the_terminal(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    bob = make_daemon("bob")
    bob.join(room)
    # chatd refuses such a name for itself, so a hostile peer builds the payload by hand.
    refused = run_chatd(make_daemon("x\x1b[31my", start=False))
    assert refused.returncode != 0 and "control characters" in refused.stderr

    name = "ev\x1b]0;owned\x07il\u202e"
    text = "clear\x1b[2J bell\x07 cr\rback\x08 del\x7f csi\x9b1m nul\x00 tab\t nl\nend"
    keys = derive_room_keys(PASSPHRASE, room)
    topic = room_topic(room, PASSPHRASE)
    plain = Tail([command("chatctl"), "tail", room], bob.env)
    bob.tails.append(plain)
    events = bob.tail(room)
    # Notices are not kept in history: both tails must be live before the forgery.
    bob.ok("send", room, "ready")
    assert plain.next_line().endswith("<bob> ready")
    assert events.messages(1)[0]["text"] == "ready"
    with RawClient(broker) as raw:
        for seq, identity in enumerate(
            (SigningIdentity.generate(os.urandom), SigningIdentity.generate(os.urandom)), 1
        ):
            _, payload = envelope.seal(
                keys,
                identity,
                name=name,
                text=text,
                seq=seq,
                timestamp_ms=time.time_ns() // 1_000_000,
                random=os.urandom,
            )
            raw.publish(topic, payload)
    got = events.messages(2)
    assert [m["sender"] for m in got] == [name, name]
    assert [m["text"] for m in got] == [text, text]
    assert [m["verified"] for m in got] == [True, False]

    lines = [plain.next_line(), plain.next_line()]
    wait_until(lambda: any("another key" in line for line in plain.stderr), "a key notice")
    history = bob.ok("tail", room, "--no-follow")
    templated = bob.ok("tail", room, "--no-follow", "--format", "{sender}: {text}")
    as_json = bob.ok("tail", room, "--no-follow", "--json")
    for out in (*lines, *plain.stderr, history, templated, as_json):
        assert not RAW_CONTROL.search(out), repr(out)
        assert "\u202e" not in out
    assert history.count("\n") == 3  # one message, one line
    assert "ev\\x1b]0;owned\\x07il\\u202e" in history
    assert "clear\\x1b[2J bell\\x07 cr\\rback\\x08 del\\x7f csi\\x9b1m nul\\x00" in history
    assert [json.loads(line)["text"] for line in as_json.splitlines()] == ["ready", text, text]
