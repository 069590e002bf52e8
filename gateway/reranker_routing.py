"""One `Reranker` port over several reranker services, chosen by the model a variant names.

A deployment that A/B-tests second stages of different kinds (the cross-encoder and ColBERT late interaction
need different reranker processes) routes each model name to its own service (`--reranker-route
MODEL=HOST:PORT`); a plain `--reranker` serves every other model. The pipeline keeps talking to one port.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from search_common.documents import Document, RerankResult
from search_common.errors import NotFound
from search_common.ports import Reranker


def served_models(routed: Collection[str], has_default: bool) -> frozenset[str] | None:
    """The reranker model names a deployment serves: only the routed ones without a default reranker, any
    (None) with one."""
    return None if has_default else frozenset(routed)


def model_name(model: str) -> str:
    """The name part of a variant's reranker model ("name" or "name@version")."""
    return model.partition("@")[0]


class RoutedReranker:
    """Sends each rerank to the reranker routed for its model, else to the default one.

    Args:
        routes: model name -> the reranker that serves it.
        default: the reranker for every other model, or None when only routed models are served.
    """

    component = "reranker"

    def __init__(self, routes: Mapping[str, Reranker], default: Reranker | None = None) -> None:
        if not routes and default is None:
            raise ValueError("a routed reranker needs at least one route or a default reranker")
        self._routes = dict(routes)
        self._default = default

    @property
    def models(self) -> Collection[str] | None:
        """The model names served, or None when the default reranker takes any model."""
        return served_models(self._routes, self._default is not None)

    async def rerank(
        self,
        query: str,
        documents: Sequence[Document],
        *,
        model: str = "",
        max_sequence_length: int = 0,
        use_cache: bool = True,
        timeout: float | None = None,
    ) -> RerankResult:
        target = self._routes.get(model_name(model), self._default)
        if target is None:
            raise NotFound(f"no reranker serves model {model_name(model)!r}; routed: {sorted(self._routes)}")
        return await target.rerank(
            query,
            documents,
            model=model,
            max_sequence_length=max_sequence_length,
            use_cache=use_cache,
            timeout=timeout,
        )

    async def close(self) -> None:
        for reranker in {id(r): r for r in [*self._routes.values(), self._default] if r is not None}.values():
            await reranker.close()
