"""What the local launchers share: free loopback ports, a process's log tail in errors, stopping a process,
and the CLIs' wait-for-a-signal and environment-file output (deploy/local/*.py)."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


REPO_ROOT = Path(__file__).resolve().parent.parent


LOG_TAIL_CHARS = 4000


class LocalServiceError(RuntimeError):
    """A local tritonserver or redis-server could not be started or is not usable here."""


class OwnedProcess:
    """A local server started by a class of ours (tritonserver, redis-server) around its process."""

    _process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def crashed(self) -> bool:
        """Started, then exited without `stop()` or `kill()` (which forget the process): what a supervisor
        restarts."""
        return self._process is not None and self._process.poll() is not None


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free right now (another process may still take it before we bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "(no log)"


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        logger.warning("pid %d ignored SIGTERM for %.0fs; killing it", process.pid, timeout)
        process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def until_signal() -> Iterator[None]:
    stop = {"now": False}

    def handler(signum: int, frame: object) -> None:
        stop["now"] = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
        while not stop["now"]:
            time.sleep(0.2)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def write_env_file(path: Path | None, values: dict[str, str]) -> None:
    text = "".join(f"{key}={value}\n" for key, value in values.items())
    sys.stdout.write(text)
    sys.stdout.flush()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
