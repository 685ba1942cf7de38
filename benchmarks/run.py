"""Issue 8's benchmarks: one command, its own mosquitto and chatd processes, one table.

    python benchmarks/run.py [--quick] [--only NAME...] [--repeat N] [--against REV]
                             [--profile DIR]

Starts mosquitto on a free loopback port (set_tcp_nodelay true) and two chatd
(alice sends, bob receives) in short temporary directories, using the real
parts of tests/harness.py. Baselines always run first, in the same run, so
each figure is printed beside what it is compared with. The whole run (baselines,
then each benchmark) is repeated N times (3 by default, 1 with --quick); a figure
is printed as min / median / max over them, its target decided at the median,
and the machine's load average is printed with each repetition. Progress goes to
stderr; the markdown table, then one line per target (met or not) go to stdout.
Targets are reported, never asserted: a missed target is a row with "no", not a
failure.

--against REV also runs an older commit's own fan-out and latency benchmarks
(unpacked and installed in a temporary directory) once per repetition, right
after this commit's, and prints its rows as "REV: figure" (issue 23: the old
figures beside the new, in one run).

--profile DIR records alice and bob with py-spy (if installed) during each
benchmark, as collapsed stacks in DIR/<name>-<daemon>.txt.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import baselines  # noqa: E402 -- needs the path above
import fanout  # noqa: E402
import join  # noqa: E402
import latency  # noqa: E402
import machine  # noqa: E402
import scale  # noqa: E402
import startup  # noqa: E402
import storage  # noqa: E402
import throughput  # noqa: E402
from against import Against  # noqa: E402
from common import Bench, Row, daemon_pid, log  # noqa: E402
from harness import Broker, Daemon  # noqa: E402

BENCHMARKS: dict[str, Callable[[Bench], list[Row]]] = {
    "latency": latency.run,
    "throughput": throughput.run,
    "startup": startup.run,
    "join": join.run,
    "fanout": fanout.run,
    "scale": scale.run,
    "storage": storage.run,
}
PYSPY_RECORD = ("record", "--format", "raw", "--nonblocking", "--rate", "250")


def combine(reps: list[list[Row]]) -> list[Row]:
    """One row per figure over the repetitions: min / median / max where a row has a
    value (target decided at the median), else each repetition's figure."""
    by_figure: dict[str, list[Row]] = {}
    for rows in reps:
        for r in rows:
            by_figure.setdefault(r.figure, []).append(r)
    out = []
    for figure, rows in by_figure.items():
        if len(rows) == 1:
            out.append(rows[0])
            continue
        show = rows[0].show
        if show is not None and all(r.value is not None for r in rows):
            ordered = sorted(rows, key=lambda r: float(r.value or 0.0))
            mid = ordered[(len(ordered) - 1) // 2]  # the median row (lower, if even)
            values = [float(r.value or 0.0) for r in ordered]
            med = statistics.median(values)
            goal = rows[0].goal
            out.append(
                Row(
                    figure,
                    f"{show(values[0])} / **{show(med)}** / {show(values[-1])}",
                    mid.baseline,
                    mid.ratio,
                    mid.target,
                    goal(med) if goal is not None else mid.met,
                    value=med,
                )
            )
        else:
            mets = [r.met for r in rows if r.met is not None]
            out.append(
                Row(
                    figure,
                    " · ".join(r.measured for r in rows),
                    rows[0].baseline,
                    rows[0].ratio,
                    rows[0].target,
                    None if not mets else sum(mets) * 2 > len(mets),
                )
            )
    return out


def targets(rows: list[Row]) -> str:
    """One line a target: met or not (at the median), and what was measured."""
    lines = ["Targets:"]
    for r in rows:
        if r.met is None or not r.target:
            continue
        lines.append(f"- {'met' if r.met else 'NOT MET'}: {r.figure}: {r.measured} ({r.target})")
    return "\n".join(lines)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def table(rows: list[Row]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = [
        "| figure | measured | baseline | ratio | target | met? |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        out.append(
            "| "
            + " | ".join(cell(x) for x in (r.figure, r.measured, r.baseline, r.ratio, r.target))
            + f" | {met} |"
        )
    return "\n".join(out)


def pyspy() -> str | None:
    return shutil.which("py-spy") or (
        "/tmp/pyspy/bin/py-spy" if Path("/tmp/pyspy/bin/py-spy").exists() else None
    )


class Profiler:
    """py-spy record on each daemon for one benchmark; stopped by PID with SIGINT."""

    def __init__(self, out_dir: Path | None, daemons: list[Daemon]) -> None:
        self.out_dir = out_dir
        self.daemons = daemons
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str) -> None:
        exe = pyspy()
        if self.out_dir is None or exe is None:
            return
        for d in self.daemons:
            out = self.out_dir / f"{name}-{d.name}.txt"
            self.procs.append(
                subprocess.Popen(
                    [exe, *PYSPY_RECORD, "-o", str(out), "-p", str(daemon_pid(d))],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(0.5)  # py-spy attaches asynchronously; a start-up grace, not a sync

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


def bytecode_cache() -> str:
    """Let every process here cache bytecode, as an installed chatctl would.

    With PYTHONDONTWRITEBYTECODE set and no __pycache__ in src/, each chatctl
    would compile mqchat from source on every start. The cache goes to a
    directory of ours (PYTHONPYCACHEPREFIX), never into the source tree.
    """
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return ""
    prefix = Path(tempfile.gettempdir()) / f"mqbench-pyc-{os.getuid()}"
    os.environ.pop("PYTHONDONTWRITEBYTECODE")
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)
    subprocess.run(
        [sys.executable, "-c", "import mqchat.client.cli, mqchat.client.sending, zmq"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return f"PYTHONDONTWRITEBYTECODE was set: bytecode cached under {prefix} instead"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer messages and runs (~2 min)")
    p.add_argument(
        "--only",
        nargs="+",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only these: {', '.join(BENCHMARKS)} (baselines always run)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="repetitions of the whole run (default 3, 1 with --quick)",
    )
    p.add_argument(
        "--against",
        metavar="REV",
        help="also run this older commit's fan-out and latency benchmarks, each repetition",
    )
    p.add_argument("--profile", metavar="DIR", type=Path, help="py-spy the daemons into DIR")
    args = p.parse_args(argv)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    chosen = args.only or list(BENCHMARKS)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    pycache_note = bytecode_cache()
    against = Against(args.against) if args.against else None
    if against is not None:
        against.prepare()
    broker = Broker().start()
    alice = Daemon(broker, "alice")
    bob = Daemon(broker, "bob")
    bench = Bench(broker, alice, bob, args.quick)
    reps: list[list[Row]] = []
    loads: list[str] = []
    failed = False
    try:
        alice.start()
        bob.start()
        profiler = Profiler(args.profile, [alice, bob])
        for rep in range(repeat):
            loads.append(f"repetition {rep + 1}: {load()} at its start")
            log(f"repetition {rep + 1} of {repeat}: {load()}")
            bench.baselines.clear()
            rows = baselines.run(bench)
            for r in rows:
                log(f"  row: {r.figure}: {r.measured} {r.baseline}")
            for name in chosen:
                t0 = time.perf_counter()
                profiler.start(f"{name}-{rep + 1}")
                try:
                    new = BENCHMARKS[name](bench)
                    rows += new
                    for r in new:
                        log(f"  row: {r.figure}: {r.measured} ({r.baseline}) {r.target} {r.met}")
                except Exception as exc:  # one broken benchmark must not hide the others
                    failed = True
                    traceback.print_exc()
                    rows.append(Row(f"{name}: ERROR", f"{type(exc).__name__}: {exc}"[:120]))
                finally:
                    profiler.stop()
                log(f"  ({name} took {time.perf_counter() - t0:.0f} s)")
            if against is not None:
                t0 = time.perf_counter()
                old = against.run(args.quick)
                rows += old
                for r in old:
                    log(f"  row: {r.figure}: {r.measured}")
                log(f"  ({against.label} took {time.perf_counter() - t0:.0f} s)")
            reps.append(rows)
        loads.append(f"at the end: {load()}")
    finally:
        for d in bench.extra_daemons:
            d.cleanup()
        bob.cleanup()
        alice.cleanup()
        broker.cleanup()
        if against is not None:
            against.cleanup()

    rows = combine(reps)
    print(table(rows))
    print()
    print(targets(rows))
    print()
    print(machine.describe() + f"; interpreter {sys.executable}")
    print(
        f"run: {'--quick' if args.quick else 'full'}, {len(reps)} repetition(s)"
        f"{' (min / median / max)' if len(reps) > 1 else ''}, "
        f"{time.perf_counter() - started:.0f} s"
    )
    for line in loads:
        print(f"- {line}")
    if pycache_note:
        print(f"- {pycache_note}")
    for note in bench.notes:
        print(f"- {note}")
    if args.profile:
        print(f"- py-spy profiles in {args.profile}" if pyspy() else "- py-spy not found")
    return 1 if failed else 0


def _stop_on_sigterm(signum: int, _frame: object) -> None:
    # Turn SIGTERM (e.g. from `timeout`) into an exception, so that the finally
    # blocks stop mosquitto and every chatd by PID.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    os.umask(0o077)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    sys.exit(main())
