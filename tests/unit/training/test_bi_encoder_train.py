"""A tiny `mnrl` run on a fake SciFact-shaped dataset: a versioned artifact BiEncoder.load accepts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retriever_service.encoder import BiEncoder
from search_common.artifacts import read_manifest
from training.bi_encoder.train import main


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


@pytest.mark.parametrize("recipe", ["hardneg", "distill"])
def test_unimplemented_recipes_exit_2(
    tmp_path: Path, recipe: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--dataset", str(tmp_path), "--recipe", recipe, "--out", str(tmp_path / "m")])
    assert info.value.code == 2
    assert "not implemented yet" in capsys.readouterr().err


def test_bad_temperature_exits_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--dataset", str(tmp_path), "--recipe", "mnrl", "--out", str(tmp_path), "--temperature", "0"])
    assert info.value.code == 2
