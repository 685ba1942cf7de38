"""One paho client's socket, driven from the asyncio loop (the aiomqtt pattern).

paho runs no thread of its own: the loop calls ``loop_read`` when the socket is
readable, ``loop_write`` when paho holds bytes the kernel did not take, and
``loop_misc`` when a keepalive is due, so every paho callback runs on the loop.

Unlike aiomqtt, no ``on_socket_register_write`` callback is set: without one,
paho writes a packet at once when it is queued outside its callbacks (a publish,
an ack), which saves the loop a pass on every message. What it cannot write at
once (the socket is full, or the packet was queued inside a callback, as the
SUBSCRIBEs after CONNACK are) stays in paho until ``sync`` sees it and asks the
loop for writability. The owner calls ``sync`` after each call into paho.

Nothing here imports paho; the client is anything with paho's four loop methods,
and ``buffered``: whether it holds bytes read ahead from the socket
(daemon/broker_packets.py), which the kernel no longer reports as readable.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Callable
from typing import Protocol

READS_PER_WAKE = 512
"""Packets read at most each time the socket is readable. paho's ``loop_read``
reads one packet on a receiving client (its max_packets counts only messages in
flight), so a stream would take one loop pass a message, behind every other
callback: we read on while the socket has more, up to this, and the inbox stores
them as one batch."""
KEEPALIVE_MARGIN_S = 0.05
"""paho pings once ``now - last >= keepalive``: a timer that fires a hair early
would find nothing due and put the PINGREQ off by a whole keepalive."""


class LoopClient(Protocol):
    """What of paho's ``Client`` an external event loop uses."""

    def loop_read(self, max_packets: int = 1) -> int: ...
    def loop_write(self) -> int: ...
    def loop_misc(self) -> int: ...
    def want_write(self) -> bool: ...
    def buffered(self) -> bool: ...


class Socket(Protocol):
    def fileno(self) -> int: ...


class LoopSocket:
    """Reads, writes and keepalives of one connected paho socket, on ``loop``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client: LoopClient,
        sock: Socket,
        keepalive_s: float,
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._loop = loop
        self._client = client
        self._sock = sock
        self._fd = sock.fileno()
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        self._keepalive_s = keepalive_s
        self._on_error = on_error
        self._writing = False
        self._closed = False
        self._misc: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[None] = loop.create_future()
        """Done once the socket is no longer watched: the attempt is over."""

    def start(self) -> None:
        self._loop.add_reader(self._fd, self._readable)
        self._arm_keepalive()
        self.sync()

    def close(self) -> None:
        """Stop watching the socket (paho is about to close it, or has given it up)."""
        if self._closed:
            return
        self._closed = True
        self.closed.set_result(None)
        self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
        if self._misc is not None:
            self._misc.cancel()

    def is_for(self, sock: object) -> bool:
        return sock is self._sock

    def set_keepalive(self, seconds: float) -> None:
        """The broker's Server Keep Alive (MQTT 5 CONNACK) replaces ours."""
        if seconds != self._keepalive_s:
            self._keepalive_s = seconds
            self._arm_keepalive()

    def sync(self) -> None:
        """Write what paho holds, and watch for writability while some is left."""
        if self._closed:
            return
        if self._client.want_write():
            self._client.loop_write()
            if self._closed:
                return
        want = self._client.want_write()
        if want and not self._writing:
            self._loop.add_writer(self._fd, self._writable)
        elif self._writing and not want:
            self._loop.remove_writer(self._fd)
        self._writing = want

    def _readable(self) -> None:
        try:
            for _ in range(READS_PER_WAKE):
                self._client.loop_read()
                if self._closed:
                    return
                if not self._more_to_read():
                    break
            else:
                self._loop.call_soon(self._readable)  # more: after the others' turn
            self.sync()  # acks and SUBSCRIBEs queued by callbacks
        except Exception as exc:  # a bug: the owner stops chatd
            self._on_error(exc)

    def _more_to_read(self) -> bool:
        # Bytes read ahead, or (TLS) a record that holds more than paho read: the
        # kernel's socket is then no longer readable, but the bytes wait above it.
        if self._client.buffered():
            return True
        pending = getattr(self._sock, "pending", None)
        if pending is not None and pending() > 0:
            return True
        return bool(self._poll.poll(0))

    def _writable(self) -> None:
        try:
            self.sync()
        except Exception as exc:  # a bug: the owner stops chatd
            self._on_error(exc)

    def _keepalive_due(self) -> None:
        # paho sends PINGREQ keepalive seconds after its last one (or the CONNECT),
        # and gives the connection up when nothing came in for as long.
        self._misc = None
        try:
            self._client.loop_misc()
            if not self._closed:
                self._arm_keepalive()
                self.sync()
        except Exception as exc:  # a bug: the owner stops chatd
            self._on_error(exc)

    def _arm_keepalive(self) -> None:
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        if self._keepalive_s > 0 and not self._closed:
            self._misc = self._loop.call_later(
                self._keepalive_s + KEEPALIVE_MARGIN_S, self._keepalive_due
            )
