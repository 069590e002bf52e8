"""Fixtures for the retriever's integration tests: a tiny seeded corpus, the real encoder, built indexes and
real gRPC servers on 127.0.0.1 port 0."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from model_runtimes.bi_encoder import BiEncoder
from retriever_service.build_index import build_index
from retriever_service.config import Settings

TOPICS = {
    "vitamin": ["vitamin c", "scurvy", "citrus fruit", "deficiency", "collagen", "diet"],
    "heart": ["cardiac arrest", "blood pressure", "statins", "cholesterol", "artery", "heart failure"],
    "brain": ["neurons", "cortex", "memory", "alzheimer disease", "synapse", "white matter"],
    "virus": ["influenza", "vaccine", "antibodies", "infection", "immune response", "viral load"],
    "cancer": ["tumour", "chemotherapy", "metastasis", "oncogene", "radiation", "breast cancer"],
    "sleep": ["insomnia", "circadian rhythm", "melatonin", "rem sleep", "fatigue", "night shift"],
}
FILLER = ["study", "patients", "results", "significant", "cohort", "analysis", "trial", "effect", "levels"]
NUM_DOCS = 36


def make_corpus(path: Path, num_docs: int = NUM_DOCS, seed: int = 7) -> list[dict[str, object]]:
    """A seeded corpus of short abstracts, six topics; written as BEIR corpus.jsonl."""
    rng = random.Random(seed)
    topics = sorted(TOPICS)
    records: list[dict[str, object]] = []
    for i in range(num_docs):
        topic = topics[i % len(topics)]
        words = rng.sample(TOPICS[topic], 3) + rng.sample(FILLER, 3)
        rng.shuffle(words)
        records.append(
            {
                "_id": f"d{i:03d}",
                "title": f"{topic} report {i}",
                "text": " ".join(words) + ".",
                "metadata": {},
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


@pytest.fixture(scope="session")
def encoder() -> BiEncoder:
    return BiEncoder.load(max_length=64)


@pytest.fixture(scope="session")
def corpus_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny" / "corpus.jsonl"
    make_corpus(path)
    return path


@pytest.fixture(scope="session")
def dense_index(corpus_path: Path, encoder: BiEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("indexes") / "dense-flat"
    return build_index(corpus_path, out, kind="dense", encoder=encoder, batch_size=8)


@pytest.fixture(scope="session")
def dense_sharded_index(
    corpus_path: Path, encoder: BiEncoder, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("indexes") / "dense-3"
    return build_index(corpus_path, out, kind="dense", num_shards=3, encoder=encoder, batch_size=8)


@pytest.fixture(scope="session")
def bm25_index(corpus_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_index(corpus_path, tmp_path_factory.mktemp("indexes") / "bm25", kind="bm25")


def _settings(index: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "index": index,
        "host": "127.0.0.1",
        "port": 0,
        "max_top_k": 20,
        "max_query_chars": 200,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def server_settings() -> Callable[..., Settings]:
    """Server settings for a shard directory on 127.0.0.1 port 0, max_top_k 20, max_query_chars 200."""
    return _settings


@pytest.fixture
async def dense_server(dense_index: Path, encoder: BiEncoder) -> AsyncIterator[int]:
    """A real dense shard server, loaded and marked SERVING; yields its port."""
    from retriever_service.bootstrap import load_shard_retriever
    from retriever_service.server import build_server

    settings = _settings(dense_index / "shard-0")
    retriever = load_shard_retriever(
        settings.index,
        encoder=encoder,
        max_top_k=settings.max_top_k,
        max_query_chars=settings.max_query_chars,
    )
    built = build_server(settings)
    await built.server.start()
    await built.mark_ready([retriever])
    yield built.port
    await built.server.stop(None)
