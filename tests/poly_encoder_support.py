"""Untrained poly-encoder artifacts for tests (`training.poly_encoder.untrained`), written once under
var/test-artifacts/ and reused; v1 and v2 differ in the seed of their codes."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from model_runtimes.poly_encoder import read_poly_encoder_manifest
from search_common.artifacts import ArtifactError

ARTIFACT_ROOT = Path(__file__).resolve().parent.parent / "var" / "test-artifacts" / "poly-encoder"
SEEDS = {"v1": 13, "v2": 7}


def poly_encoder_artifact(version: str = "v1") -> Path:
    """The test poly-encoder `version` (a key of SEEDS), written on first use."""
    from training.poly_encoder.untrained import write_untrained

    target = ARTIFACT_ROOT / version
    with contextlib.suppress(ArtifactError):
        read_poly_encoder_manifest(target)
        return target
    shutil.rmtree(target, ignore_errors=True)
    return write_untrained(ARTIFACT_ROOT, version=version, seed=SEEDS[version])
