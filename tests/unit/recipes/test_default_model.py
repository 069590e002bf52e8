"""The embedded default's cross-encoder: pseudo-queries (deterministic, no verbatim leakage), the held-out
split, the cache key, and first-use training then reuse on a tiny real corpus (a few stdlib modules)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from corpora.stdlib import write_corpus
from search_common.artifacts import read_manifest
from search_common.documents import Document
from tests.tiny_stdlib import TINY_BUDGET, TINY_RECIPE, write_tiny_corpus
from training.cross_encoder.default_model.build import ensure_default_model
from training.cross_encoder.default_model.cache import cache_key, find_cached
from training.cross_encoder.default_model.gate import evaluate_artifact
from training.cross_encoder.default_model.pseudo_queries import (
    PseudoQuery,
    appears_in,
    build_pseudo_queries,
    clean_query,
    fitting_queries,
    name_query,
    split_first_sentence,
    split_queries,
)
from training.cross_encoder.default_model.recipe import (
    DEFAULT_BUDGET,
    DEFAULT_RECIPE,
    Budget,
    DefaultModelError,
    Recipe,
)


def _docs() -> list[Document]:
    return [
        Document(
            "json.dumps",
            "json.dumps(obj, *, skipkeys=False)",
            "Serialize ``obj`` to a JSON formatted ``str``.\n\nIf ``skipkeys`` is true then ``dict`` keys "
            "that are not basic types are skipped instead of raising a ``TypeError``.",
        ),
        Document(
            "a.A.__str__",
            "a.A.__str__()",
            "Return str(self) for this object.\n\nUsed by print and format calls.",
        ),
        Document(
            "b.B.__str__",
            "b.B.__str__()",
            "Return str(self) for this object.\n\nUsed by print and format calls.",
        ),
        Document(
            "c.f", "c.f(x)", "f(x) -> int\n\nComputes the answer to a question that nobody asked at all."
        ),
        Document("d.short", "d.short()", "Too short a text to be queried about."),
        Document(
            "e.TarFile.extractall",
            "e.TarFile.extractall(path)",
            "Extract all members from the archive to the current working directory. The members are written "
            "with their original permissions and times when possible, one by one.",
        ),
    ]


def test_first_sentence_is_split_from_the_rest() -> None:
    first, rest = split_first_sentence("Do a thing. Then more.\n\nSecond paragraph.") or ("", "")
    assert first == "Do a thing."
    assert rest == "Then more. Second paragraph."
    assert split_first_sentence("   ") is None


def test_clean_query_drops_markup_signatures_and_bad_lengths() -> None:
    assert (
        clean_query("Serialize ``obj`` to a JSON formatted ``str``.")
        == "Serialize obj to a JSON formatted str"
    )
    assert clean_query("dumps(obj, *, skipkeys=False) -> str") is None
    assert clean_query("Too short.") is None
    assert clean_query(" ".join(["word"] * 40) + ".") is None
    assert (
        clean_query(">>> import io >>> read_bytes4(io.BytesIO(b'abc')) b'' Traceback (most recent call last)")
        is None
    )


def test_queries_too_long_for_the_token_budget_are_dropped() -> None:
    queries = [
        PseudoQuery("s:a", "Return the number of items in the queue", "a", "sentence"),
        PseudoQuery("s:b", " ".join(["supercalifragilistic"] * 10), "b", "sentence"),
    ]
    assert fitting_queries(queries, 16) == queries[:1]


def test_name_query_puts_the_leaf_first_and_splits_camel_case() -> None:
    assert name_query("json.JSONEncoder.encode") == "encode json encoder"
    assert name_query("os.path.join") == "join path os"
    assert name_query("abc") is None


def test_pseudo_queries_are_deterministic_and_never_leak_the_sentence() -> None:
    docs = _docs()
    first = build_pseudo_queries(docs)
    second = build_pseudo_queries(list(reversed(docs)))
    assert first.queries == second.queries
    assert first.documents == second.documents
    sentence = {q.doc_id: q for q in first.queries if q.kind == "sentence"}
    # The shared "__str__" sentence is ambiguous, the signature line and the one-sentence text unusable.
    assert set(sentence) == {"json.dumps", "e.TarFile.extractall"}
    for doc_id, query in sentence.items():
        shown = first.documents[doc_id].model_text()
        assert query.text.lower() not in shown.lower()
        assert first.documents[doc_id].title == next(d.title for d in docs if d.doc_id == doc_id)
    assert sentence["json.dumps"].text == "Serialize obj to a JSON formatted str"
    # Documents without a sentence query keep their full text.
    assert first.documents["d.short"].text == "Too short a text to be queried about."
    names = {q.doc_id: q.text for q in first.queries if q.kind == "name"}
    assert names["e.TarFile.extractall"] == "extractall tar file e"


def test_a_sentence_that_the_title_repeats_is_no_query() -> None:
    """A collection whose first sentence is its title: the masked positive keeps the title, so the sentence
    would reach the gate verbatim. It is dropped; a title that only shares some words is not a leak."""
    abstract = "We measured the effect in forty patients over two years with careful controls."
    title = "Vitamin D lowers the risk of fractures in older adults"
    leaky = Document("doc-1", title, f"{title}. {abstract}")
    fine = Document("doc-2", "Vitamin D and fractures", f"{title}. {abstract}")
    repeated = Document(
        "doc-3",
        "",
        f"Aspirin thins the blood in most adults. {abstract} Aspirin thins the blood in most adults.",
    )
    pseudo = build_pseudo_queries([leaky, fine, repeated])
    assert {q.doc_id for q in pseudo.queries if q.kind == "sentence"} == {"doc-2"}
    assert pseudo.documents["doc-1"] == leaky  # no query: shown whole, as documents without one are
    assert appears_in("vitamin D lowers the RISK of fractures", leaky)
    assert not appears_in("vitamin D lowers the risk", Document("x", "", "vitamin D lowers the riskiest"))


def test_the_gate_refuses_held_out_queries_that_appear_in_their_positive(tmp_path: Path) -> None:
    leaky = Document("doc-1", "aspirin thins the blood", "A study of forty patients over two years.")
    query = PseudoQuery("s:doc-1", "Aspirin thins the blood", "doc-1", "sentence")
    with pytest.raises(DefaultModelError, match="appear verbatim in their positive"):
        evaluate_artifact(
            tmp_path, [query], {"s:doc-1": ["doc-1"]}, {"doc-1": leaky}, depth=10, progress=False
        )


def test_ids_that_are_not_dotted_names_make_no_name_queries() -> None:
    assert name_query("json.JSONEncoder.encode") == "encode json encoder"
    assert name_query("MED-10") is None and name_query("10.1016/j.cell") is None


def test_text_without_sentences_yields_no_queries_and_no_crash(caplog: pytest.LogCaptureFixture) -> None:
    flat = [
        Document(f"d{i}", "", "a title  an abstract without any sentence punctuation " * 3) for i in range(3)
    ]
    pseudo = build_pseudo_queries([*flat, Document("empty", "", "")])
    assert [q for q in pseudo.queries if q.kind == "sentence"] == []
    assert fitting_queries([], 64) == []
    assert "1 of 4 documents are empty" in caplog.text


def test_held_out_documents_are_never_trained_on() -> None:
    docs = [
        Document(
            f"m.f{i}",
            f"m.f{i}()",
            f"Compute value number {i} of the series here. " + "More words follow. " * 4,
        )
        for i in range(40)
    ]
    pseudo = build_pseudo_queries(docs)
    budget = Budget(max_groups=20, held_out=8, eval_depth=5)
    train, held, held_docs = split_queries(pseudo, budget, DEFAULT_RECIPE)
    assert len(held) == 8 and {q.doc_id for q in held} == held_docs
    assert len(train) == 20
    assert not {q.doc_id for q in train} & held_docs
    assert split_queries(pseudo, budget, DEFAULT_RECIPE) == (train, held, held_docs)
    other = split_queries(pseudo, budget, replace(DEFAULT_RECIPE, seed=DEFAULT_RECIPE.seed + 1))
    assert other[2] != held_docs


def test_cache_key_changes_with_corpus_recipe_budget_and_base_model() -> None:
    key = cache_key("c" * 64, DEFAULT_BUDGET, DEFAULT_RECIPE, "b" * 64)
    assert key == cache_key("c" * 64, Budget(), Recipe(), "b" * 64)
    others = {
        cache_key("d" * 64, DEFAULT_BUDGET, DEFAULT_RECIPE, "b" * 64),
        cache_key("c" * 64, replace(DEFAULT_BUDGET, max_groups=10), DEFAULT_RECIPE, "b" * 64),
        cache_key("c" * 64, DEFAULT_BUDGET, replace(DEFAULT_RECIPE, lr=1e-5), "b" * 64),
        cache_key("c" * 64, DEFAULT_BUDGET, DEFAULT_RECIPE, "e" * 64),
    }
    assert key not in others and len(others) == 4


@pytest.fixture()
def tiny_corpus(tmp_path: Path) -> Path:
    return write_tiny_corpus(tmp_path)


@pytest.mark.slow
def test_first_use_trains_then_reuses_and_a_changed_corpus_retrains(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    out_root = tmp_path / "models"
    kwargs = {"budget": TINY_BUDGET, "recipe": TINY_RECIPE, "require_gain": False, "progress": False}
    first = ensure_default_model(tiny_corpus, out_root, **kwargs)  # type: ignore[arg-type]
    manifest = read_manifest(first)
    assert manifest["version"] == first.name
    assert manifest["quantization"] == "int8-per-channel"
    assert manifest["training"]["groups"] == 4
    assert manifest["hyperparameters"]["recipe"]["layers"] == 1
    evaluation = manifest["eval"]
    assert evaluation["queries"] == 4
    assert 0.0 <= evaluation["first_stage_ndcg@10"] <= 1.0
    assert 0.0 <= evaluation["reranked_ndcg@10"] <= 1.0
    assert find_cached(out_root, manifest["cache_key"]) == first

    again = ensure_default_model(tiny_corpus, out_root, **kwargs)  # type: ignore[arg-type]
    assert again == first
    assert read_manifest(again) == manifest
    assert sorted(p.name for p in out_root.iterdir() if not p.name.startswith(".")) == [first.name]

    corpus_file = tiny_corpus / "corpus.jsonl"
    lines = corpus_file.read_text().splitlines()
    corpus_file.write_text("\n".join(lines[:-1]) + "\n")
    changed = ensure_default_model(tiny_corpus, out_root, **kwargs)  # type: ignore[arg-type]
    assert changed != first
    assert read_manifest(changed)["cache_key"] != manifest["cache_key"]
    assert not [p for p in out_root.iterdir() if p.name.startswith((".staging-", ".work-"))]


def test_a_model_without_held_out_gain_is_refused_by_the_cached_manifest(tmp_path: Path) -> None:
    from search_common.artifacts import write_manifest
    from training.cross_encoder.default_model.cache import base_model_sha256, corpus_sha256
    from training.cross_encoder.default_model.recipe import DefaultModelError

    corpus = tmp_path / "corpus"
    write_corpus(corpus, _docs())
    key = cache_key(corpus_sha256(corpus), TINY_BUDGET, TINY_RECIPE, base_model_sha256())
    artifact = tmp_path / "models" / f"v20260101T000000Z-{key[:12]}"
    artifact.mkdir(parents=True)
    write_manifest(artifact, {"cache_key": key, "eval": {"beats_first_stage": False}})
    with pytest.raises(DefaultModelError, match="does not beat"):
        ensure_default_model(corpus, tmp_path / "models", budget=TINY_BUDGET, recipe=TINY_RECIPE)
    found = ensure_default_model(
        corpus, tmp_path / "models", budget=TINY_BUDGET, recipe=TINY_RECIPE, require_gain=False
    )
    assert found == artifact
    assert json.loads((artifact / "manifest.json").read_text())["cache_key"] == key
