"""chatctl's command line, declared once: every command, argument and option.

Two front ends are built from this table and nothing else: the typer app
(``cli.build_app``: help, completion, usage errors) and the fast path
(``fast.parse``: ``send``, ``status``, ``join`` and ``tail`` without importing
typer, for start-up time). A value is read from its text by the same function
on both (its ``Kind``), so the two cannot accept different things, and a
command's handler is called with the same keyword arguments either way.

The fast path imports this module on every call: it holds data and small
functions, and imports nothing heavier than pathlib.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mqchat.errors import UsageError
from mqchat.protocol.ciphers import CIPHERS, DEFAULT_CIPHER
from mqchat.protocol.limits import MAX_SEQ

DEFAULT_TIMEOUT = 10.0
MIN_TIMEOUT = 0.1
MAX_TIMEOUT = 24 * 3600.0
"""A day: longer than anything chatd takes, and short of what a poll() can wait."""
MAX_COUNT = MAX_SEQ
"""The largest ``-n`` or ``--since``: seq numbers are SQLite integers."""
DEFAULT_LINES = 10

EXIT_STATUS_HELP = (
    "Exit status: 0 ok; 1 chatd refused (not joined, bad passphrase, too long...); "
    "2 usage; 3 chatd is not running or not answering."
)
HELP_OPTIONS = ("-h", "--help")


# ---------------------------------------------------------------------- value kinds


def _shown(text: str) -> str:
    """A value quoted for an error message: escaped, and cut if long."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def read_count(text: str) -> int:
    """``-n``, ``--since``: ASCII digits, 0 to MAX_COUNT.

    Not int(): it takes "+3", " 3", "3_0" and Arabic-Indic digits too.
    """
    if (
        not (text.isascii() and text.isdigit())
        or len(text) > len(str(MAX_COUNT))
        or int(text) > MAX_COUNT
    ):
        raise UsageError(f"{_shown(text)} is not a valid count: a whole number, 0 to {MAX_COUNT}")
    return int(text)


def read_seconds(text: str) -> float:
    """``--timeout``: a number of seconds from MIN_TIMEOUT to MAX_TIMEOUT."""
    try:
        seconds = float(text)
    except ValueError:
        raise UsageError(f"{_shown(text)} is not a number of seconds") from None
    # "not (a <= x <= b)" and not "x < a or x > b": nan compares false to all.
    if not MIN_TIMEOUT <= seconds <= MAX_TIMEOUT:
        raise UsageError(
            f"must be between {MIN_TIMEOUT:g} and {MAX_TIMEOUT:g} seconds, not {_shown(text)}"
        )
    return seconds


def read_path(text: str) -> Path:
    """A file or directory name; the command that opens it says what is wrong with it."""
    if not text:
        raise UsageError("an empty path names nothing")
    return Path(text)


def read_text(text: str) -> str:
    return text


# Plain classes, not NamedTuples or dataclasses: defining those costs the fast
# path a millisecond or more of start-up.


class Kind:
    """What an option's value is, and how it is read from its text."""

    __slots__ = ("choices", "python_type", "read")

    def __init__(
        self, python_type: type, read: Callable[[str], Any], choices: tuple[str, ...] = ()
    ) -> None:
        self.python_type = python_type
        self.read = read
        """Raises UsageError for text that is not a value of this kind."""
        self.choices = choices
        """When not empty: the only texts accepted, exactly as written."""


COUNT = Kind(int, read_count)
SECONDS = Kind(float, read_seconds)
PATH = Kind(Path, read_path)
TEXT = Kind(str, read_text)
CIPHER = Kind(str, read_text, CIPHERS)


def read_value(kind: Kind, text: str) -> Any:
    if kind.choices and text not in kind.choices:
        raise UsageError(f"{_shown(text)} is not one of {', '.join(kind.choices)}")
    return kind.read(text)


# ---------------------------------------------------------------------- parameters


