"""gateway.reranker_routing and the variant table's view of routed rerankers: pure logic over fakes."""

from __future__ import annotations

import pytest

from gateway.reranker_routing import RoutedReranker
from gateway.variants import VariantBounds, parse_variants
from search_common.documents import Document
from search_common.errors import NotFound
from tests.fakes import FakeReranker

DOCS = [Document("d1", "", "one"), Document("d2", "", "two")]


async def test_each_model_goes_to_its_route_and_the_rest_to_the_default() -> None:
    colbert, default = FakeReranker(lambda q, d: 1.0), FakeReranker(lambda q, d: 2.0)
    routed = RoutedReranker({"colbert-minilm": colbert}, default=default)
    assert (await routed.rerank("q", DOCS, model="colbert-minilm@v2")).scores == [1.0, 1.0]
    assert (await routed.rerank("q", DOCS, model="cross-encoder-minilm")).scores == [2.0, 2.0]
    assert [call[2] for call in colbert.calls] == ["colbert-minilm@v2"]  # the pinned version goes along
    assert routed.models is None


async def test_without_a_default_an_unrouted_model_is_not_found() -> None:
    routed = RoutedReranker({"colbert-minilm": FakeReranker(lambda q, d: 1.0)})
    assert routed.models == frozenset({"colbert-minilm"})
    with pytest.raises(NotFound, match="no reranker serves model 'cross-encoder-minilm'"):
        await routed.rerank("q", DOCS, model="cross-encoder-minilm")
    with pytest.raises(ValueError, match="at least one route"):
        RoutedReranker({})


def test_variants_of_unrouted_models_are_left_out() -> None:
    table = parse_variants(
        {
            "default": "plain",
            "variants": [
                {"name": "plain", "weight": 1, "first_stage": "bm25", "retrieval_depth": 10},
                {"name": "ce", "weight": 0, "first_stage": "bm25", "retrieval_depth": 10,
                 "reranker": "cross-encoder-minilm", "rerank_depth": 5},
                {"name": "colbert", "weight": 0, "first_stage": "bm25", "retrieval_depth": 10,
                 "reranker": "colbert-minilm", "rerank_depth": 5},
            ],
        },
        "test",
        VariantBounds(),
    )  # fmt: skip
    routed_only = table.restricted_to({"bm25"}, True, reranker_models={"colbert-minilm"})
    assert set(routed_only.unservable) == {"ce"}
    assert "no route serves it" in routed_only.unservable["ce"]
    assert table.restricted_to({"bm25"}, True).unservable == {}
