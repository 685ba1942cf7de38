"""Sealed batches (issue 14, item 1; docs/protocol.md §12.4, §21): what waits is
sealed together, what is sent alone on an idle daemon leaves at once, alone; every
message keeps its own id and order; a batch that fails its signature is dropped whole."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from forge import epoch_zero, texts_in
from harness import PASSPHRASE, Broker, Daemon, wait_until
from mqchat.daemon.identity_file import load_identity
from mqchat.protocol.batch import associated_data, seal_batch
from mqchat.protocol.records import Text
from rawmqtt import RawClient, text_topic

MakeDaemon = Callable[..., Daemon]


def test_many_lines_go_in_few_batches_and_arrive_each_once_in_order(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    count = 1000
    with RawClient(broker) as raw:
        alice, bob = make_daemon("alice"), make_daemon("bob")
        alice.join(room)
        bob.join(room)
        tail = bob.tail(room, "--since", "0")
        alice.ok("send", room, input="".join(f"line {i}\n" for i in range(count)))
        got = [m["text"] for m in tail.messages(count)]
        assert got == [f"line {i}" for i in range(count)]
        keys = epoch_zero(PASSPHRASE, room)
        batches = [p for p in raw.on_topic(text_topic(room, PASSPHRASE)) if texts_in(p, keys)]
        records = [t for p in batches for t in texts_in(p, keys)]
        assert [t.text for t in records] == got
        assert len(batches) <= count // 100, f"{len(batches)} payloads for {count} lines"
        assert len({t.message_id for t in records}) == count
        assert [t.seq for t in records] == list(range(1, count + 1))
        assert len({t.stream for t in records}) == 1
        tail.assert_silent()


def test_a_message_on_an_idle_daemon_leaves_at_once_alone(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    with RawClient(broker) as raw:
        alice, bob = make_daemon("alice"), make_daemon("bob")
        alice.join(room)
        bob.join(room)
        tail = bob.tail(room, "--since", "0")
        for text in ("one", "two", "three"):
            alice.ok("send", room, text)
            assert tail.messages(1)[0]["text"] == text
        payloads = raw.wait_texts(room, PASSPHRASE, 3)
        keys = epoch_zero(PASSPHRASE, room)
        assert [[t.text for t in texts_in(p, keys)] for p in payloads] == [
            ["one"],
            ["two"],
            ["three"],
        ]


def test_a_batch_with_a_bad_signature_is_dropped_whole(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    with RawClient(broker) as raw:
        alice, bob = make_daemon("alice"), make_daemon("bob")
        alice.join(room)
        bob.join(room)
        tail = bob.tail(room, "--since", "0")
        keys = epoch_zero(PASSPHRASE, room)
        now = time.time_ns() // 1_000_000
        identity = load_identity(alice.state_dir, os.urandom)
        records = [Text(1, i, os.urandom(16), now, f"forged {i}") for i in range(1, 4)]
        payload = seal_batch(
            keys, identity, name="alice", records=records, sent_ms=now, random=os.urandom
        )
        # Decrypt, flip a bit of the signature and encrypt again: only the
        # signature is wrong, the AEAD is fine.
        header, nonce, sealed = payload[:2], payload[2:14], payload[14:]
        aead, ad = keys.aead(payload[1]), associated_data(payload[1], keys)
        plain = bytearray(aead.decrypt(nonce, sealed, ad))
        plain[-1] ^= 1
        resealed = header + nonce + aead.encrypt(nonce, bytes(plain), ad)
        before = bob.status()["dropped"].get("undecryptable", 0)
        raw.publish(text_topic(room, PASSPHRASE), resealed)
        wait_until(
            lambda: bob.status()["dropped"].get("undecryptable", 0) == before + 1,
            "bob to drop the batch",
        )
        alice.ok("send", room, "genuine")
        assert tail.messages(1)[0]["text"] == "genuine"
        tail.assert_silent()
