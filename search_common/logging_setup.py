"""One logging format for every entry point, and quiet libraries unless DEBUG is asked for.

Known, harmless library noise is kept off the console below DEBUG, so that what a user sees is the
project's own output:
- bm25s sets its own logger to DEBUG ("Building index from tokens");
- transformers logs a load report as a warning when the packaged bi-encoder's unused pooler weights are
  skipped (`pooler.dense.bias | UNEXPECTED`), which is expected for a sentence-transformers body;
- exporting a model to ONNX warns about tracing (TracerWarning) and about opset 17's advanced indexing;
- onnxruntime's quantizer advises pre-processing ("Please consider to run pre-processing before
  quantization") on every export;
- transformers draws a "Loading weights" progress bar for every model it loads (off through its own switch
  when it is already imported, else through huggingface_hub's, which it reads at import and which child
  processes inherit).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Library loggers and the level below which they are silenced (unless DEBUG).
QUIET_LOGGERS = {"bm25s": logging.WARNING, "transformers": logging.ERROR}
# Messages (prefixes) that say nothing actionable; dropped from every handler unless DEBUG.
QUIET_MESSAGES = ("Please consider to run pre-processing before quantization",)
QUIET_WARNINGS = (
    r"Converting a tensor to a Python boolean might cause the trace to be incorrect",
    r"Exporting aten::index operator of advanced indexing",
)


class _DropKnownNoise(logging.Filter):
    """On the root handlers: a filter there holds whatever level a library sets on its own logger later
    (bm25s sets DEBUG when it is imported)."""

    def filter(self, record: logging.LogRecord) -> bool:
        library = record.name.split(".", 1)[0]
        if library in QUIET_LOGGERS and record.levelno < QUIET_LOGGERS[library]:
            return False
        return not str(record.msg).startswith(QUIET_MESSAGES)


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if level.upper() == "DEBUG":
        return
    for name, floor in QUIET_LOGGERS.items():  # transformers logs through a handler of its own
        logging.getLogger(name).setLevel(max(floor, logging.getLogger().level))
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _DropKnownNoise) for f in handler.filters):
            handler.addFilter(_DropKnownNoise())
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
