"""What every in-process scoring runtime raises when its caller gives up between batches."""

from __future__ import annotations


class ScoringStopped(Exception):
    """Scoring was abandoned between batches because the caller no longer wants the result."""
