"""In-process scorer: the embedded default, and what the gateway's evaluation uses.

One scoring runtime: a `CrossEncoderRuntime` on either engine (ONNX Runtime, or the artifact's bfloat16
torch program), or a `StoredVectorRuntime` (ColBERT, a poly-encoder or a re-scoring bi-encoder over
documents' stored vectors). Tokenisation and the forward passes block, so they run on a small dedicated
thread pool; a bounded count of waiting requests (`AdmissionLimit`) turns overload into RESOURCE_EXHAUSTED
instead of an ever-growing queue.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime
from model_runtimes.stopping import ScoringStopped
from reranker_service.backends.admission import AdmissionLimit
from search_common.artifacts import resolve_version

logger = logging.getLogger(__name__)

WARMUP_QUERY = "warm up the reranker"


class ScoringRuntime(Protocol):
    """What the in-process scorer runs: a loaded model that scores texts against a query, blocking."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def max_length(self) -> int: ...

    @property
    def engine_on_device(self) -> str: ...

    def score(
        self,
        query: str,
        texts: Sequence[str],
        max_length: int | None = None,
        batch_size: int = 32,
        should_stop: Callable[[], bool] | None = None,
    ) -> npt.NDArray[np.float32]: ...

    def close(self) -> None: ...


class EmbeddedScorer:
    """`Scorer` over a scoring runtime, run off the event loop.

    Args:
        runtime: the loaded model.
        threads: batches scored at once (each on its own thread).
        max_pending: requests admitted (running or waiting) before ResourceExhausted.
        batch_size: pairs per forward pass.
    """

    def __init__(
        self, runtime: ScoringRuntime, *, threads: int = 1, max_pending: int = 64, batch_size: int = 32
    ) -> None:
        self._runtime = runtime
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="embedded-scorer")
        self._admission = AdmissionLimit(max_pending)
        self._batch_size = batch_size
        self._warm = False
        # Scoring running on a pool thread right now; a request whose caller gave up stops at its next
        # batch, so this returns to zero soon after a burst of expired requests.
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self.abandoned = 0

    @property
    def in_flight(self) -> int:
        """Scoring jobs running on the pool's threads (not counting queued ones)."""
        with self._in_flight_lock:
            return self._in_flight

    @classmethod
    def load(
        cls,
        artifact: Path,
        *,
        engine: str = "onnx",
        device: str = "cpu",
        threads: int = 1,
        intra_op_threads: int = 0,
        batch_workers: int = 0,
        pass_shape: str = "auto",
        batch_size: int = 32,
        max_pending: int = 64,
    ) -> EmbeddedScorer:
        runtime = CrossEncoderRuntime.load(
            resolve_version(artifact),
            engine=engine,
            device=device,
            intra_op_threads=intra_op_threads,
            batch_workers=batch_workers,
            pass_shape=pass_shape,
        )
        return cls(runtime, threads=threads, max_pending=max_pending, batch_size=batch_size)

    @property
    def model_name(self) -> str:
        return self._runtime.name

    @property
    def model_version(self) -> str:
        return self._runtime.version

    @property
    def max_length(self) -> int:
        return self._runtime.max_length

    @property
    def engine(self) -> str:
        """Which of the runtime's engines scores, and where: "onnx", "torch", "torch-cuda"."""
        return self._runtime.engine_on_device

    async def start(self) -> None:
        """Nothing to connect; the first call scores one tiny pair to warm the engine's allocations."""
        if not self._warm:
            self._warm = True
            await self.score(WARMUP_QUERY, ["warm-up document"])

    async def score(
        self, query: str, texts: Sequence[str], max_length: int | None = None
    ) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        with self._admission.admit():
            stop = threading.Event()
            try:
                loop = asyncio.get_running_loop()
                # A cancelled await (the request's deadline passed, or its client went away) drops a job that
                # has not started and makes a running one stop at its next batch instead of finishing unseen.
                return await loop.run_in_executor(
                    self._executor, self._score_unless_stopped, stop, query, list(texts), max_length
                )
            except asyncio.CancelledError:
                stop.set()
                raise

    def _score_unless_stopped(
        self, stop: threading.Event, query: str, texts: list[str], max_length: int | None
    ) -> npt.NDArray[np.float32]:
        with self._in_flight_lock:
            self._in_flight += 1
        try:
            return self._runtime.score(query, texts, max_length, self._batch_size, should_stop=stop.is_set)
        except ScoringStopped:
            with self._in_flight_lock:
                self.abandoned += 1
            raise
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        await asyncio.to_thread(self._runtime.close)


def load_stored_vector_scorer(
    kind: str,
    artifact: Path,
    *,
    token_store: Path | None,
    device: str = "cpu",
    threads: int = 1,
    intra_op_threads: int = 0,
    batch_size: int = 32,
    max_pending: int = 64,
    on_lookups: Callable[[int, int], None] | None = None,
) -> EmbeddedScorer:
    """The in-process scorer over a stored-vector artifact of `kind` (search_common.model_kinds) and, when
    given, the documents' vectors stored at index time; `on_lookups(hits, misses)` hears each request's
    token-store lookups."""
    from model_runtimes.stored_vector_loading import load_stored_vector_runtime

    runtime = load_stored_vector_runtime(
        kind, artifact, token_store=token_store, device=device, intra_op_threads=intra_op_threads,
        on_lookups=on_lookups,
    )  # fmt: skip
    return EmbeddedScorer(runtime, threads=threads, max_pending=max_pending, batch_size=batch_size)
