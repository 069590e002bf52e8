"""`search-eval` over a small BEIR folder with a variant that sends its head to two in-process rerankers (a
re-scoring bi-encoder and ColBERT), routed by the model each artifact names, as the gateway routes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.evaluate import main as eval_main
from tests.bi_encoder_rescorer_support import NAME as RESCORER
from tests.bi_encoder_rescorer_support import rescorer_artifact
from tests.late_interaction_support import late_interaction_artifact
from tests.stored_vector_support import write_corpus

COLBERT = "colbert-untrained"
ROWS = [
    ("gz", "gzip", "Compress and decompress files in the gzip format."),
    ("json", "json", "Encode Python objects as JSON text and decode JSON documents."),
    ("csv", "csv", "Read and write tabular data in comma separated values files."),
    ("sock", "socket", "Low-level networking interface over sockets."),
    ("re", "re", "Regular expression matching operations on strings."),
    ("zip", "zipfile", "Work with ZIP archives: read, write and list their members."),
    ("time", "time", "Time access and conversions between clocks and calendars."),
    ("path", "pathlib", "Object-oriented filesystem paths for files and directories."),
]
QUERIES = {"q1": "compress a file", "q2": "parse a json document", "q3": "read a csv file"}
QRELS = {"q1": "gz", "q2": "json", "q3": "csv"}
VARIANTS = f"""
default: dense
variants:
  - {{name: dense, weight: 1, first_stage: dense, retrieval_depth: 8}}
  - {{name: both, weight: 0, first_stage: dense, retrieval_depth: 8, reranker: [{RESCORER}, {COLBERT}],
     rerank_depth: 5, fusion: rrf, fusion_weight: [0.3, 0.3]}}
  - {{name: unserved, weight: 0, first_stage: dense, retrieval_depth: 8, reranker: [{RESCORER}, other-model],
     rerank_depth: 5, fusion: rrf, fusion_weight: [0.3, 0.3]}}
"""


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    write_corpus(root / "corpus.jsonl", ROWS)
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items())
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in QRELS.items())
    )
    return root


def _argv(dataset: Path, tmp_path: Path, pipeline: str) -> list[str]:
    variants = tmp_path / "variants.yaml"
    variants.write_text(VARIANTS)
    return [
        "--dataset", str(dataset), "--split", "test", "--pipeline", pipeline, "--variants", str(variants),
        "--index-root", str(tmp_path / "indexes"), "--results-dir", str(tmp_path / "results"),
        "--reranker", "bi-encoder", "--reranker-artifact", str(rescorer_artifact("v1")),
        "--extra-reranker", str(late_interaction_artifact("v1")), "--log-level", "WARNING",
    ]  # fmt: skip


def test_a_variant_of_two_rerankers_is_evaluated_with_both(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert eval_main(_argv(dataset, tmp_path, "both")) == 0
    (row,) = json.loads((tmp_path / "results" / "quality.json").read_text())
    assert (row["pipeline"], row["reranker"], row["rerank_depth"], row["fusion"]) == (
        "both",
        f"{RESCORER}+{COLBERT}",
        5,
        "rrf",
    )
    assert row["queries"] == 3 and 0.0 < row["ndcg@10"] <= 1.0
    # A model no artifact here serves would leave every query first-stage ordered: refused, not measured.
    assert eval_main(_argv(dataset, tmp_path, "unserved")) == 2
    error = capsys.readouterr().err
    assert "3 of 3 queries degraded" in error and "reranker/other-model" in error


def test_a_bad_extra_reranker_is_named(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _argv(dataset, tmp_path, "both")
    argv[argv.index("--extra-reranker") + 1] = str(tmp_path / "missing")
    with pytest.raises(SystemExit) as exited:
        eval_main(argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "--extra-reranker" in error and "no such artifact directory" in error
