"""ColBERT late interaction at serving time: token embeddings for queries and documents, and MaxSim.

Reads the sentence-transformers folder that PyLate saves (a transformer, a bias-free linear projection in
`1_Dense`, and PyLate's settings in `config_sentence_transformers.json`) without importing PyLate, and
follows its conventions exactly, so the served scores are the trained model's:
- a `[Q] ` or `[D] ` marker token right after `[CLS]`;
- queries padded to `query_length` with `[MASK]` (query augmentation) and every position kept;
  the masks are attended to only when the model was trained that way;
- documents cut at `document_length` tokens, punctuation (the skiplist) and padding dropped;
- every token vector L2-normalised; a score is the sum over query tokens of the best dot product with a
  document token.

`training.late_interaction.train` checks at publish time that this module reproduces PyLate's vectors.

Example:
    encoder = LateInteractionEncoder.load(Path("var/models/colbert/v1"))
    query = encoder.encode_queries(["what causes scurvy?"])[0]     # (query_length, dim) float32
    docs = encoder.encode_documents(["Scurvy is caused by ...", "..."])  # list of (tokens, dim)
    scores = maxsim(query, docs)
"""

from __future__ import annotations

import json
import logging
import string
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from model_runtimes.stored_vectors import ManifestedModel, StoredVectorRuntime, read_model_manifest
from model_runtimes.token_store import TokenStores
from search_common.artifacts import ArtifactError, resolve_version, sha256_file

logger = logging.getLogger(__name__)

FloatMatrix = npt.NDArray[np.float32]

SETTINGS_FILE = "config_sentence_transformers.json"
DENSE_DIR = "1_Dense"
WEIGHTS_FILE = "model.safetensors"  # the transformer body's, at the artifact's root
BATCH_SIZE = 32
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_PROBES = ("scurvy", "does vitamin d supplementation reduce the risk of fractures in older adults?")
ONNX_PARITY_TOLERANCE = 1e-4


@dataclass(frozen=True, slots=True)
class LateInteractionSettings:
    """PyLate's model settings, as saved beside the weights."""

    query_prefix: str
    document_prefix: str
    query_length: int
    document_length: int
    attend_to_expansion_tokens: bool
    do_query_expansion: bool
    skiplist_words: tuple[str, ...]

    @classmethod
    def read(cls, directory: Path) -> LateInteractionSettings:
        path = directory / SETTINGS_FILE
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{path}: not a readable PyLate settings file: {exc}") from exc
        return cls(
            query_prefix=str(raw.get("query_prefix", "[Q] ")),
            document_prefix=str(raw.get("document_prefix", "[D] ")),
            query_length=int(raw.get("query_length", 32)),
            document_length=int(raw.get("document_length", 180)),
            attend_to_expansion_tokens=bool(raw.get("attend_to_expansion_tokens", False)),
            do_query_expansion=bool(raw.get("do_query_expansion", True)),
            skiplist_words=tuple(raw.get("skiplist_words", list(string.punctuation))),
        )


