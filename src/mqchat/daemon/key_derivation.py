"""Passphrase key derivation off the event loop, one at a time, on a thread of its own.

Two concurrent Argon2id runs deadlock inside OpenSSL's thread pool on a 2-core
machine (benchmarks/join.py found it), and each holds 64 MiB anyway. The
daemon creates this, and closes it when it stops; the loop keeps serving while
a derivation runs.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor

from mqchat.protocol.kdf import DEFAULT_KDF, KdfParams, RoomKeys, derive_room_keys


class KeyDerivation:
    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kdf")
        self.running = 0
        """Derivations asked for and not finished (each holds 64 MiB while it runs)."""

    async def derive(
        self, passphrase: str, room: str, params: KdfParams = DEFAULT_KDF, *, weak: bool
    ) -> RoomKeys:
        loop = asyncio.get_running_loop()
        job = functools.partial(derive_room_keys, passphrase, room, params, weak=weak)
        self.running += 1
        try:
            return await loop.run_in_executor(self._thread, job)
        finally:
            self.running -= 1

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
