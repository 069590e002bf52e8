"""The embedded default's cross-encoder: trained on first use from the corpus itself, then cached.

A fresh offline machine has the stdlib corpus and the packaged all-MiniLM-L6-v2, nothing else. This module
turns that into a real reranker (GPL-style domain adaptation, no labels, nothing downloaded):

1. Pseudo-queries from the corpus. For each document, the first sentence of its docstring is a query and the
   document *without that sentence* is its positive, so the model never sees the query verbatim in the
   positive; a second kind of query is the words of the qualified name, leaf first ("json.JSONEncoder.encode"
   -> "encode json encoder"), whose positive is shown without its title (the title holds the name).
   Sentences shared by several documents ("Return str(self).") are ambiguous and dropped.
2. The training corpus is the corpus with every such first sentence removed ("masked"); the project's own
   BM25 (`retriever_service.build_index` / `load_index`) ranks it for every pseudo-query. Negatives are drawn
   from ranks (skip_top, neg_depth], so near-duplicates of the positive at the very top are not negatives.
3. A seeded set of documents is held out: none of their queries is trained on and they are never negatives.
   Their first-sentence queries measure BM25 alone vs BM25 re-ranked by the exported int8 model (nDCG@10).
4. Listwise softmax over 1 positive + k negatives (`training.cross_encoder.losses`), one epoch over a
   bounded number of groups, max length 128, seeded; exported with `export_cross_encoder` (int8
   per-channel ONNX) to `<out_root>/<version>-<key>/` whose manifest records the recipe, the cache key and
   the held-out evaluation. The artifact is published only if it beats the first stage on held-out queries.

The cache key is the corpus checksum, the recipe and budget, and the base model's checksum: a second call
with the same inputs returns the cached artifact at once; a changed corpus or recipe trains a new one.

    python -m training.cross_encoder.default_model --corpus var/corpus/stdlib
"""
