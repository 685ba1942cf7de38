"""chatctl: the command-line client of chatd (console script ``chatctl``).

Plain ``send`` and ``status`` command lines are run by mqchat.client.fast
without typer, which is imported only when the app is built; commands import
what only they need.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from mqchat.client import commands
from mqchat.client.commands import (
    DEFAULT_TIMEOUT,
    MAX_COUNT,
    MAX_TIMEOUT,
    MIN_TIMEOUT,
    Options,
    check_timeout,
    err,
    out,
    stdin_text,
)
from mqchat.errors import MqchatError

if TYPE_CHECKING:
    import typer

    from mqchat.client.ipc_client import Client

EXIT_STATUS_HELP = (
    "Exit status: 0 ok; 1 chatd refused (not joined, bad passphrase, too long...); "
    "2 usage; 3 chatd is not running or not answering."
)


class Cipher(StrEnum):
    fernet = "fernet"
    aes_256_gcm = "aes-256-gcm"
    chacha20_poly1305 = "chacha20-poly1305"


def _timeout(seconds: float) -> float:
    # The same rule as the fast path's; typer's own min/max would let nan through.
    try:
        return check_timeout(seconds)
    except MqchatError as exc:
        raise typer.BadParameter(exc.message.removeprefix("--timeout ")) from None


def _options(
    ctx: typer.Context,
    runtime_dir: Annotated[
        Path | None,
        typer.Option(
            "--runtime-dir",
            metavar="DIR",
            help="chatd's runtime directory [default: $MQCHAT_RUNTIME_DIR, "
            "else $XDG_RUNTIME_DIR/mqchat, else /tmp/mqchat-UID]",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            callback=_timeout,
            help=f"How long to wait for chatd ({MIN_TIMEOUT:g} to {MAX_TIMEOUT:g}).",
        ),
    ] = DEFAULT_TIMEOUT,
) -> None:
    from mqchat.paths import runtime_dir as default_runtime_dir

    ctx.obj = Options(runtime_dir or default_runtime_dir(), timeout)


def _client(ctx: typer.Context) -> Client:
    from mqchat.client.ipc_client import Client

    opts: Options = ctx.obj
    return Client(opts.runtime_dir, opts.timeout)


def _room(name: str) -> str:
    from mqchat.protocol.limits import normalize_room

    return normalize_room(name)


# ---------------------------------------------------------------------- join / leave


def join(
    ctx: typer.Context,
    room: Annotated[str, typer.Argument(help="Room name; everyone in it uses the same name.")],
    passphrase_file: Annotated[
        Path | None,
        typer.Option(
            "--passphrase-file", metavar="FILE", help="Read the passphrase from this 0600 file."
        ),
    ] = None,
    cipher: Annotated[
        Cipher | None, typer.Option("--cipher", help="Cipher for what you send.")
    ] = None,
    legacy: Annotated[
        bool, typer.Option("--legacy", help="Talk to users of the original program (unsafe).")
    ] = False,
    weak: Annotated[
        bool, typer.Option("--weak", help="Accept a passphrase under 12 characters.")
    ] = False,
) -> None:
    """Join ROOM with a passphrase: hidden prompt on a terminal, else one line of stdin."""
    commands.join(ctx.obj, room, passphrase_file, cipher and cipher.value, legacy=legacy, weak=weak)


def leave(
    ctx: typer.Context, room: Annotated[str, typer.Argument(help="A room you have joined.")]
) -> None:
    """Leave ROOM: stop receiving it and forget its key."""
    name = _room(room)
    with _client(ctx) as c:
        c.call("leave", {"room": name})
    out(f"left {name}")


def rooms(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """List the rooms you have joined."""
    from mqchat.client.render import escape, safe_json

    with _client(ctx) as c:
        result: list[dict[str, Any]] = c.call("rooms")
    if as_json:
        out(safe_json(result))  # type: ignore[arg-type]
        return
    for r in result:
        flags = ", ".join(
            f
            for f in (r["cipher"], "legacy" if r["legacy"] else "", "weak" if r["weak"] else "")
            if f
        )
        out(f"{escape(r['name'])}\t{flags}\tlast seq {r['last_seq']}")
        if r.get("warning"):
            out(f"\t! {r['warning']}")


# ---------------------------------------------------------------------- send / chat


def send(
    ctx: typer.Context,
    room: Annotated[str, typer.Argument(help="A room you have joined.")],
    text: Annotated[
        list[str] | None,
        typer.Argument(help="The message. None, or '-': each line of stdin is a message."),
    ] = None,
) -> None:
    """Send a message to ROOM; with no TEXT (or -), send each stdin line."""
    commands.send(ctx.obj, room, text)


def chat(
    ctx: typer.Context, room: Annotated[str, typer.Argument(help="A room you have joined.")]
) -> None:
    """Chat in ROOM: incoming messages above, your lines sent. Ctrl-D or /quit ends.

    With stdin not a terminal, send each line and end at EOF.
    """
    name = _room(room)
    with _client(ctx) as c:
        stdin = stdin_text()
        if not stdin.isatty():
            from mqchat.client.sending import send_lines

            send_lines(c, name, stdin, err)
            return
        from mqchat.client.chat_session import run_chat

        run_chat(c, name, commands.renderer(as_json=False, template=None, show_room=False))


# ---------------------------------------------------------------------- tail


def tail(
    ctx: typer.Context,
    rooms: Annotated[
        list[str] | None, typer.Argument(help="Rooms to show [default: all joined rooms].")
    ] = None,
    lines: Annotated[
        int,
        typer.Option(
            "-n", "--lines", min=0, max=MAX_COUNT, help="Print the last N messages first."
        ),
    ] = 10,
    no_follow: Annotated[bool, typer.Option("--no-follow", help="Stop after the history.")] = False,
    since: Annotated[
        int | None,
        typer.Option(
            "--since", metavar="SEQ", min=0, max=MAX_COUNT, help="Print the messages after SEQ."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON event per line (notices too).")
    ] = False,
    template: Annotated[
        str | None,
        typer.Option(
            "--format",
            metavar="TEMPLATE",
            help="Python format over {room} {seq} {id} {ts} {date} {time} {sender} "
            "{fingerprint} {verified} {own} {legacy} {text} ({date} and {time} are local).",
        ),
    ] = None,
) -> None:
    """Print messages of ROOMs: the last N, then new ones as they arrive."""
    commands.tail(
        ctx.obj,
        rooms,
        lines=lines,
        since=since,
        follow=not no_follow,
        as_json=as_json,
        template=template,
    )


# ---------------------------------------------------------------------- status etc.


def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Show chatd's name, broker connection, rooms and counters."""
    commands.status(ctx.obj, as_json=as_json)


