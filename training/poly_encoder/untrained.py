"""An untrained poly-encoder artifact: for tests and smoke runs.

The packaged all-MiniLM-L6-v2 body cut to `--layers` and seeded random codes. Its scores mean nothing about
relevance; its files, manifest and serving path are exactly those of a trained model, and two seeds give two
distinguishable versions.

    python -m training.poly_encoder.untrained --out var/test-artifacts/poly-encoder --version v1
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers import AutoModel, AutoTokenizer

from model_runtimes.bi_encoder import default_model_dir
from model_runtimes.poly_encoder import PolyEncoder
from search_common.artifacts import atomic_directory
from training.poly_encoder.artifact import save_artifact


def write_untrained(
    out: Path,
    *,
    version: str,
    layers: int = 1,
    codes: int = 4,
    query_length: int = 16,
    document_length: int = 64,
    seed: int = 13,
    overwrite: bool = False,
) -> Path:
    """Publishes `out/version` and returns it."""
    import torch

    base = default_model_dir()
    body = AutoModel.from_pretrained(str(base), num_hidden_layers=layers)
    generator = torch.Generator().manual_seed(seed)
    network = PolyEncoder(body, torch.randn(codes, body.config.hidden_size, generator=generator) * 0.02)
    with atomic_directory(out / version, overwrite=overwrite) as staging:
        save_artifact(
            staging, network, AutoTokenizer.from_pretrained(str(base)), version=version,
            query_length=query_length, document_length=document_length, extra={"untrained": True},
        )  # fmt: skip
    return out / version


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    if args.layers <= 0:
        parser.error("--layers must be positive")
    print(write_untrained(args.out, version=args.version, layers=args.layers, seed=args.seed))


if __name__ == "__main__":
    main()
