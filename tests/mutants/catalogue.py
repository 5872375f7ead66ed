"""The mutants: each breaks one guarantee the README or DESIGN.md promises.

A mutant is a search/replace on one source file. The search text must occur exactly once in
the file; when the code moves on and it no longer does, the run fails on that mutant (it is
stale, never silently skipped). ``tests`` are the pytest node ids that must fail once it is
applied; the run stops at the first that does.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    search: str
    replace: str
    tests: tuple[str, ...]


GUARANTEES = "tests/integration/test_guarantees.py"
CONTRACT = "tests/gateway/store/test_contract.py"

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "ack before the terminal event is published",
        "worker_sdk/_session.py",
        "            else:\n                await self._reporter.outcomes.send(",
        '            else:\n                await settle(delivery, "ack")\n'
        "                await self._reporter.outcomes.send(",
        (f"{GUARANTEES}::test_an_unconfirmed_terminal_event_hands_the_task_back",),
    ),
    Mutant(
        "the tap marked unbound only once its unbinding is done",
        "gateway/watch.py",
        "                    self._attached = False\n"
        "                    await self._tap.detach()\n",
        "                    await self._tap.detach()\n"
        "                    self._attached = False\n",
        (
            "tests/gateway/test_watch.py::"
            "test_a_waiter_that_comes_during_a_detach_binds_the_tap_again",
        ),
    ),
    Mutant(
        "a shared outcome message's tasks released before its confirm",
        "worker_sdk/_outcomes.py",
        "                else:\n                    await self._publish_many(",
        "                else:\n                    for early in batch:\n"
        "                        early.confirmed.set_result(None)\n"
        "                    await self._publish_many(",
        (
            "tests/worker_sdk/test_outcomes.py::"
            "test_a_failed_publish_fails_each_of_its_events_and_not_the_next",
        ),
    ),
    Mutant(
        "queue inspections on the publishing channel",
        "gateway/broker.py",
        "                    channel = await probe.get_underlay_channel()\n",
        "                    assert self._channel is not None\n"
        "                    channel = await self._channel.get_underlay_channel()\n",
        ("tests/integration/test_recovery.py::test_an_inspection_cut_short_fails_no_submission",),
    ),
    Mutant(
        "the tap's bind cut short with its caller",
        "gateway/watch.py",
        "        failure = await asyncio.shield(self._binding)\n",
        "        failure = await self._binding\n",
        (
            "tests/gateway/test_watch.py::"
            "test_a_stream_whose_client_leaves_while_the_tap_binds_does_not_cut_the_bind",
        ),
    ),
    Mutant(
        "the autoscale check cancelled in flight at a stop",
        "worker_sdk/_autoscale.py",
        "        self._stop.set()\n        await asyncio.wait({self.task}, timeout=grace)\n",
        "        self._stop.set()\n        self.task.cancel()\n"
        "        await asyncio.wait({self.task}, timeout=grace)\n",
        ("tests/worker_sdk/test_autoscale.py::test_a_stop_lets_the_check_in_flight_end",),
    ),
    Mutant(
        "ack at delivery",
        "worker_sdk/_session.py",
        "        ended: TerminalEvent | None = None\n        try:\n",
        '        ended: TerminalEvent | None = None\n        await settle(delivery, "ack")\n'
        "        try:\n",
        (
            f"{GUARANTEES}::test_an_unconfirmed_terminal_event_hands_the_task_back",
            "tests/integration/test_pipeline.py::"
            "test_a_worker_killed_mid_job_leaves_the_job_to_finish_once_on_another",
        ),
    ),
    Mutant(
        "retry without delay",
        "worker_sdk/_session.py",
        "            self._channel.default_exchange,\n            sent,\n"
        "            self._retry_queues[tier],\n",
        "            self._exchanges.tasks,\n            sent,\n            task.service,\n",
        (f"{GUARANTEES}::test_a_retry_waits_its_delay_accepted",),
    ),
    Mutant(
        "publish before persist",
        "gateway/jobs.py",
        "        try:\n            counted = await self._store.insert(record, counter=counter)\n",
        "        await self._broker.publish_task(task, spec)\n"
        "        try:\n            counted = await self._store.insert(record, counter=counter)\n",
        (f"{GUARANTEES}::test_a_failing_store_insert_is_503_and_queues_nothing",),
    ),
    Mutant(
        "idempotency lookup skipped",
        "gateway/jobs.py",
        "        if idempotency_key is not None:\n            earlier = await self._earlier(",
        "        if False:\n            earlier = await self._earlier(",
        (
            "tests/integration/test_idempotency.py::test_a_retry_with_the_same_key_returns_the_first_job",
            "tests/integration/test_idempotency.py::test_a_key_past_its_window_starts_a_new_job",
        ),
    ),
    Mutant(
        "ownership check skipped on the old routes",
        "gateway/api/legacy.py",
        "        job = await runtime.jobs.get(job_id, principal)\n",
        "        job = await runtime.jobs.get(job_id, None)\n",
        (f"{GUARANTEES}::test_another_user_can_neither_read_nor_cancel_a_job_on_the_old_routes",),
    ),
    Mutant(
        "terminal state not sticky",
        "gateway/store/sqlite.py",
        "WHERE id = :id AND status IN ({marks}) AND attempt",
        "WHERE id = :id AND attempt",
        (f"{CONTRACT}::test_terminal_states_are_sticky",),
    ),
    Mutant(
        "progress allowed to go down",
        "gateway/store/sqlite.py",
        "AND progress_seq < :seq AND progress <= :percent",
        "AND progress_seq < :seq",
        (f"{CONTRACT}::test_progress_only_rises_within_a_run",),
    ),
    Mutant(
        "URL policy skipped at connect time",
        "worker_sdk/_fetch.py",
        "            policy.check_resolved(host, addresses)\n",
        "",
        (
            "tests/integration/test_security.py::TestWorkerFetch::"
            "test_a_name_resolving_to_loopback_is_refused_at_connect_time",
        ),
    ),
    Mutant(
        "mandatory off on the task publish",
        "gateway/broker.py",
        "            headers=headers,\n        )\n"
        "        await self._publish(exchanges.tasks, sent, spec.id)\n",
        "            headers=headers,\n        )\n"
        "        await self._publish(exchanges.tasks, sent, spec.id, mandatory=False)\n",
        ("tests/integration/test_api.py::test_a_returned_publish_is_503_and_the_job_failed",),
    ),
    Mutant(
        "the reaper's grace ignored",
        "gateway/sweeper.py",
        "            cutoff = now - timedelta(seconds=spec.queue_ttl) - self._grace\n",
        "            cutoff = now - timedelta(seconds=spec.queue_ttl)\n",
        ("tests/integration/test_sweeper.py::test_the_reaper_fails_a_job_that_was_never_queued",),
    ),
    Mutant(
        "the events consumer acks before the store commit",
        "gateway/applier.py",
        "        async def handle() -> None:\n            event = read_event(message.body)\n",
        '        async def handle() -> None:\n            await settle(message, "ack")\n'
        "            event = read_event(message.body)\n",
        (f"{GUARANTEES}::test_an_event_met_by_a_store_outage_outlives_the_gateway",),
    ),
    Mutant(
        "a dead letter ends its job before the events published before it",
        "gateway/applier.py",
        "            if self._deaths is not None:  # after the events published before it\n"
        "                await self._deaths.wait()\n",
        "",
        (
            f"{GUARANTEES}::"
            "test_a_result_confirmed_before_its_worker_died_outweighs_the_tasks_dead_letter",
        ),
    ),
)
