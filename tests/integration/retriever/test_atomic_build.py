"""Index builds are atomic: a build killed midway leaves the previous version intact and loadable.

`search-build-index --overwrite` runs as a real subprocess into an existing index directory and is killed
with SIGKILL while its scratch directory is being filled; the old version must load and answer as before.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model_runtimes.bi_encoder import BiEncoder
from retriever_service.bootstrap import load_index
from search_common.artifacts import atomic_directory
from tests.integration.retriever.conftest import make_corpus

pytestmark = pytest.mark.slow


def _version(index: Path) -> str:
    return str(json.loads((index / "shard-0" / "manifest.json").read_text())["version"])


def test_a_build_killed_midway_leaves_the_previous_version_loadable(
    dense_index: Path, encoder: BiEncoder, tmp_path: Path
) -> None:
    out = tmp_path / "indexes" / "dense"
    shutil.copytree(dense_index, out)
    before = _version(out)
    bigger = tmp_path / "bigger" / "corpus.jsonl"
    make_corpus(bigger, num_docs=400)
    build = subprocess.Popen(
        [sys.executable, "-m", "retriever_service.build_index", "--corpus", str(bigger), "--out", str(out),
         "--kind", "dense", "--overwrite", "--batch-size", "8", "--threads", "1", "--max-length", "64"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        scratch: list[Path] = []
        for _ in range(1200):  # up to 2 minutes for the encoder to load and the scratch dir to appear
            scratch = list(out.parent.glob(".tmp-dense-*"))
            if scratch or build.poll() is not None:
                break
            time.sleep(0.1)
        assert scratch, f"no scratch directory seen (build exited with {build.poll()})"
        assert build.poll() is None, "the build finished before it could be killed"
        build.send_signal(signal.SIGKILL)
    finally:
        build.kill()
        build.wait()
    assert build.returncode == -signal.SIGKILL
    assert _version(out) == before
    shards = load_index(out, encoder=encoder)
    result = asyncio.run(shards[0].retrieve("compress a file", 3, timeout=30))
    assert len(result.candidates) == 3
    assert result.shard.index_version == before


def test_a_kill_between_the_fallback_renames_is_recovered(tmp_path: Path) -> None:
    """Without renameat2 the old tree sits under `-old-` for a moment; the next build restores it."""
    target = tmp_path / "index"
    retired = tmp_path / ".tmp-index-old-12345"
    retired.mkdir()
    (retired / "manifest.json").write_text("{}")
    with pytest.raises(RuntimeError), atomic_directory(target, overwrite=True):
        raise RuntimeError("this build fails too")
    assert (target / "manifest.json").is_file()
    assert not retired.exists()


def test_overwrite_swaps_in_one_step(tmp_path: Path) -> None:
    target = tmp_path / "index"
    for version in ("one", "two"):
        with atomic_directory(target, overwrite=True) as scratch:
            (scratch / "version").write_text(version)
    assert (target / "version").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["index"]
