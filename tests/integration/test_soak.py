"""Issue 22: a short chaos soak in the suite (tests/soak.py; the long one is
`python tests/soak.py --minutes 30`, README "Chaos soak"). A fixed seed, so a
failure here is a reproduction."""

from __future__ import annotations

from pathlib import Path

from soak import soak


def test_a_short_chaos_soak_loses_nothing_and_shows_nothing_twice(tmp_path: Path) -> None:
    problems = soak(seed=22, minutes=0.25, workdir=tmp_path, log=lambda line: None)
    assert problems == []
