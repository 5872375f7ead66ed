"""What each service needs: its measured load and the workers that would keep it moving
(the capacity API, the ``sg_capacity_*`` gauges, an accepted job's place and start).

Every figure comes from the store and the broker, read when asked, so every gateway process
answers alike and nothing is added to the submit or event paths. Rates over 1, 5 and 15
minutes count the jobs created (arrivals) and the runs ended (completions) in the window;
a window longer than the service's record (its oldest job) is cut to the record. Run time
and queue wait are those of the most recent runs (:data:`SAMPLE`). The formulas are in
:mod:`gateway.queueing`; docs/scaling.md derives them and works an example.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.broker import Broker, BrokerDown
from gateway.fleet import Fleet, Waiting
from gateway.queueing import percentile, slots_needed, steady_wait, wait_now
from gateway.store import JobRecord, JobStatus, JobStore, ServiceLoad
from worker_sdk.wire.catalogue import Catalogue, ServiceSpec

WINDOWS = (60.0, 300.0, 900.0)  # the 1, 5 and 15 minute rates
PLANNING = 1  # the window whose arrival rate the steady-state figures use: 5 minutes
SAMPLE = 500  # recent runs behind the run time and queue wait figures
SHORTEST_RECORD = 1.0  # seconds: a rate is never taken over less


@dataclass(frozen=True, slots=True)
class ServiceCapacity:
    """One service's figures at ``at``; ``None`` where they cannot be known (no run seen
    yet, no live worker, the broker unreachable)."""

    service: str
    at: datetime
    queue_messages: int | None
    queue_consumers: int | None
    workers: int
    slots: int
    accepted: int
    running: int
    arrival_rates: tuple[float, ...]
    completion_rates: tuple[float, ...]
    sample: int
    run_mean: float | None
    run_p95: float | None
    wait_mean: float | None
    wait_p95: float | None
    utilisation: float | None
    predicted_wait: float | None
    steady_wait: float | None
    target_wait: float | None
    workers_needed: int | None

    @property
    def service_rate(self) -> float:
        """Jobs per second one slot completes (``μ = 1 / mean run time``); 0 if unknown."""
        return 1.0 / self.run_mean if self.run_mean else 0.0

    def wait_behind(self, ahead: int) -> float | None:
        """Expected wait of a job with ``ahead`` accepted jobs before it; ``None`` if it
        cannot be known (no live slot, or no run time measured while every slot is busy)."""
        wait = wait_now(
            queued=ahead, running=self.running, slots=self.slots, service=self.service_rate
        )
        return wait if math.isfinite(wait) else None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def figures(
    spec: ServiceSpec,
    load: ServiceLoad,
    *,
    now: datetime,
    workers: int,
    slots: int,
    queue: tuple[int, int] | None,
) -> ServiceCapacity:
    """The service's figures from its load and its live workers (pure: tests feed it)."""
    record = (now - load.first_created).total_seconds() if load.first_created else 0.0

    def rate(count: int, window: float) -> float:
        return count / max(min(window, record), SHORTEST_RECORD)

    arrivals = tuple(rate(n, w) for n, w in zip(load.arrivals, WINDOWS, strict=True))
    completions = tuple(rate(n, w) for n, w in zip(load.completions, WINDOWS, strict=True))
    waits = [wait for wait, _ in load.runs]
    runs = [run for _, run in load.runs]
    run_mean = sum(runs) / len(runs) if runs else None
    service = 1.0 / run_mean if run_mean else 0.0
    arrival = arrivals[PLANNING]
    capacity = slots * service
    needed: int | None = None
    idle = arrival == 0 and load.accepted == 0 and load.running == 0
    if spec.target_wait is not None and idle:
        needed = 0  # nothing to serve: the service may scale to zero
    elif spec.target_wait is not None and service > 0:
        # One slot a worker when none announces any (concurrency 0): no division by zero.
        per_worker = slots / workers if workers and slots else 1.0
        needed_slots = slots_needed(
            target=spec.target_wait,
            arrival=arrival,
            service=service,
            queued=load.accepted,
            running=load.running,
        )
        needed = math.ceil(needed_slots / per_worker - 1e-9)
    now_wait = wait_now(queued=load.accepted, running=load.running, slots=slots, service=service)
    return ServiceCapacity(
        service=spec.id,
        at=now,
        queue_messages=queue[0] if queue else None,
        queue_consumers=queue[1] if queue else None,
        workers=workers,
        slots=slots,
        accepted=load.accepted,
        running=load.running,
        arrival_rates=arrivals,
        completion_rates=completions,
        sample=len(runs),
        run_mean=run_mean,
        run_p95=percentile(runs, 0.95) if runs else None,
        wait_mean=sum(waits) / len(waits) if waits else None,
        wait_p95=percentile(waits, 0.95) if waits else None,
        utilisation=arrival / capacity if capacity > 0 else None,
        predicted_wait=_finite(now_wait),
        steady_wait=_finite(steady_wait(slots, arrival, service)) if service > 0 else None,
        target_wait=spec.target_wait,
        workers_needed=needed,
    )


