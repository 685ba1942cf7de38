"""chatctl's typer app: every command, with its help, shell completion and usage errors.

Command lines that the fast path (mqchat.client.fast) does not take come here.
Options are read by the same functions as there (mqchat.client.cli_values), as
typer parsers; each command calls its handler with the values typer parsed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import typer  # noqa: TID253 -- this module is the typer app; cli.main imports it off the fast path

from mqchat.client import cli_values as v
from mqchat.client import commands, key_commands, other_commands
from mqchat.client.commands import Options
from mqchat.errors import MqchatError, UsageError
from mqchat.protocol.ciphers import CIPHERS, DEFAULT_CIPHER

T = TypeVar("T")
EXIT_STATUS_HELP = (
    "Exit status: 0 ok; 1 chatd refused (not joined, bad passphrase, too long...); "
    "2 usage; 3 chatd is not running or not answering."
)
COMPLETION_TIMEOUT_S = 1.0
"""A shell waits for completions: a chatd that does not answer at once gives none."""


def _parser(read: Callable[[str], T]) -> Callable[[Any], T]:
    """A cli_values reader as a typer parser: the same rule, typer's usage error."""

    def parse(text: Any) -> T:
        if not isinstance(text, str):  # a default, already a value
            return cast(T, text)
        try:
            return read(text)
        except UsageError as exc:
            raise typer.BadParameter(exc.message) from None

    return parse


def _joined_rooms(ctx: typer.Context, incomplete: str) -> list[str]:
    """The joined rooms that start with ``incomplete``, from chatd; none if it is not there."""
    runtime_dir = ctx.find_root().params.get("runtime_dir")
    try:
        with Options.from_flags(runtime_dir, COMPLETION_TIMEOUT_S).client() as c:
            rooms: list[dict[str, Any]] = c.call("rooms")
    except MqchatError:
        return []
    return [r["name"] for r in rooms if r["name"].startswith(incomplete)]


def _arg(metavar: str, help: str, *, joined: bool = False) -> Any:
    """A positional argument; ``joined``: the shell completes it from chatd's rooms."""
    completion = _joined_rooms if joined else None
    return typer.Argument(metavar=metavar, help=help, show_default=False, autocompletion=completion)


def _flag(flag: str, help: str) -> Any:
    """False unless given (no ``--no-`` form)."""
    return typer.Option(flag, help=help, show_default=False)


def _option(*flags: str, help: str, metavar: str, read: Callable[[str], Any]) -> Any:
    return typer.Option(*flags, help=help, metavar=metavar, parser=_parser(read))


def _file(help: str) -> Any:
    return _option(help=help, metavar="FILE", read=v.read_path)


Room = Annotated[str, _arg("ROOM", "A room you have joined.", joined=True)]
AsJson = Annotated[bool, _flag("--json", "One JSON object.")]


def _cipher(help: str) -> Any:
    # The choices as click shows an Enum's; read by the fast path's reader.
    metavar = f"[{'|'.join(CIPHERS)}]"
    choices = list(CIPHERS)
    return typer.Option(
        help=help, metavar=metavar, parser=_parser(v.read_cipher), autocompletion=lambda: choices
    )


