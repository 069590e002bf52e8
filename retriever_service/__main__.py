"""`python -m retriever_service` / `search-retriever`: argv -> Settings -> serve one shard."""

from __future__ import annotations

import asyncio
import logging
import sys

from retriever_service.config import parse_settings
from search_common.artifacts import ArtifactError
from search_common.logging_setup import configure_logging

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    configure_logging(settings.log_level)
    from retriever_service.server import serve  # after argv checks, so a bad flag fails fast

    try:
        asyncio.run(serve(settings))
    except ArtifactError as exc:
        sys.stderr.write(f"search-retriever: error: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"search-retriever: error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
