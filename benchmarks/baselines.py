"""Baselines measured in the same run: what the parts cost without mqchat in between.

- paho one hop: QoS 1 publish → PUBACK, in this process (TCP_NODELAY).
- paho end to end: QoS 1 publish in one process → on_message in this one.
- paho throughput: QoS 1 flood from one process, counted on arrival in this one.
- ZeroMQ ipc REQ/REP round trip between two processes.
- the same hops as an idle message, doing no work: a ZeroMQ request to a relay
  that publishes its body with paho (QoS 1), mosquitto, a relay that sends what
  it receives on a ZeroMQ PUB, and a SUB process that prints it to a pipe read
  here. What is left of the idle target once these are taken is what chatd's
  and the tail's work may cost (benchmarks/latency.py).
- ``python -c 'import zmq'`` cold start (and ``python -c pass``, for scale).
- the crypto a message costs: seal and open of a mqchat envelope (sign, verify, the
  default cipher, which new rooms use).
"""

from __future__ import annotations

import os
import queue
import select
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import zmq
from paho.mqtt.enums import CallbackAPIVersion

from common import (
    PEERS,
    PYTHON,
    Bench,
    CpuMeter,
    Peer,
    Row,
    broker_pid,
    log,
    median,
    ms,
    per_message_us,
    percentile,
    stop_process,
    timed_run,
)
from mqchat.protocol import envelope
from mqchat.protocol.kdf import RoomKeys
from mqchat.protocol.signing import SigningIdentity

TEXT = "the quick brown fox jumps over the lazy dog; " * 2
"""A typical chat line (90 characters): what every figure sends."""


def sealed_size() -> int:
    keys = RoomKeys(os.urandom(32), os.urandom(32))
    ident = SigningIdentity.generate(os.urandom)
    _, payload = envelope.seal(
        keys, ident, name="alice", text=TEXT, seq=1, timestamp_ms=0, random=os.urandom
    )
    return len(payload)


