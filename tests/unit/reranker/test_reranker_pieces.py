"""Pure pieces: LRU cache, score encoding, Settings, the Triton contract, request splitting."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from model_runtimes.cross_encoder.pairs import PairRequest, decode_pair_request, score_requests
from reranker_service.backends.admission import AdmissionLimit
from reranker_service.backends.triton import to_domain_error
from reranker_service.cache.lru import LruScoreCache
from reranker_service.cache.redis import decode_score, encode_score
from reranker_service.config import Settings, parse_settings
from search_common import triton_contract as tc
from search_common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    SearchError,
    Unavailable,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


async def test_lru_evicts_least_recently_used() -> None:
    cache = LruScoreCache(2)
    await cache.put_many({"a": 1.0, "b": 2.0})
    assert await cache.get_many(["a"]) == [1.0]  # a is now the most recent
    await cache.put_many({"c": 3.0})
    assert await cache.get_many(["a", "b", "c"]) == [1.0, None, 3.0]
    assert cache.errors == 0


def test_score_encoding_round_trips_float32_exactly() -> None:
    value = float(np.float32(-1.2345678))
    assert decode_score(encode_score(value)) == value
    assert decode_score(None) is None
    assert decode_score(b"garbage!") is None


def test_settings_parse_flags_over_environment() -> None:
    env = {
        "SEARCH_RERANKER_BACKEND": "triton",
        "SEARCH_RERANKER_CACHE": "redis",
        "SEARCH_RERANKER_REDIS_PASSWORD": "s3cret",
        "SEARCH_RERANKER_MAX_DOCUMENTS": "10",
    }
    settings = parse_settings(["--max-documents", "20", "--triton-url", "h:1"], env)
    assert settings.backend == "triton" and settings.cache == "redis"
    assert settings.max_documents == 20 and settings.triton_url == "h:1"
    assert settings.redis_password == "s3cret"


def test_settings_batch_flags_and_their_checks() -> None:
    env = {"SEARCH_RERANKER_BATCH_WORKERS": "2", "SEARCH_RERANKER_BATCH_SIZE": "8"}
    settings = parse_settings(["--backend", "triton", "--batch-size", "4"], env)
    assert (settings.batch_workers, settings.batch_size) == (2, 4)
    with pytest.raises(ValueError, match="batch_workers must be positive, or 0 for one per core"):
        Settings(backend="triton", batch_workers=-1)
    with pytest.raises(ValueError, match="pass_shape must be one of auto, single, bucketed"):
        Settings(backend="triton", pass_shape="padded")
    with pytest.raises(SystemExit):
        parse_settings(["--backend", "triton", "--batch-size", "0"], {})


def test_settings_device_flag_and_its_check() -> None:
    assert parse_settings(["--backend", "triton"], {}).device == "cpu"
    env = {"SEARCH_RERANKER_DEVICE": "cuda"}
    assert parse_settings(["--artifact-dir", "a"], env).device == "cuda"
    assert parse_settings(["--artifact-dir", "a", "--device", "cuda:1"], env).device == "cuda:1"
    with pytest.raises(ValueError, match="device must be cpu, cuda or cuda:N, got 'gpu'"):
        Settings(backend="triton", device="gpu")
    with pytest.raises(SystemExit):
        parse_settings(["--artifact-dir", "a", "--device", "tpu"], {})


def test_settings_reject_onnx_without_artifact() -> None:
    with pytest.raises(ValueError, match="needs --artifact-dir"):
        Settings(backend="onnx")
    with pytest.raises(SystemExit):
        parse_settings(["--backend", "onnx"], {})


def test_contract_names_match_the_committed_model_config() -> None:
    config = (REPO_ROOT / "triton_models" / tc.MODEL_NAME / "config.pbtxt").read_text()
    assert f'name: "{tc.MODEL_NAME}"' in config
    tensor_names = set(re.findall(r'name: "([A-Z_]+)"', config))
    assert {tc.INPUT_QUERY, tc.INPUT_DOCUMENT, tc.OUTPUT_SCORE, tc.OUTPUT_ENGINE} <= tensor_names
    for key in (
        tc.PARAM_ARTIFACT_ROOT,
        tc.PARAM_ARTIFACT_VERSION,
        tc.PARAM_ARTIFACT_NAME,
        tc.PARAM_ARTIFACT_MAX_LENGTH,
        tc.PARAM_INTRA_OP_THREADS,
        tc.PARAM_ENGINE,
        tc.PARAM_DEVICE,
        tc.PARAM_SCORE_BATCH_SIZE,
    ):
        assert f'key: "{key}"' in config
    for placeholder in (tc.ARTIFACT_PLACEHOLDER, tc.VERSION_PLACEHOLDER, tc.NAME_PLACEHOLDER):
        assert placeholder in config
    assert "dynamic_batching {" in config
    # Load is shed by the reranker's AdmissionLimit; a Triton queue policy slowed the batcher (see config).
    assert not re.search(r"^\s*default_queue_policy\s*\{", config, flags=re.M)


def test_decode_pair_request_explains_bad_tensors() -> None:
    good = decode_pair_request(
        np.array([[b"q"], [b"q"]], dtype=object), np.array([[b"a"], ["b"]], dtype=object)
    )
    assert good == PairRequest(["q", "q"], ["a", "b"], None)
    with pytest.raises(ValueError, match="both QUERY and DOCUMENT"):
        decode_pair_request(None, np.array([[b"a"]], dtype=object))
    with pytest.raises(ValueError, match="QUERY has 1 rows but DOCUMENT has 2"):
        decode_pair_request(np.array([[b"q"]], dtype=object), np.array([[b"a"], [b"b"]], dtype=object))
    with pytest.raises(ValueError, match="UTF-8"):
        decode_pair_request(np.array([[b"\xff"]], dtype=object), np.array([[b"a"]], dtype=object))
    with pytest.raises(ValueError, match="QUERY must not be empty"):
        decode_pair_request(np.array([[b" "]], dtype=object), np.array([[b"a"]], dtype=object))


def test_score_requests_concatenates_per_max_length_and_splits_back() -> None:
    calls: list[tuple[list[str], int | None]] = []

    def score_pairs(queries: Sequence[str], texts: Sequence[str], max_length: int | None) -> np.ndarray:
        calls.append((list(texts), max_length))
        return np.array([float(t) for t in texts], dtype=np.float32)

    requests = [
        PairRequest(["q", "q"], ["1", "2"]),
        PairRequest(["r"], ["3"], 64),
        PairRequest(["s", "s", "s"], ["4", "5", "6"]),
    ]
    results = score_requests(score_pairs, requests)
    assert [r.tolist() for r in results] == [[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]]
    assert calls == [(["1", "2", "4", "5", "6"], None), (["3"], 64)]


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        ("StatusCode.UNAVAILABLE", "Exceeds maximum queue size", ResourceExhausted),
        ("StatusCode.UNAVAILABLE", "Request timeout expired", DeadlineExceeded),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", DeadlineExceeded),
        ("StatusCode.INVALID_ARGUMENT", "inference request batch-size must be <= 64", InvalidArgument),
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", Unavailable),
        ("StatusCode.INTERNAL", "stub crashed at /opt/secret/path", Unavailable),
    ],
)
def test_triton_errors_become_domain_errors(status: str, message: str, expected: type[SearchError]) -> None:
    error = to_domain_error(InferenceServerException(message, status=status))
    assert type(error) is expected
    assert "/opt/secret" not in str(error)  # only invalid-argument details reach the client


def test_admission_limit_refuses_past_the_bound_and_frees_places() -> None:
    limit = AdmissionLimit(2)
    with limit.admit(), limit.admit():
        assert limit.pending == 2
        with pytest.raises(ResourceExhausted, match="2 requests already waiting"), limit.admit():
            pass
        assert limit.pending == 2  # the refused request took no place
    with pytest.raises(RuntimeError), limit.admit():
        raise RuntimeError("scoring failed")
    assert limit.pending == 0  # a failed request gives its place back
    with pytest.raises(ValueError, match="at least 1"):
        AdmissionLimit(0)
