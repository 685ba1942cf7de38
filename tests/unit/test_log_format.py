"""Issue 25: chatd's log lines carry a time, except where the journal stamps them."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from mqchat.daemon.log_format import formatter


def _line(stream_path: Path, env: dict[str, str]) -> str:
    record = logging.LogRecord("mqchat.daemon", logging.INFO, __file__, 1, "ready", None, None)
    with stream_path.open("w") as stream:
        return formatter(stream, env).format(record)


def test_a_line_has_a_utc_timestamp_outside_the_journal(tmp_path: Path) -> None:
    line = _line(tmp_path / "log", {})
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z chatd: INFO: ready", line), line


def test_no_timestamp_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    path.touch()
    st = os.stat(path)
    assert _line(path, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}) == "chatd: INFO: ready"
    # JOURNAL_STREAM inherited from elsewhere (another stream) does not count.
    assert _line(tmp_path / "other", {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}) != (
        "chatd: INFO: ready"
    )
