"""The job state machine (service.lifecycle) on a real migrated database: each transition, and the races it settles
by compare-and-set."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from service import lifecycle
from service.db import session_scope
from service.tables import Job, JobEvent, utcnow

STALE = timedelta(seconds=30)
RECIPE = {"task": {"type": "adding"}, "model": {"hidden_size": 4}, "method": {"type": "dense"}}


@pytest.fixture
def new_job(sessions):
    def make(status: str = "queued", *, heartbeat_age_s: float | None = None, attempts: int = 0) -> str:
        with session_scope(sessions) as session:
            job = Job(owner="alice", status=status, recipe=RECIPE, files={}, metrics={}, attempts=attempts)
            if heartbeat_age_s is not None:
                job.heartbeat_at = utcnow() - timedelta(seconds=heartbeat_age_s)
            session.add(job)
            session.flush()
            return job.id

    return make


def status_of(sessions, job_id: str) -> Job:
    with sessions() as session:
        return session.get(Job, job_id)


def claim(sessions, job_id: str, max_attempts: int = 3) -> str:
    with session_scope(sessions) as session:
        return lifecycle.claim(session, job_id, max_attempts=max_attempts, stale_after=STALE)


def test_a_queued_job_is_claimed_once_however_many_deliveries_race(sessions, new_job):
    job_id = new_job()
    outcomes: list[str] = []
    threads = [threading.Thread(target=lambda: outcomes.append(claim(sessions, job_id))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["busy"] * 5 + ["claimed"]
    job = status_of(sessions, job_id)
    assert (job.status, job.attempts) == ("running", 1) and job.heartbeat_at is not None


def test_a_running_job_is_taken_over_only_once_its_heartbeat_is_stale(sessions, new_job):
    live, dead = new_job("running", heartbeat_age_s=1, attempts=1), new_job("running", heartbeat_age_s=60, attempts=1)
    assert claim(sessions, live) == "busy"
    assert claim(sessions, dead) == "claimed"
    assert status_of(sessions, dead).attempts == 2


def test_past_the_attempt_limit_the_job_fails(sessions, new_job):
    job_id = new_job("running", heartbeat_age_s=60, attempts=3)
    assert claim(sessions, job_id, max_attempts=3) == "gave_up"
    job = status_of(sessions, job_id)
    assert job.status == "failed" and job.error["code"] == "too_many_attempts" and job.finished_at is not None


def test_cancelling_ends_cancelled_only_when_its_worker_is_gone(sessions, new_job):
    held, orphan = new_job("cancelling", heartbeat_age_s=1), new_job("cancelling", heartbeat_age_s=60)
    assert claim(sessions, held) == "busy"  # its worker finishes the cancel between two steps
    assert claim(sessions, orphan) == "cancelled"
    with sessions() as session:
        assert lifecycle.orphaned_cancels(session, stale_after=STALE) == []
        messages = [e.message for e in session.query(JobEvent).filter(JobEvent.job_id == orphan)]
    assert messages == [lifecycle.ORPHAN_CANCELLED]


def test_the_owners_cancel(sessions, new_job):
    queued, running, done = new_job(), new_job("running", heartbeat_age_s=1), new_job("succeeded")
    with session_scope(sessions) as session:
        assert lifecycle.request_cancel(session, session.get(Job, queued))
        assert lifecycle.request_cancel(session, session.get(Job, running))
        assert not lifecycle.request_cancel(session, session.get(Job, done))
    assert [status_of(sessions, j).status for j in (queued, running, done)] == ["cancelled", "cancelling", "succeeded"]


def test_a_terminal_status_never_changes(sessions, new_job):
    job_id = new_job("running", heartbeat_age_s=1)
    with session_scope(sessions) as session:
        assert lifecycle.finish(session, job_id, "succeeded", progress=1.0)
    with session_scope(sessions) as session:
        assert not lifecycle.finish(session, job_id, "failed", error={"code": "x", "message": "late"})
        lifecycle.beat(session, job_id)  # a late heartbeat does not revive it either
    job = status_of(sessions, job_id)
    assert (job.status, job.error, job.progress) == ("succeeded", None, 1.0)
    with session_scope(sessions) as session, pytest.raises(ValueError, match="not a terminal status"):
        lifecycle.finish(session, job_id, "running")


def test_the_reapers_queries(sessions, new_job):
    stale, fresh, queued = new_job("running", heartbeat_age_s=60), new_job("running", heartbeat_age_s=1), new_job()
    with sessions() as session:
        assert lifecycle.stale_running(session, stale_after=STALE) == [stale]
        assert lifecycle.stale_running(session, stale_after=STALE, among=[fresh]) == []
        assert lifecycle.unclaimed_queued(session, older_than=timedelta(seconds=-5)) == [queued]
        assert lifecycle.unclaimed_queued(session, older_than=timedelta(seconds=60)) == []
