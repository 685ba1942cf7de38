"""Issue 25: one place for what a joined passphrase room gets, for chatctl join and chatctl ui."""

from __future__ import annotations

import pytest

from mqchat.client.room_options import check_passphrase, cipher_shown, join_params, room_label
from mqchat.errors import UsageError, WeakPassphrase


def test_a_new_room_gets_aes_256_gcm_and_a_legacy_room_fernet() -> None:
    assert cipher_shown(None, legacy=False) == "aes-256-gcm"
    assert cipher_shown(None, legacy=True) == "fernet"
    assert room_label("chacha20-poly1305", legacy=False, weak=True) == "chacha20-poly1305, weak"
    # cipher None: chatd decides, so a room joined again keeps its own cipher.
    assert join_params("r", "p" * 12, cipher=None, legacy=False, weak=False)["cipher"] is None


def test_passphrase_checks_name_the_way_to_accept_a_short_one() -> None:
    check_passphrase("twelve chars", weak=False)
    check_passphrase("short", weak=True)
    with pytest.raises(WeakPassphrase, match="--weak"):
        check_passphrase("short", weak=False)
    with pytest.raises(WeakPassphrase, match="F5"):
        check_passphrase("short", weak=False, weak_hint="F5")
    with pytest.raises(UsageError, match="only white space"):
        check_passphrase("   ", weak=True)
    with pytest.raises(UsageError, match="empty"):
        check_passphrase("", weak=True)
