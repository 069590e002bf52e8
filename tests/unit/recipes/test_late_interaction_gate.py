"""The late-interaction recipe's publish rule (training.late_interaction.train.dev_gate): pure logic."""

from __future__ import annotations

from training.late_interaction.train import dev_gate


def _figures(first_stage: float, alone: dict[str, float], fused: float) -> dict[str, object]:
    return {"dev": {"first_stage": first_stage, "ce": alone}, "dev_best_fused": {"ndcg@10": fused}}


def test_a_model_better_alone_or_fused_passes_and_one_better_neither_way_does_not() -> None:
    assert dev_gate(_figures(0.74, {"10": 0.75, "30": 0.72}, 0.70))["passes"]
    assert dev_gate(_figures(0.74, {"10": 0.73}, 0.76))["passes"]
    refused = dev_gate(_figures(0.74, {"10": 0.73, "30": 0.74}, 0.74))
    assert not refused["passes"]
    assert (refused["best_alone"], refused["best_fused"]) == (0.74, 0.74)
