"""``chatctl config``: the effective settings as a config.toml that tomllib reads back.

Top-level keys first, then one table a section, each value with where it came
from as a comment; a setting with no value is a comment (TOML has no null), so
the output can be saved as config.toml and edited.
"""

from __future__ import annotations

import json
from typing import Any

NOT_CONFIG_KEYS = ("config_file",)
"""In the settings view, but not settings a config file holds."""


def toml_value(value: Any) -> str:
    """A TOML value: JSON's string escapes are TOML's basic-string escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def _line(key: str, value: Any, source: str | None) -> str:
    origin = f"  # {source}" if source else ""
    if value is None:
        return f"# {key} = (not set){origin}"
    return f"{key} = {toml_value(value)}{origin}"


def render_settings(view: dict[str, Any]) -> list[str]:
    """The lines of ``Settings.public_view()`` as TOML."""
    view = dict(view)
    sources: dict[str, str] = view.pop("sources", {})
    lines: list[str] = []
    for key in NOT_CONFIG_KEYS:
        if key in view:
            where = view.pop(key)
            lines.append(f"# {key.replace('_', ' ')}: {where or '(none: defaults only)'}")
    tables = {k: v for k, v in view.items() if isinstance(v, dict)}
    lines += [_line(k, v, sources.get(k)) for k, v in view.items() if k not in tables]
    for table, values in tables.items():
        lines += ["", f"[{table}]"]
        lines += [_line(k, v, sources.get(f"{table}.{k}")) for k, v in values.items()]
    return lines
