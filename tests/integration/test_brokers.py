"""Issue 15: chatd on brokers other than one mosquitto.

A three-node RabbitMQ cluster (Debian's 3.10: MQTT 3.1.1 only, quorum queues),
two mosquittos joined by contrib/mosquitto-bridge.conf, and the failures a user
must be able to see: a broker that is not there, one that will not speak MQTT 5.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
from collections.abc import Callable

import pytest

from contrib_brokers import BridgedBroker
from harness import Broker, Daemon, free_port, wait_until
from rabbitmq import RabbitCluster

MakeDaemon = Callable[..., Daemon]
MakeBroker = Callable[..., Broker]


def on_nodes(cluster: RabbitCluster, *nodes: int) -> dict[str, str]:
    """chatd's environment for a list of cluster nodes to fail over along."""
    return {"MQCHAT_BROKER": ",".join(cluster.node_url(n) for n in nodes)}


def texts(events: list[dict[str, object]]) -> list[object]:
    return [e["text"] for e in events]


# ---------------------------------------------------------------------- RabbitMQ


@pytest.mark.rabbitmq
def test_chatd_talks_through_a_3_1_1_broker_with_no_setting(
    rabbit_cluster: RabbitCluster, make_daemon: MakeDaemon, room: str
) -> None:
    """RabbitMQ 3.10 closes an MQTT 5 CONNECT: chatd falls back to 3.1.1 by itself,
    says so once, and its own payloads coming back (no noLocal) are not shown twice."""
    alice = make_daemon("alice", extra_env=on_nodes(rabbit_cluster, 1))
    bob = make_daemon("bob", extra_env=on_nodes(rabbit_cluster, 3))
    for d in (alice, bob):
        d.join(room)
    alice_tail, bob_tail = alice.tail(room, "--since", "0"), bob.tail(room, "--since", "0")
    alice.ok("send", room, "from node 1")
    bob.ok("send", room, "from node 3")
    assert texts(bob_tail.messages(2)) == ["from node 1", "from node 3"]
    assert sorted(texts(alice_tail.messages(2))) == ["from node 1", "from node 3"]
    for d in (alice, bob):
        status = d.status()
        assert status["broker"]["protocol"] == "3.1.1"
        assert status["dropped"] == {}  # echoes are nothing, not drops
        assert d.log().count("does not speak MQTT 5") == 1
        d.ok("send", room, f"last from {d.name}")
    for tail in (alice_tail, bob_tail):
        assert sorted(texts(tail.messages(2))) == ["last from alice", "last from bob"]
        tail.assert_silent()


@pytest.mark.rabbitmq
def test_a_session_outlives_the_node_that_held_it(
    rabbit_cluster: RabbitCluster, make_daemon: MakeDaemon, room: str
) -> None:
    """bob is away while node 3 (where his session lives) is stopped and alice sends
    100; bob comes back, fails over to node 2 and gets all 100 (quorum queues)."""
    alice = make_daemon("alice", extra_env=on_nodes(rabbit_cluster, 1))
    bob = make_daemon("bob", extra_env=on_nodes(rabbit_cluster, 3, 2))
    for d in (alice, bob):
        d.join(room)
    bob.stop()
    rabbit_cluster.stop_node(3)
    alice.ok("send", room, input="".join(f"away {i}\n" for i in range(100)))
    wait_until(lambda: alice.status()["broker"]["outbox"] == 0, "alice's 100 acknowledged")
    bob.start()
    got = bob.tail(room, "--since", "0").messages(100, timeout=120)
    assert sorted(texts(got)) == sorted(f"away {i}" for i in range(100))
    status = bob.status()["broker"]
    assert status["url"] == rabbit_cluster.node_url(2)
    assert "cannot connect" in status["last_error"]["reason"]


@pytest.mark.rabbitmq
@pytest.mark.timeout(600)
def test_a_node_restarted_during_a_stream_loses_nothing(
    rabbit_cluster: RabbitCluster, make_daemon: MakeDaemon, room: str
) -> None:
    alice = make_daemon("alice", extra_env=on_nodes(rabbit_cluster, 1, 2))
    bob = make_daemon("bob", extra_env=on_nodes(rabbit_cluster, 3, 2))
    for d in (alice, bob):
        d.join(room)
    tail = bob.tail(room, "--since", "0")
    lines = "".join(f"stream {i}\n" for i in range(400))
    sender = threading.Thread(target=alice.ok, args=("send", room), kwargs={"input": lines})
    sender.start()
    tail.messages(50, timeout=120)  # the stream is under way
    rabbit_cluster.stop_node(3)
    rabbit_cluster.start_node(3)
    sender.join(300)
    rest = tail.messages(350, timeout=300)
    got = texts(rest)
    assert len(set(got)) == 350  # none shown twice
    wait_until(lambda: alice.status()["broker"]["outbox"] == 0, "alice's outbox to empty", 120)
    history = [
        json.loads(line)["text"]
        for line in bob.ok("tail", room, "--json", "--no-follow", "-n", "1000").splitlines()
    ]
    assert sorted(history) == sorted(f"stream {i}" for i in range(400))


# ---------------------------------------------------------------------- bridges


