"""Figure 1: send → tail latency through two daemons, to a line a real tail prints.

A DEALER sends JSON-RPC ``send`` to alice's ctl.sock; a real ``chatctl tail`` on
bob prints the message, and the clock stops when its line comes out of the tail's
stdout pipe (issue 24). One message at a time (lockstep), so each number is one
message's trip with nothing queued ahead of it:
DEALER → alice (seal, store) → mosquitto → bob (open, verify, store) → events.sock
→ chatctl tail (render, write, flush) → pipe.

The old clock, a ZeroMQ SUB in this process on the same room, stamps the event
as the benchmark did before (its figure is printed too, for comparison with older
runs). Each clock has a pass of its own, the tail's first, then the SUB's with
the tail stopped: a user's tail is not read by a benchmark SUB as well, and
bfdca8d's clock was measured alone too. Until 2026-12-08 both ran in one pass,
and the SUB's decoding took the CPU the tail needed at the same moment.

The CPU alice, bob and the tail used during the tail's pass is printed per
message: what a message that comes alone costs each process (issue 24).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import zmq

from baselines import TEXT
from common import (
    Bench,
    Ctl,
    Events,
    Row,
    TailReader,
    cpu_seconds,
    daemon_pid,
    log,
    ms,
    percentile,
    shared_room,
)

STALL_S = 0.040
TAG = "lat"


def _ms(x: float) -> str:
    return ms(x)


def _lockstep(
    ctl: Ctl,
    watched: Any,
    arrived: Callable[[int], bool],
    room: str,
    first: int,
    count: int,
    to_reply: list[float],
) -> list[float]:
    """Send ``count`` messages one at a time; the time each took to ``arrived``."""
    took: list[float] = []
    poller = zmq.Poller()
    poller.register(ctl.sock, zmq.POLLIN)
    poller.register(watched, zmq.POLLIN)
    for i in range(first, first + count):
        start = time.perf_counter()
        ctl.submit("send", {"room": room, "text": f"{TAG} {i} {TEXT}"})
        replied = seen = False
        deadline = start + 10
        while not (replied and seen):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"message {i} did not arrive")
            for sock, _ in poller.poll(1000):
                if sock is ctl.sock:
                    ctl.receive()
                    to_reply.append(time.perf_counter() - start)
                    replied = True
                elif not seen and arrived(i):
                    took.append(time.perf_counter() - start)
                    seen = True
    return took


def _tail_pass(
    bench: Bench, ctl: Ctl, room: str, count: int, to_reply: list[float]
) -> tuple[list[float], str, TailReader, dict[str, float]]:
    """The clock that counts: a real ``chatctl tail`` alone, read from its stdout;
    and the CPU seconds each daemon and the tail used meanwhile."""
    tail = TailReader(bench.bob, room, TAG)
    pids = {
        "alice": daemon_pid(bench.alice),
        "bob": daemon_pid(bench.bob),
        "tail": tail.proc.pid,
    }
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    try:
        took = _lockstep(ctl, tail.fd, lambda i: i in tail.read_ready(), room, 0, count, to_reply)
        used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    finally:
        notices = tail.stop()
    return took, notices, tail, used


def run(bench: Bench) -> list[Row]:
    count = 200 if bench.quick else 1000
    log(f"figure: send → tail latency, {count} messages in lockstep, to a printing chatctl tail")
    room, events, ctl, ctx = shared_room(bench, "lat")
    events.close()  # each clock has a pass to itself: one observer does not load the other
    to_reply: list[float] = []
    try:
        to_tail, notices, tail, used = _tail_pass(bench, ctl, room, count, to_reply)
        events = Events(ctx, bench.bob, room)
        try:

            def subbed(i: int) -> bool:
                prefix = f"{TAG} {i} "
                return any(e.get("text", "").startswith(prefix) for e in events.read_ready())

            to_sub = _lockstep(ctl, events.sock, subbed, room, count, count, to_reply)
        finally:
            events.close()
    finally:
        ctl.close()
        ctx.term()
    if tail.twice or tail.other:
        bench.note(f"latency: the tail printed {tail.twice} lines twice, {tail.other} others")
    if notices.strip():
        bench.note(f"latency: the tail said {notices.strip()[-300:]!r}")

    b = bench.baselines
    p50, p99, worst = percentile(to_tail, 50), percentile(to_tail, 99), max(to_tail)
    s50, s99 = percentile(to_sub, 50), percentile(to_sub, 99)
    stalls = sum(1 for x in to_tail if x > STALL_S)
    hop = b["paho_one_hop_p50"]
    bench.baselines["send_tail_p50"] = p50
    limit = hop + 0.001  # issue 24's targets
    return [
        Row(
            "idle send→tail (printed line): p50 minus one paho hop",
            ms(p50 - hop),
            f"p50 {ms(p50)}; paho one hop p50 {ms(hop)}",
            f"{p50 / hop:.1f}x",
            "≤ 1.0 ms (p50 ≤ one paho hop + 1 ms)",
            p50 <= limit,
            value=p50 - hop,
            show=_ms,
            goal=lambda v: v <= 0.001,
        ),
        Row(
            "idle send→tail (printed line): p99",
            ms(p99),
            f"paho pub→sub p99 {ms(b['paho_e2e_p99'])}",
            f"{p99 / b['paho_e2e_p99']:.1f}x",
            "≤ 3 ms",
            p99 <= 0.003,
            value=p99,
            show=_ms,
            goal=lambda v: v <= 0.003,
        ),
        Row(
            "idle send→tail: p50 minus the same hops doing no work (chatd's and the tail's"
            " work on the way)",
            ms(p50 - b["same_hops_p50"]),
            f"the same hops p50 {ms(b['same_hops_p50'])}; the target leaves the work"
            f" {ms(limit - b['same_hops_p50'])}",
            value=p50 - b["same_hops_p50"],
            show=_ms,
        ),
        Row(
            "idle send→tail (printed line): max",
            ms(worst),
            value=worst,
            show=_ms,
        ),
        Row(
            "idle send→event at a SUB (the old clock): p50",
            ms(s50),
            value=s50,
            show=_ms,
        ),
        Row(
            "idle send→event at a SUB (the old clock): p99",
            ms(s99),
            value=s99,
            show=_ms,
        ),
        Row(
            f"idle send→tail: lines over 40 ms (of {count})",
            str(stalls),
            "",
            "",
            "0",
            stalls == 0,
            value=float(stalls),
            show=lambda v: f"{v:.0f}",
            goal=lambda v: v == 0,
        ),
        Row(
            "idle: CPU a lone message by process, in lockstep (µs)",
            ", ".join(f"{name} {sec / count * 1e6:,.0f}" for name, sec in used.items()),
        ),
        Row(
            "send RPC reply from alice (stored + handed to paho): p50",
            ms(percentile(to_reply, 50)),
            f"zmq REQ/REP p50 {ms(b['zmq_rr_p50'])}",
            f"{percentile(to_reply, 50) / b['zmq_rr_p50']:.1f}x",
            value=percentile(to_reply, 50),
            show=_ms,
        ),
    ]
