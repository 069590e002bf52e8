"""Collections to search and to measure on: readers and builders, used by tooling, training and bench.

Modules:
    beir     BEIR-layout datasets (corpus.jsonl, queries.jsonl, qrels/<split>.tsv): documents, queries, qrels
    stdlib   search-corpus: the Python standard library's docstrings as a BEIR-layout corpus (the demo's)
"""
