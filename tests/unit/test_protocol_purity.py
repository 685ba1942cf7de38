"""mqchat.protocol is pure: no network, event loop, files or logging behind it.

Checked in a fresh interpreter, because this test process has long since
imported all of those for other reasons.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
FORBIDDEN = ("paho", "zmq", "asyncio", "sqlite3", "socket", "logging")


def imported_after(statement: str) -> set[str]:
    """Top-level names of the modules a fresh interpreter holds after ``statement``."""
    code = f"{statement}; import json, sys; print(json.dumps(sorted(sys.modules)))"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return {name.split(".")[0] for name in json.loads(out.stdout)}


def test_protocol_imports_no_network_loop_store_or_logging() -> None:
    modules = imported_after(
        "import mqchat.protocol, mqchat.protocol.kdf, mqchat.protocol.envelope,"
        " mqchat.protocol.legacy, mqchat.protocol.ipc, mqchat.protocol.inner,"
        " mqchat.protocol.signing, mqchat.protocol.limits"
    )
    assert "mqchat" in modules
    assert "cryptography" in modules
    assert modules.isdisjoint(FORBIDDEN), sorted(modules & set(FORBIDDEN))


def test_ipc_schema_alone_does_not_load_cryptography() -> None:
    """chatctl imports the IPC schema on every command; it must start fast."""
    modules = imported_after("import mqchat.protocol.ipc")
    assert "mqchat" in modules
    assert "cryptography" not in modules
    assert modules.isdisjoint(FORBIDDEN), sorted(modules & set(FORBIDDEN))
