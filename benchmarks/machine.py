"""The machine line printed under the table: CPU, cores, and the versions that matter."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

import paho.mqtt
import zmq

from harness import mosquitto_binary


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else "unknown CPU"


def mosquitto_version() -> str:
    result = subprocess.run(
        [mosquitto_binary(), "-h"], capture_output=True, text=True, timeout=10, check=False
    )
    match = re.search(r"mosquitto version (\S+)", result.stdout + result.stderr)
    return match.group(1) if match else "unknown"


def source_revision() -> str:
    """The commit measured, and whether the working tree had changes (read-only git)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted src changes' if dirty else ''}"


def describe() -> str:
    cores = len(os.sched_getaffinity(0))
    return (
        f"machine: {cpu_model()}, {cores} cores, Linux {platform.release()}; "
        f"python {platform.python_version()}, paho-mqtt {paho.mqtt.__version__}, "
        f"pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()}), "
        f"mosquitto {mosquitto_version()}; source {source_revision()}"
    )
