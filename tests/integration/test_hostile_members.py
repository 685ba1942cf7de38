"""Issue 11: what a hostile room member, or a broken local client, must not be able to do.

Each test plays the attacker with real parts: a member who holds the room key
and signs with a key of its own, publishing through a plain MQTT client; or a
local client speaking raw ZeroMQ to chatd's control socket.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from forge import build_inner, encrypt_body
from harness import PASSPHRASE, Daemon, PeakMemory, command, memory_kib, wait_until
from mqchat.protocol.kdf import derive_room_keys
from mqchat.protocol.signing import SigningIdentity, format_fingerprint
from rawmqtt import RawClient, room_topic
from zmtp import RawPeer, frame

MakeDaemon = Callable[..., Daemon]
MIB = 1024  # memory_kib counts KiB


def dropped(d: Daemon) -> dict[str, int]:
    return dict(d.status()["dropped"])


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def forged(room: str, member: SigningIdentity, *, seq: int, ts: int, text: str) -> bytes:
    """A payload a member builds by hand: right key, valid signature, any numbers."""
    keys = derive_room_keys(PASSPHRASE, room)
    plain = build_inner(
        member,
        tag=keys.tag,
        name=b"mallory",
        text=text.encode(),
        message_id=member.sign(text.encode())[:16],
        seq=seq,
        timestamp_ms=ts,
    )
    return encrypt_body(keys, "aes-256-gcm", plain)


def test_numbers_out_of_range_cannot_silence_a_member(
    make_daemon: MakeDaemon, room: str, broker: Any
) -> None:
    """25 validly signed payloads with seq >= 2^63 (or a time past year 9999) used to
    raise in the store, stay unacknowledged and fill the broker's in-flight window."""
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    mallory = SigningIdentity.generate(os.urandom)
    topic = room_topic(room, PASSPHRASE)
    with RawClient(broker) as raw:
        for i in range(25):
            seq, ts = (2**63 + i, now_ms()) if i % 2 else (i + 1, 2**63 + i)
            raw.publish(topic, forged(room, mallory, seq=seq, ts=ts, text=f"poison {i}"))
    alice.ok("send", room, "still heard")
    got = tail.messages(1)[0]
    assert got["text"] == "still heard"
    assert wait_until(lambda: dropped(bob).get("undecryptable") == 25, "25 refusals counted")
    # A room joined later still receives, and after a restart nothing comes back.
    later = room + "-later"
    alice.join(later)
    bob.join(later)
    bob.stop()
    bob.start()
    tail = bob.tail(later, "--since", "0")
    alice.ok("send", later, "after the restart")
    assert tail.messages(1)[0]["text"] == "after the restart"
    assert "undecryptable" not in dropped(bob)  # none of the 25 was handed over again
    assert "Traceback" not in bob.log()


def test_a_message_stamped_before_joining_is_a_replay(
    make_daemon: MakeDaemon, room: str, broker: Any
) -> None:
    alice, carol = make_daemon("alice"), make_daemon("carol")
    alice.join(room)
    carol.join(room)
    tail = carol.tail(room, "--since", "0")
    mallory = SigningIdentity.generate(os.urandom)
    topic = room_topic(room, PASSPHRASE)
    hour = 3_600_000
    with RawClient(broker) as raw:
        raw.publish(topic, forged(room, mallory, seq=1, ts=now_ms() - 2 * hour, text="old news"))
        raw.publish(topic, forged(room, mallory, seq=2, ts=now_ms() - 60_000, text="skewed"))
    alice.ok("send", room, "fresh")
    texts = [m["text"] for m in tail.messages(2)]
    assert texts == ["skewed", "fresh"]  # a minute of clock skew is allowed
    assert dropped(carol).get("before_join") == 1


