"""reranker_service.cache."""
