"""The bi-encoder on ONNX Runtime: its query path, and its documents' path at index time.

One query is too small a job for torch's eager kernels: on 2 cores an all-MiniLM-L6-v2 query took 12-14 ms
on one torch thread, and 100-240 ms on two while other processes wanted the cores (each op's threads wait
for each other). ONNX Runtime on one thread takes 3.6-5.7 ms for the same query, with vectors within about
2e-7.

`query_encoder(bi_encoder, engine)` is the one place that decides which engine embeds queries. The ONNX
encoder is built from a loaded `BiEncoder` (so the weights, and the identity dense shards check, are the
same) and refuses to start unless it reproduces the torch vectors on probe texts. The exported graph is kept
in `model_runtimes.onnx_graph_cache`, so a host exports each model once.

Documents can go through a graph with int8 weights (`GRAPH_SCHEMES`), one document per pass so that a
document's vector does not depend on its neighbours: all-mpnet-base-v2 stores a corpus 1.6x faster
^than on torch here, its vectors within a cosine of 0.9995 or more (`bench/results/document_encoding.md`).
"""

from __future__ import annotations

import copy
import importlib.metadata
import inspect
import io
import logging
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from model_runtimes.bi_encoder import BiEncoder, QueryMemo
from model_runtimes.cross_encoder.pairs import pad_batch
from model_runtimes.onnx_graph_cache import cached_graph, drop_cached_graph, graph_key
from model_runtimes.onnx_quantization import blockwise_int8_weights
from search_common.artifacts import ArtifactError
from search_common.ports import QUERY_ENCODER_ENGINES, QueryEncoder, QueryEncoderEngine

logger = logging.getLogger(__name__)

# The order `pad_batch` returns the padded tensors in.
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Checked at load against the torch encoder; a query of each length class the gateway sees.
PROBE_QUERIES = ("scurvy", "does vitamin d supplementation reduce the risk of fractures in older adults?")
PARITY_TOLERANCE = 1e-4
# int8 weights move every vector a little: each probe must keep at least this cosine with torch's.
INT8_MIN_COSINE = 0.999
PROBE_DOCUMENT = (
    "Vitamin D supplementation and fracture risk. In a randomised trial of 2,686 adults aged 65-85, 100,000 "
    "IU of oral vitamin D3 every four months for five years reduced first fractures by 22% (relative risk "
    "0.78, 95% CI 0.61-0.99) without adverse effects."
)
GraphScheme = Literal["fp32", "int8-blockwise-weights"]
GRAPH_SCHEMES: tuple[GraphScheme, ...] = ("fp32", "int8-blockwise-weights")
# What an exported graph depends on besides the weights: a new exporter makes a new cache entry.
EXPORT_LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime")


def input_names(model: torch.nn.Module) -> tuple[str, ...]:
    """The inputs the transformer takes: BERT-like bodies take token types, MPNet's does not."""
    accepted = inspect.signature(model.forward).parameters
    return tuple(name for name in INPUT_NAMES if name in accepted)


