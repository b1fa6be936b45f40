"""The Celery app for long GPU/CPU jobs (Celery's own guidance for long tasks)."""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_ready

from service.queue import QUEUE
from service.settings import get_settings


def make_celery(broker_url: str | None = None, *, time_limit_s: int | None = None) -> Celery:
    settings = get_settings()
    broker_url = broker_url or settings.resolved_broker_url
    hard = time_limit_s or settings.job_time_limit_s
    app = Celery("sparseq", broker=broker_url, include=["workers.execute"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE,
        task_acks_late=True,  # a job is acknowledged when it ends, so a dead worker's job is delivered again
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # one long job at a time per process
        task_ignore_result=True,  # results live in the database, not in a result backend
        task_soft_time_limit=hard - 60,
        task_time_limit=hard,
        # Redis redelivers unacknowledged messages after the visibility timeout: longer than the longest job.
        broker_transport_options={"visibility_timeout": settings.resolved_visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


app = make_celery()


@worker_ready.connect
def _start_reaper(**_) -> None:
    """Jobs of a dead worker come back without waiting for the broker's visibility timeout (hours by default)."""
    from workers.reaper import start_reaper

    start_reaper(app)
