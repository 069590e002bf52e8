"""Cross-encoder inference over an artifact, shared by the reranker and the Triton model.

The same code scores pairs in the reranker's embedded backends and inside Triton's python backend
(`triton_models/cross_encoder/1/model.py`), so scores agree between them. It imports only numpy, tokenizers,
the engine's runtime (lazily, in `load`) and the standard library: the Triton server's environment has
nothing else, and a Triton-only reranker image can use the pure helpers without onnxruntime.

An artifact is a directory `<root>/<version>/` holding `model.onnx` (inputs `input_ids`, `attention_mask`,
optionally `token_type_ids`, int64 [batch, seq]; output `logits` float32 [batch, 1]), `tokenizer.json` and a
`manifest.json` (format_version 1, name, version, max_length, onnx, files {name: sha256}). It may also hold
`torch_program` (`{"file": "model.pt2", "dtype": "bfloat16"}`): the same model as a `torch.export` program,
which the `torch` engine runs (`search_common.cross_encoder_torch`). Two engines, one contract:

- `onnx`: ONNX Runtime over `model.onnx` (int8 by default): fast on any x86 CPU.
- `torch`: the bf16 program through PyTorch, whose oneDNN kernels use AMX tiles on CPUs that have them
  (Sapphire Rapids and later), several times the fp32 rate and closer to fp32 scores than int8.

Pairs are tokenised as `[CLS] query [SEP] document [SEP]`, truncating only the document (a query is cut to at
most half the pair's tokens first), and scored in passes shaped so that a pair's score depends only on the
pair, the model and the engine, never on the other pairs of the call (`search_common.score_passes`): on a
CPU each pair is a pass of its own; on a GPU, passes of a fixed row count and length bucket. With
`batch_workers` > 1, that many passes run at once on their own threads (both engines release the GIL): on a
CPU, one single-threaded worker per core is the fast setting, and the default.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from search_common.artifacts import ArtifactError, read_manifest, verify_checksums
from search_common.score_passes import Pass, choose_pass_shape, plan_passes, usable_cores

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
TOKENIZER_FILE = "tokenizer.json"
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"
OUTPUT_LOGITS = "logits"
REQUIRED_MANIFEST_KEYS = ("format_version", "name", "version", "max_length", "onnx", "files")
ENGINES = ("onnx", "torch")
# What callers may ask for: an engine, or "auto" (see `choose_engine`).
ENGINE_CHOICES = ("auto", *ENGINES)
# The export's quantisation schemes (the manifest's `quantization`) whose rows do not interact: fp32, and int8
# weights with activations quantised per row. The others quantise activations per tensor at run time, so a
# pair's score depends on its pass's other rows; an artifact that names no scheme is treated as one of those.
ROW_INDEPENDENT_QUANTIZATION = frozenset({"none", "int8-blockwise-weights"})

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
# An ONNX Runtime provider: a name, or (name, options) such as ("CUDAExecutionProvider", {"device_id": 0}).
Provider = str | tuple[str, dict[str, Any]]
CUDA_PROVIDER = "CUDAExecutionProvider"


def onnx_providers(device: str) -> list[Provider]:
    """ONNX Runtime providers for `device`: "cpu", or "cuda"/"cuda:N" (its CUDA provider first)."""
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind != "cuda" or not (index == "" or index.isdigit()):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    return [(CUDA_PROVIDER, {"device_id": int(index or "0")}), "CPUExecutionProvider"]


class BatchForward(Protocol):
    """One engine's forward pass: padded int64 feeds in, one float32 logit per row out."""

    @property
    def input_names(self) -> frozenset[str]:
        """The feeds it takes (`input_ids`, `attention_mask`, and `token_type_ids` when the model uses it)."""
        ...

    @property
    def description(self) -> str:
        """What runs the model, for logs and metrics, e.g. "onnx CPUExecutionProvider"."""
        ...

    def __call__(self, feeds: dict[str, IntArray]) -> FloatArray: ...


# --- pure helpers (no onnxruntime) -------------------------------------------------------------------------


