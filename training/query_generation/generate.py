"""Write a query for each of a seeded sample of corpus documents with a few-shot prompted base model.

Bounded (`--docs`, `--time-budget`), cached by content and resumable: each answer is appended to a JSONL
cache as soon as it is written, keyed by the writer, the prompt's examples and the document's text, so a run
that is stopped (or a larger `--docs` later) redoes nothing. A tqdm bar shows progress.

Few-shot examples come from the train side of the dataset's train judgements only (never the seeded dev
split), and documents judged for dev queries are never generated for, so dev stays a fair judge of what the
queries teach. The cache keeps the model's raw answers; the filters run when it is read, so they can change
without writing anything again. A query is dropped when it is too short or too long, when it appears word
for word in its document (string matching, not relevance), or when most of its content words are not in its
document (a small base model often copies a few-shot example instead). Then the round-trip filter
(`consistent_queries`) keeps a query only when the first stage ranks its own document within the top
`--round-trip-depth` (`training.cross_encoder.train` applies it).

Example:
    python -m training.query_generation.generate --dataset ../shared/data/scifact --docs 1000 \\
        --out var/cache/generated-queries/scifact.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from corpora.beir import BeirDataset
from search_common.documents import Document
from search_common.logging_setup import configure_logging
from training.common.splits import split_train_dev
from training.query_generation.filters import acceptable
from training.query_generation.prompt import FewShotPrompt, choose_examples
from training.query_generation.writer import (
    GeneratorUnavailable,
    LlamaQueryWriter,
    QueryWriter,
    gemma_model_path,
)

logger = logging.getLogger(__name__)

GENERATED_PREFIX = "gq:"


@dataclass(frozen=True, slots=True)
class GeneratedQuery:
    """One cached answer: what the model wrote for a document, before any filter."""

    doc_id: str
    text: str


def cache_key(writer: QueryWriter, prompt: FewShotPrompt, document: Document) -> str:
    digest = hashlib.sha256()
    for part in (writer.identity, prompt.key, document.doc_id, document.model_text()):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def read_cache(path: Path) -> dict[str, GeneratedQuery]:
    """Cached answers by key; a torn last line (a run killed mid-write) is skipped."""
    answers: dict[str, GeneratedQuery] = {}
    if not path.is_file():
        return answers
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            answers[row["key"]] = GeneratedQuery(row["doc_id"], row.get("text") or row.get("query") or "")
    return answers


def accepted_queries(cache: Path, documents: Mapping[str, Document]) -> dict[str, str]:
    """doc_id -> query for every cached answer that passes the filters (documents not given are skipped)."""
    return {
        a.doc_id: a.text
        for a in read_cache(cache).values()
        if a.doc_id in documents and acceptable(a.text, documents[a.doc_id])
    }


def generate(
    documents: Sequence[Document],
    prompt: FewShotPrompt,
    writer: QueryWriter,
    cache: Path,
    *,
    time_budget: float | None = None,
    progress: bool = True,
) -> dict[str, str]:
    """doc_id -> accepted query for each document, from the cache or written now (and cached)."""
    cached = read_cache(cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    accepted: dict[str, str] = {}
    started = time.monotonic()
    written = 0
    with cache.open("a", encoding="utf-8") as handle:
        for document in tqdm(documents, desc="writing queries", unit="doc", disable=not progress):
            key = cache_key(writer, prompt, document)
            answer = cached.get(key)
            if answer is None:
                if time_budget is not None and time.monotonic() - started > time_budget:
                    logger.info("time budget of %.0f s spent after %d new queries", time_budget, written)
                    break
                answer = GeneratedQuery(document.doc_id, writer.write(prompt.for_document(document)))
                handle.write(json.dumps({"key": key, "doc_id": answer.doc_id, "text": answer.text}) + "\n")
                handle.flush()
                written += 1
            if acceptable(answer.text, document):
                accepted[document.doc_id] = answer.text
    logger.info("%d documents: %d queries accepted, %d written now", len(documents), len(accepted), written)
    return accepted


def consistent_queries(
    generated: Mapping[str, str], ranked: Mapping[str, Sequence[str]], depth: int
) -> dict[str, str]:
    """Round-trip filter: keep doc_id -> query when the first stage ranks that document in its top `depth`
    for that query (`ranked` is keyed `gq:<doc_id>`, as `generated_query_ids` names them)."""
    return {
        doc_id: query
        for doc_id, query in generated.items()
        if doc_id in ranked.get(GENERATED_PREFIX + doc_id, ())[:depth]
    }


def generated_query_ids(generated: Mapping[str, str]) -> dict[str, str]:
    """The queries keyed as the mining cache and the training groups name them: `gq:<doc_id>`."""
    return {GENERATED_PREFIX + doc_id: query for doc_id, query in sorted(generated.items())}


def sample_documents(
    documents: Iterable[Document], count: int, *, exclude: frozenset[str], seed: int
) -> list[Document]:
    """A seeded sample of `count` documents with text, none of them in `exclude`, in id order."""
    usable = sorted(
        (d for d in documents if d.doc_id not in exclude and d.text.strip()), key=lambda d: d.doc_id
    )
    chosen = random.Random(seed).sample(usable, min(count, len(usable)))
    return sorted(chosen, key=lambda d: d.doc_id)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.query_generation.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", type=Path, required=True, help="BEIR dataset with qrels/train.tsv")
    parser.add_argument("--docs", type=int, required=True, help="documents to write a query for")
    parser.add_argument("--out", type=Path, required=True, help="JSONL cache of answers (appended to)")
    parser.add_argument("--examples", type=int, default=3, help="few-shot examples in the prompt")
    parser.add_argument("--time-budget", type=float, default=None, help="stop writing after this many s")
    parser.add_argument("--dev-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=13, help="examples and documents (dev split: fixed)")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: every usable core)")
    args = parser.parse_args(argv)
    if args.docs <= 0 or args.examples <= 0:
        parser.error("--docs and --examples must be positive")
    if args.time_budget is not None and args.time_budget <= 0:
        parser.error(f"--time-budget must be positive, got {args.time_budget}")
    if not (args.dataset / "qrels" / "train.tsv").is_file():
        parser.error(f"--dataset {args.dataset}: no qrels/train.tsv to draw few-shot examples from")
    configure_logging()
    beir = BeirDataset(args.dataset)
    documents = {d.doc_id: d for d in beir.corpus()}
    qrels = beir.qrels("train")
    train_ids, dev_ids = split_train_dev(qrels, dev_fraction=args.dev_fraction)
    dev_docs = frozenset(d for q in dev_ids for d in qrels[q])
    queries = {q.query_id: q.text for q in beir.queries().values()}
    try:
        examples = choose_examples(queries, qrels, documents, train_ids, count=args.examples, seed=args.seed)
        writer = LlamaQueryWriter(gemma_model_path(), threads=args.threads, seed=args.seed)
    except (ValueError, GeneratorUnavailable) as exc:
        print(f"generate: error: {exc}", file=sys.stderr)
        return 2
    example_docs = frozenset(e.document.doc_id for e in examples)
    targets = sample_documents(documents.values(), args.docs, exclude=dev_docs | example_docs, seed=args.seed)
    prompt = FewShotPrompt.from_examples(examples)
    accepted = generate(targets, prompt, writer, args.out, time_budget=args.time_budget)
    print(json.dumps({"documents": len(targets), "accepted": len(accepted), "cache": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
