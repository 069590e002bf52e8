"""Second-stage reranking: cross-encoder scoring behind a score cache, served over gRPC."""
