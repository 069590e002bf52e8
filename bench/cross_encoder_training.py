"""Collects the cross-encoder training table: one row per recipe and epoch, dev figures, one test figure.

Reads each run's `training.json` (written by `training.cross_encoder.train`) and the test/ONNX measurements
written by `training.cross_encoder.evaluate --json`; writes bench/results/cross_encoder_training.{md,json}.

Example:
    python bench/cross_encoder_training.py --run listwise=var/checkpoints/ce-lw \\
        --test listwise=var/eval/ce-lw-test.json --out bench/results/cross_encoder_training
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from evaluation.provenance import git_sha
from training.cross_encoder.release import best_epoch


def _pairs(values: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for value in values:
        name, _, path = value.partition("=")
        out[name] = Path(path)
    return out


def rows(runs: dict[str, Path], tests: dict[str, list[Path]]) -> list[dict[str, Any]]:
    table: list[dict[str, Any]] = []
    for name, run_dir in runs.items():
        record = json.loads((run_dir / "training.json").read_text())
        hp = record["hyperparameters"]
        per_epoch_pairs = record["pairs"] / max(1, hp["epochs"])
        # Measurements of the released artifact belong to the epoch `release` picked (best dev fused).
        released = best_epoch(record)["epoch"]
        measured = [json.loads(path.read_text()) for path in tests.get(name, [])]
        for entry in record["epochs"]:
            dev = entry["dev"]
            best = entry["dev_best_fused"]
            depth = str(best["depth"])
            row: dict[str, Any] = {
                "recipe": name,
                "checkpoint": entry["checkpoint"],
                "max_length": hp["max_length"],
                "layers": hp["layers"],
                "epoch": entry["epoch"],
                "negatives": hp["negatives"],
                "loss": hp["loss"],
                "pooling": hp["pooling"],
                "pseudo_queries_per_epoch": hp["pseudo_queries"],
                "pairs": round(per_epoch_pairs * entry["epoch"]),
                "train_minutes": round(entry["train_minutes"], 1),
                "train_cpu_minutes": round(entry["train_cpu_minutes"], 1),
                "dev_first_stage": round(dev["first_stage"], 4),
                "dev_ce": {d: round(v, 4) for d, v in dev["ce"].items()},
                "dev_fused_best": {
                    "depth": best["depth"],
                    "weight": best["weight"],
                    "ndcg@10": round(best["ndcg@10"], 4),
                },
                "dev_ce_at_best_depth": round(dev["ce"][depth], 4),
                "test": [],
            }
            if entry["epoch"] == released:
                for figures in measured:
                    row["test"].append({k: figures[k] for k in sorted(figures) if k != "model"})
            table.append(row)
    return table


def markdown(table: list[dict[str, Any]], notes: str) -> str:
    lines = [
        "# Cross-encoder training on SciFact",
        "",
        "Dev = seeded 20% of the train queries (every choice); test measured once per finished recipe.",
        "nDCG@10. First stage = hybrid (dense all-MiniLM-L6-v2 + BM25, RRF k=60), re-ranked to the depth",
        'chosen on dev; fused = gateway `rerank_order(fusion="rrf", fusion_weight=w)`, w fitted on dev.',
        "",
        "| recipe | len | layers | epoch | neg | loss | PQ/epoch | pairs | train min (wall / cpu) "
        "| dev first stage | dev CE@depth | dev fused (depth, w) | dev int8 CE / fused "
        "| test first stage | test CE | test fused | backend |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        best = r["dev_fused_best"]
        tests = [t for t in r["test"] if t["split"] == "test"] or [None]
        dev_onnx = [t for t in r["test"] if t["split"] == "dev"]
        int8 = f"{dev_onnx[0]['ce_ndcg@10']:.4f} / {dev_onnx[0]['fused_ndcg@10']:.4f}" if dev_onnx else "–"
        for t in tests:
            if t:
                test_cols = (
                    f"{t['first_stage_ndcg@10']:.4f} | {t['ce_ndcg@10']:.4f} | {t['fused_ndcg@10']:.4f}"
                )
                test_cols += f" | {t['backend']}"
            else:
                test_cols = "– | – | – | –"
            cells = [
                r["recipe"], r["max_length"], r["layers"], r["epoch"], r["negatives"], r["loss"],
                r["pseudo_queries_per_epoch"], r["pairs"], f"{r['train_minutes']} / {r['train_cpu_minutes']}",
                f"{r['dev_first_stage']:.4f}", f"{r['dev_ce_at_best_depth']:.4f}@{best['depth']}",
                f"{best['ndcg@10']:.4f} ({best['depth']}, {best['weight']})", int8, test_cols,
            ]  # fmt: skip
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", notes.strip(), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", action="append", default=[], help="name=run directory (holds training.json)")
    parser.add_argument(
        "--test", action="append", default=[], help="name=evaluate --json output (repeatable)"
    )
    parser.add_argument("--notes", type=Path, default=None, help="markdown appended under the table")
    parser.add_argument("--out", type=Path, default=Path("bench/results/cross_encoder_training"))
    args = parser.parse_args()
    tests: dict[str, list[Path]] = {}
    for value in args.test:
        name, _, path = value.partition("=")
        tests.setdefault(name, []).append(Path(path))
    table = rows(_pairs(args.run), tests)
    notes = args.notes.read_text() if args.notes else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps({"git_sha": git_sha(), "device": "cpu (2 cores, shared)", "rows": table}, indent=2) + "\n"
    )
    args.out.with_suffix(".md").write_text(markdown(table, notes))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
