"""Every dashboard panel and every rule has data: the real services, tritonserver and a real Prometheus.

Dense and BM25 retrievers, a reranker on tritonserver (the exported untrained test cross-encoder) and a
gateway run as processes with their metrics ports; Prometheus (Debian's package) scrapes them and Triton
every second, with deploy/prometheus's rules evaluated every second. Traffic goes through the gateway for
every variant. Then each panel query of deploy/grafana/search-dashboard.json (template variables
substituted) and each recording rule must return data through /api/v1/query, every rule must evaluate
without error, and every series an alert expression names must exist (alerts themselves stay quiet).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from search.v1 import search_service_pb2, search_service_pb2_grpc

from operations.launch import free_port
from operations.processes import ServiceStack
from operations.triton_repository import assemble_model_repository
from operations.tritonserver import TritonServer
from tests.cross_encoder_support import cross_encoder_artifact, triton_installation_or_skip

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "search-dashboard.json"
VARIANTS = """
default: hybrid
variants:
  - {name: hybrid, weight: 0.5, first_stage: hybrid, retrieval_depth: 20}
  - {name: bm25, weight: 0.25, first_stage: bm25, retrieval_depth: 20}
  - {name: dense, weight: 0.25, first_stage: dense, retrieval_depth: 20}
  - {name: hybrid20+ce, weight: 0, first_stage: hybrid, retrieval_depth: 20, reranker: cross-encoder-minilm,
     rerank_depth: 20, cache: true}
"""
QUERIES = ("gzip compress archive", "http socket server", "parse iso date", "sha256 digest", "shell pipe")
DATA_TIMEOUT_SECONDS = 60.0


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    installation = triton_installation_or_skip()
    artifact = cross_encoder_artifact()
    work = tmp_path_factory.mktemp("observability-triton")
    repository = assemble_model_repository(
        work / "model_repository",
        artifact_root=artifact.parent,
        artifact_version=artifact.name,
        intra_op_threads=1,
    )
    with TritonServer(repository, installation=installation, work_dir=work / "run") as server:
        yield server


class Prometheus:
    """A prometheus server on a free loopback port with deploy/prometheus's local config and rules."""

    def __init__(self, work: Path, targets: dict[str, str]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip("prometheus not installed: run scripts/setup.sh (apt-get install prometheus)")
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus-local.yml").read_text())
        config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        config["rule_files"] = [str(PROMETHEUS_DIR / f) for f in config["rule_files"]]
        (work / "targets").mkdir(parents=True)
        config["scrape_configs"][0]["file_sd_configs"][0]["files"] = [str(work / "targets" / "*.json")]
        for job, address in targets.items():
            (work / "targets" / f"{job}.json").write_text(
                json.dumps([{"targets": [address], "labels": {"job": job}}])
            )
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.log_path = work / "prometheus.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        return list(data["result"])

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, self.log_path.read_text()
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2)
                return
            assert time.monotonic() < deadline, "prometheus not ready"
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _panel_queries() -> list[tuple[str, str]]:
    model = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in model["panels"]:
        for target in panel.get("targets") or []:
            expr = target["expr"].replace("$__rate_interval", "15s").replace("$variant", ".*")
            assert "$" not in expr, f"unsubstituted template variable in {expr}"
            queries.append((panel["title"], expr))
    return queries


