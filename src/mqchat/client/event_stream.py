"""chatctl's end of events.sock: subscribe, read events, come back after chatd restarts.

events.sock is a Unix stream socket carrying one JSON object a line
(docs/ipc.md, "Events"). The client writes a subscribe request; chatd answers
``{"type": "sync", "id": ...}`` and then writes the events of those rooms. When
chatd goes away (a restart), the stream connects again, subscribes again and,
once chatd confirms, reports ``{"type": "dropped", "count": null, "reason":
"reconnected"}``: whatever happened meanwhile is in the store, and the reader
fills it in from there, as it does when chatd dropped events for a slow reader.
"""

from __future__ import annotations

import itertools
import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mqchat.client.ipc_client import EVENTS_SOCKET, check_runtime_dir, connect_unix
from mqchat.errors import DaemonRefused, DaemonUnavailable, IpcError
from mqchat.protocol.ipc import INTERNAL_ERROR

READ_BYTES = 256 * 1024
MAX_LINE_BYTES = 1024 * 1024
"""chatd's longest event is about 100 KiB (16 KiB of text, escaped); more is an error."""
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0


class EventStream:
    """One subscription on events.sock, kept across chatd restarts."""

    def __init__(
        self, runtime_dir: Path, timeout: float, rooms: list[str] | None, *, notices: bool
    ) -> None:
        self._runtime_dir = runtime_dir
        self._timeout = timeout
        self._request = {"rooms": rooms, "notices": notices}
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._ids = itertools.count(1)
        self._awaiting: int | None = None  # the id of the sync that completes a subscription
        self._retry_at = 0.0
        self._retry_s = RETRY_FIRST_S

    def open(self) -> None:
        """Connect and subscribe; return once chatd confirms (DaemonUnavailable if it does not)."""
        self._sock = self._connect()
        self._subscribe()
        deadline = time.monotonic() + self._timeout
        while self._awaiting is not None:
            left = deadline - time.monotonic()
            line = self._next_line(left) if left > 0 else None
            if line is None:
                raise DaemonUnavailable(
                    f"chatd did not confirm the subscription on {self._path} within "
                    f"{self._timeout:g} s; is it running?"
                )
            self._read_control(_decode(line))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any] | None]:
        """Yield events as they come; yield None after ``timeout`` s of silence."""
        while True:
            line = self._next_line(timeout)
            if line is None:
                yield None
                continue
            event = _decode(line)
            if event.get("type") in ("sync", "error"):
                if self._read_control(event):
                    yield {"type": "dropped", "count": None, "reason": "reconnected"}
            elif event and self._awaiting is None:
                yield event

    def mark_read(self, marks: dict[str, int]) -> None:
        """A ``read`` line: per room, the highest seq shown (docs/ipc.md, "Events")."""
        if self._sock is None or not marks:
            return
        try:
            self._sock.sendall((json.dumps({"read": marks}) + "\n").encode())
        except OSError:
            return  # the reader notices the lost connection and subscribes again

    # ------------------------------------------------------------------ internals
    @property
    def _path(self) -> Path:
        return self._runtime_dir / EVENTS_SOCKET

    def _connect(self) -> socket.socket:
        check_runtime_dir(self._runtime_dir)
        sock = connect_unix(self._path)
        sock.settimeout(self._timeout)  # for sendall; reads wait in select()
        return sock

    def _subscribe(self) -> None:
        if self._sock is None:
            return
        self._awaiting = next(self._ids)
        line = json.dumps({"id": self._awaiting, "subscribe": self._request}) + "\n"
        try:
            self._sock.sendall(line.encode())
        except OSError:
            self._lost()

    def _read_control(self, event: dict[str, Any]) -> bool:
        """Handle a sync or error line; True when it completes a re-subscription."""
        if event.get("type") == "error":
            raise DaemonRefused(f"chatd: {event.get('error', 'the event stream failed')}")
        if event.get("type") != "sync" or event.get("id") != self._awaiting:
            return False
        self._awaiting = None
        return True

    def _lost(self) -> None:
        self.close()
        self._buffer.clear()
        self._retry_at = time.monotonic()
        self._retry_s = RETRY_FIRST_S

    def _reconnect(self) -> bool:
        if time.monotonic() < self._retry_at:
            return False
        try:
            self._sock = self._connect()
        except DaemonUnavailable:
            self._retry_at = time.monotonic() + self._retry_s
            self._retry_s = min(RETRY_MAX_S, self._retry_s * 2)
            return False
        self._subscribe()
        return self._sock is not None

    def _next_line(self, timeout: float | None) -> bytes | None:
        """The next line from chatd, or None after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > MAX_LINE_BYTES:
                raise IpcError(INTERNAL_ERROR, f"chatd sent an event over {MAX_LINE_BYTES} bytes")
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            if self._sock is None and not self._reconnect():
                # chatd is away: try again at the retry time (a back-off, not a synchronisation)
                until = self._retry_at if deadline is None else min(self._retry_at, deadline)
                time.sleep(max(0.0, until - time.monotonic()))
                continue
            if self._sock is None:
                continue
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._sock], [], [], left)[0]:
                continue
            try:
                data = self._sock.recv(READ_BYTES)
            except OSError:
                data = b""
            if not data:
                self._lost()
                continue
            self._buffer += data


def _decode(line: bytes) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}
