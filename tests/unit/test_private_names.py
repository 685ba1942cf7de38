"""Issue 13 item 3: mqchat leans on no private name of another library.

Private names change without notice: the shadow socket and the ``get(zmq.EVENTS)``
"kick" leaned on pyzmq's asyncio internals and hung about one tail start in 15.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "mqchat"
THIRD_PARTY = ("zmq", "paho", "cryptography", "typer", "click")
# Uses of pyzmq that only work through its asyncio wrapper's private machinery.
PRIVATE_BEHAVIOUR = {
    "shadow(": re.compile(r"\bshadow\("),
    ".underlying": re.compile(r"\.underlying\b"),
    "get(zmq.EVENTS)": re.compile(r"\bget\(zmq\.EVENTS\)"),
    "_schedule_remaining_events": re.compile(r"_schedule_remaining_events"),
}
KNOWN: set[tuple[str, str]] = set()
MUST_BE_CLEAN = (
    "daemon/events.py",
    "daemon/event_subscriptions.py",
    "client/ipc_client.py",
    "client/event_subscriber.py",
)


def _third_party_names(tree: ast.Module) -> set[str]:
    """Names bound by importing from another library (``import zmq``, ``from x import Y``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in THIRD_PARTY:
                    names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in THIRD_PARTY:
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def private_uses(path: Path) -> set[str]:
    """Private attributes reached from another library's names, and private behaviour."""
    text = path.read_text()
    tree = ast.parse(text)
    foreign = _third_party_names(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and _root_name(node.value) in foreign
        ):
            found.add(node.attr)
    found.update(label for label, pattern in PRIVATE_BEHAVIOUR.items() if pattern.search(text))
    return found


def test_the_checker_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import zmq\nfrom cryptography.fernet import Fernet\n"
        "s = zmq.Socket.shadow(x.underlying)\ns.get(zmq.EVENTS)\n"
        "Fernet(k)._encrypt_from_parts(a, b, c)\nzmq.sugar._private\nself._mine = 1\n"
    )
    assert private_uses(sample) == {
        "shadow(",
        ".underlying",
        "get(zmq.EVENTS)",
        "_encrypt_from_parts",
        "_private",
    }


def test_no_private_names_of_other_libraries_in_src() -> None:
    unexpected: set[tuple[str, str]] = set()
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        unexpected.update((rel, use) for use in private_uses(path) if (rel, use) not in KNOWN)
    assert not unexpected


def test_event_stream_code_is_clean() -> None:
    for rel in MUST_BE_CLEAN:
        assert private_uses(SRC / rel) == set(), rel