def _rules() -> tuple[list[str], list[tuple[str, str]]]:
    records: list[str] = []
    alerts: list[tuple[str, str]] = []
    for rule_file in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")):
        for group in yaml.safe_load(rule_file.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    records.append(rule["record"])
                else:
                    alerts.append((rule["alert"], rule["expr"]))
    return records, alerts


def _drive(address: str, stop: threading.Event, failures: list[str]) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = search_service_pb2_grpc.SearchServiceStub(channel)
        round_ = 0
        while not stop.is_set():
            for variant in ("hybrid", "bm25", "dense", "hybrid20+ce", ""):
                query = QUERIES[round_ % len(QUERIES)]
                request = search_service_pb2.SearchRequest(
                    query=query, top_k=5, variant=variant, caller_key=f"caller-{round_}"
                )
                try:
                    stub.Search(request, timeout=10)
                except grpc.RpcError as exc:
                    failures.append(f"{variant}: {exc.code()} {exc.details()}")
            round_ += 1


def test_every_panel_and_rule_has_data(
    indexes: dict[str, Path], triton: TritonServer, tmp_path: Path
) -> None:
    ports = {name: free_port() for name in ("dense", "bm25", "reranker", "gateway")}
    variants = tmp_path / "variants.yaml"
    variants.write_text(VARIANTS)
    python = sys.executable
    with ServiceStack(tmp_path / "run") as stack:
        dense = stack.spawn(
            "dense-0",
            [python, "-m", "retriever_service", "--index", str(indexes["dense-1"] / "shard-0"),
             "--threads", "1", "--metrics-port", str(ports["dense"])],
        )  # fmt: skip
        bm25 = stack.spawn(
            "bm25-0",
            [python, "-m", "retriever_service", "--index", str(indexes["bm25-1"] / "shard-0"),
             "--threads", "1", "--metrics-port", str(ports["bm25"])],
        )  # fmt: skip
        reranker = stack.spawn(
            "reranker",
            [python, "-m", "reranker_service", "--backend", "triton", "--triton-url", triton.grpc_url,
             "--cache", "lru", "--metrics-port", str(ports["reranker"])],
        )  # fmt: skip
        for service in (dense, bm25, reranker):
            service.wait_ready(120)
        gateway = stack.start(
            "gateway",
            [python, "-m", "gateway", "--dense", dense.address, "--bm25", bm25.address,
             "--reranker", reranker.address, "--variants", str(variants),
             "--metrics-port", str(ports["gateway"])],
        )  # fmt: skip
        prometheus = Prometheus(
            tmp_path / "prometheus",
            {
                "retriever-dense": f"127.0.0.1:{ports['dense']}",
                "retriever-bm25": f"127.0.0.1:{ports['bm25']}",
                "reranker": f"127.0.0.1:{ports['reranker']}",
                "gateway": f"127.0.0.1:{ports['gateway']}",
                "triton": f"127.0.0.1:{triton.metrics_port}",
            },
        )
        stop = threading.Event()
        failures: list[str] = []
        driver = threading.Thread(target=_drive, args=(gateway.address, stop, failures))
        try:
            prometheus.wait_ready()
            driver.start()
            panel_queries = _panel_queries()
            records, alerts = _rules()
            checks = [*panel_queries, *((f"rule {name}", name) for name in records)]
            for _, alert_expr in alerts:
                for name in set(re.findall(r"\b(?:search_\w+|nv_\w+|[a-z_]+:[a-z0-9_:]+)", alert_expr)):
                    checks.append((f"alert series {name}", f'count({{__name__="{name}"}})'))
            # Scrapes and rule evaluations come every second; rates need two samples after traffic began.
            deadline = time.monotonic() + DATA_TIMEOUT_SECONDS
            empty = checks
            while empty and time.monotonic() < deadline:
                time.sleep(1.0)
                empty = [(what, expr) for what, expr in empty if not prometheus.query(expr)]
            assert not empty, "no data for:\n" + "\n".join(f"  {what}: {expr}" for what, expr in empty)

            targets = prometheus.api("targets")["activeTargets"]
            assert {t["labels"]["job"] for t in targets if t["health"] == "up"} == {
                "retriever-dense", "retriever-bm25", "reranker", "gateway", "triton"
            }  # fmt: skip
            groups = prometheus.api("rules")["groups"]
            unhealthy = [
                (rule["name"], rule.get("lastError"))
                for group in groups
                for rule in group["rules"]
                if rule["health"] != "ok"
            ]
            assert unhealthy == []
            firing = [a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"]]
            assert "SearchRerankerCacheErrors" not in firing and "SearchVariantReloadRejected" not in firing

            # The variant reached the downstream services as a label, the shard's identity as a target.
            faiss = 'stage="faiss_search",variant="hybrid20+ce"'
            assert prometheus.query(f"search_retriever_stage_duration_seconds_count{{{faiss}}} > 0")
            assert prometheus.query('search_reranker_stage_duration_seconds_count{variant="hybrid20+ce"} > 0')
            assert prometheus.query('search_reranker_cache_lookups_total{result="hit"} > 0')
            assert prometheus.query('nv_inference_exec_count{model="cross_encoder"} > 0')
        finally:
            stop.set()
            if driver.is_alive():
                driver.join()
            prometheus.stop()
        assert failures == []
