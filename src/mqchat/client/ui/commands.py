"""The interface's slash commands: ``/join ROOM [--legacy] [--weak] [--cipher C]``,
``/join --invite`` and others (the room commands: mqchat.client.ui.room_commands).

A line that starts with ``/`` is a command and is never sent, as in ``chatctl
chat``; ``//text`` sends ``/text``.
"""

from __future__ import annotations

import shlex
from typing import Any

from mqchat.client.render import escape
from mqchat.errors import UsageError
from mqchat.protocol.ciphers import CIPHERS
from mqchat.protocol.limits import normalize_room

ESCAPED_SLASH = "//"


def split_command(line: str) -> tuple[str, list[str]]:
    """``/join "a room" --weak`` as ``("/join", ["a room", "--weak"])``."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot read that command: {exc}") from None
    return words[0], words[1:]


def unknown_command(name: str) -> UsageError:
    return UsageError(
        f"unknown command {escape(name)}: nothing was sent; /help lists the commands, "
        f"and {ESCAPED_SLASH} at the start sends a line that starts with /"
    )


def parse_join(words: list[str]) -> dict[str, Any]:
    """``/join``'s words as JoinScreen's options (``room`` empty: ask for it)."""
    # cipher None: chatd's default for a new room, as `chatctl join` (room_options).
    options: dict[str, Any] = {"room": "", "cipher": None, "legacy": False, "weak": False}
    rest = list(words)
    while rest:
        word = rest.pop(0)
        if word in ("--legacy", "--weak"):
            options[word[2:]] = True
        elif word == "--invite" and not options["room"] and not rest:
            return {"invite": True}  # the invite is pasted into a masked field
        elif word == "--cipher" and rest and rest[0] in CIPHERS:
            options["cipher"] = rest.pop(0)
        elif not word.startswith("--") and not options["room"]:
            options["room"] = normalize_room(word)
        else:
            raise UsageError(
                f"/join takes ROOM [--legacy] [--weak] [--cipher {'|'.join(CIPHERS)}], "
                f"or --invite alone, "
                f"not {escape(word)}"
            )
    return options
