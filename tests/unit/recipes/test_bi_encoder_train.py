"""A tiny `mnrl` run on a fake SciFact-shaped dataset: a versioned artifact BiEncoder.load accepts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from model_runtimes.bi_encoder import BiEncoder
from search_common.artifacts import read_manifest
from training.bi_encoder.train import HyperParameters, Recipe, main, train


def _fake_dataset(root: Path, n: int = 10) -> Path:
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as handle:
        for i in range(n):
            record = {
                "_id": f"d{i}",
                "title": f"Study {i}",
                "text": f"Vitamin {i} affects protein {i}.",
                "metadata": {},
            }
            handle.write(json.dumps(record) + "\n")
    with (root / "queries.jsonl").open("w") as handle:
        for i in range(n):
            handle.write(
                json.dumps({"_id": f"q{i}", "text": f"does vitamin {i} affect protein {i}?", "metadata": {}})
                + "\n"
            )
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(n)]
    (root / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_mnrl_tiny_run_loads_in_bi_encoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = _fake_dataset(tmp_path / "scifact")
    out = tmp_path / "models"
    # 10 queries -> 8 train (2 dev held out) -> 2 steps of batch 4.
    main([
        "--dataset", str(dataset), "--recipe", "mnrl", "--out", str(out), "--epochs", "1",
        "--batch-size", "4", "--temperature", "0.05", "--seed", "7", "--threads", "1",
        "--doc-max-length", "32", "--query-max-length", "16",
    ])  # fmt: skip
    artifact = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert artifact.parent == out.resolve() and artifact.name.startswith("v")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "manifest.json"):
        assert (artifact / name).is_file(), name
    manifest = read_manifest(
        artifact, ("name", "version", "recipe", "hyperparameters", "training_data_sha256")
    )
    assert manifest["name"] == "all-MiniLM-L6-v2-mnrl" and manifest["recipe"] == "mnrl"
    assert manifest["examples"] == 8 and manifest["dev_queries"] == 2
    assert manifest["hyperparameters"]["temperature"] == 0.05
    assert manifest["base_model"]["name"] == "all-MiniLM-L6-v2"
    assert manifest["weights_sha256"] != manifest["base_model"]["weights_sha256"]
    assert not list(out.glob(".tmp-*"))

    encoder = BiEncoder.load(artifact, max_length=32)
    assert encoder.identity.startswith("all-MiniLM-L6-v2-mnrl@")
    assert encoder.checksum == manifest["weights_sha256"]
    vectors = encoder.encode_queries(["does vitamin 3 affect protein 3?", "x"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def _teacher(query: str, texts: Sequence[str]) -> npt.NDArray[np.float32]:
    # The query's own document (same number) scores 10, every other document 0.
    number = query.split()[2]
    return np.array([10.0 if f"Study {number}." in t else 0.0 for t in texts], dtype=np.float32)


def _hp(recipe: Recipe) -> HyperParameters:
    return HyperParameters(
        recipe=recipe, epochs=1, batch_size=4, temperature=0.05, seed=7, lr=2e-5, warmup=0.1,
        weight_decay=0.01, query_max_length=16, doc_max_length=32, dev_fraction=0.2,
        negatives=2, skip_top=1, neg_depth=6, teacher_margin=1.0,
    )  # fmt: skip


@pytest.mark.parametrize("recipe", ["hardneg", "distill"])
def test_teacher_recipes_tiny_run(tmp_path: Path, recipe: Recipe) -> None:
    dataset = _fake_dataset(tmp_path / "scifact")
    n = 10
    # Ranked lists: the query's own document first, then the others in a fixed rotation.
    candidates = {f"q{i}": [f"d{(i + j) % n}" for j in range(n)] for i in range(n)}
    artifact = train(
        dataset, tmp_path / "models", _hp(recipe), threads=1, candidates=candidates, teacher=_teacher,
        teacher_name="fake-ce@v1",
    )  # fmt: skip
    manifest = read_manifest(artifact)
    assert manifest["name"] == f"all-MiniLM-L6-v2-{recipe}" and manifest["teacher"] == "fake-ce@v1"
    assert manifest["examples"] == 8 and manifest["hyperparameters"]["negatives"] == 2
    assert BiEncoder.load(artifact, max_length=32).identity.startswith(f"all-MiniLM-L6-v2-{recipe}@")


def test_teacher_recipes_need_teacher(tmp_path: Path) -> None:
    dataset = _fake_dataset(tmp_path / "scifact")
    with pytest.raises(ValueError, match="teacher"):
        train(dataset, tmp_path / "models", _hp("distill"))


def test_bad_temperature_exits_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--dataset", str(tmp_path), "--recipe", "mnrl", "--out", str(tmp_path), "--temperature", "0"])
    assert info.value.code == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sentence-queries", "-1"], "--sentence-queries must be >= 0"),
        (["--pseudo-queries", "-5"], "--pseudo-queries must be >= 0"),
        (["--recipe", "hardneg", "--sentence-queries", "10"], "use it with --recipe mnrl"),
    ],
)
def test_bad_query_counts_exit_2_with_a_message(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--dataset", str(tmp_path), "--recipe", "mnrl", "--out", str(tmp_path), *extra])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
