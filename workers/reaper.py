"""The reaper: re-enqueue running jobs whose worker stopped sending heartbeats.

With acks-late delivery Redis gives an unacknowledged job back only after the visibility timeout, which must be longer
than the longest job (a day by default): a killed worker's job would wait that long. Every worker therefore looks, at
start and then every ``stale_after_s / 2`` seconds, for running jobs with a stale heartbeat and enqueues them again. The
task's compare-and-set claim makes sure only one delivery runs a job, however many reapers find it.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from celery import Celery
from sqlalchemy import select

from service.db import make_engine, make_sessionmaker
from service.models import Job, utcnow
from service.queue import QUEUE, TASK_NAME
from service.settings import get_settings

log = logging.getLogger("sparseq.reaper")


def stale_jobs(sessions, stale_after_s: int) -> list[str]:
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    with sessions() as session:
        return list(session.scalars(select(Job.id).where(Job.status == "running", Job.heartbeat_at < cutoff)))


def reap_once(app: Celery, sessions, stale_after_s: int) -> list[str]:
    found = stale_jobs(sessions, stale_after_s)
    for job_id in found:
        log.warning("job %s has a stale heartbeat: enqueued again", job_id)
        app.send_task(TASK_NAME, args=[job_id], queue=QUEUE)
    return found


def start_reaper(app: Celery) -> threading.Thread:
    settings = get_settings()
    sessions = make_sessionmaker(make_engine(settings.resolved_database_url))
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                reap_once(app, sessions, settings.stale_after_s)
            except Exception:  # the database may be briefly unreachable: try again next round
                log.exception("reaper round failed")
            stop.wait(max(1.0, settings.stale_after_s / 2))

    thread = threading.Thread(target=loop, name="sparseq-reaper", daemon=True)
    thread.start()
    return thread
