"""reranker_service.backends."""