class Capacity:
    """Measures services on demand; keeps each one's last measure ``refresh`` seconds for
    the accepted jobs' estimates."""

    def __init__(
        self,
        store: JobStore,
        broker: Broker,
        catalogue: Catalogue,
        fleet: Fleet,
        *,
        refresh: float,
    ) -> None:
        self._store = store
        self._broker = broker
        self._catalogue = catalogue
        self._fleet = fleet
        self._refresh = timedelta(seconds=refresh)
        self._last: dict[str, ServiceCapacity] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def measure(self, spec: ServiceSpec, *, now: datetime | None = None) -> ServiceCapacity:
        """The service's figures now (raises :class:`~gateway.store.StoreError` when the
        store fails; a broker that does not answer leaves the queue figures unknown)."""
        now = now or datetime.now(UTC)
        load = await self._store.service_load(
            spec.id, since=[now - timedelta(seconds=w) for w in WINDOWS], sample=SAMPLE
        )
        live = await self._fleet.live(spec.id)
        queue: tuple[int, int] | None
        try:
            queue = await self._broker.queue_stats(self._broker.topology.task_queue(spec.id))
        except BrokerDown:
            queue = None
        measured = figures(
            spec,
            load,
            now=now,
            workers=len(live),
            slots=sum(w.concurrency for w in live),
            queue=queue,
        )
        self._last[spec.id] = measured
        return measured

    async def recent(self, spec: ServiceSpec) -> ServiceCapacity:
        """The service's figures, measured at most ``refresh`` seconds ago (one measure at
        a time per service and process)."""
        lock = self._locks.setdefault(spec.id, asyncio.Lock())
        async with lock:
            last = self._last.get(spec.id)
            if last is not None and datetime.now(UTC) - last.at <= self._refresh:
                return last
            return await self.measure(spec)

    async def waiting(self, record: JobRecord) -> Waiting | None:
        """For an ``accepted`` job: its service's live workers (now), its place in the queue
        (now: the accepted jobs of its service created before it, from the store's index)
        and its estimated start (from the recent figures: see
        :meth:`ServiceCapacity.wait_behind`); ``None`` for any other job."""
        spec = self._catalogue.get(record.service)
        if record.status is not JobStatus.ACCEPTED or spec is None:
            return None
        workers = await self._fleet.count(record.service)
        ahead = await self._store.queue_position(record)
        recent = await self.recent(spec)
        wait = recent.wait_behind(ahead) if workers else None
        estimated: datetime | None = None
        if wait is not None:
            try:
                estimated = datetime.now(UTC) + timedelta(seconds=wait)
            except OverflowError:  # past the year 9999 (a run time from a skewed clock)
                estimated = None
        return Waiting(live_workers=workers, position=ahead + 1, estimated_start=estimated)
