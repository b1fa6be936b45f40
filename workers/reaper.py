"""The reconciler: the database says what must be delivered, the broker is made to agree.

Every worker runs one in a thread (started when the worker is ready), in every deployment shape: the embedded
``sparseqd serve``, compose and scale-out. A round, every ``min(reconcile_after_s, stale_after_s) / 2`` seconds:

- a ``queued`` job committed more than ``reconcile_after_s`` ago with no message waiting in the broker (nor one a
  worker took less than ``reconcile_after_s`` ago) is published again: its request died between the commit and the
  publish, or the broker lost the message (a restart without persistence), or the worker that took the message died
  before claiming it;
- a ``running`` job whose heartbeat is older than ``stale_after_s`` is published again unless a message for it is
  waiting: its worker died. (With acks-late delivery Redis would give the dead worker's message back only after the
  visibility timeout, longer than the longest job: a day by default.)
- a ``cancelling`` job whose heartbeat is older than ``stale_after_s`` is ``cancelled``: the worker that was to finish
  the cancel died, and nothing else would;
- every running sweep is released (its next held combinations queued, or the sweep finished), and a few finished
  sweeps without artifacts get them (service.sweep_report): their producer died, or they predate sweep artifacts.

Several reconcilers may run at once (one per worker): a short lock in the broker lets one of them do each round, and
whatever is published twice all the same is harmless, because the task's compare-and-set claim runs a job once.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from celery import Celery
from sqlalchemy import select

from service import lifecycle
from service.db import make_engine, make_sessionmaker, session_scope
from service.queue import QUEUE, TASK_NAME, recently_taken_job_ids, waiting_job_ids
from service.settings import Settings, get_settings
from service.storage import BlobStore, open_store
from service.tables import Job

log = logging.getLogger("sparseq.reaper")
LOCK_KEY = "sparseq:reconciler"
ORPHAN_CANCELLED = lifecycle.ORPHAN_CANCELLED


@dataclass
class Round:
    published: list[str] = field(default_factory=list)  # queued jobs the broker did not hold
    requeued: list[str] = field(default_factory=list)  # running jobs of a dead worker
    cancelled: list[str] = field(default_factory=list)  # cancelling jobs of a dead worker


def round_interval_s(settings: Settings) -> float:
    return max(0.5, min(settings.reconcile_after_s, settings.stale_after_s) / 2)


def _candidates(sessions, reconcile_after_s: float, stale_after_s: float) -> tuple[list[str], list[str]]:
    with sessions() as session:
        queued = lifecycle.unclaimed_queued(session, older_than=timedelta(seconds=reconcile_after_s))
        running = lifecycle.stale_running(session, stale_after=timedelta(seconds=stale_after_s))
        return queued, running


def _still(sessions, job_ids: list[str], status: str, stale_after_s: float | None = None) -> list[str]:
    if not job_ids:
        return []
    with sessions() as session:
        if status == "running":
            return lifecycle.stale_running(session, stale_after=timedelta(seconds=stale_after_s), among=job_ids)
        return list(session.scalars(select(Job.id).where(Job.id.in_(job_ids), Job.status == status)))


def cancel_orphans(sessions, stale_after_s: float) -> list[str]:
    """cancelling -> cancelled where the heartbeat is stale, each by its own compare-and-set (another reconciler, or
    the job's own worker finishing the cancel, may get there first)."""
    stale_after = timedelta(seconds=stale_after_s)
    with sessions() as session:
        found = lifecycle.orphaned_cancels(session, stale_after=stale_after)
    done = []
    for job_id in found:
        with session_scope(sessions) as session:
            if lifecycle.cancel_orphan(session, job_id, stale_after=stale_after):
                done.append(job_id)
    return done


def release_sweeps(sessions, publish, store: BlobStore | None = None) -> list[str]:
    """A release a worker missed (it died as a child ended) still happens: every running sweep, every round. With
    ``store``, finished sweeps without artifacts get them (a few a round: the worker that finished one died before,
    or the sweep finished before sweeps had artifacts). Returns the sweeps that got artifacts."""
    from service import sweep_report
    from service.sweeps import release
    from service.tables import Sweep

    with sessions() as session:
        running = list(session.scalars(select(Sweep.id).where(Sweep.status == "running")))
    for sweep_id in running:
        with session_scope(sessions) as session:
            started = release(session, sweep_id)
        for job_id in started:
            publish(job_id)
    if store is None:
        return []
    with sessions() as session:
        finished = sweep_report.unpublished(session)
    return [sweep_id for sweep_id in finished if sweep_report.publish_in(sessions, store, sweep_id)]


def reconcile_once(
    broker, publish, sessions, *, reconcile_after_s: float, stale_after_s: float, store: BlobStore | None = None
) -> Round:
    """One round. ``broker``: a redis client of the broker; ``publish(job_id)`` sends the task; ``store``: where
    finished sweeps' artifacts go."""
    result = Round(cancelled=cancel_orphans(sessions, stale_after_s))
    release_sweeps(sessions, publish, store)
    for job_id in result.cancelled:
        log.warning("job %s: cancelling, and its worker stopped: cancelled", job_id)
    queued, running = _candidates(sessions, reconcile_after_s, stale_after_s)
    if not queued and not running:
        return result
    # The broker first, then the database again: a job taken and claimed between the two reads is not published twice.
    # A message a worker took moments ago counts as held: that worker is claiming the job.
    waiting = waiting_job_ids(broker) | recently_taken_job_ids(broker, reconcile_after_s)
    for job_id in _still(sessions, [j for j in queued if j not in waiting], "queued"):
        log.warning("job %s: queued, and the broker holds no message for it: published again", job_id)
        publish(job_id)
        result.published.append(job_id)
    for job_id in _still(sessions, [j for j in running if j not in waiting], "running", stale_after_s):
        log.warning("job %s has a stale heartbeat: enqueued again", job_id)
        publish(job_id)
        result.requeued.append(job_id)
    return result


def _take_round(broker, token: str, interval_s: float) -> bool:
    """One reconciler a round, however many workers run one (the lock expires before the next round)."""
    return bool(broker.set(LOCK_KEY, token, nx=True, px=max(100, int(interval_s * 900))))


def start_reaper(app: Celery) -> threading.Thread:
    settings = get_settings()
    sessions = make_sessionmaker(make_engine(settings.resolved_database_url))
    store = open_store(settings)
    interval_s = round_interval_s(settings)
    token = secrets.token_hex(8)
    stop = threading.Event()

    def publish(job_id: str) -> None:
        app.send_task(TASK_NAME, args=[job_id], queue=QUEUE)

    def loop() -> None:
        while not stop.is_set():
            try:
                with app.connection_for_write() as connection:
                    broker = connection.default_channel.client
                    if _take_round(broker, token, interval_s):
                        reconcile_once(
                            broker,
                            publish,
                            sessions,
                            reconcile_after_s=settings.reconcile_after_s,
                            stale_after_s=settings.stale_after_s,
                            store=store,
                        )
            except Exception as error:  # the database or the broker may be briefly unreachable: try again next round
                log.warning("reconciler round failed (%s: %s); trying again", type(error).__name__, error)
            stop.wait(interval_s)

    thread = threading.Thread(target=loop, name="sparseq-reconciler", daemon=True)
    thread.start()
    return thread
