"""The zero-label ColBERT recipe's bookkeeping: its key, its cache and refusals, and its command line. (The
training itself runs in tests/integration/operations/test_demo_colbert_training.py.)"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from model_runtimes.bi_encoder import default_model_dir
from training.late_interaction.fit import FitParameters
from training.late_interaction.train import GateRefused
from training.late_interaction.zero_label import (
    ZeroLabelRecipe,
    cached_model,
    ensure_model,
    main,
    recipe_arguments,
    recipe_key,
)

RECIPE = ZeroLabelRecipe(fit=FitParameters(base=str(default_model_dir())), max_groups=8, held_out=4)


def _corpus(tmp_path: Path, text: str = "Return the sum of two numbers. Both must be integers here.") -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"_id": "a", "title": "", "text": text}) + "\n")
    return path


def test_the_key_follows_the_corpus_and_recipe_not_where_the_base_model_lives(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    key = recipe_key(corpus, RECIPE)
    assert recipe_key(corpus, RECIPE) == key
    assert recipe_key(corpus, replace(RECIPE, max_groups=9)) != key
    (tmp_path / "edited").mkdir()
    assert recipe_key(_corpus(tmp_path / "edited", "Another text."), RECIPE) != key


def test_a_recipe_survives_its_command_line() -> None:
    (flag, text) = recipe_arguments(RECIPE)
    assert flag == "--recipe" and ZeroLabelRecipe.from_json(text) == RECIPE
    assert recipe_arguments(RECIPE, require_gain=False)[-1] == "--allow-no-gain"


def test_a_refused_recipe_is_not_trained_again_nor_served(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    models = tmp_path / "models"
    key = recipe_key(corpus, RECIPE)
    (models / f".rejected-v20260101T000000Z-{key[:12]}").mkdir(parents=True)
    with pytest.raises(GateRefused, match="did not beat its first stage"):
        ensure_model(corpus, models, RECIPE)
    assert cached_model(corpus, models, RECIPE) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--corpus", "missing-folder"], "no corpus.jsonl there"),
        (["--max-groups", "0"], "--max-groups must be positive"),
        (["--recipe", '{"max_groups": 3}'], "--recipe: not a zero-label recipe"),
        (["--recipe", "not json"], "--recipe: not a zero-label recipe"),
    ],
)
def test_bad_flags_exit_2_with_a_message(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = ["--corpus", str(_corpus(tmp_path))] if argv[0] != "--corpus" else []
    with pytest.raises(SystemExit) as exited:
        main([*corpus, *argv, "--out", str(tmp_path / "models")])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
