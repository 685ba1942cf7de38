"""Figure 1: send → tail latency through two daemons.

A DEALER sends JSON-RPC ``send`` to alice's ctl.sock; a subscription on bob's
events.sock waits for the message event. One message at a time (lockstep), so each number
is one message's trip with nothing queued ahead of it:
DEALER → alice (seal, store) → mosquitto → bob (open, verify, store) → events.sock.
"""

from __future__ import annotations

import time

import zmq

from baselines import TEXT
from common import Bench, Row, log, ms, percentile, shared_room

STALL_S = 0.040


def run(bench: Bench) -> list[Row]:
    count = 200 if bench.quick else 1000
    log(f"figure: send → tail latency, {count} messages in lockstep")
    room, events, ctl, ctx = shared_room(bench, "lat")
    to_tail: list[float] = []
    to_reply: list[float] = []
    poller = zmq.Poller()
    poller.register(ctl.sock, zmq.POLLIN)
    poller.register(events.sock, zmq.POLLIN)
    try:
        for i in range(count):
            text = f"{i} {TEXT}"
            start = time.perf_counter()
            ctl.submit("send", {"room": room, "text": text})
            replied = arrived = False
            deadline = start + 10
            while not (replied and arrived):
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"message {i} did not arrive")
                for sock, _ in poller.poll(1000):
                    if sock is ctl.sock:
                        ctl.receive()
                        to_reply.append(time.perf_counter() - start)
                        replied = True
                    else:
                        for event in events.read_ready():
                            if event.get("text", "").startswith(f"{i} "):
                                to_tail.append(time.perf_counter() - start)
                                arrived = True
    finally:
        events.close()
        ctl.close()
        ctx.term()

    b = bench.baselines
    p50, p99, worst = percentile(to_tail, 50), percentile(to_tail, 99), max(to_tail)
    stalls = sum(1 for x in to_tail if x > STALL_S)
    bench.baselines["send_tail_p50"] = p50
    limit = b["paho_one_hop_p50"] + 0.0005  # issue 14's targets
    return [
        Row(
            "send→tail via 2 daemons: p50",
            ms(p50),
            f"paho one hop p50 {ms(b['paho_one_hop_p50'])}",
            f"{p50 / b['paho_one_hop_p50']:.1f}x",
            f"≤ baseline + 0.5 ms = {ms(limit)}",
            p50 <= limit,
        ),
        Row(
            "send→tail via 2 daemons: p99 / max",
            f"{ms(p99)} / {ms(worst)}",
            f"paho pub→sub p99 {ms(b['paho_e2e_p99'])}",
            f"{p99 / b['paho_e2e_p99']:.1f}x",
            "p99 ≤ 5 ms",
            p99 <= 0.005,
        ),
        Row(
            f"send→tail via 2 daemons: messages over 40 ms (of {count})",
            str(stalls),
            "",
            "",
            "0",
            stalls == 0,
        ),
        Row(
            "send RPC reply from alice (stored + handed to paho) p50 / p99",
            f"{ms(percentile(to_reply, 50))} / {ms(percentile(to_reply, 99))}",
            f"zmq REQ/REP p50 {ms(b['zmq_rr_p50'])}",
            f"{percentile(to_reply, 50) / b['zmq_rr_p50']:.1f}x",
        ),
    ]
