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
CHATD_AWAY = "chatd_away"
CHATD_BACK = "chatd_back"
AWAY_TEXT = (
    "chatd went away (stopped or restarting): waiting for it to come back; "
    "nothing is lost, what arrives meanwhile is shown then"
)
BACK_TEXT = "chatd is back: showing what arrived meanwhile, then new messages"
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0


class EventStream:
    """One subscription on events.sock, kept across chatd restarts."""

    def __init__(
        self,
        runtime_dir: Path,
        timeout: float,
        rooms: list[str] | None,
        *,
        notices: bool,
        say_away: bool = False,
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
        self._say_away = say_away
        """Yield a notice when chatd goes away and when it is back (tail and chat)."""
        self._went_away = False

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
            if self._went_away:
                self._went_away = False
                yield _own_notice(CHATD_AWAY, AWAY_TEXT)
                if line is None:
                    continue
            if line is None:
                yield None
                continue
            event = _decode(line)
            if event.get("type") in ("sync", "error"):
                if self._read_control(event):
                    if self._say_away:
                        yield _own_notice(CHATD_BACK, BACK_TEXT)
                    yield {"type": "dropped", "count": None, "reason": "reconnected"}
            elif event and self._awaiting is None:
                yield event

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
                if self._say_away:
                    self._went_away = True
                    return None
                continue
            self._buffer += data


def _own_notice(kind: str, text: str) -> dict[str, Any]:
    """A notice of chatctl's own (docs/ipc.md): no room, no seq."""
    return {"type": "notice", "room": None, "kind": kind, "text": text}


def _decode(line: bytes) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}
