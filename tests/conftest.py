"""Shared fixtures: a session mosquitto, and factories for daemons and brokers."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from contrib_brokers import BridgedBroker
from harness import Broker, Daemon
from rabbitmq import rabbit_cluster, rabbit_cluster_session  # noqa: F401 -- fixtures, one cluster

INTEGRATION = Path(__file__).resolve().parent / "integration"


def _cache_bytecode() -> None:
    """With PYTHONDONTWRITEBYTECODE set (as on the project's machine), every chatd and
    chatctl the suite starts compiles mqchat's modules again: ~90 ms of CPU a chatd,
    a third of its start. Its children keep their bytecode in a private directory of
    this process instead (PYTHONPYCACHEPREFIX), never in the source tree."""
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is None:
        return
    if "PYTHONPYCACHEPREFIX" in os.environ:
        return
    cache = tempfile.mkdtemp(prefix="mqchat-tests-pyc-")  # 0700, ours alone
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    os.environ["PYTHONPYCACHEPREFIX"] = cache


_cache_bytecode()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration: `pytest -m "not integration"` runs the rest.

    Under pytest-xdist (`--dist loadgroup`, as scripts/test.sh runs), a file's tests
    run in one worker, in order, with its module fixtures (README's lines build on
    each other); the RabbitMQ tests of every file share one worker, so one
    three-node cluster serves them all."""
    for item in items:
        if INTEGRATION in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)
        rabbit = item.get_closest_marker("rabbitmq") is not None
        item.add_marker(pytest.mark.xdist_group("rabbitmq" if rabbit else item.path.name))


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    b = Broker().start()
    yield b
    b.cleanup()


@pytest.fixture
def room() -> str:
    """A room name no other test uses."""
    return f"room-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_daemon(broker: Broker) -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []

    def make(name: str, *, on: Broker | None = None, start: bool = True, **kw: object) -> Daemon:
        d = Daemon(on or broker, name, **kw)  # type: ignore[arg-type]
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in reversed(made):
        d.cleanup()


@pytest.fixture
def make_broker() -> Iterator[Callable[..., Broker]]:
    made: list[Broker] = []

    def make(**kw: object) -> Broker:
        b = Broker(**kw)  # type: ignore[arg-type]
        made.append(b)
        return b.start()

    yield make
    for b in reversed(made):
        b.cleanup()


@pytest.fixture
def brokers(make_broker: Callable[..., Broker]) -> Iterator[tuple[Broker, BridgedBroker]]:
    """(A, B): A a persistent mosquitto, B bridged to it by contrib/mosquitto-bridge.conf."""
    a = make_broker(persistence=True)
    b = BridgedBroker(a)
    try:
        yield a, b.start()
    finally:
        b.cleanup()
