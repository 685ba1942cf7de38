"""What chatd does when the broker link comes up or goes down: one log line, the
systemd status, a notice to tails, the outbox sent or held, and "online" in every
room."""

from __future__ import annotations

import logging

from mqchat.daemon.events import EventPublisher
from mqchat.daemon.outbox_window import OutboxWindow
from mqchat.daemon.presence import PresenceKeeper
from mqchat.protocol.ipc_events import notice_event
from mqchat.protocol.records import PresenceState

log = logging.getLogger("mqchat.daemon.assembly")


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