def test_trust_pins_the_key_whose_fingerprint_was_checked(
    make_daemon: MakeDaemon, room: str
) -> None:
    """alice moves to a new key; an impostor speaks as alice just before bob trusts.
    `trust` used to pin whichever key spoke last."""
    alice, bob = make_daemon("alice"), make_daemon("bob")
    new_alice, impostor = make_daemon("alice"), make_daemon("alice")
    for d in (alice, bob, new_alice, impostor):
        d.join(room)
    tail = bob.tail(room, "--since", "0")
    alice.ok("send", room, "old key")
    new_alice.ok("send", room, "new key")
    impostor.ok("send", room, "impostor")
    assert [m["text"] for m in tail.messages(3)] == ["old key", "new key", "impostor"]
    new_fp = new_alice.status()["fingerprint"]
    impostor_fp = impostor.status()["fingerprint"]

    listing = bob.ctl("trust", room, "alice")
    assert listing.returncode == 1 and "2 keys not trusted" in listing.stderr
    for fp in (alice.status()["fingerprint"], new_fp, impostor_fp):
        assert format_fingerprint(fp) in listing.stdout

    short = bob.ctl("trust", room, "alice", new_fp[:31])
    assert short.returncode == 1 and "at least 32 hex digits" in short.stderr
    wrong = bob.ctl("trust", room, "alice", "0" * 64)
    assert wrong.returncode == 1 and "no key with that fingerprint" in wrong.stderr
    out = bob.ok("trust", room, "alice", format_fingerprint(new_fp[:32]).upper())
    assert format_fingerprint(new_fp) in out

    new_alice.ok("send", room, "new key, trusted")
    impostor.ok("send", room, "impostor again")
    got = {m["text"]: m["verified"] for m in tail.messages(2)}
    assert got == {"new key, trusted": True, "impostor again": False}


def test_a_huge_payload_never_reaches_chatd(
    make_daemon: MakeDaemon, room: str, broker: Any
) -> None:
    """chatd asks the broker (MQTT 5 Maximum Packet Size) not to send what it would drop."""
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    before = memory_kib(bob.pid, "VmHWM")
    with RawClient(broker) as raw:
        raw.publish(room_topic(room, PASSPHRASE), b"\x01\x02" + bytes(80 * 1024 * 1024))
    alice.ok("send", room, "after the flood")
    assert tail.messages(1)[0]["text"] == "after the flood"
    assert memory_kib(bob.pid, "VmHWM") - before < 30 * MIB
    assert "oversized" not in dropped(bob)


# ---------------------------------------------------------------------- local clients


def dealer(d: Daemon) -> zmq.Socket[bytes]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{d.runtime_dir / 'ctl.sock'}")
    return sock


def rpc(sock: zmq.Socket[bytes], method: str, params: dict[str, Any], req_id: int = 1) -> Any:
    body = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}
    sock.send_multipart([b"", json.dumps(body).encode()])
    assert sock.poll(5_000), f"no reply to {method}"
    return json.loads(sock.recv_multipart()[-1])


def test_many_frames_in_one_request_are_refused_unread(make_daemon: MakeDaemon) -> None:
    """160 MB in one 400-frame request: chatd's peak, not what is left at the end, stays
    within 60 MiB of its start (issue 23), and it keeps answering."""
    alice = make_daemon("alice")
    sock = dealer(alice)
    try:
        with PeakMemory(alice.pid) as memory:
            frames = [b"x" * (400 * 1024)] * 400  # 160 MB in one ZeroMQ message
            sock.send_multipart([b"", *frames])
            # Refused whole (an error reply), or cut off by the memory watchdog (the
            # connection closed, counted): either way, status answers.
            wait_until(
                lambda: (
                    dropped(alice).get("bad_request")
                    or dropped(alice).get("ctl_connections_closed")
                ),
                "chatd to refuse the request",
                30,
            )
            assert alice.status()["name"] == "alice"
    finally:
        sock.close(linger=0)
    assert memory.growth_mib < 60, f"chatd peaked {memory.growth_mib:.0f} MiB up"


def closed_while_sending(peer: RawPeer, chunk: bytes, times: int) -> bool:
    """Send ``chunk`` ``times`` times; True if the other end closed the connection first."""
    try:
        for _ in range(times):
            peer.sock.sendall(chunk)
    except (BrokenPipeError, ConnectionResetError):
        return True
    return False


def test_a_request_that_never_ends_is_cut_off(make_daemon: MakeDaemon) -> None:
    """Frames with "more" set and never a last one: libzmq would keep them all; chatd's
    watchdog closes the connection, and its peak stays within 60 MiB of its start."""
    alice = make_daemon("alice")
    peer = RawPeer(alice.runtime_dir / "ctl.sock", "DEALER")
    chunk = frame(b"x" * (400 * 1024), more=True)
    with PeakMemory(alice.pid) as memory:
        assert closed_while_sending(peer, chunk, 2000)  # 800 MB: far more than chatd may hold
        assert alice.status()["name"] == "alice"
    peer.close()
    assert dropped(alice).get("ctl_connections_closed", 0) >= 1
    # No join ran in this daemon, so its high-water mark is this attack's peak, to
    # the page (PeakMemory samples every 20 ms and may miss a short one).
    high_water_mib = (memory_kib(alice.pid, "VmHWM") - memory.start) / 1024
    assert memory.growth_mib < 60, f"chatd peaked {memory.growth_mib:.0f} MiB up"
    assert high_water_mib < 60, f"chatd peaked {high_water_mib:.0f} MiB up"


