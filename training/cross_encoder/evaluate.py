"""Re-ranking evaluation of a cross-encoder over cached first-stage candidates.

Scores each query's top `depth` hybrid candidates once, then reports nDCG@10 for the first stage alone, the
cross-encoder alone and the cross-encoder fused with the first-stage order by the gateway's own
`rerank_order(fusion="rrf", fusion_weight=w)`, for every depth up to the scored one and every weight in a
grid, so the depth and weight are fitted on dev queries and only then applied to test.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from gateway.merge import rerank_order
from search_common.documents import Candidate, Document
from search_common.logging_setup import configure_logging
from training.common.metrics import ndcg_at_10, ranking_to_run
from training.cross_encoder.model import CrossEncoder

logger = logging.getLogger(__name__)

WEIGHTS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass
class RerankReport:
    """nDCG@10 figures of one evaluation; keys of `ce` and `fused` are depths, of `fused[d]` weights."""

    first_stage: float
    ce: dict[int, float] = field(default_factory=dict)
    fused: dict[int, dict[float, float]] = field(default_factory=dict)

    def best_fused(self) -> tuple[int, float, float]:
        """(depth, weight, nDCG@10) of the best fused setting; ties go to the shallower depth and weight."""
        best = max(
            ((d, w, v) for d, by_w in self.fused.items() for w, v in by_w.items()),
            key=lambda t: (round(t[2], 6), -t[0], -t[1]),
        )
        return best

    def as_dict(self) -> dict[str, object]:
        return {
            "first_stage": self.first_stage,
            "ce": {str(d): v for d, v in self.ce.items()},
            "fused": {str(d): {str(w): v for w, v in by_w.items()} for d, by_w in self.fused.items()},
        }


def score_pairs(
    model: CrossEncoder,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    *,
    max_length: int,
    batch_size: int = 32,
    desc: str = "scoring",
) -> npt.NDArray[np.float32]:
    """Logits for (query, document) pairs in input order; batches are formed longest-first to cut padding."""
    model.eval()
    lengths = [len(q) + len(d) for q, d in pairs]
    order = np.argsort(-np.asarray(lengths), kind="stable")
    scores = np.empty(len(pairs), dtype=np.float32)
    with torch.inference_mode():
        for start in tqdm(range(0, len(pairs), batch_size), desc=desc, unit="batch", mininterval=10):
            idx = order[start : start + batch_size]
            batch = tokenizer(
                [pairs[i][0] for i in idx],
                [pairs[i][1] for i in idx],
                truncation="only_second",
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            scores[idx] = logits[:, 0].float().numpy()
    return scores


def rerank_report(
    ce_scores: Mapping[str, Sequence[float]],
    candidates: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    documents: Mapping[str, Document],
    *,
    depths: Sequence[int],
    weights: Sequence[float] = WEIGHTS,
) -> RerankReport:
    """nDCG@10 of first stage, CE alone and fused, from CE scores of each query's top candidates."""
    query_ids = sorted(qrels)
    first = ranking_to_run({q: list(candidates.get(q, ())) for q in query_ids})
    report = RerankReport(first_stage=ndcg_at_10(qrels, first))
    for depth in depths:
        report.fused[depth] = {}
        for fusion, grid in (("none", (1.0,)), ("rrf", tuple(weights))):
            for weight in grid:
                ranked: dict[str, list[str]] = {}
                for q in query_ids:
                    ids = list(candidates.get(q, ()))
                    cands = [Candidate(documents[d], float(-i)) for i, d in enumerate(ids)]
                    head = list(ce_scores[q][: min(depth, len(ids))])
                    order = rerank_order(cands, head, fusion=fusion, fusion_weight=weight)  # type: ignore[arg-type]
                    ranked[q] = [c.document.doc_id for c in order]
                value = ndcg_at_10(qrels, ranking_to_run(ranked))
                if fusion == "none":
                    report.ce[depth] = value
                else:
                    report.fused[depth][weight] = value
    return report


PairScorer = Callable[[list[str], list[str]], npt.NDArray[np.float32]]


def torch_scorer(
    model: CrossEncoder, tokenizer: PreTrainedTokenizerBase, *, max_length: int, batch_size: int = 32
) -> PairScorer:
    def score(queries: list[str], texts: list[str]) -> npt.NDArray[np.float32]:
        pairs = list(zip(queries, texts, strict=True))
        return score_pairs(model, tokenizer, pairs, max_length=max_length, batch_size=batch_size)

    return score


