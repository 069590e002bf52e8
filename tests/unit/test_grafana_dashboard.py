"""deploy/grafana/search-dashboard.json is exactly what deploy/grafana/dashboard.py generates, and every
panel query names only metrics the services export or series the recording rules record."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType

import yaml
from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from gateway.variants import Variant
from reranker_service.metrics import RerankerMetrics
from retriever_service.metrics import RetrieverMetrics
from search_common.documents import ShardDescription
from tests.script_modules import load_script

REPO = Path(__file__).resolve().parents[2]


def load_generator() -> ModuleType:
    return load_script("deploy/grafana/dashboard.py", "search_dashboard")


def test_committed_json_is_the_generators_output() -> None:
    generator = load_generator()
    committed = (REPO / "deploy/grafana/search-dashboard.json").read_text(encoding="utf-8")
    assert committed == generator.render(), "run .venv/bin/python deploy/grafana/dashboard.py"
    assert generator.main(["--check"]) == 0


def test_panels_cover_the_required_views_and_name_known_series() -> None:
    generator = load_generator()
    model = json.loads((REPO / "deploy/grafana/search-dashboard.json").read_text(encoding="utf-8"))
    queries = generator.panel_queries(model)
    titles = {title for title, _ in queries}
    for required in (
        "gateway: stage latency p50 / p95 / p99 by variant",
        "QPS by variant",
        "Degraded ratio by variant",
        "Reranker cache hit ratio",
        "Triton queue vs compute time per request",
        "Triton average batch size",
        "Variant comparison",
    ):
        assert required in titles
    recorded = set()
    for rule_file in (REPO / "deploy/prometheus/rules").glob("*.yml"):
        for group in yaml.safe_load(rule_file.read_text())["groups"]:
            recorded |= {rule["record"] for rule in group["rules"] if "record" in rule}
    known = recorded | exported_series() | TRITON_SERIES
    for title, expr in queries:
        names = set(re.findall(r"\b(?:search_\w+|nv_\w+|[a-z_]+:[a-z0-9_:]+)", expr))
        assert names, f"{title}: no metric in {expr}"
        for name in names:
            assert name in known, f"{title}: {name} is neither exported nor recorded"


def exported_series() -> set[str]:
    """Every series name the three services' metrics modules expose."""
    registry = CollectorRegistry()
    gateway = GatewayMetrics(registry)
    gateway.prepare([Variant("v", 1.0, "bm25", 10)], ["bm25/shard-0"])
    gateway.set_variants([Variant("v", 1.0, "bm25", 10)])
    retriever = RetrieverMetrics(registry)
    retriever.set_shards([ShardDescription("bm25", 0, 1, "i", "v1", 1)])
    reranker = RerankerMetrics(registry)
    reranker.set_model("m", "v1", "onnx")
    return {sample.name for family in registry.collect() for sample in family.samples}


# What tritonserver 2.51 exports on its metrics port (CPU build), as far as the rules use it.
TRITON_SERIES = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_inference_pending_request_count",
}
