"""A real tritonserver on free loopback ports, for local use and for tests.

A context manager that starts the process, polls readiness under a timeout (raising with the tail of the
process's log when it fails or hangs) and stops it with SIGTERM. `deploy/local/tritonserver.py` calls
`triton_main`.

Triton comes from the nvidia-pytriton wheel installed in its own virtual environment (`.venv-triton`): the
wheel bundles tritonserver and the python backend, but not as a ready backend directory, so this module links
one together (`libtriton_python.so`, `triton_python_backend_utils.py` and the stub for the venv's Python),
puts the venv interpreter's LIBDIR and the wheel's `nvidia_pytriton.libs` on LD_LIBRARY_PATH and the venv's
`bin` first on PATH, so the backend stub runs in that venv (it ignores PYTHONPATH). The committed
`triton_models/` repository carries placeholders; `assemble_model_repository` writes a runnable copy with the
artifact filled in."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from operations.launch import (
    REPO_ROOT,
    LocalServiceError,
    OwnedProcess,
    free_port,
    log_tail,
    stop_process,
    until_signal,
    write_env_file,
)
from operations.triton_repository import assemble_model_repository
from search_common import triton_contract as tc
from search_common.logging_setup import configure_logging
from search_common.tls import ClientTls, tritonclient_options

logger = logging.getLogger(__name__)

logger = logging.getLogger(__name__)

DEFAULT_TRITON_VENV = REPO_ROOT / ".venv-triton"
SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"


@dataclass(frozen=True, slots=True)
class TritonInstallation:
    """Where the pieces of the pytriton-bundled tritonserver live inside its virtual environment."""

    venv: Path
    python: Path
    binary: Path
    backend_library: Path
    backend_utils: Path
    stub: Path
    wheel_libs: Path
    python_libdir: Path

    @classmethod
    def find(cls, venv: Path = DEFAULT_TRITON_VENV) -> TritonInstallation:
        """Locates tritonserver and the python backend files in `venv`.

        Raises:
            LocalServiceError: naming what is missing.
        """
        python = venv / "bin" / "python"
        if not python.exists():
            raise LocalServiceError(f"no Triton virtual environment at {venv} (scripts/setup.sh creates it)")
        probe = subprocess.run(
            [
                str(python),
                "-c",
                "import sys, sysconfig, site; print(sysconfig.get_config_var('LIBDIR')); "
                "print(f'{sys.version_info.major}.{sys.version_info.minor}'); "
                "print(site.getsitepackages()[0])",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        libdir, minor, site_packages = probe.stdout.split()
        server = Path(site_packages) / "pytriton" / "tritonserver"
        found = cls(
            venv=venv,
            python=python,
            binary=server / "bin" / "tritonserver",
            backend_library=server / "backends" / "python" / "libtriton_python.so",
            backend_utils=server / "backends" / "python" / "triton_python_backend_utils.py",
            stub=server / "python_backend_stubs" / minor / "triton_python_backend_stub",
            wheel_libs=Path(site_packages) / "nvidia_pytriton.libs",
            python_libdir=Path(libdir),
        )
        for path in (found.binary, found.backend_library, found.backend_utils, found.stub, found.wheel_libs):
            if not path.exists():
                raise LocalServiceError(f"nvidia-pytriton in {venv} lacks {path}")
        return found

    def cannot_run(self) -> str | None:
        """Why tritonserver cannot start on this machine (missing libraries, wrong arch), or None."""
        try:
            probe = subprocess.run(
                [str(self.binary), "--help"],
                env=self.environment(),
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{self.binary} does not execute: {exc}"
        if "Usage: tritonserver" in probe.stdout + probe.stderr:
            return None
        return f"{self.binary} does not start: {(probe.stderr or probe.stdout).strip()[-500:]}"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(self.python_libdir), str(self.wheel_libs), env.get("LD_LIBRARY_PATH", "")) if p
        )
        env["PATH"] = os.pathsep.join((str(self.venv / "bin"), env.get("PATH", "")))
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        return env

    def ensure_repo_installed(self, repo_root: Path = REPO_ROOT) -> None:
        """Installs this repository (no dependencies) into the Triton venv if model.py could not import it."""
        check = [str(self.python), "-c", "import model_runtimes.cross_encoder.runtime"]
        if subprocess.run(check, capture_output=True, cwd="/").returncode == 0:
            return
        logger.info("installing %s into %s (editable, no dependencies)", repo_root, self.venv)
        subprocess.run(
            [str(self.python), "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(repo_root)],
            check=True,
            capture_output=True,
        )

    def build_backend_directory(self, destination: Path) -> Path:
        """A backend directory whose `python/` links the wheel's python backend pieces."""
        python_dir = destination / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        for source in (self.backend_library, self.backend_utils, self.stub):
            link = python_dir / source.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source)
        return destination


