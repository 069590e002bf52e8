"""The demo's reranker model: named, cached, or trained in the background while the stack already answers.

`BackgroundTraining` is the mechanism; `CrossEncoderTraining` trains the zero-label cross-encoder in this
process, `operations.demo_colbert.LateInteractionTraining` the zero-label ColBERT in its own environment.
On a first run nothing is cached, and training the default model on two cores takes many minutes. Rather
than answer nothing until then, the demo starts the reranker with `--wait-for-model` on a serving root of
its own, trains in a background thread, and writes the progress to that root's STATUS file, which the
reranker quotes in every UNAVAILABLE answer: callers get first-stage answers, flagged degraded with the
reason. When the model passes its publish gate it is linked into the serving root, the reranker loads it,
and the demo prints its held-out figures. A refused model is never served.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from reranker_service.server import STATUS_FILE
from search_common.artifacts import read_manifest
from training.cross_encoder.default_model.recipe import (
    DEFAULT_BUDGET,
    DEFAULT_RECIPE,
    Budget,
    DefaultModelError,
    Recipe,
)

logger = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 30.0


def describe_gate(manifest: dict[str, Any]) -> str:
    """One line of a default model's held-out figures, from its manifest's eval."""
    evaluation = manifest.get("eval") or {}
    if "reranked_ndcg@10" not in evaluation:
        return "no held-out figures in its manifest"
    first_stage = evaluation.get("first_stage", "the first stage")
    return (
        f"held-out nDCG@10 {evaluation['first_stage_ndcg@10']:.3f} -> {evaluation['reranked_ndcg@10']:.3f} "
        f"re-ranking the top {evaluation.get('depth', '?')} of {first_stage}"
        f" ({evaluation.get('queries', '?')} queries it never trained on)"
    )


def warn_if_refused(artifact: Path) -> None:
    """A loud warning for a named artifact its publish gate refused (served anyway: the user named it)."""
    try:
        manifest = read_manifest(artifact)
    except Exception:  # the reranker's own load reports a broken artifact with its message
        return
    refused = artifact.name.startswith(".rejected-") or (
        "beats_first_stage" in (manifest.get("eval") or {}) and not manifest["eval"]["beats_first_stage"]
    )
    if refused:
        print(
            f"WARNING: {artifact} was REFUSED by its publish gate ({describe_gate(manifest)}); it is served "
            "only because --reranker-artifact names it, and may rank worse than the first stage",
            file=sys.stderr,
        )


class ModelRefused(Exception):
    """The trained model did not beat its first stage on held-out queries, so it is not served."""


@dataclass
class BackgroundTraining:
    """Produces the demo's reranker model on a thread (`_produce`) and publishes it into `serving_root`."""

    corpus: Path
    models_root: Path
    serving_root: Path
    started: float = field(default_factory=time.monotonic)
    artifact: Path | None = None
    error: str | None = None
    _done: threading.Event = field(default_factory=threading.Event)
    _last_print: float = 0.0

    what: ClassVar[str] = "reranker"
    first_status: ClassVar[str] = "training the {what} on this corpus: preparing pseudo-queries"
    done_verb: ClassVar[str] = "trained"

    def start(self) -> None:
        self.serving_root.mkdir(parents=True, exist_ok=True)
        self._status(self.first_status.format(what=self.what))
        threading.Thread(target=self._run, name="default-model-training", daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether training has ended (published, refused or failed) within `timeout`."""
        return self._done.wait(timeout)

    def close(self) -> None:
        """Stops work still running when the demo exits (a thread of this process needs nothing)."""

    def _produce(self) -> Path:
        """Trains (or finds cached) and returns the published artifact; raises ModelRefused."""
        raise NotImplementedError

    def describe(self, manifest: dict[str, Any]) -> str:
        """One line on the model swapped in: its held-out figures."""
        return describe_gate(manifest)

    def _run(self) -> None:
        try:
            artifact = self._produce()
        except ModelRefused as exc:
            self.error = f"refused by its publish gate: {exc}"
            self._status(f"no reranker: the {self.what} was {self.error}")
            print(f"\nWARNING: the {self.what} was {self.error}; answers stay first-stage")
        except Exception as exc:  # a failed training must not take the first-stage stack down
            logger.exception("%s training failed", self.what)
            self.error = f"training failed: {type(exc).__name__}: {exc}"
            self._status(f"no reranker: {self.error}")
            print(f"\nWARNING: the {self.what}'s {self.error}; answers stay first-stage")
        else:
            self.artifact = artifact
            manifest = read_manifest(artifact)
            (self.serving_root / artifact.name).symlink_to(artifact.resolve(), target_is_directory=True)
            self._status(f"loading the {self.what}")
            minutes = (time.monotonic() - self.started) / 60
            print(f"\nreranker {self.done_verb} in {minutes:.1f} min and swapped in: {artifact.name}")
            print(f"  {self.describe(manifest)}")
        finally:
            self._done.set()

    def _on_step(self, done: int, total: int) -> None:
        self._on_progress(f"training the {self.what}: step {done}/{total}", done, total)

    def _on_progress(self, what_is_done: str, done: int, total: int) -> None:
        """Status (and, every PROGRESS_EVERY_SECONDS, a printed line) with the time left at this pace."""
        elapsed = time.monotonic() - self.started
        left = elapsed / max(done, 1) * (total - done)
        line = f"{what_is_done}, about {left / 60:.0f} min left"
        self._status(line)
        if time.monotonic() - self._last_print >= PROGRESS_EVERY_SECONDS or done == total:
            self._last_print = time.monotonic()
            print(f"  [{line}]", flush=True)

    def _status(self, text: str) -> None:
        scratch = self.serving_root / f".{STATUS_FILE}.tmp"
        scratch.write_text(text + "\n", encoding="utf-8")
        scratch.replace(self.serving_root / STATUS_FILE)


@dataclass
class CrossEncoderTraining(BackgroundTraining):
    """The zero-label cross-encoder (`training.cross_encoder.default_model`), trained in this process."""

    budget: Budget = DEFAULT_BUDGET
    recipe: Recipe = DEFAULT_RECIPE
    # False only in tests of the mechanics, whose tiny models need not beat anything.
    require_gain: bool = True

    what: ClassVar[str] = "default cross-encoder"

    def _produce(self) -> Path:
        from training.cross_encoder.default_model.build import ensure_default_model

        try:
            return ensure_default_model(
                self.corpus,
                self.models_root,
                budget=self.budget,
                recipe=self.recipe,
                require_gain=self.require_gain,
                progress=False,
                on_step=self._on_step,
            )
        except DefaultModelError as exc:
            raise ModelRefused(str(exc)) from exc
