"""Issue 25: what chatd says about its broker, and how long a 3.1.1-only broker costs it.

A real mosquitto throughout; for amqtt's way with MQTT 5, a proxy in front of
it that does what amqtt 0.12.1 does (measured by hand, docs/brokers.md): it
reads an MQTT 5 CONNECT's properties as part of a longer packet and waits in
silence, and passes MQTT 3.1.1 through.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from harness import Broker, Daemon, Gate, free_port, wait_until

MakeDaemon = Callable[..., Daemon]
MakeBroker = Callable[..., Broker]
MQTT5_LEVEL = 5


@contextlib.contextmanager
def silent_to_mqtt5(broker: Broker) -> Iterator[str]:
    """A broker URL that answers MQTT 5 CONNECT with silence and passes 3.1.1 to ``broker``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", free_port()))
    listener.listen()
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            first = client.recv(65536)
            held.append(client)
            # CONNECT: fixed header (2 bytes here), "\0\4MQTT", then the protocol level.
            if len(first) > 8 and first[8] == MQTT5_LEVEL:
                continue  # as amqtt: no answer, the connection left open
            upstream = socket.create_connection(("127.0.0.1", broker.port))
            held.append(upstream)
            upstream.sendall(first)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=Gate._pump, args=(src, dst), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"mqtt://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        for sock in held:
            sock.close()


def test_a_broker_silent_to_mqtt5_costs_a_few_seconds_not_ten(
    broker: Broker, make_daemon: MakeDaemon
) -> None:
    with silent_to_mqtt5(broker) as url:
        alice = make_daemon("alice", extra_env={"MQCHAT_BROKER": url}, start=False)
        started = time.monotonic()
        alice.start()  # waits until connected
        took = time.monotonic() - started
        assert alice.status()["broker"]["protocol"] == "3.1.1"
        assert took < 8, f"chatd took {took:.1f} s to fall back to MQTT 3.1.1"
        assert alice.log().count("does not speak MQTT 5") == 1


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_broker_that_stops_is_reported_in_words(
    make_broker: MakeBroker, make_daemon: MakeDaemon, room: str, protocol: str
) -> None:
    own = make_broker()
    alice = make_daemon("alice", on=own, start=False)
    alice.write_config(f'[broker]\nprotocol = "{protocol}"\n')
    alice.start()
    alice.join(room)
    tail = alice.tail(room)
    alice.ok("send", room, "before")
    assert tail.messages(1)[0]["text"] == "before"  # the tail is following
    own.stop()
    # What the tail shows (chatd's broker_down notice) and the log say it in words;
    # `status` keeps the latest failure, by then the reconnect's "cannot connect".
    down = tail.wait_for(lambda e: e["type"] == "notice" and e.get("kind") == "broker_down")
    assert "closed (the broker stopped or restarted" in down["text"], down["text"]
    wait_until(lambda: "closed (the broker stopped" in alice.log(), "the log line")
    assert "Unspecified" not in alice.log()
    assert "Unspecified" not in alice.ok("status")
