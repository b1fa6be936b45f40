"""The producer side of the job queue: enqueue a job id by task *name* (the service never imports workers)."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

TASK_NAME = "sparseq.run_job"
QUEUE = "jobs"


@lru_cache(maxsize=4)
def producer(broker_url: str) -> Celery:
    app = Celery("sparseq-api", broker=broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=False,
        broker_transport_options={"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
    )
    return app


class CeleryQueue:
    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url

    def enqueue(self, job_id: str) -> None:
        producer(self.broker_url).send_task(TASK_NAME, args=[job_id], queue=QUEUE)

    def depth(self) -> int | None:
        try:
            with producer(self.broker_url).connection_for_write() as connection:
                return connection.default_channel.client.llen(QUEUE)
        except Exception:
            return None

    def ping(self) -> bool:
        try:
            with producer(self.broker_url).connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
            return True
        except Exception:
            return False
