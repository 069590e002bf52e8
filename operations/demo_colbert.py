"""The demo's default reranker: a zero-label ColBERT model trained on the corpus, then its token store.

PyLate trains in an environment of its own (`.venv-colbert`, made by `scripts/setup.sh`), so the recipe
(`training.late_interaction.zero_label`) runs there as a child process that reports its steps through a
file. Once its model passes the publish gate, the documents' token vectors are stored here (the same
`build_index(kind="late-interaction")` as `search-build-index`), and only then is the model linked into the
serving root: the waiting reranker loads a model whose token store already exists.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from operations.demo_reranker import BackgroundTraining, ModelRefused
from search_common.artifacts import MANIFEST_NAME

if TYPE_CHECKING:
    from training.late_interaction.zero_label import ZeroLabelRecipe

logger = logging.getLogger(__name__)

# Where the training environment's interpreter is, when not the checkout's `.venv-colbert`.
TRAINING_PYTHON_ENV = "SEARCH_TRAINING_PYTHON"
POLL_SECONDS = 2.0
_STEP = re.compile(r"step (\d+)/(\d+)")
PHASE_PREFIX = "phase: "


def training_python() -> Path:
    """The interpreter of the late-interaction training environment."""
    configured = os.environ.get(TRAINING_PYTHON_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1] / ".venv-colbert" / "bin" / "python"


def ensure_token_store(corpus: Path, token_root: Path, artifact: Path) -> Path:
    """The corpus's token vectors encoded by `artifact`, at `token_root/<artifact version>`, built once."""
    out = token_root / artifact.name
    if (out / MANIFEST_NAME).is_file():
        return out
    from model_runtimes.late_interaction import LateInteractionModel
    from retriever_service.build_index import build_index

    model = LateInteractionModel.load(artifact)
    return build_index(corpus, out, kind="late-interaction", vector_model=model, overwrite=True)


@dataclass(kw_only=True)
class LateInteractionTraining(BackgroundTraining):
    """Runs the zero-label ColBERT recipe in the training environment, then stores the corpus's tokens.

    Args:
        token_root: where the token stores go, one version per model (the reranker's `--token-store`).
        log_path: the child process's output.
        recipe: the zero-label recipe (default: its defaults).
        require_gain: False only in tests of the mechanics, whose tiny models need not beat anything.
    """

    token_root: Path
    log_path: Path
    recipe: ZeroLabelRecipe | None = None
    require_gain: bool = True
    _process: subprocess.Popen[bytes] | None = None
    _last_report: str = ""

    what: ClassVar[str] = "default ColBERT reranker"

    def close(self) -> None:
        """Stops a training still running (the demo is exiting)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(30)

    def _produce(self) -> Path:
        from training.late_interaction.zero_label import ZeroLabelRecipe, cached_model

        recipe = self.recipe or ZeroLabelRecipe()
        artifact = cached_model(self.corpus, self.models_root, recipe, require_gain=self.require_gain)
        if artifact is None:
            self._train(recipe)
            artifact = cached_model(self.corpus, self.models_root, recipe, require_gain=self.require_gain)
            if artifact is None:
                raise RuntimeError(f"the recipe ended without publishing a model; see {self.log_path}")
        self._status("storing the documents' token vectors")
        ensure_token_store(self.corpus, self.token_root, artifact)
        return artifact

    def _train(self, recipe: ZeroLabelRecipe) -> None:
        from training.late_interaction.zero_label import REFUSED_EXIT_CODE, recipe_arguments

        python = training_python()
        if not python.is_file():
            raise RuntimeError(
                f"no late-interaction training environment at {python}: run ./scripts/setup.sh "
                f"(or set {TRAINING_PYTHON_ENV})"
            )
        progress = self.serving_root / ".training-progress"
        argv = [str(python), "-m", "training.late_interaction.zero_label", "--corpus", str(self.corpus)]
        argv += [
            "--out",
            str(self.models_root),
            "--progress-file",
            str(progress),
            *recipe_arguments(recipe, require_gain=self.require_gain),
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
            while self._process.poll() is None:
                time.sleep(POLL_SECONDS)
                self._report(progress)
        code = self._process.returncode
        if code == REFUSED_EXIT_CODE:
            raise ModelRefused(_last_line(self.log_path))
        if code != 0:
            raise RuntimeError(f"the recipe exited {code} (log {self.log_path}): {_last_line(self.log_path)}")

    def _report(self, progress: Path) -> None:
        """Passes on what the child last wrote, once: a step, or the phase after the steps (the gate)."""
        try:
            text = progress.read_text(encoding="utf-8").strip()
        except OSError:
            return
        if text == self._last_report:
            return
        self._last_report = text
        if (match := _STEP.search(text)) is not None:
            self._on_step(int(match[1]), int(match[2]))
        elif text.startswith(PHASE_PREFIX):
            line = f"training the {self.what}: {text.removeprefix(PHASE_PREFIX)}"
            self._status(line)
            print(f"  [{line}]", flush=True)


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "(no output)"
