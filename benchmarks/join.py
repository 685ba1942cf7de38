"""Figure 4: join (the KDF), and whether chatd keeps serving others meanwhile.

``chatctl join`` runs end to end, while a second client on its own DEALER asks
``status`` in lockstep and records how long each answer takes. A join over
IPC alone (no chatctl start-up) is timed as well.
"""

from __future__ import annotations

import threading
import time

from common import (
    Bench,
    Ctl,
    Row,
    chatctl,
    log,
    median,
    ms,
    new_room,
    percentile,
    timed_run,
    zmq_context,
)
from harness import PASSPHRASE

STATUS_LIMIT_S = 0.050
""""Keeps being served": a status answer during a join may take at most this long."""


def _status_during(ctl: Ctl, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        ctl.call("status")
        out.append(time.perf_counter() - start)
        time.sleep(0.002)  # a pace for the probe, not a synchronisation


def run(bench: Bench) -> list[Row]:
    runs = 2 if bench.quick else 4
    log(f"figure: join, {runs} runs")
    with zmq_context() as ctx:
        ctl = Ctl(ctx, bench.alice)
        probe = Ctl(ctx, bench.alice)
        idle: list[float] = []
        for _ in range(200):
            start = time.perf_counter()
            probe.call("status")
            idle.append(time.perf_counter() - start)
        rpc = []
        for _ in range(runs):
            start = time.perf_counter()
            ctl.call(
                "join",
                {"room": new_room("jrpc"), "passphrase": PASSPHRASE},
                timeout_s=30,
            )
            rpc.append(time.perf_counter() - start)
        cli: list[float] = []
        during: list[float] = []
        for _ in range(runs):
            stop = threading.Event()
            lat: list[float] = []
            t = threading.Thread(target=_status_during, args=(probe, stop, lat))
            t.start()
            try:
                cli.append(
                    timed_run(
                        [chatctl(), "join", new_room("join")], bench.alice.env, PASSPHRASE + "\n"
                    )
                )
            finally:
                stop.set()
                t.join(30)
            during += lat
        ctl.close()
        probe.close()

    worst = max(during)
    bench.baselines["join_rpc"] = median(rpc)
    stalled = sum(1 for x in during if x > STATUS_LIMIT_S)
    base = bench.baselines.get("chatctl_status", 0.0)
    return [
        Row(
            f"`chatctl join` wall time (median of {runs})",
            ms(median(cli)),
            f"join over IPC only {ms(median(rpc))}",
            "",
            "≤ 500 ms",
            median(cli) <= 0.5,
        ),
        Row(
            "status answer time during a join: p50 / max",
            f"{ms(percentile(during, 50))} / {ms(worst)}",
            f"idle p50 {ms(percentile(idle, 50))}",
            f"{worst / percentile(idle, 50):.0f}x (max)",
            f"max ≤ {ms(STATUS_LIMIT_S)}",
            worst <= STATUS_LIMIT_S,
        ),
        Row(
            "… status answers over 50 ms during joins",
            f"{stalled} of {len(during)}",
            f"`chatctl status` cold {ms(base)}" if base else "",
        ),
    ]
