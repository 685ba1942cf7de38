"""The memory watchdog on ctl.sock (daemon/ctl_guard.py): how often it samples."""

from __future__ import annotations

import mmap
import time
from pathlib import Path

import zmq

from mqchat.daemon.ctl_guard import CHECK_INTERVAL_S, FAST_CHECK_INTERVAL_S, JUMP_MIB, CtlGuard
from mqchat.daemon.drops import DropCounter


def test_a_fresh_guard_samples_at_the_idle_rate(tmp_path: Path) -> None:
    """Its first check is no jump from nothing: a chatd that just started wakes 50
    times a second, not 500 for its first two seconds (until 2026-12-08 it did)."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    path = tmp_path / "ctl.sock"
    router.bind(f"ipc://{path}")
    guard = CtlGuard(router, path, DropCounter(), lambda: False)
    try:
        now = time.monotonic()
        guard.check(now)
        assert guard.interval(now) == CHECK_INTERVAL_S
        held = mmap.mmap(-1, (JUMP_MIB + 4) * 1024 * 1024)  # fresh pages, not malloc's
        for page in range(0, len(held), mmap.PAGESIZE):
            held[page] = 1  # touched, so resident
        guard.check(now + 0.02)
        assert guard.interval(now + 0.02) == FAST_CHECK_INTERVAL_S
        held.close()
    finally:
        guard.close()
        router.close(linger=0)
        ctx.term()
