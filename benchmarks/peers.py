"""The other process of a two-process benchmark: ``python benchmarks/peers.py ROLE ARGS...``.

Roles:
  paho-pub-lockstep PORT TOPIC SIZE     publish one QoS 1 message per stdin line,
                                        stamped with time.monotonic_ns()
  paho-pub-flood PORT TOPIC COUNT SIZE  after a "go" line, publish COUNT QoS 1
                                        messages as fast as paho takes them
  zmq-rep ENDPOINT                      echo every request until stdin closes
  relay-in PORT TOPIC ENDPOINT          the first of "the same hops, doing no work":
                                        a ROUTER on ENDPOINT; each request's body
                                        is published (paho, QoS 1) to TOPIC, then
                                        answered; until stdin closes
  relay-out PORT TOPIC ENDPOINT         the second: what comes on TOPIC (QoS 1) is
                                        sent on a PUB bound to ENDPOINT
  zmq-print ENDPOINT                    the last: a SUB to ENDPOINT that writes each
                                        message on a line of its own to stdout, and
                                        flushes it, as a tail prints; "ready" first
  paho-pub-batch PORT TOPIC COUNT SIZE BATCH
                                        as paho-pub-flood, COUNT lines of SIZE
                                        bytes packed BATCH to a PUBLISH (the ceiling)
  fanout-subs EVENTS_SOCK ROOM SUBS EXPECT IDLE_S
                                        SUBS ZeroMQ SUBs to one room on chatd's
                                        events.sock; count the message events
                                        each receives, and when the first got each
  tail CHATCTL ROOM TAG EXPECT IDLE_S   a real ``chatctl tail -n 1 ROOM`` (env: the
                                        receiving chatd's); "ready" once it printed
                                        its history line (so it is subscribed), then
                                        stamp each line it prints whose text is
                                        "TAG N ...", until EXPECT numbers or IDLE_S of
                                        silence; reports lines missing and twice, its
                                        stderr lines, and the tail's CPU

Each prints "ready" once it can be driven and a JSON line with what it saw at
the end. CLOCK_MONOTONIC is system-wide on Linux, so stamps compare across
processes.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from typing import Any, cast

PAHO_INFLIGHT = 100
"""The same window chatd gives paho (daemon/broker.py), so the baseline is like for like."""


def _paho_client(port: int) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{os.getpid()}")

    def nodelay(_c: Any, _u: Any, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    client.on_socket_open = nodelay
    client.max_inflight_messages_set(PAHO_INFLIGHT)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not connected.wait(10):
        raise SystemExit("could not connect to mosquitto")
    return client


def paho_pub_lockstep(port: int, topic: str, size: int) -> None:
    client = _paho_client(port)
    pad = b"x" * max(0, size - 20)
    print("ready", flush=True)
    for _line in sys.stdin:
        stamp = time.monotonic_ns()
        client.publish(topic, str(stamp).encode().ljust(20) + pad, qos=1)
    client.loop_stop()
    client.disconnect()
    print(json.dumps({"done": True}), flush=True)


def paho_pub_flood(port: int, topic: str, count: int, size: int) -> None:
    client = _paho_client(port)
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    infos = [
        client.publish(topic, i.to_bytes(4, "big") + b"x" * (size - 4), qos=1) for i in range(count)
    ]
    queued = time.perf_counter() - start
    for info in infos:
        info.wait_for_publish(60)
    acked = time.perf_counter() - start
    client.loop_stop()
    client.disconnect()
    print(json.dumps({"queued_s": queued, "acked_s": acked}), flush=True)


def paho_pub_batch(port: int, topic: str, count: int, size: int, batch: int) -> None:
    client = _paho_client(port)
    line = b"x" * size
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    infos = []
    for first in range(0, count, batch):
        n = min(batch, count - first)
        payload = first.to_bytes(4, "big") + n.to_bytes(2, "big") + line * n
        infos.append(client.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    acked = time.perf_counter() - start
    client.loop_stop()
    client.disconnect()
    print(json.dumps({"acked_s": acked}), flush=True)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tail(chatctl: str, room: str, tag: str, expect: int, idle_s: float) -> None:
    """A real ``chatctl tail`` whose printed lines are stamped as this process reads them.

    The tail's stdout is a pipe, read with os.read as fast as it comes; a line counts
    when it reaches this process, that is, when the tail has written (and flushed) it.
    """
    import selectors
    import subprocess

    proc = subprocess.Popen(
        [chatctl, "tail", "-n", "1", room],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    os.set_blocking(out_fd, False)
    os.set_blocking(err_fd, False)
    sel = selectors.DefaultSelector()
    sel.register(out_fd, selectors.EVENT_READ)
    sel.register(err_fd, selectors.EVENT_READ)
    marker = f"> {tag} ".encode()
    arrivals: dict[int, float] = {}
    twice = other = 0
    err_lines: list[str] = []
    partial = {out_fd: b"", err_fd: b""}
    ready = False
    cpu_at_ready = 0.0
    deadline = time.monotonic() + 30  # to print its history line; then the idle limit
    hard_deadline = time.monotonic() + 300
    while time.monotonic() < hard_deadline and len(arrivals) < expect:
        wait = deadline - time.monotonic() if not ready else idle_s
        events = sel.select(max(0.0, wait))
        if not events:
            break
        now = time.monotonic()
        for key, _ in events:
            fd = int(key.fd)
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                sel.unregister(fd)
                continue
            *lines, partial[fd] = (partial[fd] + chunk).split(b"\n")
            if fd == err_fd:
                err_lines += [x.decode(errors="replace") for x in lines]
                continue
            for line in lines:
                if not ready:  # the history line: the tail is subscribed
                    ready = True
                    cpu_at_ready = _cpu_seconds(proc.pid)
                    print("ready", flush=True)
                    continue
                at = line.find(marker)
                if at < 0:
                    other += 1
                    continue
                number = int(line[at + len(marker) :].split(b" ", 1)[0])
                if number in arrivals:
                    twice += 1
                else:
                    arrivals[number] = now
        if not sel.get_map():
            break
    if not ready:
        print("tail printed nothing", file=sys.stderr, flush=True)
    tail_cpu = _cpu_seconds(proc.pid) - cpu_at_ready if ready else float("nan")
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    missing = [n for n in range(expect) if n not in arrivals]
    print(
        json.dumps(
            {
                "arrivals": arrivals,
                "missing": len(missing),
                "first_missing": missing[:5],
                "twice": twice,
                "other_lines": other,
                "stderr": err_lines[-5:],
                "stderr_lines": len(err_lines),
                "tail_cpu_s": tail_cpu,
            }
        ),
        flush=True,
    )


def zmq_rep(endpoint: str) -> None:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.bind(endpoint)
    print("ready", flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    while not stop.is_set():
        if sock.poll(100):
            sock.send(sock.recv())
    sock.close(linger=0)
    ctx.term()
    print(json.dumps({"done": True}), flush=True)


def _bare_paho(port: int, on_message: Any = None, topic: str | None = None) -> Any:
    """A paho client with no thread and no loop() (so no wake-up socketpair), driven
    by the caller's poll as chatd drives its own; connected, and subscribed to
    ``topic`` if given."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-{os.getpid()}", protocol=mqtt.MQTTv5
    )
    client.on_socket_open = lambda _c, _u, sock: sock.setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
    )
    client.max_inflight_messages_set(PAHO_INFLIGHT)
    said: list[str] = []
    client.on_connect = lambda *_a: said.append("connack")
    client.on_subscribe = lambda *_a: said.append("suback")
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    _read_until(client, said, "connack")
    if topic is not None:
        client.subscribe(topic, qos=1)
        _read_until(client, said, "suback")
    return client


