"""A tiny real corpus (a few stdlib modules' docstrings) and a budget that trains the default model on it in
seconds: for tests of the default model's mechanics, not of its quality."""

from __future__ import annotations

import shutil
from pathlib import Path

from corpora.stdlib import iter_stdlib_documents, stdlib_root, write_corpus
from training.cross_encoder.default_model.recipe import Budget, Recipe

TINY_MODULES = (
    "textwrap.py",
    "shlex.py",
    "fnmatch.py",
    "glob.py",
    "base64.py",
    "bisect.py",
    "heapq.py",
    "json",
)
TINY_BUDGET = Budget(max_groups=4, held_out=4, eval_depth=5)
TINY_RECIPE = Recipe(negatives=2, layers=1, batch_groups=2, skip_top=1, neg_depth=10)


def write_tiny_corpus(work: Path) -> Path:
    """The corpus folder (corpus.jsonl) of TINY_MODULES, written under `work`."""
    root = work / "stdlib"
    root.mkdir()
    for name in TINY_MODULES:
        source = stdlib_root() / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        else:
            shutil.copy(source, root / name)
    write_corpus(work / "corpus", list(iter_stdlib_documents(root)))
    return work / "corpus"
