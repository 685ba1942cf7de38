"""events.sock: every tail and chat gets the events of its rooms (docs/ipc.md, "Events").

A plain Unix stream socket served by the asyncio loop, carrying one JSON
object a line each way, rather than a ZeroMQ socket: libzmq keeps whatever a
peer sends until a message is complete (a subscription grew to ~55 times its
size in an XPUB's trie; a ROUTER held 180 MB of never-finished multipart frames
under a 64 KiB ZMQ_MAXMSGSIZE) and cannot say how many bytes wait for one
peer, nor close one. Here chatd reads each client's request with its own
bounded buffer and knows, from the transport, exactly what it has queued for
each client (mqchat.daemon.event_clients).

The answer to a subscribe request is a ``sync`` line on the same connection,
after which every event of the new subscription follows; that is what makes a
tail gap-free (DESIGN.md, "Gap-free tail").
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mqchat.daemon.drops import DropCounter
from mqchat.daemon.event_clients import EventClient, EventClients, event_line
from mqchat.daemon.store import StoredMessage
from mqchat.protocol.ipc import message_event
from mqchat.protocol.limits import MAX_TIMESTAMP_MS

LISTEN_BACKLOG = 64


DAY_MS = 86_400_000


def iso_ts(ms: int) -> str:
    """``2026-11-26T21:04:14.123Z``: UTC, to the millisecond. The date is worked out
    once a day (every message's event has one); the time of day is arithmetic.
    A time outside 1970..9999 (stored by a version that did not bound version 2
    texts) is shown at the nearest end rather than failing the whole history."""
    day, of_day = divmod(min(max(ms, 0), MAX_TIMESTAMP_MS), DAY_MS)
    seconds, millis = divmod(of_day, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{_date(day)}T{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


@functools.lru_cache(maxsize=64)
def _date(day: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=day)).strftime("%Y-%m-%d")


def to_event(m: StoredMessage) -> dict[str, Any]:
    return message_event(
        room=m.room,
        seq=m.seq,
        message_id=m.id,
        ts=iso_ts(m.ts_ms),
        sender=m.sender,
        fingerprint=m.fingerprint,
        verified=m.verified,
        own=m.own,
        text=m.text,
        legacy=m.legacy,
    )


class EventPublisher:
    """Binds events.sock at once (before READY); serves it once the loop runs."""

    def __init__(self, path: Path, drops: DropCounter) -> None:
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(str(path))
            self._listener.listen(LISTEN_BACKLOG)
            self._listener.setblocking(False)
        except OSError:
            self._listener.close()
            raise
        self.clients = EventClients(drops)
        self._server: asyncio.Server | None = None
        self._held: list[tuple[str | None, bytes]] | None = None

    async def serve_subscriptions(self) -> None:
        """Accept clients until cancelled."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(
            lambda: EventClient(self.clients), sock=self._listener
        )
        await self._server.serve_forever()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep events back until the block ends; drop them if it fails.

        A batch of requests publishes only what its transaction committed, and
        each client gets the whole batch in one write.
        """
        if self._held is not None:
            yield
            return
        self._held = []
        try:
            yield
            held = self._held
        finally:
            self._held = None
        if held:
            self._deliver(held)

    def publish(self, room: str | None, event: dict[str, Any]) -> None:
        if not len(self.clients):
            return  # nobody listens; held blocks run on the loop, so nobody can start to
        line = event_line(event)
        if self._held is not None:
            self._held.append((room, line))
        else:
            self._deliver([(room, line)])

    def _deliver(self, batch: list[tuple[str | None, bytes]]) -> None:
        if len(batch) == 1:
            room, line = batch[0]
            for client in self.clients.targets(room):
                client.send_events([line])
            return
        lines_for: dict[EventClient, list[bytes]] = {}
        for room, line in batch:
            for client in self.clients.targets(room):
                lines = lines_for.get(client)
                if lines is None:
                    lines_for[client] = [line]
                else:
                    lines.append(line)
        for client, lines in lines_for.items():
            client.send_events(lines)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.clients.close_all()
        with contextlib.suppress(OSError):
            self._listener.close()
