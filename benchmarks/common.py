"""What every benchmark shares: result rows, statistics, the running parts, IPC helpers.

The real parts (mosquitto, chatd, chatctl) come from ``tests/harness.py``; this
module only adds what a benchmark needs on top: a DEALER that times requests, a
subscription that waits for one room's events, and a fresh joined room on two daemons.
"""

from __future__ import annotations

import json
import os
import resource
import select
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from harness import PASSPHRASE, Broker, Daemon, command, stop_process, wait_until
from mqchat.protocol.ipc import decode_reply, encode_request
from mqchat.protocol.ipc_events import PACKED_PREFIX, decode_events

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers.py"
PYTHON = sys.executable


@dataclass
class Row:
    """One line of the table. ``met`` is None for figures that have no target.

    A row with a ``value`` (and ``show`` to print one) is combined over repetitions
    as min / median / max, and ``goal`` decides the target at the median; other rows
    print each repetition's ``measured``.
    """

    figure: str
    measured: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None
    value: float | None = None
    show: Callable[[float], str] | None = None
    goal: Callable[[float], bool] | None = None


@dataclass
class Bench:
    """The parts a benchmark runs against, and what it found."""

    broker: Broker
    alice: Daemon
    bob: Daemon
    quick: bool
    baselines: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra_daemons: list[Daemon] = field(default_factory=list)
    paho_cpu: str = ""
    """CPU per message of each process of the paho throughput baseline."""

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", file=sys.stderr, flush=True)


