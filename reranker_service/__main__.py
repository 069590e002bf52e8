"""`search-reranker`: argv -> Settings -> serve()."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from reranker_service.config import parse_settings
from reranker_service.server import serve
from search_common.logging_setup import configure_logging


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_settings(argv)
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
