"""Release a finished training run: export the dev-chosen epoch, measure the served artifact, publish it.

1. From `training.json`, picks the epoch with the best dev fused nDCG@10 and its (depth, weight).
2. Exports that checkpoint (ONNX, int8 per-channel) to a scratch artifact and scores dev and test with the
   reranker's own ONNX runtime at that depth and weight (test: once per finished recipe).
3. Exports the final artifact with the figures in its manifest: candidates go under
   `var/models/cross-encoder-candidates/<run>/<version>`; `--default` publishes to
   `var/models/cross-encoder/<version>`, the newest version there being the one services load, and is
   refused when the re-ranked pipeline does not beat its own first stage on test.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from search_common.artifacts import (
    atomic_directory,
    new_version,
    read_manifest,
    verify_checksums,
    write_manifest,
)
from search_common.logging_setup import configure_logging
from training.cross_encoder import evaluate
from training.cross_encoder.export import export_cross_encoder

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path("var/models/cross-encoder")
CANDIDATE_ROOT = Path("var/models/cross-encoder-candidates")


def best_epoch(record: dict[str, Any]) -> dict[str, Any]:
    """The epoch entry with the best dev fused nDCG@10 (earliest on ties)."""
    entries: list[dict[str, Any]] = record["epochs"]
    return max(entries, key=lambda e: (round(e["dev_best_fused"]["ndcg@10"], 6), -e["epoch"]))


def released_entry(record: dict[str, Any], fusion_record: dict[str, Any] | None = None) -> dict[str, Any]:
    """The epoch to release with its (depth, weight): the run's best on dev, or, for a run without a dev
    side, its last epoch with the depth and weight `fusion_record`'s best epoch was fitted to."""
    if fusion_record is None:
        return best_epoch(record)
    last = {k: v for k, v in record["epochs"][-1].items() if k not in ("dev", "dev_best_fused")}
    return {**last, "dev_best_fused": best_epoch(fusion_record)["dev_best_fused"]}


def _measure(
    dataset: Path, artifact: Path, split: str, depth: int, weight: float, out: Path
) -> dict[str, Any]:
    evaluate.main(
        [
            "--dataset", str(dataset), "--artifact", str(artifact), "--split", split,
            "--depth", str(depth), "--weight", str(weight), "--json", str(out),
        ]
    )  # fmt: skip
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


