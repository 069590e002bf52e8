"""Pass planning: every pass a pair lands in has a shape fixed by that pair alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_runtimes.cross_encoder.passes import (
    BUCKETED,
    SINGLE,
    Pass,
    bucket_width,
    choose_pass_shape,
    plan_passes,
    usable_cores,
)

LIMIT = 256
lengths_strategy = st.lists(st.integers(min_value=1, max_value=LIMIT), min_size=1, max_size=60)


def _shape_of_each_pair(passes: list[Pass]) -> dict[int, tuple[int, int]]:
    return {member: (p.width, p.rows) for p in passes for member in p.members}


def test_bucket_width_rounds_up_to_the_step_and_stops_at_the_limit() -> None:
    assert [bucket_width(n, 100, 32) for n in (1, 32, 33, 64, 99, 100)] == [32, 32, 64, 64, 100, 100]
    with pytest.raises(ValueError, match="length <= limit"):
        bucket_width(101, 100)


def test_single_passes_are_one_pair_at_its_own_length_longest_first() -> None:
    passes = plan_passes([5, 9, 5, 7], SINGLE, rows=16, limit=LIMIT)
    assert passes == [Pass((1,), 9, 1), Pass((3,), 7, 1), Pass((0,), 5, 1), Pass((2,), 5, 1)]


def test_bucketed_passes_share_a_width_per_bucket_and_always_have_the_same_rows() -> None:
    passes = plan_passes([40, 10, 33, 64, 70, 5], BUCKETED, rows=2, limit=LIMIT, step=32)
    assert passes == [
        Pass((4,), 96, 2),
        Pass((3, 0), 64, 2),
        Pass((2,), 64, 2),
        Pass((1, 5), 32, 2),
    ]


@given(lengths_strategy, st.sampled_from([SINGLE, BUCKETED]), st.integers(min_value=1, max_value=16))
def test_every_pair_is_scored_once_in_a_pass_wide_enough(lengths: list[int], shape: str, rows: int) -> None:
    passes = plan_passes(lengths, shape, rows=rows, limit=LIMIT)
    members = sorted(m for p in passes for m in p.members)
    assert members == list(range(len(lengths)))
    for one_pass in passes:
        assert 1 <= len(one_pass.members) <= one_pass.rows
        assert all(lengths[m] <= one_pass.width <= LIMIT for m in one_pass.members)


@given(
    lengths_strategy,
    st.sampled_from([SINGLE, BUCKETED]),
    st.integers(min_value=1, max_value=16),
    st.data(),
)
def test_the_shape_a_pair_is_scored_in_does_not_depend_on_its_neighbours(
    lengths: list[int], shape: str, rows: int, data: st.DataObject
) -> None:
    # Any sub-batch of the pairs, in any order: each pair still sees the pass shape it gets on its own.
    picked = data.draw(st.lists(st.sampled_from(range(len(lengths))), min_size=1, unique=True))
    alone = {
        i: _shape_of_each_pair(plan_passes([lengths[i]], shape, rows=rows, limit=LIMIT))[0] for i in picked
    }
    mixed = _shape_of_each_pair(plan_passes([lengths[i] for i in picked], shape, rows=rows, limit=LIMIT))
    assert {picked[k]: mixed[k] for k in range(len(picked))} == alone


def test_auto_is_single_on_a_cpu_and_bucketed_on_a_gpu_unless_rows_interact() -> None:
    assert choose_pass_shape("auto", device="cpu", rows_interact=False) == SINGLE
    assert choose_pass_shape("auto", device="cuda:1", rows_interact=False) == BUCKETED
    assert choose_pass_shape("auto", device="cuda", rows_interact=True) == SINGLE
    assert choose_pass_shape("single", device="cuda", rows_interact=False) == SINGLE


def test_bucketed_passes_are_refused_where_rows_interact() -> None:
    with pytest.raises(ValueError, match="quantises activations per tensor"):
        choose_pass_shape("bucketed", device="cpu", rows_interact=True)
    with pytest.raises(ValueError, match="pass shape must be one of auto, single, bucketed"):
        choose_pass_shape("padded", device="cpu", rows_interact=False)


def test_usable_cores_respect_a_cgroup_cpu_quota(tmp_path: Path) -> None:
    unlimited = usable_cores(tmp_path)  # no cgroup files: the affinity mask alone
    assert unlimited >= 1
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # a Kubernetes limit of 1.5 CPUs
    assert usable_cores(tmp_path) == min(unlimited, 2)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path) == unlimited
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")  # cgroup v1, one CPU
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cores(tmp_path) == 1
