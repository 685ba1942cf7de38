"""``--against REV``: an older commit's own figures, measured in the same run.

Issue 23 asks that the fan-out and latency figures be no worse than those of the
design before (events on a Unix stream socket), printed beside them in one run.
The older commit is unpacked with ``git archive`` into a temporary directory (the
repository itself is not touched), installed into a venv of its own, and its own
``benchmarks/run.py --only NAME...`` is run once per repetition of this run, right
after it, on this machine at the same time of day. Its table rows (baselines left
out) are printed here as "REV: figure", each repetition's value in turn: its
figures are its own clocks, so compare like with like (the old "send→tail"
latency was taken at a JSON-lines reader, today's "the old clock" rows at a SUB).

One change is made to the older code: its fan-out sender waited for each
message's time by polling with a timeout of 0 ms, so it spun and took most of a
core from the daemons it measured. Today's sender sleeps instead; the older one
gets the same few lines, so both commits are driven by the same sender and the
difference is the daemons' (a row says whether the change was made).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Row, log

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NAMES = ("fanout", "latency")
"""What issue 23 compares; an older commit may not have the others."""
SPINNING_SENDER = """\
            while True:
                now = time.perf_counter()
                if now >= due:
                    break
                # Use the wait to collect replies; no sleep decides correctness here.
                if outstanding and ctl.sock.poll(max(0, int((due - now) * 1000))):
                    ctl.receive()
                    outstanding -= 1
                elif not outstanding:
                    time.sleep(min(0.0005, due - now))
"""
SLEEPING_SENDER = """\
            while outstanding and ctl.sock.poll(0):
                ctl.receive()
                outstanding -= 1
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
"""
"""The pacing of benchmarks/fanout.py before and after it stopped spinning."""


class Against:
    """An older commit, unpacked and installed once, run once per repetition."""

    def __init__(self, rev: str) -> None:
        self.rev = rev
        self.label = ""
        self.dir: Path | None = None
        self.same_sender = False

    def prepare(self) -> None:
        found = subprocess.run(
            ["git", "rev-parse", "--verify", "--short", f"{self.rev}^{{commit}}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        if found.returncode != 0:
            raise SystemExit(f"--against: {self.rev!r} is not a commit of {REPO}")
        self.label = found.stdout.strip()
        self.dir = Path(tempfile.mkdtemp(prefix=f"mqbench-{self.label}-"))
        log(f"--against {self.label}: unpacking and installing it in {self.dir}")
        archive = subprocess.Popen(["git", "archive", self.label], cwd=REPO, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(self.dir)], stdin=archive.stdout, check=True)
        if archive.stdout is not None:
            archive.stdout.close()
        if archive.wait() != 0:
            raise SystemExit(f"--against: git archive {self.label} failed")
        self.same_sender = _sleeping_sender(self.dir / "benchmarks" / "fanout.py")
        subprocess.run([sys.executable, "-m", "venv", str(self.dir / ".venv")], check=True)
        subprocess.run(
            [str(self.python), "-m", "pip", "install", "-q", str(self.dir)],
            check=True,
            timeout=600,
        )

    @property
    def python(self) -> Path:
        if self.dir is None:
            raise RuntimeError("prepare() first")
        return self.dir / ".venv" / "bin" / "python"

    def run(self, quick: bool) -> list[Row]:
        """One run of the older commit's own benchmarks; its rows, baselines left out."""
        if self.dir is None:
            raise RuntimeError("prepare() first")
        argv = [str(self.python), str(self.dir / "benchmarks" / "run.py"), "--only", *NAMES]
        result = subprocess.run(
            [*argv, *(["--quick"] if quick else [])],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        rows = [row for line in result.stdout.splitlines() if (row := self._row(line))]
        sender = "sleeps, as today's" if self.same_sender else "unchanged (no spinning wait found)"
        rows.insert(0, Row(f"{self.label}: its fan-out sender", sender))
        if result.returncode != 0 or not rows:
            tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append(Row(f"{self.label}: ERROR", f"exit {result.returncode}: {tail}"[:160]))
        return rows

    def _row(self, line: str) -> Row | None:
        """A row of the older run's markdown table, but its header and baselines."""
        if not line.startswith("| "):
            return None  # not the table, or its |---| rule
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) < 2 or cells[0] == "figure" or cells[0].startswith("baseline:"):
            return None
        return Row(f"{self.label}: {cells[0]}", cells[1].replace("**", ""))

    def cleanup(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def _sleeping_sender(fanout: Path) -> bool:
    """Give the older fan-out benchmark today's sleeping sender; False if it has not the old."""
    if not fanout.exists():
        return False
    text = fanout.read_text()
    if SPINNING_SENDER not in text:
        return False
    fanout.write_text(text.replace(SPINNING_SENDER, SLEEPING_SENDER))
    return True
