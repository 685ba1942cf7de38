"""How to start chatd, said right for this user: the words after "chatd is not running".

Plain ``chatd &`` connects to the public default broker unless config.toml or
MQCHAT_BROKER names another, and listens in the default runtime directory; a
user with the systemd unit installed starts it with systemctl. Worked out only
when chatd is not there, so ``chatctl send`` pays nothing for it.
"""

from __future__ import annotations

import os
from pathlib import Path

GENERIC = "start it with `chatd &` or `systemctl --user start chatd`"
OWN_BROKER_EXAMPLE = "mqtt://localhost:1883"


def start_hint(runtime_dir: Path) -> str:
    """What to run so that chatctl finds a chatd serving ``runtime_dir``."""
    from mqchat.client.service_unit import UNIT_NAME, user_unit_dir
    from mqchat.config import DEFAULT_BROKER, load_settings
    from mqchat.errors import MqchatError

    try:
        settings = load_settings({}, os.environ)
    except MqchatError as exc:  # a broken config.toml: chatd would say the same
        return f"{GENERIC} (but first fix its configuration: {exc.message})"
    if (user_unit_dir() / UNIT_NAME).exists() and settings.runtime_dir == runtime_dir:
        return "start it with `systemctl --user start chatd` (its unit is installed)"
    command = "chatd"
    if settings.runtime_dir != runtime_dir:
        command += f" --runtime-dir {runtime_dir}"
    if str(settings.broker) == DEFAULT_BROKER:
        return (
            f"start it with `{command} --broker {OWN_BROKER_EXAMPLE} &` for a broker of your "
            f"own (or set [broker] url in config.toml); plain `{command} &` connects to the "
            f"public broker {DEFAULT_BROKER}. `chatctl service install` runs it as a service"
        )
    source = settings.sources.get("broker.url", "default")
    return (
        f"start it with `{command} &` (broker {settings.broker}, from the {source}), "
        "or as a service: `chatctl service install`"
    )
