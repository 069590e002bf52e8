"""The public search service: fan-out to retrievers, merge, rerank, under one deadline."""
