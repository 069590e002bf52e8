"""An untrained late-interaction artifact in PyLate's layout, written without PyLate: for tests, smoke runs.

The packaged all-MiniLM-L6-v2 body cut to `--layers`, PyLate's `[Q] `/`[D] ` marker tokens added (their
embeddings drawn like PyLate's, from the mean and spread of the existing ones), and a seeded linear
projection to `--dim`. Its scores mean nothing about relevance; its shapes, settings, manifest and serving
path are exactly those of a trained model, and two seeds give two distinguishable versions.

    python -m training.late_interaction.untrained --out var/test-artifacts/late-interaction --version v1
"""

from __future__ import annotations

import argparse
import json
import string
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModel, AutoTokenizer

from model_runtimes.bi_encoder import default_model_dir
from model_runtimes.late_interaction import DENSE_DIR, KIND, SETTINGS_FILE
from search_common.artifacts import atomic_directory, sha256_tree, write_manifest

QUERY_PREFIX = "[Q] "
DOCUMENT_PREFIX = "[D] "


def write_untrained(
    out: Path,
    *,
    version: str,
    layers: int = 1,
    dim: int = 32,
    query_length: int = 16,
    document_length: int = 64,
    seed: int = 13,
    name: str = "colbert-untrained",
    overwrite: bool = False,
) -> Path:
    """Publishes `out/version` and returns it. `name` is the model name it serves as (a variant's
    `reranker`): a smoke run may stand in for a trained model of the same shapes."""
    base = default_model_dir()
    generator = torch.Generator().manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModel.from_pretrained(str(base), num_hidden_layers=layers)
    old_rows = model.get_input_embeddings().weight.detach()
    tokenizer.add_tokens([QUERY_PREFIX, DOCUMENT_PREFIX])
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        new_rows = old_rows.mean(0) + old_rows.std(0) * torch.randn(2, old_rows.shape[1], generator=generator)
        model.get_input_embeddings().weight[-2:] = new_rows
    projection = (
        torch.randn(dim, model.config.hidden_size, generator=generator) / model.config.hidden_size**0.5
    )
    target = out / version
    with atomic_directory(target, overwrite=overwrite) as staging:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        (staging / DENSE_DIR).mkdir()
        save_file({"linear.weight": projection.contiguous()}, str(staging / DENSE_DIR / "model.safetensors"))
        # PyLate's own files beside the weights, so `pylate.models.ColBERT` loads this folder as it is.
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": DENSE_DIR, "type": "pylate.models.Dense.Dense"},
        ]
        (staging / "modules.json").write_text(json.dumps(modules, indent=2))
        (staging / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": 512, "do_lower_case": False}, indent=2)
        )
        dense = {
            "in_features": model.config.hidden_size,
            "out_features": dim,
            "bias": False,
            "activation_function": "torch.nn.modules.linear.Identity",
            "use_residual": False,
        }
        (staging / DENSE_DIR / "config.json").write_text(json.dumps(dense, indent=2))
        settings = {
            "model_type": "ColBERT",
            "similarity_fn_name": "MaxSim",
            "query_prefix": QUERY_PREFIX,
            "document_prefix": DOCUMENT_PREFIX,
            "query_length": query_length,
            "document_length": document_length,
            "attend_to_expansion_tokens": False,
            "do_query_expansion": True,
            "skiplist_words": list(string.punctuation),
        }
        (staging / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
        write_manifest(
            staging,
            {
                "name": name,
                "version": version,
                "kind": KIND,
                "base": "all-MiniLM-L6-v2",
                "layers": layers,
                "dimension": dim,
                "query_length": query_length,
                "document_length": document_length,
                "seed": seed,
                "trained": False,
                "weights_sha256": sha256_tree(staging),
            },
        )
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="the artifact goes to OUT/VERSION")
    parser.add_argument("--version", required=True)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--query-length", type=int, default=16)
    parser.add_argument("--document-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--name",
        default="colbert-untrained",
        help="the model name it serves as (colbert-minilm to stand in for the default variant's)",
    )
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.layers <= 6:
        parser.error("--layers must be between 1 and 6 (the packaged body has 6)")
    for name in ("dim", "query_length", "document_length"):
        if getattr(args, name) < 2:
            parser.error(f"--{name.replace('_', '-')} must be at least 2")
    published = write_untrained(
        args.out,
        version=args.version,
        layers=args.layers,
        dim=args.dim,
        query_length=args.query_length,
        document_length=args.document_length,
        seed=args.seed,
        name=args.name,
        overwrite=args.overwrite,
    )
    print(published)


if __name__ == "__main__":
    main()
