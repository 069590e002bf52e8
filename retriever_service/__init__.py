"""First-stage retrieval: a bi-encoder with FAISS, and BM25, each serving one shard over gRPC."""
