from __future__ import annotations

import re
from pathlib import Path

from evaluation.provenance import git_sha
from model_runtimes.hardware import SPEED_FLAGS, cpu_flags, cpu_has_bf16_matrix_units, cpu_model

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_git_sha_names_the_checked_out_commit() -> None:
    assert re.fullmatch(r"[0-9a-f]{40}", git_sha(cwd=REPO_ROOT))
    assert git_sha(cwd=REPO_ROOT).startswith(git_sha(short=True, cwd=REPO_ROOT))


def test_git_sha_outside_a_checkout_is_unknown(tmp_path: Path) -> None:
    assert git_sha(cwd=tmp_path) == "unknown"


def test_cpu_flags_are_the_speed_flags_this_cpu_reports_in_a_fixed_order() -> None:
    flags = cpu_flags()
    assert flags == [flag for flag in SPEED_FLAGS if flag in flags]
    assert cpu_has_bf16_matrix_units() == ("amx_bf16" in flags)
    assert cpu_model()