def _client(port: int, on_message: Any = None) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-base-{os.urandom(4).hex()}")

    def nodelay(_c: Any, _u: Any, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    client.on_socket_open = nodelay
    client.max_inflight_messages_set(100)
    if on_message is not None:
        client.on_message = on_message
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not connected.wait(10):
        raise RuntimeError("baseline client could not connect")
    return client


def _subscribe(client: mqtt.Client, topic: str) -> None:
    done = threading.Event()
    client.on_subscribe = lambda *_a: done.set()
    client.subscribe(topic, qos=1)
    if not done.wait(10):
        raise RuntimeError("no SUBACK")


def paho_one_hop(bench: Bench, count: int) -> list[float]:
    client = _client(bench.broker.port)
    payload = b"x" * sealed_size()
    lat = []
    try:
        for i in range(count + 20):
            start = time.perf_counter()
            client.publish("bench/onehop", payload, qos=1).wait_for_publish(10)
            if i >= 20:  # the first few warm up paho and the broker
                lat.append(time.perf_counter() - start)
    finally:
        client.loop_stop()
        client.disconnect()
    return lat


def paho_end_to_end(bench: Bench, count: int) -> list[float]:
    arrivals: queue.Queue[tuple[int, bytes]] = queue.Queue()
    topic = f"bench/e2e/{os.urandom(4).hex()}"
    sub = _client(
        bench.broker.port, lambda _c, _u, m: arrivals.put((time.monotonic_ns(), m.payload))
    )
    _subscribe(sub, topic)
    pub = Peer("paho-pub-lockstep", str(bench.broker.port), topic, str(sealed_size()))
    lat = []
    try:
        for i in range(count + 20):
            pub.tell()
            got, payload = arrivals.get(timeout=10)
            if i >= 20:
                lat.append((got - int(payload[:20])) / 1e9)
    finally:
        pub.result()
        sub.loop_stop()
        sub.disconnect()
    return lat


def paho_throughput(bench: Bench, count: int) -> tuple[float, dict[str, float]]:
    """Messages per second from the flood's start until the last one arrives here, and
    the CPU seconds the publisher, mosquitto and this subscriber used meanwhile."""
    topic = f"bench/flood/{os.urandom(4).hex()}"
    got = 0
    done = threading.Event()
    last = [0.0]

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        nonlocal got
        got += 1
        if got >= count:
            last[0] = time.perf_counter()
            done.set()

    sub = _client(bench.broker.port, on_message)
    _subscribe(sub, topic)
    pub = Peer("paho-pub-flood", str(bench.broker.port), topic, str(count), str(sealed_size()))
    meter = CpuMeter({"mosquitto": broker_pid(bench)}, child="publisher", this="subscriber")
    try:
        meter.start()
        start = time.perf_counter()
        pub.tell()
        if not done.wait(120):
            raise RuntimeError(f"paho flood: only {got} of {count} arrived")
        pub.result()  # reaps the publisher: its CPU is in RUSAGE_CHILDREN now
        used = meter.stop()
    finally:
        pub.stop()
        sub.loop_stop()
        sub.disconnect()
    return count / (last[0] - start), used


BATCH_LINES = 256
"""Lines a PUBLISH at most in the ceiling, as mqchat's sealed batches (docs/store.md)."""


def paho_batch_throughput(bench: Bench, count: int) -> float:
    """The ceiling: lines a second when one paho process packs ``BATCH_LINES`` lines
    (each the size of a sealed message) into a QoS 1 PUBLISH, counted on arrival here."""
    topic = f"bench/batch/{os.urandom(4).hex()}"
    got = 0
    done = threading.Event()
    last = [0.0]

    def on_message(_c: Any, _u: Any, m: Any) -> None:
        nonlocal got
        got += int.from_bytes(m.payload[4:6], "big")
        if got >= count:
            last[0] = time.perf_counter()
            done.set()

    sub = _client(bench.broker.port, on_message)
    _subscribe(sub, topic)
    pub = Peer(
        "paho-pub-batch",
        str(bench.broker.port),
        topic,
        str(count),
        str(sealed_size()),
        str(BATCH_LINES),
    )
    try:
        start = time.perf_counter()
        pub.tell()
        if not done.wait(120):
            raise RuntimeError(f"paho batch flood: only {got} of {count} lines arrived")
        pub.result()
    finally:
        pub.stop()
        sub.loop_stop()
        sub.disconnect()
    return count / (last[0] - start)


def zmq_req_rep(count: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="mqz-", dir="/tmp") as tmp:
        endpoint = f"ipc://{Path(tmp) / 'rep.sock'}"
        rep = Peer("zmq-rep", endpoint)
        ctx = zmq.Context()
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(endpoint)
        body = b'{"jsonrpc":"2.0","id":1,"method":"status","params":{}}'
        lat = []
        try:
            for i in range(count + 50):
                start = time.perf_counter()
                req.send(body)
                if not req.poll(5000):
                    raise RuntimeError("REP did not answer")
                req.recv()
                if i >= 50:
                    lat.append(time.perf_counter() - start)
        finally:
            req.close(linger=0)
            ctx.term()
            rep.result()
    return lat


def same_hops(bench: Bench, count: int) -> list[float]:
    """Lockstep: each request's time until its line comes out of the printer's pipe."""
    size = sealed_size()
    with tempfile.TemporaryDirectory(prefix="mqh-", dir="/tmp") as tmp:
        into, out_of = f"ipc://{Path(tmp) / 'in.sock'}", f"ipc://{Path(tmp) / 'out.sock'}"
        topic = f"bench/hops/{os.urandom(4).hex()}"
        port = str(bench.broker.port)
        relays = [Peer("relay-out", port, topic, out_of), Peer("relay-in", port, topic, into)]
        printer = subprocess.Popen(
            [PYTHON, str(PEERS), "zmq-print", out_of], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        ctx = zmq.Context()
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(into)
        try:
            assert printer.stdout is not None
            if printer.stdout.readline() != b"ready\n":
                raise RuntimeError("the printing peer did not start")
            fd = printer.stdout.fileno()
            os.set_blocking(fd, False)
            return _hops_lockstep(dealer, fd, size, count)
        finally:
            dealer.close(linger=0)
            ctx.term()
            stop_process(printer, grace=5)
            for relay in relays:
                relay.result()


class _PipeLines:
    """Lines written to a pipe, read without blocking."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._partial = b""

    def any_starting(self, prefix: bytes) -> bool:
        try:
            chunk = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return False
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        return any(line.startswith(prefix) for line in lines)


def _hops_lockstep(dealer: zmq.Socket[bytes], fd: int, size: int, count: int) -> list[float]:
    printed = _PipeLines(fd)
    # A SUB's subscription reaches the PUB a moment after it connects: until the
    # first line comes through, send it again.
    for _ in range(200):
        dealer.send(b"hop -1 ".ljust(size, b"x"))
        if not dealer.poll(5000):
            raise TimeoutError("the first relay did not answer")
        dealer.recv()
        if select.select([fd], [], [], 0.05)[0] and printed.any_starting(b"hop -1 "):
            break
    else:
        raise TimeoutError("no line came through the same hops")
    poller = zmq.Poller()
    poller.register(dealer, zmq.POLLIN)
    poller.register(fd, zmq.POLLIN)
    took: list[float] = []
    for i in range(count + 50):  # the first 50 warm up the relays and the broker
        start = time.perf_counter()
        dealer.send(f"hop {i} ".encode().ljust(size, b"x"))
        prefix = f"hop {i} ".encode()
        replied = seen = False
        while not (replied and seen):
            ready = dict(poller.poll(5000))
            if not ready:
                raise TimeoutError(f"hop {i} did not come through")
            if dealer in ready:
                dealer.recv()
                replied = True
            if fd in ready and printed.any_starting(prefix):
                seen = True
        if i >= 50:
            took.append(time.perf_counter() - start)
    return took


def cold_start(argv: list[str], runs: int) -> list[float]:
    timed_run(argv)  # page cache
    return [timed_run(argv) for _ in range(runs)]


def crypto_costs(count: int) -> tuple[float, float]:
    """Seconds per seal and per open of one mqchat envelope (the default cipher, Ed25519)."""
    keys = RoomKeys(os.urandom(32), os.urandom(32))
    ident = SigningIdentity.generate(os.urandom)
    payloads = []
    start = time.perf_counter()
    for i in range(count):
        payloads.append(
            envelope.seal(
                keys, ident, name="alice", text=TEXT, seq=i + 1, timestamp_ms=0, random=os.urandom
            )[1]
        )
    sealed = (time.perf_counter() - start) / count
    start = time.perf_counter()
    for p in payloads:
        envelope.open_payload(p, keys)
    opened = (time.perf_counter() - start) / count
    return sealed, opened


def run(bench: Bench) -> list[Row]:
    n_lat = 300 if bench.quick else 1000
    n_flood = 2000 if bench.quick else 10000
    runs = 7 if bench.quick else 11
    b = bench.baselines

    log("baseline: paho one hop")
    one = paho_one_hop(bench, n_lat)
    b["paho_one_hop_p50"] = percentile(one, 50)
    b["paho_one_hop_p99"] = percentile(one, 99)
    log("baseline: paho end to end (two processes)")
    e2e = paho_end_to_end(bench, n_lat)
    b["paho_e2e_p50"] = percentile(e2e, 50)
    b["paho_e2e_p99"] = percentile(e2e, 99)
    log("baseline: paho QoS 1 throughput (two processes)")
    rate, used = max((paho_throughput(bench, n_flood) for _ in range(2)), key=lambda r: r[0])
    b["paho_throughput"] = rate
    bench.paho_cpu = per_message_us(used, n_flood, ["publisher", "mosquitto", "subscriber"])
    log("baseline: paho QoS 1 packing lines into batches (the ceiling)")
    b["paho_batch_throughput"] = max(paho_batch_throughput(bench, n_flood * 5) for _ in range(2))
    log("baseline: zmq ipc REQ/REP")
    rr = zmq_req_rep(n_lat)
    b["zmq_rr_p50"] = percentile(rr, 50)
    log("baseline: the same hops as an idle message, doing no work")
    hops = same_hops(bench, n_lat)
    b["same_hops_p50"] = percentile(hops, 50)
    b["same_hops_p99"] = percentile(hops, 99)
    log("baseline: python cold start")
    zmq_runs: list[float] = []
    pass_runs: list[float] = []
    for _ in range(runs):  # interleaved, so drift on a busy machine hits both alike
        zmq_runs += cold_start([PYTHON, "-c", "import zmq"], 1)
        pass_runs += cold_start([PYTHON, "-c", "pass"], 1)
    b["import_zmq"] = median(zmq_runs)
    b["python_pass"] = median(pass_runs)
    seal_s, open_s = crypto_costs(300 if bench.quick else 1000)
    b["seal"], b["open"] = seal_s, open_s

    return [
        Row(
            "baseline: paho QoS 1 one hop publish→PUBACK p50",
            ms(b["paho_one_hop_p50"]),
            value=b["paho_one_hop_p50"],
            show=ms,
        ),
        Row(
            "baseline: paho QoS 1 pub→sub, two processes p50 / p99",
            f"{ms(b['paho_e2e_p50'])} / {ms(b['paho_e2e_p99'])}",
        ),
        Row(
            "baseline: paho QoS 1 throughput, two processes, one PUBLISH a message",
            f"{b['paho_throughput']:,.0f} msg/s",
            value=b["paho_throughput"],
            show=lambda v: f"{v:,.0f} msg/s",
        ),
        Row(
            f"baseline: paho QoS 1 packing {BATCH_LINES} lines a PUBLISH (ceiling)",
            f"{b['paho_batch_throughput']:,.0f} lines/s",
            value=b["paho_batch_throughput"],
            show=lambda v: f"{v:,.0f} lines/s",
        ),
        Row("baseline: … CPU per message by process (paho QoS 1 flood)", bench.paho_cpu),
        Row("baseline: ZeroMQ ipc REQ/REP round trip p50", ms(b["zmq_rr_p50"])),
        Row(
            "baseline: the same hops as an idle message, doing no work, to a printed line"
            " p50 / p99",
            f"{ms(b['same_hops_p50'])} / {ms(b['same_hops_p99'])}",
            value=b["same_hops_p50"],
            show=ms,
        ),
        Row(
            "baseline: `python -c 'import zmq'` (median)",
            ms(b["import_zmq"]),
            f"`python -c pass` {ms(b['python_pass'])}",
        ),
        Row(
            f"baseline: envelope seal / open ({envelope.DEFAULT_CIPHER} + Ed25519, 90-char text)",
            f"{seal_s * 1e6:.0f} µs / {open_s * 1e6:.0f} µs",
        ),
    ]
