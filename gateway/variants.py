"""Named pipeline variants for A/B tests: per-variant pipeline parameters and sticky assignment.

A variants file is YAML:

    default: hybrid            # optional; served to callers with no caller_key
    variants:
      - name: hybrid
        weight: 1.0            # share of callers assigned by caller_key; 0 = only on explicit request
        first_stage: hybrid    # dense | bm25 | hybrid (dense and BM25 fused by RRF, k=60)
        retrieval_depth: 100   # candidates fetched per retriever group
        reranker: null         # model name served by the reranker, or null for none; a list of names asks
                               # each of them to score the same head at once, fused by rrf (see below)
        reranker_version: null # pin a model version: the reranker refuses (NOT_FOUND) when it serves
                               # another, and the answer degrades to first-stage order; null = whatever
                               # version is deployed (the response metadata records which one answered)
        rerank_depth: 0        # candidates sent to the reranker
        max_sequence_length: 0 # tokens per (query, document) pair; 0 = the model's default
        cache: true            # whether the reranker's score cache may be used
        fusion: none           # none = rerank score only; rrf = RRF of reranked and first-stage order;
                               # learned = a learned ranker over every stage's ranks and scores
        fusion_weight: 1.0     # weight of the reranked order under rrf, within [0, 1]; with a list of
                               # rerankers, a list of weights (one each, summing to at most 1): the first
                               # stage's order keeps 1 minus their sum
        fusion_model: null     # under learned: the name of a model loaded with the gateway's
                               # --fusion-model (gateway/learned_fusion.py), fitted for this first stage
        prf_docs: 0            # dense pseudo-relevance feedback: search again with the query vector moved
        prf_weight: 0.0        # towards the mean of the top prf_docs documents' (gateway/prf.py); needs
                               # a dense first stage and the gateway's --query-encoder; 0 docs = off

Assignment is sticky: sha256(caller_key) picks a point in [0, 1) mapped over the cumulative weights of the
variants this gateway can serve, so a caller keeps its variant across requests and gateway replicas.

A variant the deployment cannot serve (it needs a reranker or a retriever group that is not configured) is
left out of assignment with a warning; asking for it explicitly is INVALID_ARGUMENT naming what is missing.
Startup fails only when no servable variant has a positive weight.

Names match `[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}` (they are metric labels and gRPC metadata downstream).

`LiveVariants` holds the table a gateway serves and swaps it atomically when the file is reloaded (SIGHUP, or
a change on disk noticed by `watch`). Each request reads the current table once, so requests in flight
finish with the variant they were given; a file that fails validation is rejected with a logged error and
the previous table stays in service.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from gateway.merge import FUSIONS, Fusion
from gateway.reranker_routing import model_name
from search_common.errors import InvalidArgument
from search_common.variant_label import NO_VARIANT, OTHER_VARIANT, VARIANT_NAME_PATTERN

logger = logging.getLogger(__name__)

FirstStage = Literal["dense", "bm25", "hybrid"]
FIRST_STAGES: tuple[FirstStage, ...] = ("dense", "bm25", "hybrid")
GROUPS_OF: Mapping[FirstStage, tuple[str, ...]] = {
    "dense": ("dense",),
    "bm25": ("bm25",),
    "hybrid": ("dense", "bm25"),
}
_FIELDS = frozenset(
    {
        "name",
        "weight",
        "first_stage",
        "retrieval_depth",
        "reranker",
        "reranker_version",
        "rerank_depth",
        "max_sequence_length",
        "cache",
        "fusion",
        "fusion_weight",
        "fusion_model",
        "prf_docs",
        "prf_weight",
    }
)
MAX_PRF_DOCS = 20
_TOP_LEVEL = frozenset({"default", "variants"})
# Label values with a meaning of their own in the metrics (see search_common.variant_label, gateway.metrics).
_RESERVED_NAMES = frozenset({NO_VARIANT, OTHER_VARIANT, "unresolved"})


class VariantError(ValueError):
    """A variants file is malformed; the message names the file and the variant."""


@dataclass(frozen=True, slots=True)
class FusionFit:
    """What a learned-fusion model was fitted for: its features mean something only there."""

    first_stage: str
    rerank_depth: int


@dataclass(frozen=True, slots=True)
class VariantBounds:
    """Configured limits every variant (and every per-request override) must respect."""

    max_retrieval_depth: int = 1000
    max_rerank_depth: int = 200
    max_sequence_length: int = 512


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float
    first_stage: FirstStage
    retrieval_depth: int
    reranker: str | None = None
    rerank_depth: int = 0
    reranker_version: str | None = None
    max_sequence_length: int = 0
    cache: bool = True
    fusion: Fusion = "none"
    fusion_weight: float = 1.0
    fusion_model: str | None = None
    prf_docs: int = 0
    prf_weight: float = 0.0
    # Further rerankers asked to score the same head at once, each with its RRF weight (fusion: rrf).
    more_rerankers: tuple[tuple[str, float], ...] = ()

    @property
    def groups(self) -> tuple[str, ...]:
        """The retriever groups this variant fans out to."""
        return GROUPS_OF[self.first_stage]

    @property
    def reranks(self) -> bool:
        return self.reranker is not None and self.rerank_depth > 0

    @property
    def uses_feedback(self) -> bool:
        """Whether the dense search is refined by pseudo-relevance feedback."""
        return self.prf_docs > 0 and "dense" in self.groups

    @property
    def reranker_model(self) -> str:
        """The model the reranker is asked for: "name", or "name@version" when the variant pins one."""
        if self.reranker is None:
            return ""
        return f"{self.reranker}@{self.reranker_version}" if self.reranker_version else self.reranker

    @property
    def reranker_models(self) -> tuple[str, ...]:
        """Every model the head is sent to, the first (`reranker_model`) first; empty without a reranker."""
        if self.reranker is None:
            return ()
        return (self.reranker_model, *(name for name, _ in self.more_rerankers))

    @property
    def fusion_weights(self) -> tuple[float, ...]:
        """The RRF weight of each of `reranker_models`, in the same order."""
        return (self.fusion_weight, *(weight for _, weight in self.more_rerankers))

    @property
    def reranker_label(self) -> str | None:
        """The rerankers' names joined by "+" (for quality rows and reports), or None."""
        return "+".join(self.reranker_models) if self.reranker is not None else None


