"""What the commands that only the typer app parses do.

Each is called by its typer command (typer_app.py) with chatctl's global
options and the values typer parsed, and imports what only it needs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from mqchat.client import commands
from mqchat.client.commands import Options, err, out, stdin_text
from mqchat.errors import MqchatError


def _room(name: str) -> str:
    from mqchat.protocol.limits import normalize_room

    return normalize_room(name)


def leave(opts: Options, room: str) -> None:
    name = _room(room)
    with opts.client() as c:
        c.call("leave", {"room": name})
    out(f"left {name}")


def rooms(opts: Options, *, as_json: bool) -> None:
    from mqchat.client.render import escape, safe_json

    with opts.client() as c:
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


def chat(opts: Options, room: str) -> None:
    name = _room(room)
    with opts.client() as c:
        stdin = stdin_text()
        if not stdin.isatty():
            from mqchat.client.sending import send_lines

            send_lines(c, name, stdin, err)
            return
        from mqchat.client.chat_session import run_chat

        run_chat(c, name, commands.renderer(as_json=False, template=None, show_room=False))


def identity(opts: Options, *, as_json: bool) -> None:
    from mqchat.client.render import escape, safe_json
    from mqchat.protocol.fingerprints import format_fingerprint

    with opts.client() as c:
        ident: dict[str, Any] = c.call("identity")
    if as_json:
        out(safe_json(ident))
        return
    out(f"{escape(ident['name'])}  {format_fingerprint(ident['fingerprint'])}")


def trust(opts: Options, room: str, name: str, fingerprint: list[str]) -> None:
    from mqchat.client.room_requests import trust_key
    from mqchat.errors import NothingToTrust

    # Pasted from `who` unquoted, a grouped fingerprint arrives as several words.
    with opts.client() as c:
        said = trust_key(c, _room(room), name, "".join(fingerprint) or None)
    for line in said.out:
        out(line)
    if said.refusal:
        raise NothingToTrust(said.refusal)


def show_config(opts: Options, *, as_json: bool) -> None:
    from mqchat.client.config_toml import render_settings
    from mqchat.client.render import safe_json
    from mqchat.config import load_settings

    # chatctl's --runtime-dir is the flag a chatd started here would be given.
    flag = opts.runtime_dir_flag
    flags = {"runtime_dir": str(flag) if flag is not None else None}
    settings = load_settings(flags, os.environ).public_view()
    if as_json:
        out(safe_json(settings))
        return
    for line in render_settings(settings):
        out(line)


def man_pages(opts: Options, directory: Path | None) -> None:
    from mqchat.client.man_pages import default_dir, write_pages

    where = directory or default_dir()
    try:
        written = write_pages(where)
    except OSError as exc:
        raise MqchatError(f"cannot write the man pages in {where}: {exc.strerror or exc}") from None
    for path in written:
        out(f"wrote {path}")
    if directory is None:
        out("now `man chatctl` and `man chatd` show them")
    else:
        out(f"read them with `man -l {written[0]}`, or add {where.parent} to MANPATH")


def _unit_plan(opts: Options) -> tuple[Any, dict[str, Any] | None]:
    """(UnitPlan, the running chatd's status or None)."""
    from mqchat.client.service_unit import plan_unit, without_mqchat_env
    from mqchat.config import load_settings
    from mqchat.errors import DaemonUnavailable

    running: dict[str, Any] | None
    try:
        with opts.client() as c:
            running = c.call("status")
    except DaemonUnavailable:
        running = None
    flags = {"runtime_dir": str(opts.runtime_dir_flag) if opts.runtime_dir_flag else None}
    here = load_settings(flags, os.environ)
    under_systemd = load_settings({}, without_mqchat_env(os.environ))
    return plan_unit(running, here, under_systemd), running


def service_install(opts: Options) -> None:
    from mqchat.client.service_unit import chatd_path, install_unit

    plan, running = _unit_plan(opts)
    try:
        path = install_unit(args=plan.args)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise MqchatError(f"cannot write the unit{where}: {exc.strerror or exc}") from None
    out(f"wrote {path} (ExecStart={chatd_path()}{''.join(' ' + a for a in plan.args)})")
    for note in plan.notes:
        out(f"  {note}")
    start = "systemctl --user daemon-reload && systemctl --user enable --now chatd"
    if running is not None:
        out(f"now stop the chatd you started (kill {running.get('pid')}), then run: {start}")
    else:
        out(f"now run: {start}")


def service_print(opts: Options) -> None:
    from mqchat.client.service_unit import render_unit

    plan, _ = _unit_plan(opts)
    sys.stdout.write(render_unit(args=plan.args))


def who(opts: Options, room: str, *, as_json: bool) -> None:
    """List who is in ROOM: name, fingerprint, verified or not, online or last seen."""
    from mqchat.client.render import escape, local_date, local_time, safe_json
    from mqchat.protocol.fingerprints import short_fingerprint

    with opts.client() as c:
        result: dict[str, Any] = c.call("who", {"room": _room(room)})
    if as_json:
        out(safe_json(result))
        return
    for m in result["members"]:
        mark = "" if m["verified"] else "?"
        seen = f"{local_date(m['last_seen'])} {local_time(m['last_seen'])}"
        state = "online" if m["online"] else f"last seen {seen}"
        you = "  (you)" if m.get("you") else ""
        out(f"{escape(m['name'])}{mark}\t{short_fingerprint(m['fingerprint'])}\t{state}{you}")
