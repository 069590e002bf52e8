"""Start, watch and stop the stack's service processes on free loopback ports.

Every service takes `--port 0 --port-file PATH` and writes the port it bound once its health is SERVING. The
demo, the integration and fault tests and the benchmarks all start stacks through this module:

    with ServiceStack(run_dir) as stack:
        shard = stack.start("dense-0", [sys.executable, "-m", "retriever_service", "--index", str(shard_dir)])
        ...  # shard.address is "127.0.0.1:<port>", already SERVING

Leaving the `with` block (normally, on an exception or on Ctrl-C) stops every process in reverse start
order: SIGTERM, a grace period, then SIGKILL.

`stack.supervise()` restarts a service that dies on its own (a crash, the OOM killer, kill -9) with the
same command on its old port, so its clients' channels reconnect and the gateway recovers without being
told. Restarts back off (1 s, doubling to 30 s, back to 1 s once a service has stayed up for a minute), are
logged, and are counted in `search_stack_restarts_total{component}` (`stack.registry`). Processes the stack
stops itself are never restarted, and stopping the stack stops the restarted ones too.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, Counter

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
    # What started it, so a supervisor can start it again.
    argv: Sequence[str] = ()
    env: Mapping[str, str] | None = None

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
    return ServiceProcess(name, process, port_file, log_path, host, argv=tuple(argv), env=env)


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How a supervised service is restarted: exponential backoff, reset once it has stayed up."""

    first_delay: float = 1.0
    max_delay: float = 30.0
    stable_seconds: float = 60.0  # up this long since its last restart: the next crash starts over at 1 s


@dataclass(slots=True)
class RestartBackoff:
    """One supervised service's restart schedule under a policy (times are `time.monotonic()` seconds)."""

    policy: RestartPolicy
    restarts: int = 0
    due: float | None = None  # when the pending restart may run; None while the service is up
    _delay: float = 0.0
    _restarted_at: float | None = None

    def died(self, now: float) -> float:
        """Schedules the restart of a service seen dead at `now`; returns the delay before it."""
        stable = self._restarted_at is not None and now - self._restarted_at >= self.policy.stable_seconds
        if self._restarted_at is None or stable:
            self._delay = self.policy.first_delay
        self.due = now + self._delay
        return self._delay

    def restarted(self, now: float) -> None:
        self.restarts += 1
        self._restarted_at, self.due = now, None
        self._delay = min(self._delay * 2, self.policy.max_delay)


