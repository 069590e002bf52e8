"""The search stack's Grafana dashboard, as code (grafana-foundation-sdk).

    .venv/bin/python deploy/grafana/dashboard.py            # rewrites deploy/grafana/search-dashboard.json
    .venv/bin/python deploy/grafana/dashboard.py --check    # exit 1 if the committed JSON is stale

Every query names metrics the services export or series the recording rules in deploy/prometheus record;
tests/integration/test_observability.py runs each one against a real Prometheus scraping the real services,
and tests/unit/test_grafana_dashboard.py checks that the committed JSON is this script's output.
Template variables: `$datasource` (a Prometheus data source) and `$variant` (multi-select, from the gateway).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, DataTransformerConfig, VariableRefresh
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).resolve().parent / "search-dashboard.json"
UID = "search-stack"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
V = 'variant=~"$variant"'
SUBSYSTEM_STAGES = {
    "gateway": "embed, fanout, merge, rerank, end_to_end",
    "retriever": "embed, faiss_search, bm25",
    "reranker": "cache_lookup, inference",
}


def _query(expr: str, legend: str, ref: str, *, instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    if instant:
        query = query.instant().format(PromQueryFormat.TABLE)
    return query


def _timeseries(title: str, unit: str, description: str, queries: Sequence[prometheus.Dataquery]) -> Any:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(8)
        .span(12)
        .line_width(1)
        .fill_opacity(5)
    )
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _stage_quantiles(subsystem: str) -> Any:
    metric = f"stage_variant:search_{subsystem}_stage_duration_seconds"
    return _timeseries(
        f"{subsystem}: stage latency p50 / p95 / p99 by variant",
        "s",
        f"Per stage ({SUBSYSTEM_STAGES[subsystem]}) and variant, over 5 minutes (recording rules).",
        [
            _query(f"{metric}:p{q}_5m{{{V}}}", f"{{{{stage}}}} {{{{variant}}}} p{q}", ref)
            for ref, q in (("A", "50"), ("B", "95"), ("C", "99"))
        ],
    )


def _comparison_table() -> Any:
    e2e = 'stage="end_to_end",' + V
    columns = [
        ("QPS", f"variant:search_gateway_requests:rate5m{{{V}}}"),
        ("p50", f"stage_variant:search_gateway_stage_duration_seconds:p50_5m{{{e2e}}}"),
        ("p95", f"stage_variant:search_gateway_stage_duration_seconds:p95_5m{{{e2e}}}"),
        ("p99", f"stage_variant:search_gateway_stage_duration_seconds:p99_5m{{{e2e}}}"),
        ("degraded", f"variant:search_gateway_degraded:ratio_rate5m{{{V}}}"),
        ("errors", f"variant:search_gateway_errors:ratio_rate5m{{{V}}}"),
        ("SLO missed (1h)", f"variant:search_gateway_slo_missed:ratio_rate1h{{{V}}}"),
        ("reranked/s", f"variant:search_gateway_reranked_candidates:rate5m{{{V}}}"),
        ("weight", f"search_gateway_variant_weight{{{V}}}"),
    ]
    panel = (
        table.Panel()
        .title("Variant comparison")
        .description("One row per variant, side by side: traffic, end-to-end latency, degraded, errors, SLO.")
        .datasource(DATASOURCE)
        .height(9)
        .span(24)
    )
    for index, (name, expr) in enumerate(columns):
        # `max by (variant)` leaves one series per variant, so the merge below makes one row per variant.
        panel = panel.with_target(
            _query(f"max by (variant) ({expr})", name, chr(ord("A") + index), instant=True)
        )
    renames = {f"Value #{chr(ord('A') + i)}": name for i, (name, _) in enumerate(columns)}
    panel = panel.with_transformation(DataTransformerConfig(id_val="merge", options={}))
    panel = panel.with_transformation(
        DataTransformerConfig(
            id_val="organize", options={"excludeByName": {"Time": True}, "renameByName": renames}
        )
    )
    return panel


def build_dashboard() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    variant_var = (
        dashboard.QueryVariable("variant")
        .label("variant")
        .datasource(DATASOURCE)
        .query("label_values(search_gateway_requests_total, variant)")
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
    )
    builder = (
        dashboard.Dashboard("Search stack: stages, variants, Triton")
        .uid(UID)
        .tags(["search", "grpc", "triton"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("utc")
        .with_variable(dashboard.DatasourceVariable("datasource").label("data source").type("prometheus"))
        .with_variable(variant_var)
        .with_row(dashboard.Row("Latency per stage and variant"))
        .with_panel(_stage_quantiles("gateway"))
        .with_panel(_stage_quantiles("retriever"))
        .with_panel(_stage_quantiles("reranker"))
        .with_panel(
            _timeseries(
                "Index size and versions",
                "short",
                "Documents per served shard (search_retriever_index_vectors), with the index it serves.",
                [
                    _query(
                        "max by (instance, index, version, kind, shard) (search_retriever_index_vectors * on "
                        "(instance, kind, shard) group_left (index, version) search_retriever_index_info)",
                        "{{kind}} {{index}} {{version}} shard {{shard}} {{instance}}",
                        "A",
                    )
                ],
            )
        )
        .with_row(dashboard.Row("Traffic and health by variant"))
        .with_panel(
            _timeseries(
                "QPS by variant",
                "reqps",
                "Search requests per second at the gateway, by variant and gRPC code.",
                [
                    _query(
                        "sum by (variant, code) "
                        f"(rate(search_gateway_requests_total{{{V}}}[$__rate_interval]))",
                        "{{variant}} {{code}}",
                        "A",
                    )
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Degraded ratio by variant",
                "percentunit",
                "Answered requests with missing shards or without the reranker; by reason below.",
                [
                    _query(f"variant:search_gateway_degraded:ratio_rate5m{{{V}}}", "{{variant}}", "A"),
                    _query(
                        "sum by (variant, stage, reason) "
                        f"(rate(search_gateway_degraded_responses_total{{{V}}}[$__rate_interval]))",
                        "{{variant}} {{stage}} {{reason}} /s",
                        "B",
                    ),
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Reranker cache hit ratio",
                "percentunit",
                "Score-cache hits over lookups; errors are lookups bypassed because the cache failed.",
                [
                    _query("search:search_reranker_cache_hit:ratio_rate5m", "hit ratio", "A"),
                    _query("search:search_reranker_cache_error:ratio_rate5m", "error ratio", "B"),
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Late-interaction token store",
                "percentunit",
                "Share of candidates the ColBERT reranker found in its token store; a miss is encoded at "
                "request time, about 60x slower (a store from an old corpus or model).",
                [
                    _query(
                        "sum(rate(search_reranker_token_store_lookups_total"
                        '{result="hit"}[$__rate_interval])) '
                        "/ sum(rate(search_reranker_token_store_lookups_total[$__rate_interval]))",
                        "hit ratio",
                        "A",
                    )
                ],
            )
        )
        .with_panel(
            _timeseries(
                "SLO misses by variant",
                "percentunit",
                "Share of requests over their variant's latency SLO (0.5 s, reranked 2.5 s) or failed.",
                [
                    _query(f"variant:search_gateway_slo_missed:ratio_rate5m{{{V}}}", "{{variant}} 5m", "A"),
                    _query(f"variant:search_gateway_slo_missed:ratio_rate1h{{{V}}}", "{{variant}} 1h", "B"),
                ],
            )
        )
        .with_row(dashboard.Row("Triton"))
        .with_panel(
            _timeseries(
                "Triton queue vs compute time per request",
                "s",
                "Average time a request waits in Triton's queue and spends in model inference.",
                [
                    _query("model:nv_inference_queue_duration_seconds:avg_rate5m", "{{model}} queue", "A"),
                    _query(
                        "model:nv_inference_compute_infer_duration_seconds:avg_rate5m",
                        "{{model}} compute",
                        "B",
                    ),
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Triton average batch size",
                "short",
                "Inferences per model execution: how well dynamic batching fills batches.",
                [_query("model:nv_inference_batch_size:avg_rate5m", "{{model}}", "A")],
            )
        )
        .with_row(dashboard.Row("Variant comparison"))
        .with_panel(_comparison_table())
        .with_panel(
            stat.Panel()
            .title("Served model")
            .description("The reranker's model and version (search_reranker_model_info).")
            .datasource(DATASOURCE)
            .height(4)
            .span(12)
            .with_target(
                _query(
                    "max by (model, version, backend) (search_reranker_model_info)",
                    "{{model}} {{version}}",
                    "A",
                )
            )
        )
        .with_panel(
            stat.Panel()
            .title("Index vectors")
            .description("Documents across every scraped shard (replicas counted once per instance).")
            .datasource(DATASOURCE)
            .height(4)
            .span(12)
            .unit("short")
            .with_target(_query("sum(search_retriever_index_vectors)", "vectors", "A"))
        )
    )
    encoded = JSONEncoder(sort_keys=True, indent=2).encode(builder.build())
    result: dict[str, Any] = json.loads(encoded)
    return result


def render() -> str:
    return json.dumps(build_dashboard(), indent=2, sort_keys=True) + "\n"


def panel_queries(model: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows included."""
    queries: list[tuple[str, str]] = []
    for panel in model.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []) or []:
                if target.get("expr"):
                    queries.append((str(inner.get("title")), str(target["expr"])))
    return queries


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write (or --check) deploy/grafana/search-dashboard.json.")
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed JSON is stale")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