class Option:
    """``--name VALUE`` (or ``--name=VALUE``); a flag (False unless given) when ``kind`` is None."""

    __slots__ = ("default", "dest", "flags", "help", "kind", "metavar")

    def __init__(
        self,
        dest: str,
        flags: tuple[str, ...],
        help: str,
        kind: Kind | None = None,
        default: Any = None,
        *,
        metavar: str | None = None,
    ) -> None:
        self.dest = dest
        self.flags = flags
        self.help = help
        self.kind = kind
        self.default = default
        self.metavar = metavar

    @property
    def is_flag(self) -> bool:
        return self.kind is None

    def __repr__(self) -> str:
        return f"Option({self.flags[-1]})"


class Argument:
    """A positional argument; ``many`` takes every remaining word (zero or more)."""

    __slots__ = ("dest", "help", "joined_room", "many", "required")

    def __init__(
        self,
        dest: str,
        help: str,
        *,
        required: bool = True,
        many: bool = False,
        joined_room: bool = False,
    ) -> None:
        self.dest = dest
        self.help = help
        self.required = required
        self.many = many
        self.joined_room = joined_room
        """Names a room chatd has joined: the shell completes it from `rooms`."""

    @property
    def metavar(self) -> str:
        return self.dest.upper() + ("..." if self.many else "")

    def __repr__(self) -> str:
        return f"Argument({self.metavar})"


Param = Option | Argument


class Command:
    """One command: its words, its parameters, and what runs it."""

    __slots__ = ("fast", "group", "handler", "help", "name", "params")

    def __init__(
        self,
        name: str,
        help: str,
        handler: str,
        params: tuple[Param, ...] = (),
        *,
        fast: bool = False,
        group: str | None = None,
    ) -> None:
        self.name = name
        self.help = help
        self.handler = handler
        """``module:function`` under mqchat.client, called as ``function(Options, **values)``."""
        self.params = params
        self.fast = fast
        """Parsed by the fast path too (so its handler must import nothing heavy)."""
        self.group = group
        """The word before ``name`` (``chatctl service install``)."""

    def handler_function(self) -> Callable[..., None]:
        from importlib import import_module

        module, function = self.handler.split(":")
        handler: Callable[..., None] = getattr(import_module(f"mqchat.client.{module}"), function)
        return handler

    @property
    def options(self) -> tuple[Option, ...]:
        return tuple(p for p in self.params if isinstance(p, Option))

    @property
    def arguments(self) -> tuple[Argument, ...]:
        return tuple(p for p in self.params if isinstance(p, Argument))

    def __repr__(self) -> str:
        return f"Command({' '.join(filter(None, (self.group, self.name)))})"


