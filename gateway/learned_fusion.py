"""Learned fusion: a LightGBM lambdarank model orders the re-ranked head from every stage's evidence.

RRF fuses two orders with one fixed weight. A learned ranker instead sees, for each candidate of the head,
where each retriever put it and how far its score stood from that retriever's other candidates, and the same
for the reranker (Vespa's global-phase ranking). Every feature is relative to the query's own candidates
(ranks, and scores standardised over them), so one model carries over between collections and model versions
whose raw score scales differ. A candidate a retriever did not return has that retriever's features missing
(NaN), which LightGBM routes on its own.

An artifact is a directory with `model.txt` (LightGBM's text format) and a `manifest.json` that names the
feature set, the first stage and rerank depth it was fitted for, the reranker that produced its scores, and
its dev figures (`training.fusion.fit_learned` writes them). The gateway loads it with `--fusion-model DIR`,
and a variant uses it with `fusion: learned` and `fusion_model: <manifest name>`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightgbm
import numpy as np
import numpy.typing as npt

from gateway.variants import FusionFit
from search_common.artifacts import ArtifactError, read_manifest, verify_checksums

ARTIFACT_KIND = "learned-fusion"
MODEL_FILE = "model.txt"
FEATURE_SET = "stage-ranks-v1"
# The retriever groups whose lists give features, in a fixed order (gateway.config.GROUPS).
GROUPS = ("dense", "bm25")
FEATURES: tuple[str, ...] = (
    "first_stage_rank",
    *(f"{group}_{what}" for group in GROUPS for what in ("rank", "z")),
    "rerank_rank",
    "rerank_z",
    "rerank_gap",
)
# How each feature may move the fused score: a better rank (lower) or a higher standardised score never
# lowers it. Fitted on a few hundred queries, an unconstrained model learns quirks of the dev split.
MONOTONE: tuple[int, ...] = tuple(-1 if name.endswith(("rank", "gap")) else 1 for name in FEATURES)
_REQUIRED = ("kind", "name", "version", "feature_set", "features", "first_stage", "rerank_depth", "checksums")

FloatMatrix = npt.NDArray[np.float64]


def _standardised(scores: Sequence[float]) -> tuple[float, float]:
    """Mean and spread of a query's scores; a spread of 0 (one candidate, or all equal) becomes 1."""
    values = np.asarray(scores, dtype=np.float64)
    spread = float(values.std())
    return float(values.mean()), spread if spread > 0.0 else 1.0


def fusion_features(
    head_ids: Sequence[str],
    group_lists: Mapping[str, Sequence[tuple[str, float]]],
    rerank_scores: Sequence[float],
) -> FloatMatrix:
    """The feature rows (in `FEATURES` order) of a re-ranked head.

    Args:
        head_ids: the head's doc ids in first-stage order (the order the reranker scored them in).
        group_lists: retriever group -> that group's merged list, (doc_id, score) best first. Groups the
            variant did not search are simply absent; their features are NaN.
        rerank_scores: the reranker's score of each head document, aligned with head_ids.
    """
    if len(head_ids) != len(rerank_scores):
        raise ValueError(f"{len(rerank_scores)} rerank scores for {len(head_ids)} head documents")
    rows = np.full((len(head_ids), len(FEATURES)), math.nan, dtype=np.float64)
    if not head_ids:
        return rows
    rows[:, 0] = np.arange(1, len(head_ids) + 1)
    for g, group in enumerate(GROUPS):
        ranked = group_lists.get(group)
        if not ranked:
            continue
        mean, spread = _standardised([score for _, score in ranked])
        position = {doc_id: (rank, score) for rank, (doc_id, score) in enumerate(ranked, start=1)}
        for i, doc_id in enumerate(head_ids):
            seen = position.get(doc_id)
            if seen is not None:
                rows[i, 1 + 2 * g] = seen[0]
                rows[i, 2 + 2 * g] = (seen[1] - mean) / spread
    scores = np.asarray(rerank_scores, dtype=np.float64)
    mean, spread = _standardised(rerank_scores)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))  # ties keep first-stage order
    rows[order, -3] = np.arange(1, len(scores) + 1)
    rows[:, -2] = (scores - mean) / spread
    rows[:, -1] = (scores.max() - scores) / spread
    return rows


@dataclass(frozen=True, slots=True)
class LearnedFusion:
    """A loaded learned-fusion artifact: scores a head's feature rows, higher is better."""

    name: str
    version: str
    first_stage: str
    rerank_depth: int
    booster: lightgbm.Booster

    def score(self, features: FloatMatrix) -> list[float]:
        if features.shape[0] == 0:
            return []
        # One thread: a head is tens of rows, and the gateway serves many queries at once.
        predicted = self.booster.predict(features, num_threads=1)
        return [float(value) for value in np.asarray(predicted, dtype=np.float64)]

    @property
    def fit(self) -> FusionFit:
        return FusionFit(self.first_stage, self.rerank_depth)


def load_learned_fusion(directory: Path) -> LearnedFusion:
    """Loads and checks a learned-fusion artifact; ArtifactError names what is wrong."""
    manifest = read_manifest(directory, _REQUIRED)
    if manifest["kind"] != ARTIFACT_KIND:
        raise ArtifactError(f"{directory}: a {manifest['kind']!r} artifact, not {ARTIFACT_KIND!r}")
    if manifest["feature_set"] != FEATURE_SET or tuple(manifest["features"]) != FEATURES:
        raise ArtifactError(
            f"{directory}: fitted on feature set {manifest['feature_set']!r}; this gateway computes "
            f"{FEATURE_SET!r} ({', '.join(FEATURES)})"
        )
    verify_checksums(directory, manifest["checksums"])
    try:
        booster = lightgbm.Booster(model_file=str(directory / MODEL_FILE))
    except lightgbm.basic.LightGBMError as exc:
        raise ArtifactError(f"{directory / MODEL_FILE}: not a LightGBM model ({exc})") from None
    if booster.num_feature() != len(FEATURES):
        raise ArtifactError(
            f"{directory / MODEL_FILE}: expects {booster.num_feature()} features, not {len(FEATURES)}"
        )
    return LearnedFusion(
        name=str(manifest["name"]),
        version=str(manifest["version"]),
        first_stage=str(manifest["first_stage"]),
        rerank_depth=int(manifest["rerank_depth"]),
        booster=booster,
    )
