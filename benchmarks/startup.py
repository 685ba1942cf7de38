"""Figure 3: cold start of ``chatctl send ROOM text`` and ``chatctl status``.

Each is run to completion against a running chatd, interleaved round by round
with ``python -c 'import zmq'`` (the baseline is measured in baselines.py; a
second sample here keeps both under the same load). ``-X importtime`` of the
``send`` command then shows where start-up goes.
"""

from __future__ import annotations

import subprocess

from common import PYTHON, Bench, Row, chatctl, log, median, ms, new_room, ratio, timed_run

COLD_START_TARGET = 1.4
"""Issue 24: `chatctl send`, `status` and `--version` within 1.4x `import zmq`."""

TOP_IMPORTS = 8


def importtime_top(argv: list[str], env: dict[str, str]) -> list[tuple[int, str]]:
    """The modules with the largest cumulative import time (µs), outermost first."""
    result = subprocess.run(
        [PYTHON, "-X", "importtime", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip())) // 2
        if depth <= 1:
            rows.append((int(cumulative), name.strip()))
    return sorted(rows, reverse=True)[:TOP_IMPORTS]


def run(bench: Bench) -> list[Row]:
    runs = 7 if bench.quick else 11
    log(f"figure: chatctl cold start, {runs} runs each")
    room = new_room("cold")
    bench.alice.join(room)
    env = bench.alice.env
    send_runs: list[float] = []
    status_runs: list[float] = []
    zmq_runs: list[float] = []
    timed_run([chatctl(), "status"], env)  # page cache
    for i in range(runs):
        zmq_runs.append(timed_run([PYTHON, "-c", "import zmq"]))
        send_runs.append(timed_run([chatctl(), "send", room, f"cold {i}"], env))
        status_runs.append(timed_run([chatctl(), "status"], env))
    base = min(bench.baselines["import_zmq"], median(zmq_runs))
    bench.baselines["chatctl_status"] = median(status_runs)
    top = importtime_top([chatctl(), "send", room, "importtime"], env)
    bench.note(
        "`chatctl send` imports (cumulative, top level): "
        + ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in top)
    )
    rows = []
    version_runs = [timed_run([chatctl(), "--version"], env) for _ in range(runs)]
    for label, values in (
        (f"`chatctl send ROOM text` cold start (median of {runs})", send_runs),
        (f"`chatctl status` cold start (median of {runs})", status_runs),
        (f"`chatctl --version` cold start (median of {runs})", version_runs),
    ):
        m = median(values)
        rows.append(
            Row(
                label,
                ms(m),
                f"`python -c 'import zmq'` {ms(base)}",
                ratio(m, base),
                f"≤ {COLD_START_TARGET}x baseline (issue 24)",
                m <= COLD_START_TARGET * base,
            )
        )
    return rows
