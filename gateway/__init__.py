"""The public search service: fan-out to retrievers, merge, rerank, under one deadline.

Modules:
    pipeline    THE search pipeline (fan-out to every shard in parallel, exact merge, RRF for hybrid, rerank
                with fallback); the server, search-eval and search-demo all call it.
    merge       pure ranking functions: exact global top-k of shard lists, reciprocal rank fusion (k=60),
                post-rerank order, snippets.
    variants    A/B variants from YAML (packaged default: variants.yaml) with strict validation and sticky
                sha256 assignment by caller_key; LiveVariants reloads the file on SIGHUP or when it changes
                (atomic swap; a bad file is rejected and the old variants kept).
    clients     gRPC adapters of search_common.ports (GrpcRetriever, GrpcReranker) on long-lived channels.
    servicer    search.v1.SearchService: request validation, proto <-> domain, status codes.
    server      create_server / serve: health (NOT_SERVING until every retriever group answers),
                reflection, graceful SIGTERM, port file, optional Prometheus port.
    bootstrap   the composition root: adapters chosen from Settings, or passed in (eval, tests).
    config      Settings, EvalSettings, DemoSettings: the only argv/env/YAML readers.
    metrics     search_gateway_* Prometheus metrics (see deploy/prometheus/README.md for every name).
    ab_report   search-ab: several variants over a BEIR split, quality and p50/p95 latency side by side.

Commands:
    search-gateway --dense HOST:PORT,HOST:PORT --bm25 HOST:PORT [--reranker HOST:PORT] --port 0 --port-file F
                   [--query-encoder DIR|packaged]   embed each query once here for all dense shards
    search-client --target HOST:PORT "query" [--top-k 10] [--variant X] [--caller-key K]
    search-eval --dataset DIR --split test --pipeline dense --pipeline bm25 --pipeline hybrid
    search-demo [--keep-running]      the whole stack on loopback over the stdlib corpus
    search-ab --dataset DIR --split test --variant dense --variant bm25 --variant hybrid
                                      writes bench/results/ab_scifact.{json,md}

Variants that need a reranker or a retriever group the deployment lacks are left out of assignment (with a
warning); asking for one by name is INVALID_ARGUMENT saying what is missing. Startup fails only when no
servable variant has a positive weight.
"""