def _shm_regions() -> set[Path]:
    return set(SHM_DIR.glob(f"{SHM_PREFIX}*")) if SHM_DIR.is_dir() else set()


def _mapped_anywhere(paths: set[Path]) -> set[Path]:
    """Which of the paths some live process still maps (another user's tritonserver, say)."""
    names = {str(p) for p in paths}
    mapped: set[Path] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:
            continue
        mapped.update(Path(name) for name in names if name in text)
    return mapped


@dataclass(frozen=True)
class TritonTls:
    """TLS on tritonserver's gRPC port. `client` is what a client trusts and shows: its CA signs the server
    certificate, and with `mutual` the server also asks for a client certificate signed by that CA.
    """

    server_cert: Path
    server_key: Path
    client: ClientTls
    mutual: bool = False

    def server_args(self) -> list[str]:
        args = [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={self.server_cert.resolve()}",
            f"--grpc-server-key={self.server_key.resolve()}",
            f"--grpc-root-cert={self.client.ca.resolve()}",
        ]
        return [*args, "--grpc-use-ssl-mutual=true"] if self.mutual else args


class TritonServer(OwnedProcess):
    """A tritonserver serving a model repository on free loopback ports.

    `extra_args` go to tritonserver as they are, for example
    `("--model-control-mode=explicit", "--load-model=cross_encoder")` to let a client reload the model.

    Example:
        with TritonServer(repository) as triton:
            client = tritonclient.grpc.aio.InferenceServerClient(triton.grpc_url)
    """

    def __init__(
        self,
        model_repository: Path,
        *,
        installation: TritonInstallation | None = None,
        work_dir: Path | None = None,
        models: tuple[str, ...] = (tc.MODEL_NAME,),
        startup_timeout: float = 120.0,
        stop_timeout: float = 30.0,
        extra_args: Sequence[str] = (),
        grpc_tls: TritonTls | None = None,
    ) -> None:
        # tritonserver resolves paths against its own working directory: pass absolute ones.
        self.model_repository = model_repository.resolve()
        self.extra_args = tuple(extra_args)
        self.grpc_tls = grpc_tls
        self.installation = installation or TritonInstallation.find()
        self._owned_work_dir = work_dir is None
        self.work_dir = (work_dir or Path(tempfile.mkdtemp(prefix="tritonserver-"))).resolve()
        self.models = models
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.http_port = self.grpc_port = self.metrics_port = 0
        self.startup_seconds = 0.0
        self.log_path = self.work_dir / "tritonserver.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._shm_before: set[Path] = set()

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> TritonServer:
        inst = self.installation
        inst.ensure_repo_installed()
        backends = inst.build_backend_directory(self.work_dir / "backends")
        if not self.grpc_port:  # a restart (after `kill` or `stop`) keeps the ports clients know
            self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        command = [
            str(inst.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--log-verbose=0",
            *(self.grpc_tls.server_args() if self.grpc_tls else ()),
            *self.extra_args,
        ]
        self._shm_before = _shm_regions()
        started = time.monotonic()
        with self.log_path.open("ab") as log:  # appended: a restart keeps the crashed run's log
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=inst.environment(),
                cwd=self.work_dir,
                start_new_session=True,
            )
        logger.info("tritonserver pid %d starting (grpc %s)", self._process.pid, self.grpc_url)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        logger.info("tritonserver ready in %.1fs", self.startup_seconds)
        return self

    def _wait_ready(self) -> None:
        import tritonclient.grpc as grpcclient

        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        client = grpcclient.InferenceServerClient(
            self.grpc_url, **tritonclient_options(self.grpc_tls.client if self.grpc_tls else None)
        )
        try:
            while True:
                if self._process.poll() is not None:
                    raise LocalServiceError(
                        f"tritonserver exited with code {self._process.returncode} while starting; "
                        f"log tail:\n{log_tail(self.log_path)}"
                    )
                with contextlib.suppress(Exception):
                    if client.is_server_live(client_timeout=2) and all(
                        client.is_model_ready(model, client_timeout=2) for model in self.models
                    ):
                        return
                if time.monotonic() > deadline:
                    raise LocalServiceError(
                        f"tritonserver not ready after {self.startup_timeout:.0f}s (a failing python backend "
                        f"stub leaves models loading forever); log tail:\n{log_tail(self.log_path)}"
                    )
                time.sleep(0.5)
        finally:
            client.close()

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    def kill(self) -> None:
        """SIGKILL to tritonserver and its backend stubs, as a crash would; `start()` brings it back."""
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=30)
        self._process = None

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, self.stop_timeout)
            logger.info("tritonserver pid %d stopped (code %s)", self._process.pid, self._process.returncode)
            self._process = None
        leftover = _shm_regions() - self._shm_before
        for region in leftover - _mapped_anywhere(leftover):
            region.unlink(missing_ok=True)
        if self._owned_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def triton_main(argv: list[str] | None = None) -> int:
    """Starts tritonserver serving the cross-encoder artifact until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=triton_main.__doc__)
    parser.add_argument("--artifact-root", type=Path, default=REPO_ROOT / "var" / "models" / "cross-encoder")
    parser.add_argument("--version", default="", help="artifact version folder; default: the newest")
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "var" / "triton" / "model_repository")
    parser.add_argument("--venv", type=Path, default=DEFAULT_TRITON_VENV)
    parser.add_argument("--intra-op-threads", type=int, default=0)
    parser.add_argument("--instances", type=int, default=1, help="model instances")
    parser.add_argument("--gpu", action="store_true", help="the model on GPU 0 (DEVICE cuda)")
    parser.add_argument(
        "--score-batch-size", type=int, default=0, help="pairs per forward pass (0: the committed value)"
    )
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--env-file", type=Path, default=None, help="also write TRITON_URL=... here")
    args = parser.parse_args(argv)
    configure_logging()
    from search_common.artifacts import latest_version

    version_dir = args.artifact_root / args.version if args.version else latest_version(args.artifact_root)
    repository = assemble_model_repository(
        args.repository,
        artifact_root=version_dir.parent,
        artifact_version=version_dir.name,
        intra_op_threads=args.intra_op_threads,
        instance_count=args.instances,
        device="cuda" if args.gpu else "",
        score_batch_size=args.score_batch_size,
    )
    server = TritonServer(
        repository,
        installation=TritonInstallation.find(args.venv),
        work_dir=args.repository.parent / "run",
        startup_timeout=args.startup_timeout,
    )
    with server, until_signal():
        write_env_file(
            args.env_file,
            {
                "TRITON_URL": server.grpc_url,
                "TRITON_HTTP_PORT": str(server.http_port),
                "TRITON_METRICS_PORT": str(server.metrics_port),
                "TRITON_STARTUP_SECONDS": f"{server.startup_seconds:.1f}",
            },
        )
    return 0
