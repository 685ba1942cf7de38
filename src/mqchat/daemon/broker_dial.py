"""Where and how chatd dials its broker, and what it says when that fails.

The decisions of the broker link with no paho, socket, thread or clock in them:
which URL of ``[broker] url`` comes next, when "auto" gives up on MQTT 5 for
3.1.1, how long to wait for CONNACK, the jittered backoff between attempts, and
each failure as the sentence a user reads in the log and in ``status``. The link
(``daemon/broker.py``) tells it what happened; it answers what to do next. Tests
drive it without a broker.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mqchat.config import BrokerUrl

log = logging.getLogger(__name__)

CONNACK_TIMEOUT_S = 10.0
"""A broker that says nothing this long after CONNECT is taken to have ignored it."""
V5_PROBE_S = 3.0
"""In "auto", until a broker has answered MQTT 5 once: the wait for CONNACK before
3.1.1 is tried. amqtt 0.12 misreads MQTT 5's CONNECT properties as a longer
packet and waits in silence; 10 s of that at every start is too long."""
PROTOCOL_REFUSED = {1, 0x84}  # 3.1.1 "unacceptable protocol version", 5 "unsupported"
HINT_NO_CONNACK = (
    "; the broker closed the connection before answering CONNECT: if it speaks only "
    'MQTT 3.1.1, set [broker] protocol = "3.1.1" (or "auto", the default, which tries it)'
)
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 60.0


def backoff_delays(rng: random.Random) -> Callable[[], float]:
    """Capped exponential backoff with full jitter (AWS architecture blog's "full jitter")."""
    attempt = 0

    def next_delay() -> float:
        nonlocal attempt
        cap = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**attempt)
        attempt = min(attempt + 1, 16)
        return rng.uniform(BACKOFF_FIRST_S / 2, cap)

    return next_delay


@dataclass(frozen=True)
class Connack:
    """What the broker's CONNACK means for this attempt."""

    session: bool
    """A session is up: subscribe, and say connected."""
    hang_up: bool = False
    """The broker took us but cannot serve chatd: disconnect at once."""


@dataclass(frozen=True)
class Redial:
    """The next attempt: after ``delay_s``, with a new paho client if the URL or
    the protocol changed (a new client holds none of the old one's messages)."""

    delay_s: float
    new_client: bool


