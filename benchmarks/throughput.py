"""Figure 2: sustained room-to-room throughput, driven and read as a user does.

N lines are streamed into the real ``chatctl send ROOM`` (stdin from a file) on
alice; a real ``chatctl tail ROOM`` on bob prints them into a pipe, read by a peer
process (benchmarks/peers.py, role ``tail``). The clock runs from spawning chatctl
send until the tail has printed the last line (issue 24). Every message is signed
by alice and verified by bob. A line the tail never printed, or printed twice, is
reported, never hidden.

Compared with raw paho QoS 1 between two processes, one PUBLISH a message of the
same size (the baseline), and with the ceiling: raw paho packing the same lines
into PUBLISHes as mqchat packs its batches.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from baselines import TEXT
from common import (
    Bench,
    CpuMeter,
    Peer,
    Row,
    broker_pid,
    chatctl,
    daemon_pid,
    log,
    per_message_us,
    ratio,
    shared_room,
)

PROCESSES = ["chatctl", "alice", "mosquitto", "bob", "tail"]
TAG = "thr"


def run(bench: Bench) -> list[Row]:
    count = 2000 if bench.quick else 20000
    log(f"figure: throughput, {count} lines into `chatctl send`, to a printing `chatctl tail`")
    room, events, ctl, ctx = shared_room(bench, "thr")
    events.close()
    tail = Peer("tail", chatctl(), room, TAG, str(count), "10", env=bench.bob.env)
    meter = CpuMeter(
        {
            "alice": daemon_pid(bench.alice),
            "mosquitto": broker_pid(bench),
            "bob": daemon_pid(bench.bob),
        },
        child="chatctl",
        this="bench",
    )
    try:
        with tempfile.NamedTemporaryFile("w", prefix="mqlines-", dir="/tmp", suffix=".txt") as f:
            f.write("".join(f"{TAG} {i} {TEXT}\n" for i in range(count)))
            f.flush()
            with Path(f.name).open("rb") as stdin:
                meter.start()
                start = time.monotonic()
                proc = subprocess.Popen(
                    [chatctl(), "send", room],
                    stdin=stdin,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=bench.alice.env,
                )
            _, err = proc.communicate(timeout=180)
            sent_s = time.monotonic() - start
            if proc.returncode != 0:
                raise RuntimeError(f"chatctl send failed: {err.decode()[-500:]}")
            seen = tail.read_result()  # the peer and its tail are reaped after the meter
            used = meter.stop()
    finally:
        tail.stop()
        ctl.close()
        ctx.term()
    used.pop("bench")
    used["tail"] = float(seen["tail_cpu_s"])
    arrivals = [float(t) for t in seen["arrivals"].values()]
    if seen["missing"] or seen["twice"]:
        bench.note(
            f"throughput: the tail missed {seen['missing']} lines (first {seen['first_missing']})"
            f" and printed {seen['twice']} twice"
        )
    if seen["stderr_lines"]:
        bench.note(f"throughput: the tail said {seen['stderr']}")
    took = max(arrivals) - start if arrivals else float("inf")
    rate = len(arrivals) / took
    base = bench.baselines["paho_throughput"]
    ceiling = bench.baselines["paho_batch_throughput"]
    cpu_all = sum(used.values()) / count
    bench.baselines["mqchat_throughput"] = rate
    return [
        Row(
            f"throughput room→room, {count:,} lines `chatctl send` → printing `chatctl tail`"
            " / paho QoS 1",
            ratio(rate, base),
            f"paho QoS 1, 2 processes {base:,.0f} msg/s",
            f"{rate:,.0f} msg/s",
            "≥ 2.0x baseline (issue 24)",
            rate >= 2 * base,
            value=rate / base,
            show=lambda v: f"{v:.2f}x",
            goal=lambda v: v >= 2.0,
        ),
        Row(
            "… the same in lines a second",
            f"{rate:,.0f} msg/s",
            f"ceiling: paho packing lines into batches {ceiling:,.0f} lines/s",
            ratio(rate, ceiling),
            value=rate,
            show=lambda v: f"{v:,.0f} msg/s",
        ),
        Row(
            "… lines missing / printed twice by the tail",
            f"{seen['missing']} / {seen['twice']}",
            "",
            "",
            "0 / 0",
            not seen["missing"] and not seen["twice"],
            value=float(seen["missing"] + seen["twice"]),
            show=lambda v: f"{v:.0f}",
            goal=lambda v: v == 0,
        ),
        Row(
            "… CPU per message, all processes incl. the printing tail",
            f"{cpu_all * 1e6:,.0f} µs",
            f"paho: {bench.paho_cpu}",
            "",
            "≤ 60 µs",
            cpu_all <= 60e-6,
            value=cpu_all,
            show=lambda v: f"{v * 1e6:,.0f} µs",
            goal=lambda v: v <= 60e-6,
        ),
        Row(
            "… CPU per message by process (µs)",
            per_message_us(used, count, PROCESSES),
        ),
        Row(
            "… of which `chatctl send` had all replies (alice accepted and stored)",
            f"{sent_s:.2f} s ({count / sent_s:,.0f} msg/s)",
        ),
    ]
