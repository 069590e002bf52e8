"""search-eval's pure parts: scoring a run with ir_measures, merging rows into quality.json/quality.md."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evaluation.config import parse_eval_settings
from evaluation.evaluate import labelled_pipeline
from evaluation.results import QualityRow, score_run, update_results


def test_score_run_counts_every_judged_query() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}}
    run = {"q1": ["a", "x"], "q2": ["x", "y", "b"]}  # q3 has no hits at all
    scores = score_run(run, qrels)
    assert scores["mrr@10"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert scores["recall@100"] == pytest.approx(2 / 3)
    assert scores["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 0) / 3)


def test_score_run_uses_rank_not_doc_id_order() -> None:
    scores = score_run({"q": ["z", "a"]}, {"q": {"a": 1}})
    assert scores["mrr@10"] == pytest.approx(0.5)


def _row(pipeline: str, ndcg: float, dataset: str = "scifact") -> QualityRow:
    return QualityRow(dataset, "test", pipeline, ndcg, 0.5, 0.9, 300, first_stage=pipeline)


def test_update_results_replaces_own_rows_and_keeps_others(tmp_path: Path) -> None:
    update_results(tmp_path, [_row("dense", 0.6), _row("bm25", 0.67), _row("dense", 0.1, "other")])
    json_path, md_path = update_results(tmp_path, [_row("dense", 0.65)])
    rows = json.loads(json_path.read_text())
    assert [(r["dataset"], r["pipeline"], r["ndcg@10"]) for r in rows] == [
        ("other", "dense", 0.1),
        ("scifact", "bm25", 0.67),
        ("scifact", "dense", 0.65),
    ]
    assert set(rows[0]) == {
        "dataset", "split", "pipeline", "first_stage", "reranker", "rerank_depth", "fusion",
        "ndcg@10", "mrr@10", "recall@100", "queries",
    }  # fmt: skip
    assert (rows[0]["first_stage"], rows[0]["reranker"], rows[0]["rerank_depth"], rows[0]["fusion"]) == (
        "dense",
        None,
        0,
        "none",
    )
    table = md_path.read_text()
    assert "| scifact | test | dense | dense | - | - | none | 0.6500 | 0.5000 | 0.9000 | 300 |" in table
    assert table.count("\n| ") == 4  # header + 3 rows


def test_a_reranked_row_says_what_reranked_it_how_deep_and_how_it_was_fused(tmp_path: Path) -> None:
    row = QualityRow("scifact", "test", "hybrid-mnrl10+ce", 0.7, 0.6, 0.9, 300, first_stage="hybrid-mnrl",
                     reranker="cross-encoder", rerank_depth=10, fusion="rrf")  # fmt: skip
    json_path, md_path = update_results(tmp_path, [row])
    (saved,) = json.loads(json_path.read_text())
    assert (saved["first_stage"], saved["reranker"], saved["rerank_depth"], saved["fusion"]) == (
        "hybrid-mnrl",
        "cross-encoder",
        10,
        "rrf",
    )
    assert "| hybrid-mnrl10+ce | hybrid-mnrl | cross-encoder | 10 | rrf |" in md_path.read_text()


def test_labelled_pipeline_names_rows_of_a_fine_tuned_encoder() -> None:
    assert labelled_pipeline("dense", "mnrl") == "dense-mnrl"
    assert labelled_pipeline("hybrid20+ce", "distill") == "hybrid-distill20+ce"
    assert labelled_pipeline("hybrid", None) == "hybrid"


def _dataset(tmp_path: Path) -> Path:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "x"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return tmp_path


def test_encoder_flags_go_together_and_need_an_artifact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = _dataset(tmp_path)
    base = ["--dataset", str(dataset), "--pipeline", "dense"]
    with pytest.raises(SystemExit) as exit_info:
        parse_eval_settings([*base, "--encoder-label", "mnrl"], ["none"])
    assert exit_info.value.code == 2 and "go together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_eval_settings([*base, "--encoder", str(tmp_path), "--encoder-label", "mnrl"], ["none"])
    assert "not a bi-encoder artifact" in capsys.readouterr().err
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(SystemExit):
        parse_eval_settings([*base, "--encoder", str(tmp_path), "--encoder-label", "Bad Label"], ["none"])
    assert "--encoder-label" in capsys.readouterr().err
    settings = parse_eval_settings([*base, "--encoder", str(tmp_path), "--encoder-label", "mnrl"], ["none"])
    assert settings.encoder == tmp_path and settings.encoder_label == "mnrl"


def test_a_reranker_label_needs_a_reranker_and_a_plain_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--dataset", str(_dataset(tmp_path)), "--pipeline", "hybrid10+colbert"]
    with pytest.raises(SystemExit):
        parse_eval_settings([*base, "--reranker-label", "zero-label"], ["none", "onnx"])
    assert "give --reranker too" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_eval_settings([*base, "--reranker", "onnx", "--reranker-label", "Zero Label"], ["none", "onnx"])
    assert "--reranker-label" in capsys.readouterr().err
    settings = parse_eval_settings([*base, "--reranker", "onnx", "--reranker-label", "zl"], ["none", "onnx"])
    assert settings.reranker_label == "zl"
