"""Figure 2: sustained room-to-room throughput, driven as a user drives it.

N lines are streamed into the real ``chatctl send ROOM`` (stdin from a file);
the clock runs from spawning chatctl until the last line's event reaches a
subscription on bob's events.sock. Every message is signed by alice and verified
by bob.
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


def run(bench: Bench) -> list[Row]:
    count = 2000 if bench.quick else 20000
    log(f"figure: throughput, {count} lines into `chatctl send`")
    room, events, ctl, ctx = shared_room(bench, "thr")
    meter = CpuMeter(
        {
            "alice": daemon_pid(bench.alice),
            "mosquitto": broker_pid(bench),
            "bob": daemon_pid(bench.bob),
        },
        child="chatctl",
        this="tail",
    )
    try:
        start_seq = int(ctl.call("history", {"room": room, "limit": 0})["last_seq"])
        with tempfile.NamedTemporaryFile("w", prefix="mqlines-", dir="/tmp", suffix=".txt") as f:
            f.write("".join(f"{i} {TEXT}\n" for i in range(count)))
            f.flush()
            with Path(f.name).open("rb") as stdin:
                meter.start()
                start = time.perf_counter()
                proc = subprocess.Popen(
                    [chatctl(), "send", room],
                    stdin=stdin,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=bench.alice.env,
                )
            got = 0
            sent_s = None
            last_seq = start_seq
            deadline = start + 180
            while got < count:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"only {got} of {count} lines reached bob")
                if sent_s is None and proc.poll() is not None:
                    sent_s = time.perf_counter() - start
                for event in events.read_within(0.2):
                    if event.get("type") == "message":
                        last_seq = max(last_seq, int(event["seq"]))
                    elif event.get("type") == "dropped":
                        # bob dropped events for this slow reader: as chatctl tail
                        # does, learn from the store how far bob has stored.
                        stored = ctl.call("history", {"room": room, "limit": 0})["last_seq"]
                        last_seq = max(last_seq, int(stored))
                        bench.note(f"throughput: bob dropped {event.get('count')} events")
                    got = last_seq - start_seq
            took = time.perf_counter() - start
            _, err = proc.communicate(timeout=60)
            used = meter.stop()
            if sent_s is None:
                sent_s = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(f"chatctl send failed: {err.decode()[-500:]}")
    finally:
        events.close()
        ctl.close()
        ctx.term()
    if last_seq - start_seq != count:
        bench.note(f"throughput: bob's seq moved by {last_seq - start_seq}, expected {count}")
    rate = count / took
    base = bench.baselines["paho_throughput"]
    bench.baselines["mqchat_throughput"] = rate
    return [
        Row(
            f"throughput room→room, {count:,} lines via `chatctl send` stdin (signed+verified)",
            f"{rate:,.0f} msg/s",
            f"paho QoS 1, 2 processes {base:,.0f} msg/s",
            ratio(rate, base),
            "≥ 1.0x baseline (issue 14)",
            rate >= base,
        ),
        Row(
            "… CPU per message by process (µs)",
            per_message_us(used, count, PROCESSES),
            f"paho: {bench.paho_cpu}",
            "",
            "",
            None,
        ),
        Row(
            "… of which `chatctl send` had all replies (alice accepted and stored)",
            f"{sent_s:.2f} s ({count / sent_s:,.0f} msg/s)",
            "",
            "",
            "",
            None,
        ),
    ]