def release(
    run_dir: Path,
    dataset: Path,
    *,
    make_default: bool,
    eval_dir: Path,
    dev_onnx: bool = True,
    fusion_from: Path | None = None,
) -> Path:
    """Exports, measures and publishes the run's best epoch.

    `fusion_from` names the run whose dev-fitted depth and weight to use: a final retrain on every train
    query has no dev side of its own, so it takes the choice of the same recipe run with a dev split (and its
    last epoch, the one that recipe's schedule ends on).
    """
    record = json.loads((run_dir / "training.json").read_text())
    fusion_record = json.loads((fusion_from / "training.json").read_text()) if fusion_from else None
    entry = released_entry(record, fusion_record)
    fitted_on = f"dev of {fusion_from.name}" if fusion_from else "dev"
    dev_onnx = dev_onnx and fusion_from is None
    checkpoint = Path(entry["checkpoint"])
    depth = int(entry["dev_best_fused"]["depth"])
    weight = float(entry["dev_best_fused"]["weight"])
    max_length = int(record["hyperparameters"]["max_length"])
    logger.info("releasing %s (epoch %d, depth %d, weight %.1f)", checkpoint, entry["epoch"], depth, weight)

    scratch = eval_dir / f".artifact-{run_dir.name}"
    shutil.rmtree(scratch, ignore_errors=True)
    export_cross_encoder(checkpoint, scratch, max_length=max_length)
    dev = (
        _measure(dataset, scratch, "dev", depth, weight, eval_dir / f"{run_dir.name}-dev-onnx.json")
        if dev_onnx
        else None
    )
    test = _measure(dataset, scratch, "test", depth, weight, eval_dir / f"{run_dir.name}-test-onnx.json")
    shutil.rmtree(scratch, ignore_errors=True)
    dev_torch = entry.get("dev")
    beats = test["fused_ndcg@10"] > test["first_stage_ndcg@10"]
    eval_figures = {
        "dataset": record["dataset"],
        "metric": "nDCG@10",
        "first_stage": "hybrid dense+bm25 RRF k=60",
        "fusion": {"method": "rrf", "weight": weight, "depth": depth, "k": 60, "fitted_on": fitted_on},
        "dev_torch_fp32": (
            {
                "first_stage": dev_torch["first_stage"],
                "ce": dev_torch["ce"][str(depth)],
                "fused": entry["dev_best_fused"]["ndcg@10"],
            }
            if dev_torch and fusion_from is None
            else None
        ),
        "dev_onnx_int8": (
            {k: dev[k] for k in ("first_stage_ndcg@10", "ce_ndcg@10", "fused_ndcg@10")} if dev else None
        ),
        "test_onnx_int8": {k: test[k] for k in ("first_stage_ndcg@10", "ce_ndcg@10", "fused_ndcg@10")},
        "beats_first_stage_on_test": beats,
    }
    if make_default and not beats:
        raise SystemExit(f"{run_dir}: re-ranked test nDCG@10 does not beat the first stage; not the default")
    root = DEFAULT_ROOT if make_default else CANDIDATE_ROOT / run_dir.name
    out = root / new_version()
    extra = {
        "training_data_sha256": record["training_data_sha256"],
        "hyperparameters": {**record["hyperparameters"], "epochs_trained": entry["epoch"]},
        "training": {
            "run": run_dir.name,
            "checkpoint": str(checkpoint),
            "sources_sha256": record["sources"],
            "pairs": record["pairs"],
            "train_minutes": entry["train_minutes"],
        },
        "eval": eval_figures,
    }
    export_cross_encoder(checkpoint, out, max_length=max_length, manifest_extra=extra)
    logger.info("released %s: %s", out, json.dumps(eval_figures["test_onnx_int8"]))
    return out


def promote(candidate: Path, *, root: Path = DEFAULT_ROOT) -> Path:
    """Publishes a released candidate as the served default under a new version (files copied, not rebuilt).

    Raises:
        SystemExit: the candidate's re-ranked pipeline does not beat its first stage on test.
    """
    manifest = read_manifest(candidate, required=("files", "eval"))
    verify_checksums(candidate, manifest["files"])
    if not manifest["eval"].get("beats_first_stage_on_test"):
        raise SystemExit(f"{candidate}: does not beat its first stage on test; not the default")
    out = root / new_version()
    with atomic_directory(out) as scratch:
        for name in manifest["files"]:
            shutil.copy2(candidate / name, scratch / name)
        write_manifest(scratch, {**manifest, "version": out.name, "promoted_from": str(candidate)})
    logger.info("promoted %s -> %s", candidate, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="training output directory")
    source.add_argument(
        "--promote", type=Path, help="a released candidate artifact to publish as the default"
    )
    parser.add_argument("--dataset", type=Path)
    parser.add_argument("--default", action="store_true", help="publish as the served default")
    parser.add_argument("--eval-dir", type=Path, default=Path("var/eval"))
    parser.add_argument(
        "--fusion-from",
        type=Path,
        help="take depth and weight from this run's dev (for a retrain on all train queries)",
    )
    parser.add_argument(
        "--no-dev-onnx", action="store_true", help="skip re-measuring dev with the int8 model"
    )
    args = parser.parse_args(argv)
    configure_logging()
    if args.promote is not None:
        promote(args.promote)
        return
    if args.dataset is None:
        parser.error("--run needs --dataset")
    args.eval_dir.mkdir(parents=True, exist_ok=True)
    release(
        args.run,
        args.dataset,
        make_default=args.default,
        eval_dir=args.eval_dir,
        dev_onnx=not args.no_dev_onnx,
        fusion_from=args.fusion_from,
    )


if __name__ == "__main__":
    main()
