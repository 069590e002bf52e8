"""Variant files: strict validation with clear errors, sticky and proportional assignment."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway.variant_reload import LiveVariants
from gateway.variants import FusionFit, VariantBounds, VariantError, load_variants, parse_variants
from search_common.errors import InvalidArgument

BOUNDS = VariantBounds(max_retrieval_depth=1000, max_rerank_depth=200)


def _doc(*variants: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"variants": list(variants), **top}


def _v(name: str, weight: float = 1.0, **fields: Any) -> dict[str, Any]:
    return {"name": name, "weight": weight, "first_stage": "dense", "retrieval_depth": 100, **fields}


def test_packaged_default_reranks_with_colbert_and_falls_back_to_hybrid_without_a_reranker() -> None:
    table = load_variants(None, BOUNDS)
    assert {"dense", "bm25", "hybrid", "hybrid100+ce", "hybrid10+colbert"} <= set(table.names)
    default = table.default
    assert (default.name, default.reranker, default.rerank_depth) == (
        "hybrid10+colbert",
        "colbert-minilm",
        10,
    )
    assert table.restricted_to({"dense", "bm25"}, has_reranker=False).default.name == "hybrid"
    routed = table.restricted_to(
        {"dense", "bm25"}, has_reranker=True, reranker_models={"cross-encoder-minilm"}
    )
    assert routed.default.name == "hybrid"
    ce = table.variants["hybrid100+ce"]
    assert ce.reranks and ce.rerank_depth == 100 and ce.first_stage == "hybrid"


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        (_v("a", colour="red"), r"'a'.*unknown field\(s\) colour"),
        (_v("a", weight=-1), r"'a'.*weight must be >= 0"),
        (_v("a", first_stage="sparse"), r"'a'.*unknown first_stage 'sparse'"),
        (_v("a", retrieval_depth=0), r"'a'.*retrieval_depth must be within \[1, 1000\]"),
        (_v("a", retrieval_depth=5000), r"retrieval_depth must be within"),
        (_v("a", reranker="ce", rerank_depth=500), r"rerank_depth must be within \[0, 200\]"),
        (_v("a", rerank_depth=10), r"needs a reranker"),
        (_v("a", reranker="ce"), r"needs rerank_depth >= 1"),
        (_v("a", fusion="max"), r"unknown fusion 'max'"),
        (_v("a", fusion_weight=1.5), r"fusion_weight must be within"),
        (_v("a", reranker="ce", rerank_depth=5, fusion="learned"), r"learned and fusion_model go together"),
        (_v("a", reranker="ce", rerank_depth=5, fusion_model="m"), r"learned and fusion_model go together"),
        (_v("a", fusion="learned", fusion_model="m"), r"fusion: learned .* needs a reranker"),
        (_v("a", reranker="ce", rerank_depth=5, fusion="learned", fusion_model=""), r"fusion_model must be"),
        (_v("a", cache="yes"), r"cache must be true or false"),
        (_v("a", retrieval_depth="many"), r"must be an integer"),
        ({"weight": 1}, r"variants\[0\] needs a non-empty string 'name'"),
        ({"name": "a", "weight": 1}, r"'a'.*missing required field 'first_stage'"),
    ],
)
def test_invalid_variant_is_named_in_error(variant: dict[str, Any], message: str) -> None:
    with pytest.raises(VariantError, match=message) as info:
        parse_variants(_doc(variant), "conf/variants.yaml", BOUNDS)
    assert "conf/variants.yaml" in str(info.value)


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(VariantError, match="positive sum"):
        parse_variants(_doc(_v("a", 0), _v("b", 0)), "f", BOUNDS)
    with pytest.raises(VariantError, match="duplicate variant name 'a'"):
        parse_variants(_doc(_v("a"), _v("a")), "f", BOUNDS)
    with pytest.raises(VariantError, match="default variant 'zz' is not defined"):
        parse_variants(_doc(_v("a"), default="zz"), "f", BOUNDS)
    with pytest.raises(VariantError, match="unknown top-level"):
        parse_variants({"variants": [_v("a")], "extra": 1}, "f", BOUNDS)
    with pytest.raises(VariantError, match="non-empty list"):
        parse_variants({"variants": []}, "f", BOUNDS)
    bad = tmp_path / "v.yaml"
    bad.write_text("variants: [\n")
    with pytest.raises(VariantError, match=r"v\.yaml: not valid YAML"):
        load_variants(bad, BOUNDS)
    with pytest.raises(VariantError, match="cannot read"):
        load_variants(tmp_path / "missing.yaml", BOUNDS)


def test_unknown_variant_is_invalid_argument() -> None:
    table = parse_variants(_doc(_v("a"), _v("b")), "f", BOUNDS)
    with pytest.raises(InvalidArgument, match="unknown variant 'c'; known variants: a, b"):
        table.get("c")


def test_assignment_is_sticky_and_proportional() -> None:
    table = parse_variants(_doc(_v("a", 3), _v("b", 1), _v("off", 0)), "f", BOUNDS)
    keys = [f"user-{i}" for i in range(4000)]
    first = [table.assign(k).name for k in keys]
    assert first == [table.assign(k).name for k in keys]
    counts = Counter(first)
    assert "off" not in counts
    assert 0.70 < counts["a"] / len(keys) < 0.80
    assert table.assign("").name == "a"  # no key: the default (highest weight)


def test_restricted_table_hides_what_cannot_be_served() -> None:
    table = load_variants(None, BOUNDS).restricted_to({"dense", "bm25"}, has_reranker=False)
    with pytest.raises(InvalidArgument, match="'hybrid100\\+ce' needs a reranker, none configured"):
        table.get("hybrid100+ce")
    assert table.get("hybrid").name == "hybrid"
    dense_only = load_variants(None, BOUNDS).restricted_to({"dense"}, has_reranker=False)
    assert dense_only.default.name == "dense"
    with pytest.raises(InvalidArgument, match="needs the bm25 retriever"):
        dense_only.get("bm25")
    assert {dense_only.assign(f"k{i}").name for i in range(200)} == {"dense"}
    with pytest.raises(VariantError, match="no variant with a positive weight"):
        parse_variants(_doc(_v("ce", reranker="ce", rerank_depth=5)), "f", BOUNDS).restricted_to(
            {"dense"}, has_reranker=False
        )


def _live_file(tmp_path: Path, text: str) -> tuple[Path, LiveVariants]:
    path = tmp_path / "variants.yaml"
    path.write_text(text)
    bounds = VariantBounds()
    table = load_variants(path, bounds).restricted_to({"dense", "bm25"}, has_reranker=False)
    return path, LiveVariants(table, path, bounds, {"dense", "bm25"}, has_reranker=False)


_ONE = "variants:\n  - {name: a, weight: 1, first_stage: bm25, retrieval_depth: 10}\n"
_TWO = _ONE + "  - {name: b, weight: 1, first_stage: dense, retrieval_depth: 10}\ndefault: b\n"


def test_live_variants_swap_on_reload_and_keep_the_old_table_on_a_bad_file(tmp_path: Path) -> None:
    path, live = _live_file(tmp_path, _ONE)
    seen: list[object] = []
    live.set_listener(seen.append)
    before = live.current
    path.write_text(_TWO)
    assert live.reload() is True
    assert live.current.default_name == "b" and before.default_name == "a"  # the old table is unchanged
    path.write_text("variants: [{name: c, weight: 1, first_stage: sparse, retrieval_depth: 1}]\n")
    assert live.reload() is False
    assert live.current.default_name == "b"
    assert seen[0] is not None and seen[1] is None


async def test_live_variants_watch_notices_a_changed_file(tmp_path: Path) -> None:
    path, live = _live_file(tmp_path, _ONE)
    watcher = asyncio.create_task(live.watch(0.01))
    try:
        path.write_text(_TWO)
        for _ in range(500):
            if live.current.default_name == "b":
                break
            await asyncio.sleep(0.01)
        assert live.current.default_name == "b"
    finally:
        watcher.cancel()


def test_variant_names_must_be_label_safe() -> None:
    for name in ("has space", "none", "other", "-leading"):
        with pytest.raises(VariantError, match="must match"):
            parse_variants(
                {"variants": [{"name": name, "weight": 1, "first_stage": "bm25", "retrieval_depth": 1}]},
                "test",
                VariantBounds(),
            )


def test_reranker_version_pins_the_model_asked_for() -> None:
    base = {"name": "ce", "weight": 1, "first_stage": "bm25", "retrieval_depth": 10, "reranker": "m"}
    table = parse_variants(
        {"variants": [{**base, "rerank_depth": 5, "reranker_version": "v3"}]}, "test", VariantBounds()
    )
    assert table.variants["ce"].reranker_model == "m@v3"
    unpinned = parse_variants({"variants": [{**base, "rerank_depth": 5}]}, "test", VariantBounds())
    assert unpinned.variants["ce"].reranker_model == "m"
    for bad, message in (
        ({**base, "rerank_depth": 5, "reranker_version": ""}, "reranker_version must be"),
        ({**base, "reranker": None, "reranker_version": "v1"}, "needs a reranker"),
        ({**base, "rerank_depth": 5, "reranker": "m@v1"}, "put the version in reranker_version"),
    ):
        with pytest.raises(VariantError, match=message):
            parse_variants({"variants": [bad]}, "test", VariantBounds())


def test_pseudo_relevance_feedback_fields_parse_and_are_checked() -> None:
    table = load_variants(None, BOUNDS)
    prf = table.variants["dense-prf"]
    assert (prf.prf_docs, prf.prf_weight, prf.uses_feedback) == (2, 0.5, True)
    assert not table.variants["dense"].uses_feedback
    parsed = parse_variants(_doc(_v("p", prf_docs=3, prf_weight=1)), "f", BOUNDS).variants["p"]
    assert (parsed.prf_docs, parsed.prf_weight) == (3, 1.0)
    for fields, message in (
        ({"prf_docs": 2}, "prf_weight must be within \\(0, 4\\] when prf_docs is set, got 0.0"),
        ({"prf_docs": 2, "prf_weight": 5}, "prf_weight must be within \\(0, 4\\]"),
        ({"prf_docs": 21, "prf_weight": 0.5}, "prf_docs must be within \\[0, 20\\], got 21"),
        ({"prf_docs": 2, "prf_weight": 0.5, "first_stage": "bm25"}, "prf_docs needs a dense first stage"),
    ):
        with pytest.raises(VariantError, match=message):
            parse_variants(_doc(_v("p", **fields)), "f", BOUNDS)


def test_feedback_variants_need_the_gateways_query_encoder() -> None:
    table = load_variants(None, BOUNDS).restricted_to({"dense", "bm25"}, True, has_query_encoder=False)
    with pytest.raises(InvalidArgument, match="pseudo-relevance feedback, which needs --query-encoder"):
        table.get("dense-prf")
    assert table.get("dense").name == "dense"
    with_encoder = load_variants(None, BOUNDS).restricted_to({"dense", "bm25"}, True, has_query_encoder=True)
    assert with_encoder.get("dense-prf").prf_docs == 2


def test_learned_fusion_variants_need_their_model_loaded_and_fitted_for_their_first_stage() -> None:
    learned = {"reranker": "ce", "rerank_depth": 5, "fusion": "learned", "fusion_model": "lf"}
    doc = _doc(
        _v("plain"), _v("dense-lf", 0, **learned), _v("hybrid-lf", 0, **{**learned, "first_stage": "hybrid"})
    )
    table = parse_variants(doc, "f", BOUNDS)
    assert table.variants["dense-lf"].fusion_model == "lf"

    none_loaded = table.restricted_to({"dense", "bm25"}, True)
    with pytest.raises(InvalidArgument, match=r"needs the fusion model 'lf', not loaded \(--fusion-model\)"):
        none_loaded.get("dense-lf")

    dense_model = table.restricted_to({"dense", "bm25"}, True, fusion_models={"lf": FusionFit("dense", 5)})
    assert dense_model.get("dense-lf").fusion == "learned"
    with pytest.raises(InvalidArgument, match="fitted for the dense first stage, not hybrid"):
        dense_model.get("hybrid-lf")
    deeper = table.restricted_to({"dense", "bm25"}, True, fusion_models={"lf": FusionFit("dense", 20)})
    with pytest.raises(InvalidArgument, match="fitted at rerank depth 20, not 5"):
        deeper.get("dense-lf")


def _both(**fields: Any) -> dict[str, Any]:
    return _v("both", reranker=["colbert", "mpnet"], rerank_depth=30, fusion="rrf", **fields)


def test_a_variant_may_list_several_rerankers_with_a_weight_each() -> None:
    table = parse_variants(_doc(_v("dense"), _both(fusion_weight=[0.1, 0.3])), "f", BOUNDS)
    both = table.variants["both"]
    assert both.reranker_models == ("colbert", "mpnet")
    assert both.fusion_weights == (0.1, 0.3)
    assert both.reranker_label == "colbert+mpnet"
    one = parse_variants(_doc(_v("one", reranker="ce", rerank_depth=5, fusion_weight=0.4)), "f", BOUNDS)
    assert one.variants["one"].reranker_models == ("ce",) and one.variants["one"].fusion_weights == (0.4,)
    # Every model listed must be served: a route for one of them only leaves the variant out.
    routed = table.restricted_to({"dense"}, has_reranker=True, reranker_models={"colbert"})
    with pytest.raises(InvalidArgument, match="needs reranker model mpnet, no route serves it"):
        routed.get("both")
    assert table.restricted_to({"dense"}, has_reranker=True, reranker_models={"colbert", "mpnet"}).get("both")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fusion_weight": 0.3}, r"one weight per reranker \(2\)"),
        ({"fusion_weight": [0.3]}, r"one weight per reranker \(2\)"),
        ({"fusion_weight": [0.7, 0.6]}, r"sum to at most 1"),
        ({"fusion_weight": [0.5, -0.1]}, r"within \[0, 1\]"),
        ({"fusion_weight": [0.5, "x"]}, r"must be a number"),
        ({"fusion": "none"}, r"several rerankers are fused by 'fusion: rrf', not 'none'"),
        ({"fusion": "learned", "fusion_model": "m"}, r"several rerankers are fused by 'fusion: rrf'"),
        ({"reranker_version": "v1"}, r"pins one reranker; this variant lists several"),
        ({"reranker": ["a", "a"]}, r"lists a model twice"),
        ({"reranker": ["a", ""]}, r"reranker must be a model name, a list of them, or null"),
        ({"reranker": []}, r"reranker must be a model name, a list of them, or null, got \[\]"),
        ({"reranker": ["a", "b@v1"]}, r"put the version in reranker_version"),
    ],
)
def test_several_rerankers_are_checked(fields: dict[str, Any], message: str) -> None:
    variant = {**_both(fusion_weight=[0.3, 0.3]), **fields}
    with pytest.raises(VariantError, match=message):
        parse_variants(_doc(variant), "conf/variants.yaml", BOUNDS)
