"""chatd: the mqchat daemon (console script ``chatd``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mqchat import __version__
from mqchat.config import ENVIRONMENT, Settings, add_arguments, load_settings
from mqchat.errors import MqchatError

if TYPE_CHECKING:
    from mqchat.daemon.outbox_window import OutboxWindow
    from mqchat.daemon.store import Store

log = logging.getLogger("mqchat.daemon")

LOG_LEVELS = ("debug", "info", "warning", "error")
PRUNE_INTERVAL_S = 3600.0
SHUTDOWN_FLUSH_S = 2.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chatd",
        description=(
            "The mqchat daemon: holds the broker connection, room keys and message store, "
            "and serves chatctl over two ZeroMQ sockets in the runtime directory: "
            "ctl.sock (ROUTER, JSON-RPC requests) and events.sock (XPUB, events as "
            "[room name + NUL, JSON] for any ZeroMQ SUB; see docs/ipc.md)."
        ),
        epilog=(
            f"Environment: {', '.join(ENVIRONMENT)}. "
            "Precedence: flag > environment > config file > default. "
            "Exit status: 0 stopped cleanly, 1 failed, 2 bad usage or configuration."
        ),
    )
    p.add_argument("--config", metavar="FILE", help="TOML config file (must exist if given)")
    add_arguments(p)  # one per setting that has a flag, as config.py declares it
    p.add_argument(
        "--log-level",
        metavar="LEVEL",
        choices=LOG_LEVELS,
        default="info",
        help="debug, info, warning or error (default: info)",
    )
    p.add_argument("--version", action="version", version=f"chatd {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.umask(0o077)
    from mqchat.daemon.log_format import configure

    configure(sys.stderr, args.log_level.upper())
    try:
        settings = load_settings(
            {
                "config": args.config,
                "broker": args.broker,
                "name": args.name,
                "runtime_dir": args.runtime_dir,
                "state_dir": args.state_dir,
            }
        )
        return run(settings)
    except MqchatError as exc:
        print(f"chatd: error: {exc.message}", file=sys.stderr)
        return exc.exit_code if exc.exit_code == 2 else 1
    except KeyboardInterrupt:
        return 0


def run(settings: Settings) -> int:
    from mqchat.daemon.runtime_dir import DaemonLock, prepare_private_dir, socket_paths

    prepare_private_dir(settings.runtime_dir, "runtime directory")
    prepare_private_dir(settings.state_dir, "state directory")
    ctl_path, events_path = socket_paths(settings.runtime_dir)
    locks = [DaemonLock(settings.runtime_dir)]
    try:
        locks.append(DaemonLock(settings.state_dir, "state directory"))
        return asyncio.run(serve(settings, ctl_path, events_path))
    finally:
        if len(locks) == 2:  # the sockets are ours only once both locks are
            for path in (ctl_path, events_path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        for lock in locks:
            lock.release()


async def serve(settings: Settings, ctl_path: Path, events_path: Path) -> int:
    from mqchat.daemon.assembly import assemble
    from mqchat.daemon.notify import sd_notify
    from mqchat.protocol.records import PresenceState

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    fatal: list[str] = []

    def die(reason: str) -> None:
        log.error("%s; stopping so that the service manager restarts chatd", reason)
        fatal.append(reason)
        stop.set()

    def on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        loop.default_exception_handler(context)  # logs it, with its traceback
        die(f"unexpected error: {context.get('exception') or context.get('message')}")

    loop.set_exception_handler(on_loop_error)
    parts = assemble(settings, ctl_path, events_path, loop, die)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    core = parts.core
    core.repair.start()  # what a previous run left missing, and its final heads
    core.presence.start()
    parts.link.start(parts.sinks)
    sd_notify(f"READY=1\nSTATUS=connecting to {settings.broker}\nMAINPID={os.getpid()}")
    log.info(
        "ready: name %s, broker %s, %d rooms, sockets in %s",
        settings.name,
        settings.broker,
        len(core.rooms),
        settings.runtime_dir,
    )
    parts.server.start(loop)
    _tune_collector()
    tasks = [
        asyncio.create_task(parts.events.serve_subscriptions(), name="ipc-events"),
        asyncio.create_task(parts.server.guard.run(), name="ctl-guard"),
        asyncio.create_task(_upkeep(parts.store), name="upkeep"),
    ]
    for task in tasks:
        # A task that ends by itself is a bug: log it and stop non-zero, so the
        # service manager restarts chatd rather than leave half a daemon running.
        task.add_done_callback(functools.partial(_task_died, die=die))
    try:
        await stop.wait()
    finally:
        sd_notify("STOPPING=1")
        log.info("stopping")
        core.presence.announce_all(PresenceState.LEAVING)  # before the DISCONNECT
        await _flush(loop, core.outbox)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await parts.link.stop()
        parts.close()
    return 1 if fatal else 0


GC_YOUNG_THRESHOLD = 10_000
"""Container objects allocated, less freed, before the cyclic collector runs
(Python's default is 700). Every text a daemon handles builds a few tuples; at
700 the collector ran ~13 times a second under a stream, each run of the
oldest generation walking every object chatd holds: 2-3 us a message, about 5%
of its CPU (issue 24). The daemon makes few reference cycles; a young
generation of 10,000 holds a few MB at most before it is collected."""


def _tune_collector() -> None:
    """What start-up built lives as long as chatd: out of every collection from now
    on (gc.freeze), with a larger young generation (GC_YOUNG_THRESHOLD)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


async def _flush(loop: asyncio.AbstractEventLoop, outbox: OutboxWindow) -> None:
    """Give PUBACKs for what is in flight a moment; the outbox keeps the rest."""
    deadline = loop.time() + SHUTDOWN_FLUSH_S
    while outbox.inflight and outbox.connected and loop.time() < deadline:
        await asyncio.sleep(0.02)  # waiting for PUBACKs, bounded; not a synchronisation


def _task_died(task: asyncio.Task[Any], die: Callable[[str], None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    log.critical("task %s ended", task.get_name(), exc_info=exc)
    die(f"task {task.get_name()} ended: {exc!r}")


async def _upkeep(store: Store) -> None:
    while True:
        store.memory.prune(time.time_ns() // 1_000_000)
        await asyncio.sleep(PRUNE_INTERVAL_S)


if __name__ == "__main__":
    sys.exit(main())
