"""`CrossEncoderRuntime`: a cross-encoder artifact loaded on one engine, scoring (query, document) pairs.

The same code scores pairs in the reranker's embedded backends and inside Triton's python backend
(`triton_models/cross_encoder/1/model.py`), so scores agree between them. It imports only numpy, tokenizers,
the engine's runtime (lazily, in `load`) and the standard library: the Triton server's environment has
nothing else. Two engines, one contract (`manifest` describes the artifact):

- `onnx`: ONNX Runtime over `model.onnx` (int8 by default): fast on any x86 CPU.
- `torch`: the bf16 program through PyTorch, whose oneDNN kernels use AMX tiles on CPUs that have them
  (Sapphire Rapids and later), several times the fp32 rate and closer to fp32 scores than int8.

Pairs are tokenised as `[CLS] query [SEP] document [SEP]`, truncating only the document (a query is cut to at
most half the pair's tokens first), and scored in passes shaped so that a pair's score depends only on the
pair, the model and the engine, never on the other pairs of the call (`passes`): on a CPU each pair is a pass
of its own; on a GPU, passes of a fixed row count and length bucket. With `batch_workers` > 1, that many
passes run at once on their own threads (both engines release the GIL): on a CPU, one single-threaded worker
per core is the fast setting, and the default.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from model_runtimes.cross_encoder.contract import (
    ATTENTION_MASK,
    ENGINE_CHOICES,
    INPUT_IDS,
    TOKEN_TYPE_IDS,
    TOKENIZER_FILE,
    BatchForward,
    FloatArray,
)
from model_runtimes.cross_encoder.manifest import (
    CrossEncoderManifest,
    choose_engine,
    read_cross_encoder_manifest,
    rows_interact,
)
from model_runtimes.cross_encoder.onnx_engine import _open_onnx, onnx_providers
from model_runtimes.cross_encoder.pairs import pad_batch
from model_runtimes.cross_encoder.passes import Pass, choose_pass_shape, plan_passes, usable_cores
from model_runtimes.stopping import ScoringStopped
from search_common.artifacts import ArtifactError

logger = logging.getLogger(__name__)


class CrossEncoderRuntime:
    """A loaded cross-encoder: tokenizer plus an engine's forward pass; safe for concurrent `score` calls."""

    def __init__(
        self,
        manifest: CrossEncoderManifest,
        tokenizer: Tokenizer,
        forward: BatchForward,
        *,
        engine: str = "onnx",
        device: str = "cpu",
        batch_workers: int = 1,
        pass_shape: str = "single",
    ) -> None:
        if batch_workers < 1:
            raise ValueError(f"batch_workers must be at least 1, got {batch_workers}")
        self._pass_shape = choose_pass_shape(
            pass_shape, device=device, rows_interact=rows_interact(manifest, engine)
        )
        self._batch_pool = (
            ThreadPoolExecutor(batch_workers, thread_name_prefix="ce-batch") if batch_workers > 1 else None
        )
        self._manifest = manifest
        self._base_tokenizer = tokenizer
        self._forward = forward
        self._engine = engine
        self._device = device
        self._pad_id = tokenizer.token_to_id("[PAD]") or 0
        self._truncating: dict[tuple[int, str], Tokenizer] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        artifact_dir: Path,
        *,
        engine: str = "onnx",
        device: str = "cpu",
        intra_op_threads: int = 0,
        batch_workers: int = 0,
        pass_shape: str = "auto",
        verify_checksums: bool = True,
    ) -> CrossEncoderRuntime:
        """Validates the artifact and opens the engine on it.

        Args:
            artifact_dir: the version directory, `<root>/<version>/`.
            engine: "onnx" (ONNX Runtime over `model.onnx`), "torch" (the artifact's `torch_program`), or
                "auto" (`choose_engine` decides; `engine` then says which).
            device: where the engine runs: "cpu", or "cuda"/"cuda:N" (the torch program moved there, or ONNX
                Runtime's CUDA provider); auto chooses for it. A GPU that nothing can use is an error.
            intra_op_threads: threads per operator; 0 lets the engine decide (1 with several batch
                workers). PyTorch's setting is process-wide, so with torch the last runtime loaded sets it
                for all.
            batch_workers: passes of one call scored at once, each on its own thread; 0 picks one per
                usable core for single passes and 1 for bucketed ones.
            pass_shape: "single" (each pair a pass of its own), "bucketed" (passes of `batch_size` rows in
                fixed length buckets), or "auto" (single on a CPU, bucketed on a GPU where the engine
                keeps rows apart); see `passes`. Each makes a pair's score independent of the other pairs
                scored with it.
            verify_checksums: check every file against the manifest (turn off only in tests of speed).

        Raises:
            ArtifactError: missing or corrupt files, an unsupported manifest, an unexpected model graph, or
                an engine the artifact has no model for.
        """
        if engine not in ENGINE_CHOICES:  # before any I/O
            raise ValueError(f"engine must be one of {', '.join(ENGINE_CHOICES)}, got {engine!r}")
        if batch_workers < 0:
            raise ValueError(f"batch_workers must be at least 1, or 0 for one per core; got {batch_workers}")
        onnx_providers(device)  # refuses a malformed device before any I/O
        manifest = read_cross_encoder_manifest(artifact_dir, verify=verify_checksums)
        engine = choose_engine(engine, manifest, device)
        pass_shape = choose_pass_shape(
            pass_shape, device=device, rows_interact=rows_interact(manifest, engine)
        )
        if batch_workers == 0:
            batch_workers = usable_cores() if pass_shape == "single" else 1
        if intra_op_threads == 0 and batch_workers > 1:
            intra_op_threads = 1  # the workers already use the cores; more threads per pass would contend
        try:
            tokenizer = Tokenizer.from_file(str(artifact_dir / TOKENIZER_FILE))
        except Exception as exc:
            raise ArtifactError(f"{artifact_dir}: {TOKENIZER_FILE} does not load ({exc})") from None
        tokenizer.no_padding()
        tokenizer.no_truncation()
        forward: BatchForward
        if engine == "torch":
            from model_runtimes.cross_encoder.torch_engine import open_torch_program

            forward = open_torch_program(
                artifact_dir, manifest, intra_op_threads=intra_op_threads, device=device
            )
        else:
            forward = _open_onnx(artifact_dir, manifest, device, intra_op_threads)
        logger.info(
            "loaded cross-encoder %s version %s from %s on %s, %s passes, %d worker(s)",
            manifest.name,
            manifest.version,
            artifact_dir,
            forward.description,
            pass_shape,
            batch_workers,
        )
        return cls(
            manifest,
            tokenizer,
            forward,
            engine=engine,
            device=device,
            batch_workers=batch_workers,
            pass_shape=pass_shape,
        )

    @property
    def engine(self) -> str:
        """Which of the artifact's models scores: onnx or torch."""
        return self._engine

    @property
    def engine_on_device(self) -> str:
        """The engine, and "-cuda" on a GPU ("torch", "onnx-cuda"): what rounds the scores a given way."""
        kind = self._device.partition(":")[0]
        return self._engine if kind == "cpu" else f"{self._engine}-{kind}"

    @property
    def description(self) -> str:
        """The engine and what it runs on, e.g. "onnx CPUExecutionProvider" or "torch bfloat16 on cpu"."""
        return self._forward.description

    @property
    def pass_shape(self) -> str:
        """How pairs become forward passes: "single" or "bucketed" (`model_runtimes.cross_encoder.passes`)."""
        return self._pass_shape

    @property
    def name(self) -> str:
        return self._manifest.name

    @property
    def version(self) -> str:
        return self._manifest.version

    @property
    def max_length(self) -> int:
        return self._manifest.max_length

    def score(
        self,
        query: str,
        texts: Sequence[str],
        max_length: int | None = None,
        batch_size: int = 32,
        should_stop: Callable[[], bool] | None = None,
    ) -> FloatArray:
        """One relevance score per text against the query, float32, in input order."""
        return self.score_pairs(
            [query] * len(texts), texts, max_length=max_length, batch_size=batch_size, should_stop=should_stop
        )

    def score_pairs(
        self,
        queries: Sequence[str],
        texts: Sequence[str],
        max_length: int | None = None,
        batch_size: int = 32,
        should_stop: Callable[[], bool] | None = None,
    ) -> FloatArray:
        """Scores (queries[i], texts[i]) pairs, float32, in input order.

        A pair's score does not depend on the other pairs, their number or their order.

        Args:
            batch_size: rows per pass with bucketed passes (single passes have one).
            should_stop: asked before tokenising and before every pass; when it answers True (the caller
                gave up, e.g. its deadline passed) the remaining work is skipped and `ScoringStopped` raised.
        """
        if len(queries) != len(texts):
            raise ValueError(f"{len(queries)} queries but {len(texts)} texts")
        if not texts:
            return np.zeros(0, dtype=np.float32)
        limit = self._effective_max_length(max_length)
        if should_stop is not None and should_stop():
            raise ScoringStopped("scoring skipped: the caller gave up before it started")
        encodings = self._encode(queries, texts, limit)
        passes = plan_passes([len(e.ids) for e in encodings], self._pass_shape, rows=batch_size, limit=limit)
        scores = np.empty(len(encodings), dtype=np.float32)

        def run(one_pass: Pass) -> FloatArray:
            if should_stop is not None and should_stop():
                raise ScoringStopped("scoring stopped between passes: the caller gave up")
            return self._run(one_pass, encodings)

        if self._batch_pool is None or len(passes) == 1:
            for one_pass in passes:
                scores[list(one_pass.members)] = run(one_pass)
            return scores
        futures: list[Future[FloatArray]] = [self._batch_pool.submit(run, one_pass) for one_pass in passes]
        try:
            for one_pass, future in zip(passes, futures, strict=True):
                scores[list(one_pass.members)] = future.result()
        finally:
            for future in futures:
                future.cancel()  # after a failure or a stop: drop the passes not started
        return scores

    def close(self) -> None:
        """Stops the batch threads (a no-op with one worker)."""
        if self._batch_pool is not None:
            self._batch_pool.shutdown(wait=True, cancel_futures=True)

    def _effective_max_length(self, max_length: int | None) -> int:
        if max_length is None or max_length <= 0:
            return self.max_length
        if max_length < 8:
            raise ValueError(f"max_length must be at least 8 tokens, got {max_length}")
        return min(max_length, self.max_length)

    def _tokenizer_for(self, max_length: int, strategy: str = "only_second") -> Tokenizer:
        with self._lock:
            tokenizer = self._truncating.get((max_length, strategy))
            if tokenizer is None:
                tokenizer = Tokenizer.from_str(self._base_tokenizer.to_str())
                tokenizer.no_padding()
                tokenizer.enable_truncation(max_length, strategy=strategy)
                self._truncating[(max_length, strategy)] = tokenizer
            return tokenizer

    def _cap_query(self, query: str, max_tokens: int) -> str:
        encoding = self._base_tokenizer.encode(query, add_special_tokens=False)
        if len(encoding.ids) <= max_tokens:
            return query
        return query[: encoding.offsets[max_tokens - 1][1]]

    def _encode(self, queries: Sequence[str], texts: Sequence[str], max_length: int) -> list[Encoding]:
        capped = {q: self._cap_query(q, max_length // 2) for q in set(queries)}
        pairs = [(capped[q], t) for q, t in zip(queries, texts, strict=True)]
        tokenizer = self._tokenizer_for(max_length)
        try:
            return list(tokenizer.encode_batch(pairs))
        except Exception:
            # Some pair's capped query re-tokenises longer than its cap: only that pair is trimmed on both
            # sides, so how a pair is cut never depends on the pairs beside it.
            return [self._encode_pair(tokenizer, pair, max_length) for pair in pairs]

    def _encode_pair(self, tokenizer: Tokenizer, pair: tuple[str, str], max_length: int) -> Encoding:
        try:
            return tokenizer.encode(*pair)
        except Exception:
            return self._tokenizer_for(max_length, "longest_first").encode(*pair)

    def _run(self, one_pass: Pass, encodings: Sequence[Encoding]) -> FloatArray:
        members = [encodings[i] for i in one_pass.members]
        rows = members + [members[0]] * (one_pass.rows - len(members))  # filler keeps the pass's shape
        input_ids, attention, token_types = pad_batch(
            [e.ids for e in rows], [e.type_ids for e in rows], self._pad_id, width=one_pass.width
        )
        feeds = {INPUT_IDS: input_ids, ATTENTION_MASK: attention}
        if TOKEN_TYPE_IDS in self._forward.input_names:
            feeds[TOKEN_TYPE_IDS] = token_types
        return self._forward(feeds).reshape(len(rows), -1)[: len(members), 0]