def length_order(lengths: Sequence[int] | npt.NDArray[Any]) -> tuple[IntArray, IntArray]:
    """Longest-first order of items and its inverse permutation.

    Returns:
        (order, inverse): `values_sorted = values[order]` and `values_sorted[inverse]` is input order again.
        Ties keep input order (stable sort).
    """
    lengths_array = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths_array, kind="stable").astype(np.int64)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size, dtype=np.int64)
    return order, inverse


def batch_slices(count: int, batch_size: int) -> list[slice]:
    """Consecutive slices of at most batch_size items covering range(count)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return [slice(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


def split_by_counts(values: npt.NDArray[Any], counts: Sequence[int]) -> list[npt.NDArray[Any]]:
    """Splits concatenated per-request results back into one array per request."""
    if sum(counts) != len(values):
        raise ValueError(f"counts sum to {sum(counts)} but there are {len(values)} values")
    offsets = np.cumsum([0, *counts])
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(counts))]


def pad_batch(
    encodings: Sequence[Sequence[int]],
    type_ids: Sequence[Sequence[int]],
    pad_id: int = 0,
    width: int | None = None,
) -> tuple[IntArray, IntArray, IntArray]:
    """Right-pads token ids to `width` (default: the longest sequence in the batch).

    Returns:
        (input_ids, attention_mask, token_type_ids), each int64 [batch, width].
    """
    longest = max((len(ids) for ids in encodings), default=0)
    if width is None:
        width = longest
    elif width < longest:
        raise ValueError(f"width {width} is shorter than the longest sequence ({longest})")
    input_ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    attention = np.zeros((len(encodings), width), dtype=np.int64)
    token_types = np.zeros((len(encodings), width), dtype=np.int64)
    for row, (ids, types) in enumerate(zip(encodings, type_ids, strict=True)):
        input_ids[row, : len(ids)] = ids
        attention[row, : len(ids)] = 1
        token_types[row, : len(types)] = types
    return input_ids, attention, token_types


class ScoringStopped(Exception):
    """Scoring was abandoned between batches because the caller no longer wants the result."""


@dataclass(frozen=True, slots=True)
class PairRequest:
    """One inference request's pairs, decoded: the python backend's unit of success or failure."""

    queries: list[str]
    texts: list[str]
    max_length: int | None = None


def decode_pair_request(
    queries: npt.NDArray[Any] | None, texts: npt.NDArray[Any] | None, max_length: int | None = None
) -> PairRequest:
    """Turns a request's QUERY and DOCUMENT string tensors ([n, 1] or [n] of bytes) into a PairRequest.

    Raises:
        ValueError: a missing tensor, mismatched row counts, non-UTF-8 bytes or an empty query.
    """
    if queries is None or texts is None:
        raise ValueError("both QUERY and DOCUMENT tensors are required")
    query_rows, text_rows = queries.reshape(-1), texts.reshape(-1)
    if query_rows.size != text_rows.size:
        raise ValueError(
            f"QUERY has {query_rows.size} rows but DOCUMENT has {text_rows.size}; send one per pair"
        )
    try:
        decoded_queries = [_as_text(value) for value in query_rows]
        decoded_texts = [_as_text(value) for value in text_rows]
    except UnicodeDecodeError:
        raise ValueError("QUERY and DOCUMENT must be UTF-8 strings") from None
    if any(not q.strip() for q in decoded_queries):
        raise ValueError("QUERY must not be empty")
    return PairRequest(decoded_queries, decoded_texts, max_length)


def _as_text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


ScorePairs = Callable[[Sequence[str], Sequence[str], "int | None"], FloatArray]


def score_requests(score_pairs: ScorePairs, requests: Sequence[PairRequest]) -> list[FloatArray]:
    """Scores many requests' pairs in as few passes as possible and splits the scores back per request.

    Requests asking for the same max_length are concatenated and scored in one pass (the scorer sorts by
    length and batches); the result for request i holds one score per pair of request i, in order.
    """
    results: list[FloatArray] = [np.zeros(0, dtype=np.float32)] * len(requests)
    groups: dict[int | None, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(request.max_length, []).append(index)
    for max_length, members in groups.items():
        queries = [q for i in members for q in requests[i].queries]
        texts = [t for i in members for t in requests[i].texts]
        scores = score_pairs(queries, texts, max_length)
        for index, part in zip(
            members, split_by_counts(scores, [len(requests[i].texts) for i in members]), strict=True
        ):
            results[index] = part
    return results


# --- artifact ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TorchProgram:
    """The artifact's `torch.export` program: its file and the dtype its weights were exported in."""

    file: str
    dtype: str


