"""Fault drills: a real stack under load loses one component at a time, gets it back, and keeps answering.

The stack is the production shape on loopback: two dense shards and one BM25 shard (retriever processes),
the reranker process on a real tritonserver with a real redis-server score cache, and the gateway process.
During a bounded load (`operations.loadgen`), one component is killed with SIGKILL, left down for a few
seconds and started again on the same port; the gateway is never restarted. Each drill reports the
requests sent, those that failed (any status but OK; the goal is none), the answers flagged degraded, and
the seconds from the restart until answers stopped being degraded.

With `supervised=True` the drill never restarts anything: the stack's own supervisor
(`ServiceStack.supervise`, Triton and Redis included) sees the crash and brings the component back, and the
report gives the seconds from the kill until answers stopped being degraded (`time_to_recovery_s`).

Used by `bench/loadgen.py` (full size, writes bench/results/faults.json), `bench/overload.py`, `bench/soak.py`
and the slow fault tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Literal

from operations.launch import REPO_ROOT
from operations.loadgen import RequestRecord, recovery_seconds, run_load
from operations.processes import RestartPolicy, ServiceStack
from operations.redis_server import RedisServer
from operations.triton_repository import assemble_model_repository
from operations.tritonserver import TritonServer
from search_common.artifacts import ArtifactError, read_manifest

logger = logging.getLogger(__name__)

Fault = Literal["reranker", "triton", "redis", "shard"]
FAULTS: tuple[Fault, ...] = ("reranker", "triton", "redis", "shard")
# The variant every drill request asks for: hybrid first stage, then the cross-encoder over Triton at the
# model's own sequence length (the packaged variants ask 256 tokens; small test artifacts allow fewer).
DRILL_VARIANT = "drill"
DRILL_VARIANTS_YAML = """\
default: drill
variants:
  - {name: drill, weight: 1, first_stage: hybrid, retrieval_depth: 20, reranker: cross-encoder-minilm,
     rerank_depth: 10, cache: true, fusion: none}
"""
DRILL_QUERIES = (
    "how to compress a file with gzip",
    "parse command line arguments",
    "sha256 digest of bytes",
    "open a socket connection to a server",
    "format a date as iso 8601",
    "run a subprocess and capture its output",
    "read a csv file row by row",
    "json encode a python object",
    "walk a directory tree",
    "thread pool executor map",
    "regular expression match groups",
    "parse an url into components",
    "temporary file that is deleted on close",
    "send an http request",
    "decode base64 data",
    "sort a list with a key function",
)


def drill_queries(count: int, tag: str) -> list[str]:
    """`count` distinct queries marked with `tag`, so that no drill's scores are cached by an earlier one and
    the score cache never answers in Triton's place: every request is scored."""
    n = len(DRILL_QUERIES)
    return [f"{DRILL_QUERIES[i % n]} {tag}{i // n}" for i in range(count)]


def add_drill_arguments(parser: argparse.ArgumentParser) -> None:
    """The drill stack's data flags, shared by the fault, overload and soak benches."""
    parser.add_argument("--docs", type=int, default=500, help="first N documents of the stdlib corpus")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "var" / "bench" / "faults")
    parser.add_argument(
        "--artifact",
        type=Path,
        default=REPO_ROOT / "var" / "test-artifacts" / "reranker-cross-encoder" / "v1",
        help="cross-encoder artifact version directory for Triton",
    )


def drill_indexes(work: Path, docs: int) -> tuple[Path, Path]:
    """The drill stack's 2-shard dense and 1-shard BM25 indexes over the first `docs` stdlib documents,
    built once under `work` and reused."""
    from corpora.stdlib import ensure_stdlib_corpus
    from model_runtimes.bi_encoder import BiEncoder
    from retriever_service.build_index import build_index

    def index(corpus: Path, out: Path, kind: Literal["dense", "bm25"], shards: int) -> Path:
        with contextlib.suppress(ArtifactError):
            read_manifest(out / "shard-0")
            return out
        encoder = BiEncoder.load() if kind == "dense" else None
        return build_index(corpus, out, kind=kind, num_shards=shards, encoder=encoder, overwrite=True)

    full = ensure_stdlib_corpus(REPO_ROOT / "var" / "corpus" / "stdlib")
    corpus = work / f"corpus-{docs}.jsonl"
    if not corpus.is_file():
        work.mkdir(parents=True, exist_ok=True)
        with full.open(encoding="utf-8") as src:
            corpus.write_text("".join(islice(src, docs)), encoding="utf-8")
    dense = index(corpus, work / f"dense-2-{docs}", "dense", 2)
    bm25 = index(corpus, work / f"bm25-1-{docs}", "bm25", 1)
    return dense, bm25


