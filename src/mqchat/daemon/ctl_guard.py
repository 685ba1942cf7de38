"""A watchdog on chatd's own memory for ctl.sock, the one bound ZeroMQ lacks.

ZMQ_MAXMSGSIZE bounds a frame, not a message: a peer that sends frames with
"more" set and never a last one makes libzmq keep every frame until the
message ends (chatd grew from 43 to 244 MiB in 2.4 s), and the ROUTER never
shows chatd a byte of it. So chatd samples its resident memory every 20 ms, and
every 2 ms for a while after it jumped by 4 MiB (a local peer can send a GB a
second), on the event loop: a thread of its own would
cost the loop a third of its speed in handing the GIL back and forth. When it
stands CTL_BUDGET_MIB above its lowest of the last 10 s (more while a key
derivation holds its 64 MiB), chatd shuts down every connection on ctl.sock,
which makes libzmq drop what they were sending, and hands the freed memory back
to the system. Connections come from ZeroMQ's socket monitor (their
descriptors). A chatctl command connected at that moment may exit 3, and the
next one connects again. Growth that closing does not free (it
was not ctl.sock's) becomes the new baseline, so it closes connections once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import socket
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from mqchat.daemon.drops import DropCounter

CHECK_INTERVAL_S = 0.02
FAST_CHECK_INTERVAL_S = 0.002
"""After a jump of JUMP_MIB between two checks, for FAST_FOR_S: a local peer can send a
GB a second, and the checks must catch it within a few MiB of the budget."""
JUMP_MIB = 4
FAST_FOR_S = 2.0
WINDOW_S = 10
"""Seconds over which the lowest resident memory is the baseline (kept per second)."""
MIB = 1024 * 1024
CTL_BUDGET_MIB = 32
"""Growth over the last 10 s's lowest resident memory that closes ctl.sock's connections."""
KDF_ALLOWANCE_MIB = 96
"""Added while a key derivation runs: Argon2id holds 64 MiB of its own."""
TRIMS_AFTER_CLOSING = 5
"""Checks after closing that hand freed memory back (malloc_trim), as libzmq frees it;
then what chatd still holds becomes the baseline."""
_PAGE = os.sysconf("SC_PAGE_SIZE")
_WATCHED = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED


class _Statm:
    """/proc/self/statm, kept open: a read is one pread, not an open and a close."""

    def __init__(self) -> None:
        self._fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)

    def resident_bytes(self) -> int:
        return int(os.pread(self._fd, 128, 0).split()[1]) * _PAGE

    def close(self) -> None:
        os.close(self._fd)


def _malloc_trim() -> Callable[[], object]:
    """glibc's malloc_trim(0): freed frames go back to the system, not only to malloc."""
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    if trim is None:
        return lambda: None
    return lambda: trim(0)


class CtlGuard:
    def __init__(
        self,
        router: zmq.Socket[Any],
        path: Path,
        drops: DropCounter,
        kdf_busy: Callable[[], bool],
    ) -> None:
        self._router = router
        self._path = str(path)
        self._drops = drops
        self._kdf_busy = kdf_busy
        self._monitor: zmq.Socket[Any] = router.get_monitor_socket(_WATCHED)
        self._connections: set[int] = set()
        self._lows: deque[int] = deque(maxlen=WINDOW_S)  # the lowest of each past second
        self._second = 0
        self._low = 0
        self._trim = _malloc_trim()
        self._trims_left = 0
        self._statm = _Statm()
        self._last_rss = self._statm.resident_bytes()
        """The last check's reading: from the start, so the first check is no jump."""
        self._fast_until = 0.0

    async def run(self) -> None:
        """Watch until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval(loop.time()))  # sampling
            self.check(loop.time())

    def interval(self, now: float) -> float:
        """Seconds until the next check: short for a while after a jump."""
        return FAST_CHECK_INTERVAL_S if now < self._fast_until else CHECK_INTERVAL_S

    def check(self, now: float) -> None:
        self._read_monitor()
        if self._trims_left:
            # libzmq frees a closed connection's unfinished message once its I/O
            # thread has seen the close and the socket has handled the command.
            self._trims_left -= 1
            self._router.getsockopt(zmq.EVENTS)
            self._trim()
            if not self._trims_left:
                # What is still held now was not ctl.sock's (events queued for slow
                # subscribers, say): it is the new baseline, so the same growth does
                # not close the next connections too.
                self._lows.clear()
                self._second = 0
        rss = self._statm.resident_bytes()
        if rss - self._last_rss > JUMP_MIB * MIB:
            self._fast_until = now + FAST_FOR_S
        self._last_rss = rss
        second = int(now)
        if second != self._second:
            if self._second:
                self._lows.append(self._low)
            self._second, self._low = second, rss
        self._low = min(self._low, rss)
        floor = min(self._low, *self._lows) if self._lows else self._low
        budget = (CTL_BUDGET_MIB + (KDF_ALLOWANCE_MIB if self._kdf_busy() else 0)) * MIB
        if rss - floor > budget and self._connections:
            self._close_connections(rss - floor)

    def _read_monitor(self) -> None:
        while self._monitor.poll(0):
            event = parse_monitor_message(self._monitor.recv_multipart())
            fd = int(event["value"])
            if event["event"] == zmq.EVENT_ACCEPTED:
                self._connections.add(fd)
            else:
                self._connections.discard(fd)

    def _close_connections(self, growth: int) -> None:
        self._drops.drop(
            "ctl_connections_closed",
            f"chatd grew {growth // MIB} MiB in {WINDOW_S} s; "
            f"closed {len(self._connections)} connections on ctl.sock",
        )
        for fd in list(self._connections):
            self._connections.discard(fd)
            with contextlib.suppress(OSError):
                # A duplicate of libzmq's descriptor, checked to be a ctl.sock
                # connection (a closed one's number may have been reused).
                conn = socket.socket(fileno=os.dup(fd))
                try:
                    if conn.family == socket.AF_UNIX and conn.getsockname() == self._path:
                        conn.shutdown(socket.SHUT_RDWR)
                finally:
                    conn.close()
        self._trims_left = TRIMS_AFTER_CLOSING

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._router.disable_monitor()
        self._monitor.close(linger=0)
        self._statm.close()
