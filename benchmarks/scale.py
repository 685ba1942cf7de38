"""Figure 6: scale: many rooms on one daemon, and history from a store of 1M messages.

Rooms. Joining with the real KDF costs ~0.5 s of CPU each, so 1,000 real joins
would take minutes. The rooms are instead written into a stopped daemon's
store (random keys, the real schema via ``mqchat.daemon.store``), as a restart
after 1,000 joins would find them. Each room's topic holds a retained
undecryptable message, so chatd counts one drop per room the moment its
subscription is in place: "all subscribed" = drops reach the room count.
A few real joins are then sent at once over IPC to time joins under load.

History. One room's store is filled with 1M messages (retention raised in the
daemon's config so that it would keep them), then ``history`` over IPC and
``chatctl tail -n 50 --no-follow`` are timed.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from baselines import TEXT
from common import (
    Bench,
    Ctl,
    Row,
    chatctl,
    daemon_pid,
    log,
    median,
    ms,
    new_room,
    rss_mb,
    timed_run,
    zmq_context,
)
from harness import PASSPHRASE, Daemon, wait_until
from mqchat.config import DEFAULT_TOPIC_PREFIX
from mqchat.daemon.rooms import Room
from mqchat.daemon.store import Store
from mqchat.protocol.kdf import DEFAULT_KDF, RoomKeys

ROOMS = 1000
HISTORY_MESSAGES = 1_000_000
RSS_LIMIT_MB = 80
SUBSCRIBE_LIMIT_S = 5.0
TAIL_LIMIT_S = 0.050
CONCURRENT_JOINS = 3
JOIN_DEADLINE_S = 10.0


def _prepare(d: Daemon, retention: int | None = None) -> Store:
    for path in (d.home / "run", d.state_dir):
        path.mkdir(mode=0o700, exist_ok=True)
    if retention is not None:
        conf = d.home / "config" / "mqchat"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "config.toml").write_text(f"[store]\nretention = {retention}\n")
    return Store(d.state_dir / "mqchat.db", retention or 10_000)


def _fake_room(name: str) -> Room:
    keys = RoomKeys(os.urandom(32), os.urandom(32))
    return Room.passphrase_room(
        name,
        "fernet",
        keys,
        DEFAULT_KDF,
        DEFAULT_TOPIC_PREFIX,
        weak=False,
        joined_ms=int(time.time() * 1000),
    )


def _retain_garbage(port: int, topics: list[str]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-ret-{os.getpid()}")
    client.on_socket_open = lambda _c, _u, s: s.setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
    )
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(t, b"\x01\x01not a token", qos=1, retain=True) for t in topics]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.loop_stop()
        client.disconnect()


def _drops(ctl: Ctl) -> int:
    return sum(ctl.call("status")["dropped"].values())


def many_rooms(bench: Bench) -> list[Row]:
    count = ROOMS
    log(f"figure: scale, {count} rooms on one daemon (store pre-filled, then started)")
    carol = Daemon(bench.broker, "carol")
    bench.extra_daemons.append(carol)
    store = _prepare(carol)
    topics = []
    for i in range(count):
        room = _fake_room(f"many-{i:04d}")
        store.rooms.save(room.to_record())
        topics.append(room.topic)
    store.close()
    _retain_garbage(bench.broker.port, topics)

    start = time.perf_counter()
    starter = threading.Thread(target=carol.start, kwargs={"wait_connected": False})
    starter.start()
    wait_until((carol.runtime_dir / "ctl.sock").exists, "carol's ctl.sock", 60)
    with zmq_context() as ctx:
        ctl = Ctl(ctx, carol)
        ctl.call("status", timeout_s=30)
        ready_s = time.perf_counter() - start
        deadline = start + 120
        while _drops(ctl) < count:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"carol subscribed {_drops(ctl)} of {count} rooms")
            time.sleep(0.01)  # a poll interval inside a deadline
        all_s = time.perf_counter() - start
        starter.join(60)
        pid = daemon_pid(carol)
        rss_rooms = rss_mb(pid)

        joins = CONCURRENT_JOINS
        log(f"  {joins} real joins at once over IPC")
        t0 = time.perf_counter()
        for _ in range(joins):
            ctl.submit("join", {"room": new_room("cj"), "passphrase": PASSPHRASE})
        done = 0
        try:
            for _ in range(joins):
                ctl.receive(JOIN_DEADLINE_S)
                done += 1
        except TimeoutError:
            bench.note(
                f"scale: {joins} joins sent at once: {done} answered within "
                f"{JOIN_DEADLINE_S:g} s (chatd hung; stopped with SIGKILL at cleanup)"
            )
        join_s = time.perf_counter() - t0
        rss_after = rss_mb(pid)
        ctl.close()
    carol.cleanup()
    return [
        Row(
            f"{count:,} rooms: chatd start → all subscribed",
            f"{all_s:.2f} s",
            f"first status answer {ms(ready_s)}",
            "",
            f"≤ {SUBSCRIBE_LIMIT_S:g} s",
            all_s <= SUBSCRIBE_LIMIT_S,
        ),
        Row(
            f"{count:,} rooms: chatd RSS (VmRSS)",
            f"{rss_rooms:.0f} MB",
            "",
            "",
            f"≤ {RSS_LIMIT_MB} MB",
            rss_rooms <= RSS_LIMIT_MB,
        ),
        Row(
            f"… {joins} real joins sent at once: answered / RSS after",
            f"{done} of {joins} in {join_s:.1f} s / {rss_after:.0f} MB",
            "",
            "",
            f"all, ≤ {RSS_LIMIT_MB} MB",
            done == joins and rss_after <= RSS_LIMIT_MB,
        ),
        Row(
            "… 1,000 real joins, one after another (extrapolated from the join figure)",
            f"{bench.baselines['join_rpc'] * count:.0f} s" if "join_rpc" in bench.baselines else "",
        ),
    ]


def _fill_messages(store_path: Any, room: str, count: int) -> None:
    db = sqlite3.connect(store_path, isolation_level=None)
    fp = os.urandom(32).hex()
    base_ms = int(time.time() * 1000) - count * 1000
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO messages (room, seq, id, ts_ms, sender, fingerprint, verified, own, "
        "legacy, text) VALUES (?, ?, ?, ?, ?, ?, 1, 0, 0, ?)",
        (
            (room, seq, os.urandom(16).hex(), base_ms + seq * 1000, "bob", fp, f"{seq} {TEXT}")
            for seq in range(1, count + 1)
        ),
    )
    db.execute("COMMIT")
    db.close()


def big_history(bench: Bench) -> list[Row]:
    count = HISTORY_MESSAGES
    log(f"figure: scale, tail -n 50 from a store of {count:,} messages")
    dave = Daemon(bench.broker, "dave")
    bench.extra_daemons.append(dave)
    store = _prepare(dave, retention=2 * count)
    room = "big"
    store.rooms.save(_fake_room(room).to_record())
    store.close()
    t0 = time.perf_counter()
    _fill_messages(dave.state_dir / "mqchat.db", room, count)
    log(f"  filled in {time.perf_counter() - t0:.1f} s")
    start = time.perf_counter()
    dave.start()
    ready_s = time.perf_counter() - start
    with zmq_context() as ctx:
        ctl = Ctl(ctx, dave)
        ipc: list[float] = []
        for _ in range(21):
            t = time.perf_counter()
            h = ctl.call("history", {"room": room, "limit": 50})
            ipc.append(time.perf_counter() - t)
        if len(h["messages"]) != 50 or h["last_seq"] != count:
            bench.note(f"history from the big store looks wrong: last_seq {h['last_seq']}")
        ctl.close()
    runs = 5 if bench.quick else 9
    tail_runs, status_runs = [], []
    for _ in range(runs):
        tail_runs.append(
            timed_run([chatctl(), "tail", room, "-n", "50", "--no-follow", "--json"], dave.env)
        )
        status_runs.append(timed_run([chatctl(), "status"], dave.env))
    rss = rss_mb(daemon_pid(dave))
    dave.cleanup()
    first, rest = ipc[0], median(ipc[1:])
    tail_m, status_m = median(tail_runs), median(status_runs)
    return [
        Row(
            f"`history` limit 50 over IPC, store of {count:,}: first / median",
            f"{ms(first)} / {ms(rest)}",
            f"zmq REQ/REP {ms(bench.baselines['zmq_rr_p50'])}",
            "",
            f"≤ {ms(TAIL_LIMIT_S)}",
            max(first, rest) <= TAIL_LIMIT_S,
        ),
        Row(
            f"`chatctl tail -n 50 --no-follow` wall, store of {count:,} (median of {runs})",
            ms(tail_m),
            f"`chatctl status` {ms(status_m)}",
            f"{(tail_m - status_m) * 1000:+.0f} ms",
            f"≤ status + {ms(TAIL_LIMIT_S)}",
            tail_m - status_m <= TAIL_LIMIT_S,
        ),
        Row(
            f"… chatd with {count:,} stored: start → serving / RSS",
            f"{ready_s:.2f} s / {rss:.0f} MB",
        ),
    ]


def run(bench: Bench) -> list[Row]:
    return many_rooms(bench) + big_history(bench)
