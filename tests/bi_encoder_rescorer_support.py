"""Re-scoring bi-encoder artifacts for tests: the packaged all-MiniLM-L6-v2 with a `bi-encoder` manifest,
written once under var/test-artifacts/ and reused; v1 and v2 are the same weights under two versions."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from model_runtimes.bi_encoder import default_model_dir
from model_runtimes.bi_encoder_rescorer import KIND, MANIFEST_REQUIRED
from model_runtimes.stored_vectors import read_model_manifest
from search_common.artifacts import ArtifactError, atomic_directory, sha256_tree, write_manifest

ARTIFACT_ROOT = Path(__file__).resolve().parent.parent / "var" / "test-artifacts" / "bi-encoder-rescorer"
NAME = "minilm-rescorer"


def rescorer_artifact(version: str = "v1") -> Path:
    """The test artifact `version`, written on first use."""
    target = ARTIFACT_ROOT / version
    with contextlib.suppress(ArtifactError):
        read_model_manifest(target, KIND, MANIFEST_REQUIRED)
        return target
    with atomic_directory(target, overwrite=True) as scratch:
        for path in default_model_dir().iterdir():
            if path.is_file():
                shutil.copy2(path, scratch / path.name)
        write_manifest(
            scratch,
            {
                "name": NAME,
                "version": version,
                "kind": KIND,
                "weights_sha256": sha256_tree(scratch),
                "document_length": 128,
            },
        )
    return target