@dataclass(frozen=True, slots=True)
class FaultReport:
    fault: Fault
    requests: int
    failed: int
    degraded: int
    recovery_s: float | None
    codes: dict[str, int] = field(default_factory=dict)
    down_s: float = 0.0
    restart_s: float = 0.0
    # Degraded answers by the component they named (a Redis outage names only the score cache).
    degraded_by: dict[str, int] = field(default_factory=dict)
    # Supervised drills: from the kill until answers stopped being degraded, the supervisor's restart
    # included (None when the drill restarted the component itself).
    time_to_recovery_s: float | None = None

    def row(self) -> dict[str, object]:
        """The faults.json row: fault, requests, failed, degraded, recovery_s (plus detail fields)."""
        return asdict(self)


class DrillStack:
    """Starts the drill stack (`with DrillStack(...) as stack:`) and kills/restarts its components.

    Args:
        run_dir: logs, port files, the Triton model repository.
        dense_index: a 2-shard dense index version directory.
        bm25_index: a 1-shard BM25 index version directory.
        artifact: the cross-encoder artifact version directory Triton serves.
        supervised: the stack's supervisor restarts what dies (`restart` then only waits for it).
        gateway_args: further gateway flags (budgets, shedding) for drills that compare settings.
    """

    def __init__(
        self,
        run_dir: Path,
        dense_index: Path,
        bm25_index: Path,
        artifact: Path,
        *,
        startup_timeout: float = 180.0,
        supervised: bool = False,
        restart_policy: RestartPolicy | None = None,
        gateway_args: Sequence[str] = (),
    ) -> None:
        self.run_dir = run_dir
        self.supervised = supervised
        self._policy = restart_policy
        self._gateway_args = list(gateway_args)
        self._dense = dense_index
        self._bm25 = bm25_index
        self._artifact = artifact
        self._timeout = startup_timeout
        self._resources = contextlib.ExitStack()
        self.services = ServiceStack(run_dir)
        self.redis: RedisServer | None = None
        self.triton: TritonServer | None = None
        self.argv: dict[str, list[str]] = {}

    @property
    def gateway_address(self) -> str:
        return self.services.service("gateway").address

    def __enter__(self) -> DrillStack:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.services.stop_all()
        self._resources.close()

    def _start(self) -> None:
        python = sys.executable
        self.redis = self._resources.enter_context(RedisServer())
        repository = assemble_model_repository(
            self.run_dir / "triton-models",
            artifact_root=self._artifact.parent,
            artifact_version=self._artifact.name,
            intra_op_threads=1,
        )
        self.triton = self._resources.enter_context(
            TritonServer(repository, work_dir=self.run_dir / "triton")
        )
        self.argv["reranker"] = [
            python, "-m", "reranker_service", "--backend", "triton", "--triton-url", self.triton.grpc_url,
            "--cache", "redis", "--redis-url", self.redis.url,
        ]  # fmt: skip
        shards = {
            "dense-0": self._dense / "shard-0",
            "dense-1": self._dense / "shard-1",
            "bm25-0": self._bm25 / "shard-0",
        }
        for name, path in shards.items():
            self.argv[name] = [python, "-m", "retriever_service", "--index", str(path), "--threads", "1"]
        spawned = [self.services.spawn(name, self.argv[name]) for name in ("reranker", *shards)]
        for service in spawned:
            service.wait_ready(self._timeout)
        address = {service.name: service.address for service in spawned}
        dense = ",".join(address[n] for n in ("dense-0", "dense-1"))
        variants = self.run_dir / "variants.yaml"
        variants.write_text(DRILL_VARIANTS_YAML)
        self.argv["gateway"] = [
            python, "-m", "gateway", "--dense", dense, "--bm25", address["bm25-0"],
            "--reranker", address["reranker"], "--variants", str(variants),
            *self._gateway_args,
        ]  # fmt: skip
        self.services.start("gateway", self.argv["gateway"], timeout=self._timeout)
        if self.supervised:
            redis, triton = self.redis, self.triton
            assert redis is not None and triton is not None
            self.services.supervise_external("redis", lambda: redis.crashed, redis.start)
            self.services.supervise_external("triton", lambda: triton.crashed, triton.start)
            self.services.supervise(self._policy)

    def restarts(self, fault: Fault) -> float:
        """How often the supervisor has restarted the component."""
        name = self._process_name(fault)
        value = self.services.registry.get_sample_value("search_stack_restarts_total", {"component": name})
        return value or 0.0

    def kill(self, fault: Fault) -> None:
        """SIGKILL the component, as a crash would (supervised: behind its owner's back, like one)."""
        if self.supervised and fault in ("redis", "triton"):
            server = self.redis if fault == "redis" else self.triton
            assert server is not None and server.pid is not None
            kill = os.killpg if fault == "triton" else os.kill  # tritonserver leads its stubs' group
            kill(server.pid, signal.SIGKILL)
        elif fault == "redis":
            assert self.redis is not None
            self.redis.kill()
        elif fault == "triton":
            assert self.triton is not None
            self.triton.kill()
        else:  # the current process: after a supervised restart, not the one first started
            self.services.service(self._process_name(fault)).kill()
        logger.info("killed %s", fault)

    def restart(self, fault: Fault, *, restarts_before: float = 0.0, timeout: float = 120.0) -> None:
        """Starts the component again on its old port and waits until it is ready; supervised, only waits
        until the supervisor has restarted it (more than `restarts_before` restarts)."""
        if self.supervised:
            deadline = time.monotonic() + timeout
            while self.restarts(fault) <= restarts_before:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the supervisor did not restart {fault} within {timeout:.0f}s")
                time.sleep(0.05)
        elif fault == "redis":
            assert self.redis is not None
            self.redis.start()
        elif fault == "triton":
            assert self.triton is not None
            self.triton.start()
        else:
            name = self._process_name(fault)
            self.services.restart(self.services.service(name), self.argv[name], timeout=self._timeout)
        logger.info("restarted %s", fault)

    @staticmethod
    def _process_name(fault: Fault) -> str:
        return "dense-1" if fault == "shard" else fault