class _LastHiddenState(torch.nn.Module):
    """Positional inputs in (`names`), the last hidden state out: the graph ONNX export traces."""

    def __init__(self, model: torch.nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = self.model(**dict(zip(self.names, inputs, strict=True))).last_hidden_state
        return hidden


def export_onnx(model: torch.nn.Module) -> bytes:
    """The transformer as an ONNX graph with dynamic batch and sequence axes, over `input_names(model)`.

    Exports a copy with eager attention: the SDPA path traces into a graph whose vectors are off by ~0.05.
    """
    names = input_names(model)
    model = copy.deepcopy(model)
    model.set_attn_implementation("eager")  # type: ignore[operator]
    # Two rows, one padded: with an all-ones mask the tracer would record attention without masking.
    dummy = torch.ones((2, 8), dtype=torch.long)
    mask = dummy.clone()
    mask[1, 5:] = 0
    examples = {"input_ids": dummy, "attention_mask": mask, "token_type_ids": torch.zeros_like(dummy)}
    buffer = io.BytesIO()
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it fixes; the parity check decides
        torch.onnx.export(
            _LastHiddenState(model, names),
            tuple(examples[name] for name in names),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to any binary file object
            input_names=list(names),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


def export_key(name: str, checksum: str, scheme: GraphScheme) -> str:
    """The graph cache's key for `scheme`'s graph of the transformer whose weights hash to `checksum`."""
    versions = {library: importlib.metadata.version(library) for library in EXPORT_LIBRARIES}
    return graph_key({"name": name, "weights_sha256": checksum, "scheme": scheme, **versions})


def encoder_graph(model: torch.nn.Module, key: str, scheme: GraphScheme) -> bytes:
    """`model`'s graph in `scheme`, from the graph cache or exported (and quantised) now."""
    if scheme not in GRAPH_SCHEMES:
        raise ValueError(f"graph scheme must be one of {', '.join(GRAPH_SCHEMES)}, got {scheme!r}")
    if scheme == "fp32":
        return cached_graph(key, lambda: export_onnx(model))
    return cached_graph(key, lambda: blockwise_int8_weights(export_onnx(model)))


def onnx_session(graph: bytes, threads: int) -> object:
    """An ONNX Runtime CPU session over `graph` with `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if threads > 1:  # idle workers sleep instead of spinning on cores the rest of the process needs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


class OnnxQueryEncoder:
    """`QueryEncoder` over ONNX Runtime: mean pooling and L2 normalisation as the `BiEncoder` does them.

    Safe for concurrent calls: the tokenizer is configured once and ONNX Runtime sessions run concurrently.
    """

    def __init__(
        self,
        session: object,
        tokenizer: object,
        *,
        identity: str,
        pad_id: int,
        inputs: Sequence[str] = INPUT_NAMES,
        query_memo_size: int = 64,
    ) -> None:
        self._session = session
        self._inputs = tuple(inputs)
        # Repeated single queries (popular ones) skip the model, as with the torch BiEncoder.
        self._query_memo = QueryMemo(query_memo_size)
        self._tokenizer = tokenizer
        self._identity = identity
        self._pad_id = pad_id

    @classmethod
    def from_bi_encoder(
        cls, encoder: BiEncoder, *, threads: int = 1, scheme: GraphScheme = "fp32"
    ) -> OnnxQueryEncoder:
        """Exports `encoder`'s transformer in `scheme` (or takes it from the graph cache) and checks the
        result against it: within PARITY_TOLERANCE for fp32, a cosine of at least INT8_MIN_COSINE for int8.

        Raises:
            ArtifactError: the graph's vectors differ from the torch encoder's by more than that.
        """
        from tokenizers import Tokenizer

        key = export_key(encoder.identity, encoder.checksum, scheme)
        session = onnx_session(encoder_graph(encoder.model, key, scheme), threads)
        tokenizer = Tokenizer.from_str(encoder.tokenizer_json)
        tokenizer.no_padding()
        tokenizer.enable_truncation(encoder.max_length)
        names = input_names(encoder.model)
        onnx = cls(session, tokenizer, identity=encoder.identity, pad_id=encoder.pad_token_id, inputs=names)
        probes = [*PROBE_QUERIES, PROBE_DOCUMENT]
        reference = encoder.encode_queries(probes)
        if scheme == "fp32":  # padded together, as queries are batched
            exported = onnx.encode_queries(probes)
            difference = float(np.abs(exported - reference).max())
            failed = difference > PARITY_TOLERANCE
            bound = f"differs from torch by {difference:.2e} (tolerance {PARITY_TOLERANCE:.0e})"
            fallback = "--query-encoder-engine torch"
        else:  # one per pass, as documents are encoded
            exported = onnx.encode_each(probes)
            difference = float((exported * reference).sum(axis=1).min())
            failed = difference < INT8_MIN_COSINE
            bound = f"keeps a cosine of {difference:.4f} with torch (at least {INT8_MIN_COSINE} needed)"
            fallback = "--document-engine torch"
        if failed:
            drop_cached_graph(key)  # a stale or damaged cache entry must not outlive the check
            raise ArtifactError(
                f"encoder {encoder.identity}: the {scheme} ONNX graph {bound}; use {fallback}"
            )
        logger.info(
            "encoder %s on ONNX Runtime (%s, %d thread(s)): %s", onnx.identity, scheme, threads, bound
        )
        return onnx

    @property
    def identity(self) -> str:
        return self._identity

    def encode_queries(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """float32 (n, dim), unit L2 norm, in input order; a single query goes through the memo."""
        return self._query_memo.through(texts, self._encode)

    def encode_each(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """float32 (n, dim), one pass per text and no memo: a text's vector never depends on the texts
        beside it (what index-time document encoding needs; on a CPU it is also the fastest shape)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate([self._encode([text]) for text in texts])

    def _encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        # One by one: encode_batch would wake a Rayon pool of every core to tokenise a query or two.
        encodings = [self._tokenizer.encode(text) for text in texts]  # type: ignore[attr-defined]
        ids, mask, types = pad_batch(
            [e.ids for e in encodings], [e.type_ids for e in encodings], self._pad_id
        )
        padded = dict(zip(INPUT_NAMES, (ids, mask, types), strict=True))
        (hidden,) = self._session.run(None, {name: padded[name] for name in self._inputs})  # type: ignore[attr-defined]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return np.asarray(pooled / norms, dtype=np.float32)


def query_encoder(
    encoder: BiEncoder, engine: QueryEncoderEngine = "auto", *, threads: int = 0
) -> QueryEncoder:
    """What embeds queries: `encoder` itself (torch), or its ONNX export.

    Args:
        engine: "torch", "onnx", or "auto" (onnx when the encoder is on the CPU, torch on a GPU).
            ONNX Runtime is one of the project's own dependencies, so every install has it.
        threads: ONNX Runtime intra-op threads; 0 means 1, the fastest for one query on a small CPU.
    """
    if engine not in QUERY_ENCODER_ENGINES:
        raise ValueError(
            f"query encoder engine must be one of {', '.join(QUERY_ENCODER_ENGINES)}, got {engine!r}"
        )
    if engine == "auto":
        engine = "onnx" if encoder.device == "cpu" else "torch"
    if engine == "torch":
        return encoder
    return OnnxQueryEncoder.from_bi_encoder(encoder, threads=threads or 1)