def test_a_request_too_large_is_answered_at_once_with_its_id(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice = make_daemon("alice")
    sock = dealer(alice)
    try:
        reply = rpc(sock, "join", {"room": room, "passphrase": "p" * 300_000}, req_id=7)
        assert reply["id"] == 7 and reply["error"]["code"] == -32600
        assert "too large" in reply["error"]["message"]
    finally:
        sock.close()
    started = time.monotonic()
    result = alice.ctl("join", room, input="p" * 300_000 + "\n")
    assert result.returncode == 1 and "too large" in result.stderr
    assert time.monotonic() - started < 5  # not the 10 s timeout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("history", {"room": "ROOM", "since": 2**70}),
        ("history", {"room": "ROOM", "since": -(2**70)}),
        ("history", {"room": "ROOM", "since": -1}),
        ("history", {"room": "ROOM", "limit": 2**64}),
        ("history", {"room": "ROOM\ud800"}),
        ("send", {"room": "ROOM", "text": "\udfff"}),
        ("trust", {"room": "ROOM", "name": "a\ud800"}),
        ("trust", {"room": "ROOM", "name": "alice", "fingerprint": "\ud800" * 40}),
        ("join", {"room": "\ud800", "passphrase": PASSPHRASE}),
    ],
)
def test_out_of_range_params_are_invalid_params(
    make_daemon: MakeDaemon, room: str, method: str, params: dict[str, Any]
) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    sock = dealer(alice)
    try:
        filled = {
            k: v.replace("ROOM", room) if isinstance(v, str) else v for k, v in params.items()
        }
        reply = rpc(sock, method, filled)
        assert reply["error"]["code"] == -32602, reply
        assert rpc(sock, "status", {})["result"]["name"] == "alice"
    finally:
        sock.close()
    assert "Traceback" not in alice.log()


# ---------------------------------------------------------------------- a damaged state dir


def run_chatd(d: Daemon, *prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, command("chatd")],
        env=d.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def damage(kind: str, state: Path) -> None:
    db = state / "mqchat.db"
    if kind == "corrupt":
        db.write_bytes(b"this is not a database" * 1000)
    elif kind == "truncated":
        data = db.read_bytes()
        db.write_bytes(data[: len(data) // 3])
        for side in ("mqchat.db-wal", "mqchat.db-shm"):
            (state / side).unlink(missing_ok=True)
    elif kind == "directory":
        db.unlink()
        db.mkdir()
    db.chmod(0o600 if kind != "directory" else 0o700)


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "directory"])
def test_a_damaged_database_is_named_at_start_up(
    make_daemon: MakeDaemon, room: str, kind: str
) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    for i in range(4):
        alice.ok("send", room, f"filler {i} " + "x" * 5000)
    alice.stop()
    damage(kind, alice.state_dir)
    result = run_chatd(alice)
    assert result.returncode == 1, result.stderr
    assert "mqchat.db" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("kind", ["read-only dir", "read-only db"])
def test_a_store_chatd_cannot_write_is_named_at_start_up(
    make_daemon: MakeDaemon, room: str, kind: str
) -> None:
    """Run as nobody: root can write anywhere, so a read-only store needs another user."""
    alice = make_daemon("alice", start=False)
    alice.start()
    alice.stop()
    os.chown(alice.home, 65534, 65534)
    for top in (alice.runtime_dir, alice.state_dir):
        for path in (top, *top.iterdir()):
            os.chown(path, 65534, 65534)
    if kind == "read-only dir":
        (alice.state_dir / "mqchat.db").unlink()
        alice.state_dir.chmod(0o500)
    else:
        (alice.state_dir / "mqchat.db").chmod(0o400)
    result = run_chatd(alice, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    assert result.returncode == 1, result.stderr
    assert "mqchat.db" in result.stderr and "Traceback" not in result.stderr
