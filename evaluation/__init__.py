"""Offline quality and latency of the served pipeline: the same `gateway.pipeline` code, over labelled data.

Modules:
    evaluate     search-eval: named variants over a BEIR split, nDCG@10 / MRR@10 / Recall@100 (ir-measures)
    ab_report    search-ab: several variants side by side, quality and p50/p95 latency, the frontier plot
    offline_stack  the in-process stack they run: indexes built or reused, retrievers, the reranker
    results      ir-measures scores of a run; quality.json and quality.md kept up to date
    config       their flags (EvalSettings, AbSettings), parsed once
    provenance   the commit a result came from, recorded beside its figures
"""
