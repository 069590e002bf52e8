"""bench/perf_report.py's pure pieces: goal checks and the batching tables (CPU and GPU records alike)."""

from __future__ import annotations

from types import ModuleType

from tests.script_modules import load_script


def load_report() -> ModuleType:
    return load_script("bench/perf_report.py", "perf_report")


def test_every_key_has_a_goal_and_the_gpu_batching_key_shares_the_cpu_goal() -> None:
    report = load_report()
    assert report.GOALS["batching_speedup_16_gpu"] == report.GOALS["batching_speedup_16"] == (">=", 1.5)
    assert report.meets("batching_speedup_16_gpu", 3.88) is True
    assert report.meets("batching_speedup_16", 1.28) is False
    assert report.meets("rerank_ndcg_delta", -0.004) is True
    assert report.meets("serving_overhead_p50", None) is None


def test_batching_table_takes_the_median_window_per_arm_and_the_recorded_ratio() -> None:
    report = load_report()
    rows = [
        {"dynamic_batching": dynamic, "clients": clients, "pairs_per_s": rate}
        for dynamic, clients, rate in (
            (True, 1, 700.0),
            (False, 1, 900.0),
            (True, 16, 4500.0),
            (True, 16, 5100.0),
            (True, 16, 4800.0),
            (False, 16, 1200.0),
            (False, 16, 1300.0),
            (False, 16, 1250.0),
        )
    ]
    lines = report.batching_table(
        "on a GPU", {"rows": rows, "engine": "torch", "speedup": {"1": 0.78, "16": 3.85}}
    )
    assert lines[0].startswith("Triton dynamic batching on a GPU (model ENGINE torch;")
    assert lines[-2:] == ["| 1 | 700.0 | 900.0 | 0.78 |", "| 16 | 4800.0 | 1250.0 | 3.85 |"]


def test_serving_lines_name_each_topology_and_read_older_records_as_one_retriever_process() -> None:
    report = load_report()
    record = {
        "variant": "hybrid",
        "queries": 3,
        "in_process_p50_ms": 9.0,
        "in_process_p95_ms": 12.0,
        **{f"gateway_p50_ms{s}": 10.0 + i for i, s in enumerate(("", "_one_process", "_per_shard"))},
        **{f"gateway_p95_ms{s}": 20.0 for s in ("", "_one_process", "_per_shard")},
        "serving_overhead_p50": 0.1,
        "serving_overhead_p50_one_process": 0.2,
        "serving_overhead_p50_per_shard": 0.3,
        "stages_p50_ms": {"total": {"gateway_in_gateway": 9.5, "in_process": 9.0}},
    }
    lines = report.serving_lines(record)
    assert "| the gateway searching the indexes itself | 10.0 | 20.0 | 0.1 |" in lines
    assert "| one retriever process for every shard | 11.0 | 20.0 | 0.2 |" in lines
    assert "| one retriever process per shard | 12.0 | 20.0 | 0.3 |" in lines
    assert "| total | 9.5 | 9 |" in lines  # one column per arm, in name order
    older = {k: v for k, v in record.items() if "_one_process" not in k and "_per_shard" not in k}
    assert "| one retriever process for every shard | 10.0 | 20.0 | 0.1 |" in report.serving_lines(older)