def identity(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Show your name and key fingerprint, to compare with your peers."""
    from mqchat.client.render import escape, safe_json
    from mqchat.protocol.fingerprints import format_fingerprint

    with _client(ctx) as c:
        ident: dict[str, Any] = c.call("identity")
    if as_json:
        out(safe_json(ident))
        return
    out(f"{escape(ident['name'])}  {format_fingerprint(ident['fingerprint'])}")


def trust(
    ctx: typer.Context,
    room: Annotated[str, typer.Argument(help="The room.")],
    name: Annotated[str, typer.Argument(help="The sender whose key you accept.")],
    fingerprint: Annotated[
        str | None,
        typer.Argument(
            help="The fingerprint NAME read to you from `chatctl identity` (all of it, or "
            "at least its first 32 hex digits). Without it, list the keys seen as NAME.",
        ),
    ] = None,
) -> None:
    """Pin the key of NAME in ROOM that has FINGERPRINT; without it, list the keys seen."""
    from mqchat.client.render import escape
    from mqchat.errors import NothingToTrust
    from mqchat.protocol.fingerprints import format_fingerprint

    params = {"room": _room(room), "name": name, "fingerprint": fingerprint}
    with _client(ctx) as c:
        result: dict[str, Any] = c.call("trust", params)
    who, where = escape(result["name"]), escape(result["room"])
    if result.get("trusted"):
        out(f"trusted {who} in {where}: {format_fingerprint(result['trusted'])}")
        return
    candidates = result.get("candidates") or []
    if not candidates:
        raise NothingToTrust(f"no key has spoken as {who} in {where} yet")
    out(f"keys seen as {who} in {where}:")
    for key in candidates:
        seen = (
            f"first {key['first_seen']}, last {key['last_seen']}, {key['messages']} messages"
            if key.get("first_seen")
            else "pinned earlier"
        )
        mark = "pinned" if key.get("pinned") else "not pinned"
        out(f"  {format_fingerprint(key['fingerprint'])}  ({mark}; {seen})")
    raise NothingToTrust(
        f"nothing pinned: ask {who} to read you their fingerprint (`chatctl identity`), then "
        f"run `chatctl trust {where} {who} FINGERPRINT`"
    )


def show_config(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Show the settings chatd would use from this environment (no secrets)."""
    from mqchat.client.render import safe_json
    from mqchat.config import load_settings

    # chatctl's --runtime-dir is the flag a chatd started here would be given.
    runtime_dir = ctx.find_root().params.get("runtime_dir")
    flags = {"runtime_dir": str(runtime_dir) if runtime_dir is not None else None}
    settings = load_settings(flags, os.environ).public_view()
    if as_json:
        out(safe_json(settings))
        return
    sources = settings.pop("sources")
    for key, value in _flatten(settings):
        origin = sources.get(key)
        out(f"{key} = {value!r}" + (f"  # {origin}" if origin else ""))


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            items.extend(_flatten(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items


def service_install() -> None:
    """Write ~/.config/systemd/user/chatd.service for this installation's chatd."""
    from mqchat.client.service_unit import chatd_path, install_unit

    try:
        path = install_unit()
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise MqchatError(f"cannot write the unit{where}: {exc.strerror or exc}") from None
    out(f"wrote {path} (ExecStart={chatd_path()})")
    out("now run: systemctl --user daemon-reload && systemctl --user enable --now chatd")


def service_print() -> None:
    """Print the unit that `chatctl service install` would write."""
    from mqchat.client.service_unit import render_unit

    sys.stdout.write(render_unit())


# ---------------------------------------------------------------------- entry point


def build_app() -> typer.Typer:
    """The typer app: every command, with its help and usage errors."""
    # The commands' annotations name typer, and typer evaluates them in this
    # module; importing it here keeps it out of the fast path.
    global typer  # noqa: PLW0603 -- bound once, to the module typer itself
    import typer

    app = typer.Typer(
        name="chatctl",
        help="Encrypted group chat over MQTT: talk to chatd.\n\n" + EXIT_STATUS_HELP,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=True,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_options)
    for command in (join, leave, rooms, send, chat, tail, status, identity, trust):
        app.command()(command)
    app.command("config")(show_config)
    service_app = typer.Typer(help="Run chatd as a systemd user service.", no_args_is_help=True)
    service_app.command("install")(service_install)
    service_app.command("print")(service_print)
    app.add_typer(service_app, name="service")
    return app


def main() -> None:
    from mqchat.client.fast import run

    try:
        code = run(sys.argv[1:])
        if code is not None:
            sys.exit(code)
        build_app()(prog_name="chatctl")
    except MqchatError as exc:
        err(f"ERROR: {exc.message}")
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        commands.quiet_broken_pipe()
        sys.exit(0)
    except KeyboardInterrupt:
        sys.exit(130)
