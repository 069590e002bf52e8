"""What tests of the late-interaction reranker share: untrained ColBERT artifacts in PyLate's layout.

Written by `training.late_interaction.untrained` (the packaged MiniLM body cut to one layer, a seeded
projection) once under var/test-artifacts/ and reused by later runs; v1 and v2 differ in the seed, so a
version change also changes the vectors.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from model_runtimes.late_interaction import read_late_interaction_manifest
from search_common.artifacts import ArtifactError

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACT_ROOT = REPO_ROOT / "var" / "test-artifacts" / "late-interaction"
SEEDS = {"v1": 13, "v2": 7}


def late_interaction_artifact(version: str = "v1") -> Path:
    """The test late-interaction model `version` (a key of SEEDS), written on first use."""
    from training.late_interaction.untrained import write_untrained

    target = ARTIFACT_ROOT / version
    with contextlib.suppress(ArtifactError):
        read_late_interaction_manifest(target)
        return target
    shutil.rmtree(target, ignore_errors=True)
    return write_untrained(ARTIFACT_ROOT, version=version, seed=SEEDS[version])