def _read_until(client: Any, said: list[str], what: str) -> None:
    import select

    deadline = time.monotonic() + 10
    while what not in said:
        if time.monotonic() > deadline:
            raise SystemExit(f"mosquitto sent no {what}")
        if select.select([client.socket()], [], [], 0.2)[0]:
            client.loop_read()


def _until_stdin_closes(handlers: dict[Any, Any]) -> None:
    """Poll the given sockets and descriptors, calling each one's handler when it is
    readable, until stdin closes."""
    import zmq

    poller = zmq.Poller()
    handlers = {  # a plain socket comes back from poll() as its descriptor
        item if isinstance(item, zmq.Socket) else item.fileno(): handler
        for item, handler in handlers.items()
    }
    for item in handlers:
        poller.register(item, zmq.POLLIN)
    poller.register(sys.stdin.fileno(), zmq.POLLIN)
    while True:
        for item, _ in poller.poll(1000):
            if item == sys.stdin.fileno():
                if not os.read(item, 4096):
                    return
            else:
                handlers[item]()


def relay_in(port: int, topic: str, endpoint: str) -> None:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    client = _bare_paho(port)

    def request() -> None:
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            envelope, body = sock.recv_multipart()
            client.publish(topic, body, qos=1)  # no thread: written at once
            sock.send_multipart([envelope, b"ok"])

    print("ready", flush=True)
    _until_stdin_closes({sock: request, client.socket(): client.loop_read})
    client.disconnect()
    sock.close(linger=0)
    ctx.term()
    print(json.dumps({"done": True}), flush=True)


