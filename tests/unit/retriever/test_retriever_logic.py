"""Pure logic of the retriever service: batching order, shard split, request checks, tokenizer, flags."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_runtimes.bi_encoder import length_order
from retriever_service.bm25 import Bm25Tokenizer
from retriever_service.config import parse_build_settings, parse_settings
from retriever_service.shards import shard_bounds, validate_request
from search_common.errors import InvalidArgument


@given(st.lists(st.integers(min_value=0, max_value=512), max_size=200))
def test_length_order_round_trip(lengths: list[int]) -> None:
    order, inverse = length_order(lengths)
    assert sorted(order.tolist()) == list(range(len(lengths)))
    sorted_lengths = [lengths[i] for i in order]
    assert sorted_lengths == sorted(lengths, reverse=True)
    # Outputs computed in sorted order, indexed by the inverse, come back in input order.
    assert [sorted_lengths[j] for j in inverse] == lengths


def test_length_order_is_stable_for_equal_lengths() -> None:
    order, _ = length_order([3, 5, 3, 5])
    assert order.tolist() == [1, 3, 0, 2]


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=1, max_value=17))
def test_shard_bounds_partition_the_corpus_contiguously(n: int, nshards: int) -> None:
    bounds = [shard_bounds(n, nshards, i) for i in range(nshards)]
    assert bounds[0][0] == 0
    assert bounds[-1][1] == n
    for (_, end), (start, _) in itertools.pairwise(bounds):
        assert end == start
    sizes = [end - start for start, end in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_shard_bounds_rejects_bad_ids() -> None:
    with pytest.raises(ValueError, match="shard_id"):
        shard_bounds(10, 2, 2)
    with pytest.raises(ValueError, match="num_shards"):
        shard_bounds(10, 0, 0)


@pytest.mark.parametrize(
    ("query", "k", "message"),
    [
        ("", 5, "empty"),
        ("   \t\n", 5, "empty"),
        ("ok", 0, "positive"),
        ("ok", -3, "positive"),
        ("ok", 11, "maximum of 10"),
        ("x" * 51, 5, "limit is 50"),
    ],
)
def test_validate_request_rejects_bad_input(query: str, k: int, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        validate_request(query, k, max_top_k=10, max_query_chars=50)


def test_validate_request_strips() -> None:
    assert validate_request("  vitamin c ", 10, max_top_k=10, max_query_chars=50) == "vitamin c"


def test_bm25_tokenizer_lowercases_drops_stopwords_and_stems() -> None:
    assert Bm25Tokenizer()(["The Running of the Dogs", "a"]) == [["run", "dog"], []]


def test_server_flags(tmp_path: object) -> None:
    settings = parse_settings(
        ["--index", "var/x/shard-0", "--port", "0", "--max-top-k", "50", "--no-reflection", "--threads", "1"],
        environ={},
    )
    assert settings.max_top_k == 50
    assert not settings.reflection
    assert settings.address == "127.0.0.1:0"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--index", "x", "--max-top-k", "0"],
        ["--index", "x", "--port", "70000"],
        ["--index", "x", "--threads", "many"],
    ],
)
def test_bad_server_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_settings(argv, environ={})
    assert exc.value.code == 2
    assert "search-retriever: error:" in capsys.readouterr().err


def test_bad_build_flags_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_build_settings(["--corpus", "c.jsonl", "--out", "o", "--shards", "0"])
    assert exc.value.code == 2
    assert "--shards must be positive" in capsys.readouterr().err
