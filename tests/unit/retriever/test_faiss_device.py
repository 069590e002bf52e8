"""Where a dense shard is searched: `--faiss-device` parsing and FAISS placement on a machine without a GPU.

The GPU side of the same code is tested in tests/gpu (skipped where FAISS sees no GPU).
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from retriever_service.config import parse_settings
from retriever_service.faiss_index import gpu_available, is_gpu_index, place_index

needs_no_gpu = pytest.mark.skipif(gpu_available(), reason="FAISS sees a GPU here")


def _flat(n: int = 50, dim: int = 8) -> faiss.Index:
    index = faiss.index_factory(dim, "Flat", faiss.METRIC_INNER_PRODUCT)
    index.add(np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32))
    return index


def test_faiss_device_defaults_to_auto_and_reads_flag_and_environment() -> None:
    assert parse_settings(["--index", "x"], environ={}).faiss_device == "auto"
    env = {"SEARCH_RETRIEVER_FAISS_DEVICE": "cpu"}
    assert parse_settings(["--index", "x"], environ=env).faiss_device == "cpu"
    assert parse_settings(["--index", "x", "--faiss-device", "gpu"], environ=env).faiss_device == "gpu"


@pytest.mark.parametrize(
    ("argv", "environ"),
    [(["--faiss-device", "tpu"], {}), ([], {"SEARCH_RETRIEVER_FAISS_DEVICE": "cuda"})],
)
def test_unknown_faiss_device_exits_with_a_message(
    argv: list[str], environ: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(["--index", "x", *argv], environ=environ)
    assert exit_info.value.code == 2
    assert "faiss-device" in capsys.readouterr().err


def test_cpu_placement_is_the_index_itself() -> None:
    index = _flat()
    assert place_index(index, "cpu", what="shard") is index
    assert not is_gpu_index(index)


@needs_no_gpu
def test_auto_without_a_gpu_stays_on_the_cpu() -> None:
    index = _flat()
    assert place_index(index, "auto", what="shard") is index


@needs_no_gpu
def test_gpu_without_a_gpu_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"shard-0: FAISS device 'gpu' asked for, but FAISS sees no GPU"):
        place_index(_flat(), "gpu", what="shard-0")


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ValueError, match="must be one of auto, cpu, gpu"):
        place_index(_flat(), "cuda", what="shard")  # type: ignore[arg-type]