def _bucket(caller_key: str) -> float:
    """A stable point in [0, 1) for a caller key (sha256, so stable across processes and versions)."""
    digest = hashlib.sha256(caller_key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / float(1 << 64)


@dataclass(frozen=True)
class VariantTable:
    """The variants of one gateway, with what it can serve and how callers are assigned."""

    variants: Mapping[str, Variant]
    default_name: str
    # name -> why this deployment cannot serve it
    unservable: Mapping[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.variants)

    @property
    def default(self) -> Variant:
        return self.variants[self.default_name]

    def get(self, name: str) -> Variant:
        """The variant asked for by name; InvalidArgument when unknown or not servable here."""
        variant = self.variants.get(name)
        if variant is None:
            known = ", ".join(n for n in self.variants if n not in self.unservable)
            raise InvalidArgument(f"unknown variant {name!r}; known variants: {known}")
        reason = self.unservable.get(name)
        if reason is not None:
            raise InvalidArgument(f"variant {name!r} {reason}")
        return variant

    def assign(self, caller_key: str) -> Variant:
        """Sticky weighted assignment; an empty key gets the default variant."""
        if not caller_key:
            return self.default
        candidates = [v for v in self.variants.values() if v.name not in self.unservable and v.weight > 0]
        total = sum(v.weight for v in candidates)
        point = _bucket(caller_key) * total
        cumulative = 0.0
        for variant in candidates:
            cumulative += variant.weight
            if point < cumulative:
                return variant
        return candidates[-1]

    def restricted_to(
        self,
        groups: Collection[str],
        has_reranker: bool,
        *,
        has_query_encoder: bool = True,
        fusion_models: Mapping[str, FusionFit] | None = None,
        reranker_models: Collection[str] | None = None,
    ) -> VariantTable:
        """This table as a deployment with the given retriever groups (and reranker or not, query encoder
        or not, and learned-fusion models: name -> what each was fitted for) can serve it.

        `reranker_models` names the only reranker models served when rerankers are routed by model and no
        default takes the rest (`gateway.reranker_routing`); None means any model."""
        unservable: dict[str, str] = {}
        loaded = fusion_models or {}
        for variant in self.variants.values():
            missing = [g for g in variant.groups if g not in groups]
            fusion_problem = fusion_model_problem(variant, loaded)
            if missing:
                unservable[variant.name] = f"needs the {' and '.join(missing)} retriever, none configured"
            elif variant.uses_feedback and not has_query_encoder:
                unservable[variant.name] = "uses pseudo-relevance feedback, which needs --query-encoder"
            elif variant.reranks and not has_reranker:
                unservable[variant.name] = "needs a reranker, none configured"
            elif (
                variant.reranks
                and reranker_models is not None
                and (unrouted := [m for m in variant.reranker_models if model_name(m) not in reranker_models])
            ):
                unservable[variant.name] = f"needs reranker model {unrouted[0]}, no route serves it"
            elif fusion_problem is not None:
                unservable[variant.name] = fusion_problem
        servable = [v for v in self.variants.values() if v.name not in unservable]
        if not any(v.weight > 0 for v in servable):
            raise VariantError(
                "no variant with a positive weight can be served by this deployment: "
                + "; ".join(f"{name} {why}" for name, why in unservable.items())
            )
        for name, why in unservable.items():
            if self.variants[name].weight > 0:
                logger.warning("variant %s left out of assignment: it %s", name, why)
        default = self.default_name
        if default in unservable:
            default = max(
                (v for v in servable if v.weight > 0), key=lambda v: v.weight
            ).name  # max keeps the first of equal weights
            logger.warning(
                "default variant %s is not servable here; defaulting to %s", self.default_name, default
            )
        return VariantTable(self.variants, default, unservable)


def fusion_model_problem(variant: Variant, fusion_models: Mapping[str, FusionFit]) -> str | None:
    """Why the learned-fusion models at hand (name -> what each was fitted for) cannot serve this variant;
    None when it needs none or its model fits."""
    if variant.fusion_model is None:
        return None
    fitted_for = fusion_models.get(variant.fusion_model)
    if fitted_for is None:
        return f"needs the fusion model {variant.fusion_model!r}, not loaded (--fusion-model)"
    if fitted_for.first_stage != variant.first_stage:
        return (
            f"uses the fusion model {variant.fusion_model!r}, fitted for the "
            f"{fitted_for.first_stage} first stage, not {variant.first_stage}"
        )
    if fitted_for.rerank_depth != variant.rerank_depth:
        # Its features are standardised over the head: another depth is another distribution.
        return (
            f"uses the fusion model {variant.fusion_model!r}, fitted at rerank depth "
            f"{fitted_for.rerank_depth}, not {variant.rerank_depth}"
        )
    return None


def _check_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise VariantError(f"{what} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise VariantError(f"{what} must be within [{low}, {high}], got {value}")
    return value


def _check_number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise VariantError(f"{what} must be a number, got {value!r}")
    return float(value)


def _model_names(value: object, at: str) -> list[str] | None:
    """A variant's `reranker`: None, one model name, or a list of distinct names."""
    if value is None:
        return None
    names = value if isinstance(value, list) else [value]
    if not names:
        raise VariantError(f"{at}: reranker must be a model name, a list of them, or null, got []")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise VariantError(f"{at}: reranker must be a model name, a list of them, or null, got {value!r}")
        if "@" in name:
            raise VariantError(f"{at}: reranker {name!r}: put the version in reranker_version")
    if len(set(names)) != len(names):
        raise VariantError(f"{at}: reranker lists a model twice: {value!r}")
    return [str(name) for name in names]


def _fusion_weights(value: object, rerankers: int, at: str) -> list[float]:
    """One RRF weight per reranker, each within [0, 1] and together at most 1."""
    if rerankers <= 1:
        weights = [_check_number(value, f"{at}: fusion_weight")]
    elif not isinstance(value, list) or len(value) != rerankers:
        raise VariantError(
            f"{at}: fusion_weight must list one weight per reranker ({rerankers}), got {value!r}"
        )
    else:
        weights = [_check_number(w, f"{at}: fusion_weight") for w in value]
    if any(not 0.0 <= w <= 1.0 for w in weights):
        raise VariantError(f"{at}: fusion_weight must be within [0, 1], got {value}")
    if sum(weights) > 1.0 + 1e-9:
        raise VariantError(
            f"{at}: fusion_weight must sum to at most 1 (the first stage keeps the rest), got {value}"
        )
    return weights


def _parse_variant(raw: object, where: str, index: int, bounds: VariantBounds) -> Variant:
    if not isinstance(raw, dict):
        raise VariantError(f"{where}: variants[{index}] must be a mapping, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise VariantError(f"{where}: variants[{index}] needs a non-empty string 'name'")
    if VARIANT_NAME_PATTERN.fullmatch(name) is None or name in _RESERVED_NAMES:
        raise VariantError(
            f"{where}: variants[{index}] name {name!r} must match {VARIANT_NAME_PATTERN.pattern} "
            f"(it becomes a metric label) and not be one of {', '.join(sorted(_RESERVED_NAMES))}"
        )
    at = f"{where}: variant {name!r}"
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise VariantError(
            f"{at}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FIELDS))}"
        )
    for required in ("first_stage", "retrieval_depth"):
        if required not in raw:
            raise VariantError(f"{at}: missing required field {required!r}")
    weight = _check_number(raw.get("weight", 0), f"{at}: weight")
    if weight < 0:
        raise VariantError(f"{at}: weight must be >= 0, got {weight}")
    first_stage = raw["first_stage"]
    if first_stage not in FIRST_STAGES:
        raise VariantError(
            f"{at}: unknown first_stage {first_stage!r}; expected one of {', '.join(FIRST_STAGES)}"
        )
    retrieval_depth = _check_int(
        raw["retrieval_depth"], f"{at}: retrieval_depth", 1, bounds.max_retrieval_depth
    )
    rerankers = _model_names(raw.get("reranker"), at)
    reranker = rerankers[0] if rerankers else None
    reranker_version = raw.get("reranker_version")
    if reranker_version is not None:
        if not isinstance(reranker_version, str) or not reranker_version.strip() or "@" in reranker_version:
            raise VariantError(
                f"{at}: reranker_version must be a version string or null, got {reranker_version!r}"
            )
        if reranker is None:
            raise VariantError(f"{at}: reranker_version {reranker_version!r} needs a reranker")
        if rerankers is not None and len(rerankers) > 1:
            raise VariantError(f"{at}: reranker_version pins one reranker; this variant lists several")
    rerank_depth = _check_int(raw.get("rerank_depth", 0), f"{at}: rerank_depth", 0, bounds.max_rerank_depth)
    if reranker is None and rerank_depth > 0:
        raise VariantError(f"{at}: rerank_depth {rerank_depth} needs a reranker; set 'reranker' or depth 0")
    if reranker is not None and rerank_depth == 0:
        raise VariantError(f"{at}: reranker {reranker!r} needs rerank_depth >= 1")
    max_len = _check_int(
        raw.get("max_sequence_length", 0), f"{at}: max_sequence_length", 0, bounds.max_sequence_length
    )
    cache = raw.get("cache", True)
    if not isinstance(cache, bool):
        raise VariantError(f"{at}: cache must be true or false, got {cache!r}")
    fusion = raw.get("fusion", "none")
    if fusion not in FUSIONS:
        raise VariantError(f"{at}: unknown fusion {fusion!r}; expected one of {', '.join(FUSIONS)}")
    several = rerankers is not None and len(rerankers) > 1
    if several and fusion != "rrf":
        raise VariantError(f"{at}: several rerankers are fused by 'fusion: rrf', not {fusion!r}")
    weights = _fusion_weights(raw.get("fusion_weight", 1.0), len(rerankers or ()), at)
    fusion_model = raw.get("fusion_model")
    if fusion_model is not None and (not isinstance(fusion_model, str) or not fusion_model.strip()):
        raise VariantError(f"{at}: fusion_model must be a model name or null, got {fusion_model!r}")
    if (fusion == "learned") != (fusion_model is not None):
        raise VariantError(f"{at}: fusion: learned and fusion_model go together (fusion is {fusion!r})")
    if fusion == "learned" and reranker is None:
        raise VariantError(f"{at}: fusion: learned orders the re-ranked head; it needs a reranker")
    prf_docs = _check_int(raw.get("prf_docs", 0), f"{at}: prf_docs", 0, MAX_PRF_DOCS)
    prf_weight = _check_number(raw.get("prf_weight", 0.0), f"{at}: prf_weight")
    if prf_docs > 0 and not 0.0 < prf_weight <= 4.0:
        raise VariantError(f"{at}: prf_weight must be within (0, 4] when prf_docs is set, got {prf_weight}")
    if prf_docs > 0 and "dense" not in GROUPS_OF[cast(FirstStage, first_stage)]:
        raise VariantError(f"{at}: prf_docs needs a dense first stage (dense or hybrid), not {first_stage!r}")
    return Variant(
        name=name,
        weight=weight,
        first_stage=cast(FirstStage, first_stage),
        retrieval_depth=retrieval_depth,
        reranker=reranker,
        rerank_depth=rerank_depth,
        reranker_version=reranker_version,
        max_sequence_length=max_len,
        cache=cache,
        fusion=cast(Fusion, fusion),
        fusion_weight=weights[0],
        fusion_model=fusion_model,
        prf_docs=prf_docs,
        prf_weight=prf_weight if prf_docs > 0 else 0.0,
        more_rerankers=tuple(zip((rerankers or [])[1:], weights[1:], strict=True)),
    )


def parse_variants(data: object, where: str, bounds: VariantBounds) -> VariantTable:
    """Validates a parsed variants document; `where` names its source in error messages."""
    if not isinstance(data, dict):
        raise VariantError(f"{where}: expected a mapping with a 'variants' list")
    unknown = sorted(set(data) - _TOP_LEVEL)
    if unknown:
        raise VariantError(f"{where}: unknown top-level field(s) {', '.join(unknown)}")
    raw_variants: Any = data.get("variants")
    if not isinstance(raw_variants, list) or not raw_variants:
        raise VariantError(f"{where}: 'variants' must be a non-empty list")
    variants: dict[str, Variant] = {}
    for index, raw in enumerate(raw_variants):
        variant = _parse_variant(raw, where, index, bounds)
        if variant.name in variants:
            raise VariantError(f"{where}: duplicate variant name {variant.name!r}")
        variants[variant.name] = variant
    if sum(v.weight for v in variants.values()) <= 0:
        raise VariantError(f"{where}: variant weights must have a positive sum")
    default = data.get("default")
    if default is None:
        default = max(variants.values(), key=lambda v: v.weight).name
    elif default not in variants:
        raise VariantError(f"{where}: default variant {default!r} is not defined")
    return VariantTable(variants, str(default))


def load_variants(path: Path | None, bounds: VariantBounds) -> VariantTable:
    """Loads a variants file, or the packaged gateway/variants.yaml when path is None."""
    if path is None:
        where = "gateway/variants.yaml (packaged default)"
        text = resources.files("gateway").joinpath("variants.yaml").read_text(encoding="utf-8")
    else:
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise VariantError(f"{where}: cannot read variants file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise VariantError(f"{where}: not valid YAML ({exc})") from None
    return parse_variants(data, where, bounds)
