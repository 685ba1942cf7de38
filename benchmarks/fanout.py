"""Figure 5: fan-out: 50 tails on bob while alice sends 1,000 msg/s.

The 50 subscriptions live in one helper process (benchmarks/peers.py) so that
they do not share this process's GIL with the sender. The sender is paced: a
message is due every 1 ms and sends are pipelined, replies drained as they
come. Drops = messages some subscriber never saw. Two more readers, each in a
process of its own, record when each message arrives: against the send times,
the latency under a 1,000 msg/s stream (CLOCK_MONOTONIC is system-wide):

- a real ``chatctl tail`` whose printed lines are read from its stdout pipe (issue
  24's figure: lines missing or twice are reported);
- a plain SUB, as the benchmark measured before (the old figure, to compare with
  older commits).
"""

from __future__ import annotations

import time

from baselines import TEXT
from common import (
    Bench,
    Peer,
    Row,
    chatctl,
    cpu_seconds,
    daemon_pid,
    log,
    ms,
    percentile,
    shared_room,
)

SUBSCRIBERS = 50
RATE = 1000


def run(bench: Bench) -> list[Row]:
    seconds = 2 if bench.quick else 4
    count = RATE * seconds
    log(f"figure: fan-out, {SUBSCRIBERS} subscribers, {RATE} msg/s for {seconds} s")
    room, events, ctl, ctx = shared_room(bench, "fan")
    events.close()
    path = str(bench.bob.runtime_dir / "events.sock")
    subs = Peer("fanout-subs", path, room, str(SUBSCRIBERS), str(count), "5")
    # A subscription of its own in a process of its own: the latency probe (one of the
    # 50 would also measure the 49 others that share its process).
    probe = Peer("fanout-subs", path, room, "1", str(count), "5")
    tail = Peer("tail", chatctl(), room, "fan", str(count), "5", env=bench.bob.env)
    before = bench.bob.status().get("dropped", {})
    bob_pid = daemon_pid(bench.bob)
    bob_cpu = cpu_seconds(bob_pid)
    sent_at: list[float] = []
    try:
        outstanding = 0
        start = time.perf_counter()
        for i in range(count):
            due = start + i / RATE
            while outstanding and ctl.sock.poll(0):  # collect the replies that came
                ctl.receive()
                outstanding -= 1
            # Wait for the next message's time asleep: the wait is under a millisecond,
            # which poll() cannot time, and a sender that spun for it would take a core
            # from the daemons it measures. No sleep decides correctness here.
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
            sent_at.append(time.monotonic())  # CLOCK_MONOTONIC: the peer's clock too
            ctl.submit("send", {"room": room, "text": f"fan {i} {TEXT}"})
            outstanding += 1
        sent_s = time.perf_counter() - start
        while outstanding:
            ctl.receive(30)
            outstanding -= 1
        accepted_s = time.perf_counter() - start
        result = subs.result(180)
        probed = probe.result(180)
        tailed = tail.result(180)
        bob_cpu = cpu_seconds(bob_pid) - bob_cpu
    finally:
        subs.stop()
        probe.stop()
        tail.stop()
        ctl.close()
        ctx.term()
    counts = result["counts"]
    missing = sum(count - c for c in counts)
    after = bench.bob.status().get("dropped", {})
    daemon_drops = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    if daemon_drops:
        bench.note(f"fan-out: bob counted drops {daemon_drops}")
    delivered = (result["last"] - result["first"]) if result["first"] is not None else 0.0
    lags = [t - sent_at[int(i)] for i, t in probed["arrivals0"].items()]
    p50 = percentile(lags, 50) if lags else float("nan")
    p99 = percentile(lags, 99) if lags else float("nan")
    t_lags = [t - sent_at[int(i)] for i, t in tailed["arrivals"].items()]
    t50 = percentile(t_lags, 50) if t_lags else float("nan")
    t99 = percentile(t_lags, 99) if t_lags else float("nan")
    t_bad = int(tailed["missing"]) + int(tailed["twice"])
    if t_bad:
        bench.note(
            f"fan-out: the tail missed {tailed['missing']} lines "
            f"(first {tailed['first_missing']}) and printed {tailed['twice']} twice"
        )
    if tailed["stderr_lines"]:
        bench.note(f"fan-out: the tail said {tailed['stderr']}")
    return [
        Row(
            f"stream send→tail (printed line), {RATE} msg/s, {SUBSCRIBERS} subscribers: p50",
            ms(t50),
            value=t50,
            show=ms,
        ),
        Row(
            f"stream send→tail (printed line), {RATE} msg/s, {SUBSCRIBERS} subscribers: p99",
            ms(t99),
            "",
            "",
            "≤ 10 ms (issue 24)",
            bool(t_lags) and t99 <= 0.010,
            value=t99,
            show=ms,
            goal=lambda v: v <= 0.010,
        ),
        Row(
            "… lines the tail missed / printed twice",
            f"{tailed['missing']} / {tailed['twice']}",
            "",
            "",
            "0 / 0",
            t_bad == 0,
            value=float(t_bad),
            show=lambda v: f"{v:.0f}",
            goal=lambda v: v == 0,
        ),
        Row(
            f"fan-out: {SUBSCRIBERS} subscribers on bob, {RATE} msg/s x {seconds} s: events missed",
            f"{missing} of {count * SUBSCRIBERS:,}",
            "",
            "",
            "0",
            missing == 0,
            value=float(missing),
            show=lambda v: f"{v:.0f}",
            goal=lambda v: v == 0,
        ),
        Row(
            "… offered rate / accepted by alice / delivered to all 50",
            f"{count / sent_s:,.0f} / {count / accepted_s:,.0f} / "
            f"{count / max(delivered, 1e-9):,.0f} msg/s",
            "",
            "",
            f"{RATE} msg/s sustained",
            count / max(delivered, 1e-9) >= 0.95 * RATE,
            value=count / max(delivered, 1e-9),
            show=lambda v: f"delivered {v:,.0f} msg/s",
            goal=lambda v: v >= 0.95 * RATE,
        ),
        Row(
            "… send→event at a SUB under that stream (the old clock): p50",
            ms(p50),
            value=p50,
            show=ms,
        ),
        Row(
            "… send→event at a SUB under that stream (the old clock): p99",
            ms(p99),
            value=p99,
            show=ms,
        ),
        Row(
            f"… the {SUBSCRIBERS} subscribers' own CPU (one process: their reader and "
            "libzmq's I/O thread), per event each received",
            f"{result['cpu_s'] / max(1, sum(counts)) * 1e6:,.1f} µs "
            f"({result['cpu_s'] / max(delivered, 1e-9) * 1e3:,.0f} ms a second)",
            value=result["cpu_s"] / max(1, sum(counts)),
            show=lambda v: f"{v * 1e6:,.1f} µs",
        ),
        Row(
            f"… bob's CPU per message received (and fanned out to {SUBSCRIBERS})",
            f"{bob_cpu / count * 1e6:,.0f} µs",
            value=bob_cpu / count,
            show=lambda v: f"{v * 1e6:,.0f} µs",
        ),
    ]
