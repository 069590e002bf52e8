"""A real redis-server on free loopback ports, for local use and for tests.

A context manager that starts the process, polls readiness under a timeout (raising with the tail of the
process's log when it fails or hangs) and stops it with SIGTERM. `deploy/local/redis_server.py` calls
`redis_main`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from operations.launch import (
    LocalServiceError,
    OwnedProcess,
    free_port,
    log_tail,
    stop_process,
    until_signal,
    write_env_file,
)
from search_common.logging_setup import configure_logging

logger = logging.getLogger(__name__)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RedisTls:
    """PEM files for a TLS-only redis-server: its certificate and key, and the CA clients verify it with."""

    cert: Path
    key: Path
    ca: Path


class RedisServer(OwnedProcess):
    """A redis-server on a free loopback port, without persistence, bounded like the Kubernetes one: at
    `maxmemory` it evicts the least recently used scores (a score cache, so any entry may go).

    `kill()` and `start()` again (same port) let tests take Redis away mid-test and bring it back.
    """

    def __init__(
        self,
        *,
        binary: str = "redis-server",
        password: str | None = None,
        port: int = 0,
        startup_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        tls: RedisTls | None = None,
        maxmemory: str = "512mb",
    ) -> None:
        resolved = shutil.which(binary)
        if resolved is None:
            raise LocalServiceError(f"{binary} not found on PATH (apt-get install -y redis-server)")
        self.binary = resolved
        self.password = password
        self.port = port
        self.tls = tls
        self.maxmemory = maxmemory
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.startup_seconds = 0.0
        self.work_dir = Path(tempfile.mkdtemp(prefix="redis-server-"))
        self.log_path = self.work_dir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL, without the password (pass that separately, so it stays out of logs)."""
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if self.port == 0:
            self.port = free_port()
        command = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.work_dir),
            "--daemonize",
            "no",
            "--maxmemory",
            self.maxmemory,
            "--maxmemory-policy",
            "allkeys-lru",
        ]
        if self.password:
            command += ["--requirepass", self.password]
        if self.tls is not None:  # TLS only: the plaintext port is closed
            command[command.index("--port") + 1] = "0"
            command += [
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.cert),
                "--tls-key-file", str(self.tls.key),
                "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        logger.info(
            "redis-server pid %d ready on port %d in %.2fs",
            self._process.pid,
            self.port,
            self.startup_seconds,
        )
        return self

    def _wait_ready(self) -> None:
        import redis

        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=1.0,
            ssl=self.tls is not None,
            ssl_ca_certs=None if self.tls is None else str(self.tls.ca),
        )
        try:
            while True:
                if self._process.poll() is not None:
                    raise LocalServiceError(
                        f"redis-server exited with code {self._process.returncode}; log tail:\n"
                        f"{log_tail(self.log_path)}"
                    )
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise LocalServiceError(
                        f"redis-server not answering PING after {self.startup_timeout:.0f}s; log tail:\n"
                        f"{log_tail(self.log_path)}"
                    )
                time.sleep(0.1)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown handshake with clients."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, self.stop_timeout)
            self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def redis_main(argv: list[str] | None = None) -> int:
    """Starts a throwaway redis-server on a free loopback port until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=redis_main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--password", default=None)
    parser.add_argument("--env-file", type=Path, default=None, help="also write REDIS_URL=... here")
    args = parser.parse_args(argv)
    configure_logging()
    with RedisServer(port=args.port, password=args.password) as server, until_signal():
        write_env_file(
            args.env_file,
            {"REDIS_URL": server.url, "REDIS_STARTUP_SECONDS": f"{server.startup_seconds:.2f}"},
        )
    return 0
