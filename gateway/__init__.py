"""The public search service: fan-out to retrievers, merge, rerank, under one deadline.

Modules:
    pipeline    THE search pipeline (fan-out to every shard in parallel, exact merge, RRF for hybrid, rerank
                with fallback); the server, search-eval and search-demo all call it.
    merge       pure ranking functions: exact global top-k of shard lists, reciprocal rank fusion (k=60),
                post-rerank order, snippets.
    variants    A/B variants from YAML (packaged default: variants.yaml) with strict validation and sticky
                sha256 assignment by caller_key.
    variant_reload  LiveVariants: reloads the file on SIGHUP or when it changes (atomic swap; a bad file
                is rejected and the old variants kept).
    clients     gRPC adapters of search_common.ports (GrpcRetriever, GrpcReranker) on long-lived channels.
    servicer    search.v1.SearchService: request validation, proto <-> domain, status codes.
    server      create_server / serve: health (NOT_SERVING until every retriever group answers),
                reflection, graceful SIGTERM, port file, optional Prometheus port.
    bootstrap   the composition root: adapters chosen from Settings, or passed in (eval, tests).
    prf         pseudo-relevance feedback: the query vector moved towards its top documents' (Rocchio).
    config      Settings: the only argv/env/YAML reader.
    metrics     search_gateway_* Prometheus metrics (see deploy/prometheus/README.md for every name).

Nothing offline lives here: search-eval and search-ab are in `evaluation`, search-demo and search-client in
`operations`; both call this package's pipeline.

Commands:
    search-gateway --dense HOST:PORT,HOST:PORT --bm25 HOST:PORT [--reranker HOST:PORT] --port 0 --port-file F
                   [--query-encoder DIR|packaged]   embed each query once here for all dense shards

Variants that need a reranker or a retriever group the deployment lacks are left out of assignment (with a
warning); asking for one by name is INVALID_ARGUMENT saying what is missing. Startup fails only when no
servable variant has a positive weight.
"""
