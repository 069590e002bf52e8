"""The bi-encoder's query path on ONNX Runtime: the same weights, exported in memory when it loads.

One query is too small a job for torch's eager kernels: on 2 cores an all-MiniLM-L6-v2 query took 12-14 ms
on one torch thread, and 100-240 ms on two while other processes wanted the cores (each op's threads wait
for each other). ONNX Runtime on one thread takes 3.6-5.7 ms for the same query, with vectors within about
2e-7.

`query_encoder(bi_encoder, engine)` is the one place that decides which engine embeds queries. The ONNX
encoder is built from a loaded `BiEncoder` (so the weights, and the identity dense shards check, are the
same), refuses to start unless it reproduces the torch vectors on probe queries, and keeps no files.
"""

from __future__ import annotations

import copy
import inspect
import io
import logging
import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from model_runtimes.bi_encoder import BiEncoder, QueryMemo
from model_runtimes.cross_encoder.pairs import pad_batch
from search_common.artifacts import ArtifactError
from search_common.ports import QUERY_ENCODER_ENGINES, QueryEncoder, QueryEncoderEngine

logger = logging.getLogger(__name__)

# The order `pad_batch` returns the padded tensors in.
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Checked at load against the torch encoder; a query of each length class the gateway sees.
PROBE_QUERIES = ("scurvy", "does vitamin d supplementation reduce the risk of fractures in older adults?")
PARITY_TOLERANCE = 1e-4


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
    def from_bi_encoder(cls, encoder: BiEncoder, *, threads: int = 1) -> OnnxQueryEncoder:
        """Exports `encoder`'s transformer and checks the result against it.

        Raises:
            ArtifactError: the exported graph's vectors differ from the torch encoder's.
        """
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if threads > 1:  # idle workers sleep instead of spinning on cores the rest of the process needs
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(
            export_onnx(encoder.model), options, providers=["CPUExecutionProvider"]
        )
        tokenizer = Tokenizer.from_str(encoder.tokenizer_json)
        tokenizer.no_padding()
        tokenizer.enable_truncation(encoder.max_length)
        names = input_names(encoder.model)
        onnx = cls(session, tokenizer, identity=encoder.identity, pad_id=encoder.pad_token_id, inputs=names)
        reference = encoder.encode_queries(list(PROBE_QUERIES))
        difference = float(np.abs(onnx.encode_queries(PROBE_QUERIES) - reference).max())
        if difference > PARITY_TOLERANCE:
            raise ArtifactError(
                f"query encoder {encoder.identity}: the ONNX export differs from torch by {difference:.2e} "
                f"(tolerance {PARITY_TOLERANCE:.0e}); use --query-encoder-engine torch"
            )
        logger.info(
            "query encoder %s on ONNX Runtime (%d thread(s)), within %.1e of torch",
            onnx.identity,
            threads,
            difference,
        )
        return onnx

    @property
    def identity(self) -> str:
        return self._identity

    def encode_queries(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """float32 (n, dim), unit L2 norm, in input order; a single query goes through the memo."""
        return self._query_memo.through(texts, self._encode)

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
