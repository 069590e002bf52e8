"""The late-interaction reranker end to end: token stores built by search-build-index, the runtime over them,
and the reranker's gRPC server on loopback serving a ColBERT artifact (tests.late_interaction_support)."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from search.v1 import common_pb2, reranker_pb2, reranker_pb2_grpc

from model_runtimes.late_interaction import LateInteractionModel, LateInteractionRuntime
from model_runtimes.stopping import ScoringStopped
from model_runtimes.token_store import TokenStores
from reranker_service.bootstrap import build_core
from reranker_service.config import Settings
from reranker_service.metrics import RerankerMetrics
from reranker_service.server import ModelReloader, build_server
from retriever_service.build_index import main as build_main
from search_common.artifacts import ArtifactError
from search_common.documents import Document
from tests.late_interaction_support import late_interaction_artifact
from tests.stored_vector_support import (
    assert_reranks_over_store,
    build_store,
    served_settings,
    serving,
    write_corpus,
)

TEXTS = [
    ("d0", "Aspirin", "Aspirin reduces the risk of heart attack in adults with heart disease."),
    ("d1", "", "Vitamin C deficiency causes scurvy; citrus fruit prevents it."),
    ("d2", "Sleep", "Night shift work disturbs the circadian rhythm and melatonin levels."),
    ("d3", "", "A long document " + "about many things, " * 60),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", TEXTS)


@pytest.fixture(scope="module")
def token_index(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shards of token vectors from the v1 model, built by the CLI."""
    out = tmp_path_factory.mktemp("indexes") / "colbert" / "v1"
    return build_store(corpus, out, "late-interaction", late_interaction_artifact("v1"))


def _model_texts() -> list[str]:
    return [Document(*row).model_text() for row in TEXTS]


def test_stored_vectors_score_as_encoding_at_request_time(token_index: Path) -> None:
    model = LateInteractionModel.load(late_interaction_artifact("v1"))
    stores = TokenStores.load(token_index)
    assert len(stores) == len(TEXTS) and [s.manifest["shard_id"] for s in stores.stores] == [0, 1]
    stored_lookups: list[tuple[int, int]] = []
    encoded_lookups: list[tuple[int, int]] = []
    stored = LateInteractionRuntime(
        model, token_stores=stores, on_lookups=lambda h, m: stored_lookups.append((h, m))
    )
    encoded = LateInteractionRuntime(model, on_lookups=lambda h, m: encoded_lookups.append((h, m)))
    texts = [*_model_texts(), "a text the index never saw"]
    with_store = stored.score("does aspirin prevent heart attacks?", texts)
    without = encoded.score("does aspirin prevent heart attacks?", texts)
    # float16 storage moves MaxSim by about 1e-3 per query token.
    np.testing.assert_allclose(with_store, without, atol=0.05)
    assert stored_lookups == [(len(TEXTS), 1)]
    assert encoded_lookups == [(0, len(texts))]


def test_a_store_from_another_model_version_is_refused(token_index: Path) -> None:
    model = LateInteractionModel.load(late_interaction_artifact("v2"))
    with pytest.raises(ArtifactError, match="rebuild it with this model"):
        LateInteractionRuntime(model, token_stores=TokenStores.load(token_index))


def test_scoring_stops_when_the_caller_gives_up() -> None:
    runtime = LateInteractionRuntime(LateInteractionModel.load(late_interaction_artifact("v1")))
    stop = threading.Event()
    stop.set()
    with pytest.raises(ScoringStopped):
        runtime.score("aspirin", _model_texts(), should_stop=stop.is_set)