def call_values(params: Sequence[Param], given: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments for ``params``: what was given, else the defaults.

    Both front ends pass what they parsed through here, so a handler gets the
    same call from either: a ``many`` argument is always a list, possibly empty.
    """
    values: dict[str, Any] = {}
    for param in params:
        value = given.get(param.dest)
        if isinstance(param, Argument) and param.many:
            value = list(value or ())
        elif value is None and isinstance(param, Option):
            value = False if param.is_flag else param.default
        values[param.dest] = value
    return values


# ---------------------------------------------------------------------- the table

ROOM = Argument("room", "A room you have joined.", joined_room=True)
JSON_OBJECT = Option("as_json", ("--json",), "One JSON object.")

GLOBAL_OPTIONS = (
    Option(
        "runtime_dir",
        ("--runtime-dir",),
        "chatd's runtime directory (default: $MQCHAT_RUNTIME_DIR, "
        "else $XDG_RUNTIME_DIR/mqchat, else /tmp/mqchat-UID).",
        PATH,
        metavar="DIR",
    ),
    Option(
        "timeout",
        ("--timeout",),
        f"How long to wait for chatd ({MIN_TIMEOUT:g} to {MAX_TIMEOUT:g}).",
        SECONDS,
        DEFAULT_TIMEOUT,
        metavar="SECONDS",
    ),
)
"""Given before the command; the handler gets them as ``commands.Options``."""

TEMPLATE_HELP = (
    "Python format over {room} {seq} {id} {ts} {date} {time} {sender} "
    "{fingerprint} {verified} {own} {legacy} {text} ({date} and {time} are local)."
)

COMMANDS: tuple[Command, ...] = (
    Command(
        "create",
        "Create ROOM with a random 256-bit key (no passphrase); then `chatctl invite ROOM`.",
        "key_commands:create",
        (
            Argument("room", "Room name."),
            Option(
                "cipher",
                ("--cipher",),
                f"Cipher for what you send (default: {DEFAULT_CIPHER}).",
                CIPHER,
            ),
        ),
    ),
    Command(
        "invite",
        "Print an invite to ROOM on stdout: one mqchat: line that is a SECRET (it holds "
        "the room's key). Pass it on privately; the invitee runs `chatctl join --invite`.",
        "key_commands:invite",
        (ROOM,),
    ),
    Command(
        "join",
        "Join ROOM with a passphrase, or with --invite the room an invite names. The "
        "passphrase or invite comes from a hidden prompt on a terminal, else one line of "
        "stdin, else the 0600 file given; never from the command line.",
        "commands:join",
        (
            Argument(
                "room",
                "Room name; everyone in it uses the same name. Not with --invite.",
                required=False,
            ),
            Option(
                "invite",
                ("--invite",),
                "Join by invite (from `chatctl invite`), not by passphrase.",
            ),
            Option(
                "invite_file",
                ("--invite-file",),
                "Read the invite from this 0600 file (implies --invite).",
                PATH,
                metavar="FILE",
            ),
            Option(
                "passphrase_file",
                ("--passphrase-file",),
                "Read the passphrase from this 0600 file.",
                PATH,
                metavar="FILE",
            ),
            Option(
                "cipher",
                ("--cipher",),
                f"Cipher for what you send (default: {DEFAULT_CIPHER}; fernet in legacy rooms; "
                "a room joined again keeps its cipher).",
                CIPHER,
            ),
            Option("legacy", ("--legacy",), "Talk to users of the original program (unsafe)."),
            Option("weak", ("--weak",), "Accept a passphrase under 12 characters."),
        ),
        fast=True,
    ),
    Command(
        "leave",
        "Leave ROOM: stop receiving it and forget its key.",
        "other_commands:leave",
        (ROOM,),
    ),
    Command(
        "rooms",
        "List the rooms you have joined.",
        "other_commands:rooms",
        (Option("as_json", ("--json",), "One JSON array."),),
    ),
    Command(
        "send",
        "Send a message to ROOM; with no TEXT (or -), send each stdin line.",
        "commands:send",
        (
            ROOM,
            Argument(
                "text",
                "The message. None, or '-': each line of stdin is a message.",
                required=False,
                many=True,
            ),
        ),
        fast=True,
    ),
    Command(
        "chat",
        "Chat in ROOM: incoming messages above, your lines sent. Ctrl-D or /quit ends.\n\n"
        "With stdin not a terminal, send each line and end at EOF.",
        "other_commands:chat",
        (ROOM,),
    ),
    Command(
        "tail",
        "Print messages of ROOMs: the last N, then new ones as they arrive.",
        "commands:tail",
        (
            Argument(
                "rooms",
                "Rooms to show (default: all joined rooms).",
                required=False,
                many=True,
                joined_room=True,
            ),
            Option(
                "lines",
                ("-n", "--lines"),
                "Print the last N messages first.",
                COUNT,
                DEFAULT_LINES,
                metavar="N",
            ),
            Option("no_follow", ("--no-follow",), "Stop after the history."),
            Option("since", ("--since",), "Print the messages after SEQ.", COUNT, metavar="SEQ"),
            Option("as_json", ("--json",), "One JSON event per line (notices too)."),
            Option("template", ("--format",), TEMPLATE_HELP, TEXT, metavar="TEMPLATE"),
        ),
        fast=True,
    ),
    Command(
        "status",
        "Show chatd's name, broker connection, rooms and counters.",
        "commands:status",
        (JSON_OBJECT,),
        fast=True,
    ),
    Command(
        "who",
        "List who is in ROOM: name, fingerprint, verified or not, online or last seen.",
        "other_commands:who",
        (ROOM, JSON_OBJECT),
    ),
    Command(
        "members",
        "List ROOM's members with their roles, since which epoch, and fingerprints; "
        "newcomers not yet in a rekey show as pending.",
        "key_commands:members",
        (ROOM, JSON_OBJECT),
    ),
    Command(
        "rekey",
        "Give ROOM a new random key, sealed to each member separately (an admin's act; it "
        "also adds the newcomers admitted by invite); with --remove NAME..., leave NAMEs "
        "out: they can neither read nor find what is sent after.",
        "key_commands:rekey",
        (
            ROOM,
            Option("remove", ("--remove",), "Leave out the NAMEs that follow."),
            Argument("names", "Members to remove (with --remove).", required=False, many=True),
            JSON_OBJECT,
        ),
    ),
    Command(
        "role",
        "Make NAME an admin of ROOM (who may invite, rekey and remove) or a member again; "
        "an admin's act, made as a rekey.",
        "key_commands:role",
        (
            Argument("room", "The room."),
            Argument("name", "The member whose role changes."),
            Argument("role", "admin or member."),
            JSON_OBJECT,
        ),
    ),
    Command(
        "identity",
        "Show your name and key fingerprint, to compare with your peers.",
        "other_commands:identity",
        (JSON_OBJECT,),
    ),
    Command(
        "trust",
        "Pin the key of NAME in ROOM that has FINGERPRINT; without it, list the keys seen.",
        "other_commands:trust",
        (
            Argument("room", "The room.", joined_room=True),
            Argument("name", "The sender whose key you accept."),
            Argument(
                "fingerprint",
                "The fingerprint NAME read to you from `chatctl identity` (all of it, or "
                "at least its first 32 hex digits, as `who` and `members` print them; "
                "spaces between the groups are fine). Without it, list the keys seen as NAME.",
                required=False,
                many=True,
            ),
        ),
    ),
    Command(
        "config",
        "Show the settings chatd would use from this environment (no secrets).",
        "other_commands:show_config",
        (JSON_OBJECT,),
    ),
    Command(
        "man-pages",
        "Write the man pages chatctl.1 and chatd.1, made from these command definitions, "
        "into DIR (default: ~/.local/share/man/man1, where `man chatctl` finds them).",
        "other_commands:man_pages",
        (Option("directory", ("--dir",), "Where to write them.", PATH, metavar="DIR"),),
    ),
    Command(
        "install",
        "Write ~/.config/systemd/user/chatd.service for this installation's chatd.",
        "other_commands:service_install",
        group="service",
    ),
    Command(
        "print",
        "Print the unit that `chatctl service install` would write.",
        "other_commands:service_print",
        group="service",
    ),
    Command(
        "ui",
        "Full-screen interface: rooms, messages, members. Needs the ui extra (Textual): "
        "`pipx inject mqchat textual`, or `pip install '.\\[ui]'` in the source tree.\n\n"
        "Keys: F1 help, Ctrl+N/Ctrl+P next/previous room, F2 join, F3 leave, Ctrl+Q quit.",
        "ui.launch:run_ui",
        (
            Argument(
                "room",
                "The room to open (default: the first joined room).",
                required=False,
                joined_room=True,
            ),
        ),
    ),
)

GROUPS: dict[str, str] = {"service": "Run chatd as a systemd user service."}
"""Command groups and their help."""

FAST_COMMANDS: dict[str, Command] = {c.name: c for c in COMMANDS if c.fast and c.group is None}
TOP_LEVEL_WORDS = frozenset(c.name for c in COMMANDS if c.group is None) | frozenset(GROUPS)
"""Every word that may follow the global options."""
