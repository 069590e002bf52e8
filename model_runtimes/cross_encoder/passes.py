"""How one call's (query, document) pairs become forward passes, so that a pair's score is its own.

A transformer scores the rows of a pass independently, except where the pass itself leaks into a row:

- per-tensor dynamic int8 (ONNX Runtime's `DynamicQuantizeLinear`, the default export) computes one
  activation scale over the whole pass, so a pair's score moves with the pairs beside it;
- padding to the longest row changes the shapes the kernels see, and with them the kernels chosen and the
  order of their floating-point sums.

Either way the score of a pair would depend on the rerank depth, on other users' requests batched with it
by Triton, and (through a score cache) on whichever of those came first. Two pass shapes make every pass a
function of its own pair, so neither can happen:

- `single`: each pair is a pass of its own, exactly as long as its tokens. It holds on every engine,
  per-tensor int8 included, and on a CPU, with one worker per core, it is as fast as padded batches
  (bench/results/quantization.md): a pass of one 256-token pair is already a large matrix product, and it
  carries no padding.
- `bucketed`: passes of exactly `rows` rows (a copy of a member fills a short pass), each as wide as its
  length bucket: the pair's token count rounded up to a multiple of `step`, at most the limit. All passes
  of a bucket have one shape, so the same kernels sum in the same order, and rows never meet. It holds on
  engines whose rows do not interact (fp32, bfloat16, weight-only int8), not on per-tensor int8; it is what
  a GPU needs, whose speed comes from many rows per pass.

Pure: no engine, no tokenizer; `CrossEncoderRuntime` runs the passes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SINGLE = "single"
BUCKETED = "bucketed"
PASS_SHAPES = (SINGLE, BUCKETED)
# What callers may ask for: a shape, or "auto" (see `choose_pass_shape`).
PASS_SHAPE_CHOICES = ("auto", *PASS_SHAPES)
# Token counts are rounded up to a multiple of this in bucketed passes: few distinct shapes, little padding.
BUCKET_STEP = 32


@dataclass(frozen=True, slots=True)
class Pass:
    """One forward pass: which of the call's pairs it scores, its width in tokens and its row count.

    `rows` >= len(members); rows past the members are filler, scored and thrown away.
    """

    members: tuple[int, ...]
    width: int
    rows: int


def bucket_width(length: int, limit: int, step: int = BUCKET_STEP) -> int:
    """`length` rounded up to a multiple of `step`, at most `limit` (and at least `length`)."""
    if length < 1 or limit < length or step < 1:
        raise ValueError(f"need 1 <= length <= limit and step >= 1, got {length}, {limit}, {step}")
    return min(-(-length // step) * step, limit)


def plan_passes(
    lengths: Sequence[int], shape: str, *, rows: int, limit: int, step: int = BUCKET_STEP
) -> list[Pass]:
    """The passes that score pairs of these token lengths, longest first.

    Every pass's width and row count are functions of its members' own lengths (single: the length; bucketed:
    the bucket, and always `rows` rows), never of the other pairs in the call.

    Args:
        lengths: each pair's token count, at most `limit`.
        shape: `single` or `bucketed`.
        rows: rows per bucketed pass (ignored by single passes, which have one).
        limit: the longest a pair may be (the tokenizer's truncation length).
        step: the bucket step of bucketed passes.
    """
    if shape not in PASS_SHAPES:
        raise ValueError(f"pass shape must be one of {', '.join(PASS_SHAPES)}, got {shape!r}")
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    if shape == SINGLE:
        return [Pass((i,), lengths[i], 1) for i in order]
    by_width: dict[int, list[int]] = {}
    for i in order:
        by_width.setdefault(bucket_width(lengths[i], limit, step), []).append(i)
    return [
        Pass(tuple(members[start : start + rows]), width, rows)
        for width, members in by_width.items()
        for start in range(0, len(members), rows)
    ]


def choose_pass_shape(requested: str, *, device: str, rows_interact: bool) -> str:
    """The shape `requested` means on `device`; the one place "auto" is decided.

    auto is `bucketed` on a GPU whose engine keeps rows apart (many rows per pass is where a GPU's speed is),
    and `single` everywhere else: on a CPU it costs nothing, and it is the only invariant shape for an engine
    whose rows interact (per-tensor dynamic int8).

    Raises:
        ValueError: an unknown shape, or `bucketed` for an engine whose rows interact (its scores would
            depend on the batch).
    """
    if requested not in PASS_SHAPE_CHOICES:
        raise ValueError(f"pass shape must be one of {', '.join(PASS_SHAPE_CHOICES)}, got {requested!r}")
    if requested == BUCKETED and rows_interact:
        raise ValueError(
            "bucketed passes need an engine whose rows do not interact; this model quantises activations "
            "per tensor at run time, so a pair's score would depend on its neighbours: use single passes"
        )
    if requested != "auto":
        return requested
    on_cpu = device.partition(":")[0] == "cpu"
    return SINGLE if on_cpu or rows_interact else BUCKETED


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPU cores this process may use: its affinity mask, capped by a cgroup CPU quota (a Kubernetes CPU
    limit shows the node's every core in the mask, but throttles past the quota)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_quota(root: Path) -> float | None:
    """CPUs allowed by the cgroup quota (v2 `cpu.max`, else v1 `cpu.cfs_quota_us`), None when unlimited."""
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period or 100_000)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
