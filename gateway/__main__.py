"""`search-gateway`: argv → Settings → serve()."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from gateway.config import parse_settings
from gateway.server import serve
from gateway.variants import VariantError
from search_common.errors import SearchError
from search_common.logging_setup import configure_logging

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    configure_logging(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except VariantError as exc:
        logger.error("invalid variants: %s", exc)
        return 2
    except (SearchError, ValueError, OSError) as exc:
        logger.error("gateway failed to start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
