"""Issue 22 items 7 and 11: version 2 texts get version 1's time bound, and a broker
that allows only QoS 0 is named. A real mosquitto and real daemons; the texts come
from a forged member (tests/forged_member.py)."""

from __future__ import annotations

import os
from collections.abc import Callable

from forged_member import Forger
from harness import Broker, Daemon, wait_until
from mqchat.protocol.records import Text
from rawmqtt import RawClient

MakeDaemon = Callable[..., Daemon]


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