def relay_out(port: int, topic: str, endpoint: str) -> None:
    import zmq

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind(endpoint)
    client = _bare_paho(port, lambda _c, _u, m: pub.send_multipart([b"t", m.payload]), topic)
    print("ready", flush=True)
    _until_stdin_closes({client.socket(): client.loop_read})
    client.disconnect()
    pub.close(linger=0)
    ctx.term()
    print(json.dumps({"done": True}), flush=True)


def zmq_print(endpoint: str) -> None:
    import zmq

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"t")
    sub.connect(endpoint)
    out = sys.stdout.buffer
    out.write(b"ready\n")
    out.flush()

    def line() -> None:
        while sub.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            out.write(sub.recv_multipart()[1] + b"\n")
            out.flush()

    _until_stdin_closes({sub: line})
    sub.close(linger=0)
    ctx.term()


def fanout_subs(path: str, room: str, subs: int, expect: int, idle_s: float) -> None:
    import zmq

    from mqchat.protocol.ipc_events import (
        PACKED_PREFIX,
        decode_events,
        packed_topic,
        sync_topic,
    )

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socks: list[zmq.Socket[bytes]] = []
    poller = zmq.Poller()
    for _ in range(subs):
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, 1_000)  # as chatctl's SUB (client/event_subscriber.py)
        s.setsockopt(zmq.SUBSCRIBE, packed_topic(room))  # as chatctl
        sync = sync_topic(os.urandom(16).hex())
        s.setsockopt(zmq.SUBSCRIBE, sync)
        s.connect(f"ipc://{path}")
        while True:  # nothing that matters comes before the sync answer
            if not s.poll(10_000):
                raise SystemExit("chatd did not confirm a subscription")
            if s.recv_multipart()[0] == sync:
                break
        s.setsockopt(zmq.UNSUBSCRIBE, sync)
        poller.register(s, zmq.POLLIN)
        socks.append(s)
    index = {s: i for i, s in enumerate(socks)}
    seen: list[set[int]] = [set() for _ in socks]
    arrivals: dict[int, float] = {}  # message number -> when subscriber 0 got it
    print("ready", flush=True)
    cpu_at_ready = os.times()  # this process: the Python reader and libzmq's I/O thread
    first = last = None
    hard_deadline = time.monotonic() + 120
    while time.monotonic() < hard_deadline:
        ready = poller.poll(idle_s * 1000)
        if not ready:
            break
        for sock, _ in ready:
            i = index[sock]
            # Drain what waits; ZMQ_EVENTS says when to stop, without raising an Again
            # exception each time (as chatctl's own reader, client/event_subscriber.py).
            while cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                frames = sock.recv_multipart()
                if len(frames) != 2 or not frames[0].startswith(PACKED_PREFIX):
                    continue  # the sync answer
                now = time.monotonic()
                for event in decode_events(frames[1]):  # one or more, one a line
                    if not event or event.get("type") != "message":
                        continue
                    if not event["text"].startswith("fan "):
                        continue
                    number = int(event["text"].split()[1])
                    seen[i].add(number)
                    if i == 0:
                        arrivals.setdefault(number, now)
                    first = first if first is not None else now
                    last = now
        if all(len(x) >= expect for x in seen):
            break
    for s in socks:
        s.close(linger=0)
    ctx.term()
    counts = [len(x) for x in seen]
    now = os.times()
    cpu_s = now.user - cpu_at_ready.user + now.system - cpu_at_ready.system
    print(
        json.dumps(
            {"counts": counts, "first": first, "last": last, "arrivals0": arrivals, "cpu_s": cpu_s}
        ),
        flush=True,
    )


def main(argv: list[str]) -> None:
    role, args = argv[0], argv[1:]
    if role == "paho-pub-lockstep":
        paho_pub_lockstep(int(args[0]), args[1], int(args[2]))
    elif role == "paho-pub-flood":
        paho_pub_flood(int(args[0]), args[1], int(args[2]), int(args[3]))
    elif role == "paho-pub-batch":
        paho_pub_batch(int(args[0]), args[1], int(args[2]), int(args[3]), int(args[4]))
    elif role == "tail":
        tail(args[0], args[1], args[2], int(args[3]), float(args[4]))
    elif role == "zmq-rep":
        zmq_rep(args[0])
    elif role == "relay-in":
        relay_in(int(args[0]), args[1], args[2])
    elif role == "relay-out":
        relay_out(int(args[0]), args[1], args[2])
    elif role == "zmq-print":
        zmq_print(args[0])
    elif role == "fanout-subs":
        fanout_subs(args[0], args[1], int(args[2]), int(args[3]), float(args[4]))
    else:
        raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    main(sys.argv[1:])
