"""chatd's parts, built and wired once: the store, the rooms, the outbox, the inbox,
the RPC handlers, the local sockets and the broker link.

Nothing here runs anything: ``main.serve`` starts the parts, waits for a stop,
and closes them in order. Every thread chatd runs is started here or by a part
named here (the key derivation, the WAL checkpointer; the broker link runs on the
loop, its blocking connect in the loop's default executor), so none is hidden
from the code that must stop it.
"""

from __future__ import annotations

import asyncio
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
from mqchat.daemon.broker import BrokerLink, LinkSinks
from mqchat.daemon.catch_up import CatchUp
from mqchat.daemon.control_order import SignedClock
from mqchat.daemon.drops import DropCounter
from mqchat.daemon.epoch_keeper import EpochKeeper
from mqchat.daemon.events import EventPublisher
from mqchat.daemon.followers import Followers
from mqchat.daemon.head_follower import HeadFollower
from mqchat.daemon.identity_file import load_identity
from mqchat.daemon.inbox import Inbox
from mqchat.daemon.ipc_server import IpcServer
from mqchat.daemon.joining import RoomJoining
from mqchat.daemon.key_derivation import KeyDerivation
from mqchat.daemon.link_state import broker_state
from mqchat.daemon.member_list import MemberList
from mqchat.daemon.membership import Membership
from mqchat.daemon.methods import MethodTable
from mqchat.daemon.opening import PayloadOpener
from mqchat.daemon.outbox_window import OutboxWindow
from mqchat.daemon.presence import PresenceKeeper
from mqchat.daemon.publisher import AfterCommit, Publisher
from mqchat.daemon.queries import Queries
from mqchat.daemon.rekeying import Rekeying
from mqchat.daemon.repair import Repair
from mqchat.daemon.repair_sending import RepairSender
from mqchat.daemon.room_admin import RoomAdmin
from mqchat.daemon.room_logs import RoomLogs
from mqchat.daemon.rooms import LEFT_INVITE_ROOMS_KEY, RoomRegistry
from mqchat.daemon.sealing import BatchSealer
from mqchat.daemon.send_path import Sending
from mqchat.daemon.store import Checkpointer, Store
from mqchat.daemon.timeline import Timeline
from mqchat.daemon.trust import Trust
from mqchat.daemon.unit_of_work import UnitOfWork
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
    core: Core
    server: IpcServer
    link: BrokerLink
    sinks: LinkSinks

    def close(self) -> None:
        """After the link has stopped: everything else, in order."""
        self.core.outbox.close()
        self.core.repair.close()
        self.core.presence.close()
        self.core.keeper.close()
        self.core.kdf.close()
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
    keeper: EpochKeeper
    repair: Repair
    sending: Sending
    methods: MethodTable


