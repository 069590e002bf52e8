#!/usr/bin/env bash
# The whole test suite, as CI runs it: set up (idempotent), lint, type-check, then every test against real
# gRPC servers, FAISS, redis-server and tritonserver started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
export PYTHONUNBUFFERED=1

echo "==> ruff"
.venv/bin/ruff check .
echo "==> mypy"
.venv/bin/mypy
echo "==> pytest"
exec .venv/bin/pytest -ra --durations=15 "$@"
