"""Answer before the caller's deadline, also under overload.

Two parts, both fed by what the gateway observes rather than fixed numbers:

- `AnswerMargin`: the seconds a request keeps back from its deadline to answer with what it has. Under a
  burst, the gateway's own cost of answering (its event loop's lag behind its timers, the work after the last
  downstream call) grows from a millisecond to hundreds; a fixed 20 ms margin then makes the fallback answer
  arrive after the deadline. The margin is the recent 99th percentile of that cost, doubled, within a floor
  and a cap. `watch_event_loop_lag` samples the lag in the background.
- `RerankAdmission`: sheds a rerank at once, flagged degraded as `overloaded`, when the reranker would not
  answer within what is left of the request's budget: more reranks in flight than allowed, or, while others
  are in flight, less time left than recent reranks took. A saturated reranker then costs a fast degraded
  answer rather than a slow one, and the requests it does take finish.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Iterator

# Samples kept: a few seconds of lag probes and answers, so the margin follows a burst and then relaxes.
WINDOW = 256
LAG_PROBE_SECONDS = 0.05


class AnswerMargin:
    """The seconds kept back from each deadline for the gateway's own work, learned from observed costs.

    Args:
        floor: the least margin (the configured `--deadline-margin`).
        cap: the most; a margin never takes more than this, nor more than half of a request's budget.
        window: recent samples the percentile is taken over.
    """

    def __init__(self, floor: float = 0.02, cap: float = 1.0, window: int = WINDOW) -> None:
        if floor < 0 or cap < floor:
            raise ValueError(f"need 0 <= floor <= cap, got floor {floor} and cap {cap}")
        self.floor = floor
        self.cap = cap
        self._samples: collections.deque[float] = collections.deque(maxlen=window)
        self._value = floor

    def observe(self, seconds: float) -> None:
        """One observed cost of answering: seconds the gateway needed that no downstream call accounts for."""
        self._samples.append(max(0.0, seconds))
        ordered = sorted(self._samples)
        p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
        self._value = min(self.cap, max(self.floor, 2.0 * p99))

    @property
    def seconds(self) -> float:
        return self._value

    def for_budget(self, budget: float) -> float:
        """The margin for a request with `budget` seconds left: never more than half of it."""
        return min(self._value, max(self.floor, budget / 2))


async def watch_event_loop_lag(margin: AnswerMargin, interval: float = LAG_PROBE_SECONDS) -> None:
    """Samples how late the event loop runs a timer, forever: under load every answer is that late too."""
    while True:
        started = time.monotonic()
        await asyncio.sleep(interval)
        margin.observe(time.monotonic() - started - interval)


class RerankAdmission:
    """Decides, before a rerank is sent, whether the reranker can be expected to answer in time.

    Args:
        max_in_flight: reranks sent and not yet answered, at most (0: no bound on the count).
        smoothing: weight of the newest latency in the moving average of recent reranks.
    """

    def __init__(self, max_in_flight: int = 0, smoothing: float = 0.2) -> None:
        if max_in_flight < 0:
            raise ValueError(f"max_in_flight must be >= 0, got {max_in_flight}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be within (0, 1], got {smoothing}")
        self.max_in_flight = max_in_flight
        self._smoothing = smoothing
        self.in_flight = 0
        self.latency: float | None = None  # moving average of completed reranks, seconds

    def refusal(self, remaining: float) -> str | None:
        """Why a rerank with `remaining` seconds should not be sent (a detail for the answer), or None."""
        if self.max_in_flight and self.in_flight >= self.max_in_flight:
            return f"reranker saturated: {self.in_flight} reranks in flight (limit {self.max_in_flight})"
        # Recent reranks ran under the present load, queueing included: this one should take as long. With
        # none in flight the reranker is idle and that estimate stale: this rerank goes and renews it (else
        # one slow spell would shed every rerank after it, and nothing would ever measure the recovery).
        if self.in_flight and self.latency is not None and self.latency > remaining:
            return (
                f"reranker would not answer in time: recent reranks took {self.latency * 1000:.0f} ms, "
                f"{max(0.0, remaining) * 1000:.0f} ms left"
            )
        return None

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """Counts a rerank in flight while the block runs; its duration, failed or not (a timed-out one
        took at least that long), feeds the average."""
        self.in_flight += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self.in_flight -= 1
            seconds = time.monotonic() - started
            self.latency = (
                seconds
                if self.latency is None
                else self._smoothing * seconds + (1 - self._smoothing) * self.latency
            )