def test_chatd_talks_across_a_mosquitto_bridge(
    brokers: tuple[Broker, BridgedBroker], make_daemon: MakeDaemon, room: str
) -> None:
    a, b = brokers
    alice, bob = make_daemon("alice", on=a), make_daemon("bob", on=b)
    for d in (alice, bob):
        d.join(room)
    alice_tail, bob_tail = alice.tail(room, "--since", "0"), bob.tail(room, "--since", "0")
    alice.ok("send", room, "over the bridge")
    assert texts(bob_tail.messages(1)) == ["over the bridge"]
    bob.ok("send", room, "and back")
    assert texts(alice_tail.messages(2)) == ["over the bridge", "and back"]
    b.stop()
    bob.wait_connected(False)
    alice.ok("send", room, "while B was down")
    b.start()
    assert texts(bob_tail.messages(2)) == ["and back", "while B was down"]


def test_chatd_talks_over_websockets(
    make_broker: MakeBroker, make_daemon: MakeDaemon, room: str
) -> None:
    """ws:// URLs: paho's websocket wrapper, driven from the loop like a plain socket."""
    port = free_port()
    broker = make_broker(extra=(f"listener {port} 127.0.0.1", "protocol websockets"))
    url = f"ws://127.0.0.1:{port}/mqtt"
    alice, bob = (
        make_daemon(n, on=broker, extra_env={"MQCHAT_BROKER": url}) for n in ("alice", "bob")
    )
    for d in (alice, bob):
        d.join(room)
    tail = bob.tail(room, "--since", "0")
    alice.ok("send", room, input="".join(f"over websockets {i}\n" for i in range(50)))
    assert texts(tail.messages(50)) == [f"over websockets {i}" for i in range(50)]
    assert alice.status()["broker"]["url"] == url


# ---------------------------------------------------------------------- failures you can see


def test_a_broker_that_is_not_there_is_named_in_status_and_the_log(
    make_daemon: MakeDaemon,
) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    alice = make_daemon("alice", extra_env={"MQCHAT_BROKER": dead}, start=False)
    alice.start(wait_connected=False)
    status = wait_until(
        lambda: (s := alice.status()["broker"])["last_error"] and s, "a connection error"
    )
    assert not status["connected"]
    assert "cannot connect" in status["last_error"]["reason"]
    assert "refused" in status["last_error"]["reason"].lower()
    assert status["failing_since"] is not None
    assert "cannot connect" in alice.ok("status")
    warnings = [line for line in alice.log().splitlines() if "WARNING: cannot connect" in line]
    assert len(warnings) == 1  # once, not on every retry


def test_a_broker_that_closes_before_connack_gets_a_hint(make_daemon: MakeDaemon) -> None:
    """With protocol = "5" forced, a broker that hangs up on CONNECT is reported
    with the hint about protocol versions (here: a listener that closes at once)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def hang_up() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(1024)
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    port = listener.getsockname()[1]
    alice = make_daemon(
        "alice", extra_env={"MQCHAT_BROKER": f"mqtt://127.0.0.1:{port}"}, start=False
    )
    alice.write_config('[broker]\nprotocol = "5"\n')
    try:
        alice.start(wait_connected=False)
        reason = wait_until(
            lambda: (e := alice.status()["broker"]["last_error"]) and e["reason"],
            "the hang-up to be reported",
        )
        assert "before answering CONNECT" in reason and 'protocol = "3.1.1"' in reason
        assert alice.status()["broker"]["protocol"] == "5"  # forced: no fallback
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()


def test_a_broker_gone_silent_is_given_up_after_a_keepalive(
    make_broker: MakeBroker, make_daemon: MakeDaemon, room: str
) -> None:
    """paho's keepalive runs on a deadline on the loop (no thread polls it): a
    connection that carries nothing any more, here to a frozen mosquitto, is given
    up within two keepalives, reported, and dialled again once the broker answers."""
    broker = make_broker()
    alice = make_daemon("alice", on=broker, start=False)
    alice.write_config("[broker]\nkeepalive = 5\n").start()
    bob = make_daemon("bob", on=broker)
    for d in (alice, bob):
        d.join(room)
    tail = bob.tail(room, "--since", "0")
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGSTOP)
    try:
        alice.wait_connected(False)  # PINGREQ at 5 s at the latest, given up 5 s later
        reason = alice.status()["broker"]["last_error"]["reason"]
        assert "closed (the broker stopped or restarted" in reason
        alice.ok("send", room, "sent while the broker was frozen")  # kept in the outbox
    finally:
        broker.proc.send_signal(signal.SIGCONT)
    alice.wait_connected()
    assert texts(tail.messages(1)) == ["sent while the broker was frozen"]


def test_chatd_fails_over_along_its_list_of_brokers(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    alice = make_daemon("alice", extra_env={"MQCHAT_BROKER": f"{dead},{broker.url}"})
    bob = make_daemon("bob")
    for d in (alice, bob):
        d.join(room)
    tail = bob.tail(room, "--since", "0")
    alice.ok("send", room, "through the second URL")
    assert texts(tail.messages(1)) == ["through the second URL"]
    assert alice.status()["broker"]["url"] == broker.url
