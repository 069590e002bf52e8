"""Release choices: the epoch picked on dev, and promotion refusing a model that loses to its first stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from search_common.artifacts import read_manifest, sha256_file, write_manifest
from training.cross_encoder.release import best_epoch, promote, released_entry


def _entry(epoch: int, fused: float) -> dict[str, Any]:
    return {"epoch": epoch, "dev_best_fused": {"ndcg@10": fused, "depth": 20, "weight": 0.4}}


def test_best_epoch_prefers_dev_fused_then_earliest() -> None:
    assert best_epoch({"epochs": [_entry(1, 0.70), _entry(2, 0.75)]})["epoch"] == 2
    assert best_epoch({"epochs": [_entry(1, 0.75), _entry(2, 0.75)]})["epoch"] == 1


def _candidate(root: Path, beats: bool) -> Path:
    root.mkdir()
    (root / "model.onnx").write_bytes(b"onnx")
    write_manifest(
        root,
        {"version": root.name, "files": {"model.onnx": sha256_file(root / "model.onnx")},
         "eval": {"beats_first_stage_on_test": beats}},
    )  # fmt: skip
    return root


def test_promote_copies_under_a_new_version(tmp_path: Path) -> None:
    out = promote(_candidate(tmp_path / "cand", beats=True), root=tmp_path / "models")
    manifest = read_manifest(out)
    assert manifest["version"] == out.name != "cand"
    assert (out / "model.onnx").read_bytes() == b"onnx"


def test_promote_refuses_a_model_that_loses(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        promote(_candidate(tmp_path / "cand", beats=False), root=tmp_path / "models")
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_a_retrain_without_dev_takes_its_last_epoch_and_the_fitted_fusion() -> None:
    fused = {"depth": 20, "weight": 0.4, "ndcg@10": 0.7}
    fitted: dict[str, Any] = {"epochs": [{"epoch": 1, "dev": {}, "dev_best_fused": fused}]}
    retrain = {"epochs": [{"epoch": 1, "checkpoint": "a"}, {"epoch": 2, "checkpoint": "b"}]}
    entry = released_entry(retrain, fitted)
    assert entry["checkpoint"] == "b" and entry["dev_best_fused"]["weight"] == 0.4 and "dev" not in entry
    assert released_entry(fitted) == fitted["epochs"][0]
