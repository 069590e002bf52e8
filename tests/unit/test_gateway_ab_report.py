"""search-ab's pure parts: latency quantiles, the timed run (real pipeline, fake shards), the report."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from corpora.beir import Query
from evaluation.ab_report import AbRow, latency_quantiles, render_markdown, timed_run, write_report
from gateway.pipeline import SearchPipeline
from gateway.variants import Variant
from search_common.documents import Document
from tests.fakes import FakeRetriever


def test_latency_quantiles_are_milliseconds() -> None:
    assert latency_quantiles([]) == (0.0, 0.0)
    p50, p95 = latency_quantiles([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert p50 == pytest.approx(50.5)
    assert p95 == pytest.approx(95.05)


def test_timed_run_times_every_query_and_keeps_the_pipeline_order() -> None:
    docs = [(Document(f"d{i}", "", f"text {i}"), float(i)) for i in range(5)]
    pipeline = SearchPipeline({"bm25": [FakeRetriever("bm25", 0, docs)]})
    variant = Variant("bm25", 1.0, "bm25", 3)
    queries = [Query("q1", "one"), Query("q2", "two")]
    run, seconds, degraded = asyncio.run(timed_run(pipeline, variant, queries, warmup=1))
    assert run == {"q1": ["d4", "d3", "d2", "d1", "d0"], "q2": ["d4", "d3", "d2", "d1", "d0"]}
    assert len(seconds) == 2 and all(s >= 0 for s in seconds)
    assert degraded == 0


def test_write_report_writes_json_and_a_markdown_row_per_variant(tmp_path: Path) -> None:
    rows = [
        AbRow("bm25", "bm25", 100, "none", 0, 0.68, 0.64, 0.91, 3.4, 6.2, 0, 300),
        AbRow("hybrid+ce", "hybrid", 100, "ce", 100, 0.75, 0.7, 0.95, 900.0, 1500.0, 1, 300),
    ]
    context = {"dataset": "scifact", "split": "test", "git_sha": "abc", "host": {"cores": 2}}
    json_path, md_path = write_report(rows, context, tmp_path / "ab.json", tmp_path / "ab.md")
    payload = json.loads(json_path.read_text())
    assert [r["variant"] for r in payload["rows"]] == ["bm25", "hybrid+ce"]
    assert payload["rows"][0]["ndcg@10"] == 0.68 and payload["rows"][1]["latency_p95_ms"] == 1500.0
    table = md_path.read_text()
    assert "| bm25 | bm25 @100 | none | 0.6800 |" in table
    assert "| hybrid+ce | hybrid @100 | ce @100 |" in table
    assert table == render_markdown(payload["rows"], context)