class ServiceStack:
    """Processes started together and stopped together, in reverse order, whatever happens."""

    def __init__(self, run_dir: Path, stop_timeout: float = DEFAULT_STOP_TIMEOUT_SECONDS) -> None:
        self.run_dir = run_dir
        self.stop_timeout = stop_timeout
        self.services: list[ServiceProcess] = []
        self.registry = CollectorRegistry()
        self.restarts = Counter(
            "search_stack_restarts",
            "Services of the local stack restarted by its supervisor after they died, by component.",
            ["component"],
            registry=self.registry,
        )
        self._lock = threading.RLock()  # guards `services` against the supervisor thread
        # Components started elsewhere (tritonserver, redis-server): name -> (crashed?, restart in place).
        self._external: dict[str, tuple[Callable[[], bool], Callable[[], object]]] = {}
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> ServiceProcess:
        """Starts a service without waiting for it (start several, then `wait_ready` each)."""
        service = spawn_service(name, argv, self.run_dir, env=env)
        with self._lock:
            self.services.append(service)
        return service

    def service(self, name: str) -> ServiceProcess:
        """The current process of a service (a restart replaces it)."""
        with self._lock:
            for service in self.services:
                if service.name == name:
                    return service
        raise KeyError(name)

    def supervise(self, policy: RestartPolicy | None = None, *, poll_seconds: float = 0.2) -> None:
        """Restarts, from now on, every service of this stack that exits without being stopped."""
        if self._supervisor is not None:
            return
        policy = policy or RestartPolicy()
        self._supervisor = threading.Thread(
            target=self._supervise, args=(policy, poll_seconds), name="stack-supervisor", daemon=True
        )
        self._supervisor.start()

    def supervise_external(
        self, name: str, crashed: Callable[[], bool], restart: Callable[[], object]
    ) -> None:
        """Supervises a component this stack did not spawn (tritonserver, redis-server) like its own:
        `crashed()` says it exited without being stopped, `restart()` starts it again in place (its ports
        kept) and raises if it cannot, to be tried again after the next backoff."""
        with self._lock:
            self._external[name] = (crashed, restart)

    def _supervise(self, policy: RestartPolicy, poll_seconds: float) -> None:
        schedules: dict[str, RestartBackoff] = {}
        failing: set[str] = set()  # externals whose restart raised: retried whatever crashed() says
        while not self._stopping.wait(poll_seconds):
            self._watch_external(policy, schedules, failing)
            self._watch_services(policy, schedules)

    def _watch_external(
        self, policy: RestartPolicy, schedules: dict[str, RestartBackoff], failing: set[str]
    ) -> None:
        """Restarts, when due, each external component that crashed or whose last restart failed. A restart
        runs here, so it holds up the others' (tritonserver takes seconds): restarts are rare."""
        with self._lock:
            external = dict(self._external)
        for name, (crashed, restart) in external.items():
            schedule = schedules.setdefault(name, RestartBackoff(policy))
            now = time.monotonic()
            if schedule.due is None and (name in failing or crashed()):
                logger.warning("%s exited; restarting it in %.1fs", name, schedule.died(now))
            if schedule.due is None or now < schedule.due or self._stopping.is_set():
                continue
            schedule.restarted(now)
            self.restarts.labels(component=name).inc()
            try:
                restart()
            except Exception as exc:
                failing.add(name)
                logger.error("%s did not come back (restart %d): %s", name, schedule.restarts, exc)
                continue
            failing.discard(name)
            logger.warning("%s restarted (restart %d)", name, schedule.restarts)

    def _watch_services(self, policy: RestartPolicy, schedules: dict[str, RestartBackoff]) -> None:
        """Restarts, when due, each of the stack's own services that exited."""
        with self._lock:
            dead = [s for s in self.services if not s.running and s.port]
        for service in dead:
            schedule = schedules.setdefault(service.name, RestartBackoff(policy))
            now = time.monotonic()
            if schedule.due is None:
                delay = schedule.died(now)
                logger.warning(
                    "%s exited with code %s; restarting it on port %d in %.1fs",
                    service.name, service.process.returncode, service.port, delay,
                )  # fmt: skip
            if schedule.due is not None and now >= schedule.due:
                self._restart_supervised(service, schedule)

    def _restart_supervised(self, service: ServiceProcess, schedule: RestartBackoff) -> None:
        with self._lock:
            if self._stopping.is_set() or service not in self.services:
                return
            fresh = spawn_service(
                service.name, service.argv, self.run_dir, env=service.env, port=service.port
            )
            # Its old port. The supervisor does not wait for it: one that dies again is seen at the next
            # poll, and its clients find it serving through their own reconnects.
            fresh.port = service.port
            self.services[self.services.index(service)] = fresh
        schedule.restarted(time.monotonic())
        self.restarts.labels(component=service.name).inc()
        logger.warning("%s restarted on %s (restart %d)", service.name, fresh.address, schedule.restarts)

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
        with self._lock:
            self.services[self.services.index(service)] = fresh
        fresh.wait_ready(timeout)
        return fresh

    def stop_all(self) -> None:
        self._stopping.set()  # no restart from here on, so nothing outlives the stack
        if self._supervisor is not None:
            self._supervisor.join()
        with self._lock:
            services, self.services = list(self.services), []
        for service in reversed(services):
            try:
                code = service.stop(self.stop_timeout)
                logger.info("%s stopped (exit code %s)", service.name, code)
            except Exception:
                logger.exception("could not stop %s (pid %d)", service.name, service.process.pid)

    def __enter__(self) -> ServiceStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
