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