def test_build_needs_the_model_and_refuses_a_cross_encoder_folder(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--corpus", str(corpus), "--out", str(tmp_path / "out"), "--kind", "late-interaction"]
    with pytest.raises(SystemExit) as exited:
        build_main(argv)
    assert exited.value.code == 2
    assert "needs --encoder" in capsys.readouterr().err
    (tmp_path / "not-colbert").mkdir()
    (tmp_path / "not-colbert" / "manifest.json").write_text(json.dumps({"name": "x", "version": "v1"}))
    assert build_main([*argv, "--encoder", str(tmp_path / "not-colbert")]) == 2
    assert "manifest lacks" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.fixture
async def late_interaction_server(token_index: Path) -> AsyncIterator[reranker_pb2_grpc.RerankerServiceStub]:
    settings = served_settings("late-interaction", late_interaction_artifact("v1"), token_index)
    async with serving(settings) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        yield reranker_pb2_grpc.RerankerServiceStub(channel)


async def test_the_reranker_serves_late_interaction_over_the_store(
    late_interaction_server: reranker_pb2_grpc.RerankerServiceStub,
) -> None:
    runtime = LateInteractionRuntime(LateInteractionModel.load(late_interaction_artifact("v1")))
    expected = runtime.score("aspirin and heart attack", _model_texts())
    await assert_reranks_over_store(
        late_interaction_server,
        "aspirin and heart attack",
        TEXTS,
        model=("colbert-untrained", "v1"),
        expected=expected,
        atol=0.05,
    )


async def test_bad_requests_get_invalid_argument(
    late_interaction_server: reranker_pb2_grpc.RerankerServiceStub,
) -> None:
    documents = [common_pb2.Document(doc_id="d0", text="aspirin")]
    for request in (
        reranker_pb2.RerankRequest(query=" ", documents=documents),
        reranker_pb2.RerankRequest(query="aspirin", documents=[]),
        reranker_pb2.RerankRequest(query="aspirin", documents=documents, max_sequence_length=4),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await late_interaction_server.Rerank(request, timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_hot_swap_waits_for_a_token_store_of_the_new_model(corpus: Path, tmp_path: Path) -> None:
    """SIGHUP's reload: a new model version waits for a store encoded by it, then is swapped in."""
    models, stores = tmp_path / "models", tmp_path / "stores"
    models.mkdir()
    shutil.copytree(late_interaction_artifact("v1"), models / "v1")
    argv = ["--corpus", str(corpus), "--kind", "late-interaction", "--batch-size", "4"]
    assert build_main([*argv, "--out", str(stores / "s1"), "--encoder", str(models / "v1")]) == 0
    settings = Settings(
        backend="late-interaction", artifact_dir=models, token_store=stores, cache="none", intra_op_threads=1
    )
    core = build_core(settings)
    built = build_server(settings)
    await built.server.start()
    await built.mark_ready(core)
    reloader = ModelReloader(settings, built, core)
    try:
        shutil.copytree(late_interaction_artifact("v2"), models / "v2")
        await reloader.reload()  # the newest store was encoded by v1: refused, v1 keeps serving
        assert core.scorer.model_version == "v1"
        assert build_main([*argv, "--out", str(stores / "s2"), "--encoder", str(models / "v2")]) == 0
        await reloader.reload()
        assert core.scorer.model_version == "v2"
        result = await core.rerank("aspirin", [Document("d0", "", "aspirin and heart attack")])
        assert result.model_version == "v2"
    finally:
        await built.server.stop(0)
        await core.close()


async def test_token_store_lookups_are_counted_in_prometheus(token_index: Path) -> None:
    registry = CollectorRegistry()
    metrics = RerankerMetrics(registry)
    settings = Settings(
        backend="late-interaction",
        artifact_dir=late_interaction_artifact("v1"),
        token_store=token_index,
        cache="none",
        intra_op_threads=1,
    )
    core = build_core(settings, metrics=metrics)
    try:
        stored = Document(*TEXTS[0])
        await core.rerank("aspirin", [stored, Document("new", "", "a document the index never saw")])
    finally:
        await core.close()
    counted = {
        result: registry.get_sample_value("search_reranker_token_store_lookups_total", {"result": result})
        for result in ("hit", "miss")
    }
    # The unknown document, and the scorer's warm-up pair at start: both encoded at request time.
    assert counted == {"hit": 1.0, "miss": 2.0}