async def run_fault(
    stack: DrillStack,
    fault: Fault,
    *,
    requests: int,
    concurrency: int = 16,
    kill_after: float = 0.25,
    down_seconds: float = 3.0,
    settle_seconds: float = 3.0,
    timeout: float = 10.0,
    queries: Sequence[str] | None = None,
) -> FaultReport:
    """One drill: load, kill `fault` after `kill_after` of the requests, restart it, load until settled.

    The load runs past `requests` until `settle_seconds` have passed since both the restart and the last
    bad (failed or degraded) answer, so that recovery is observed, within hard bounds (3 × requests, 10 min).
    """
    done = 0
    restarted_at: float | None = None
    last_bad = 0.0
    kill_point = asyncio.Event()

    def on_record(record: RequestRecord) -> None:
        nonlocal done, last_bad
        done += 1
        if not record.ok or record.degraded:
            last_bad = max(last_bad, record.finished)
        if done >= requests * kill_after:
            kill_point.set()

    def keep_going() -> bool:
        if restarted_at is None:
            return True
        return time.monotonic() - max(restarted_at, last_bad) < settle_seconds

    killed_at = 0.0

    async def inject() -> tuple[float, float]:
        nonlocal restarted_at, killed_at
        await kill_point.wait()
        restarts_before = stack.restarts(fault) if stack.supervised else 0.0
        killed_at = time.monotonic()
        await asyncio.to_thread(stack.kill, fault)
        if not stack.supervised:  # supervised, the supervisor decides when
            await asyncio.sleep(down_seconds)
        restart_began = time.monotonic()
        await asyncio.to_thread(stack.restart, fault, restarts_before=restarts_before)
        restarted_at = time.monotonic()
        return restart_began - killed_at, restarted_at - restart_began

    injector = asyncio.create_task(inject())
    result = await run_load(
        stack.gateway_address,
        queries if queries is not None else drill_queries(3 * requests, fault),
        total=requests,
        concurrency=concurrency,
        timeout=timeout,
        variant=DRILL_VARIANT,
        keep_going=keep_going,
        on_record=on_record,
    )
    if not injector.done():  # the load hit a hard bound first: still bring the component back
        await injector
    down_s, restart_s = injector.result()
    assert restarted_at is not None
    recovery = recovery_seconds(result.records, restarted_at)
    report = FaultReport(
        fault=fault,
        requests=result.requests,
        failed=result.failed,
        degraded=result.degraded,
        recovery_s=round(recovery, 2),
        codes=result.codes(),
        down_s=round(down_s, 2),
        restart_s=round(restart_s, 2),
        degraded_by=dict(Counter(c for r in result.records if r.ok for c in r.degraded_components)),
        time_to_recovery_s=round(restarted_at + recovery - killed_at, 2) if stack.supervised else None,
    )
    logger.info("fault drill %s: %s", fault, report)
    return report
