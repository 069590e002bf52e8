"""Quiet by default: known library noise is dropped below DEBUG and shown with it."""

from __future__ import annotations

import logging

import pytest

from search_common.logging_setup import _DropKnownNoise, configure_logging


def _record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_library_debug_lines_and_known_advice_are_dropped_the_rest_kept() -> None:
    noise = _DropKnownNoise()
    assert not noise.filter(_record("bm25s", logging.DEBUG, "Building index from tokens"))
    assert noise.filter(_record("bm25s", logging.WARNING, "something real"))
    assert not noise.filter(
        _record("root", logging.WARNING, "Please consider to run pre-processing before quantization. Refer")
    )
    assert noise.filter(_record("gateway.pipeline", logging.WARNING, "degraded answer"))


def test_debug_keeps_every_library_line(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [logging.StreamHandler()])
    monkeypatch.setattr(logging.getLogger("transformers"), "level", logging.getLogger("transformers").level)
    configure_logging("DEBUG")
    assert not any(isinstance(f, _DropKnownNoise) for h in root.handlers for f in h.filters)
    configure_logging("WARNING")
    assert all(any(isinstance(f, _DropKnownNoise) for f in h.filters) for h in root.handlers)
    assert logging.getLogger("transformers").level >= logging.ERROR