def assemble_core(
    settings: Settings,
    store: Store,
    identity: SigningIdentity,
    events: EventPublisher,
    drops: DropCounter,
    work: UnitOfWork,
    die: Callable[[str], None],
    link: Publisher,
    loop: asyncio.AbstractEventLoop,
    followers: Followers,
    clock_ms: Callable[[], int] = now_ms,
) -> Core:
    """Build the core parts once, in order, each given what it needs (tests and
    benchmarks build them as chatd does, with an ``OfflinePublisher``)."""
    rooms = RoomRegistry(left_by_invite=_names(store.meta.get(LEFT_INVITE_ROOMS_KEY)))
    rooms.load(store.rooms.all(), store.messages.last_seq, settings.topic_prefix)
    # In-memory state is the store's cache: after a rollback each part reloads it,
    # in this order (rooms, their epochs, their logs, then counters: Sending's).
    work.on_rollback(
        lambda: rooms.resync(store.rooms.all(), store.messages.last_seq, settings.topic_prefix)
    )
    signed_ms = SignedClock(clock_ms)
    sealer = BatchSealer(
        rooms=rooms, identity=identity, name=settings.name, clock_ms=signed_ms, random=os.urandom
    )
    outbox = OutboxWindow(store, work, clock_ms, rooms.names, sealer, link)
    kdf = KeyDerivation()
    effects = AfterCommit(link, work)  # what handling a request or payload publishes
    logs = RoomLogs(store=store, rooms=rooms, own_key=identity.public_key)
    keeper = EpochKeeper(
        store=store,
        rooms=rooms,
        link=effects,
        grace_s=settings.grace_period,
        clock_ms=clock_ms,
        on_expire=logs.on_expire,
        work=work,
        loop=loop,
    )
    keeper.load()
    work.on_rollback(keeper.reload)
    work.on_rollback(logs.reload)
    timeline = Timeline(store, work)
    repair_sender = RepairSender(
        store=store, rooms=rooms, work=work, fill_outbox=outbox.fill, loop=loop
    )
    repair = Repair(
        store=store,
        rooms=rooms,
        own_key=identity.public_key,
        work=work,
        clock_ms=clock_ms,
        give_up_s=settings.repair_give_up,
        fill_outbox=outbox.fill,
        sending=repair_sender,
        show=timeline.show,
        loop=loop,
    )
    work.on_rollback(repair.reload)
    presence = PresenceKeeper(
        store=store,
        rooms=rooms,
        work=work,
        loop=loop,
        identity=identity,
        name=settings.name,
        interval_s=settings.presence_interval,
        clock_ms=clock_ms,
        random=os.urandom,
        link=effects,
        signed_ms=signed_ms,
        extra_records=(repair_sender.presence_heads, logs.join_to_repeat),
        refused=drops.drop,
        came_online=repair_sender.came_online,
    )
    catch_up = CatchUp(
        logs=logs,
        rooms=rooms,
        keeper=keeper,
        presence=presence,
        identity=identity,
        name=settings.name,
        clock_ms=clock_ms,
        random=os.urandom,
        link=effects,
        loop=loop,
    )
    follower = HeadFollower(
        store=store,
        logs=logs,
        keeper=keeper,
        presence=presence,
        work=work,
        drops=drops,
        identity=identity,
        clock_ms=clock_ms,
    )
    rekeying = Rekeying(
        store=store,
        rooms=rooms,
        logs=logs,
        follower=follower,
        link=effects,
        work=work,
        identity=identity,
        name=settings.name,
        loop=loop,
        clock_ms=clock_ms,
        random=os.urandom,
    )
    membership = Membership(
        logs=logs,
        follower=follower,
        catch_up=catch_up,
        keeper=keeper,
        presence=presence,
        drops=drops,
        identity=identity,
        after_follow=rekeying.again_if_lost,
    )
    admin = RoomAdmin(
        store=store,
        rooms=rooms,
        keeper=keeper,
        logs=logs,
        follower=follower,
        link=effects,
        catch_up=catch_up,
        presence=presence,
        work=work,
        identity=identity,
        name=settings.name,
        topic_prefix=settings.topic_prefix,
        clock_ms=clock_ms,
        random=os.urandom,
    )
    inbox = Inbox(
        store=store,
        identity=identity,
        drops=drops,
        work=work,
        opener=PayloadOpener(rooms=rooms, drops=drops, link=effects),
        timeline=timeline,
        repair=repair,
        link=link,  # acknowledges, after each batch's commit
        clock_ms=clock_ms,
        on_fatal=die,
        on_batch=membership.on_batch,  # which passes them on to presence
        hears=logs.hears,
    )
    sending = Sending(
        name=settings.name,
        state_dir=settings.state_dir,
        identity=identity,
        store=store,
        rooms=rooms,
        work=work,
        outbox=outbox,
        repair=repair_sender,
        refusal=logs.out_reason,
        random=os.urandom,
        clock_ms=clock_ms,
    )
    queries = Queries(
        settings=settings,
        identity=identity,
        store=store,
        rooms=rooms,
        outbox=outbox,
        presence=presence,
        repair=repair,
        drops=drops,
        link=link,
    )
    joining = RoomJoining(
        settings=settings,
        identity=identity,
        store=store,
        rooms=rooms,
        kdf=kdf,
        presence=presence,
        link=effects,
        work=work,
        forgetters=(
            keeper.forget,
            logs.forget,
            rekeying.forget,
            repair.forget,
            repair_sender.forget,
        ),
        clock_ms=clock_ms,
    )
    members = MemberList(
        store=store, rooms=rooms, keeper=keeper, logs=logs, identity=identity, name=settings.name
    )
    methods = MethodTable(
        {
            "status": queries.status,
            "rooms": queries.rooms,
            "identity": queries.identity,
            "history": queries.history,
            "who": queries.who,
            "join": joining.join,
            "leave": joining.leave,
            "send": sending.send,
            "trust": Trust(store=store, rooms=rooms, publish=work.publish).trust,
            "create": admin.create,
            "invite": admin.invite,
            "join_invite": admin.join_invite,
            "rekey": rekeying.rekey,
            "members": members.members,
            "read": followers.read,
            "unfollow": followers.unfollow,
        }
    )
    return Core(rooms, outbox, kdf, presence, inbox, keeper, repair, sending, methods)


def assemble(
    settings: Settings,
    ctl_path: Path,
    events_path: Path,
    loop: asyncio.AbstractEventLoop,
    die: Callable[[str], None],
) -> Parts:
    password = (
        read_secret_file(settings.password_file, "broker password file")
        if settings.password_file
        else None
    )
    identity = load_identity(settings.state_dir, os.urandom)
    followers = Followers(now_ms)
    store = Store(settings.state_dir / "mqchat.db", settings.retention, followers.lowest_unread)
    client_id = store.meta.get("client_id") or f"mqchat-{os.urandom(8).hex()}"
    store.meta.set("client_id", client_id)
    checkpointer = Checkpointer(store.path, store.writers)
    checkpointer.start()

    for path in (ctl_path, events_path):  # stale: we hold the lock
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    drops = DropCounter()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    events = EventPublisher(events_path, drops, ctx)
    work = UnitOfWork(store, events)
    # The link first: every part that publishes is given it. It delivers to the
    # inbox and the outbox only once started (main.serve), after all is built.
    link = BrokerLink(settings, client_id, password, on_fatal=die)
    core = assemble_core(settings, store, identity, events, drops, work, die, link, loop, followers)
    server = IpcServer(
        ctx, f"ipc://{ctl_path}", core.methods, work, drops, kdf_busy=lambda: core.kdf.running > 0
    )
    sinks = LinkSinks(
        on_messages=core.inbox.on_messages,
        on_state=functools.partial(broker_state, core.outbox, events, core.presence),
        on_published=core.outbox.on_published,
    )
    # Subscriptions first, then the outbox a previous run left (on CONNACK), so a
    # send made just after a restart cannot overtake older messages.
    for room in core.rooms:
        for topic in room.topics:
            link.subscribe(topic, room.qos)
    for topic in core.keeper.subscriptions_to_drop():
        link.unsubscribe(topic)  # ended epochs a persistent session may still hold
    return Parts(store, checkpointer, ctx, events, core, server, link, sinks)


def _names(stored: str | None) -> list[str]:
    """A JSON list of room names from the meta table; anything else is no names."""
    try:
        names = json.loads(stored or "[]")
    except ValueError:
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []
