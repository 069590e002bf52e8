"""`search-reranker`: argv -> Settings -> serve()."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from reranker_service.config import parse_settings
from reranker_service.server import serve
from search_common.artifacts import ArtifactError
from search_common.errors import SearchError
from search_common.logging_setup import configure_logging

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_settings(argv)
    configure_logging(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except (ArtifactError, SearchError) as exc:
        # A model that does not load or a scorer that never became ready: one line, not a traceback.
        logger.error("reranker could not start: %s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