def onnx_scorer(artifact: Path, *, batch_size: int = 32) -> PairScorer:
    """Scores with the served artifact through the reranker's own runtime (ONNX Runtime, int8)."""
    from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime

    runtime = CrossEncoderRuntime.load(artifact)

    def score(queries: list[str], texts: list[str]) -> npt.NDArray[np.float32]:
        return runtime.score_pairs(queries, texts, batch_size=batch_size)

    return score


def score_candidates(
    model: CrossEncoder,
    tokenizer: PreTrainedTokenizerBase,
    query_ids: Sequence[str],
    queries: Mapping[str, str],
    candidates: Mapping[str, Sequence[str]],
    documents: Mapping[str, Document],
    *,
    depth: int,
    max_length: int,
    batch_size: int = 32,
) -> dict[str, list[float]]:
    """CE logits for each query's top-`depth` candidates, in first-stage order."""
    scorer = torch_scorer(model, tokenizer, max_length=max_length, batch_size=batch_size)
    return score_candidates_with(scorer, query_ids, queries, candidates, documents, depth=depth)


def score_candidates_with(
    scorer: PairScorer,
    query_ids: Sequence[str],
    queries: Mapping[str, str],
    candidates: Mapping[str, Sequence[str]],
    documents: Mapping[str, Document],
    *,
    depth: int,
) -> dict[str, list[float]]:
    """Scores each query's top-`depth` candidates with any pair scorer, in first-stage order."""
    left: list[str] = []
    right: list[str] = []
    spans: list[tuple[str, int, int]] = []
    for q in query_ids:
        ids = list(candidates.get(q, ()))[:depth]
        spans.append((q, len(left), len(left) + len(ids)))
        left.extend(queries[q] for _ in ids)
        right.extend(documents[d].model_text() for d in ids)
    scores = scorer(left, right)
    return {q: [float(s) for s in scores[a:b]] for q, a, b in spans}


def main(argv: list[str] | None = None) -> None:
    """Measures a finished recipe at the depth and weight chosen on dev (test: once per recipe)."""
    from corpora.beir import BeirDataset
    from training.common.splits import split_train_dev
    from training.cross_encoder.mine import (
        DEFAULT_CACHE,
        DEFAULT_INDEXES,
        first_stage_candidates,
        labelled_queries,
    )
    from training.cross_encoder.model import load_cross_encoder

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--dataset", type=Path, required=True)
    model_group = parser.add_mutually_exclusive_group(required=True)
    model_group.add_argument("--checkpoint", type=Path, help="torch checkpoint (fp32)")
    model_group.add_argument("--artifact", type=Path, help="exported artifact (ONNX, via the runtime)")
    parser.add_argument("--split", choices=["dev", "test"], required=True)
    parser.add_argument("--depth", type=int, required=True)
    parser.add_argument("--weight", type=float, required=True, help="fusion weight fitted on dev")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--indexes", type=Path, default=DEFAULT_INDEXES)
    args = parser.parse_args(argv)
    configure_logging()

    data = BeirDataset(args.dataset)
    documents = {d.doc_id: d for d in data.corpus()}
    queries = {q.query_id: q.text for q in data.queries().values()}
    if args.split == "test":
        qrels = data.qrels("test")
    else:
        train_qrels = data.qrels("train")
        _, dev_ids = split_train_dev(train_qrels)
        qrels = {q: train_qrels[q] for q in dev_ids}
    candidates = first_stage_candidates(
        data.corpus_path,
        labelled_queries(args.dataset),
        cache_dir=args.cache,
        index_root=args.indexes / data.name,
    )
    if args.checkpoint is not None:
        model, tokenizer = load_cross_encoder(args.checkpoint)
        scorer = torch_scorer(model, tokenizer, max_length=args.max_length)
    else:
        scorer = onnx_scorer(args.artifact)
    started = time.perf_counter()
    scores = score_candidates_with(scorer, sorted(qrels), queries, candidates, documents, depth=args.depth)
    seconds = time.perf_counter() - started
    report = rerank_report(scores, candidates, qrels, documents, depths=[args.depth], weights=[args.weight])
    figures = {
        "split": args.split,
        "model": str(args.checkpoint or args.artifact),
        "backend": "torch-fp32" if args.checkpoint is not None else "onnx-int8",
        "queries": len(qrels),
        "depth": args.depth,
        "weight": args.weight,
        "first_stage_ndcg@10": report.first_stage,
        "ce_ndcg@10": report.ce[args.depth],
        "fused_ndcg@10": report.fused[args.depth][args.weight],
        "scoring_seconds": seconds,
    }
    logger.info("%s", json.dumps(figures, sort_keys=True))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
