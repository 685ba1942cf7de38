"""Issue 14 item 2: what storing a message costs chatd, batch-shaped against the old way.

    python benchmarks/storage.py [--count N]      (or as part of run.py)

In this one process, on fresh SQLite files in a temporary directory: N sends
through the real ``ChatService.rpc_send`` and N received payloads through the
real ``Inbox``, in batches as the IPC server and the inbox make them (256
requests, 512 payloads), each request or payload a part of its batch. Beside
each, the path this replaced, measured in the same run on the same data: a
SAVEPOINT per send and one statement per row (the daemon before issue 14, kept
in benchmarks/old_storage.py). Both seal and open with the same cipher, so the
difference is storage and per-message glue; the crypto alone is measured too,
so what is left for storage shows. Retention is the default 10,000, so the
second half of each run also deletes what falls out of it, as a full room does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for _path in (HERE, HERE.parent / "tests"):  # as run.py does: common needs tests/harness.py
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from common import Bench, Row, log  # noqa: E402 -- needs the path above
from mqchat.config import Settings, parse_broker_url  # noqa: E402
from mqchat.daemon.assembly import assemble_core  # noqa: E402
from mqchat.daemon.broker import Incoming  # noqa: E402
from mqchat.daemon.drops import DropCounter  # noqa: E402
from mqchat.daemon.events import EventPublisher  # noqa: E402
from mqchat.daemon.followers import Followers  # noqa: E402
from mqchat.daemon.publisher import OfflinePublisher  # noqa: E402
from mqchat.daemon.rooms import Room  # noqa: E402
from mqchat.daemon.store import Store as RealStore  # noqa: E402
from mqchat.daemon.unit_of_work import UnitOfWork  # noqa: E402
from mqchat.protocol import envelope  # noqa: E402
from mqchat.protocol.kdf import DEFAULT_KDF, RoomKeys  # noqa: E402
from mqchat.protocol.signing import SigningIdentity  # noqa: E402
from old_storage import OldPath  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog; " * 2
ROOM = "bench"
SEND_BATCH = 256  # ipc_server.MAX_BATCH requests
RECEIVE_BATCH = 512  # inbox.RECEIVE_BATCH payloads
CIPHER = "aes-256-gcm"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class EventsWanted(UnitOfWork):
    """As if a tail listened: events are built in both paths (none is written)."""

    @property
    def wants_events(self) -> bool:
        return True


class Daemon:
    """The storage-side parts, wired as assembly.py wires them."""

    def __init__(self, home: Path, keys: RoomKeys, identity: SigningIdentity) -> None:
        home.mkdir()
        settings = Settings(
            name="alice",
            brokers=(parse_broker_url("mqtt://127.0.0.1:1"),),
            runtime_dir=home,
            state_dir=home,
        )
        self.store = RealStore(home / "mqchat.db", retention=10_000)
        drops = DropCounter()
        self.events = EventPublisher(home / "ev.sock", drops)
        self.work = EventsWanted(self.store, self.events)
        self.loop = asyncio.new_event_loop()
        core = assemble_core(
            settings,
            self.store,
            identity,
            self.events,
            drops,
            self.work,
            sys.exit,
            OfflinePublisher(),
            self.loop,
            Followers(now_ms),
            clock_ms=now_ms,
        )
        self.rooms, self.kdf = core.rooms, core.kdf
        self.sending, self.inbox = core.sending, core.inbox
        self.room = Room.passphrase_room(
            ROOM, CIPHER, keys, DEFAULT_KDF, "mqchat/v1", weak=False, joined_ms=now_ms()
        )
        self.store.rooms.save(self.room.to_record())
        self.rooms.add(self.room)

    def close(self) -> None:
        self.loop.close()
        self.kdf.close()
        self.events.close()
        self.store.close()


# ---------------------------------------------------------------------- the old path


def batches(count: int, size: int) -> list[range]:
    return [range(i, min(i + size, count)) for i in range(0, count, size)]


def old_path(d: Daemon, identity: SigningIdentity) -> OldPath:
    return OldPath(d.store._db, d.room, identity, now_ms, d.events.publish)


def old_sends(old: OldPath, count: int) -> None:
    """As ipc_server drove rpc_send before: a batch of requests, a SAVEPOINT each."""
    for batch in batches(count, SEND_BATCH):
        with old.batch():
            for i in batch:
                old.rpc_send(f"{i} {TEXT}")


def old_receives(old: OldPath, payloads: list[bytes]) -> None:
    """As the inbox stored payloads before: a batch of them, four SELECTs and writes each."""
    for batch in batches(len(payloads), RECEIVE_BATCH):
        with old.batch():
            for i in batch:
                old.receive(payloads[i])


# ---------------------------------------------------------------------- the new path


def new_sends(d: Daemon, count: int, per_request: int) -> None:
    """As ipc_server drives send: a batch of requests, each a part of it."""
    requests = batches(count, per_request)
    for batch in batches(len(requests), SEND_BATCH):
        with d.work.batch():
            for j in batch:
                texts = [f"{i} {TEXT}" for i in requests[j]]
                with d.work.part():
                    if per_request == 1:
                        d.sending.send(ROOM, texts[0])
                    else:
                        d.sending.send(ROOM, texts=texts)


def new_receives(d: Daemon, payloads: list[bytes]) -> None:
    """As paho hands payloads over: the inbox stores RECEIVE_BATCH per loop pass."""

    async def deliver() -> None:
        loop = asyncio.get_running_loop()
        d.inbox.on_messages(
            [Incoming(d.room.topic, payload, mid, 1) for mid, payload in enumerate(payloads, 1)]
        )
        while d.store.messages.last_seq(ROOM) < len(payloads):
            done = loop.create_future()
            loop.call_soon(done.set_result, None)  # after the inbox's next pass
            await done

    d.loop.run_until_complete(deliver())


# ---------------------------------------------------------------------- measuring


def timed(what: str, job: Callable[[], Any], count: int) -> float:
    start = time.perf_counter()
    job()
    per = (time.perf_counter() - start) / count
    log(f"  storage: {what}: {per * 1e6:.1f} µs a message")
    return per


def measure(count: int) -> dict[str, float]:
    keys = RoomKeys(os.urandom(32), os.urandom(32))
    alice = SigningIdentity.generate(os.urandom)
    bob = SigningIdentity.generate(os.urandom)
    payloads = [
        envelope.seal(
            keys, bob, name="bob", text=f"{i} {TEXT}", seq=i + 1, timestamp_ms=now_ms(),
            random=os.urandom, cipher=CIPHER,
        )[1]
        for i in range(count)
    ]  # fmt: skip
    home = Path(tempfile.mkdtemp(prefix="mqst-", dir="/tmp"))
    try:
        daemons = {
            name: Daemon(home / name, keys, alice)
            for name in ("old-send", "new-send", "new-send-256", "old-recv", "new-recv")
        }

        def seal_each() -> None:
            for i in range(count):
                envelope.seal(
                    keys, alice, name="alice", text=TEXT, seq=i + 1, timestamp_ms=0,
                    random=os.urandom, cipher=CIPHER,
                )  # fmt: skip

        out = {
            "seal": timed("seal alone", seal_each, count),
            "open": timed(
                "open alone", lambda: [envelope.open_payload(p, keys) for p in payloads], count
            ),
        }
        old = old_path(daemons["old-send"], alice)
        out["old_send"] = timed("send, old path", lambda: old_sends(old, count), count)
        out["new_send"] = timed(
            "send, batch-shaped", lambda: new_sends(daemons["new-send"], count, 1), count
        )
        out["new_send_256"] = timed(
            "send, 256 texts a request",
            lambda: new_sends(daemons["new-send-256"], count, 256),
            count,
        )
        old = old_path(daemons["old-recv"], alice)
        out["old_receive"] = timed("receive, old path", lambda: old_receives(old, payloads), count)
        out["new_receive"] = timed(
            "receive, batch-shaped", lambda: new_receives(daemons["new-recv"], payloads), count
        )
        for name in ("old-recv", "new-recv"):  # (retention keeps the last 10,000 of them)
            stored = daemons[name].store.messages.last_seq(ROOM)
            if stored != count:
                raise RuntimeError(f"{name} stored {stored} of {count} messages")
        for d in daemons.values():
            d.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return out


def rows(out: dict[str, float], count: int) -> list[Row]:
    def us(seconds: float) -> str:
        return f"{seconds * 1e6:.1f} µs"

    def storage(total: float, crypto: float) -> str:
        return us(max(0.0, total - crypto))

    return [
        Row(
            f"storage: {count:,} sends through rpc_send, per message (a v2 record is "
            "stored; it is sealed later, once per batch)",
            us(out["new_send"]),
            f"old path, sealing each: {us(out['old_send'])} "
            f"(of which not sealing {storage(out['old_send'], out['seal'])})",
            f"{out['new_send'] / out['old_send']:.2f}x",
        ),
        Row(
            "storage: … the same as requests of 256 texts (`chatctl send` stdin)",
            us(out["new_send_256"]),
            f"a v1 seal alone {us(out['seal'])} ({CIPHER} + Ed25519)",
        ),
        Row(
            f"storage: {count:,} received through the inbox, per message (of which not opening)",
            f"{us(out['new_receive'])} ({storage(out['new_receive'], out['open'])})",
            f"old path {us(out['old_receive'])} ({storage(out['old_receive'], out['open'])})",
            f"{out['new_receive'] / out['old_receive']:.2f}x",
        ),
    ]


def run(bench: Bench) -> list[Row]:
    count = 5000 if bench.quick else 20_000
    log(f"figure: storage, {count} sends and {count} received payloads in-process")
    return rows(measure(count), count)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--count", type=int, default=20_000)
    args = p.parse_args()
    for row in rows(measure(args.count), args.count):
        print(f"| {row.figure} | {row.measured} | {row.baseline} | {row.ratio} |")


if __name__ == "__main__":
    os.umask(0o077)
    main()
