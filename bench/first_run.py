"""A first run, as a new user has it: `search-demo` from an empty var/, timed to its first answer and to the
moment its trained reranker is swapped in.

Starts `search-demo --var <empty folder>` (the stdlib corpus, indexes built, the default second stage - the
packaged all-mpnet-base-v2, its document vectors stored in the background; `--reranker colbert` trains the
zero-label ColBERT instead) and reads its output as it comes: `first_answer_seconds` is when the first
query's answer is printed, `reranker_ready_seconds` when the demo reports the model swapped in
(`reranker_refused_seconds` when a trained model's gate refuses it). Its ONNX graphs are exported into an
empty graph cache, as on a new host. A run that passes
`--max-minutes` is stopped and records the reranker as not ready yet (null) with the time waited. Writes
`bench/results/first_run.json` with the CPU's flags and core count.

Example:
    python bench/first_run.py --max-minutes 60
    python bench/first_run.py --reranker colbert --out bench/results/first_run_colbert.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from evaluation.provenance import git_sha
from model_runtimes.hardware import cpu_flags, cpu_model
from model_runtimes.onnx_graph_cache import CACHE_ENV as ONNX_CACHE_ENV

FIRST_ANSWER = "=== "
RERANKER_READY = ("reranker trained in", "reranker ready in")
REFUSED = ("WARNING: the default ",)  # "... cross-encoder was refused" or "... ColBERT reranker was refused"
RERANKERS = {
    "mpnet": "all-mpnet-base-v2 re-scoring, untrained (search-demo's default)",
    "colbert": "zero-label ColBERT",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-minutes", type=float, default=90.0, help="stop waiting for the reranker then")
    parser.add_argument("--out", type=Path, default=Path("bench/results/first_run.json"))
    parser.add_argument("--reranker", choices=sorted(RERANKERS), default="mpnet")
    args = parser.parse_args()
    var = Path(tempfile.mkdtemp(prefix="first-run-var-"))
    started = time.monotonic()
    events: dict[str, float] = {}
    # A new host has no exported ONNX graphs yet: the run makes its own, as a first run would.
    environment = {**os.environ, ONNX_CACHE_ENV: str(var / "onnx-graphs")}
    demo = subprocess.Popen(
        [sys.executable, "-m", "operations.demo", "--var", str(var), "--reranker", args.reranker],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert demo.stdout is not None

    def read() -> None:
        assert demo.stdout is not None
        for line in demo.stdout:
            sys.stdout.write(line)
            elapsed = time.monotonic() - started
            for name, markers in (("first_answer", (FIRST_ANSWER,)), ("reranker_ready", RERANKER_READY),
                                  ("reranker_refused", REFUSED)):  # fmt: skip
                if any(marker in line for marker in markers):
                    events.setdefault(name, round(elapsed, 1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        demo.wait(timeout=args.max_minutes * 60)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(timeout=60)
    reader.join(timeout=10)
    record: dict[str, Any] = {
        "bench": "first_run",
        "git_sha": git_sha(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": len(os.sched_getaffinity(0)),
        "first_answer_seconds": events.get("first_answer"),
        "reranker_ready_seconds": events.get("reranker_ready"),
        "reranker_refused_seconds": events.get("reranker_refused"),
        "waited_seconds": round(time.monotonic() - started, 1),
        "max_minutes": args.max_minutes,
        "exit_code": demo.returncode,
        "reranker": RERANKERS[args.reranker],
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    shutil.rmtree(var, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