app = typer.Typer(
    name="chatctl",
    help=f"Encrypted group chat over MQTT: talk to chatd.\n\n{EXIT_STATUS_HELP}\n\n"
    "`chatctl --version` prints the version.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
service = typer.Typer(help="Run chatd as a systemd user service.", no_args_is_help=True)
app.add_typer(service, name="service")


@app.callback()
def global_options(
    ctx: typer.Context,
    runtime_dir: Annotated[
        Path | None,
        _option(
            help="chatd's runtime directory (default: $MQCHAT_RUNTIME_DIR, "
            "else $XDG_RUNTIME_DIR/mqchat, else /tmp/mqchat-UID).",
            metavar="DIR",
            read=v.read_path,
        ),
    ] = None,
    timeout: Annotated[
        float,
        _option(
            help=f"How long to wait for chatd ({v.MIN_TIMEOUT:g} to {v.MAX_TIMEOUT:g}).",
            metavar="SECONDS",
            read=v.read_seconds,
        ),
    ] = v.DEFAULT_TIMEOUT,
) -> None:
    ctx.obj = Options.from_flags(runtime_dir, timeout)


@app.command(
    help="Create ROOM with a random 256-bit key (no passphrase); then `chatctl invite ROOM`."
)
def create(
    ctx: typer.Context,
    room: Annotated[str, _arg("ROOM", "Room name.")],
    cipher: Annotated[
        str | None, _cipher(f"Cipher for what you send (default: {DEFAULT_CIPHER}).")
    ] = None,
) -> None:
    key_commands.create(ctx.obj, room, cipher)


@app.command(
    help="Print an invite to ROOM on stdout: one mqchat: line that is a SECRET (it holds the "
    "room's key). Pass it on privately; the invitee runs `chatctl join --invite`.",
)
def invite(ctx: typer.Context, room: Room) -> None:
    key_commands.invite(ctx.obj, room)


JOIN_CIPHER_HELP = (
    f"Cipher for what you send (default: {DEFAULT_CIPHER}; fernet in legacy rooms; "
    "a room joined again keeps its cipher)."
)


@app.command(
    help="Join ROOM with a passphrase, or with --invite the room an invite names. The passphrase "
    "or invite comes from a hidden prompt on a terminal, else one line of stdin, else the "
    "0600 file given; never from the command line.",
)
def join(
    ctx: typer.Context,
    room: Annotated[
        str | None, _arg("ROOM", "Room name; everyone in it uses the same name. Not with --invite.")
    ] = None,
    invite: Annotated[
        bool, _flag("--invite", "Join by invite (from `chatctl invite`), not by passphrase.")
    ] = False,
    invite_file: Annotated[
        Path | None, _file("Read the invite from this 0600 file (implies --invite).")
    ] = None,
    passphrase_file: Annotated[
        Path | None, _file("Read the passphrase from this 0600 file.")
    ] = None,
    cipher: Annotated[str | None, _cipher(JOIN_CIPHER_HELP)] = None,
    legacy: Annotated[
        bool, _flag("--legacy", "Talk to users of the original program (unsafe).")
    ] = False,
    weak: Annotated[bool, _flag("--weak", "Accept a passphrase under 12 characters.")] = False,
) -> None:
    commands.join(
        ctx.obj,
        room,
        passphrase_file,
        cipher,
        legacy=legacy,
        weak=weak,
        invite=invite,
        invite_file=invite_file,
    )


@app.command(help="Leave ROOM: stop receiving it and forget its key.")
def leave(ctx: typer.Context, room: Room) -> None:
    other_commands.leave(ctx.obj, room)


@app.command(help="List the rooms you have joined.")
def rooms(
    ctx: typer.Context, as_json: Annotated[bool, _flag("--json", "One JSON array.")] = False
) -> None:
    other_commands.rooms(ctx.obj, as_json=as_json)


@app.command(help="Send a message to ROOM; with no TEXT (or -), send each stdin line.")
def send(
    ctx: typer.Context,
    room: Room,
    text: Annotated[
        list[str] | None,
        _arg("TEXT...", "The message. None, or '-': each line of stdin is a message."),
    ] = None,
) -> None:
    commands.send(ctx.obj, room, text or [])


@app.command(
    help="Chat in ROOM: incoming messages above, your lines sent. Ctrl-D or /quit ends.\n\nWith "
    "stdin not a terminal, send each line and end at EOF.",
)
def chat(ctx: typer.Context, room: Room) -> None:
    other_commands.chat(ctx.obj, room)


TEMPLATE_HELP = (
    "Python format over {room} {seq} {id} {ts} {date} {time} {sender} "
    "{fingerprint} {verified} {own} {legacy} {text} ({date} and {time} are local)."
)


@app.command(help="Print messages of ROOMs: the last N, then new ones as they arrive.")
def tail(
    ctx: typer.Context,
    rooms: Annotated[
        list[str] | None,
        _arg("ROOMS...", "Rooms to show (default: all joined rooms).", joined=True),
    ] = None,
    lines: Annotated[
        int,
        _option(
            "-n", "--lines", help="Print the last N messages first.", metavar="N", read=v.read_count
        ),
    ] = v.DEFAULT_LINES,
    no_follow: Annotated[bool, _flag("--no-follow", "Stop after the history.")] = False,
    since: Annotated[
        int | None, _option(help="Print the messages after SEQ.", metavar="SEQ", read=v.read_count)
    ] = None,
    as_json: Annotated[bool, _flag("--json", "One JSON event per line (notices too).")] = False,
    template: Annotated[
        str | None, typer.Option("--format", metavar="TEMPLATE", help=TEMPLATE_HELP)
    ] = None,
) -> None:
    commands.tail(
        ctx.obj,
        rooms or [],
        lines=lines,
        since=since,
        no_follow=no_follow,
        as_json=as_json,
        template=template,
    )


@app.command(help="Show chatd's name, broker connection, rooms and counters.")
def status(ctx: typer.Context, as_json: AsJson = False) -> None:
    commands.status(ctx.obj, as_json=as_json)


@app.command(help="List who is in ROOM: name, fingerprint, verified or not, online or last seen.")
def who(ctx: typer.Context, room: Room, as_json: AsJson = False) -> None:
    other_commands.who(ctx.obj, room, as_json=as_json)


@app.command(
    help="List ROOM's members with their roles, since which epoch, and fingerprints; newcomers "
    "not yet in a rekey show as pending.",
)
def members(ctx: typer.Context, room: Room, as_json: AsJson = False) -> None:
    key_commands.members(ctx.obj, room, as_json=as_json)


@app.command(
    help="Give ROOM a new random key, sealed to each member separately (an admin's act; it also "
    "adds the newcomers admitted by invite); with --remove NAME..., leave NAMEs out: they "
    "can neither read nor find what is sent after.",
)
def rekey(
    ctx: typer.Context,
    room: Room,
    remove: Annotated[bool, _flag("--remove", "Leave out the NAMEs that follow.")] = False,
    names: Annotated[
        list[str] | None, _arg("NAMES...", "Members to remove (with --remove).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    key_commands.rekey(ctx.obj, room, remove=remove, names=names or [], as_json=as_json)


@app.command(
    help="Make NAME an admin of ROOM (who may invite, rekey and remove) or a member again; an "
    "admin's act, made as a rekey.",
)
def role(
    ctx: typer.Context,
    room: Annotated[str, _arg("ROOM", "The room.")],
    name: Annotated[str, _arg("NAME", "The member whose role changes.")],
    role: Annotated[str, _arg("ROLE", "admin or member.")],
    as_json: AsJson = False,
) -> None:
    key_commands.role(ctx.obj, room, name, role, as_json=as_json)


@app.command(help="Show your name and key fingerprint, to compare with your peers.")
def identity(ctx: typer.Context, as_json: AsJson = False) -> None:
    other_commands.identity(ctx.obj, as_json=as_json)


FINGERPRINT_HELP = (
    "The fingerprint NAME read to you from `chatctl identity` (all of it, or at least its "
    "first 32 hex digits, as `who` and `members` print them; spaces between the groups are "
    "fine). Without it, list the keys seen as NAME."
)


@app.command(
    help="Pin the key of NAME in ROOM that has FINGERPRINT; without it, list the keys seen."
)
def trust(
    ctx: typer.Context,
    room: Annotated[str, _arg("ROOM", "The room.", joined=True)],
    name: Annotated[str, _arg("NAME", "The sender whose key you accept.")],
    fingerprint: Annotated[list[str] | None, _arg("FINGERPRINT...", FINGERPRINT_HELP)] = None,
) -> None:
    other_commands.trust(ctx.obj, room, name, fingerprint or [])


@app.command("config", help="Show the settings chatd would use from this environment (no secrets).")
def show_config(ctx: typer.Context, as_json: AsJson = False) -> None:
    other_commands.show_config(ctx.obj, as_json=as_json)


@app.command(
    "man-pages",
    help="Write the man pages chatctl.1 and chatd.1, made from these command definitions, into "
    "DIR (default: ~/.local/share/man/man1, where `man chatctl` finds them).",
)
def man_pages(
    ctx: typer.Context,
    directory: Annotated[
        Path | None, _option("--dir", help="Where to write them.", metavar="DIR", read=v.read_path)
    ] = None,
) -> None:
    other_commands.man_pages(ctx.obj, directory)


@service.command(
    "install", help="Write ~/.config/systemd/user/chatd.service for this installation's chatd."
)
def service_install(ctx: typer.Context) -> None:
    other_commands.service_install(ctx.obj)


@service.command("print", help="Print the unit that `chatctl service install` would write.")
def service_print(ctx: typer.Context) -> None:
    other_commands.service_print(ctx.obj)


@app.command(
    help="Full-screen interface: rooms, messages, members. Needs the ui extra (Textual): `pipx "
    "inject mqchat textual`, or `pip install '.\\[ui]'` in the source tree.\n\nKeys: F1 "
    "help, Ctrl+N/Ctrl+P next/previous room, F2 join, F3 leave, Ctrl+Q quit.",
)
def ui(
    ctx: typer.Context,
    room: Annotated[
        str | None, _arg("ROOM", "The room to open (default: the first joined room).", joined=True)
    ] = None,
) -> None:
    from mqchat.client.ui.launch import run_ui

    run_ui(ctx.obj, room)
