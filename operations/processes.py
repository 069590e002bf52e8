"""Start, watch and stop the stack's service processes on free loopback ports.

Every service takes `--port 0 --port-file PATH` and writes the port it bound once its health is SERVING. The
demo, the integration and fault tests and the benchmarks all start stacks through this module:

    with ServiceStack(run_dir) as stack:
        shard = stack.start("dense-0", [sys.executable, "-m", "retriever_service", "--index", str(shard_dir)])
        ...  # shard.address is "127.0.0.1:<port>", already SERVING

Leaving the `with` block (normally, on an exception or on Ctrl-C) stops every process in reverse start
order: SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from search_common.port_file import read_port_file

logger = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT_SECONDS = 120.0
DEFAULT_STOP_TIMEOUT_SECONDS = 10.0
_POLL_SECONDS = 0.1


class ServiceStartError(RuntimeError):
    """A service process exited or did not become SERVING in time; the message carries its log's tail."""


def check_serving(address: str, service: str = "", timeout: float = 1.0) -> bool:
    """One grpc.health.v1 Check; False on any failure."""
    try:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def wait_for_serving(address: str, timeout: float, service: str = "") -> None:
    """Polls health until SERVING; ServiceStartError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check_serving(address, service):
        if time.monotonic() >= deadline:
            raise ServiceStartError(f"{address} did not report SERVING within {timeout:.0f}s")
        time.sleep(_POLL_SECONDS)


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[bytes]
    port_file: Path
    log_path: Path
    host: str = "127.0.0.1"
    port: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = DEFAULT_START_TIMEOUT_SECONDS, *, serving: bool = True) -> int:
        """Waits for the port file, then (with `serving`) for health SERVING; returns the port.

        `serving=False` is for a service that binds before it can serve (a reranker waiting for its model).
        """
        deadline = time.monotonic() + timeout
        while (port := read_port_file(self.port_file)) is None:
            if not self.running:
                raise ServiceStartError(
                    f"{self.name} exited with code {self.process.returncode} before it was ready; "
                    f"last log lines ({self.log_path}):\n{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise ServiceStartError(
                    f"{self.name} wrote no port within {timeout:.0f}s; last log lines:\n{self.log_tail()}"
                )
            time.sleep(_POLL_SECONDS)
        self.port = port
        if serving:
            wait_for_serving(self.address, max(1.0, deadline - time.monotonic()))
        return port

    def kill(self) -> int:
        """SIGKILL, as a crash would: no drain, no health change; returns the exit code."""
        if self.running:
            self.process.kill()
        return self.process.wait()

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM, wait up to `timeout`, then SIGKILL; returns the exit code."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def spawn_service(
    name: str,
    argv: Sequence[str],
    run_dir: Path,
    *,
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
    port: int = 0,
) -> ServiceProcess:
    """Starts `argv + --host HOST --port PORT --port-file <run_dir>/<name>.port`, logging to <name>.log.

    PORT is 0 (a free one) unless given: a restart after a crash passes the old port, so clients holding a
    channel to it reconnect without being told anything. The log is appended to across restarts.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    port_file = run_dir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    log_path = run_dir / f"{name}.log"
    command = [*argv, "--host", host, "--port", str(port), "--port-file", str(port_file)]
    logger.info("starting %s: %s", name, " ".join(command))
    with log_path.open("ab" if port else "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else {**os.environ, **env},
        )
    return ServiceProcess(name, process, port_file, log_path, host)


class ServiceStack:
    """Processes started together and stopped together, in reverse order, whatever happens."""

    def __init__(self, run_dir: Path, stop_timeout: float = DEFAULT_STOP_TIMEOUT_SECONDS) -> None:
        self.run_dir = run_dir
        self.stop_timeout = stop_timeout
        self.services: list[ServiceProcess] = []

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> ServiceProcess:
        """Starts a service without waiting for it (start several, then `wait_ready` each)."""
        service = spawn_service(name, argv, self.run_dir, env=env)
        self.services.append(service)
        return service

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_START_TIMEOUT_SECONDS,
        env: Mapping[str, str] | None = None,
    ) -> ServiceProcess:
        service = self.spawn(name, argv, env)
        service.wait_ready(timeout)
        return service

    def restart(
        self,
        service: ServiceProcess,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_START_TIMEOUT_SECONDS,
        env: Mapping[str, str] | None = None,
    ) -> ServiceProcess:
        """Starts `argv` again under the service's name on its old port (after a kill or stop)."""
        if service.running:
            raise RuntimeError(f"{service.name} is still running (pid {service.process.pid})")
        fresh = spawn_service(service.name, argv, self.run_dir, env=env, port=service.port)
        self.services[self.services.index(service)] = fresh
        fresh.wait_ready(timeout)
        return fresh

    def stop_all(self) -> None:
        for service in reversed(self.services):
            try:
                code = service.stop(self.stop_timeout)
                logger.info("%s stopped (exit code %s)", service.name, code)
            except Exception:
                logger.exception("could not stop %s (pid %d)", service.name, service.process.pid)
        self.services.clear()

    def __enter__(self) -> ServiceStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
