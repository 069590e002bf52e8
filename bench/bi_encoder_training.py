"""Collects the bi-encoder training table: one row per recipe, its dev figures and its SciFact test rows.

Each `--run label=<artifact dir>` names a `training.bi_encoder.train` artifact (its manifest gives the recipe,
hyper-parameters, data and minutes); `--dev label=<file>` the JSON line `training.bi_encoder.evaluate` printed
for it (dev side of the seeded train split); the test columns are the `dense-<label>` rows `search-eval
--encoder ... --encoder-label <label>` wrote to quality.json (`dense` for the packaged base model). Writes
`<out>.json` and `<out>.md`.

Example:
    python bench/bi_encoder_training.py --run mnrl=var/models/bi-encoder/v20261127T110418Z \\
        --dev mnrl=var/logs/bi-eval-mnrl.json --dev base=var/logs/bi-eval-base.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from evaluation.provenance import git_sha
from search_common.artifacts import read_manifest

BASE = "base"


def _pairs(values: list[str], flag: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for value in values:
        label, sep, path = value.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"bi_encoder_training: {flag} wants label=path, got {value!r}")
        out[label] = Path(path)
    return out


def _test_row(quality: list[dict[str, Any]], pipeline: str) -> dict[str, Any] | None:
    for row in quality:
        if row.get("dataset") == "scifact" and row.get("split") == "test" and row.get("pipeline") == pipeline:
            return row
    return None


def rows(runs: dict[str, Path], devs: dict[str, Path], quality: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table: list[dict[str, Any]] = []
    for label in dict.fromkeys([BASE, *runs]):
        manifest = read_manifest(runs[label]) if label in runs else None
        hp = manifest["hyperparameters"] if manifest else {}
        dev = json.loads(devs[label].read_text()) if label in devs else None
        test = _test_row(quality, "dense" if label == BASE else f"dense-{label}")
        table.append(
            {
                "label": label,
                "artifact": str(runs[label]) if label in runs else "packaged all-MiniLM-L6-v2",
                "recipe": hp.get("recipe", "none"),
                "pseudo_queries": hp.get("pseudo_queries", 0),
                "sentence_queries": hp.get("sentence_queries", 0),
                "negatives": hp.get("negatives") if hp.get("recipe") in ("hardneg", "distill") else 0,
                "epochs": hp.get("epochs", 0),
                "batch_size": hp.get("batch_size", 0),
                "train_queries": manifest["train_queries"] if manifest else 0,
                "examples": manifest["examples"] if manifest else 0,
                "train_minutes": round(manifest["train_minutes"], 1) if manifest else 0.0,
                "teacher": manifest.get("teacher") if manifest else None,
                "dev": {k: round(dev[k], 4) for k in ("ndcg@10", "recall@100")} if dev else None,
                "test": {k: test[k] for k in ("ndcg@10", "recall@100")} if test else None,
            }
        )
    return table


def markdown(table: list[dict[str, Any]], notes: str) -> str:
    lines = [
        "# Bi-encoder training on SciFact",
        "",
        "Dense retrieval alone (exact inner product over the whole corpus). Dev = the seeded 20% of the",
        "train queries no recipe trains on; test = `search-eval` over a Flat index built with that encoder.",
        "",
        "| label | recipe | PQ | ICT | hard neg | epochs | batch | train queries | examples | train min "
        "| dev nDCG@10 | dev R@100 | test nDCG@10 | test R@100 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        dev, test = r["dev"] or {}, r["test"] or {}
        cells = [
            r["label"], r["recipe"], r["pseudo_queries"], r["sentence_queries"], r["negatives"], r["epochs"],
            r["batch_size"] or "–", r["train_queries"], r["examples"],
            r["train_minutes"], dev.get("ndcg@10", "–"), dev.get("recall@100", "–"),
            test.get("ndcg@10", "–"), test.get("recall@100", "–"),
        ]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", notes.strip(), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", action="append", default=[], help="label=bi-encoder artifact directory")
    parser.add_argument("--dev", action="append", default=[], help="label=bi-encoder dev figures (JSON)")
    parser.add_argument("--quality", type=Path, default=Path("bench/results/quality.json"))
    parser.add_argument("--notes", type=Path, default=None, help="markdown appended under the table")
    parser.add_argument("--out", type=Path, default=Path("bench/results/bi_encoder_training"))
    args = parser.parse_args()
    quality = json.loads(args.quality.read_text()) if args.quality.is_file() else []
    table = rows(_pairs(args.run, "--run"), _pairs(args.dev, "--dev"), quality)
    notes = args.notes.read_text() if args.notes else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"git_sha": git_sha(), "device": "cpu (2 cores, shared)", "rows": table}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(table, notes))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
