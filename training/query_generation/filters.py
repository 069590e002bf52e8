"""What makes a written query worth training on: a sensible length, not copied out of its document, and
about that document rather than about a few-shot example."""

from __future__ import annotations

import re

from search_common.documents import Document
from training.cross_encoder.default_model.pseudo_queries import appears_in

MIN_WORDS = 3
MAX_WORDS = 32
# Most of a query's content words must come from its own document.
MIN_GROUNDED_SHARE = 0.5


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 4}


def acceptable(query: str, document: Document) -> bool:
    """Whether a written query may teach: a sensible length, not copied out of its document, about it."""
    words = query.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or appears_in(query, document):
        return False
    content = _content_words(query)
    grounded = content & _content_words(document.model_text())
    return not content or len(grounded) >= MIN_GROUNDED_SHARE * len(content)
