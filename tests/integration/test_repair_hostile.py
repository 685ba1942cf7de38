"""Issue 22: repairs and control records that a hostile member or broker cannot turn
against the room, and repairs that do not wait for the sender to speak again.

A real mosquitto and real daemons; the hostile member is a forged sender (its own
Ed25519 key, batches sealed by hand with the room's key, as a member could), the
hostile broker a raw MQTT client that captures payloads and publishes them again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from forge import epoch_zero
from harness import PASSPHRASE, Broker, Daemon, wait_until
from mqchat.errors import ProtocolError
from mqchat.protocol.batch import Batch, open_batch, seal_batch
from mqchat.protocol.records import Heads, Record, RepairRequest, Text
from mqchat.protocol.signing import SigningIdentity
from rawmqtt import RawClient

MakeDaemon = Callable[..., Daemon]


class Forger:
    """A member of ``room`` that chatd does not run: seals what it is told, with a
    signed time that goes forward unless it is told otherwise."""

    def __init__(self, room: str, name: str = "carol") -> None:
        self.keys = epoch_zero(PASSPHRASE, room)
        self.topic = self.keys.topic("mqchat/v1")
        self.identity = SigningIdentity.generate(os.urandom)
        self.name = name
        self._last_ms = 0

    def seal(self, records: list[Record], sent_ms: int | None = None) -> bytes:
        if sent_ms is None:
            sent_ms = self._last_ms = max(self._last_ms + 1, int(time.time() * 1000))
        return seal_batch(
            self.keys, self.identity, name=self.name, records=records, sent_ms=sent_ms,
            random=os.urandom,
        )  # fmt: skip

    def batches(self, raw: RawClient) -> list[Batch]:
        """Every batch of the room the broker carried, opened."""
        opened = []
        for payload in raw.on_topic(self.topic):
            try:
                opened.append(open_batch(payload, self.keys))
            except ProtocolError:
                continue
        return opened


def texts_of(batches: list[Batch], key: bytes, *, repaired: bool) -> list[Text]:
    return [
        r
        for b in batches
        if b.sender_key == key
        for r in b.records
        if isinstance(r, Text) and r.repaired == repaired
    ]


def heads_of(batches: list[Batch], key: bytes) -> list[Heads]:
    return [r for b in batches if b.sender_key == key for r in b.records if isinstance(r, Heads)]


def test_an_idle_sender_answers_a_repair_request_at_once(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    """Item 8: alice sent three messages and is quiet; a request for them is answered
    within seconds, not at her next heads (10 s later) or her next message."""
    alice = make_daemon("alice")
    alice.join(room)
    carol = Forger(room)
    with RawClient(broker) as raw:
        alice.ok("send", room, "one", "two", "three")
        alice_key = wait_until(
            lambda: next((b.sender_key for b in carol.batches(raw) if b.records), None),
            "alice's texts on the broker",
        )
        sent = wait_until(lambda: texts_of(carol.batches(raw), alice_key, repaired=False), "texts")
        wait_until(lambda: heads_of(carol.batches(raw), alice_key), "alice's heads after 1 s")
        stream = sent[0].stream
        asked_at = time.monotonic()
        raw.publish(carol.topic, carol.seal([RepairRequest(alice_key, stream, ((1, 1),))]))
        repaired = wait_until(
            lambda: texts_of(carol.batches(raw), alice_key, repaired=True),
            "alice's answer",
            timeout=5,
        )
        assert time.monotonic() - asked_at < 5
        assert [t.seq for t in repaired] == [1]


def test_a_text_dated_after_9999_is_dropped_once_a_line_and_history_still_works(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    """Item 7: version 2 texts get version 1's time bound. Fifty texts dated in the
    year 144,000 are dropped and counted, without a traceback, and neither the
    running tail nor `tail --since 0` afterwards fails."""
    bob = make_daemon("bob")
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    carol = Forger(room)
    far = 2**52
    with RawClient(broker) as raw:
        for seq in range(1, 51):
            mid = os.urandom(16)
            raw.publish(carol.topic, carol.seal([Text(5 + seq, 1, mid, far, f"far {seq}")]))
        raw.publish(carol.topic, carol.seal([Text(77, 1, os.urandom(16), 1_900_000_000_000, "ok")]))
        assert tail.messages(1)[0]["text"] == "ok"
    assert bob.status()["dropped"].get("undecryptable") == 50
    shown = bob.ok("tail", room, "--no-follow", "--since", "0")
    assert "ok" in shown and "far" not in shown
    log = bob.log()
    assert "Traceback" not in log
    assert log.count("after 9999-12-31") == 1


def test_a_broker_that_allows_only_qos_0_is_named_in_status_and_the_log(
    make_broker: Callable[..., Broker], make_daemon: MakeDaemon
) -> None:
    """Item 11: mosquitto with `max_qos 0` (as mqttools) would drop the connection at
    every QoS 1 publish; chatd says so once (retries only at debug level), and status
    does not say connected."""
    broker = make_broker(extra=("max_qos 0",))
    alice = make_daemon("alice", on=broker, start=False)
    alice.start(wait_connected=False)
    error = wait_until(
        lambda: (alice.status()["broker"].get("last_error") or {}).get("reason"),
        "status to say what is wrong",
    )
    assert "allows only QoS 0" in error
    assert alice.status()["broker"]["connected"] is False
    assert "allows only QoS 0" in alice.ok("status")
    warnings = [line for line in alice.log().splitlines() if "WARNING" in line]
    assert sum("allows only QoS 0" in line for line in warnings) == 1
