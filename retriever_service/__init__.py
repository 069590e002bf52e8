"""First-stage retrieval: a bi-encoder with FAISS, and BM25, serving shards over gRPC (one per process, as a
cluster runs them, or several per process, as a small host does).

The bi-encoder itself (`BiEncoder`) is `model_runtimes.bi_encoder`, shared with the gateway.

Modules:
    build_index.py  `search-build-index`: corpus.jsonl -> index version directory (dense or BM25, N shards)
    shards.py       artifact layout, FAISS-style (nshards, shard_id) split, document store, request checks
    faiss_index.py  FaissRetriever: build from a factory string, validate at load, search off the event loop
    bm25.py         Bm25Retriever: bm25s with a documented tokenizer and parameters (one shard only)
    bootstrap.py    load_shard_retriever / load_index: the in-process Retriever adapters the gateway can use;
                    build_retrievers: what a server's --index paths name, one retriever per kind
    shard_group.py  ShardGroup: several shards of one index in one process, searched in parallel threads
    servicer.py     search.v1.RetrieverService: validation, proto <-> domain, status codes
    server.py       build_server, create_server, serve: health (SERVING once warmed), reflection, SIGTERM
    config.py       frozen Settings and BuildSettings: the only argv/env reader

Example:
    search-build-index --corpus ../shared/data/scifact/corpus.jsonl --out var/indexes/scifact-dense/v1 \\
        --kind dense --shards 2 --factory HNSW32,Flat --search-params efSearch=128
    search-retriever --index var/indexes/scifact-dense/v1/shard-0 --port 0 --port-file var/run/dense-0.port
    search-retriever --index var/indexes/scifact-dense/v1 --index var/indexes/scifact-bm25/v1/shard-0
"""
