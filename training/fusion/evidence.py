"""What the gateway sees for the dev queries, gathered once for fitting a fusion on it: each retriever
group's merged list through the gateway's own pipeline, the first stage built from them, and the served
rerankers' own runtimes to score the head with."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from corpora.beir import BeirDataset
from evaluation.offline_stack import load_offline_retrievers
from gateway.learned_fusion import FloatMatrix, fusion_features
from gateway.merge import Fusion, reciprocal_rank_fusion, rerank_order
from gateway.pipeline import SearchPipeline, SearchQuery
from gateway.variants import FIRST_STAGES, GROUPS_OF, FirstStage, Variant
from model_runtimes.cross_encoder.runtime import CrossEncoderRuntime
from model_runtimes.stored_vector_loading import load_stored_vector_runtime
from model_runtimes.stored_vectors import StoredVectorRuntime
from reranker_service.config import STORED_VECTOR_BACKENDS
from search_common.artifacts import ArtifactError, read_manifest
from search_common.documents import Candidate
from training.common.splits import dev_queries


@dataclass(frozen=True, slots=True)
class QueryEvidence:
    """What the gateway sees for one query: each group's merged list, the first stage, the head's scores."""

    group_lists: Mapping[str, list[Candidate]]
    first_stage: list[Candidate]
    rerank_scores: list[float]  # the first len(rerank_scores) of first_stage, scored by the reranker

    def head_ids(self, depth: int) -> list[str]:
        return [c.document.doc_id for c in self.first_stage[:depth]]

    def features(self, depth: int) -> FloatMatrix:
        lists = {g: [(c.document.doc_id, c.score) for c in ranked] for g, ranked in self.group_lists.items()}
        return fusion_features(self.head_ids(depth), lists, self.rerank_scores[:depth])

    def ranking(
        self, depth: int, *, fusion: Fusion, weight: float = 1.0, learned: Sequence[float] = ()
    ) -> list[str]:
        """The final doc-id order the gateway would return with this fusion at this depth."""
        ordered = rerank_order(
            self.first_stage,
            self.rerank_scores[:depth],
            fusion=fusion,
            fusion_weight=weight,
            learned_scores=list(learned) if fusion == "learned" else None,
        )
        return [c.document.doc_id for c in ordered]


async def gather_evidence(
    pipeline: SearchPipeline, first_stage: FirstStage, queries: Mapping[str, str], retrieval_depth: int
) -> dict[str, QueryEvidence]:
    """Each query's per-group lists (through the gateway's pipeline) and the first stage fused from them."""
    evidence: dict[str, QueryEvidence] = {}
    groups = GROUPS_OF[first_stage]
    for qid, text in queries.items():
        lists: dict[str, list[Candidate]] = {}
        for group in groups:
            variant = Variant(group, 1.0, cast(FirstStage, group), retrieval_depth)
            outcome = await pipeline.search(SearchQuery(text, retrieval_depth, variant, retrieval_depth, 0))
            lists[group] = [Candidate(hit.document, hit.retrieval_score) for hit in outcome.hits]
        # The pipeline's own first stage: one group's list, or RRF (k=60) across groups.
        fused = reciprocal_rank_fusion(lists) if len(groups) > 1 else lists[groups[0]]
        evidence[qid] = QueryEvidence(lists, fused, [])
    return evidence


def add_dev_arguments(parser: argparse.ArgumentParser, seed_help: str) -> None:
    """The flags every dev-side fit shares: the dataset and split, the first stage, the depths."""
    parser.add_argument("--dataset", type=Path, required=True, help="BEIR dataset with qrels/train.tsv")
    parser.add_argument("--encoder", type=Path, default=None, help="bi-encoder artifact (default: packaged)")
    parser.add_argument("--first-stage", choices=FIRST_STAGES, default="hybrid")
    parser.add_argument("--retrieval-depth", type=int, default=100, help="candidates per retriever group")
    parser.add_argument("--depths", type=int, nargs="+", default=[10, 20, 30, 50], help="re-rank depths")
    parser.add_argument("--dev-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=13, help=seed_help)
    parser.add_argument("--index-root", type=Path, default=Path("var/indexes"))


def check_dev_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exits 2 naming a bad shared flag."""
    if any(d <= 0 for d in args.depths) or max(args.depths) > args.retrieval_depth:
        parser.error(f"--depths must be within 1..--retrieval-depth ({args.retrieval_depth})")
    if not (args.dataset / "qrels" / "train.tsv").is_file():
        parser.error(f"--dataset {args.dataset}: no qrels/train.tsv (fitting uses the dev side of train)")


def dev_evidence(
    dataset: Path,
    first_stage: FirstStage,
    *,
    encoder: Path | None,
    index_root: Path,
    retrieval_depth: int,
    dev_fraction: float,
) -> tuple[BeirDataset, dict[str, str], dict[str, dict[str, int]], dict[str, QueryEvidence]]:
    """The dataset, the dev side of its train queries (texts, judgements) and each one's evidence."""
    beir = BeirDataset(dataset)
    queries, qrels = dev_queries(beir, dev_fraction=dev_fraction)
    retrievers = load_offline_retrievers(
        beir, set(GROUPS_OF[first_stage]), index_root=index_root, num_shards=1, prebuilt=None,
        encoder_dir=encoder,
    )  # fmt: skip
    evidence = asyncio.run(gather_evidence(SearchPipeline(retrievers), first_stage, queries, retrieval_depth))
    return beir, queries, qrels, evidence


def load_scorer(artifact: Path, token_store: Path | None) -> CrossEncoderRuntime | StoredVectorRuntime:
    """The served reranker's own runtime: a cross-encoder, or a stored-vector model (ColBERT, a
    poly-encoder, a re-scoring bi-encoder) over its token store."""
    kind = read_manifest(artifact).get("kind")
    if kind in STORED_VECTOR_BACKENDS:
        return load_stored_vector_runtime(kind, artifact, token_store=token_store)
    if token_store is not None:
        kinds = " or ".join(STORED_VECTOR_BACKENDS)
        raise ArtifactError(f"{artifact}: --token-store goes with a {kinds} artifact")
    return CrossEncoderRuntime.load(artifact)
