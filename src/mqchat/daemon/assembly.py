"""chatd's parts, built and wired once: the store, the rooms, the outbox, the inbox,
the RPC handlers, the local sockets and the broker link.

Nothing here runs anything: ``main.serve`` starts the parts, waits for a stop,
and closes them in order. Every thread chatd runs is started here or by a part
named here (the key derivation, the WAL checkpointer; the broker link runs on the
loop, its blocking connect in the loop's default executor), so none is hidden
from the code that must stop it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq

from mqchat.config import Settings
from mqchat.daemon.broker import BrokerLink
from mqchat.daemon.catch_up import CatchUp
from mqchat.daemon.control_order import SignedClock
from mqchat.daemon.drops import DropCounter
from mqchat.daemon.epoch_keeper import EpochKeeper
from mqchat.daemon.events import EventPublisher
from mqchat.daemon.followers import Followers
from mqchat.daemon.inbox import Inbox
from mqchat.daemon.ipc_server import IpcServer
from mqchat.daemon.key_derivation import KeyDerivation
from mqchat.daemon.member_list import MemberList
from mqchat.daemon.membership import Membership
from mqchat.daemon.outbox_window import OutboxWindow
from mqchat.daemon.presence import PresenceKeeper
from mqchat.daemon.repair import Repair
from mqchat.daemon.room_admin import RoomAdmin
from mqchat.daemon.room_logs import RoomLogs
from mqchat.daemon.rooms import LEFT_INVITE_ROOMS_KEY, RoomRegistry
from mqchat.daemon.sealing import BatchSealer
from mqchat.daemon.service import ChatService
from mqchat.daemon.state import load_identity
from mqchat.daemon.store import Checkpointer, Store
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.errors import MqchatError
from mqchat.protocol.ipc import notice_event
from mqchat.protocol.records import PresenceState
from mqchat.protocol.signing import SigningIdentity
from mqchat.secret_file import read_secret_file

log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Parts:
    store: Store
    checkpointer: Checkpointer
    ctx: zmq.Context[zmq.Socket[bytes]]
    events: EventPublisher
    outbox: OutboxWindow
    kdf: KeyDerivation
    presence: PresenceKeeper
    inbox: Inbox
    service: ChatService
    server: IpcServer
    link: BrokerLink
    keeper: EpochKeeper
    repair: Repair

    def close(self) -> None:
        """After the link has stopped: everything else, in order."""
        self.kdf.close()
        self.server.close()
        self.events.close()
        self.ctx.term()
        self.checkpointer.stop()
        self.store.close()


@dataclass
class Core:
    """The parts that hold rooms, messages and presence: everything but the sockets."""

    rooms: RoomRegistry
    outbox: OutboxWindow
    kdf: KeyDerivation
    presence: PresenceKeeper
    inbox: Inbox
    service: ChatService
    keeper: EpochKeeper
    repair: Repair
    catch_up: CatchUp


def assemble_core(
    settings: Settings,
    store: Store,
    identity: SigningIdentity,
    events: EventPublisher,
    drops: DropCounter,
    work: UnitOfWork,
    die: Callable[[str], None],
    clock_ms: Callable[[], int] = now_ms,
) -> Core:
    """Wire the core parts to each other (tests and benchmarks use them as chatd does)."""
    rooms = RoomRegistry()
    rooms.load(store.rooms.all(), store.messages.last_seq, settings.topic_prefix)
    rooms.left_by_invite = _names(store.meta.get(LEFT_INVITE_ROOMS_KEY))
    signed_ms = SignedClock(clock_ms)
    sealer = BatchSealer(
        rooms=rooms, identity=identity, name=settings.name, clock_ms=signed_ms, random=os.urandom
    )
    outbox = OutboxWindow(store, events, work, clock_ms, rooms.names, sealer)
    kdf = KeyDerivation()
    presence = PresenceKeeper(
        store=store,
        rooms=rooms,
        events=events,
        identity=identity,
        name=settings.name,
        interval_s=settings.presence_interval,
        clock_ms=clock_ms,
        random=os.urandom,
    )
    keeper = EpochKeeper(store=store, rooms=rooms, grace_s=settings.grace_period, clock_ms=clock_ms)
    keeper.load()
    logs = RoomLogs(store=store, rooms=rooms, keeper=keeper, own_key=identity.public_key)
    work.on_rollback(logs.reload)
    keeper.on_expire = logs.on_expire
    catch_up = CatchUp(
        logs=logs,
        rooms=rooms,
        keeper=keeper,
        presence=presence,
        identity=identity,
        name=settings.name,
        clock_ms=clock_ms,
        random=os.urandom,
    )
    membership = Membership(
        store=store,
        logs=logs,
        catch_up=catch_up,
        keeper=keeper,
        presence=presence,
        work=work,
        drops=drops,
        identity=identity,
        clock_ms=clock_ms,
    )
    admin = RoomAdmin(
        store=store,
        rooms=rooms,
        keeper=keeper,
        membership=membership,
        catch_up=catch_up,
        presence=presence,
        work=work,
        identity=identity,
        name=settings.name,
        topic_prefix=settings.topic_prefix,
        clock_ms=clock_ms,
        random=os.urandom,
    )
    membership.rekey_again = functools.partial(_rekey_again, work, admin)
    inbox = Inbox(
        store=store,
        identity=identity,
        events=events,
        drops=drops,
        rooms=rooms,
        work=work,
        clock_ms=clock_ms,
        on_fatal=die,
        on_batch=membership.on_batch,  # which passes them on to presence
        hears=logs.hears,
    )
    repair = Repair(
        store=store,
        rooms=rooms,
        own_key=identity.public_key,
        work=work,
        clock_ms=clock_ms,
        give_up_s=settings.repair_give_up,
        fill_outbox=outbox.fill,
    )
    inbox.repair = repair
    repair.show = inbox.show
    presence.extra_records = lambda room: [
        *repair.sending.presence_heads(room),
        *membership.presence_records(room),
    ]
    presence.signed_ms = signed_ms
    presence.refused = drops.drop
    presence.came_online = repair.sending.came_online
    service = ChatService(
        settings,
        store,
        identity,
        rooms=rooms,
        events=events,
        work=work,
        outbox=outbox,
        kdf=kdf,
        presence=presence,
        drops=drops,
        clock_ms=clock_ms,
    )
    followers = Followers(clock_ms)
    store.messages.lowest_unread = followers.lowest_unread
    service.handlers.update(
        read=followers.read,
        unfollow=followers.unfollow,
        create=admin.create,
        invite=admin.invite,
        join_invite=admin.join_invite,
        rekey=admin.rekey,
        members=MemberList(
            store=store,
            rooms=rooms,
            keeper=keeper,
            logs=logs,
            identity=identity,
            name=settings.name,
        ).members,
    )
    service.refusal = logs.out_reason
    service.on_leave.append(admin.forget)
    service.repair = repair
    service.on_leave.append(repair.forget)
    return Core(rooms, outbox, kdf, presence, inbox, service, keeper, repair, catch_up)


def _rekey_again(work: UnitOfWork, admin: RoomAdmin, room: str, removed: list[str]) -> None:
    """Our rekey lost to another (§27.2): make it again on the winner, or the removal
    is undone."""
    try:
        with work.batch():
            admin.rekey(room, removed, again=True)
    except MqchatError as exc:
        log.warning("could not make a lost rekey again: %s", exc.message)


def assemble(
    settings: Settings,
    ctl_path: Path,
    events_path: Path,
    die: Callable[[str], None],
) -> Parts:
    password = (
        read_secret_file(settings.password_file, "broker password file")
        if settings.password_file
        else None
    )
    identity = load_identity(settings.state_dir, os.urandom)
    store = Store(settings.state_dir / "mqchat.db", settings.retention)
    client_id = store.meta.get("client_id") or f"mqchat-{os.urandom(8).hex()}"
    store.meta.set("client_id", client_id)
    checkpointer = Checkpointer(store.path)
    checkpointer.start()

    for path in (ctl_path, events_path):  # stale: we hold the lock
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    drops = DropCounter()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    events = EventPublisher(events_path, drops, ctx)
    work = UnitOfWork(store, events)
    link = BrokerLink(settings, client_id, password, on_fatal=die)
    core = assemble_core(settings, store, identity, events, drops, work, die)
    rooms, outbox, kdf = core.rooms, core.outbox, core.kdf
    presence, inbox, service = core.presence, core.inbox, core.service
    core.repair.sending.final_heads_at_start()
    server = IpcServer(
        ctx, f"ipc://{ctl_path}", service, work, drops, kdf_busy=lambda: kdf.running > 0
    )
    # Subscriptions first, then the outbox a previous run left (on CONNACK), so a
    # send made just after a restart cannot overtake older messages.
    service.link = inbox.link = outbox.link = presence.link = core.keeper.link = link
    core.catch_up.link = link
    for room in rooms:
        for topic in room.topics:
            link.subscribe(topic, room.qos)
    for topic in core.keeper.subscriptions_to_drop():
        link.unsubscribe(topic)  # ended epochs a persistent session may still hold
    return Parts(
        store,
        checkpointer,
        ctx,
        events,
        outbox,
        kdf,
        presence,
        inbox,
        service,
        server,
        link,
        core.keeper,
        core.repair,
    )


def broker_state(
    outbox: OutboxWindow, events: EventPublisher, presence: PresenceKeeper, up: bool, why: str
) -> None:
    """The link came up or went down: log it once, tell tails, send or hold the outbox,
    and say we are here in every room."""
    from mqchat.daemon.notify import sd_notify

    sd_notify(f"STATUS={'connected' if up else 'disconnected'}: {why}")
    if up == outbox.connected:
        return  # the link logged the failure, once at WARNING
    if up:
        log.info("%s", why)
    outbox.set_connected(up)
    if up:
        presence.announce_all(PresenceState.ONLINE)
    events.publish(None, notice_event(None, "broker_up" if up else "broker_down", why))


def _names(stored: str | None) -> list[str]:
    """A JSON list of room names from the meta table; anything else is no names."""
    try:
        names = json.loads(stored or "[]")
    except ValueError:
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []
