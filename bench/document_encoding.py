"""Index-time document encoding for the re-scoring bi-encoder: torch against the int8-weight ONNX graph.

The same `--documents` SciFact abstracts (their model text, cut at the artifact's document length) are
encoded, per round and in alternating order, by:

- `torch`: `BiEncoder.encode_documents` in batches of 16, what `--document-engine torch` stores;
- `onnx-int8`: the graph with int8 weight blocks (`model_runtimes.onnx_quantization`), one document per
  pass, what `--document-engine auto` stores on a CPU.

int8_document_speedup = torch's seconds / onnx-int8's, the median over rounds. Agreement is the cosine of
each document's two vectors (min and mean). The graph is made (or read from the graph cache) before the
timed rounds, and its one-time cost is recorded apart.

Example:
    python bench/document_encoding.py --documents 200 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from corpora.beir import BeirDataset
from evaluation.provenance import git_sha
from model_runtimes.bi_encoder_rescorer import BiEncoderRescoringModel
from model_runtimes.hardware import cpu_flags, cpu_model
from model_runtimes.onnx_graph_cache import graph_cache
from model_runtimes.packaged_models import packaged_mpnet
from search_common.logging_setup import configure_logging

logger = logging.getLogger(__name__)


def markdown(record: dict[str, Any]) -> str:
    arms = record["arms"]
    lines = [
        "# Index-time document encoding: torch against int8 weights on ONNX Runtime",
        "",
        f"{record['model']}, {record['documents']} SciFact abstracts (cut at {record['document_length']} "
        f"tokens), {record['threads']} threads, median of {record['rounds']} rounds. Host: "
        f"{record['cpu']}; AMX: {'yes' if record['amx'] else 'no'}, AVX-512 VNNI: "
        f"{'yes' if record['avx512_vnni'] else 'no'}. Written by `bench/document_encoding.py`.",
        "",
        "| engine | documents/s | x torch | cosine with torch (min / mean) |",
        "|---|---:|---:|---|",
    ]
    for name, arm in arms.items():
        agreement = "1 (itself)" if name == "torch" else f"{arm['cosine_min']:.5f} / {arm['cosine_mean']:.5f}"
        lines.append(f"| {name} | {arm['documents_per_s']:.2f} | {arm['x_torch']:.2f} | {agreement} |")
    lines += [
        "",
        f"`int8_document_speedup` = **{record['int8_document_speedup']:.2f}**. Loading the int8 engine took "
        f"{record['graph_seconds']:.1f} s in this run, the graph "
        f"{'read from the graph cache' if record['graph_cached'] else 'exported and quantised'}; a host "
        "makes it once (all-mpnet-base-v2: 4-6 s to export, about 8 more to quantise on these cores).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--artifact", type=Path, default=None, help="default: the packaged all-mpnet-base-v2")
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/document_encoding"))
    args = parser.parse_args()
    if args.documents <= 0 or args.rounds <= 0:
        parser.error("--documents and --rounds must be positive")
    configure_logging("INFO")
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    artifact = args.artifact or packaged_mpnet()
    texts = [d.model_text() for d in BeirDataset(args.dataset).corpus()[: args.documents]]
    torch_model = BiEncoderRescoringModel.load(artifact, document_engine="torch")
    cached_before = set(graph_cache().glob("*.onnx"))
    started = time.perf_counter()
    int8_model = BiEncoderRescoringModel.load(artifact, document_engine="onnx-int8", threads=threads)
    graph_seconds = time.perf_counter() - started
    graph_cached = set(graph_cache().glob("*.onnx")) == cached_before
    models = {"torch": torch_model, "onnx-int8": int8_model}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    vectors: dict[str, np.ndarray[Any, Any]] = {}
    for round_ in range(args.rounds):
        order = list(models) if round_ % 2 == 0 else list(reversed(models))
        for name in order:
            started = time.perf_counter()
            encoded = models[name].encode_documents(texts)
            seconds[name].append(time.perf_counter() - started)
            vectors[name] = np.concatenate(encoded)
            logger.info("round %d %s: %.1f s", round_, name, seconds[name][-1])
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    cosines = (vectors["onnx-int8"] * vectors["torch"]).sum(axis=1)
    flags = set(cpu_flags())
    record: dict[str, Any] = {
        "model": torch_model.identity["name"],
        "model_version": torch_model.identity["version"],
        "documents": len(texts),
        "document_length": torch_model.document_length,
        "rounds": args.rounds,
        "threads": threads,
        "cpu": cpu_model(),
        "amx": any(flag.startswith("amx") for flag in flags),
        "avx512_vnni": "avx512_vnni" in flags,
        "git_sha": git_sha(short=True),
        "graph_seconds": graph_seconds,
        "graph_cached": graph_cached,
        "arms": {
            name: {
                "seconds": seconds[name],
                "documents_per_s": len(texts) / medians[name],
                "x_torch": medians["torch"] / medians[name],
                **(
                    {"cosine_min": float(cosines.min()), "cosine_mean": float(cosines.mean())}
                    if name == "onnx-int8"
                    else {}
                ),
            }
            for name in models
        },
        "int8_document_speedup": medians["torch"] / medians["onnx-int8"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    table = markdown(record)
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