class LateInteractionEncoder:
    """Token embeddings for queries and documents, on torch (CPU or GPU); thread-safe."""

    def __init__(self, directory: Path, *, device: str = "cpu") -> None:
        self.directory = directory
        self.settings = LateInteractionSettings.read(directory)
        self._tokenizer = AutoTokenizer.from_pretrained(str(directory))
        self._model = AutoModel.from_pretrained(str(directory)).to(device).eval()
        weights = load_file(str(directory / DENSE_DIR / WEIGHTS_FILE))
        self._projection = weights["linear.weight"].to(device)  # (dim, hidden), no bias
        self._device = device
        self._lock = threading.Lock()
        # An ONNX Runtime session for the query path, once `run_queries_on_onnx` has checked it.
        self._query_session: object | None = None
        tokenizer = self._tokenizer
        self._query_prefix_id = self._token_id(self.settings.query_prefix)
        self._document_prefix_id = self._token_id(self.settings.document_prefix)
        # PyLate pads with [MASK], so padded query positions become expansion tokens (padded document
        # positions are masked out either way).
        if tokenizer.mask_token_id is not None:
            tokenizer.pad_token_id = tokenizer.mask_token_id
        self._skiplist = torch.tensor(
            [tokenizer.convert_tokens_to_ids(w) for w in self.settings.skiplist_words], dtype=torch.long
        )

    @classmethod
    def load(cls, directory: Path, *, device: str = "cpu") -> LateInteractionEncoder:
        return cls(directory, device=device)

    def _token_id(self, prefix: str) -> int | None:
        if not prefix:
            return None
        token_id = self._tokenizer.convert_tokens_to_ids(prefix)
        if not isinstance(token_id, int) or token_id == self._tokenizer.unk_token_id:
            raise ArtifactError(f"{self.directory}: the tokenizer has no marker token {prefix!r}")
        return token_id

    @property
    def dimension(self) -> int:
        return int(self._projection.shape[0])

    def _tokenize(self, texts: Sequence[str], *, is_query: bool) -> dict[str, torch.Tensor]:
        settings = self.settings
        length = settings.query_length if is_query else settings.document_length
        prefix_id = self._query_prefix_id if is_query else self._document_prefix_id
        budget = length - 1 if prefix_id is not None else length
        expand = is_query and settings.do_query_expansion
        batch = self._tokenizer(
            [t.strip() for t in texts],
            padding="max_length" if expand else True,
            truncation="longest_first",
            max_length=budget,
            return_tensors="pt",
        )
        features = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        if prefix_id is not None:
            fills = {"input_ids": prefix_id, "attention_mask": 1, "token_type_ids": 0}
            for key, tensor in features.items():
                column = torch.full((tensor.shape[0], 1), fills[key], dtype=tensor.dtype)
                features[key] = torch.cat([tensor[:, :1], column, tensor[:, 1:]], dim=1)
        if expand and settings.attend_to_expansion_tokens:
            features["attention_mask"].fill_(1)
        return features

    def _forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v.to(self._device) for k, v in features.items()}
        with self._lock, torch.inference_mode():
            hidden = self._model(**inputs).last_hidden_state
            projected = hidden @ self._projection.T
            return torch.nn.functional.normalize(projected, p=2, dim=-1).float().cpu()

    def _forward_onnx(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        feeds = {name: features[name].numpy() for name in ONNX_INPUTS}
        (hidden,) = self._query_session.run(None, feeds)  # type: ignore[union-attr]
        projected = torch.from_numpy(hidden) @ self._projection.cpu().T
        return torch.nn.functional.normalize(projected, p=2, dim=-1)

    def run_queries_on_onnx(self, threads: int = 1) -> float:
        """Encodes queries on ONNX Runtime from now on, if its export reproduces torch's vectors.

        One query is too small a job for torch's eager kernels on a CPU (about 30 ms on 2 busy cores, against
        a few on ONNX Runtime). Returns the largest difference on probe queries; leaves torch in place and
        raises ArtifactError when it exceeds ONNX_PARITY_TOLERANCE.
        """
        from model_runtimes.onnx_graph_cache import drop_cached_graph
        from model_runtimes.query_encoder_onnx import encoder_graph, export_key, onnx_session

        reference = self.encode_queries(ONNX_PROBES)
        key = export_key(f"colbert-{self.directory.name}", sha256_file(self.directory / WEIGHTS_FILE), "fp32")
        self._query_session = onnx_session(encoder_graph(self._model, key, "fp32"), threads)
        difference = float(np.abs(self.encode_queries(ONNX_PROBES) - reference).max())
        if difference > ONNX_PARITY_TOLERANCE:
            self._query_session = None
            drop_cached_graph(key)
            raise ArtifactError(
                f"{self.directory}: the ONNX query path differs from torch by {difference:.2e}"
            )
        return difference

    def encode_queries(self, texts: Sequence[str]) -> FloatMatrix:
        """(n, query_length, dim): every position, expansion tokens included, as PyLate scores them."""
        out: list[torch.Tensor] = []
        for start in range(0, len(texts), BATCH_SIZE):
            features = self._tokenize(texts[start : start + BATCH_SIZE], is_query=True)
            if self._query_session is not None:
                vectors = self._forward_onnx(features)
            else:
                vectors = self._forward(features)
            if not self.settings.do_query_expansion:
                # Without expansion only real tokens count; zero vectors add nothing to MaxSim.
                vectors = vectors * features["attention_mask"].unsqueeze(-1).float()
            out.append(vectors)
        if not out:
            return np.zeros((0, self.settings.query_length, self.dimension), dtype=np.float32)
        width = max(t.shape[1] for t in out)
        padded = [torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[1])) for t in out]
        return torch.cat(padded).numpy().astype(np.float32, copy=False)

    def encode_documents(self, texts: Sequence[str]) -> list[FloatMatrix]:
        """One (tokens, dim) matrix per text: padding and skiplisted punctuation removed."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        result: list[FloatMatrix | None] = [None] * len(texts)
        for start in range(0, len(order), BATCH_SIZE):
            chunk = order[start : start + BATCH_SIZE]
            features = self._tokenize([texts[i] for i in chunk], is_query=False)
            vectors = self._forward(features)
            keep = features["attention_mask"].bool() & ~torch.isin(features["input_ids"], self._skiplist)
            for row, index in enumerate(chunk):
                result[index] = vectors[row][keep[row]].numpy().astype(np.float32, copy=False)
        return [r for r in result if r is not None]


def maxsim(query: FloatMatrix, documents: Sequence[npt.NDArray[np.floating]]) -> FloatMatrix:
    """ColBERT's score of each document: the sum over query tokens of the best dot product with its tokens.

    One matrix product over every document's tokens at once, then the best per query token within each
    document's span; documents may be stored at lower precision (float16). An empty document scores 0.
    """
    scores = np.zeros(len(documents), dtype=np.float32)
    present = [i for i, tokens in enumerate(documents) if len(tokens)]
    if not present:
        return scores
    stacked = np.concatenate([np.asarray(documents[i], dtype=np.float32) for i in present])
    starts = np.cumsum([0] + [len(documents[i]) for i in present[:-1]])
    best = np.maximum.reduceat(query @ stacked.T, starts, axis=1)  # (query tokens, documents)
    scores[present] = best.sum(axis=0)
    return scores


# --- serving: the artifact and its runtime ----------------------------------------------------------------

KIND = "late-interaction"
MANIFEST_REQUIRED = ("name", "version", "kind", "weights_sha256", "document_length")


def read_late_interaction_manifest(directory: Path, *, verify: bool = True) -> dict[str, object]:
    """A late-interaction artifact's manifest, checked (and its files' checksum, with verify)."""
    return read_model_manifest(directory, KIND, MANIFEST_REQUIRED, verify=verify)


@dataclass(frozen=True, slots=True)
class LateInteractionModel(ManifestedModel):
    """A published late-interaction artifact: its checked manifest and its encoder."""

    directory: Path
    manifest: Mapping[str, object]
    encoder: LateInteractionEncoder

    @classmethod
    def load(cls, path: Path, *, device: str = "cpu") -> LateInteractionModel:
        """An artifact version directory, or the newest complete version under a root."""
        directory = resolve_version(path)
        manifest = read_late_interaction_manifest(directory)
        return cls(directory, manifest, LateInteractionEncoder.load(directory, device=device))

    @property
    def document_length(self) -> int:
        return self.encoder.settings.document_length

    def encode_documents(self, texts: Sequence[str]) -> list[FloatMatrix]:
        """Each text's token vectors, as the token store holds them."""
        return self.encoder.encode_documents(texts)


