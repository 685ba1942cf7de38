"""Talking to chatd: requests over a DEALER socket on ctl.sock, events from events.sock (SUB).

Uses plain (not asyncio) pyzmq, so that ``chatctl send`` starts fast. Nothing
connects before the runtime directory has passed the same privacy check that
chatd makes (mqchat.private_dir): in a directory another user controls, a
socket could be theirs, and a join would hand them its passphrase.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import zmq

from mqchat import paths
from mqchat.errors import (
    DaemonRefused,
    DaemonUnavailable,
    RuntimeDirError,
    UnsafeRuntimeDir,
)
from mqchat.private_dir import check_private_dir
from mqchat.protocol.ipc import Reply, decode_reply, encode_request
from mqchat.zmq_plain import waiting

if TYPE_CHECKING:
    import _socket

    from mqchat.client.event_subscriber import EventSubscriber

CTL_SOCKET: Final = paths.CTL_SOCKET
EVENTS_SOCKET: Final = paths.EVENTS_SOCKET


def start_hint(runtime_dir: Path) -> str:
    from mqchat.client.start_hint import start_hint as hint

    return hint(runtime_dir)


def check_runtime_dir(runtime_dir: Path) -> None:
    """Refuse (exit 3) a runtime directory that is missing, or not private to us."""
    try:
        check_private_dir(runtime_dir)
    except FileNotFoundError:
        raise DaemonUnavailable(
            f"chatd is not running (no runtime directory {runtime_dir}); {start_hint(runtime_dir)}"
        ) from None
    except RuntimeDirError as exc:
        raise UnsafeRuntimeDir(f"{exc.message}: refusing to connect") from None


def check_socket_file(path: Path) -> None:
    """Refuse a socket file that is missing, or not a socket of the user's own."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise DaemonUnavailable(
            f"chatd is not running (no socket at {path}); {start_hint(path.parent)}"
        ) from None
    if st.st_uid != os.getuid():
        raise UnsafeRuntimeDir(
            f"{path} belongs to uid {st.st_uid}, not to you: refusing to connect"
        )
    if not stat.S_ISSOCK(st.st_mode):
        raise UnsafeRuntimeDir(f"{path} is not a socket: refusing to connect")


def connect_unix(path: Path) -> _socket.socket:
    """A connected Unix stream socket, or DaemonUnavailable (missing, stale, unreachable).

    The C module, not ``socket``: this probe is all a command needs of it, and
    ``socket``'s own import (with selectors, array and select) is ~1.7 ms of every
    cold start (issue 24)."""
    import _socket

    check_socket_file(path)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except ConnectionRefusedError:
        sock.close()
        raise DaemonUnavailable(
            f"chatd is not running (stale socket at {path}); {start_hint(path.parent)}"
        ) from None
    except OSError as exc:
        sock.close()
        raise DaemonUnavailable(f"cannot reach chatd at {path}: {exc.strerror}") from None
    return sock


class Client:
    """One connection to chatd. Requests may be pipelined: ``submit`` then ``collect``."""

    def __init__(self, runtime_dir: Path, timeout: float) -> None:
        self.runtime_dir = runtime_dir
        self.timeout = timeout
        check_runtime_dir(runtime_dir)
        ctl = runtime_dir / CTL_SOCKET
        # ZeroMQ connects in the background and waits forever for a missing
        # peer: probe first, so that "not running" is said at once.
        connect_unix(ctl).close()
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._req = self._ctx.socket(zmq.DEALER)
        self._req.setsockopt(zmq.LINGER, 1000)
        self._req.connect(f"ipc://{ctl}")
        self._ids = itertools.count(1)
        self._events: EventSubscriber | None = None
        self._follower: str | None = None
        """Drawn at the first read mark (docs/ipc.md, ``read``)."""

    def close(self) -> None:
        if self._follower is not None:
            # Our read marks no longer hold chatd's retention back (a killed client's
            # lapse after 30 s). Sent, not awaited: the socket's linger delivers it.
            follower, self._follower = self._follower, None
            with contextlib.suppress(zmq.ZMQError):
                self.submit("unfollow", {"follower": follower})
        self._req.close()
        if self._events is not None:
            self._events.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # requests ----------------------------------------------------------
    def submit(self, method: str, params: dict[str, Any] | None = None) -> int:
        req_id = next(self._ids)
        self._req.send_multipart([b"", encode_request(req_id, method, params or {})])
        return req_id

    def unavailable(self) -> DaemonUnavailable:
        return DaemonUnavailable(
            f"chatd did not answer within {self.timeout:g} s on {self.runtime_dir / CTL_SOCKET}; "
            f"is it running? {start_hint(self.runtime_dir)}"
        )

    def receive(self, timeout: float | None = None) -> Reply | None:
        """The next reply, or None if none came within ``timeout`` (default: the client's)."""
        wait = self.timeout if timeout is None else timeout
        if wait == 0:  # ZMQ_EVENTS: what poll(0) says, without building a Poller
            if not waiting(self._req):
                return None
        elif not self._req.poll(int(wait * 1000)):
            return None
        frames = self._req.recv_multipart()
        return decode_reply(frames[-1])

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        req_id = self.submit(method, params)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self.receive(max(0.0, deadline - time.monotonic()))
            if reply is None:
                raise self.unavailable()
            if reply.id == req_id:
                return result_of(reply)

    # events -------------------------------------------------------------
    def subscribe(
        self, rooms: list[str] | None, *, notices: bool = True, say_away: bool = False
    ) -> None:
        """Subscribe to rooms (None: all), then wait until chatd confirms the subscription.

        ``say_away``: the events include notices when chatd goes away and is back."""
        from mqchat.client.event_subscriber import EventSubscriber

        if self._events is not None:
            self._events.close()
        self._events = EventSubscriber(
            self.runtime_dir, self.timeout, rooms, notices=notices, say_away=say_away
        )
        self._events.open()

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any] | None]:
        """Yield events as they come; yield None after ``timeout`` s of silence.

        Besides messages and notices, a ``head`` event gives a room's last seq (a
        reader that has less missed some), and ``{"type": "dropped"}`` says that
        the stream was connected again (chatd restarted, or closed it for not
        reading): read what is missing from the store (mqchat.client.room_feed does).
        """
        if self._events is None:
            raise RuntimeError("subscribe first")
        return self._events.events(timeout)

    def mark_read(self, marks: dict[str, int]) -> None:
        """Tell chatd how far each room has been shown, so that its retention keeps
        the rest while we follow (docs/ipc.md, ``read``)."""
        if self._follower is None:
            self._follower = os.urandom(8).hex()
        for room, seq in marks.items():
            self.call("read", {"follower": self._follower, "room": room, "seq": seq})


def result_of(reply: Reply) -> Any:
    if reply.error_code is not None:
        raise DaemonRefused(reply.error_message, reply.error_code)
    return reply.result