class Dial:
    """The connect state machine of one broker link: URLs, protocol, backoff, failures."""

    def __init__(
        self,
        brokers: Sequence[BrokerUrl],
        protocol: str,
        *,
        rng: random.Random,
        clock_ms: Callable[[], int],
        on_failure: Callable[[str], None],
    ) -> None:
        self._brokers = tuple(brokers)
        self._setting = protocol
        self._rng = rng
        self._clock_ms = clock_ms
        self._on_failure = on_failure
        self._delays = backoff_delays(rng)
        self._index = 0
        self._v5_answered = False  # a broker accepted MQTT 5: wait the full CONNACK time
        self._connack: int | None = None  # the reason code of this attempt's CONNACK
        self._session = False  # this attempt reached a session
        self.protocol = "3.1.1" if protocol == "3.1.1" else "5"
        self.last_error: tuple[str, int] | None = None
        """The last failure and when (ms since the epoch), for `status`."""
        self.failing_since: int | None = None
        """When the current run of failures began; None while connected."""

    @property
    def url(self) -> BrokerUrl:
        return self._brokers[self._index]

    def status(self) -> dict[str, Any]:
        error = self.last_error
        return {
            "url": str(self.url),
            "protocol": self.protocol,
            "last_error": None if error is None else {"reason": error[0], "at_ms": error[1]},
            "failing_since_ms": self.failing_since,
        }

    def begin(self) -> float:
        """A new attempt at ``url``: return how long to wait for its CONNACK."""
        self._connack = None
        self._session = False
        probing = self._setting == "auto" and self.protocol == "5" and not self._v5_answered
        return V5_PROBE_S if probing else CONNACK_TIMEOUT_S

    def cannot_open(self, error: BaseException) -> Redial:
        """The connection could not be opened (DNS, TCP, TLS, websocket upgrade)."""
        self.failed(f"cannot connect to {self.url}: {error}")
        return Redial(self._delays(), self._next_url())

    def connack(self, code: int, failure: bool, text: str, max_qos: int | None) -> Connack:
        """The broker answered CONNECT with reason ``code`` (``text`` as a person reads it)."""
        self._connack = code
        if failure or (self.protocol != "5" and code != 0):
            if not (code in PROTOCOL_REFUSED and self._falls_back()):
                self.failed(f"{self.url} refused the connection: {text}")
            return Connack(session=False)
        if max_qos == 0:
            # Such a broker (mqttools; mosquitto's `max_qos 0`) drops the connection
            # at our first QoS 1 publish: connected would be a lie (issue 22 item 11).
            self.failed(
                f"{self.url} allows only QoS 0 (Maximum QoS 0 in its CONNACK); chatd needs "
                f"QoS 1 to deliver without loss: use another broker"
            )
            return Connack(session=False, hang_up=True)
        self._session = True
        self._v5_answered = self._v5_answered or self.protocol == "5"
        self.failing_since = None
        return Connack(session=True)

    def connected_reason(self) -> str:
        version = "MQTT 5" if self.protocol == "5" else "MQTT 3.1.1"
        return f"connected to {self.url} ({version})"

    def closed_reason(self, by_broker: str | None) -> str:
        """The session ended: ``by_broker`` is the reason of the broker's DISCONNECT, if
        it sent one (without one, paho's reason is "Unspecified error": say what happened)."""
        if by_broker is not None:
            return f"{self.url} ended the connection: {by_broker}"
        return (
            f"the connection to {self.url} closed (the broker stopped or "
            "restarted, or the network is down); trying again"
        )

    def ended(self, *, still_connected: bool, stopping: bool) -> Redial | None:
        """The attempt is over; return when and how to try again, or None when stopping."""
        if self._session:
            # A session was up: the next outage starts from a short delay,
            # not from where the last one's backoff had climbed to.
            self._delays = backoff_delays(self._rng)
            if still_connected and not stopping:
                self.failed(f"lost the connection to {self.url}")
        elif not stopping and self._falls_back():
            silent = self._connack is None
            self.protocol = "3.1.1"
            log.warning(
                "%s does not speak MQTT 5 (%s); using MQTT 3.1.1 with a persistent session",
                self.url,
                "no CONNACK" if silent else "it refused the protocol version",
            )
            return Redial(0.0, new_client=True)  # ask the same broker again at once
        elif self._connack is None and not stopping:
            self.failed(f"no answer to CONNECT from {self.url}" + HINT_NO_CONNACK)
        if stopping:
            return None
        new_client = False if self._session else self._next_url()
        return Redial(self._delays(), new_client)

    def failed(self, reason: str) -> None:
        """Record a failure; log it at WARNING when it is new, not on every retry."""
        previous = self.last_error
        now = self._clock_ms()
        self.last_error = (reason, now)
        if self.failing_since is None:
            self.failing_since = now
        if previous is None or previous[0] != reason:
            log.warning("%s", reason)
        else:
            log.debug("%s", reason)
        self._on_failure(reason)

    def _falls_back(self) -> bool:
        """In "auto", a broker that will not speak MQTT 5 (it refuses the version, or
        closes or stays silent before CONNACK) is asked in 3.1.1: once."""
        refused = self._connack in PROTOCOL_REFUSED
        silent = self._connack is None
        return self._setting == "auto" and self.protocol == "5" and (refused or silent)

    def _next_url(self) -> bool:
        """Move to the next URL; return whether there is another one to move to."""
        if len(self._brokers) < 2:
            return False
        self._index = (self._index + 1) % len(self._brokers)
        return True