class LateInteractionRuntime(StoredVectorRuntime):
    """A served ColBERT model: encodes the query, reads documents' token vectors from the token stores
    (`model_runtimes.stored_vectors`), runs MaxSim. The same scoring interface as `CrossEncoderRuntime`, so
    the reranker's in-process scorer runs either.

    Args:
        model: the artifact (`training.late_interaction` publishes it), loaded on `device`.
        token_stores, device, intra_op_threads, on_lookups: as `StoredVectorRuntime`'s.
    """

    kind = KIND

    def __init__(
        self,
        model: LateInteractionModel,
        *,
        token_stores: TokenStores | None = None,
        device: str = "cpu",
        intra_op_threads: int = 0,
        on_lookups: Callable[[int, int], None] | None = None,
    ) -> None:
        super().__init__(
            model, token_stores=token_stores, device=device, intra_op_threads=intra_op_threads,
            on_lookups=on_lookups,
        )  # fmt: skip
        self._encoder = model.encoder
        if device == "cpu":
            try:
                difference = model.encoder.run_queries_on_onnx()
                logger.info("late-interaction queries on ONNX Runtime, within %.1e of torch", difference)
            except ArtifactError as exc:
                logger.warning("late-interaction queries stay on torch: %s", exc)

    def _encode_query(self, query: str) -> FloatMatrix:
        vectors: FloatMatrix = self._encoder.encode_queries([query])[0]
        return vectors

    def _score(self, query: FloatMatrix, documents: Sequence[npt.NDArray[np.floating]]) -> FloatMatrix:
        return maxsim(query, documents)
