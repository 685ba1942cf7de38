"""mqchat.protocol is pure: no network, event loop, files or logging behind it.

Checked in a fresh interpreter, because this test process has long since
imported all of those for other reasons.
"""

from __future__ import annotations

from fresh_interpreter import imported_after

FORBIDDEN = ("paho", "zmq", "asyncio", "sqlite3", "socket", "logging")


def test_protocol_imports_no_network_loop_store_or_logging() -> None:
    modules = imported_after(
        "import mqchat.protocol, mqchat.protocol.kdf, mqchat.protocol.envelope,"
        " mqchat.protocol.legacy, mqchat.protocol.ipc, mqchat.protocol.inner,"
        " mqchat.protocol.signing, mqchat.protocol.limits, mqchat.protocol.receiving"
    )
    assert "mqchat" in modules
    assert "cryptography" in modules
    assert modules.isdisjoint(FORBIDDEN), sorted(modules & set(FORBIDDEN))


def test_wire_version_2_imports_no_network_loop_store_or_logging() -> None:
    """The v2 codec: records, batches, epochs, key boxes, invites, Fernet tokens."""
    modules = imported_after(
        "import mqchat.protocol.records, mqchat.protocol.batch, mqchat.protocol.epochs,"
        " mqchat.protocol.keybox, mqchat.protocol.invite, mqchat.protocol.fernet_token"
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
