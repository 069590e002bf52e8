"""The demo's default second stage on a first run: a real reranker process waits while the zero-label ColBERT
recipe trains in the PyLate environment (a child process, a tiny budget on a few stdlib modules), then
serves the model over the token store built for it. A second run finds both cached."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
import pytest
from search.v1 import common_pb2, reranker_pb2, reranker_pb2_grpc

from model_runtimes.bi_encoder import default_model_dir
from operations.demo_colbert import LateInteractionTraining, training_python
from operations.demo_reranker import describe_gate
from operations.processes import ServiceStack, wait_for_serving
from reranker_service.server import STATUS_FILE
from search_common.artifacts import read_manifest
from tests.tiny_stdlib import write_tiny_corpus
from training.late_interaction.fit import FitParameters
from training.late_interaction.zero_label import ZeroLabelRecipe, cached_model

SERVICE = "search.v1.RerankerService"
TINY = ZeroLabelRecipe(
    fit=FitParameters(base=str(default_model_dir()), batch_size=4, negatives=2, document_length=64),
    max_groups=8,
    held_out=4,
    eval_depth=5,
    skip_top=1,
    neg_depth=10,
)

pytestmark = pytest.mark.skipif(
    not training_python().is_file(), reason="no late-interaction training environment: ./scripts/setup.sh"
)


def _training(corpus: Path, work: Path) -> LateInteractionTraining:
    return LateInteractionTraining(
        corpus,
        work / "models",
        work / "serving",
        token_root=work / "tokens",
        log_path=work / "training.log",
        recipe=TINY,
        require_gain=False,
    )


@pytest.mark.slow
def test_the_reranker_waits_for_colbert_then_serves_it_over_its_token_store(tmp_path: Path) -> None:
    corpus = write_tiny_corpus(tmp_path)
    training = _training(corpus, tmp_path)
    training.serving_root.mkdir(parents=True)
    argv = [sys.executable, "-m", "reranker_service", "--backend", "late-interaction"]
    argv += ["--artifact-dir", str(training.serving_root), "--token-store", str(training.token_root)]
    text = "Split the string s using shell-like syntax."
    request = reranker_pb2.RerankRequest(
        query="split a string like a shell", documents=[common_pb2.Document(doc_id="shlex.split", text=text)]
    )
    with ServiceStack(tmp_path / "run") as stack:
        reranker = stack.spawn("reranker", [*argv, "--wait-for-model", "--intra-op-threads", "1"])
        reranker.wait_ready(60, serving=False)
        training.start()
        with grpc.insecure_channel(reranker.address) as channel:
            stub = reranker_pb2_grpc.RerankerServiceStub(channel)
            with pytest.raises(grpc.RpcError) as waiting:
                stub.Rerank(request, timeout=10)
            assert waiting.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "default ColBERT reranker" in waiting.value.details()
            assert training.wait(900), "training did not end"
            assert training.error is None, training.error
            assert training.artifact is not None
            wait_for_serving(reranker.address, 120, SERVICE)
            reply = stub.Rerank(request, timeout=30)
    manifest = read_manifest(training.artifact)
    assert reply.model.name == "colbert-minilm" and reply.model.version == manifest["version"]
    assert len(reply.scores) == 1
    assert manifest["recipe"] == "zero-label" and "held-out nDCG@10" in describe_gate(manifest)
    store = read_manifest(training.token_root / training.artifact.name)
    assert store["num_documents"] > 0
    # The next run trains nothing: the model and its tokens are found by the recipe's key.
    assert cached_model(corpus, training.models_root, TINY, require_gain=False) == training.artifact
    again = _training(corpus, tmp_path / "again")
    again.models_root = training.models_root
    again.token_root = training.token_root
    again.start()
    assert again.wait(120) and again.artifact == training.artifact
    assert not again.log_path.exists(), "a cached model must not start the training process"


def test_the_childs_steps_then_its_gate_phase_reach_the_status_once_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    training = _training(tmp_path / "corpus", tmp_path)
    training.serving_root.mkdir(parents=True)
    progress = tmp_path / "progress"
    for text in ("step 3/63", "step 3/63", "phase: checking the model on 300 held-out queries"):
        progress.write_text(text + "\n")
        training._report(progress)
    status = (training.serving_root / STATUS_FILE).read_text()
    assert status.strip() == f"training the {training.what}: checking the model on 300 held-out queries"
    printed = capsys.readouterr().out
    assert printed.count("step 3/63") == 1 and printed.count("held-out queries") == 1
