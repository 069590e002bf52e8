#!/usr/bin/env python
"""Run a throwaway redis-server (no persistence) on a free loopback port until Ctrl-C.

Prints REDIS_URL=redis://127.0.0.1:<port>/0 (and writes it to --env-file). Example:

    .venv/bin/python deploy/local/redis_server.py --env-file var/redis.env
    .venv/bin/search-reranker --artifact-dir var/models/cross-encoder --cache redis \\
        --redis-url "$(grep REDIS_URL var/redis.env | cut -d= -f2)"

With --password, the password is required (AUTH); give it to the reranker as SEARCH_RERANKER_REDIS_PASSWORD.
"""

from __future__ import annotations

import sys

from operations.redis_server import redis_main

if __name__ == "__main__":
    sys.exit(redis_main())
