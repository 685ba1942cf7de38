"""Real parts for tests: a mosquitto on a free loopback port, chatd processes,
the chatctl entry point, and tails whose output is read line by line.

Every process started here is stopped by its PID. Waiting is always for an
event with a deadline, never a sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
DEADLINE_S = 20.0
PASSPHRASE = "correct horse battery staple"


def command(name: str) -> str:
    """The console script from this interpreter's environment, else from PATH."""
    local = BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: run scripts/bootstrap.sh")
    return found


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError("mosquitto is not installed: run scripts/bootstrap.sh")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(delay)  # a poll interval inside a deadline, not a synchronisation
        delay = min(delay * 2, 0.1)


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (VmRSS) or its peak (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


class PeakMemory:
    """The highest VmRSS of a process while the block runs, sampled every 20 ms.

    VmHWM would do, but it remembers peaks from before the block (a join's
    64 MiB Argon2id run).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = memory_kib(pid)
        self.peak = self.start
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.02):  # a sampling period, not a synchronisation
            with contextlib.suppress(OSError, AssertionError):
                self.peak = max(self.peak, memory_kib(self.pid))

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / 1024

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def short_tmpdir(prefix: str) -> Path:
    """Socket paths must stay under 107 bytes: keep test dirs short."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o700)
    return path


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, grace: float = 10.0
) -> int:
    """Signal a process we started, wait for it, kill it after ``grace``; its status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    return int(proc.returncode)


class Broker:
    """A mosquitto on 127.0.0.1, optionally with persistence, that can restart."""

    def __init__(
        self,
        *,
        persistence: bool = False,
        port: int | None = None,
        tls: tuple[Path, Path] | None = None,
        acl: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        """``tls``: (certificate chain, key) files; the listener is then TLS only.
        ``acl``: the text of a mosquitto ACL file (``set_acl`` changes it for the
        next start)."""
        self.dir = short_tmpdir("mqb-")
        self.acl = acl
        self.extra = extra
        self.port = port or free_port()
        self.persistence = persistence
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"mqtts://localhost:{self.port}" if tls else f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Broker:
        conf = self.dir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "set_tcp_nodelay true",
            "max_queued_messages 100000",
            f"persistence {'true' if self.persistence else 'false'}",
        ]
        if self.persistence:
            lines += [f"persistence_location {self.dir}/", "autosave_interval 1"]
        lines += self.extra
        if self.acl is not None:
            acl_file = self.dir / "acl"
            acl_file.write_text(self.acl)
            lines.append(f"acl_file {acl_file}")
        if self.tls:
            # Copies in the broker's own dir, which mosquitto can read (below).
            chain, key = self.dir / "server.pem", self.dir / "server.key"
            shutil.copyfile(self.tls[0], chain)
            shutil.copyfile(self.tls[1], key)
            lines += [f"certfile {chain}", f"keyfile {key}"]
        if os.geteuid() == 0 and (self.persistence or self.tls or self.acl is not None):
            # Started as root, mosquitto drops to the "mosquitto" user, which
            # could not use this 0700 dir: persistence would fail with only a
            # line in its log, and the TLS key could not be read.
            with contextlib.suppress(LookupError):
                for path in (self.dir, *self.dir.iterdir()):
                    shutil.chown(path, user="mosquitto")
        conf.write_text("\n".join(lines) + "\n")
        log = (self.dir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
        wait_until(self._accepts, f"mosquitto on port {self.port}")
        return self

    def _accepts(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited: {(self.dir / 'mosquitto.log').read_text()}")
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)  # mosquitto saves its persistence on SIGTERM
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Gate:
    """A TCP forwarder in front of a broker: one client's own outage, the broker staying up.

    ``close()`` cuts every connection through it and refuses new ones, as a
    broker that went away would; ``open()`` lets them through again. Other
    clients of the broker are not touched, so they keep receiving in order.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._pairs: list[socket.socket] = []
        self._lock = threading.Lock()
        self.open()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        with self._lock:
            if self._listener is not None:
                # shutdown() wakes the thread blocked in accept(); close() alone may not.
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for sock in self._pairs:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._pairs.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.broker.port))
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._pairs += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Tail:
    """A running ``chatctl tail`` (or any line-printing command) read in a thread."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    def next_line(self, timeout: float = DEADLINE_S) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no line within {timeout:g} s; stderr: {self.stderr[-5:]}"
            ) from None
        self.seen.append(line)
        return line

    def next_json(self, timeout: float = DEADLINE_S) -> dict[str, Any]:
        return dict(json.loads(self.next_line(timeout)))

    def messages(self, count: int, timeout: float = DEADLINE_S) -> list[dict[str, Any]]:
        """The next ``count`` message events (notices are skipped)."""
        deadline = time.monotonic() + timeout
        out: list[dict[str, Any]] = []
        while len(out) < count:
            event = self.next_json(max(0.01, deadline - time.monotonic()))
            if event["type"] == "message":
                out.append(event)
        return out

    def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = DEADLINE_S,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_json(max(0.01, deadline - time.monotonic()))
            if predicate(event):
                return event

    def assert_silent(self) -> None:
        """Nothing more was printed up to now (call after a later event proved delivery)."""
        with contextlib.suppress(queue.Empty):
            line = self.lines.get_nowait()
            raise AssertionError(f"unexpected output: {line}")

    def stop(self) -> None:
        stop_process(self.proc, grace=5)


class Daemon:
    """One chatd with its own runtime and state dirs."""

    def __init__(
        self, broker: Broker, name: str, *, extra_env: dict[str, str] | None = None
    ) -> None:
        self.broker = broker
        self.name = name
        self.home = short_tmpdir(f"mq{name[:3]}-")
        self.runtime_dir = self.home / "run"
        self.state_dir = self.home / "state"
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_env = extra_env or {}
        self.tails: list[Tail] = []

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")}
        env.update(
            MQCHAT_RUNTIME_DIR=str(self.runtime_dir),
            MQCHAT_STATE_DIR=str(self.state_dir),
            MQCHAT_NAME=self.name,
            MQCHAT_BROKER=self.broker.url,
            XDG_CONFIG_HOME=str(self.home / "config"),
            NO_COLOR="1",
        )
        env.update(self.extra_env)
        return env

    def start(self, *, wait_connected: bool = True, args: list[str] | None = None) -> Daemon:
        log = (self.home / "chatd.log").open("ab")
        self.proc = subprocess.Popen(
            [command("chatd"), "--log-level", "debug", *(args or [])],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, f"chatd {self.name} to serve")
        if wait_connected:
            self.wait_connected()
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"chatd {self.name} exited:\n{self.log()}")
        if not (self.runtime_dir / "ctl.sock").exists():
            return False
        return self.ctl("status", "--json", timeout=5).returncode == 0

    def status(self) -> dict[str, Any]:
        result = self.ctl("status", "--json")
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    def wait_connected(self, connected: bool = True) -> None:
        wait_until(
            lambda: self.status()["broker"]["connected"] is connected,
            f"chatd {self.name} broker connected={connected}",
        )

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise AssertionError(f"chatd {self.name} is not running")
        return self.proc.pid

    def log(self) -> str:
        path = self.home / "chatd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def ctl(
        self, *args: str, input: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [command("chatctl"), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, input: str | None = None) -> str:
        result = self.ctl(*args, input=input)
        assert result.returncode == 0, (
            f"chatctl {' '.join(args)} exited {result.returncode}: {result.stderr}"
        )
        return result.stdout

    def join(self, room: str, passphrase: str = PASSPHRASE, *extra: str) -> str:
        # Argon2id (64 MiB, 3 passes, 4 lanes) on a 2-core machine running four test
        # workers can take seconds: chatctl waits up to 25 s, not its default 10.
        return self.ok("--timeout", "25", "join", room, *extra, input=passphrase + "\n")

    def write_config(self, text: str) -> Daemon:
        """Write chatd's config file (``$XDG_CONFIG_HOME/mqchat/config.toml``), before start."""
        config = self.home / "config" / "mqchat"
        config.mkdir(parents=True, exist_ok=True)
        (config / "config.toml").write_text(text)
        return self

    def tail(self, *args: str) -> Tail:
        t = Tail([command("chatctl"), "tail", "--json", *args], self.env)
        self.tails.append(t)
        return t

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        code = None if self.proc is None else stop_process(self.proc, sig, grace=15)
        self.proc = None
        return code

    def cleanup(self) -> None:
        for t in self.tails:
            t.stop()
        self.stop()
        if not os.environ.get("MQCHAT_TEST_KEEP"):
            shutil.rmtree(self.home, ignore_errors=True)


class Terminal:
    """A command on a pseudo-terminal: what a person at a keyboard would see and type."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.screen = b""
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the command with the pty as its terminal
            try:
                os.execve(argv[0], argv, env)  # noqa: S606 -- a test's own command
            finally:
                os._exit(127)  # never return into pytest in the child

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def read_until(self, wanted: bytes | None, timeout: float = DEADLINE_S) -> bytes:
        """Read until ``wanted`` shows on the screen, or (None) until the command closes it."""
        deadline = time.monotonic() + timeout
        while wanted is None or wanted not in self.screen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {wanted!r} on the terminal: {self.screen!r}")
            if select.select([self.fd], [], [], left)[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    if wanted is None:
                        break
                    raise AssertionError(f"ended without {wanted!r}: {self.screen!r}")
                self.screen += chunk
        return self.screen

    def wait(self) -> int:
        """Close the terminal and return the command's exit status."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


@contextlib.contextmanager
def running(*things: Broker | Daemon) -> Iterator[None]:
    try:
        yield
    finally:
        for thing in reversed(things):
            thing.cleanup()
