"""Queueing formulas behind the capacity API (docs/scaling.md derives them).

A service is modelled as an M/M/c queue: jobs arrive at rate ``λ`` (jobs/s), ``c`` slots
(the live workers' concurrency, summed) each serve ``μ = 1 / mean run time`` jobs/s.

- :func:`wait_now`: the expected wait of a job submitted now, given what the queue holds
  now. With every slot busy, a newcomer waits for the ``queued - free + 1``-th of the
  coming completions, which an M/M/c queue delivers at rate ``c μ``:
  ``(queued + running - c + 1) / (c μ)``; with a slot free, nothing. This is exact for
  M/M/c given its state, and Erlang C's mean is its average over the steady state.
- :func:`erlang_c` and :func:`steady_wait`: the steady-state probability of waiting and
  mean wait at the measured arrival rate (Erlang C), for planning.
- :func:`slots_needed`: the fewest slots that keep both the wait of a job submitted now
  and the steady-state mean wait within a target: with every slot busy the first asks
  ``c >= (queued + running + 1) / (1 + target μ)``.
"""

from __future__ import annotations

import math

MAX_SLOTS = 100_000


def erlang_c(slots: int, load: float) -> float:
    """Probability that a job waits in an M/M/c queue with ``slots`` servers offered
    ``load = λ/μ`` erlangs; 1 when ``load >= slots`` (the queue grows without bound).

    Computed through Erlang B's recurrence, stable for thousands of slots. Past the load the
    blocking probability falls faster than geometrically, so the recurrence stops once it
    is 0 in floating point (exactly what the remaining steps would give): the cost grows
    with the load, not with the slots a worker announces.
    """
    if slots <= 0 or load >= slots:
        return 1.0
    if load <= 0:
        return 0.0
    blocking = 1.0
    for k in range(1, slots + 1):
        blocking = load * blocking / (k + load * blocking)
        if blocking == 0.0:
            return 0.0
    return slots * blocking / (slots - load * (1 - blocking))


def steady_wait(slots: int, arrival: float, service: float) -> float:
    """Mean wait in queue of an M/M/c queue: ``C(c, λ/μ) / (c μ - λ)``; infinite when the
    slots cannot keep up (``λ >= c μ``)."""
    if arrival <= 0:
        return 0.0
    if slots <= 0 or service <= 0 or arrival >= slots * service:
        return math.inf
    return erlang_c(slots, arrival / service) / (slots * service - arrival)


def wait_now(*, queued: int, running: int, slots: int, service: float) -> float:
    """Expected wait of a job that joins the queue now behind ``queued`` waiting jobs while
    ``running`` run (see the module's docstring); infinite with no slot."""
    free = max(slots - running, 0)
    if queued < free:
        return 0.0
    if slots <= 0 or service <= 0:
        return math.inf
    return (queued - free + 1) / (slots * service)


def slots_needed(
    *, target: float, arrival: float, service: float, queued: int, running: int
) -> int:
    """The fewest slots that keep both the wait of a job submitted now (:func:`wait_now`)
    and the steady-state mean wait (:func:`steady_wait`) within ``target`` seconds; 0 when
    nothing arrives, waits or runs (a service may scale to zero). Both waits fall as slots
    are added, so a bisection finds it; at most :data:`MAX_SLOTS`."""
    if service <= 0:
        raise ValueError("the service rate must be positive")
    if arrival <= 0 and queued == 0 and running == 0:
        return 0

    def enough(slots: int) -> bool:
        now = wait_now(queued=queued, running=running, slots=slots, service=service)
        return now <= target and steady_wait(slots, arrival, service) <= target

    low, high = 0, MAX_SLOTS  # enough(low) is false (no slot), enough(high) assumed
    while high - low > 1:
        middle = (low + high) // 2
        if enough(middle):
            high = middle
        else:
            low = middle
    return high


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1]