def log(text: str) -> None:
    """Progress goes to stderr so that stdout holds only the table."""
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: list[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def ratio(measured: float, baseline: float) -> str:
    return f"{measured / baseline:.2f}x" if baseline > 0 else "n/a"


# ---------------------------------------------------------------------- processes


def timed_run(
    argv: list[str], env: dict[str, str] | None = None, stdin: str | None = None
) -> float:
    """Wall time of one process from spawn to exit; it must succeed."""
    start = time.perf_counter()
    result = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False
    )
    took = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr[-500:]}")
    return took


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rusage_cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds each process of a benchmark used between ``start`` and ``stop``.

    Running processes are read from /proc by PID; ``child`` is a process this
    one starts and reaps in between (counted from RUSAGE_CHILDREN, so nothing
    else may be reaped meanwhile); ``this`` is this process itself (the
    benchmark's own subscriber, reading events as a tail would).
    """

    def __init__(self, pids: dict[str, int], *, child: str, this: str) -> None:
        self.pids = pids
        self.child = child
        self.this = this
        self._before: dict[str, float] = {}

    def start(self) -> None:
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._before[self.child] = _rusage_cpu(resource.RUSAGE_CHILDREN)
        self._before[self.this] = _rusage_cpu(resource.RUSAGE_SELF)

    def stop(self) -> dict[str, float]:
        used = {name: cpu_seconds(pid) - self._before[name] for name, pid in self.pids.items()}
        used[self.child] = _rusage_cpu(resource.RUSAGE_CHILDREN) - self._before[self.child]
        used[self.this] = _rusage_cpu(resource.RUSAGE_SELF) - self._before[self.this]
        return used


def per_message_us(used: dict[str, float], count: int, order: list[str]) -> str:
    """``chatctl 120, alice 230, ... = 700 µs``: CPU per message, per process and in all."""
    parts = [f"{name} {used[name] / count * 1e6:,.0f}" for name in order]
    return f"{', '.join(parts)} = {sum(used.values()) / count * 1e6:,.0f} µs"


def daemon_pid(d: Daemon) -> int:
    if d.proc is None:
        raise RuntimeError(f"chatd {d.name} is not running")
    return d.proc.pid


def broker_pid(bench: Bench) -> int:
    if bench.broker.proc is None:
        raise RuntimeError("mosquitto is not running")
    return bench.broker.proc.pid


def chatctl() -> str:
    return command("chatctl")


def new_room(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------- IPC


class Ctl:
    """A DEALER on a daemon's ctl.sock: lockstep calls, or pipelined submit/receive."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], d: Daemon) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.connect(f"ipc://{d.runtime_dir / 'ctl.sock'}")
        self._next = 0

    def submit(self, method: str, params: dict[str, Any] | None = None) -> int:
        self._next += 1
        self.sock.send_multipart([b"", encode_request(self._next, method, params or {})])
        return self._next

    def receive(self, timeout_s: float = 20.0) -> Any:
        if not self.sock.poll(int(timeout_s * 1000)):
            raise TimeoutError("chatd did not reply")
        reply = decode_reply(self.sock.recv_multipart()[-1])
        if reply.error_code is not None:
            raise RuntimeError(f"chatd refused: {reply.error_message}")
        return reply.result

    def call(
        self, method: str, params: dict[str, Any] | None = None, timeout_s: float = 20.0
    ) -> Any:
        self.submit(method, params)
        return self.receive(timeout_s)

    def close(self) -> None:
        self.sock.close(linger=0)


class TailReader:
    """A real ``chatctl tail -n 1 ROOM`` on a daemon, its stdout read in this process.

    Subscribed once it has printed its history line (the room's last message), so
    the room must hold one. ``fd`` goes into a zmq.Poller; ``read_ready()`` returns
    the numbers N of the lines it printed whose text is ``TAG N ...``. Lines seen
    twice and lines of other texts are counted, not hidden.
    """

    def __init__(self, d: Daemon, room: str, tag: str) -> None:
        self.proc = subprocess.Popen(
            [chatctl(), "tail", "-n", "1", room],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=d.env,
        )
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self._marker = f"> {tag} ".encode()
        self._partial = b""
        self.seen: set[int] = set()
        self.twice = 0
        self.other = 0
        deadline = time.monotonic() + 30
        while not self._lines():  # its history line: the tail is subscribed
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise TimeoutError("chatctl tail printed nothing")
            select.select([self.fd], [], [], 0.2)

    def _lines(self) -> list[bytes]:
        try:
            chunk = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return []
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        return lines

    def read_ready(self) -> list[int]:
        got = []
        for line in self._lines():
            at = line.find(self._marker)
            if at < 0:
                self.other += 1
                continue
            number = int(line[at + len(self._marker) :].split(b" ", 1)[0])
            if number in self.seen:
                self.twice += 1
            else:
                self.seen.add(number)
                got.append(number)
        return got

    def stop(self) -> str:
        """Stop it; return what it printed on stderr (its notices)."""
        stop_process(self.proc, grace=5)
        err = self.proc.stderr.read() if self.proc.stderr else b""
        return err.decode(errors="replace")


class Events:
    """A SUB to one room on a daemon's events.sock, confirmed by a sync answer (docs/ipc.md).

    ``sock`` is the ZeroMQ socket, for a zmq.Poller; after it reports readable,
    ``read_ready()`` returns every event that came.
    """

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], d: Daemon, room: str) -> None:
        from mqchat.protocol.ipc_events import packed_topic, sync_topic

        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 1_000)  # as chatctl's SUB (client/event_subscriber.py)
        self.sock.setsockopt(zmq.SUBSCRIBE, packed_topic(room))  # as chatctl
        sync = sync_topic(os.urandom(16).hex())
        self.sock.setsockopt(zmq.SUBSCRIBE, sync)
        self.sock.connect(f"ipc://{d.runtime_dir / 'events.sock'}")
        self._pending: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while True:  # what comes before the sync answer is older than the subscription
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                raise TimeoutError("chatd did not confirm the subscription")
            if self.sock.recv_multipart()[0] == sync:
                break
        self.sock.setsockopt(zmq.UNSUBSCRIBE, sync)

    def read_ready(self) -> list[dict[str, Any]]:
        """Every event that has arrived (call when readable)."""
        got: list[dict[str, Any]] = []
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return got
            if len(frames) == 2 and frames[0].startswith(PACKED_PREFIX):
                got.extend(e for e in decode_events(frames[1]) if e is not None)

    def read_within(self, timeout_s: float) -> list[dict[str, Any]]:
        """The events that arrive within ``timeout_s`` (an empty list if none)."""
        if self._pending:
            got, self._pending = self._pending, []
            return got
        if not self.sock.poll(int(timeout_s * 1000)):
            return []
        return self.read_ready()

    def next_message(self, timeout_s: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            while self._pending:
                event = self._pending.pop(0)
                if event.get("type") == "message":
                    return dict(event)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message event in time")
            self._pending = self.read_within(left)

    def close(self) -> None:
        self.sock.close(linger=0)


@contextmanager
def zmq_context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.term()


def join_both(daemons: list[Daemon], room: str) -> None:
    """Join ``room`` on each daemon with the real ``chatctl join``, in parallel."""
    errors: list[BaseException] = []

    def one(d: Daemon) -> None:
        try:
            d.join(room, PASSPHRASE)
        except BaseException as exc:  # reported below, on the main thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(d,)) for d in daemons]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]


def shared_room(bench: Bench, prefix: str) -> tuple[str, Events, Ctl, zmq.Context[Any]]:
    """A fresh room joined by alice and bob, proven to flow alice → bob.

    Returns the room, a SUB on bob's events for it, a DEALER on alice, and the
    context (the caller closes all three).
    """
    room = new_room(prefix)
    join_both([bench.alice, bench.bob], room)
    ctx: zmq.Context[Any] = zmq.Context()
    events = Events(ctx, bench.bob, room)
    ctl = Ctl(ctx, bench.alice)

    # bob's SUBSCRIBE may still be on its way to the broker: send until one arrives.
    def flowing() -> bool:
        ctl.call("send", {"room": room, "text": "warm-up"})
        try:
            events.next_message(0.5)
        except TimeoutError:
            return False
        return True

    wait_until(flowing, f"room {room} to flow alice → bob", timeout=20)
    drain(events)
    return room, events, ctl, ctx


def drain(events: Events, quiet_s: float = 0.3) -> int:
    """Read and discard events until none came for ``quiet_s``."""
    n = 0
    while got := events.read_within(quiet_s):
        n += len(got)
    return n


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    return wait_until(check, what, timeout=timeout)


class Peer:
    """A ``benchmarks/peers.py`` process: started, told what to do on stdin, stopped by PID."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, str(PEERS), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"peer {args[0]} did not start: {line!r} {err[-800:]}")

    def tell(self, line: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def result(self, timeout_s: float = 120) -> dict[str, Any]:
        """Close stdin (the peer's cue to finish, if it waits for one) and read its JSON line."""
        out, err = self.proc.communicate(timeout=timeout_s)
        lines = [x for x in out.splitlines() if x.startswith("{")]
        if not lines:
            raise RuntimeError(f"peer gave no result: {err[-800:]}")
        return dict(json.loads(lines[-1]))

    def read_result(self) -> dict[str, Any]:
        """Its JSON line, read without reaping it: a CpuMeter counting this process's
        children (RUSAGE_CHILDREN) is not to count the peer's CPU."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                return dict(json.loads(line))
        err = self.proc.stderr.read() if self.proc.stderr else ""
        raise RuntimeError(f"peer gave no result: {err[-800:]}")

    def stop(self) -> None:
        stop_process(self.proc, grace=5)
