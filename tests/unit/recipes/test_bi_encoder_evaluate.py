"""Dev evaluation helpers on tiny vectors: exact search order and the metric figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_runtimes.bi_encoder import BiEncoder
from training.bi_encoder.evaluate import dev_report, exact_search, retrieval_metrics


def test_exact_search_orders_by_inner_product() -> None:
    docs = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    queries = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    runs = exact_search(queries, docs, ["a", "b", "c"], 2)
    assert list(runs[0]) == ["b", "c"] and list(runs[1]) == ["a", "c"]
    assert runs[0]["b"] == pytest.approx(1.0)
    assert len(exact_search(queries, docs, ["a", "b", "c"], 10)[0]) == 3
    with pytest.raises(ValueError, match="exact_search"):
        exact_search(queries, docs, ["a", "b", "c"], 0)


def test_retrieval_metrics_perfect_and_missing() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    perfect = retrieval_metrics(qrels, {"q1": {"a": 2.0, "b": 1.0}, "q2": {"b": 2.0}})
    assert perfect == {"ndcg@10": pytest.approx(1.0), "recall@100": pytest.approx(1.0)}
    half = retrieval_metrics(qrels, {"q1": {"a": 1.0}})
    assert half == {"ndcg@10": pytest.approx(0.5), "recall@100": pytest.approx(0.5)}
    with pytest.raises(ValueError, match="retrieval_metrics"):
        retrieval_metrics({}, {})


def test_dev_report_on_tiny_dataset(tmp_path: Path) -> None:
    root = tmp_path / "scifact"
    (root / "qrels").mkdir(parents=True)
    topics = [
        "scurvy vitamin c",
        "malaria mosquito",
        "insulin diabetes",
        "smoking lung cancer",
        "aspirin heart",
    ]
    docs = [
        {"_id": f"d{i}", "title": t, "text": f"A study of {t}.", "metadata": {}} for i, t in enumerate(topics)
    ]
    queries = [{"_id": f"q{i}", "text": f"what about {t}?", "metadata": {}} for i, t in enumerate(topics)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(topics)))
    (root / "qrels" / "train.tsv").write_text(qrels)
    report = dev_report(BiEncoder.load(max_length=32), root)
    assert report["dev_queries"] == 1 and report["encoder"].startswith("all-MiniLM-L6-v2@")
    assert report["recall@100"] == pytest.approx(1.0) and report["ndcg@10"] > 0.5
