"""Query generation: prompts from train judgements only, bounded resumable cached writing, the filters."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_common.documents import Document
from training.query_generation.filters import acceptable
from training.query_generation.generate import (
    accepted_queries,
    consistent_queries,
    generate,
    generated_query_ids,
    read_cache,
    sample_documents,
)
from training.query_generation.prompt import FewShotPrompt, choose_examples

DOCS = {
    f"d{i}": Document(f"d{i}", f"Title {i}", f"body text number {i} about topic {i % 3}") for i in range(8)
}


class ScriptedWriter:
    """Answers from a table keyed by the document's id in the prompt; counts calls (pure-logic fake)."""

    identity = "scripted:v1"

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.calls = 0

    def write(self, prompt: str) -> str:
        self.calls += 1
        target = prompt.rsplit("Document: ", 1)[1]
        number = target.split("Title ", 1)[1].split(".", 1)[0]
        return self.answers.get(f"d{number}", "")


def _prompt() -> FewShotPrompt:
    qrels = {"q1": {"d0": 1}, "q2": {"d1": 1}, "q3": {"d2": 0}, "q4": {"d3": 1}}
    queries = {
        "q1": "what is body number zero about",
        "q2": "which topic has body number one",
        "q3": "unjudged",
        "q4": "vaccines cause autism claims",  # judged, but not about its document: a bad example
    }
    examples = choose_examples(queries, qrels, DOCS, ["q1", "q2", "q3", "q4"], count=2, seed=13)
    return FewShotPrompt.from_examples(examples)


def test_examples_come_from_judged_positives_of_the_given_queries_and_open_a_query_line() -> None:
    prompt = _prompt()
    assert "Query: what is body number zero about" in prompt.prefix
    assert "Query: which topic has body number one" in prompt.prefix
    assert "unjudged" not in prompt.prefix and "vaccines" not in prompt.prefix
    text = prompt.for_document(DOCS["d5"])
    assert text.startswith(prompt.prefix) and text.endswith(
        "Title 5. body text number 5 about topic 2\nQuery:"
    )
    with pytest.raises(ValueError, match="3 few-shot examples asked for, 2"):
        choose_examples(
            {"q1": "what body number zero", "q2": "what body number one"},
            {"q1": {"d0": 1}, "q2": {"d1": 1}},
            DOCS,
            ["q1", "q2"],
            count=3,
            seed=1,
        )


def test_writing_is_cached_resumable_and_bounded(tmp_path: Path) -> None:
    cache = tmp_path / "generated.jsonl"
    answers = {
        "d3": "topic of the body text number three",
        "d4": "no",
        "d5": "what body text has number five topic",
    }
    writer = ScriptedWriter(answers)
    docs = [DOCS[d] for d in ("d3", "d4", "d5")]

    first = generate(docs[:2], _prompt(), writer, cache, progress=False)
    assert first == {"d3": answers["d3"]}  # "no" is too short: dropped, but cached as asked
    again = generate(docs, _prompt(), writer, cache, progress=False)
    assert again == {"d3": answers["d3"], "d5": answers["d5"]}
    assert writer.calls == 3  # d3 and d4 came from the cache
    # The cache keeps raw answers, the refused one too: a later filter may judge it again.
    assert {a.doc_id: a.text for a in read_cache(cache).values()} == {**answers}
    assert accepted_queries(cache, DOCS) == {"d3": answers["d3"], "d5": answers["d5"]}

    with cache.open("a") as handle:
        handle.write('{"key": "torn')  # a run killed mid-line
    assert len(read_cache(cache)) == 3
    stopped = generate(
        [DOCS["d6"]],
        _prompt(),
        ScriptedWriter({}),
        tmp_path / "other.jsonl",
        time_budget=1e-9,
        progress=False,
    )
    assert stopped == {}


def test_a_query_found_word_for_word_in_its_document_or_of_odd_length_is_refused() -> None:
    document = DOCS["d1"]
    assert not acceptable("body text number 1", document)
    assert not acceptable("a b", document)
    assert not acceptable(" ".join(["word"] * 33), document)
    assert acceptable("what does number one say about topic", document)
    # Mostly words from elsewhere (a copied few-shot example): not about this document.
    assert not acceptable("p75 neurotrophin receptor death domain executor binding", document)


def test_round_trip_keeps_queries_whose_document_the_first_stage_ranks_near_the_top() -> None:
    generated = {"d1": "query one", "d2": "query two", "d3": "query three"}
    keyed = generated_query_ids(generated)
    assert list(keyed) == ["gq:d1", "gq:d2", "gq:d3"]
    ranked = {"gq:d1": ["d1", "d9"], "gq:d2": ["d9", "d8", "d2"], "gq:d3": []}
    assert consistent_queries(generated, ranked, depth=2) == {"d1": "query one"}
    assert consistent_queries(generated, ranked, depth=3) == {"d1": "query one", "d2": "query two"}


def test_documents_are_a_seeded_sample_that_never_includes_excluded_ones() -> None:
    chosen = sample_documents(DOCS.values(), 4, exclude=frozenset({"d0", "d1"}), seed=7)
    assert len(chosen) == 4 and not {"d0", "d1"} & {d.doc_id for d in chosen}
    assert chosen == sample_documents(DOCS.values(), 4, exclude=frozenset({"d0", "d1"}), seed=7)
    assert len(sample_documents(DOCS.values(), 50, exclude=frozenset(), seed=7)) == len(DOCS)