@dataclass(frozen=True, slots=True)
class CrossEncoderManifest:
    name: str
    version: str
    max_length: int
    onnx: str
    raw: dict[str, Any]
    torch_program: TorchProgram | None = None


def read_cross_encoder_manifest(artifact_dir: Path, *, verify: bool = True) -> CrossEncoderManifest:
    """Reads and checks a cross-encoder manifest (and, with verify, every listed file's checksum).

    Raises:
        ArtifactError: with a message naming the artifact and what is wrong with it.
    """
    if not artifact_dir.is_dir():
        raise ArtifactError(f"{artifact_dir}: cross-encoder artifact directory not found")
    manifest = read_manifest(artifact_dir, REQUIRED_MANIFEST_KEYS)
    if manifest["format_version"] != FORMAT_VERSION:
        raise ArtifactError(
            f"{artifact_dir}: manifest format_version {manifest['format_version']!r} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    name, version, onnx_name = manifest["name"], manifest["version"], manifest["onnx"]
    max_length = manifest["max_length"]
    for key, value in (("name", name), ("version", version), ("onnx", onnx_name)):
        if not isinstance(value, str) or not value:
            raise ArtifactError(f"{artifact_dir}: manifest {key} must be a non-empty string")
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 8:
        raise ArtifactError(
            f"{artifact_dir}: manifest max_length must be an integer >= 8, got {max_length!r}"
        )
    files = manifest["files"]
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ArtifactError(f"{artifact_dir}: manifest files must map file names to sha256 strings")
    program = _torch_program_entry(artifact_dir, manifest.get("torch_program"))
    for needed in (onnx_name, TOKENIZER_FILE, *([program.file] if program is not None else [])):
        if needed not in files:
            raise ArtifactError(f"{artifact_dir}: manifest files does not list {needed}")
    if verify:
        verify_checksums(artifact_dir, files)
    return CrossEncoderManifest(name, version, max_length, onnx_name, manifest, program)


def _torch_program_entry(artifact_dir: Path, entry: object) -> TorchProgram | None:
    if entry is None:
        return None
    if not (
        isinstance(entry, dict)
        and isinstance(entry.get("file"), str)
        and entry["file"]
        and entry.get("dtype") in ("bfloat16", "float32")
    ):
        raise ArtifactError(
            f"{artifact_dir}: manifest torch_program must be {{file: name, dtype: bfloat16|float32}}, "
            f"got {entry!r}"
        )
    return TorchProgram(entry["file"], entry["dtype"])


def rows_interact(manifest: CrossEncoderManifest, engine: str) -> bool:
    """Whether `engine`'s passes over this artifact let one row's values change another row's score."""
    return engine == "onnx" and manifest.raw.get("quantization") not in ROW_INDEPENDENT_QUANTIZATION


def choose_engine(requested: str, manifest: CrossEncoderManifest, device: str = "cpu") -> str:
    """The engine `requested` means for this artifact on `device`; the one place "auto" is decided.

    auto is torch where it is the fast path: the artifact holds a torch program, PyTorch is installed, and
    either the device is a CUDA GPU PyTorch can use, or it is a CPU that multiplies bfloat16 matrices in
    hardware (AMX-BF16); onnx everywhere else (on a GPU, ONNX Runtime's CUDA provider).

    Raises:
        ValueError: an engine that is not one of ENGINE_CHOICES.
    """
    if requested not in ENGINE_CHOICES:
        raise ValueError(f"engine must be one of {', '.join(ENGINE_CHOICES)}, got {requested!r}")
    if requested != "auto":
        return requested
    import importlib.util

    from search_common.cpu_features import cpu_has_bf16_matrix_units
    from search_common.cross_encoder_torch import cuda_is_available

    if manifest.torch_program is None or importlib.util.find_spec("torch") is None:
        return "onnx"
    on_cpu = device.split(":", 1)[0] == "cpu"
    fast = cpu_has_bf16_matrix_units() if on_cpu else cuda_is_available()
    return "torch" if fast else "onnx"


def _check_graph_matches_manifest(
    artifact_dir: Path, manifest: CrossEncoderManifest, session: Any, inputs: set[str]
) -> None:
    """Refuses a model file that is not the one the manifest describes, or whose score head is not 1 wide.

    A two-class head (or any other width) would otherwise be scored by silently taking its first column.
    """
    logits = next(node for node in session.get_outputs() if node.name == OUTPUT_LOGITS)
    shape = list(logits.shape or [])
    width = shape[-1] if shape else None
    if len(shape) != 2 or (isinstance(width, int) and width != 1):
        raise ArtifactError(
            f"{artifact_dir}: score head '{OUTPUT_LOGITS}' has shape {shape}, expected [batch, 1]"
        )
    listed = manifest.raw.get("inputs")
    if listed is not None and (not isinstance(listed, list) or set(listed) != inputs):
        raise ArtifactError(
            f"{artifact_dir}: manifest lists inputs {listed!r} but {manifest.onnx} takes {sorted(inputs)}"
        )
    declared_output = manifest.raw.get("output")
    if declared_output is not None and declared_output != OUTPUT_LOGITS:
        raise ArtifactError(
            f"{artifact_dir}: manifest output {declared_output!r} is not the runtime's '{OUTPUT_LOGITS}'"
        )


class _OnnxForward:
    """`BatchForward` over an ONNX Runtime session (thread-safe: `InferenceSession.run` may be called at once
    from many threads)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._inputs = frozenset(node.name for node in session.get_inputs())

    @property
    def input_names(self) -> frozenset[str]:
        return self._inputs

    @property
    def description(self) -> str:
        return "onnx " + ",".join(self._session.get_providers())

    def __call__(self, feeds: dict[str, IntArray]) -> FloatArray:
        (logits,) = self._session.run([OUTPUT_LOGITS], feeds)
        return np.asarray(logits, dtype=np.float32)


def _open_onnx(
    artifact_dir: Path, manifest: CrossEncoderManifest, device: str, intra_op_threads: int
) -> _OnnxForward:
    import onnxruntime as ort  # here, so the pure helpers import without it (Triton-only images)

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(
            str(artifact_dir / manifest.onnx), sess_options=options, providers=onnx_providers(device)
        )
    except Exception as exc:
        raise ArtifactError(
            f"{artifact_dir}: {manifest.onnx} does not load in ONNX Runtime ({exc})"
        ) from None
    if device != "cpu" and CUDA_PROVIDER not in session.get_providers():
        # ONNX Runtime falls back to the CPU quietly; a model asked to run on a GPU must not.
        raise ArtifactError(
            f"{artifact_dir}: asked to run on {device}, but ONNX Runtime here has no usable CUDA provider "
            f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu"
        )
    inputs = {node.name for node in session.get_inputs()}
    outputs = {node.name for node in session.get_outputs()}
    if not {INPUT_IDS, ATTENTION_MASK} <= inputs or not inputs <= {INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS}:
        raise ArtifactError(f"{artifact_dir}: unexpected model inputs {sorted(inputs)}")
    if OUTPUT_LOGITS not in outputs:
        raise ArtifactError(f"{artifact_dir}: model has no '{OUTPUT_LOGITS}' output (has {sorted(outputs)})")
    _check_graph_matches_manifest(artifact_dir, manifest, session, inputs)
    return _OnnxForward(session)


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
                fixed length buckets), or "auto" (single on a CPU, bucketed on a GPU where the engine keeps
                rows apart); see `search_common.score_passes`. Each makes a pair's score independent of
                the other pairs scored with it.
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
            from search_common.cross_encoder_torch import open_torch_program

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
        """How pairs become forward passes: "single" or "bucketed" (`search_common.score_passes`)."""
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
