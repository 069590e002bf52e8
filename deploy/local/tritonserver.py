#!/usr/bin/env python
"""Serve the cross-encoder with a real tritonserver on free loopback ports until Ctrl-C.

Assembles var/triton/model_repository from triton_models/ with the artifact filled in, starts the
tritonserver bundled in .venv-triton's nvidia-pytriton wheel, waits until the model is ready and prints
TRITON_URL=127.0.0.1:<port> (and writes it to --env-file). Example:

    .venv/bin/python deploy/local/tritonserver.py --env-file var/triton.env
    .venv/bin/search-reranker --backend triton --triton-url "$(grep TRITON_URL var/triton.env | cut -d= -f2)"
"""

from __future__ import annotations

import sys

from operations.tritonserver import triton_main

if __name__ == "__main__":
    sys.exit(triton_main())
