"""mosquittos configured from the files in contrib/, for tests.

``ContribBroker`` runs contrib/mosquitto.conf; ``BridgedBroker`` is a persistent
mosquitto (as harness.Broker makes it) that also holds contrib/mosquitto-bridge.conf,
aimed at another broker on loopback. Each differs from the shipped file only in
its port and directory, so the tests prove the files users copy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from harness import Broker, mosquitto_binary, wait_until
from mqtt311 import Mqtt311Client

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"


def _replace_line(text: str, old: str, new: str, source: Path) -> str:
    lines = text.splitlines()
    if old not in lines:
        raise AssertionError(f"{source} no longer has the line {old!r}")
    return "\n".join(new if line == old else line for line in lines)


class ConfiguredBroker(Broker):
    """A mosquitto on loopback started from ``config_lines()``; restartable on its port."""

    def config_lines(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> ConfiguredBroker:
        conf = self.dir / "mosquitto.conf"
        conf.write_text("\n".join(self.config_lines()) + "\n")
        if os.geteuid() == 0:  # mosquitto drops to its own user, which must write here
            with contextlib.suppress(LookupError):
                for path in (self.dir, *self.dir.iterdir()):
                    shutil.chown(path, user="mosquitto")
        log = (self.dir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
        wait_until(self._accepts, f"mosquitto on port {self.port}")
        return self

    def log_text(self) -> str:
        path = self.dir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


class ContribBroker(ConfiguredBroker):
    """contrib/mosquitto.conf, listening on this broker's port and persisting in its
    dir; anonymous clients allowed (the file leaves that commented out)."""

    def __init__(self) -> None:
        super().__init__(persistence=True)

    def config_lines(self) -> list[str]:
        source = CONTRIB / "mosquitto.conf"
        text = _replace_line(
            source.read_text(),
            "listener 1883 127.0.0.1",
            f"listener {self.port} 127.0.0.1",
            source,
        )
        text = _replace_line(
            text,
            "persistence_location /var/lib/mosquitto/",
            f"persistence_location {self.dir}/",
            source,
        )
        return [*text.splitlines(), "allow_anonymous true"]


class DefaultLimitsBroker(ConfiguredBroker):
    """mosquitto's default limits (max_queued_messages 1000), with persistence on."""

    def __init__(self) -> None:
        super().__init__(persistence=True)

    def config_lines(self) -> list[str]:
        return [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.dir}/",
        ]


class BridgedBroker(ConfiguredBroker):
    """Broker B: persistent, bridging mqchat/# both ways at QoS 1 to ``remote``."""

    def __init__(self, remote: Broker) -> None:
        super().__init__(persistence=True)
        self.remote = remote

    def config_lines(self) -> list[str]:
        source = CONTRIB / "mosquitto-bridge.conf"
        bridge = _replace_line(
            source.read_text(),
            "address broker-a.example.net:1883",
            f"address 127.0.0.1:{self.remote.port}",
            source,
        )
        return [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "set_tcp_nodelay true",
            "max_queued_messages 100000",
            "persistence true",
            f"persistence_location {self.dir}/",
            "autosave_interval 1",
            *bridge.splitlines(),
        ]

    def start(self) -> BridgedBroker:
        super().start()
        self.wait_bridged()
        return self

    def wait_bridged(self) -> None:
        """Until a probe published on A reaches a subscriber on B: the bridge is up."""
        topic = f"mqchat/bridge-probe/{uuid.uuid4().hex[:10]}"
        probe = Mqtt311Client(persistent=False).connect(self.port, subscribe=topic)
        sender = Mqtt311Client(persistent=False).connect(self.remote.port)
        try:

            def crossed() -> bool:
                sender.publish(topic, b"probe")  # one more each poll, until one arrives
                return bool(probe.payloads())

            wait_until(crossed, f"the bridge from port {self.port} to {self.remote.port}")
        finally:
            probe.close()
            sender.close()
