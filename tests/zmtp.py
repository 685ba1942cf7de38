"""A ZeroMQ peer written by hand (ZMTP 3.0, NULL mechanism), for what libzmq's own
sockets will not send: a 10 MB subscription, a request that never ends."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

GREETING = b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00")
GREETING += b"\x00" + b"\x00" * 31


def frame(body: bytes, *, more: bool = False, command: bool = False) -> bytes:
    """One ZMTP frame: flags (more 1, long 2, command 4), size, body."""
    flags = (1 if more else 0) | (4 if command else 0)
    if len(body) > 255:
        return bytes([flags | 2]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def ready(socket_type: str) -> bytes:
    name, value = b"Socket-Type", socket_type.encode()
    body = b"\x05READY" + bytes([len(name)]) + name + struct.pack(">I", len(value)) + value
    return frame(body, command=True)


class RawPeer:
    """A Unix socket to an ipc:// endpoint that has sent its greeting and READY."""

    def __init__(self, path: Path, socket_type: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(str(path))
        self.sock.sendall(GREETING + ready(socket_type))

    def closed_by_peer(self) -> bool:
        """Read until the other end closes; True when it did."""
        try:
            while self.sock.recv(1 << 16):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()
