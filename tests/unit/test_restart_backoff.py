"""The supervisor's restart schedule (operations.processes.RestartBackoff): plain numbers, no processes."""

from __future__ import annotations

from operations.processes import RestartBackoff, RestartPolicy


def test_restarts_back_off_to_the_cap_and_start_over_once_a_service_stayed_up() -> None:
    schedule = RestartBackoff(RestartPolicy(first_delay=1.0, max_delay=5.0, stable_seconds=60.0))
    delays = []
    now = 0.0
    for _ in range(5):  # dies again right after each restart
        delays.append(schedule.died(now))
        assert schedule.due == now + delays[-1]
        now = schedule.due
        schedule.restarted(now)
        assert schedule.due is None
        now += 0.5
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert schedule.restarts == 5
    # Up for a minute since its last restart: the next death is treated as a first one.
    assert schedule.died(now + 60.0) == 1.0
