"""The broker link's connect decisions, without a broker: URLs, MQTT 5 → 3.1.1,
backoff, and failures as the sentences a user reads (docs/brokers.md)."""

from __future__ import annotations

import logging
import random

import pytest

from mqchat.config import BrokerUrl, parse_broker_url
from mqchat.daemon.broker_dial import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    CONNACK_TIMEOUT_S,
    HINT_NO_CONNACK,
    V5_PROBE_S,
    Dial,
    backoff_delays,
)

ONE = (parse_broker_url("mqtt://one:1883"),)
TWO = (parse_broker_url("mqtt://one:1883"), parse_broker_url("mqtt://two:1883"))


def dial(brokers: tuple[BrokerUrl, ...] = ONE, protocol: str = "auto") -> tuple[Dial, list[str]]:
    told: list[str] = []
    d = Dial(
        brokers,
        protocol,
        rng=random.Random(7),
        clock_ms=lambda: 1_000,
        on_failure=told.append,
    )
    return d, told


def test_backoff_is_jittered_capped_and_starts_short() -> None:
    delays = backoff_delays(random.Random(1))
    seen = [delays() for _ in range(40)]
    assert all(BACKOFF_FIRST_S / 2 <= d <= BACKOFF_MAX_S for d in seen)
    assert seen[0] <= BACKOFF_FIRST_S
    assert max(seen[20:]) > BACKOFF_MAX_S / 4  # it climbs


def test_auto_waits_briefly_for_an_mqtt_5_answer_until_one_came() -> None:
    d, _ = dial()
    assert d.begin() == V5_PROBE_S
    assert d.connack(0, False, "Success", None).session
    d.ended(still_connected=False, stopping=False)
    assert d.begin() == CONNACK_TIMEOUT_S
    forced, _ = dial(protocol="5")
    assert forced.begin() == CONNACK_TIMEOUT_S


def test_a_silent_broker_is_asked_again_at_once_in_3_1_1(caplog: pytest.LogCaptureFixture) -> None:
    d, told = dial()
    d.begin()
    with caplog.at_level(logging.WARNING):
        redial = d.ended(still_connected=False, stopping=False)
    assert redial is not None and redial.delay_s == 0.0 and redial.new_client
    assert d.protocol == "3.1.1"
    assert "does not speak MQTT 5 (no CONNACK)" in caplog.text
    assert told == []  # not a failure: the next attempt is the answer
    d.begin()
    redial = d.ended(still_connected=False, stopping=False)  # silent in 3.1.1 too
    assert redial is not None and redial.delay_s > 0 and not redial.new_client
    assert told == ["no answer to CONNECT from mqtt://one:1883" + HINT_NO_CONNACK]


def test_a_refused_protocol_version_falls_back_unlogged_once() -> None:
    d, told = dial()
    d.begin()
    assert not d.connack(0x84, True, "Unsupported protocol version", None).session
    assert told == []
    redial = d.ended(still_connected=False, stopping=False)
    assert redial is not None and redial.delay_s == 0.0 and d.protocol == "3.1.1"
    d.begin()
    d.connack(1, True, "Unacceptable protocol version", None)
    assert told == ["mqtt://one:1883 refused the connection: Unacceptable protocol version"]


def test_forced_mqtt_5_never_falls_back_and_says_why() -> None:
    d, told = dial(protocol="5")
    d.begin()
    d.connack(0x84, True, "Unsupported protocol version", None)
    redial = d.ended(still_connected=False, stopping=False)
    assert d.protocol == "5" and redial is not None and redial.delay_s > 0
    assert told == ["mqtt://one:1883 refused the connection: Unsupported protocol version"]


def test_a_qos_0_broker_is_hung_up_on_with_the_reason() -> None:
    d, told = dial()
    d.begin()
    answer = d.connack(0, False, "Success", 0)
    assert not answer.session and answer.hang_up
    assert "allows only QoS 0" in told[0] and "use another broker" in told[0]
    assert d.status()["last_error"]["reason"] == told[0]


def test_failures_move_along_the_urls_and_a_session_stays_put() -> None:
    d, told = dial(TWO, protocol="5")
    d.begin()
    redial = d.cannot_open(ConnectionRefusedError(111, "Connection refused"))
    assert redial.new_client and str(d.url) == "mqtt://two:1883"
    assert told == ["cannot connect to mqtt://one:1883: [Errno 111] Connection refused"]
    d.begin()
    d.connack(0, False, "Success", None)
    assert d.failing_since is None and d.connected_reason() == (
        "connected to mqtt://two:1883 (MQTT 5)"
    )
    redial = d.ended(still_connected=False, stopping=False)
    assert redial is not None and not redial.new_client and str(d.url) == "mqtt://two:1883"
    assert redial.delay_s <= BACKOFF_FIRST_S  # a fresh outage starts short


def test_a_repeated_failure_is_logged_once_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    d, told = dial(protocol="5")
    with caplog.at_level(logging.DEBUG, logger="mqchat.daemon.broker_dial"):
        for _ in range(3):
            d.begin()
            d.cannot_open(OSError("no route"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and len(told) == 3
    assert d.status() == {
        "url": "mqtt://one:1883",
        "protocol": "5",
        "last_error": {"reason": "cannot connect to mqtt://one:1883: no route", "at_ms": 1_000},
        "failing_since_ms": 1_000,
    }


def test_closing_reasons_name_the_broker_and_what_happened() -> None:
    d, _ = dial()
    assert d.closed_reason("Session taken over") == (
        "mqtt://one:1883 ended the connection: Session taken over"
    )
    assert "the broker stopped or restarted" in d.closed_reason(None)


def test_stopping_ends_the_attempts_quietly() -> None:
    d, told = dial()
    d.begin()
    assert d.ended(still_connected=False, stopping=True) is None
    assert told == [] and d.protocol == "5"
